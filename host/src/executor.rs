//! Runs commands, queries and event deliveries end to end: builds the envelope, runs the
//! handler in a fresh unit of work, addresses what it emitted, and hands the result to the
//! committer — re-running the handler when a key it read changed before commit.

use crate::committer::Committer;
use crate::error::{ErrorClass, HandlerFailure, HostError};
use crate::message::Message;
use crate::plugin::Plugin;
use crate::registry::Registry;
use crate::store::{
    Applied, FirstOutcome, IdempotencyRecord, OutboxEvent, StateChanges, Store, Write, now_ms,
};
use crate::telemetry;
use crate::unit_of_work::{Access, EmittedEvent, UnitOfWork};
use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::Instrument;

mod delivery;
pub use delivery::{Delivered, Rehearsal, RehearsedWrite};

/// Times a handler is re-run because another unit of work changed a key it read. Contention
/// on one key beyond this is reported as retryable rather than spinning.
pub const MAX_CONFLICT_RERUNS: usize = 32;
/// An idempotency key's claim lasts the handler's deadline plus this (for re-runs on conflict
/// and the commit); a waiter gives up this long after the claim would have expired.
const CLAIM_SLACK: Duration = Duration::from_secs(10);
/// How often a host waiting for another host's outcome of a key looks for it.
const CLAIM_POLL: Duration = Duration::from_millis(10);
/// Schema version stamped on messages until plugins can declare their own.
const SCHEMA_VERSION: u32 = 1;

/// A command or query as it arrives from a caller.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// The command or query kind; names the plugin that owns it.
    pub kind: String,
    /// The body handed to the handler (a JSON document over HTTP).
    pub payload: Vec<u8>,
    /// Commands only: a later request with the same key gets the first one's outcome replayed
    /// instead of running again; `None` runs every request.
    pub idempotency_key: Option<String>,
    /// The message's partition key, handed to the handler in its envelope.
    pub partition_key: Option<String>,
    /// The causal chain the caller continues; `None` starts a new one, named by the message's
    /// own id.
    pub correlation_id: Option<String>,
    /// The tenant the request acts for; handed to the handler, and inherited by every event it
    /// causes.
    pub tenant_id: Option<String>,
    /// Who made the request; handed to the handler, and inherited by every event it causes.
    pub actor: Option<String>,
    /// The caller's W3C trace context (`traceparent`), which the command's span continues
    /// when spans are exported.
    pub traceparent: Option<String>,
    /// The message's own headers (`Message-Header-*` over HTTP), in the order sent.
    pub headers: Vec<(String, String)>,
    /// The version of the payload's schema the caller declared; 1 when it did not.
    pub schema_version: Option<u32>,
}

/// A command's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The handler ran and its effects are durable.
    Success(Vec<u8>),
    /// The stored first outcome of this idempotency key, replayed without running anything.
    Replayed(FirstOutcome),
}

/// Why a command or query was not answered with success. Kept typed up to the boundary that
/// answers the caller: the HTTP ingress decides the status code, the CLI the message.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ExecError {
    /// No loaded plugin owns this command or query kind.
    #[error("no plugin handles {what} `{kind}`")]
    UnknownKind {
        /// `"command"` or `"query"`.
        what: &'static str,
        /// The kind asked for.
        kind: String,
    },
    /// The handler failed: its class says whose fault and what it means.
    #[error(transparent)]
    Failure(HandlerFailure),
    /// The idempotency key came before with another kind or payload.
    #[error("idempotency key `{key}` was already used with a different request")]
    IdempotencyMismatch {
        /// The idempotency key that was reused.
        key: String,
    },
    /// The host failed (the database, its writer); nothing was committed.
    #[error(transparent)]
    Host(#[from] HostError),
}

