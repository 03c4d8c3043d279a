//! The `host` command line: `run`, `build`, `send`, `bench`, `trace` and `bus`.

use crate::app::{Delivery, Host};
use crate::cache::ComponentCache;
use crate::config::{DEFAULT_DATABASE_URL, DEFAULT_LEASE_TIMEOUT, DEFAULT_LISTEN, DispatchConfig};
use crate::executor::{Reply, Request};
use crate::http;
use crate::plugin_dir::{self, BuildPolicy, PluginDir};
use crate::sandbox::Compiler;
use crate::store::{FirstOutcome, Store};
mod bus;
mod remote;
mod tuning;

use anyhow::{Context, bail};
pub(crate) use bus::{BusCommand, BusFilter, ListType};
use clap::{Args, Parser, Subcommand, ValueEnum};
pub(crate) use remote::Reach;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
pub(crate) use tuning::Tuning;
use tuning::sandbox_for;

/// The `host` command line: the global options and the subcommand to run.
#[derive(Debug, Parser)]
#[command(
    name = "host",
    version,
    about = "Runs message handlers written as WebAssembly components, durably"
)]
pub struct Cli {
    /// How log lines are written to stderr: `text` for people, `json` (one object a line) for
    /// log collectors.
    #[arg(long, global = true, env = "HOST_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Export spans (commands, queries, deliveries, with their ids) over OTLP/HTTP to this
    /// collector, e.g. `http://127.0.0.1:4318`. Off unless given.
    #[arg(long, global = true, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Plain lines, for people reading a terminal.
    Text,
    /// One JSON object a line, for log collectors.
    Json,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Load the plugins and serve commands, queries and event delivery.
    Run(RunArgs),
    /// `run --build --watch`: build, serve, and rebuild and swap in each plugin as its sources
    /// or component change, with no restart and nothing dropped. The plugin author's loop.
    Dev(DevArgs),
    /// Create a plugin project that builds and loads as it is: a command, an event
    /// subscription and a query to start from.
    New(crate::scaffold::NewArgs),
    /// Build every plugin source folder (a folder with a plugin.toml) that is missing or stale.
    Build {
        #[command(flatten)]
        plugins: PluginsArg,
    },
    /// Run one command in-process against the database and print its answer. Refused, as
    /// over HTTP, while the deliveries due and not yet delivered are at or past --max-due.
    Send(SendArgs),
    /// Measure throughput and latency against raw SQLite, PostgreSQL and wasmtime baselines:
    /// runs `host-bench`, installed beside `host` (`host bench --help` for its options).
    #[command(disable_help_flag = true)]
    Bench {
        /// Passed to `host-bench` as they are.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// Show one request's causal tree from the database: the command, the events it emitted,
    /// each subscriber's delivery with attempts, outcome, error and timing, and the events
    /// those emitted in turn.
    Trace(TraceArgs),
    /// Inspect and repair the delivery queue and the dead-letter queue.
    Bus {
        #[command(subcommand)]
        command: BusCommand,
    },
}

#[derive(Debug, Args)]
pub(crate) struct PluginsArg {
    /// Folder of plugins: component files (*.wasm) and source folders with a plugin.toml.
    #[arg(long, env = "HOST_PLUGINS", default_value = "./plugins")]
    pub plugins: PathBuf,
}

/// Where compiled components are kept between runs.
#[derive(Debug, Args)]
pub(crate) struct CacheArg {
    /// Folder of compiled components, reused across restarts; an entry is keyed by the
    /// component's content and the engine configuration, and checked before use
    /// [default: $XDG_CACHE_HOME/handler-host/components, else ~/.cache/handler-host/components].
    #[arg(long, env = "HOST_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Compile every component at load; read and write no cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Size cap of the cache folder in MiB: a new entry evicts the least recently used ones
    /// while the folder is over it.
    #[arg(long, env = "HOST_CACHE_MAX_MIB", default_value_t = crate::cache::DEFAULT_MAX_BYTES >> 20)]
    pub cache_max_mib: u64,
}

impl CacheArg {
    fn cache(&self) -> Option<ComponentCache> {
        if self.no_cache {
            return None;
        }
        self.cache_dir
            .clone()
            .or_else(ComponentCache::default_dir)
            .map(|dir| ComponentCache::new(dir).with_max_bytes(self.cache_max_mib << 20))
    }
}

#[derive(Debug, Args)]
pub(crate) struct DatabaseArg {
    /// Database URL: `sqlite://FILE` (the embedded default) or
    /// `postgres://USER@HOST:PORT/DATABASE`. Either is created and migrated if missing.
    #[arg(long, env = "HOST_DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    pub plugins: PluginsArg,
    #[command(flatten)]
    pub database: DatabaseArg,
    /// Address to serve HTTP on. Port 0 picks a free port (printed at start).
    #[arg(long, env = "HOST_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: String,
    /// Build the source folders (folders with a plugin.toml) whose component is missing or
    /// older than its inputs before loading them, and with --watch on each change: their build
    /// commands run with this process's rights, outside the sandbox. Without it (`host dev`
    /// implies it) components are loaded as they are; `host build` builds them.
    #[arg(long)]
    pub build: bool,
    /// Follow the plugins directory while serving: a new or changed component (or, with
    /// --build, a changed source folder, rebuilt) is checked and swapped in between two
    /// messages; a removed one stops receiving until it returns.
    #[arg(long)]
    pub watch: bool,
    /// With --watch: swap in a new version that no longer handles a kind its plugin has
    /// pending or dead-lettered deliveries of (or unload a removed plugin that has any), with
    /// a warning. Without it such a change is refused and the old version keeps serving.
    #[arg(long, env = "HOST_ALLOW_STRANDING")]
    pub allow_stranding: bool,
    /// Set by `host dev`: source folders with a `[dev]` table run on their development runtime.
    #[arg(skip)]
    pub dev_runtimes: bool,
    /// Which compiler turns plugins into machine code: `cranelift` optimises (the default of
    /// `host run`); `winch` compiles several times faster for slower code (the default of
    /// `host dev`, so an edit serves sooner). The sandbox and its limits are the same.
    #[arg(long, env = "HOST_COMPILER", value_enum)]
    pub compiler: Option<Compiler>,
    #[command(flatten)]
    pub cache: CacheArg,
    #[command(flatten)]
    pub tuning: Tuning,
    /// Print the effective configuration as JSON and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Token the admin endpoints require (header `X-Admin-Token`). Required when --listen is
    /// not a loopback address: without it the host refuses to start.
    #[arg(long, env = "HOST_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Time a client has to send a request body, in milliseconds; then it gets a 408.
    #[arg(long, default_value_t = http::Ingress::DEFAULT.body_read_timeout.as_millis() as u64)]
    pub body_read_timeout_ms: u64,
    /// PostgreSQL: how long a partition lease lasts unless renewed, in milliseconds. A host
    /// that dies hands its partitions over after this long; a shorter one renews more often.
    #[arg(long, env = "HOST_LEASE_TIMEOUT_MS",
          default_value_t = DEFAULT_LEASE_TIMEOUT.as_millis() as u64,
          value_parser = clap::value_parser!(u64).range(500..=3_600_000))]
    pub lease_timeout_ms: u64,
    /// Deliver nothing in the background: commands are answered and their events wait until
    /// `host bus flush` runs them (or a host without this switch). On PostgreSQL such a host
    /// leases no partitions. For tests that flush by hand.
    #[arg(long, env = "HOST_NO_DISPATCH")]
    pub no_dispatch: bool,
}

