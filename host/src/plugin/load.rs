//! Loading a plugin: a component file compiled (or read from the cache), linked against the
//! contract versions the host provides, described, and its declarations checked, with the
//! reasons a file is refused.

use super::contract::Pre;
use super::{CONTRACT_VERSIONS, Plugin, Schemas};
use crate::bindings::PluginInfo;
use crate::cache::Compiled;
use crate::sandbox::{Sandbox, SourceFolder};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::Semaphore;

/// A plugin that could not be loaded: which file, and why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot load plugin {}: {cause}", file.display())]
pub struct LoadError {
    /// The entry refused: a component file, a source folder or its `plugin.toml`.
    pub file: PathBuf,
    /// Why it was refused, for people.
    pub cause: String,
}

impl LoadError {
    /// `file` refused because of `cause`.
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
        Self::load_from(sandbox, file, bytes, digest, digest, None).await
    }

    /// Loads a plugin that a development runtime runs from `source` (`host dev`): `bytes`
    /// is the runtime, read from `file`, whose SHA-256 is `runtime_digest` (what its compiled
    /// code is cached by); `digest` identifies the runtime and the sources together, so each
    /// saved edit is a version of its own.
    ///
    /// # Errors
    /// As [`Plugin::load`], naming the source folder when the runtime cannot load its
    /// sources.
    pub async fn load_on_runtime(
        sandbox: &Arc<Sandbox>,
        file: &Path,
        bytes: Vec<u8>,
        runtime_digest: &str,
        source: SourceFolder,
        digest: &str,
    ) -> Result<Self, LoadError> {
        Self::load_from(sandbox, file, bytes, runtime_digest, digest, Some(source)).await
    }

    async fn load_from(
        sandbox: &Arc<Sandbox>,
        file: &Path,
        bytes: Vec<u8>,
        compile_key: &str,
        digest: &str,
        source_folder: Option<SourceFolder>,
    ) -> Result<Self, LoadError> {
        if bytes.starts_with(&CORE_MODULE_HEADER) {
            return Err(LoadError::new(
                file,
                "this is a core WebAssembly module, not a component; build it as a component (e.g. `--target wasm32-wasip2`)",
            ));
        }
        let digest = digest.to_owned();
        let compiler = sandbox.clone();
        let key = compile_key.to_owned();
        let started = Instant::now();
        let on_runtime = source_folder.is_some();
        let (component, compiled) = tokio::task::spawn_blocking(move || {
            if on_runtime {
                compiler.compile_runtime(&bytes, &key)
            } else {
                compiler.compile_cached(&bytes, &key)
            }
        })
        .await
        .map_err(|e| LoadError::new(file, e))?
        .map_err(|e| LoadError::new(file, format!("not a valid WebAssembly component: {e:#}")))?;
        let how = match compiled {
            Compiled::Cached => "read from the compiled-component cache",
            Compiled::InMemory => "kept compiled in memory",
            Compiled::Fresh | Compiled::Rebuilt(_) | Compiled::Uncached => "compiled",
        };
        tracing::info!(
            file = %file.display(), ms = started.elapsed().as_millis() as u64,
            digest = &compile_key[..DIGEST_SHOWN.min(compile_key.len())], "component {how}"
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
        // A runtime's failure to load its sources is the source folder's.
        let refused = source_folder.as_ref().map_or(file, |source| &source.dir);
        let mut store = sandbox
            .new_store(
                provisional.clone(),
                None,
                *sandbox.limits(),
                source_folder.as_ref(),
            )
            .await
            .map_err(|e| LoadError::new(refused, format!("{e:#}")))?;
        let described = match pre.instantiate(&mut store).await {
            Ok(world) => world.describe(&mut store).await,
            Err(e) => Err(e),
        };
        let tail = store.data().flush_output();
        let info = described.map_err(|e| {
            let failure = sandbox.classify(&provisional, store.data(), &e, tail);
            LoadError::new(refused, format!("`describe` failed: {}", failure.message))
        })?;
        validate_info(&info).map_err(|cause| LoadError::new(refused, cause))?;
        let schemas =
            Schemas::compile(&info.schemas).map_err(|cause| LoadError::new(refused, cause))?;
        tracing::debug!(file = %file.display(), contract = pre.version(), "component matched");
        let limits = sandbox.limits_for(&info.name);
        Ok(Self {
            name: Arc::from(info.name.as_str()),
            identity: format!("{}@{}+{}", info.name, info.version, &digest[..DIGEST_SHOWN]),
            digest,
            info,
            schemas,
            source: file.to_owned(),
            source_folder,
            pre,
            sandbox: sandbox.clone(),
            limits,
            calls: Arc::new(Semaphore::new(limits.concurrent_calls.max(1))),
            idle: Mutex::default(),
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Limits;

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
