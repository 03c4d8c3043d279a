//! What the database keeps for operators beside the queue: the hosts serving HTTP on it (so
//! `host bus` and `host trace` can go through a running host's admin API) and the time
//! `host bus metrics --reset` last ran.

use super::{Backend, Store, now_ms};

/// A host serving HTTP on the database, as it registered itself at start.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RunningHost {
    /// Random per process; the host's `GET /admin/host` answers it.
    pub id: String,
    /// Base URL of its HTTP server.
    pub address: String,
    /// When the host registered itself at start (ms since the epoch).
    pub started_at_ms: i64,
}

/// The mark `host bus metrics --reset` sets.
const METRICS_RESET: &str = "metrics_reset";

/// The methods of this module for a backend's `impl`: `$read` and `$write` name its pools.
macro_rules! operator_queries {
    ($read:ident, $write:ident) => {
        pub(super) async fn register_running_host(
            &self,
            host: &crate::store::operators::RunningHost,
        ) -> anyhow::Result<()> {
            // A row at the same address is a host that stopped without saying so.
            let mut tx = self.$write.begin().await.context("registering the host")?;
            sqlx::query("DELETE FROM running_hosts WHERE address = $1 OR id = $2")
                .bind(&host.address)
                .bind(&host.id)
                .execute(&mut *tx)
                .await
                .context("registering the host")?;
            sqlx::query(
                "INSERT INTO running_hosts (id, address, started_at_ms) VALUES ($1, $2, $3)",
            )
            .bind(&host.id)
            .bind(&host.address)
            .bind(host.started_at_ms)
            .execute(&mut *tx)
            .await
            .context("registering the host")?;
            tx.commit().await.context("registering the host")
        }
        pub(super) async fn unregister_running_host(&self, id: &str) -> anyhow::Result<()> {
            sqlx::query("DELETE FROM running_hosts WHERE id = $1")
                .bind(id)
                .execute(&self.$write)
                .await
                .context("removing the host's registration")?;
            Ok(())
        }
        pub(super) async fn running_hosts(
            &self,
        ) -> anyhow::Result<Vec<crate::store::operators::RunningHost>> {
            sqlx::query_as(
                "SELECT id, address, started_at_ms FROM running_hosts ORDER BY started_at_ms DESC",
            )
            .fetch_all(&self.$read)
            .await
            .context("reading the running hosts")
        }
        pub(super) async fn unfinished_by_kind(
            &self,
            subscriber: &str,
        ) -> anyhow::Result<Vec<(String, String, i64)>> {
            sqlx::query_as(
                "SELECT m.kind, d.status, COUNT(*) FROM deliveries d
                 JOIN messages m ON m.seq = d.message_seq
                 WHERE d.subscriber = $1 AND d.status <> 'done'
                 GROUP BY m.kind, d.status ORDER BY m.kind, d.status",
            )
            .bind(subscriber)
            .fetch_all(&self.$read)
            .await
            .with_context(|| format!("counting the unfinished deliveries of `{subscriber}`"))
        }
        pub(super) async fn set_mark(&self, name: &str, at_ms: i64) -> anyhow::Result<()> {
            sqlx::query(
                "INSERT INTO operator_marks (name, at_ms) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE SET at_ms = excluded.at_ms",
            )
            .bind(name)
            .bind(at_ms)
            .execute(&self.$write)
            .await
            .with_context(|| format!("setting the mark `{name}`"))?;
            Ok(())
        }
        pub(super) async fn mark(&self, name: &str) -> anyhow::Result<Option<i64>> {
            sqlx::query_scalar("SELECT at_ms FROM operator_marks WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.$read)
                .await
                .with_context(|| format!("reading the mark `{name}`"))
        }
    };
}
pub(super) use operator_queries;

/// What `host bus metrics` reports: the window it counted and each subscriber's and kind's
/// figures.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MetricsReport {
    /// Messages that occurred at or after this time count (ms since the epoch).
    pub since_ms: i64,
    /// When `host bus metrics --reset` last ran, if that bounds the window.
    pub reset_at_ms: Option<i64>,
    pub(crate) deliveries: Vec<super::DeliveryMetrics>,
}

/// What `host bus health` reports: each subscriber's backlog and, on PostgreSQL, the hosts
/// and partitions.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct BusHealth {
    pub(crate) subscribers: Vec<super::SubscriberBacklog>,
    /// `None` on SQLite, which one host serves alone.
    pub(crate) cluster: Option<super::ClusterView>,
}

impl Store {
    /// Each subscriber's backlog, and the cluster's hosts and partitions (PostgreSQL).
    ///
    /// # Errors
    /// Fails when the database cannot be read.
    pub async fn bus_health(&self) -> anyhow::Result<BusHealth> {
        let subscribers = self.backlog().await?;
        let cluster = match self.cluster() {
            Some(cluster) => Some(cluster.view().await?),
            None => None,
        };
        Ok(BusHealth {
            subscribers,
            cluster,
        })
    }

