//! The plugin author's loop, as a new user would run it, in each language: `host new` creates
//! a project that `host dev` builds and serves at once; an edit is rebuilt (in Python, read by
//! the development runtime with no build; in JavaScript, bundled for it) and swapped in live; a
//! broken edit shows the build's (or the import's) errors and leaves the last good version
//! serving; a save that changes nothing builds nothing.

use crate::harness::{Host, host_binary, host_dir, wait_for, wait_until};
use serde_json::json;
use std::process::Command;
use std::time::Duration;

/// An incremental rebuild of a small plugin, on a loaded CI machine.
const REBUILT: Duration = Duration::from_secs(300);

/// How `host dev` follows a language's edits.
#[derive(Clone, Copy, PartialEq)]
enum Follows {
    /// Each save is built into a new component.
    Build,
    /// Each save is served by the language's development runtime, with no build.
    DevRuntime,
    /// Each save is bundled (not componentized) for the language's development runtime.
    DevBundle,
}

/// Lines of the log that start a build.
fn builds(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("building") && l.contains("command="))
        .count()
}

/// Lines of the log that start building a component of the plugin itself, not a bundle of it
/// or a development runtime.
fn component_builds(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("building") && l.contains("command=") && l.contains("--app"))
        .filter(|l| !l.contains("--dev-bundle"))
        .count()
}

/// `host new demo --lang LANG`, `host dev`, then edit `source` (the project's entry file) twice.
fn new_project_follows_every_edit(lang: &str, source: &str, follows: Follows) {
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

    let runtime_named = host
        .log_text()
        .lines()
        .any(|l| l.contains("plugin loaded") && l.contains("the development runtime"));
    assert_eq!(
        runtime_named,
        follows != Follows::Build,
        "the log says which way the plugin runs"
    );
    let builds_before_edit = builds(&host.log_text());

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
    if follows != Follows::DevRuntime {
        // Saved again unchanged (newer on disk, same bytes): nothing is built or replaced.
        let builds_before_save = builds(&host.log_text());
        let replaced = host.log_text().matches("plugin replaced").count();
        std::fs::write(&source, std::fs::read(&source).unwrap()).unwrap();
        wait_until(REBUILT, "the unchanged save to be noticed", || {
            host.log_text().contains("saved unchanged")
        });
        let log = host.log_text();
        assert_eq!(builds(&log), builds_before_save, "{log}");
        assert_eq!(log.matches("plugin replaced").count(), replaced, "{log}");
    }

    // A broken edit: the build fails with its output in the log, tagged with the plugin (or
    // the runtime cannot import it, with the interpreter's traceback), and the last good
    // version keeps serving.
    let broken = std::fs::read_to_string(&source).unwrap() + "\nthis is not a program ((\n";
    std::fs::write(&source, broken).unwrap();
    wait_until(REBUILT, "the failed build to be reported", || {
        host.log_text().contains("keeps serving")
    });
    let log = host.log_text();
    if follows == Follows::DevRuntime {
        assert_eq!(builds(&log), builds_before_edit, "no save was built: {log}");
        assert!(
            log.lines()
                .any(|l| l.contains("`describe` failed") && l.contains("SyntaxError")),
            "the import error is named: {log}"
        );
        let answer = host.command_ok("demo.greet", json!({ "id": "99", "name": "Ada" }));
        assert_eq!(answer["greeting"], "Hi, Ada!");
        return;
    }
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
    if follows == Follows::DevBundle {
        assert_eq!(component_builds(&log), 0, "only bundles are built: {log}");
    }
    let answer = host.command_ok("demo.greet", json!({ "id": "99", "name": "Ada" }));
    assert_eq!(answer["greeting"], "Hi, Ada!");
}

#[test]
fn rust_project_from_host_new_serves_and_follows_every_edit() {
    new_project_follows_every_edit("rust", "src/lib.rs", Follows::Build);
}

#[test]
fn python_project_from_host_new_serves_and_follows_every_edit() {
    new_project_follows_every_edit("python", "app.py", Follows::DevRuntime);
}

#[test]
fn javascript_project_from_host_new_serves_and_follows_every_edit() {
    new_project_follows_every_edit("javascript", "app.js", Follows::DevBundle);
}

#[test]
fn c_project_from_host_new_serves_and_follows_every_edit() {
    new_project_follows_every_edit("c", "plugin.c", Follows::Build);
}
