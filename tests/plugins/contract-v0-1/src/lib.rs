//! Test-only plugin written against `handler-host:plugin@0.1.0` (`wit/v0.1`) with wit-bindgen
//! alone, as a component built before the contract moved on would be:
//!
//! - command `legacy.note` `{"text"}`: stores the text under `note`, emits `legacy.noted`
//!   `{"text"}` with partition key `notes`, and answers `{"stored": text}`.
//! - event `legacy.noted`: stores what its envelope carried under `seen`:
//!   `{"text", "schema_version", "headers", "attempt"}`.
//! - query `legacy.get`: `{"note", "seen"}` (each `null` until written).

wit_bindgen::generate!({
    path: "../../../wit/v0.1",
    world: "plugin",
});

use handler_host::plugin::unit_of_work;
use serde_json::{Value, json};

struct Legacy;

fn payload(message: &Envelope) -> Result<Value, HandlerError> {
    serde_json::from_slice(&message.payload)
        .map_err(|e| HandlerError::Rejected(format!("payload is not JSON: {e}")))
}

fn read(key: &str) -> Value {
    unit_of_work::get(key)
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or(Value::Null)
}

impl Guest for Legacy {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "legacy".into(),
            version: "0.1.0".into(),
            commands: vec!["legacy.note".into()],
            events: vec!["legacy.noted".into()],
            queries: vec!["legacy.get".into()],
        }
    }

    fn handle_command(command: Envelope) -> Result<Vec<u8>, HandlerError> {
        let text = payload(&command)?["text"].clone();
        let note = json!({ "text": text }).to_string();
        unit_of_work::put("note", note.as_bytes());
        unit_of_work::emit("legacy.noted", note.as_bytes(), Some("notes"));
        Ok(json!({ "stored": text }).to_string().into_bytes())
    }

    fn handle_event(event: Envelope) -> Result<(), HandlerError> {
        let seen = json!({
            "text": payload(&event)?["text"],
            "schema_version": event.schema_version,
            "headers": event.headers,
            "attempt": event.attempt,
        });
        unit_of_work::put("seen", seen.to_string().as_bytes());
        Ok(())
    }

    fn handle_query(_query: Envelope) -> Result<Vec<u8>, HandlerError> {
        let answer = json!({ "note": read("note"), "seen": read("seen") });
        Ok(answer.to_string().into_bytes())
    }
}

export!(Legacy);
