//! One loaded plugin: a compiled component, what it declared in `describe`, and the typed
//! calls into it. Each call gets a fresh store; instantiation is cheap because everything
//! expensive (compilation, import resolution) was done once at load time in the
//! `PluginWorldPre`. A plugin whose
//! [`calls_per_instance`](crate::config::Limits::calls_per_instance) is above 1 keeps
//! instances whose call ended cleanly for its next calls instead.

mod contract;
mod load;
mod schemas;

use crate::bindings::{Envelope, HandlerError, PluginInfo};
use crate::config::Limits;
use crate::error::{ErrorClass, HandlerFailure};
use crate::sandbox::{self, GuestState, Sandbox, SourceFolder};
use crate::telemetry::{self, Handler};
use crate::unit_of_work::UnitOfWork;
pub use contract::VERSIONS as CONTRACT_VERSIONS;
use contract::{Pre, World};
pub use load::LoadError;
pub use schemas::{MAX_SCHEMA_BYTES, Mismatch, Schemas};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::Store;

/// A loaded, described plugin. Cheap to share behind an `Arc`.
pub struct Plugin {
    name: Arc<str>,
    /// See [`Plugin::identity`].
    identity: String,
    /// SHA-256 of the component file, hex.
    digest: String,
    info: PluginInfo,
    /// The payload schemas of `info`, compiled.
    schemas: Schemas,
    source: PathBuf,
    /// The source folder a development runtime reads (`host dev`); `None` for a built
    /// component.
    source_folder: Option<SourceFolder>,
    pre: Pre,
    sandbox: Arc<Sandbox>,
    limits: Limits,
    /// [`Limits::concurrent_calls`] permits: a call waits for one before taking an instance
    /// slot, so one plugin cannot hold every slot of the engine.
    calls: Arc<Semaphore>,
    /// Instances whose last call ended cleanly, waiting for the next; always empty when
    /// [`Limits::calls_per_instance`] is 1.
    idle: Mutex<Vec<Idle>>,
}

/// An instance ready for a call, and the calls it served before this one.
struct Instance {
    store: Store<GuestState>,
    world: World,
    served: usize,
}

/// An instance between two calls, holding one of the sandbox's idle slots.
struct Idle {
    instance: Instance,
    _slot: OwnedSemaphorePermit,
}

/// The result of one call: the handler's outcome, and the unit of work to commit when the
/// call succeeded (`None` after a trap).
pub struct CallResult<T> {
    /// The handler's answer, or why the call failed.
    pub outcome: Result<T, HandlerFailure>,
    /// What the call read, wrote and emitted, to commit; `None` whenever `outcome` is an error.
    pub unit_of_work: Option<UnitOfWork>,
    /// Linear memory the instance held when the call ended (0 when it never started).
    pub memory_bytes: usize,
}

impl Plugin {
    /// The limits every call of this plugin runs under.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The name the plugin gave itself in `describe`; no two loaded plugins share one.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The version the plugin declared in `describe`.
    pub fn version(&self) -> &str {
        &self.info.version
    }

    /// `name@version+digest`: the exact build, recorded with every message it handles.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The SHA-256 of the component it was loaded from, hex.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// What the plugin declared in `describe`.
    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    /// Checks an incoming command or query against the schema the plugin declared for its
    /// kind, before any handler runs.
    ///
    /// # Errors
    /// A [`ErrorClass::Rejected`] failure naming the kind and the failing path.
    fn check_input(&self, message: &Envelope) -> Result<(), HandlerFailure> {
        self.schemas
            .check(&message.kind, &message.payload)
            .map_err(|mismatch| {
                HandlerFailure::new(
                    ErrorClass::Rejected,
                    &*self.name,
                    format!(
                        "the payload of `{}` does not match its schema {mismatch}",
                        message.kind
                    ),
                )
            })
    }

    /// The component file it was loaded from (a development runtime's, in `host dev`).
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// The source folder its development runtime reads at each instantiation, when `host
    /// dev` runs it without a build.
    pub fn source_folder(&self) -> Option<&SourceFolder> {
        self.source_folder.as_ref()
    }

