//! Partitions and their leases, on PostgreSQL: what lets several hosts share one database.
//!
//! Every delivery belongs to one of `cluster.partitions` partitions by a stable hash of its
//! subscriber and partition key (`partition_hash` in the migration), so all messages of one
//! key and subscriber lie in one partition. Each partition is leased by at most one live host
//! at a time: a row in `partition_leases` with the owner, an expiry on the server's clock, and
//! an epoch that is new with every grant. A host dispatches only the partitions it holds, and
//! every commit that finishes a delivery checks that the epoch it was claimed under is still
//! the partition's ([`super::batch`]), so a host that lost a lease can never commit one of the
//! partition's deliveries, however long it was paused.
//!
//! [`Cluster::heartbeat`] is a host's one round trip per beat: it keeps the host's row in
//! `hosts` alive, renews its leases, gives back the ones it was asked to, and takes free or
//! expired ones up to its fair share of the live hosts.

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use std::sync::Arc;
use tokio::sync::Notify;

/// The channel a host notifies when it joins, leaves or gives back partitions, so the others
/// rebalance at once instead of at their next beat.
const LEASE_CHANNEL: &str = "handler_host_leases";
/// How long a host that stopped beating stays listed (as gone) before its row is deleted.
const GONE_HOSTS_KEPT_MS: i64 = 10 * 60 * 1000;

/// The partitions a host may claim deliveries from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Partitions {
    /// How many partitions the deliveries are split into.
    pub count: i64,
    /// The ones held.
    pub held: Vec<i64>,
}

impl Partitions {
    /// Every delivery, whatever its partition (one partition of all hashes): for work done
    /// outside the leases, such as `host bus flush`.
    pub fn all() -> Self {
        Self {
            count: 1,
            held: vec![0],
        }
    }
}

/// Who a host is, as the other hosts and operators see it.
#[derive(Debug, Clone)]
pub(crate) struct HostIdentity {
    /// Unique per process start.
    pub id: String,
    /// Machine name and process id.
    pub name: String,
    /// Where it serves HTTP.
    pub address: String,
}

/// A lease this host holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lease {
    pub partition: i64,
    pub epoch: i64,
}

/// A lease taken by this beat, and from whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Taken {
    pub lease: Lease,
    /// The host whose lease had expired; `None` when the partition was free.
    pub from: Option<String>,
}

/// What one beat found and did.
#[derive(Debug, Clone)]
pub(crate) struct Beat {
    /// The partition count.
    pub count: i64,
    /// The live hosts' ids, this one included, in id order.
    pub live_hosts: Vec<String>,
    /// How many partitions are this host's fair share.
    pub share: usize,
    /// Every lease held after the beat, in partition order.
    pub held: Vec<Lease>,
    /// The leases among `held` that this beat took.
    pub taken: Vec<Taken>,
}

/// A host as `host bus health` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
pub(crate) struct HostRow {
    pub id: String,
    pub name: String,
    pub address: String,
    pub started_at_ms: i64,
    /// Negative: its heartbeat stopped that long ago.
    pub expires_in_ms: i64,
}

/// A partition as `host bus health` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
pub(crate) struct PartitionRow {
    pub partition: i64,
    pub owner: Option<String>,
    pub epoch: i64,
    /// Negative: the lease has expired.
    pub expires_in_ms: i64,
    /// Pending deliveries, due or not.
    pub pending: i64,
    /// How long the oldest message with a pending delivery has waited.
    pub oldest_pending_ms: Option<i64>,
    pub dead: i64,
}

/// The cluster as `host bus health` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ClusterView {
    pub partitions: i64,
    pub hosts: Vec<HostRow>,
    pub leases: Vec<PartitionRow>,
}

/// Notifies [`LEASE_CHANNEL`] when `tx` commits, so the other hosts beat at once.
async fn wake_other_hosts(tx: &mut sqlx::PgConnection) -> anyhow::Result<()> {
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(LEASE_CHANNEL)
        .execute(tx)
        .await
        .context("NOTIFY")?;
    Ok(())
}

