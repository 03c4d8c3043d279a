//! `Idempotency-Key`: the first answer (success or rejection) is stored and replayed, the
//! handler never runs twice for one key, and a key reused for another request is refused.

use crate::harness::{DEMO, EVENTUALLY, Host, ORDERS, all_at_once};
use serde_json::json;
use std::sync::Arc;

/// `order.placed` messages in the outbox for `order_id`.
const PLACED_COUNT: &str =
    "SELECT COUNT(*) FROM messages WHERE kind = 'order.placed' AND partition_key = ?";

on_every_backend! {
    fn same_key_replays_the_first_answer_and_runs_the_handler_once() {
        let host = Host::start(DEMO, &[]);
        let db = host.db();
        host.command_ok("stock.add", json!({ "sku": "widget", "qty": 10 }));

        let order = json!({ "order_id": "o-1", "sku": "widget", "qty": 2 });
        let first = host.command_with_key("order.place", order.clone(), "key-1");
        assert_eq!(first.status, 200, "{first:?}");
        assert!(!first.replayed(), "the first answer is not a replay");
        let second = host.command_with_key("order.place", order.clone(), "key-1");
        assert_eq!(second.status, 200, "{second:?}");
        assert_eq!(second.body, first.body);
        assert!(
            second.replayed(),
            "the second answer must be marked as replayed"
        );

        assert_eq!(db.scalar(PLACED_COUNT, &["o-1"]), 1);
        host.summary_when("o-1", "reserved", EVENTUALLY);
        assert_eq!(
            host.query_ok("stock.get", json!({ "sku": "widget" }))["available"],
            8,
            "the stock must be reserved once"
        );

        let other = host.command_with_key(
            "order.place",
            json!({ "order_id": "o-1", "sku": "widget", "qty": 3 }),
            "key-1",
        );
        assert_eq!(other.status, 422, "{other:?}");
        assert_eq!(other.error_class(), "idempotency_mismatch", "{other:?}");
        assert_eq!(db.scalar(PLACED_COUNT, &["o-1"]), 1);
    }
}

on_every_backend! {
    fn a_rejection_is_replayed_too() {
        let host = Host::start(&[ORDERS], &[]);
        let bad = json!({ "order_id": "o-1", "sku": "widget", "qty": 0 });
        let first = host.command_with_key("order.place", bad.clone(), "key-r");
        assert_eq!(first.status, 422, "{first:?}");
        assert_eq!(first.error_class(), "rejected", "{first:?}");
        assert!(!first.replayed());

        let second = host.command_with_key("order.place", bad, "key-r");
        assert_eq!(second.status, 422, "{second:?}");
        assert_eq!(second.body, first.body);
        assert!(second.replayed(), "the stored rejection must be replayed");
        assert_eq!(
            host.db()
                .scalar("SELECT status FROM idempotency WHERE key = ?", &["key-r"]),
            422
        );
    }
}

on_every_backend! {
    fn concurrent_requests_with_one_key_run_the_handler_once() {
        const CALLERS: usize = 100;
        let host = Arc::new(Host::start(&[ORDERS], &[]));
        let order = json!({ "order_id": "o-c", "sku": "widget", "qty": 1 });
        let caller = host.clone();
        let answers = all_at_once(CALLERS, move |_| {
            caller.command_with_key("order.place", order.clone(), "key-c")
        });

        for answer in &answers {
            assert_eq!(answer.status, 200, "{answer:?}");
            assert_eq!(
                answer.body,
                json!({ "order_id": "o-c", "status": "placed" })
            );
        }
        let fresh = answers.iter().filter(|a| !a.replayed()).count();
        assert_eq!(
            fresh, 1,
            "exactly one caller ran the handler; the others replayed"
        );
        assert_eq!(host.db().scalar(PLACED_COUNT, &["o-c"]), 1);
    }
}
