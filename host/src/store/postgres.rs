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
use super::bus::{self, DueRow, IdempotencyRow, Trim, due_query, like_pattern};
use super::inspect::{self, DeadChange, ViewRow, delivery_filter, view_columns};
use super::leases::{Cluster, Partitions};
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

/// Connections per host: the committer's, the dispatcher's scans, handler reads, the listener.
const POOL_CONNECTIONS: u32 = 16;
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

#[derive(Clone)]
pub(super) struct PgStore {
    pool: PgPool,
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
        let pool = connect(&options)
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
        self.pool.close().await;
    }

    bus::shared_queries!(pool, pool);
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
        const DUE: &str = due_query!(
            "= ANY($2)",
            "= ANY($3)",
            "= ANY($5)",
            "mod(d.partition_hash, $6)",
            "AND mod(d.partition_hash, $6) = ANY($7)"
        );
        let rows: Vec<DueRow> = sqlx::query_as(DUE)
            .bind(now_ms())
            .bind(subscribers)
            .bind(skip)
            .bind(i64::from(limit))
            .bind(running)
            .bind(partitions.count)
            .bind(&partitions.held)
            .fetch_all(&self.pool)
            .await
            .context("scanning due deliveries")?;
        rows.into_iter().map(TryInto::try_into).collect()
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
                "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at_ms = $2
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

