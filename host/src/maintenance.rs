//! The background maintenance task: deletes expired idempotency keys, then `done` deliveries
//! older than the retention, then messages left without deliveries — each in small batches,
//! each batch its own short transaction, so the writer is never held for long. When several
//! hosts share a PostgreSQL database, only the holder of partition 0's lease runs it.

use crate::config::RetentionConfig;
use crate::partitions::PartitionLeases;
use crate::store::{Store, now_ms};
use std::sync::Arc;

/// Rows removed by one maintenance pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cleaned {
    pub idempotency_keys: u64,
    pub deliveries: u64,
    pub messages: u64,
}

/// The partition whose holder runs the maintenance when several hosts share the database.
const MAINTENANCE_PARTITION: i64 = 0;

/// Starts the task: one pass at once, then one every `retention.interval`; with `leases`, a
/// pass runs only while this host holds [`MAINTENANCE_PARTITION`].
pub fn spawn(
    store: Store,
    retention: RetentionConfig,
    leases: Option<Arc<PartitionLeases>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if leases
                .as_ref()
                .is_some_and(|leases| !leases.holds(MAINTENANCE_PARTITION))
            {
                tokio::time::sleep(retention.interval).await;
                continue;
            }
            match run_once(&store, &retention, now_ms()).await {
                Ok(cleaned) if cleaned != Cleaned::default() => {
                    tracing::info!(?cleaned, "maintenance pass removed old rows");
                }
                Ok(_) => {}
                Err(error) => tracing::warn!("maintenance pass failed: {error:#}"),
            }
            tokio::time::sleep(retention.interval).await;
        }
    })
}

/// One pass as of `now`: everything expired or past retention is deleted, batch by batch.
///
/// # Errors
/// Fails when a batch cannot be deleted; earlier batches stay deleted.
pub async fn run_once(
    store: &Store,
    retention: &RetentionConfig,
    now: i64,
) -> anyhow::Result<Cleaned> {
    let batch = retention.batch_size;
    let before = now - retention.delivered.as_millis() as i64;
    let mut cleaned = Cleaned::default();
    loop {
        let n = store.delete_expired_idempotency(now, batch).await?;
        cleaned.idempotency_keys += n;
        if n < u64::from(batch) {
            break;
        }
        // Let the committer take the writer between two batches.
        tokio::task::yield_now().await;
    }
    loop {
        let n = store.delete_done_deliveries(before, batch).await?;
        cleaned.deliveries += n;
        if n < u64::from(batch) {
            break;
        }
        tokio::task::yield_now().await;
    }
    loop {
        let n = store.delete_finished_messages(before, batch).await?;
        cleaned.messages += n;
        if n < u64::from(batch) {
            break;
        }
        tokio::task::yield_now().await;
    }
    Ok(cleaned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::{
        event, every_partition, idempotency_record, on_every_backend,
    };
    use crate::store::{Applied, OutboxEvent, StateChanges, Write};
    use std::time::Duration;

    fn command(outbox: Vec<OutboxEvent>, key: Option<(&str, i64)>) -> Write {
        Write::Command {
            changes: StateChanges::default(),
            outbox,
            idempotency: key.map(|(key, expires_at_ms)| idempotency_record(key, expires_at_ms)),
        }
    }

    on_every_backend!(a_pass_removes_only_what_is_expired_or_past_retention_in_batches);

    async fn a_pass_removes_only_what_is_expired_or_past_retention_in_batches(store: &Store) {
        let now = now_ms();
        // 5 expired keys and 1 live one; 7 messages to `s` (5 get done, 2 stay pending);
        // 1 message with no subscriber at all.
        let mut batch: Vec<Write> = (0..5)
            .map(|i| command(vec![], Some((&format!("old-{i}"), now - 1))))
            .collect();
        batch.push(command(vec![], Some(("live", now + 60_000))));
        batch.push(command(
            (0..7)
                .map(|i| event("e", &format!("k{i}"), &["s"]))
                .collect(),
            None,
        ));
        batch.push(command(vec![event("e", "lonely", &[])], None));
        store.apply_batch(&batch).await.unwrap();
        let due = store
            .due_deliveries(&["s".into()], &[], &[], Some(&every_partition()), 100)
            .await
            .unwrap();
        let done: Vec<Write> = due[..5]
            .iter()
            .map(|d| Write::Delivered {
                delivery_id: d.delivery_id,
                attempt: 1,
                lease: None,
                handled_by: "s@1".into(),
                changes: StateChanges::default(),
                outbox: vec![],
            })
            .collect();
        assert!(
            store
                .apply_batch(&done)
                .await
                .unwrap()
                .iter()
                .all(|a| *a == Applied::Committed)
        );

        let tiny = RetentionConfig {
            delivered: Duration::from_millis(1),
            batch_size: 2,
            interval: Duration::from_millis(1),
        };
        // Nothing is past a day's retention yet; only the expired keys go.
        let day = RetentionConfig {
            delivered: Duration::from_secs(86_400),
            ..tiny
        };
        let cleaned = run_once(store, &day, now_ms()).await.unwrap();
        assert_eq!(
            cleaned,
            Cleaned {
                idempotency_keys: 5,
                deliveries: 0,
                messages: 0
            }
        );
        assert!(store.idempotency_record("live").await.unwrap().is_some());

        // With a tiny retention, as of a moment later: the done rows and their messages go,
        // the pending ones and their messages stay.
        let later = now_ms() + 10;
        let cleaned = run_once(store, &tiny, later).await.unwrap();
        assert_eq!(
            cleaned,
            Cleaned {
                idempotency_keys: 0,
                deliveries: 5,
                messages: 6
            }
        );
        let left = store
            .due_deliveries(&["s".into()], &[], &[], Some(&every_partition()), 100)
            .await
            .unwrap();
        assert_eq!(left.len(), 2, "the pending deliveries are untouched");
        let stats = store.stats().await.unwrap();
        assert_eq!(stats.by_status["done"], 0);
        assert_eq!(stats.by_status["pending"], 2);
        assert_eq!(
            run_once(store, &tiny, later).await.unwrap(),
            Cleaned::default()
        );
    }
}
