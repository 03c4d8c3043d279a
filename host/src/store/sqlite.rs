//! The SQLite backend: one file in WAL mode, `synchronous = FULL`.
//!
//! Reads go through a pool of read-only connections and see committed data only; handlers'
//! reads of state skip sqlx's worker threads (`sqlite/state_reads.rs`). Writes go
//! through one connection (SQLite has one writer anyway); a batch takes the write lock up
//! front (`BEGIN IMMEDIATE`), which also holds every other process off until it commits, so
//! what its lookups read stays true until then. Lists are passed as one JSON parameter and
//! expanded with `json_each`, so a statement's text (and its prepared form) is the same
//! whatever the batch size; blobs travel as hex inside the JSON.

use super::batch::{self, Lookups, Plan, Snapshot};
use super::inspect::{self, DeadChange, ViewRow, delivery_filter, view_columns};
use super::queue::{self, DueRow, IdempotencyRow, Trim, due_query};
use super::runs::{self, FollowerRow, Head};
use super::{
    Applied, DeliveryDetail, DeliveryFilter, DeliveryStatus, DeliveryView, DueDelivery,
    IdempotencyRecord, StateVersion, Write, now_ms,
};
use crate::fault::{self, FaultPoint};
use anyhow::Context;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{SqliteConnection, SqlitePool};
use state_reads::StateReads;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

mod state_reads;

/// Readers in the pool. Handlers read state concurrently; WAL lets them run beside the writer.
const READ_CONNECTIONS: u32 = 8;
/// How long a statement waits for another process's write lock (e.g. `host bus replay` while
/// the host runs) before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The dispatcher's scan: $1 now, $2 subscribers, $3 those that skip (JSON arrays), $4 limit,
/// $5 running delivery ids (a JSON array).
const DUE: &str = due_query!(
    "IN (SELECT value FROM json_each($2))",
    "IN (SELECT value FROM json_each($3))",
    "IN (SELECT value FROM json_each($5))",
    "NULL",
    ""
);

#[derive(Clone)]
pub(super) struct SqliteStore {
    read: SqlitePool,
    write: SqlitePool,
    /// Handlers' reads of state, on the calling thread.
    state: Arc<StateReads>,
}

/// Why the database file at `path` cannot be opened, in the words of the file system: a
/// missing folder, a directory, a permission. `None` when the file itself opens.
fn why_unopenable(path: &Path) -> Option<String> {
    if path.is_dir() {
        return Some(format!("`{}` is a directory", path.display()));
    }
    if let Some(folder) = path.parent().filter(|p| !p.as_os_str().is_empty())
        && !folder.is_dir()
    {
        return Some(format!("the folder `{}` does not exist", folder.display()));
    }
    std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .err()
        .map(|e| format!("`{}`: {e}", path.display()))
}

