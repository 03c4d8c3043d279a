//! `flaky`: a test-only plugin whose failures the end-to-end tests switch on and off.
//!
//! Not an example to copy. It exists to prove what the host does when a handler fails:
//!
//! - command `flaky.set` `{"failing": bool}`: stores the switch (key `switch`, off when absent)
//!   and answers it.
//! - event `order.placed`: while failing, returns `retryable`; otherwise counts the delivery in
//!   `seen/{order_id}`, so tests can see retries end and redeliveries not be counted twice.
//! - query `flaky.seen` `{"order_id"}`: `{"order_id","count"}`.
//! - command `flaky.panic` `{}`: writes `panic/marker`, emits `flaky.noise`, then panics; the
//!   trapped unit of work must leave neither. Query `flaky.marker` `{}`: `{"marker": bool}`.
//! - command `flaky.fail` `{"class": "rejected"|"retryable"|"permanent"}`: writes `fail/marker`,
//!   then fails with that class; a failed unit of work must write nothing.
//!
//! The ledger, for ordering and exactly-once checks (crash loop, `skip`/`strict`, poison):
//!
//! - command `flaky.bump` `{"key", "n", "fail_percent"?, "poison"?}`: appends `n` to
//!   `commands/{key}` (the commit order of the key's commands) and emits `flaky.bumped` with
//!   the same payload and partition key `key`.
//! - event `flaky.bumped`: fails `retryable` for `fail_percent` % of attempts (chosen by a hash
//!   of the message id and the attempt, so it is random yet reproducible); a `poison` message
//!   fails `retryable` (`permanent` with `"permanent": true`) until `flaky.cure` is sent for
//!   its key. Otherwise appends `n` to
//!   `events/{key}`: the order in which this subscriber's effects committed.
//! - command `flaky.cure` `{"key"}`: poison messages of `key` succeed from now on.
//! - command `flaky.remind` `{"key", "n", "delay_ms"}`: emits `flaky.bumped` `{"key", "n"}`
//!   with partition key `key`, due `delay_ms` after the emit, with the header `reminder: yes`
//!   and schema version 2 (the command's payload has a declared schema: `key` a string, `n`
//!   and `delay_ms` whole numbers).
//! - The declared schema of the event `flaky.bumped` caps `n` at 1,000,000: a `flaky.remind`
//!   or `flaky.bump` with a larger `n` fails as the emitted event does not match it. The query
//!   `flaky.envelope` has a schema too: `kind` must be a string.
//! - command `flaky.echo` `{}`: answers `{"headers": [[name, value]…], "schema_version"}` of
//!   its own envelope, as the caller set them.
//!
//! The end of the envelope probe chain (Python `probe-py` → JavaScript `probe-js` → here):
//! event `probe.js.saw` records `{kind, id, tenant_id, actor, correlation_id, causation_id,
//! headers, schema_version}`
//! as the Rust SDK hands them over; query `flaky.envelope` `{"kind"}` answers it.
//!
//! A loop across two plugins, for the loop guard: command `flaky.loop` `{}` emits `loop.ping`;
//! the `hostile` test plugin answers each `loop.ping` with a `loop.pong`, and this plugin each
//! `loop.pong` with another `loop.ping`, without end.
//! - query `flaky.ledger` `{"key"}`: `{"key", "commands": [n…], "events": [n…]}`.

use handler_host_sdk::prelude::*;
use serde::{Deserialize, Serialize};

struct Flaky;

/// What key `switch` holds; payload and answer of `flaky.set`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Switch {
    failing: bool,
}

/// The fields of `order.placed` this plugin reads.
#[derive(Deserialize)]
struct OrderPlaced {
    order_id: String,
}

/// Payload of `flaky.envelope`.
#[derive(Deserialize)]
struct KindOnly {
    kind: String,
}

/// Payload of `flaky.seen`.
#[derive(Deserialize)]
struct SeenQuery {
    order_id: String,
}

/// Answer of `flaky.seen`.
#[derive(Serialize)]
struct Seen {
    order_id: String,
    count: u64,
}

/// Payload of `flaky.fail`.
#[derive(Deserialize)]
struct Fail {
    class: String,
}

/// Answer of `flaky.marker`.
#[derive(Serialize)]
struct Marker {
    marker: bool,
}

const SWITCH_KEY: &str = "switch";
const PANIC_MARKER_KEY: &str = "panic/marker";
const FAIL_MARKER_KEY: &str = "fail/marker";

