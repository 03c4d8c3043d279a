//! `host new`: a plugin project that builds and loads as it is, with a command, an event
//! subscription and a query to start from.
//!
//! The project goes into its own folder of the plugins directory with a `plugin.toml`, so
//! `host dev` builds it, loads it, and rebuilds and swaps it on every save.

use clap::{Args, ValueEnum};
use std::path::{Component, Path, PathBuf};

/// The Rust SDK of the tree this host was built from, when it is still there.
const BUILT_WITH_SDK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../sdk");
/// The package name of the Rust SDK, to recognise its folder.
const SDK_PACKAGE: &str = "name = \"handler-host-sdk\"";

#[derive(Debug, Args)]
pub struct NewArgs {
    /// Plugin name: lowercase letters, digits and `-`, starting with a letter. It also prefixes
    /// the template's kinds (`NAME.greet`, `NAME.greeted`, `NAME.get`).
    pub name: String,
    /// Language of the project.
    #[arg(long, value_enum, default_value_t = Lang::Rust)]
    pub lang: Lang,
    /// Folder to create the project in (as `DIR/NAME`).
    #[arg(long, default_value = "./plugins")]
    pub dir: PathBuf,
    /// The `sdk/` folder of the Handler Host repository (the Rust SDK, with the Python,
    /// JavaScript and C SDKs inside) [default: found above DIR, else the one this host was built
    /// from].
    #[arg(long)]
    pub sdk: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    Javascript,
    C,
}

/// Creates the project and says what to do next.
///
/// # Errors
/// An invalid name, an existing folder, an SDK that cannot be found, or a write that fails.
pub fn create(args: &NewArgs) -> anyhow::Result<()> {
    check_name(&args.name)?;
    let project = args.dir.join(&args.name);
    if project.exists() {
        anyhow::bail!(
            "{} already exists; choose another name or --dir",
            project.display()
        );
    }
    let files = project_files(args.lang, &args.name, &project, args.sdk.as_deref())?;
    let entry = match args.lang {
        Lang::Rust => "src/lib.rs",
        Lang::Python => "app.py",
        Lang::Javascript => "app.js",
        Lang::C => "plugin.c",
    };
    for (path, text) in &files {
        let path = project.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, text)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    }
    println!(
        "created plugin `{name}` in {dir}\n\n\
         next:\n  host dev --plugins {plugins}        # builds it, serves it, swaps it in on every save\n  \
         curl -s -XPOST localhost:7878/commands/{name}.greet -d '{{\"id\":\"1\",\"name\":\"Ada\"}}'\n  \
         curl -s -XPOST localhost:7878/queries/{name}.get -d '{{\"id\":\"1\"}}'\n\n\
         edit {dir}/{entry} while `host dev` runs: the new version serves the next message.",
        name = args.name,
        dir = project.display(),
        plugins = args.dir.display(),
    );
    Ok(())
}

fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    if !ok {
        anyhow::bail!(
            "`{name}` is not a plugin name: use 1 to 64 lowercase letters, digits and `-`, starting with a letter"
        );
    }
    Ok(())
}

