//! What one handler call reads and writes before it commits.
//!
//! Handlers run concurrently against snapshot reads. A [`UnitOfWork`] buffers the call's
//! writes and emitted events and remembers the version of every key it read from the store;
//! the committer applies the resulting [`StateChanges`] only if those versions are still current
//! (optimistic concurrency), otherwise the executor re-runs the handler.

use crate::config::Limits;
use crate::store::{StateChanges, StateVersion, Store};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Key → value (`None`: deleted) written by the units of work before one in a run.
pub type Overlay = BTreeMap<String, Option<Vec<u8>>>;

/// Longest event kind a handler may emit: the same bound `describe` puts on declared kinds.
pub const MAX_EVENT_KIND_BYTES: usize = 256;
/// Longest partition key a handler may emit with an event; it is stored and indexed.
pub const MAX_PARTITION_KEY_BYTES: usize = 1024;
/// Most headers one message may carry, whoever sets them (an HTTP caller or an emitting handler).
pub const MAX_MESSAGE_HEADERS: usize = 32;
/// Longest name or value of a message header, in bytes.
pub const MAX_MESSAGE_HEADER_VALUE_BYTES: usize = 1024;
/// Furthest ahead an event may be scheduled: a year and a day.
pub const MAX_SCHEDULE_AHEAD_MS: i64 = 366 * 24 * 60 * 60 * 1000;

/// What a handler call is allowed to do with its unit of work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Commands and events: read, write, emit.
    ReadWrite,
    /// Queries: read only.
    ReadOnly,
}

/// An event emitted by a handler, not yet addressed or stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmittedEvent {
    /// The event kind; the plugins subscribed to it get a delivery each.
    pub kind: String,
    /// The body, as the handler wrote it.
    pub payload: Vec<u8>,
    /// The ordering key: events of one key reach each subscriber in order; `None`: unordered.
    pub partition_key: Option<String>,
    /// The event's own headers (name, value), in the order given.
    pub headers: Vec<(String, String)>,
    /// The version of the payload's schema, from 1.
    pub schema_version: u32,
    /// Not delivered before this instant (milliseconds since the Unix epoch); `None` is at
    /// once.
    pub deliver_at_ms: Option<i64>,
}

impl EmittedEvent {
    /// An event due at once, without headers, at schema version 1.
    pub fn new(kind: impl Into<String>, payload: Vec<u8>, partition_key: Option<String>) -> Self {
        Self {
            kind: kind.into(),
            payload,
            partition_key,
            headers: Vec::new(),
            schema_version: 1,
            deliver_at_ms: None,
        }
    }

    fn header_bytes(&self) -> usize {
        self.headers.iter().map(|(n, v)| n.len() + v.len()).sum()
    }
}

/// The pending effects of one handler call on one plugin's state.
pub struct UnitOfWork {
    plugin: String,
    access: Access,
    store: Store,
    /// Key → new value; `None` deletes.
    writes: BTreeMap<String, Option<Vec<u8>>>,
    /// Key → version seen at first read (0 when the key did not exist).
    reads: BTreeMap<String, StateVersion>,
    /// Key → value left by the units of work before this one in a run, which commit with it
    /// or not at all: read as committed, without a version to check.
    overlay: Option<Arc<Overlay>>,
    events: Vec<EmittedEvent>,
    limits: Limits,
    /// Bytes buffered by `writes` and `events`, checked against
    /// [`Limits::bytes_written_per_call`].
    buffered_bytes: usize,
}

/// Why the guest's request was refused. Becomes a trap: these are contract violations.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// A query's handler called `put`, `delete` or `emit` (the one named): queries may only read.
    #[error("`{0}` is not allowed while handling a query: queries are read-only")]
    ReadOnly(&'static str),
    /// A per-call limit of [`Limits`] was reached.
    #[error("limit `{limit}` of {max} exceeded: {what}")]
    Limit {
        /// The field of [`Limits`] (or constant) that was exceeded.
        limit: &'static str,
        /// The value of that limit.
        max: usize,
        /// What the handler did that went past it, for people.
        what: String,
    },
    /// An argument the contract does not allow.
    #[error("{0}")]
    Invalid(String),
}

fn limit(limit: &'static str, max: usize, what: String) -> AccessError {
    AccessError::Limit { limit, max, what }
}

