//! The sandbox: one wasmtime engine, the linker that decides what a guest may import, the
//! per-call store with its limits, and how a trap is classified.
//!
//! A guest can reach only the `unit-of-work` and `log` interfaces of the contract and a WASI
//! with no preopened directories, no environment, no arguments and no network (clocks and
//! randomness are granted). A component importing anything else fails to load, naming the
//! import. Its stdout and stderr go to the host log, tagged with the plugin name, capped per
//! call. A plugin that `host dev` runs on a development runtime also sees its own source
//! folder, read-only, at [`SOURCE_MOUNT`] (see [`SourceFolder`]). Every limit of [`Limits`] is enforced here or in the [`UnitOfWork`]; what a guest
//! makes the host allocate is bounded by them (see `docs/security.md`).

mod imports;
mod limiter;
mod output;

#[cfg(test)]
mod tests;

use crate::cache::{Compiled, ComponentCache};
use crate::config::Limits;
use crate::error::{ErrorClass, HandlerFailure, HostError};
use crate::unit_of_work::{AccessError, UnitOfWork};
use anyhow::Context;
use limiter::{GuestLimiter, LimitHit};
use output::GuestOutput;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Strategy, Trap,
};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxView, WasiView};

/// Granularity of call deadlines: the epoch is advanced this often by a background thread.
/// Epoch checks cost a load and a compare in guest code, far cheaper than fuel.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);
/// Component instances alive at once across all plugins; bounds the pooling allocator's
/// reservations. Calls beyond it wait for a slot instead of growing the host.
pub const MAX_CONCURRENT_INSTANCES: u32 = 256;
/// Instances kept between calls for reuse ([`Limits::calls_per_instance`]), across all
/// plugins: each holds one of the slots above while it waits, so at most this many are
/// taken from the calls that need a fresh instance.
pub const MAX_IDLE_INSTANCES: u32 = MAX_CONCURRENT_INSTANCES / 4;
/// Longest log message kept from the `log` interface; the rest is cut and marked.
pub const MAX_LOG_MESSAGE_BYTES: usize = 16 << 10;
/// Log messages kept from one call; the rest are counted and dropped, so a guest logging in a
/// loop cannot flood the host's log for the whole of its deadline.
pub const MAX_LOG_MESSAGES_PER_CALL: usize = 1_000;
/// Bytes of each instance slot's linear memory kept resident between instances and reset in
/// place (see [`Sandbox::with_plugin_limits`]): at most this much resident memory per slot of
/// the pool that has been used, for several times faster instantiation.
pub const KEEP_RESIDENT_MEMORY_BYTES: usize = 1 << 20;
/// The same for tables.
pub const KEEP_RESIDENT_TABLE_BYTES: usize = 64 << 10;
/// Longest key a guest may use. Keys are stored and indexed by the host.
pub const MAX_KEY_BYTES: usize = 1024;

/// Where a development runtime finds the plugin's source folder in its file system.
pub const SOURCE_MOUNT: &str = "/plugin";
/// The environment variable that names the runtime's entry (`[dev] entry` of `plugin.toml`).
pub const SOURCE_ENTRY_VAR: &str = "HANDLER_HOST_ENTRY";

/// A plugin's sources, granted to the development runtime that runs it in `host dev`: a copy
/// taken when the version was loaded (so every call of a version runs the same sources, and a
/// save is the next version), read-only at [`SOURCE_MOUNT`], with its entry named in
/// [`SOURCE_ENTRY_VAR`]. Nothing else of the host's file system is granted, and `host run`
/// grants nothing.
#[derive(Debug, Clone)]
pub struct SourceFolder {
    /// The plugin's folder, or the one file its dev build made, which the copy was taken from.
    pub dir: std::path::PathBuf,
    /// The copy the runtime sees; removed when the last call of its version ends.
    pub copy: Arc<tempfile::TempDir>,
    /// What the runtime loads first from it.
    pub entry: String,
}

/// Per-call data of a guest's store: its WASI context, its unit of work and its limits.
pub struct GuestState {
    plugin: Arc<str>,
    wasi: WasiCtx,
    table: ResourceTable,
    /// `None` while calling `describe`, which may not touch state.
    unit_of_work: Option<UnitOfWork>,
    limiter: GuestLimiter,
    stdout: GuestOutput,
    stderr: GuestOutput,
    /// `log` calls made so far, and those dropped past [`MAX_LOG_MESSAGES_PER_CALL`].
    logged: usize,
    /// Held for the life of the store: one of the pooling allocator's instance slots.
    _slot: OwnedSemaphorePermit,
}

impl GuestState {
    /// Linear memory the instance holds (all its memories), in bytes.
    pub fn memory_bytes(&self) -> usize {
        self.limiter.memory_bytes
    }

