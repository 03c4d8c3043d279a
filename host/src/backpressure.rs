//! Back-pressure: a bound on the deliveries that are due and not yet delivered.
//!
//! When subscribers fall behind, accepting commands at the same pace only makes the lag grow
//! without end. With a bound (`[backpressure] max_due`, `--max-due`; on by default at
//! [`crate::config::DEFAULT_MAX_DUE`]), commands are refused with 503 and `Retry-After` from
//! the moment `max_due` deliveries are due, and accepted again once the backlog has fallen to
//! `resume_at` (`max_due` less a fifth unless set): the gap keeps the host from flapping at
//! the bound. Queries, deliveries and the admin API go on as before, and nothing already
//! accepted is dropped: the refusal comes before the command runs.
//!
//! What is counted: pending deliveries whose time has come (`next_attempt_at_ms` now or
//! earlier), whatever their subscriber — those held back by their key's order and those of a
//! plugin that is not loaded included; not retries waiting for their backoff, scheduled events
//! before their time, or dead letters. On PostgreSQL the count is the whole database's, so
//! every host sharing it refuses and resumes together.
//!
//! How it stays cheap: a task counts every [`SAMPLE_EVERY`] (further apart when a count takes
//! longer: at most a tenth of the time is spent counting), up to `max_due + 1` rows of the
//! pending index, so a huge backlog costs no more than the bound. Between two counts the last
//! one is carried forward by the due deliveries this host's commands commit, from the moment
//! their commit starts ([`Store::due_added_by_commands`]), so a command is refused as soon as
//! those before it took the backlog to the bound, and a delivery is never counted twice. The
//! carried figure does not see the commits that were under way while the last count ran, nor
//! deliveries finishing, other processes' commits or scheduled events coming due: the next
//! count does. So the backlog stops growing at the bound plus what was in flight — the
//! commands running when it was reached, and those committing during the last count. The
//! HTTP layer reads a few atomics per command and never waits on the database.
//!
//! The latch: the backlog reaching `max_due`, counted or carried forward, starts refusing, and
//! only a count at or below `resume_at` stops it.

use crate::config::BackpressureConfig;
use crate::store::Store;
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// How often the due deliveries are counted.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// What a refused caller is told to wait (`Retry-After`): a few counts, so the next try sees
/// a fresh one.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Why commands are refused now: the backlog and its bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Refusal {
    /// Due deliveries not yet delivered, as last counted and carried forward.
    pub due: u64,
    /// The bound: commands are refused from this many on.
    pub max_due: u64,
    /// Commands are accepted again once the backlog has fallen to this many.
    pub resume_at: u64,
}

/// What the answer of a refused command says (its `error.message`).
impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "commands are refused while deliveries lag behind: {} deliveries are due and not \
             yet delivered, at or past the bound `max_due` of {}; commands are accepted again \
             once they fall to {} (`resume_at`). Retry after the `Retry-After` seconds, or raise \
             the bound: `[backpressure] max_due` in the host config, or `--max-due`",
            how_many(self.due, self.max_due),
            self.max_due,
            self.resume_at
        )
    }
}

/// `due` as words: a count stops past the bound, so past it only that much is known.
fn how_many(due: u64, max_due: u64) -> String {
    if due > max_due {
        format!("more than {max_due}")
    } else {
        due.to_string()
    }
}

/// The backlog as `GET /ready` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Status {
    /// Due deliveries not yet delivered, as last counted (up to `max_due + 1`) and carried
    /// forward.
    pub due: u64,
    /// The bound.
    pub max_due: u64,
    /// The mark at which refused commands are accepted again.
    pub resume_at: u64,
    /// Whether commands are refused now.
    pub refusing: bool,
}

impl Status {
    /// Why `GET /ready` answers 503, when commands are refused.
    pub fn reason(&self) -> Option<String> {
        self.refusing.then(|| {
            format!(
                "commands are refused: {} deliveries are due and not yet delivered, at or past \
                 the bound `max_due` of {}, until they fall to {}",
                how_many(self.due, self.max_due),
                self.max_due,
                self.resume_at
            )
        })
    }
}

/// The decisions, apart from the database: counts go in, refusals come out.
#[derive(Debug)]
struct Gate {
    bound: BackpressureConfig,
    /// The last count less the tally it agreed with: the backlog now is this plus the tally
    /// now.
    base: AtomicI64,
    /// Set when the backlog, counted or carried forward, reaches `max_due`; cleared by a
    /// count at or below `resume_at`.
    latched: AtomicBool,
}

/// A change of the latch a count made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Turn {
    Refusing,
    Accepting,
}

impl Gate {
    fn new(bound: BackpressureConfig) -> Self {
        Self {
            bound,
            base: AtomicI64::new(0),
            latched: AtomicBool::new(false),
        }
    }

