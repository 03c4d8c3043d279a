//! Hot reload: the plugins directory and the inputs of its source folders followed for as
//! long as the host runs, each settled burst of changes scanned and its registry swapped in.

use super::{BuildPolicy, PluginDir, Strands};
use crate::executor::Executor;
use crate::manifest::{self, DevSources, Entry};
use crate::store::Store;
use notify::{RecursiveMode, Watcher};
use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, mpsc};

/// Quiet time after the last file event before a scan: editors and compilers write a file in
/// several steps, and one scan should see the end result.
pub const SETTLE: Duration = Duration::from_millis(100);

impl PluginDir {
    /// The folders whose changes may change a plugin: the plugins directory, and the inputs
    /// of its source folders when they are built here.
    fn watched_paths(&self) -> BTreeSet<PathBuf> {
        let mut paths = BTreeSet::from([self.dir.clone()]);
        if self.build == BuildPolicy::LoadOnly {
            return paths;
        }
        if let Ok((entries, _)) = manifest::discover(&self.dir) {
            for entry in entries {
                if let Entry::Source { folder, manifest } = entry {
                    // On a development runtime: the runtime's inputs, and the folder it reads
                    // or the inputs of the file it is granted.
                    let dev = manifest.dev.filter(|_| self.build == BuildPolicy::Develop);
                    let inputs = match dev {
                        Some(dev) => {
                            let sources = match dev.sources {
                                DevSources::Folder { .. } => vec![PathBuf::from(".")],
                                DevSources::Built(build) => build.inputs,
                            };
                            [dev.runtime.inputs, sources].concat()
                        }
                        None => manifest.build.inputs,
                    };
                    for input in inputs {
                        if let Ok(path) = folder.join(input).canonicalize() {
                            paths.insert(path);
                        }
                    }
                }
            }
        }
        paths
    }
}

/// Follows the plugins directory for as long as the host runs: after each settled burst of
/// changes, scans it and swaps the new registry into `executor`, then wakes the dispatcher
/// (`wake`), since a plugin that returned may have deliveries waiting.
///
/// # Errors
/// Fails when the file watcher cannot start.
pub fn watch(
    mut plugins: PluginDir,
    executor: Arc<Executor>,
    store: Store,
    wake: Arc<Notify>,
    allow_stranding: bool,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    plugins.check_strands(Strands {
        store: store.clone(),
        refuse: !allow_stranding,
    });
    let (tx, mut changes) = mpsc::unbounded_channel::<()>();
    let mut watcher =
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            Ok(event) if is_change(&event) => {
                let _ = tx.send(());
            }
            Ok(_) => {}
            Err(error) => tracing::warn!("plugin watcher: {error}"),
        })?;
    let mut watched = HashSet::new();
    follow(&mut watcher, &mut watched, plugins.watched_paths());
    tracing::info!(dir = %plugins.dir().display(), "watching the plugins directory for changes");
    Ok(tokio::spawn(async move {
        while changes.recv().await.is_some() {
            // Settle: wait until the folder has been quiet for a while.
            while let Ok(Some(())) = tokio::time::timeout(SETTLE, changes.recv()).await {}
            let current = executor.registry();
            match plugins.scan(&current).await {
                Ok(Some(next)) => {
                    for name in current.names() {
                        if next.plugin(&name).is_none() {
                            report_waiting(&store, &name).await;
                        }
                    }
                    executor.replace_registry(next);
                    wake.notify_one();
                }
                Ok(None) => {}
                Err(error) => tracing::error!("cannot scan the plugins directory: {error:#}"),
            }
            follow(&mut watcher, &mut watched, plugins.watched_paths());
        }
    }))
}

/// Whether a file event may change a plugin: something written, created, renamed or removed
/// outside build outputs. Opening and reading files (a build reads every source) is not.
fn is_change(event: &notify::Event) -> bool {
    use notify::EventKind;
    use notify::event::{AccessKind, AccessMode};
    let writes = match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    };
    writes && !event.paths.iter().all(|p| manifest::is_ignored(p))
}

/// Watches the source folders under `roots` not yet watched, each on its own, so that build
/// outputs and installed dependencies (thousands of folders) never use up the system's watches.
fn follow(watcher: &mut impl Watcher, watched: &mut HashSet<PathBuf>, roots: BTreeSet<PathBuf>) {
    // A deleted folder's watch is gone with it; watch it again if it comes back.
    watched.retain(|path| path.is_dir());
    for path in roots.iter().flat_map(|root| manifest::source_dirs(root)) {
        if watched.contains(&path) {
            continue;
        }
        match watcher.watch(&path, RecursiveMode::NonRecursive) {
            Ok(()) => {
                watched.insert(path);
            }
            Err(error) => tracing::warn!(path = %path.display(), "cannot watch: {error}"),
        }
    }
}

/// Logs how many deliveries wait for a plugin that is no longer loaded.
async fn report_waiting(store: &Store, plugin: &str) {
    match store.pending_count(plugin).await {
        Ok(0) => {}
        Ok(waiting) => tracing::warn!(
            plugin,
            waiting,
            "deliveries wait for the removed plugin; they resume when it is loaded again"
        ),
        Err(error) => tracing::warn!(plugin, "cannot count waiting deliveries: {error:#}"),
    }
}

#[cfg(test)]
mod tests {
    use super::is_change;
    use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind};
    use notify::{Event, EventKind};

    fn event(kind: EventKind, path: &str) -> Event {
        Event::new(kind).add_path(path.into())
    }

    #[test]
    fn reads_and_build_outputs_are_not_changes() {
        let src = "/p/orders/src/lib.rs";
        assert!(is_change(&event(EventKind::Modify(ModifyKind::Any), src)));
        assert!(is_change(&event(
            EventKind::Create(CreateKind::File),
            "/p/x.wasm"
        )));
        assert!(is_change(&event(
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            src
        )));
        assert!(!is_change(&event(
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            src
        )));
        assert!(!is_change(&event(
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            src
        )));
        assert!(!is_change(&event(
            EventKind::Modify(ModifyKind::Any),
            "/p/demo/target/release/x.wasm"
        )));
        assert!(!is_change(&event(
            EventKind::Create(CreateKind::Folder),
            "/p/notifier/node_modules/esbuild"
        )));
    }
}
