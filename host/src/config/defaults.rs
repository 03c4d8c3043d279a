//! Every tunable of the host that the configuration file does not set, with its default
//! written once: the limits of one handler call, the dispatcher's pace, where the host listens
//! and which database it opens.

use serde::Serialize;
use std::time::Duration;

/// The database used when none is given: a SQLite file in the current directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://handler-host.db";
/// The HTTP address used when none is given. Loopback only: the admin surface is not meant
/// to be reachable from other machines unless the operator says so.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7878";

/// What one handler call may consume. Every plugin gets [`Limits::DEFAULT`] unless the host
/// is given limits of its own for that plugin ([`crate::sandbox::Sandbox::with_plugin_limits`]).
///
/// Each default is written once, here, with the reason beside it; `docs/security.md` lists
/// them for operators.
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
    /// Elements one guest table may grow to.
    pub table_elements: usize,
    /// Core instances one call may create (a Rust component needs a handful).
    pub instances: usize,
    /// Tables one call may create.
    pub tables: usize,
    /// Linear memories one call may create.
    pub memories: usize,
    /// Largest payload handed to a handler: a command or query body, or an event.
    pub payload_in_bytes: usize,
    /// Largest payload a handler may hand back: a reply, or one emitted event's payload.
    pub payload_out_bytes: usize,
    /// Events one call may emit.
    pub events_per_call: usize,
    /// Largest value one `put` may write.
    pub state_value_bytes: usize,
    /// Distinct keys one call may write or delete.
    pub keys_written_per_call: usize,
    /// Distinct keys one call may read from the store.
    pub keys_read_per_call: usize,
    /// Bytes one call may buffer in the host before commit: written keys and values plus
    /// emitted kinds, partition keys and payloads.
    pub bytes_written_per_call: usize,
    /// Calls of one plugin running at the same time; the rest wait their turn.
    pub concurrent_calls: usize,
    /// Calls one instance serves before it is discarded. 1: every call gets a fresh
    /// instance. More: an instance whose call ended cleanly is kept for the next call of the
    /// same build of the same plugin, with the guest's globals as the last call left them; a
    /// trap or a handler error discards it.
    pub calls_per_instance: usize,
}

impl Limits {
    /// The built-in limits, used for every limit the configuration does not set.
    pub const DEFAULT: Self = Self {
        // Long enough for any honest handler (they take microseconds to milliseconds), short
        // enough that a loop is stopped before callers time out.
        call_deadline: Duration::from_secs(5),
        // Real handlers need a few MiB; 64 MiB leaves room for large JSON documents while
        // bounding what one call can take from the host.
        memory_bytes: 64 << 20,
        guest_output_bytes: 64 << 10,
        // Function tables of real programs hold hundreds to a few thousand entries; the
        // pooling allocator reserves address space for tables × this × 8 bytes up front.
        table_elements: 20_000,
        // A Rust wasm32-wasip2 component instantiates about 5 core instances, 2 memories and
        // 3 tables (its own plus the WASI adapter's); these leave room for other toolchains.
        instances: 32,
        tables: 32,
        memories: 4,
        // The HTTP body limit: a JSON document of 1 MiB is already far past a message.
        payload_in_bytes: 1 << 20,
        // What a handler emits becomes another handler's payload, so out = in.
        payload_out_bytes: 1 << 20,
        // Each event is an outbox row plus a delivery row per subscriber, all committed in one
        // transaction; a thousand keeps that transaction reasonable.
        events_per_call: 1_000,
        // State values are documents, not blobs.
        state_value_bytes: 1 << 20,
        // Each key is a row in the commit; a thousand keeps one unit of work a unit.
        keys_written_per_call: 1_000,
        // Each distinct key read is remembered for the optimistic check at commit.
        keys_read_per_call: 10_000,
        // Without a total, 1,000 writes of 1 MiB each would buffer 1 GiB in the host.
        bytes_written_per_call: 16 << 20,
        // One plugin may hold at most this many of the engine's instance slots
        // (`sandbox::MAX_CONCURRENT_INSTANCES`), so a plugin stuck in loops cannot starve the
        // others.
        concurrent_calls: 32,
        // A clean instance for every message unless a plugin's configuration says its
        // handlers keep nothing in globals that could change the next message's outcome.
        calls_per_instance: 1,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// How the background dispatcher works. Retry and ordering are per plugin
/// ([`crate::config::PluginPolicy`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DispatchConfig {
    /// Deliveries handled at the same time (different partition keys only).
    pub concurrency: usize,
    /// Fallback scan interval; commits wake the dispatcher at once, so this only matters for
    /// work written by another process (e.g. `host bus replay`).
    #[serde(with = "millis")]
    pub poll_interval: Duration,
}

impl DispatchConfig {
    /// The built-in defaults; the configuration file does not set them, so `host run` always
    /// uses these.
    pub const DEFAULT: Self = Self {
        concurrency: 64,
        poll_interval: Duration::from_millis(500),
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

/// How long a partition lease lasts unless renewed (PostgreSQL): a dead host's partitions wait
/// this long before another host takes them over; the shorter, the more often every host
/// writes its heartbeat.
pub const DEFAULT_LEASE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long an idempotency key's first outcome is kept and replayed.
pub const DEFAULT_IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Due deliveries not yet delivered at which commands are refused (`[backpressure] max_due`,
/// `--max-due`). Far past any backlog a healthy host has (at thousands of deliveries a second
/// it is tens of seconds of lag), near enough that the lag stays bounded when subscribers
/// cannot keep up; counting up to it every [`crate::backpressure::SAMPLE_EVERY`] costs a few
/// milliseconds of index scan at worst.
pub const DEFAULT_MAX_DUE: u64 = 100_000;

/// Largest `max_due` accepted: each sample counts up to the bound.
pub const MAX_MAX_DUE: u64 = 1_000_000_000;