    /// Takes in a count of `count` due deliveries that agrees with the tally at `tally`;
    /// returns the latch's change, if any.
    fn counted(&self, count: u64, tally: u64) -> Option<Turn> {
        self.base
            .store(signed(count).wrapping_sub(signed(tally)), Ordering::SeqCst);
        if count >= self.bound.max_due {
            (!self.latched.swap(true, Ordering::SeqCst)).then_some(Turn::Refusing)
        } else if count <= self.bound.resume_at {
            self.latched
                .swap(false, Ordering::SeqCst)
                .then_some(Turn::Accepting)
        } else {
            None
        }
    }

    /// The backlog now: the last count carried forward to the tally at `tally`.
    fn due(&self, tally: u64) -> u64 {
        let due = self.base.load(Ordering::SeqCst).wrapping_add(signed(tally));
        u64::try_from(due).unwrap_or(0)
    }

    /// Whether a command arriving now, with the tally at `tally`, is refused; a carried
    /// figure at the bound latches the gate as a count would, and then the flag is true.
    fn refusal(&self, tally: u64) -> Option<(Refusal, bool)> {
        let due = self.due(tally);
        let turned = due >= self.bound.max_due && !self.latched.swap(true, Ordering::SeqCst);
        (turned || self.latched.load(Ordering::SeqCst)).then(|| (self.refused(due), turned))
    }

    /// Whether commands are refused now, changing nothing.
    fn refusing(&self, tally: u64) -> bool {
        self.latched.load(Ordering::SeqCst) || self.due(tally) >= self.bound.max_due
    }

    fn refused(&self, due: u64) -> Refusal {
        Refusal {
            due,
            max_due: self.bound.max_due,
            resume_at: self.bound.resume_at,
        }
    }
}

fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A host's bound on its delivery backlog: the latest count, the latch, and the task that
/// counts. Built by [`Backpressure::start`]; the HTTP ingress asks [`Backpressure::refusal`]
/// before each command.
pub struct Backpressure {
    gate: Gate,
    store: Store,
}

impl Backpressure {
    /// Counts the backlog once, so that a host starting over a long one refuses from its
    /// first command, then counts it in the background every [`SAMPLE_EVERY`] until the
    /// returned task is aborted.
    ///
    /// # Panics
    /// When `bound` is off (`max_due` 0): there is nothing to watch.
    pub async fn start(store: Store, bound: BackpressureConfig) -> (Arc<Self>, JoinHandle<()>) {
        assert!(bound.is_on(), "back-pressure needs a bound");
        let this = Arc::new(Self {
            gate: Gate::new(bound),
            store,
        });
        this.count().await;
        let counting = this.clone();
        let task = tokio::spawn(async move {
            loop {
                let started = Instant::now();
                counting.count().await;
                tokio::time::sleep(SAMPLE_EVERY.max(started.elapsed() * 9)).await;
            }
        });
        (this, task)
    }

    /// Why a command arriving now must be refused; `None` when it may run. Reads memory only.
    pub fn refusal(&self) -> Option<Refusal> {
        let (refusal, turned) = self.gate.refusal(self.store.due_added_by_commands())?;
        if turned {
            refusing(refusal.due, self.gate.bound);
        }
        Some(refusal)
    }

    /// The backlog, the bound and whether commands are refused, for `GET /ready` and
    /// `GET /metrics`.
    pub fn status(&self) -> Status {
        let tally = self.store.due_added_by_commands();
        Status {
            due: self.gate.due(tally),
            max_due: self.gate.bound.max_due,
            resume_at: self.gate.bound.resume_at,
            refusing: self.gate.refusing(tally),
        }
    }

    /// One count, taken in and logged when it turns the latch. A count that fails leaves
    /// everything as it was (the database's health reports the failure).
    async fn count(&self) {
        let limit = self.gate.bound.max_due.saturating_add(1);
        let count = match self.store.due_count(limit).await {
            Ok(count) => count,
            Err(error) => {
                tracing::debug!(
                    "back-pressure: the due deliveries could not be counted: {error:#}"
                );
                return;
            }
        };
        // Read after the count: every commit the count saw is in it already (see
        // `Store::due_added_by_commands`), so the carried figure never counts one twice.
        let tally = self.store.due_added_by_commands();
        let bound = self.gate.bound;
        match self.gate.counted(count, tally) {
            Some(Turn::Refusing) => refusing(count, bound),
            Some(Turn::Accepting) => tracing::info!(
                due = count,
                "{count} deliveries are due, at or below {}: commands are accepted again",
                bound.resume_at
            ),
            None => {}
        }
    }
}

/// Says, once as it starts, that commands are refused.
fn refusing(due: u64, bound: BackpressureConfig) {
    tracing::warn!(
        due,
        "{} deliveries are due and not yet delivered, at or past the bound `max_due` of {}: \
         commands are refused (503) until they fall to {}",
        how_many(due, bound.max_due),
        bound.max_due,
        bound.resume_at
    );
}

