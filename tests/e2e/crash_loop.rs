//! The crash loop: commands over HTTP across many partition keys, a subscriber that fails
//! transiently at random, and `kill -9` at random instants, again and again. After the last
//! restart and the drain:
//!
//! - every command answered 2xx has its effects, once (its `n` is in the key's command list
//!   exactly once, in the order the client sent them — clients retry with the same
//!   idempotency key until answered, across crashes);
//! - every event's effect happened exactly once for the subscriber, in per-key commit order
//!   (`flaky` is `strict`): the key's event list equals its command list;
//! - nothing is stuck: no pending and no dead delivery; on SQLite, `PRAGMA integrity_check` is ok.
//!
//! `CRASH_LOOP_KILLS` sets the number of kills (default 30).

use crate::harness::EVENTUALLY;
use crate::ledger::{ledger, start_with_config};
use rand::Rng;
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

const DEFAULT_KILLS: usize = 30;
const KEYS: usize = 24;
const CLIENTS: usize = 6;
/// Share of delivery attempts the subscriber fails with `retryable`.
const FAIL_PERCENT: u64 = 30;
/// How long the host runs between a restart and the next kill: random in this range.
const RUN_MS: std::ops::Range<u64> = 80..400;
/// Enough attempts that a transient failure at 30 % never dead-letters (0.3^1000).
const CONFIG: &str = r#"
[plugins.flaky]
ordering = "strict"
retry = { initial_delay = "25ms", multiplier = 2.0, max_delay = "100ms", jitter = 0.5, max_attempts = 1000 }
"#;

/// One client thread: sends `flaky.bump` for its keys, round robin, each `n` retried with the
/// same idempotency key until answered 2xx; counts the answered commands per key.
fn client(
    url: Arc<RwLock<String>>,
    keys: Vec<String>,
    stop: Arc<AtomicBool>,
    sent: Arc<Vec<AtomicU64>>,
    first_key: usize,
) {
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    'outer: while !stop.load(Ordering::Relaxed) {
        for (i, key) in keys.iter().enumerate() {
            let counter = &sent[first_key + i];
            let n = counter.load(Ordering::Relaxed) + 1;
            let body = json!({ "key": key, "n": n, "fail_percent": FAIL_PERCENT }).to_string();
            loop {
                let base = url.read().expect("url lock").clone();
                let answered = http
                    .post(format!("{base}/commands/flaky.bump"))
                    .header("content-type", "application/json")
                    .header("idempotency-key", format!("{key}-{n}"))
                    .body(body.clone())
                    .send()
                    .is_ok_and(|r| r.status().is_success());
                if answered {
                    counter.store(n, Ordering::Relaxed);
                    break;
                }
                if stop.load(Ordering::Relaxed) {
                    // Unanswered: it may or may not have committed; it is not counted, and
                    // the check accepts at most this one extra `n`.
                    break 'outer;
                }
                // The host is down or restarting: try again shortly (a client's retry).
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

on_every_backend! {
    fn kill_9_at_random_instants_loses_nothing_and_keeps_order() {
        let kills: usize = std::env::var("CRASH_LOOP_KILLS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_KILLS);
        let started = Instant::now();
        let mut host = start_with_config(&[], CONFIG);
        let url = Arc::new(RwLock::new(host.base_url().to_owned()));
        let stop = Arc::new(AtomicBool::new(false));
        let sent: Arc<Vec<AtomicU64>> = Arc::new((0..KEYS).map(|_| AtomicU64::new(0)).collect());
        let keys: Vec<String> = (0..KEYS).map(|k| format!("key-{k}")).collect();
        let per_client = KEYS / CLIENTS;
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let (url, stop, sent) = (url.clone(), stop.clone(), sent.clone());
                let mine = keys[c * per_client..(c + 1) * per_client].to_vec();
                std::thread::spawn(move || client(url, mine, stop, sent, c * per_client))
            })
            .collect();

        let mut rng = rand::rng();
        for _ in 0..kills {
            // The kill instant is the random variable of this test, not a synchronisation.
            std::thread::sleep(Duration::from_millis(rng.random_range(RUN_MS)));
            host.kill9();
            host.restart();
            *url.write().expect("url lock") = host.base_url().to_owned();
        }
        stop.store(true, Ordering::Relaxed);
        for client in clients {
            client.join().expect("a client thread panicked");
        }

        let db = host.db();
        db.wait_all_done(EVENTUALLY * 3);
        let mut violations = Vec::new();
        let mut commands = 0;
        for (k, key) in keys.iter().enumerate() {
            let answered = sent[k].load(Ordering::Relaxed);
            commands += answered;
            let (command_list, event_list) = ledger(&host, key);
            let expected: Vec<u64> = (1..=answered).collect();
            // A command sent when the clients stopped may have committed without an answer.
            let with_unanswered: Vec<u64> = (1..=answered + 1).collect();
            if command_list != expected && command_list != with_unanswered {
                violations.push(format!(
                    "{key}: commands {command_list:?}, answered 1..={answered}"
                ));
            }
            if event_list != command_list {
                violations.push(format!(
                    "{key}: events {event_list:?} differ from commands {command_list:?}"
                ));
            }
        }
        let messages = db.scalar("SELECT COUNT(*) FROM messages", &[]);
        let events_done = db.scalar(
            "SELECT COUNT(*) FROM deliveries WHERE status = 'done' AND subscriber = 'flaky'",
            &[],
        );
        if messages != events_done {
            violations.push(format!(
                "{messages} messages but {events_done} done deliveries"
            ));
        }
        if crate::harness::backend() == crate::harness::Backend::Sqlite {
            let integrity = db.strings("PRAGMA integrity_check", &[]);
            if integrity != ["ok"] {
                violations.push(format!("integrity_check: {integrity:?}"));
            }
        }
        println!(
            "kills={kills} commands={commands} events={events_done} violations={} ({:.1}s)",
            violations.len(),
            started.elapsed().as_secs_f64()
        );
        assert!(
            violations.is_empty(),
            "{violations:#?}\n{}",
            host.log_text().len()
        );
        assert!(
            commands as usize >= kills,
            "the load must keep going across the kills"
        );
    }
}