/// `host dev`: `host run`'s options, and how source folders with a `[dev]` table run.
#[derive(Debug, Args)]
pub(crate) struct DevArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Build every source folder into its component on each save, also those whose
    /// plugin.toml has a `[dev]` table (Python, JavaScript), which otherwise run on their
    /// language's development runtime and need no component build.
    #[arg(long)]
    pub no_dev_runtime: bool,
}

#[derive(Debug, Args)]
pub(crate) struct SendArgs {
    /// The command kind, e.g. `order.place`.
    pub kind: String,
    /// The JSON payload.
    #[arg(long, default_value = "{}")]
    pub payload: String,
    #[arg(long)]
    pub idempotency_key: Option<String>,
    #[arg(long)]
    pub partition_key: Option<String>,
    #[command(flatten)]
    pub database: DatabaseArg,
    #[command(flatten)]
    pub load: PluginLoad,
}

/// What a command that runs handlers outside a host (`send`, `bus flush`, a dry-run replay)
/// needs to load the plugins as the host does: give it the host's folder, config and flags.
#[derive(Debug, Args)]
pub(crate) struct PluginLoad {
    #[command(flatten)]
    pub plugins: PluginsArg,
    #[command(flatten)]
    pub tuning: Tuning,
    #[command(flatten)]
    pub cache: CacheArg,
}

