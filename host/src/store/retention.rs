//! Trimming the database: expired idempotency keys, old finished deliveries (inbox marks),
//! and messages no delivery refers to any more.
//!
//! Each call deletes at most one batch in its own short transaction, so the committer's
//! write lock is never held up for long; the maintenance task calls them until a batch
//! comes back short.

use super::Store;
use anyhow::Context;

impl Store {
    /// Deletes up to `batch` idempotency records that expired at or before `now_ms`.
    /// Returns how many were deleted.
    ///
    /// # Errors
    /// Fails when the database cannot be written.
    pub async fn delete_expired_idempotency(&self, now_ms: i64, batch: u32) -> anyhow::Result<u64> {
        let deleted = sqlx::query(
            "DELETE FROM idempotency WHERE rowid IN (
                 SELECT rowid FROM idempotency WHERE expires_at_ms <= ? LIMIT ?)",
        )
        .bind(now_ms)
        .bind(i64::from(batch))
        .execute(self.writer())
        .await
        .context("deleting expired idempotency keys")?;
        Ok(deleted.rows_affected())
    }

    /// Deletes up to `batch` `done` deliveries completed before `before_ms`. Done rows hold
    /// nothing back (ordering looks at unfinished ones only), so this never changes what is
    /// delivered next.
    ///
    /// # Errors
    /// Fails when the database cannot be written.
    pub async fn delete_done_deliveries(&self, before_ms: i64, batch: u32) -> anyhow::Result<u64> {
        let deleted = sqlx::query(
            "DELETE FROM deliveries WHERE id IN (
                 SELECT id FROM deliveries
                 WHERE status = 'done' AND completed_at_ms < ? LIMIT ?)",
        )
        .bind(before_ms)
        .bind(i64::from(batch))
        .execute(self.writer())
        .await
        .context("deleting finished deliveries")?;
        Ok(deleted.rows_affected())
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
        let deleted = sqlx::query(
            "DELETE FROM messages WHERE seq IN (
                 SELECT m.seq FROM messages m
                 WHERE m.occurred_at_ms < ?
                   AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.message_seq = m.seq)
                 ORDER BY m.seq LIMIT ?)",
        )
        .bind(before_ms)
        .bind(i64::from(batch))
        .execute(self.writer())
        .await
        .context("deleting finished messages")?;
        Ok(deleted.rows_affected())
    }
}
