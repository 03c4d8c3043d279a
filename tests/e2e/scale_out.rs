//! Several hosts on one PostgreSQL database: leased partitions, failover, the same guarantees.
//!
//! Clients send `flaky.bump` over many keys to whichever hosts are up (each command retried
//! with its idempotency key until answered), while hosts are killed, paused, replaced and
//! stopped. After the drain, for every key: every answered command's effects are there once
//! and in order, and the subscriber saw the key's events exactly once, in commit order (its
//! event list equals its command list); nothing is pending or dead. Each test prints its
//! counts.

use crate::harness::{EVENTUALLY, FLAKY, Host, all_at_once, host_dir, wait_until, with_backend};
use crate::ledger::{Load, set_targets, targets};
use serde_json::json;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

const KEYS: usize = 48;
const CLIENTS: usize = 6;
/// The partitions a fresh database is split into.
const PARTITIONS: i64 = 32;
/// Short leases, so a dead host's partitions move within seconds.
const LEASE_TIMEOUT_MS: &str = "2000";
/// Share of delivery attempts the subscriber fails with `retryable`, so retries run while
/// partitions move.
const FAIL_PERCENT: u64 = 10;
const CONFIG: &str = r#"
[plugins.flaky]
ordering = "strict"
retry = { initial_delay = "25ms", multiplier = 2.0, max_delay = "100ms", jitter = 0.5, max_attempts = 1000 }
"#;

/// Starts the first host of a cluster on a fresh PostgreSQL database.
fn first_host() -> Host {
    let dir = host_dir(&[FLAKY]);
    std::fs::write(dir.path().join("host.toml"), CONFIG).expect("writing host.toml");
    Host::start_in(dir, &host_args(), &[])
}

fn host_args() -> [&'static str; 4] {
    [
        "--config",
        "host.toml",
        "--lease-timeout-ms",
        LEASE_TIMEOUT_MS,
    ]
}

/// Another host on `first`'s folder and database.
fn another_host(first: &Host) -> Host {
    first.start_beside(&host_args(), &[])
}

/// How many partitions hosts that are live hold under leases that have not expired, and how
/// many of those `host` holds.
fn owned(db: &crate::harness::Db, host: &Host) -> (i64, i64) {
    let live = db.scalar(
        "SELECT COUNT(*) FROM partition_leases l JOIN hosts h ON h.id = l.owner
         WHERE l.expires_at_ms > server_now_ms() AND h.expires_at_ms > server_now_ms()",
        &[],
    );
    let mine = db.scalar(
        "SELECT COUNT(*) FROM partition_leases l JOIN hosts h ON h.id = l.owner
         WHERE l.expires_at_ms > server_now_ms() AND h.name LIKE ?",
        &[&format!("%:{}", host.pid())],
    );
    (live, mine)
}

/// Waits until `hosts` (and no one else) hold every partition, each its fair share give or
/// take one; returns how long that took.
fn wait_balanced(db: &crate::harness::Db, hosts: &[&Host], what: &str) -> Duration {
    let started = Instant::now();
    let share = PARTITIONS / hosts.len() as i64;
    wait_until(EVENTUALLY, what, || {
        let counts: Vec<(i64, i64)> = hosts.iter().map(|h| owned(db, h)).collect();
        counts[0].0 == PARTITIONS
            && counts.iter().map(|c| c.1).sum::<i64>() == PARTITIONS
            && counts.iter().all(|c| (c.1 - share).abs() <= 1)
    });
    started.elapsed()
}

fn signal(host: &Host, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &host.pid().to_string()])
        .status()
        .expect("running kill");
    assert!(status.success(), "kill -{name} {}", host.pid());
}