/// Whether a command run now, by a process that counts the backlog once (`host send`), must
/// be refused: when `bound` is on and at least `max_due` deliveries are due.
///
/// # Errors
/// Fails when the database cannot be read.
pub async fn refusal_now(
    store: &Store,
    bound: BackpressureConfig,
) -> anyhow::Result<Option<Refusal>> {
    if !bound.is_on() {
        return Ok(None);
    }
    let due = store.due_count(bound.max_due.saturating_add(1)).await?;
    Ok((due >= bound.max_due).then_some(Refusal {
        due,
        max_due: bound.max_due,
        resume_at: bound.resume_at,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(max_due: u64) -> Gate {
        Gate::new(BackpressureConfig::bounded_at(max_due))
    }

    /// The refusal a command arriving with the tally at `tally` gets, if any.
    fn refused(gate: &Gate, tally: u64) -> Option<u64> {
        gate.refusal(tally).map(|(refusal, _)| refusal.due)
    }

    #[test]
    fn commands_are_refused_from_the_bound_until_the_resume_mark() {
        let gate = gate(20);
        assert_eq!(gate.bound.resume_at, 16);
        assert_eq!(gate.counted(0, 0), None);
        assert_eq!(refused(&gate, 0), None);
        assert_eq!(gate.counted(19, 0), None);
        assert_eq!(refused(&gate, 0), None, "below the bound");
        assert!(!gate.refusing(0));
        assert_eq!(gate.counted(20, 0), Some(Turn::Refusing));
        assert_eq!(
            gate.refusal(0),
            Some((
                Refusal {
                    due: 20,
                    max_due: 20,
                    resume_at: 16
                },
                false
            )),
            "the count turned the latch, not the command"
        );
        assert!(gate.refusing(0));
        assert_eq!(gate.counted(25, 0), None, "already refusing");
        // Between the marks the latch holds on the way down, …
        for count in [19, 18, 17] {
            assert_eq!(gate.counted(count, 0), None);
            assert_eq!(
                refused(&gate, 0),
                Some(count),
                "{count} is above the resume mark"
            );
        }
        assert_eq!(gate.counted(16, 0), Some(Turn::Accepting));
        assert_eq!(refused(&gate, 0), None);
        // … and lets commands in on the way up.
        assert_eq!(gate.counted(19, 0), None);
        assert_eq!(refused(&gate, 0), None);
    }

    #[test]
    fn commands_committed_since_the_count_carry_it_to_the_bound() {
        let gate = gate(20);
        assert_eq!(gate.counted(14, 100), None);
        assert_eq!(gate.due(100), 14);
        assert_eq!(refused(&gate, 105), None, "19 due");
        assert!(gate.refusing(106), "20 due, seen without latching");
        assert_eq!(
            gate.refusal(106).map(|(r, turned)| (r.due, turned)),
            Some((20, true)),
            "20 due: the command at the bound turns the latch"
        );
        assert_eq!(gate.refusal(106).map(|(_, turned)| turned), Some(false));
        // A count between the marks (deliveries ran meanwhile) keeps it; one at the resume
        // mark lifts it.
        assert_eq!(gate.counted(18, 106), None);
        assert_eq!(refused(&gate, 106), Some(18));
        assert_eq!(gate.counted(16, 106), Some(Turn::Accepting));
        assert_eq!(refused(&gate, 106), None);
        assert_eq!(gate.due(110), 20);
        assert!(refused(&gate, 110).is_some());
    }

    #[test]
    fn a_bound_of_one_refuses_at_the_first_due_delivery() {
        let gate = gate(1);
        assert_eq!(gate.bound.resume_at, 0);
        assert_eq!(refused(&gate, 0), None);
        assert_eq!(refused(&gate, 1), Some(1));
        assert_eq!(gate.counted(1, 1), None, "latched by the command already");
        assert_eq!(gate.counted(0, 1), Some(Turn::Accepting));
        assert_eq!(refused(&gate, 1), None);
    }

    #[test]
    fn the_refusal_names_the_backlog_the_bound_and_how_to_change_it() {
        let message = Refusal {
            due: 12_345,
            max_due: 10_000,
            resume_at: 8_000,
        }
        .to_string();
        for part in [
            "more than 10000 deliveries are due",
            "`max_due` of 10000",
            "fall to 8000",
            "Retry-After",
            "--max-due",
        ] {
            assert!(message.contains(part), "{part:?} in {message}");
        }
        let at_the_bound = Refusal {
            due: 10_000,
            max_due: 10_000,
            resume_at: 8_000,
        };
        assert!(
            at_the_bound
                .to_string()
                .contains(": 10000 deliveries are due")
        );
    }
}
