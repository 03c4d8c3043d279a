//! The plugins directory as loaded, and how a running host follows its changes.
//!
//! A [`PluginDir`] remembers what each entry of the folder (a component file, or a source
//! folder with a `plugin.toml`) gave: the plugin it loaded, by content digest, or why it did
//! not load. [`PluginDir::scan`] compares the folder with that memory and makes the next
//! [`Registry`]: a changed component is compiled and described off the hot path, checked
//! against every other plugin (no kind owned twice), and only then put in place of the old
//! version; a new file is added; a removed one leaves the registry. A version that fails any
//! check changes nothing: the old one keeps serving, and the error names the file and the
//! cause. With [`BuildPolicy::BuildStale`], source folders whose component is older than their
//! inputs are built first, and a failing build keeps the old version too.
//!
//! [`watch`] runs scans when the folder (and the inputs of its source folders) change, and
//! hands each new registry to the executor, which swaps it in whole: a call that started on
//! the old version finishes on it, and the next message routes to the new one.
//!
//! A running host also refuses a change that would strand work: a new version that no longer
//! handles a kind its plugin has pending or dead-lettered deliveries of, or a removal of a
//! plugin that has any. The old version keeps serving and the error names the kinds and
//! counts; `--allow-stranding` lets such changes through with a warning (see [`Strands`]).

mod strands;
mod watch;

use crate::cache::content_digest;
use crate::manifest::{self, BuildSpec, DevSources, Entry};
use crate::plugin::{LoadError, Plugin};
use crate::registry::Registry;
use crate::sandbox::{Sandbox, SourceFolder};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

pub use strands::Strands;
pub use watch::{SETTLE, watch};

/// Whether to build source folders whose component is missing or stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildPolicy {
    /// Build each source folder whose component is missing or older than its inputs, then
    /// load it (`host run --build`).
    BuildStale,
    /// As [`BuildPolicy::BuildStale`], except that a source folder with a `[dev]` table runs
    /// on its development runtime (built when missing or stale), which reads the folder's
    /// sources at each instantiation: an edit serves with no build (`host dev`).
    Develop,
    /// Never build: a source folder without a component is refused, and a stale component is
    /// loaded as it is, with a warning.
    LoadOnly,
}

/// Why an entry did not load, and what it was, so an unchanged entry is not retried.
#[derive(Debug, Clone)]
struct Failure {
    error: LoadError,
    /// The digest of the component that failed, when it got that far.
    digest: Option<String>,
    /// The newest input of a source folder whose build failed.
    inputs_at: Option<SystemTime>,
}

/// A component read for loading, with its SHA-256 (hex).
struct Candidate {
    file: PathBuf,
    /// Taken by the load.
    bytes: Vec<u8>,
    /// The component's SHA-256, or for a development runtime, that of the runtime and the
    /// sources it reads together.
    digest: String,
    /// The development runtime's sources and the runtime's own digest.
    on_runtime: Option<(SourceFolder, String)>,
}

/// An entry's component file, and for a development runtime the sources it is granted (a
/// folder, or one file) and the entry it runs.
type Located = (PathBuf, Option<(PathBuf, String)>);

/// A component file's bytes and SHA-256, read and hashed off the async threads: tens of MiB
/// for an interpreted language's component.
async fn read_component(file: PathBuf) -> std::io::Result<(Vec<u8>, String)> {
    tokio::task::spawn_blocking(move || {
        let bytes = std::fs::read(&file)?;
        let digest = content_digest(&bytes);
        Ok((bytes, digest))
    })
    .await
    .unwrap_or_else(|e| Err(std::io::Error::other(e)))
}

/// The component files and source folders of the plugins directory `dir`, in name order: what
/// a scan loads (a folder whose manifest is invalid is left out; the scan reports it).
///
/// # Errors
/// Fails when `dir` cannot be read.
pub fn entries(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let (entries, _) = manifest::discover(dir)?;
    Ok(entries
        .iter()
        .map(|entry| entry.path().to_owned())
        .collect())
}

/// The plugin an entry serves.
#[derive(Debug, Clone)]
struct Serving {
    name: String,
    identity: String,
    digest: String,
}

/// A copy of a development runtime's sources in a fresh temporary folder, and their digest.
fn snapshot(folder: &Path) -> std::io::Result<(Arc<tempfile::TempDir>, String)> {
    let copy = tempfile::Builder::new()
        .prefix("handler-host-sources-")
        .tempdir()?;
    let digest = manifest::snapshot_sources(folder, copy.path())?;
    Ok((Arc::new(copy), digest))
}

