//! `host bus`: the delivery queue, the dead-letter queue and the cluster, as operators see
//! and repair them.

use super::remote::{DeadChange, Reach, Target};
use super::{DatabaseArg, Format, PluginLoad};
use crate::dispatcher::FlushedDelivery;
use crate::error::ErrorClass;
use crate::store::{
    ClusterView, DeliveryFilter, DeliveryStatus, DeliveryView, MetricsReport, Store,
    SubscriberBacklog,
};
use anyhow::bail;
use clap::{Args, Subcommand, ValueEnum};

#[derive(Debug, Subcommand)]
pub enum BusCommand {
    /// List deliveries.
    List {
        /// Which deliveries: waiting to run, dead-lettered, completed, or all.
        #[arg(long = "type", value_enum, default_value_t = ListType::Pending)]
        which: ListType,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        #[command(flatten)]
        filter: BusFilter,
        #[arg(long)]
        limit: Option<u32>,
        #[command(flatten)]
        reach: Reach,
    },
    /// Show one delivery: its whole envelope, attempts, first and last failure, last error and
    /// the plugin version that handled it (JSON).
    Show {
        /// The delivery id (the `id` column of `bus list`).
        id: i64,
        #[command(flatten)]
        reach: Reach,
    },
    /// Put dead-lettered deliveries back in the queue with their attempts reset: one by id,
    /// or `--all` that match the filters. Replaying the letter that holds back a strict key
    /// releases the key.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["id", "all"])))]
    Replay {
        /// The delivery id (the `id` column of `bus list`).
        id: Option<i64>,
        /// Every dead letter matching the filters.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        filter: BusFilter,
        /// Change nothing. With an id: run the letter on its subscriber's current build in a
        /// unit of work that is thrown away, and print what it would write (each key's value
        /// now and after) and emit, or the error it would fail with. With `--all`: list the
        /// letters that would be replayed.
        #[arg(long)]
        dry_run: bool,
        /// Replay the delivery whatever its status: a done one runs again and its effects
        /// apply again, a pending one runs now with its attempts reset.
        #[arg(long, requires = "id", conflicts_with_all = ["all", "dry_run"])]
        force: bool,
        #[command(flatten)]
        reach: Reach,
        #[command(flatten)]
        load: PluginLoad,
    },
    /// Delete the dead letters matching the filters. Refuses without `--force`, saying how
    /// many would go. A purged letter no longer holds back its key.
    Purge {
        #[command(flatten)]
        filter: BusFilter,
        /// Really delete them.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        reach: Reach,
    },
    /// Each subscriber's backlog (pending, waiting for a retry, how long the oldest has
    /// waited, dead letters) and, on PostgreSQL, the hosts sharing the database.
    Health {
        /// Also the dead letters by error class, and (PostgreSQL) each partition's owner,
        /// lease and backlog.
        #[arg(long)]
        detailed: bool,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        #[command(flatten)]
        reach: Reach,
    },
    /// How the deliveries of the last `--minutes` fared, per subscriber and message kind:
    /// done, pending and dead, the share whose first attempt failed, and the p50/p95/p99 time
    /// from the message's occurrence to its delivery done. Read from the database, so every
    /// host's work counts (`GET /metrics` has this host's own histograms).
    Metrics {
        /// How far back, by the messages' occurrence (never before the last `--reset`).
        #[arg(long, default_value_t = 60)]
        minutes: u64,
        /// Count from now on: later reports leave out the messages that occurred before.
        /// Nothing is deleted.
        #[arg(long)]
        reset: bool,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        #[command(flatten)]
        reach: Reach,
    },
    /// Run the deliveries that are due now in this process, in order per key, and print each
    /// outcome: for hosts started with `--no-dispatch`, or to drain by hand. Beside a running
    /// host a delivery may run in both; its effects commit once.
    Flush {
        /// Most deliveries to run.
        #[arg(long, default_value_t = crate::dispatcher::DEFAULT_FLUSH_LIMIT)]
        limit: usize,
        /// Run nothing: list the deliveries that are due now.
        #[arg(long)]
        dry_run: bool,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        #[command(flatten)]
        reach: Reach,
        #[command(flatten)]
        load: PluginLoad,
    },
    /// Show the partition count of a PostgreSQL database, or change it with `--set N` while no
    /// host runs (a host holding a lease makes it refuse).
    Partitions {
        /// The new partition count (1 to 4096).
        #[arg(long)]
        set: Option<i64>,
        #[command(flatten)]
        database: DatabaseArg,
    },
    /// Counts of deliveries by status, and of failed ones by error class.
    Stats {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        #[command(flatten)]
        reach: Reach,
    },
}

