//! The development runtimes of `host dev`. Python: a plugin with a `[dev]` table runs from its
//! sources with no build — its own modules beside the entry included — sees its folder
//! read-only and nothing else of the host's files, and a module the runtime does not carry is
//! named with the way out (`--no-dev-runtime`, which builds it). JavaScript: a save is only
//! bundled (`[dev.build]`), the runtime evaluates the bundle, and a bug while evaluating it is
//! named while the last good version serves. `host run` never runs a plugin on a runtime:
//! without its built component the plugin is refused.

use crate::harness::{Host, host_dir, wait_for, wait_until, workspace_root};
use serde_json::json;
use std::path::Path;
use std::time::Duration;

/// A componentize-py build on a loaded CI machine (the runtime, or `--no-dev-runtime`).
const BUILT: Duration = Duration::from_secs(300);

/// Writes the plugin folder `folder`: its `manifest` and `files`.
fn write_plugin(folder: &Path, manifest: &str, files: &[(&str, &str)]) {
    std::fs::create_dir_all(folder).unwrap();
    std::fs::write(folder.join("plugin.toml"), manifest).unwrap();
    for (file, text) in files {
        std::fs::write(folder.join(file), text).unwrap();
    }
}

/// Writes a Python plugin folder `name` with `files`, built and run the way the examples are.
fn python_plugin(plugins: &Path, name: &str, files: &[(&str, &str)]) {
    let root = workspace_root();
    let sdk = root.join("sdk/python");
    let manifest = format!(
        r#"[build]
command = ["python3", "{build}", "--app", "app", "--output", "target/{name}.wasm"]
output = "target/{name}.wasm"
inputs = [".", "{sdk}", "{wit}"]

[dev]
entry = "app"
[dev.runtime]
command = ["python3", "{build}", "--dev-runtime", "--output", "{runtime}"]
output = "{runtime}"
inputs = ["{sdk}", "{wit}"]
"#,
        build = sdk.join("build.py").display(),
        sdk = sdk.display(),
        wit = root.join("wit").display(),
        // Each test's own: a build of the shared one by another test would replace it.
        runtime = plugins.with_file_name("dev-runtime.wasm").display(),
    );
    write_plugin(&plugins.join(name), &manifest, files);
}

/// Reports what the plugin can see of the file system and environment.
const LOOKING_APP: &str = r#"
import os
import handler_host as hh
import helpers


def attempt(action):
    try:
        action()
        return "allowed"
    except OSError:
        return "refused"


def write_beside():
    with open("/plugin/written.txt", "w") as f:
        f.write("x")


class Looking(hh.Plugin):
    name = "looking"
    version = "0.1.0"
    commands = ["looking.look"]

    def handle_command(self, msg):
        return {
            "greeting": helpers.GREETING,
            "read_own_source": attempt(lambda: open("/plugin/app.py").read()),
            "write_beside": attempt(write_beside),
            "read_host_file": attempt(lambda: open("/etc/hostname").read()),
            "entry": os.environ.get("HANDLER_HOST_ENTRY"),
        }


WitWorld = hh.export(Looking)
"#;

#[test]
fn dev_runs_python_sources_unbuilt_with_only_their_folder_granted_and_run_never_does() {
    let dir = host_dir(&[]);
    let plugins = dir.path().join("plugins");
    python_plugin(
        &plugins,
        "looking",
        &[
            ("app.py", LOOKING_APP),
            ("helpers.py", "GREETING = \"hello\"\n"),
        ],
    );
    let host = Host::start_dev_in(dir, &[], &[]);
    let seen = host.command_ok("looking.look", json!({}));
    assert_eq!(
        seen,
        json!({
            "greeting": "hello",
            "read_own_source": "allowed",
            "write_beside": "refused",
            "read_host_file": "refused",
            "entry": "app",
        })
    );
    assert!(!host.plugins_dir().join("looking/written.txt").exists());
    assert_runs_on_the_runtime_unbuilt(&host);

    // A save of a module beside the entry serves at the next message, still with no build.
    let save = || {
        let said = host.command_ok("looking.look", json!({}));
        (said["greeting"] == "hi").then_some(())
    };
    save_serves_with_no_component_build(&host, "looking/helpers.py", "GREETING = \"hi\"\n", save);

    // `host run` never runs sources: with no built component the plugin is refused.
    drop(host);
    run_refuses_the_unbuilt_plugin("looking.look", |plugins| {
        python_plugin(
            plugins,
            "looking",
            &[
                ("app.py", LOOKING_APP),
                ("helpers.py", "GREETING = \"hi\"\n"),
            ],
        );
    });
}

