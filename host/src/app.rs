//! The one place a running host is assembled from its configuration: the committer and the
//! executor on one store, then, when the host works in the background, the partition leases,
//! the dispatcher, the maintenance task and the count of the delivery backlog that
//! back-pressure refuses commands by. `host run` and `host dev` serve it, `host send`
//! and `host bus flush` run one piece of work on it, and the benchmark measures it; all of
//! them start here, so what one measures or tests is what the others run.

use crate::backpressure::Backpressure;
use crate::committer::Committer;
use crate::config::{DEFAULT_LEASE_TIMEOUT, DispatchConfig, HostConfig};
use crate::dispatcher::{self, Dispatcher};
use crate::executor::Executor;
use crate::http::AppState;
use crate::maintenance;
use crate::partitions::PartitionLeases;
use crate::registry::Registry;
use crate::store::Store;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// The command path on one store: an executor routing to the loaded plugins and committing
/// through its own committer, with the host configuration's idempotency key lifetimes.
pub struct Host {
    executor: Arc<Executor>,
    config: Arc<HostConfig>,
    /// Notified by the committer after each commit (and by anything else that makes
    /// deliveries due), so the dispatcher scans at once instead of at its next poll.
    wake: Arc<Notify>,
}

/// How a host delivers in the background.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The name this host registers under among the hosts sharing a PostgreSQL database
    /// (its HTTP address, for `host bus` to reach it).
    pub member: String,
    /// How long a silent host keeps its partitions before the others take them over.
    pub lease_timeout: Duration,
    /// The dispatcher's concurrency, batch and polling.
    pub dispatch: DispatchConfig,
}

impl Delivery {
    /// Delivery with the default lease timeout and dispatcher settings, registered as `member`.
    pub fn new(member: impl Into<String>) -> Self {
        Self {
            member: member.into(),
            lease_timeout: DEFAULT_LEASE_TIMEOUT,
            dispatch: DispatchConfig::DEFAULT,
        }
    }
}

impl Host {
    /// Assembles the command path on `store` for the plugins of `registry`.
    pub fn new(store: Store, registry: Registry, config: Arc<HostConfig>) -> Self {
        let wake = Arc::new(Notify::new());
        let committer = Committer::spawn(store.clone(), wake.clone());
        let executor = Executor::new(registry, store, committer, config.idempotency.ttl)
            .with_idempotency_ttls(config.idempotency.ttl_by_kind.clone());
        Self {
            executor: Arc::new(executor),
            config,
            wake,
        }
    }

    /// Runs commands, queries and deliveries.
    pub fn executor(&self) -> &Arc<Executor> {
        &self.executor
    }

    /// The host configuration: each plugin's policy, lifetimes and retention.
    pub fn config(&self) -> &Arc<HostConfig> {
        &self.config
    }

    /// The database the host reads and commits to.
    pub fn store(&self) -> &Store {
        self.executor.store()
    }

    /// Wakes the dispatcher: hot reload rings it when a plugin that subscribes arrives.
    pub fn wake(&self) -> &Arc<Notify> {
        &self.wake
    }

    /// Starts the background work: the maintenance task always, and the backlog count of
    /// back-pressure unless its bound is off (its first count before this returns); with
    /// `delivery`, the dispatcher too, after this host has joined the others on the database
    /// (PostgreSQL) and taken its share of the partitions. Commits of other processes (other
    /// hosts, `host send`, `host bus replay`) wake the dispatcher at once on PostgreSQL; on
    /// SQLite its poll finds them, and deliveries committed before a crash are found by its
    /// first scan.
    pub async fn start(&self, delivery: Option<&Delivery>) -> Background {
        let store = self.store();
        let bound = self.config.backpressure;
        let (backpressure, counting) = if bound.is_on() {
            let (backpressure, counting) = Backpressure::start(store.clone(), bound).await;
            (Some(backpressure), Some(counting))
        } else {
            (None, None)
        };
        let (leases, dispatcher) = match delivery {
            None => (None, None),
            Some(delivery) => {
                store.notify_on_commit(self.wake.clone());
                self.wake.notify_one();
                let leases = PartitionLeases::join(
                    store,
                    &delivery.member,
                    delivery.lease_timeout,
                    self.wake.clone(),
                )
                .await;
                let dispatcher = dispatcher::spawn(
                    self.executor.clone(),
                    store.clone(),
                    delivery.dispatch,
                    self.config.clone(),
                    leases.clone(),
                    self.wake.clone(),
                );
                (leases, Some(dispatcher))
            }
        };
        let maintenance = maintenance::spawn(store.clone(), self.config.retention, leases.clone());
        Background {
            dispatcher,
            leases,
            maintenance,
            backpressure,
            counting,
        }
    }

    /// What the HTTP ingress and the admin API serve: this host, with what `background`
    /// runs for `GET /health` and `GET /ready`, and its back-pressure (none without
    /// `background`: nothing counts the backlog).
    pub fn app_state(&self, background: Option<&Background>) -> AppState {
        AppState {
            executor: self.executor.clone(),
            policies: self.config.clone(),
            leases: background.and_then(|b| b.leases.clone()),
            dispatcher: background
                .and_then(|b| b.dispatcher.as_ref())
                .map(Dispatcher::liveness),
            backpressure: background.and_then(|b| b.backpressure.clone()),
        }
    }
}

/// A host's background work, running until [`Background::stop`].
pub struct Background {
    dispatcher: Option<Dispatcher>,
    leases: Option<Arc<PartitionLeases>>,
    maintenance: JoinHandle<()>,
    backpressure: Option<Arc<Backpressure>>,
    /// The task that counts the backlog for `backpressure`.
    counting: Option<JoinHandle<()>>,
}

impl Background {
    /// Stops: no new maintenance pass or delivery starts, the deliveries that run get up to
    /// `grace` to finish, and the partitions are given back so other hosts take them over at
    /// once. Returns how many deliveries were still running when the grace ran out (they are
    /// delivered again later).
    pub async fn stop(self, grace: Duration) -> usize {
        self.maintenance.abort();
        if let Some(counting) = &self.counting {
            counting.abort();
        }
        let unfinished = match self.dispatcher {
            Some(dispatcher) => dispatcher.drain(grace).await,
            None => 0,
        };
        if let Some(leases) = &self.leases {
            leases.leave().await;
        }
        unfinished
    }
}