/// The files of a plugin project in `lang`, by path in the project.
fn project_files(
    lang: Lang,
    name: &str,
    project: &Path,
    sdk: Option<&Path>,
) -> anyhow::Result<Vec<(PathBuf, String)>> {
    let sdk = match sdk {
        Some(sdk) if is_sdk(sdk) => sdk.to_owned(),
        Some(sdk) => anyhow::bail!("{} is not the Handler Host Rust SDK folder", sdk.display()),
        None => find_sdk(project).ok_or_else(|| {
            anyhow::anyhow!(
                "cannot find the Handler Host Rust SDK (the `sdk/` folder of its repository); pass --sdk PATH"
            )
        })?,
    };
    let sdk = sdk.canonicalize()?;
    let wit = relative_to(project, &sdk.with_file_name("wit"));
    let repository = repository_around(project, &sdk);
    // Inside the repository, a Rust project builds into the folder where the examples built
    // the SDK's dependencies already, with the repository's pinned versions.
    let target = match &repository {
        Some(root) if lang == Lang::Rust => relative_to(project, &root.join("target/plugins")),
        _ => PathBuf::from("target"),
    };
    // The C build tool is compiled once per repository, beside the Python toolchain.
    let c_toolchain = relative_to(project, &sdk.with_file_name("target").join("c-toolchain"));
    let sdk = relative_to(project, &sdk);
    let artifact = name.replace('-', "_");
    let fill = |template: &str| {
        template
            .replace("{{name}}", name)
            .replace("{{artifact}}", &artifact)
            .replace("{{sdk}}", &slashed(&sdk))
            .replace("{{wit}}", &slashed(&wit))
            .replace("{{target}}", &slashed(&target))
            .replace("{{c_toolchain}}", &slashed(&c_toolchain))
    };
    let files: &[(&str, &str)] = match lang {
        Lang::Rust => &[
            ("Cargo.toml", RUST_CARGO_TOML),
            ("plugin.toml", RUST_PLUGIN_TOML),
            ("src/lib.rs", RUST_LIB_RS),
            (".gitignore", "/target\n"),
        ],
        Lang::Python => &[
            ("plugin.toml", PYTHON_PLUGIN_TOML),
            ("app.py", PYTHON_APP_PY),
            (".gitignore", "/target\n__pycache__/\n"),
        ],
        Lang::Javascript => &[
            ("plugin.toml", JAVASCRIPT_PLUGIN_TOML),
            ("app.js", JAVASCRIPT_APP_JS),
            (".gitignore", "/target\n"),
        ],
        Lang::C => &[
            ("plugin.toml", C_PLUGIN_TOML),
            ("plugin.c", C_PLUGIN_C),
            (".gitignore", "/target\n"),
        ],
    };
    let mut files: Vec<(PathBuf, String)> = files
        .iter()
        .map(|(path, template)| (PathBuf::from(path), fill(template)))
        .collect();
    if let Some(root) = repository.filter(|_| lang == Lang::Rust) {
        let lock = root.join("Cargo.lock");
        let pinned = std::fs::read_to_string(&lock)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", lock.display()))?;
        files.push((PathBuf::from("Cargo.lock"), pinned));
    }
    Ok(files)
}

/// The repository `sdk` belongs to, when `project` is created inside it (and it has its lock
/// file); `None` for a project elsewhere, which stands alone.
fn repository_around(project: &Path, sdk: &Path) -> Option<PathBuf> {
    let root = sdk.parent()?;
    let parent = project.parent()?.canonicalize().ok()?;
    (parent.starts_with(root) && root.join("Cargo.lock").is_file()).then(|| root.to_owned())
}

fn is_sdk(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("Cargo.toml")).is_ok_and(|text| text.contains(SDK_PACKAGE))
}

/// The SDK of the repository the project is created in, else the one this host was built from.
fn find_sdk(project: &Path) -> Option<PathBuf> {
    let start = project.parent()?.canonicalize().ok()?;
    start
        .ancestors()
        .map(|dir| dir.join("sdk"))
        .find(|sdk| is_sdk(sdk))
        .or_else(|| Some(PathBuf::from(BUILT_WITH_SDK)).filter(|sdk| is_sdk(sdk)))
}

/// `target` as seen from the folder `project` will be (relative when they share a root).
fn relative_to(project: &Path, target: &Path) -> PathBuf {
    let Some(base) = project
        .parent()
        .and_then(|p| p.canonicalize().ok())
        .map(|p| p.join(project.file_name().unwrap_or_default()))
    else {
        return target.to_owned();
    };
    let base: Vec<Component> = base.components().collect();
    let goal: Vec<Component> = target.components().collect();
    let common = base.iter().zip(&goal).take_while(|(a, b)| a == b).count();
    if common <= 1 {
        return target.to_owned(); // only the root in common
    }
    let mut path = PathBuf::new();
    for _ in common..base.len() {
        path.push("..");
    }
    for part in &goal[common..] {
        path.push(part);
    }
    path
}

/// A path for a TOML string: forward slashes, so the file reads the same on every system.
fn slashed(path: &Path) -> String {
    path.to_string_lossy().replace('\\', "/")
}

const RUST_CARGO_TOML: &str = r#"[package]
name = "{{name}}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
# A cdylib built for wasm32-wasip2 is a WebAssembly component the host can load.
crate-type = ["cdylib"]

[dependencies]
handler-host-sdk = { path = "{{sdk}}" }
serde = { version = "1", features = ["derive"] }
serde_json = "1"

# A project of its own, even inside another Cargo workspace.
[workspace]

[profile.release]
# Line tables for readable backtraces; the same as the repository's plugins, so a shared build
# folder reuses what they built.
debug = "line-tables-only"
"#;