impl PluginLoad {
    /// A host for one piece of work from the command line: the plugins loaded as they are
    /// built (`host build` builds them) on `store`, nothing in the background.
    async fn host(&self, store: Store) -> anyhow::Result<Host> {
        let config = self.tuning.host_config()?;
        let sandbox = sandbox_for(&config, &self.cache, Compiler::Cranelift)?;
        let (_, registry) =
            PluginDir::load(&sandbox, &self.plugins.plugins, BuildPolicy::LoadOnly).await?;
        Ok(Host::new(store, registry, Arc::new(config)))
    }
}

#[derive(Debug, Args)]
pub(crate) struct TraceArgs {
    /// The request's correlation id (the `Correlation-Id` header of the command's answer), or
    /// the id of any message of the request.
    pub id: String,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    #[command(flatten)]
    pub reach: Reach,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Format {
    Table,
    Json,
}

/// Runs the parsed command line.
///
/// # Errors
/// Whatever stops the command; `main` prints it and exits non-zero.
pub async fn execute(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(args) => run(args).await,
        Command::Dev(DevArgs {
            run: args,
            no_dev_runtime,
        }) => {
            run(RunArgs {
                watch: true,
                build: true,
                dev_runtimes: !no_dev_runtime,
                compiler: args.compiler.or(Some(Compiler::Winch)),
                ..args
            })
            .await
        }
        Command::New(args) => crate::scaffold::create(&args),
        Command::Build { plugins } => build(plugins).await,
        Command::Send(args) => send(args).await,
        Command::Bench { args } => bench(&args),
        Command::Trace(args) => trace(args).await,
        Command::Bus { command } => bus::run(command).await,
    }
}

