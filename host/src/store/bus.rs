//! Reading the delivery queue: what the dispatcher should run next, and what operators see
//! and replay with `host bus`.

use super::{Store, now_ms};
use anyhow::Context;
use serde::Serialize;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

/// A delivery the dispatcher may run now, with the message it carries.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub delivery_id: i64,
    pub subscriber: String,
    /// Attempts already made (the next one is `attempts + 1`).
    pub attempts: u32,
    pub message_id: String,
    pub message_seq: i64,
    pub kind: String,
    pub partition_key: Option<String>,
    pub tenant_id: Option<String>,
    pub correlation_id: String,
    pub causation_id: Option<String>,
    pub actor: Option<String>,
    pub schema_version: u32,
    pub occurred_at_ms: i64,
    pub headers: Vec<(String, String)>,
    pub payload: Vec<u8>,
}

/// The state of a delivery row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Pending,
    Done,
    Dead,
}

impl DeliveryStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Done => "done",
            Self::Dead => "dead",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "pending" => Self::Pending,
            "done" => Self::Done,
            _ => Self::Dead,
        }
    }
}

/// Which deliveries `host bus list` shows.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    /// `None` = every status.
    pub status: Option<DeliveryStatus>,
    pub subscriber: Option<String>,
    /// Message kind; `*` matches any run of characters (`order.*`).
    pub kind: Option<String>,
    /// Last error class (`retryable`, `permanent`, `deadline`, …).
    pub error_class: Option<String>,
    pub limit: Option<u32>,
}

/// Binds a [`DeliveryFilter`] to the ?1–?4 of [`FILTER`], on a query or a scalar query.
macro_rules! bind_filter {
    ($query:expr, $filter:expr) => {
        $query
            .bind($filter.status.map(DeliveryStatus::as_str))
            .bind(&$filter.subscriber)
            .bind(&$filter.kind)
            .bind(&$filter.error_class)
    };
}

/// One delivery as operators see it.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryView {
    pub id: i64,
    pub status: DeliveryStatus,
    pub subscriber: String,
    pub message_id: String,
    pub kind: String,
    pub partition_key: Option<String>,
    pub correlation_id: String,
    pub emitted_by: String,
    pub attempts: u32,
    pub next_attempt_at_ms: i64,
    pub error_class: Option<String>,
    pub last_error: Option<String>,
    pub first_failed_at_ms: Option<i64>,
    pub last_failed_at_ms: Option<i64>,
    pub handled_by: Option<String>,
    pub occurred_at_ms: i64,
    /// The payload as JSON when it is JSON, else as a string of its bytes (lossy).
    pub payload: serde_json::Value,
}

/// Subscribers that are not loaded have their deliveries wait; the dispatcher passes the
/// loaded ones so the scan never hands it work it cannot run.
///
/// Ordering: a delivery with a partition key is due only when no earlier unfinished delivery
/// of the same (subscriber, key) holds it back. Under `strict` every unfinished one does;
/// under `skip` (subscribers in ?3) one that has failed at least once, or is dead, is parked
/// and no longer holds anything back.
const DUE_QUERY: &str = "
    SELECT d.id, d.subscriber, d.attempts, m.id AS message_id, m.seq, m.kind, m.partition_key,
           m.tenant_id, m.correlation_id, m.causation_id, m.actor, m.schema_version,
           m.occurred_at_ms, m.headers, m.payload
    FROM deliveries d JOIN messages m ON m.seq = d.message_seq
    WHERE d.status = 'pending' AND d.next_attempt_at_ms <= ?1
      AND d.subscriber IN (SELECT value FROM json_each(?2))
      AND (d.partition_key IS NULL OR NOT EXISTS (
            SELECT 1 FROM deliveries e
            WHERE e.subscriber = d.subscriber AND e.partition_key = d.partition_key
              AND e.status <> 'done' AND e.message_seq < d.message_seq
              AND ((e.status = 'pending' AND e.attempts = 0)
                   OR d.subscriber NOT IN (SELECT value FROM json_each(?3)))))
    ORDER BY d.message_seq
    LIMIT ?4";

/// The filter part shared by every operator query; binds ?1 status, ?2 subscriber, ?3 kind
/// (a glob: `order.*`), ?4 error class.
const FILTER: &str = "(?1 IS NULL OR d.status = ?1) AND (?2 IS NULL OR d.subscriber = ?2)
    AND (?3 IS NULL OR m.kind GLOB ?3) AND (?4 IS NULL OR d.error_class = ?4)";

