//! The files of a new plugin project in each language, with `{{name}}`, `{{artifact}}`,
//! `{{sdk}}`, `{{wit}}`, `{{target}}` and `{{c_toolchain}}` for the generator to fill in.

pub(super) const RUST_CARGO_TOML: &str = r#"[package]
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

pub(super) const RUST_PLUGIN_TOML: &str = r#"# How the host builds this plugin (paths are relative to this folder).
[build]
command = ["cargo", "build", "--release", "--target", "wasm32-wasip2", "--target-dir", "{{target}}"]
output = "{{target}}/wasm32-wasip2/release/{{artifact}}.wasm"
# The component is stale when this crate, the SDK or the WIT contract changed.
inputs = [".", "{{sdk}}", "{{wit}}"]
"#;

pub(super) const RUST_LIB_RS: &str = r#"//! The `{{name}}` plugin.
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

pub(super) const PYTHON_PLUGIN_TOML: &str = r#"# How the host builds this plugin (paths are relative to this folder). The first build
# installs the pinned Python toolchain (componentize-py) beside the SDK.
[build]
command = ["python3", "{{sdk}}/python/build.py", "--app", "app", "--output", "target/{{artifact}}.wasm"]
output = "target/{{artifact}}.wasm"
# The component is stale when this plugin, the SDK or the WIT contract changed.
inputs = [".", "{{sdk}}/python", "{{wit}}"]

# `host dev` runs this plugin on the Python development runtime (built once), which imports
# `app` from this folder at each instance: a save serves at the next message, with no build.
[dev]
entry = "app"
[dev.runtime]
command = ["python3", "{{sdk}}/python/build.py", "--dev-runtime", "--output", "target/python-dev-runtime.wasm"]
output = "target/python-dev-runtime.wasm"
inputs = ["{{sdk}}/python", "{{wit}}"]
"#;

pub(super) const PYTHON_APP_PY: &str = r#""""The `{{name}}` plugin.

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

pub(super) const JAVASCRIPT_PLUGIN_TOML: &str = r#"# How the host builds this plugin (paths are relative to this folder). The first build
# installs the pinned JavaScript toolchain (componentize-js) beside the SDK.
[build]
command = ["node", "{{sdk}}/javascript/build.mjs", "--app", "app.js", "--output", "target/{{artifact}}.wasm"]
output = "target/{{artifact}}.wasm"
# The component is stale when this plugin, the SDK or the WIT contract changed.
inputs = [".", "{{sdk}}/javascript", "{{wit}}"]

# `host dev` runs this plugin on the JavaScript development runtime (built once): a save is
# only bundled (esbuild, a fraction of a second) and each instance evaluates the bundle.
[dev.build]
command = ["node", "{{sdk}}/javascript/build.mjs", "--app", "app.js", "--dev-bundle", "--output", "target/{{artifact}}.dev.js"]
output = "target/{{artifact}}.dev.js"
[dev.runtime]
command = ["node", "{{sdk}}/javascript/build.mjs", "--dev-runtime", "--output", "target/javascript-dev-runtime.wasm"]
output = "target/javascript-dev-runtime.wasm"
inputs = ["{{sdk}}/javascript", "{{wit}}"]
"#;

pub(super) const JAVASCRIPT_APP_JS: &str = r#"/**
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

pub(super) const C_PLUGIN_TOML: &str = r#"# How the host builds this plugin (paths are relative to this folder). The first build
# compiles the C build tool beside the SDK; the compiler comes from the machine (Debian:
# clang-14 lld-14 wasi-libc libclang-rt-14-dev-wasm32).
[build]
command = ["cargo", "run", "--quiet", "--locked", "--manifest-path", "{{sdk}}/c/build/Cargo.toml", "--target-dir", "{{c_toolchain}}", "--", "--output", "target/{{artifact}}.wasm", "plugin.c"]
output = "target/{{artifact}}.wasm"
# The component is stale when this plugin, the SDK or the WIT contract changed.
inputs = [".", "{{sdk}}/c", "{{wit}}"]
"#;

pub(super) const C_PLUGIN_C: &str = r#"/*
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
