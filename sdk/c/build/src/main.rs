//! Builds a Handler Host plugin written in C (or C++) into a WebAssembly component.
//!
//! 1. generates the C bindings of the `plugin` world from the repository's `wit/` (wit-bindgen);
//! 2. compiles the plugin's sources with the C SDK (`sdk/c/handler_host.c`) into a WASI
//!    preview 1 reactor module with clang and wasi-libc;
//! 3. wraps that module into a component with the preview 1 adapter of the wasmtime release
//!    the host embeds (wit-component).
//!
//! The only tools taken from the machine are clang, lld, wasi-libc and clang's wasm32 runtime
//! (Debian: `clang-14 lld-14 wasi-libc libclang-rt-14-dev-wasm32`); everything else is pinned by
//! the repository's lock file. The same sources give the same component bytes.

use anyhow::{Context, bail};
use clap::Parser;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The C SDK (`handler_host.h`, `handler_host.c`), one folder up from this crate.
const SDK_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
/// The contract, at the root of the repository.
const WIT_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../wit");
/// The world a plugin implements.
const WORLD: &str = "plugin";
/// The Debian packages that provide the compiler, linker, libc and runtime.
const DEBIAN_PACKAGES: &str = "clang-14 lld-14 wasi-libc libclang-rt-14-dev-wasm32";

#[derive(Debug, Parser)]
#[command(about = "Build a Handler Host plugin written in C or C++ into a WebAssembly component")]
struct Args {
    /// The plugin's C (`.c`) and C++ (`.cc`, `.cpp`) sources.
    #[arg(required_unless_present = "bindings_only")]
    sources: Vec<PathBuf>,
    /// Where to write the component.
    #[arg(long, required_unless_present = "bindings_only")]
    output: Option<PathBuf>,
    /// Extra flags for the compiler (repeatable), e.g. `--cflag=-DNDEBUG`.
    #[arg(long = "cflag", allow_hyphen_values = true)]
    cflags: Vec<String>,
    /// The C compiler [default: `$CC`, else `clang-14`, else `clang`].
    #[arg(long)]
    cc: Option<String>,
    /// Write the generated bindings (`plugin.h`, `plugin.c`) to this folder and stop: for an
    /// editor's include path, or to read what the SDK wraps.
    #[arg(long, value_name = "DIR", conflicts_with = "output")]
    bindings_only: Option<PathBuf>,
}

fn main() {
    let args = Args::parse();
    if let Err(error) = build(&args) {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

fn build(args: &Args) -> anyhow::Result<()> {
    if let Some(folder) = &args.bindings_only {
        return generate_bindings(folder);
    }
    let output = args.output.as_deref().expect("clap requires --output");
    let work = tempfile::tempdir().context("creating a work folder")?;
    let bindings = work.path().join("bindings");
    generate_bindings(&bindings)?;
    let module = work.path().join("plugin.core.wasm");
    compile(args, &bindings, &module)?;
    let component = componentize(&module)?;
    if let Some(parent) = output.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    // Through a rename, so a host watching the folder never loads half a component.
    let partial = output.with_extension("wasm.partial");
    std::fs::write(&partial, component)
        .with_context(|| format!("writing {}", partial.display()))?;
    std::fs::rename(&partial, output)
        .with_context(|| format!("renaming {} to {}", partial.display(), output.display()))?;
    Ok(())
}

/// Writes `plugin.h`, `plugin.c` and `plugin_component_type.o` for the `plugin` world.
fn generate_bindings(into: &Path) -> anyhow::Result<()> {
    let mut resolve = wit_bindgen_core::wit_parser::Resolve::default();
    let (package, _) = resolve
        .push_dir(WIT_DIR)
        .with_context(|| format!("reading the contract in {WIT_DIR}"))?;
    let world = resolve.select_world(&[package], Some(WORLD))?;
    let mut files = wit_bindgen_core::Files::default();
    wit_bindgen_c::Opts::default()
        .build()
        .generate(&mut resolve, world, &mut files)?;
    std::fs::create_dir_all(into)?;
    for (name, contents) in files.iter() {
        std::fs::write(into.join(name), contents)?;
    }
    Ok(())
}

/// Compiles and links the sources, the SDK and the bindings into a reactor module.
fn compile(args: &Args, bindings: &Path, module: &Path) -> anyhow::Result<()> {
    let cc = compiler(args.cc.as_deref())?;
    let sdk = Path::new(SDK_DIR);
    let cplusplus = args.sources.iter().any(|s| {
        matches!(
            s.extension().and_then(|e| e.to_str()),
            Some("cc" | "cpp" | "cxx")
        )
    });
    let mut command = Command::new(&cc);
    command
        // clang 14 names WASI preview 1 `wasm32-wasi`; later releases accept it too.
        .args(["--target=wasm32-wasi", "-mexec-model=reactor", "-O2"])
        .args(["-Wall", "-Wextra", "-Wno-unused-parameter"])
        .arg("-I")
        .arg(sdk)
        .arg("-I")
        .arg(bindings)
        // Exported entry points stay; everything unused is dropped; no debug paths are kept,
        // so the component does not depend on where it was built.
        .args(["-Wl,--gc-sections", "-Wl,--strip-debug"])
        .args(&args.cflags)
        .args(&args.sources)
        .arg(sdk.join("handler_host.c"))
        .arg(bindings.join("plugin.c"))
        .arg(bindings.join("plugin_component_type.o"))
        .arg("-o")
        .arg(module);
    if cplusplus {
        // WASI's libc++ has no unwinder: C++ builds without exceptions (a `throw` is a
        // compile error rather than a link error about `__cxa_throw`).
        command.args(["-fno-exceptions", "-lc++", "-lc++abi"]);
    }
    let status = command.status().with_context(|| format!("running {cc}"))?;
    if !status.success() {
        bail!("{cc} failed ({status})");
    }
    Ok(())
}

/// The compiler to use, or an error saying what to install.
fn compiler(requested: Option<&str>) -> anyhow::Result<String> {
    let candidates: Vec<String> = match requested {
        Some(cc) => vec![cc.to_owned()],
        None => std::env::var("CC")
            .ok()
            .into_iter()
            .chain(["clang-14".to_owned(), "clang".to_owned()])
            .collect(),
    };
    for cc in &candidates {
        let works = Command::new(cc)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if works {
            return Ok(cc.clone());
        }
    }
    bail!(
        "no C compiler for WebAssembly found (tried {}); on Debian or Ubuntu install it with \
         `apt-get install {DEBIAN_PACKAGES}`",
        candidates.join(", ")
    )
}

/// The component of a reactor module, with WASI preview 1 adapted to preview 2.
fn componentize(module: &Path) -> anyhow::Result<Vec<u8>> {
    use wasi_preview1_component_adapter_provider::{
        WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
    };
    let bytes = std::fs::read(module).with_context(|| format!("reading {}", module.display()))?;
    wit_component::ComponentEncoder::default()
        .module(&bytes)
        .context("the compiled module does not carry the plugin world (were the bindings linked?)")?
        .adapter(
            WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME,
            WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
        )?
        .validate(true)
        .encode()
        .context("making a component of the compiled module")
}
