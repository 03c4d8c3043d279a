//! The `host` command line: `run`, `build`, `send` and `bus`.

use crate::committer::Committer;
use crate::config::{DEFAULT_DATABASE_URL, DEFAULT_LISTEN, DispatchConfig, Limits};
use crate::dispatcher;
use crate::executor::{Executor, Reply, Request};
use crate::http::{self, AppState};
use crate::registry::{BuildPolicy, Registry};
use crate::retry::RetryPolicy;
use crate::sandbox::Sandbox;
use crate::store::{DeliveryFilter, DeliveryStatus, DeliveryView, Store};
use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

#[derive(Debug, Parser)]
#[command(
    name = "host",
    version,
    about = "Runs message handlers written as WebAssembly components, durably"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load the plugins and serve commands, queries and event delivery.
    Run(RunArgs),
    /// Build every plugin source folder (a folder with a plugin.toml) that is missing or stale.
    Build {
        #[command(flatten)]
        plugins: PluginsArg,
    },
    /// Run one command in-process against the database and print its answer.
    Send(SendArgs),
    /// Inspect and repair the delivery queue and the dead-letter queue.
    Bus {
        #[command(subcommand)]
        command: BusCommand,
    },
}

#[derive(Debug, Args)]
pub struct PluginsArg {
    /// Folder of plugins: component files (*.wasm) and source folders with a plugin.toml.
    #[arg(long, env = "HOST_PLUGINS", default_value = "./plugins")]
    pub plugins: PathBuf,
}

#[derive(Debug, Args)]
pub struct DatabaseArg {
    /// Database URL. SQLite: `sqlite://FILE` (created if missing).
    #[arg(long, env = "HOST_DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub plugins: PluginsArg,
    #[command(flatten)]
    pub database: DatabaseArg,
    /// Address to serve HTTP on. Port 0 picks a free port (printed at start).
    #[arg(long, env = "HOST_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: String,
    /// Load components as they are; do not build stale source folders.
    #[arg(long)]
    pub no_build: bool,
    #[command(flatten)]
    pub tuning: Tuning,
    /// Print the effective configuration as JSON and exit.
    #[arg(long)]
    pub print_config: bool,
}

/// Limits and retry policy; defaults come from [`Limits::DEFAULT`] and [`RetryPolicy::DEFAULT`].
#[derive(Debug, Args)]
pub struct Tuning {
    /// Wall-clock budget of one handler call, in milliseconds.
    #[arg(long, default_value_t = Limits::DEFAULT.call_deadline.as_millis() as u64)]
    pub call_deadline_ms: u64,
    /// Cap on a plugin's linear memory, in MiB.
    #[arg(long, default_value_t = Limits::DEFAULT.memory_bytes >> 20)]
    pub memory_mib: usize,
    /// Attempts per delivery before it is dead-lettered.
    #[arg(long, default_value_t = RetryPolicy::DEFAULT.max_attempts)]
    pub max_attempts: u32,
    /// Delay before the first retry, in milliseconds.
    #[arg(long, default_value_t = RetryPolicy::DEFAULT.initial_delay.as_millis() as u64)]
    pub retry_initial_ms: u64,
    /// Longest delay between retries, in milliseconds.
    #[arg(long, default_value_t = RetryPolicy::DEFAULT.max_delay.as_millis() as u64)]
    pub retry_max_ms: u64,
    /// How long an idempotency key's outcome is kept and replayed, in seconds.
    #[arg(long, default_value_t = crate::config::DEFAULT_IDEMPOTENCY_TTL.as_secs())]
    pub idempotency_ttl_secs: u64,
}

impl Tuning {
    fn limits(&self) -> anyhow::Result<Limits> {
        if self.call_deadline_ms == 0 || self.memory_mib == 0 {
            bail!("--call-deadline-ms and --memory-mib must be greater than 0");
        }
        Ok(Limits {
            call_deadline: Duration::from_millis(self.call_deadline_ms),
            memory_bytes: self.memory_mib << 20,
            ..Limits::DEFAULT
        })
    }

    fn dispatch(&self) -> anyhow::Result<DispatchConfig> {
        if self.max_attempts == 0 {
            bail!("--max-attempts must be at least 1");
        }
        if self.retry_initial_ms > self.retry_max_ms {
            bail!("--retry-initial-ms must not exceed --retry-max-ms");
        }
        let retry = RetryPolicy::DEFAULT
            .max_attempts(self.max_attempts)
            .initial_delay(Duration::from_millis(self.retry_initial_ms))
            .max_delay(Duration::from_millis(self.retry_max_ms));
        Ok(DispatchConfig {
            retry,
            ..DispatchConfig::DEFAULT
        })
    }
}

#[derive(Debug, Args)]
pub struct SendArgs {
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
    pub plugins: PluginsArg,
    #[command(flatten)]
    pub database: DatabaseArg,
    #[command(flatten)]
    pub tuning: Tuning,
}

