//! The sandbox: one wasmtime engine, the linker that decides what a guest may import, the
//! per-call store with its limits, and how a trap is classified.
//!
//! A guest can reach only the `unit-of-work` and `log` interfaces of the contract and a WASI
//! with no preopened directories, no environment, no arguments and no network. Its stdout and
//! stderr go to the host log, tagged with the plugin name, capped per call.

mod output;

use crate::bindings::{LogLevel, log_api, unit_of_work_api};
use crate::config::Limits;
use crate::error::{ErrorClass, HandlerFailure};
use crate::unit_of_work::{EmittedEvent, UnitOfWork};
use anyhow::Context;
use output::GuestOutput;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter, Store,
    Trap,
};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Granularity of call deadlines: the epoch is advanced this often by a background thread.
/// Epoch checks cost a load and a compare in guest code, far cheaper than fuel.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);
/// Component instances alive at once across all plugins; bounds the pooling allocator's
/// reservations. Calls beyond it wait for a slot instead of growing the host.
pub const MAX_CONCURRENT_INSTANCES: u32 = 256;
/// Table elements a guest may grow to: enough for any real program's function tables, small
/// enough that a hostile guest cannot make the host allocate without bound.
pub const MAX_TABLE_ELEMENTS: usize = 100_000;
/// Longest log message kept from the `log` interface; the rest is cut and marked.
pub const MAX_LOG_MESSAGE_BYTES: usize = 16 << 10;
/// Longest key a guest may use. Keys are stored and indexed by the host.
pub const MAX_KEY_BYTES: usize = 1024;

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
    /// Held for the life of the store: one of the pooling allocator's instance slots.
    _slot: OwnedSemaphorePermit,
}

impl GuestState {
    fn unit_of_work(&mut self) -> wasmtime::Result<&mut UnitOfWork> {
        self.unit_of_work.as_mut().ok_or_else(|| {
            wasmtime::format_err!("state and events are not available while describing the plugin")
        })
    }

    /// Takes the unit of work back out once the call is over.
    pub fn take_unit_of_work(&mut self) -> Option<UnitOfWork> {
        self.unit_of_work.take()
    }

