//! A batch of units of work and how it is planned: the backend-neutral half of a commit.
//!
//! A batch is one transaction with one fsync, and costs a fixed number of statements whatever
//! its size. A backend first reads, in one query each, the current versions of every key the
//! batch touches, which of its idempotency keys are live, and the status of every delivery it
//! finishes (holding the locks that keep those facts true until it commits). [`plan`] then
//! walks the items in order against that snapshot, exactly as if they ran one after another:
//! an item that fails its checks (a stale read, a taken key, a delivery no longer pending)
//! writes nothing and the rest still commit; an item sees the effects of the items before it.
//! What is left is a [`Plan`]: the rows to write, each table in one multi-row statement.

use super::StateVersion;
use super::write::{Applied, DeliveryFate, IdempotencyRecord, OutboxEvent, StateChanges, Write};
use crate::error::HandlerFailure;
use std::collections::{BTreeMap, HashMap, HashSet};

/// The status of a delivery row: what a batch checks before it finishes a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryRow {
    pub pending: bool,
    pub attempts: u32,
}

/// What a batch must know of the database before it can be planned: every state key it reads
/// or writes, every idempotency key it takes, every delivery it finishes and the lease each
/// was claimed under. Each list is sorted and without duplicates, which is also the order a
/// backend locks them in.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Lookups<'a> {
    pub state_keys: Vec<(&'a str, &'a str)>,
    pub idempotency_keys: Vec<&'a str>,
    pub delivery_ids: Vec<i64>,
    pub lease_epochs: Vec<i64>,
}

impl<'a> Lookups<'a> {
    /// The lookups `batch` needs.
    pub fn of(batch: &'a [Write]) -> Self {
        let mut lookups = Self::default();
        for item in batch {
            lookups.add(item);
        }
        lookups.state_keys.sort_unstable();
        lookups.state_keys.dedup();
        lookups.idempotency_keys.sort_unstable();
        lookups.idempotency_keys.dedup();
        lookups.delivery_ids.sort_unstable();
        lookups.delivery_ids.dedup();
        lookups.lease_epochs.sort_unstable();
        lookups.lease_epochs.dedup();
        lookups
    }

    /// Adds what `item` needs (unsorted).
    fn add(&mut self, item: &'a Write) {
        let lookups = self;
        let changes = match item {
            Write::Command {
                changes,
                idempotency,
                ..
            } => {
                if let Some(record) = idempotency {
                    lookups.idempotency_keys.push(&record.key);
                }
                changes
            }
            Write::Delivered {
                delivery_id,
                lease,
                changes,
                ..
            } => {
                lookups.delivery_ids.push(*delivery_id);
                lookups.lease_epochs.extend(lease);
                changes
            }
            Write::DeliveryFailed {
                delivery_id, lease, ..
            } => {
                lookups.delivery_ids.push(*delivery_id);
                lookups.lease_epochs.extend(lease);
                return;
            }
            Write::Chained(next) => return lookups.add(next),
        };
        let keys = changes.reads.iter().map(|(key, _)| key);
        let keys = keys.chain(changes.writes.iter().map(|(key, _)| key));
        lookups
            .state_keys
            .extend(keys.map(|key| (changes.plugin.as_str(), key.as_str())));
    }
}

/// The answers to a batch's [`Lookups`], read inside its transaction.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Current version of each (plugin, key) that exists; absent keys are version 0.
    pub versions: HashMap<(String, String), StateVersion>,
    /// The looked-up idempotency keys whose record has not expired.
    pub live_idempotency_keys: HashSet<String>,
    /// The looked-up deliveries that still exist.
    pub deliveries: HashMap<i64, DeliveryRow>,
    /// The looked-up lease epochs that are still their partition's.
    pub live_leases: HashSet<i64>,
}

impl Snapshot {
    /// Takes the versions read as (plugin, key, version) rows.
    pub fn set_versions(&mut self, rows: Vec<(String, String, StateVersion)>) {
        self.versions = rows
            .into_iter()
            .map(|(plugin, key, version)| ((plugin, key), version))
            .collect();
    }

