//! The trivial handler `host bench` measures: the least work a real handler does.
//!
//! - command `bench.touch` `{"key"}`: reads `count/{key}`, writes it incremented, emits
//!   `bench.touched` `{"key"}` with partition key `key`, answers `{"key","count"}`.
//! - command `bench.noop` `{}`: touches nothing and answers `{}` — the bare cost of a call.
//! - event `bench.touched` `{"key", "seq"?}`: reads `seen/{key}`, writes it incremented; an
//!   event numbered `seq` (its place among the events of its key, from 1) that does not find
//!   `seq - 1` there ran out of order, and writes `seq` to `disorder/{key}`.
//! - query `bench.seen` `{"key"}`: `{"key","seen"}`.

use handler_host_sdk::prelude::*;
use serde::{Deserialize, Serialize};

struct Trivial;

#[derive(Serialize, Deserialize)]
struct Key {
    key: String,
}

/// A `bench.touched` event.
#[derive(Deserialize)]
struct TouchedEvent {
    key: String,
    /// The event's place among the events of `key`, from 1, when the sender numbers them.
    seq: Option<u64>,
}

#[derive(Serialize)]
struct Touched {
    key: String,
    count: u64,
}

#[derive(Serialize)]
struct Seen {
    key: String,
    seen: u64,
}

fn increment(key: &str) -> Result<u64, HandlerError> {
    let next = state::get::<u64>(key)?.unwrap_or(0) + 1;
    state::put(key, &next)?;
    Ok(next)
}

impl Plugin for Trivial {
    fn info() -> PluginInfo {
        PluginInfo::new("bench-trivial", env!("CARGO_PKG_VERSION"))
            .command("bench.touch")
            .command("bench.noop")
            .event("bench.touched")
            .query("bench.seen")
    }

    fn handle_command(command: Message) -> Result<Reply, HandlerError> {
        if command.kind() == "bench.noop" {
            return Ok(Reply::bytes(b"{}".to_vec()));
        }
        let Key { key } = command.payload()?;
        let count = increment(&format!("count/{key}"))?;
        events::emit("bench.touched", &Key { key: key.clone() }, Some(&key))?;
        Reply::json(&Touched { key, count })
    }

    fn handle_event(event: Message) -> Result<(), HandlerError> {
        let TouchedEvent { key, seq } = event.payload()?;
        let seen = increment(&format!("seen/{key}"))?;
        if let Some(seq) = seq.filter(|&seq| seq != seen) {
            state::put(&format!("disorder/{key}"), &seq)?;
        }
        Ok(())
    }

    fn handle_query(query: Message) -> Result<Reply, HandlerError> {
        let Key { key } = query.payload()?;
        let seen = state::get::<u64>(&format!("seen/{key}"))?.unwrap_or(0);
        Reply::json(&Seen { key, seen })
    }
}

export_plugin!(Trivial);
