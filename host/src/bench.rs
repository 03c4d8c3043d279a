//! `host bench`: the project and its baselines, measured side by side in one run.
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
//! **P4** events/s to a subscriber with inbox dedup (backlog and steady stream), **P5** latency
//! at half the measured peak. Every figure is the median of `--runs` runs, each on a fresh
//! database; ratios compare figures from the same run, which is what is comparable on a noisy
//! machine. Writes `bench.md` and `bench.json` to `--out`.

mod cold_start;
mod soak;

use crate::bindings::Envelope;
use crate::committer::Committer;
use crate::config::{DEFAULT_LEASE_TIMEOUT, DispatchConfig, Limits};
use crate::dispatcher;
use crate::executor::{Executor, Request};
use crate::http::{self, AppState};
use crate::partitions::PartitionLeases;
use crate::plugin_dir::{self, BuildPolicy, PluginDir};
use crate::policy::HostConfig;
use crate::registry::Registry;
use crate::sandbox::Sandbox;
use crate::store::{StateChanges, Store, Write, now_ms};
use crate::telemetry::percentile;
use crate::unit_of_work::{Access, UnitOfWork};
use anyhow::{Context, bail};
use serde::Serialize;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// The plugin every project figure runs.
const PLUGIN: &str = "bench-trivial";

/// What `host bench` measures and how long.
#[derive(Debug, Clone, clap::Args)]
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

/// One reported figure.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub id: &'static str,
    pub what: &'static str,
    pub value: f64,
    pub unit: &'static str,
    /// Every run's value, for judging the spread.
    pub runs: Vec<f64>,
    /// Other statistics (percentiles) as (name, value).
    pub detail: Vec<(String, f64)>,
    pub conditions: String,
}

#[derive(Debug, Serialize)]
struct Report {
    command: String,
    machine: String,
    runs: usize,
    seconds_per_run: f64,
    concurrency: usize,
    figures: Vec<Figure>,
    ratios: Vec<(String, f64)>,
    peak_rss_mib: f64,
}

