//! `GET /metrics`: valid Prometheus text (checked by `promtool check metrics`, the parser of
//! the Prometheus project), and values that move with the work: commands counted by outcome,
//! a dead letter counted with its class, the backlog gauges read from the database.

use crate::harness::{DEMO, EVENTUALLY, FLAKY, Host, wait_until};
use serde_json::json;
use std::io::Write;
use std::process::{Command, Stdio};

const MAX_ATTEMPTS: u32 = 3;

on_every_backend! {
    fn metrics_parse_and_follow_commands_retries_and_dead_letters() {
        let mut plugins = DEMO.to_vec();
        plugins.push(FLAKY);
        let host = Host::start_with_fast_retries(&plugins, MAX_ATTEMPTS);
        let before = Metrics::scrape(&host);
        assert_eq!(before.value("handler_host_database_up", &[]), Some(1.0));
        assert_eq!(
            before.value(
                "handler_host_plugin_info",
                &[("plugin", "orders"), ("build", &plugin_build(&host, "orders"))]
            ),
            Some(1.0),
            "{}",
            before.text
        );
        assert_eq!(before.value("handler_host_plugin_load_errors", &[]), Some(0.0));

        host.command_ok("stock.add", json!({ "sku": "widget", "qty": 10 }));
        host.command_ok("flaky.set", json!({ "failing": true }));
        host.command_ok("order.place", json!({ "order_id": "o-m", "sku": "widget", "qty": 1 }));
        let unknown_sku = host.command("order.place", json!({ "order_id": "o-x", "qty": 1 }));
        let db = host.db();
        wait_until(EVENTUALLY, "the flaky delivery to be dead", || {
            db.scalar(
                "SELECT COUNT(*) FROM deliveries WHERE subscriber = 'flaky' AND status = 'dead'",
                &[],
            ) == 1
        });

        let dead = Metrics::scrape(&host);
        let placed = [("plugin", "orders"), ("kind", "order.place")];
        assert_eq!(
            dead.value("handler_host_commands_total", &[placed[0], placed[1], ("outcome", "ok")]),
            Some(1.0),
            "{}",
            dead.text
        );
        let failed_class = unknown_sku.error_class().to_owned();
        assert_eq!(
            dead.value(
                "handler_host_commands_total",
                &[placed[0], placed[1], ("outcome", &failed_class)]
            ),
            Some(1.0),
            "a failed command is counted with its class ({failed_class}): {}",
            dead.text
        );
        let flaky = [("subscriber", "flaky"), ("kind", "order.placed")];
        assert_eq!(
            dead.value(
                "handler_host_dead_letters_total",
                &[flaky[0], flaky[1], ("class", "retryable")]
            ),
            Some(1.0),
            "{}",
            dead.text
        );
        assert_eq!(
            dead.value(
                "handler_host_delivery_retries_total",
                &[flaky[0], flaky[1], ("class", "retryable")]
            ),
            Some(f64::from(MAX_ATTEMPTS - 1))
        );
        assert_eq!(
            dead.value("handler_host_dead_letters", &[flaky[0], ("class", "retryable")]),
            Some(1.0)
        );
        assert!(
            dead.value(
                "handler_host_handler_duration_seconds_count",
                &[("plugin", "orders"), ("kind", "order.place"), ("handler", "command")]
            )
            .is_some_and(|n| n >= 2.0),
            "{}",
            dead.text
        );
        assert!(dead.value("handler_host_commit_duration_seconds_count", &[]).is_some_and(|n| n >= 1.0));

        // The other subscribers finished theirs: counted, with their latency.
        let inventory = [("subscriber", "inventory"), ("kind", "order.placed")];
        wait_until(EVENTUALLY, "inventory's delivery to be counted", || {
            Metrics::scrape(&host)
                .value("handler_host_deliveries_total", &[inventory[0], inventory[1], ("outcome", "done")])
                == Some(1.0)
        });
        let done = Metrics::scrape(&host);
        assert_eq!(
            done.value("handler_host_delivery_latency_seconds_count", &inventory),
            Some(1.0)
        );

        // Fixed and replayed: the dead-letter gauge falls back to 0, the counter keeps its 1.
        host.command_ok("flaky.set", json!({ "failing": false }));
        let id = host.bus_list("dlq")[0]["id"].as_i64().expect("a delivery id");
        host.bus_replay(id);
        wait_until(EVENTUALLY, "the replayed delivery to be done", || {
            db.scalar("SELECT COUNT(*) FROM deliveries WHERE status <> 'done'", &[]) == 0
        });
        let after = Metrics::scrape(&host);
        assert_eq!(
            after.value("handler_host_dead_letters", &[flaky[0], ("class", "retryable")]),
            Some(0.0),
            "{}",
            after.text
        );
        assert_eq!(
            after.value(
                "handler_host_dead_letters_total",
                &[flaky[0], flaky[1], ("class", "retryable")]
            ),
            Some(1.0)
        );
        assert_eq!(
            after.value("handler_host_deliveries_total", &[flaky[0], flaky[1], ("outcome", "done")]),
            Some(1.0)
        );
        assert_eq!(after.value("handler_host_pending_deliveries", &[flaky[0]]), Some(0.0));
    }
}

/// The build identity `GET /health` shows for `plugin`.
fn plugin_build(host: &Host, plugin: &str) -> String {
    let health = host.health();
    health["plugins"]
        .as_array()
        .expect("health lists the plugins")
        .iter()
        .find(|p| p["name"] == plugin)
        .and_then(|p| p["build"].as_str())
        .unwrap_or_else(|| panic!("{plugin} is loaded: {health:#}"))
        .to_owned()
}

/// One scrape of `GET /metrics`, already accepted by `promtool check metrics`.
pub struct Metrics {
    pub text: String,
}

impl Metrics {
    pub fn scrape(host: &Host) -> Self {
        let response =
            reqwest::blocking::get(format!("{}/metrics", host.base_url())).expect("GET /metrics");
        assert_eq!(response.status(), 200);
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{content_type}"
        );
        let text = response.text().expect("a text body");
        promtool_accepts(&text);
        Self { text }
    }

    /// The value of the sample of `name` whose labels include `labels`, when there is exactly
    /// one; panics when several match.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let matching: Vec<f64> = self
            .text
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                let (metric, label_text) = match series.split_once('{') {
                    Some((metric, rest)) => (metric, rest.strip_suffix('}')?),
                    None => (series, ""),
                };
                let wanted = metric == name
                    && labels.iter().all(|(k, v)| {
                        label_text
                            .split(',')
                            .any(|pair| pair == format!("{k}=\"{v}\""))
                    });
                wanted.then(|| value.parse().expect("a sample value is a number"))
            })
            .collect();
        assert!(
            matching.len() <= 1,
            "several samples of {name} match {labels:?}: {matching:?}"
        );
        matching.first().copied()
    }
}

/// Fails the test unless `promtool check metrics` accepts `text` (exit 0, no lint problem).
fn promtool_accepts(text: &str) {
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package `prometheus`) must be on PATH; .ci/run installs it");
    promtool
        .stdin
        .take()
        .expect("piped")
        .write_all(text.as_bytes())
        .expect("writing to promtool");
    let output = promtool.wait_with_output().expect("promtool runs");
    assert!(
        output.status.success(),
        "promtool check metrics refused the scrape:\n{}{}\n---\n{text}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
