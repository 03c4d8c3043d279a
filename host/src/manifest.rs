//! `plugin.toml`: how a plugin folder is built into a component.
//!
//! A plugins directory holds ready components (`*.wasm`) and source folders. A source folder
//! has a `plugin.toml` that names its build command and its output; the host runs the build
//! when the output is missing or older than any of the inputs, then loads the output.
//!
//! ```toml
//! [build]
//! command = ["cargo", "build", "--release", "--target", "wasm32-wasip2", "-p", "orders",
//!            "--target-dir", "../../target/plugins"]
//! output = "../../target/plugins/wasm32-wasip2/release/orders.wasm"
//! inputs = [".", "../../sdk", "../../wit"]   # optional; default ["."]
//! ```
//! Paths are relative to the folder; the command runs in it. Beside its output, a build
//! records the SHA-256 of the inputs it was run on (`.<output name>.inputs`): an output older
//! than its inputs whose inputs still have that digest (a file saved unchanged, a branch
//! checked out and back) is fresh, not rebuilt, so an unchanged plugin keeps its component and
//! version even where its build tool does not produce the same bytes twice.
//!
//! A folder may also say how `host dev` runs it without a build: on a development runtime,
//! built once and shared by the plugins of its language, that reads the plugin's sources from
//! its folder (granted read-only) each time it is instantiated, so a saved edit serves at the
//! next message. `host run` and `host build` never use it.
//!
//! ```toml
//! [dev]
//! entry = "app"                        # what the runtime loads first from the folder
//! [dev.runtime]                        # how the runtime is built, as `[build]`
//! command = ["python3", "../../sdk/python/build.py", "--dev-runtime",
//!            "--output", "../../target/plugins/python/dev-runtime.wasm"]
//! output = "../../target/plugins/python/dev-runtime.wasm"
//! inputs = ["../../sdk/python", "../../wit"]
//! ```
//!
//! A runtime that cannot read a folder of sources (JavaScript's engine has no module loader
//! for files) takes one file that a quick build makes on each save instead, `[dev.build]`
//! (as `[build]`): the runtime is granted that file alone, and loads it.
//!
//! ```toml
//! [dev.build]                          # instead of `entry`
//! command = ["node", "../../sdk/javascript/build.mjs", "--app", "app.js",
//!            "--dev-bundle", "--output", "../../target/plugins/js/notifier.dev.js"]
//! output = "../../target/plugins/js/notifier.dev.js"
//! ```

use crate::plugin::LoadError;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::SystemTime;
use tokio::io::{AsyncBufReadExt, BufReader};

pub const MANIFEST_FILE: &str = "plugin.toml";

/// Folders never scanned for changed inputs: build outputs and installed dependencies.
const IGNORED_DIRS: &[&str] = &["target", "node_modules", ".venv", "__pycache__", "dist"];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// How the folder is built into its component.
    pub build: BuildSpec,
    /// How `host dev` runs the folder's sources without building them, when it can.
    #[serde(default)]
    pub dev: Option<DevSpec>,
}

/// `[dev]`: a development runtime that loads the plugin's sources when it is instantiated.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "DevTable")]
pub struct DevSpec {
    /// What the runtime is granted and loads first.
    pub sources: DevSources,
    /// How the runtime itself is built; its inputs exclude the plugin's own folder.
    pub runtime: BuildSpec,
}

/// What a development runtime is granted and loads first.
#[derive(Debug, Clone)]
pub enum DevSources {
    /// The plugin's folder, and what the runtime loads first from it (a Python module name).
    Folder { entry: String },
    /// The one file a quick build makes on each save (a JavaScript bundle), granted alone
    /// under its own name.
    Built(BuildSpec),
}

/// `[dev]` as written: `entry` or `[dev.build]`, and `[dev.runtime]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DevTable {
    entry: Option<String>,
    build: Option<BuildSpec>,
    runtime: BuildSpec,
}

