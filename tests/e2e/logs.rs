//! `--log-format json`: every log line is one JSON object, and every line about a message
//! (the host's and the guest's own `log` calls alike) carries its ids in `span`: the command's
//! kind and message id, a delivery's subscriber, message, correlation and causation ids.

use crate::harness::{DEMO, EVENTUALLY, FLAKY, Host, wait_until};
use serde_json::{Value, json};

#[test]
fn json_log_lines_carry_the_ids_of_the_message_they_are_about() {
    let mut plugins = DEMO.to_vec();
    plugins.push(FLAKY);
    let host = Host::start(&plugins, &["--log-format", "json", "--max-attempts", "1"]);
    host.command_ok("stock.add", json!({ "sku": "widget", "qty": 10 }));
    host.command_ok("flaky.set", json!({ "failing": true }));
    let placed = host.post(
        "/commands/order.place",
        json!({ "order_id": "o-l", "sku": "widget", "qty": 1 })
            .to_string()
            .into(),
        &[("correlation-id", "log-trace-1")],
    );
    assert_eq!(placed.status, 200, "{placed:?}");
    let db = host.db();
    wait_until(EVENTUALLY, "every delivery of the order to finish", || {
        db.scalar(
            "SELECT COUNT(*) FROM deliveries WHERE status = 'pending'",
            &[],
        ) == 0
            && db.scalar("SELECT COUNT(*) FROM deliveries WHERE status = 'dead'", &[]) == 1
    });

    let log = host.log_text();
    let lines: Vec<Value> = log
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("a log line that is not JSON ({e}): {line}\n{log}"))
        })
        .collect();
    let find = |message: &str| -> &Value {
        lines
            .iter()
            .find(|l| {
                l["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with(message))
            })
            .unwrap_or_else(|| panic!("no log line `{message}…`:\n{log}"))
    };

    // The guest's own log line, inside inventory's delivery of `order.placed`.
    let reserved = find("reserved 1 x widget for order o-l");
    let span = &reserved["span"];
    assert_eq!(span["name"], "delivery", "{reserved:#}");
    assert_eq!(span["subscriber"], "inventory", "{reserved:#}");
    assert_eq!(span["kind"], "order.placed", "{reserved:#}");
    assert_eq!(span["correlation_id"], "log-trace-1", "{reserved:#}");
    let order_placed = span["message_id"]
        .as_str()
        .expect("the message id")
        .to_owned();
    let caused_by = db.strings(
        "SELECT causation_id FROM messages WHERE id = ?",
        &[&order_placed],
    );
    assert_eq!(
        span["causation_id"].as_str(),
        caused_by.first().map(String::as_str),
        "{reserved:#}"
    );

    // The host's line about flaky's failure, in flaky's delivery of the same message.
    let failed = find("delivery failed");
    assert_eq!(failed["level"], "WARN");
    assert_eq!(failed["fields"]["class"], "retryable", "{failed:#}");
    assert_eq!(failed["span"]["subscriber"], "flaky", "{failed:#}");
    assert_eq!(
        failed["span"]["message_id"],
        order_placed.as_str(),
        "{failed:#}"
    );
    assert_eq!(
        failed["span"]["correlation_id"], "log-trace-1",
        "{failed:#}"
    );

    // A command's handler logs inside the command's span.
    let switched = find("flaky switched to failing");
    assert_eq!(switched["span"]["name"], "command", "{switched:#}");
    assert_eq!(switched["span"]["kind"], "flaky.set", "{switched:#}");
    assert!(
        switched["span"]["message_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty()),
        "{switched:#}"
    );
}