/// The columns of [`DeliveryView`] and [`DeliveryDetail`].
const VIEW_COLUMNS: &str = "d.id, d.status, d.subscriber, m.id AS message_id, m.kind,
    m.partition_key, m.correlation_id, m.emitted_by, d.attempts, d.next_attempt_at_ms,
    d.error_class, d.last_error, d.first_failed_at_ms, d.last_failed_at_ms, d.handled_by,
    d.completed_at_ms, m.occurred_at_ms, m.payload, m.seq, m.tenant_id, m.causation_id, m.actor,
    m.schema_version, m.headers";

/// One delivery with the whole envelope of its message, for `host bus show`.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryDetail {
    #[serde(flatten)]
    pub view: DeliveryView,
    pub message_seq: i64,
    pub completed_at_ms: Option<i64>,
    pub tenant_id: Option<String>,
    pub causation_id: Option<String>,
    pub actor: Option<String>,
    pub schema_version: u32,
    pub headers: Vec<(String, String)>,
}

/// Counts for `host bus stats`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BusStats {
    /// Deliveries by status (`pending`, `done`, `dead`).
    pub by_status: std::collections::BTreeMap<String, i64>,
    /// Unfinished deliveries that have failed, by their last error class and then status:
    /// `dead`, or `pending` (waiting for a retry).
    pub by_error_class: std::collections::BTreeMap<String, std::collections::BTreeMap<String, i64>>,
}

impl Store {
    /// Pending deliveries that are due, for loaded `subscribers`, in per-key order (see
    /// [`DUE_QUERY`]): under strict ordering a pending retry or a dead letter holds back the
    /// later messages of its key until it is done, replayed or purged; for the subscribers in
    /// `skip` a delivery that failed is parked and the key moves on. Oldest first.
    ///
    /// # Errors
    /// Fails when the database cannot be read.
    pub async fn due_deliveries(
        &self,
        subscribers: &[String],
        skip: &[String],
        limit: u32,
    ) -> anyhow::Result<Vec<DueDelivery>> {
        let rows = sqlx::query(DUE_QUERY)
            .bind(now_ms())
            .bind(serde_json::to_string(subscribers)?)
            .bind(serde_json::to_string(skip)?)
            .bind(limit as i64)
            .fetch_all(self.reader())
            .await
            .context("scanning due deliveries")?;
        rows.iter().map(due_from_row).collect()
    }

