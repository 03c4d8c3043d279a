//! The database: one interface, two backends chosen by the URL.
//!
//! - `sqlite://FILE` (`sqlite.rs`): the embedded default, one file in WAL mode with
//!   `synchronous = FULL`. One process writes at a time (`BEGIN IMMEDIATE`).
//! - `postgres://…` (`postgres.rs`): for scale-out. The database is created on first start;
//!   commits wake other processes through `LISTEN/NOTIFY`.
//!
//! Both run the same schema (each with its own migrations) and the same semantics, and the
//! same conformance suite (`conformance`) runs against both. Every write of the running host
//! goes through the single writer in [`crate::committer`], which calls [`Store::apply_batch`];
//! a batch costs a fixed number of statements whatever its size (`batch.rs`).

mod batch;
mod health;
mod inspect;
mod leases;
mod postgres;
mod queue;
mod sqlite;
mod trace;
mod write;

#[cfg(test)]
mod conformance;

pub use health::{DatabaseHealth, DatabaseStatus};
pub use inspect::BusStats;
pub(crate) use inspect::{
    DeliveryDetail, DeliveryFilter, DeliveryMetrics, DeliveryView, SubscriberBacklog,
};
pub(crate) use leases::{Beat, Cluster, ClusterView, HostIdentity, Partitions};
pub use queue::{DeliveryStatus, DueDelivery, MessageCause};
pub(crate) use trace::{TracedDelivery, TracedMessage};
pub use write::{
    Applied, DeliveryFate, FirstOutcome, IdempotencyRecord, OutboxEvent, StateChanges, Write,
};

use anyhow::bail;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;

/// Version of a state key: 0 when the key has never existed, incremented by every write.
pub type StateVersion = i64;

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
    backend: Backend,
    health: Arc<DatabaseHealth>,
    due_tally: Arc<due::DueTally>,
}

#[derive(Clone)]
enum Backend {
    Sqlite(sqlite::SqliteStore),
    Postgres(postgres::PgStore),
}

/// Runs the same call on whichever backend `$store` holds.
macro_rules! on_backend {
    ($store:expr, $backend:ident => $call:expr) => {
        match &$store.backend {
            Backend::Sqlite($backend) => $call,
            Backend::Postgres($backend) => $call,
        }
    };
}

// Declared after `on_backend!`, which they use.
mod due;
mod operators;
mod runs;
pub use operators::{BusHealth, MetricsReport, RunningHost};