async fn connect(options: &PgConnectOptions) -> Result<PgPool, sqlx::Error> {
    let options = options.clone().options([(
        "idle_in_transaction_session_timeout",
        IDLE_IN_TRANSACTION_TIMEOUT,
    )]);
    PgPoolOptions::new()
        .max_connections(POOL_CONNECTIONS)
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

async fn apply_once(conn: &mut PgConnection, batch: &[Write]) -> anyhow::Result<Vec<Applied>> {
    let mut tx = conn.begin().await.context("BEGIN")?;
    let now = now_ms();
    let lookups = Lookups::of(batch);
    let snapshot = lock_and_read(&mut tx, &lookups, now).await?;
    let plan = batch::plan(batch, snapshot, now);
    write_plan(&mut tx, &plan, now).await?;
    if plan.commits_anything() {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(COMMIT_CHANNEL)
            .execute(&mut *tx)
            .await
            .context("NOTIFY")?;
    }
    fault::hit(FaultPoint::BeforeCommit);
    tx.commit().await.context("COMMIT")?;
    fault::hit(FaultPoint::AfterCommit);
    Ok(plan.results)
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

/// Locks what `lookups` names and reads it, one statement per list.
async fn lock_and_read(
    conn: &mut PgConnection,
    lookups: &Lookups<'_>,
    now: i64,
) -> anyhow::Result<Snapshot> {
    let mut locks: Vec<i64> = lookups
        .state_keys
        .iter()
        .map(|(plugin, key)| lock_id("state", &[plugin, key]))
        .chain(
            lookups
                .idempotency_keys
                .iter()
                .map(|key| lock_id("idempotency", &[key])),
        )
        .collect();
    locks.sort_unstable();
    locks.dedup();
    if !locks.is_empty() {
        // Taken in array order, which is sorted: every host locks in the same order.
        sqlx::query("SELECT pg_advisory_xact_lock(id) FROM UNNEST($1::bigint[]) AS id")
            .bind(&locks)
            .execute(&mut *conn)
            .await
            .context("locking the keys the batch touches")?;
    }
    let mut snapshot = Snapshot::default();
    if !lookups.state_keys.is_empty() {
        let (plugins, keys): (Vec<&str>, Vec<&str>) = lookups.state_keys.iter().copied().unzip();
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT s.plugin, s.key, s.version
             FROM UNNEST($1::text[], $2::text[]) AS t(plugin, key)
             JOIN state s ON s.plugin = t.plugin AND s.key = t.key",
        )
        .bind(&plugins)
        .bind(&keys)
        .fetch_all(&mut *conn)
        .await
        .context("reading the versions of the keys the batch touches")?;
        snapshot.set_versions(rows);
    }
    if !lookups.idempotency_keys.is_empty() {
        let live: Vec<String> = sqlx::query_scalar(
            "SELECT key FROM idempotency WHERE key = ANY($1) AND expires_at_ms > $2",
        )
        .bind(&lookups.idempotency_keys)
        .bind(now)
        .fetch_all(&mut *conn)
        .await
        .context("reading the batch's idempotency keys")?;
        snapshot.live_idempotency_keys = live.into_iter().collect();
    }
    if !lookups.lease_epochs.is_empty() {
        // FOR SHARE: a takeover of one of these leases waits until this batch commits, so a
        // delivery's outcome is recorded either before another host owns its partition or
        // not at all.
        let live: Vec<i64> = sqlx::query_scalar(
            "SELECT epoch FROM partition_leases WHERE epoch = ANY($1)
             ORDER BY partition FOR SHARE",
        )
        .bind(&lookups.lease_epochs)
        .fetch_all(&mut *conn)
        .await
        .context("checking the partition leases of the deliveries the batch finishes")?;
        snapshot.live_leases = live.into_iter().collect();
    }
    if !lookups.delivery_ids.is_empty() {
        let rows: Vec<(i64, String, i64)> = sqlx::query_as(
            "SELECT id, status, attempts FROM deliveries WHERE id = ANY($1)
             ORDER BY id FOR UPDATE",
        )
        .bind(&lookups.delivery_ids)
        .fetch_all(&mut *conn)
        .await
        .context("reading the deliveries the batch finishes")?;
        snapshot.set_deliveries(rows);
    }
    Ok(snapshot)
}

/// Writes `plan`: one statement per table it touches (messages and their deliveries in one).
async fn write_plan(conn: &mut PgConnection, plan: &Plan<'_>, now: i64) -> anyhow::Result<()> {
    if !plan.state.is_empty() {
        let plugins: Vec<&str> = plan.state.iter().map(|r| r.plugin).collect();
        let keys: Vec<&str> = plan.state.iter().map(|r| r.key).collect();
        let values: Vec<Option<&[u8]>> = plan.state.iter().map(|r| r.value).collect();
        let versions: Vec<i64> = plan.state.iter().map(|r| r.version).collect();
        sqlx::query(
            "INSERT INTO state (plugin, key, value, version)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::bytea[], $4::bigint[])
             ON CONFLICT (plugin, key) DO UPDATE SET value = EXCLUDED.value, version = EXCLUDED.version",
        )
        .bind(&plugins)
        .bind(&keys)
        .bind(&values)
        .bind(&versions)
        .execute(&mut *conn)
        .await
        .context("writing state")?;
    }
    if !plan.idempotency.is_empty() {
        let records = &plan.idempotency;
        sqlx::query(
            "INSERT INTO idempotency
               (key, command_kind, request_hash, status, body, created_at_ms, expires_at_ms)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bytea[],
                                  $6::bigint[], $7::bigint[])
             ON CONFLICT (key) DO UPDATE SET
               command_kind = EXCLUDED.command_kind, request_hash = EXCLUDED.request_hash,
               status = EXCLUDED.status, body = EXCLUDED.body,
               created_at_ms = EXCLUDED.created_at_ms, expires_at_ms = EXCLUDED.expires_at_ms",
        )
        .bind(records.iter().map(|r| r.key.as_str()).collect::<Vec<_>>())
        .bind(
            records
                .iter()
                .map(|r| r.command_kind.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            records
                .iter()
                .map(|r| r.request_hash.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            records
                .iter()
                .map(|r| i64::from(r.status))
                .collect::<Vec<_>>(),
        )
        .bind(
            records
                .iter()
                .map(|r| r.body.as_slice())
                .collect::<Vec<_>>(),
        )
        .bind(records.iter().map(|r| r.created_at_ms).collect::<Vec<_>>())
        .bind(records.iter().map(|r| r.expires_at_ms).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await
        .context("writing idempotency records")?;
    }
    if !plan.messages.is_empty() {
        write_messages(conn, plan, now).await?;
    }
    if !plan.failures.is_empty() {
        let failures = &plan.failures;
        sqlx::query(
            "UPDATE deliveries d
             SET status = t.status, attempts = t.attempts, next_attempt_at_ms = t.next_at,
                 last_error = t.last_error, error_class = t.error_class,
                 first_failed_at_ms = COALESCE(d.first_failed_at_ms, $8),
                 last_failed_at_ms = $8, handled_by = t.handled_by, lease_epoch = t.lease
             FROM UNNEST($1::bigint[], $2::text[], $3::bigint[], $4::bigint[], $5::text[],
                         $6::text[], $7::text[], $9::bigint[])
                  AS t(id, status, attempts, next_at, last_error, error_class, handled_by, lease)
             WHERE d.id = t.id",
        )
        .bind(failures.iter().map(|f| f.delivery_id).collect::<Vec<_>>())
        .bind(
            failures
                .iter()
                .map(|f| if f.dead { "dead" } else { "pending" })
                .collect::<Vec<_>>(),
        )
        .bind(
            failures
                .iter()
                .map(|f| i64::from(f.attempts))
                .collect::<Vec<_>>(),
        )
        .bind(
            failures
                .iter()
                .map(|f| f.next_attempt_at_ms)
                .collect::<Vec<_>>(),
        )
        .bind(
            failures
                .iter()
                .map(|f| f.failure.message.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            failures
                .iter()
                .map(|f| f.failure.class.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(failures.iter().map(|f| f.handled_by).collect::<Vec<_>>())
        .bind(now)
        .bind(failures.iter().map(|f| f.lease).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await
        .context("recording failed deliveries")?;
    }
    if !plan.done.is_empty() {
        let done = &plan.done;
        sqlx::query(
            "UPDATE deliveries d
             SET status = 'done', attempts = t.attempts, handled_by = t.handled_by,
                 completed_at_ms = $4, lease_epoch = t.lease
             FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $5::bigint[])
                  AS t(id, attempts, handled_by, lease)
             WHERE d.id = t.id",
        )
        .bind(done.iter().map(|d| d.delivery_id).collect::<Vec<_>>())
        .bind(
            done.iter()
                .map(|d| i64::from(d.attempts))
                .collect::<Vec<_>>(),
        )
        .bind(done.iter().map(|d| d.handled_by).collect::<Vec<_>>())
        .bind(now)
        .bind(done.iter().map(|d| d.lease).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await
        .context("marking deliveries done")?;
    }
    Ok(())
}

/// The outbox rows and their delivery rows, in one statement: messages are numbered in array
/// order (commit order), and each delivery joins the message it belongs to by id.
async fn write_messages(conn: &mut PgConnection, plan: &Plan<'_>, now: i64) -> anyhow::Result<()> {
    let messages = &plan.messages;
    let headers = messages
        .iter()
        .map(|m| serde_json::to_string(&m.headers))
        .collect::<Result<Vec<_>, _>>()?;
    let (delivery_messages, subscribers): (Vec<&str>, Vec<&str>) = messages
        .iter()
        .flat_map(|m| m.subscribers.iter().map(|s| (m.id.as_str(), s.as_str())))
        .unzip();
    sqlx::query(
        "WITH m AS (
           INSERT INTO messages (id, kind, partition_key, tenant_id, correlation_id, causation_id,
                                 actor, schema_version, occurred_at_ms, headers, payload, emitted_by,
                                 depth)
           SELECT id, kind, partition_key, tenant_id, correlation_id, causation_id, actor,
                  schema_version, occurred_at_ms, headers, payload, emitted_by, depth
           FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                       $7::text[], $8::bigint[], $9::bigint[], $10::text[], $11::bytea[], $12::text[],
                       $16::bigint[])
                WITH ORDINALITY
                AS t(id, kind, partition_key, tenant_id, correlation_id, causation_id, actor,
                     schema_version, occurred_at_ms, headers, payload, emitted_by, depth, n)
           ORDER BY n
           RETURNING seq, id, partition_key)
         INSERT INTO deliveries (message_seq, subscriber, partition_key, status, next_attempt_at_ms,
                                 partition_hash)
         SELECT m.seq, s.subscriber, m.partition_key, 'pending', $15,
                partition_hash(s.subscriber, COALESCE(m.partition_key, m.id))
         FROM UNNEST($13::text[], $14::text[]) WITH ORDINALITY AS s(message_id, subscriber, n)
         JOIN m ON m.id = s.message_id
         ORDER BY s.n",
    )
    .bind(messages.iter().map(|m| m.id.as_str()).collect::<Vec<_>>())
    .bind(messages.iter().map(|m| m.kind.as_str()).collect::<Vec<_>>())
    .bind(messages.iter().map(|m| m.partition_key.as_deref()).collect::<Vec<_>>())
    .bind(messages.iter().map(|m| m.tenant_id.as_deref()).collect::<Vec<_>>())
    .bind(messages.iter().map(|m| m.correlation_id.as_str()).collect::<Vec<_>>())
    .bind(messages.iter().map(|m| m.causation_id.as_deref()).collect::<Vec<_>>())
    .bind(messages.iter().map(|m| m.actor.as_deref()).collect::<Vec<_>>())
    .bind(messages.iter().map(|m| i64::from(m.schema_version)).collect::<Vec<_>>())
    .bind(messages.iter().map(|m| m.occurred_at_ms).collect::<Vec<_>>())
    .bind(&headers)
    .bind(messages.iter().map(|m| m.payload.as_slice()).collect::<Vec<_>>())
    .bind(messages.iter().map(|m| m.emitted_by.as_str()).collect::<Vec<_>>())
    .bind(&delivery_messages)
    .bind(&subscribers)
    .bind(now)
    .bind(messages.iter().map(|m| i64::from(m.depth)).collect::<Vec<_>>())
    .execute(&mut *conn)
    .await
    .context("writing messages and deliveries")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::postgres_server;

    #[tokio::test]
    async fn a_session_stuck_in_a_transaction_is_ended_by_the_server() {
        let options = PgConnectOptions::from_str(&format!("{}/postgres", postgres_server()))
            .unwrap_or_else(|e| panic!("the PostgreSQL test server's URL: {e}"));
        let pool = connect(&options).await.unwrap_or_else(|e| {
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
