//! **S1** and **S1-pg**: the highest rate of `bench.touch` commands (one subscriber) the host
//! delivers as fast as it takes them, found by bisection on the rate of an open loop. A rate
//! holds when the pending deliveries stay under [`PENDING_LIMIT`] for a whole window.

use crate::pipeline::{OpenLoop, StoreKind, open_loop, pending};
use crate::report::Run;
use crate::{Bench, close};
use handler_host::app::Delivery;
use handler_host::stats::percentile;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Pending deliveries at which a window's rate is one the subscriber does not keep up with.
const PENDING_LIMIT: i64 = 1_000;

/// How often a window counts the pending deliveries.
const PENDING_EVERY: Duration = Duration::from_millis(100);

/// How long the end of a window waits for the deliveries still running, so that none of them
/// is left to commit after the window's database is closed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The length of each window and how many windows (bisection steps) one run takes.
pub(crate) fn windows(quick: bool) -> (Duration, usize) {
    if quick {
        (Duration::from_secs(2), 3)
    } else {
        (Duration::from_secs(30), 5)
    }
}

/// One window of the bisection: an open loop at one rate, on a fresh database.
struct Window {
    /// Whether the pending deliveries stayed under [`PENDING_LIMIT`] throughout.
    held: bool,
    /// The most pending deliveries counted.
    most_pending: i64,
    /// What the open loop measured (up to where it stopped, when the window failed).
    measured: OpenLoop,
}

impl Bench {
    /// S1/S1-pg: bisects (0, `ceiling`] commands a second (`ceiling` being the closed-loop P1
    /// or P1-pg of this run) for the highest rate whose window held; the command p99 and the
    /// event lag p99 (command answered → subscriber done) are those of that window. No window
    /// held: 0.
    pub(crate) async fn saturation(
        &self,
        run: usize,
        kind: StoreKind,
        ceiling: f64,
    ) -> anyhow::Result<Run> {
        let (window, steps) = windows(self.args.quick);
        let (mut low, mut high) = (0.0, ceiling);
        let mut best = None;
        for step in 0..steps {
            let rate = (low + high) / 2.0;
            let tried = self
                .saturation_window(kind, run, step, rate, window)
                .await?;
            tracing::info!(
                ?kind,
                rate,
                held = tried.held,
                most_pending = tried.most_pending,
                "saturation window"
            );
            if tried.held {
                low = rate;
                best = Some(tried);
            } else {
                high = rate;
            }
        }
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let (command_p99, lag_p99, most_pending) = best.map_or((0.0, 0.0, 0.0), |best| {
            let mut lags: Vec<Duration> = best
                .measured
                .sampled
                .iter()
                .map(|&(answered, done)| done.saturating_sub(answered))
                .collect();
            lags.sort();
            (
                ms(percentile(&best.measured.answered, 99.0)),
                ms(percentile(&lags, 99.0)),
                best.most_pending as f64,
            )
        });
        Ok(Run {
            value: low,
            detail: vec![
                ("command p99 ms".into(), command_p99),
                ("event lag p99 ms".into(), lag_p99),
                ("most pending".into(), most_pending),
            ],
        })
    }

    /// What `bench.touch` commands at `rate` a second do for `window` on a fresh database
    /// with the dispatcher running, the pending deliveries counted every [`PENDING_EVERY`];
    /// the window ends early once [`PENDING_LIMIT`] are pending.
    async fn saturation_window(
        &self,
        kind: StoreKind,
        run: usize,
        step: usize,
        rate: f64,
        window: Duration,
    ) -> anyhow::Result<Window> {
        let rig = self.rig(kind, &format!("saturation{step}"), run).await?;
        let task = rig.start(Some(&Delivery::new("bench"))).await;
        let over = Arc::new(AtomicBool::new(false));
        let finished = Arc::new(AtomicBool::new(false));
        let counting = {
            let (store, over, finished) = (rig.store().clone(), over.clone(), finished.clone());
            tokio::spawn(async move {
                let mut most = 0;
                let mut ticker = tokio::time::interval(PENDING_EVERY);
                while !finished.load(Ordering::Relaxed) {
                    ticker.tick().await;
                    most = most.max(pending(&store).await?);
                    if most >= PENDING_LIMIT {
                        over.store(true, Ordering::Relaxed);
                    }
                }
                anyhow::Ok(most)
            })
        };
        let measured = open_loop(&rig, window, rate, &over).await;
        finished.store(true, Ordering::Relaxed);
        let most_pending = counting.await?;
        task.stop(STOP_GRACE).await;
        close(std::slice::from_ref(&rig)).await;
        let most_pending = most_pending?;
        Ok(Window {
            held: most_pending < PENDING_LIMIT,
            most_pending,
            measured: measured?,
        })
    }

    /// S1's conditions: the bisection's range (up to `ceiling`, the figure `ceiling_id` of
    /// this run), its windows and the limit on pending deliveries.
    pub(crate) fn saturation_conditions(&self, ceiling_id: &str, ceiling: f64) -> String {
        let (window, steps) = windows(self.args.quick);
        format!(
            "`bench.touch` open loop, each command on its own key, 1 subscriber; bisection on the rate in (0, {ceiling_id} = {ceiling:.0} cmd/s], {steps} windows of {} s, each on a fresh database and ended early once {PENDING_LIMIT} deliveries are pending (counted every {} ms); p99s from the highest rate that held",
            window.as_secs(),
            PENDING_EVERY.as_millis()
        )
    }
}
