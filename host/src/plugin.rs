//! One loaded plugin: a compiled component, what it declared in `describe`, and the typed
//! calls into it. Each call gets a fresh store; instantiation is cheap because everything
//! expensive (compilation, import resolution) was done once at load time in the
//! [`PluginWorldPre`]. A plugin configured with [`Limits::calls_per_instance`] above 1 keeps
//! instances whose call ended cleanly for its next calls instead.

mod contract;
mod schemas;

use crate::bindings::{Envelope, HandlerError, PluginInfo};
use crate::cache::Compiled;
use crate::config::Limits;
use crate::error::{ErrorClass, HandlerFailure};
use crate::sandbox::{self, GuestState, Sandbox};
use crate::telemetry::{self, Handler};
use crate::unit_of_work::UnitOfWork;
pub use contract::VERSIONS as CONTRACT_VERSIONS;
use contract::{Pre, World};
pub use schemas::{MAX_SCHEMA_BYTES, Mismatch, Schemas};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::Store;

/// A plugin that could not be loaded: which file, and why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot load plugin {}: {cause}", file.display())]
pub struct LoadError {
    pub file: PathBuf,
    pub cause: String,
}

impl LoadError {
    pub fn new(file: impl Into<PathBuf>, cause: impl fmt::Display) -> Self {
        Self {
            file: file.into(),
            cause: cause.to_string(),
        }
    }
}

/// The first bytes of a core WebAssembly module (magic, then version 1). A component has the
/// same magic with a different version/layer word.
const CORE_MODULE_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];

/// Hex digits of the content digest shown in a plugin's identity and in logs: enough to tell
/// builds apart at a glance.
const DIGEST_SHOWN: usize = 12;

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
    pub outcome: Result<T, HandlerFailure>,
    pub unit_of_work: Option<UnitOfWork>,
    /// Linear memory the instance held when the call ended (0 when it never started).
    pub memory_bytes: usize,
}

impl Plugin {
    /// Compiles, links and describes the component in `bytes` read from `file`, whose
    /// SHA-256 is `digest` (hex, as [`crate::cache::content_digest`] gives it).
    ///
    /// # Errors
    /// A [`LoadError`] naming the file when it is not a component, does not implement the
    /// `plugin` world, imports what the host does not provide, or its `describe` fails.
    pub async fn load(
        sandbox: &Arc<Sandbox>,
        file: &Path,
        bytes: Vec<u8>,
        digest: &str,
    ) -> Result<Self, LoadError> {
        if bytes.starts_with(&CORE_MODULE_HEADER) {
            return Err(LoadError::new(
                file,
                "this is a core WebAssembly module, not a component; build it as a component (e.g. `--target wasm32-wasip2`)",
            ));
        }
        let digest = digest.to_owned();
        let compiler = sandbox.clone();
        let key = digest.clone();
        let started = Instant::now();
        let (component, compiled) =
            tokio::task::spawn_blocking(move || compiler.compile_cached(&bytes, &key))
                .await
                .map_err(|e| LoadError::new(file, e))?
                .map_err(|e| {
                    LoadError::new(file, format!("not a valid WebAssembly component: {e:#}"))
                })?;
        let how = match compiled {
            Compiled::Cached => "read from the compiled-component cache",
            Compiled::Fresh | Compiled::Rebuilt(_) | Compiled::Uncached => "compiled",
        };
        tracing::info!(
            file = %file.display(), ms = started.elapsed().as_millis() as u64,
            digest = &digest[..DIGEST_SHOWN], "component {how}"
        );
        let versions = CONTRACT_VERSIONS.map(|v| format!("`handler-host:plugin@{v}`"));
        let versions = versions.join(" or ");
        let instance_pre = sandbox
            .linker()
            .instantiate_pre(&component)
            .map_err(|e| LoadError::new(file, format!("{e:#} (the host provides only the imports of {versions} and WASI without files, network or environment)")))?;
        let pre = Pre::new(instance_pre).map_err(|e| {
            LoadError::new(
                file,
                format!("does not implement the `plugin` world of {versions}: {e:#}"),
            )
        })?;
        let provisional: Arc<str> = Arc::from(file.display().to_string());
        // The name is not known before `describe`: it runs under the default limits.
        let mut store = sandbox
            .new_store(provisional.clone(), None, *sandbox.limits())
            .await;
        let described = match pre.instantiate(&mut store).await {
            Ok(world) => world.describe(&mut store).await,
            Err(e) => Err(e),
        };
        let tail = store.data().flush_output();
        let info = described.map_err(|e| {
            let failure = sandbox.classify(&provisional, store.data(), &e, tail);
            LoadError::new(file, format!("`describe` failed: {}", failure.message))
        })?;
        validate_info(&info).map_err(|cause| LoadError::new(file, cause))?;
        let schemas =
            Schemas::compile(&info.schemas).map_err(|cause| LoadError::new(file, cause))?;
        tracing::debug!(file = %file.display(), contract = pre.version(), "component matched");
        let limits = sandbox.limits_for(&info.name);
        Ok(Self {
            name: Arc::from(info.name.as_str()),
            identity: format!("{}@{}+{}", info.name, info.version, &digest[..DIGEST_SHOWN]),
            digest,
            info,
            schemas,
            source: file.to_owned(),
            pre,
            sandbox: sandbox.clone(),
            limits,
            calls: Arc::new(Semaphore::new(limits.concurrent_calls.max(1))),
            idle: Mutex::default(),
        })
    }

