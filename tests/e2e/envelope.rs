//! The envelope given at the ingress reaches every subscriber of the causal tree, in every
//! SDK: a command's tenant, actor and correlation id are handed to a Python subscriber of its
//! event, to a JavaScript subscriber of what the Python one emitted, and to a Rust subscriber
//! of what the JavaScript one emitted; each sees the message before it as its cause.

use crate::harness::{EVENTUALLY, FLAKY, Host, ORDERS, PROBE_JS, PROBE_PY, wait_for};
use serde_json::{Value, json};

#[test]
fn tenant_actor_and_correlation_reach_subscribers_in_python_javascript_and_rust() {
    let host = Host::start(&[ORDERS, PROBE_PY, PROBE_JS, FLAKY], &[]);
    let placed = host.post(
        "/commands/order.place",
        json!({ "order_id": "o-e", "sku": "widget", "qty": 1 })
            .to_string()
            .into(),
        &[
            ("tenant-id", "acme"),
            ("actor", "user-7"),
            ("correlation-id", "checkout-e"),
        ],
    );
    assert_eq!(placed.status, 200, "{placed:?}");
    let seen = |query: &str, kind: &str| -> Value {
        wait_for(EVENTUALLY, &format!("{query} to have seen {kind}"), || {
            let answer = host.query(query, json!({ "kind": kind }));
            (answer.status == 200).then_some(answer.body)
        })
    };
    // The end of the chain first: once Rust has seen it, every link has run.
    let rust = seen("flaky.envelope", "probe.js.saw");
    let javascript = seen("probe.js.seen", "probe.py.saw");
    let python = seen("probe.py.seen", "order.placed");

    for (sdk, envelope, tenant, correlation, causation) in [
        (
            "python",
            &python,
            "tenant_id",
            "correlation_id",
            "causation_id",
        ),
        (
            "javascript",
            &javascript,
            "tenantId",
            "correlationId",
            "causationId",
        ),
        ("rust", &rust, "tenant_id", "correlation_id", "causation_id"),
    ] {
        assert_eq!(envelope[tenant], "acme", "{sdk}: {envelope:#}");
        assert_eq!(envelope["actor"], "user-7", "{sdk}: {envelope:#}");
        assert_eq!(envelope[correlation], "checkout-e", "{sdk}: {envelope:#}");
        assert!(envelope[causation].is_string(), "{sdk}: {envelope:#}");
    }
    // Headers and schema versions set by an emitting handler reach the next link.
    assert_eq!(
        javascript["headers"],
        json!([["emitted-by", "probe-py"]]),
        "{javascript:#}"
    );
    assert_eq!(javascript["schemaVersion"], 2, "{javascript:#}");
    assert_eq!(
        rust["headers"],
        json!([["emitted-by", "probe-js"]]),
        "{rust:#}"
    );
    assert_eq!(rust["schema_version"], 2, "{rust:#}");
    // The queries of both probes declare a schema: `kind` must be a string.
    for query in ["probe.py.seen", "probe.js.seen"] {
        let refused = host.query(query, json!({ "kind": 5 }));
        assert_eq!(refused.status, 422, "{query}: {refused:?}");
        assert!(
            refused.error_message().contains("`/kind`"),
            "{query}: {refused:?}"
        );
    }
    // Each link's cause is the message the link before it was handed.
    assert_eq!(
        javascript["causationId"], python["id"],
        "{javascript:#} {python:#}"
    );
    assert_eq!(
        rust["causation_id"], javascript["id"],
        "{rust:#} {javascript:#}"
    );
    // And the command is the cause of the first event.
    let db = host.db();
    let command = db.strings(
        "SELECT causation_id FROM messages WHERE id = ?",
        &[python["id"].as_str().unwrap()],
    );
    assert_eq!(
        python["causation_id"].as_str(),
        command.first().map(String::as_str)
    );
}

/// A command's own headers and schema version come from the HTTP request:
/// `Message-Header-NAME` headers (prefix off, in the order sent) and `Schema-Version`; without
/// them the envelope has none and version 1; a malformed one is a 400 naming the header.
#[test]
fn message_headers_and_schema_version_are_set_by_the_caller() {
    let host = Host::start(&[FLAKY], &[]);
    let echo =
        |headers: &[(&str, &str)]| host.post("/commands/flaky.echo", b"{}".to_vec(), headers);
    let plain = echo(&[]);
    assert_eq!(plain.status, 200, "{plain:?}");
    assert_eq!(plain.body, json!({ "headers": [], "schema_version": 1 }));

    let set = echo(&[
        ("message-header-region", "eu-west"),
        ("Message-Header-Trace-Tag", "t 1"),
        ("schema-version", "3"),
        ("x-other", "not a message header"),
    ]);
    assert_eq!(set.status, 200, "{set:?}");
    assert_eq!(
        set.body,
        json!({ "headers": [["region", "eu-west"], ["trace-tag", "t 1"]], "schema_version": 3 })
    );

    for (name, value) in [
        ("schema-version", "0"),
        ("schema-version", "two"),
        ("message-header-", "x"),
    ] {
        let refused = echo(&[(name, value)]);
        assert_eq!(refused.status, 400, "{name}: {value}: {refused:?}");
        assert!(refused.error_message().contains(name), "{refused:?}");
    }
}
