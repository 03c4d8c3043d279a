//! `host new`: a plugin project that builds and loads as it is, with a command, an event
//! subscription and a query to start from.
//!
//! The project goes into its own folder of the plugins directory with a `plugin.toml`, so
//! `host dev` builds it, loads it, and rebuilds and swaps it on every save.

mod templates;

use clap::{Args, ValueEnum};
use std::path::{Component, Path, PathBuf};
use templates::{
    C_PLUGIN_C, C_PLUGIN_TOML, JAVASCRIPT_APP_JS, JAVASCRIPT_PLUGIN_TOML, PYTHON_APP_PY,
    PYTHON_PLUGIN_TOML, RUST_CARGO_TOML, RUST_LIB_RS, RUST_PLUGIN_TOML,
};

/// The Rust SDK of the tree this host was built from, when it is still there.
const BUILT_WITH_SDK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../sdk");
/// The package name of the Rust SDK, to recognise its folder.
const SDK_PACKAGE: &str = "name = \"handler-host-sdk\"";

#[derive(Debug, Args)]
pub struct NewArgs {
    /// Plugin name: lowercase letters, digits and `-`, starting with a letter. It also prefixes
    /// the template's kinds (`NAME.greet`, `NAME.greeted`, `NAME.get`).
    pub name: String,
    /// Language of the project.
    #[arg(long, value_enum, default_value_t = Lang::Rust)]
    pub lang: Lang,
    /// Folder to create the project in (as `DIR/NAME`).
    #[arg(long, default_value = "./plugins")]
    pub dir: PathBuf,
    /// The `sdk/` folder of the Handler Host repository (the Rust SDK, with the Python,
    /// JavaScript and C SDKs inside) [default: found above DIR, else the one this host was built
    /// from].
    #[arg(long)]
    pub sdk: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    Javascript,
    C,
}

/// Creates the project and says what to do next.
///
/// # Errors
/// An invalid name, an existing folder, an SDK that cannot be found, or a write that fails.
pub fn create(args: &NewArgs) -> anyhow::Result<()> {
    check_name(&args.name)?;
    let project = args.dir.join(&args.name);
    if project.exists() {
        anyhow::bail!(
            "{} already exists; choose another name or --dir",
            project.display()
        );
    }
    let files = project_files(args.lang, &args.name, &project, args.sdk.as_deref())?;
    let entry = match args.lang {
        Lang::Rust => "src/lib.rs",
        Lang::Python => "app.py",
        Lang::Javascript => "app.js",
        Lang::C => "plugin.c",
    };
    for (path, text) in &files {
        let path = project.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, text)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    }
    println!(
        "created plugin `{name}` in {dir}\n\n\
         next:\n  host dev --plugins {plugins}        # builds it, serves it, swaps it in on every save\n  \
         curl -s -XPOST localhost:7878/commands/{name}.greet -d '{{\"id\":\"1\",\"name\":\"Ada\"}}'\n  \
         curl -s -XPOST localhost:7878/queries/{name}.get -d '{{\"id\":\"1\"}}'\n\n\
         edit {dir}/{entry} while `host dev` runs: the new version serves the next message.",
        name = args.name,
        dir = project.display(),
        plugins = args.dir.display(),
    );
    Ok(())
}

fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    if !ok {
        anyhow::bail!(
            "`{name}` is not a plugin name: use 1 to 64 lowercase letters, digits and `-`, starting with a letter"
        );
    }
    Ok(())
}

