//! What a unit of work asks the store to write, and what became of it: the items of a batch
//! ([`Write`]) with their parts, and the answer for each ([`Applied`]).

use super::StateVersion;
use crate::error::HandlerFailure;
use crate::message::Message;

/// The state part of a unit of work: what it read (and at which version) and what it writes.
#[derive(Debug, Clone, Default)]
pub struct StateChanges {
    /// The plugin whose state is read and written.
    pub plugin: String,
    /// Versions that must still be current for the writes to be valid.
    pub reads: Vec<(String, StateVersion)>,
    /// `None` deletes the key.
    pub writes: Vec<(String, Option<Vec<u8>>)>,
}

/// An event ready for the outbox: fully enveloped and addressed to its subscribers.
#[derive(Debug, Clone)]
pub struct OutboxEvent {
    /// The event, with its whole envelope.
    pub message: Message,
    /// The plugin whose handler emitted it.
    pub emitted_by: String,
    /// Plugins whose event patterns match its kind; one delivery row each.
    pub subscribers: Vec<String>,
    /// Not delivered before this instant (milliseconds since the Unix epoch); `None` is at
    /// once.
    pub deliver_at_ms: Option<i64>,
}

/// The stored first outcome of an idempotent command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    /// The caller's idempotency key.
    pub key: String,
    /// The kind of the command that first used the key.
    pub command_kind: String,
    /// SHA-256 of kind and payload: the same key with another request is refused.
    pub request_hash: String,
    /// What that first request ended as.
    pub outcome: FirstOutcome,
    /// When the outcome was recorded (ms since the epoch).
    pub created_at_ms: i64,
    /// When the key lapses (ms since the epoch): from then on a request with it runs afresh.
    pub expires_at_ms: i64,
}

/// What the first request with an idempotency key ended as, replayed to every later one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirstOutcome {
    /// The handler ran and its effects committed: its reply.
    Succeeded(Vec<u8>),
    /// The handler rejected the request (nothing of it committed): the rejection.
    Rejected(HandlerFailure),
}

/// What happens to a delivery whose attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryFate {
    /// Try again at this time (ms since the epoch).
    RetryAt(i64),
    /// Move it to the dead-letter queue.
    Dead,
}

/// As a log line says it: `retry in 412 ms` (from now), or `dead-lettered`.
impl std::fmt::Display for DeliveryFate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::RetryAt(at) => write!(f, "retry in {} ms", (at - super::now_ms()).max(0)),
            Self::Dead => f.write_str("dead-lettered"),
        }
    }
}

/// One unit of work for the writer.
#[derive(Debug, Clone)]
pub enum Write {
    /// A command's effects, and its idempotency record when it carried a key. A rejected
    /// command with a key commits the record alone.
    Command {
        /// What the handler read and writes.
        changes: StateChanges,
        /// The events it emitted, addressed.
        outbox: Vec<OutboxEvent>,
        /// The command's first outcome under its idempotency key; `None` without a key.
        idempotency: Option<IdempotencyRecord>,
    },
    /// A subscriber's effects together with its inbox mark (the delivery turning `done`).
    Delivered {
        /// The delivery the handler ran for.
        delivery_id: i64,
        /// The attempt that succeeded; guards against a concurrent duplicate run.
        attempt: u32,
        /// The epoch of the partition lease it was claimed under (PostgreSQL); it commits
        /// only while that lease is still this host's.
        lease: Option<i64>,
        /// The plugin build that handled it (see [`crate::plugin::Plugin::identity`]).
        handled_by: String,
        /// What the handler read and writes.
        changes: StateChanges,
        /// The events it emitted, addressed.
        outbox: Vec<OutboxEvent>,
    },
    /// A failed delivery attempt: the error is recorded, nothing of the handler's is.
    DeliveryFailed {
        /// The delivery whose attempt failed.
        delivery_id: i64,
        /// The attempt that failed; guards against a concurrent duplicate run, as in
        /// [`Write::Delivered`].
        attempt: u32,
        /// As in [`Write::Delivered`].
        lease: Option<i64>,
        /// The plugin build that failed it (see [`crate::plugin::Plugin::identity`]).
        handled_by: String,
        /// Why it failed: recorded with the delivery.
        failure: HandlerFailure,
        /// Whether it is retried, and when, or dead-lettered.
        fate: DeliveryFate,
    },
    /// The next delivery of a run: consecutive deliveries of one subscriber and partition key
    /// run one after another, each reading the writes of the one before before they are
    /// committed, so it commits only when the item just before it in the batch committed.
    Chained(Box<Write>),
}

/// The result of one item of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The item's writes are committed.
    Committed,
    /// A key read by the handler changed before commit; re-run the handler.
    Conflict,
    /// Another request committed this idempotency key first; replay its outcome.
    IdempotencyTaken,
    /// The delivery is no longer pending at this attempt (already done, replayed, dead).
    DeliveryStale,
    /// The partition lease the delivery was claimed under has passed to another host (or
    /// the partitions were changed): its outcome is not recorded; the partition's owner runs
    /// it.
    LeaseLost,
    /// The item before this [`Write::Chained`] one did not commit, so neither does this one:
    /// it ran on writes that are not there.
    RunCut,
}
