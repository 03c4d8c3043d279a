//! Handler reads of state on SQLite, answered on the calling thread.
//!
//! sqlx runs each SQLite connection on a worker thread of its own, so every statement is two
//! hops between threads and a wake-up of each; a handler's `get` of one key is a lookup of a
//! few microseconds in the primary key, and the hops cost several times that. These reads go
//! through plain SQLite connections (the library sqlx links) held in a small pool and used
//! synchronously: a read-only connection in WAL mode never waits for the writer, so a read
//! does not block the runtime thread for longer than the lookup itself.

use super::super::StateVersion;
use super::super::queue::READ_STATE;
use anyhow::Context;
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

/// Connections kept between reads: one per thread that reads at once (the runtime's workers),
/// and a few more. One opened beyond them is closed after its read.
const KEPT_CONNECTIONS: usize = 8;

/// Read-only connections to one database file, opened on demand.
pub(in crate::store) struct StateReads {
    path: PathBuf,
    busy_timeout: Duration,
    idle: Mutex<Vec<Connection>>,
}

impl StateReads {
    /// Reads of the database at `path`, each waiting up to `busy_timeout` for a lock (only
    /// while the file is being recovered: WAL readers otherwise take none).
    pub(in crate::store) fn new(path: PathBuf, busy_timeout: Duration) -> Self {
        Self {
            path,
            busy_timeout,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// The committed value of `plugin`'s `key` (None when absent or deleted) and its version
    /// (0 when absent).
    ///
    /// # Errors
    /// The file cannot be opened or read.
    pub(in crate::store) fn read_state(
        &self,
        plugin: &str,
        key: &str,
    ) -> anyhow::Result<(Option<Vec<u8>>, StateVersion)> {
        let taken = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let conn = match taken {
            Some(conn) => conn,
            None => self.open()?,
        };
        let row = conn
            .prepare_cached(READ_STATE)
            .and_then(|mut statement| {
                statement
                    .query_row((plugin, key), |row| Ok((row.get(0)?, row.get(1)?)))
                    .optional()
            })
            .with_context(|| format!("reading state of plugin `{plugin}`"));
        // A connection that failed is dropped rather than kept: the next read opens afresh.
        if row.is_ok() {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() < KEPT_CONNECTIONS {
                idle.push(conn);
            }
        }
        Ok(row?.unwrap_or((None, 0)))
    }

    /// Closes the connections kept between reads (the file's last connection to close folds
    /// the WAL back into it, so none may stay open past the store's own close).
    pub(in crate::store) fn close(&self) {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    fn open(&self) -> anyhow::Result<Connection> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&self.path, flags)
            .with_context(|| format!("opening `{}` for reading", self.path.display()))?;
        conn.busy_timeout(self.busy_timeout)
            .context("setting the busy timeout")?;
        Ok(conn)
    }
}
