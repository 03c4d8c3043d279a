//! `host trace`: one order's causal tree as the database holds it, found by the correlation id
//! the command's answer carries (assigned by the host, or the caller's own), or by the id of
//! any of its messages; a failing subscriber's dead letter shows with its class and error.

use crate::harness::{DEMO, EVENTUALLY, FLAKY, Host, wait_until};
use serde_json::{Value, json};

on_every_backend! {
    fn trace_shows_the_causal_tree_of_one_order() {
        let mut plugins = DEMO.to_vec();
        plugins.push(FLAKY);
        let host = Host::start_with_fast_retries(&plugins, 2);
        host.command_ok("stock.add", json!({ "sku": "widget", "qty": 10 }));
        host.command_ok("flaky.set", json!({ "failing": true }));
        let placed = host.command("order.place", json!({ "order_id": "o-t", "sku": "widget", "qty": 1 }));
        assert_eq!(placed.status, 200, "{placed:?}");
        let correlation_id = placed.headers["correlation-id"].to_str().unwrap().to_owned();
        let db = host.db();
        wait_until(EVENTUALLY, "every delivery of the order to be finished", || {
            db.scalar("SELECT COUNT(*) FROM deliveries WHERE status = 'pending'", &[]) == 0
                && db.scalar("SELECT COUNT(*) FROM deliveries WHERE status = 'dead'", &[]) == 1
        });

        let trace: Value = serde_json::from_str(&host.cli(&["trace", &correlation_id, "--format", "json"]))
            .expect("`host trace --format json` prints JSON");
        assert_eq!(trace["correlation_id"], correlation_id.as_str());
        let roots = trace["roots"].as_array().unwrap();
        assert_eq!(roots.len(), 1, "{trace:#}");
        assert_eq!(roots[0]["handled_by"], "orders");
        let emitted = roots[0]["emitted"].as_array().unwrap();
        assert_eq!(emitted.len(), 1, "{trace:#}");
        let order_placed = &emitted[0];
        assert_eq!(order_placed["kind"], "order.placed");
        let delivery = |node: &Value, subscriber: &str| -> Value {
            node["deliveries"]
                .as_array()
                .unwrap()
                .iter()
                .find(|d| d["subscriber"] == subscriber)
                .unwrap_or_else(|| panic!("no delivery to {subscriber}: {node:#}"))
                .clone()
        };
        let flaky = delivery(order_placed, "flaky");
        assert_eq!(flaky["status"], "dead");
        assert_eq!(flaky["attempts"], 2);
        assert_eq!(flaky["error_class"], "retryable");
        assert!(flaky["last_error"].as_str().unwrap().contains("o-t"), "{flaky:#}");
        let inventory = delivery(order_placed, "inventory");
        assert_eq!(inventory["status"], "done");
        assert!(inventory["handled_by"].as_str().unwrap().starts_with("inventory"), "{inventory:#}");
        // What inventory emitted in turn hangs under its delivery, with its own deliveries.
        let reserved = &inventory["emitted"][0];
        assert_eq!(reserved["kind"], "stock.reserved", "{inventory:#}");
        assert_eq!(reserved["depth"], 2);
        assert_eq!(delivery(reserved, "order-summary")["status"], "done");
        // Nothing of the request is missing from the tree, nothing of another request in it.
        let stored = db.scalar(
            "SELECT COUNT(*) FROM messages WHERE correlation_id = ?",
            &[&correlation_id],
        );
        assert_eq!(count_messages(&trace), stored, "{trace:#}");

        // The same tree as text, found by the id of one of its messages.
        let message_id = reserved["id"].as_str().unwrap();
        let text = host.cli(&["trace", message_id]);
        assert!(text.starts_with(&format!("correlation {correlation_id}\n")), "{text}");
        assert!(text.contains("command ") && text.contains("handled by orders"), "{text}");
        let dead_line = text
            .lines()
            .find(|l| l.contains("→ flaky"))
            .unwrap_or_else(|| panic!("no line for flaky:\n{text}"));
        assert!(dead_line.contains("DEAD, 2 attempts"), "{dead_line}");
        assert!(dead_line.contains("retryable"), "{dead_line}");
        assert!(
            dead_line.contains(&format!("host bus replay {}", flaky["id"])),
            "the line names the command that replays it: {dead_line}"
        );

        // A caller's own correlation id is kept, answered, and traces the same way.
        let own = host.post(
            "/commands/order.place",
            json!({ "order_id": "o-own", "sku": "widget", "qty": 1 }).to_string().into(),
            &[("correlation-id", "checkout-42")],
        );
        assert_eq!(own.status, 200, "{own:?}");
        assert_eq!(own.headers["correlation-id"], "checkout-42");
        let own_trace = host.cli(&["trace", "checkout-42"]);
        assert!(own_trace.contains("order.placed"), "{own_trace}");

        // An id that matches nothing is one clear error.
        let missing = host.cli_output(&["trace", "no-such-request"]);
        assert!(!missing.status.success());
        let stderr = String::from_utf8_lossy(&missing.stderr);
        assert!(stderr.contains("no message has the correlation id `no-such-request`"), "{stderr}");
    }
}

/// Messages in a `host trace --format json` tree.
fn count_messages(trace: &Value) -> i64 {
    fn nodes(list: &Value) -> i64 {
        list.as_array()
            .unwrap()
            .iter()
            .map(|node| {
                1 + node["deliveries"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| nodes(&d["emitted"]))
                    .sum::<i64>()
            })
            .sum()
    }
    trace["roots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| nodes(&r["emitted"]))
        .sum()
}
