//! Test-only plugin for hot reload, built in two variants that differ only in what they
//! record: `a` (default) and `b` (`--features variant-b`). The tests swap one for the other
//! while messages flow and check which build handled each message, and that each message had
//! its effect exactly once.
//!
//! - command `swap.put` `{"n"}`: records `cmd/{n}` = variant, emits `swap.done` `{"n"}` with
//!   partition key `n % 8`; answers `{"n","variant"}`.
//! - event `swap.done`: records `evt/{n}` = variant; a second delivery of the same event would
//!   record `dup/{n}` instead.
//! - query `swap.get` `{"n"}`: `{"cmd","evt","dup"}` (variants, or null).

use handler_host_sdk::prelude::*;
use serde::{Deserialize, Serialize};

struct Swap;

#[cfg(not(feature = "variant-b"))]
const VARIANT: &str = "a";
#[cfg(feature = "variant-b")]
const VARIANT: &str = "b";

#[derive(Serialize, Deserialize)]
struct Numbered {
    n: u64,
}

impl Plugin for Swap {
    fn info() -> PluginInfo {
        PluginInfo::new("swap", env!("CARGO_PKG_VERSION"))
            .command("swap.put")
            .event("swap.done")
            .query("swap.get")
    }

    fn handle_command(msg: Message) -> Result<Reply, HandlerError> {
        let Numbered { n } = msg.payload()?;
        state::put(&format!("cmd/{n}"), VARIANT)?;
        events::emit("swap.done", &Numbered { n }, Some(&(n % 8).to_string()))?;
        Reply::json(&serde_json::json!({ "n": n, "variant": VARIANT }))
    }

    fn handle_event(msg: Message) -> Result<(), HandlerError> {
        let Numbered { n } = msg.payload()?;
        let seen = format!("evt/{n}");
        if state::get_bytes(&seen).is_some() {
            state::put(&format!("dup/{n}"), VARIANT)
        } else {
            state::put(&seen, VARIANT)
        }
    }

    fn handle_query(msg: Message) -> Result<Reply, HandlerError> {
        let Numbered { n } = msg.payload()?;
        let get = |key: String| state::get::<String>(&key);
        Reply::json(&serde_json::json!({
            "cmd": get(format!("cmd/{n}"))?,
            "evt": get(format!("evt/{n}"))?,
            "dup": get(format!("dup/{n}"))?,
        }))
    }
}

export_plugin!(Swap);