/// Runs messages through plugins and into the committer.
pub struct Executor {
    /// Swapped whole when plugins change; each call runs on the snapshot it started with.
    registry: ArcSwap<Registry>,
    store: Store,
    committer: Committer,
    idempotency_ttl: Duration,
    /// Overrides of `idempotency_ttl` by command kind.
    idempotency_ttl_by_kind: HashMap<String, Duration>,
    /// One lock per idempotency key in use, so a concurrent duplicate waits for the first
    /// and then replays its outcome instead of running the handler again.
    key_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Executor {
    /// An executor routing by `registry`, reading `store` and committing through `committer`;
    /// idempotency keys live `idempotency_ttl` unless their command kind is given its own
    /// ([`Executor::with_idempotency_ttls`]).
    pub fn new(
        registry: Registry,
        store: Store,
        committer: Committer,
        idempotency_ttl: Duration,
    ) -> Self {
        Self {
            registry: ArcSwap::from_pointee(registry),
            store,
            committer,
            idempotency_ttl,
            idempotency_ttl_by_kind: HashMap::new(),
            key_locks: Mutex::default(),
        }
    }

    /// Gives the idempotency keys of the named command kinds their own lifetime.
    pub fn with_idempotency_ttls(
        mut self,
        by_kind: impl IntoIterator<Item = (String, Duration)>,
    ) -> Self {
        self.idempotency_ttl_by_kind = by_kind.into_iter().collect();
        self
    }

    /// The plugins as they are now.
    pub fn registry(&self) -> Arc<Registry> {
        self.registry.load_full()
    }

    /// Routes every message from now on by `registry`. Calls already running finish on the
    /// plugin versions they started with.
    pub fn replace_registry(&self, registry: Registry) {
        self.registry.store(Arc::new(registry));
    }

    /// The database this executor reads and commits to.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The single writer this executor commits through.
    pub fn committer(&self) -> &Committer {
        &self.committer
    }

    /// Runs a command and commits its effects.
    ///
    /// # Errors
    /// An [`ExecError`] for an unknown kind, a handler failure, an idempotency key reused
    /// with another request, or a database failure (nothing committed).
    pub async fn command(&self, request: &Request) -> Result<Reply, ExecError> {
        // Every log line about this command carries these (message_id once it has one).
        let span = tracing::info_span!(
            "command",
            kind = %request.kind,
            message_id = tracing::field::Empty,
            correlation_id = request.correlation_id.as_deref(),
        );
        if let Some(traceparent) = &request.traceparent {
            telemetry::continue_trace(&span, [(telemetry::TRACEPARENT, traceparent.as_str())]);
        }
        self.answer_command(request).instrument(span).await
    }

    async fn answer_command(&self, request: &Request) -> Result<Reply, ExecError> {
        let started = std::time::Instant::now();
        let plugin = self
            .registry
            .load()
            .command_owner(&request.kind)
            .cloned()
            .ok_or_else(|| ExecError::UnknownKind {
                what: "command",
                kind: request.kind.clone(),
            })?;
        let result = match &request.idempotency_key {
            None => self
                .run_command(&plugin, request, None)
                .await
                .map_err(into_exec),
            Some(key) => {
                let lock = self.key_lock(key);
                let result = {
                    let _held = lock.lock().await;
                    self.idempotent_command(&plugin, request, key).await
                };
                self.release_key_lock(key, lock);
                result
            }
        };
        telemetry::command_answered(plugin.name(), &request.kind, &result, started.elapsed());
        result
    }

    async fn idempotent_command(
        &self,
        plugin: &Plugin,
        request: &Request,
        key: &str,
    ) -> Result<Reply, ExecError> {
        let hash = request_hash(&request.kind, &request.payload);
        // Another host may run this key now (PostgreSQL): until its claim ends or expires,
        // wait for the outcome it stores rather than run the handler too.
        let claim_ttl = plugin.limits().call_deadline + CLAIM_SLACK;
        let give_up = tokio::time::Instant::now() + claim_ttl + CLAIM_SLACK;
        loop {
            let stored = self
                .store
                .idempotency_record(key)
                .await
                .map_err(HostError::database)?;
            if let Some(record) = stored {
                if record.request_hash != hash {
                    return Err(ExecError::IdempotencyMismatch {
                        key: key.to_owned(),
                    });
                }
                return Ok(Reply::Replayed(record.outcome));
            }
            if tokio::time::Instant::now() > give_up {
                return Err(HostError::KeyContended {
                    key: key.to_owned(),
                }
                .into());
            }
            let claimed = self
                .store
                .claim_idempotency_key(key, claim_ttl)
                .await
                .map_err(HostError::database)?;
            if !claimed {
                tokio::time::sleep(CLAIM_POLL).await;
                continue;
            }
            let ran = self.run_command(plugin, request, Some((key, &hash))).await;
            if let Err(error) = self.store.release_idempotency_claim(key).await {
                tracing::debug!("idempotency claim left to expire: {error:#}");
            }
            match ran {
                // Committed first by a process that did not claim it (`host send`): replay.
                Err(CommandError::KeyTaken) => continue,
                other => return other.map_err(into_exec),
            }
        }
    }

    async fn run_command(
        &self,
        plugin: &Plugin,
        request: &Request,
        key: Option<(&str, &str)>,
    ) -> Result<Reply, CommandError> {
        let plugin_name = plugin.name();
        let message = request_message(request);
        let envelope = message.envelope(1);
        let span = tracing::Span::current();
        span.record("message_id", message.id.as_str());
        span.record("correlation_id", message.correlation_id.as_str());
        for _ in 0..MAX_CONFLICT_RERUNS {
            let unit = UnitOfWork::new(plugin_name, Access::ReadWrite, self.store.clone());
            let call = plugin.handle_command(&envelope, unit).await;
            let (write, reply) = match call.outcome {
                Ok(body) => {
                    let (changes, emitted) = call
                        .unit_of_work
                        .expect("a successful call returns its unit of work")
                        .finish();
                    let outbox = self.address(&message, plugin_name, emitted);
                    let idempotency = key.map(|(key, hash)| {
                        let outcome = FirstOutcome::Succeeded(body.clone());
                        self.idempotency_record(key, &request.kind, hash, outcome)
                    });
                    (
                        Write::Command {
                            changes,
                            outbox,
                            idempotency,
                        },
                        Ok(Reply::Success(body)),
                    )
                }
                Err(failure) if failure.class == ErrorClass::Rejected && key.is_some() => {
                    // A rejection is an answer too: it is stored and replayed like a success.
                    let (key, hash) = key.expect("checked");
                    let outcome = FirstOutcome::Rejected(failure.clone());
                    let record = self.idempotency_record(key, &request.kind, hash, outcome);
                    let changes = StateChanges {
                        plugin: plugin_name.to_owned(),
                        ..StateChanges::default()
                    };
                    (
                        Write::Command {
                            changes,
                            outbox: Vec::new(),
                            idempotency: Some(record),
                        },
                        Err(CommandError::Exec(ExecError::Failure(failure))),
                    )
                }
                Err(failure) => return Err(CommandError::Exec(ExecError::Failure(failure))),
            };
            match self.committer.submit(write).await {
                Ok(Applied::Committed) => {
                    tracing::debug!(
                        command = %message.id, kind = %request.kind,
                        version = plugin.identity(), "command committed"
                    );
                    return reply;
                }
                Ok(Applied::Conflict) => continue,
                Ok(Applied::IdempotencyTaken) => return Err(CommandError::KeyTaken),
                Ok(Applied::DeliveryStale | Applied::LeaseLost | Applied::RunCut) => {
                    unreachable!("a command write has no delivery and is not chained")
                }
                Err(error) => return Err(CommandError::Exec(error.into())),
            }
        }
        Err(CommandError::Exec(ExecError::Failure(HandlerFailure::new(
            ErrorClass::Retryable,
            plugin_name,
            format!(
                "state read by the handler kept changing; gave up after {MAX_CONFLICT_RERUNS} runs"
            ),
        ))))
    }

    /// Runs a query against committed state. Queries may not write or emit.
    ///
    /// # Errors
    /// An [`ExecError`] for an unknown kind or a handler failure.
    pub async fn query(&self, request: &Request) -> Result<Vec<u8>, ExecError> {
        let plugin = self
            .registry
            .load()
            .query_owner(&request.kind)
            .cloned()
            .ok_or_else(|| ExecError::UnknownKind {
                what: "query",
                kind: request.kind.clone(),
            })?;
        let message = request_message(request);
        let unit = UnitOfWork::new(plugin.name(), Access::ReadOnly, self.store.clone());
        let span = tracing::info_span!(
            "query",
            kind = %request.kind,
            correlation_id = %message.correlation_id,
        );
        let result = plugin
            .handle_query(&message.envelope(1), unit)
            .instrument(span)
            .await
            .outcome
            .map_err(ExecError::Failure);
        telemetry::query_answered(plugin.name(), &request.kind, &result);
        result
    }

    /// Envelopes the events a handler emitted, as children of `cause`, and addresses each to
    /// the plugins subscribed to its kind now.
    pub fn address(
        &self,
        cause: &Message,
        emitted_by: &str,
        emitted: Vec<EmittedEvent>,
    ) -> Vec<OutboxEvent> {
        let now = now_ms();
        let registry = self.registry.load();
        // With spans exported, each event carries the trace context its delivery continues.
        let trace = telemetry::trace_headers();
        emitted
            .into_iter()
            .map(|event| OutboxEvent {
                subscribers: registry.subscribers(&event.kind),
                emitted_by: emitted_by.to_owned(),
                deliver_at_ms: event.deliver_at_ms,
                message: Message {
                    id: uuid::Uuid::now_v7().to_string(),
                    kind: event.kind,
                    partition_key: event.partition_key,
                    tenant_id: cause.tenant_id.clone(),
                    correlation_id: cause.correlation_id.clone(),
                    causation_id: Some(cause.id.clone()),
                    actor: cause.actor.clone(),
                    schema_version: event.schema_version,
                    occurred_at_ms: now,
                    headers: with_trace(event.headers, &trace),
                    payload: event.payload,
                    depth: cause.depth.saturating_add(1),
                },
            })
            .collect()
    }

    fn idempotency_record(
        &self,
        key: &str,
        kind: &str,
        hash: &str,
        outcome: FirstOutcome,
    ) -> IdempotencyRecord {
        let now = now_ms();
        let ttl = self
            .idempotency_ttl_by_kind
            .get(kind)
            .copied()
            .unwrap_or(self.idempotency_ttl);
        IdempotencyRecord {
            key: key.to_owned(),
            command_kind: kind.to_owned(),
            request_hash: hash.to_owned(),
            outcome,
            created_at_ms: now,
            expires_at_ms: now + ttl.as_millis() as i64,
        }
    }

    fn key_lock(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.key_locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(key.to_owned()).or_default().clone()
    }

    fn release_key_lock(&self, key: &str, lock: Arc<tokio::sync::Mutex<()>>) {
        let mut locks = self.key_locks.lock().unwrap_or_else(|e| e.into_inner());
        // Ours and the map's: nobody else waits on it.
        if Arc::strong_count(&lock) == 2 {
            locks.remove(key);
        }
    }
}

/// Inner result of one command run: `KeyTaken` sends the caller back to replay.
enum CommandError {
    Exec(ExecError),
    KeyTaken,
}

fn into_exec(error: CommandError) -> ExecError {
    match error {
        CommandError::Exec(e) => e,
        CommandError::KeyTaken => {
            unreachable!(
                "only a write with an idempotency key finds it taken, and that one replays"
            )
        }
    }
}

/// A command or query as it enters: a new id, which also starts the correlation unless the
/// caller continues one, at the start of its causal chain.
fn request_message(request: &Request) -> Message {
    let id = uuid::Uuid::now_v7().to_string();
    Message {
        correlation_id: request.correlation_id.clone().unwrap_or_else(|| id.clone()),
        id,
        kind: request.kind.clone(),
        partition_key: request.partition_key.clone(),
        tenant_id: request.tenant_id.clone(),
        causation_id: None,
        actor: request.actor.clone(),
        schema_version: request.schema_version.unwrap_or(SCHEMA_VERSION),
        occurred_at_ms: now_ms(),
        headers: request.headers.clone(),
        payload: request.payload.clone(),
        depth: 0,
    }
}

/// Identifies a request for idempotency: the same key must come with the same kind and payload.
fn request_hash(kind: &str, payload: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(kind.as_bytes());
    hasher.update([0]);
    hasher.update(payload);
    hex::encode(hasher.finalize())
}

/// An emitted event's own headers, with the trace context (when spans are exported) in place
/// of any header of the same name: the trace headers are the host's to set.
fn with_trace(
    mut headers: Vec<(String, String)>,
    trace: &[(String, String)],
) -> Vec<(String, String)> {
    if trace.is_empty() {
        return headers;
    }
    headers.retain(|(name, _)| !trace.iter().any(|(t, _)| t.eq_ignore_ascii_case(name)));
    headers.extend(trace.iter().cloned());
    headers
}