const RUST_PLUGIN_TOML: &str = r#"# How the host builds this plugin (paths are relative to this folder).
[build]
command = ["cargo", "build", "--release", "--target", "wasm32-wasip2", "--target-dir", "{{target}}"]
output = "{{target}}/wasm32-wasip2/release/{{artifact}}.wasm"
# The component is stale when this crate, the SDK or the WIT contract changed.
inputs = [".", "{{sdk}}", "{{wit}}"]
"#;

const RUST_LIB_RS: &str = r#"//! The `{{name}}` plugin.
//!
//! - command `{{name}}.greet` `{"id","name"}`: stores a greeting and emits `{{name}}.greeted`;
//!   answers `{"id","greeting"}`. Its payload schema makes the host refuse one without a string
//!   `id` and `name` (HTTP 422) before the handler runs; the handler rejects an empty name.
//! - event `{{name}}.greeted`: counts the greetings.
//! - query `{{name}}.get` `{"id"}`: `{"id","greeting","greeted_total"}`.
//!
//! Everything one call does (state writes, emitted events) commits together, or nothing does.
//! Return `HandlerError::rejected` for bad input, `retryable` for a transient failure (retried
//! with backoff, then dead-lettered) and `permanent` for one that will never work.

use handler_host_sdk::prelude::*;
use serde::{Deserialize, Serialize};

struct Handler;

#[derive(Deserialize)]
struct Greet {
    id: String,
    name: String,
}

#[derive(Serialize, Deserialize)]
struct Greeting {
    id: String,
    greeting: String,
}

#[derive(Deserialize)]
struct Get {
    id: String,
}

const TOTAL: &str = "greeted-total";

impl Plugin for Handler {
    fn info() -> PluginInfo {
        PluginInfo::new("{{name}}", env!("CARGO_PKG_VERSION"))
            .command("{{name}}.greet")
            // Checked by the host before the handler runs: a mismatch answers 422.
            .schema(
                "{{name}}.greet",
                serde_json::json!({
                    "type": "object",
                    "required": ["id", "name"],
                    "properties": {"id": {"type": "string"}, "name": {"type": "string"}}
                }),
            )
            .event("{{name}}.greeted")
            .query("{{name}}.get")
    }

    fn handle_command(msg: Message) -> Result<Reply, HandlerError> {
        let greet: Greet = msg.payload()?;
        if greet.name.trim().is_empty() {
            return Err(HandlerError::rejected("name must not be empty"));
        }
        let greeting = Greeting {
            greeting: format!("Hello, {}!", greet.name),
            id: greet.id,
        };
        state::put(&format!("greeting/{}", greeting.id), &greeting)?;
        events::emit("{{name}}.greeted", &greeting, Some(&greeting.id))?;
        log::info!("greeted {}", greeting.id);
        Reply::json(&greeting)
    }

    fn handle_event(msg: Message) -> Result<(), HandlerError> {
        let total: u64 = state::get(TOTAL)?.unwrap_or(0);
        state::put(TOTAL, &(total + 1))?;
        log::debug!("{} seen", msg.kind());
        Ok(())
    }

    fn handle_query(msg: Message) -> Result<Reply, HandlerError> {
        let get: Get = msg.payload()?;
        let greeting: Greeting = state::get(&format!("greeting/{}", get.id))?
            .ok_or_else(|| HandlerError::rejected(format!("no greeting `{}`", get.id)))?;
        let total: u64 = state::get(TOTAL)?.unwrap_or(0);
        Reply::json(&serde_json::json!({
            "id": greeting.id,
            "greeting": greeting.greeting,
            "greeted_total": total,
        }))
    }
}

export_plugin!(Handler);
"#;

const PYTHON_PLUGIN_TOML: &str = r#"# How the host builds this plugin (paths are relative to this folder). The first build
# installs the pinned Python toolchain (componentize-py) beside the SDK.
[build]
command = ["python3", "{{sdk}}/python/build.py", "--app", "app", "--output", "target/{{artifact}}.wasm"]
output = "target/{{artifact}}.wasm"
# The component is stale when this plugin, the SDK or the WIT contract changed.
inputs = [".", "{{sdk}}/python", "{{wit}}"]
"#;

const PYTHON_APP_PY: &str = r#""""The `{{name}}` plugin.