/// The plugins directory as loaded.
pub struct PluginDir {
    dir: PathBuf,
    sandbox: Arc<Sandbox>,
    build: BuildPolicy,
    /// Entry path (component file or source folder) → the plugin it serves, which outlives
    /// a failed newer version.
    serving: BTreeMap<PathBuf, Serving>,
    /// Entry path → why its newest version is not serving.
    failures: BTreeMap<PathBuf, Failure>,
    /// Checks each change against the deliveries waiting (a running host's folder).
    strands: Option<Strands>,
}

impl PluginDir {
    /// Loads every plugin of `dir`. A plugin that cannot be built, compiled, described or
    /// registered is left out, and the returned registry's
    /// [`load_errors`](Registry::load_errors) say why; the others load.
    ///
    /// # Errors
    /// Fails only when `dir` itself cannot be read.
    pub async fn load(
        sandbox: &Arc<Sandbox>,
        dir: &Path,
        build: BuildPolicy,
    ) -> anyhow::Result<(Self, Registry)> {
        let mut plugins = Self {
            dir: dir.to_owned(),
            sandbox: sandbox.clone(),
            build,
            serving: BTreeMap::new(),
            failures: BTreeMap::new(),
            strands: None,
        };
        let started = Instant::now();
        let registry = plugins
            .scan(&Registry::default())
            .await?
            .unwrap_or_default();
        tracing::info!(
            plugins = registry.names().len(),
            errors = registry.load_errors().len(),
            ms = started.elapsed().as_millis() as u64,
            "plugins loaded"
        );
        Ok((plugins, registry))
    }

    /// The plugins directory this follows.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Brings `current` up to date with the folder: the next registry, or `None` when nothing
    /// changed.
    ///
    /// # Errors
    /// Fails only when the folder itself cannot be read; `current` then stays.
    pub async fn scan(&mut self, current: &Registry) -> anyhow::Result<Option<Registry>> {
        let (entries, manifest_errors) = manifest::discover(&self.dir)?;
        let mut next = current.clone();
        let mut changed = false;
        let mut seen = BTreeSet::new();
        for error in manifest_errors {
            // A manifest error names the manifest; the entry is its folder.
            let folder = error.file.parent().unwrap_or(&error.file).to_owned();
            seen.insert(folder.clone());
            self.fail(&folder, None, None, error, &next);
        }
        // Builds run one at a time (each is a compiler of its own); what they give, and the
        // components dropped in, are then read and hashed all at once, and loaded all at
        // once: compiling or reading the cache and `describe` are independent per component.
        let mut located = Vec::new();
        for entry in entries {
            let path = entry.path().to_owned();
            seen.insert(path.clone());
            if let Some(found) = self.locate(&path, entry, &next).await {
                located.push((path, found));
            }
        }
        let read = located
            .iter()
            .map(|(_, (file, _))| read_component(file.clone()));
        let read = futures::future::join_all(read).await;
        let mut ready = Vec::new();
        for ((path, found), read) in located.into_iter().zip(read) {
            if let Some(candidate) = self.prepare(&path, found, read, &next) {
                ready.push((path, candidate));
            }
        }
        let loads = ready.iter_mut().map(|(_, candidate)| {
            let bytes = std::mem::take(&mut candidate.bytes);
            let sandbox = &self.sandbox;
            let Candidate {
                file,
                digest,
                on_runtime,
                ..
            } = &*candidate;
            async move {
                match on_runtime {
                    None => Plugin::load(sandbox, file, bytes, digest).await,
                    Some((source, runtime_digest)) => {
                        let source = source.clone();
                        Plugin::load_on_runtime(
                            sandbox,
                            file,
                            bytes,
                            runtime_digest,
                            source,
                            digest,
                        )
                        .await
                    }
                }
            }
        });
        let loaded = futures::future::join_all(loads).await;
        for ((path, candidate), loaded) in ready.into_iter().zip(loaded) {
            changed |= self.apply(&path, candidate, loaded, &mut next).await;
        }
        self.failures.retain(|path, _| seen.contains(path));
        let gone: Vec<PathBuf> = self
            .serving
            .keys()
            .filter(|path| !seen.contains(*path))
            .cloned()
            .collect();
        for path in gone {
            let Some(serving) = self.serving.get(&path).cloned() else {
                continue;
            };
            let without = next.without(&serving.name);
            let removal = format!("removing {}", path.display());
            if let Some(refusal) = self
                .stranding(&serving.name, &next, &without, &removal)
                .await
            {
                let error = LoadError::new(&path, refusal);
                self.fail(&path, None, None, error, &next);
                continue;
            }
            self.serving.remove(&path);
            next = without;
            changed = true;
            tracing::warn!(
                plugin = %serving.name, version = %serving.identity, file = %path.display(),
                "plugin removed: it receives nothing until it returns; its pending deliveries wait for it"
            );
        }
        let errors: Vec<LoadError> = self.failures.values().map(|f| f.error.clone()).collect();
        let errors_changed = errors.len() != current.load_errors().len()
            || errors
                .iter()
                .zip(current.load_errors())
                .any(|(a, b)| a.file != b.file || a.cause != b.cause);
        next.set_load_errors(errors);
        Ok((changed || errors_changed).then_some(next))
    }

