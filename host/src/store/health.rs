//! Whether the database is working, as the running host sees it.
//!
//! Every batch commit and every dispatcher scan reports its outcome here. While the database
//! fails (a full disk, a server that went away), the dispatcher backs off instead of retrying
//! hot, the failure is logged once when it starts, then at most every [`REPORT_EVERY`], and
//! once more when the database is back: when every operation has worked for a second with no
//! failure in between, so a disk where some commits fit and others fail does not flap.
//! `GET /ready` answers 503 with the cause until then.

use super::now_ms;
use serde::Serialize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often a failure that goes on is logged again.
pub const REPORT_EVERY: Duration = Duration::from_secs(30);
/// The first pause of the dispatcher after a failure; it doubles with each failure after it.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
/// The longest pause: a database that comes back is noticed within this time.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long the database must work without a failure to count as back.
const RECOVERED_AFTER: Duration = Duration::from_secs(1);

/// The database as the host last found it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DatabaseStatus {
    /// Whether the database counts as working: `false` from its first failure until every
    /// operation has worked, without a failure, for the settle time.
    pub ok: bool,
    /// When the current run of failures began (ms since the epoch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failing_since_ms: Option<i64>,
    /// Failed operations since then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failures: Option<u64>,
    /// The last error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What the host does with the database, each of which may fail on its own: on a full disk,
/// scans (reads) work while commits fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Commit,
    Scan,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Self::Commit => "commit",
            Self::Scan => "scanning for due deliveries",
        }
    }
}

#[derive(Debug)]
struct Failing {
    since: Instant,
    since_ms: i64,
    failures: u64,
    last_error: String,
    /// When the last failure happened: the database is back only [`DatabaseHealth::settle`]
    /// after it.
    last_failed: Instant,
    reported: Instant,
}

#[derive(Debug, Default)]
struct State {
    /// The operations whose last attempt failed.
    failed: [bool; 2],
    failing: Option<Failing>,
}

impl State {
    fn retrying(&self) -> bool {
        self.failed.iter().any(|f| *f)
    }
}

/// Shared by every clone of a [`super::Store`].
#[derive(Debug)]
pub struct DatabaseHealth {
    state: Mutex<State>,
    /// How long every operation must work, without a failure, before the database counts as
    /// back: on a nearly full disk some commits fit and others fail, and the host should not
    /// flap between the two (a log line and a readiness change at every turn).
    settle: Duration,
}

impl Default for DatabaseHealth {
    fn default() -> Self {
        Self::settling_after(RECOVERED_AFTER)
    }
}