    fn unit_of_work(&mut self) -> wasmtime::Result<&mut UnitOfWork> {
        self.unit_of_work.as_mut().ok_or_else(|| {
            wasmtime::format_err!("state and events are not available while describing the plugin")
        })
    }

    /// Readies the state for a call, a fresh instance's first or a kept one's next:
    /// `unit_of_work` under the instance's limits, and a fresh count of log messages.
    pub fn begin_call(&mut self, unit_of_work: UnitOfWork) {
        self.unit_of_work = Some(unit_of_work.with_limits(self.limiter.limits));
        self.logged = 0;
    }

    /// Takes the unit of work back out once the call is over.
    pub fn take_unit_of_work(&mut self) -> Option<UnitOfWork> {
        self.unit_of_work.take()
    }

    /// Writes what the guest printed to the host log and returns the last stderr line (a
    /// Rust panic message, typically) to explain a trap.
    pub fn flush_output(&self) -> Option<String> {
        if self.logged > MAX_LOG_MESSAGES_PER_CALL {
            tracing::warn!(
                plugin = &*self.plugin,
                dropped = self.logged - MAX_LOG_MESSAGES_PER_CALL,
                "log messages over the per-call cap of {MAX_LOG_MESSAGES_PER_CALL} were dropped"
            );
        }
        self.stdout.flush_to_log(&self.plugin, "stdout");
        self.stderr.flush_to_log(&self.plugin, "stderr")
    }
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Which compiler turns a plugin into machine code. Both run the same sandbox: the limits,
/// the deadline and the contract are the engine's, whichever compiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Compiler {
    /// Cranelift, the optimising compiler: the fastest code, what `host run` serves with.
    Cranelift,
    /// Winch, wasmtime's single-pass baseline compiler: several times faster to compile, for
    /// slower code. `host dev`'s default, so a rebuilt plugin serves sooner after a save.
    Winch,
}

impl Compiler {
    /// The name `--compiler` takes.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Cranelift => "cranelift",
            Self::Winch => "winch",
        }
    }
}

/// One engine and one linker for every plugin; build once, share by `Arc`.
pub struct Sandbox {
    engine: Engine,
    compiler: Compiler,
    linker: Linker<GuestState>,
    /// Limits of every plugin without limits of its own.
    limits: Limits,
    /// Plugin name → its own limits.
    plugin_limits: HashMap<String, Limits>,
    instance_slots: Arc<Semaphore>,
    /// See [`MAX_IDLE_INSTANCES`].
    idle_slots: Arc<Semaphore>,
    /// Where compiled components are kept between runs, if anywhere.
    cache: Option<ComponentCache>,
    /// Development runtimes compiled by this process, newest last (see
    /// [`Sandbox::compile_runtime`]).
    runtimes: std::sync::Mutex<Vec<(String, Component)>>,
}

/// Development runtimes kept compiled in memory: one per language, and a new build of each.
const KEPT_RUNTIMES: usize = 4;

impl Sandbox {
    /// Builds the engine (pooling allocator, epoch interruption) and the linker, and starts
    /// the epoch ticker.
    ///
    /// # Errors
    /// Fails when the engine cannot be configured on this machine.
    pub fn new(limits: Limits) -> anyhow::Result<Arc<Self>> {
        Self::with_plugin_limits(limits, HashMap::new(), None, Compiler::Cranelift)
    }

