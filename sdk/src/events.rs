//! Emitting events from a handler.
//!
//! An emitted event is held by the unit of work and published only if the handler succeeds, in
//! the same commit as its state writes: a handler that fails or panics has emitted nothing.
//! Queries cannot emit; the host refuses it and fails the call.
//!
//! [`emit`] covers the usual case; [`Emit`] adds a schedule, headers and a schema version:
//!
//! ```no_run
//! use handler_host_sdk::events::Emit;
//! use std::time::Duration;
//!
//! # fn handler() -> Result<(), handler_host_sdk::HandlerError> {
//! // Remind in 15 minutes, unless the handler fails: stored at commit, delivered when due.
//! Emit::new("order.reminder")
//!     .partition_key("o-17")
//!     .after(Duration::from_secs(15 * 60))
//!     .header("reason", "unpaid")
//!     .schema_version(2)
//!     .send(&serde_json::json!({ "order_id": "o-17" }))?;
//! # Ok(())
//! # }
//! ```

use serde::Serialize;
use std::time::Duration;

use crate::HandlerError;
use crate::bindings::handler_host::plugin::types::{EmitOptions, Schedule};
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
    let mut emit = Emit::new(kind);
    emit.options.partition_key = partition_key.map(str::to_owned);
    emit.send(payload)
}

/// Emits an event of `kind` with `payload` exactly as given (see [`emit`] for `partition_key`).
pub fn emit_bytes(kind: &str, payload: &[u8], partition_key: Option<&str>) {
    let mut emit = Emit::new(kind);
    emit.options.partition_key = partition_key.map(str::to_owned);
    emit.send_bytes(payload);
}

/// An event to emit with options, built with chained calls and sent with [`Emit::send`].
#[derive(Debug, Clone)]
#[must_use = "an event is emitted only by `send` or `send_bytes`"]
pub struct Emit {
    kind: String,
    options: EmitOptions,
}

impl Emit {
    /// An event of `kind`, unordered, due at once, without headers, at schema version 1.
    pub fn new(kind: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            options: EmitOptions {
                partition_key: None,
                deliver: None,
                headers: Vec::new(),
                schema_version: None,
            },
        }
    }

    /// Orders the event after earlier ones with the same key, for each subscriber.
    pub fn partition_key(mut self, key: impl Into<String>) -> Self {
        self.options.partition_key = Some(key.into());
        self
    }

    /// Not delivered before `delay` has passed since the emit (whole milliseconds). A
    /// scheduled event is stored at commit like any other, survives restarts, and holds back
    /// no event of its partition key while it waits.
    pub fn after(mut self, delay: Duration) -> Self {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.options.deliver = Some(Schedule::AfterMs(ms));
        self
    }

    /// Not delivered before `at_ms`, milliseconds since the Unix epoch (at once if past).
    pub fn at_ms(mut self, at_ms: u64) -> Self {
        self.options.deliver = Some(Schedule::AtMs(at_ms));
        self
    }

    /// Adds a header to the event's envelope.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.options.headers.push((name.into(), value.into()));
        self
    }

    /// The version of the payload's schema (1 unless set).
    pub fn schema_version(mut self, version: u32) -> Self {
        self.options.schema_version = Some(version);
        self
    }

    /// Emits the event with `payload` serialized as JSON.
    ///
    /// # Errors
    /// [`HandlerError::Permanent`] naming the kind when `payload` cannot be serialized.
    pub fn send<T: Serialize + ?Sized>(self, payload: &T) -> Result<(), HandlerError> {
        let bytes = serde_json::to_vec(payload).map_err(|error| {
            HandlerError::permanent(format!(
                "could not serialize the payload of event `{}`: {error}",
                self.kind
            ))
        })?;
        self.send_bytes(&bytes);
        Ok(())
    }

    /// Emits the event with `payload` exactly as given.
    pub fn send_bytes(self, payload: &[u8]) {
        unit_of_work::emit(&self.kind, payload, &self.options);
    }
}
