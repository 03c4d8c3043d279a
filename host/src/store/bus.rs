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
    pub limit: Option<u32>,
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
const DUE_QUERY: &str = "
    SELECT d.id, d.subscriber, d.attempts, m.id AS message_id, m.seq, m.kind, m.partition_key,
           m.tenant_id, m.correlation_id, m.causation_id, m.actor, m.schema_version,
           m.occurred_at_ms, m.headers, m.payload
    FROM deliveries d JOIN messages m ON m.seq = d.message_seq
    WHERE d.status = 'pending' AND d.next_attempt_at_ms <= ?
      AND d.subscriber IN (SELECT value FROM json_each(?))
      AND (d.partition_key IS NULL OR NOT EXISTS (
            SELECT 1 FROM deliveries e
            WHERE e.subscriber = d.subscriber AND e.partition_key = d.partition_key
              AND e.status <> 'done' AND e.message_seq < d.message_seq))
    ORDER BY d.message_seq
    LIMIT ?";

impl Store {
    /// Pending deliveries that are due, for loaded `subscribers`, whose partition key has no
    /// earlier unfinished delivery for the same subscriber (strict per-key order: a pending
    /// retry or a dead letter holds back the later messages of its key until it is done or
    /// replayed). Oldest first.
    ///
    /// # Errors
    /// Fails when the database cannot be read.
    pub async fn due_deliveries(
        &self,
        subscribers: &[String],
        limit: u32,
    ) -> anyhow::Result<Vec<DueDelivery>> {
        let rows = sqlx::query(DUE_QUERY)
            .bind(now_ms())
            .bind(serde_json::to_string(subscribers)?)
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

    /// Deliveries matching `filter`, oldest first.
    ///
    /// # Errors
    /// Fails when the database cannot be read.
    pub async fn list_deliveries(
        &self,
        filter: &DeliveryFilter,
    ) -> anyhow::Result<Vec<DeliveryView>> {
        let rows = sqlx::query(
            "SELECT d.id, d.status, d.subscriber, m.id AS message_id, m.kind, m.partition_key,
                    m.correlation_id, m.emitted_by, d.attempts, d.next_attempt_at_ms, d.error_class,
                    d.last_error, d.first_failed_at_ms, d.last_failed_at_ms, d.handled_by,
                    m.occurred_at_ms, m.payload
             FROM deliveries d JOIN messages m ON m.seq = d.message_seq
             WHERE (?1 IS NULL OR d.status = ?1) AND (?2 IS NULL OR d.subscriber = ?2)
             ORDER BY d.id
             LIMIT ?3",
        )
        .bind(filter.status.map(DeliveryStatus::as_str))
        .bind(&filter.subscriber)
        .bind(filter.limit.map_or(-1, i64::from))
        .fetch_all(self.reader())
        .await
        .context("listing deliveries")?;
        Ok(rows.iter().map(view_from_row).collect())
    }

    /// Puts a dead delivery back in the queue with its attempts reset, due now. Returns false
    /// when there is no dead delivery with this id.
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
