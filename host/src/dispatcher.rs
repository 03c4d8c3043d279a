//! The background delivery loop.
//!
//! Woken by every commit (and by a slow poll, for work written by other processes), it scans
//! for due deliveries and runs them concurrently — but never two of the same subscriber and
//! partition key at once, and never one whose key has an earlier unfinished delivery, so each
//! subscriber sees a key's messages in commit order. Each subscriber's deliveries follow its
//! own [`crate::config::PluginPolicy`]: retry schedule, dead-letter classes, and whether a
//! failing message holds back its key (`strict`) or is parked so the key moves on (`skip`).
//!
//! On PostgreSQL it claims only deliveries of the partitions this host leases
//! ([`crate::partitions`]), each under the epoch of its lease, which the commit checks.

use crate::config::{DispatchConfig, HostConfig, Ordering, PluginPolicy};
use crate::executor::{Delivered, Executor};
use crate::partitions::PartitionLeases;
use crate::store::{DeliveryFate, DueDelivery, Partitions, Store, now_ms};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};

/// Most deliveries claimed by one scan (the free slots decide below that).
const SCAN_LIMIT: u32 = 256;
/// A new scan waits until one slot in this many is free (see [`worth_a_scan`]).
const REFILL_FRACTION: usize = 4;
/// Most deliveries of one subscriber and key claimed as one run, which runs one after another
/// in one slot and commits together: enough that a hot key pays for a commit and a scan
/// once per this many events, few enough that a run of a slow handler (a millisecond and
/// more a call) still commits within tens of milliseconds.
const RUN_LENGTH: usize = 32;

/// What is running now: delivery ids, and (subscriber, key) pairs that must not overlap.
#[derive(Default)]
struct InFlight {
    deliveries: HashSet<i64>,
    keys: HashSet<(String, String)>,
}

/// The running dispatcher.
pub struct Dispatcher {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    liveness: Liveness,
    /// One permit per delivery that may run: all of them free means none is running.
    slots: Arc<Semaphore>,
    concurrency: usize,
}

/// Whether the dispatcher's loop still runs, for `GET /ready`: false once it ended, whether
/// stopped or failed.
#[derive(Debug, Clone)]
pub struct Liveness(Arc<AtomicBool>);

impl Liveness {
    pub fn is_running(&self) -> bool {
        self.0.load(AtomicOrdering::Relaxed)
    }
}

/// Marks the loop ended when dropped: on return, on abort and on a panic alike.
struct Running(Liveness);

impl Drop for Running {
    fn drop(&mut self) {
        (self.0).0.store(false, AtomicOrdering::Relaxed);
    }
}

impl Dispatcher {
    /// Whether the loop runs, for readiness checks.
    pub fn liveness(&self) -> Liveness {
        self.liveness.clone()
    }

    /// Stops claiming deliveries and waits up to `grace` for the running ones to finish;
    /// returns how many were still running when it gave up (0 when all finished).
    pub async fn drain(self, grace: Duration) -> usize {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        let all = u32::try_from(self.concurrency).unwrap_or(u32::MAX);
        match tokio::time::timeout(grace, self.slots.acquire_many(all)).await {
            Ok(_) => 0,
            Err(_) => self.concurrency - self.slots.available_permits(),
        }
    }
}

/// Starts the dispatcher. `wake` is notified by the committer after each commit. With
/// `leases` (PostgreSQL), it runs only the deliveries of the partitions held.
pub fn spawn(
    executor: Arc<Executor>,
    store: Store,
    config: DispatchConfig,
    policies: Arc<HostConfig>,
    leases: Option<Arc<PartitionLeases>>,
    wake: Arc<Notify>,
) -> Dispatcher {
    let (stop, stopped) = watch::channel(false);
    let slots = Arc::new(Semaphore::new(config.concurrency));
    let liveness = Liveness(Arc::new(AtomicBool::new(true)));
    let running = Running(liveness.clone());
    let task = tokio::spawn(run(
        executor,
        store,
        config,
        policies,
        leases,
        wake,
        slots.clone(),
        stopped,
        running,
    ));
    Dispatcher {
        stop,
        task,
        liveness,
        slots,
        concurrency: config.concurrency,
    }
}

