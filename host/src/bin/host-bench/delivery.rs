//! The backlog figures: **P4-backlog**, **P4-pg** and **P4-pg-3** events delivered per second
//! from a backlog of events on distinct keys, **H1** the same with every event on one
//! partition key (a hot key, delivered in strict order), and **P4-sched** P4-backlog beside
//! deliveries scheduled an hour ahead. Each drain is timed by the host's own count of
//! deliveries done, which costs the database nothing.

use crate::pipeline::{StoreKind, bench_message, pending, touch};
use crate::report::Run;
use crate::{Bench, PLUGIN, close};
use anyhow::{bail, ensure};
use handler_host::app::{Delivery, Host};
use handler_host::store::{Applied, StateChanges, Write, now_ms};
use handler_host::unit_of_work::EmittedEvent;
use std::time::{Duration, Instant};

/// The partition key of every event of H1: one popular article.
const HOT_KEY: &str = "hot";

/// How far ahead P4-sched's other deliveries are due.
const SCHEDULED_AHEAD: Duration = Duration::from_secs(3600);

/// Events committed a transaction when the benchmark writes them to the outbox itself.
const EVENTS_PER_WRITE: usize = 1_000;

/// How often a drain reads the count of deliveries done.
const DRAIN_POLL: Duration = Duration::from_millis(5);

/// How long a drain may go without a delivery done before its figure fails.
const DRAIN_STALL: Duration = Duration::from_secs(60);

impl Bench {
    /// P4 backlog: commands fill the outbox with the dispatcher off; then it drains, on
    /// `hosts` hosts (rigs in this process) sharing the database's partitions.
    pub(crate) async fn event_backlog(
        &self,
        run: usize,
        events: usize,
        kind: StoreKind,
        hosts: usize,
    ) -> anyhow::Result<Run> {
        let mut rigs = Vec::new();
        for _ in 0..hosts {
            rigs.push(self.rig(kind, "backlog", run).await?);
        }
        self.fill_with_commands(&rigs[0], events).await?;
        let drained = drain(&rigs, 0).await;
        close(&rigs).await;
        drained
    }

    /// P4-sched: P4-backlog behind `scheduled` deliveries to the same subscriber, each on a
    /// key of its own, committed first and due an hour later; the drain leaves them pending.
    pub(crate) async fn scheduled_backlog(
        &self,
        run: usize,
        events: usize,
        scheduled: usize,
    ) -> anyhow::Result<Run> {
        let rig = self.rig(StoreKind::Sqlite, "scheduled", run).await?;
        let due = now_ms() + SCHEDULED_AHEAD.as_millis() as i64;
        let later = (0..scheduled).map(|i| EmittedEvent {
            deliver_at_ms: Some(due),
            ..touched(&format!("later-{i}"), None)
        });
        write_events(&rig, later).await?;
        self.fill_with_commands(&rig, events).await?;
        let rigs = [rig];
        let drained = drain(&rigs, scheduled as i64).await;
        close(&rigs).await;
        drained
    }

    /// H1: `events` events on one partition key, numbered in commit order, drain to their
    /// subscriber under strict ordering; then its state must show every one handled once,
    /// each after the one before.
    pub(crate) async fn hot_key_backlog(&self, run: usize, events: usize) -> anyhow::Result<Run> {
        let rig = self.rig(StoreKind::Sqlite, "hot", run).await?;
        write_events(&rig, (1..=events).map(|seq| touched(HOT_KEY, Some(seq)))).await?;
        let rigs = [rig];
        let checked = match drain(&rigs, 0).await {
            Ok(run) => check_order(&rigs[0], events).await.map(|()| run),
            failed => failed,
        };
        close(&rigs).await;
        checked
    }

    /// Commits `events` `bench.touch` commands (each caller's share rounded up) from
    /// `--concurrency` callers, each on its own key, while no dispatcher runs: a backlog of
    /// one delivery a command.
    async fn fill_with_commands(&self, rig: &Host, events: usize) -> anyhow::Result<()> {
        let mut fill = tokio::task::JoinSet::new();
        for chunk in 0..self.args.concurrency {
            let executor = rig.executor().clone();
            let per_chunk = events.div_ceil(self.args.concurrency);
            fill.spawn(async move {
                for i in 0..per_chunk {
                    touch(&executor, &format!("b{chunk}-{i}")).await?;
                }
                anyhow::Ok(())
            });
        }
        while let Some(result) = fill.join_next().await {
            result??;
        }
        Ok(())
    }
}