/// Payload of `flaky.bump` and of the `flaky.bumped` event it emits.
#[derive(Serialize, Deserialize)]
struct Bump {
    key: String,
    n: u64,
    #[serde(default)]
    fail_percent: u64,
    #[serde(default)]
    poison: bool,
    /// A poison message fails `permanent` instead of `retryable`.
    #[serde(default)]
    permanent: bool,
}

/// Payload of `flaky.remind`.
#[derive(Deserialize)]
struct Remind {
    key: String,
    n: u64,
    delay_ms: u64,
}

/// Payload of `flaky.cure` and `flaky.ledger`.
#[derive(Deserialize)]
struct KeyOnly {
    key: String,
}

/// Answer of `flaky.ledger`.
#[derive(Serialize)]
struct Ledger {
    key: String,
    commands: Vec<u64>,
    events: Vec<u64>,
}

/// FNV-1a: a stable hash, so a message's failures are the same on every run of the host.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in *part {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
}

fn append(key: &str, n: u64) -> Result<(), HandlerError> {
    let mut list: Vec<u64> = state::get(key)?.unwrap_or_default();
    list.push(n);
    state::put(key, &list)
}

/// What the envelope probe chain records of a message, as the Rust SDK hands it over.
fn envelope_of(msg: &Message) -> serde_json::Value {
    serde_json::json!({
        "kind": msg.kind(),
        "id": msg.id(),
        "tenant_id": msg.tenant_id(),
        "actor": msg.actor(),
        "correlation_id": msg.correlation_id(),
        "causation_id": msg.causation_id(),
        "headers": msg.headers(),
        "schema_version": msg.schema_version(),
    })
}

fn seen_key(order_id: &str) -> String {
    format!("seen/{order_id}")
}

impl Plugin for Flaky {
    fn info() -> PluginInfo {
        PluginInfo::new("flaky", env!("CARGO_PKG_VERSION"))
            .command("flaky.set")
            .command("flaky.panic")
            .command("flaky.fail")
            .event("order.placed")
            .command("flaky.bump")
            .command("flaky.cure")
            .command("flaky.echo")
            .event("flaky.bumped")
            .command("flaky.loop")
            .event("loop.pong")
            .query("flaky.ledger")
            .query("flaky.seen")
            .query("flaky.marker")
            .event("probe.js.saw")
            .query("flaky.envelope")
            .command("flaky.remind")
            .schema(
                "flaky.remind",
                serde_json::json!({
                    "type": "object",
                    "required": ["key", "n", "delay_ms"],
                    "properties": {
                        "key": {"type": "string"},
                        "n": {"type": "integer", "minimum": 0},
                        "delay_ms": {"type": "integer", "minimum": 0}
                    }
                }),
            )
            .schema(
                "flaky.bumped",
                serde_json::json!({
                    "type": "object",
                    "required": ["key", "n"],
                    "properties": {"n": {"type": "integer", "maximum": 1_000_000}}
                }),
            )
            .schema(
                "flaky.envelope",
                serde_json::json!({
                    "type": "object",
                    "required": ["kind"],
                    "properties": {"kind": {"type": "string"}}
                }),
            )
    }

