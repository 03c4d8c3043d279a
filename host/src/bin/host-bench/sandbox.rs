//! The sandbox's figures: **P3** one call on a fresh instance, **L-*** a small command of each
//! language's example, **R1** hot reload (Winch, as in `host dev`; **R1-run** Cranelift;
//! **R1-python**, **R1-javascript** a save on the language's development runtime), **P8** cold
//! start.

use crate::pipeline::{StoreKind, bench_message};
use crate::report::{Run, percentiles_us};
use crate::{Bench, PLUGIN, cold_start};
use anyhow::bail;
use handler_host::app::Host;
use handler_host::config::Limits;
use handler_host::plugin::Plugin;
use handler_host::plugin_dir::{self, BuildPolicy, PluginDir};
use handler_host::registry::Registry;
use handler_host::sandbox::{Compiler, Sandbox};
use handler_host::stats::percentile;
use handler_host::unit_of_work::{Access, UnitOfWork};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The plugins folder P8 starts `host run` on, and the plugins that loaded from it.
pub(crate) struct ColdStartPlugins {
    pub(crate) folder: PathBuf,
    pub(crate) names: Vec<String>,
}

/// An example plugin per language, and a small command of each: one JSON payload parsed, one
/// state key written (buffered in the unit of work, not committed), one JSON reply.
pub(crate) struct Language {
    pub(crate) id: &'static str,
    pub(crate) what: &'static str,
    pub(crate) language: &'static str,
    pub(crate) plugin: &'static str,
    pub(crate) command: &'static str,
    pub(crate) payload: &'static str,
}

pub(crate) const LANGUAGES: &[Language] = &[
    Language {
        id: "L-rust",
        what: "invoke of a small command, Rust example (p50)",
        language: "Rust",
        plugin: "inventory",
        command: "stock.add",
        payload: r#"{"sku":"bench","qty":1}"#,
    },
    Language {
        id: "L-python",
        what: "invoke of a small command, Python example (p50)",
        language: "Python",
        plugin: "fraud-check",
        command: "fraud.rules",
        payload: r#"{"max_qty":5}"#,
    },
    Language {
        id: "L-javascript",
        what: "invoke of a small command, JavaScript example (p50)",
        language: "JavaScript",
        plugin: "notifier",
        command: "notify.channel",
        payload: r#"{"channel":"email"}"#,
    },
    Language {
        id: "L-c",
        what: "invoke of a small command, C example (p50)",
        language: "C",
        plugin: "tally",
        command: "tally.reset",
        payload: r#"{"sku":"bench"}"#,
    },
];

impl Bench {
    /// P3: a fresh store, instantiation and one call of the trivial plugin's no-op command.
    pub(crate) async fn invoke(&self, iterations: usize) -> anyhow::Result<Run> {
        let rig = self.rig(StoreKind::Sqlite, "invoke", 0).await?;
        let plugin = self.registry.plugin(PLUGIN).expect("checked at start");
        let envelope = bench_message("bench.noop", b"{}".to_vec()).envelope(1);
        let mut timings = Vec::with_capacity(iterations);
        for _ in 0..iterations {
            let unit = UnitOfWork::new(PLUGIN, Access::ReadWrite, rig.store().clone());
            let start = Instant::now();
            let call = plugin.handle_command(&envelope, unit).await;
            timings.push(start.elapsed());
            call.outcome.map_err(|f| anyhow::anyhow!("{f}"))?;
        }
        Ok(percentiles_us(timings))
    }

    /// L-*: a small command of each language's example on a fresh instance, the linear
    /// memory that instance holds, and the same command on kept instances
    /// ([`Limits::calls_per_instance`](handler_host::config::Limits::calls_per_instance)).
    pub(crate) async fn language_invoke(
        &self,
        [fresh, kept]: [&Registry; 2],
        language: &Language,
        iterations: usize,
    ) -> anyhow::Result<Run> {
        let rig = self.rig(StoreKind::Sqlite, language.id, 0).await?;
        let envelope =
            bench_message(language.command, language.payload.as_bytes().to_vec()).envelope(1);
        let mut timings = [Vec::new(), Vec::new()];
        let mut memory_bytes = 0;
        for (registry, timings) in [fresh, kept].into_iter().zip(&mut timings) {
            let plugin = registry
                .plugin(language.plugin)
                .expect("checked by the caller");
            for _ in 0..iterations.max(1) {
                let unit = UnitOfWork::new(plugin.name(), Access::ReadWrite, rig.store().clone());
                let start = Instant::now();
                let call = plugin.handle_command(&envelope, unit).await;
                timings.push(start.elapsed());
                call.outcome.map_err(|f| anyhow::anyhow!("{f}"))?;
                memory_bytes = memory_bytes.max(call.memory_bytes);
            }
        }
        let [fresh, kept] = timings;
        let kept = percentiles_us(kept);
        let mut run = percentiles_us(fresh);
        run.detail.push(("kept instance p50 µs".into(), kept.value));
        run.detail.push((
            "linear memory MiB".into(),
            memory_bytes as f64 / f64::from(1 << 20),
        ));
        Ok(run)
    }