impl UnitOfWork {
    /// An empty unit of work on the state of the plugin named `plugin`, allowed `access`, under
    /// [`Limits::DEFAULT`] until [`UnitOfWork::with_limits`].
    pub fn new(plugin: impl Into<String>, access: Access, store: Store) -> Self {
        Self {
            plugin: plugin.into(),
            access,
            store,
            writes: BTreeMap::new(),
            reads: BTreeMap::new(),
            overlay: None,
            events: Vec::new(),
            limits: Limits::DEFAULT,
            buffered_bytes: 0,
        }
    }

    /// The limits this unit of work enforces (the plugin's; [`Limits::DEFAULT`] until set).
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Reads `overlay` in place of the committed state for its keys: the writes of the units
    /// of work that run before this one and commit together with it ([`crate::store::Write::Chained`]).
    pub fn with_overlay(mut self, overlay: Arc<Overlay>) -> Self {
        self.overlay = Some(overlay);
        self
    }

    /// Whether reading `key` would exceed [`Limits::keys_read_per_call`]; checked before
    /// [`UnitOfWork::get`] touches the store.
    ///
    /// # Errors
    /// [`AccessError::Limit`] when `key` would be one distinct key too many.
    pub fn check_read(&self, key: &str) -> Result<(), AccessError> {
        let new_key = !self.writes.contains_key(key) && !self.reads.contains_key(key);
        if new_key && self.reads.len() >= self.limits.keys_read_per_call {
            return Err(limit(
                "keys_read_per_call",
                self.limits.keys_read_per_call,
                format!("the handler read {} distinct keys", self.reads.len() + 1),
            ));
        }
        Ok(())
    }

    /// Reads a key: this unit's own write if there is one, else the committed value.
    ///
    /// # Errors
    /// Fails when the database cannot be read, or (as an [`AccessError`]) when the key is one
    /// distinct key past [`Limits::keys_read_per_call`].
    pub async fn get(&mut self, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let overlaid = || self.overlay.as_ref().and_then(|overlay| overlay.get(key));
        if let Some(written) = self.writes.get(key).or_else(overlaid) {
            return Ok(written.clone());
        }
        self.check_read(key)?;
        let (value, version) = self.store.read_state(&self.plugin, key).await?;
        // The first read decides: later reads of the same key must agree with it at commit.
        self.reads.entry(key.to_owned()).or_insert(version);
        Ok(value)
    }

    /// Buffers a write of `key`.
    ///
    /// # Errors
    /// [`AccessError`] when the call is read-only or a write limit would be exceeded.
    pub fn put(&mut self, key: String, value: Vec<u8>) -> Result<(), AccessError> {
        self.check_writable("put")?;
        if value.len() > self.limits.state_value_bytes {
            return Err(limit(
                "state_value_bytes",
                self.limits.state_value_bytes,
                format!("`put` of a value of {} bytes", value.len()),
            ));
        }
        self.write(key, Some(value))
    }

    /// Buffers a delete of `key`.
    ///
    /// # Errors
    /// [`AccessError`] when the call is read-only or a write limit would be exceeded.
    pub fn delete(&mut self, key: String) -> Result<(), AccessError> {
        self.check_writable("delete")?;
        self.write(key, None)
    }

    fn write(&mut self, key: String, value: Option<Vec<u8>>) -> Result<(), AccessError> {
        let entry_bytes =
            |key: &str, value: &Option<Vec<u8>>| key.len() + value.as_ref().map_or(0, Vec::len);
        let replaced = match self.writes.get(&key) {
            Some(old) => entry_bytes(&key, old),
            None if self.writes.len() >= self.limits.keys_written_per_call => {
                return Err(limit(
                    "keys_written_per_call",
                    self.limits.keys_written_per_call,
                    format!("the handler wrote {} distinct keys", self.writes.len() + 1),
                ));
            }
            None => 0,
        };
        let buffered = self.buffered_bytes - replaced + entry_bytes(&key, &value);
        self.check_buffered(buffered)?;
        self.buffered_bytes = buffered;
        self.writes.insert(key, value);
        Ok(())
    }

