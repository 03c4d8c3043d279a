//! Plugins written in C, built from source by the C SDK's build tool like every other plugin:
//! the example `tally` counts what `orders` places; the test plugin `probe-c` sees the whole
//! envelope, emits with options and answers a query written in C++; its handler errors answer and dead-letter like the other
//! languages' and replay; a trap (a write outside its linear memory) is classified and leaves
//! nothing behind.

use crate::harness::{EVENTUALLY, Host, ORDERS, PROBE_C, TALLY, wait_for, wait_until};
use serde_json::{Value, json};

/// Attempts before a delivery is dead-lettered in this test.
const MAX_ATTEMPTS: u32 = 3;

#[test]
fn a_c_subscriber_counts_orders_and_answers_its_command_and_query() {
    let host = Host::start(&[ORDERS, TALLY], &[]);
    for (order, sku, qty) in [
        ("c-1", "widget", 2),
        ("c-2", "widget", 3),
        ("c-3", "gadget", 1),
    ] {
        host.command_ok(
            "order.place",
            json!({ "order_id": order, "sku": sku, "qty": qty }),
        );
    }
    let widget = wait_for(EVENTUALLY, "tally to count three orders", || {
        let answer = host.query_ok("tally.sku", json!({ "sku": "widget" }));
        (answer["all_orders"] == 3).then_some(answer)
    });
    assert_eq!(
        widget,
        json!({ "sku": "widget", "orders": 2, "units": 5, "all_orders": 3, "all_units": 6 })
    );
    // Its command starts an article's tally again; the grand total keeps counting.
    assert_eq!(
        host.command_ok("tally.reset", json!({ "sku": "widget" })),
        json!({ "sku": "widget", "orders": 0, "units": 0 })
    );
    assert_eq!(
        host.query_ok("tally.sku", json!({ "sku": "widget" })),
        json!({ "sku": "widget", "orders": 0, "units": 0, "all_orders": 3, "all_units": 6 })
    );
    // Its query declares a schema: the host refuses a non-string sku before C runs.
    let refused = host.query("tally.sku", json!({ "sku": 7 }));
    assert_eq!(refused.status, 422, "{refused:?}");
    assert!(refused.error_message().contains("`/sku`"), "{refused:?}");
    // The guest's log line reaches the host's log, tagged with the plugin.
    wait_until(EVENTUALLY, "tally's log line", || {
        host.log_text().contains("counted 1 x gadget")
    });
}

#[test]
fn the_c_sdk_hands_over_the_whole_envelope_and_emits_with_options() {
    let host = Host::start(&[ORDERS, PROBE_C], &[]);
    let placed = host.post(
        "/commands/order.place",
        json!({ "order_id": "o-c", "sku": "w\"quoted\"", "qty": 4 })
            .to_string()
            .into(),
        &[
            ("tenant-id", "acme"),
            ("actor", "user-9"),
            ("correlation-id", "checkout-c"),
        ],
    );
    assert_eq!(placed.status, 200, "{placed:?}");
    let seen: Value = wait_for(EVENTUALLY, "probe-c to have seen the order", || {
        let answer = host.query("probe.c.seen", json!({ "kind": "order.placed" }));
        (answer.status == 200).then_some(answer.body)
    });
    assert_eq!(seen["kind"], "order.placed", "{seen:#}");
    assert_eq!(seen["partition_key"], "o-c", "{seen:#}");
    assert_eq!(seen["tenant_id"], "acme", "{seen:#}");
    assert_eq!(seen["actor"], "user-9", "{seen:#}");
    assert_eq!(seen["correlation_id"], "checkout-c", "{seen:#}");
    assert!(seen["causation_id"].is_string(), "{seen:#}");
    assert_eq!(seen["schema_version"], 1, "{seen:#}");
    assert_eq!(seen["attempt"], 1, "{seen:#}");
    assert_eq!(seen["headers"], json!([]), "{seen:#}");
    // The payload went through the SDK's JSON reader and writer unchanged, escapes included.
    assert_eq!(
        seen["payload"],
        json!({ "order_id": "o-c", "sku": "w\"quoted\"", "qty": 4 }),
        "{seen:#}"
    );

    // The event it emitted carries its options.
    let db = host.db();
    wait_until(EVENTUALLY, "probe.c.saw to be stored", || {
        db.scalar(
            "SELECT COUNT(*) FROM messages WHERE kind = 'probe.c.saw'",
            &[],
        ) == 1
    });
    let saw = db.strings(
        "SELECT partition_key || ' ' || schema_version || ' ' || headers FROM messages WHERE kind = 'probe.c.saw'",
        &[],
    );
    assert!(
        saw[0].starts_with("o-c 2 ") && saw[0].contains("emitted-by") && saw[0].contains("probe-c"),
        "{saw:?}"
    );

    // State round-trips any JSON value; a query reads it back.
    let value = json!({ "nested": [1, 2.5, "three", null, true], "unicode": "é ✓ \u{1F600}" });
    host.command_ok("probe.c.put", json!({ "key": "k", "value": value }));
    assert_eq!(
        host.query_ok("probe.c.get", json!({ "key": "k" }))["value"],
        value
    );
    assert_eq!(
        host.query_ok("probe.c.get", json!({ "key": "absent" }))["value"],
        Value::Null
    );
    // A query written in C++ (linked with libc++) in the same plugin.
    assert_eq!(
        host.query_ok(
            "probe.c.sorted",
            json!({ "words": ["pear", "apple", 3, "fig"] })
        ),
        json!(["apple", "fig", "pear"])
    );
}

