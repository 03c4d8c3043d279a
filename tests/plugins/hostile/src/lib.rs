//! `hostile`: a test-only plugin that misbehaves on command, to prove the sandbox holds.
//!
//! Not an example to copy. Every command takes `{"n": number}` where a size or count applies
//! (`n` defaults to a value far past the host's limits):
//!
//! - `hostile.loop`: spins forever (the call deadline must stop it).
//! - `hostile.oom`: allocates and touches memory until it cannot (the memory cap).
//! - `hostile.recurse`: recurses without end (the WebAssembly stack).
//! - `hostile.panic`: panics.
//! - `hostile.reply`: answers a JSON string of `n` bytes (the reply limit).
//! - `hostile.emit`: emits `n` events `hostile.flood` (the per-call event limit).
//! - `hostile.put`: writes one value of `n` bytes (the state value limit).
//! - `hostile.keys`: writes `n` distinct keys (the keys-written limit).
//! - `hostile.fs`, `hostile.env`, `hostile.net`: try to read and create files, read the
//!   environment and arguments, and open sockets with plain `std`, and answer what the guest
//!   observed: the host grants none of it, so every attempt must fail inside the guest.
//! - `hostile.write` `{"key", "value"}` and query `hostile.read` `{"key"}`: raw state access for
//!   the isolation tests (tricky keys against another plugin's namespace).
//! - query `hostile.ok` `{}`: answers `{"ok": true}`.
//! - event `loop.ping`: emits `loop.pong` (half of the loop `flaky.loop` starts).
//! - query `hostile.calls` `{}`: answers how many calls this instance has served, this one
//!   included (a global counter: 1 on every call unless the host reuses instances).

use handler_host_sdk::prelude::*;
use serde::Deserialize;
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};

/// Calls this instance has served: globals live as long as the instance.
static CALLS: AtomicU64 = AtomicU64::new(0);

struct Hostile;

/// Payload of the size- and count-driven commands.
#[derive(Deserialize)]
struct Size {
    n: Option<usize>,
}

/// Payload of `hostile.write` (and, without `value`, of `hostile.read`).
#[derive(Deserialize)]
struct Entry {
    key: String,
    #[serde(default)]
    value: Option<String>,
}

/// Far past any default limit of the host.
const TOO_MANY: usize = 100_000;
const TOO_LARGE: usize = 32 << 20;

fn size(msg: &Message, default: usize) -> Result<usize, HandlerError> {
    Ok(msg.payload::<Size>()?.n.unwrap_or(default))
}

#[inline(never)]
fn recurse(depth: u64, trail: &mut [u8; 64]) -> u64 {
    // Never true; it keeps the recursion conditional, and the array keeps each frame from
    // being optimised into a loop.
    if depth == u64::MAX {
        return 0;
    }
    trail[(depth % 64) as usize] = depth as u8;
    let below = recurse(depth + 1, &mut [0; 64]);
    std::hint::black_box(trail);
    below + 1
}

/// What an attempt observed, as text: `ok: …` or `error: …`.
fn observed<T: std::fmt::Debug, E: std::fmt::Display>(result: Result<T, E>) -> String {
    match result {
        Ok(value) => format!("ok: {value:?}"),
        Err(error) => format!("error: {error}"),
    }
}

impl Plugin for Hostile {
    fn info() -> PluginInfo {
        PluginInfo::new("hostile", env!("CARGO_PKG_VERSION"))
            .command("hostile.loop")
            .command("hostile.oom")
            .command("hostile.recurse")
            .command("hostile.panic")
            .command("hostile.reply")
            .command("hostile.emit")
            .command("hostile.put")
            .command("hostile.keys")
            .command("hostile.fs")
            .command("hostile.env")
            .command("hostile.net")
            .command("hostile.write")
            .query("hostile.read")
            .query("hostile.ok")
            .query("hostile.calls")
            .event("loop.ping")
    }

    fn handle_event(msg: Message) -> Result<(), HandlerError> {
        match msg.kind() {
            "loop.ping" => events::emit("loop.pong", &json!({}), None),
            other => Err(HandlerError::rejected(format!(
                "plugin `hostile` does not handle event `{other}`"
            ))),
        }
    }

    fn handle_command(msg: Message) -> Result<Reply, HandlerError> {
        CALLS.fetch_add(1, Ordering::Relaxed);
        match msg.kind() {
            "hostile.loop" => {
                let mut spins: u64 = 0;
                loop {
                    spins = std::hint::black_box(spins.wrapping_add(1));
                }
            }
            "hostile.oom" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    // Touch every page so the memory is really committed.
                    hoard.push(vec![0xA5; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "hostile.recurse" => Reply::json(&recurse(0, &mut [0; 64])),
            "hostile.panic" => panic!("hostile panicked on purpose"),
            "hostile.reply" => Reply::json(&"x".repeat(size(&msg, TOO_LARGE)?)),
            "hostile.emit" => {
                let n = size(&msg, TOO_MANY)?;
                for i in 0..n {
                    events::emit_bytes("hostile.flood", format!("{i}").as_bytes(), None);
                }
                Reply::json(&json!({ "emitted": n }))
            }
            "hostile.put" => {
                let n = size(&msg, TOO_LARGE)?;
                state::put_bytes("big", &vec![b'x'; n]);
                Reply::json(&json!({ "written": n }))
            }
            "hostile.keys" => {
                let n = size(&msg, TOO_MANY)?;
                for i in 0..n {
                    state::put_bytes(&format!("key/{i}"), b"1");
                }
                Reply::json(&json!({ "keys": n }))
            }
            "hostile.fs" => Reply::json(&json!({
                "read": observed(std::fs::read_to_string("/etc/passwd")),
                "create": observed(std::fs::write("planted.txt", b"x")),
                "list": observed(std::fs::read_dir(".").map(|d| d.count())),
            })),
            "hostile.env" => Reply::json(&json!({
                "vars": std::env::vars().collect::<Vec<_>>(),
                "args": std::env::args().collect::<Vec<_>>(),
                "cwd": observed(std::env::current_dir()),
            })),
            "hostile.net" => Reply::json(&json!({
                "connect": observed(std::net::TcpStream::connect("127.0.0.1:7878")),
                "bind": observed(std::net::TcpListener::bind("127.0.0.1:0")),
                "udp": observed(std::net::UdpSocket::bind("0.0.0.0:0")),
            })),
            "hostile.write" => {
                let entry: Entry = msg.payload()?;
                let value = entry.value.unwrap_or_default();
                state::put_bytes(&entry.key, value.as_bytes());
                Reply::json(&json!({ "written": entry.key }))
            }
            other => Err(HandlerError::rejected(format!(
                "plugin `hostile` does not handle command `{other}`"
            ))),
        }
    }

    fn handle_query(msg: Message) -> Result<Reply, HandlerError> {
        let calls = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
        match msg.kind() {
            "hostile.read" => {
                let entry: Entry = msg.payload()?;
                let value =
                    state::get_bytes(&entry.key).map(|v| String::from_utf8_lossy(&v).into_owned());
                Reply::json(&json!({ "value": value }))
            }
            "hostile.ok" => Reply::json(&json!({ "ok": true })),
            "hostile.calls" => Reply::json(&json!({ "calls": calls })),
            other => Err(HandlerError::rejected(format!(
                "plugin `hostile` does not handle query `{other}`"
            ))),
        }
    }
}

export_plugin!(Hostile);