    /// The earliest time after now at which a pending delivery (a retry) becomes due.
    ///
    /// # Errors
    /// Fails when the database cannot be read.
    pub async fn next_retry_at_ms(&self) -> anyhow::Result<Option<i64>> {
        let at: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(next_attempt_at_ms) FROM deliveries
             WHERE status = 'pending' AND next_attempt_at_ms > ?",
        )
        .bind(now_ms())
        .fetch_one(self.reader())
        .await
        .context("reading next due delivery")?;
        Ok(at)
    }

    /// How many deliveries wait for `subscriber` (pending, due or not).
    ///
    /// # Errors
    /// Fails when the database cannot be read.
    pub async fn pending_count(&self, subscriber: &str) -> anyhow::Result<i64> {
        sqlx::query_scalar(
            "SELECT COUNT(*) FROM deliveries WHERE status = 'pending' AND subscriber = ?",
        )
        .bind(subscriber)
        .fetch_one(self.reader())
        .await
        .context("counting pending deliveries")
    }

    /// Deliveries matching `filter`, oldest first.
    ///
    /// # Errors
    /// Fails when the database cannot be read.
    pub async fn list_deliveries(
        &self,
        filter: &DeliveryFilter,
    ) -> anyhow::Result<Vec<DeliveryView>> {
        let sql = format!(
            "SELECT {VIEW_COLUMNS} FROM deliveries d JOIN messages m ON m.seq = d.message_seq
             WHERE {FILTER} ORDER BY d.id LIMIT ?5"
        );
        let rows = bind_filter!(sqlx::query(&sql), filter)
            .bind(filter.limit.map_or(-1, i64::from))
            .fetch_all(self.reader())
            .await
            .context("listing deliveries")?;
        Ok(rows.iter().map(view_from_row).collect())
    }

    /// One delivery with its message's whole envelope; `None` when there is no such id.
    ///
    /// # Errors
    /// Fails when the database cannot be read.
    pub async fn delivery(&self, id: i64) -> anyhow::Result<Option<DeliveryDetail>> {
        let sql = format!(
            "SELECT {VIEW_COLUMNS} FROM deliveries d JOIN messages m ON m.seq = d.message_seq
             WHERE d.id = ?"
        );
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(self.reader())
            .await
            .with_context(|| format!("reading delivery {id}"))?;
        let Some(row) = row else { return Ok(None) };
        let headers: String = row.get("headers");
        Ok(Some(DeliveryDetail {
            view: view_from_row(&row),
            message_seq: row.get("seq"),
            completed_at_ms: row.get("completed_at_ms"),
            tenant_id: row.get("tenant_id"),
            causation_id: row.get("causation_id"),
            actor: row.get("actor"),
            schema_version: row.get::<i64, _>("schema_version") as u32,
            headers: serde_json::from_str(&headers)
                .context("message headers are not valid JSON")?,
        }))
    }

    /// Puts a dead delivery back in the queue with its attempts reset, due now. Returns false
    /// when there is no dead delivery with this id. Its error history (class, last error,
    /// first and last failure) is kept until it succeeds or fails again.
    ///
    /// # Errors
    /// Fails when the database cannot be written.
    pub async fn replay(&self, delivery_id: i64) -> anyhow::Result<bool> {
        let updated = sqlx::query(
            "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at_ms = ?
             WHERE id = ? AND status = 'dead'",
        )
        .bind(now_ms())
        .bind(delivery_id)
        .execute(self.writer())
        .await
        .with_context(|| format!("replaying delivery {delivery_id}"))?
        .rows_affected();
        Ok(updated == 1)
    }

    /// Replays every dead delivery matching `filter` (its status is ignored: only dead ones
    /// are replayed), in one transaction, and returns their ids. With `dry_run`, only
    /// returns the ids.
    ///
    /// # Errors
    /// Fails when the database cannot be read or written.
    pub async fn replay_matching(
        &self,
        filter: &DeliveryFilter,
        dry_run: bool,
    ) -> anyhow::Result<Vec<i64>> {
        self.dead_matching(filter, dry_run, "replaying", |ids| {
            format!(
                "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at_ms = {}
                 WHERE status = 'dead' AND id IN (SELECT value FROM json_each('{ids}'))",
                now_ms()
            )
        })
        .await
    }

    /// Deletes every dead delivery matching `filter` (its status is ignored: only dead ones
    /// are purged) and returns their ids; with `dry_run`, only returns the ids. A purged
    /// letter no longer holds back its key. The message stays until retention removes it.
    ///
    /// # Errors
    /// Fails when the database cannot be read or written.
    pub async fn purge_matching(
        &self,
        filter: &DeliveryFilter,
        dry_run: bool,
    ) -> anyhow::Result<Vec<i64>> {
        self.dead_matching(filter, dry_run, "purging", |ids| {
            format!(
                "DELETE FROM deliveries
                 WHERE status = 'dead' AND id IN (SELECT value FROM json_each('{ids}'))"
            )
        })
        .await
    }

    /// Selects the dead deliveries matching `filter` and, unless `dry_run`, runs the
    /// statement `change` builds from their ids (a JSON array of integers), in one
    /// transaction with the selection.
    async fn dead_matching(
        &self,
        filter: &DeliveryFilter,
        dry_run: bool,
        what: &str,
        change: impl FnOnce(&str) -> String,
    ) -> anyhow::Result<Vec<i64>> {
        let filter = DeliveryFilter {
            status: Some(DeliveryStatus::Dead),
            ..filter.clone()
        };
        let select = format!(
            "SELECT d.id FROM deliveries d JOIN messages m ON m.seq = d.message_seq
             WHERE {FILTER} ORDER BY d.id LIMIT ?5"
        );
        let limit = filter.limit.map_or(-1, i64::from);
        if dry_run {
            return bind_filter!(sqlx::query_scalar(&select), filter)
                .bind(limit)
                .fetch_all(self.reader())
                .await
                .with_context(|| format!("selecting dead letters for {what}"));
        }
        let mut tx = self
            .writer()
            .begin()
            .await
            .with_context(|| format!("{what} dead letters"))?;
        let ids: Vec<i64> = bind_filter!(sqlx::query_scalar(&select), filter)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await
            .with_context(|| format!("selecting dead letters for {what}"))?;
        // The ids are integers read from the database, so formatting them in is safe.
        let json = serde_json::to_string(&ids)?;
        sqlx::query(&change(&json))
            .execute(&mut *tx)
            .await
            .with_context(|| format!("{what} dead letters"))?;
        tx.commit()
            .await
            .with_context(|| format!("{what} dead letters"))?;
        Ok(ids)
    }

    /// Counts by status, and the failed unfinished deliveries by error class.
    ///
    /// # Errors
    /// Fails when the database cannot be read.
    pub async fn stats(&self) -> anyhow::Result<BusStats> {
        let mut stats = BusStats::default();
        for status in ["pending", "done", "dead"] {
            stats.by_status.insert(status.to_owned(), 0);
        }
        let rows = sqlx::query("SELECT status, COUNT(*) AS n FROM deliveries GROUP BY status")
            .fetch_all(self.reader())
            .await
            .context("counting deliveries")?;
        for row in rows {
            stats.by_status.insert(row.get("status"), row.get("n"));
        }
        let rows = sqlx::query(
            "SELECT error_class, status, COUNT(*) AS n FROM deliveries
             WHERE status <> 'done' AND error_class IS NOT NULL AND attempts > 0
                OR status = 'dead'
             GROUP BY error_class, status",
        )
        .fetch_all(self.reader())
        .await
        .context("counting failed deliveries")?;
        for row in rows {
            let class: Option<String> = row.get("error_class");
            stats
                .by_error_class
                .entry(class.unwrap_or_else(|| "unknown".into()))
                .or_default()
                .insert(row.get("status"), row.get("n"));
        }
        Ok(stats)
    }
}

