//! Emitting events from a handler.
//!
//! An emitted event is held by the unit of work and published only if the handler succeeds, in
//! the same commit as its state writes: a handler that fails or panics has emitted nothing.
//! Queries cannot emit; the host refuses it and fails the call.

use serde::Serialize;

use crate::HandlerError;
use crate::bindings::handler_host::plugin::unit_of_work;

/// Emits an event of `kind` with `payload` serialized as JSON.
///
/// Events with the same `partition_key` (usually the aggregate id) are delivered to each
/// subscriber in the order they were emitted; `None` leaves the event unordered.
///
/// # Errors
/// [`HandlerError::Permanent`] naming the kind when `payload` cannot be serialized, which is a
/// bug in the plugin.
pub fn emit<T: Serialize + ?Sized>(
    kind: &str,
    payload: &T,
    partition_key: Option<&str>,
) -> Result<(), HandlerError> {
    let bytes = serde_json::to_vec(payload).map_err(|error| {
        HandlerError::permanent(format!(
            "could not serialize the payload of event `{kind}`: {error}"
        ))
    })?;
    emit_bytes(kind, &bytes, partition_key);
    Ok(())
}

/// Emits an event of `kind` with `payload` exactly as given (see [`emit`] for `partition_key`).
pub fn emit_bytes(kind: &str, payload: &[u8], partition_key: Option<&str>) {
    unit_of_work::emit(kind, payload, partition_key);
}
