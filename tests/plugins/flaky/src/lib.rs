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
            .query("flaky.seen")
            .query("flaky.marker")
    }

    fn handle_command(msg: Message) -> Result<Reply, HandlerError> {
        match msg.kind() {
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
            other => Err(HandlerError::rejected(format!(
                "plugin `flaky` does not handle command `{other}`"
            ))),
        }
    }

    fn handle_event(msg: Message) -> Result<(), HandlerError> {
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
            "flaky.seen" => {
                let query: SeenQuery = msg.payload()?;
                let count: u64 = state::get(&seen_key(&query.order_id))?.unwrap_or(0);
                Reply::json(&Seen {
                    order_id: query.order_id,
                    count,
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
