//! Applying committed batches: the one place the host's durable writes happen.
//!
//! A batch is one transaction with one fsync. Each item makes its checks (versions read,
//! idempotency key free, delivery still pending) before it writes anything, and the check that
//! is itself a write (the idempotency insert, the delivery guard) writes only when it passes —
//! so an item that fails its checks leaves nothing behind and the rest of the batch still
//! commits, without a savepoint per item.

use super::{StateVersion, Store, now_ms};
use crate::error::HandlerFailure;
use crate::fault::{self, FaultPoint};
use anyhow::Context;
use sqlx::{Row, SqliteConnection};

/// The state part of a unit of work: what it read (and at which version) and what it writes.
#[derive(Debug, Clone, Default)]
pub struct StateChanges {
    pub plugin: String,
    /// Versions that must still be current for the writes to be valid.
    pub reads: Vec<(String, StateVersion)>,
    /// `None` deletes the key.
    pub writes: Vec<(String, Option<Vec<u8>>)>,
}

/// An event ready for the outbox: fully enveloped and addressed to its subscribers.
#[derive(Debug, Clone)]
pub struct OutboxEvent {
    pub id: String,
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
    pub emitted_by: String,
    /// Plugins whose event patterns match `kind`; one delivery row each.
    pub subscribers: Vec<String>,
}

/// The stored first outcome of an idempotent command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    pub key: String,
    pub command_kind: String,
    /// SHA-256 of kind and payload: the same key with another request is refused.
    pub request_hash: String,
    pub status: u16,
    pub body: Vec<u8>,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
}

/// What happens to a delivery whose attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryFate {
    /// Try again at this time (ms since the epoch).
    RetryAt(i64),
    /// Move it to the dead-letter queue.
    Dead,
}

/// One unit of work for the writer.
#[derive(Debug, Clone)]
pub enum Write {
    /// A command's effects, and its idempotency record when it carried a key. A rejected
    /// command with a key commits the record alone.
    Command {
        changes: StateChanges,
        outbox: Vec<OutboxEvent>,
        idempotency: Option<IdempotencyRecord>,
    },
    /// A subscriber's effects together with its inbox mark (the delivery turning `done`).
    Delivered {
        delivery_id: i64,
        /// The attempt that succeeded; guards against a concurrent duplicate run.
        attempt: u32,
        handled_by: String,
        changes: StateChanges,
        outbox: Vec<OutboxEvent>,
    },
    /// A failed delivery attempt: the error is recorded, nothing of the handler's is.
    DeliveryFailed {
        delivery_id: i64,
        attempt: u32,
        /// The plugin build that failed it (see [`crate::plugin::Plugin::identity`]).
        handled_by: String,
        failure: HandlerFailure,
        fate: DeliveryFate,
    },
}

/// The result of one item of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Committed,
    /// A key read by the handler changed before commit; re-run the handler.
    Conflict,
    /// Another request committed this idempotency key first; replay its outcome.
    IdempotencyTaken,
    /// The delivery is no longer pending at this attempt (already done, replayed, dead).
    DeliveryStale,
}