- command `{{name}}.greet` `{"id","name"}`: stores a greeting and emits `{{name}}.greeted`;
  answers `{"id","greeting"}`. Its payload schema makes the host refuse one without a string
  `id` and `name` (HTTP 422) before the handler runs; the handler rejects an empty name.
- event `{{name}}.greeted`: counts the greetings.
- query `{{name}}.get` `{"id"}`: `{"id","greeting","greeted_total"}`.

Everything one call does (state writes, emitted events) commits together, or nothing does.
Raise `hh.Rejected` for bad input, `hh.Retryable` for a transient failure (retried with
backoff, then dead-lettered) and `hh.Permanent` for one that will never work.
"""

import handler_host as hh

TOTAL = "greeted-total"


class Plugin(hh.Plugin):
    name = "{{name}}"
    version = "0.1.0"
    commands = ["{{name}}.greet"]
    events = ["{{name}}.greeted"]
    queries = ["{{name}}.get"]
    # Checked by the host before the handler runs: a mismatch answers 422.
    schemas = {
        "{{name}}.greet": {
            "type": "object",
            "required": ["id", "name"],
            "properties": {"id": {"type": "string"}, "name": {"type": "string"}},
        },
    }

    def handle_command(self, msg):
        greet = msg.payload()
        if not str(greet.get("name", "")).strip():
            raise hh.Rejected("name must not be empty")
        greeting = {"id": greet["id"], "greeting": f"Hello, {greet['name']}!"}
        hh.state.put(f"greeting/{greeting['id']}", greeting)
        hh.events.emit("{{name}}.greeted", greeting, partition_key=greeting["id"])
        hh.log.info(f"greeted {greeting['id']}")
        return greeting

    def handle_event(self, msg):
        hh.state.put(TOTAL, hh.state.get(TOTAL, 0) + 1)

    def handle_query(self, msg):
        get = msg.payload()
        greeting = hh.state.get(f"greeting/{get['id']}")
        if greeting is None:
            raise hh.Rejected(f"no greeting `{get['id']}`")
        return {**greeting, "greeted_total": hh.state.get(TOTAL, 0)}


WitWorld = hh.export(Plugin)
"#;

const JAVASCRIPT_PLUGIN_TOML: &str = r#"# How the host builds this plugin (paths are relative to this folder). The first build
# installs the pinned JavaScript toolchain (componentize-js) beside the SDK.
[build]
command = ["node", "{{sdk}}/javascript/build.mjs", "--app", "app.js", "--output", "target/{{artifact}}.wasm"]
output = "target/{{artifact}}.wasm"
# The component is stale when this plugin, the SDK or the WIT contract changed.
inputs = [".", "{{sdk}}/javascript", "{{wit}}"]
"#;

const JAVASCRIPT_APP_JS: &str = r#"/**
 * The `{{name}}` plugin.
 *
 * - command `{{name}}.greet` `{"id","name"}`: stores a greeting and emits `{{name}}.greeted`;
 *   answers `{"id","greeting"}`. Its payload schema makes the host refuse one without a string
 *   `id` and `name` (HTTP 422) before the handler runs; the handler rejects an empty name.
 * - event `{{name}}.greeted`: counts the greetings.
 * - query `{{name}}.get` `{"id"}`: `{"id","greeting","greeted_total"}`.
 *
 * Everything one call does (state writes, emitted events) commits together, or nothing does.
 * Throw `Rejected` for bad input, `Retryable` for a transient failure (retried with backoff,
 * then dead-lettered) and `Permanent` for one that will never work.
 */

import { exportPlugin, Rejected, state, events, log } from "handler-host";

const TOTAL = "greeted-total";

export const { describe, handleCommand, handleEvent, handleQuery } = exportPlugin({
  name: "{{name}}",
  version: "0.1.0",
  commands: ["{{name}}.greet"],
  events: ["{{name}}.greeted"],
  queries: ["{{name}}.get"],
  // Checked by the host before the handler runs: a mismatch answers 422.
  schemas: {
    "{{name}}.greet": {
      type: "object",
      required: ["id", "name"],
      properties: { id: { type: "string" }, name: { type: "string" } },
    },
  },

  handleCommand(msg) {
    const greet = msg.payload();
    if (!String(greet.name ?? "").trim()) throw new Rejected("name must not be empty");
    const greeting = { id: greet.id, greeting: `Hello, ${greet.name}!` };
    state.put(`greeting/${greeting.id}`, greeting);
    events.emit("{{name}}.greeted", greeting, greeting.id);
    log.info(`greeted ${greeting.id}`);
    return greeting;
  },

  handleEvent() {
    state.put(TOTAL, state.get(TOTAL, 0) + 1);
  },

  handleQuery(msg) {
    const { id } = msg.payload();
    const greeting = state.get(`greeting/${id}`);
    if (greeting === undefined) throw new Rejected(`no greeting \`${id}\``);
    return { ...greeting, greeted_total: state.get(TOTAL, 0) };
  },
});
"#;

const C_PLUGIN_TOML: &str = r#"# How the host builds this plugin (paths are relative to this folder). The first build
# compiles the C build tool beside the SDK; the compiler comes from the machine (Debian:
# clang-14 lld-14 wasi-libc libclang-rt-14-dev-wasm32).
[build]
command = ["cargo", "run", "--quiet", "--locked", "--manifest-path", "{{sdk}}/c/build/Cargo.toml", "--target-dir", "{{c_toolchain}}", "--", "--output", "target/{{artifact}}.wasm", "plugin.c"]
output = "target/{{artifact}}.wasm"
# The component is stale when this plugin, the SDK or the WIT contract changed.
inputs = [".", "{{sdk}}/c", "{{wit}}"]
"#;

const C_PLUGIN_C: &str = r#"/*
 * The `{{name}}` plugin.
 *
 * - command `{{name}}.greet` `{"id","name"}`: stores a greeting and emits `{{name}}.greeted`;
 *   answers `{"id","greeting"}`. Its payload schema makes the host refuse one without a string
 *   `id` and `name` (HTTP 422) before the handler runs; the handler rejects an empty name.
 * - event `{{name}}.greeted`: counts the greetings.
 * - query `{{name}}.get` `{"id"}`: `{"id","greeting","greeted_total"}`.
 *
 * Everything one call does (state writes, emitted events) commits together, or nothing does.
 * Return hh_rejected(...) for bad input, hh_retryable(...) for a transient failure (retried
 * with backoff, then dead-lettered) and hh_permanent(...) for one that will never work.
 * Every pointer the SDK hands out is freed by it when the handler returns: never free one.
 */
#include <string.h>

#include "handler_host.h"

static const char *const COMMANDS[] = {"{{name}}.greet", NULL};
static const char *const EVENTS[] = {"{{name}}.greeted", NULL};
static const char *const QUERIES[] = {"{{name}}.get", NULL};
/* Checked by the host before the handler runs: a mismatch answers 422. */
static const hh_schema SCHEMAS[] = {
    {"{{name}}.greet", "{\"type\":\"object\",\"required\":[\"id\",\"name\"],"
                       "\"properties\":{\"id\":{\"type\":\"string\"},"
                       "\"name\":{\"type\":\"string\"}}}"},
    {NULL, NULL},
};

const hh_plugin HH_PLUGIN = {
    .name = "{{name}}",
    .version = "0.1.0",
    .commands = COMMANDS,
    .events = EVENTS,
    .queries = QUERIES,
    .schemas = SCHEMAS,
};

#define TOTAL "greeted-total"

hh_status hh_handle_command(const hh_message *msg, hh_json *reply) {
    const hh_value *greet = hh_payload(msg);
    const char *id = hh_string(hh_get(greet, "id"));
    const char *name = hh_string(hh_get(greet, "name"));
    if (!name || !*name) return hh_rejected("name must not be empty");

    /* The answer is also what is stored and what the event carries. */
    hh_json_object(reply);
    hh_json_key(reply, "id");
    hh_json_string(reply, id);
    hh_json_key(reply, "greeting");
    hh_json_string(reply, hh_sprintf("Hello, %s!", name));
    hh_json_end(reply);

    hh_state_put_json(hh_sprintf("greeting/%s", id), reply);
    hh_emit_options options = {.partition_key = id};
    hh_emit("{{name}}.greeted", reply, &options);
    hh_info("greeted %s", id);
    return HH_OK;
}

hh_status hh_handle_event(const hh_message *msg) {
    int64_t total = 0;
    hh_int(hh_state_get_json(TOTAL), &total);
    const char *text = hh_sprintf("%lld", (long long)(total + 1));
    hh_state_put(TOTAL, text, strlen(text));
    return HH_OK;
}

hh_status hh_handle_query(const hh_message *msg, hh_json *reply) {
    const char *id = hh_string(hh_get(hh_payload(msg), "id"));
    const hh_value *greeting = hh_state_get_json(hh_sprintf("greeting/%s", id));
    if (!greeting) return hh_rejected("no greeting `%s`", id ? id : "");
    int64_t total = 0;
    hh_int(hh_state_get_json(TOTAL), &total);
    hh_json_object(reply);
    for (size_t i = 0; i < hh_len(greeting); i++) {
        hh_json_key(reply, hh_key_at(greeting, i));
        hh_json_value(reply, hh_at(greeting, i));
    }
    hh_json_key(reply, "greeted_total");
    hh_json_int(reply, total);
    hh_json_end(reply);
    return HH_OK;
}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for good in ["demo", "a", "fraud-check2"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Demo",
            "1st",
            "-x",
            "x-",
            "a.b",
            "a_b",
            "é",
            &"a".repeat(65),
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_sdk_path_is_relative_inside_one_tree() {
        let root = tempfile::tempdir().unwrap();
        let sdk = root.path().join("sdk");
        std::fs::create_dir_all(&sdk).unwrap();
        std::fs::create_dir_all(root.path().join("plugins")).unwrap();
        let project = root.path().join("plugins/demo");
        let sdk = sdk.canonicalize().unwrap();
        assert_eq!(relative_to(&project, &sdk), PathBuf::from("../../sdk"));
    }

    /// The text of the project file `name`; panics when the project has none.
    fn file_of<'a>(files: &'a [(PathBuf, String)], name: &str) -> &'a str {
        files
            .iter()
            .find(|(path, _)| path == Path::new(name))
            .map(|(_, text)| text.as_str())
            .unwrap_or_else(|| panic!("the project has no {name}"))
    }

    #[test]
    fn inside_the_repository_a_rust_project_shares_its_lock_file_and_build_folder() {
        let repository = Path::new(BUILT_WITH_SDK).parent().unwrap();
        let inside = tempfile::tempdir_in(repository.join("target")).unwrap();
        let project = inside.path().join("demo");
        let files = project_files(Lang::Rust, "demo", &project, None).unwrap();
        let lock = std::fs::read_to_string(repository.join("Cargo.lock")).unwrap();
        assert_eq!(file_of(&files, "Cargo.lock"), lock);
        let plugin_toml = file_of(&files, "plugin.toml");
        assert!(
            plugin_toml.contains(r#""--target-dir", "../../plugins""#),
            "{plugin_toml}"
        );
        assert!(
            plugin_toml.contains(r#"output = "../../plugins/wasm32-wasip2/release/demo.wasm""#),
            "{plugin_toml}"
        );

        let outside = tempfile::tempdir().unwrap();
        let sdk = PathBuf::from(BUILT_WITH_SDK);
        let files =
            project_files(Lang::Rust, "demo", &outside.path().join("demo"), Some(&sdk)).unwrap();
        assert!(
            files
                .iter()
                .all(|(path, _)| path != Path::new("Cargo.lock"))
        );
        let plugin_toml = file_of(&files, "plugin.toml");
        assert!(
            plugin_toml.contains(r#"output = "target/wasm32-wasip2/release/demo.wasm""#),
            "{plugin_toml}"
        );
    }

    #[test]
    fn a_c_project_builds_its_tool_in_the_repository_target_folder_by_a_plain_path() {
        let repository = Path::new(BUILT_WITH_SDK).parent().unwrap();
        let inside = tempfile::tempdir_in(repository.join("target")).unwrap();
        let project = inside.path().join("demo");
        let files = project_files(Lang::C, "demo", &project, None).unwrap();
        let plugin_toml = file_of(&files, "plugin.toml");
        assert!(
            plugin_toml.contains(r#""--target-dir", "../../c-toolchain""#),
            "{plugin_toml}"
        );
        assert!(!plugin_toml.contains("{{"), "{plugin_toml}");
    }

    #[test]
    fn an_existing_folder_is_not_overwritten() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("demo")).unwrap();
        let args = NewArgs {
            name: "demo".into(),
            lang: Lang::Rust,
            dir: root.path().to_owned(),
            sdk: Some(PathBuf::from(BUILT_WITH_SDK)),
        };
        let error = create(&args).unwrap_err().to_string();
        assert!(error.contains("already exists"), "{error}");
    }
}