impl TryFrom<DevTable> for DevSpec {
    type Error = String;

    fn try_from(table: DevTable) -> Result<Self, String> {
        if table.runtime.command.is_empty() {
            return Err("`dev.runtime.command` is empty".into());
        }
        let sources = match (table.entry, table.build) {
            (Some(_), Some(_)) => {
                return Err(
                    "`dev.entry` and `[dev.build]` exclude each other: the runtime \
                            loads the file the dev build makes"
                        .into(),
                );
            }
            (None, None) => {
                return Err(
                    "`[dev]` needs an `entry` (what the runtime loads from the folder) \
                            or a `[dev.build]` (the one file it loads)"
                        .into(),
                );
            }
            (Some(entry), None) if entry.is_empty() => return Err("`dev.entry` is empty".into()),
            (None, Some(build)) if build.command.is_empty() => {
                return Err("`dev.build.command` is empty".into());
            }
            (Some(entry), None) => DevSources::Folder { entry },
            (None, Some(build)) => DevSources::Built(build),
        };
        Ok(Self {
            sources,
            runtime: table.runtime,
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildSpec {
    /// Program and arguments; run in the plugin folder.
    pub command: Vec<String>,
    /// The component the command produces.
    pub output: PathBuf,
    /// Files or folders whose changes make the output stale.
    #[serde(default = "default_inputs")]
    pub inputs: Vec<PathBuf>,
}

fn default_inputs() -> Vec<PathBuf> {
    vec![PathBuf::from(".")]
}

/// One thing found in a plugins directory.
#[derive(Debug, Clone)]
pub enum Entry {
    /// A component file, loaded as it is.
    Component(PathBuf),
    /// A source folder with a manifest.
    Source {
        folder: PathBuf,
        manifest: Box<Manifest>,
    },
}

impl Entry {
    /// The file or folder of the plugins directory this entry is.
    pub fn path(&self) -> &Path {
        match self {
            Self::Component(file) => file,
            Self::Source { folder, .. } => folder,
        }
    }
}

/// Whether `path` lies in a folder that holds build outputs or installed dependencies, whose
/// changes are not changes to a plugin's sources.
pub fn is_ignored(path: &Path) -> bool {
    path.components().any(|part| {
        IGNORED_DIRS
            .iter()
            .any(|ignored| part.as_os_str() == *ignored)
    })
}

/// Lists the components and source folders of `dir`, in name order. Entries that are neither
/// are ignored; a folder whose manifest is invalid is reported as a [`LoadError`].
///
/// # Errors
/// Fails when `dir` cannot be read.
pub fn discover(dir: &Path) -> anyhow::Result<(Vec<Entry>, Vec<LoadError>)> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| anyhow::anyhow!("cannot read plugins directory {}: {e}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .collect();
    paths.sort();
    let mut entries = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        if path.is_dir() {
            let manifest_path = path.join(MANIFEST_FILE);
            if manifest_path.is_file() {
                match read_manifest(&manifest_path) {
                    Ok(manifest) => entries.push(Entry::Source {
                        folder: path,
                        manifest: Box::new(manifest),
                    }),
                    Err(error) => errors.push(error),
                }
            }
        } else if path.extension().is_some_and(|ext| ext == "wasm") {
            entries.push(Entry::Component(path));
        }
    }
    Ok((entries, errors))
}

fn read_manifest(path: &Path) -> Result<Manifest, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|e| LoadError::new(path, e))?;
    let manifest: Manifest = toml::from_str(&text).map_err(|e| LoadError::new(path, e))?;
    if manifest.build.command.is_empty() {
        return Err(LoadError::new(path, "`build.command` is empty"));
    }
    Ok(manifest)
}

/// Where a source folder's component is: resolved through the file system as far as it
/// exists, so logs and `/health` name `…/target/plugins/orders.wasm`, not
/// `plugins/orders/../../target/plugins/orders.wasm` (symbolic links followed, as a build
/// would). A folder not built yet keeps the joined path until its output's folder exists.
pub fn output_path(folder: &Path, spec: &BuildSpec) -> PathBuf {
    let joined = folder.join(&spec.output);
    if let Ok(real) = joined.canonicalize() {
        return real;
    }
    match (joined.parent(), joined.file_name()) {
        (Some(parent), Some(name)) => parent
            .canonicalize()
            .map(|parent| parent.join(name))
            .unwrap_or(joined),
        _ => joined,
    }
}

/// Whether the output is missing or older than the newest input.
pub fn is_stale(folder: &Path, spec: &BuildSpec) -> bool {
    let Ok(built) = std::fs::metadata(output_path(folder, spec)).and_then(|m| m.modified()) else {
        return true;
    };
    newest_input(folder, spec).is_some_and(|changed| changed > built)
}

/// When the newest of the build's inputs last changed.
pub fn newest_input(folder: &Path, spec: &BuildSpec) -> Option<SystemTime> {
    spec.inputs
        .iter()
        .filter_map(|input| newest_mtime(&folder.join(input)))
        .max()
}

fn newest_mtime(path: &Path) -> Option<SystemTime> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_dir() {
        return meta.modified().ok();
    }
    source_entries(path)
        .filter_map(|entry| newest_mtime(&entry))
        .max()
}

