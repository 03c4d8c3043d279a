//! The failure classes that decide what happens to a message.
//!
//! A handler reports `rejected`, `retryable` or `permanent` itself; a trap (panic, deadline,
//! memory cap, stack overflow) is classified by the host. The class decides whether a command
//! answers 4xx or 5xx, and whether an event delivery is retried or dead-lettered at once.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// Why a handler call did not succeed. Matched exhaustively wherever a decision is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// The handler refused the input; running it again cannot help.
    Rejected,
    /// The handler reported a transient failure.
    Retryable,
    /// The handler reported that the message can never succeed.
    Permanent,
    /// The call ran past its deadline and was interrupted.
    Deadline,
    /// The guest tried to grow its memory past its cap.
    MemoryLimit,
    /// The guest exhausted its WebAssembly stack.
    StackOverflow,
    /// The guest panicked or reached `unreachable`.
    Panic,
    /// Any other trap raised inside the guest.
    Trap,
    /// The host failed (database unavailable, commit error): not the plugin's fault.
    Host,
    /// The message lies deeper in a causal chain than its subscriber's `max_causal_depth`:
    /// handlers emitting what they (or each other) handle, without end.
    Loop,
}

impl ErrorClass {
    /// Every class, in declaration order.
    pub const ALL: [Self; 10] = [
        Self::Rejected,
        Self::Retryable,
        Self::Permanent,
        Self::Deadline,
        Self::MemoryLimit,
        Self::StackOverflow,
        Self::Panic,
        Self::Trap,
        Self::Host,
        Self::Loop,
    ];

    /// Whether a failed event delivery of this class is worth another attempt.
    ///
    /// Deadline and memory traps are deterministic for the same message and limits, and
    /// `rejected`/`permanent` are the handler's own verdict, so they go to the DLQ at once.
    pub const fn is_retried(self) -> bool {
        match self {
            Self::Retryable | Self::Panic | Self::Trap | Self::StackOverflow | Self::Host => true,
            Self::Rejected | Self::Permanent | Self::Deadline | Self::MemoryLimit | Self::Loop => {
                false
            }
        }
    }

    /// Whether the fault lies with the plugin (guest) rather than the host.
    pub const fn is_guest_fault(self) -> bool {
        !matches!(self, Self::Host)
    }

    /// The snake_case name used in JSON, logs and the DLQ.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Rejected => "rejected",
            Self::Retryable => "retryable",
            Self::Permanent => "permanent",
            Self::Deadline => "deadline",
            Self::MemoryLimit => "memory_limit",
            Self::StackOverflow => "stack_overflow",
            Self::Panic => "panic",
            Self::Trap => "trap",
            Self::Host => "host",
            Self::Loop => "loop",
        }
    }

    /// Parses the name produced by [`ErrorClass::as_str`].
    pub fn parse(name: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(name.to_owned())).ok()
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A handler call that did not succeed: its class, the plugin, and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{class} in plugin `{plugin}`: {message}")]
pub struct HandlerFailure {
    /// What kind of failure: decides the status a command answers and whether a delivery is
    /// retried.
    pub class: ErrorClass,
    /// The name of the plugin whose call failed; empty when read back from an error body that
    /// named none.
    pub plugin: String,
    /// What went wrong, for people: the handler's own words, or the host's account of the trap.
    pub message: String,
}

impl HandlerFailure {
    /// A failure of `class` in the plugin named `plugin`, explained by `message`.
    pub fn new(class: ErrorClass, plugin: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            class,
            plugin: plugin.into(),
            message: message.into(),
        }
    }

    /// This failure as the JSON error body ([`error_body`]).
    pub fn to_error_body(&self) -> Vec<u8> {
        error_body(self.class.as_str(), Some(&self.plugin), &self.message)
    }

    /// Reads back a body written by [`HandlerFailure::to_error_body`]; `None` when `body` is
    /// not one, or names a class this host does not know.
    pub fn from_error_body(body: &[u8]) -> Option<Self> {
        #[derive(Deserialize)]
        struct Body {
            error: Fields,
        }
        #[derive(Deserialize)]
        struct Fields {
            class: ErrorClass,
            plugin: Option<String>,
            message: String,
        }
        let Body { error } = serde_json::from_slice(body).ok()?;
        Some(Self::new(
            error.class,
            error.plugin.unwrap_or_default(),
            error.message,
        ))
    }
}

/// The host failed, not the plugin: every such error a caller can get, kept typed up to the
/// boundary that answers it (an HTTP status, a CLI message). Cheap to clone, because one
/// failed commit answers every unit of work of its batch.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HostError {
    /// A read or a commit failed in the database; nothing was committed.
    #[error("the database failed: {0:#}")]
    Database(Arc<anyhow::Error>),
    /// The single writer has stopped: the host is shutting down.
    #[error("the database writer has stopped")]
    WriterStopped,
    /// Another caller holds this idempotency key for longer than its claim allows.
    #[error("idempotency key `{key}` is contended; try again")]
    KeyContended {
        /// The idempotency key that could not be claimed.
        key: String,
    },
}

impl HostError {
    /// A database failure, with the chain of causes `error` carries.
    pub fn database(error: anyhow::Error) -> Self {
        Self::Database(Arc::new(error))
    }
}

/// The JSON body of every error the host answers:
/// `{"error": {"class": ..., "plugin": ..., "message": ...}}`.
/// Kept in one place because a rejected idempotent command stores this body and replays it.
pub fn error_body(class: &str, plugin: Option<&str>, message: &str) -> Vec<u8> {
    let body = serde_json::json!({
        "error": { "class": class, "plugin": plugin, "message": message }
    });
    serde_json::to_vec(&body).expect("a JSON value always serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_names_round_trip() {
        for class in ErrorClass::ALL {
            assert_eq!(ErrorClass::parse(class.as_str()), Some(class));
        }
        assert_eq!(ErrorClass::parse("nonsense"), None);
    }

    #[test]
    fn a_failure_reads_back_from_its_error_body() {
        let failure = HandlerFailure::new(ErrorClass::Rejected, "orders", "no such \"sku\"");
        let body = failure.to_error_body();
        assert_eq!(HandlerFailure::from_error_body(&body), Some(failure));
        assert_eq!(HandlerFailure::from_error_body(b"{}"), None);
        let unknown = error_body("no_such_class", None, "m");
        assert_eq!(HandlerFailure::from_error_body(&unknown), None);
        let no_plugin = error_body("host", None, "m");
        assert_eq!(
            HandlerFailure::from_error_body(&no_plugin),
            Some(HandlerFailure::new(ErrorClass::Host, "", "m"))
        );
    }

    #[test]
    fn deterministic_failures_are_not_retried() {
        assert!(!ErrorClass::Permanent.is_retried());
        assert!(!ErrorClass::Deadline.is_retried());
        assert!(!ErrorClass::MemoryLimit.is_retried());
        assert!(!ErrorClass::Rejected.is_retried());
        assert!(ErrorClass::Retryable.is_retried());
        assert!(ErrorClass::Panic.is_retried());
    }
}
