//! One delivery end to end: the subscriber's handler in a fresh unit of work, its effects and
//! inbox mark committed together or its failure recorded with a retry time or as dead; the
//! loop guard; and the rehearsal a dry-run replay runs.

use super::{Executor, MAX_CONFLICT_RERUNS};
use crate::config::PluginPolicy;
use crate::error::{ErrorClass, HandlerFailure, HostError};
use crate::fault::{self, FaultPoint};
use crate::plugin::Plugin;
use crate::store::{Applied, DeliveryFate, DueDelivery, Write, now_ms};
use crate::telemetry;
use crate::unit_of_work::{Access, EmittedEvent, Overlay, UnitOfWork};
use std::sync::Arc;
use tracing::Instrument;

/// What became of one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivered {
    /// The handler succeeded: its effects and the delivery's inbox mark are committed.
    Done,
    /// Failed with `class`; retried or dead-lettered, as `fate` says.
    Failed {
        /// Why the attempt failed.
        class: ErrorClass,
        /// When the delivery is tried again, or that it is dead.
        fate: DeliveryFate,
    },
    /// Already handled or no longer pending: nothing was run twice.
    Skipped,
    /// The database did not take the outcome; the delivery stays due.
    NotRecorded,
}

impl Delivered {
    /// The snake_case name used in metrics and `host bus flush`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Done => "done",
            Self::Failed {
                fate: DeliveryFate::RetryAt(_),
                ..
            } => "retry",
            Self::Failed {
                fate: DeliveryFate::Dead,
                ..
            } => "dead",
            Self::Skipped => "skipped",
            Self::NotRecorded => "not_recorded",
        }
    }
}

/// What a delivery would do if it ran now ([`Executor::rehearse`]); nothing of it is committed.
#[derive(Debug)]
pub struct Rehearsal {
    /// The build that ran it.
    pub handled_by: String,
    /// Each key it would write, with the value now and the value after.
    pub writes: Vec<RehearsedWrite>,
    /// The events it would emit, as the handler emitted them (not yet addressed).
    pub emitted: Vec<EmittedEvent>,
}

/// One key a rehearsed delivery would write: its committed value now, and the value it would
/// leave (`None`: absent, or deleted).
#[derive(Debug)]
pub struct RehearsedWrite {
    /// The key, in the subscriber's own state.
    pub key: String,
    /// Its committed value now; `None` when absent.
    pub before: Option<Vec<u8>>,
    /// The value the delivery would leave; `None` when it would delete the key.
    pub after: Option<Vec<u8>>,
}

impl Executor {
    /// Runs one delivery: the subscriber's effects commit together with its inbox mark, or
    /// the failure is recorded with its retry time or as dead, by the subscriber's `policy`.
    pub async fn deliver(&self, due: &DueDelivery, policy: &PluginPolicy) -> Delivered {
        let mut outcomes = self.deliver_run(std::slice::from_ref(due), policy).await;
        outcomes.pop().unwrap_or(Delivered::NotRecorded)
    }