#[test]
fn three_hosts_survive_kills_a_replacement_and_a_clean_stop() {
    with_backend(crate::harness::Backend::Postgres, || {
        let started = Instant::now();
        let mut a = first_host();
        let mut b = another_host(&a);
        let mut c = another_host(&a);
        let db = a.db();
        wait_balanced(&db, &[&a, &b, &c], "three hosts to share the partitions");
        // Each host's /health names the partitions it dispatches: together, each once.
        let mut held: Vec<i64> = [&a, &b, &c]
            .iter()
            .flat_map(|h| {
                serde_json::from_value::<Vec<i64>>(h.health()["partitions"]["held"].clone())
                    .expect("/health lists the partitions held")
            })
            .collect();
        held.sort_unstable();
        assert_eq!(held, (0..PARTITIONS).collect::<Vec<_>>());
        let targets = targets(&[&a, &b, &c]);
        let load = Load::start(&targets, KEYS, CLIENTS, FAIL_PERCENT);
        let timeout = Duration::from_millis(LEASE_TIMEOUT_MS.parse().expect("milliseconds"));
        let mut failovers = Vec::new();

        std::thread::sleep(Duration::from_millis(1500));
        set_targets(&targets, &[&b, &c]);
        a.kill9();
        failovers.push(wait_balanced(
            &db,
            &[&b, &c],
            "b and c to take over a's partitions",
        ));

        std::thread::sleep(Duration::from_millis(1000));
        set_targets(&targets, &[&c]);
        b.kill9();
        failovers.push(wait_balanced(&db, &[&c], "c to take over b's partitions"));

        let d = another_host(&a);
        set_targets(&targets, &[&c, &d]);
        let joined = wait_balanced(&db, &[&c, &d], "the replacement to get its share");

        std::thread::sleep(Duration::from_millis(1000));
        set_targets(&targets, &[&d]);
        let stopping = Instant::now();
        let status = c.terminate();
        assert!(status.success(), "c exited with {status} after SIGTERM");
        wait_balanced(&db, &[&d], "d to take over what c gave back");
        let handover = stopping.elapsed();

        std::thread::sleep(Duration::from_millis(500));
        let outcome = load.finish(&d);
        let (counts, violations) = (outcome.counts, outcome.violations);
        println!(
            "hosts=4 kills=2 sigterms=1 {counts} violations={} failover_ms={:?} join_ms={} sigterm_handover_ms={} ({:.1}s)",
            violations.len(),
            failovers
                .iter()
                .map(Duration::as_millis)
                .collect::<Vec<_>>(),
            joined.as_millis(),
            handover.as_millis(),
            started.elapsed().as_secs_f64()
        );
        assert!(violations.is_empty(), "{violations:#?}");
        // A killed host's partitions pass on once its leases expire: the timeout, plus the
        // beat that notices, plus scheduling slack on a busy machine.
        for failover in &failovers {
            assert!(
                *failover < timeout * 3,
                "partitions of a killed host were not owned again after {failover:?} (lease timeout {timeout:?})"
            );
        }
        // A stopped host gives its partitions back: the replacement took them free, never
        // after waiting for a lease of c's to expire.
        let log = c.log_text();
        assert!(log.contains("gave back every partition"), "{log}");
        let d_log = d.log_text();
        assert!(d_log.contains("took free partitions"), "{d_log}");
        assert!(
            !d_log.contains("whose lease had expired"),
            "the replacement waited for leases to expire:\n{d_log}"
        );
    });
}

#[test]
fn a_paused_host_commits_nothing_in_the_partitions_it_lost() {
    with_backend(crate::harness::Backend::Postgres, || {
        let a = first_host();
        let b = another_host(&a);
        let db = a.db();
        wait_balanced(&db, &[&a, &b], "two hosts to share the partitions");
        let targets = targets(&[&a, &b]);
        let load = Load::start(&targets, KEYS, CLIENTS, FAIL_PERCENT);
        std::thread::sleep(Duration::from_millis(1500));

        set_targets(&targets, &[&b]);
        signal(&a, "STOP");
        let a_epochs = db.strings(
            "SELECT CAST(l.epoch AS TEXT) FROM partition_leases l JOIN hosts h ON h.id = l.owner
             WHERE h.name LIKE ?",
            &[&format!("%:{}", a.pid())],
        );
        assert!(
            !a_epochs.is_empty(),
            "a held partitions before it was paused"
        );
        wait_balanced(&db, &[&b], "b to take over the paused host's partitions");
        std::thread::sleep(Duration::from_millis(500));
        let resumed_ms = db.scalar("SELECT server_now_ms()", &[]);
        signal(&a, "CONT");
        set_targets(&targets, &[&a, &b]);
        wait_balanced(&db, &[&a, &b], "the resumed host to get its share back");
        std::thread::sleep(Duration::from_millis(1000));

        let outcome = load.finish(&b);
        let (counts, violations) = (outcome.counts, outcome.violations);
        // The resumed host's unfinished work from before the pause: any outcome it recorded
        // afterwards under a lease it had lost would carry one of its old epochs.
        let epochs = a_epochs.join(",");
        let stale_commits = db.scalar(
            &format!(
                "SELECT COUNT(*) FROM deliveries WHERE lease_epoch IN ({epochs})
                 AND (completed_at_ms >= CAST(? AS BIGINT) OR last_failed_at_ms >= CAST(? AS BIGINT))"
            ),
            &[&resumed_ms.to_string(), &resumed_ms.to_string()],
        );
        let refused = a
            .log_text()
            .matches("outcome not recorded: the partition passed to another host")
            .count();
        println!(
            "hosts=2 paused=1 {counts} violations={} stale_commits={stale_commits} refused_after_resume={refused}",
            violations.len()
        );
        assert!(violations.is_empty(), "{violations:#?}");
        assert_eq!(
            stale_commits, 0,
            "the paused host committed under leases it had lost"
        );
        let log = a.log_text();
        assert!(
            log.contains("lost partitions"),
            "the resumed host says it lost its partitions:\n{log}"
        );
    });
}