async fn trace(args: TraceArgs) -> anyhow::Result<()> {
    let target = remote::Target::reach(&args.reach).await?;
    let found = target.trace(&args.id).await;
    target.close().await;
    let Some(trace) = found? else {
        bail!("{}", crate::trace::not_found(&args.id));
    };
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&trace)?),
        Format::Table => print!("{}", trace.render()),
    }
    Ok(())
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let config = Arc::new(args.tuning.host_config()?);
    let dispatch = DispatchConfig::DEFAULT;
    let compiler = args.compiler.unwrap_or(Compiler::Cranelift);
    if args.print_config {
        let mut effective = config.to_json(&[]);
        effective["plugins_dir"] = serde_json::json!(args.plugins.plugins);
        effective["database_url"] = serde_json::json!(args.database.database_url);
        effective["listen"] = serde_json::json!(args.listen);
        effective["build"] = serde_json::json!(args.build);
        effective["dev_runtimes"] = serde_json::json!(args.dev_runtimes);
        effective["watch"] = serde_json::json!(args.watch);
        effective["allow_stranding"] = serde_json::json!(args.allow_stranding);
        effective["compiler"] = serde_json::json!(compiler.as_str());
        effective["cache_dir"] = serde_json::json!(args.cache.cache().map(|c| c.dir().to_owned()));
        effective["cache_max_mib"] = serde_json::json!(args.cache.cache_max_mib);
        effective["admin_token"] = serde_json::json!(args.admin_token.as_ref().map(|_| "(set)"));
        effective["body_read_timeout_ms"] = serde_json::json!(args.body_read_timeout_ms);
        effective["lease_timeout_ms"] = serde_json::json!(args.lease_timeout_ms);
        effective["background_dispatch"] = serde_json::json!(!args.no_dispatch);
        effective["dispatch"] = serde_json::to_value(dispatch)?;
        println!("{}", serde_json::to_string_pretty(&effective)?);
        return Ok(());
    }
    if let Some(point) = crate::fault::armed().map_err(anyhow::Error::msg)? {
        tracing::warn!(
            "fault injection armed: the process aborts at `{}`",
            point.as_str()
        );
    }
    let policy = if args.dev_runtimes {
        BuildPolicy::Develop
    } else if args.build {
        BuildPolicy::BuildStale
    } else {
        BuildPolicy::LoadOnly
    };
    crate::telemetry::install();
    // The address first: a port another process holds is found before any build runs.
    let listener = listen(&args.listen).await?;
    let address = listener.local_addr()?;
    http::check_exposure(&address, args.admin_token.as_deref())?;
    // The database opens (and migrates) while the plugins load, one waiting on the disk, the
    // other on the CPUs; a database that cannot be opened stops the builds at once.
    let opening = tokio::spawn({
        let url = args.database.database_url.clone();
        async move { Store::open(&url).await }
    });
    let sandbox = sandbox_for(&config, &args.cache, compiler)?;
    let (store, (plugins, registry)) = tokio::try_join!(
        async { opening.await? },
        PluginDir::load(&sandbox, &args.plugins.plugins, policy),
    )?;
    for name in config.plugins.keys() {
        if registry.plugin(name).is_none() {
            tracing::warn!(
                "the host config has a section [plugins.{name}] but no plugin `{name}` is loaded"
            );
        }
    }
    let host = Host::new(store.clone(), registry, config.clone());
    if args.watch {
        plugin_dir::watch(
            plugins,
            host.executor().clone(),
            store.clone(),
            host.wake().clone(),
            args.allow_stranding,
        )?;
    }
    let delivery = if args.no_dispatch {
        tracing::info!("background dispatch is off: `host bus flush` delivers what is due");
        None
    } else {
        Some(Delivery {
            lease_timeout: Duration::from_millis(args.lease_timeout_ms),
            dispatch,
            ..Delivery::new(address.to_string())
        })
    };
    let background = host.start(delivery.as_ref()).await;

    // `host bus` and `host trace` find this host here and go through its admin API.
    let registration = crate::store::RunningHost {
        id: http::instance_id().to_owned(),
        address: format!("http://{}", reachable(address)),
        started_at_ms: crate::store::now_ms(),
    };
    if let Err(error) = store.register_running_host(&registration).await {
        tracing::warn!("`host bus` will not find this host in the database: {error:#}");
    }
    tracing::info!(
        %address,
        plugins = host.executor().registry().names().len(),
        compiler = compiler.as_str(),
        "serving"
    );
    // A machine-readable line on stdout for scripts and tests that wait for readiness.
    println!("host listening on http://{address}");
    let ingress = http::Ingress {
        body_read_timeout: Duration::from_millis(args.body_read_timeout_ms.max(1)),
        admin_token: args.admin_token.as_deref().map(Arc::from),
    };
    let app = http::router_with(host.app_state(Some(&background)), ingress);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("HTTP server failed")?;
    // Requests are answered; let the deliveries that run finish, give the partitions back so
    // other hosts take them over at once, then close the database (on SQLite this folds the
    // WAL back into the file and removes it).
    let unfinished = background.stop(SHUTDOWN_GRACE).await;
    if unfinished > 0 {
        tracing::warn!(
            unfinished,
            "deliveries still running after {} s are left to the next start",
            SHUTDOWN_GRACE.as_secs()
        );
    }
    if let Err(error) = store.unregister_running_host(&registration.id).await {
        tracing::warn!("{error:#}");
    }
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// Binds the HTTP address, saying what to do when another process holds it.
async fn listen(address: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(address)
        .await
        .map_err(|error| match error.kind() {
            std::io::ErrorKind::AddrInUse => anyhow::anyhow!(
                "cannot listen on {address}: another process is listening there (another host?); \
                 stop it, or pass --listen with another address, e.g. --listen 127.0.0.1:7879"
            ),
            _ => anyhow::anyhow!("cannot listen on {address}: {error}"),
        })
}

