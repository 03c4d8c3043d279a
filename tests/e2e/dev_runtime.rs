//! The Python development runtime of `host dev`: a plugin with a `[dev]` table runs from its
//! sources with no build — its own modules beside the entry included — sees its folder
//! read-only and nothing else of the host's files, and a module the runtime does not carry is
//! named with the way out (`--no-dev-runtime`, which builds it). `host run` never runs a
//! plugin on the runtime: without its built component the plugin is refused.

use crate::harness::{Host, host_dir, wait_for, wait_until, workspace_root};
use serde_json::json;
use std::path::Path;
use std::time::Duration;

/// A componentize-py build on a loaded CI machine (the runtime, or `--no-dev-runtime`).
const BUILT: Duration = Duration::from_secs(300);

/// Writes a Python plugin folder `name` with `files`, built and run the way the examples are.
fn python_plugin(plugins: &Path, name: &str, files: &[(&str, &str)]) {
    let folder = plugins.join(name);
    std::fs::create_dir_all(&folder).unwrap();
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
    std::fs::write(folder.join("plugin.toml"), manifest).unwrap();
    for (file, text) in files {
        std::fs::write(folder.join(file), text).unwrap();
    }
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
    let log = host.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("plugin loaded") && l.contains("the development runtime")),
        "the log says the plugin runs on the development runtime: {log}"
    );
    let built_plugin = |log: &str| {
        log.lines()
            .any(|l| l.contains("building") && l.contains("--app"))
    };
    assert!(!built_plugin(&log), "the plugin itself is not built: {log}");

    // A save of a module beside the entry serves at the next message, still with no build.
    std::fs::write(
        host.plugins_dir().join("looking/helpers.py"),
        "GREETING = \"hi\"\n",
    )
    .unwrap();
    wait_for(BUILT, "the saved module to serve", || {
        let seen = host.command_ok("looking.look", json!({}));
        (seen["greeting"] == "hi").then_some(())
    });
    wait_until(BUILT, "the saved version to be logged", || {
        host.log_text().contains("plugin replaced")
    });
    let log = host.log_text();
    assert!(!built_plugin(&log), "a save is not built: {log}");
    assert!(
        log.contains("kept compiled in memory"),
        "a save compiles nothing: {log}"
    );

    // `host run` never runs sources: with no built component the plugin is refused.
    drop(host);
    let dir = host_dir(&[]);
    python_plugin(
        &dir.path().join("plugins"),
        "looking",
        &[
            ("app.py", LOOKING_APP),
            ("helpers.py", "GREETING = \"hi\"\n"),
        ],
    );
    let host = Host::start_in(dir, &[], &[]);
    let answer = host.command("looking.look", json!({}));
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
