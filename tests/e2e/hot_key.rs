//! A hot key: a backlog of events of one partition key runs in runs — one after another, each
//! seeing the writes of the one before, committed together — in commit order, exactly once;
//! a failing event ends its run there, the ones before it commit, and the ones after it wait
//! for it (`strict`). The crash loop (`crash_loop`) runs the same runs under `kill -9`.

use crate::harness::{EVENTUALLY, FLAKY, Host, host_dir, wait_until};
use crate::ledger::{bump, deliveries_of, ledger, wait_for_events};
use serde_json::json;

const EVENTS: u64 = 40;
/// The event that fails until its key is cured.
const POISON: u64 = 25;
const CONFIG: &str = r#"
[plugins.flaky]
ordering = "strict"
retry = { initial_delay = "50ms", multiplier = 1.0, max_delay = "50ms", jitter = 0.0, max_attempts = 1000 }
"#;

on_every_backend! {
    fn a_hot_keys_backlog_runs_in_order_in_few_commits_and_stops_at_a_failure() {
        let dir = host_dir(&[FLAKY]);
        std::fs::write(dir.path().join("host.toml"), CONFIG).expect("writing host.toml");
        // The backlog is written while nothing delivers, so the runs are what a scan claims.
        let mut writer = Host::start_in(dir, &["--config", "host.toml", "--no-dispatch"], &[]);
        for n in 1..=EVENTS {
            bump(&writer, "H", n, json!({ "poison": n == POISON }));
        }
        writer.terminate();
        let host = writer.start_beside(&["--config", "host.toml"], &[]);

        // The events before the poison commit, in order; the poison holds back the rest.
        let before: Vec<u64> = (1..POISON).collect();
        wait_for_events(&host, "H", &before);
        wait_until(EVENTUALLY, "the poison event to fail twice", || {
            deliveries_of(&host, "H")[(POISON - 1) as usize].2 >= 2
        });
        assert_eq!(ledger(&host, "H").1, before, "nothing after the poison ran");

        host.command_ok("flaky.cure", json!({ "key": "H" }));
        let all: Vec<u64> = (1..=EVENTS).collect();
        wait_for_events(&host, "H", &all);
        assert_eq!(ledger(&host, "H"), (all.clone(), all));

        // One run took the events before the poison with its first attempt, one each of its
        // retries, and the last one the rest after it: not one run (and commit) per event.
        let poison_attempts = deliveries_of(&host, "H")[(POISON - 1) as usize].2;
        let runs = metric(&host, "handler_host_delivery_runs_total{subscriber=\"flaky\"}");
        assert!(
            runs <= poison_attempts as f64 + 1.0,
            "{runs} runs for {EVENTS} events whose poison took {poison_attempts} attempts"
        );
        let done = metric(
            &host,
            "handler_host_deliveries_total{subscriber=\"flaky\",kind=\"flaky.bumped\",outcome=\"done\"}",
        );
        assert_eq!(done, EVENTS as f64, "each event delivered once");
    }
}

/// The value of the sample `series` (name and labels, as `/metrics` writes them).
fn metric(host: &Host, series: &str) -> f64 {
    let text = reqwest::blocking::get(format!("{}/metrics", host.base_url()))
        .and_then(|r| r.text())
        .expect("GET /metrics");
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample `{series}` in\n{text}"))
}
