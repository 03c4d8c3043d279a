//! The database: schema, reads, and the operations behind the bus commands.
//!
//! SQLite (WAL, `synchronous = FULL`) is the embedded default. Reads go through a pool and
//! see committed data only; every write of the running host goes through the single writer
//! in [`crate::committer`], which calls [`Store::apply_batch`].

mod apply;
mod bus;
mod retention;

pub use apply::{Applied, DeliveryFate, IdempotencyRecord, OutboxEvent, StateChanges, Write};
pub use bus::{
    BusStats, DeliveryDetail, DeliveryFilter, DeliveryStatus, DeliveryView, DueDelivery,
};

use anyhow::{Context, bail};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Version of a state key: 0 when the key has never existed, incremented by every write.
pub type StateVersion = i64;

/// Readers in the pool. Handlers read state concurrently; WAL lets them run beside the writer.
const READ_CONNECTIONS: u32 = 8;
/// How long a statement waits for another process's write lock (e.g. `host bus replay` while
/// the host runs) before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Milliseconds since the Unix epoch, the one time unit stored in the database.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A handle on the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    read: SqlitePool,
    write: SqlitePool,
}

impl Store {
    /// Opens (creating if needed) the database at `url` and brings its schema up to date.
    ///
    /// # Errors
    /// Fails when the URL is not a SQLite URL, the file cannot be opened, or a migration fails.
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        if !url.starts_with("sqlite:") {
            bail!(
                "unsupported database URL `{url}`: only SQLite (`sqlite://FILE`) is supported by this build"
            );
        }
        let options = SqliteConnectOptions::from_str(url)
            .with_context(|| format!("invalid database URL `{url}`"))?
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        // One writer connection: SQLite has one writer anyway, and the committer batches.
        let write_options = options
            .clone()
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full);
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(write_options)
            .await
            .with_context(|| format!("cannot open database `{url}`"))?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&write)
            .await
            .with_context(|| format!("cannot migrate database `{url}`"))?;
        let read = SqlitePoolOptions::new()
            .max_connections(READ_CONNECTIONS)
            .connect_with(options.read_only(true))
            .await
            .with_context(|| format!("cannot open database `{url}` for reading"))?;
        Ok(Self { read, write })
    }

    /// The committed value of `plugin`'s `key` (None when absent or deleted) and its version.
    ///
    /// # Errors
    /// Fails when the database cannot be read.
    pub async fn read_state(
        &self,
        plugin: &str,
        key: &str,
    ) -> anyhow::Result<(Option<Vec<u8>>, StateVersion)> {
        let row = sqlx::query("SELECT value, version FROM state WHERE plugin = ? AND key = ?")
            .bind(plugin)
            .bind(key)
            .fetch_optional(&self.read)
            .await
            .with_context(|| format!("reading state of plugin `{plugin}`"))?;
        Ok(match row {
            Some(row) => (row.get("value"), row.get("version")),
            None => (None, 0),
        })
    }

    /// The stored outcome of an idempotency key, if it has not expired.
    ///
    /// # Errors
    /// Fails when the database cannot be read.
    pub async fn idempotency_record(&self, key: &str) -> anyhow::Result<Option<IdempotencyRecord>> {
        let row = sqlx::query(
            "SELECT key, command_kind, request_hash, status, body, created_at_ms, expires_at_ms
             FROM idempotency WHERE key = ? AND expires_at_ms > ?",
        )
        .bind(key)
        .bind(now_ms())
        .fetch_optional(&self.read)
        .await
        .context("reading idempotency record")?;
        Ok(row.map(|row| IdempotencyRecord {
            key: row.get("key"),
            command_kind: row.get("command_kind"),
            request_hash: row.get("request_hash"),
            status: row.get::<i64, _>("status") as u16,
            body: row.get("body"),
            created_at_ms: row.get("created_at_ms"),
            expires_at_ms: row.get("expires_at_ms"),
        }))
    }

    pub(crate) fn reader(&self) -> &SqlitePool {
        &self.read
    }

    pub(crate) fn writer(&self) -> &SqlitePool {
        &self.write
    }
}

/// Fixtures shared by the store's and the maintenance task's unit tests.
#[cfg(test)]
pub(crate) mod test_support {
    use super::{OutboxEvent, Store, now_ms};

    /// A fresh database in a temporary directory (kept alive by the returned guard).
    pub async fn temp_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = Store::open(&url).await.unwrap();
        (dir, store)
    }

    /// An event of `kind` with partition key `key`, addressed to `subscribers`.
    pub fn event(kind: &str, key: &str, subscribers: &[&str]) -> OutboxEvent {
        OutboxEvent {
            id: uuid::Uuid::now_v7().to_string(),
            kind: kind.into(),
            partition_key: Some(key.into()),
            tenant_id: None,
            correlation_id: "c".into(),
            causation_id: None,
            actor: None,
            schema_version: 1,
            occurred_at_ms: now_ms(),
            headers: vec![("h".into(), "v".into())],
            payload: b"{}".to_vec(),
            emitted_by: "p".into(),
            subscribers: subscribers.iter().map(|s| s.to_string()).collect(),
        }
    }
}
