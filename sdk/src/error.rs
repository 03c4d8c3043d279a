//! [`HandlerError`]: the failures a handler reports on purpose, and what the host does with each.

use std::fmt;

use crate::bindings::handler_host::plugin::types as wit;

/// A failure the handler reports itself; its variant decides what the host does next.
///
/// A panic is not a `HandlerError`: it traps the component, the host throws away everything the
/// unit of work did, and classifies the trap on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandlerError {
    /// Bad input. Never retried: a command answers HTTP 422 with the message, an event is not
    /// redelivered.
    Rejected(String),
    /// A transient failure. The host retries the message with backoff and dead-letters it when
    /// the attempts run out.
    Retryable(String),
    /// Will never work, however often it is tried. The host dead-letters the message at once.
    Permanent(String),
}

impl HandlerError {
    /// Bad input that no retry can fix (see [`HandlerError::Rejected`]).
    pub fn rejected(message: impl Into<String>) -> Self {
        Self::Rejected(message.into())
    }

    /// A transient failure worth retrying (see [`HandlerError::Retryable`]).
    pub fn retryable(message: impl Into<String>) -> Self {
        Self::Retryable(message.into())
    }

    /// A failure that needs a human, not a retry (see [`HandlerError::Permanent`]).
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::Permanent(message.into())
    }

    /// The message the handler gave, without the class.
    pub fn message(&self) -> &str {
        match self {
            Self::Rejected(message) | Self::Retryable(message) | Self::Permanent(message) => {
                message
            }
        }
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let class = match self {
            Self::Rejected(_) => "rejected",
            Self::Retryable(_) => "retryable",
            Self::Permanent(_) => "permanent",
        };
        write!(f, "{class}: {}", self.message())
    }
}

impl std::error::Error for HandlerError {}

impl From<HandlerError> for wit::HandlerError {
    fn from(error: HandlerError) -> Self {
        match error {
            HandlerError::Rejected(message) => Self::Rejected(message),
            HandlerError::Retryable(message) => Self::Retryable(message),
            HandlerError::Permanent(message) => Self::Permanent(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_keep_the_class_and_message() {
        assert_eq!(
            HandlerError::rejected("a"),
            HandlerError::Rejected("a".into())
        );
        assert_eq!(
            HandlerError::retryable("b"),
            HandlerError::Retryable("b".into())
        );
        assert_eq!(
            HandlerError::permanent("c"),
            HandlerError::Permanent("c".into())
        );
        assert_eq!(HandlerError::retryable("b").message(), "b");
        assert_eq!(HandlerError::permanent("c").to_string(), "permanent: c");
    }

    #[test]
    fn converts_to_the_matching_wit_variant() {
        let wit = wit::HandlerError::from(HandlerError::rejected("r"));
        assert!(matches!(wit, wit::HandlerError::Rejected(m) if m == "r"));
        let wit = wit::HandlerError::from(HandlerError::retryable("t"));
        assert!(matches!(wit, wit::HandlerError::Retryable(m) if m == "t"));
        let wit = wit::HandlerError::from(HandlerError::permanent("p"));
        assert!(matches!(wit, wit::HandlerError::Permanent(m) if m == "p"));
    }
}