impl Store {
    /// Opens the database at `url` (`sqlite://FILE` or `postgres://…`), creating it when it
    /// does not exist, and brings its schema up to date.
    ///
    /// # Errors
    /// Fails with one line naming the URL and the cause when the scheme is unknown, the
    /// file or server cannot be reached, or a migration fails.
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite(sqlite::SqliteStore::open(url).await?)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres(postgres::PgStore::open(url).await?)
        } else {
            bail!(
                "unsupported database URL `{url}`: use `sqlite://FILE` (embedded) or `postgres://USER@HOST:PORT/DATABASE`"
            );
        };
        Ok(Self {
            backend,
            health: Arc::default(),
            due_tally: Arc::default(),
        })
    }

    /// Whether the database works, from the outcomes of commits and dispatcher scans.
    pub fn health(&self) -> &DatabaseHealth {
        &self.health
    }

    /// The partitions and their leases, through which several hosts share the database
    /// (PostgreSQL); `None` for SQLite, which one host serves alone.
    pub(crate) fn cluster(&self) -> Option<Cluster> {
        match &self.backend {
            Backend::Sqlite(_) => None,
            Backend::Postgres(pg) => Some(pg.cluster()),
        }
    }

    /// Wakes `wake` whenever another process commits (PostgreSQL `LISTEN`); returns at once
    /// for SQLite, where the dispatcher's poll picks up other processes' writes.
    pub fn notify_on_commit(&self, wake: Arc<Notify>) {
        if let Backend::Postgres(pg) = &self.backend {
            pg.listen(wake);
        }
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
        on_backend!(self, b => b.read_state(plugin, key).await)
    }

    /// The stored outcome of an idempotency key, if it has not expired.
    ///
    /// # Errors
    /// Fails when the database cannot be read.
    pub async fn idempotency_record(&self, key: &str) -> anyhow::Result<Option<IdempotencyRecord>> {
        on_backend!(self, b => b.idempotency_record(key).await)
    }

    /// Claims idempotency key `key` for this store for `ttl`, unless another process runs
    /// that key now: true when this store may run it. On PostgreSQL, where several hosts may
    /// be sent one key at once, the others wait for the outcome instead of running the handler
    /// too; a claim ends early when its owner's process dies. SQLite has one host, whose
    /// executor serializes its keys itself.
    ///
    /// # Errors
    /// Fails when the database cannot be written.
    pub async fn claim_idempotency_key(&self, key: &str, ttl: Duration) -> anyhow::Result<bool> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(true),
            Backend::Postgres(pg) => {
                let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
                pg.claim_idempotency_key(key, ttl_ms).await
            }
        }
    }

    /// Ends this store's claim of `key` (see [`Store::claim_idempotency_key`]).
    ///
    /// # Errors
    /// Fails when the database cannot be written; the claim then expires on its own.
    pub async fn release_idempotency_claim(&self, key: &str) -> anyhow::Result<()> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(()),
            Backend::Postgres(pg) => pg.release_idempotency_claim(key).await,
        }
    }

    /// Applies `batch` in one transaction and returns one result per item, in order (see
    /// `batch.rs` for what each item checks).
    ///
    /// # Errors
    /// Fails, committing nothing, when the database itself fails.
    pub async fn apply_batch(&self, batch: &[Write]) -> anyhow::Result<Vec<Applied>> {
        let now = now_ms();
        let expected = self.due_tally.expect(batch, now);
        let applied = on_backend!(self, b => b.apply_batch(batch).await);
        self.due_tally.settle(batch, now, expected, &applied);
        self.health.record(health::Operation::Commit, &applied);
        applied
    }

    /// Pending deliveries that are due, for loaded `subscribers`, in per-key order: under
    /// strict ordering a pending retry or a dead letter holds back the later messages of its
    /// key until it is done, replayed or purged; for the subscribers in `skip` a delivery
    /// that failed is parked and the key moves on. Oldest first, leaving out the deliveries
    /// in `running` (which still hold back the later messages of their keys). On PostgreSQL
    /// only deliveries of the `partitions` held are due; SQLite has no partitions.
    ///
    /// # Errors
    /// Fails when the database cannot be read, or on PostgreSQL without `partitions`.
    pub(crate) async fn due_deliveries(
        &self,
        subscribers: &[String],
        skip: &[String],
        running: &[i64],
        partitions: Option<&Partitions>,
        limit: u32,
    ) -> anyhow::Result<Vec<DueDelivery>> {
        let due = match &self.backend {
            Backend::Sqlite(b) => b.due_deliveries(subscribers, skip, running, limit).await,
            Backend::Postgres(b) => match partitions {
                Some(partitions) => {
                    b.due_deliveries(subscribers, skip, running, partitions, limit)
                        .await
                }
                None => Err(anyhow::anyhow!(
                    "PostgreSQL deliveries are claimed by partition, and none was given"
                )),
            },
        };
        self.health.record(health::Operation::Scan, &due);
        due
    }

    /// Commits one tiny write, recorded in the health as a commit: after commits failed, it
    /// tells whether they work again when no other write is waiting to.
    ///
    /// # Errors
    /// Fails when the write does not commit.
    pub async fn probe_commit(&self) -> anyhow::Result<()> {
        let probed = on_backend!(self, b => b.probe_commit().await);
        self.health.record(health::Operation::Commit, &probed);
        probed
    }

    /// The earliest time after now at which a pending delivery (a retry) becomes due.
    ///
    /// # Errors
    /// Fails when the database cannot be read.
    pub async fn next_retry_at_ms(&self) -> anyhow::Result<Option<i64>> {
        on_backend!(self, b => b.next_retry_at_ms().await)
    }

    /// The dead letter `id` as the dispatcher would run it; `None` when there is no dead
    /// delivery with that id.
    ///
    /// # Errors
    /// Fails when the database cannot be read.
    pub async fn dead_letter(&self, id: i64) -> anyhow::Result<Option<DueDelivery>> {
        on_backend!(self, b => b.dead_letter(id).await)
    }

    /// Kind, emitter and cause of the stored message `message_id`; `None` when there is no
    /// such message (a command's id: commands start chains and are not stored as messages).
    ///
    /// # Errors
    /// Fails when the database cannot be read.
    pub async fn message_cause(&self, message_id: &str) -> anyhow::Result<Option<MessageCause>> {
        on_backend!(self, b => b.message_cause(message_id).await)
    }

    /// How many deliveries wait for `subscriber` (pending, due or not).
    ///
    /// # Errors
    /// Fails when the database cannot be read.
    pub async fn pending_count(&self, subscriber: &str) -> anyhow::Result<i64> {
        on_backend!(self, b => b.pending_count(subscriber).await)
    }

    /// Deliveries matching `filter`, oldest first.
    ///
    /// # Errors
    /// Fails when the database cannot be read.
    pub(crate) async fn list_deliveries(
        &self,
        filter: &DeliveryFilter,
    ) -> anyhow::Result<Vec<DeliveryView>> {
        on_backend!(self, b => b.list_deliveries(filter).await)
    }

    /// One delivery with its message's whole envelope; `None` when there is no such id.
    ///
    /// # Errors
    /// Fails when the database cannot be read.
    pub(crate) async fn delivery(&self, id: i64) -> anyhow::Result<Option<DeliveryDetail>> {
        on_backend!(self, b => b.delivery(id).await)
    }

    /// Puts a dead delivery back in the queue with its attempts reset, due now. Returns false
    /// when there is no dead delivery with this id. Its error history (class, last error,
    /// first and last failure) is kept until it succeeds or fails again.
    ///
    /// # Errors
    /// Fails when the database cannot be written.
    pub async fn replay(&self, delivery_id: i64) -> anyhow::Result<bool> {
        on_backend!(self, b => b.replay(delivery_id, inspect::REPLAY_ONE).await)
    }

    /// Puts a delivery back in the queue whatever its status, attempts reset, due now: a done
    /// one runs again (its handler's effects apply again), a pending one runs now. Returns
    /// false when there is no delivery with this id (retention deletes done ones).
    ///
    /// # Errors
    /// Fails when the database cannot be written.
    pub async fn replay_forced(&self, delivery_id: i64) -> anyhow::Result<bool> {
        on_backend!(self, b => b.replay(delivery_id, inspect::REPLAY_FORCED).await)
    }

    /// Replays every dead delivery matching `filter` (its status is ignored: only dead ones
    /// are replayed), in one transaction, and returns their ids. With `dry_run`, only
    /// returns the ids.
    ///
    /// # Errors
    /// Fails when the database cannot be read or written.
    pub(crate) async fn replay_matching(
        &self,
        filter: &DeliveryFilter,
        dry_run: bool,
    ) -> anyhow::Result<Vec<i64>> {
        on_backend!(self, b => b.change_dead(filter, dry_run, inspect::DeadChange::Replay).await)
    }

    /// Deletes every dead delivery matching `filter` (its status is ignored: only dead ones
    /// are purged) and returns their ids; with `dry_run`, only returns the ids. A purged
    /// letter no longer holds back its key. The message stays until retention removes it.
    ///
    /// # Errors
    /// Fails when the database cannot be read or written.
    pub(crate) async fn purge_matching(
        &self,
        filter: &DeliveryFilter,
        dry_run: bool,
    ) -> anyhow::Result<Vec<i64>> {
        on_backend!(self, b => b.change_dead(filter, dry_run, inspect::DeadChange::Purge).await)
    }

    /// Counts by status, and the failed unfinished deliveries by error class.
    ///
    /// # Errors
    /// Fails when the database cannot be read.
    pub async fn stats(&self) -> anyhow::Result<BusStats> {
        let (by_status, by_class) = on_backend!(self, b => b.stats_rows().await)?;
        Ok(BusStats::from_rows(by_status, by_class))
    }

    /// The messages of `correlation_id` in commit order (at most `limit`), each with its
    /// deliveries: one request's causal tree, flat.
    ///
    /// # Errors
    /// Fails when the database cannot be read.
    pub(crate) async fn trace(
        &self,
        correlation_id: &str,
        limit: u32,
    ) -> anyhow::Result<Vec<TracedMessage>> {
        let rows = on_backend!(self, b => b.trace_rows(correlation_id, limit).await)?;
        Ok(trace::messages(rows))
    }

    /// The correlation id of the message `message_id`, if it is stored.
    ///
    /// # Errors
    /// Fails when the database cannot be read.
    pub async fn correlation_of(&self, message_id: &str) -> anyhow::Result<Option<String>> {
        on_backend!(self, b => b.correlation_of(message_id).await)
    }

    /// How the deliveries of messages that occurred at or after `since_ms` fared, by
    /// subscriber and kind: counts by status, the share whose first attempt failed, and the
    /// latency percentiles of the done ones. Done deliveries older than the retention are gone.
    ///
    /// # Errors
    /// Fails when the database cannot be read.
    pub(crate) async fn delivery_metrics(
        &self,
        since_ms: i64,
    ) -> anyhow::Result<Vec<DeliveryMetrics>> {
        let rows = on_backend!(self, b => b.outcome_rows(since_ms).await)?;
        Ok(DeliveryMetrics::from_rows(rows))
    }

    /// Each subscriber's unfinished deliveries (pending, scheduled, oldest, dead by class),
    /// by subscriber name; subscribers with none are absent.
    ///
    /// # Errors
    /// Fails when the database cannot be read.
    pub(crate) async fn backlog(&self) -> anyhow::Result<Vec<SubscriberBacklog>> {
        let rows = on_backend!(self, b => b.backlog_rows(now_ms()).await)?;
        Ok(SubscriberBacklog::from_rows(rows))
    }

    /// Deletes up to `batch` idempotency records that expired at or before `now_ms`.
    /// Returns how many were deleted.
    ///
    /// # Errors
    /// Fails when the database cannot be written.
    pub async fn delete_expired_idempotency(&self, now_ms: i64, batch: u32) -> anyhow::Result<u64> {
        self.delete_batch(queue::Trim::ExpiredIdempotency, now_ms, batch)
            .await
    }

    /// Deletes up to `batch` `done` deliveries completed before `before_ms`. Done rows hold
    /// nothing back (ordering looks at unfinished ones only), so this never changes what is
    /// delivered next.
    ///
    /// # Errors
    /// Fails when the database cannot be written.
    pub async fn delete_done_deliveries(&self, before_ms: i64, batch: u32) -> anyhow::Result<u64> {
        self.delete_batch(queue::Trim::DoneDeliveries, before_ms, batch)
            .await
    }

    /// Deletes up to `batch` messages that occurred before `before_ms` and have no delivery
    /// left (all were done and deleted, purged, or there never was a subscriber).
    ///
    /// # Errors
    /// Fails when the database cannot be written.
    pub async fn delete_finished_messages(
        &self,
        before_ms: i64,
        batch: u32,
    ) -> anyhow::Result<u64> {
        self.delete_batch(queue::Trim::FinishedMessages, before_ms, batch)
            .await
    }

    async fn delete_batch(
        &self,
        trim: queue::Trim,
        bound_ms: i64,
        batch: u32,
    ) -> anyhow::Result<u64> {
        on_backend!(self, b => b.delete_batch(trim, bound_ms, batch).await)
    }

    /// Drops the PostgreSQL database `url` names, closing whatever is still connected to it
    /// (benchmark and test clean-up).
    ///
    /// # Errors
    /// Fails when the server cannot be reached or refuses.
    pub async fn drop_postgres_database(url: &str) -> anyhow::Result<()> {
        postgres::drop_database(url).await
    }

    /// Closes every connection (a clean SQLite shutdown folds its WAL back into the file).
    pub async fn close(&self) {
        on_backend!(self, b => b.close().await)
    }
}

