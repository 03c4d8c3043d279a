//! [`Message`]: the command, event or query a handler is given, and its typed payload.

use serde::de::DeserializeOwned;

use crate::HandlerError;
use crate::bindings::handler_host::plugin::types::Envelope;

/// One message handed to the plugin: a command, an event or a query.
///
/// The host fills every field; the accessors only borrow them. The payload is JSON by convention:
/// read it with [`Message::payload`], or take the raw bytes with [`Message::payload_bytes`].
#[derive(Debug, Clone)]
pub struct Message {
    envelope: Envelope,
}

impl Message {
    pub(crate) fn new(envelope: Envelope) -> Self {
        Self { envelope }
    }

    /// UUIDv7 the host assigned when it accepted or emitted the message.
    pub fn id(&self) -> &str {
        &self.envelope.id
    }

    /// The message kind, e.g. `order.place` or `order.placed`.
    pub fn kind(&self) -> &str {
        &self.envelope.kind
    }

    /// The aggregate id that decides the ordering lane of an event, if the message has one.
    pub fn partition_key(&self) -> Option<&str> {
        self.envelope.partition_key.as_deref()
    }

    /// The tenant the message belongs to, if the caller named one.
    pub fn tenant_id(&self) -> Option<&str> {
        self.envelope.tenant_id.as_deref()
    }

    /// Shared by every message of one causal tree: the command and everything it led to.
    pub fn correlation_id(&self) -> &str {
        &self.envelope.correlation_id
    }

    /// Id of the message whose handler emitted this one; `None` for what came in from outside.
    pub fn causation_id(&self) -> Option<&str> {
        self.envelope.causation_id.as_deref()
    }

    /// Who sent the message, if the caller said.
    pub fn actor(&self) -> Option<&str> {
        self.envelope.actor.as_deref()
    }

    /// Version of the payload's schema, as the sender declared it.
    pub fn schema_version(&self) -> u32 {
        self.envelope.schema_version
    }

    /// Milliseconds since the Unix epoch at which the host accepted or emitted the message.
    ///
    /// This is the plugin's clock: a handler that needs "now" should use it, so that a retry
    /// sees the same time as the first attempt.
    pub fn occurred_at_ms(&self) -> u64 {
        self.envelope.occurred_at_ms
    }

    /// 1 on first delivery, one more on each retry.
    pub fn attempt(&self) -> u32 {
        self.envelope.attempt
    }

    /// Every header, in the order the host gave them.
    pub fn headers(&self) -> &[(String, String)] {
        &self.envelope.headers
    }

    /// The first header called `name`, compared ASCII case-insensitively as HTTP does.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.envelope
            .headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The payload as the host received it.
    pub fn payload_bytes(&self) -> &[u8] {
        &self.envelope.payload
    }

    /// Takes the payload bytes out of the message.
    pub fn into_payload_bytes(self) -> Vec<u8> {
        self.envelope.payload
    }

    /// Reads the JSON payload as a `T`.
    ///
    /// # Errors
    /// [`HandlerError::Rejected`] naming the message kind and what serde did not like, when the
    /// payload is not valid JSON or does not fit `T`: bad input is the sender's fault, so
    /// retrying would not help.
    pub fn payload<T: DeserializeOwned>(&self) -> Result<T, HandlerError> {
        serde_json::from_slice(&self.envelope.payload).map_err(|error| {
            HandlerError::rejected(format!(
                "invalid payload for `{}`: {error}",
                self.envelope.kind
            ))
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use serde::Deserialize;

    use super::*;

    /// A message as the host would hand it over, for tests of the pure parts of the SDK.
    pub(crate) fn message(kind: &str, payload: &str) -> Message {
        Message::new(Envelope {
            id: "0190c6d5-0000-7000-8000-000000000001".into(),
            kind: kind.into(),
            partition_key: Some("o-1".into()),
            tenant_id: None,
            correlation_id: "0190c6d5-0000-7000-8000-000000000000".into(),
            causation_id: None,
            actor: Some("alice".into()),
            schema_version: 1,
            occurred_at_ms: 1_700_000_000_000,
            attempt: 2,
            headers: vec![("X-Request-Id".into(), "r-7".into())],
            payload: payload.as_bytes().to_vec(),
        })
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Place {
        order_id: String,
        qty: i64,
    }

    #[test]
    fn accessors_return_the_envelope_fields() {
        let msg = message("order.place", "{}");
        assert_eq!(msg.kind(), "order.place");
        assert_eq!(msg.partition_key(), Some("o-1"));
        assert_eq!(msg.tenant_id(), None);
        assert_eq!(msg.actor(), Some("alice"));
        assert_eq!(msg.attempt(), 2);
        assert_eq!(msg.occurred_at_ms(), 1_700_000_000_000);
        assert_eq!(msg.header("x-request-id"), Some("r-7"));
        assert_eq!(msg.header("missing"), None);
        assert_eq!(msg.payload_bytes(), b"{}");
    }

    #[test]
    fn payload_parses_json() {
        let msg = message("order.place", r#"{"order_id":"o-1","qty":3}"#);
        let place: Place = msg.payload().unwrap();
        assert_eq!(
            place,
            Place {
                order_id: "o-1".into(),
                qty: 3
            }
        );
    }

    #[test]
    fn bad_payload_is_rejected_naming_the_kind_and_the_field() {
        let msg = message("order.place", r#"{"order_id":"o-1"}"#);
        let error = msg.payload::<Place>().unwrap_err();
        let HandlerError::Rejected(text) = error else {
            panic!("expected rejected, got {error:?}");
        };
        assert!(text.contains("`order.place`"), "{text}");
        assert!(text.contains("missing field `qty`"), "{text}");
    }

    #[test]
    fn payload_that_is_not_json_is_rejected() {
        let msg = message("order.place", "not json");
        assert!(matches!(
            msg.payload::<Place>(),
            Err(HandlerError::Rejected(_))
        ));
    }
}