impl DatabaseHealth {
    /// A health that counts the database as back `settle` after its last failure, once every
    /// operation works.
    pub fn settling_after(settle: Duration) -> Self {
        Self {
            state: Mutex::default(),
            settle,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the outcome of one operation.
    pub fn record<T>(&self, operation: Operation, result: &anyhow::Result<T>) {
        let what = operation.as_str();
        let mut state = self.state();
        state.failed[operation as usize] = result.is_err();
        let retrying = state.retrying();
        match (result, state.failing.as_mut()) {
            (Ok(_), None) => {}
            (Ok(_), Some(f)) if retrying || f.last_failed.elapsed() < self.settle => {}
            (Ok(_), Some(f)) => {
                tracing::info!(
                    seconds = f.since.elapsed().as_secs(),
                    failures = f.failures,
                    "the database works again; resuming"
                );
                state.failing = None;
            }
            (Err(error), None) => {
                let error = format!("{error:#}");
                tracing::error!(
                    "the database is failing ({what}): {error}; commands answer 503, deliveries \
                     wait and are retried with backoff (logged again every {} s while it lasts)",
                    REPORT_EVERY.as_secs()
                );
                let now = Instant::now();
                state.failing = Some(Failing {
                    since: now,
                    since_ms: now_ms(),
                    failures: 1,
                    last_error: error,
                    last_failed: now,
                    reported: now,
                });
            }
            (Err(error), Some(f)) => {
                f.failures += 1;
                f.last_error = format!("{error:#}");
                f.last_failed = Instant::now();
                if f.reported.elapsed() >= REPORT_EVERY {
                    f.reported = Instant::now();
                    tracing::warn!(
                        seconds = f.since.elapsed().as_secs(),
                        failures = f.failures,
                        "the database is still failing ({what}): {}",
                        f.last_error
                    );
                }
            }
        }
    }

    /// Whether the database counts as failing: from its first failure until every operation
    /// has worked for the settle time.
    pub fn is_failing(&self) -> bool {
        self.state().failing.is_some()
    }

    /// Whether the last commit failed.
    pub fn commits_failing(&self) -> bool {
        self.state().failed[Operation::Commit as usize]
    }

    /// How long to wait before touching the database again: `None` unless the last attempt
    /// of some operation failed.
    pub fn backoff(&self) -> Option<Duration> {
        let state = self.state();
        if !state.retrying() {
            return None;
        }
        let failures = state.failing.as_ref()?.failures;
        let doublings = failures.saturating_sub(1).min(16) as u32;
        Some(
            BACKOFF_FIRST
                .saturating_mul(1 << doublings)
                .min(BACKOFF_MAX),
        )
    }

    /// The status for `/ready`.
    pub fn status(&self) -> DatabaseStatus {
        match self.state().failing.as_ref() {
            None => DatabaseStatus {
                ok: true,
                failing_since_ms: None,
                failures: None,
                error: None,
            },
            Some(f) => DatabaseStatus {
                ok: false,
                failing_since_ms: Some(f.since_ms),
                failures: Some(f.failures),
                error: Some(f.last_error.clone()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_first_pause_to_the_cap_and_ends_on_success() {
        let health = DatabaseHealth::settling_after(Duration::ZERO);
        assert_eq!(health.backoff(), None);
        let failed: anyhow::Result<()> = Err(anyhow::anyhow!("disk full"));
        let pauses: Vec<Duration> = (0..8)
            .map(|_| {
                health.record(Operation::Commit, &failed);
                health.backoff().unwrap()
            })
            .collect();
        let ms: Vec<u128> = pauses.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        let status = health.status();
        assert!(!status.ok);
        assert_eq!(status.failures, Some(8));
        assert_eq!(status.error.as_deref(), Some("disk full"));
        health.record(Operation::Commit, &Ok(()));
        assert_eq!(health.backoff(), None);
        assert!(health.status().ok);
    }

    #[test]
    fn the_database_is_back_only_when_every_operation_works() {
        let health = DatabaseHealth::settling_after(Duration::ZERO);
        let failed: anyhow::Result<()> = Err(anyhow::anyhow!("disk full"));
        health.record(Operation::Commit, &failed);
        // A full disk still reads: a scan that works does not end the failure.
        health.record(Operation::Scan, &Ok(()));
        assert!(health.is_failing());
        health.record(Operation::Commit, &Ok(()));
        assert!(!health.is_failing());
    }

    #[test]
    fn a_commit_that_fits_between_failures_does_not_end_the_failure_before_it_settles() {
        let settle = Duration::from_millis(200);
        let health = DatabaseHealth::settling_after(settle);
        let failed: anyhow::Result<()> = Err(anyhow::anyhow!("disk full"));
        health.record(Operation::Commit, &failed);
        health.record(Operation::Commit, &Ok(()));
        // The last attempt worked: no more backoff, but still failing until it settles.
        assert_eq!(health.backoff(), None);
        assert!(health.is_failing());
        health.record(Operation::Commit, &failed);
        health.record(Operation::Commit, &Ok(()));
        assert!(!health.status().ok);
        assert_eq!(health.status().failures, Some(2), "one run of failures");
        std::thread::sleep(settle);
        health.record(Operation::Scan, &Ok(()));
        assert!(health.status().ok);
    }
}