/// Which deliveries a bus command applies to.
#[derive(Debug, Clone, Default, Args, serde::Deserialize, serde::Serialize)]
pub struct BusFilter {
    /// Only this subscriber's (plugin's) deliveries.
    #[arg(long, visible_alias = "plugin")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscriber: Option<String>,
    /// Only messages of this kind; `*` matches any run of characters (`order.*`).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Only deliveries whose last error has this class (`retryable`, `permanent`, `deadline`,
    /// `memory_limit`, `stack_overflow`, `panic`, `trap`, `host`, `rejected`, `loop`).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_class: Option<String>,
}

impl BusFilter {
    /// Whether no filter was given.
    fn is_empty(&self) -> bool {
        self.subscriber.is_none() && self.kind.is_none() && self.error_class.is_none()
    }

    pub(crate) fn to_filter(
        &self,
        status: Option<DeliveryStatus>,
        limit: Option<u32>,
    ) -> anyhow::Result<DeliveryFilter> {
        if let Some(class) = &self.error_class
            && ErrorClass::parse(class).is_none()
        {
            bail!(
                "`{class}` is not an error class: one of {}",
                ErrorClass::ALL.map(ErrorClass::as_str).join(", ")
            );
        }
        Ok(DeliveryFilter {
            status,
            subscriber: self.subscriber.clone(),
            kind: self.kind.clone(),
            error_class: self.error_class.clone(),
            limit,
        })
    }
}

#[derive(Debug, Clone, Copy, Default, ValueEnum, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ListType {
    #[default]
    Pending,
    Dlq,
    Done,
    All,
}

impl ListType {
    /// The delivery status it selects (`None`: every status).
    pub fn status(self) -> Option<DeliveryStatus> {
        match self {
            Self::Pending => Some(DeliveryStatus::Pending),
            Self::Dlq => Some(DeliveryStatus::Dead),
            Self::Done => Some(DeliveryStatus::Done),
            Self::All => None,
        }
    }
}

pub(super) async fn run(command: BusCommand) -> anyhow::Result<()> {
    if let BusCommand::Partitions { set, database } = command {
        return partitions(set, &database).await;
    }
    let reach = match &command {
        BusCommand::List { reach, .. }
        | BusCommand::Show { reach, .. }
        | BusCommand::Replay { reach, .. }
        | BusCommand::Purge { reach, .. }
        | BusCommand::Health { reach, .. }
        | BusCommand::Metrics { reach, .. }
        | BusCommand::Flush { reach, .. }
        | BusCommand::Stats { reach, .. } => reach,
        BusCommand::Partitions { .. } => unreachable!("handled above"),
    };
    let target = Target::reach(reach).await?;
    let result = on(&target, command).await;
    target.close().await;
    result
}