/// Lines of the log that start building the plugin's own component (not its bundle).
fn component_built(log: &str) -> bool {
    log.lines()
        .any(|l| l.contains("building") && l.contains("--app") && !l.contains("--dev-bundle"))
}

/// The log says the plugin runs on its development runtime, and no component of it was built.
fn assert_runs_on_the_runtime_unbuilt(host: &Host) {
    let log = host.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("plugin loaded") && l.contains("the development runtime")),
        "the log says the plugin runs on the development runtime: {log}"
    );
    assert!(
        !component_built(&log),
        "the plugin itself is not built: {log}"
    );
}

/// Writes `text` to `file` of the plugins folder; waits until `served` sees the new version
/// answer and the swap is logged; then no component was built and nothing compiled.
fn save_serves_with_no_component_build(
    host: &Host,
    file: &str,
    text: &str,
    served: impl FnMut() -> Option<()>,
) {
    std::fs::write(host.plugins_dir().join(file), text).unwrap();
    wait_for(BUILT, "the saved module to serve", served);
    wait_until(BUILT, "the saved version to be logged", || {
        host.log_text().contains("plugin replaced")
    });
    let log = host.log_text();
    assert!(!component_built(&log), "a save builds no component: {log}");
    assert!(
        log.contains("kept compiled in memory"),
        "a save compiles nothing: {log}"
    );
}

/// `host run` on a plugins folder that `write` fills: the plugin, never built, is refused and
/// `command` is not found; no development runtime is used.
fn run_refuses_the_unbuilt_plugin(command: &str, write: impl FnOnce(&Path)) {
    let dir = host_dir(&[]);
    write(&dir.path().join("plugins"));
    let host = Host::start_in(dir, &[], &[]);
    let answer = host.command(command, json!({ "name": "Ada" }));
    assert_eq!(answer.status, 404, "{answer:?}");
    let log = host.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("cannot load plugin") && l.contains("not built")),
        "{log}"
    );
    assert!(!log.contains("development runtime"), "{log}");
}

#[test]
fn a_module_the_runtime_lacks_is_named_and_no_dev_runtime_builds_instead() {
    let app = r#"
import colorsys
import handler_host as hh


class Colours(hh.Plugin):
    name = "colours"
    version = "0.1.0"
    commands = ["colours.hue"]

    def handle_command(self, msg):
        red, green, blue = msg.payload()["rgb"]
        return {"hue": colorsys.rgb_to_hsv(red, green, blue)[0]}


WitWorld = hh.export(Colours)
"#;
    let dir = host_dir(&[]);
    python_plugin(&dir.path().join("plugins"), "colours", &[("app.py", app)]);
    let host = Host::start_dev_in(dir, &[], &[]);
    wait_until(BUILT, "the refusal to be logged", || {
        host.log_text().contains("cannot load plugin")
    });
    let refusal = host
        .log_text()
        .lines()
        .find(|l| l.contains("cannot load plugin"))
        .unwrap()
        .to_owned();
    assert!(
        refusal.contains("`colorsys`") && refusal.contains("--no-dev-runtime"),
        "the missing module and the way out are named: {refusal}"
    );
    let answer = host.command("colours.hue", json!({ "rgb": [0, 0, 1] }));
    assert_eq!(answer.status, 404, "{answer:?}");

    drop(host);
    let dir = host_dir(&[]);
    python_plugin(&dir.path().join("plugins"), "colours", &[("app.py", app)]);
    let host = Host::start_dev_in(dir, &["--no-dev-runtime"], &[]);
    let answer = host.command_ok("colours.hue", json!({ "rgb": [0, 0, 1] }));
    assert_eq!(answer["hue"], 2.0 / 3.0);
}

/// Writes a JavaScript plugin folder `name` with `files`, built and run the way the examples
/// are: `[build]` componentizes it, `[dev.build]` bundles it for the development runtime.
fn javascript_plugin(plugins: &Path, name: &str, files: &[(&str, &str)]) {
    let root = workspace_root();
    let sdk = root.join("sdk/javascript");
    let manifest = format!(
        r#"[build]
command = ["node", "{build}", "--app", "app.js", "--output", "target/{name}.wasm"]
output = "target/{name}.wasm"
inputs = [".", "{sdk}", "{wit}"]

[dev.build]
command = ["node", "{build}", "--app", "app.js", "--dev-bundle", "--output", "target/{name}.dev.js"]
output = "target/{name}.dev.js"
[dev.runtime]
command = ["node", "{build}", "--dev-runtime", "--output", "{runtime}"]
output = "{runtime}"
inputs = ["{sdk}", "{wit}"]
"#,
        build = sdk.join("build.mjs").display(),
        sdk = sdk.display(),
        wit = root.join("wit").display(),
        // Each test's own: a build of the shared one by another test would replace it.
        runtime = plugins
            .with_file_name("javascript-dev-runtime.wasm")
            .display(),
    );
    write_plugin(&plugins.join(name), &manifest, files);
}

