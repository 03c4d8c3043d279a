//! The partitions this host dispatches, when several hosts share a PostgreSQL database.
//!
//! A background task beats every fifth of the lease timeout ([`crate::store::Cluster`] does
//! the work in one transaction): it keeps the host's leases, takes free or expired partitions
//! up to its fair share of the live hosts, and gives back what is over its share once the
//! deliveries it runs there have finished. Other hosts' joins, departures and give-backs wake
//! it at once, so work moves within milliseconds when a host starts or stops cleanly, and
//! within the lease timeout when one dies.
//!
//! The dispatcher asks [`PartitionLeases::claim`] before it runs each delivery; a partition
//! is claimable only while its lease is held and not yet past its local deadline: the time the
//! beat that renewed it was sent, plus the timeout, which is never later than the expiry the
//! server recorded. Should a host be paused past that (a stopped process, a long GC-like stall,
//! a network partition), the commit of whatever it was running is refused by the lease check
//! in the commit itself.

use crate::store::{Beat, Cluster, HostIdentity, Partitions, Store};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// A beat comes every this fraction of the lease timeout, so a lease is renewed several times
/// before it could expire.
const BEATS_PER_TIMEOUT: u32 = 5;
/// While partitions wait to be given back, how soon to look again whether their deliveries
/// have finished.
const DRAIN_CHECK: Duration = Duration::from_millis(20);

/// This host's leases, as the dispatcher and the maintenance task use them.
pub struct PartitionLeases {
    cluster: Cluster,
    me: HostIdentity,
    timeout: Duration,
    state: Mutex<State>,
    /// Woken when partitions are gained, to look for their deliveries.
    dispatcher: Arc<Notify>,
    /// Woken by other hosts' changes and when a partition being given back has drained.
    changed: Arc<Notify>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// This host's partitions, as `GET /health` shows them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LeaseStatus {
    /// This host's id in `host bus health`.
    pub host_id: String,
    /// How many partitions the deliveries are split into.
    pub partitions: i64,
    /// The partitions this host dispatches now (none while its leases ran out unrenewed).
    pub held: Vec<i64>,
    /// Partitions over this host's share, given back once their running deliveries finish.
    pub draining: Vec<i64>,
}

#[derive(Default)]
struct State {
    count: i64,
    held: BTreeMap<i64, Held>,
    /// When the leases held may no longer be used without a renewal.
    valid_until: Option<Instant>,
    /// Whether the last beat failed (logged once until one works).
    failing: bool,
    /// Whether this host's fair share is nothing (logged once until it is not).
    idle: bool,
}

struct Held {
    epoch: i64,
    /// Over this host's share: nothing new is claimed; given back once `in_flight` is 0.
    draining: bool,
    in_flight: usize,
}

impl PartitionLeases {
    /// Joins the hosts sharing `store`'s database (PostgreSQL) as the host serving on
    /// `address`: registers it, takes its share of the partitions, and keeps beating. `None`
    /// for SQLite, where one host dispatches everything.
    pub async fn join(
        store: &Store,
        address: &str,
        timeout: Duration,
        dispatcher: Arc<Notify>,
    ) -> Option<Arc<Self>> {
        let cluster = store.cluster()?;
        let me = HostIdentity {
            id: uuid::Uuid::now_v7().to_string(),
            name: format!("{}:{}", machine_name(), std::process::id()),
            address: address.to_owned(),
        };
        let leases = Arc::new(Self {
            cluster,
            me,
            timeout,
            state: Mutex::default(),
            dispatcher,
            changed: Arc::new(Notify::new()),
            task: Mutex::new(None),
        });
        leases.cluster.notify_on_change(leases.changed.clone());
        // The first beat before anything is dispatched: a lone host starts with every partition.
        leases.beat(true).await;
        let task = tokio::spawn(leases.clone().keep_beating());
        *leases.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
        Some(leases)
    }

    /// This host's id in the `hosts` table.
    pub fn host_id(&self) -> &str {
        &self.me.id
    }

    /// The partitions the dispatcher may claim deliveries from now; `None` when there are
    /// none (no lease held, or the leases ran out without a renewal).
    pub(crate) fn claimable(&self) -> Option<Partitions> {
        let state = self.lock();
        if !state.is_valid() {
            return None;
        }
        let held: Vec<i64> = state
            .held
            .iter()
            .filter(|(_, held)| !held.draining)
            .map(|(partition, _)| *partition)
            .collect();
        (!held.is_empty()).then_some(Partitions {
            count: state.count,
            held,
        })
    }

    /// Claims a delivery of `partition` for running: the epoch of the lease to commit it
    /// under, or `None` when this host may not run it now. Each claim is ended by
    /// [`PartitionLeases::finished`].
    pub fn claim(&self, partition: i64) -> Option<i64> {
        let mut state = self.lock();
        if !state.is_valid() {
            return None;
        }
        let held = state.held.get_mut(&partition)?;
        if held.draining {
            return None;
        }
        held.in_flight += 1;
        Some(held.epoch)
    }

    /// Ends a claim of `partition`.
    pub fn finished(&self, partition: i64) {
        let mut state = self.lock();
        if let Some(held) = state.held.get_mut(&partition) {
            held.in_flight = held.in_flight.saturating_sub(1);
            if held.draining && held.in_flight == 0 {
                self.changed.notify_one();
            }
        }
    }

