//! The PostgreSQL backend, for scale-out: several hosts on one database.
//!
//! The database named in the URL is created on first start. A batch runs in one READ
//! COMMITTED transaction: it first takes transaction-scoped advisory locks on every state key
//! and idempotency key it touches (in one sorted order, so two hosts never deadlock; a lock
//! holds a key that has no row yet, which a row lock cannot) and row locks on the deliveries
//! it finishes, then reads their current versions and statuses — facts that stay true until
//! it commits. Lists travel as arrays and are expanded with `UNNEST`, so a batch costs the
//! same handful of statements whatever its size. A commit that wrote something sends a
//! `NOTIFY`, which wakes the dispatchers of every host at once.

use super::batch::{self, Lookups, Plan, Snapshot};
use super::inspect::{self, DeadChange, ViewRow, delivery_filter, view_columns};
use super::leases::{Cluster, Partitions};
use super::queue::{self, DueRow, IdempotencyRow, Trim, due_query, like_pattern};
use super::runs::{self, FollowerRow, Head};
use super::{
    Applied, DeliveryDetail, DeliveryFilter, DeliveryStatus, DeliveryView, DueDelivery,
    IdempotencyRecord, StateVersion, Write, now_ms,
};
use crate::fault::{self, FaultPoint};
use anyhow::{Context, bail};
use sha2::{Digest, Sha256};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

mod batch_write;
#[cfg(test)]
mod scan_plan;
use batch_write::apply_once;

/// Connections per host: the committer's, handler reads, operators' queries, the listener.
const POOL_CONNECTIONS: u32 = 16;
/// Connections for the dispatcher's scans (one scan runs at a time; a flush may run beside it).
const SCAN_CONNECTIONS: u32 = 2;
/// The planner settings of the scan connections. The scan must walk the due deliveries along
/// `deliveries_ready_by_seq` and `deliveries_waiting` and stop at its limit, whatever the
/// statistics say: right after a burst of new deliveries (before autovacuum has analysed the
/// table) the planner believes only a handful are pending and instead reads every pending row
/// through a bitmap, checks each one's key, and sorts them — 18 ms a scan at 10 000 pending
/// against 0.2 ms for the walk, growing with the backlog. Neither of the first two settings
/// forbids a plan, they make the alternatives cost more than any walk. The one sort left (of
/// the few rows the two walks return) then costs more than the JIT threshold, and compiling
/// the scan for each run took longer than running it many times over: no JIT.
const SCAN_PLANNER: [(&str, &str); 3] = [
    ("enable_bitmapscan", "off"),
    ("enable_sort", "off"),
    ("jit", "off"),
];
/// How long to wait for a connection before a statement fails (the server is down or full).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// The channel every commit notifies and every host listens on.
const COMMIT_CHANNEL: &str = "handler_host_commits";
/// The first pause before listening again after the listener's connection failed; it doubles
/// up to [`LISTEN_RETRY_MAX`].
const LISTEN_RETRY_FIRST: Duration = Duration::from_secs(1);
const LISTEN_RETRY_MAX: Duration = Duration::from_secs(30);
/// Times a batch is run again when PostgreSQL aborts it to break a deadlock (with an
/// operator's `bus replay --all`, say) or a serialization failure.
const BATCH_RETRIES: usize = 3;
/// The server ends a session of this host that sits in an open transaction this long: the
/// host's transactions last milliseconds, so only a stuck or paused process gets there, and
/// the row locks it holds (a lease being checked, keys being written) must not outlive it, or
/// the partitions it lost could never be taken over.
const IDLE_IN_TRANSACTION_TIMEOUT: &str = "2s";

/// The dispatcher's scan: $1 now, $2 subscribers, $3 those that skip, $4 limit, $5 running
/// delivery ids, $6 partition count, $7 partitions held.
const DUE: &str = due_query!(
    "= ANY($2)",
    "= ANY($3)",
    "= ANY($5)",
    "mod(d.partition_hash, $6)",
    "AND mod(d.partition_hash, $6) = ANY($7)"
);