#[test]
fn c_handler_errors_and_traps_commit_nothing_and_dead_letters_replay() {
    let host = Host::start_with_fast_retries(&[ORDERS, PROBE_C], MAX_ATTEMPTS);
    let db = host.db();
    let written = |key: &str| {
        db.scalar(
            "SELECT COUNT(*) FROM state WHERE plugin = 'probe-c' AND key = ?",
            &[key],
        )
    };

    // Each class answers as in every other language; what the handler wrote is rolled back.
    for (class, status) in [("rejected", 422), ("retryable", 503), ("permanent", 500)] {
        let key = format!("fail/{class}");
        let answer = host.command("probe.c.fail", json!({ "class": class, "key": key }));
        assert_eq!(answer.status, status, "{class}: {answer:?}");
        assert_eq!(answer.error_class(), class, "{answer:?}");
        assert_eq!(answer.error_plugin(), "probe-c", "{answer:?}");
        assert!(
            answer
                .error_message()
                .contains(&format!("{class} on purpose")),
            "{answer:?}"
        );
        assert_eq!(
            written(&key),
            0,
            "{class}: nothing of the failed call commits"
        );
    }

    // A write outside linear memory traps: classified, rolled back, and the plugin serves on.
    let trapped = host.command("probe.c.trap", json!({ "key": "trap/marker" }));
    assert_eq!(trapped.status, 500, "{trapped:?}");
    assert_eq!(trapped.error_class(), "trap", "{trapped:?}");
    assert!(
        trapped.error_message().contains("out of bounds"),
        "the trap is explained: {trapped:?}"
    );
    assert_eq!(written("trap/marker"), 0);
    assert_eq!(
        host.command_ok("probe.c.put", json!({ "key": "after-trap", "value": 1 }))["value"],
        1
    );

    // A retryable event failure is retried, dead-lettered with its message, and replays.
    host.command_ok("probe.c.set", json!({ "failing": true }));
    host.command_ok(
        "order.place",
        json!({ "order_id": "c-dlq", "sku": "w", "qty": 1 }),
    );
    wait_until(EVENTUALLY, "the C delivery to be dead-lettered", || {
        db.scalar("SELECT COUNT(*) FROM deliveries WHERE status = 'dead'", &[]) == 1
    });
    let letter = &host.bus_list("dlq")[0];
    assert_eq!(letter["subscriber"], "probe-c", "{letter:#}");
    assert_eq!(letter["error_class"], "retryable", "{letter:#}");
    assert_eq!(letter["attempts"], MAX_ATTEMPTS, "{letter:#}");
    assert!(
        letter["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains(&format!("failing on purpose (attempt {MAX_ATTEMPTS})")),
        "{letter:#}"
    );
    assert_eq!(
        db.scalar(
            "SELECT COUNT(*) FROM state WHERE plugin = 'probe-c' AND key LIKE 'attempted/%'",
            &[]
        ),
        0,
        "no failed attempt committed its write"
    );
    host.command_ok("probe.c.set", json!({ "failing": false }));
    host.cli(&["bus", "replay", "--all"]);
    let seen: Value = wait_for(EVENTUALLY, "the replayed letter to be delivered", || {
        let answer = host.query("probe.c.seen", json!({ "kind": "order.placed" }));
        (answer.status == 200).then_some(answer.body)
    });
    assert_eq!(seen["payload"]["order_id"], "c-dlq", "{seen:#}");
}