/// The files of a plugin project in `lang`, by path in the project.
fn project_files(
    lang: Lang,
    name: &str,
    project: &Path,
    sdk: Option<&Path>,
) -> anyhow::Result<Vec<(PathBuf, String)>> {
    let sdk = match sdk {
        Some(sdk) if is_sdk(sdk) => sdk.to_owned(),
        Some(sdk) => anyhow::bail!("{} is not the Handler Host Rust SDK folder", sdk.display()),
        None => find_sdk(project).ok_or_else(|| {
            anyhow::anyhow!(
                "cannot find the Handler Host Rust SDK (the `sdk/` folder of its repository); pass --sdk PATH"
            )
        })?,
    };
    let sdk = sdk.canonicalize()?;
    let wit = relative_to(project, &sdk.with_file_name("wit"));
    let repository = repository_around(project, &sdk);
    // Inside the repository, a Rust project builds into the folder where the examples built
    // the SDK's dependencies already, with the repository's pinned versions.
    let target = match &repository {
        Some(root) if lang == Lang::Rust => relative_to(project, &root.join("target/plugins")),
        _ => PathBuf::from("target"),
    };
    // The C build tool is compiled once per repository, beside the Python toolchain.
    let c_toolchain = relative_to(project, &sdk.with_file_name("target").join("c-toolchain"));
    let sdk = relative_to(project, &sdk);
    let artifact = name.replace('-', "_");
    let fill = |template: &str| {
        template
            .replace("{{name}}", name)
            .replace("{{artifact}}", &artifact)
            .replace("{{sdk}}", &slashed(&sdk))
            .replace("{{wit}}", &slashed(&wit))
            .replace("{{target}}", &slashed(&target))
            .replace("{{c_toolchain}}", &slashed(&c_toolchain))
    };
    let files: &[(&str, &str)] = match lang {
        Lang::Rust => &[
            ("Cargo.toml", RUST_CARGO_TOML),
            ("plugin.toml", RUST_PLUGIN_TOML),
            ("src/lib.rs", RUST_LIB_RS),
            (".gitignore", "/target\n"),
        ],
        Lang::Python => &[
            ("plugin.toml", PYTHON_PLUGIN_TOML),
            ("app.py", PYTHON_APP_PY),
            (".gitignore", "/target\n__pycache__/\n"),
        ],
        Lang::Javascript => &[
            ("plugin.toml", JAVASCRIPT_PLUGIN_TOML),
            ("app.js", JAVASCRIPT_APP_JS),
            (".gitignore", "/target\n"),
        ],
        Lang::C => &[
            ("plugin.toml", C_PLUGIN_TOML),
            ("plugin.c", C_PLUGIN_C),
            (".gitignore", "/target\n"),
        ],
    };
    let mut files: Vec<(PathBuf, String)> = files
        .iter()
        .map(|(path, template)| (PathBuf::from(path), fill(template)))
        .collect();
    if let Some(root) = repository.filter(|_| lang == Lang::Rust) {
        let lock = root.join("Cargo.lock");
        let pinned = std::fs::read_to_string(&lock)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", lock.display()))?;
        files.push((PathBuf::from("Cargo.lock"), pinned));
    }
    Ok(files)
}

/// The repository `sdk` belongs to, when `project` is created inside it (and it has its lock
/// file); `None` for a project elsewhere, which stands alone.
fn repository_around(project: &Path, sdk: &Path) -> Option<PathBuf> {
    let root = sdk.parent()?;
    let project = resolved(project)?;
    (project.starts_with(root) && root.join("Cargo.lock").is_file()).then(|| root.to_owned())
}

/// Where `path` is, resolved through the file system as far as it exists: the project, and
/// the folder it is created in, may not exist yet.
fn resolved(path: &Path) -> Option<PathBuf> {
    let mut existing = std::path::absolute(path).ok()?;
    let mut missing = Vec::new();
    loop {
        if let Ok(real) = existing.canonicalize() {
            return Some(
                missing
                    .iter()
                    .rev()
                    .fold(real, |path, part| path.join(part)),
            );
        }
        missing.push(existing.file_name()?.to_owned());
        existing = existing.parent()?.to_owned();
    }
}

fn is_sdk(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("Cargo.toml")).is_ok_and(|text| text.contains(SDK_PACKAGE))
}

/// The SDK of the repository the project is created in, else the one this host was built from.
fn find_sdk(project: &Path) -> Option<PathBuf> {
    resolved(project)
        .and_then(|project| {
            project
                .ancestors()
                .skip(1)
                .map(|dir| dir.join("sdk"))
                .find(|sdk| is_sdk(sdk))
        })
        .or_else(|| Some(PathBuf::from(BUILT_WITH_SDK)).filter(|sdk| is_sdk(sdk)))
}

/// `target` as seen from the folder `project` will be (relative when they share a root).
fn relative_to(project: &Path, target: &Path) -> PathBuf {
    let Some(base) = resolved(project) else {
        return target.to_owned();
    };
    let base: Vec<Component> = base.components().collect();
    let goal: Vec<Component> = target.components().collect();
    let common = base.iter().zip(&goal).take_while(|(a, b)| a == b).count();
    if common <= 1 {
        return target.to_owned(); // only the root in common
    }
    let mut path = PathBuf::new();
    for _ in common..base.len() {
        path.push("..");
    }
    for part in &goal[common..] {
        path.push(part);
    }
    path
}

