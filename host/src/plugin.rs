//! One loaded plugin: a compiled component, what it declared in `describe`, and the typed
//! calls into it. Each call gets a fresh store; instantiation is cheap because everything
//! expensive (compilation, import resolution) was done once at load time in the
//! [`PluginWorldPre`].

use crate::bindings::{Envelope, HandlerError, PluginInfo, PluginWorldPre};
use crate::error::{ErrorClass, HandlerFailure};
use crate::sandbox::{GuestState, Sandbox};
use crate::unit_of_work::UnitOfWork;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
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

/// A loaded, described plugin. Cheap to share behind an `Arc`.
pub struct Plugin {
    name: Arc<str>,
    info: PluginInfo,
    source: PathBuf,
    pre: PluginWorldPre<GuestState>,
    sandbox: Arc<Sandbox>,
}

/// The result of one call: the handler's outcome, and the unit of work to commit when the
/// call succeeded (`None` after a trap).
pub struct CallResult<T> {
    pub outcome: Result<T, HandlerFailure>,
    pub unit_of_work: Option<UnitOfWork>,
}

impl Plugin {
    /// Compiles, links and describes the component in `bytes` read from `file`.
    ///
    /// # Errors
    /// A [`LoadError`] naming the file when it is not a component, does not implement the
    /// `plugin` world, imports what the host does not provide, or its `describe` fails.
    pub async fn load(
        sandbox: &Arc<Sandbox>,
        file: &Path,
        bytes: Vec<u8>,
    ) -> Result<Self, LoadError> {
        if bytes.starts_with(&CORE_MODULE_HEADER) {
            return Err(LoadError::new(
                file,
                "this is a core WebAssembly module, not a component; build it as a component (e.g. `--target wasm32-wasip2`)",
            ));
        }
        let compiler = sandbox.clone();
        let component = tokio::task::spawn_blocking(move || compiler.compile(&bytes))
            .await
            .map_err(|e| LoadError::new(file, e))?
            .map_err(|e| {
                LoadError::new(file, format!("not a valid WebAssembly component: {e:#}"))
            })?;
        let instance_pre = sandbox
            .linker()
            .instantiate_pre(&component)
            .map_err(|e| LoadError::new(file, format!("{e:#} (the host provides only the `handler-host:plugin@0.1.0` imports and WASI without files, network or environment)")))?;
        let pre = PluginWorldPre::new(instance_pre).map_err(|e| {
            LoadError::new(
                file,
                format!("does not implement the `handler-host:plugin/plugin@0.1.0` world: {e:#}"),
            )
        })?;
        let provisional: Arc<str> = Arc::from(file.display().to_string());
        let mut store = sandbox.new_store(provisional.clone(), None).await;
        let described = match pre.instantiate_async(&mut store).await {
            Ok(world) => world.call_describe(&mut store).await,
            Err(e) => Err(e),
        };
        let tail = store.data().flush_output();
        let info = described.map_err(|e| {
            let failure = sandbox.classify(&provisional, store.data(), &e, tail);
            LoadError::new(file, format!("`describe` failed: {}", failure.message))
        })?;
        validate_info(&info).map_err(|cause| LoadError::new(file, cause))?;
        Ok(Self {
            name: Arc::from(info.name.as_str()),
            info,
            source: file.to_owned(),
            pre,
            sandbox: sandbox.clone(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn version(&self) -> &str {
        &self.info.version
    }

    /// What the plugin declared in `describe`.
    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    /// The component file it was loaded from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    pub async fn handle_command(
        &self,
        command: &Envelope,
        unit_of_work: UnitOfWork,
    ) -> CallResult<Vec<u8>> {
        let Some((mut store, world)) = self.instantiate(unit_of_work).await else {
            return self.instantiation_failed();
        };
        let result = world.call_handle_command(&mut store, command).await;
        self.finish(store, result)
    }

    pub async fn handle_event(&self, event: &Envelope, unit_of_work: UnitOfWork) -> CallResult<()> {
        let Some((mut store, world)) = self.instantiate(unit_of_work).await else {
            return self.instantiation_failed();
        };
        let result = world.call_handle_event(&mut store, event).await;
        self.finish(store, result)
    }

    pub async fn handle_query(
        &self,
        query: &Envelope,
        unit_of_work: UnitOfWork,
    ) -> CallResult<Vec<u8>> {
        let Some((mut store, world)) = self.instantiate(unit_of_work).await else {
            return self.instantiation_failed();
        };
        let result = world.call_handle_query(&mut store, query).await;
        self.finish(store, result)
    }

    async fn instantiate(
        &self,
        unit_of_work: UnitOfWork,
    ) -> Option<(Store<GuestState>, crate::bindings::PluginWorld)> {
        let mut store = self
            .sandbox
            .new_store(self.name.clone(), Some(unit_of_work))
            .await;
        match self.pre.instantiate_async(&mut store).await {
            Ok(world) => Some((store, world)),
            Err(error) => {
                let tail = store.data().flush_output();
                let failure = self
                    .sandbox
                    .classify(&self.name, store.data(), &error, tail);
                tracing::error!(plugin = %self.name, %failure, "instantiation failed");
                None
            }
        }
    }

    fn instantiation_failed<T>(&self) -> CallResult<T> {
        CallResult {
            outcome: Err(HandlerFailure::new(
                ErrorClass::Trap,
                &*self.name,
                "the plugin could not be instantiated (see the host log)",
            )),
            unit_of_work: None,
        }
    }

    fn finish<T>(
        &self,
        mut store: Store<GuestState>,
        result: wasmtime::Result<Result<T, HandlerError>>,
    ) -> CallResult<T> {
        let tail = store.data().flush_output();
        match result {
            Ok(Ok(value)) => CallResult {
                outcome: Ok(value),
                unit_of_work: store.data_mut().take_unit_of_work(),
            },
            Ok(Err(error)) => CallResult {
                outcome: Err(self.handler_failure(error)),
                unit_of_work: None,
            },
            Err(trap) => CallResult {
                outcome: Err(self.sandbox.classify(&self.name, store.data(), &trap, tail)),
                unit_of_work: None,
            },
        }
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