/// Runs `command` on the deliveries `target` reaches.
async fn on(target: &Target, command: BusCommand) -> anyhow::Result<()> {
    match command {
        BusCommand::List {
            which,
            format,
            filter,
            limit,
            ..
        } => {
            let rows = target.list(which, &filter, limit).await?;
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
                Format::Table if rows.is_empty() => {
                    let what = match which {
                        ListType::Pending => "no deliveries waiting to run",
                        ListType::Dlq => "no dead-lettered deliveries",
                        ListType::Done => "no completed deliveries kept",
                        ListType::All => "no deliveries",
                    };
                    println!(
                        "{what}{} (`--type pending|dlq|done|all` chooses which)",
                        if filter.is_empty() {
                            ""
                        } else {
                            " match the filters"
                        }
                    );
                }
                Format::Table => println!("{}", table(&rows)),
            }
            Ok(())
        }
        BusCommand::Show { id, .. } => {
            let Some(delivery) = target.delivery(id).await? else {
                bail!("no delivery with id {id} (see `host bus list --type all`)");
            };
            println!("{}", serde_json::to_string_pretty(&delivery)?);
            Ok(())
        }
        BusCommand::Replay {
            id,
            all,
            filter,
            dry_run,
            force,
            load,
            ..
        } => {
            if force {
                let id = id.expect("clap requires an id with --force");
                let Some(delivery) = target.delivery(id).await? else {
                    bail!("no delivery with id {id} (see `host bus list --type all`)");
                };
                target.replay_forced(id).await?;
                let was = match delivery.view.status {
                    DeliveryStatus::Done => "done: its handler runs again",
                    DeliveryStatus::Pending => "pending: it runs now",
                    DeliveryStatus::Dead => "dead",
                };
                println!("delivery {id} is queued again, attempts reset; it was {was}");
                return Ok(());
            }
            if !all {
                let id = id.expect("clap requires an id without --all");
                if dry_run {
                    let Some(report) = target.rehearse(id, &load).await? else {
                        bail!(
                            "no dead-lettered delivery with id {id} (see `host bus list --type dlq`)"
                        );
                    };
                    println!("{}", serde_json::to_string_pretty(&report)?);
                    return Ok(());
                }
                if !target.replay(id).await? {
                    match target.delivery(id).await? {
                        Some(delivery) => bail!(
                            "delivery {id} is {}, not dead: `--force` replays it anyway (a done \
                             one's handler runs again)",
                            delivery.view.status.as_str()
                        ),
                        None => bail!(
                            "no dead-lettered delivery with id {id} (see `host bus list --type dlq`)"
                        ),
                    }
                }
                println!(
                    "delivery {id} is queued again; a running host delivers it within its poll interval"
                );
                return Ok(());
            }
            let ids = target
                .change_dead(DeadChange::Replay, &filter, dry_run)
                .await?;
            let verb = if dry_run { "would replay" } else { "replayed" };
            println!("{verb} {} dead-lettered deliveries: {ids:?}", ids.len());
            Ok(())
        }
        BusCommand::Purge { filter, force, .. } => {
            if !force {
                let ids = target.change_dead(DeadChange::Purge, &filter, true).await?;
                if ids.is_empty() {
                    println!("no dead-lettered deliveries match: nothing to purge");
                    return Ok(());
                }
                bail!(
                    "refusing to purge without --force: {} dead-lettered deliveries would be deleted: {ids:?}",
                    ids.len()
                );
            }
            let ids = target
                .change_dead(DeadChange::Purge, &filter, false)
                .await?;
            println!("purged {} dead-lettered deliveries: {ids:?}", ids.len());
            Ok(())
        }
        BusCommand::Health {
            detailed, format, ..
        } => {
            let health = target.health().await?;
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&health)?),
                Format::Table => {
                    print_backlog(&health.subscribers, detailed);
                    match &health.cluster {
                        Some(view) => print_cluster(view, detailed),
                        None => println!("one host on SQLite: no partitions or leases"),
                    }
                }
            }
            Ok(())
        }
        BusCommand::Metrics {
            minutes,
            reset,
            format,
            ..
        } => {
            if reset {
                let at = target.reset_metrics().await?;
                match format {
                    Format::Json => println!("{}", serde_json::json!({ "reset_at_ms": at })),
                    Format::Table => println!(
                        "`host bus metrics` counts the messages that occur from now on \
                         (reset at {at} ms since the epoch); nothing was deleted"
                    ),
                }
                return Ok(());
            }
            let report = target.metrics(minutes).await?;
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
                Format::Table => print_metrics(&report, minutes),
            }
            Ok(())
        }
        BusCommand::Flush {
            limit,
            dry_run,
            format,
            load,
            ..
        } => {
            let flushed = target.flush(limit, dry_run, &load).await?;
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&flushed)?),
                Format::Table if flushed.is_empty() => {
                    println!("no delivery is due now (`host bus list` shows the pending ones)");
                }
                Format::Table => print_flushed(&flushed, dry_run),
            }
            Ok(())
        }
        BusCommand::Stats { format, .. } => {
            let stats = target.stats().await?;
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&stats)?),
                Format::Table => {
                    let mut t = comfy_table::Table::new();
                    t.load_preset(comfy_table::presets::UTF8_BORDERS_ONLY)
                        .set_header(["status", "count"]);
                    for (status, n) in &stats.by_status {
                        t.add_row([status.clone(), n.to_string()]);
                    }
                    println!("{t}");
                    let mut t = comfy_table::Table::new();
                    t.load_preset(comfy_table::presets::UTF8_BORDERS_ONLY)
                        .set_header(["error class", "dead", "retrying"]);
                    for (class, counts) in &stats.by_error_class {
                        let n = |s: &str| counts.get(s).copied().unwrap_or(0).to_string();
                        t.add_row([class.clone(), n("dead"), n("pending")]);
                    }
                    println!("{t}");
                }
            }
            Ok(())
        }
        BusCommand::Partitions { .. } => unreachable!("`run` handles partitions on the database"),
    }
}

