//! `host bus`: the delivery queue, the dead-letter queue and the cluster, as operators see
//! and repair them.

mod tables;

use super::remote::{DeadChange, Reach, Target};
use super::{DatabaseArg, Format, PluginLoad};
use crate::error::ErrorClass;
use crate::store::{DeliveryFilter, DeliveryStatus, Store};
use anyhow::bail;
use clap::{Args, Subcommand, ValueEnum};
use tables::{print_backlog, print_cluster, print_flushed, print_metrics, table};

#[derive(Debug, Subcommand)]
pub(crate) enum BusCommand {
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
pub(crate) struct BusFilter {
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
pub(crate) enum ListType {
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
