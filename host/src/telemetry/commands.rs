//! This host's commands as `host bus metrics` shows them through the host: per plugin and
//! command kind, since the host started or `host bus metrics --reset` ran, the answers by
//! outcome and the p50/p95/p99 time to answer. Commands are not stored, so these figures live
//! in the process that answered them; each host of a cluster has its own.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// The latest answer times kept per command kind, for the percentiles.
const SAMPLES: usize = 4096;

/// How the commands of one plugin and kind fared in this host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandMetrics {
    /// The plugin that owns the command kind.
    pub plugin: String,
    /// The command kind.
    pub kind: String,
    /// Answered with the handler's reply.
    pub ok: u64,
    /// Answered with the stored outcome of an idempotency key.
    pub replayed: u64,
    /// Answered with an error, by its class (`permanent`, `retryable`, `trap`, …).
    pub failed_by_class: BTreeMap<String, u64>,
    /// Failed over all answered.
    pub failure_rate: f64,
    /// Time to answer, over the latest answers (ms).
    pub latency_p50_ms: f64,
    /// 95th percentile of the same times (ms).
    pub latency_p95_ms: f64,
    /// 99th percentile of the same times (ms).
    pub latency_p99_ms: f64,
}

#[derive(Default)]
struct Tally {
    ok: u64,
    replayed: u64,
    failed_by_class: BTreeMap<&'static str, u64>,
    /// Answer times in microseconds, the latest last.
    samples: VecDeque<u64>,
}

/// Plugin → command kind → tally.
type Tallies = BTreeMap<String, BTreeMap<String, Tally>>;

fn tallies() -> &'static Mutex<Tallies> {
    static TALLIES: OnceLock<Mutex<Tallies>> = OnceLock::new();
    TALLIES.get_or_init(Mutex::default)
}

/// A command of `kind`, owned by `plugin`, was answered with `outcome` (`ok`, `replayed`, or
/// an error class) after `elapsed`.
pub(super) fn record(plugin: &str, kind: &str, outcome: &'static str, elapsed: Duration) {
    let mut tallies = tallies().lock().unwrap_or_else(|e| e.into_inner());
    // Looked up by reference: a kind seen before costs no allocation.
    if !tallies.contains_key(plugin) {
        tallies.insert(plugin.to_owned(), BTreeMap::new());
    }
    let kinds = tallies.get_mut(plugin).expect("inserted above");
    if !kinds.contains_key(kind) {
        kinds.insert(kind.to_owned(), Tally::default());
    }
    let tally = kinds.get_mut(kind).expect("inserted above");
    match outcome {
        "ok" => tally.ok += 1,
        "replayed" => tally.replayed += 1,
        class => *tally.failed_by_class.entry(class).or_default() += 1,
    }
    if tally.samples.len() == SAMPLES {
        tally.samples.pop_front();
    }
    tally
        .samples
        .push_back(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX));
}

/// The figures of every plugin and command kind answered since start or the last [`reset`],
/// by plugin and kind.
pub fn report() -> Vec<CommandMetrics> {
    let tallies = tallies().lock().unwrap_or_else(|e| e.into_inner());
    tallies
        .iter()
        .flat_map(|(plugin, kinds)| kinds.iter().map(move |(kind, tally)| (plugin, kind, tally)))
        .map(|(plugin, kind, tally)| {
            let failed: u64 = tally.failed_by_class.values().sum();
            let answered = tally.ok + tally.replayed + failed;
            let mut sorted: Vec<u64> = tally.samples.iter().copied().collect();
            sorted.sort_unstable();
            let ms = |p: f64| crate::stats::percentile(&sorted, p) as f64 / 1000.0;
            CommandMetrics {
                plugin: plugin.clone(),
                kind: kind.clone(),
                ok: tally.ok,
                replayed: tally.replayed,
                failed_by_class: tally
                    .failed_by_class
                    .iter()
                    .map(|(class, n)| ((*class).to_owned(), *n))
                    .collect(),
                failure_rate: crate::stats::share(failed, answered),
                latency_p50_ms: ms(50.0),
                latency_p95_ms: ms(95.0),
                latency_p99_ms: ms(99.0),
            }
        })
        .collect()
}

/// Forgets every figure: [`report`] counts from now on.
pub fn reset() {
    tallies().lock().unwrap_or_else(|e| e.into_inner()).clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_and_percentiles_are_counted_per_kind_until_reset() {
        // One process-wide table: this test's kinds are its own.
        for ms in 1..=100 {
            record("p", "t.one", "ok", Duration::from_millis(ms));
        }
        record("p", "t.one", "replayed", Duration::from_millis(1));
        record("p", "t.one", "permanent", Duration::from_millis(1));
        record("p", "t.one", "permanent", Duration::from_millis(1));
        let one = report().into_iter().find(|m| m.kind == "t.one").unwrap();
        assert_eq!((one.ok, one.replayed), (100, 1));
        assert_eq!(one.failed_by_class["permanent"], 2);
        assert!((one.failure_rate - 2.0 / 103.0).abs() < 1e-9);
        assert!((49.0..=52.0).contains(&one.latency_p50_ms), "{one:?}");
        assert!((96.0..=100.0).contains(&one.latency_p99_ms), "{one:?}");
        reset();
        assert!(!report().iter().any(|m| m.kind == "t.one"));
    }
}
