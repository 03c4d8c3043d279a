//! [`Reply`]: what a command or query answers.

use serde::Serialize;

use crate::HandlerError;

/// The answer of a command or query: bytes the host passes back to the caller, JSON by
/// convention.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reply {
    bytes: Vec<u8>,
}

impl Reply {
    /// Answers with `value` serialized as JSON.
    ///
    /// # Errors
    /// [`HandlerError::Permanent`] when `value` cannot be serialized (a map with non-string
    /// keys, a failing `Serialize` impl): that is a bug in the plugin, and retrying would fail
    /// the same way.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Self, HandlerError> {
        serde_json::to_vec(value).map(Self::bytes).map_err(|error| {
            HandlerError::permanent(format!("could not serialize the reply: {error}"))
        })
    }

    /// Answers with `bytes` exactly as given.
    pub fn bytes(bytes: Vec<u8>) -> Self {
        Self { bytes }
    }

    /// The bytes the caller will get.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Takes the bytes out of the reply.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

impl From<Vec<u8>> for Reply {
    fn from(bytes: Vec<u8>) -> Self {
        Self::bytes(bytes)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn json_serializes_the_value() {
        let reply = Reply::json(&serde_json::json!({"order_id": "o-1"})).unwrap();
        assert_eq!(reply.as_bytes(), br#"{"order_id":"o-1"}"#);
    }

    #[test]
    fn unserializable_value_is_a_permanent_error() {
        // JSON object keys must be strings; a tuple key cannot be serialized.
        let map = BTreeMap::from([((1, 2), "x")]);
        assert!(matches!(Reply::json(&map), Err(HandlerError::Permanent(_))));
    }

    #[test]
    fn bytes_are_passed_through() {
        assert_eq!(Reply::bytes(vec![0, 159]).into_bytes(), vec![0, 159]);
    }
}
