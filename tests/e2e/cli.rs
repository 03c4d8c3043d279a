//! The command line beside a running host: `host send` runs a command in its own process on
//! the same database, and the running host picks up the events it committed; a second
//! `host run` on the same port is refused before it builds or loads anything.

use crate::harness::{DEMO, EVENTUALLY, Host};
use serde_json::{Value, json};

on_every_backend! {
    fn host_send_commits_like_http_and_the_running_host_delivers_its_events() {
        let host = Host::start(DEMO, &[]);
        host.command_ok("stock.add", json!({ "sku": "widget", "qty": 5 }));

        let order = json!({ "order_id": "o-cli", "sku": "widget", "qty": 2 });
        let plugins = host.plugins_dir();
        let stdout = host.cli(&[
            "send",
            "order.place",
            "--payload",
            &order.to_string(),
            "--idempotency-key",
            "cli-1",
            "--plugins",
            plugins.to_str().expect("a UTF-8 temporary path"),
        ]);
        let answer: Value = serde_json::from_str(stdout.trim())
            .unwrap_or_else(|e| panic!("`host send` printed no JSON answer ({e}):\n{stdout}"));
        assert_eq!(answer, json!({ "order_id": "o-cli", "status": "placed" }));

        // The key the CLI stored is the one HTTP callers see.
        let replay = host.command_with_key("order.place", order, "cli-1");
        assert_eq!(replay.status, 200, "{replay:?}");
        assert!(replay.replayed(), "{replay:?}");
        assert_eq!(replay.body, answer);

        // Committed by another process: the running host finds the events and delivers them.
        host.summary_when("o-cli", "reserved", EVENTUALLY);
        assert_eq!(
            host.query_ok("stock.get", json!({ "sku": "widget" }))["available"],
            3
        );
    }
}

#[test]
fn a_second_host_on_a_taken_port_fails_at_once_naming_the_port_and_listen() {
    let host = Host::start(DEMO, &[]);
    let address = host
        .base_url()
        .strip_prefix("http://")
        .expect("an http base URL")
        .to_owned();
    let plugins = host.plugins_dir();
    let second = host.cli_output(&[
        "run",
        "--plugins",
        plugins.to_str().expect("a UTF-8 temporary path"),
        "--listen",
        &address,
    ]);
    assert!(!second.status.success());
    let said = String::from_utf8_lossy(&second.stderr);
    assert!(said.contains(&address), "{said}");
    assert!(said.contains("another process is listening"), "{said}");
    assert!(said.contains("--listen"), "{said}");
    // Refused before loading or building anything.
    assert!(!said.contains("plugin loaded"), "{said}");
    // The first host is untouched.
    host.command_ok("stock.add", json!({ "sku": "widget", "qty": 1 }));
}