impl SqliteStore {
    pub(super) async fn open(url: &str) -> anyhow::Result<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .with_context(|| format!("invalid database URL `{url}`"))?
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let write_options = options
            .clone()
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full);
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(write_options)
            .await
            .map_err(|error| {
                let cause = why_unopenable(options.get_filename()).unwrap_or(error.to_string());
                anyhow::anyhow!("cannot open database `{url}`: {cause}")
            })?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&write)
            .await
            .with_context(|| format!("cannot migrate database `{url}`"))?;
        let read = SqlitePoolOptions::new()
            .max_connections(READ_CONNECTIONS)
            .connect_with(options.clone().read_only(true))
            .await
            .with_context(|| format!("cannot open database `{url}` for reading"))?;
        let state = StateReads::new(options.get_filename().to_owned(), BUSY_TIMEOUT);
        Ok(Self {
            read,
            write,
            state: Arc::new(state),
        })
    }

    pub(super) async fn close(&self) {
        self.read.close().await;
        self.state.close();
        // With the readers gone, fold the whole WAL back into the file; closing the writer,
        // the last connection, then removes the `-wal` and `-shm` files.
        match self.write.acquire().await {
            Ok(mut conn) => {
                let checkpoint: Result<(i64, i64, i64), _> =
                    sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
                        .fetch_one(&mut *conn)
                        .await;
                match checkpoint {
                    Ok((0, _, _)) => {}
                    Ok(_) => tracing::warn!(
                        "the database was busy at shutdown: its WAL is folded back at the next start"
                    ),
                    Err(error) => tracing::warn!("checkpointing the database at shutdown: {error}"),
                }
            }
            Err(error) => tracing::warn!("checkpointing the database at shutdown: {error}"),
        }
        self.write.close().await;
    }

    queue::shared_queries!(read, write);

    pub(super) async fn read_state(
        &self,
        plugin: &str,
        key: &str,
    ) -> anyhow::Result<(Option<Vec<u8>>, StateVersion)> {
        self.state.read_state(plugin, key)
    }
    super::operators::operator_queries!(read, write);

    pub(super) async fn apply_batch(&self, batch: &[Write]) -> anyhow::Result<Vec<Applied>> {
        let mut conn = self.write.acquire().await.context("acquiring the writer")?;
        // IMMEDIATE takes the write lock up front instead of failing at the first write when
        // another process holds it.
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut *conn)
            .await
            .context("BEGIN")?;
        let now = now_ms();
        let applied = async {
            let snapshot = snapshot(&mut conn, &Lookups::of(batch), now).await?;
            let plan = batch::plan(batch, snapshot, now);
            write_plan(&mut conn, &plan, now).await?;
            anyhow::Ok(plan.results)
        }
        .await;
        match applied {
            Ok(results) => {
                fault::hit(FaultPoint::BeforeCommit);
                sqlx::query("COMMIT")
                    .execute(&mut *conn)
                    .await
                    .context("COMMIT")?;
                fault::hit(FaultPoint::AfterCommit);
                Ok(results)
            }
            Err(error) => {
                let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                Err(error)
            }
        }
    }

    pub(super) async fn due_deliveries(
        &self,
        subscribers: &[String],
        skip: &[String],
        running: &[i64],
        limit: u32,
    ) -> anyhow::Result<Vec<DueDelivery>> {
        let rows: Vec<DueRow> = sqlx::query_as(DUE)
            .bind(now_ms())
            .bind(serde_json::to_string(subscribers)?)
            .bind(serde_json::to_string(skip)?)
            .bind(i64::from(limit))
            .bind(serde_json::to_string(running)?)
            .fetch_all(&self.read)
            .await
            .context("scanning due deliveries")?;
        rows.into_iter().map(TryInto::try_into).collect()
    }

    pub(super) async fn followers(
        &self,
        heads: &[Head<'_>],
        most: i64,
    ) -> anyhow::Result<Vec<FollowerRow>> {
        sqlx::query_as(runs::SQLITE_FOLLOWERS)
            .bind(serde_json::to_string(heads)?)
            .bind(now_ms())
            .bind(most)
            .fetch_all(&self.read)
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
            delivery_filter!("GLOB"),
            " ORDER BY d.id LIMIT $5"
        );
        let rows: Vec<ViewRow> = bind_filter(sqlx::query_as(LIST), filter)
            .fetch_all(&self.read)
            .await
            .context("listing deliveries")?;
        Ok(rows.into_iter().map(ViewRow::view).collect())
    }

    pub(super) async fn change_dead(
        &self,
        filter: &DeliveryFilter,
        dry_run: bool,
        change: DeadChange,
    ) -> anyhow::Result<Vec<i64>> {
        const SELECT: &str = concat!(
            "SELECT d.id FROM deliveries d JOIN messages m ON m.seq = d.message_seq WHERE ",
            delivery_filter!("GLOB"),
            " ORDER BY d.id LIMIT $5"
        );
        let filter = DeliveryFilter {
            status: Some(DeliveryStatus::Dead),
            ..filter.clone()
        };
        let what = change.doing();
        if dry_run {
            let ids: Vec<(i64,)> = bind_filter(sqlx::query_as(SELECT), &filter)
                .fetch_all(&self.read)
                .await
                .with_context(|| format!("selecting dead letters for {what}"))?;
            return Ok(ids.into_iter().map(|(id,)| id).collect());
        }
        let mut tx = self
            .write
            .begin()
            .await
            .with_context(|| format!("{what} dead letters"))?;
        let ids: Vec<(i64,)> = bind_filter(sqlx::query_as(SELECT), &filter)
            .fetch_all(&mut *tx)
            .await
            .with_context(|| format!("selecting dead letters for {what}"))?;
        let ids: Vec<i64> = ids.into_iter().map(|(id,)| id).collect();
        let ids_json = serde_json::to_string(&ids)?;
        let statement = match change {
            DeadChange::Replay => sqlx::query(
                "UPDATE deliveries SET status = 'pending', attempts = 0, waiting = 0, next_attempt_at_ms = $2
                 WHERE status = 'dead' AND id IN (SELECT value FROM json_each($1))",
            )
            .bind(ids_json)
            .bind(now_ms()),
            DeadChange::Purge => sqlx::query(
                "DELETE FROM deliveries
                 WHERE status = 'dead' AND id IN (SELECT value FROM json_each($1))",
            )
            .bind(ids_json),
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

/// Binds a [`DeliveryFilter`] to $1–$5 of [`delivery_filter`] and its `LIMIT $5`.
fn bind_filter<'q, O>(
    query: sqlx::query::QueryAs<'q, sqlx::Sqlite, O, sqlx::sqlite::SqliteArguments<'q>>,
    filter: &'q DeliveryFilter,
) -> sqlx::query::QueryAs<'q, sqlx::Sqlite, O, sqlx::sqlite::SqliteArguments<'q>> {
    query
        .bind(filter.status.map(DeliveryStatus::as_str))
        .bind(&filter.subscriber)
        .bind(&filter.kind)
        .bind(&filter.error_class)
        .bind(filter.limit.map_or(-1, i64::from))
}

/// Reads what `lookups` asks for, one statement per list (none for an empty one).
async fn snapshot(
    conn: &mut SqliteConnection,
    lookups: &Lookups<'_>,
    now: i64,
) -> anyhow::Result<Snapshot> {
    let mut snapshot = Snapshot::default();
    if !lookups.state_keys.is_empty() {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT s.plugin, s.key, s.version FROM json_each($1) j
             JOIN state s ON s.plugin = j.value ->> 0 AND s.key = j.value ->> 1",
        )
        .bind(serde_json::to_string(&lookups.state_keys)?)
        .fetch_all(&mut *conn)
        .await
        .context("reading the versions of the keys the batch touches")?;
        snapshot.set_versions(rows);
    }
    if !lookups.idempotency_keys.is_empty() {
        let live: Vec<String> = sqlx::query_scalar(
            "SELECT key FROM idempotency
             WHERE key IN (SELECT value FROM json_each($1)) AND expires_at_ms > $2",
        )
        .bind(serde_json::to_string(&lookups.idempotency_keys)?)
        .bind(now)
        .fetch_all(&mut *conn)
        .await
        .context("reading the batch's idempotency keys")?;
        snapshot.live_idempotency_keys = live.into_iter().collect();
    }
    if !lookups.delivery_ids.is_empty() {
        let rows: Vec<(i64, String, i64)> = sqlx::query_as(
            "SELECT id, status, attempts FROM deliveries
             WHERE id IN (SELECT value FROM json_each($1))",
        )
        .bind(serde_json::to_string(&lookups.delivery_ids)?)
        .fetch_all(&mut *conn)
        .await
        .context("reading the deliveries the batch finishes")?;
        snapshot.set_deliveries(rows);
    }
    Ok(snapshot)
}

