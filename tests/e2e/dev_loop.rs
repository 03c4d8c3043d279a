//! The plugin author's loop, as a new user would run it: `host new` creates a project that
//! `host dev` builds and serves at once; an edit is rebuilt and swapped in live; a broken edit
//! shows the compiler's errors and leaves the last good version serving.

use crate::harness::{Host, host_binary, host_dir, wait_for, wait_until};
use serde_json::json;
use std::process::Command;
use std::time::Duration;

/// An incremental rebuild of a small plugin, on a loaded CI machine.
const REBUILT: Duration = Duration::from_secs(300);

#[test]
fn host_new_then_host_dev_serves_the_plugin_and_follows_every_edit() {
    let dir = host_dir(&[]);
    let plugins = dir.path().join("plugins");
    let output = Command::new(host_binary())
        .args(["new", "demo", "--lang", "rust", "--dir"])
        .arg(&plugins)
        .output()
        .expect("running host new");
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "host new failed: {said}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        said.contains("host dev"),
        "host new says what to do next: {said}"
    );

    let host = Host::start_dev_in(dir, &[], &[]);
    let greeted = host.command_ok("demo.greet", json!({ "id": "1", "name": "Ada" }));
    assert_eq!(greeted["greeting"], "Hello, Ada!");
    wait_until(Duration::from_secs(20), "the event to be counted", || {
        host.query_ok("demo.get", json!({ "id": "1" }))["greeted_total"] == 1
    });
    assert_eq!(
        host.command("demo.greet", json!({ "id": "2", "name": "" }))
            .status,
        422,
        "the template rejects an empty name"
    );

    // Edit the source: the next commands are answered by the rebuilt plugin.
    let source = host.plugins_dir().join("demo/src/lib.rs");
    let text = std::fs::read_to_string(&source).unwrap();
    std::fs::write(&source, text.replace("\"Hello, {}!\"", "\"Hi, {}!\"")).unwrap();
    let mut next = 10;
    wait_for(REBUILT, "the edited plugin to answer", || {
        next += 1;
        let answer = host.command_ok(
            "demo.greet",
            json!({ "id": next.to_string(), "name": "Ada" }),
        );
        (answer["greeting"] == "Hi, Ada!").then_some(())
    });
    assert!(
        host.log_text().contains("plugin replaced"),
        "the swap is logged"
    );

    // A broken edit: the build fails with the compiler's output in the log, and the last good
    // version keeps serving.
    std::fs::write(
        &source,
        std::fs::read_to_string(&source).unwrap() + "\nthis is not rust\n",
    )
    .unwrap();
    wait_until(REBUILT, "the failed build to be reported", || {
        host.log_text()
            .contains("build command `cargo build --release --target wasm32-wasip2` failed")
    });
    let log = host.log_text();
    assert!(
        log.contains("keeps serving"),
        "the log says what keeps serving"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("build: error") && l.contains("demo")),
        "the compiler's errors are shown, tagged with the plugin"
    );
    let answer = host.command_ok("demo.greet", json!({ "id": "99", "name": "Ada" }));
    assert_eq!(answer["greeting"], "Hi, Ada!");
}
