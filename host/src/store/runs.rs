//! Runs: the deliveries that follow a due one of the same subscriber and partition key,
//! claimed with it so that a hot key's events run one after another and commit together
//! ([`crate::store::Write::Chained`]) instead of waiting for a commit and a scan each.
//!
//! One statement finds the followers of every key a scan claimed, each key's walked along
//! `deliveries_by_key` and stopped at the run's length, so a key with a long backlog costs no
//! more than one with a short one.

use super::queue::DueRow;
use super::{Backend, DueDelivery, Store};

/// The columns of a follower: those of the scan, and whether it is fresh (pending, never
/// attempted), the only kind a run may take.
macro_rules! follower_columns {
    () => {
        "d.id, d.subscriber, d.attempts, m.id AS message_id, m.seq, m.kind, m.partition_key,
         m.tenant_id, m.correlation_id, m.causation_id, m.actor, m.schema_version,
         m.occurred_at_ms, m.headers, m.payload, m.depth,
         (d.status = 'pending' AND d.attempts = 0) AS fresh"
    };
}

/// Which later deliveries of a key a follower query reads: every unfinished one but a
/// scheduled event not yet due, which holds nothing back (as in the scan), in commit order.
macro_rules! follower_filter {
    ($now:literal) => {
        concat!(
            "e.status <> 'done' AND NOT (e.status = 'pending' AND e.attempts = 0
             AND e.next_attempt_at_ms > ",
            $now,
            ")"
        )
    };
}

/// SQLite: $1 the heads as a JSON array of [subscriber, key, seq], $2 now, $3 the most
/// followers per head.
pub(super) const SQLITE_FOLLOWERS: &str = concat!(
    "SELECT ",
    follower_columns!(),
    ", NULL AS partition
     FROM json_each($1) h
     JOIN deliveries d ON d.id IN (
         SELECT e.id FROM deliveries e
         WHERE e.subscriber = json_extract(h.value, '$[0]')
           AND e.partition_key = json_extract(h.value, '$[1]')
           AND e.message_seq > json_extract(h.value, '$[2]') AND ",
    follower_filter!("$2"),
    " ORDER BY e.message_seq LIMIT $3)
     JOIN messages m ON m.seq = d.message_seq
     ORDER BY d.subscriber, d.partition_key, d.message_seq"
);

/// PostgreSQL: $1 subscribers, $2 keys, $3 seqs (one of each per head), $4 now, $5 the most
/// followers per head.
pub(super) const POSTGRES_FOLLOWERS: &str = concat!(
    "SELECT ",
    follower_columns!(),
    ", NULL::BIGINT AS partition
     FROM UNNEST($1::TEXT[], $2::TEXT[], $3::BIGINT[]) AS h(subscriber, partition_key, seq)
     CROSS JOIN LATERAL (
         SELECT e.id, e.subscriber, e.attempts, e.status, e.message_seq, e.partition_key
         FROM deliveries e
         WHERE e.subscriber = h.subscriber AND e.partition_key = h.partition_key
           AND e.message_seq > h.seq AND ",
    follower_filter!("$4"),
    " ORDER BY e.message_seq LIMIT $5) d
     JOIN messages m ON m.seq = d.message_seq
     ORDER BY d.subscriber COLLATE \"C\", d.partition_key COLLATE \"C\", d.message_seq"
);

/// A row of the follower queries.
#[derive(sqlx::FromRow)]
pub(super) struct FollowerRow {
    #[sqlx(flatten)]
    pub(super) due: DueRow,
    pub(super) fresh: bool,
}

/// What a follower query is asked: each head's (subscriber, key, seq).
pub(super) type Head<'a> = (&'a str, &'a str, i64);

impl Store {
    /// Groups due deliveries into runs: each head followed by the fresh deliveries after it
    /// of the same subscriber and partition key, up to `length` in all, in commit order. A
    /// run stops before the first later delivery that is not fresh (one failed before, or
    /// dead), which the scan decides on by its own rules; a delivery without a key runs
    /// alone. Runs come in the heads' order.
    ///
    /// # Errors
    /// Fails when the database cannot be read.
    pub(crate) async fn delivery_runs(
        &self,
        heads: Vec<DueDelivery>,
        length: usize,
    ) -> anyhow::Result<Vec<Vec<DueDelivery>>> {
        let keyed: Vec<Head> = heads
            .iter()
            .filter_map(|d| {
                let key = d.message.partition_key.as_deref()?;
                Some((d.subscriber.as_str(), key, d.message_seq))
            })
            .collect();
        let followers = match length {
            _ if keyed.is_empty() || length < 2 => Vec::new(),
            _ => {
                let most = i64::try_from(length - 1).unwrap_or(i64::MAX);
                on_backend!(self, b => b.followers(&keyed, most).await)?
            }
        };
        let mut followers = followers.into_iter().peekable();
        // Both lists are ordered by (subscriber, key, seq); the heads are taken by key.
        let mut by_key: Vec<(usize, DueDelivery)> = heads.into_iter().enumerate().collect();
        by_key.sort_by(|(_, a), (_, b)| {
            (a.subscriber.as_str(), a.message.partition_key.as_deref())
                .cmp(&(b.subscriber.as_str(), b.message.partition_key.as_deref()))
        });
        let mut ordered = Vec::with_capacity(by_key.len());
        for (place, head) in by_key {
            let mut run = vec![head];
            let head = &run[0];
            let (subscriber, key) = (head.subscriber.clone(), head.message.partition_key.clone());
            let partition = head.partition;
            let mut open = key.is_some();
            while let Some(row) = followers.next_if(|row| {
                row.due.subscriber() == subscriber && row.due.partition_key() == key.as_deref()
            }) {
                // Two heads of one key (a parked delivery and the next, under `skip`) read
                // the same followers: the first head's run takes them.
                if run.iter().any(|d| d.delivery_id == row.due.id()) {
                    continue;
                }
                if !open || !row.fresh || run.len() >= length {
                    open = false;
                    continue;
                }
                let mut follower: DueDelivery = row.due.try_into()?;
                follower.partition = partition;
                run.push(follower);
            }
            ordered.push((place, run));
        }
        ordered.sort_by_key(|(place, _)| *place);
        Ok(ordered.into_iter().map(|(_, run)| run).collect())
    }
}