#[allow(clippy::too_many_arguments)]
async fn run(
    executor: Arc<Executor>,
    store: Store,
    config: DispatchConfig,
    policies: Arc<HostConfig>,
    leases: Option<Arc<PartitionLeases>>,
    wake: Arc<Notify>,
    slots: Arc<Semaphore>,
    mut stopped: watch::Receiver<bool>,
    _running: Running,
) {
    let in_flight = Arc::new(Mutex::new(InFlight::default()));
    loop {
        // While the database fails, pause (doubling) rather than retry hot; the store's
        // health logs the failure once, then periodically.
        let backoff = store.health().backoff();
        if let Some(pause) = backoff {
            let _ = tokio::time::timeout(pause, stopped.wait_for(|stop| *stop)).await;
            // Deliveries that wait retry the failed commits; when none wait (only commands
            // failed), a probe write tells whether commits work again.
            if store.health().commits_failing() {
                let _ = store.probe_commit().await;
            }
        }
        // Stopped, or the handle that could stop it is gone.
        if *stopped.borrow() || stopped.has_changed().is_err() {
            return;
        }
        let subscribers = executor.registry().names();
        let skip = skipping(&subscribers, &policies);
        // Claim only what the free slots can run, leaving out what already runs; while the
        // database fails, one delivery at a time probes whether it is back.
        let running: Vec<i64> = in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .deliveries
            .iter()
            .copied()
            .collect();
        let free = slots.available_permits().min(SCAN_LIMIT as usize) as u32;
        let limit = if backoff.is_some() { free.min(1) } else { free };
        // On PostgreSQL, only the partitions held now (none: nothing to scan).
        let partitions = leases.as_ref().map(|leases| leases.claimable());
        let scanned = match &partitions {
            Some(None) => Ok(Vec::new()),
            _ if limit == 0 => Ok(Vec::new()),
            _ => {
                let held = partitions.as_ref().and_then(Option::as_ref);
                match store
                    .due_deliveries(&subscribers, &skip, &running, held, limit)
                    .await
                {
                    Ok(heads) => store.delivery_runs(heads, RUN_LENGTH).await,
                    Err(error) => Err(error),
                }
            }
        };
        match scanned {
            Ok(runs) => {
                for run in runs {
                    let started = start_run(run, &in_flight, &slots, leases.as_ref());
                    let Some((mut run, key, slot, claim)) = started else {
                        continue;
                    };
                    if let Some((_, _, epoch)) = &claim {
                        for delivery in &mut run {
                            delivery.lease = Some(*epoch);
                        }
                    }
                    let policy = *policies.policy(&run[0].subscriber);
                    let worker = KeyWorker {
                        executor: executor.clone(),
                        store: store.clone(),
                        in_flight: in_flight.clone(),
                        stopped: stopped.clone(),
                        lease: claim.as_ref().map(|(_, _, epoch)| *epoch),
                    };
                    let wake = wake.clone();
                    tokio::spawn(async move {
                        let recorded = worker.work(run, &policy, key.is_some()).await;
                        if let Some(k) = &key {
                            let mut running =
                                worker.in_flight.lock().unwrap_or_else(|e| e.into_inner());
                            running.keys.remove(k);
                        }
                        if let Some((leases, partition, _)) = claim {
                            leases.finished(partition);
                        }
                        drop(slot);
                        if recorded {
                            wake.notify_one();
                        }
                    });
                }
            }
            Err(error) => tracing::debug!("dispatcher scan failed: {error:#}"),
        }
        let until_retry = match store.next_retry_at_ms().await {
            Ok(Some(at)) => Duration::from_millis((at - now_ms()).max(1) as u64),
            _ => config.poll_interval,
        };
        tokio::select! {
            _ = tokio::time::timeout(
                until_retry.min(config.poll_interval),
                worth_a_scan(&wake, &slots, config.concurrency),
            ) => {}
            _ = stopped.wait_for(|stop| *stop) => return,
        }
    }
}

