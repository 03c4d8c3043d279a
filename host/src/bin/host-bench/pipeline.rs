//! The pipeline's figures: **P1**/**P2** durable commands per second, **P4-stream** events
//! delivered per second while commands stream in, **P5** latency in an open loop; on SQLite
//! and on PostgreSQL, with one host or several sharing the database.

use crate::report::Run;
use crate::{Bench, PLUGIN, close};
use handler_host::app::{Delivery, Host};
use handler_host::executor::{Executor, Request};
use handler_host::http;
use handler_host::message::Message;
use handler_host::stats::percentile;
use handler_host::store::{StateChanges, Store, Write, now_ms};
use handler_host::unit_of_work::{Access, UnitOfWork};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Clone, Copy)]
pub(crate) enum Route {
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
pub(crate) enum StoreKind {
    Sqlite,
    Postgres,
}

impl Bench {
    /// P1/P2: closed loop, `concurrency` callers, each command on its own key.
    pub(crate) async fn commands(
        &self,
        run: usize,
        duration: Duration,
        route: Route,
    ) -> anyhow::Result<Run> {
        self.commands_on_hosts(run, duration, route, 1).await
    }

    /// [`Bench::commands`] with the callers spread over `hosts` hosts (rigs) on one database,
    /// in this process.
    pub(crate) async fn commands_on_hosts(
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
                rig.executor().clone(),
                rig.store().clone(),
                done.clone(),
                http_base.clone(),
            );
            let client = reqwest::Client::new();
            callers.push(tokio::spawn(async move {
                let mut i = 0u64;
                while Instant::now() < deadline {
                    let key = format!("c{caller}-{i}");
                    match (&http_base, route) {
                        (Some(base), _) => {
                            let response = client
                                .post(format!("{base}/commands/bench.touch"))
                                .body(touch_payload(&key))
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
                        (None, _) => touch(&executor, &key).await?,
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

    /// P4 stream: commands at full concurrency with the dispatcher running; events done per second.
    pub(crate) async fn event_stream(&self, run: usize, duration: Duration) -> anyhow::Result<Run> {
        let rig = self.rig(StoreKind::Sqlite, "stream", run).await?;
        let task = rig.start(Some(&Delivery::new("bench"))).await;
        let deadline = Instant::now() + duration;
        let start = Instant::now();
        let mut callers = tokio::task::JoinSet::new();
        for caller in 0..self.args.concurrency {
            let executor = rig.executor().clone();
            callers.spawn(async move {
                let mut i = 0u64;
                while Instant::now() < deadline {
                    touch(&executor, &format!("s{caller}-{i}")).await?;
                    i += 1;
                }
                anyhow::Ok(())
            });
        }
        while let Some(result) = callers.join_next().await {
            result??;
        }
        let elapsed = start.elapsed();
        let delivered = done_deliveries(rig.store()).await?;
        task.stop(Duration::ZERO).await;
        Ok(Run {
            value: delivered as f64 / elapsed.as_secs_f64(),
            detail: vec![],
        })
    }

    /// P5: open loop at `rate` commands/s; latency of each command, and command → subscriber
    /// done for a sample.
    pub(crate) async fn latency(
        &self,
        run: usize,
        duration: Duration,
        rate: f64,
    ) -> anyhow::Result<Run> {
        let rig = self.rig(StoreKind::Sqlite, "latency", run).await?;
        let task = rig.start(Some(&Delivery::new("bench"))).await;
        let measured = open_loop(&rig, duration, rate, &Arc::default()).await;
        task.stop(Duration::ZERO).await;
        let OpenLoop { answered, sampled } = measured?;
        let mut delivered: Vec<Duration> = sampled.iter().map(|&(_, done)| done).collect();
        delivered.sort();
        let ms = |d: &Duration| d.as_secs_f64() * 1e3;
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

/// What an open loop of `bench.touch` commands measured.
pub(crate) struct OpenLoop {
    /// Each command's time from its start to its answer, shortest first.
    pub(crate) answered: Vec<Duration>,
    /// For a sample of about 200 commands, (answered, subscriber done), both from the
    /// command's start.
    pub(crate) sampled: Vec<(Duration, Duration)>,
}

/// Sends `bench.touch` commands to `rig`, each on its own key, at `rate` a second for
/// `duration`: open loop, each command on a task of its own started at its tick whether the
/// ones before have answered or not. For a sample of about 200 it waits until the subscriber
/// is done too (polling the subscriber's state every millisecond). Sending stops early once
/// `stop` is set, and the sample's waits then give up.
pub(crate) async fn open_loop(
    rig: &Host,
    duration: Duration,
    rate: f64,
    stop: &Arc<AtomicBool>,
) -> anyhow::Result<OpenLoop> {
    let interval = Duration::from_secs_f64(1.0 / rate.max(1.0));
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let deadline = Instant::now() + duration;
    let mut requests = tokio::task::JoinSet::new();
    let mut i = 0u64;
    let sample_every = ((rate * duration.as_secs_f64()) / 200.0).max(1.0) as u64;
    while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
        ticker.tick().await;
        let (executor, store, stop) = (rig.executor().clone(), rig.store().clone(), stop.clone());
        let end_to_end = i.is_multiple_of(sample_every);
        requests.spawn(async move {
            let key = format!("l{i}");
            let start = Instant::now();
            touch(&executor, &key).await?;
            let answered = start.elapsed();
            let mut delivered = None;
            if end_to_end {
                let seen_key = format!("seen/{key}");
                while !stop.load(Ordering::Relaxed) {
                    if store.read_state(PLUGIN, &seen_key).await?.0.is_some() {
                        delivered = Some((answered, start.elapsed()));
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            anyhow::Ok((answered, delivered))
        });
        i += 1;
    }
    let mut answered = Vec::new();
    let mut sampled = Vec::new();
    while let Some(result) = requests.join_next().await {
        let (a, d) = result??;
        answered.push(a);
        sampled.extend(d);
    }
    answered.sort();
    Ok(OpenLoop { answered, sampled })
}

/// `bench.touch` on `key` through `executor`, as a caller in this process sends it.
pub(crate) async fn touch(executor: &Executor, key: &str) -> anyhow::Result<()> {
    let request = Request {
        kind: "bench.touch".into(),
        payload: touch_payload(key),
        ..Request::default()
    };
    executor
        .command(&request)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

/// The payload of `bench.touch` on `key`.
fn touch_payload(key: &str) -> Vec<u8> {
    format!("{{\"key\":\"{key}\"}}").into_bytes()
}

/// P2's handler: what `bench.touch` does, in native code, through the same unit of work,
/// addressing and committer as a WASM handler.
pub(crate) async fn native_touch(
    executor: &Executor,
    store: &Store,
    key: &str,
) -> anyhow::Result<()> {
    let message = bench_message("bench.touch", touch_payload(key));
    let mut unit = UnitOfWork::new(PLUGIN, Access::ReadWrite, store.clone());
    let count_key = format!("count/{key}");
    let count: u64 = match unit.get(&count_key).await? {
        Some(bytes) => serde_json::from_slice(&bytes)?,
        None => 0,
    };
    unit.put(count_key, serde_json::to_vec(&(count + 1))?)?;
    unit.emit(handler_host::unit_of_work::EmittedEvent::new(
        "bench.touched",
        serde_json::to_vec(&serde_json::json!({ "key": key }))?,
        Some(key.to_owned()),
    ))?;
    let (changes, emitted): (StateChanges, _) = unit.finish();
    let outbox = executor.address(&message, PLUGIN, emitted);
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

/// A request of `kind` with `payload`, as the ingress would make it.
pub(crate) fn bench_message(kind: &str, payload: Vec<u8>) -> Message {
    let id = uuid::Uuid::now_v7().to_string();
    Message {
        correlation_id: id.clone(),
        id,
        kind: kind.into(),
        partition_key: None,
        tenant_id: None,
        causation_id: None,
        actor: None,
        schema_version: 1,
        occurred_at_ms: now_ms(),
        headers: Vec::new(),
        payload,
        depth: 0,
    }
}

pub(crate) async fn serve(rig: &Host) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    // P1-HTTP measures commands; the rig's dispatcher, if any, is not the server's concern.
    let app = http::router(rig.app_state(None));
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(format!("http://{address}"))
}

/// The deliveries waiting for the benchmark plugin (due or not): a count over the pending
/// rows, not the whole table (S1 polls it while commands stream in).
pub(crate) async fn pending(store: &Store) -> anyhow::Result<i64> {
    store.pending_count(PLUGIN).await
}

pub(crate) async fn done_deliveries(store: &Store) -> anyhow::Result<i64> {
    Ok(store.stats().await?.by_status["done"])
}
