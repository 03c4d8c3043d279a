//! Retries and the dead-letter queue: a subscriber that keeps failing ends dead after its
//! attempts, with the facts an operator needs; the other subscribers of the same event are
//! not held up; a replay after the fix delivers it once.

use crate::harness::{DEMO, EVENTUALLY, FLAKY, Host, wait_until};
use serde_json::{Value, json};

const MAX_ATTEMPTS: u32 = 5;

on_every_backend! {
    fn failing_subscriber_is_dead_lettered_alone_and_replay_delivers_it() {
        let mut plugins = DEMO.to_vec();
        plugins.push(FLAKY);
        let host = Host::start_with_fast_retries(&plugins, MAX_ATTEMPTS);
        host.command_ok("stock.add", json!({ "sku": "widget", "qty": 10 }));
        host.command_ok("flaky.set", json!({ "failing": true }));
        host.command_ok(
            "order.place",
            json!({ "order_id": "o-dlq", "sku": "widget", "qty": 1 }),
        );

        let db = host.db();
        wait_until(EVENTUALLY, "the flaky delivery to be dead", || {
            db.scalar(
                "SELECT COUNT(*) FROM deliveries WHERE subscriber = 'flaky' AND status = 'dead'",
                &[],
            ) == 1
        });

        let dead = host.bus_list("dlq");
        assert_eq!(dead.len(), 1, "{dead:#?}");
        let letter = &dead[0];
        assert_eq!(letter["status"], "dead", "{letter:#}");
        assert_eq!(letter["subscriber"], "flaky", "{letter:#}");
        assert_eq!(letter["kind"], "order.placed", "{letter:#}");
        assert_eq!(letter["partition_key"], "o-dlq", "{letter:#}");
        assert_eq!(letter["payload"]["order_id"], "o-dlq", "{letter:#}");
        assert_eq!(letter["attempts"], MAX_ATTEMPTS, "{letter:#}");
        assert_eq!(letter["error_class"], "retryable", "{letter:#}");
        let last_error = letter["last_error"].as_str().unwrap_or_default();
        assert!(last_error.contains("o-dlq"), "{letter:#}");
        let first_failed = letter["first_failed_at_ms"].as_i64();
        let last_failed = letter["last_failed_at_ms"].as_i64();
        assert!(
            matches!((first_failed, last_failed), (Some(first), Some(last)) if first < last),
            "the first failure must precede the last: {letter:#}"
        );

        // The other subscribers of the same event went on without waiting for flaky.
        host.summary_when("o-dlq", "reserved", EVENTUALLY);
        assert_eq!(
            host.query_ok("stock.get", json!({ "sku": "widget" }))["available"],
            9
        );
        let others: Vec<Value> = host
            .bus_list("all")
            .into_iter()
            .filter(|d| d["subscriber"] != "flaky")
            .collect();
        assert!(
            others.iter().all(|d| d["status"] == "done"),
            "every other delivery is done: {others:#?}"
        );
        assert_eq!(
            host.query_ok("flaky.seen", json!({ "order_id": "o-dlq" }))["count"],
            0
        );

        host.command_ok("flaky.set", json!({ "failing": false }));
        let id = letter["id"].as_i64().expect("a delivery id");
        host.bus_replay(id);
        wait_until(EVENTUALLY, "the replayed delivery to be done", || {
            db.scalar(
                "SELECT COUNT(*) FROM deliveries WHERE id = CAST(? AS BIGINT) AND status = 'done'",
                &[&id.to_string()],
            ) == 1
        });
        let replayed = host
            .bus_list("done")
            .into_iter()
            .find(|d| d["id"] == id)
            .expect("`bus list --type done` shows the replayed delivery");
        assert_eq!(
            replayed["attempts"], 1,
            "attempts restart at replay: {replayed:#}"
        );
        assert_eq!(
            host.query_ok("flaky.seen", json!({ "order_id": "o-dlq" }))["count"],
            1
        );
        assert!(host.bus_list("dlq").is_empty());
    }
}