#[derive(Clone)]
pub(super) struct PgStore {
    pool: PgPool,
    /// The dispatcher's scans, with [`SCAN_PLANNER`].
    scans: PgPool,
    session: Arc<Session>,
}

/// This store's presence on the server: a connection of its own that holds a session advisory
/// lock for as long as the store is open. Another host that finds an idempotency claim of this
/// store's and no such lock knows this store's process has gone, and need not wait for the
/// claim to expire.
struct Session {
    id: String,
    lock: i64,
    conn: tokio::sync::Mutex<Option<PgConnection>>,
}

impl Session {
    async fn open(options: &PgConnectOptions) -> anyhow::Result<Self> {
        let id = uuid::Uuid::now_v7().to_string();
        let lock = lock_id("session", &[&id]);
        let mut conn = options.connect().await?;
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(lock)
            .execute(&mut conn)
            .await?;
        Ok(Self {
            id,
            lock,
            conn: tokio::sync::Mutex::new(Some(conn)),
        })
    }
}

impl PgStore {
    pub(super) async fn open(url: &str) -> anyhow::Result<Self> {
        let options = PgConnectOptions::from_str(url)
            .with_context(|| format!("invalid database URL `{}`", redact(url)))?;
        // One plain connection first: it fails at once with the real cause (refused, no such
        // role, …) where a pool would retry until its timeout and report only that.
        match options.connect().await {
            Ok(probe) => {
                let _ = probe.close().await;
            }
            Err(error) if is_missing_database(&error) => create_database(&options).await?,
            Err(error) => bail!("cannot connect to `{}`: {error}", redact(url)),
        }
        let pool = connect(&options, POOL_CONNECTIONS)
            .await
            .map_err(|error| anyhow::anyhow!("cannot connect to `{}`: {error}", redact(url)))?;
        let scans = connect(&options.clone().options(SCAN_PLANNER), SCAN_CONNECTIONS)
            .await
            .map_err(|error| anyhow::anyhow!("cannot connect to `{}`: {error}", redact(url)))?;
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .with_context(|| format!("cannot migrate database `{}`", redact(url)))?;
        let session = Session::open(&options)
            .await
            .map_err(|error| anyhow::anyhow!("cannot connect to `{}`: {error}", redact(url)))?;
        Ok(Self {
            pool,
            scans,
            session: Arc::new(session),
        })
    }

    pub(super) fn cluster(&self) -> Cluster {
        Cluster::new(self.pool.clone())
    }

    pub(super) async fn close(&self) {
        if let Some(conn) = self.session.conn.lock().await.take() {
            let _ = conn.close().await;
        }
        self.scans.close().await;
        self.pool.close().await;
    }

    queue::shared_queries!(pool, pool);

    pub(super) async fn read_state(
        &self,
        plugin: &str,
        key: &str,
    ) -> anyhow::Result<(Option<Vec<u8>>, StateVersion)> {
        let row: Option<(Option<Vec<u8>>, i64)> = sqlx::query_as(queue::READ_STATE)
            .bind(plugin)
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .with_context(|| format!("reading state of plugin `{plugin}`"))?;
        Ok(row.unwrap_or((None, 0)))
    }
    super::operators::operator_queries!(pool, pool);