fn due_from_row(row: &SqliteRow) -> anyhow::Result<DueDelivery> {
    let headers: String = row.get("headers");
    Ok(DueDelivery {
        delivery_id: row.get("id"),
        subscriber: row.get("subscriber"),
        attempts: row.get::<i64, _>("attempts") as u32,
        message_id: row.get("message_id"),
        message_seq: row.get("seq"),
        kind: row.get("kind"),
        partition_key: row.get("partition_key"),
        tenant_id: row.get("tenant_id"),
        correlation_id: row.get("correlation_id"),
        causation_id: row.get("causation_id"),
        actor: row.get("actor"),
        schema_version: row.get::<i64, _>("schema_version") as u32,
        occurred_at_ms: row.get("occurred_at_ms"),
        headers: serde_json::from_str(&headers).context("message headers are not valid JSON")?,
        payload: row.get("payload"),
    })
}

fn view_from_row(row: &SqliteRow) -> DeliveryView {
    let payload: Vec<u8> = row.get("payload");
    DeliveryView {
        id: row.get("id"),
        status: DeliveryStatus::parse(row.get("status")),
        subscriber: row.get("subscriber"),
        message_id: row.get("message_id"),
        kind: row.get("kind"),
        partition_key: row.get("partition_key"),
        correlation_id: row.get("correlation_id"),
        emitted_by: row.get("emitted_by"),
        attempts: row.get::<i64, _>("attempts") as u32,
        next_attempt_at_ms: row.get("next_attempt_at_ms"),
        error_class: row.get("error_class"),
        last_error: row.get("last_error"),
        first_failed_at_ms: row.get("first_failed_at_ms"),
        last_failed_at_ms: row.get("last_failed_at_ms"),
        handled_by: row.get("handled_by"),
        occurred_at_ms: row.get("occurred_at_ms"),
        payload: serde_json::from_slice(&payload).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&payload).into_owned())
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{ErrorClass, HandlerFailure};
    use crate::store::test_support::{event, temp_store as store};
    use crate::store::{Applied, DeliveryFate, OutboxEvent, StateChanges, Write};

    async fn emit(store: &Store, events: Vec<OutboxEvent>) {
        let write = Write::Command {
            changes: StateChanges::default(),
            outbox: events,
            idempotency: None,
        };
        assert_eq!(
            store.apply_batch(&[write]).await.unwrap(),
            [Applied::Committed]
        );
    }

    async fn fail(store: &Store, id: i64, attempt: u32, class: ErrorClass, fate: DeliveryFate) {
        let write = Write::DeliveryFailed {
            delivery_id: id,
            attempt,
            handled_by: "s@1".into(),
            failure: HandlerFailure::new(class, "s", "boom"),
            fate,
        };
        assert_eq!(
            store.apply_batch(&[write]).await.unwrap(),
            [Applied::Committed]
        );
    }

    async fn due_keys(store: &Store, skip: &[String]) -> Vec<(i64, String)> {
        store
            .due_deliveries(&["s".into()], skip, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|d| (d.delivery_id, d.partition_key.unwrap()))
            .collect()
    }

    #[tokio::test]
    async fn skip_parks_a_failed_delivery_and_strict_does_not() {
        let (_dir, store) = store().await;
        emit(
            &store,
            vec![event("e", "k", &["s"]), event("e", "k", &["s"])],
        )
        .await;
        let skip = vec!["s".to_owned()];
        let due = due_keys(&store, &skip).await;
        assert_eq!(
            due.len(),
            1,
            "before any failure both policies wait: {due:?}"
        );
        let first = due[0].0;
        // A retry due in the future: under skip the second is due now; under strict not.
        fail(
            &store,
            first,
            1,
            ErrorClass::Retryable,
            DeliveryFate::RetryAt(now_ms() + 60_000),
        )
        .await;
        assert!(due_keys(&store, &[]).await.is_empty());
        let due = due_keys(&store, &skip).await;
        assert_eq!(due.len(), 1);
        assert_ne!(due[0].0, first);
        // Dead: still held back under strict, still parked under skip.
        fail(&store, first, 2, ErrorClass::Permanent, DeliveryFate::Dead).await;
        assert!(due_keys(&store, &[]).await.is_empty());
        assert_eq!(due_keys(&store, &skip).await.len(), 1);
        // A purged letter releases a strict key.
        let filter = DeliveryFilter::default();
        assert_eq!(store.purge_matching(&filter, true).await.unwrap(), [first]);
        assert_eq!(store.stats().await.unwrap().by_status["dead"], 1);
        assert_eq!(store.purge_matching(&filter, false).await.unwrap(), [first]);
        assert_eq!(due_keys(&store, &[]).await.len(), 1);
    }

    #[tokio::test]
    async fn replay_all_and_stats_follow_the_filters() {
        let (_dir, store) = store().await;
        emit(
            &store,
            vec![
                event("a.x", "1", &["s"]),
                event("a.y", "2", &["s"]),
                event("b.x", "3", &["s"]),
            ],
        )
        .await;
        let due = due_keys(&store, &[]).await;
        let classes = [
            ErrorClass::Permanent,
            ErrorClass::Retryable,
            ErrorClass::Permanent,
        ];
        for ((id, _), class) in due.iter().zip(classes) {
            fail(&store, *id, 1, class, DeliveryFate::Dead).await;
        }
        let stats = store.stats().await.unwrap();
        assert_eq!(stats.by_status["dead"], 3);
        assert_eq!(stats.by_status["pending"], 0);
        assert_eq!(stats.by_error_class["permanent"]["dead"], 2);
        assert_eq!(stats.by_error_class["retryable"]["dead"], 1);

        let filter = |kind: &str, class: Option<&str>| DeliveryFilter {
            kind: Some(kind.into()),
            error_class: class.map(str::to_owned),
            ..DeliveryFilter::default()
        };
        let a_permanent = filter("a.*", Some("permanent"));
        assert_eq!(
            store.replay_matching(&a_permanent, true).await.unwrap(),
            [due[0].0]
        );
        assert_eq!(store.stats().await.unwrap().by_status["dead"], 3, "dry run");
        assert_eq!(
            store.replay_matching(&a_permanent, false).await.unwrap(),
            [due[0].0]
        );
        assert!(
            store
                .replay_matching(&a_permanent, false)
                .await
                .unwrap()
                .is_empty(),
            "only dead letters are replayed"
        );
        let replayed = store.delivery(due[0].0).await.unwrap().unwrap();
        assert_eq!(replayed.view.status, DeliveryStatus::Pending);
        assert_eq!(replayed.view.attempts, 0);
        assert_eq!(replayed.view.error_class.as_deref(), Some("permanent"));
        let listed = store
            .list_deliveries(&DeliveryFilter {
                status: Some(DeliveryStatus::Dead),
                ..filter("*.x", None)
            })
            .await
            .unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].kind, "b.x");
        assert!(store.delivery(12345).await.unwrap().is_none());
    }
}