/// Answers with a greeting from a module beside the entry, and writes state and an event.
const GREETING_APP: &str = r#"
import { exportPlugin, state, events } from "handler-host";
import { GREETING } from "./helpers.js";

export const { describe, handleCommand, handleEvent, handleQuery } = exportPlugin({
  name: "greeting",
  commands: ["greeting.say"],
  handleCommand(msg) {
    const { name } = msg.payload();
    state.put(`said/${name}`, GREETING);
    events.emit("greeting.said", { name }, name);
    return { greeting: `${GREETING}, ${name}!` };
  },
});
"#;

#[test]
fn dev_runs_javascript_bundles_on_the_runtime_with_no_component_build_and_run_never_does() {
    let dir = host_dir(&[]);
    let plugins = dir.path().join("plugins");
    let files = |greeting: &str| {
        [
            ("app.js", GREETING_APP.to_owned()),
            (
                "helpers.js",
                format!("export const GREETING = \"{greeting}\";\n"),
            ),
        ]
    };
    let written = files("Hello");
    let written: Vec<_> = written.iter().map(|(f, t)| (*f, t.as_str())).collect();
    javascript_plugin(&plugins, "greeting", &written);
    let host = Host::start_dev_in(dir, &[], &[]);
    let said = host.command_ok("greeting.say", json!({ "name": "Ada" }));
    assert_eq!(said, json!({ "greeting": "Hello, Ada!" }));
    assert_runs_on_the_runtime_unbuilt(&host);
    let log = host.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("building") && l.contains("--dev-bundle")),
        "the plugin is bundled: {log}"
    );

    // A save of a module beside the entry is bundled and serves at the next message.
    let save = || {
        let said = host.command_ok("greeting.say", json!({ "name": "Bo" }));
        (said["greeting"] == "Hi, Bo!").then_some(())
    };
    let helpers = "export const GREETING = \"Hi\";\n";
    save_serves_with_no_component_build(&host, "greeting/helpers.js", helpers, save);

    // `host run` never runs a bundle: with no built component the plugin is refused.
    drop(host);
    run_refuses_the_unbuilt_plugin("greeting.say", |plugins| {
        javascript_plugin(plugins, "greeting", &written);
    });
}

#[test]
fn a_javascript_bug_while_evaluating_the_bundle_is_named_and_the_last_version_serves() {
    let dir = host_dir(&[]);
    let plugins = dir.path().join("plugins");
    javascript_plugin(
        &plugins,
        "greeting",
        &[
            ("app.js", GREETING_APP),
            ("helpers.js", "export const GREETING = \"Hello\";\n"),
        ],
    );
    let host = Host::start_dev_in(dir, &[], &[]);
    let said = host.command_ok("greeting.say", json!({ "name": "Ada" }));
    assert_eq!(said["greeting"], "Hello, Ada!");
    let helpers = host.plugins_dir().join("greeting/helpers.js");
    let app = host.plugins_dir().join("greeting/app.js");
    let refusals = |host: &Host| host.log_text().matches("keeps serving").count();

    // A module that throws while the bundle is evaluated: named, with the line of the bundle
    // (kept in the plugin's `target/`) it was thrown at.
    std::fs::write(
        &helpers,
        "export const GREETING = \"Hi\";\nthrow new TypeError(\"half-written helper\");\n",
    )
    .unwrap();
    wait_until(BUILT, "the bug to be reported", || refusals(&host) == 1);
    let log = host.log_text();
    assert!(
        log.lines().any(|l| l.contains("`describe` failed")
            && l.contains("TypeError: half-written helper")
            && l.contains("greeting.dev.js:")),
        "the exception and where it was thrown are named: {log}"
    );
    let said = host.command_ok("greeting.say", json!({ "name": "Ada" }));
    assert_eq!(
        said["greeting"], "Hello, Ada!",
        "the last good version serves"
    );

    // An entry that exports no handlers: the runtime says what to export.
    std::fs::write(&helpers, "export const GREETING = \"Hi\";\n").unwrap();
    std::fs::write(&app, "export const nothing = 1;\n").unwrap();
    wait_until(BUILT, "the missing exports to be reported", || {
        refusals(&host) == 2
    });
    let log = host.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("exports no function `describe`") && l.contains("exportPlugin")),
        "{log}"
    );

    // Mended: served again.
    std::fs::write(&app, GREETING_APP).unwrap();
    wait_for(BUILT, "the mended plugin to serve", || {
        let said = host.command_ok("greeting.say", json!({ "name": "Ada" }));
        (said["greeting"] == "Hi, Ada!").then_some(())
    });
}