    /// Runs `handle-command`.
    pub async fn handle_command(
        &self,
        command: &Envelope,
        unit_of_work: UnitOfWork,
    ) -> CallResult<Vec<u8>> {
        if let Err(failure) = self.check_input(command) {
            return failed(failure);
        }
        let _turn = self.turn().await;
        let _timed = TimedCall::start(Handler::Command, self.name(), &command.kind);
        let mut instance = match self.instance(command, unit_of_work).await {
            Ok(instance) => instance,
            Err(failure) => return failed(failure),
        };
        let result = instance
            .world
            .handle_command(&mut instance.store, command)
            .await;
        self.check_reply(self.finish(instance, result))
    }

    /// Runs `handle-event`.
    pub async fn handle_event(&self, event: &Envelope, unit_of_work: UnitOfWork) -> CallResult<()> {
        let _turn = self.turn().await;
        let _timed = TimedCall::start(Handler::Event, self.name(), &event.kind);
        let mut instance = match self.instance(event, unit_of_work).await {
            Ok(instance) => instance,
            Err(failure) => return failed(failure),
        };
        let result = instance
            .world
            .handle_event(&mut instance.store, event)
            .await;
        self.finish(instance, result)
    }

    /// Runs `handle-query`.
    pub async fn handle_query(
        &self,
        query: &Envelope,
        unit_of_work: UnitOfWork,
    ) -> CallResult<Vec<u8>> {
        if let Err(failure) = self.check_input(query) {
            return failed(failure);
        }
        let _turn = self.turn().await;
        let _timed = TimedCall::start(Handler::Query, self.name(), &query.kind);
        let mut instance = match self.instance(query, unit_of_work).await {
            Ok(instance) => instance,
            Err(failure) => return failed(failure),
        };
        let result = instance
            .world
            .handle_query(&mut instance.store, query)
            .await;
        self.check_reply(self.finish(instance, result))
    }

    /// Waits for one of this plugin's [`Limits::concurrent_calls`] permits.
    async fn turn(&self) -> tokio::sync::OwnedSemaphorePermit {
        self.calls
            .clone()
            .acquire_owned()
            .await
            .expect("the call semaphore is never closed")
    }

    /// An instance for handling `message` (a kept one when there is one, else a fresh one),
    /// or why there is none: the payload is over [`Limits::payload_in_bytes`] (rejected: the
    /// input is at fault), or instantiation failed (classified like a trap).
    async fn instance(
        &self,
        message: &Envelope,
        unit_of_work: UnitOfWork,
    ) -> Result<Instance, HandlerFailure> {
        if message.payload.len() > self.limits.payload_in_bytes {
            return Err(HandlerFailure::new(
                ErrorClass::Rejected,
                &*self.name,
                format!(
                    "limit `payload_in_bytes` of {} exceeded: the payload of `{}` has {} bytes",
                    self.limits.payload_in_bytes,
                    message.kind,
                    message.payload.len()
                ),
            ));
        }
        // Without reuse nothing is ever kept: no lock on the way.
        let kept = if self.limits.calls_per_instance > 1 {
            self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()
        } else {
            None
        };
        if let Some(Idle { mut instance, .. }) = kept {
            instance.store.data_mut().begin_call(unit_of_work);
            sandbox::arm_deadline(&mut instance.store);
            return Ok(instance);
        }
        let store = self
            .sandbox
            .new_store(
                self.name.clone(),
                Some(unit_of_work),
                self.limits,
                self.source_folder.as_ref(),
            )
            .await;
        let mut store = store.map_err(|error| {
            let failure = HandlerFailure::new(
                ErrorClass::Host,
                &*self.name,
                format!("instantiation failed: {error:#}"),
            );
            tracing::error!(plugin = %self.name, %failure, "instantiation failed");
            failure
        })?;
        match self.pre.instantiate(&mut store).await {
            Ok(world) => Ok(Instance {
                store,
                world,
                served: 0,
            }),
            Err(error) => {
                let tail = store.data().flush_output();
                let mut failure = self
                    .sandbox
                    .classify(&self.name, store.data(), &error, tail);
                failure.message = format!("instantiation failed: {}", failure.message);
                tracing::error!(plugin = %self.name, %failure, "instantiation failed");
                Err(failure)
            }
        }
    }