/// `host bus partitions [--set N]`: on the database alone, since changing the count needs
/// every host stopped.
async fn partitions(set: Option<i64>, database: &DatabaseArg) -> anyhow::Result<()> {
    let store = Store::open(&database.database_url).await?;
    let result = async {
        let Some(cluster) = store.cluster() else {
            bail!("partitions exist only on PostgreSQL: a SQLite database is served by one host");
        };
        if let Some(count) = set {
            cluster.set_partitions(count).await?;
            println!("the deliveries are split into {count} partitions from now on");
        } else {
            let view = cluster.view().await?;
            println!(
                "{} partitions (`host bus health` shows their owners and backlog)",
                view.partitions
            );
        }
        Ok(())
    }
    .await;
    store.close().await;
    result
}

/// `host bus health` on PostgreSQL: the hosts, then (detailed) the partitions.
fn print_cluster(view: &ClusterView, detailed: bool) {
    let now = crate::store::now_ms();
    let mut hosts = comfy_table::Table::new();
    hosts
        .load_preset(comfy_table::presets::UTF8_BORDERS_ONLY)
        .set_header([
            "host",
            "name",
            "address",
            "up for",
            "heartbeat",
            "partitions",
        ]);
    for host in &view.hosts {
        let held = view
            .leases
            .iter()
            .filter(|l| l.owner.as_deref() == Some(host.id.as_str()) && l.expires_in_ms > 0)
            .count();
        let heartbeat = if host.expires_in_ms > 0 {
            format!("live (lease {} ms left)", host.expires_in_ms)
        } else {
            format!("gone {} ms ago", -host.expires_in_ms)
        };
        hosts.add_row([
            host.id.clone(),
            host.name.clone(),
            host.address.clone(),
            format!("{} s", (now - host.started_at_ms).max(0) / 1000),
            heartbeat,
            held.to_string(),
        ]);
    }
    if view.hosts.is_empty() {
        println!("no host is running on this database");
    } else {
        println!("{hosts}");
    }
    if !detailed {
        let held = view.leases.iter().filter(|l| l.expires_in_ms > 0).count();
        println!(
            "{} partitions, {held} leased (`--detailed` shows each one)",
            view.partitions
        );
        return;
    }
    let name_of = |id: &str| {
        view.hosts
            .iter()
            .find(|h| h.id == id)
            .map_or_else(|| id.to_owned(), |h| h.name.clone())
    };
    let mut partitions = comfy_table::Table::new();
    partitions
        .load_preset(comfy_table::presets::UTF8_BORDERS_ONLY)
        .set_header([
            "partition",
            "owner",
            "lease",
            "pending",
            "oldest waiting",
            "dead",
        ]);
    for lease in &view.leases {
        let (owner, state) = match &lease.owner {
            None => ("-".to_owned(), "free".to_owned()),
            Some(id) if lease.expires_in_ms > 0 => (
                name_of(id),
                format!("epoch {}, {} ms left", lease.epoch, lease.expires_in_ms),
            ),
            Some(id) => (
                name_of(id),
                format!("expired {} ms ago", -lease.expires_in_ms),
            ),
        };
        partitions.add_row([
            lease.partition.to_string(),
            owner,
            state,
            lease.pending.to_string(),
            lease
                .oldest_pending_ms
                .map_or_else(String::new, |ms| format!("{ms} ms")),
            lease.dead.to_string(),
        ]);
    }
    println!("{partitions}");
}