/// Fixtures shared by the store's and the maintenance task's unit tests.
#[cfg(test)]
pub(crate) mod test_support {
    use super::{OutboxEvent, Partitions, Store, now_ms};

    /// All deliveries as one partition: what a lone host claims from on PostgreSQL.
    pub fn every_partition() -> Partitions {
        Partitions::all()
    }

    /// The server the PostgreSQL tests create their databases on.
    pub fn postgres_server() -> String {
        std::env::var("HOST_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
    }

    /// A fresh database on one backend, dropped (PostgreSQL) or deleted (SQLite) with it.
    pub struct TestDb {
        pub store: Store,
        _dir: Option<tempfile::TempDir>,
        pg_name: Option<String>,
    }

    impl TestDb {
        /// A SQLite file in a temporary directory.
        pub async fn sqlite() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}", dir.path().join("t.db").display());
            let store = Store::open(&url).await.unwrap();
            Self {
                store,
                _dir: Some(dir),
                pg_name: None,
            }
        }

        /// The PostgreSQL database's name.
        pub fn name(&self) -> &str {
            self.pg_name.as_deref().expect("a PostgreSQL test database")
        }

        /// A new database on the test PostgreSQL server. Panics, naming the server, when it
        /// cannot be reached: these tests never pass without PostgreSQL.
        pub async fn postgres() -> Self {
            let name = format!("hh_unit_{}", uuid::Uuid::now_v7().simple());
            let url = format!("{}/{name}", postgres_server());
            let store = Store::open(&url).await.unwrap_or_else(|e| {
                panic!(
                    "the PostgreSQL tests need a server at {} (set HOST_TEST_POSTGRES_URL to use another): {e:#}",
                    postgres_server()
                )
            });
            Self {
                store,
                _dir: None,
                pg_name: Some(name),
            }
        }
    }

    impl Drop for TestDb {
        fn drop(&mut self) {
            let Some(name) = self.pg_name.take() else {
                return;
            };
            let store = self.store.clone();
            // Drop cannot await; a thread with its own runtime closes the pool and drops the
            // database so test runs leave nothing behind on the server.
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async move {
                    store.close().await;
                    Store::drop_postgres_database(&format!("{}/{name}", postgres_server()))
                        .await
                        .unwrap();
                });
            })
            .join()
            .unwrap();
        }
    }

    /// Runs each named `async fn(&Store)` as a test on SQLite and on PostgreSQL.
    macro_rules! on_every_backend {
        ($($test:ident),* $(,)?) => {
            mod sqlite {
                $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let db = $crate::store::test_support::TestDb::sqlite().await;
                    super::$test(&db.store).await;
                })*
            }
            mod postgres {
                $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let db = $crate::store::test_support::TestDb::postgres().await;
                    super::$test(&db.store).await;
                })*
            }
        };
    }
    pub(crate) use on_every_backend;

    /// The record of a command `c` that answered 200 `{}` under idempotency `key`, expiring
    /// at `expires_at_ms`.
    pub fn idempotency_record(key: &str, expires_at_ms: i64) -> super::IdempotencyRecord {
        super::IdempotencyRecord {
            key: key.into(),
            command_kind: "c".into(),
            request_hash: "h".into(),
            outcome: super::FirstOutcome::Succeeded(b"{}".to_vec()),
            created_at_ms: now_ms(),
            expires_at_ms,
        }
    }

    /// An event of `kind` with partition key `key`, addressed to `subscribers`.
    pub fn event(kind: &str, key: &str, subscribers: &[&str]) -> OutboxEvent {
        OutboxEvent {
            message: crate::message::Message {
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
                depth: 1,
            },
            emitted_by: "p".into(),
            subscribers: subscribers.iter().map(|s| s.to_string()).collect(),
            deliver_at_ms: None,
        }
    }
}