/// Writes `plan`: one statement per table it touches.
async fn write_plan(conn: &mut SqliteConnection, plan: &Plan<'_>, now: i64) -> anyhow::Result<()> {
    if !plan.state.is_empty() {
        let rows: Vec<_> = plan
            .state
            .iter()
            .map(|row| (row.plugin, row.key, row.value.map(hex::encode), row.version))
            .collect();
        // `WHERE true` keeps the parser from reading ON CONFLICT as a join constraint.
        sqlx::query(
            "INSERT INTO state (plugin, key, value, version)
             SELECT value ->> 0, value ->> 1, unhex(value ->> 2), value ->> 3
             FROM json_each($1) WHERE true
             ON CONFLICT (plugin, key) DO UPDATE SET value = excluded.value, version = excluded.version",
        )
        .bind(serde_json::to_string(&rows)?)
        .execute(&mut *conn)
        .await
        .context("writing state")?;
    }
    if !plan.idempotency.is_empty() {
        let rows: Vec<_> = plan
            .idempotency
            .iter()
            .map(|r| {
                let (status, body) = r.outcome.to_row();
                let body = hex::encode(body);
                (
                    &r.key,
                    &r.command_kind,
                    &r.request_hash,
                    status,
                    body,
                    r.created_at_ms,
                    r.expires_at_ms,
                )
            })
            .collect();
        sqlx::query(
            "INSERT INTO idempotency
               (key, command_kind, request_hash, status, body, created_at_ms, expires_at_ms)
             SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, unhex(value ->> 4),
                    value ->> 5, value ->> 6
             FROM json_each($1) WHERE true
             ON CONFLICT (key) DO UPDATE SET
               command_kind = excluded.command_kind, request_hash = excluded.request_hash,
               status = excluded.status, body = excluded.body,
               created_at_ms = excluded.created_at_ms, expires_at_ms = excluded.expires_at_ms",
        )
        .bind(serde_json::to_string(&rows)?)
        .execute(&mut *conn)
        .await
        .context("writing idempotency records")?;
    }
    if !plan.messages.is_empty() {
        let mut messages = Vec::with_capacity(plan.messages.len());
        let mut deliveries = Vec::new();
        for event in &plan.messages {
            let message = &event.message;
            messages.push(serde_json::json!([
                message.id,
                message.kind,
                message.partition_key,
                message.tenant_id,
                message.correlation_id,
                message.causation_id,
                message.actor,
                message.schema_version,
                message.occurred_at_ms,
                serde_json::to_string(&message.headers)?,
                hex::encode(&message.payload),
                event.emitted_by,
                message.depth,
            ]));
            let due = event.deliver_at_ms.unwrap_or(now);
            deliveries.extend(event.subscribers.iter().map(|s| (&message.id, s, due)));
        }
        // Inserted in array order, so `seq` follows commit order.
        sqlx::query(
            "INSERT INTO messages (id, kind, partition_key, tenant_id, correlation_id, causation_id,
                                   actor, schema_version, occurred_at_ms, headers, payload, emitted_by,
                                   depth)
             SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5,
                    value ->> 6, value ->> 7, value ->> 8, value ->> 9, unhex(value ->> 10),
                    value ->> 11, value ->> 12
             FROM json_each($1) ORDER BY key",
        )
        .bind(serde_json::to_string(&messages)?)
        .execute(&mut *conn)
        .await
        .context("writing messages")?;
        if !deliveries.is_empty() {
            sqlx::query(
                "INSERT INTO deliveries (message_seq, subscriber, partition_key, status,
                                         next_attempt_at_ms, waiting)
                 SELECT m.seq, j.value ->> 1, m.partition_key, 'pending', j.value ->> 2,
                        j.value ->> 2 > $2
                 FROM json_each($1) j JOIN messages m ON m.id = j.value ->> 0
                 ORDER BY j.key",
            )
            .bind(serde_json::to_string(&deliveries)?)
            .bind(now)
            .execute(&mut *conn)
            .await
            .context("writing deliveries")?;
        }
    }
    if !plan.failures.is_empty() {
        let rows: Vec<_> = plan
            .failures
            .iter()
            .map(|f| {
                let status = if f.dead { "dead" } else { "pending" };
                let class = f.failure.class.as_str();
                (
                    f.delivery_id,
                    status,
                    f.attempts,
                    f.next_attempt_at_ms,
                    &f.failure.message,
                    class,
                    f.handled_by,
                )
            })
            .collect();
        sqlx::query(
            "UPDATE deliveries
             SET status = j.value ->> 1, attempts = j.value ->> 2,
                 next_attempt_at_ms = j.value ->> 3, waiting = j.value ->> 1 = 'pending',
                 last_error = j.value ->> 4,
                 error_class = j.value ->> 5, first_failed_at_ms = COALESCE(first_failed_at_ms, $2),
                 last_failed_at_ms = $2, handled_by = j.value ->> 6
             FROM json_each($1) j WHERE deliveries.id = j.value ->> 0",
        )
        .bind(serde_json::to_string(&rows)?)
        .bind(now)
        .execute(&mut *conn)
        .await
        .context("recording failed deliveries")?;
    }
    if !plan.done.is_empty() {
        let rows: Vec<_> = plan
            .done
            .iter()
            .map(|d| (d.delivery_id, d.attempts, d.handled_by))
            .collect();
        sqlx::query(
            "UPDATE deliveries
             SET status = 'done', attempts = j.value ->> 1, handled_by = j.value ->> 2,
                 completed_at_ms = $2
             FROM json_each($1) j WHERE deliveries.id = j.value ->> 0",
        )
        .bind(serde_json::to_string(&rows)?)
        .bind(now)
        .execute(&mut *conn)
        .await
        .context("marking deliveries done")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn open_error(path: &Path) -> String {
        match SqliteStore::open(&format!("sqlite://{}", path.display())).await {
            Ok(_) => panic!("{} opened", path.display()),
            Err(error) => format!("{error:#}"),
        }
    }

    #[tokio::test]
    async fn a_file_that_cannot_be_opened_is_explained_once_by_its_cause() {
        let dir = tempfile::tempdir().unwrap();
        let missing = open_error(&dir.path().join("no/such/folder/host.db")).await;
        assert!(missing.contains("does not exist"), "{missing}");
        assert!(missing.contains("no/such/folder`"), "{missing}");
        let folder = open_error(dir.path()).await;
        assert!(folder.contains("is a directory"), "{folder}");
        assert_eq!(folder.matches("cannot open").count(), 1, "{folder}");
    }

    /// A delivery that is not due is never read by a scan: the scan walks the deliveries
    /// written due in commit order, and the waiting ones (scheduled, retrying) only by due time
    /// up to now. SQLite's plan names each index and its range.
    #[tokio::test]
    async fn the_scan_reads_waiting_deliveries_only_once_due() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&format!("sqlite://{}", dir.path().join("h.db").display()))
            .await
            .unwrap();
        let plan: Vec<(i64, i64, i64, String)> =
            sqlx::query_as(&format!("EXPLAIN QUERY PLAN {DUE}"))
                .bind(now_ms())
                .bind("[\"s\"]")
                .bind("[]")
                .bind(64_i64)
                .bind("[]")
                .fetch_all(&store.read)
                .await
                .unwrap();
        let plan: Vec<String> = plan.into_iter().map(|row| row.3).collect();
        let walks: Vec<&String> = plan
            .iter()
            .filter(|step| step.starts_with("SCAN d ") || step.starts_with("SEARCH d "))
            .collect();
        assert_eq!(
            walks,
            [
                "SCAN d USING INDEX deliveries_ready_by_seq",
                "SEARCH d USING INDEX deliveries_waiting (next_attempt_at_ms<?)",
            ],
            "{plan:#?}"
        );
    }
}
