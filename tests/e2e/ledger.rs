//! Helpers shared by the delivery-guarantee tests: a host started with a `host.toml`, the
//! `flaky` plugin's ledger (`flaky.bump` commands, the `flaky.bumped` events they emit, and
//! what the subscriber recorded per key), and [`Load`], clients bumping many keys while hosts
//! come and go, with the check of every key afterwards.

use crate::harness::{EVENTUALLY, FLAKY, Host, host_dir, wait_until};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Starts a host with the `flaky` plugin (and `others`) and `config` as its `host.toml`.
pub fn start_with_config(others: &[&str], config: &str) -> Host {
    let mut plugins = others.to_vec();
    plugins.push(FLAKY);
    let dir = host_dir(&plugins);
    std::fs::write(dir.path().join("host.toml"), config).expect("writing host.toml");
    Host::start_in(dir, &["--config", "host.toml"], &[])
}

/// `flaky.bump`: appends `n` to the key's command list and emits `flaky.bumped`.
pub fn bump(host: &Host, key: &str, n: u64, extra: Value) {
    let mut payload = json!({ "key": key, "n": n });
    if let (Some(payload), Some(extra)) = (payload.as_object_mut(), extra.as_object()) {
        payload.extend(extra.clone());
    }
    host.command_ok("flaky.bump", payload);
}

/// What `flaky` recorded for `key`: the commands in commit order, the events in the order
/// their effects committed.
pub fn ledger(host: &Host, key: &str) -> (Vec<u64>, Vec<u64>) {
    let answer = host.query_ok("flaky.ledger", json!({ "key": key }));
    let list = |name: &str| -> Vec<u64> {
        serde_json::from_value(answer[name].clone())
            .unwrap_or_else(|e| panic!("ledger {name} of {key}: {e}: {answer}"))
    };
    (list("commands"), list("events"))
}

/// Waits until the subscriber has recorded exactly `events` for `key`.
pub fn wait_for_events(host: &Host, key: &str, events: &[u64]) {
    wait_until(
        EVENTUALLY,
        &format!("flaky to record events {events:?} for key {key}"),
        || ledger(host, key).1 == events,
    );
}

/// The delivery ids of `flaky.bumped` for `key`, in message order, with status and attempts.
pub fn deliveries_of(host: &Host, key: &str) -> Vec<(i64, String, i64)> {
    host.bus_list("all")
        .into_iter()
        .filter(|d| d["kind"] == "flaky.bumped" && d["partition_key"] == key)
        .map(|d| {
            (
                d["id"].as_i64().unwrap_or_default(),
                d["status"].as_str().unwrap_or_default().to_owned(),
                d["attempts"].as_i64().unwrap_or_default(),
            )
        })
        .collect()
}

/// The URLs of the hosts that are up; load clients pick among them, round robin.
pub type Targets = Arc<RwLock<Vec<String>>>;

/// Targets pointing at `hosts`.
pub fn targets(hosts: &[&Host]) -> Targets {
    let targets = Targets::default();
    set_targets(&targets, hosts);
    targets
}

/// Points the load clients at `hosts` from now on.
pub fn set_targets(targets: &Targets, hosts: &[&Host]) {
    *targets.write().expect("targets lock") =
        hosts.iter().map(|h| h.base_url().to_owned()).collect();
}