    /// What `GET /health` says of this host's partitions.
    pub fn status(&self) -> LeaseStatus {
        let state = self.lock();
        let valid = state.is_valid();
        let held_where = |draining: bool| -> Vec<i64> {
            state
                .held
                .iter()
                .filter(|(_, held)| valid && held.draining == draining)
                .map(|(partition, _)| *partition)
                .collect()
        };
        LeaseStatus {
            host_id: self.me.id.clone(),
            partitions: state.count,
            held: held_where(false),
            draining: held_where(true),
        }
    }

    /// Whether this host holds `partition`'s lease now (the maintenance task runs on the
    /// holder of partition 0).
    pub fn holds(&self, partition: i64) -> bool {
        let state = self.lock();
        state.is_valid() && state.held.contains_key(&partition)
    }

    /// Stops beating and gives every lease back at once, so the other hosts take the
    /// partitions over now rather than when the leases expire. Call it after the dispatcher
    /// has drained.
    pub async fn leave(&self) {
        if let Some(task) = self.task.lock().unwrap_or_else(|e| e.into_inner()).take() {
            task.abort();
        }
        *self.lock() = State::default();
        match self.cluster.leave(&self.me.id).await {
            Ok(released) => tracing::info!(partitions = released, "gave back every partition"),
            Err(error) => tracing::warn!(
                "could not give back the partitions; they pass to other hosts when their leases expire: {error:#}"
            ),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn keep_beating(self: Arc<Self>) {
        let interval = self.timeout / BEATS_PER_TIMEOUT;
        loop {
            let draining = self.lock().held.values().any(|held| held.draining);
            let pause = if draining { DRAIN_CHECK } else { interval };
            let _ = tokio::time::timeout(pause, self.changed.notified()).await;
            self.beat(false).await;
        }
    }

    /// One beat: gives back the drained partitions, renews and takes leases, and decides
    /// which partitions to drain.
    async fn beat(&self, announce: bool) {
        let release: Vec<i64> = self
            .lock()
            .held
            .iter()
            .filter(|(_, held)| held.draining && held.in_flight == 0)
            .map(|(partition, _)| *partition)
            .collect();
        let sent = Instant::now();
        let timeout_ms = i64::try_from(self.timeout.as_millis()).unwrap_or(i64::MAX);
        match self
            .cluster
            .heartbeat(&self.me, timeout_ms, &release, announce)
            .await
        {
            Ok(beat) => self.apply(beat, sent, &release),
            Err(error) => {
                let mut state = self.lock();
                if !state.failing {
                    state.failing = true;
                    tracing::warn!(
                        "cannot renew the partition leases; this host stops dispatching when they run out: {error:#}"
                    );
                } else {
                    tracing::debug!("still cannot renew the partition leases: {error:#}");
                }
            }
        }
    }

    fn apply(&self, beat: Beat, sent: Instant, released: &[i64]) {
        let mut state = self.lock();
        if state.failing {
            state.failing = false;
            tracing::info!("renewing the partition leases again");
        }
        if state.count != 0 && state.count != beat.count {
            tracing::warn!(
                from = state.count,
                to = beat.count,
                "the partition count changed"
            );
        }
        let mut old = std::mem::take(&mut state.held);
        if !released.is_empty() {
            tracing::info!(
                partitions = ?released, live_hosts = beat.live_hosts.len(), share = beat.share,
                "gave back partitions to rebalance"
            );
        }
        let lost: Vec<i64> = old
            .keys()
            .filter(|partition| {
                !released.contains(partition)
                    && !beat.held.iter().any(|lease| lease.partition == **partition)
            })
            .copied()
            .collect();
        if !lost.is_empty() {
            tracing::warn!(
                partitions = ?lost,
                "lost partitions: their leases expired before this host renewed them (was it paused or cut off from the database?) and another host took them over"
            );
        }
        for lease in &beat.held {
            let held = match old.remove(&lease.partition) {
                Some(held) if held.epoch == lease.epoch => held,
                _ => Held {
                    epoch: lease.epoch,
                    draining: false,
                    in_flight: 0,
                },
            };
            state.held.insert(lease.partition, held);
        }
        // Over the share: drain the highest partitions, those already draining first.
        let surplus = state.held.len().saturating_sub(beat.share);
        let mut order: Vec<i64> = state.held.keys().rev().copied().collect();
        order.sort_by_key(|partition| !state.held[partition].draining);
        for (rank, partition) in order.into_iter().enumerate() {
            if let Some(held) = state.held.get_mut(&partition) {
                held.draining = rank < surplus;
            }
        }
        if !beat.taken.is_empty() {
            let mut from: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
            for taken in &beat.taken {
                let owner = taken.from.as_deref().unwrap_or("free");
                from.entry(owner).or_default().push(taken.lease.partition);
            }
            for (owner, partitions) in from {
                if owner == "free" {
                    tracing::info!(?partitions, "took free partitions");
                } else {
                    tracing::info!(
                        ?partitions,
                        host = owner,
                        "took over partitions whose lease had expired"
                    );
                }
            }
        }
        let idle = beat.share == 0;
        if idle && !state.idle {
            tracing::warn!(
                partitions = beat.count,
                live_hosts = beat.live_hosts.len(),
                "more hosts than partitions: this host dispatches nothing and only accepts commands and queries (`host bus partitions --set N` raises the count while no host runs)"
            );
        }
        state.idle = idle;
        state.count = beat.count;
        state.valid_until = Some(sent + self.timeout);
        drop(state);
        if !beat.taken.is_empty() {
            self.dispatcher.notify_one();
        }
    }
}

impl State {
    fn is_valid(&self) -> bool {
        self.valid_until.is_some_and(|until| Instant::now() < until)
    }
}

/// This machine's name, for the `hosts` table.
fn machine_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}
