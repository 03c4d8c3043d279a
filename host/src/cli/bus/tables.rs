//! How `host bus` prints its reports as tables (`--format table`, the default).

use crate::admin::BusMetrics;
use crate::dispatcher::FlushedDelivery;
use crate::store::{ClusterView, DeliveryStatus, DeliveryView, SubscriberBacklog};
use crate::telemetry::commands::CommandMetrics;

/// `host bus health` on PostgreSQL: the hosts, then (detailed) the partitions.
pub(super) fn print_cluster(view: &ClusterView, detailed: bool) {
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
pub(super) fn print_backlog(backlog: &[SubscriberBacklog], detailed: bool) {
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

/// `host bus metrics` as tables: the commands (through a running host), then the deliveries.
pub(super) fn print_metrics(metrics: &BusMetrics, minutes: u64) {
    let report = &metrics.report;
    if let Some(at) = report.reset_at_ms {
        let ago = (crate::store::now_ms() - at).max(0) / 1000;
        println!("counting since `host bus metrics --reset` {ago} s ago");
    }
    match &metrics.commands {
        None => println!(
            "commands: the database does not keep them; through a running host (see \
             `host bus --help`) its own are shown"
        ),
        Some(commands) if commands.is_empty() => {
            println!("commands: this host has answered none since it started or the last reset");
        }
        Some(commands) => print_commands(commands),
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

/// This host's commands, per plugin and kind.
fn print_commands(commands: &[CommandMetrics]) {
    let mut table = comfy_table::Table::new();
    table
        .load_preset(comfy_table::presets::UTF8_BORDERS_ONLY)
        .set_header([
            "plugin", "command", "ok", "replayed", "failed", "failure", "p50 ms", "p95 ms",
            "p99 ms",
        ]);
    for c in commands {
        let failed: Vec<String> = c
            .failed_by_class
            .iter()
            .map(|(class, n)| format!("{class} {n}"))
            .collect();
        table.add_row([
            c.plugin.clone(),
            c.kind.clone(),
            c.ok.to_string(),
            c.replayed.to_string(),
            failed.join(", "),
            format!("{:.1} %", c.failure_rate * 100.0),
            format!("{:.2}", c.latency_p50_ms),
            format!("{:.2}", c.latency_p95_ms),
            format!("{:.2}", c.latency_p99_ms),
        ]);
    }
    println!("this host's commands:\n{table}");
}

pub(super) fn print_flushed(flushed: &[FlushedDelivery], dry_run: bool) {
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

pub(super) fn table(rows: &[DeliveryView]) -> comfy_table::Table {
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
            "due",
            "error class",
            "last error",
        ]);
    let now = crate::store::now_ms();
    for row in rows {
        let status = if row.scheduled {
            "scheduled"
        } else {
            row.status.as_str()
        };
        // Only a pending delivery waits for a time: a scheduled event or a retry.
        let due = if row.status == DeliveryStatus::Pending && row.next_attempt_at_ms > now {
            let secs = (row.next_attempt_at_ms - now + 999) / 1000;
            format!(
                "in {}",
                humantime::format_duration(std::time::Duration::from_secs(secs as u64))
            )
        } else {
            String::new()
        };
        table.add_row([
            row.id.to_string(),
            status.to_owned(),
            row.subscriber.clone(),
            row.kind.clone(),
            row.partition_key.clone().unwrap_or_default(),
            row.attempts.to_string(),
            due,
            row.error_class.clone().unwrap_or_default(),
            row.last_error.clone().unwrap_or_default(),
        ]);
    }
    table
}