/// `host bus health`: one row per subscriber with unfinished deliveries.
fn print_backlog(backlog: &[SubscriberBacklog], detailed: bool) {
    if backlog.is_empty() {
        println!("no delivery is waiting and no letter is dead");
        return;
    }
    let now = crate::store::now_ms();
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::UTF8_BORDERS_ONLY);
    let mut header = vec![
        "subscriber",
        "pending",
        "waiting for a retry",
        "oldest waiting",
        "dead",
    ];
    if detailed {
        header.push("dead by class");
    }
    table.set_header(header);
    for b in backlog {
        let mut row = vec![
            b.subscriber.clone(),
            b.pending.to_string(),
            b.scheduled.to_string(),
            b.oldest_pending_age_ms(now)
                .map_or_else(String::new, |ms| format!("{ms} ms")),
            b.dead().to_string(),
        ];
        if detailed {
            let classes: Vec<String> = b
                .dead_by_class
                .iter()
                .map(|(class, n)| format!("{class} {n}"))
                .collect();
            row.push(classes.join(", "));
        }
        table.add_row(row);
    }
    println!("{table}");
}

/// `host bus metrics` as a table.
fn print_metrics(report: &MetricsReport, minutes: u64) {
    if let Some(at) = report.reset_at_ms {
        let ago = (crate::store::now_ms() - at).max(0) / 1000;
        println!("counting since `host bus metrics --reset` {ago} s ago");
    }
    let metrics = &report.deliveries;
    if metrics.is_empty() {
        println!("no delivery of a message from the last {minutes} minutes is kept");
        return;
    }
    let mut table = comfy_table::Table::new();
    table
        .load_preset(comfy_table::presets::UTF8_BORDERS_ONLY)
        .set_header([
            "subscriber",
            "kind",
            "done",
            "pending",
            "dead",
            "failed first",
            "p50 ms",
            "p95 ms",
            "p99 ms",
        ]);
    for m in metrics {
        table.add_row([
            m.subscriber.clone(),
            m.kind.clone(),
            m.done.to_string(),
            m.pending.to_string(),
            m.dead.to_string(),
            format!("{:.1} %", m.failure_rate * 100.0),
            m.latency_p50_ms.to_string(),
            m.latency_p95_ms.to_string(),
            m.latency_p99_ms.to_string(),
        ]);
    }
    println!("{table}");
}

fn print_flushed(flushed: &[FlushedDelivery], dry_run: bool) {
    let now = crate::store::now_ms();
    let mut table = comfy_table::Table::new();
    table
        .load_preset(comfy_table::presets::UTF8_BORDERS_ONLY)
        .set_header(["id", "subscriber", "kind", "key", "attempt", "outcome"]);
    for f in flushed {
        let outcome = match (f.outcome.as_deref(), f.class.as_deref(), f.retry_at_ms) {
            (None, ..) => "due".to_owned(),
            (Some(outcome), Some(class), Some(at)) => {
                format!("{outcome} ({class}) in {} ms", (at - now).max(0))
            }
            (Some(outcome), Some(class), None) => format!("{outcome} ({class})"),
            (Some(outcome), None, _) => outcome.to_owned(),
        };
        table.add_row([
            f.id.to_string(),
            f.subscriber.clone(),
            f.kind.clone(),
            f.partition_key.clone().unwrap_or_default(),
            f.attempt.to_string(),
            outcome,
        ]);
    }
    println!("{table}");
    if dry_run {
        println!("{} deliveries due now; nothing was run", flushed.len());
    } else {
        let count = |o: &str| {
            flushed
                .iter()
                .filter(|f| f.outcome.as_deref() == Some(o))
                .count()
        };
        println!(
            "ran {} deliveries: {} done, {} to retry, {} dead",
            flushed.len(),
            count("done"),
            count("retry"),
            count("dead")
        );
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
