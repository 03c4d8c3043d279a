//! Whether the database is working, as the running host sees it.
//!
//! Every batch commit and every dispatcher scan reports its outcome here. While the database
//! fails (a full disk, a server that went away), the dispatcher backs off instead of retrying
//! hot, the failure is logged once when it starts, then at most every [`REPORT_EVERY`], and
//! once more when the database is back; `GET /ready` answers 503 with the cause.

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

/// The database as the host last found it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DatabaseStatus {
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
    reported: Instant,
}

/// Shared by every clone of a [`super::Store`].
#[derive(Debug, Default)]
pub struct DatabaseHealth {
    failing: Mutex<Option<Failing>>,
    /// The operations whose last attempt failed: the database is back when none is left.
    failed: Mutex<[bool; 2]>,
}

impl DatabaseHealth {
    /// Records the outcome of one operation.
    pub fn record<T>(&self, operation: Operation, result: &anyhow::Result<T>) {
        let still_failing = {
            let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
            failed[operation as usize] = result.is_err();
            failed.iter().any(|f| *f)
        };
        let what = operation.as_str();
        let mut failing = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        match (result, failing.as_mut()) {
            (Ok(_), None) => {}
            (Ok(_), Some(_)) if still_failing => {}
            (Ok(_), Some(f)) => {
                tracing::info!(
                    seconds = f.since.elapsed().as_secs(),
                    failures = f.failures,
                    "the database works again; resuming"
                );
                *failing = None;
            }
            (Err(error), None) => {
                let error = format!("{error:#}");
                tracing::error!(
                    "the database is failing ({what}): {error}; commands answer 503, deliveries \
                     wait and are retried with backoff (logged again every {} s while it lasts)",
                    REPORT_EVERY.as_secs()
                );
                let now = Instant::now();
                *failing = Some(Failing {
                    since: now,
                    since_ms: now_ms(),
                    failures: 1,
                    last_error: error,
                    reported: now,
                });
            }
            (Err(error), Some(f)) => {
                f.failures += 1;
                f.last_error = format!("{error:#}");
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

    /// Whether the last operation failed.
    pub fn is_failing(&self) -> bool {
        self.failing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// How long to wait before touching the database again: `None` while it works.
    pub fn backoff(&self) -> Option<Duration> {
        let failing = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        let failures = failing.as_ref()?.failures;
        let doublings = failures.saturating_sub(1).min(16) as u32;
        Some(
            BACKOFF_FIRST
                .saturating_mul(1 << doublings)
                .min(BACKOFF_MAX),
        )
    }

    /// The status for `/ready`.
    pub fn status(&self) -> DatabaseStatus {
        let failing = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        match failing.as_ref() {
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
        let health = DatabaseHealth::default();
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
        let health = DatabaseHealth::default();
        let failed: anyhow::Result<()> = Err(anyhow::anyhow!("disk full"));
        health.record(Operation::Commit, &failed);
        // A full disk still reads: a scan that works does not end the failure.
        health.record(Operation::Scan, &Ok(()));
        assert!(health.is_failing());
        health.record(Operation::Commit, &Ok(()));
        assert!(!health.is_failing());
    }
}