/// The entries of a source folder that count as sources: not hidden, not build outputs or
/// installed dependencies.
fn source_entries(dir: &Path) -> impl Iterator<Item = PathBuf> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|entry| {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            !name.starts_with('.') && !IGNORED_DIRS.contains(&name.as_ref())
        })
        .map(|entry| entry.path())
}

/// `root` and every folder of sources under it (see [`source_entries`]): what to watch for
/// changes, one folder at a time, without descending into `node_modules` or `target`.
pub fn source_dirs(root: &Path) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let mut todo = vec![root.to_owned()];
    while let Some(dir) = todo.pop() {
        if !dir.is_dir() {
            continue;
        }
        todo.extend(source_entries(&dir).filter(|p| p.is_dir()));
        dirs.push(dir);
    }
    dirs
}

/// Copies a folder's sources into `into` (an empty folder) — every file [`source_entries`]
/// counts, at the same relative path; `sources` itself under its name when it is a file — and
/// returns their SHA-256 (hex), by relative path and content in name order: what a
/// development runtime reads, fixed for the version it serves, and a digest that changes
/// exactly when the sources do.
///
/// # Errors
/// Fails when a file or folder of the sources cannot be read or copied.
pub fn snapshot_sources(sources: &Path, into: &Path) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    let root = if sources.is_file() {
        sources.parent().unwrap_or(sources)
    } else {
        sources
    };
    for file in source_files(sources) {
        let relative = file.strip_prefix(root).unwrap_or(&file);
        let content = std::fs::read(&file)?;
        let copy = into.join(relative);
        if let Some(parent) = copy.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&copy, &content)?;
        hash_part(&mut hasher, relative.to_string_lossy().as_bytes());
        hash_part(&mut hasher, &content);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Every file [`source_entries`] counts under `root` (or `root` itself when it is a file), in
