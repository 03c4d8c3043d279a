//! `host-bench` (also run as `host bench`): the project and its baselines, measured side by
//! side in one run.
//!
//! Baselines: **B0** raw SQLite single-row transactions (WAL, `synchronous` FULL and NORMAL, the
//! pragmas the host uses), **B0-pg** raw single-row transactions on the PostgreSQL server from 64
//! connections (as pgbench would), **B2** the storage limit — the row writes of `bench.touch`
//! units group-committed 64 to a transaction on one SQLite connection with prepared statements,
//! no WASM, channels or async runtime — and **B1** raw wasmtime (instantiate + call of an empty
//! component, same engine). **P1-pg** and **P4-pg** are P1 and P4-backlog on PostgreSQL, and
//! **P1-pg-3** and **P4-pg-3** the same with three hosts sharing the database (three rigs in
//! this process, each with its own pool, committer and partition leases). Project figures:
//! **P1** durable commands/s in-process and over HTTP, **P1-kept** the same with the plugin's instances kept between calls, **P2** the same pipeline with a native
//! handler (WASM/native ratio), **P3** fresh-store invocation cost,
//! **P4** events/s to a subscriber with inbox dedup (backlog and steady stream), **H1** the
//! backlog on one partition key (a hot key, strict order), **P4-sched** the backlog beside
//! deliveries scheduled an hour ahead, **P5** latency at half the measured peak, **S1** and
//! **S1-pg** the highest open-loop command rate whose deliveries keep up. Every figure is the
//! median of `--runs` runs, each on a fresh database; ratios compare figures from the same
//! run, which is what is comparable on a noisy machine. Writes `bench.md` and `bench.json` to
//! `--out`.

mod baselines;
mod cold_start;
mod delivery;
mod figures;
mod pipeline;
mod report;
mod sandbox;
mod saturation;
mod soak;

use anyhow::{Context, bail};
use clap::Parser;
use handler_host::app::Host;
use handler_host::config::HostConfig;
use handler_host::config::Limits;
use handler_host::plugin_dir::{BuildPolicy, PluginDir};
use handler_host::registry::Registry;
use handler_host::sandbox::Sandbox;
use handler_host::store::Store;
use pipeline::StoreKind;
use report::{
    RATIOS, Report, Run, Samples, Table, figure_ids, machine_description, process_memory_mib,
    render_markdown, reproduce_command, with_dependencies,
};
use std::path::PathBuf;
use std::sync::Arc;

/// The plugin every project figure runs.
const PLUGIN: &str = "bench-trivial";

/// Calls an instance serves in the kept-instance figures of L-*.
const KEPT_CALLS: usize = 1_000;

/// Units of work per transaction in B2: what the committer typically gathers under load.
const RAW_BATCH: usize = 64;