    /// Takes the deliveries read as (id, status, attempts) rows.
    pub fn set_deliveries(&mut self, rows: Vec<(i64, String, i64)>) {
        self.deliveries = rows
            .into_iter()
            .map(|(id, status, attempts)| {
                let row = DeliveryRow {
                    pending: status == "pending",
                    attempts: attempts as u32,
                };
                (id, row)
            })
            .collect();
    }
}

/// The final value and version of one state key after the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateRow<'a> {
    pub plugin: &'a str,
    pub key: &'a str,
    /// `None` is a tombstone (the key was deleted).
    pub value: Option<&'a [u8]>,
    pub version: StateVersion,
}

/// A delivery that succeeded: its inbox mark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoneMark<'a> {
    pub delivery_id: i64,
    pub attempts: u32,
    pub lease: Option<i64>,
    pub handled_by: &'a str,
}

/// A delivery attempt that failed: retried later, or dead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureMark<'a> {
    pub delivery_id: i64,
    pub attempts: u32,
    pub lease: Option<i64>,
    pub dead: bool,
    pub next_attempt_at_ms: i64,
    pub handled_by: &'a str,
    pub failure: &'a HandlerFailure,
}

/// The rows a batch writes, once its checks have been made.
#[derive(Debug, Default)]
pub struct Plan<'a> {
    /// One result per item of the batch, in order.
    pub results: Vec<Applied>,
    /// Upserts of state, one per key, in key order.
    pub state: Vec<StateRow<'a>>,
    /// Idempotency records to store (replacing an expired record of the same key).
    pub idempotency: Vec<&'a IdempotencyRecord>,
    /// Messages for the outbox, in commit order, each with a delivery per subscriber.
    pub messages: Vec<&'a OutboxEvent>,
    /// Failed attempts, at most one per delivery (the last); applied before [`Plan::done`].
    pub failures: Vec<FailureMark<'a>>,
    /// Inbox marks.
    pub done: Vec<DoneMark<'a>>,
}

impl Plan<'_> {
    /// Whether the batch writes a delivery: a message with at least one subscriber.
    pub fn adds_deliveries(&self) -> bool {
        self.messages.iter().any(|m| !m.subscribers.is_empty())
    }
}

/// Walks `batch` in order against `snapshot`, as of `now`, and returns what to write.
pub fn plan(batch: &[Write], snapshot: Snapshot, now: i64) -> Plan<'_> {
    let mut planner = Planner {
        plan: Plan::default(),
        snapshot,
        state: BTreeMap::new(),
        failures: BTreeMap::new(),
        now,
    };
    for item in batch {
        let applied = planner.item(item);
        planner.plan.results.push(applied);
    }
    let mut plan = planner.plan;
    plan.state = planner.state.into_values().collect();
    plan.failures = planner.failures.into_values().collect();
    plan
}

/// The walk of [`plan`]: the snapshot as the items before changed it, and what they write.
struct Planner<'a> {
    plan: Plan<'a>,
    snapshot: Snapshot,
    state: BTreeMap<(&'a str, &'a str), StateRow<'a>>,
    failures: BTreeMap<i64, FailureMark<'a>>,
    now: i64,
}