/// Clients sending `flaky.bump` over many keys while hosts are killed, restarted, paused or
/// stopped, and what they were answered.
pub struct Load {
    keys: Vec<String>,
    sent: Arc<Vec<AtomicU64>>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// What [`Load::finish`] found.
pub struct LoadOutcome {
    /// Commands answered 2xx.
    pub commands: u64,
    /// The counts, as one line for the test's output.
    pub counts: String,
    /// Every broken promise, one line each.
    pub violations: Vec<String>,
}

impl Load {
    /// Starts `clients` threads over `keys` keys (each thread its own keys): each sends its
    /// keys' next `flaky.bump` round robin, retried with the same idempotency key (on any of
    /// `targets`) until answered 2xx. The subscriber fails `fail_percent` % of attempts.
    pub fn start(targets: &Targets, keys: usize, clients: usize, fail_percent: u64) -> Self {
        let names: Vec<String> = (0..keys).map(|k| format!("key-{k}")).collect();
        let sent: Arc<Vec<AtomicU64>> = Arc::new((0..keys).map(|_| AtomicU64::new(0)).collect());
        let stop = Arc::new(AtomicBool::new(false));
        let per_client = keys / clients;
        let threads = (0..clients)
            .map(|c| {
                let (targets, stop, sent) = (targets.clone(), stop.clone(), sent.clone());
                let mine = names[c * per_client..(c + 1) * per_client].to_vec();
                std::thread::spawn(move || {
                    bump_client(
                        &targets,
                        &mine,
                        &stop,
                        &sent[c * per_client..],
                        fail_percent,
                    )
                })
            })
            .collect();
        Self {
            keys: names,
            sent,
            stop,
            threads,
        }
    }

    /// Stops the clients, waits (through `host`) until every delivery is done, and checks
    /// every key: the answered commands' effects are there once and in order, and the
    /// subscriber saw the key's events exactly once, in commit order; one message, one done
    /// delivery.
    pub fn finish(self, host: &Host) -> LoadOutcome {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            thread.join().expect("a client thread panicked");
        }
        let db = host.db();
        db.wait_all_done(EVENTUALLY * 3);
        let (mut commands, mut lost, mut duplicates, mut out_of_order) = (0, 0, 0, 0);
        let mut violations = Vec::new();
        for (k, key) in self.keys.iter().enumerate() {
            let answered = self.sent[k].load(Ordering::Relaxed);
            commands += answered;
            let (command_list, event_list) = ledger(host, key);
            let expected: Vec<u64> = (1..=answered).collect();
            // A command sent when the clients stopped may have committed without an answer.
            let with_unanswered: Vec<u64> = (1..=answered + 1).collect();
            if command_list != expected && command_list != with_unanswered {
                violations.push(format!(
                    "{key}: commands {command_list:?}, answered 1..={answered}"
                ));
            }
            let missing = (1..=answered).filter(|n| !event_list.contains(n)).count();
            let mut seen = std::collections::HashSet::new();
            let repeated = event_list.iter().filter(|n| !seen.insert(**n)).count();
            lost += missing;
            duplicates += repeated;
            if missing == 0 && repeated == 0 && event_list != command_list {
                out_of_order += 1;
            }
            if event_list != command_list {
                violations.push(format!(
                    "{key}: events {event_list:?} differ from commands {command_list:?}"
                ));
            }
        }
        let messages = db.scalar("SELECT COUNT(*) FROM messages", &[]);
        let done = db.scalar(
            "SELECT COUNT(*) FROM deliveries WHERE status = 'done' AND subscriber = 'flaky'",
            &[],
        );
        if messages != done {
            violations.push(format!("{messages} messages but {done} done deliveries"));
        }
        LoadOutcome {
            commands,
            counts: format!(
                "commands={commands} events={done} lost={lost} duplicates={duplicates} out_of_order_keys={out_of_order}"
            ),
            violations,
        }
    }
}

/// One client thread of [`Load`]; `sent[i]` counts the answered commands of `keys[i]`.
fn bump_client(
    targets: &Targets,
    keys: &[String],
    stop: &AtomicBool,
    sent: &[AtomicU64],
    fail_percent: u64,
) {
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let mut attempt = 0usize;
    'outer: while !stop.load(Ordering::Relaxed) {
        for (key, counter) in keys.iter().zip(sent) {
            let n = counter.load(Ordering::Relaxed) + 1;
            let body = json!({ "key": key, "n": n, "fail_percent": fail_percent }).to_string();
            loop {
                attempt += 1;
                let base = {
                    let targets = targets.read().expect("targets lock");
                    targets[attempt % targets.len()].clone()
                };
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
                    // Unanswered: it may have committed; the check allows this one extra `n`.
                    break 'outer;
                }
                // The host is down or restarting: try again shortly (a client's retry).
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}