    /// Like [`Sandbox::new`], with limits of their own for the plugins named in
    /// `plugin_limits` (keyed by the name their `describe` returns), compiled components kept
    /// in `cache`, and plugins compiled by `compiler`.
    ///
    /// # Errors
    /// Fails when the engine cannot be configured on this machine.
    pub fn with_plugin_limits(
        limits: Limits,
        plugin_limits: HashMap<String, Limits>,
        cache: Option<ComponentCache>,
        compiler: Compiler,
    ) -> anyhow::Result<Arc<Self>> {
        // The pool is sized for the largest limits; each store's limiter enforces its own.
        let all = || std::iter::once(&limits).chain(plugin_limits.values());
        let most = |f: fn(&Limits) -> usize| all().map(f).max().unwrap_or(0);
        let count = |f: fn(&Limits) -> usize| u32::try_from(most(f)).unwrap_or(u32::MAX);
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(MAX_CONCURRENT_INSTANCES)
            .total_core_instances(MAX_CONCURRENT_INSTANCES * 16)
            .total_memories(MAX_CONCURRENT_INSTANCES * 2)
            .total_tables(MAX_CONCURRENT_INSTANCES * 16)
            .max_memory_size(most(|l| l.memory_bytes))
            .table_elements(most(|l| l.table_elements))
            .max_memories_per_component(count(|l| l.memories))
            .max_tables_per_component(count(|l| l.tables))
            .max_core_instances_per_component(count(|l| l.instances));
        // Resetting a slot for its next instance is most of an instantiation: restore only the
        // pages the last instance dirtied, with `memset`, and keep them resident, rather than
        // `madvise` the whole memory away and fault it back in (with a TLB shoot-down per
        // reset). `pagemap_scan` finds the dirtied pages (Linux 6.7+; elsewhere the low
        // `KEEP_RESIDENT` bytes are reset instead); what is past them is decommitted at once,
        // not batched, so a guest that grew to its memory cap gives it all back when it ends.
        pool.linear_memory_keep_resident(KEEP_RESIDENT_MEMORY_BYTES)
            .table_keep_resident(KEEP_RESIDENT_TABLE_BYTES)
            .pagemap_scan(wasmtime::Enabled::Auto);
        let mut config = Config::new();
        config
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .strategy(match compiler {
                Compiler::Cranelift => Strategy::Cranelift,
                Compiler::Winch => Strategy::Winch,
            });
        let engine = Engine::new(&config)
            .map_err(|e| anyhow::anyhow!("configuring the WebAssembly engine: {e:#}"))?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| anyhow::anyhow!("linking WASI: {e:#}"))?;
        crate::bindings::PluginWorld::add_to_linker::<_, HasSelf<GuestState>>(
            &mut linker,
            |state| state,
        )
        .map_err(|e| anyhow::anyhow!("linking the plugin contract: {e:#}"))?;
        crate::bindings::v0_1::PluginWorld::add_to_linker::<_, HasSelf<GuestState>>(
            &mut linker,
            |state| state,
        )
        .map_err(|e| anyhow::anyhow!("linking the plugin contract 0.1: {e:#}"))?;