/// What runs the deliveries of one (subscriber, key), run after run.
struct KeyWorker {
    executor: Arc<Executor>,
    store: Store,
    in_flight: Arc<Mutex<InFlight>>,
    stopped: watch::Receiver<bool>,
    /// The epoch of the partition lease the key's deliveries were claimed under.
    lease: Option<i64>,
}

impl KeyWorker {
    /// Runs `run`; then, while the last run was whole (as long as a run may be, and all of it
    /// done) and its deliveries are `keyed`, the next run of the same key straight away, with
    /// no scan between: a hot key's backlog is worked at the pace of its handler and its
    /// commits. Stops at a failure, at the end of the backlog and when the dispatcher stops.
    /// Returns whether any outcome was recorded.
    async fn work(&self, mut run: Vec<DueDelivery>, policy: &PluginPolicy, keyed: bool) -> bool {
        let mut recorded = false;
        loop {
            let outcomes = self.executor.deliver_run(&run, policy).await;
            for (delivery, outcome) in run.iter().zip(&outcomes) {
                tracing::debug!(
                    delivery = delivery.delivery_id,
                    ?outcome,
                    "delivery finished"
                );
            }
            recorded |= outcomes.iter().any(|o| *o != Delivered::NotRecorded);
            let whole =
                outcomes.len() == RUN_LENGTH && outcomes.iter().all(|o| *o == Delivered::Done);
            let mut next = Vec::new();
            if whole && keyed && !*self.stopped.borrow() {
                let last = run.last().cloned().into_iter().collect();
                match self.store.delivery_runs(last, RUN_LENGTH + 1).await {
                    Ok(mut runs) => next = runs.pop().unwrap_or_default().split_off(1),
                    Err(error) => {
                        tracing::debug!("reading the next run of a key failed: {error:#}")
                    }
                }
            }
            for delivery in &mut next {
                delivery.lease = self.lease;
            }
            let mut running = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            for delivery in &run {
                running.deliveries.remove(&delivery.delivery_id);
            }
            running
                .deliveries
                .extend(next.iter().map(|d| d.delivery_id));
            drop(running);
            if next.is_empty() {
                return recorded;
            }
            run = next;
        }
    }
}

/// What a started run holds until it finishes: its (subscriber, key), its slot, and the
/// partition lease it was claimed under (leases, partition, epoch).
type Started = (
    Vec<DueDelivery>,
    Option<(String, String)>,
    OwnedSemaphorePermit,
    Option<(Arc<PartitionLeases>, i64, i64)>,
);

/// Marks `run` running, unless one of its key already runs or it was claimed before: takes a
/// slot (none free: `None`, and a finishing run wakes the next scan) and the lease of its
/// partition (gone since the scan: `None`).
fn start_run(
    run: Vec<DueDelivery>,
    in_flight: &Mutex<InFlight>,
    slots: &Arc<Semaphore>,
    leases: Option<&Arc<PartitionLeases>>,
) -> Option<Started> {
    let head = run.first()?;
    let key = head
        .message
        .partition_key
        .clone()
        .map(|k| (head.subscriber.clone(), k));
    let mut running = in_flight.lock().unwrap_or_else(|e| e.into_inner());
    if run
        .iter()
        .any(|d| running.deliveries.contains(&d.delivery_id))
        || key.as_ref().is_some_and(|k| running.keys.contains(k))
    {
        return None;
    }
    let slot = slots.clone().try_acquire_owned().ok()?;
    // The lease may have gone since the scan (given back, expired).
    let claim = match (leases, head.partition) {
        (Some(leases), Some(partition)) => {
            let epoch = leases.claim(partition)?;
            Some((leases.clone(), partition, epoch))
        }
        _ => None,
    };
    running.deliveries.extend(run.iter().map(|d| d.delivery_id));
    if let Some(k) = &key {
        running.keys.insert(k.clone());
    }
    Some((run, key, slot, claim))
}

/// The subscribers whose failing message is parked so that its key moves on.
fn skipping(subscribers: &[String], policies: &HostConfig) -> Vec<String> {
    subscribers
        .iter()
        .filter(|name| policies.policy(name).ordering == Ordering::Skip)
        .cloned()
        .collect()
}