#[test]
fn one_idempotency_key_sent_to_two_hosts_at_once_runs_the_handler_once() {
    with_backend(crate::harness::Backend::Postgres, || {
        const CALLERS: usize = 40;
        let a = Host::start(&[crate::harness::ORDERS], &[]);
        let b = Arc::new(a.start_beside(&[], &[]));
        let a = Arc::new(a);
        let order = json!({ "order_id": "o-twice", "sku": "widget", "qty": 1 });
        let hosts = [a.clone(), b.clone()];
        let answers = all_at_once(CALLERS, move |i| {
            hosts[i % 2].command_with_key("order.place", order.clone(), "key-twice")
        });
        for answer in &answers {
            assert_eq!(answer.status, 200, "{answer:?}");
        }
        let fresh = answers.iter().filter(|a| !a.replayed()).count();
        // The orders handler logs each run; the logs of both hosts count the runs.
        let runs = [&a, &b]
            .iter()
            .map(|h| h.log_text().matches("order o-twice placed").count())
            .sum::<usize>();
        let placed = a.db().scalar(
            "SELECT COUNT(*) FROM messages WHERE kind = 'order.placed' AND partition_key = ?",
            &["o-twice"],
        );
        println!(
            "callers={CALLERS} hosts=2 fresh_answers={fresh} handler_runs={runs} placed={placed}"
        );
        assert_eq!(
            fresh, 1,
            "exactly one caller ran the handler; the others replayed"
        );
        assert_eq!(runs, 1, "the handler ran once across both hosts");
        assert_eq!(placed, 1);
    });
}

/// `host bus partitions` shows the count and `--set N` changes it while no host runs; with a
/// host holding leases it refuses, naming the host; SQLite has no partitions and says so.
#[test]
fn bus_partitions_shows_and_sets_the_count_only_while_no_host_runs() {
    with_backend(crate::harness::Backend::Postgres, || {
        let mut host = first_host();
        let db = host.db();
        let count = || db.scalar("SELECT COUNT(*) FROM partition_leases", &[]);
        let refused = host.cli_output(&["bus", "partitions", "--set", "8"]);
        assert!(!refused.status.success(), "a host holds leases");
        let said = String::from_utf8_lossy(&refused.stderr);
        assert!(said.contains("stop"), "the refusal says what to do: {said}");
        assert_eq!(count(), PARTITIONS);

        host.terminate();
        let shown = host.cli(&["bus", "partitions"]);
        assert!(
            shown.starts_with(&format!("{PARTITIONS} partitions")),
            "{shown}"
        );
        let set = host.cli(&["bus", "partitions", "--set", "8"]);
        assert!(set.contains("split into 8 partitions"), "{set}");
        assert_eq!(count(), 8);
        host.restart();
        wait_until(EVENTUALLY, "the restarted host to lease the 8", || {
            owned(&db, &host) == (8, 8)
        });
    });
    with_backend(crate::harness::Backend::Sqlite, || {
        let host = Host::start(&[FLAKY], &[]);
        let output = host.cli_output(&["bus", "partitions"]);
        assert!(!output.status.success());
        let said = String::from_utf8_lossy(&output.stderr);
        assert!(
            said.contains("partitions exist only on PostgreSQL"),
            "{said}"
        );
    });
}
