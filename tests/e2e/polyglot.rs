//! Three languages in one host: an event emitted by a Rust plugin reaches a Python and a
//! JavaScript subscriber, whose effects show through their queries; a retryable failure in
//! Python and in JavaScript is retried and dead-lettered like a Rust one, and replays; an
//! uncaught exception traps the call and is explained by the exception.

use crate::harness::{EVENTUALLY, FLAKY, FRAUD_CHECK, Host, NOTIFIER, ORDERS, wait_until};
use serde_json::json;

/// Attempts before a delivery is dead-lettered in this test.
const MAX_ATTEMPTS: u32 = 3;

#[test]
fn rust_python_and_javascript_plugins_cooperate_and_fail_alike() {
    let host = Host::start_with_fast_retries(&[ORDERS, FRAUD_CHECK, NOTIFIER, FLAKY], MAX_ATTEMPTS);
    let plugins: Vec<String> = host.health()["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(plugins, ["flaky", "fraud-check", "notifier", "orders"]);

    // Before the Python and JS plugins are configured, their deliveries fail `retryable`, as
    // the Rust one does while its switch is on: each is retried, then dead-lettered.
    host.command_ok("flaky.set", json!({ "failing": true }));
    host.command_ok(
        "order.place",
        json!({ "order_id": "early", "sku": "w", "qty": 2 }),
    );
    wait_until(EVENTUALLY, "three dead letters, one per language", || {
        host.db()
            .scalar("SELECT COUNT(*) FROM deliveries WHERE status = 'dead'", &[])
            == 3
    });
    for letter in host.bus_list("dlq") {
        assert_eq!(letter["error_class"], "retryable", "{letter:#}");
        assert_eq!(letter["attempts"], MAX_ATTEMPTS, "{letter:#}");
        let build = letter["handled_by"].as_str().unwrap_or_default();
        let subscriber = letter["subscriber"].as_str().unwrap();
        assert!(build.starts_with(&format!("{subscriber}@")), "{letter:#}");
    }
    let last_errors: Vec<String> = host
        .bus_list("dlq")
        .iter()
        .map(|l| l["last_error"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        last_errors.iter().any(|e| e.contains("no fraud rules yet"))
            && last_errors
                .iter()
                .any(|e| e.contains("no notification channel yet")),
        "the Python and JS messages reach the DLQ: {last_errors:#?}"
    );

    // Configure them (and switch the Rust failure off); replay; every letter is delivered.
    assert_eq!(
        host.command_ok("fraud.rules", json!({ "max_qty": 5 }))["max_qty"],
        5
    );
    assert_eq!(
        host.command_ok("notify.channel", json!({ "channel": "email" }))["channel"],
        "email"
    );
    host.command_ok("flaky.set", json!({ "failing": false }));
    host.cli(&["bus", "replay", "--all"]);
    wait_until(EVENTUALLY, "the replayed letters to be delivered", || {
        host.db().scalar(
            "SELECT COUNT(*) FROM deliveries WHERE status != 'done'",
            &[],
        ) == 0
    });
    assert_eq!(
        host.query_ok("fraud.check", json!({ "order_id": "early" }))["verdict"],
        "clear"
    );

    // The steady path: a Rust command's event reaches Python and JS at once.
    host.command_ok(
        "order.place",
        json!({ "order_id": "big", "sku": "w", "qty": 9 }),
    );
    wait_until(EVENTUALLY, "python and javascript to see the order", || {
        host.query("fraud.check", json!({ "order_id": "big" }))
            .status
            == 200
            && host
                .query("notify.sent", json!({ "order_id": "big" }))
                .status
                == 200
    });
    let check = host.query_ok("fraud.check", json!({ "order_id": "big" }));
    assert_eq!(check["verdict"], "review", "{check}");
    let sent = host.query_ok("notify.sent", json!({ "order_id": "big" }));
    assert_eq!(sent["channel"], "email", "{sent}");
    assert_eq!(
        sent["total"], 2,
        "one notification per order, the replayed one included"
    );
    assert_eq!(
        host.query_ok("flaky.seen", json!({ "order_id": "big" }))["count"],
        1
    );
    // Python's own event, emitted in its unit of work, committed with its effects.
    assert_eq!(
        host.db().scalar(
            "SELECT COUNT(*) FROM messages WHERE kind = 'fraud.checked'",
            &[],
        ),
        2
    );

    // Errors map the same way in every language: bad input is a 422 naming the plugin.
    for (kind, plugin) in [
        ("fraud.rules", "fraud-check"),
        ("notify.channel", "notifier"),
    ] {
        let answer = host.command(kind, json!({}));
        assert_eq!(answer.status, 422, "{answer:?}");
        assert_eq!(answer.error_class(), "rejected");
        assert_eq!(answer.error_plugin(), plugin);
    }
    // A bug (an uncaught exception) traps the call like a Rust panic, and the answer names
    // the exception, not the runtime's own last words.
    for (kind, payload, plugin, exception) in [
        ("fraud.check", json!([]), "fraud-check", "AttributeError"),
        ("notify.sent", json!(null), "notifier", "TypeError"),
    ] {
        let answer = host.query(kind, payload);
        assert_eq!(answer.status, 500, "{answer:?}");
        assert_eq!(answer.error_plugin(), plugin);
        assert!(
            answer.error_message().contains(exception),
            "the message names the exception: {answer:?}"
        );
    }
    host.command_ok("fraud.rules", json!({ "max_qty": 5 }));

    let answer = host.command_raw("notify.channel", b"not json");
    assert_eq!(
        answer.status, 400,
        "the host refuses non-JSON before any plugin: {answer:?}"
    );
}