    /// The plugins P8 starts with: every plugin of `--examples` and `--plugins`, and each
    /// folder of `--more-plugins`, linked into one plugins folder and built if stale.
    ///
    /// # Errors
    /// Fails when a folder cannot be read or linked.
    pub(crate) async fn cold_start_plugins(&self) -> anyhow::Result<ColdStartPlugins> {
        let folder = self.scratch.join("cold-start-plugins");
        let mut plugins = plugin_dir::entries(&self.args.examples)?;
        plugins.extend(plugin_dir::entries(&self.args.plugins)?);
        plugins.extend(self.args.more_plugins.iter().cloned());
        cold_start::link_plugins(&folder, &plugins)?;
        let (_, registry) =
            PluginDir::load(&self.sandbox, &folder, BuildPolicy::BuildStale).await?;
        for error in registry.load_errors() {
            tracing::warn!("P8 starts without a plugin that did not load: {error}");
        }
        Ok(ColdStartPlugins {
            folder,
            names: registry.names(),
        })
    }

    /// P8: `host run` on `plugins` started again and again on a warm compiled-component
    /// cache, timed from process start to its listening line.
    pub(crate) async fn cold_start(
        &self,
        plugins: &Path,
        run: usize,
        starts: usize,
    ) -> anyhow::Result<Run> {
        let scratch = self.scratch.join(format!("cold-start-{run}"));
        std::fs::create_dir_all(&scratch)?;
        let plugins = plugins.to_owned();
        let mut timings = tokio::task::spawn_blocking(move || {
            cold_start::time_starts(&plugins, &scratch, starts)
        })
        .await??;
        timings.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        Ok(Run {
            value: ms(percentile(&timings, 50.0)),
            detail: vec![("p99 ms".into(), ms(percentile(&timings, 99.0)))],
        })
    }

    /// R1: a new build of the trivial plugin renamed into a watched folder, until it serves,
    /// with plugins compiled by `compiler`.
    pub(crate) async fn hot_reload(
        &self,
        run: usize,
        swaps: usize,
        compiler: Compiler,
    ) -> anyhow::Result<Run> {
        let sandbox = Sandbox::with_plugin_limits(Limits::DEFAULT, HashMap::new(), None, compiler)?;
        let rig = self.rig(StoreKind::Sqlite, "reload", run).await?;
        let folder = self.scratch.join(format!("reload-{run}"));
        std::fs::create_dir_all(&folder)?;
        let original = std::fs::read(
            self.registry
                .plugin(PLUGIN)
                .expect("checked at start")
                .source(),
        )?;
        let file = folder.join(format!("{PLUGIN}.wasm"));
        std::fs::write(&file, &original)?;
        let (plugins, registry) = PluginDir::load(&sandbox, &folder, BuildPolicy::LoadOnly).await?;
        let watcher = follow(&rig, plugins, registry)?;
        let mut timings = Vec::with_capacity(swaps);
        for swap in 0..swaps {
            // A new build: the same code with a custom section that makes its digest new.
            let build = with_custom_section(
                &original,
                "bench-build",
                &(run * swaps + swap).to_le_bytes(),
            );
            let expected = handler_host::cache::content_digest(&build);
            let staging = folder.join("next.partial");
            std::fs::write(&staging, &build)?;
            let start = Instant::now();
            std::fs::rename(&staging, &file)?;
            let served = until_serving(&rig, PLUGIN, |p| p.digest() == expected).await;
            if served.is_none() {
                watcher.abort();
                bail!("swap {swap} did not take effect within {RELOAD_DEADLINE:?}");
            }
            timings.push(start.elapsed());
        }
        watcher.abort();
        Ok(reload_run(timings))
    }
}

/// A save on a development runtime that an `R1-<language>` figure times: an example's entry
/// file, edited so that the version changes (a JavaScript comment is bundled away, so its
/// edit is code).
pub(crate) struct DevSave {
    pub(crate) id: &'static str,
    pub(crate) what: &'static str,
    pub(crate) language: &'static str,
    example: &'static str,
    source: &'static str,
    /// What the `n`th save appends to the source.
    edit: fn(usize) -> String,
}