/// What `host-bench` measures and how long.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "host-bench",
    version,
    about = "Measures Handler Host against its baselines, side by side in one run"
)]
pub struct BenchArgs {
    /// Where `bench.md` and `bench.json` are written.
    #[arg(long, default_value = "bench-results")]
    pub out: PathBuf,
    /// Folder holding the benchmark plugin (built if stale).
    #[arg(long, default_value = "bench/plugins")]
    pub plugins: PathBuf,
    /// Folder of the example plugins (one per language) whose invoke cost is measured (built
    /// if stale; a language whose toolchain is missing is left out, with a warning).
    #[arg(long, default_value = "plugins")]
    pub examples: PathBuf,
    /// Plugin folders that P8's cold start loads beside the examples and the benchmark plugin
    /// (built if stale): with the defaults, ten plugins in four languages.
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "FOLDERS",
        default_value = "tests/plugins/probe-py,tests/plugins/probe-js,tests/plugins/probe-c"
    )]
    pub more_plugins: Vec<PathBuf>,
    /// Runs per figure; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Seconds each throughput run lasts.
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// Concurrent callers for the throughput figures.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// A tiny smoke run (keeps the command working in CI; its numbers mean nothing).
    #[arg(long)]
    pub quick: bool,
    /// The PostgreSQL server the `-pg` figures create their databases on.
    #[arg(
        long,
        env = "HOST_BENCH_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432"
    )]
    pub postgres_url: String,
    /// Leave the PostgreSQL figures out (otherwise an unreachable server is an error).
    #[arg(long)]
    pub no_postgres: bool,
    /// Instead of the figures, a soak: the demo's orders over HTTP at `--soak-rate` for
    /// `--soak-seconds`, sampling the pending deliveries and the RSS every second.
    #[arg(long)]
    pub soak: bool,
    /// Orders per second in the soak.
    #[arg(long, default_value_t = 150.0)]
    pub soak_rate: f64,
    /// How long the soak sends orders.
    #[arg(long, default_value_t = 600.0)]
    pub soak_seconds: f64,
    /// Calls each instance serves in the soak (`calls_per_instance` of every plugin); 1, the
    /// host's default, gives every call a fresh instance.
    #[arg(long, default_value_t = 1)]
    pub soak_calls_per_instance: usize,
    /// Measure only these figures (ids as in the table, comma-separated: `--only P4-pg,B0-pg`);
    /// a ratio is given when both of its figures were measured.
    #[arg(long, value_delimiter = ',', value_name = "IDS")]
    pub only: Vec<String>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HOST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx::postgres::notice=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match run(BenchArgs::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs every benchmark and writes the report.
///
/// # Errors
/// Fails when the benchmark plugin cannot be built or loaded, or a database cannot be opened.
async fn run(mut args: BenchArgs) -> anyhow::Result<()> {
    // The pipeline figures include the cost of the metrics, as a serving host pays it.
    handler_host::telemetry::install();
    if args.quick {
        args.runs = 1;
        args.seconds = 0.2;
        args.concurrency = args.concurrency.min(8);
    }
    if args.runs == 0 || args.seconds <= 0.0 || args.concurrency == 0 {
        bail!("--runs, --seconds and --concurrency must be positive");
    }
    if let Some(unknown) = args
        .only
        .iter()
        .find(|only| !figure_ids().any(|id| id.eq_ignore_ascii_case(only)))
    {
        bail!(
            "--only: no figure `{unknown}`; the figures are {}",
            figure_ids().collect::<Vec<_>>().join(", ")
        );
    }
    args.only = with_dependencies(args.only);
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: this `host-bench` is a debug build, whose figures say little about the product: \
             measure with the installed one (`cargo install --locked --path host`)"
        );
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    if args.soak {
        return soak::run(&args).await;
    }
    let scratch = tempfile::tempdir().context("creating a scratch directory")?;
    let sandbox = Sandbox::new(Limits::DEFAULT)?;
    let (_, registry) = PluginDir::load(&sandbox, &args.plugins, BuildPolicy::BuildStale).await?;
    if registry.plugin(PLUGIN).is_none() {
        bail!(
            "the benchmark plugin `{PLUGIN}` did not load from {}: {:?}",
            args.plugins.display(),
            registry.load_errors()
        );
    }
    let registry = Arc::new(registry);
    // The same plugin again, each instance serving up to KEPT_CALLS calls.
    let keeping = Sandbox::new(Limits {
        calls_per_instance: KEPT_CALLS,
        ..Limits::DEFAULT
    })?;
    let (_, kept) = PluginDir::load(&keeping, &args.plugins, BuildPolicy::LoadOnly).await?;
    let bench = Bench {
        args: args.clone(),
        scratch: scratch.path().to_owned(),
        postgres_databases: std::sync::Mutex::default(),
        sandbox,
        registry,
        kept: Arc::new(kept),
    };
    let mut table = Table::default();
    figures::measure_all(&bench, &mut table).await?;
    let ratios = RATIOS
        .iter()
        .filter_map(|(name, over, under)| {
            Some((
                (*name).to_owned(),
                table.median(over)? / table.median(under)?,
            ))
        })
        .collect();
    let created: Vec<String> = bench.postgres_databases.lock().unwrap().drain(..).collect();
    for url in created {
        if let Err(error) = Store::drop_postgres_database(&url).await {
            tracing::warn!("cannot drop the benchmark database {url}: {error:#}");
        }
    }
    let report = Report {
        command: reproduce_command(&args),
        machine: machine_description(),
        runs: args.runs,
        seconds_per_run: args.seconds,
        concurrency: args.concurrency,
        figures: table.figures,
        ratios,
        peak_rss_mib: process_memory_mib("VmHWM"),
    };
    report::write(&args.out, "bench", &render_markdown(&report), &report)
}

