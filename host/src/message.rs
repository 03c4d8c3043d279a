//! The message: the one envelope type inside the host. A command or query becomes one as it
//! enters, an emitted event becomes one as its handler's unit of work commits, and a delivery
//! carries the one it was read back as. It turns into the WIT record a handler is handed in
//! one place ([`Message::envelope`]) and is read from the database in one place (the due
//! deliveries' row, in `store/bus.rs`); the operators' views in [`crate::store`] are answers
//! shaped for people and scripts, built from the same rows.

use crate::bindings::Envelope;

/// A message with its whole envelope: identity, routing, causal chain and payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Unique (a UUIDv7, so ids sort by creation).
    pub id: String,
    /// The command, query or event kind; decides which handler gets it.
    pub kind: String,
    /// The ordering key: messages of one key reach each subscriber in order.
    pub partition_key: Option<String>,
    /// The tenant it acts for, as the request gave it; every event it causes inherits it.
    pub tenant_id: Option<String>,
    /// The id of the request that started the causal chain.
    pub correlation_id: String,
    /// The id of the message whose handler emitted this one; `None` for a request.
    pub causation_id: Option<String>,
    /// Who made the request that began the chain, as the request gave it; inherited like the
    /// tenant.
    pub actor: Option<String>,
    /// The version of the payload's schema, from 1: as the caller (1 when it declared none) or
    /// the emitting handler gave it.
    pub schema_version: u32,
    /// When it was created, in milliseconds since the Unix epoch.
    pub occurred_at_ms: i64,
    /// The message's own headers (name, value), in the order given; not the transport's.
    pub headers: Vec<(String, String)>,
    /// The body, as its sender wrote it.
    pub payload: Vec<u8>,
    /// How deep in its causal chain: 0 for a request, one more than its cause otherwise.
    pub depth: u32,
}

impl Message {
    /// The WIT record a handler is handed for this message on its `attempt` (1 for the
    /// first).
    pub fn envelope(&self, attempt: u32) -> Envelope {
        Envelope {
            id: self.id.clone(),
            kind: self.kind.clone(),
            partition_key: self.partition_key.clone(),
            tenant_id: self.tenant_id.clone(),
            correlation_id: self.correlation_id.clone(),
            causation_id: self.causation_id.clone(),
            actor: self.actor.clone(),
            schema_version: self.schema_version,
            occurred_at_ms: u64::try_from(self.occurred_at_ms).unwrap_or(0),
            attempt,
            headers: self.headers.clone(),
            payload: self.payload.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_envelope_carries_every_field_and_the_attempt() {
        let message = Message {
            id: "m-1".into(),
            kind: "order.placed".into(),
            partition_key: Some("order-7".into()),
            tenant_id: Some("acme".into()),
            correlation_id: "c-1".into(),
            causation_id: Some("cmd-1".into()),
            actor: Some("alice".into()),
            schema_version: 3,
            occurred_at_ms: 1_700_000_000_123,
            headers: vec![("traceparent".into(), "00-ab-cd-01".into())],
            payload: br#"{"qty":2}"#.to_vec(),
            depth: 1,
        };
        let envelope = message.envelope(4);
        assert_eq!(envelope.id, "m-1");
        assert_eq!(envelope.kind, "order.placed");
        assert_eq!(envelope.partition_key.as_deref(), Some("order-7"));
        assert_eq!(envelope.tenant_id.as_deref(), Some("acme"));
        assert_eq!(envelope.correlation_id, "c-1");
        assert_eq!(envelope.causation_id.as_deref(), Some("cmd-1"));
        assert_eq!(envelope.actor.as_deref(), Some("alice"));
        assert_eq!(envelope.schema_version, 3);
        assert_eq!(envelope.occurred_at_ms, 1_700_000_000_123);
        assert_eq!(envelope.attempt, 4);
        assert_eq!(envelope.headers, message.headers);
        assert_eq!(envelope.payload, message.payload);
    }
}