/// The address a client on this machine reaches a server bound to `bound` at: the loopback
/// address in place of an unspecified one (`0.0.0.0`, `::`).
fn reachable(bound: std::net::SocketAddr) -> std::net::SocketAddr {
    let ip = match bound.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    std::net::SocketAddr::new(ip, bound.port())
}

/// How long a stopping host waits for the deliveries that run to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down: finishing requests in flight");
}

async fn build(plugins: PluginsArg) -> anyhow::Result<()> {
    let (entries, errors) = crate::manifest::discover(&plugins.plugins)?;
    let mut failed = errors.len();
    for error in &errors {
        tracing::error!("{error}");
    }
    for entry in entries {
        if let crate::manifest::Entry::Source { folder, manifest } = entry
            && let Err(error) = crate::manifest::build(&folder, &manifest.build).await
        {
            tracing::error!("{error}");
            failed += 1;
        }
    }
    if failed > 0 {
        bail!("{failed} plugin(s) failed to build");
    }
    Ok(())
}

/// `host bench`: the benchmark is its own binary, `host-bench`, installed beside `host` (as
/// `cargo install --path host` does, and as both sit in cargo's target folder).
fn bench(args: &[std::ffi::OsString]) -> anyhow::Result<()> {
    let host = std::env::current_exe().context("finding the host executable")?;
    let bench = host.with_file_name(format!("host-bench{}", std::env::consts::EXE_SUFFIX));
    if !bench.is_file() {
        bail!(
            "`host bench` runs {}, which is not there: install it with `cargo install --locked --path host`",
            bench.display()
        );
    }
    let status = std::process::Command::new(&bench)
        .args(args)
        .status()
        .with_context(|| format!("running {}", bench.display()))?;
    if !status.success() {
        // host-bench has said why on stderr.
        std::process::exit(status.code().unwrap_or(1));
    }
    Ok(())
}

async fn send(args: SendArgs) -> anyhow::Result<()> {
    let store = Store::open(&args.database.database_url).await?;
    let host = args.load.host(store).await?;
    let request = Request {
        kind: args.kind,
        payload: args.payload.into_bytes(),
        idempotency_key: args.idempotency_key,
        partition_key: args.partition_key,
        ..Request::default()
    };
    serde_json::from_slice::<serde::de::IgnoredAny>(&request.payload)
        .context("--payload must be JSON")?;
    // One process, one command: the backlog is counted once, against the bound alone.
    if let Some(refusal) =
        crate::backpressure::refusal_now(host.store(), host.config().backpressure).await?
    {
        bail!("{refusal}");
    }
    match host.executor().command(&request).await {
        Ok(Reply::Success(body)) => println!("{}", String::from_utf8_lossy(&body)),
        Ok(Reply::Replayed(FirstOutcome::Succeeded(body))) => {
            println!("{}", String::from_utf8_lossy(&body));
        }
        Ok(Reply::Replayed(FirstOutcome::Rejected(failure))) => {
            bail!("{failure} (the first answer of this idempotency key, replayed)")
        }
        Err(error) => bail!("{error}"),
    }
    Ok(())
}