/// A path for a TOML string: forward slashes, so the file reads the same on every system.
fn slashed(path: &Path) -> String {
    path.to_string_lossy().replace('\\', "/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for good in ["demo", "a", "fraud-check2"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Demo",
            "1st",
            "-x",
            "x-",
            "a.b",
            "a_b",
            "é",
            &"a".repeat(65),
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_sdk_path_is_relative_inside_one_tree() {
        let root = tempfile::tempdir().unwrap();
        let sdk = root.path().join("sdk");
        std::fs::create_dir_all(&sdk).unwrap();
        std::fs::create_dir_all(root.path().join("plugins")).unwrap();
        let project = root.path().join("plugins/demo");
        let sdk = sdk.canonicalize().unwrap();
        assert_eq!(relative_to(&project, &sdk), PathBuf::from("../../sdk"));
    }

    /// The text of the project file `name`; panics when the project has none.
    fn file_of<'a>(files: &'a [(PathBuf, String)], name: &str) -> &'a str {
        files
            .iter()
            .find(|(path, _)| path == Path::new(name))
            .map(|(_, text)| text.as_str())
            .unwrap_or_else(|| panic!("the project has no {name}"))
    }

    #[test]
    fn inside_the_repository_a_rust_project_shares_its_lock_file_and_build_folder() {
        let repository = Path::new(BUILT_WITH_SDK).parent().unwrap();
        let inside = tempfile::tempdir_in(repository.join("target")).unwrap();
        let project = inside.path().join("demo");
        let files = project_files(Lang::Rust, "demo", &project, None).unwrap();
        let lock = std::fs::read_to_string(repository.join("Cargo.lock")).unwrap();
        assert_eq!(file_of(&files, "Cargo.lock"), lock);
        let plugin_toml = file_of(&files, "plugin.toml");
        assert!(
            plugin_toml.contains(r#""--target-dir", "../../plugins""#),
            "{plugin_toml}"
        );
        assert!(
            plugin_toml.contains(r#"output = "../../plugins/wasm32-wasip2/release/demo.wasm""#),
            "{plugin_toml}"
        );

        let outside = tempfile::tempdir().unwrap();
        let sdk = PathBuf::from(BUILT_WITH_SDK);
        let files =
            project_files(Lang::Rust, "demo", &outside.path().join("demo"), Some(&sdk)).unwrap();
        assert!(
            files
                .iter()
                .all(|(path, _)| path != Path::new("Cargo.lock"))
        );
        let plugin_toml = file_of(&files, "plugin.toml");
        assert!(
            plugin_toml.contains(r#"output = "target/wasm32-wasip2/release/demo.wasm""#),
            "{plugin_toml}"
        );
    }

    #[test]
    fn a_project_in_a_folder_not_created_yet_is_still_inside_the_repository() {
        let repository = Path::new(BUILT_WITH_SDK).parent().unwrap();
        let inside = tempfile::tempdir_in(repository.join("target")).unwrap();
        let project = inside.path().join("new-folder/more/demo");
        let files = project_files(Lang::Rust, "demo", &project, None).unwrap();
        let lock = std::fs::read_to_string(repository.join("Cargo.lock")).unwrap();
        assert_eq!(file_of(&files, "Cargo.lock"), lock);
        let plugin_toml = file_of(&files, "plugin.toml");
        assert!(
            plugin_toml.contains(r#""--target-dir", "../../../../plugins""#),
            "{plugin_toml}"
        );
        // Outside any repository, the SDK this host was built from.
        let outside = tempfile::tempdir().unwrap();
        let project = outside.path().join("new-folder/demo");
        assert!(project_files(Lang::Python, "demo", &project, None).is_ok());
    }

    #[test]
    fn a_c_project_builds_its_tool_in_the_repository_target_folder_by_a_plain_path() {
        let repository = Path::new(BUILT_WITH_SDK).parent().unwrap();
        let inside = tempfile::tempdir_in(repository.join("target")).unwrap();
        let project = inside.path().join("demo");
        let files = project_files(Lang::C, "demo", &project, None).unwrap();
        let plugin_toml = file_of(&files, "plugin.toml");
        assert!(
            plugin_toml.contains(r#""--target-dir", "../../c-toolchain""#),
            "{plugin_toml}"
        );
        assert!(!plugin_toml.contains("{{"), "{plugin_toml}");
    }

    #[test]
    fn an_existing_folder_is_not_overwritten() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("demo")).unwrap();
        let args = NewArgs {
            name: "demo".into(),
            lang: Lang::Rust,
            dir: root.path().to_owned(),
            sdk: Some(PathBuf::from(BUILT_WITH_SDK)),
        };
        let error = create(&args).unwrap_err().to_string();
        assert!(error.contains("already exists"), "{error}");
    }
}
