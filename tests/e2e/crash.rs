//! Nothing lost: a command answered 200 survives a `kill -9` that follows the answer at once,
//! and the events it committed are delivered to every subscriber after the restart.

use crate::harness::{DEMO, EVENTUALLY, Host};
use serde_json::json;

/// Crash-and-restart rounds: each one gives the kill another chance to land in a bad spot.
const ROUNDS: i64 = 5;
const STOCK: i64 = 100;

on_every_backend! {
    fn answered_command_and_its_events_survive_kill_9() {
        let mut host = Host::start(DEMO, &[]);
        host.command_ok("stock.add", json!({ "sku": "widget", "qty": STOCK }));

        for round in 0..ROUNDS {
            let order_id = format!("o-{round}");
            host.command_ok(
                "order.place",
                json!({ "order_id": order_id, "sku": "widget", "qty": 1 }),
            );
            host.kill9();
            host.restart();

            assert_eq!(
                host.query_ok("order.get", json!({ "order_id": order_id })),
                json!({ "order_id": order_id, "sku": "widget", "qty": 1 }),
                "round {round}: the answered order must survive the crash"
            );
            host.summary_when(&order_id, "reserved", EVENTUALLY);
            assert_eq!(
                host.query_ok("stock.get", json!({ "sku": "widget" }))["available"],
                STOCK - round - 1,
                "round {round}: every order so far reserved exactly once"
            );
        }

        let db = host.db();
        db.wait_all_done(EVENTUALLY);
        // Per order: order.placed to inventory and order-summary, stock.reserved to order-summary.
        assert_eq!(
            db.scalar("SELECT COUNT(*) FROM deliveries", &[]),
            3 * ROUNDS
        );
    }
}