struct Bench {
    args: BenchArgs,
    scratch: PathBuf,
    /// Databases created on the PostgreSQL server, dropped when the run ends.
    postgres_databases: std::sync::Mutex<Vec<String>>,
    sandbox: Arc<Sandbox>,
    registry: Arc<Registry>,
    /// The same plugins on a sandbox that keeps instances ([`KEPT_CALLS`] calls each).
    kept: Arc<Registry>,
}

/// Closes the rigs' connections, so runs with several hosts do not pile up open sessions on
/// the PostgreSQL server.
async fn close(rigs: &[Host]) {
    for rig in rigs {
        rig.store().close().await;
    }
}

impl Bench {
    /// Whether figure `id` is measured in this run (`--only`, or every figure).
    fn wants(&self, id: &str) -> bool {
        self.args.only.is_empty()
            || self
                .args
                .only
                .iter()
                .any(|only| only.eq_ignore_ascii_case(id))
    }

    /// Measures figure `id` `--runs` times with `run` and adds it to `table`, unless `--only`
    /// leaves it out.
    async fn measure<F, Fut>(
        &self,
        table: &mut Table,
        id: &'static str,
        what: &'static str,
        unit: &'static str,
        conditions: &str,
        run: F,
    ) -> anyhow::Result<()>
    where
        F: FnMut(usize) -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<Run>>,
    {
        debug_assert!(
            figure_ids().any(|known| known == id),
            "figure {id} is not in figure_ids(), so --only cannot name it"
        );
        if self.wants(id) {
            let samples = self.repeat(run).await?;
            table
                .figures
                .push(samples.figure(id, what, unit, conditions));
        }
        Ok(())
    }

    async fn repeat<F, Fut>(&self, mut run: F) -> anyhow::Result<Samples>
    where
        F: FnMut(usize) -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<Run>>,
    {
        let mut samples = Samples {
            values: Vec::new(),
            detail: Vec::new(),
        };
        for i in 0..self.args.runs {
            let result = run(i).await?;
            samples.values.push(result.value);
            samples.detail.push(result.detail);
        }
        Ok(samples)
    }

    fn command_conditions(&self) -> String {
        format!(
            "`bench.touch`: 1 read, 1 write, 1 event; {} concurrent callers, distinct keys, ~40-byte payload, WAL synchronous=FULL, group commit",
            self.args.concurrency
        )
    }

    fn database_url(&self, kind: StoreKind, name: &str, run: usize) -> String {
        match kind {
            StoreKind::Sqlite => format!(
                "sqlite://{}",
                self.scratch.join(format!("{name}-{run}.db")).display()
            ),
            StoreKind::Postgres => format!(
                "{}/hh_bench_{name}_{run}_{}",
                self.args.postgres_url,
                std::process::id()
            ),
        }
    }

    async fn rig(&self, kind: StoreKind, name: &str, run: usize) -> anyhow::Result<Host> {
        self.rig_with(&self.registry, kind, name, run).await
    }

    /// A rig whose executor routes to `registry`.
    async fn rig_with(
        &self,
        registry: &Registry,
        kind: StoreKind,
        name: &str,
        run: usize,
    ) -> anyhow::Result<Host> {
        let url = self.database_url(kind, name, run);
        let store = Store::open(&url).await.with_context(|| match kind {
            StoreKind::Sqlite => String::new(),
            StoreKind::Postgres => {
                "the PostgreSQL figures need a server: pass --postgres-url, or --no-postgres to leave them out".to_owned()
            }
        })?;
        if let StoreKind::Postgres = kind {
            let mut created = self.postgres_databases.lock().unwrap();
            if !created.contains(&url) {
                created.push(url);
            }
        }
        Ok(Host::new(
            store,
            Registry::clone(registry),
            Arc::new(HostConfig::default()),
        ))
    }
}
