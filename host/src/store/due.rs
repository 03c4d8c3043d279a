//! The due backlog as back-pressure reads it ([`crate::backpressure`]): the deliveries due now,
//! counted up to a limit, and a running tally of the due deliveries this process's commands
//! commit, which carries a count forward until the next one.
//!
//! The tally is raised before a batch is applied and lowered afterwards by what did not
//! commit, so a delivery is in the tally before any count can see it: a tally read after a
//! count covers everything that count saw, and a count carried forward by the tally's growth
//! since never counts a delivery twice. What it misses until the next count are the commits
//! under way while the count ran.

use super::{Applied, Backend, Store, Write, now_ms};
use std::sync::atomic::{AtomicU64, Ordering};

/// The due deliveries committed by one store's commands since it opened; shared by its clones.
#[derive(Debug, Default)]
pub(super) struct DueTally(AtomicU64);

impl DueTally {
    /// Counts in, before `batch` is applied at `now_ms`, the deliveries due at once that its
    /// commands write; returns how many, for [`DueTally::settle`].
    pub(super) fn expect(&self, batch: &[Write], now_ms: i64) -> u64 {
        let expected = batch.iter().map(|w| due_at_once(w, now_ms)).sum();
        if expected > 0 {
            self.0.fetch_add(expected, Ordering::SeqCst);
        }
        expected
    }

    /// Takes back, once `batch` was applied, what [`DueTally::expect`] counted for the items
    /// that did not commit (all of them when the batch failed).
    pub(super) fn settle(
        &self,
        batch: &[Write],
        now_ms: i64,
        expected: u64,
        applied: &anyhow::Result<Vec<Applied>>,
    ) {
        if expected == 0 {
            return;
        }
        let lost = match applied {
            Err(_) => expected,
            Ok(results) => batch
                .iter()
                .zip(results)
                .filter(|(_, applied)| **applied != Applied::Committed)
                .map(|(write, _)| due_at_once(write, now_ms))
                .sum(),
        };
        if lost > 0 {
            self.0.fetch_sub(lost, Ordering::SeqCst);
        }
    }
}

/// The delivery rows due at once (not scheduled for later) that `write` adds when it is a
/// command's; the deliveries' own writes are left to the next count.
fn due_at_once(write: &Write, now_ms: i64) -> u64 {
    match write {
        Write::Command { outbox, .. } => outbox
            .iter()
            .filter(|event| event.deliver_at_ms.is_none_or(|at| at <= now_ms))
            .map(|event| event.subscribers.len() as u64)
            .sum(),
        _ => 0,
    }
}

impl Store {
    /// The deliveries due now (pending, their time come, dead letters not included), counted
    /// up to `limit`: the count costs no more than `limit` index entries however long the
    /// backlog is.
    ///
    /// # Errors
    /// Fails when the database cannot be read.
    pub async fn due_count(&self, limit: u64) -> anyhow::Result<u64> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let count = on_backend!(self, b => b.due_count(now_ms(), limit).await)?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// The deliveries due at once that commands committed through this store (and its clones)
    /// have written since it opened, counted in just before their batch commits.
    pub fn due_added_by_commands(&self) -> u64 {
        self.due_tally.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::{event, on_every_backend};
    use crate::store::{OutboxEvent, StateChanges};

    on_every_backend!(due_deliveries_are_counted_up_to_the_limit_and_tallied_as_committed,);

    fn command(outbox: Vec<OutboxEvent>, reads: Vec<(String, i64)>) -> Write {
        Write::Command {
            changes: StateChanges {
                plugin: "p".into(),
                reads,
                writes: Vec::new(),
            },
            outbox,
            idempotency: None,
        }
    }

    async fn due_deliveries_are_counted_up_to_the_limit_and_tallied_as_committed(store: &Store) {
        assert_eq!(store.due_count(10).await.unwrap(), 0);
        assert_eq!(store.due_added_by_commands(), 0);

        let mut later = event("e", "2", &["a", "b", "c"]);
        later.deliver_at_ms = Some(now_ms() + 3_600_000);
        let batch = [
            command(vec![event("e", "1", &["a", "b"])], Vec::new()),
            command(vec![later], Vec::new()),
            // Read at a version the key never had: a conflict, which writes nothing.
            command(
                vec![event("e", "3", &["a", "b", "c", "d"])],
                vec![("k".into(), 7)],
            ),
        ];
        let applied = store.apply_batch(&batch).await.unwrap();
        assert_eq!(
            applied,
            [Applied::Committed, Applied::Committed, Applied::Conflict]
        );
        assert_eq!(
            store.due_count(10).await.unwrap(),
            2,
            "the scheduled event's deliveries are not due yet"
        );
        assert_eq!(
            store.due_count(1).await.unwrap(),
            1,
            "counted up to the limit"
        );
        assert_eq!(
            store.due_added_by_commands(),
            2,
            "only what committed and is due at once is tallied"
        );
    }
}
