//! Every tunable of the host, with its default written once.

use crate::retry::RetryPolicy;
use serde::Serialize;
use std::time::Duration;

/// The database used when none is given: a SQLite file in the current directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://handler-host.db";
/// The HTTP address used when none is given. Loopback only: the admin surface is not meant
/// to be reachable from other machines unless the operator says so.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7878";

/// What one handler call may consume. The same limits apply to every plugin for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// Wall-clock budget of one handler call, enforced by epoch interruption.
    #[serde(with = "millis")]
    pub call_deadline: Duration,
    /// Cap on a guest's linear memory, in bytes.
    pub memory_bytes: usize,
    /// Cap on what a guest may print to stdout/stderr in one call; the rest is dropped
    /// (counted in the log line), so a chatty guest cannot grow the host.
    pub guest_output_bytes: usize,
}

impl Limits {
    pub const DEFAULT: Self = Self {
        call_deadline: Duration::from_secs(5),
        memory_bytes: 64 << 20,
        guest_output_bytes: 64 << 10,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// How the background dispatcher works.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DispatchConfig {
    /// Deliveries handled at the same time (different partition keys only).
    pub concurrency: usize,
    /// Fallback scan interval; commits wake the dispatcher at once, so this only matters for
    /// work written by another process (e.g. `host bus replay`).
    #[serde(with = "millis")]
    pub poll_interval: Duration,
    /// Retry policy for failed deliveries.
    #[serde(skip)]
    pub retry: RetryPolicy,
}

impl DispatchConfig {
    pub const DEFAULT: Self = Self {
        concurrency: 16,
        poll_interval: Duration::from_millis(500),
        retry: RetryPolicy::DEFAULT,
    };
}

impl Default for DispatchConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

mod millis {
    use serde::Serializer;
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
}

/// How long an idempotency key's first outcome is kept and replayed.
pub const DEFAULT_IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 60 * 60);
