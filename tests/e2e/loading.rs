//! Loading a plugins folder: files that are not usable components, and a component that
//! claims what another already owns, are reported with their file and cause (in a log that is
//! plain text when it goes to a file); the rest load.

use crate::harness::{Host, INVENTORY, ORDERS, component, host_binary, host_dir};
use serde_json::{Value, json};
use std::fs;

/// The 8-byte header of an empty core WebAssembly module (magic, version 1).
const CORE_MODULE: &[u8] = b"\0asm\x01\0\0\0";

#[test]
fn bad_and_duplicate_components_are_reported_and_the_rest_load() {
    let dir = host_dir(&[INVENTORY]);
    let plugins = dir.path().join("plugins");
    let orders = fs::read(component(ORDERS)).expect("reading orders.wasm");
    fs::write(plugins.join("orders.wasm"), &orders).unwrap();
    fs::write(plugins.join("orders-copy.wasm"), &orders).unwrap();
    fs::write(plugins.join("truncated.wasm"), &orders[..100]).unwrap();
    fs::write(plugins.join("bad.wasm"), CORE_MODULE).unwrap();

    let host = Host::start_in(dir, &[], &[]);
    let health = host.health();

    let mut loaded: Vec<&str> = health["plugins"]
        .as_array()
        .expect("`plugins` is an array")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    loaded.sort_unstable();
    assert_eq!(loaded, ["inventory", "orders"], "{health:#}");

    let errors = health["load_errors"]
        .as_array()
        .expect("`load_errors` is an array");
    let cause_of = |file: &str| -> &str {
        let matching: Vec<&Value> = errors
            .iter()
            .filter(|e| e["file"].as_str().is_some_and(|f| f.ends_with(file)))
            .collect();
        assert_eq!(matching.len(), 1, "one load error for {file}: {health:#}");
        matching[0]["cause"].as_str().unwrap_or_default()
    };
    assert_eq!(errors.len(), 3, "{health:#}");

    let bad = cause_of("/bad.wasm");
    assert!(bad.contains("core WebAssembly module"), "bad.wasm: {bad}");
    let truncated = cause_of("/truncated.wasm");
    assert!(
        truncated.contains("not a valid WebAssembly component"),
        "truncated.wasm: {truncated}"
    );

    // Whichever copy of orders loaded first, the other is refused naming it.
    let loaded_file = health["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "orders")
        .and_then(|p| p["file"].as_str())
        .expect("the loaded orders plugin names its file");
    let (refused, kept) = if loaded_file.ends_with("/orders.wasm") {
        ("/orders-copy.wasm", "/orders.wasm")
    } else {
        ("/orders.wasm", "/orders-copy.wasm")
    };
    let duplicate = cause_of(refused);
    assert!(
        duplicate.contains(kept),
        "the refusal of {refused} must name {kept}: {duplicate}"
    );

    // What loaded works.
    host.command_ok("stock.add", json!({ "sku": "widget", "qty": 1 }));
    host.command_ok(
        "order.place",
        json!({ "order_id": "o-1", "sku": "widget", "qty": 1 }),
    );

    // The log goes to a file here, not a terminal: plain text an operator can grep.
    let log = host.log_text();
    assert!(log.contains("truncated.wasm"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "a log written to a file carries terminal escape codes:\n{log}"
    );
}

#[test]
fn health_shows_files_and_load_errors_only_with_the_admin_token() {
    let dir = host_dir(&[INVENTORY]);
    fs::write(dir.path().join("plugins/bad.wasm"), CORE_MODULE).unwrap();
    let host = Host::start_in(dir, &["--admin-token", "s3cret"], &[]);
    let health = |token: Option<&str>| -> Value {
        let mut request =
            reqwest::blocking::Client::new().get(format!("{}/health", host.base_url()));
        if let Some(token) = token {
            request = request.header("x-admin-token", token);
        }
        request.send().and_then(|r| r.json()).expect("GET /health")
    };
    for (token, internals) in [
        (None, false),
        (Some("wrong"), false),
        (Some("s3cret"), true),
    ] {
        let health = health(token);
        let inventory = &health["plugins"][0];
        assert_eq!(inventory["name"], "inventory", "{health:#}");
        assert!(inventory["build"].is_string(), "{health:#}");
        assert_eq!(
            inventory["file"].is_string(),
            internals,
            "token {token:?}: {health:#}"
        );
        if internals {
            let errors = health["load_errors"]
                .as_array()
                .expect("listed with the token");
            assert!(
                errors[0]["file"].as_str().unwrap().ends_with("/bad.wasm"),
                "{health:#}"
            );
        } else {
            assert_eq!(
                health["load_errors"], 1,
                "counted without the token: {health:#}"
            );
        }
    }
    let (status, ready) = host.ready();
    assert_eq!(status, 200, "{ready:#}");
    assert_eq!(
        (ready["plugins"].as_i64(), ready["dispatcher"].as_str()),
        (Some(1), Some("running"))
    );
}

/// `host run` loads components and never runs a source folder's build command, which would
/// run outside the sandbox with the host's rights: the folder is reported as not built, with
/// the command that builds it. `host build` (asked for) does run it.
#[test]
fn run_never_builds_a_source_folder_unless_asked() {
    let dir = host_dir(&[ORDERS]);
    let marker = dir.path().join("the-build-ran");
    let folder = dir.path().join("plugins").join("unbuilt");
    fs::create_dir_all(&folder).unwrap();
    fs::write(
        folder.join("plugin.toml"),
        format!(
            "[build]\ncommand = [\"sh\", \"-c\", \"touch '{}'\"]\noutput = \"unbuilt.wasm\"\ninputs = [\".\"]\n",
            marker.display()
        ),
    )
    .unwrap();
    let plugins = dir.path().join("plugins");
    let host = Host::start_in(dir, &[], &[]);
    let health = host.health();
    let errors = health["load_errors"].as_array().expect("load errors");
    assert_eq!(errors.len(), 1, "{health:#}");
    let cause = errors[0]["cause"].as_str().unwrap_or_default();
    assert!(
        cause.contains("not built: `host build --plugins"),
        "{cause}"
    );
    assert!(
        !marker.exists(),
        "host run ran a build command it was not asked to"
    );
    assert!(
        health["plugins"].as_array().is_some_and(|p| p.len() == 1),
        "orders serves: {health:#}"
    );

    let built = std::process::Command::new(host_binary())
        .args(["build", "--plugins"])
        .arg(&plugins)
        .output()
        .expect("running host build");
    assert!(
        marker.exists(),
        "host build runs the build command: {built:?}"
    );
}