/// name order.
fn source_files(root: &Path) -> Vec<PathBuf> {
    if root.is_file() {
        return vec![root.to_owned()];
    }
    let mut todo = vec![root.to_owned()];
    let mut files = Vec::new();
    while let Some(dir) = todo.pop() {
        for path in source_entries(&dir) {
            if path.is_dir() {
                todo.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Adds one length-prefixed part to a digest, so that parts cannot run into each other.
fn hash_part(hasher: &mut Sha256, part: &[u8]) {
    hasher.update((part.len() as u64).to_le_bytes());
    hasher.update(part);
}

/// The SHA-256 (hex) of a build's inputs: each input as the manifest names it, then its files
/// by path and content.
///
/// # Errors
/// Fails when a file of the inputs cannot be read.
fn inputs_digest(folder: &Path, spec: &BuildSpec) -> std::io::Result<String> {
    let output = output_path(folder, spec);
    // An output written inside its own inputs is not one of them: it changes with each build.
    let is_output = |file: &Path| {
        file.file_name() == output.file_name()
            && file.canonicalize().is_ok_and(|file| file == output)
    };
    let mut hasher = Sha256::new();
    for input in &spec.inputs {
        let root = folder.join(input);
        hash_part(&mut hasher, input.to_string_lossy().as_bytes());
        for file in source_files(&root).into_iter().filter(|f| !is_output(f)) {
            let relative = file.strip_prefix(&root).unwrap_or(&file);
            hash_part(&mut hasher, relative.to_string_lossy().as_bytes());
            hash_part(&mut hasher, &std::fs::read(&file)?);
        }
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Where a build records the digest of the inputs it was run on: beside its output, hidden,
/// so that an output written inside its own inputs does not make them change.
fn inputs_record(output: &Path) -> PathBuf {
    let name = output.file_name().unwrap_or_default().to_string_lossy();
    output.with_file_name(format!(".{name}.inputs"))
}

/// Whether an output that [`is_stale`] by time was built from exactly the inputs there are
/// now (by the digest its build recorded): then it is marked fresh and needs no build.
pub fn built_from_current_inputs(folder: &Path, spec: &BuildSpec) -> bool {
    let output = output_path(folder, spec);
    let Ok(recorded) = std::fs::read_to_string(inputs_record(&output)) else {
        return false;
    };
    // Taken before hashing: an edit saved meanwhile is newer and makes the output stale again.
    let as_of = newest_input(folder, spec);
    if !output.is_file() || inputs_digest(folder, spec).ok().as_deref() != Some(recorded.trim()) {
        return false;
    }
    if let Some(as_of) = as_of {
        mark_fresh(&output, as_of);
    }
    true
}

/// Gives `output` the time of the inputs it stands for (not the current time: a file saved a
/// moment later may carry an older time on a file system with a coarse clock).
fn mark_fresh(output: &Path, as_of: SystemTime) {
    if let Err(e) = std::fs::File::options()
        .write(true)
        .open(output)
        .and_then(|file| file.set_modified(as_of))
    {
        tracing::warn!(output = %output.display(), "cannot mark the build output as fresh: {e}");
    }
}

/// Runs the folder's build command, logging its output line by line tagged with the folder
/// name, and returns the output path.
///
/// # Errors
/// A [`LoadError`] naming the folder when the command cannot start, fails, or produces no
/// output file.
pub async fn build(folder: &Path, spec: &BuildSpec) -> Result<PathBuf, LoadError> {
    let name = folder.file_name().map_or_else(
        || folder.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let (program, args) = spec.command.split_first().expect("checked when read");
    // Taken before the build runs: an edit saved while it runs is not taken as built.
    let as_of = newest_input(folder, spec);
    let inputs = inputs_digest(folder, spec);
    tracing::info!(plugin = %name, command = spec.command.join(" "), "building");
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .current_dir(folder)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            let cause = if e.kind() == std::io::ErrorKind::NotFound {
                format!(
                    "`{program}` was not found: install it to build this plugin (the other plugins load without it)"
                )
            } else {
                format!("cannot run build command `{program}`: {e}")
            };
            LoadError::new(folder, cause)
        })?;
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let (status, (), ()) = tokio::join!(
        child.wait(),
        log_lines(&name, stdout),
        log_lines(&name, stderr)
    );
    let status = status.map_err(|e| LoadError::new(folder, e))?;
    if !status.success() {
        return Err(LoadError::new(
            folder,
            format!(
                "build command `{}` failed ({status}); its output is in the log above",
                spec.command.join(" ")
            ),
        ));
    }
    let output = output_path(folder, spec);
    if !output.is_file() {
        return Err(LoadError::new(
            folder,
            format!(
                "build succeeded but `{}` does not exist; check the `output` it names",
                output.display()
            ),
        ));
    }
    // A build tool that finds its output up to date (cargo, when an input changed that does
    // not affect it) leaves it untouched: mark it built from the inputs it ran on, or it would
    // stay stale forever. An input saved while the build ran is newer than what was built:
    // the output is dated back to what it was built from, so that save is built next.
    if let Some(as_of) = as_of
        && (is_stale(folder, spec) || newest_input(folder, spec).is_some_and(|now| now > as_of))
    {
        mark_fresh(&output, as_of);
    }
    let record = inputs_record(&output);
    if let Err(e) = inputs.and_then(|digest| std::fs::write(&record, digest)) {
        // Only costs a rebuild the next time the inputs look newer than the output.
        tracing::warn!(record = %record.display(), "cannot record what the build was run on: {e}");
    }
    Ok(output)
}

async fn log_lines(plugin: &str, stream: impl tokio::io::AsyncRead + Unpin) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::info!(plugin, "build: {line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_output_the_build_tool_left_untouched_is_fresh_afterwards() {
        let dir = tempfile::tempdir().unwrap();
        let manifest: Manifest =
            toml::from_str("[build]\ncommand=[\"true\"]\noutput=\"p.wasm\"\ninputs=[\"src\"]")
                .unwrap();
        std::fs::write(dir.path().join("p.wasm"), "").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::create_dir_all(dir.path().join("src")).unwrap();
        std::fs::write(dir.path().join("src/lib.rs"), "").unwrap();
        assert!(is_stale(dir.path(), &manifest.build));
        build(dir.path(), &manifest.build).await.unwrap();
        assert!(
            !is_stale(dir.path(), &manifest.build),
            "else every scan would build it again"
        );
    }

    #[tokio::test]
    async fn inputs_saved_unchanged_need_no_build_and_changed_ones_do() {
        let dir = tempfile::tempdir().unwrap();
        // A build tool that never gives the same bytes twice.
        let manifest: Manifest = toml::from_str(
            "[build]\ncommand=[\"sh\", \"-c\", \"date +%N >> p.wasm\"]\noutput=\"p.wasm\"\ninputs=[\"src\"]",
        )
        .unwrap();
        let spec = &manifest.build;
        let source = dir.path().join("src/lib.rs");
        std::fs::create_dir_all(source.parent().unwrap()).unwrap();
        std::fs::write(&source, "fn a() {}").unwrap();
        assert!(!built_from_current_inputs(dir.path(), spec), "never built");
        build(dir.path(), spec).await.unwrap();
        let built = std::fs::read(dir.path().join("p.wasm")).unwrap();

        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&source, "fn a() {}").unwrap();
        assert!(is_stale(dir.path(), spec), "newer on disk");
        assert!(built_from_current_inputs(dir.path(), spec));
        assert!(
            !is_stale(dir.path(), spec),
            "marked fresh: not hashed again"
        );
        assert_eq!(std::fs::read(dir.path().join("p.wasm")).unwrap(), built);

        std::fs::write(&source, "fn b() {}").unwrap();
        assert!(!built_from_current_inputs(dir.path(), spec), "an edit");
        std::fs::write(&source, "fn a() {}").unwrap();
        std::fs::write(dir.path().join("src/more.rs"), "").unwrap();
        assert!(!built_from_current_inputs(dir.path(), spec), "a new file");
    }

    #[tokio::test]
    async fn an_input_saved_while_the_build_runs_leaves_the_output_stale() {
        let dir = tempfile::tempdir().unwrap();
        // The edit lands after the build read its inputs, before it writes the output.
        let manifest: Manifest = toml::from_str(
            "[build]\ncommand=[\"sh\", \"-c\", \"sleep 0.05; echo 'int y;' > src/app.c; sleep 0.05; date +%N > p.wasm\"]\noutput=\"p.wasm\"\ninputs=[\"src\"]",
        )
        .unwrap();
        let spec = &manifest.build;
        std::fs::create_dir_all(dir.path().join("src")).unwrap();
        std::fs::write(dir.path().join("src/app.c"), "int x;").unwrap();
        build(dir.path(), spec).await.unwrap();
        assert!(
            is_stale(dir.path(), spec),
            "the saved edit is not built yet"
        );
        assert!(
            !built_from_current_inputs(dir.path(), spec),
            "the record is of the inputs the build read"
        );
    }

    #[tokio::test]
    async fn an_output_inside_its_own_inputs_is_fresh_after_its_build_and_not_an_input() {
        let dir = tempfile::tempdir().unwrap();
        let manifest: Manifest = toml::from_str(
            "[build]\ncommand=[\"sh\", \"-c\", \"date +%N >> p.wasm\"]\noutput=\"p.wasm\"",
        )
        .unwrap();
        let spec = &manifest.build;
        std::fs::write(dir.path().join("app.c"), "int x;").unwrap();
        build(dir.path(), spec).await.unwrap();
        assert!(!is_stale(dir.path(), spec), "the record is not an input");
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(dir.path().join("app.c"), "int x;").unwrap();
        assert!(is_stale(dir.path(), spec));
        assert!(
            built_from_current_inputs(dir.path(), spec),
            "the output is not an input"
        );
    }

    #[tokio::test]
    async fn a_missing_build_tool_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let manifest: Manifest =
            toml::from_str("[build]\ncommand=[\"no-such-build-tool\", \"x\"]\noutput=\"p.wasm\"")
                .unwrap();
        let error = build(dir.path(), &manifest.build).await.unwrap_err();
        assert!(
            error.cause.contains("`no-such-build-tool` was not found"),
            "{error}"
        );
    }

    #[test]
    fn manifest_with_unknown_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(MANIFEST_FILE),
            "[build]\ncommand=[\"true\"]\noutput=\"x.wasm\"\ncomand=1\n",
        )
        .unwrap();
        let err = read_manifest(&dir.path().join(MANIFEST_FILE)).unwrap_err();
        assert!(err.cause.contains("comand"), "{err}");
    }

    #[test]
    fn output_is_stale_until_built_and_again_after_an_input_changes() {
        let dir = tempfile::tempdir().unwrap();
        let manifest: Manifest =
            toml::from_str("[build]\ncommand=[\"true\"]\noutput=\"out/p.wasm\"\ninputs=[\"src\"]")
                .unwrap();
        std::fs::create_dir_all(dir.path().join("src")).unwrap();
        std::fs::create_dir_all(dir.path().join("out")).unwrap();
        std::fs::write(dir.path().join("src/lib.rs"), "").unwrap();
        assert!(is_stale(dir.path(), &manifest.build));
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(dir.path().join("out/p.wasm"), "").unwrap();
        assert!(!is_stale(dir.path(), &manifest.build));
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(dir.path().join("src/lib.rs"), "// changed").unwrap();
        assert!(is_stale(dir.path(), &manifest.build));
    }

    #[test]
    fn a_snapshot_copies_the_sources_and_its_digest_changes_only_with_them() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("plugin");
        std::fs::create_dir_all(folder.join("lib")).unwrap();
        std::fs::create_dir_all(folder.join("target")).unwrap();
        std::fs::write(folder.join("app.py"), "import lib.rules").unwrap();
        std::fs::write(folder.join("lib/rules.py"), "MAX = 5").unwrap();
        std::fs::write(folder.join("target/built.wasm"), "not a source").unwrap();
        let snapshot = |name: &str| {
            let into = dir.path().join(name);
            std::fs::create_dir(&into).unwrap();
            (snapshot_sources(&folder, &into).unwrap(), into)
        };
        let (first, into) = snapshot("a");
        assert_eq!(
            std::fs::read_to_string(into.join("lib/rules.py")).unwrap(),
            "MAX = 5"
        );
        assert!(
            !into.join("target").exists(),
            "build outputs are not sources"
        );
        std::fs::write(folder.join("target/built.wasm"), "rebuilt").unwrap();
        assert_eq!(snapshot("b").0, first, "an output changed, no source did");
        std::fs::write(folder.join("lib/rules.py"), "MAX = 6").unwrap();
        assert_ne!(snapshot("c").0, first, "a source changed");

        // A file is copied alone, under its own name.
        let into = dir.path().join("one");
        std::fs::create_dir(&into).unwrap();
        snapshot_sources(&folder.join("lib/rules.py"), &into).unwrap();
        let copied: Vec<_> = std::fs::read_dir(&into)
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(copied, ["rules.py"]);
        assert_eq!(
            std::fs::read_to_string(into.join("rules.py")).unwrap(),
            "MAX = 6"
        );
    }

    #[test]
    fn a_dev_table_needs_a_runtime_command_and_one_of_an_entry_or_a_dev_build() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(MANIFEST_FILE);
        let build = "[build]\ncommand=[\"true\"]\noutput=\"x.wasm\"\n";
        let runtime = "[dev.runtime]\ncommand=[\"true\"]\noutput=\"rt.wasm\"\n";
        let dev_build = "[dev.build]\ncommand=[\"true\"]\noutput=\"app.dev.js\"\n";
        let refusal = |dev: &str| {
            std::fs::write(&path, format!("{build}{dev}")).unwrap();
            read_manifest(&path).unwrap_err().cause
        };
        let cause =
            refusal("[dev]\nentry=\"app\"\n[dev.runtime]\ncommand=[]\noutput=\"rt.wasm\"\n");
        assert!(cause.contains("`dev.runtime.command` is empty"), "{cause}");
        let cause = refusal(&format!("[dev]\n{runtime}"));
        assert!(cause.contains("needs an `entry`"), "{cause}");
        let cause = refusal(&format!("[dev]\nentry=\"\"\n{runtime}"));
        assert!(cause.contains("`dev.entry` is empty"), "{cause}");
        let cause = refusal(&format!("[dev]\nentry=\"app\"\n{runtime}{dev_build}"));
        assert!(cause.contains("exclude each other"), "{cause}");
        let cause = refusal(&format!(
            "[dev]\n{runtime}[dev.build]\ncommand=[]\noutput=\"app.dev.js\"\n"
        ));
        assert!(cause.contains("`dev.build.command` is empty"), "{cause}");

        std::fs::write(&path, format!("{build}[dev]\nentry=\"app\"\n{runtime}")).unwrap();
        let dev = read_manifest(&path).unwrap().dev.unwrap();
        assert!(matches!(dev.sources, DevSources::Folder { entry } if entry == "app"));
        std::fs::write(&path, format!("{build}[dev]\n{runtime}{dev_build}")).unwrap();
        let dev = read_manifest(&path).unwrap().dev.unwrap();
        assert!(
            matches!(dev.sources, DevSources::Built(spec) if spec.output == Path::new("app.dev.js"))
        );
    }

    #[test]
    fn the_output_path_names_the_file_without_dot_dot() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let folder = root.join("plugins/orders");
        std::fs::create_dir_all(&folder).unwrap();
        let manifest: Manifest =
            toml::from_str("[build]\ncommand=[\"true\"]\noutput=\"../../target/out/p.wasm\"")
                .unwrap();
        // Not built yet, its folder missing: the path as written.
        assert_eq!(
            output_path(&folder, &manifest.build),
            folder.join("../../target/out/p.wasm")
        );
        // Its folder exists, the file not yet; then both.
        std::fs::create_dir_all(root.join("target/out")).unwrap();
        assert_eq!(
            output_path(&folder, &manifest.build),
            root.join("target/out/p.wasm")
        );
        std::fs::write(root.join("target/out/p.wasm"), "").unwrap();
        assert_eq!(
            output_path(&folder, &manifest.build),
            root.join("target/out/p.wasm")
        );
    }
}