    /// The limits every call of this plugin runs under.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn name(&self) -> &str {
        &self.name
    }

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

    /// The component file it was loaded from.
    pub fn source(&self) -> &Path {
        &self.source
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
        let mut store = self
            .sandbox
            .new_store(self.name.clone(), Some(unit_of_work), self.limits)
            .await;
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

/// Checks what `describe` returned: a usable name and non-empty kinds.
fn validate_info(info: &PluginInfo) -> Result<(), String> {
    let name_ok = !info.name.is_empty()
        && info.name.len() <= 64
        && info
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !name_ok {
        return Err(format!(
            "`describe` returned the name {:?}; a plugin name is 1 to 64 characters of letters, digits, `-`, `_` or `.`",
            info.name
        ));
    }
    let kinds = info
        .commands
        .iter()
        .chain(&info.events)
        .chain(&info.queries);
    if let Some(bad) = kinds.into_iter().find(|k| k.is_empty() || k.len() > 256) {
        return Err(format!(
            "plugin `{}` declares an invalid kind {bad:?}",
            info.name
        ));
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A component for `world` (WIT text that may use the `handler-host:plugin@0.2.0`
    /// package) whose every export traps with `unreachable`.
    fn dummy_component(world_wit: &str) -> Vec<u8> {
        let mut resolve = wit_parser::Resolve::default();
        let wit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit");
        resolve.push_dir(&wit).unwrap();
        let package = resolve.push_str("test.wit", world_wit).unwrap();
        let world = resolve.select_world(&[package], None).unwrap();
        let mut module =
            wit_component::dummy_module(&resolve, world, wit_parser::ManglingAndAbi::Standard32);
        wit_component::embed_component_metadata(
            &mut module,
            &resolve,
            world,
            wit_component::StringEncoding::UTF8,
        )
        .unwrap();
        wit_component::ComponentEncoder::default()
            .module(&module)
            .unwrap()
            .validate(true)
            .encode()
            .unwrap()
    }

    async fn load(bytes: Vec<u8>) -> Result<Plugin, LoadError> {
        let sandbox = Sandbox::new(Limits::DEFAULT).unwrap();
        let digest = crate::cache::content_digest(&bytes);
        Plugin::load(
            &sandbox,
            Path::new("plugins/under-test.wasm"),
            bytes,
            &digest,
        )
        .await
    }

    fn cause(result: Result<Plugin, LoadError>) -> String {
        match result {
            Ok(plugin) => panic!("plugin `{}` loaded but must not", plugin.name()),
            Err(error) => {
                assert_eq!(error.file, Path::new("plugins/under-test.wasm"));
                error.cause
            }
        }
    }

    #[tokio::test]
    async fn an_import_the_host_does_not_provide_fails_the_load_naming_it() {
        let bytes = dummy_component(
            "package test:evil;
             interface socket { connect: func(address: string) -> u32; }
             world evil { include handler-host:plugin/plugin@0.2.0; import socket; }",
        );
        let cause = cause(load(bytes).await);
        assert!(cause.contains("test:evil/socket"), "{cause}");
        assert!(cause.contains("the host provides only"), "{cause}");
    }

    #[tokio::test]
    async fn a_component_of_another_contract_version_fails_the_load_naming_the_import() {
        let plugin_wit = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit/plugin.wit"),
        )
        .unwrap()
        .replace(
            "package handler-host:plugin@0.2.0;",
            "package handler-host:plugin@0.9.0;",
        );
        let mut resolve = wit_parser::Resolve::default();
        let package = resolve.push_str("plugin.wit", &plugin_wit).unwrap();
        let world = resolve.select_world(&[package], None).unwrap();
        let mut module =
            wit_component::dummy_module(&resolve, world, wit_parser::ManglingAndAbi::Standard32);
        wit_component::embed_component_metadata(
            &mut module,
            &resolve,
            world,
            wit_component::StringEncoding::UTF8,
        )
        .unwrap();
        let bytes = wit_component::ComponentEncoder::default()
            .module(&module)
            .unwrap()
            .encode()
            .unwrap();
        let cause = cause(load(bytes).await);
        assert!(cause.contains("@0.9.0"), "{cause}");
        assert!(cause.contains("handler-host:plugin@0.1.0"), "{cause}");
    }

    #[tokio::test]
    async fn a_component_for_another_world_fails_the_load() {
        let bytes = dummy_component("package test:other; world other { export run: func(); }");
        let cause = cause(load(bytes).await);
        assert!(cause.contains("does not implement"), "{cause}");
    }

    #[tokio::test]
    async fn a_describe_that_traps_fails_the_load_with_its_class() {
        let bytes = dummy_component(
            "package test:trapping; world trapping { include handler-host:plugin/plugin@0.2.0; }",
        );
        let cause = cause(load(bytes).await);
        assert!(cause.contains("`describe` failed"), "{cause}");
        assert!(cause.contains("panicked"), "{cause}");
    }

    #[tokio::test]
    async fn empty_truncated_and_core_module_files_fail_the_load() {
        assert!(cause(load(Vec::new()).await).contains("not a valid WebAssembly component"));
        let component = dummy_component(
            "package test:cut; world cut { include handler-host:plugin/plugin@0.2.0; }",
        );
        let truncated = component[..component.len() / 2].to_vec();
        assert!(cause(load(truncated).await).contains("not a valid WebAssembly component"));
        assert!(cause(load(CORE_MODULE_HEADER.to_vec()).await).contains("core WebAssembly module"));
    }

    #[test]
    fn describe_must_name_the_plugin_and_its_kinds_sensibly() {
        let info = |name: &str, command: &str| PluginInfo {
            name: name.into(),
            version: "1".into(),
            commands: vec![command.into()],
            events: Vec::new(),
            queries: Vec::new(),
            schemas: Vec::new(),
        };
        assert!(validate_info(&info("ok-name_1.2", "a.b")).is_ok());
        assert!(validate_info(&info("", "a.b")).is_err());
        assert!(validate_info(&info("../etc", "a.b")).is_err());
        assert!(validate_info(&info(&"n".repeat(65), "a.b")).is_err());
        assert!(validate_info(&info("ok", "")).is_err());
        assert!(validate_info(&info("ok", &"k".repeat(257))).is_err());
    }
}