    /// Buffers an emitted event.
    ///
    /// # Errors
    /// [`AccessError`] when the call is read-only, the event is malformed or too large, or
    /// the call emitted [`Limits::events_per_call`] events already.
    pub fn emit(&mut self, event: EmittedEvent) -> Result<(), AccessError> {
        self.check_writable("emit")?;
        if self.events.len() >= self.limits.events_per_call {
            return Err(limit(
                "events_per_call",
                self.limits.events_per_call,
                format!("the handler emitted event number {}", self.events.len() + 1),
            ));
        }
        if event.kind.is_empty() || event.kind.len() > MAX_EVENT_KIND_BYTES {
            return Err(limit(
                "MAX_EVENT_KIND_BYTES",
                MAX_EVENT_KIND_BYTES,
                format!(
                    "`emit` of an event kind of {} bytes (1 at least)",
                    event.kind.len()
                ),
            ));
        }
        let partition_key = event.partition_key.as_ref().map_or(0, String::len);
        if partition_key > MAX_PARTITION_KEY_BYTES {
            return Err(limit(
                "MAX_PARTITION_KEY_BYTES",
                MAX_PARTITION_KEY_BYTES,
                format!("`emit` with a partition key of {partition_key} bytes"),
            ));
        }
        if event.payload.len() > self.limits.payload_out_bytes {
            return Err(limit(
                "payload_out_bytes",
                self.limits.payload_out_bytes,
                format!("`emit` of a payload of {} bytes", event.payload.len()),
            ));
        }
        check_emit_options(&event)?;
        let buffered = self.buffered_bytes
            + event.kind.len()
            + partition_key
            + event.payload.len()
            + event.header_bytes();
        self.check_buffered(buffered)?;
        self.buffered_bytes = buffered;
        self.events.push(event);
        Ok(())
    }

    /// The events emitted so far, in order.
    pub fn emitted(&self) -> &[EmittedEvent] {
        &self.events
    }

    fn check_buffered(&self, buffered: usize) -> Result<(), AccessError> {
        if buffered > self.limits.bytes_written_per_call {
            return Err(limit(
                "bytes_written_per_call",
                self.limits.bytes_written_per_call,
                format!("the handler's writes and events would take {buffered} bytes"),
            ));
        }
        Ok(())
    }

    fn check_writable(&self, operation: &'static str) -> Result<(), AccessError> {
        match self.access {
            Access::ReadWrite => Ok(()),
            Access::ReadOnly => Err(AccessError::ReadOnly(operation)),
        }
    }

    /// Ends the call: its state changes, and the events it emitted (still to be addressed).
    pub fn finish(self) -> (StateChanges, Vec<EmittedEvent>) {
        let changes = StateChanges {
            plugin: self.plugin,
            reads: self.reads.into_iter().collect(),
            writes: self.writes.into_iter().collect(),
        };
        (changes, self.events)
    }
}