/// How many of `count` partitions the host `me` should hold among `live` (sorted ids): an
/// even split, the remainder going to the hosts that sort first.
pub(crate) fn fair_share(me: &str, live: &[String], count: i64) -> usize {
    let count = usize::try_from(count).unwrap_or(0);
    let Some(index) = live.iter().position(|id| id == me) else {
        return 0;
    };
    count / live.len() + usize::from(index < count % live.len())
}

/// The partitions and leases of one PostgreSQL database.
#[derive(Clone)]
pub(crate) struct Cluster {
    pool: PgPool,
}

impl Cluster {
    pub(super) fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// One beat of `me`: keeps its host row alive for `ttl_ms`, gives back `release`, renews
    /// the rest of its leases for `ttl_ms`, and takes free or expired partitions up to its fair
    /// share. With `announce` (a host's first beat), the other hosts are woken to rebalance.
    ///
    /// # Errors
    /// Fails, changing nothing, when the database cannot be reached.
    pub async fn heartbeat(
        &self,
        me: &HostIdentity,
        ttl_ms: i64,
        release: &[i64],
        announce: bool,
    ) -> anyhow::Result<Beat> {
        let mut tx = self.pool.begin().await.context("BEGIN")?;
        sqlx::query(
            "INSERT INTO hosts (id, name, address, started_at_ms, expires_at_ms)
             VALUES ($1, $2, $3, server_now_ms(), server_now_ms() + $4)
             ON CONFLICT (id) DO UPDATE SET expires_at_ms = EXCLUDED.expires_at_ms",
        )
        .bind(&me.id)
        .bind(&me.name)
        .bind(&me.address)
        .bind(ttl_ms)
        .execute(&mut *tx)
        .await
        .context("keeping this host's heartbeat")?;
        let count: i64 = sqlx::query_scalar("SELECT partitions FROM cluster")
            .fetch_one(&mut *tx)
            .await
            .context("reading the partition count")?;
        let live_hosts: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM hosts WHERE expires_at_ms > server_now_ms() ORDER BY id",
        )
        .fetch_all(&mut *tx)
        .await
        .context("reading the live hosts")?;
        if !release.is_empty() {
            sqlx::query(
                "UPDATE partition_leases SET owner = NULL, expires_at_ms = 0
                 WHERE owner = $1 AND partition = ANY($2)",
            )
            .bind(&me.id)
            .bind(release)
            .execute(&mut *tx)
            .await
            .context("giving back partitions")?;
        }
        // Leases are locked in partition order everywhere (here, in takeovers, and in the
        // commits that check them), so two transactions never wait on each other in a cycle.
        let renewed: Vec<(i64, i64)> = sqlx::query_as(
            "UPDATE partition_leases SET expires_at_ms = server_now_ms() + $2
             WHERE partition IN (SELECT partition FROM partition_leases WHERE owner = $1
                                 ORDER BY partition FOR UPDATE)
             RETURNING partition, epoch",
        )
        .bind(&me.id)
        .bind(ttl_ms)
        .fetch_all(&mut *tx)
        .await
        .context("renewing this host's leases")?;
        let share = fair_share(&me.id, &live_hosts, count);
        let mut taken = Vec::new();
        if renewed.len() < share {
            let want = i64::try_from(share - renewed.len()).unwrap_or(0);
            let rows: Vec<(i64, i64, Option<String>)> = sqlx::query_as(
                "UPDATE partition_leases l
                 SET owner = $1, epoch = nextval('lease_epochs'),
                     expires_at_ms = server_now_ms() + $2, acquired_at_ms = server_now_ms()
                 FROM (SELECT partition, owner FROM partition_leases
                       WHERE owner IS NULL OR expires_at_ms <= server_now_ms()
                       ORDER BY partition LIMIT $3 FOR UPDATE SKIP LOCKED) f
                 WHERE l.partition = f.partition
                 RETURNING l.partition, l.epoch, f.owner",
            )
            .bind(&me.id)
            .bind(ttl_ms)
            .bind(want)
            .fetch_all(&mut *tx)
            .await
            .context("taking free partitions")?;
            taken = rows
                .into_iter()
                .map(|(partition, epoch, from)| Taken {
                    lease: Lease { partition, epoch },
                    from,
                })
                .collect();
        }
        if announce || !release.is_empty() {
            wake_other_hosts(&mut tx).await?;
        }
        sqlx::query("DELETE FROM hosts WHERE expires_at_ms < server_now_ms() - $1")
            .bind(GONE_HOSTS_KEPT_MS)
            .execute(&mut *tx)
            .await
            .context("forgetting hosts gone long ago")?;
        tx.commit().await.context("COMMIT")?;
        let mut held: Vec<Lease> = renewed
            .into_iter()
            .map(|(partition, epoch)| Lease { partition, epoch })
            .chain(taken.iter().map(|t| t.lease))
            .collect();
        held.sort_by_key(|lease| lease.partition);
        Ok(Beat {
            count,
            live_hosts,
            share,
            held,
            taken,
        })
    }

    /// Gives back every lease of host `id` and removes its row, waking the other hosts to take
    /// the partitions over at once (a clean stop).
    ///
    /// # Errors
    /// Fails when the database cannot be reached; the leases then expire on their own.
    pub async fn leave(&self, id: &str) -> anyhow::Result<usize> {
        let mut tx = self.pool.begin().await.context("BEGIN")?;
        let released = sqlx::query(
            "UPDATE partition_leases SET owner = NULL, expires_at_ms = 0 WHERE owner = $1",
        )
        .bind(id)
        .execute(&mut *tx)
        .await
        .context("giving back partitions")?
        .rows_affected();
        sqlx::query("DELETE FROM hosts WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .context("removing this host")?;
        wake_other_hosts(&mut tx).await?;
        tx.commit().await.context("COMMIT")?;
        Ok(usize::try_from(released).unwrap_or(usize::MAX))
    }

    /// Wakes `wake` whenever a host joins, leaves or gives back partitions, until the store is
    /// closed; a dropped connection is retried at every call of `wake`'s waiter's own beat.
    pub fn notify_on_change(&self, wake: Arc<Notify>) {
        let pool = self.pool.clone();
        tokio::spawn(async move {
            while !pool.is_closed() {
                let listened = async {
                    let mut listener = PgListener::connect_with(&pool).await?;
                    listener.listen(LEASE_CHANNEL).await?;
                    loop {
                        listener.recv().await?;
                        wake.notify_one();
                    }
                };
                let error: sqlx::Error = match listened.await {
                    Ok(()) => unreachable!("the listen loop ends only with an error"),
                    Err(error) => error,
                };
                if pool.is_closed() {
                    return;
                }
                tracing::debug!("not listening for partition changes, beating meanwhile: {error}");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        });
    }

    /// The hosts, the partitions with their owners and backlog.
    ///
    /// # Errors
    /// Fails when the database cannot be read.
    pub async fn view(&self) -> anyhow::Result<ClusterView> {
        let partitions: i64 = sqlx::query_scalar("SELECT partitions FROM cluster")
            .fetch_one(&self.pool)
            .await
            .context("reading the partition count")?;
        let hosts = sqlx::query_as(
            "SELECT id, name, address, started_at_ms, expires_at_ms - server_now_ms() AS expires_in_ms
             FROM hosts ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await
        .context("reading the hosts")?;
        let leases = sqlx::query_as(
            "SELECT l.partition, l.owner, l.epoch, l.expires_at_ms - server_now_ms() AS expires_in_ms,
                    COALESCE(b.pending, 0) AS pending, b.oldest_pending_ms,
                    COALESCE(b.dead, 0) AS dead
             FROM partition_leases l LEFT JOIN (
                 SELECT mod(d.partition_hash, $1) AS partition,
                        COUNT(*) FILTER (WHERE d.status = 'pending') AS pending,
                        COUNT(*) FILTER (WHERE d.status = 'dead') AS dead,
                        server_now_ms() - MIN(m.occurred_at_ms) FILTER (WHERE d.status = 'pending')
                            AS oldest_pending_ms
                 FROM deliveries d JOIN messages m ON m.seq = d.message_seq
                 WHERE d.status <> 'done'
                 GROUP BY 1) b ON b.partition = l.partition
             ORDER BY l.partition",
        )
        .bind(partitions)
        .fetch_all(&self.pool)
        .await
        .context("reading the partitions")?;
        Ok(ClusterView {
            partitions,
            hosts,
            leases,
        })
    }

    /// Splits the deliveries into `count` partitions from now on. Refused while any host holds
    /// a lease that has not expired: hosts that split the same keys differently could run one
    /// key's messages at once.
    ///
    /// # Errors
    /// Fails when a host holds a live lease, `count` is out of range, or the database fails.
    pub async fn set_partitions(&self, count: i64) -> anyhow::Result<()> {
        if !(1..=4096).contains(&count) {
            bail!("the partition count must be between 1 and 4096, not {count}");
        }
        let mut tx = self.pool.begin().await.context("BEGIN")?;
        // Takes every lease row's lock: no host can take or renew one until this commits.
        let holders: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT COALESCE(h.name || ' ' || h.address, l.owner) FROM (
                 SELECT owner, expires_at_ms FROM partition_leases ORDER BY partition FOR UPDATE
             ) l LEFT JOIN hosts h ON h.id = l.owner
             WHERE l.owner IS NOT NULL AND l.expires_at_ms > server_now_ms()",
        )
        .fetch_all(&mut *tx)
        .await
        .context("reading the partition leases")?;
        if !holders.is_empty() {
            bail!(
                "hosts still hold partition leases ({}): stop every host first (`host bus health` lists them), then change the partition count",
                holders.join(", ")
            );
        }
        sqlx::query("DELETE FROM partition_leases")
            .execute(&mut *tx)
            .await
            .context("removing the old partitions")?;
        sqlx::query(
            "INSERT INTO partition_leases (partition) SELECT generate_series(0, $1::BIGINT - 1)",
        )
        .bind(count)
        .execute(&mut *tx)
        .await
        .context("creating the partitions")?;
        sqlx::query("UPDATE cluster SET partitions = $1")
            .bind(count)
            .execute(&mut *tx)
            .await
            .context("storing the partition count")?;
        tx.commit().await.context("COMMIT")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::{TestDb, event};
    use crate::store::{Applied, StateChanges, Write};

    fn host(id: &str) -> HostIdentity {
        HostIdentity {
            id: id.into(),
            name: format!("test:{id}"),
            address: "127.0.0.1:0".into(),
        }
    }

    const LONG: i64 = 60_000;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_second_host_gets_what_the_first_gives_back_and_a_takeover_fences_the_old_holder() {
        let db = TestDb::postgres().await;
        let cluster = db.store.cluster().expect("PostgreSQL has a cluster");
        let (a, b) = (host("a"), host("b"));

        let first = cluster.heartbeat(&a, LONG, &[], true).await.unwrap();
        assert_eq!((first.count, first.share, first.held.len()), (32, 32, 32));
        assert!(
            first.taken.iter().all(|t| t.from.is_none()),
            "all were free"
        );

        // b joins: its share is half, but nothing is free until a gives back its surplus.
        let joined = cluster.heartbeat(&b, LONG, &[], true).await.unwrap();
        assert_eq!((joined.share, joined.held.len()), (16, 0));
        let surplus: Vec<i64> = (16..32).collect();
        let a_beat = cluster.heartbeat(&a, LONG, &surplus, false).await.unwrap();
        assert_eq!(a_beat.held.len(), 16);
        let b_beat = cluster.heartbeat(&b, LONG, &[], false).await.unwrap();
        let b_held: Vec<i64> = b_beat.held.iter().map(|l| l.partition).collect();
        assert_eq!(b_held, surplus);

        // A delivery in one of a's partitions, claimed under a's lease.
        db.store
            .apply_batch(&[Write::Command {
                changes: StateChanges::default(),
                outbox: vec![event("e", "k", &["s"])],
                idempotency: None,
            }])
            .await
            .unwrap();
        let everything = Partitions {
            count: 32,
            held: (0..32).collect(),
        };
        let due = db
            .store
            .due_deliveries(&["s".into()], &[], &[], Some(&everything), 10)
            .await
            .unwrap();
        let partition = due[0]
            .partition
            .expect("PostgreSQL scans name the partition");
        let owner = |beat: &Beat| {
            beat.held
                .iter()
                .find(|l| l.partition == partition)
                .map(|l| l.epoch)
        };
        let (a_epoch, b_epoch) = (owner(&a_beat), owner(&b_beat));
        let old_epoch = a_epoch.or(b_epoch).unwrap();
        let (holder, other) = if a_epoch.is_some() {
            (&a, &b)
        } else {
            (&b, &a)
        };
        let mine = Partitions {
            count: 32,
            held: vec![partition],
        };
        let not_mine = Partitions {
            count: 32,
            held: (0..32).filter(|p| *p != partition).collect(),
        };
        let scan = |partitions: Partitions| {
            let store = db.store.clone();
            async move {
                store
                    .due_deliveries(&["s".into()], &[], &[], Some(&partitions), 10)
                    .await
                    .unwrap()
                    .len()
            }
        };
        assert_eq!(scan(mine).await, 1);
        assert_eq!(
            scan(not_mine).await,
            0,
            "another partition's scan leaves it"
        );

        // The holder stops beating (paused): once its lease expires the other takes it over.
        cluster.heartbeat(holder, 1, &[], false).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let takeover = cluster.heartbeat(other, LONG, &[], false).await.unwrap();
        assert_eq!(takeover.share, 32, "the silent host no longer counts");
        let taken = takeover
            .taken
            .iter()
            .find(|t| t.lease.partition == partition)
            .expect("the expired partition is taken over");
        assert_eq!(taken.from.as_deref(), Some(holder.id.as_str()));
        assert!(taken.lease.epoch > old_epoch);

        // The old holder's outcome is refused; the new one's commits.
        let done = |lease| {
            [Write::Delivered {
                delivery_id: due[0].delivery_id,
                attempt: 1,
                lease: Some(lease),
                handled_by: "s@1".into(),
                changes: StateChanges {
                    plugin: "s".into(),
                    reads: vec![],
                    writes: vec![("seen".into(), Some(b"1".to_vec()))],
                },
                outbox: vec![],
            }]
        };
        assert_eq!(
            db.store.apply_batch(&done(old_epoch)).await.unwrap(),
            [Applied::LeaseLost]
        );
        assert_eq!(db.store.read_state("s", "seen").await.unwrap(), (None, 0));
        assert_eq!(
            db.store
                .apply_batch(&done(taken.lease.epoch))
                .await
                .unwrap(),
            [Applied::Committed]
        );

        // The returning host finds its leases gone.
        let back = cluster.heartbeat(holder, LONG, &[], false).await.unwrap();
        assert!(back.held.iter().all(|l| l.partition != partition));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_partition_count_changes_only_while_no_host_holds_a_lease() {
        let db = TestDb::postgres().await;
        let cluster = db.store.cluster().unwrap();
        cluster
            .heartbeat(&host("a"), LONG, &[], true)
            .await
            .unwrap();
        let refused = cluster.set_partitions(8).await.unwrap_err().to_string();
        assert!(
            refused.contains("hosts still hold partition leases (test:a 127.0.0.1:0)"),
            "{refused}"
        );
        assert_eq!(cluster.leave("a").await.unwrap(), 32);
        cluster.set_partitions(8).await.unwrap();
        let view = cluster.view().await.unwrap();
        assert_eq!((view.partitions, view.leases.len()), (8, 8));
        assert!(view.hosts.is_empty(), "a left");
        let beat = cluster
            .heartbeat(&host("b"), LONG, &[], true)
            .await
            .unwrap();
        assert_eq!(beat.held.len(), 8);
        assert!(cluster.set_partitions(0).await.is_err());
    }

    #[test]
    fn partitions_are_split_evenly_with_the_remainder_to_the_first_hosts() {
        let live: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let shares: Vec<usize> = live.iter().map(|me| fair_share(me, &live, 32)).collect();
        assert_eq!(shares, [11, 11, 10]);
        assert_eq!(fair_share("a", &live[..1], 32), 32);
        assert_eq!(
            fair_share("z", &live, 32),
            0,
            "a host not live holds nothing"
        );
        assert_eq!(fair_share("c", &live, 2), 0, "more hosts than partitions");
    }
}