impl<'a> Planner<'a> {
    /// Checks one item against the snapshot as the items before it left it; records its rows
    /// when it commits.
    fn item(&mut self, item: &'a Write) -> Applied {
        let snapshot = &mut self.snapshot;
        match item {
            Write::Command {
                changes,
                outbox,
                idempotency,
            } => {
                if !reads_are_current(snapshot, changes) {
                    Applied::Conflict
                } else if idempotency
                    .as_ref()
                    .is_some_and(|record| snapshot.live_idempotency_keys.contains(&record.key))
                {
                    Applied::IdempotencyTaken
                } else {
                    if let Some(record) = idempotency {
                        if record.expires_at_ms > self.now {
                            snapshot.live_idempotency_keys.insert(record.key.clone());
                        }
                        self.plan.idempotency.retain(|r| r.key != record.key);
                        self.plan.idempotency.push(record);
                    }
                    write_state(snapshot, &mut self.state, changes);
                    self.plan.messages.extend(outbox);
                    Applied::Committed
                }
            }
            Write::Delivered {
                delivery_id,
                attempt,
                lease,
                handled_by,
                changes,
                outbox,
            } => {
                if !lease_is_live(snapshot, *lease) {
                    Applied::LeaseLost
                } else if !reads_are_current(snapshot, changes) {
                    Applied::Conflict
                } else if !take_attempt(snapshot, *delivery_id, *attempt, false) {
                    Applied::DeliveryStale
                } else {
                    write_state(snapshot, &mut self.state, changes);
                    self.plan.messages.extend(outbox);
                    self.plan.done.push(DoneMark {
                        delivery_id: *delivery_id,
                        attempts: *attempt,
                        lease: *lease,
                        handled_by,
                    });
                    Applied::Committed
                }
            }
            Write::DeliveryFailed {
                delivery_id,
                attempt,
                lease,
                handled_by,
                failure,
                fate,
            } => {
                let (dead, next_attempt_at_ms) = match fate {
                    DeliveryFate::RetryAt(at) => (false, *at),
                    DeliveryFate::Dead => (true, self.now),
                };
                if !lease_is_live(snapshot, *lease) {
                    Applied::LeaseLost
                } else if take_attempt(snapshot, *delivery_id, *attempt, !dead) {
                    self.failures.insert(
                        *delivery_id,
                        FailureMark {
                            delivery_id: *delivery_id,
                            attempts: *attempt,
                            lease: *lease,
                            dead,
                            next_attempt_at_ms,
                            handled_by,
                            failure,
                        },
                    );
                    Applied::Committed
                } else {
                    Applied::DeliveryStale
                }
            }
            Write::Chained(next) => {
                if self.plan.results.last() == Some(&Applied::Committed) {
                    self.item(next)
                } else {
                    Applied::RunCut
                }
            }
        }
    }
}

/// Whether the lease a delivery was claimed under (if any) is still its partition's.
fn lease_is_live(snapshot: &Snapshot, lease: Option<i64>) -> bool {
    lease.is_none_or(|epoch| snapshot.live_leases.contains(&epoch))
}

/// Whether every version `changes` read is still the current one.
fn reads_are_current(snapshot: &Snapshot, changes: &StateChanges) -> bool {
    changes.reads.iter().all(|(key, seen)| {
        let current = snapshot
            .versions
            .get(&(changes.plugin.clone(), key.clone()))
            .copied()
            .unwrap_or(0);
        current == *seen
    })
}

/// Records `changes`' writes: each bumps its key's version.
fn write_state<'a>(
    snapshot: &mut Snapshot,
    state: &mut BTreeMap<(&'a str, &'a str), StateRow<'a>>,
    changes: &'a StateChanges,
) {
    for (key, value) in &changes.writes {
        let version = snapshot
            .versions
            .entry((changes.plugin.clone(), key.clone()))
            .or_insert(0);
        *version += 1;
        state.insert(
            (&changes.plugin, key),
            StateRow {
                plugin: &changes.plugin,
                key,
                value: value.as_deref(),
                version: *version,
            },
        );
    }
}

