//! Every message of one correlation id with each of its deliveries, as `host trace` reads
//! them (the tree is built by [`crate::trace`]).

use super::queue::DeliveryStatus;
use serde::{Deserialize, Serialize};

/// One message of a traced request, in commit order, with its deliveries.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct TracedMessage {
    pub id: String,
    pub kind: String,
    pub partition_key: Option<String>,
    /// The message (or command) whose handling emitted it.
    pub causation_id: Option<String>,
    /// The plugin whose unit of work emitted it.
    pub emitted_by: String,
    pub occurred_at_ms: i64,
    /// 1: emitted by a command's handler.
    pub depth: u32,
    pub tenant_id: Option<String>,
    pub actor: Option<String>,
    pub deliveries: Vec<TracedDelivery>,
}

/// One subscriber's delivery of a traced message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TracedDelivery {
    pub id: i64,
    pub subscriber: String,
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub next_attempt_at_ms: i64,
    pub error_class: Option<String>,
    pub last_error: Option<String>,
    pub first_failed_at_ms: Option<i64>,
    pub last_failed_at_ms: Option<i64>,
    pub completed_at_ms: Option<i64>,
    /// The plugin build that completed it (or last failed it).
    pub handled_by: Option<String>,
}

/// Binds $1 the correlation id, $2 the most messages to read.
pub(super) const TRACE: &str = "SELECT m.seq, m.id AS message_id, m.kind, m.partition_key,
            m.causation_id, m.emitted_by, m.occurred_at_ms, m.depth, m.tenant_id, m.actor,
            d.id AS delivery_id, d.subscriber, d.status, d.attempts, d.next_attempt_at_ms,
            d.error_class, d.last_error, d.first_failed_at_ms, d.last_failed_at_ms,
            d.completed_at_ms, d.handled_by
     FROM (SELECT * FROM messages WHERE correlation_id = $1 ORDER BY seq LIMIT $2) m
     LEFT JOIN deliveries d ON d.message_seq = m.seq
     ORDER BY m.seq, d.id";

/// Binds $1 a message id.
pub(super) const CORRELATION_OF: &str = "SELECT correlation_id FROM messages WHERE id = $1";

/// A row of [`TRACE`]: a message, and one of its deliveries when it has any.
#[derive(sqlx::FromRow)]
pub(super) struct TraceRow {
    seq: i64,
    message_id: String,
    kind: String,
    partition_key: Option<String>,
    causation_id: Option<String>,
    emitted_by: String,
    occurred_at_ms: i64,
    depth: i64,
    tenant_id: Option<String>,
    actor: Option<String>,
    delivery_id: Option<i64>,
    subscriber: Option<String>,
    status: Option<String>,
    attempts: Option<i64>,
    next_attempt_at_ms: Option<i64>,
    error_class: Option<String>,
    last_error: Option<String>,
    first_failed_at_ms: Option<i64>,
    last_failed_at_ms: Option<i64>,
    completed_at_ms: Option<i64>,
    handled_by: Option<String>,
}

/// Folds [`TRACE`]'s rows (ordered by message, then delivery) into messages.
pub(super) fn messages(rows: Vec<TraceRow>) -> Vec<TracedMessage> {
    let mut messages: Vec<(i64, TracedMessage)> = Vec::new();
    for row in rows {
        if messages.last().is_none_or(|(seq, _)| *seq != row.seq) {
            messages.push((
                row.seq,
                TracedMessage {
                    id: row.message_id,
                    kind: row.kind,
                    partition_key: row.partition_key,
                    causation_id: row.causation_id,
                    emitted_by: row.emitted_by,
                    occurred_at_ms: row.occurred_at_ms,
                    depth: u32::try_from(row.depth).unwrap_or(u32::MAX),
                    tenant_id: row.tenant_id,
                    actor: row.actor,
                    deliveries: Vec::new(),
                },
            ));
        }
        let (Some(id), Some(subscriber), Some(status)) =
            (row.delivery_id, row.subscriber, row.status)
        else {
            continue;
        };
        let message = &mut messages.last_mut().expect("pushed above").1;
        message.deliveries.push(TracedDelivery {
            id,
            subscriber,
            status: DeliveryStatus::parse(&status),
            attempts: u32::try_from(row.attempts.unwrap_or(0)).unwrap_or(u32::MAX),
            next_attempt_at_ms: row.next_attempt_at_ms.unwrap_or(0),
            error_class: row.error_class,
            last_error: row.last_error,
            first_failed_at_ms: row.first_failed_at_ms,
            last_failed_at_ms: row.last_failed_at_ms,
            completed_at_ms: row.completed_at_ms,
            handled_by: row.handled_by,
        });
    }
    messages.into_iter().map(|(_, message)| message).collect()
}