/// Runs every benchmark and writes the report.
///
/// # Errors
/// Fails when the benchmark plugin cannot be built or loaded, or a database cannot be opened.
pub async fn run(mut args: BenchArgs) -> anyhow::Result<()> {
    // The pipeline figures include the cost of the metrics, as a serving host pays it.
    crate::telemetry::install();
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
            "warning: this `host` is a debug build, whose figures say little about the product: \
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
    let duration = Duration::from_secs_f64(args.seconds);

    let mut table = Table::default();
    bench
        .measure(
            &mut table,
            "B0-FULL",
            "raw SQLite single-row transactions",
            "tx/s",
            "WAL, synchronous=FULL, 1 connection, 16-byte rows",
            |i| bench.raw_sqlite(i, SqliteSynchronous::Full, duration),
        )
        .await?;
    bench
        .measure(
            &mut table,
            "B0-NORMAL",
            "raw SQLite single-row transactions",
            "tx/s",
            "WAL, synchronous=NORMAL, 1 connection, 16-byte rows",
            |i| bench.raw_sqlite(i, SqliteSynchronous::Normal, duration),
        )
        .await?;
    let iterations = if args.quick { 200 } else { 20_000 };
    bench
        .measure(
            &mut table,
            "B1",
            "raw wasmtime instantiate + call, empty component (p50)",
            "µs",
            &format!("pooling allocator, epoch deadline, {iterations} calls"),
            |_| bench.raw_wasmtime(iterations),
        )
        .await?;
    bench
        .measure(
            &mut table,
            "P1",
            "durable commands/s, WASM handler, in-process",
            "cmd/s",
            &bench.command_conditions(),
            |i| bench.commands(i, duration, Route::InProcess),
        )
        .await?;
    bench
        .measure(
            &mut table,
            "P1-kept",
            "durable commands/s, WASM handler, in-process, instances kept",
            "cmd/s",
            &format!(
                "{}; `calls_per_instance = {KEPT_CALLS}`",
                bench.command_conditions()
            ),
            |i| bench.commands(i, duration, Route::Kept),
        )
        .await?;
    bench
        .measure(
            &mut table,
            "P1-HTTP",
            "durable commands/s, WASM handler, over HTTP",
            "cmd/s",
            &bench.command_conditions(),
            |i| bench.commands(i, duration, Route::Http),
        )
        .await?;
    bench
        .measure(
            &mut table,
            "P2-native",
            "durable commands/s, native handler, in-process",
            "cmd/s",
            &bench.command_conditions(),
            |i| bench.commands(i, duration, Route::Native),
        )
        .await?;
    bench
        .measure(
            &mut table,
            "P3",
            "fresh-store invoke of the trivial handler (p50)",
            "µs",
            &format!("`bench.noop`, no state, {iterations} calls"),
            |_| bench.invoke(iterations),
        )
        .await?;
    let backlog = if args.quick { 200 } else { 20_000 };
    bench
        .measure(
            &mut table,
            "P4-backlog",
            "events delivered/s from a pre-filled backlog",
            "ev/s",
            &format!(
                "{backlog} events, 1 subscriber, inbox mark per event, dispatcher concurrency {}",
                DispatchConfig::DEFAULT.concurrency
            ),
            |i| bench.event_backlog(i, backlog, StoreKind::Sqlite, 1),
        )
        .await?;
    bench
        .measure(
            &mut table,
            "P4-stream",
            "events delivered/s while commands stream in",
            "ev/s",
            &bench.command_conditions(),
            |i| bench.event_stream(i, duration),
        )
        .await?;
    bench
        .measure(
            &mut table,
            "B2",
        "storage limit: the row writes of `bench.touch`, group-committed",
        "units/s",
        &format!(
            "SQLite WAL synchronous=FULL, {RAW_BATCH} units a transaction, prepared statements, 1 connection, no WASM/async"
        ),
            |i| bench.raw_group_commit(i, duration),
        )
        .await?;
    if args.no_postgres {
        tracing::warn!("--no-postgres: the PostgreSQL figures are left out");
    } else {
        bench
            .measure(
                &mut table,
                "B0-pg",
            "raw PostgreSQL single-row transactions",
            "tx/s",
            &format!(
                "{} connections (as pgbench would), autocommit INSERT of 16-byte rows, server defaults",
                args.concurrency
            ),
                |i| bench.raw_postgres(i, duration),
            )
            .await?;
        bench
            .measure(
                &mut table,
                "P1-pg",
                "durable commands/s, WASM handler, in-process, PostgreSQL",
                "cmd/s",
                &bench.command_conditions(),
                |i| bench.commands(i, duration, Route::Postgres),
            )
            .await?;
        bench
            .measure(
                &mut table,
                "P4-pg",
                "events delivered/s from a pre-filled backlog, PostgreSQL",
                "ev/s",
                &format!("{backlog} events, 1 subscriber, inbox mark per event"),
                |i| bench.event_backlog(i, backlog, StoreKind::Postgres, 1),
            )
            .await?;
        bench
            .measure(
                &mut table,
                "P1-pg-3",
            "durable commands/s, WASM handler, PostgreSQL, 3 hosts",
            "cmd/s",
            "as P1-pg, the callers spread over 3 hosts (executor, committer, pool each) in one process",
                |i| bench.commands_on_hosts(i, duration, Route::Postgres, 3),
            )
            .await?;
        bench
            .measure(
                &mut table,
                "P4-pg-3",
                "events delivered/s from a pre-filled backlog, PostgreSQL, 3 hosts",
                "ev/s",
                "as P4-pg, 3 hosts in one process sharing the partitions by lease",
                |i| bench.event_backlog(i, backlog, StoreKind::Postgres, 3),
            )
            .await?;
    }
    // P1 is measured whenever P5 is (see `with_dependencies`).
    if let Some(p1) = table.median("P1") {
        let rate = p1 / 2.0;
        bench
            .measure(
                &mut table,
                "P5",
                "command latency at 50% of P1 (p50)",
                "ms",
                &format!("open loop at {rate:.0} cmd/s, dispatcher running"),
                |i| bench.latency(i, duration, rate),
            )
            .await?;
    }
    let swaps = if args.quick { 3 } else { 20 };
    bench
        .measure(
            &mut table,
            "R1",
            "hot reload: component file renamed into place → new version serving (p50)",
            "ms",
            &format!(
                "{swaps} swaps of `{PLUGIN}` (a new build each: compiled, no cache), watcher settle {} ms",
                plugin_dir::SETTLE.as_millis()
            ),
            |i| bench.hot_reload(i, swaps),
        )
        .await?;
    let languages: Vec<&Language> = LANGUAGES.iter().filter(|l| bench.wants(l.id)).collect();
    if bench.wants("P8") || !languages.is_empty() {
        let (_, examples) =
            PluginDir::load(&bench.sandbox, &args.examples, BuildPolicy::BuildStale).await?;
        let starts = if args.quick { 2 } else { 10 };
        let loaded = examples.names().len();
        bench
            .measure(
                &mut table,
                "P8",
                "cold start: `host run` process start → serving, compiled components cached (p50)",
                "ms",
                &format!(
                    "{loaded} example plugins, a fresh SQLite database each start, {starts} starts"
                ),
                |i| bench.cold_start(i, starts),
            )
            .await?;
        // The same examples again, each instance serving up to KEPT_CALLS calls.
        let keeping = Sandbox::new(Limits {
            calls_per_instance: KEPT_CALLS,
            ..Limits::DEFAULT
        })?;
        let (_, kept) = PluginDir::load(&keeping, &args.examples, BuildPolicy::LoadOnly).await?;
        for language in languages {
            if examples.plugin(language.plugin).is_none() {
                tracing::warn!(
                    "the {} example `{}` did not load from {}: its figure is left out",
                    language.language,
                    language.plugin,
                    args.examples.display()
                );
                continue;
            }
            bench
                .measure(
                    &mut table,
                    language.id,
                    language.what,
                    "µs",
                    &format!(
                        "`{}` `{}` {}, fresh instance per call ({KEPT_CALLS} calls an instance for the kept figure), {} calls",
                        language.plugin,
                        language.command,
                        language.payload,
                        iterations / 10
                    ),
                    |_| bench.language_invoke([&examples, &kept], language, iterations / 10),
                )
                .await?;
        }
    }
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
    let markdown = render_markdown(&report);
    std::fs::write(args.out.join("bench.md"), &markdown)?;
    std::fs::write(
        args.out.join("bench.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    println!("{markdown}");
    Ok(())
}

#[derive(Clone, Copy)]
enum Route {
    InProcess,
    /// In-process, the plugin's instances kept between calls.
    Kept,
    Http,
    Native,
    /// In-process, on PostgreSQL.
    Postgres,
}

/// Which backend a rig's database is on.
#[derive(Clone, Copy, Debug)]
enum StoreKind {
    Sqlite,
    Postgres,
}

/// The ratios reported, as (name, figure over, figure under).
const RATIOS: &[(&str, &str, &str)] = &[
    ("P1 / B0-FULL", "P1", "B0-FULL"),
    ("P1 / B2", "P1", "B2"),
    ("P1-HTTP / B0-FULL", "P1-HTTP", "B0-FULL"),
    ("P1 / P2-native (WASM tax)", "P1", "P2-native"),
    (
        "P1-kept / P2-native (WASM tax, instances kept)",
        "P1-kept",
        "P2-native",
    ),
    ("P3 / B1", "P3", "B1"),
    ("P4-backlog / B0-FULL", "P4-backlog", "B0-FULL"),
    ("P4-stream / B0-FULL", "P4-stream", "B0-FULL"),
    ("P4-stream / P1", "P4-stream", "P1"),
    ("P1-pg / B0-pg", "P1-pg", "B0-pg"),
    ("P4-pg / B0-pg", "P4-pg", "B0-pg"),
    ("P1-pg-3 / P1-pg", "P1-pg-3", "P1-pg"),
    ("P4-pg-3 / P4-pg", "P4-pg-3", "P4-pg"),
];

/// The ids of every figure `host bench` measures, in the order it measures them.
fn figure_ids() -> impl Iterator<Item = &'static str> {
    [
        "B0-FULL",
        "B0-NORMAL",
        "B1",
        "P1",
        "P1-kept",
        "P1-HTTP",
        "P2-native",
        "P3",
        "P4-backlog",
        "P4-stream",
        "B2",
        "B0-pg",
        "P1-pg",
        "P4-pg",
        "P1-pg-3",
        "P4-pg-3",
        "P5",
        "R1",
        "P8",
    ]
    .into_iter()
    .chain(LANGUAGES.iter().map(|language| language.id))
}

/// `only` with the figures its figures are measured against: P5 runs at half of P1.
fn with_dependencies(mut only: Vec<String>) -> Vec<String> {
    let names = |id: &str| only.iter().any(|o| o.eq_ignore_ascii_case(id));
    if names("P5") && !names("P1") {
        only.push("P1".to_owned());
    }
    only
}

/// The figures measured so far, in the order of the report.
#[derive(Default)]
struct Table {
    figures: Vec<Figure>,
}

impl Table {
    /// The median of figure `id`, when it was measured.
    fn median(&self, id: &str) -> Option<f64> {
        self.figures.iter().find(|f| f.id == id).map(|f| f.value)
    }
}

/// Calls an instance serves in the kept-instance figures of L-*.
const KEPT_CALLS: usize = 1_000;

/// Units of work per transaction in B2: what the committer typically gathers under load.
const RAW_BATCH: usize = 64;

/// The values of one figure across runs (each run may carry percentiles).
struct Samples {
    values: Vec<f64>,
    detail: Vec<Vec<(String, f64)>>,
}

impl Samples {
    fn median(&self) -> f64 {
        median(&self.values)
    }

    fn figure(
        &self,
        id: &'static str,
        what: &'static str,
        unit: &'static str,
        conditions: &str,
    ) -> Figure {
        let names: Vec<String> = self
            .detail
            .first()
            .map(|d| d.iter().map(|(n, _)| n.clone()).collect())
            .unwrap_or_default();
        let detail = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                (
                    name.clone(),
                    median(&self.detail.iter().map(|d| d[i].1).collect::<Vec<_>>()),
                )
            })
            .collect();
        Figure {
            id,
            what,
            value: self.median(),
            unit,
            runs: self.values.clone(),
            detail,
            conditions: conditions.to_owned(),
        }
    }
}