    /// Builds one entry if it is stale: its component file, and for a development runtime
    /// the sources it is granted (the folder, or the file its dev build makes) and the entry
    /// it runs; `None` when a build failed (recorded).
    async fn locate(&mut self, path: &Path, entry: Entry, next: &Registry) -> Option<Located> {
        let (folder, manifest) = match entry {
            Entry::Component(file) => return Some((file, None)),
            Entry::Source { folder, manifest } => (folder, manifest),
        };
        let dev = manifest.dev.filter(|_| self.build == BuildPolicy::Develop);
        let spec = dev.as_ref().map_or(&manifest.build, |dev| &dev.runtime);
        let built = match self.build_if_stale(&folder, spec).await {
            Ok(runtime) => match dev.map(|dev| dev.sources) {
                None => Ok((runtime, None)),
                Some(DevSources::Folder { entry }) => Ok((runtime, Some((folder, entry)))),
                Some(DevSources::Built(spec)) => {
                    self.build_if_stale(&folder, &spec).await.map(|file| {
                        let entry = file
                            .file_name()
                            .map(|name| name.to_string_lossy().into_owned())
                            .unwrap_or_default();
                        (runtime, Some((file, entry)))
                    })
                }
            },
            Err(failure) => Err(failure),
        };
        built
            .map_err(|failure| {
                self.fail(path, failure.digest, failure.inputs_at, failure.error, next);
            })
            .ok()
    }

    /// What is to be loaded for `path` from its located component, `read` (its bytes and
    /// digest): `None` when that is unreadable (recorded), the version already serving, or
    /// the same broken version as before.
    fn prepare(
        &mut self,
        path: &Path,
        (file, source): Located,
        read: std::io::Result<(Vec<u8>, String)>,
        next: &Registry,
    ) -> Option<Candidate> {
        let (bytes, mut digest) = match read {
            Ok(read) => read,
            Err(e) => {
                let error = LoadError::new(&file, format!("cannot read the file: {e}"));
                self.fail(path, None, None, error, next);
                return None;
            }
        };
        let on_runtime = match source {
            None => None,
            Some((dir, entry)) => match snapshot(&dir) {
                Ok((copy, sources)) => {
                    let together = content_digest(format!("{digest}{sources}").as_bytes());
                    let source = SourceFolder { dir, copy, entry };
                    Some((source, std::mem::replace(&mut digest, together)))
                }
                Err(e) => {
                    let error = LoadError::new(path, format!("cannot copy the sources: {e}"));
                    self.fail(path, None, None, error, next);
                    return None;
                }
            },
        };
        if self
            .failures
            .get(path)
            .is_some_and(|f| f.digest.as_deref() == Some(digest.as_str()))
        {
            return None; // the same broken version: already reported
        }
        if let Some(serving) = self.serving.get(path)
            && serving.digest == digest
        {
            if self.failures.remove(path).is_some() {
                tracing::info!(
                    plugin = %serving.name, version = %serving.identity,
                    "the serving version is back in {}", path.display()
                );
            }
            return None;
        }
        Some(Candidate {
            file,
            bytes,
            digest,
            on_runtime,
        })
    }