    /// Wakes `wake` on every commit of any host, reconnecting (with backoff, logged once)
    /// when the connection drops, until the store is closed; the dispatcher's poll covers
    /// the gaps.
    pub(super) fn listen(&self, wake: Arc<Notify>) {
        let pool = self.pool.clone();
        tokio::spawn(async move {
            let mut pause = LISTEN_RETRY_FIRST;
            loop {
                let error = listen_until_error(&pool, &wake, &mut pause).await;
                if pool.is_closed() {
                    return; // the store was closed: the host is stopping
                }
                if pause == LISTEN_RETRY_FIRST {
                    tracing::warn!("not listening for commits, polling meanwhile: {error:#}");
                } else {
                    tracing::debug!("still not listening for commits: {error:#}");
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(LISTEN_RETRY_MAX);
            }
        });
    }

    pub(super) async fn apply_batch(&self, batch: &[Write]) -> anyhow::Result<Vec<Applied>> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .context("acquiring a connection")?;
        let mut attempt = 1;
        loop {
            match apply_once(&mut conn, batch).await {
                Err(error) if attempt < BATCH_RETRIES && is_transient(&error) => {
                    tracing::debug!("batch aborted by the database, running it again: {error:#}");
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    pub(super) async fn due_deliveries(
        &self,
        subscribers: &[String],
        skip: &[String],
        running: &[i64],
        partitions: &Partitions,
        limit: u32,
    ) -> anyhow::Result<Vec<DueDelivery>> {
        let rows: Vec<DueRow> = sqlx::query_as(DUE)
            .bind(now_ms())
            .bind(subscribers)
            .bind(skip)
            .bind(i64::from(limit))
            .bind(running)
            .bind(partitions.count)
            .bind(&partitions.held)
            .fetch_all(&self.scans)
            .await
            .context("scanning due deliveries")?;
        rows.into_iter().map(TryInto::try_into).collect()
    }

    pub(super) async fn followers(
        &self,
        heads: &[Head<'_>],
        most: i64,
    ) -> anyhow::Result<Vec<FollowerRow>> {
        let subscribers: Vec<&str> = heads.iter().map(|h| h.0).collect();
        let keys: Vec<&str> = heads.iter().map(|h| h.1).collect();
        let seqs: Vec<i64> = heads.iter().map(|h| h.2).collect();
        sqlx::query_as(runs::POSTGRES_FOLLOWERS)
            .bind(subscribers)
            .bind(keys)
            .bind(seqs)
            .bind(now_ms())
            .bind(most)
            .fetch_all(&self.pool)
            .await
            .context("reading the runs of due deliveries")
    }

    pub(super) async fn list_deliveries(
        &self,
        filter: &DeliveryFilter,
    ) -> anyhow::Result<Vec<DeliveryView>> {
        const LIST: &str = concat!(
            "SELECT ",
            view_columns!(),
            " FROM deliveries d JOIN messages m ON m.seq = d.message_seq WHERE ",
            delivery_filter!("LIKE"),
            " ORDER BY d.id LIMIT $5"
        );
        let kind = filter.kind.as_deref().map(like_pattern);
        let rows: Vec<ViewRow> = bind_filter(sqlx::query_as(LIST), filter, kind)
            .fetch_all(&self.pool)
            .await
            .context("listing deliveries")?;
        Ok(rows.into_iter().map(ViewRow::view).collect())
    }

    pub(super) async fn claim_idempotency_key(
        &self,
        key: &str,
        ttl_ms: i64,
    ) -> anyhow::Result<bool> {
        // A claim is taken over when it expired, is this store's own, or its owner's session
        // lock is gone (its process died). A session advisory lock on bigint k shows in
        // pg_locks as classid = the high 32 bits, objid = the low 32 bits, objsubid = 1.
        let claimed: Option<String> = sqlx::query_scalar(
            "INSERT INTO idempotency_claims (key, owner, owner_lock, expires_at_ms)
             VALUES ($1, $2, $3, server_now_ms() + $4)
             ON CONFLICT (key) DO UPDATE
               SET owner = EXCLUDED.owner, owner_lock = EXCLUDED.owner_lock,
                   expires_at_ms = EXCLUDED.expires_at_ms
               WHERE idempotency_claims.expires_at_ms <= server_now_ms()
                  OR idempotency_claims.owner = EXCLUDED.owner
                  OR NOT EXISTS (
                      SELECT 1 FROM pg_locks l
                      WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
                        AND l.classid::text::bigint = (idempotency_claims.owner_lock >> 32) & 4294967295
                        AND l.objid::text::bigint = idempotency_claims.owner_lock & 4294967295)
             RETURNING owner",
        )
        .bind(key)
        .bind(&self.session.id)
        .bind(self.session.lock)
        .bind(ttl_ms)
        .fetch_optional(&self.pool)
        .await
        .context("claiming an idempotency key")?;
        Ok(claimed.is_some())
    }

    pub(super) async fn release_idempotency_claim(&self, key: &str) -> anyhow::Result<()> {
        sqlx::query("DELETE FROM idempotency_claims WHERE key = $1 AND owner = $2")
            .bind(key)
            .bind(&self.session.id)
            .execute(&self.pool)
            .await
            .context("releasing an idempotency key")?;
        Ok(())
    }

    pub(super) async fn change_dead(
        &self,
        filter: &DeliveryFilter,
        dry_run: bool,
        change: DeadChange,
    ) -> anyhow::Result<Vec<i64>> {
        const SELECT: &str = concat!(
            "SELECT d.id FROM deliveries d JOIN messages m ON m.seq = d.message_seq WHERE ",
            delivery_filter!("LIKE"),
            " ORDER BY d.id LIMIT $5"
        );
        let filter = DeliveryFilter {
            status: Some(DeliveryStatus::Dead),
            ..filter.clone()
        };
        let kind = filter.kind.as_deref().map(like_pattern);
        let what = change.doing();
        let mut tx = self
            .pool
            .begin()
            .await
            .with_context(|| format!("{what} dead letters"))?;
        let ids: Vec<(i64,)> = bind_filter(sqlx::query_as(SELECT), &filter, kind)
            .fetch_all(&mut *tx)
            .await
            .with_context(|| format!("selecting dead letters for {what}"))?;
        let ids: Vec<i64> = ids.into_iter().map(|(id,)| id).collect();
        if dry_run {
            return Ok(ids);
        }
        let statement = match change {
            DeadChange::Replay => sqlx::query(
                "UPDATE deliveries SET status = 'pending', attempts = 0, waiting = 0, next_attempt_at_ms = $2
                 WHERE status = 'dead' AND id = ANY($1)",
            )
            .bind(&ids)
            .bind(now_ms()),
            DeadChange::Purge => {
                sqlx::query("DELETE FROM deliveries WHERE status = 'dead' AND id = ANY($1)")
                    .bind(&ids)
            }
        };
        statement
            .execute(&mut *tx)
            .await
            .with_context(|| format!("{what} dead letters"))?;
        tx.commit()
            .await
            .with_context(|| format!("{what} dead letters"))?;
        Ok(ids)
    }
}

/// Listens on [`COMMIT_CHANNEL`] and wakes `wake` for each notification until the connection
/// fails; once listening, the retry `pause` starts again from the first.
async fn listen_until_error(pool: &PgPool, wake: &Notify, pause: &mut Duration) -> anyhow::Error {
    let mut listener = match PgListener::connect_with(pool).await {
        Ok(listener) => listener,
        Err(error) => return error.into(),
    };
    if let Err(error) = listener.listen(COMMIT_CHANNEL).await {
        return error.into();
    }
    tracing::debug!("listening for commits");
    *pause = LISTEN_RETRY_FIRST;
    // Commits made while not listening are found by this first look.
    wake.notify_one();
    loop {
        // `None`: the connection dropped and notifications may have been missed; the next
        // call reconnects.
        if let Err(error) = listener.try_recv().await {
            return error.into();
        }
        wake.notify_one();
    }
}

/// Drops the database `url` names, closing whatever is still connected.
pub(super) async fn drop_database(url: &str) -> anyhow::Result<()> {
    let options = PgConnectOptions::from_str(url)?;
    let name = options
        .get_database()
        .context("the URL names no database")?
        .to_owned();
    let mut admin = options.database("postgres").connect().await?;
    sqlx::query(&format!(
        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
        quote_ident(&name)
    ))
    .execute(&mut admin)
    .await?;
    admin.close().await?;
    Ok(())
}

async fn connect(options: &PgConnectOptions, connections: u32) -> Result<PgPool, sqlx::Error> {
    let options = options.clone().options([(
        "idle_in_transaction_session_timeout",
        IDLE_IN_TRANSACTION_TIMEOUT,
    )]);
    PgPoolOptions::new()
        .max_connections(connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await
}

fn is_missing_database(error: &sqlx::Error) -> bool {
    // 3D000 invalid_catalog_name: "database … does not exist".
    error
        .as_database_error()
        .is_some_and(|e| e.code().as_deref() == Some("3D000"))
}

/// Creates the database `options` names, through the server's `postgres` database.
async fn create_database(options: &PgConnectOptions) -> anyhow::Result<()> {
    let Some(name) = options.get_database() else {
        bail!("the database URL names no database");
    };
    let mut admin = options
        .clone()
        .database("postgres")
        .connect()
        .await
        .context("connecting to the server's `postgres` database to create the database")?;
    let created = sqlx::query(&format!("CREATE DATABASE {}", quote_ident(name)))
        .execute(&mut admin)
        .await;
    match created {
        Ok(_) => tracing::info!(database = name, "created the PostgreSQL database"),
        // 42P04 duplicate_database: another host created it first.
        Err(error)
            if error
                .as_database_error()
                .is_some_and(|e| e.code().as_deref() == Some("42P04")) => {}
        Err(error) => {
            return Err(error).with_context(|| format!("cannot create database `{name}`"));
        }
    }
    let _ = admin.close().await;
    Ok(())
}

/// `name` as a quoted SQL identifier.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `url` without its password, for messages.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

/// Deadlock (40P01) and serialization failure (40001): the batch can simply run again.
fn is_transient(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<sqlx::Error>()
            .and_then(sqlx::Error::as_database_error)
            .is_some_and(|e| matches!(e.code().as_deref(), Some("40P01" | "40001")))
    })
}

/// Binds a [`DeliveryFilter`] to $1–$5 of [`delivery_filter`] and its `LIMIT $5`, with the
/// kind already turned into a LIKE pattern.
fn bind_filter<'q, O>(
    query: sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
    filter: &'q DeliveryFilter,
    kind: Option<String>,
) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
    query
        .bind(filter.status.map(DeliveryStatus::as_str))
        .bind(&filter.subscriber)
        .bind(kind)
        .bind(&filter.error_class)
        .bind(filter.limit.map(i64::from))
}

/// A stable 64-bit lock id for a key in a namespace (the same in every host build).
fn lock_id(namespace: &str, parts: &[&str]) -> i64 {
    let mut hash = Sha256::new();
    hash.update(namespace);
    for part in parts {
        hash.update([0]);
        hash.update(part);
    }
    let digest = hash.finalize();
    i64::from_be_bytes(
        digest[..8]
            .try_into()
            .expect("a SHA-256 digest has 8 bytes"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::postgres_server;

    #[tokio::test]
    async fn a_session_stuck_in_a_transaction_is_ended_by_the_server() {
        let options = PgConnectOptions::from_str(&format!("{}/postgres", postgres_server()))
            .unwrap_or_else(|e| panic!("the PostgreSQL test server's URL: {e}"));
        let pool = connect(&options, 1).await.unwrap_or_else(|e| {
            panic!("these tests need PostgreSQL at {}: {e}", postgres_server())
        });
        let timeout: String =
            sqlx::query_scalar("SELECT current_setting('idle_in_transaction_session_timeout')")
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(timeout, IDLE_IN_TRANSACTION_TIMEOUT);
        pool.close().await;
    }
}