impl Store {
    /// Applies `batch` in one transaction and returns one result per item, in order.
    ///
    /// # Errors
    /// Fails, committing nothing, when the database itself fails.
    pub async fn apply_batch(&self, batch: &[Write]) -> anyhow::Result<Vec<Applied>> {
        let mut conn = self
            .writer()
            .acquire()
            .await
            .context("acquiring the writer")?;
        // IMMEDIATE takes the write lock up front instead of failing at the first write when
        // another process holds it.
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut *conn)
            .await
            .context("BEGIN")?;
        match apply_items(&mut conn, batch).await {
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
}

async fn apply_items(conn: &mut SqliteConnection, batch: &[Write]) -> anyhow::Result<Vec<Applied>> {
    let now = now_ms();
    let mut results = Vec::with_capacity(batch.len());
    for item in batch {
        let applied = apply_item(conn, item, now).await?;
        results.push(applied);
    }
    Ok(results)
}

async fn apply_item(
    conn: &mut SqliteConnection,
    item: &Write,
    now: i64,
) -> anyhow::Result<Applied> {
    match item {
        Write::Command {
            changes,
            outbox,
            idempotency,
        } => {
            if !reads_are_current(conn, changes).await? {
                return Ok(Applied::Conflict);
            }
            if let Some(record) = idempotency {
                let taken = sqlx::query(
                    "INSERT INTO idempotency
                       (key, command_kind, request_hash, status, body, created_at_ms, expires_at_ms)
                     VALUES (?, ?, ?, ?, ?, ?, ?)
                     ON CONFLICT (key) DO UPDATE SET
                       command_kind = excluded.command_kind, request_hash = excluded.request_hash,
                       status = excluded.status, body = excluded.body,
                       created_at_ms = excluded.created_at_ms, expires_at_ms = excluded.expires_at_ms
                     WHERE idempotency.expires_at_ms <= ?",
                )
                .bind(&record.key)
                .bind(&record.command_kind)
                .bind(&record.request_hash)
                .bind(record.status as i64)
                .bind(&record.body)
                .bind(record.created_at_ms)
                .bind(record.expires_at_ms)
                .bind(now)
                .execute(&mut *conn)
                .await?
                .rows_affected()
                    == 0;
                if taken {
                    return Ok(Applied::IdempotencyTaken);
                }
            }
            write_state(conn, changes).await?;
            insert_outbox(conn, outbox, now).await?;
            Ok(Applied::Committed)
        }
        Write::Delivered {
            delivery_id,
            attempt,
            handled_by,
            changes,
            outbox,
        } => {
            if !reads_are_current(conn, changes).await? {
                return Ok(Applied::Conflict);
            }
            let marked = sqlx::query(
                "UPDATE deliveries
                 SET status = 'done', attempts = ?, handled_by = ?, completed_at_ms = ?
                 WHERE id = ? AND status = 'pending' AND attempts = ?",
            )
            .bind(*attempt as i64)
            .bind(handled_by)
            .bind(now)
            .bind(*delivery_id)
            .bind(*attempt as i64 - 1)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            if marked == 0 {
                return Ok(Applied::DeliveryStale);
            }
            write_state(conn, changes).await?;
            insert_outbox(conn, outbox, now).await?;
            Ok(Applied::Committed)
        }
        Write::DeliveryFailed {
            delivery_id,
            attempt,
            handled_by,
            failure,
            fate,
        } => {
            let (status, next_attempt) = match fate {
                DeliveryFate::RetryAt(at) => ("pending", *at),
                DeliveryFate::Dead => ("dead", now),
            };
            let updated = sqlx::query(
                "UPDATE deliveries
                 SET status = ?, attempts = ?, next_attempt_at_ms = ?, last_error = ?,
                     error_class = ?, first_failed_at_ms = COALESCE(first_failed_at_ms, ?),
                     last_failed_at_ms = ?, handled_by = ?
                 WHERE id = ? AND status = 'pending' AND attempts = ?",
            )
            .bind(status)
            .bind(*attempt as i64)
            .bind(next_attempt)
            .bind(&failure.message)
            .bind(failure.class.as_str())
            .bind(now)
            .bind(now)
            .bind(handled_by)
            .bind(*delivery_id)
            .bind(*attempt as i64 - 1)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            Ok(if updated == 0 {
                Applied::DeliveryStale
            } else {
                Applied::Committed
            })
        }
    }
}

/// Whether every version the handler read is still the current one.
async fn reads_are_current(
    conn: &mut SqliteConnection,
    changes: &StateChanges,
) -> anyhow::Result<bool> {
    for (key, seen) in &changes.reads {
        let current: StateVersion =
            sqlx::query("SELECT version FROM state WHERE plugin = ? AND key = ?")
                .bind(&changes.plugin)
                .bind(key)
                .fetch_optional(&mut *conn)
                .await?
                .map_or(0, |row| row.get(0));
        if current != *seen {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Applies the state writes; every write bumps the key's version.
async fn write_state(conn: &mut SqliteConnection, changes: &StateChanges) -> anyhow::Result<()> {
    for (key, value) in &changes.writes {
        sqlx::query(
            "INSERT INTO state (plugin, key, value, version) VALUES (?, ?, ?, 1)
             ON CONFLICT (plugin, key) DO UPDATE SET value = excluded.value, version = version + 1",
        )
        .bind(&changes.plugin)
        .bind(key)
        .bind(value.as_deref())
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

async fn insert_outbox(
    conn: &mut SqliteConnection,
    outbox: &[OutboxEvent],
    now: i64,
) -> anyhow::Result<()> {
    for event in outbox {
        let headers = serde_json::to_string(&event.headers)?;
        let seq: i64 = sqlx::query(
            "INSERT INTO messages (id, kind, partition_key, tenant_id, correlation_id, causation_id,
                                   actor, schema_version, occurred_at_ms, headers, payload, emitted_by)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING seq",
        )
        .bind(&event.id)
        .bind(&event.kind)
        .bind(&event.partition_key)
        .bind(&event.tenant_id)
        .bind(&event.correlation_id)
        .bind(&event.causation_id)
        .bind(&event.actor)
        .bind(event.schema_version as i64)
        .bind(event.occurred_at_ms)
        .bind(headers)
        .bind(&event.payload)
        .bind(&event.emitted_by)
        .fetch_one(&mut *conn)
        .await?
        .get(0);
        for subscriber in &event.subscribers {
            sqlx::query(
                "INSERT INTO deliveries (message_seq, subscriber, partition_key, status, next_attempt_at_ms)
                 VALUES (?, ?, ?, 'pending', ?)",
            )
            .bind(seq)
            .bind(subscriber)
            .bind(&event.partition_key)
            .bind(now)
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorClass;
    use crate::store::test_support::{event, temp_store as store};

    fn put(plugin: &str, key: &str, value: &str, reads: Vec<(String, StateVersion)>) -> Write {
        Write::Command {
            changes: StateChanges {
                plugin: plugin.into(),
                reads,
                writes: vec![(key.into(), Some(value.as_bytes().to_vec()))],
            },
            outbox: Vec::new(),
            idempotency: None,
        }
    }

    #[tokio::test]
    async fn a_stale_read_conflicts_alone_and_the_rest_of_the_batch_commits() {
        let (_dir, store) = store().await;
        store
            .apply_batch(&[put("p", "k", "1", vec![])])
            .await
            .unwrap();
        let (_, version) = store.read_state("p", "k").await.unwrap();
        assert_eq!(version, 1);
        let results = store
            .apply_batch(&[
                put("p", "k", "2", vec![("k".into(), 1)]),
                // Read at version 1 too, but the first item already moved it to 2.
                put("p", "k", "3", vec![("k".into(), 1)]),
                put("p", "other", "x", vec![("other".into(), 0)]),
            ])
            .await
            .unwrap();
        assert_eq!(
            results,
            [Applied::Committed, Applied::Conflict, Applied::Committed]
        );
        assert_eq!(
            store.read_state("p", "k").await.unwrap(),
            (Some(b"2".to_vec()), 2)
        );
        assert_eq!(
            store.read_state("p", "other").await.unwrap(),
            (Some(b"x".to_vec()), 1)
        );
    }

    #[tokio::test]
    async fn a_delete_leaves_a_tombstone_with_a_new_version() {
        let (_dir, store) = store().await;
        store
            .apply_batch(&[put("p", "k", "1", vec![])])
            .await
            .unwrap();
        let delete = Write::Command {
            changes: StateChanges {
                plugin: "p".into(),
                reads: vec![],
                writes: vec![("k".into(), None)],
            },
            outbox: Vec::new(),
            idempotency: None,
        };
        store.apply_batch(&[delete]).await.unwrap();
        assert_eq!(store.read_state("p", "k").await.unwrap(), (None, 2));
        // A reader that saw the key absent before it ever existed (version 0) now conflicts.
        let results = store
            .apply_batch(&[put("p", "k", "y", vec![("k".into(), 0)])])
            .await
            .unwrap();
        assert_eq!(results, [Applied::Conflict]);
    }

    #[tokio::test]
    async fn state_is_namespaced_by_plugin() {
        let (_dir, store) = store().await;
        store
            .apply_batch(&[put("a", "k", "from a", vec![])])
            .await
            .unwrap();
        assert_eq!(store.read_state("b", "k").await.unwrap(), (None, 0));
    }

    #[tokio::test]
    async fn an_idempotency_key_is_taken_once_until_it_expires() {
        let (_dir, store) = store().await;
        let record = |expires_at_ms| IdempotencyRecord {
            key: "key".into(),
            command_kind: "c".into(),
            request_hash: "h".into(),
            status: 200,
            body: b"{}".to_vec(),
            created_at_ms: now_ms(),
            expires_at_ms,
        };
        let command = |record| Write::Command {
            changes: StateChanges::default(),
            outbox: vec![],
            idempotency: Some(record),
        };
        let results = store
            .apply_batch(&[
                command(record(now_ms() - 1)),
                command(record(now_ms() + 60_000)),
            ])
            .await
            .unwrap();
        // The first record is already expired, so the second may take the key over.
        assert_eq!(results, [Applied::Committed, Applied::Committed]);
        let results = store
            .apply_batch(&[command(record(now_ms() + 60_000))])
            .await
            .unwrap();
        assert_eq!(results, [Applied::IdempotencyTaken]);
        assert!(store.idempotency_record("key").await.unwrap().is_some());
    }

    #[tokio::test]
    async fn a_delivery_commits_its_effects_once() {
        let (_dir, store) = store().await;
        let emit = Write::Command {
            changes: StateChanges::default(),
            outbox: vec![event("e", "k1", &["s"])],
            idempotency: None,
        };
        store.apply_batch(&[emit]).await.unwrap();
        let due = store.due_deliveries(&["s".into()], &[], 10).await.unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].headers, vec![("h".to_owned(), "v".to_owned())]);
        let delivered = || Write::Delivered {
            delivery_id: due[0].delivery_id,
            attempt: 1,
            handled_by: "s@1".into(),
            changes: StateChanges {
                plugin: "s".into(),
                reads: vec![],
                writes: vec![("count".into(), Some(b"1".to_vec()))],
            },
            outbox: vec![],
        };
        let results = store
            .apply_batch(&[delivered(), delivered()])
            .await
            .unwrap();
        assert_eq!(results, [Applied::Committed, Applied::DeliveryStale]);
        // The duplicate's write was rolled back: version 1, not 2.
        assert_eq!(store.read_state("s", "count").await.unwrap().1, 1);
        assert!(
            store
                .due_deliveries(&["s".into()], &[], 10)
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn a_dead_letter_holds_back_its_key_until_replayed() {
        let (_dir, store) = store().await;
        let emit = Write::Command {
            changes: StateChanges::default(),
            outbox: vec![
                event("e", "k1", &["s"]),
                event("e", "k1", &["s"]),
                event("e", "k2", &["s"]),
            ],
            idempotency: None,
        };
        store.apply_batch(&[emit]).await.unwrap();
        let due = store.due_deliveries(&["s".into()], &[], 10).await.unwrap();
        let keys: Vec<_> = due
            .iter()
            .map(|d| d.partition_key.clone().unwrap())
            .collect();
        assert_eq!(
            keys,
            ["k1", "k2"],
            "the second k1 message waits for the first"
        );
        let first = due[0].delivery_id;
        let failure = HandlerFailure::new(ErrorClass::Permanent, "s", "boom");
        let dead = Write::DeliveryFailed {
            delivery_id: first,
            attempt: 1,
            handled_by: "s@1".into(),
            failure,
            fate: DeliveryFate::Dead,
        };
        store.apply_batch(&[dead]).await.unwrap();
        let due = store.due_deliveries(&["s".into()], &[], 10).await.unwrap();
        assert_eq!(
            due.len(),
            1,
            "k1 is held back by its dead letter, k2 is due"
        );
        assert_eq!(due[0].partition_key.as_deref(), Some("k2"));
        assert!(store.replay(first).await.unwrap());
        assert!(
            !store.replay(first).await.unwrap(),
            "only a dead delivery can be replayed"
        );
        let due = store.due_deliveries(&["s".into()], &[], 10).await.unwrap();
        assert_eq!(due[0].delivery_id, first);
        assert_eq!(due[0].attempts, 0);
        // Unloaded subscribers' deliveries are not handed out.
        assert!(
            store
                .due_deliveries(&["other".into()], &[], 10)
                .await
                .unwrap()
                .is_empty()
        );
    }
}