/// The delivery guard: `attempt` may finish `delivery_id` only when it is pending with one
/// attempt fewer. On success the delivery moves to `attempt` and stays pending if `retried`.
fn take_attempt(snapshot: &mut Snapshot, delivery_id: i64, attempt: u32, retried: bool) -> bool {
    match snapshot.deliveries.get_mut(&delivery_id) {
        Some(row) if row.pending && row.attempts + 1 == attempt => {
            *row = DeliveryRow {
                pending: retried,
                attempts: attempt,
            };
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorClass;

    #[test]
    fn a_fate_reads_as_a_delay_from_now_or_a_dead_letter() {
        assert_eq!(DeliveryFate::Dead.to_string(), "dead-lettered");
        let soon = DeliveryFate::RetryAt(super::super::now_ms() + 60_000).to_string();
        let ms: i64 = soon
            .strip_prefix("retry in ")
            .and_then(|rest| rest.strip_suffix(" ms"))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{soon}"));
        assert!((59_000..=60_000).contains(&ms), "{soon}");
    }

    fn command(plugin: &str, reads: &[(&str, i64)], writes: &[&str]) -> Write {
        Write::Command {
            changes: StateChanges {
                plugin: plugin.into(),
                reads: reads.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
                writes: writes
                    .iter()
                    .map(|k| (k.to_string(), Some(k.as_bytes().to_vec())))
                    .collect(),
            },
            outbox: vec![],
            idempotency: None,
        }
    }

    #[test]
    fn lookups_are_sorted_and_distinct() {
        let batch = [
            command("b", &[("x", 0)], &["x", "y"]),
            command("a", &[("x", 0)], &["x"]),
            Write::DeliveryFailed {
                delivery_id: 9,
                attempt: 1,
                lease: None,
                handled_by: "s".into(),
                failure: HandlerFailure::new(ErrorClass::Retryable, "s", "e"),
                fate: DeliveryFate::RetryAt(5),
            },
        ];
        let lookups = Lookups::of(&batch);
        assert_eq!(lookups.state_keys, [("a", "x"), ("b", "x"), ("b", "y")]);
        assert_eq!(lookups.delivery_ids, [9]);
        assert!(lookups.idempotency_keys.is_empty());
    }

    #[test]
    fn one_state_row_per_key_with_the_last_value_and_version() {
        let mut snapshot = Snapshot::default();
        snapshot.versions.insert(("p".into(), "k".into()), 4);
        let batch = [
            command("p", &[("k", 4)], &["k"]),
            command("p", &[("k", 5)], &["k"]),
            command("p", &[("k", 5)], &["k"]),
        ];
        let plan = plan(&batch, snapshot, 0);
        assert_eq!(
            plan.results,
            [Applied::Committed, Applied::Committed, Applied::Conflict]
        );
        assert_eq!(plan.state.len(), 1);
        assert_eq!(plan.state[0].version, 6);
    }

    #[test]
    fn a_delivery_claimed_under_a_lease_that_passed_on_writes_nothing() {
        let mut snapshot = Snapshot::default();
        for id in [1, 2] {
            snapshot.deliveries.insert(
                id,
                DeliveryRow {
                    pending: true,
                    attempts: 0,
                },
            );
        }
        snapshot.live_leases.insert(8);
        let delivered = |delivery_id, lease| Write::Delivered {
            delivery_id,
            attempt: 1,
            lease: Some(lease),
            handled_by: "s".into(),
            changes: StateChanges {
                plugin: "s".into(),
                reads: vec![],
                writes: vec![(format!("k{delivery_id}"), Some(b"v".to_vec()))],
            },
            outbox: vec![],
        };
        let batch = [delivered(1, 7), delivered(2, 8)];
        assert_eq!(Lookups::of(&batch).lease_epochs, [7, 8]);
        let plan = plan(&batch, snapshot, 0);
        assert_eq!(plan.results, [Applied::LeaseLost, Applied::Committed]);
        assert_eq!(plan.done.len(), 1);
        assert_eq!(plan.done[0].delivery_id, 2);
        assert_eq!(plan.state.len(), 1);
        assert_eq!(plan.state[0].key, "k2");
    }

    #[test]
    fn a_delivery_failed_then_retried_in_one_batch_ends_done() {
        let mut snapshot = Snapshot::default();
        snapshot.deliveries.insert(
            1,
            DeliveryRow {
                pending: true,
                attempts: 0,
            },
        );
        let failure = HandlerFailure::new(ErrorClass::Retryable, "s", "e");
        let delivered = |attempt| Write::Delivered {
            delivery_id: 1,
            attempt,
            lease: None,
            handled_by: "s".into(),
            changes: StateChanges::default(),
            outbox: vec![],
        };
        let batch = [
            Write::DeliveryFailed {
                delivery_id: 1,
                attempt: 1,
                lease: None,
                handled_by: "s".into(),
                failure,
                fate: DeliveryFate::RetryAt(5),
            },
            delivered(2),
            delivered(2),
        ];
        let plan = plan(&batch, snapshot, 0);
        assert_eq!(
            plan.results,
            [
                Applied::Committed,
                Applied::Committed,
                Applied::DeliveryStale
            ]
        );
        assert_eq!(plan.failures.len(), 1);
        assert_eq!(plan.done.len(), 1);
    }
}
