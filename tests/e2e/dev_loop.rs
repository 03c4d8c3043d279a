//! The plugin author's loop, as a new user would run it, in each language: `host new` creates
//! a project that `host dev` builds and serves at once; an edit is rebuilt and swapped in
//! live; a broken edit shows the build's errors and leaves the last good version serving.

use crate::harness::{Host, host_binary, host_dir, wait_for, wait_until};
use serde_json::json;
use std::process::Command;
use std::time::Duration;

/// An incremental rebuild of a small plugin, on a loaded CI machine.
const REBUILT: Duration = Duration::from_secs(300);

/// `host new demo --lang LANG`, `host dev`, then edit `source` (the project's entry file) twice.
fn new_project_follows_every_edit(lang: &str, source: &str) {
    let dir = host_dir(&[]);
    let plugins = dir.path().join("plugins");
    let output = Command::new(host_binary())
        .args(["new", "demo", "--lang", lang, "--dir"])
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
    assert!(
        said.contains(source),
        "host new names the file to edit: {said}"
    );

    let host = Host::start_dev_in(dir, &[], &[]);
    let greeted = host.command_ok("demo.greet", json!({ "id": "1", "name": "Ada" }));
    assert_eq!(greeted["greeting"], "Hello, Ada!");
    wait_until(Duration::from_secs(20), "the event to be counted", || {
        host.query_ok("demo.get", json!({ "id": "1" }))["greeted_total"] == 1
    });
    let empty = host.command("demo.greet", json!({ "id": "2", "name": "" }));
    assert_eq!(
        empty.status, 422,
        "the template rejects an empty name: {empty:?}"
    );
    assert_eq!(empty.error_plugin(), "demo");
    // The template declares the command's payload schema: the host refuses before it runs.
    let untyped = host.command("demo.greet", json!({ "id": 2, "name": "Ada" }));
    assert_eq!(untyped.status, 422, "{untyped:?}");
    assert!(untyped.error_message().contains("`/id`"), "{untyped:?}");

    // Edit the source: the next commands are answered by the rebuilt plugin.
    let source = host.plugins_dir().join("demo").join(source);
    let text = std::fs::read_to_string(&source).unwrap();
    assert_eq!(text.matches("Hello, ").count(), 1, "one greeting to edit");
    std::fs::write(&source, text.replace("Hello, ", "Hi, ")).unwrap();
    let mut next = 10;
    wait_for(REBUILT, "the edited plugin to answer", || {
        next += 1;
        let id = next.to_string();
        let answer = host.command_ok("demo.greet", json!({ "id": id, "name": "Ada" }));
        (answer["greeting"] == "Hi, Ada!").then_some(())
    });
    assert!(
        host.log_text().contains("plugin replaced"),
        "the swap is logged"
    );

    // A broken edit: the build fails with its output in the log, tagged with the plugin, and
    // the last good version keeps serving.
    let broken = std::fs::read_to_string(&source).unwrap() + "\nthis is not a program ((\n";
    std::fs::write(&source, broken).unwrap();
    wait_until(REBUILT, "the failed build to be reported", || {
        host.log_text().contains("keeps serving")
    });
    let log = host.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("build command `") && l.contains("failed")),
        "the failed build is named"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("build: ") && l.contains("demo")),
        "the build's output is shown, tagged with the plugin"
    );
    let answer = host.command_ok("demo.greet", json!({ "id": "99", "name": "Ada" }));
    assert_eq!(answer["greeting"], "Hi, Ada!");
}

#[test]
fn rust_project_from_host_new_serves_and_follows_every_edit() {
    new_project_follows_every_edit("rust", "src/lib.rs");
}

#[test]
fn python_project_from_host_new_serves_and_follows_every_edit() {
    new_project_follows_every_edit("python", "app.py");
}

#[test]
fn javascript_project_from_host_new_serves_and_follows_every_edit() {
    new_project_follows_every_edit("javascript", "app.js");
}

#[test]
fn c_project_from_host_new_serves_and_follows_every_edit() {
    new_project_follows_every_edit("c", "plugin.c");
}