/// The headers, schema version and schedule of an emitted event, against their bounds.
fn check_emit_options(event: &EmittedEvent) -> Result<(), AccessError> {
    if event.headers.len() > MAX_MESSAGE_HEADERS {
        return Err(limit(
            "MAX_MESSAGE_HEADERS",
            MAX_MESSAGE_HEADERS,
            format!("`emit` with {} headers", event.headers.len()),
        ));
    }
    if let Some((name, value)) = event.headers.iter().find(|(n, v)| {
        n.is_empty()
            || n.len() > MAX_MESSAGE_HEADER_VALUE_BYTES
            || v.len() > MAX_MESSAGE_HEADER_VALUE_BYTES
    }) {
        return Err(limit(
            "MAX_MESSAGE_HEADER_VALUE_BYTES",
            MAX_MESSAGE_HEADER_VALUE_BYTES,
            format!(
                "`emit` with a header of a {}-byte name and a {}-byte value (a name of 1 byte at least)",
                name.len(),
                value.len()
            ),
        ));
    }
    if event.schema_version == 0 {
        return Err(AccessError::Invalid(
            "`emit` with schema version 0: versions count from 1".to_owned(),
        ));
    }
    if let Some(at) = event.deliver_at_ms
        && at > crate::store::now_ms().saturating_add(MAX_SCHEDULE_AHEAD_MS)
    {
        return Err(limit(
            "MAX_SCHEDULE_AHEAD_MS",
            usize::try_from(MAX_SCHEDULE_AHEAD_MS).unwrap_or(usize::MAX),
            format!("`emit` scheduled for {at} ms since the epoch"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn unit(limits: Limits) -> (tempfile::TempDir, UnitOfWork) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = Store::open(&url).await.unwrap();
        let unit = UnitOfWork::new("p", Access::ReadWrite, store).with_limits(limits);
        (dir, unit)
    }

    fn event(payload: usize) -> EmittedEvent {
        EmittedEvent::new("k", vec![b'x'; payload], None)
    }

    fn limit_name(error: AccessError) -> &'static str {
        match error {
            AccessError::Limit { limit, .. } => limit,
            AccessError::ReadOnly(op) => panic!("expected a limit, got read-only {op}"),
            AccessError::Invalid(what) => panic!("expected a limit, got {what}"),
        }
    }

    #[tokio::test]
    async fn emit_options_are_bounded() {
        let (_dir, mut unit) = unit(Limits::DEFAULT).await;
        let with_headers = |n: usize, bytes: usize| EmittedEvent {
            headers: (0..n)
                .map(|i| (format!("h{i}"), "v".repeat(bytes)))
                .collect(),
            ..event(1)
        };
        unit.emit(with_headers(
            MAX_MESSAGE_HEADERS,
            MAX_MESSAGE_HEADER_VALUE_BYTES,
        ))
        .unwrap();
        let too_many = unit
            .emit(with_headers(MAX_MESSAGE_HEADERS + 1, 1))
            .unwrap_err();
        assert_eq!(limit_name(too_many), "MAX_MESSAGE_HEADERS");
        let too_long = unit
            .emit(with_headers(1, MAX_MESSAGE_HEADER_VALUE_BYTES + 1))
            .unwrap_err();
        assert_eq!(limit_name(too_long), "MAX_MESSAGE_HEADER_VALUE_BYTES");
        let unnamed = EmittedEvent {
            headers: vec![(String::new(), "v".into())],
            ..event(1)
        };
        assert_eq!(
            limit_name(unit.emit(unnamed).unwrap_err()),
            "MAX_MESSAGE_HEADER_VALUE_BYTES"
        );

        let version_0 = EmittedEvent {
            schema_version: 0,
            ..event(1)
        };
        let error = unit.emit(version_0).unwrap_err();
        assert!(error.to_string().contains("schema version 0"), "{error}");

        let at = |ahead: i64| EmittedEvent {
            deliver_at_ms: Some(crate::store::now_ms() + ahead),
            ..event(1)
        };
        unit.emit(at(MAX_SCHEDULE_AHEAD_MS - 60_000)).unwrap();
        let too_far = unit.emit(at(MAX_SCHEDULE_AHEAD_MS + 60_000)).unwrap_err();
        assert_eq!(limit_name(too_far), "MAX_SCHEDULE_AHEAD_MS");
    }

    #[tokio::test]
    async fn state_value_at_the_limit_is_written_and_one_byte_more_is_refused() {
        let limits = Limits {
            state_value_bytes: 10,
            ..Limits::DEFAULT
        };
        let (_dir, mut unit) = unit(limits).await;
        unit.put("a".into(), vec![0; 10]).unwrap();
        let error = unit.put("b".into(), vec![0; 11]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "limit `state_value_bytes` of 10 exceeded: `put` of a value of 11 bytes"
        );
    }

    #[tokio::test]
    async fn keys_written_at_the_limit_pass_and_one_more_key_is_refused() {
        let limits = Limits {
            keys_written_per_call: 3,
            ..Limits::DEFAULT
        };
        let (_dir, mut unit) = unit(limits).await;
        unit.put("a".into(), vec![1]).unwrap();
        unit.delete("b".into()).unwrap();
        unit.put("c".into(), vec![1]).unwrap();
        // Writing a key again is not a new key.
        unit.put("a".into(), vec![2]).unwrap();
        unit.delete("c".into()).unwrap();
        assert_eq!(
            limit_name(unit.put("d".into(), vec![1]).unwrap_err()),
            "keys_written_per_call"
        );
        assert_eq!(
            limit_name(unit.delete("d".into()).unwrap_err()),
            "keys_written_per_call"
        );
        assert_eq!(unit.finish().0.writes.len(), 3);
    }

    #[tokio::test]
    async fn events_at_the_limit_are_emitted_and_one_more_is_refused() {
        let limits = Limits {
            events_per_call: 2,
            ..Limits::DEFAULT
        };
        let (_dir, mut unit) = unit(limits).await;
        unit.emit(event(1)).unwrap();
        unit.emit(event(1)).unwrap();
        assert_eq!(
            limit_name(unit.emit(event(1)).unwrap_err()),
            "events_per_call"
        );
        assert_eq!(unit.finish().1.len(), 2);
    }

    #[tokio::test]
    async fn event_payload_at_the_limit_is_emitted_and_one_byte_more_is_refused() {
        let limits = Limits {
            payload_out_bytes: 8,
            ..Limits::DEFAULT
        };
        let (_dir, mut unit) = unit(limits).await;
        unit.emit(event(8)).unwrap();
        assert_eq!(
            limit_name(unit.emit(event(9)).unwrap_err()),
            "payload_out_bytes"
        );
    }

    #[tokio::test]
    async fn event_kind_and_partition_key_are_bounded() {
        let (_dir, mut unit) = unit(Limits::DEFAULT).await;
        let with = |kind: usize, key: usize| {
            EmittedEvent::new("k".repeat(kind), Vec::new(), Some("p".repeat(key)))
        };
        unit.emit(with(MAX_EVENT_KIND_BYTES, MAX_PARTITION_KEY_BYTES))
            .unwrap();
        assert_eq!(
            limit_name(unit.emit(with(0, 1)).unwrap_err()),
            "MAX_EVENT_KIND_BYTES"
        );
        assert_eq!(
            limit_name(unit.emit(with(MAX_EVENT_KIND_BYTES + 1, 1)).unwrap_err()),
            "MAX_EVENT_KIND_BYTES"
        );
        assert_eq!(
            limit_name(unit.emit(with(1, MAX_PARTITION_KEY_BYTES + 1)).unwrap_err()),
            "MAX_PARTITION_KEY_BYTES"
        );
    }

    #[tokio::test]
    async fn buffered_bytes_at_the_limit_pass_and_one_byte_more_is_refused() {
        // Key `a` (1) + value (5) + event kind `k` (1) + payload (3) = 10.
        let limits = Limits {
            bytes_written_per_call: 10,
            ..Limits::DEFAULT
        };
        let (_dir, mut unit) = unit(limits).await;
        unit.put("a".into(), vec![0; 5]).unwrap();
        unit.emit(event(3)).unwrap();
        assert_eq!(
            limit_name(unit.put("b".into(), Vec::new()).unwrap_err()),
            "bytes_written_per_call"
        );
        // Overwriting counts the new value instead of the old one, not both.
        unit.put("a".into(), vec![0; 4]).unwrap();
        unit.put("a".into(), vec![0; 5]).unwrap();
        assert_eq!(
            limit_name(unit.put("a".into(), vec![0; 6]).unwrap_err()),
            "bytes_written_per_call"
        );
        assert_eq!(
            limit_name(unit.emit(event(1)).unwrap_err()),
            "bytes_written_per_call"
        );
    }

    #[tokio::test]
    async fn keys_read_at_the_limit_pass_and_one_more_key_is_refused() {
        let limits = Limits {
            keys_read_per_call: 2,
            ..Limits::DEFAULT
        };
        let (_dir, mut unit) = unit(limits).await;
        unit.get("a").await.unwrap();
        unit.get("b").await.unwrap();
        // Keys already read, and the unit's own writes, are not new reads.
        unit.get("a").await.unwrap();
        unit.put("w".into(), vec![1]).unwrap();
        assert_eq!(unit.get("w").await.unwrap(), Some(vec![1]));
        let error = unit.check_read("c").unwrap_err();
        assert_eq!(limit_name(error), "keys_read_per_call");
        assert!(unit.get("c").await.is_err());
    }

    #[tokio::test]
    async fn queries_may_not_write() {
        let (_dir, unit) = unit(Limits::DEFAULT).await;
        let mut unit = UnitOfWork {
            access: Access::ReadOnly,
            ..unit
        };
        assert!(matches!(
            unit.put("a".into(), Vec::new()),
            Err(AccessError::ReadOnly("put"))
        ));
        assert!(matches!(
            unit.emit(event(0)),
            Err(AccessError::ReadOnly("emit"))
        ));
    }
}