pub(crate) const DEV_SAVES: &[DevSave] = &[
    DevSave {
        id: "R1-python",
        what: "hot reload (host dev), Python: app.py saved → new version serving (p50)",
        language: "Python",
        example: "fraud-check",
        source: "app.py",
        edit: python_edit,
    },
    DevSave {
        id: "R1-javascript",
        what: "hot reload (host dev), JavaScript: app.js saved → new version serving (p50)",
        language: "JavaScript",
        example: "notifier",
        source: "app.js",
        edit: javascript_edit,
    },
];

fn python_edit(n: usize) -> String {
    format!("\n# save {n}\n")
}

fn javascript_edit(n: usize) -> String {
    format!("\nexport const saved = {n};\n")
}

impl Bench {
    /// `R1-<language>`: the example's entry saved in a watched copy of its folder, run on its
    /// development runtime (`host dev`), until the new version serves.
    pub(crate) async fn dev_save(
        &self,
        save: &DevSave,
        run: usize,
        saves: usize,
    ) -> anyhow::Result<Run> {
        let sandbox =
            Sandbox::with_plugin_limits(Limits::DEFAULT, HashMap::new(), None, Compiler::Winch)?;
        let rig = self.rig(StoreKind::Sqlite, save.id, run).await?;
        let example = self.args.examples.join(save.example).canonicalize()?;
        let plugins = self.scratch.join(format!("{}-{run}", save.id));
        let folder = plugins.join(save.example);
        std::fs::create_dir_all(&folder)?;
        // The copy's manifest names the example's SDK, contract and runtime where they are.
        let manifest = std::fs::read_to_string(example.join("plugin.toml"))?;
        let root = example.join("../..").canonicalize()?;
        let manifest = manifest.replace("\"../../", &format!("\"{}/", root.display()));
        std::fs::write(folder.join("plugin.toml"), manifest)?;
        let source = std::fs::read_to_string(example.join(save.source))?;
        std::fs::write(folder.join(save.source), &source)?;
        let (plugins, registry) = PluginDir::load(&sandbox, &plugins, BuildPolicy::Develop).await?;
        let Some(mut serving) = registry
            .plugin(save.example)
            .map(|p| p.identity().to_owned())
        else {
            bail!(
                "the {} example did not load on its development runtime: {:?}",
                save.language,
                registry.load_errors()
            );
        };
        let watcher = follow(&rig, plugins, registry)?;
        let mut timings = Vec::with_capacity(saves);
        for n in 0..saves {
            let edited = source.clone() + &(save.edit)(run * saves + n);
            let start = Instant::now();
            std::fs::write(folder.join(save.source), edited)?;
            let served = until_serving(&rig, save.example, |p| p.identity() != serving).await;
            let Some(served) = served else {
                watcher.abort();
                bail!("save {n} did not serve within {RELOAD_DEADLINE:?}");
            };
            timings.push(start.elapsed());
            serving = served;
        }
        watcher.abort();
        Ok(reload_run(timings))
    }
}

/// Serves `registry` on the rig and follows `plugins` for changes, as a watching host does.
fn follow(
    rig: &Host,
    plugins: PluginDir,
    registry: Registry,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    rig.executor().replace_registry(registry);
    plugin_dir::watch(
        plugins,
        rig.executor().clone(),
        rig.store().clone(),
        rig.wake().clone(),
        false,
    )
}

/// Longest a reload may take before the figure is abandoned as broken.
const RELOAD_DEADLINE: Duration = Duration::from_secs(30);

/// Waits until the rig serves a version of `plugin` that `is_new` accepts: its identity, or
/// `None` after [`RELOAD_DEADLINE`].
async fn until_serving(
    rig: &Host,
    plugin: &str,
    is_new: impl Fn(&Plugin) -> bool,
) -> Option<String> {
    let start = Instant::now();
    while start.elapsed() < RELOAD_DEADLINE {
        let registry = rig.executor().registry();
        if let Some(serving) = registry.plugin(plugin)
            && is_new(serving)
        {
            return Some(serving.identity().to_owned());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    None
}

/// A reload figure's run: the median of `timings`, and their p99.
fn reload_run(mut timings: Vec<Duration>) -> Run {
    timings.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    Run {
        value: ms(percentile(&timings, 50.0)),
        detail: vec![("p99 ms".into(), ms(percentile(&timings, 99.0)))],
    }
}

/// `component` with a custom section appended: the same code under another digest.
pub(crate) fn with_custom_section(component: &[u8], name: &str, payload: &[u8]) -> Vec<u8> {
    use wasm_encoder::ComponentSection;
    let mut out = component.to_vec();
    wasm_encoder::CustomSection {
        name: name.into(),
        data: payload.into(),
    }
    .append_to_component(&mut out);
    out
}