    /// Runs consecutive deliveries of one subscriber (and partition key) one after another,
    /// each reading the writes of those before it, and commits their outcomes together: a
    /// hot key waits for one commit per run, not one per event. The first delivery that fails
    /// ends the run there: its failure commits with the successes before it, and the
    /// deliveries after it are not run. Returns the outcomes of the deliveries that ran, in
    /// order (the first ones of `run`); the rest stay pending as they were.
    pub async fn deliver_run(&self, run: &[DueDelivery], policy: &PluginPolicy) -> Vec<Delivered> {
        // Every log line about a delivery (the guest's own included) carries these.
        let spans: Vec<tracing::Span> = run.iter().map(delivery_span).collect();
        let mut outcomes = Vec::with_capacity(run.len());
        let Some(plugin) = run
            .first()
            .and_then(|first| self.registry.load().plugin(&first.subscriber).cloned())
        else {
            if let Some(first) = run.first() {
                outcomes.push(Delivered::NotRecorded);
                telemetry::delivery_finished(first, &Delivered::NotRecorded);
            }
            return outcomes;
        };
        telemetry::run_started(plugin.name());
        let mut start = 0;
        for _ in 0..MAX_CONFLICT_RERUNS {
            // Run the handlers from `start` on, until one fails.
            let mut overlay = Arc::new(Overlay::new());
            let mut writes = Vec::new();
            let mut ran = Vec::new();
            for (due, span) in run[start..].iter().zip(&spans[start..]) {
                let (write, delivered) = self
                    .attempt(due, policy, &plugin, overlay.clone())
                    .instrument(span.clone())
                    .await;
                if let Write::Delivered { changes, .. } = &write {
                    // The call's unit of work is gone: no copy is made.
                    Arc::make_mut(&mut overlay).extend(changes.writes.iter().cloned());
                }
                let ended = delivered != Delivered::Done;
                writes.push(if writes.is_empty() {
                    write
                } else {
                    Write::Chained(Box::new(write))
                });
                ran.push(delivered);
                if ended {
                    break;
                }
            }
            let results = match self.committer.submit_run(writes).await {
                Ok(results) => results,
                Err(error) => {
                    let delivered = not_recorded(&run[start], &error);
                    telemetry::delivery_finished(&run[start], &delivered);
                    outcomes.push(delivered);
                    return outcomes;
                }
            };
            let mut rerun_from = None;
            for (index, (applied, delivered)) in results.into_iter().zip(ran).enumerate() {
                let (due, span) = (&run[start + index], &spans[start + index]);
                let delivered = match applied {
                    Applied::Committed => {
                        span.in_scope(|| {
                            tracing::debug!(
                                delivery = due.delivery_id, message = %due.message.id,
                                version = plugin.identity(), outcome = delivered.as_str(),
                                "delivery recorded"
                            );
                        });
                        delivered
                    }
                    Applied::Conflict | Applied::RunCut => {
                        rerun_from = Some(start + index);
                        break;
                    }
                    Applied::DeliveryStale => Delivered::Skipped,
                    Applied::LeaseLost => {
                        span.in_scope(|| {
                            tracing::info!(
                                delivery = due.delivery_id, message = %due.message.id,
                                partition = due.partition,
                                "outcome not recorded: the partition passed to another host, which runs the delivery"
                            );
                        });
                        Delivered::NotRecorded
                    }
                    Applied::IdempotencyTaken => {
                        unreachable!("a delivery write has no idempotency key")
                    }
                };
                telemetry::delivery_finished(due, &delivered);
                let ends = !matches!(delivered, Delivered::Done | Delivered::Failed { .. });
                outcomes.push(delivered);
                if ends {
                    // Stale or lost: what follows ran on a state that did not commit.
                    return outcomes;
                }
            }
            match rerun_from {
                Some(index) => start = index,
                None => return outcomes,
            }
        }
        let due = &run[start];
        let delivered = self
            .record_contention(due, policy, &plugin)
            .instrument(spans[start].clone())
            .await;
        telemetry::delivery_finished(due, &delivered);
        outcomes.push(delivered);
        outcomes
    }

    /// Runs the subscriber's handler for `due` over `overlay` (the writes of the deliveries
    /// before it in its run) and says what to commit: its effects and inbox mark, or its
    /// failure with its retry time or as dead.
    async fn attempt(
        &self,
        due: &DueDelivery,
        policy: &PluginPolicy,
        plugin: &Plugin,
        overlay: Arc<Overlay>,
    ) -> (Write, Delivered) {
        let attempt = due.attempts + 1;
        // The loop guard: one comparison, and the chain is read only when it trips.
        let outcome = if due.message.depth > policy.max_causal_depth {
            Err(self.loop_failure(due, policy, plugin.name()).await)
        } else {
            let unit = UnitOfWork::new(plugin.name(), Access::ReadWrite, self.store.clone())
                .with_overlay(overlay);
            let call = plugin
                .handle_event(&due.message.envelope(attempt), unit)
                .await;
            call.outcome.map(|()| {
                call.unit_of_work
                    .expect("a successful call returns its unit of work")
            })
        };
        match outcome {
            Ok(unit_of_work) => {
                let (changes, emitted) = unit_of_work.finish();
                let outbox = self.address(&due.message, plugin.name(), emitted);
                fault::hit(FaultPoint::AfterEffects);
                let write = Write::Delivered {
                    delivery_id: due.delivery_id,
                    attempt,
                    lease: due.lease,
                    handled_by: plugin.identity().to_owned(),
                    changes,
                    outbox,
                };
                (write, Delivered::Done)
            }
            Err(failure) => {
                let fate = if policy.is_dead(failure.class, attempt) {
                    DeliveryFate::Dead
                } else {
                    retry_at(policy, attempt)
                };
                // The delivery, message and correlation ids are the span's.
                tracing::warn!(
                    version = plugin.identity(), attempt,
                    class = %failure.class,
                    fault = if failure.class.is_guest_fault() { "guest" } else { "host" },
                    next = %fate, "delivery failed: {}", failure.message
                );
                failed(due, plugin, failure, fate)
            }
        }
    }

    /// Records that `due`'s handler kept reading state that changed before its commit: a
    /// retryable failure, retried later rather than re-run at once without end.
    async fn record_contention(
        &self,
        due: &DueDelivery,
        policy: &PluginPolicy,
        plugin: &Plugin,
    ) -> Delivered {
        let failure = HandlerFailure::new(
            ErrorClass::Retryable,
            plugin.name(),
            "state read by the handler kept changing",
        );
        let fate = retry_at(policy, due.attempts + 1);
        let (write, delivered) = failed(due, plugin, failure, fate);
        match self.committer.submit(write).await {
            Ok(_) => delivered,
            Err(error) => not_recorded(due, &error),
        }
    }

