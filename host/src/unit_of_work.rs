//! What one handler call reads and writes before it commits.
//!
//! Handlers run concurrently against snapshot reads. A [`UnitOfWork`] buffers the call's
//! writes and emitted events and remembers the version of every key it read from the store;
//! the committer applies the resulting [`StateChanges`] only if those versions are still current
//! (optimistic concurrency), otherwise the executor re-runs the handler.

use crate::store::{StateChanges, StateVersion, Store};
use std::collections::BTreeMap;

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
    pub kind: String,
    pub payload: Vec<u8>,
    pub partition_key: Option<String>,
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
    events: Vec<EmittedEvent>,
}

/// Why the guest's request was refused. Becomes a trap: these are contract violations.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("`{0}` is not allowed while handling a query: queries are read-only")]
    ReadOnly(&'static str),
}

impl UnitOfWork {
    pub fn new(plugin: impl Into<String>, access: Access, store: Store) -> Self {
        Self {
            plugin: plugin.into(),
            access,
            store,
            writes: BTreeMap::new(),
            reads: BTreeMap::new(),
            events: Vec::new(),
        }
    }

    /// Reads a key: this unit's own write if there is one, else the committed value.
    ///
    /// # Errors
    /// Fails when the database cannot be read.
    pub async fn get(&mut self, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        if let Some(written) = self.writes.get(key) {
            return Ok(written.clone());
        }
        let (value, version) = self.store.read_state(&self.plugin, key).await?;
        // The first read decides: later reads of the same key must agree with it at commit.
        self.reads.entry(key.to_owned()).or_insert(version);
        Ok(value)
    }

    pub fn put(&mut self, key: String, value: Vec<u8>) -> Result<(), AccessError> {
        self.check_writable("put")?;
        self.writes.insert(key, Some(value));
        Ok(())
    }

    pub fn delete(&mut self, key: String) -> Result<(), AccessError> {
        self.check_writable("delete")?;
        self.writes.insert(key, None);
        Ok(())
    }

    pub fn emit(&mut self, event: EmittedEvent) -> Result<(), AccessError> {
        self.check_writable("emit")?;
        self.events.push(event);
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