/// How many deliveries a flush runs at most unless told otherwise.
pub const DEFAULT_FLUSH_LIMIT: usize = 10_000;

/// Runs what is due now, one delivery after another, until nothing is due or `limit`
/// deliveries ran, and reports each with its outcome (`host bus flush`, `POST /admin/flush`);
/// with `dry_run`, runs nothing and reports what is due now. Every partition is flushed,
/// leases or not: beside a running host, a delivery may run in both, and its effects commit
/// once.
///
/// # Errors
/// The database could not be read.
pub async fn flush(
    executor: &Executor,
    policies: &HostConfig,
    limit: usize,
    dry_run: bool,
) -> anyhow::Result<Vec<FlushedDelivery>> {
    if dry_run {
        let due = due_now(executor, policies, limit).await?;
        return Ok(due.iter().map(|d| FlushedDelivery::of(d, None)).collect());
    }
    let mut ran = Vec::new();
    while ran.len() < limit {
        let due = due_now(
            executor,
            policies,
            (limit - ran.len()).min(SCAN_LIMIT as usize),
        )
        .await?;
        if due.is_empty() {
            break;
        }
        for delivery in due {
            let outcome = executor
                .deliver(&delivery, policies.policy(&delivery.subscriber))
                .await;
            ran.push(FlushedDelivery::of(&delivery, Some(&outcome)));
        }
    }
    Ok(ran)
}

/// Up to `limit` deliveries due now in every partition, the first of each key (what
/// [`flush`] runs next).
///
/// # Errors
/// The database could not be read.
async fn due_now(
    executor: &Executor,
    policies: &HostConfig,
    limit: usize,
) -> anyhow::Result<Vec<DueDelivery>> {
    let subscribers = executor.registry().names();
    let skip = skipping(&subscribers, policies);
    let limit = u32::try_from(limit).unwrap_or(u32::MAX);
    executor
        .store()
        .due_deliveries(&subscribers, &skip, &[], Some(&Partitions::all()), limit)
        .await
}

/// One delivery [`flush`] ran (or [`due_now`] found), as `host bus flush` and the admin API
/// report it.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct FlushedDelivery {
    pub id: i64,
    pub subscriber: String,
    pub kind: String,
    pub partition_key: Option<String>,
    pub attempt: u32,
    /// `done`, `retry`, `dead`, `skipped`, `not_recorded`; absent in a dry run.
    pub outcome: Option<String>,
    /// The failure's class, when it failed.
    pub class: Option<String>,
    /// When a failed delivery runs again (ms since the epoch).
    pub retry_at_ms: Option<i64>,
}

impl FlushedDelivery {
    pub fn of(due: &DueDelivery, outcome: Option<&Delivered>) -> Self {
        let (class, retry_at_ms) = match outcome {
            Some(Delivered::Failed { class, fate }) => (
                Some(class.as_str().to_owned()),
                match fate {
                    DeliveryFate::RetryAt(at) => Some(*at),
                    DeliveryFate::Dead => None,
                },
            ),
            _ => (None, None),
        };
        Self {
            id: due.delivery_id,
            subscriber: due.subscriber.clone(),
            kind: due.message.kind.clone(),
            partition_key: due.message.partition_key.clone(),
            attempt: due.attempts + 1,
            outcome: outcome.map(|o| o.as_str().to_owned()),
            class,
            retry_at_ms,
        }
    }
}

/// Waits until a scan would pay: something was committed or finished, and either nothing is
/// running or at least [`REFILL_FRACTION`] of the slots are free. Scanning after every single
/// delivery that finishes would read the same head of the queue again and again for one free
/// slot; claiming in batches costs one scan per batch.
async fn worth_a_scan(wake: &Notify, slots: &Semaphore, concurrency: usize) {
    let refill_at = (concurrency / REFILL_FRACTION).max(1);
    loop {
        wake.notified().await;
        let free = slots.available_permits();
        if free >= refill_at || free == concurrency {
            return;
        }
    }
}