#[derive(Debug, Subcommand)]
pub enum BusCommand {
    /// List deliveries.
    List {
        /// Which deliveries: waiting to run, dead-lettered, completed, or all.
        #[arg(long = "type", value_enum, default_value_t = ListType::Pending)]
        kind: ListType,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Only this subscriber's deliveries.
        #[arg(long)]
        subscriber: Option<String>,
        #[arg(long)]
        limit: Option<u32>,
        #[command(flatten)]
        database: DatabaseArg,
    },
    /// Put a dead-lettered delivery back in the queue with its attempts reset.
    Replay {
        /// The delivery id (the `id` column of `bus list`).
        id: i64,
        #[command(flatten)]
        database: DatabaseArg,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ListType {
    Pending,
    Dlq,
    Done,
    All,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
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
        Command::Build { plugins } => build(plugins).await,
        Command::Send(args) => send(args).await,
        Command::Bus { command } => bus(command).await,
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let limits = args.tuning.limits()?;
    let dispatch = args.tuning.dispatch()?;
    if args.print_config {
        let config = serde_json::json!({
            "plugins": args.plugins.plugins, "database_url": args.database.database_url,
            "listen": args.listen, "build": !args.no_build, "limits": limits,
            "dispatch": dispatch,
            "retry": {
                "initial_delay_ms": dispatch.retry.initial_delay.as_millis() as u64,
                "multiplier": dispatch.retry.multiplier,
                "max_delay_ms": dispatch.retry.max_delay.as_millis() as u64,
                "max_attempts": dispatch.retry.max_attempts, "jitter": dispatch.retry.jitter,
            },
            "idempotency_ttl_secs": args.tuning.idempotency_ttl_secs,
        });
        println!("{}", serde_json::to_string_pretty(&config)?);
        return Ok(());
    }
    let policy = if args.no_build {
        BuildPolicy::LoadOnly
    } else {
        BuildPolicy::BuildStale
    };
    let store = Store::open(&args.database.database_url).await?;
    let sandbox = Sandbox::new(limits)?;
    let (registry, load_errors) =
        Registry::load_dir(&sandbox, &args.plugins.plugins, policy).await?;
    let wake = Arc::new(Notify::new());
    let committer = Committer::spawn(store.clone(), wake.clone());
    let ttl = Duration::from_secs(args.tuning.idempotency_ttl_secs);
    let executor = Arc::new(Executor::new(
        Arc::new(registry),
        store.clone(),
        committer,
        ttl,
    ));
    // Deliveries committed before a crash or by another process are found by the first scan.
    wake.notify_one();
    dispatcher::spawn(executor.clone(), store, dispatch, wake);

    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let address = listener.local_addr()?;
    tracing::info!(%address, plugins = executor.registry().names().len(), "serving");
    // A machine-readable line on stdout for scripts and tests that wait for readiness.
    println!("host listening on http://{address}");
    let app = http::router(AppState {
        executor,
        load_errors: Arc::new(load_errors),
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("HTTP server failed")
}

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
            && let Err(error) = crate::manifest::build(&folder, &manifest).await
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

async fn send(args: SendArgs) -> anyhow::Result<()> {
    let store = Store::open(&args.database.database_url).await?;
    let sandbox = Sandbox::new(args.tuning.limits()?)?;
    let (registry, _) =
        Registry::load_dir(&sandbox, &args.plugins.plugins, BuildPolicy::BuildStale).await?;
    let committer = Committer::spawn(store.clone(), Arc::new(Notify::new()));
    let ttl = Duration::from_secs(args.tuning.idempotency_ttl_secs);
    let executor = Executor::new(Arc::new(registry), store, committer, ttl);
    let request = Request {
        kind: args.kind,
        payload: args.payload.into_bytes(),
        idempotency_key: args.idempotency_key,
        partition_key: args.partition_key,
        ..Request::default()
    };
    serde_json::from_slice::<serde::de::IgnoredAny>(&request.payload)
        .context("--payload must be JSON")?;
    match executor.command(&request).await {
        Ok(Reply::Success(body)) => println!("{}", String::from_utf8_lossy(&body)),
        Ok(Reply::Replayed { status, body }) => {
            println!("{}", String::from_utf8_lossy(&body));
            if status >= 400 {
                bail!("replayed answer: HTTP {status}");
            }
        }
        Err(error) => {
            eprintln!("{}", String::from_utf8_lossy(&error.body()));
            bail!("{error}");
        }
    }
    Ok(())
}

async fn bus(command: BusCommand) -> anyhow::Result<()> {
    match command {
        BusCommand::List {
            kind,
            format,
            subscriber,
            limit,
            database,
        } => {
            let store = Store::open(&database.database_url).await?;
            let status = match kind {
                ListType::Pending => Some(DeliveryStatus::Pending),
                ListType::Dlq => Some(DeliveryStatus::Dead),
                ListType::Done => Some(DeliveryStatus::Done),
                ListType::All => None,
            };
            let rows = store
                .list_deliveries(&DeliveryFilter {
                    status,
                    subscriber,
                    limit,
                })
                .await?;
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
                Format::Table => println!("{}", table(&rows)),
            }
            Ok(())
        }
        BusCommand::Replay { id, database } => {
            let store = Store::open(&database.database_url).await?;
            if !store.replay(id).await? {
                bail!("no dead-lettered delivery with id {id} (see `host bus list --type dlq`)");
            }
            println!(
                "delivery {id} is queued again; a running host delivers it within its poll interval"
            );
            Ok(())
        }
    }
}

fn table(rows: &[DeliveryView]) -> comfy_table::Table {
    let mut table = comfy_table::Table::new();
    table
        .load_preset(comfy_table::presets::UTF8_BORDERS_ONLY)
        .set_header([
            "id",
            "status",
            "subscriber",
            "kind",
            "partition key",
            "attempts",
            "error class",
            "last error",
        ]);
    for row in rows {
        table.add_row([
            row.id.to_string(),
            format!("{:?}", row.status).to_lowercase(),
            row.subscriber.clone(),
            row.kind.clone(),
            row.partition_key.clone().unwrap_or_default(),
            row.attempts.to_string(),
            row.error_class.clone().unwrap_or_default(),
            row.last_error.clone().unwrap_or_default(),
        ]);
    }
    table
}