    fn handle_command(msg: Message) -> Result<Reply, HandlerError> {
        match msg.kind() {
            "flaky.echo" => Reply::json(&serde_json::json!({
                "headers": msg.headers(),
                "schema_version": msg.schema_version(),
            })),
            "flaky.set" => {
                let switch: Switch = msg.payload()?;
                state::put(SWITCH_KEY, &switch)?;
                log::info!("flaky switched to failing = {}", switch.failing);
                Reply::json(&switch)
            }
            "flaky.panic" => {
                // Both must vanish with the trap; the tests look for them afterwards.
                state::put(PANIC_MARKER_KEY, &true)?;
                events::emit("flaky.noise", &serde_json::json!({}), None)?;
                panic!("flaky panicked on purpose");
            }
            "flaky.fail" => {
                let fail: Fail = msg.payload()?;
                // Must vanish with the failed unit of work; the tests look for it afterwards.
                state::put(FAIL_MARKER_KEY, &true)?;
                let message = format!("flaky failed on purpose as {}", fail.class);
                Err(match fail.class.as_str() {
                    "rejected" => HandlerError::rejected(message),
                    "retryable" => HandlerError::retryable(message),
                    "permanent" => HandlerError::permanent(message),
                    other => HandlerError::rejected(format!(
                        "unknown class `{other}`: expected rejected, retryable or permanent"
                    )),
                })
            }
            "flaky.bump" => {
                let bump: Bump = msg.payload()?;
                append(&format!("commands/{}", bump.key), bump.n)?;
                events::emit("flaky.bumped", &bump, Some(&bump.key))?;
                Reply::json(&bump)
            }
            "flaky.remind" => {
                let remind: Remind = msg.payload()?;
                events::Emit::new("flaky.bumped")
                    .partition_key(&remind.key)
                    .after(std::time::Duration::from_millis(remind.delay_ms))
                    .header("reminder", "yes")
                    .schema_version(2)
                    .send(&serde_json::json!({ "key": remind.key, "n": remind.n }))?;
                Reply::json(&serde_json::json!({ "scheduled": remind.n }))
            }
            "flaky.loop" => {
                events::emit("loop.ping", &serde_json::json!({}), None)?;
                Reply::json(&serde_json::json!({ "started": true }))
            }
            "flaky.cure" => {
                let cure: KeyOnly = msg.payload()?;
                state::put(&format!("cured/{}", cure.key), &true)?;
                Reply::json(&serde_json::json!({ "cured": cure.key }))
            }
            other => Err(HandlerError::rejected(format!(
                "plugin `flaky` does not handle command `{other}`"
            ))),
        }
    }

    fn handle_event(msg: Message) -> Result<(), HandlerError> {
        if msg.kind() == "probe.js.saw" {
            return state::put(&format!("envelope/{}", msg.kind()), &envelope_of(&msg));
        }
        if msg.kind() == "loop.pong" {
            return events::emit("loop.ping", &serde_json::json!({}), None);
        }
        if msg.kind() == "flaky.bumped" {
            let bump: Bump = msg.payload()?;
            if bump.poison && state::get::<bool>(&format!("cured/{}", bump.key))?.is_none() {
                let message = format!("poison message {} of key {}", bump.n, bump.key);
                return Err(if bump.permanent {
                    HandlerError::permanent(message)
                } else {
                    HandlerError::retryable(message)
                });
            }
            let roll = fnv1a(&[msg.id().as_bytes(), &msg.attempt().to_le_bytes()]) % 100;
            if roll < bump.fail_percent {
                return Err(HandlerError::retryable(format!(
                    "transient failure of {} #{} (attempt {})",
                    bump.key,
                    bump.n,
                    msg.attempt()
                )));
            }
            return append(&format!("events/{}", bump.key), bump.n);
        }
        if msg.kind() != "order.placed" {
            return Ok(());
        }
        let order: OrderPlaced = msg.payload()?;
        let switch: Switch = state::get(SWITCH_KEY)?.unwrap_or_default();
        if switch.failing {
            return Err(HandlerError::retryable(format!(
                "flaky is switched to fail (order {})",
                order.order_id
            )));
        }
        let key = seen_key(&order.order_id);
        let count: u64 = state::get(&key)?.unwrap_or(0);
        state::put(&key, &(count + 1))
    }

    fn handle_query(msg: Message) -> Result<Reply, HandlerError> {
        match msg.kind() {
            "flaky.envelope" => {
                let query: KindOnly = msg.payload()?;
                match state::get::<serde_json::Value>(&format!("envelope/{}", query.kind))? {
                    Some(envelope) => Reply::json(&envelope),
                    None => Err(HandlerError::rejected(format!(
                        "nothing of kind `{}` seen yet",
                        query.kind
                    ))),
                }
            }
            "flaky.seen" => {
                let query: SeenQuery = msg.payload()?;
                let count: u64 = state::get(&seen_key(&query.order_id))?.unwrap_or(0);
                Reply::json(&Seen {
                    order_id: query.order_id,
                    count,
                })
            }
            "flaky.ledger" => {
                let query: KeyOnly = msg.payload()?;
                Reply::json(&Ledger {
                    commands: state::get(&format!("commands/{}", query.key))?.unwrap_or_default(),
                    events: state::get(&format!("events/{}", query.key))?.unwrap_or_default(),
                    key: query.key,
                })
            }
            "flaky.marker" => Reply::json(&Marker {
                marker: state::get_bytes(PANIC_MARKER_KEY).is_some(),
            }),
            other => Err(HandlerError::rejected(format!(
                "plugin `flaky` does not handle query `{other}`"
            ))),
        }
    }
}

export_plugin!(Flaky);