    /// Puts a loaded (or failed) candidate in place of what `path` served; whether the set
    /// of serving plugins changed.
    async fn apply(
        &mut self,
        path: &Path,
        candidate: Candidate,
        loaded: Result<Plugin, LoadError>,
        next: &mut Registry,
    ) -> bool {
        let Candidate {
            file,
            digest,
            on_runtime,
            ..
        } = candidate;
        let previous = self.serving.get(path).map(|s| s.name.clone());
        let loaded = loaded.and_then(|plugin| {
            let plugin = Arc::new(plugin);
            let registry = next.with(plugin.clone(), previous.as_deref())?;
            Ok((plugin, registry))
        });
        if let (Ok((_, registry)), Some(old)) = (&loaded, &previous) {
            let change = format!("the new version in {}", file.display());
            if let Some(refusal) = self.stranding(old, next, registry, &change).await {
                // No digest: the same file is checked again at the next change of the folder,
                // when the deliveries may have finished.
                self.fail(path, None, None, LoadError::new(&file, refusal), next);
                return false;
            }
        }
        match loaded {
            Ok((plugin, registry)) => {
                *next = registry;
                let name = plugin.name().to_owned();
                let runs = match &on_runtime {
                    None => "its built component".to_owned(),
                    Some((source, _)) => format!(
                        "the development runtime, loading {} at each instance: a save builds no component",
                        source.dir.display()
                    ),
                };
                match self.serving.get(path) {
                    Some(old) => tracing::info!(
                        plugin = %name, from = %old.identity, to = plugin.identity(),
                        file = %file.display(), runs,
                        "plugin replaced: calls in flight finish on the old version, the next message uses the new one"
                    ),
                    None => tracing::info!(
                        plugin = %name, version = plugin.identity(), file = %file.display(),
                        runs, commands = ?plugin.info().commands, events = ?plugin.info().events,
                        queries = ?plugin.info().queries, "plugin loaded"
                    ),
                }
                self.serving.insert(
                    path.to_owned(),
                    Serving {
                        name,
                        identity: plugin.identity().to_owned(),
                        digest,
                    },
                );
                self.failures.remove(path);
                true
            }
            Err(error) => {
                self.fail(path, Some(digest), None, error, next);
                false
            }
        }
    }

    /// Builds a source folder whose component is missing or stale (when the policy says so),
    /// unless its last build failed on the same inputs.
    async fn build_if_stale(&self, folder: &Path, spec: &BuildSpec) -> Result<PathBuf, Failure> {
        let output = manifest::output_path(folder, spec);
        if !manifest::is_stale(folder, spec) {
            return Ok(output);
        }
        if manifest::built_from_current_inputs(folder, spec) {
            tracing::info!(
                folder = %folder.display(),
                "sources saved unchanged since the last build: not rebuilt"
            );
            return Ok(output);
        }
        if self.build == BuildPolicy::LoadOnly {
            let dir = self.dir.display();
            if !output.exists() {
                // Building runs the folder's own command outside the sandbox: only on request.
                return Err(Failure {
                    error: LoadError::new(
                        folder,
                        format!(
                            "not built: `host build --plugins {dir}` builds it (or `host run \
                             --build`, or `host dev`)"
                        ),
                    ),
                    digest: None,
                    inputs_at: None,
                });
            }
            tracing::warn!(
                folder = %folder.display(),
                "the component is older than its sources: loading it as it is (`host build \
                 --plugins {dir}` rebuilds it)"
            );
            return Ok(output);
        }
        let inputs_at = manifest::newest_input(folder, spec);
        if let Some(failed) = self.failures.get(folder)
            && failed.inputs_at.is_some()
            && failed.inputs_at == inputs_at
        {
            return Err(failed.clone());
        }
        manifest::build(folder, spec)
            .await
            .map_err(|error| Failure {
                error,
                digest: None,
                inputs_at,
            })
    }

    /// Records a failed entry; logs it when it is news, saying what keeps serving.
    fn fail(
        &mut self,
        path: &Path,
        digest: Option<String>,
        inputs_at: Option<SystemTime>,
        error: LoadError,
        next: &Registry,
    ) {
        let known = self
            .failures
            .get(path)
            .is_some_and(|f| f.error.cause == error.cause && f.error.file == error.file);
        if !known {
            match self.serving.get(path) {
                Some(serving) if next.plugin(&serving.name).is_some() => {
                    tracing::error!("{error}; {} keeps serving", serving.identity);
                }
                _ => tracing::error!("{error}"),
            }
        }
        self.failures.insert(
            path.to_owned(),
            Failure {
                error,
                digest,
                inputs_at,
            },
        );
    }
}