/// Starts a dispatcher on each of `rigs` (hosts on one database) and times them until every
/// pending delivery to the benchmark plugin but the `left` ones not due is done; then stops
/// them and checks that exactly those are still pending. The value is deliveries a second.
async fn drain(rigs: &[Host], left: i64) -> anyhow::Result<Run> {
    let store = rigs[0].store();
    let total = pending(store).await? - left;
    let target = deliveries_done() + u64::try_from(total)?;
    let start = Instant::now();
    let mut dispatchers = Vec::new();
    for rig in rigs {
        dispatchers.push(rig.start(Some(&Delivery::new("bench"))).await);
    }
    let (mut done, mut progressed) = (deliveries_done(), Instant::now());
    while done < target {
        tokio::time::sleep(DRAIN_POLL).await;
        let now = deliveries_done();
        if now > done {
            (done, progressed) = (now, Instant::now());
        } else if progressed.elapsed() > DRAIN_STALL {
            bail!(
                "the drain stalled: {} of {total} deliveries done, none in {} s",
                total - (target - done) as i64,
                DRAIN_STALL.as_secs()
            );
        }
    }
    let elapsed = start.elapsed();
    for dispatcher in dispatchers {
        dispatcher.stop(Duration::ZERO).await;
    }
    let still = pending(store).await?;
    ensure!(
        still == left,
        "{still} deliveries pending after the drain, where the {left} not due should be"
    );
    Ok(Run {
        value: total as f64 / elapsed.as_secs_f64(),
        detail: vec![],
    })
}

/// The deliveries to the benchmark plugin this process has seen done, from the host's own
/// counter `handler_host_deliveries_total`: reading it costs the database nothing, where
/// counting the pending rows reads every one of them (on SQLite, ~15 ms at 120 000 pending)
/// on the CPUs the drain runs on.
fn deliveries_done() -> u64 {
    let subscriber = format!("subscriber=\"{PLUGIN}\"");
    handler_host::telemetry::install()
        .render()
        .lines()
        .filter(|line| {
            line.starts_with("handler_host_deliveries_total{")
                && line.contains(&subscriber)
                && line.contains("outcome=\"done\"")
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// A `bench.touched` event on `key`, its partition key too, numbered `seq` when given (the
/// benchmark plugin then checks that it comes after `seq - 1` others of its key).
fn touched(key: &str, seq: Option<usize>) -> EmittedEvent {
    let payload = serde_json::json!({ "key": key, "seq": seq });
    EmittedEvent::new(
        "bench.touched",
        payload.to_string().into_bytes(),
        Some(key.to_owned()),
    )
}

/// Commits `events` to the outbox of `rig`'s database as the benchmark plugin's,
/// [`EVENTS_PER_WRITE`] a transaction, each addressed to its subscribers as a handler's event
/// is; no handler runs.
async fn write_events(
    rig: &Host,
    events: impl IntoIterator<Item = EmittedEvent>,
) -> anyhow::Result<()> {
    let mut events = events.into_iter().peekable();
    while events.peek().is_some() {
        let chunk: Vec<EmittedEvent> = events.by_ref().take(EVENTS_PER_WRITE).collect();
        let cause = bench_message("bench.touch", b"{}".to_vec());
        let write = Write::Command {
            changes: StateChanges {
                plugin: PLUGIN.to_owned(),
                ..StateChanges::default()
            },
            outbox: rig.executor().address(&cause, PLUGIN, chunk),
            idempotency: None,
        };
        let applied = rig.store().apply_batch(&[write]).await?;
        ensure!(
            applied == [Applied::Committed],
            "the outbox write was not committed: {applied:?}"
        );
    }
    Ok(())
}

/// H1's check: the subscriber counted all `events` events of [`HOT_KEY`], and none of them
/// found a count other than the one before it (the plugin's `disorder/` mark).
async fn check_order(rig: &Host, events: usize) -> anyhow::Result<()> {
    let read = |key: String| async move {
        let (value, _) = rig.store().read_state(PLUGIN, &key).await?;
        value
            .map(|bytes| serde_json::from_slice::<usize>(&bytes))
            .transpose()
            .map_err(anyhow::Error::from)
    };
    if let Some(seq) = read(format!("disorder/{HOT_KEY}")).await? {
        bail!(
            "H1: events of key `{HOT_KEY}` were handled out of commit order, the last of them event {seq}"
        );
    }
    let seen = read(format!("seen/{HOT_KEY}")).await?.unwrap_or(0);
    ensure!(
        seen == events,
        "H1: the subscriber handled {seen} events of key `{HOT_KEY}`, not {events}"
    );
    Ok(())
}