        let ticker = engine.weak();
        std::thread::Builder::new()
            .name("epoch-ticker".into())
            .spawn(move || {
                while let Some(engine) = ticker.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .context("starting the epoch ticker")?;

        Ok(Arc::new(Self {
            engine,
            compiler,
            linker,
            limits,
            plugin_limits,
            instance_slots: Arc::new(Semaphore::new(MAX_CONCURRENT_INSTANCES as usize)),
            idle_slots: Arc::new(Semaphore::new(MAX_IDLE_INSTANCES as usize)),
            cache,
            runtimes: std::sync::Mutex::default(),
        }))
    }

    /// The engine every plugin is compiled for and runs in.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The compiler that turns plugins into machine code.
    pub fn compiler(&self) -> Compiler {
        self.compiler
    }

    /// The linker that provides WASI and every contract version the host supports to the plugins.
    pub fn linker(&self) -> &Linker<GuestState> {
        &self.linker
    }

    /// The limits of plugins without limits of their own.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The limits of the plugin named `plugin`.
    pub fn limits_for(&self, plugin: &str) -> Limits {
        self.plugin_limits
            .get(plugin)
            .copied()
            .unwrap_or(self.limits)
    }

    /// Compiles a component. CPU-heavy: call it off the async runtime's worker threads.
    ///
    /// # Errors
    /// Fails when the bytes are not a valid component.
    pub fn compile(&self, bytes: &[u8]) -> anyhow::Result<Component> {
        Component::from_binary(&self.engine, bytes).map_err(anyhow::Error::from)
    }

    /// Like [`Sandbox::compile`] for a component whose SHA-256 is `digest`, through the
    /// compiled-component cache when one is configured.
    ///
    /// # Errors
    /// Fails when the bytes are not a valid component.
    pub fn compile_cached(
        &self,
        bytes: &[u8],
        digest: &str,
    ) -> anyhow::Result<(Component, Compiled)> {
        match &self.cache {
            Some(cache) => cache.load_or_compile(&self.engine, bytes, digest),
            None => Ok((self.compile(bytes)?, Compiled::Uncached)),
        }
    }

    /// Like [`Sandbox::compile_cached`] for a development runtime, which every saved version
    /// of every plugin it runs loads again: the last few compiled are kept in
    /// memory, so a save compiles nothing, with or without a cache.
    ///
    /// # Errors
    /// Fails when the bytes are not a valid component.
    pub fn compile_runtime(
        &self,
        bytes: &[u8],
        digest: &str,
    ) -> anyhow::Result<(Component, Compiled)> {
        // Held while compiling: two plugins loaded at once compile their runtime once.
        let mut runtimes = self.runtimes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, component)) = runtimes.iter().find(|(kept, _)| kept == digest) {
            return Ok((component.clone(), Compiled::InMemory));
        }
        let (component, compiled) = self.compile_cached(bytes, digest)?;
        if runtimes.len() == KEPT_RUNTIMES {
            runtimes.remove(0);
        }
        runtimes.push((digest.to_owned(), component.clone()));
        Ok((component, compiled))
    }

    /// A fresh store for one call under `limits`, with its deadline armed, seeing `source`
    /// when the plugin runs on a development runtime. Waits while every instance slot of the
    /// pool is in use.
    ///
    /// # Errors
    /// Fails when `source`'s folder cannot be opened.
    pub async fn new_store(
        &self,
        plugin: Arc<str>,
        unit_of_work: Option<UnitOfWork>,
        limits: Limits,
        source: Option<&SourceFolder>,
    ) -> anyhow::Result<Store<GuestState>> {
        let slot = self
            .instance_slots
            .clone()
            .acquire_owned()
            .await
            .expect("the instance semaphore is never closed");
        let stdout = GuestOutput::new(limits.guest_output_bytes);
        let stderr = GuestOutput::new(limits.guest_output_bytes);
        // No preopens, no env, no args, no network: the builder grants nothing by default.
        let mut wasi = wasmtime_wasi::WasiCtxBuilder::new();
        wasi.stdout(stdout.clone()).stderr(stderr.clone());
        if let Some(source) = source {
            wasi.preopened_dir(source.copy.path(), SOURCE_MOUNT, FsPerms::ReadOnly)
                .map_err(|e| {
                    anyhow::anyhow!(
                        "cannot open the copy of {} at {}: {e:#}",
                        source.dir.display(),
                        source.copy.path().display()
                    )
                })?
                .env(SOURCE_ENTRY_VAR, &source.entry);
        }
        let wasi = wasi.build();
        let mut state = GuestState {
            plugin,
            wasi,
            table: ResourceTable::new(),
            unit_of_work: None,
            limiter: GuestLimiter {
                limits,
                hit: None,
                memory_bytes: 0,
            },
            stdout,
            stderr,
            logged: 0,
            _slot: slot,
        };
        if let Some(unit) = unit_of_work {
            state.begin_call(unit);
        }
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limiter);
        store.epoch_deadline_trap();
        arm_deadline(&mut store);
        Ok(store)
    }

    /// Room to keep one more instance between calls, while there is any (see
    /// [`MAX_IDLE_INSTANCES`]); the instance holds it while it waits.
    pub fn idle_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.idle_slots.clone().try_acquire_owned().ok()
    }

    /// Turns an error raised by a call into a classified failure naming the plugin.
    pub fn classify(
        &self,
        plugin: &str,
        state: &GuestState,
        error: &wasmtime::Error,
        stderr_tail: Option<String>,
    ) -> HandlerFailure {
        let limits = &state.limiter.limits;
        let (class, what) = match state.limiter.hit {
            Some(LimitHit::Memory) => (
                ErrorClass::MemoryLimit,
                format!(
                    "limit `memory_bytes` exceeded: memory cap of {} bytes",
                    limits.memory_bytes
                ),
            ),
            Some(LimitHit::TableElements) => (ErrorClass::Trap, format!("{error:#}")),
            // A host call failed (the database): carried through the trap, not the guest's fault.
            None if error.downcast_ref::<HostError>().is_some() => {
                (ErrorClass::Host, format!("host failure: {error:#}"))
            }
            None => match (
                error.downcast_ref::<AccessError>(),
                error.downcast_ref::<Trap>(),
            ) {
                (Some(refused), _) => (ErrorClass::Trap, refused.to_string()),
                (None, Some(Trap::Interrupt)) => (
                    ErrorClass::Deadline,
                    format!(
                        "limit `call_deadline` exceeded: call deadline of {} ms",
                        limits.call_deadline.as_millis()
                    ),
                ),
                (None, Some(Trap::StackOverflow)) => {
                    (ErrorClass::StackOverflow, "stack overflow".to_owned())
                }
                (None, Some(Trap::UnreachableCodeReached)) => {
                    (ErrorClass::Panic, "guest panicked".to_owned())
                }
                _ => (ErrorClass::Trap, format!("trap: {error:#}")),
            },
        };
        let message = match stderr_tail {
            Some(tail) if class != ErrorClass::Host => format!("{what}: {tail}"),
            _ => what,
        };
        HandlerFailure::new(class, plugin, message)
    }
}

/// Arms the deadline of the store's next call: its limits' `call_deadline` from now.
pub fn arm_deadline(store: &mut Store<GuestState>) {
    let deadline = store.data().limiter.limits.call_deadline;
    let ticks = (deadline.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64;
    store.set_epoch_deadline(ticks);
}