/// An example plugin per language, and a small command of each: one JSON payload parsed, one
/// state key written (buffered in the unit of work, not committed), one JSON reply.
struct Language {
    id: &'static str,
    what: &'static str,
    language: &'static str,
    plugin: &'static str,
    command: &'static str,
    payload: &'static str,
}

const LANGUAGES: &[Language] = &[
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

/// One run's result: the headline value and its percentiles.
struct Run {
    value: f64,
    detail: Vec<(String, f64)>,
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

/// A fresh database with the host's pipeline on it.
struct Rig {
    store: Store,
    executor: Arc<Executor>,
    wake: Arc<Notify>,
}

impl Rig {
    /// Starts a dispatcher on the rig; on PostgreSQL this process first takes every
    /// partition's lease, as a lone host does.
    async fn start_dispatcher(&self) -> RigDispatcher {
        let leases = PartitionLeases::join(
            &self.store,
            "bench",
            DEFAULT_LEASE_TIMEOUT,
            self.wake.clone(),
        )
        .await;
        let dispatcher = dispatcher::spawn(
            self.executor.clone(),
            self.store.clone(),
            DispatchConfig::DEFAULT,
            Arc::new(HostConfig::default()),
            leases.clone(),
            self.wake.clone(),
        );
        RigDispatcher { dispatcher, leases }
    }
}

/// Closes the rigs' connections, so runs with several hosts do not pile up open sessions on
/// the PostgreSQL server.
async fn close(rigs: &[Rig]) {
    for rig in rigs {
        rig.store.close().await;
    }
}

/// A rig's running dispatcher and the leases it dispatches under.
struct RigDispatcher {
    dispatcher: dispatcher::Dispatcher,
    leases: Option<Arc<PartitionLeases>>,
}

impl RigDispatcher {
    async fn stop(self) {
        self.dispatcher.abort();
        if let Some(leases) = self.leases {
            leases.leave().await;
        }
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

    async fn rig(&self, kind: StoreKind, name: &str, run: usize) -> anyhow::Result<Rig> {
        self.rig_with(&self.registry, kind, name, run).await
    }

    /// A rig whose executor routes to `registry`.
    async fn rig_with(
        &self,
        registry: &Registry,
        kind: StoreKind,
        name: &str,
        run: usize,
    ) -> anyhow::Result<Rig> {
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
        let wake = Arc::new(Notify::new());
        let committer = Committer::spawn(store.clone(), wake.clone());
        let executor = Arc::new(Executor::new(
            Registry::clone(registry),
            store.clone(),
            committer,
            Duration::from_secs(3600),
        ));
        Ok(Rig {
            store,
            executor,
            wake,
        })
    }

    /// B0: one connection, one row per transaction, as fast as the disk commits.
    async fn raw_sqlite(
        &self,
        run: usize,
        sync: SqliteSynchronous,
        duration: Duration,
    ) -> anyhow::Result<Run> {
        let path = self.scratch.join(format!("raw-{sync:?}-{run}.db"));
        let mut conn = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(sync)
            .connect()
            .await?;
        sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB NOT NULL)")
            .execute(&mut conn)
            .await?;
        let start = Instant::now();
        let mut count = 0u64;
        while start.elapsed() < duration {
            sqlx::query("INSERT INTO t (v) VALUES (?)")
                .bind(&[7u8; 16][..])
                .execute(&mut conn)
                .await?;
            count += 1;
        }
        let per_second = count as f64 / start.elapsed().as_secs_f64();
        conn.close().await?;
        Ok(Run {
            value: per_second,
            detail: vec![],
        })
    }

    /// B0-pg: one connection per concurrent caller, each inserting one row per transaction.
    async fn raw_postgres(&self, run: usize, duration: Duration) -> anyhow::Result<Run> {
        let url = self.database_url(StoreKind::Postgres, "raw", run);
        // Opening a store creates the database; the raw table lives beside the host's.
        let store = Store::open(&url)
            .await
            .context("the PostgreSQL figures need a server: pass --postgres-url, or --no-postgres to leave them out")?;
        store.close().await;
        self.postgres_databases.lock().unwrap().push(url.clone());
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(self.args.concurrency as u32)
            .connect(&url)
            .await?;
        sqlx::query("CREATE TABLE t (id BIGSERIAL PRIMARY KEY, v BYTEA NOT NULL)")
            .execute(&pool)
            .await?;
        let deadline = Instant::now() + duration;
        let start = Instant::now();
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..self.args.concurrency {
            let pool = pool.clone();
            workers.spawn(async move {
                let mut conn = pool.acquire().await?;
                let mut count = 0u64;
                while Instant::now() < deadline {
                    sqlx::query("INSERT INTO t (v) VALUES ($1)")
                        .bind(&[7u8; 16][..])
                        .execute(&mut *conn)
                        .await?;
                    count += 1;
                }
                anyhow::Ok(count)
            });
        }
        let mut total = 0;
        while let Some(count) = workers.join_next().await {
            total += count??;
        }
        let per_second = total as f64 / start.elapsed().as_secs_f64();
        pool.close().await;
        Ok(Run {
            value: per_second,
            detail: vec![],
        })
    }

    /// B2: the storage work of `bench.touch` units (read a version, upsert the key, insert a
    /// message and its delivery), `RAW_BATCH` to a transaction, on the host's own schema, with
    /// prepared statements on one synchronous connection: the fastest honest way to do it.
    async fn raw_group_commit(&self, run: usize, duration: Duration) -> anyhow::Result<Run> {
        let path = self.scratch.join(format!("raw-batch-{run}.db"));
        let store = Store::open(&format!("sqlite://{}", path.display())).await?;
        store.close().await;
        tokio::task::spawn_blocking(move || raw_group_commit(&path, duration)).await?
    }

    /// B1: the same engine instantiating and calling a component that does nothing.
    async fn raw_wasmtime(&self, iterations: usize) -> anyhow::Result<Run> {
        const EMPTY: &str = r#"(component
            (core module $m (func (export "run")))
            (core instance $i (instantiate $m))
            (func (export "run") (canon lift (core func $i "run"))))"#;
        let engine = self.sandbox.engine();
        let component =
            wasmtime::component::Component::new(engine, EMPTY).map_err(anyhow::Error::from)?;
        let linker = wasmtime::component::Linker::<()>::new(engine);
        let pre = linker
            .instantiate_pre(&component)
            .map_err(anyhow::Error::from)?;
        let mut timings = Vec::with_capacity(iterations);
        for _ in 0..iterations {
            let start = Instant::now();
            let mut store = wasmtime::Store::new(engine, ());
            store.set_epoch_deadline(1000);
            store.epoch_deadline_trap();
            let instance = pre
                .instantiate_async(&mut store)
                .await
                .map_err(anyhow::Error::from)?;
            let run = instance
                .get_typed_func::<(), ()>(&mut store, "run")
                .map_err(anyhow::Error::from)?;
            run.call_async(&mut store, ())
                .await
                .map_err(anyhow::Error::from)?;
            timings.push(start.elapsed());
        }
        Ok(percentiles_us(timings))
    }

    /// P3: a fresh store, instantiation and one call of the trivial plugin's no-op command.
    async fn invoke(&self, iterations: usize) -> anyhow::Result<Run> {
        let rig = self.rig(StoreKind::Sqlite, "invoke", 0).await?;
        let plugin = self.registry.plugin(PLUGIN).expect("checked at start");
        let envelope = bench_envelope("bench.noop", b"{}".to_vec());
        let mut timings = Vec::with_capacity(iterations);
        for _ in 0..iterations {
            let unit = UnitOfWork::new(PLUGIN, Access::ReadWrite, rig.store.clone());
            let start = Instant::now();
            let call = plugin.handle_command(&envelope, unit).await;
            timings.push(start.elapsed());
            call.outcome.map_err(|f| anyhow::anyhow!("{f}"))?;
        }
        Ok(percentiles_us(timings))
    }

    /// L-*: a small command of each language's example on a fresh instance, the linear
    /// memory that instance holds, and the same command on kept instances
    /// ([`Limits::calls_per_instance`]).
    async fn language_invoke(
        &self,
        [fresh, kept]: [&Registry; 2],
        language: &Language,
        iterations: usize,
    ) -> anyhow::Result<Run> {
        let rig = self.rig(StoreKind::Sqlite, language.id, 0).await?;
        let envelope = bench_envelope(language.command, language.payload.as_bytes().to_vec());
        let mut timings = [Vec::new(), Vec::new()];
        let mut memory_bytes = 0;
        for (registry, timings) in [fresh, kept].into_iter().zip(&mut timings) {
            let plugin = registry
                .plugin(language.plugin)
                .expect("checked by the caller");
            for _ in 0..iterations.max(1) {
                let unit = UnitOfWork::new(plugin.name(), Access::ReadWrite, rig.store.clone());
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

    /// R1: the watcher path of `host run --watch`, timed from the rename of a new build into
    /// the plugins folder to the moment the executor routes to it.
    async fn cold_start(&self, run: usize, starts: usize) -> anyhow::Result<Run> {
        let scratch = self.scratch.join(format!("cold-start-{run}"));
        std::fs::create_dir_all(&scratch)?;
        let examples = self.args.examples.clone();
        let mut timings = tokio::task::spawn_blocking(move || {
            cold_start::time_starts(&examples, &scratch, starts)
        })
        .await??;
        timings.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        Ok(Run {
            value: ms(percentile(&timings, 50.0)),
            detail: vec![("p99 ms".into(), ms(percentile(&timings, 99.0)))],
        })
    }

    async fn hot_reload(&self, run: usize, swaps: usize) -> anyhow::Result<Run> {
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
        let (plugins, registry) =
            PluginDir::load(&self.sandbox, &folder, BuildPolicy::LoadOnly).await?;
        rig.executor.replace_registry(registry);
        let watcher = plugin_dir::watch(plugins, rig.executor.clone(), rig.store, rig.wake, false)?;
        let mut timings = Vec::with_capacity(swaps);
        for swap in 0..swaps {
            // A new build: the same code with a custom section that makes its digest new.
            let build = with_custom_section(
                &original,
                "bench-build",
                &(run * swaps + swap).to_le_bytes(),
            );
            let expected = crate::cache::content_digest(&build);
            let staging = folder.join("next.partial");
            std::fs::write(&staging, &build)?;
            let start = Instant::now();
            std::fs::rename(&staging, &file)?;
            loop {
                if rig
                    .executor
                    .registry()
                    .plugin(PLUGIN)
                    .is_some_and(|p| p.digest() == expected)
                {
                    break;
                }
                if start.elapsed() > Duration::from_secs(30) {
                    watcher.abort();
                    bail!("swap {swap} did not take effect within 30 s");
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            timings.push(start.elapsed());
        }
        watcher.abort();
        timings.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        Ok(Run {
            value: ms(percentile(&timings, 50.0)),
            detail: vec![("p99 ms".into(), ms(percentile(&timings, 99.0)))],
        })
    }

    /// P1/P2: closed loop, `concurrency` callers, each command on its own key.
    async fn commands(&self, run: usize, duration: Duration, route: Route) -> anyhow::Result<Run> {
        self.commands_on_hosts(run, duration, route, 1).await
    }

    /// [`Bench::commands`] with the callers spread over `hosts` hosts (rigs) on one database,
    /// in this process.
    async fn commands_on_hosts(
        &self,
        run: usize,
        duration: Duration,
        route: Route,
        hosts: usize,
    ) -> anyhow::Result<Run> {
        let kind = match route {
            Route::Postgres => StoreKind::Postgres,
            Route::InProcess | Route::Kept | Route::Http | Route::Native => StoreKind::Sqlite,
        };
        let registry = match route {
            Route::Kept => &self.kept,
            _ => &self.registry,
        };
        let mut rigs = Vec::new();
        for _ in 0..hosts {
            rigs.push(self.rig_with(registry, kind, "commands", run).await?);
        }
        let rig = &rigs[0];
        let http_base = match route {
            Route::Http => Some(serve(rig).await?),
            Route::InProcess | Route::Kept | Route::Native | Route::Postgres => None,
        };
        let done = Arc::new(AtomicU64::new(0));
        let deadline = Instant::now() + duration;
        let start = Instant::now();
        let mut callers = Vec::new();
        for caller in 0..self.args.concurrency {
            let rig = &rigs[caller % hosts];
            let (executor, store, done, http_base) = (
                rig.executor.clone(),
                rig.store.clone(),
                done.clone(),
                http_base.clone(),
            );
            let client = reqwest::Client::new();
            callers.push(tokio::spawn(async move {
                let mut i = 0u64;
                while Instant::now() < deadline {
                    let key = format!("c{caller}-{i}");
                    let payload = format!("{{\"key\":\"{key}\"}}").into_bytes();
                    match (&http_base, route) {
                        (Some(base), _) => {
                            let response = client
                                .post(format!("{base}/commands/bench.touch"))
                                .body(payload)
                                .send()
                                .await?;
                            anyhow::ensure!(
                                response.status().is_success(),
                                "HTTP {}",
                                response.status()
                            );
                            response.bytes().await?;
                        }
                        (None, Route::Native) => native_touch(&executor, &store, &key).await?,
                        (None, _) => {
                            let request = Request {
                                kind: "bench.touch".into(),
                                payload,
                                ..Request::default()
                            };
                            executor
                                .command(&request)
                                .await
                                .map_err(|e| anyhow::anyhow!("{e}"))?;
                        }
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
                anyhow::Ok(())
            }));
        }
        for caller in callers {
            caller.await??;
        }
        let value = done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
        close(&rigs).await;
        Ok(Run {
            value,
            detail: vec![],
        })
    }

    /// P4 backlog: commands fill the outbox with the dispatcher off; then it drains, on
    /// `hosts` hosts (rigs in this process) sharing the database's partitions.
    async fn event_backlog(
        &self,
        run: usize,
        events: usize,
        kind: StoreKind,
        hosts: usize,
    ) -> anyhow::Result<Run> {
        let mut rigs = Vec::new();
        for _ in 0..hosts {
            rigs.push(self.rig(kind, "backlog", run).await?);
        }
        let rig = &rigs[0];
        let mut fill = tokio::task::JoinSet::new();
        for chunk in 0..self.args.concurrency {
            let executor = rig.executor.clone();
            let per_chunk = events.div_ceil(self.args.concurrency);
            fill.spawn(async move {
                for i in 0..per_chunk {
                    let request = Request {
                        kind: "bench.touch".into(),
                        payload: format!("{{\"key\":\"b{chunk}-{i}\"}}").into_bytes(),
                        ..Request::default()
                    };
                    executor
                        .command(&request)
                        .await
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                }
                anyhow::Ok(())
            });
        }
        while let Some(result) = fill.join_next().await {
            result??;
        }
        let total = pending(&rig.store).await?;
        let start = Instant::now();
        let mut dispatchers = Vec::new();
        for rig in &rigs {
            dispatchers.push(rig.start_dispatcher().await);
            rig.wake.notify_one();
        }
        while pending(&rig.store).await? > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let elapsed = start.elapsed();
        for dispatcher in dispatchers {
            dispatcher.stop().await;
        }
        close(&rigs).await;
        Ok(Run {
            value: total as f64 / elapsed.as_secs_f64(),
            detail: vec![],
        })
    }

    /// P4 stream: commands at full concurrency with the dispatcher running; events done per second.
    async fn event_stream(&self, run: usize, duration: Duration) -> anyhow::Result<Run> {
        let rig = self.rig(StoreKind::Sqlite, "stream", run).await?;
        let task = rig.start_dispatcher().await;
        let deadline = Instant::now() + duration;
        let start = Instant::now();
        let mut callers = tokio::task::JoinSet::new();
        for caller in 0..self.args.concurrency {
            let executor = rig.executor.clone();
            callers.spawn(async move {
                let mut i = 0u64;
                while Instant::now() < deadline {
                    let request = Request {
                        kind: "bench.touch".into(),
                        payload: format!("{{\"key\":\"s{caller}-{i}\"}}").into_bytes(),
                        ..Request::default()
                    };
                    executor
                        .command(&request)
                        .await
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                    i += 1;
                }
                anyhow::Ok(())
            });
        }
        while let Some(result) = callers.join_next().await {
            result??;
        }
        let elapsed = start.elapsed();
        let delivered = done_deliveries(&rig.store).await?;
        task.stop().await;
        Ok(Run {
            value: delivered as f64 / elapsed.as_secs_f64(),
            detail: vec![],
        })
    }

    /// P5: open loop at `rate` commands/s; latency of each command, and command → subscriber
    /// done for a sample (detected by polling the subscriber's state every millisecond).
    async fn latency(&self, run: usize, duration: Duration, rate: f64) -> anyhow::Result<Run> {
        let rig = self.rig(StoreKind::Sqlite, "latency", run).await?;
        let task = rig.start_dispatcher().await;
        let interval = Duration::from_secs_f64(1.0 / rate.max(1.0));
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let deadline = Instant::now() + duration;
        let mut requests = tokio::task::JoinSet::new();
        let mut i = 0u64;
        let sample_every = ((rate * duration.as_secs_f64()) / 200.0).max(1.0) as u64;
        while Instant::now() < deadline {
            ticker.tick().await;
            let (executor, store) = (rig.executor.clone(), rig.store.clone());
            let end_to_end = i.is_multiple_of(sample_every);
            requests.spawn(async move {
                let key = format!("l{i}");
                let request = Request {
                    kind: "bench.touch".into(),
                    payload: format!("{{\"key\":\"{key}\"}}").into_bytes(),
                    ..Request::default()
                };
                let start = Instant::now();
                executor
                    .command(&request)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                let answered = start.elapsed();
                let mut delivered = None;
                if end_to_end {
                    let seen_key = format!("seen/{key}");
                    while store.read_state(PLUGIN, &seen_key).await?.0.is_none() {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    delivered = Some(start.elapsed());
                }
                anyhow::Ok((answered, delivered))
            });
            i += 1;
        }
        let mut answered = Vec::new();
        let mut delivered = Vec::new();
        while let Some(result) = requests.join_next().await {
            let (a, d) = result??;
            answered.push(a);
            delivered.extend(d);
        }
        task.stop().await;
        let ms = |d: &Duration| d.as_secs_f64() * 1e3;
        answered.sort();
        delivered.sort();
        Ok(Run {
            value: ms(&percentile(&answered, 50.0)),
            detail: vec![
                ("p99 ms".into(), ms(&percentile(&answered, 99.0))),
                ("p99.9 ms".into(), ms(&percentile(&answered, 99.9))),
                (
                    "to subscriber done p50 ms".into(),
                    ms(&percentile(&delivered, 50.0)),
                ),
                (
                    "to subscriber done p99 ms".into(),
                    ms(&percentile(&delivered, 99.0)),
                ),
                ("commands".into(), answered.len() as f64),
            ],
        })
    }
}

/// P2's handler: what `bench.touch` does, in native code, through the same unit of work,
/// addressing and committer as a WASM handler.
async fn native_touch(executor: &Executor, store: &Store, key: &str) -> anyhow::Result<()> {
    let envelope = bench_envelope("bench.touch", format!("{{\"key\":\"{key}\"}}").into_bytes());
    let mut unit = UnitOfWork::new(PLUGIN, Access::ReadWrite, store.clone());
    let count_key = format!("count/{key}");
    let count: u64 = match unit.get(&count_key).await? {
        Some(bytes) => serde_json::from_slice(&bytes)?,
        None => 0,
    };
    unit.put(count_key, serde_json::to_vec(&(count + 1))?)?;
    unit.emit(crate::unit_of_work::EmittedEvent::new(
        "bench.touched",
        serde_json::to_vec(&serde_json::json!({ "key": key }))?,
        Some(key.to_owned()),
    ))?;
    let (changes, emitted): (StateChanges, _) = unit.finish();
    let outbox = executor.address(&envelope, 0, PLUGIN, emitted);
    executor
        .committer()
        .submit(Write::Command {
            changes,
            outbox,
            idempotency: None,
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

fn bench_envelope(kind: &str, payload: Vec<u8>) -> Envelope {
    let id = uuid::Uuid::now_v7().to_string();
    Envelope {
        correlation_id: id.clone(),
        id,
        kind: kind.into(),
        partition_key: None,
        tenant_id: None,
        causation_id: None,
        actor: None,
        schema_version: 1,
        occurred_at_ms: now_ms() as u64,
        attempt: 1,
        headers: Vec::new(),
        payload,
    }
}

fn raw_group_commit(path: &std::path::Path, duration: Duration) -> anyhow::Result<Run> {
    let mut conn = rusqlite::Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    let start = Instant::now();
    let mut units = 0u64;
    while start.elapsed() < duration {
        let tx = conn.transaction()?;
        {
            let mut read =
                tx.prepare_cached("SELECT version FROM state WHERE plugin = ?1 AND key = ?2")?;
            let mut write = tx.prepare_cached(
                "INSERT INTO state (plugin, key, value, version) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (plugin, key) DO UPDATE SET value = excluded.value, version = excluded.version",
            )?;
            let mut message = tx.prepare_cached(
                "INSERT INTO messages (id, kind, partition_key, correlation_id, schema_version,
                                       occurred_at_ms, headers, payload, emitted_by)
                 VALUES (?1, 'bench.touched', ?2, ?1, 1, ?3, '[]', ?4, 'bench-trivial') RETURNING seq",
            )?;
            let mut delivery = tx.prepare_cached(
                "INSERT INTO deliveries (message_seq, subscriber, partition_key, status, next_attempt_at_ms)
                 VALUES (?1, 'bench-trivial', ?2, 'pending', ?3)",
            )?;
            for _ in 0..RAW_BATCH {
                let key = format!("k{units}");
                let version: i64 = read
                    .query_row(rusqlite::params![PLUGIN, key], |row| row.get(0))
                    .or_else(|e| match e {
                        rusqlite::Error::QueryReturnedNoRows => Ok(0),
                        e => Err(e),
                    })?;
                write.execute(rusqlite::params![PLUGIN, key, b"{\"n\":1}", version + 1])?;
                let id = uuid::Uuid::now_v7().to_string();
                let now = now_ms();
                let payload = format!("{{\"key\":\"{key}\"}}");
                let seq: i64 = message
                    .query_row(rusqlite::params![id, key, now, payload.as_bytes()], |row| {
                        row.get(0)
                    })?;
                delivery.execute(rusqlite::params![seq, key, now])?;
                units += 1;
            }
        }
        tx.commit()?;
    }
    Ok(Run {
        value: units as f64 / start.elapsed().as_secs_f64(),
        detail: vec![],
    })
}

async fn serve(rig: &Rig) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    // P1-HTTP measures commands; the rig's dispatcher, if any, is not the server's concern.
    let app = http::router(AppState {
        executor: rig.executor.clone(),
        policies: Arc::new(HostConfig::default()),
        leases: None,
        dispatcher: None,
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(format!("http://{address}"))
}

/// The deliveries waiting for the benchmark plugin: a count over the pending rows, not the
/// whole table (the drain is timed by polling it).
async fn pending(store: &Store) -> anyhow::Result<i64> {
    store.pending_count(PLUGIN).await
}

async fn done_deliveries(store: &Store) -> anyhow::Result<i64> {
    Ok(store.stats().await?.by_status["done"])
}

/// `component` with a custom section appended: the same code under another digest.
fn with_custom_section(component: &[u8], name: &str, payload: &[u8]) -> Vec<u8> {
    fn leb128(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let mut body = Vec::new();
    leb128(name.len(), &mut body);
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(payload);
    let mut out = component.to_vec();
    out.push(0); // custom section id
    leb128(body.len(), &mut out);
    out.extend_from_slice(&body);
    out
}

fn percentiles_us(mut timings: Vec<Duration>) -> Run {
    timings.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    Run {
        value: us(percentile(&timings, 50.0)),
        detail: vec![("p99 µs".into(), us(percentile(&timings, 99.0)))],
    }
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if !n.is_multiple_of(2) => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// A memory figure of this process from `/proc/self/status`, in MiB: `VmHWM` (the peak
/// resident set) or `VmRSS` (the resident set now); 0 where the file does not exist.
fn process_memory_mib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| {
                    l.strip_prefix(field)
                        .is_some_and(|rest| rest.starts_with(':'))
                })
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn machine_description() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    format!("{cpus} CPUs ({model}), {}", std::env::consts::ARCH)
}

fn reproduce_command(args: &BenchArgs) -> String {
    format!(
        "host bench --out {} --runs {} --seconds {} --concurrency {}{}{}",
        args.out.display(),
        args.runs,
        args.seconds,
        args.concurrency,
        if args.quick { " --quick" } else { "" },
        if args.only.is_empty() {
            String::new()
        } else {
            format!(" --only {}", args.only.join(","))
        }
    )
}

fn render_markdown(report: &Report) -> String {
    let mut md = String::new();
    md.push_str(&format!("Reproduce: `{}`\n\nMachine: {}; {} run(s) per figure, median shown; throughput runs last {} s.\n\n", report.command, report.machine, report.runs, report.seconds_per_run));
    md.push_str("| id | what | median | unit | runs | detail | conditions |\n|---|---|---:|---|---|---|---|\n");
    for f in &report.figures {
        let runs: Vec<String> = f.runs.iter().map(|v| format!("{v:.1}")).collect();
        let detail: Vec<String> = f
            .detail
            .iter()
            .map(|(n, v)| format!("{n} {v:.2}"))
            .collect();
        md.push_str(&format!(
            "| {} | {} | {:.1} | {} | {} | {} | {} |\n",
            f.id,
            f.what,
            f.value,
            f.unit,
            runs.join(", "),
            detail.join("; "),
            f.conditions
        ));
    }
    md.push_str("\n| ratio | value |\n|---|---:|\n");
    for (name, value) in &report.ratios {
        md.push_str(&format!("| {name} | {value:.2} |\n"));
    }
    md.push_str(&format!(
        "\nPeak RSS of the host process during the run: {:.1} MiB\n",
        report.peak_rss_mib
    ));
    md
}