    /// Records this process as a host serving HTTP at `host.address`, replacing any record
    /// left at the same address.
    ///
    /// # Errors
    /// Fails when the database cannot be written.
    pub async fn register_running_host(&self, host: &RunningHost) -> anyhow::Result<()> {
        on_backend!(self, b => b.register_running_host(host).await)
    }

    /// Removes the record [`Store::register_running_host`] made.
    ///
    /// # Errors
    /// Fails when the database cannot be written.
    pub async fn unregister_running_host(&self, id: &str) -> anyhow::Result<()> {
        on_backend!(self, b => b.unregister_running_host(id).await)
    }

    /// The hosts that registered and have not stopped cleanly, the latest started first. A
    /// host that was killed stays listed: ask it (`GET /admin/host`) before trusting it.
    ///
    /// # Errors
    /// Fails when the database cannot be read.
    pub async fn running_hosts(&self) -> anyhow::Result<Vec<RunningHost>> {
        on_backend!(self, b => b.running_hosts().await)
    }

    /// `subscriber`'s pending and dead deliveries: (message kind, status, count), by kind.
    ///
    /// # Errors
    /// Fails when the database cannot be read.
    pub async fn unfinished_by_kind(
        &self,
        subscriber: &str,
    ) -> anyhow::Result<Vec<(String, String, i64)>> {
        on_backend!(self, b => b.unfinished_by_kind(subscriber).await)
    }

    /// How the deliveries of the messages of the last `window` fared (see
    /// `Store::delivery_metrics`), counting none older than the last
    /// [`Store::reset_metrics`].
    ///
    /// # Errors
    /// Fails when the database cannot be read.
    pub async fn recent_delivery_metrics(
        &self,
        window: std::time::Duration,
    ) -> anyhow::Result<MetricsReport> {
        let window = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
        let start = now_ms().saturating_sub(window);
        let reset_at_ms =
            on_backend!(self, b => b.mark(METRICS_RESET).await)?.filter(|&reset| reset > start);
        let since_ms = reset_at_ms.unwrap_or(start);
        Ok(MetricsReport {
            since_ms,
            reset_at_ms,
            deliveries: self.delivery_metrics(since_ms).await?,
        })
    }

    /// Makes [`Store::recent_delivery_metrics`] count only messages that occur from now on;
    /// returns the time of the reset. Nothing is deleted.
    ///
    /// # Errors
    /// Fails when the database cannot be written.
    pub async fn reset_metrics(&self) -> anyhow::Result<i64> {
        let now = now_ms();
        on_backend!(self, b => b.set_mark(METRICS_RESET, now).await)?;
        Ok(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::{event, on_every_backend};
    use crate::store::{Applied, StateChanges, Write};

    on_every_backend!(
        a_host_at_the_address_of_a_stopped_one_replaces_its_record,
        metrics_count_from_the_last_reset,
    );

    fn host(id: &str, port: u16, started_at_ms: i64) -> RunningHost {
        RunningHost {
            id: id.into(),
            address: format!("http://127.0.0.1:{port}"),
            started_at_ms,
        }
    }

    async fn a_host_at_the_address_of_a_stopped_one_replaces_its_record(store: &Store) {
        assert!(store.running_hosts().await.unwrap().is_empty());
        store
            .register_running_host(&host("a", 1, 10))
            .await
            .unwrap();
        store
            .register_running_host(&host("b", 2, 20))
            .await
            .unwrap();
        assert_eq!(
            store.running_hosts().await.unwrap(),
            [host("b", 2, 20), host("a", 1, 10)],
            "the latest started first"
        );
        // `a` was killed; `c` starts on its port.
        store
            .register_running_host(&host("c", 1, 30))
            .await
            .unwrap();
        store.unregister_running_host("b").await.unwrap();
        assert_eq!(store.running_hosts().await.unwrap(), [host("c", 1, 30)]);
    }

    async fn metrics_count_from_the_last_reset(store: &Store) {
        let emit = |key: &'static str| async move {
            let write = Write::Command {
                changes: StateChanges::default(),
                outbox: vec![event("e", key, &["s"])],
                idempotency: None,
            };
            assert_eq!(
                store.apply_batch(&[write]).await.unwrap(),
                [Applied::Committed]
            );
        };
        let hour = std::time::Duration::from_secs(3600);
        emit("1").await;
        let before = store.recent_delivery_metrics(hour).await.unwrap();
        assert_eq!(before.reset_at_ms, None);
        assert_eq!(before.deliveries.len(), 1);
        assert_eq!(before.deliveries[0].pending, 1);

        // Occurrence times are in milliseconds: step past the reset's.
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        let reset = store.reset_metrics().await.unwrap();
        let after = store.recent_delivery_metrics(hour).await.unwrap();
        assert_eq!((after.reset_at_ms, after.since_ms), (Some(reset), reset));
        assert!(after.deliveries.is_empty(), "{after:?}");
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        emit("2").await;
        emit("3").await;
        let later = store.recent_delivery_metrics(hour).await.unwrap();
        assert_eq!(later.deliveries[0].pending, 2, "{later:?}");
        // A window that starts after the reset is not widened by it.
        let short = store
            .recent_delivery_metrics(std::time::Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(short.reset_at_ms, None);
    }
}