    /// Runs `due` (a dead letter) on the subscriber's current build as a replay would, in a
    /// unit of work that is never committed: what it would write, with each key's value now,
    /// and what it would emit; or the failure it would end with.
    ///
    /// # Errors
    /// The subscriber is not loaded, or the handler failed.
    pub async fn rehearse(&self, due: &DueDelivery) -> Result<Rehearsal, HandlerFailure> {
        let plugin = self
            .registry
            .load()
            .plugin(&due.subscriber)
            .cloned()
            .ok_or_else(|| {
                HandlerFailure::new(
                    ErrorClass::Rejected,
                    due.subscriber.as_str(),
                    format!("no plugin `{}` is loaded", due.subscriber),
                )
            })?;
        // A replay resets the attempts: the rehearsal is its first.
        let envelope = due.message.envelope(1);
        let unit = UnitOfWork::new(plugin.name(), Access::ReadWrite, self.store.clone());
        let call = plugin.handle_event(&envelope, unit).await;
        call.outcome?;
        let (changes, emitted) = call
            .unit_of_work
            .expect("a successful call returns its unit of work")
            .finish();
        let mut writes = Vec::with_capacity(changes.writes.len());
        for (key, after) in changes.writes {
            let (before, _) = self
                .store
                .read_state(plugin.name(), &key)
                .await
                .map_err(|e| HandlerFailure::new(ErrorClass::Host, plugin.name(), e.to_string()))?;
            writes.push(RehearsedWrite { key, before, after });
        }
        Ok(Rehearsal {
            handled_by: plugin.identity().to_owned(),
            writes,
            emitted,
        })
    }

    /// The failure of a delivery past its subscriber's `max_causal_depth`, naming the chain
    /// that led to it: its newest links and where it began.
    async fn loop_failure(
        &self,
        due: &DueDelivery,
        policy: &PluginPolicy,
        subscriber: &str,
    ) -> HandlerFailure {
        /// Links named from the newest; the rest are counted.
        const SHOWN: usize = 6;
        let mut links = Vec::new();
        let mut next = Some(due.message.id.clone());
        // Bounded by the depth: each link is one step closer to the command.
        while let Some(id) = next.take() {
            if links.len() > due.message.depth as usize {
                break;
            }
            match self.store.message_cause(&id).await {
                Ok(Some(cause)) => {
                    links.push(format!("`{}` from {}", cause.kind, cause.emitted_by));
                    next = cause.causation_id;
                }
                Ok(None) => links.push(format!("command {id}")),
                Err(error) => links.push(format!("(chain unreadable: {error:#})")),
            }
        }
        let chain = if links.len() > SHOWN + 1 {
            let hidden = links.len() - SHOWN - 1;
            let origin = links.pop().unwrap_or_default();
            links.truncate(SHOWN);
            format!("{} ← … {hidden} more … ← {origin}", links.join(" ← "))
        } else {
            links.join(" ← ")
        };
        HandlerFailure::new(
            ErrorClass::Loop,
            subscriber,
            format!(
                "causal depth {} is past `max_causal_depth` {}: handlers keep emitting what \
                 they handle; the chain, newest first: {chain}",
                due.message.depth, policy.max_causal_depth
            ),
        )
    }
}

/// What to commit for `due`'s failed attempt by `plugin`, and what the delivery became.
fn failed(
    due: &DueDelivery,
    plugin: &Plugin,
    failure: HandlerFailure,
    fate: DeliveryFate,
) -> (Write, Delivered) {
    let delivered = Delivered::Failed {
        class: failure.class,
        fate,
    };
    let write = Write::DeliveryFailed {
        delivery_id: due.delivery_id,
        attempt: due.attempts + 1,
        lease: due.lease,
        handled_by: plugin.identity().to_owned(),
        failure,
        fate,
    };
    (write, delivered)
}

/// When failed attempt number `attempt` runs again, by `policy`'s backoff.
fn retry_at(policy: &PluginPolicy, attempt: u32) -> DeliveryFate {
    let delay = policy.retry.delay(attempt, &mut rand::rng());
    DeliveryFate::RetryAt(now_ms() + delay.as_millis() as i64)
}

/// The span of one delivery: every log line about it carries its ids, and it continues the
/// trace its message carries.
fn delivery_span(due: &DueDelivery) -> tracing::Span {
    let span = tracing::info_span!(
        "delivery",
        delivery = due.delivery_id,
        subscriber = %due.subscriber,
        kind = %due.message.kind,
        message_id = %due.message.id,
        correlation_id = %due.message.correlation_id,
        causation_id = due.message.causation_id.as_deref(),
    );
    telemetry::continue_trace(
        &span,
        due.message
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
    );
    span
}

/// The database did not take a delivery's outcome: the delivery stays pending and runs again
/// once the database is back. The store's health has logged the database failure itself.
fn not_recorded(due: &DueDelivery, error: &HostError) -> Delivered {
    tracing::debug!(
        delivery = due.delivery_id,
        "could not record the delivery outcome: {error}"
    );
    Delivered::NotRecorded
}