    /// Keeps an instance whose call ended cleanly for the next call, while it has calls
    /// left and the sandbox has room; otherwise it is dropped.
    fn keep(&self, mut instance: Instance) {
        instance.served += 1;
        if instance.served >= self.limits.calls_per_instance {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        // Never more than can run at once: the rest would only hold memory.
        if idle.len() >= self.limits.concurrent_calls {
            return;
        }
        if let Some(slot) = self.sandbox.idle_slot() {
            idle.push(Idle {
                instance,
                _slot: slot,
            });
        }
    }

    /// Refuses a reply over [`Limits::payload_out_bytes`]; its unit of work is dropped.
    fn check_reply(&self, call: CallResult<Vec<u8>>) -> CallResult<Vec<u8>> {
        match &call.outcome {
            Ok(reply) if reply.len() > self.limits.payload_out_bytes => {
                failed(HandlerFailure::new(
                    ErrorClass::Trap,
                    &*self.name,
                    format!(
                        "limit `payload_out_bytes` of {} exceeded: the reply has {} bytes",
                        self.limits.payload_out_bytes,
                        reply.len()
                    ),
                ))
            }
            _ => call,
        }
    }

    /// The call's outcome; the instance is kept for another call when the call ended
    /// cleanly, and discarded after a trap or a handler error.
    fn finish<T>(
        &self,
        mut instance: Instance,
        result: wasmtime::Result<Result<T, HandlerError>>,
    ) -> CallResult<T> {
        let state = instance.store.data();
        let tail = state.flush_output();
        let memory_bytes = state.memory_bytes();
        let outcome = match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(self.handler_failure(error)),
            Err(trap) => Err(self.sandbox.classify(&self.name, state, &trap, tail)),
        };
        let (outcome, unit_of_work) = match outcome {
            Ok(value) => {
                let unit_of_work = instance.store.data_mut().take_unit_of_work();
                self.keep(instance);
                match unit_of_work.as_ref().map(|unit| self.check_emitted(unit)) {
                    Some(Err(failure)) => (Err(failure), None),
                    _ => (Ok(value), unit_of_work),
                }
            }
            Err(failure) => (Err(failure), None),
        };
        CallResult {
            outcome,
            unit_of_work,
            memory_bytes,
        }
    }

    /// Checks the events a call emitted against the schemas the plugin declared for their
    /// kinds: one that does not match fails the call as `permanent` (the same handler emits
    /// the same payload again), naming the event and the failing path.
    fn check_emitted(&self, unit_of_work: &UnitOfWork) -> Result<(), HandlerFailure> {
        for event in unit_of_work.emitted() {
            self.schemas
                .check(&event.kind, &event.payload)
                .map_err(|mismatch| {
                    HandlerFailure::new(
                        ErrorClass::Permanent,
                        &*self.name,
                        format!(
                            "the emitted event `{}` does not match its schema {mismatch}",
                            event.kind
                        ),
                    )
                })?;
        }
        Ok(())
    }

    fn handler_failure(&self, error: HandlerError) -> HandlerFailure {
        let (class, message) = match error {
            HandlerError::Rejected(m) => (ErrorClass::Rejected, m),
            HandlerError::Retryable(m) => (ErrorClass::Retryable, m),
            HandlerError::Permanent(m) => (ErrorClass::Permanent, m),
        };
        HandlerFailure::new(class, &*self.name, message)
    }
}

/// A call that failed: nothing to commit.
fn failed<T>(failure: HandlerFailure) -> CallResult<T> {
    CallResult {
        outcome: Err(failure),
        unit_of_work: None,
        memory_bytes: 0,
    }
}

/// Records a handler call's time in the metrics when the call ends, however it ends.
struct TimedCall<'a> {
    handler: Handler,
    plugin: &'a str,
    kind: &'a str,
    started: Instant,
}

impl<'a> TimedCall<'a> {
    fn start(handler: Handler, plugin: &'a str, kind: &'a str) -> Self {
        Self {
            handler,
            plugin,
            kind,
            started: Instant::now(),
        }
    }
}

impl Drop for TimedCall<'_> {
    fn drop(&mut self) {
        telemetry::handler_called(self.handler, self.plugin, self.kind, self.started.elapsed());
    }
}