    /// Writes what the guest printed to the host log and returns the last stderr line (a
    /// Rust panic message, typically) to explain a trap.
    pub fn flush_output(&self) -> Option<String> {
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

/// Enforces the memory cap and remembers that it was hit, so the trap it causes is
/// classified as `memory_limit` rather than a generic trap.
struct GuestLimiter {
    memory_bytes: usize,
    memory_exceeded: bool,
}

impl ResourceLimiter for GuestLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.memory_exceeded = true;
            wasmtime::bail!(
                "memory limit exceeded: the guest asked for {desired} bytes, the cap is {} bytes",
                self.memory_bytes
            );
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// One engine and one linker for every plugin; build once, share by `Arc`.
pub struct Sandbox {
    engine: Engine,
    linker: Linker<GuestState>,
    limits: Limits,
    instance_slots: Arc<Semaphore>,
}

impl Sandbox {
    /// Builds the engine (pooling allocator, epoch interruption) and the linker, and starts
    /// the epoch ticker.
    ///
    /// # Errors
    /// Fails when the engine cannot be configured on this machine.
    pub fn new(limits: Limits) -> anyhow::Result<Arc<Self>> {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(MAX_CONCURRENT_INSTANCES)
            .total_core_instances(MAX_CONCURRENT_INSTANCES * 16)
            .total_memories(MAX_CONCURRENT_INSTANCES * 2)
            .total_tables(MAX_CONCURRENT_INSTANCES * 16)
            .max_memory_size(limits.memory_bytes)
            .max_memories_per_component(4)
            .max_tables_per_component(32)
            .max_core_instances_per_component(64);
        let mut config = Config::new();
        config
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
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
            linker,
            limits,
            instance_slots: Arc::new(Semaphore::new(MAX_CONCURRENT_INSTANCES as usize)),
        }))
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn linker(&self) -> &Linker<GuestState> {
        &self.linker
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Compiles a component. CPU-heavy: call it off the async runtime's worker threads.
    ///
    /// # Errors
    /// Fails when the bytes are not a valid component.
    pub fn compile(&self, bytes: &[u8]) -> anyhow::Result<Component> {
        Component::from_binary(&self.engine, bytes).map_err(anyhow::Error::from)
    }

    /// A fresh store for one call, with its deadline armed. Waits while every instance slot
    /// of the pool is in use.
    pub async fn new_store(
        &self,
        plugin: Arc<str>,
        unit_of_work: Option<UnitOfWork>,
    ) -> Store<GuestState> {
        let slot = self
            .instance_slots
            .clone()
            .acquire_owned()
            .await
            .expect("the instance semaphore is never closed");
        let stdout = GuestOutput::new(self.limits.guest_output_bytes);
        let stderr = GuestOutput::new(self.limits.guest_output_bytes);
        // No preopens, no env, no args, no network: the builder grants nothing by default.
        let wasi = wasmtime_wasi::WasiCtxBuilder::new()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .build();
        let state = GuestState {
            plugin,
            wasi,
            table: ResourceTable::new(),
            unit_of_work,
            limiter: GuestLimiter {
                memory_bytes: self.limits.memory_bytes,
                memory_exceeded: false,
            },
            stdout,
            stderr,
            _slot: slot,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limiter);
        let ticks = (self.limits.call_deadline.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64;
        store.set_epoch_deadline(ticks);
        store.epoch_deadline_trap();
        store
    }

    /// Turns an error raised by a call into a classified failure naming the plugin.
    pub fn classify(
        &self,
        plugin: &str,
        state: &GuestState,
        error: &wasmtime::Error,
        stderr_tail: Option<String>,
    ) -> HandlerFailure {
        let (class, what) = if state.limiter.memory_exceeded {
            (
                ErrorClass::MemoryLimit,
                format!("memory cap of {} bytes exceeded", self.limits.memory_bytes),
            )
        } else if error.downcast_ref::<HostFault>().is_some() {
            (ErrorClass::Host, format!("host failure: {error:#}"))
        } else {
            match error.downcast_ref::<Trap>() {
                Some(Trap::Interrupt) => (
                    ErrorClass::Deadline,
                    format!(
                        "call deadline of {} ms exceeded",
                        self.limits.call_deadline.as_millis()
                    ),
                ),
                Some(Trap::StackOverflow) => {
                    (ErrorClass::StackOverflow, "stack overflow".to_owned())
                }
                Some(Trap::UnreachableCodeReached) => {
                    (ErrorClass::Panic, "guest panicked".to_owned())
                }
                _ => (ErrorClass::Trap, format!("trap: {error:#}")),
            }
        };
        let message = match stderr_tail {
            Some(tail) if class != ErrorClass::Host => format!("{what}: {tail}"),
            _ => what,
        };
        HandlerFailure::new(class, plugin, message)
    }
}

/// A failure of the host (not the guest) during a host call, e.g. the database is down.
/// Carried through the trap so the call is classified as [`ErrorClass::Host`].
#[derive(Debug, thiserror::Error)]
#[error("{0:#}")]
pub struct HostFault(anyhow::Error);

fn check_key(key: &str) -> wasmtime::Result<()> {
    wasmtime::ensure!(
        key.len() <= MAX_KEY_BYTES,
        "state key of {} bytes is longer than the limit of {MAX_KEY_BYTES} bytes",
        key.len()
    );
    Ok(())
}

impl crate::bindings::handler_host::plugin::types::Host for GuestState {}

impl unit_of_work_api::Host for GuestState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        check_key(&key)?;
        self.unit_of_work()?
            .get(&key)
            .await
            .map_err(|e| wasmtime::Error::new(HostFault(e)))
    }

    async fn put(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<()> {
        check_key(&key)?;
        Ok(self.unit_of_work()?.put(key, value)?)
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<()> {
        check_key(&key)?;
        Ok(self.unit_of_work()?.delete(key)?)
    }

    async fn emit(
        &mut self,
        kind: String,
        payload: Vec<u8>,
        partition_key: Option<String>,
    ) -> wasmtime::Result<()> {
        wasmtime::ensure!(!kind.is_empty(), "emit: the event kind is empty");
        Ok(self.unit_of_work()?.emit(EmittedEvent {
            kind,
            payload,
            partition_key,
        })?)
    }
}

impl log_api::Host for GuestState {
    async fn log(&mut self, level: LogLevel, mut message: String) -> wasmtime::Result<()> {
        if message.len() > MAX_LOG_MESSAGE_BYTES {
            let mut cut = MAX_LOG_MESSAGE_BYTES;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str(" …(truncated)");
        }
        let plugin = &*self.plugin;
        match level {
            LogLevel::Trace => tracing::trace!(plugin, "{message}"),
            LogLevel::Debug => tracing::debug!(plugin, "{message}"),
            LogLevel::Info => tracing::info!(plugin, "{message}"),
            LogLevel::Warn => tracing::warn!(plugin, "{message}"),
            LogLevel::Error => tracing::error!(plugin, "{message}"),
        }
        Ok(())
    }
}
