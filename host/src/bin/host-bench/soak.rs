//! `host bench --soak`: the demo as a user would load it — every example plugin, orders
//! over HTTP at a steady rate — watched for growth. Every second it samples the pending
//! deliveries and the process's RSS; when the load stops it measures how long the backlog takes
//! to drain. A host that keeps pace holds the pending count flat and its memory level.

use anyhow::{Context, bail};
use handler_host::app::{Delivery, Host};
use handler_host::config::HostConfig;
use handler_host::config::Limits;
use handler_host::http;
use handler_host::plugin_dir::{BuildPolicy, PluginDir};
use handler_host::sandbox::Sandbox;
use handler_host::store::Store;
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long the soak waits for the backlog to drain after the load before it gives up.
const DRAIN_LIMIT: Duration = Duration::from_secs(300);

/// One second of the soak.
#[derive(Debug, Serialize)]
struct Sample {
    second: u64,
    pending: i64,
    rss_mib: f64,
}

#[derive(Debug, Serialize)]
struct SoakReport {
    command: String,
    rate: f64,
    seconds: f64,
    calls_per_instance: usize,
    orders_sent: u64,
    orders_failed: u64,
    max_pending: i64,
    pending_at_end: i64,
    drain_seconds: f64,
    /// Pending deliveries when the drain ended: 0 unless it hit [`DRAIN_LIMIT`].
    pending_after_drain: i64,
    rss_first_mib: f64,
    rss_last_mib: f64,
    samples: Vec<Sample>,
}

/// Runs the soak and writes `soak.md` and `soak.json` to `--out`.
///
/// # Errors
/// Fails when the examples do not load, the database cannot be opened, or the demo's
/// configuration commands fail.
pub async fn run(args: &super::BenchArgs) -> anyhow::Result<()> {
    if args.soak_rate <= 0.0 || args.soak_seconds <= 0.0 || args.soak_calls_per_instance == 0 {
        bail!("--soak-rate, --soak-seconds and --soak-calls-per-instance must be positive");
    }
    let scratch = tempfile::tempdir().context("creating a scratch directory")?;
    let sandbox = Sandbox::new(Limits {
        calls_per_instance: args.soak_calls_per_instance,
        ..Limits::DEFAULT
    })?;
    let (_, registry) = PluginDir::load(&sandbox, &args.examples, BuildPolicy::BuildStale).await?;
    if !registry.load_errors().is_empty() {
        bail!(
            "the examples in {} did not all load: {:?}",
            args.examples.display(),
            registry.load_errors()
        );
    }
    let url = format!("sqlite://{}", scratch.path().join("soak.db").display());
    let store = Store::open(&url).await?;
    let host = Host::new(store.clone(), registry, Arc::new(HostConfig::default()));
    let background = host.start(Some(&Delivery::new("soak"))).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let app = http::router(host.app_state(Some(&background)));
    tokio::spawn(async move { axum::serve(listener, app).await });

    let client = reqwest::Client::new();
    // The demo's walk-through: stock, then the configuration the Python and JavaScript
    // subscribers wait for, so every delivery can succeed.
    for (kind, body) in [
        ("stock.add", r#"{"sku":"widget","qty":1000000000}"#),
        ("fraud.rules", r#"{"max_qty":5}"#),
        ("notify.channel", r#"{"channel":"email"}"#),
    ] {
        let response = client
            .post(format!("{base}/commands/{kind}"))
            .body(body)
            .send()
            .await?;
        if !response.status().is_success() {
            bail!(
                "`{kind}` answered {}: {}",
                response.status(),
                response.text().await?
            );
        }
    }

    let sent = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let duration = Duration::from_secs_f64(args.soak_seconds);
    let start = Instant::now();
    let load = {
        let (client, base, sent, failed) =
            (client.clone(), base.clone(), sent.clone(), failed.clone());
        let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / args.soak_rate));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        tokio::spawn(async move {
            let mut orders = tokio::task::JoinSet::new();
            let mut i = 0u64;
            while start.elapsed() < duration {
                ticker.tick().await;
                let (client, base, failed) = (client.clone(), base.clone(), failed.clone());
                orders.spawn(async move {
                    let body = format!(r#"{{"order_id":"soak-{i}","sku":"widget","qty":1}}"#);
                    let ok = client
                        .post(format!("{base}/commands/order.place"))
                        .body(body)
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success());
                    if !ok {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                });
                sent.fetch_add(1, Ordering::Relaxed);
                i += 1;
                while orders.try_join_next().is_some() {}
            }
            while orders.join_next().await.is_some() {}
        })
    };

    let mut samples = Vec::new();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    while start.elapsed() < duration {
        ticker.tick().await;
        let sample = Sample {
            second: start.elapsed().as_secs(),
            pending: store.stats().await?.by_status["pending"],
            rss_mib: crate::report::process_memory_mib("VmRSS"),
        };
        tracing::info!(
            second = sample.second,
            pending = sample.pending,
            rss_mib = sample.rss_mib,
            "soak"
        );
        samples.push(sample);
    }
    load.await?;
    let pending_at_end = store.stats().await?.by_status["pending"];
    let drain_started = Instant::now();
    while store.stats().await?.by_status["pending"] > 0 && drain_started.elapsed() < DRAIN_LIMIT {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drain_seconds = drain_started.elapsed().as_secs_f64();
    let pending_after_drain = store.stats().await?.by_status["pending"];
    background.stop(Duration::ZERO).await;

    let report = SoakReport {
        command: format!(
            "host bench --soak --soak-rate {} --soak-seconds {} --soak-calls-per-instance {}",
            args.soak_rate, args.soak_seconds, args.soak_calls_per_instance
        ),
        calls_per_instance: args.soak_calls_per_instance,
        rate: args.soak_rate,
        seconds: args.soak_seconds,
        orders_sent: sent.load(Ordering::Relaxed),
        orders_failed: failed.load(Ordering::Relaxed),
        max_pending: samples.iter().map(|s| s.pending).max().unwrap_or(0),
        pending_at_end,
        drain_seconds,
        pending_after_drain,
        rss_first_mib: samples.first().map_or(0.0, |s| s.rss_mib),
        rss_last_mib: samples.last().map_or(0.0, |s| s.rss_mib),
        samples,
    };
    let markdown = format!(
        "# Soak\n\nReproduce: `{}`\n\nThe example plugins (five, three languages) on SQLite; `order.place` over HTTP at a steady {} orders/s for {} s, each order delivered to four subscribers; each instance serves {} call(s).\n\n| figure | value |\n|---|---:|\n| orders sent | {} |\n| orders not answered 2xx | {} |\n| pending deliveries, most seen | {} |\n| pending deliveries when the load stopped | {} |\n| drained after the load in | {:.1} s |\n| RSS, first second | {:.1} MiB |\n| RSS, last second | {:.1} MiB |\n",
        report.command,
        report.rate,
        report.seconds,
        report.calls_per_instance,
        report.orders_sent,
        report.orders_failed,
        report.max_pending,
        report.pending_at_end,
        report.drain_seconds,
        report.rss_first_mib,
        report.rss_last_mib,
    );
    crate::report::write(&args.out, "soak", &markdown, &report)?;
    if report.orders_failed > 0 {
        bail!("{} orders were not answered 2xx", report.orders_failed);
    }
    if report.pending_after_drain > 0 {
        bail!(
            "{} deliveries were still pending {} s after the load stopped",
            report.pending_after_drain,
            DRAIN_LIMIT.as_secs()
        );
    }
    Ok(())
}
