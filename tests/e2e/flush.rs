//! A host with background dispatch off (`--no-dispatch`) and the operator's hand on the queue:
//! `host bus flush` (dry and real, and over the admin API) runs what is due in order, `host bus health --detailed`
//! shows each subscriber's backlog and dead letters by class, `host bus metrics` how each
//! subscriber's deliveries fared, and `host bus replay ID --force` runs a done delivery again
//! on purpose.

use crate::admin_api::admin;
use crate::harness::{DEMO, FLAKY, Host};
use serde_json::{Value, json};

on_every_backend! {
    fn flush_health_and_forced_replay_with_dispatch_off() {
        let mut plugins = DEMO.to_vec();
        plugins.push(FLAKY);
        // One attempt: the failing delivery is dead at its first failure, so one flush
        // has a fixed outcome.
        let host = Host::start(&plugins, &["--no-dispatch", "--max-attempts", "1"]);
        host.command_ok("stock.add", json!({ "sku": "widget", "qty": 10 }));
        host.command_ok("flaky.set", json!({ "failing": true }));
        host.command_ok("order.place", json!({ "order_id": "o-f", "sku": "widget", "qty": 1 }));
        let (status, ready) = host.ready();
        assert_eq!((status, ready["dispatcher"].as_str()), (200, Some("off")), "{ready:#}");
        let db = host.db();
        let count = |status: &str| {
            db.scalar("SELECT COUNT(*) FROM deliveries WHERE status = ?", &[status])
        };

        let due = flush(&host, &["--dry-run"]);
        let (status, over_http) = admin(&host, "POST", "/admin/flush?dry_run=true", None);
        assert_eq!(status, 200, "{over_http:#}");
        assert_eq!(over_http.as_array().unwrap(), &due, "the admin API finds the same due deliveries");
        let mut subscribers: Vec<&str> = due.iter().map(|d| d["subscriber"].as_str().unwrap()).collect();
        subscribers.sort_unstable();
        assert_eq!(subscribers, ["flaky", "inventory", "order-summary"], "{due:#?}");
        assert!(due.iter().all(|d| d["outcome"].is_null()), "{due:#?}");
        assert_eq!((count("pending"), count("done")), (3, 0), "a dry run runs nothing");

        let ran = flush(&host, &[]);
        let outcomes: Vec<(String, String, String)> = ran
            .iter()
            .map(|d| {
                (
                    d["subscriber"].as_str().unwrap().to_owned(),
                    d["kind"].as_str().unwrap().to_owned(),
                    d["outcome"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let ran_one = |subscriber: &str, kind: &str, outcome: &str| {
            outcomes
                .iter()
                .filter(|o| (o.0.as_str(), o.1.as_str(), o.2.as_str()) == (subscriber, kind, outcome))
                .count()
                == 1
        };
        assert_eq!(outcomes.len(), 4, "{outcomes:?}");
        assert!(ran_one("inventory", "order.placed", "done"), "{outcomes:?}");
        assert!(ran_one("order-summary", "order.placed", "done"), "{outcomes:?}");
        assert!(ran_one("flaky", "order.placed", "dead"), "{outcomes:?}");
        // What inventory emitted during the flush was delivered by the same flush.
        assert!(ran_one("order-summary", "stock.reserved", "done"), "{outcomes:?}");
        let dead = ran.iter().find(|d| d["outcome"] == "dead").unwrap();
        assert_eq!(dead["class"], "retryable");
        assert_eq!((count("pending"), count("done"), count("dead")), (0, 3, 1));
        assert_eq!(host.query_ok("stock.get", json!({ "sku": "widget" }))["available"], 9);
        // How they fared, per subscriber and kind.
        let report: Value = serde_json::from_str(&host.cli(&["bus", "metrics", "--format", "json"])).unwrap();
        let metrics = &report["deliveries"];
        let of = |subscriber: &str, kind: &str| -> Value {
            metrics
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["subscriber"] == subscriber && m["kind"] == kind)
                .unwrap_or_else(|| panic!("no metrics for {subscriber}/{kind}: {metrics:#}"))
                .clone()
        };
        let flaky = of("flaky", "order.placed");
        assert_eq!((flaky["dead"].as_i64(), flaky["failure_rate"].as_f64()), (Some(1), Some(1.0)), "{flaky:#}");
        let inventory = of("inventory", "order.placed");
        assert_eq!((inventory["done"].as_i64(), inventory["failure_rate"].as_f64()), (Some(1), Some(0.0)));
        assert!(inventory["latency_p99_ms"].as_i64().is_some_and(|ms| ms >= 0), "{inventory:#}");
        assert_eq!(of("order-summary", "stock.reserved")["done"], 1);
        assert_eq!(metrics.as_array().unwrap().len(), 4, "the four deliveries flushed: {metrics:#}");
        let nothing = host.cli(&["bus", "flush", "--max-attempts", "1"]);
        assert!(nothing.contains("no delivery is due now"), "{nothing}");

        let health: Value = serde_json::from_str(&host.cli(&["bus", "health", "--format", "json"])).unwrap();
        let backlog = health["subscribers"].as_array().unwrap();
        assert_eq!(backlog.len(), 1, "only flaky has unfinished deliveries: {health:#}");
        assert_eq!(backlog[0]["subscriber"], "flaky");
        assert_eq!(backlog[0]["pending"], 0);
        assert_eq!(backlog[0]["dead_by_class"]["retryable"], 1);
        let table = host.cli(&["bus", "health", "--detailed"]);
        assert!(table.contains("flaky") && table.contains("retryable 1"), "{table}");

        // A done delivery is replayed only on purpose, and then runs again.
        let inventory = db.scalar(
            "SELECT id FROM deliveries WHERE subscriber = 'inventory' AND status = 'done'",
            &[],
        );
        let refused = host.cli_output(&["bus", "replay", &inventory.to_string()]);
        assert!(!refused.status.success());
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(stderr.contains("is done, not dead: `--force`"), "{stderr}");
        let forced = host.cli(&["bus", "replay", &inventory.to_string(), "--force"]);
        assert!(forced.contains("it was done: its handler runs again"), "{forced}");
        let (status, again) = admin(&host, "POST", "/admin/flush", None);
        assert_eq!(status, 200, "{again:#}");
        let again = again.as_array().unwrap().clone();
        assert!(
            again.iter().any(|d| d["id"] == inventory && d["outcome"] == "done" && d["attempt"] == 1),
            "{again:#?}"
        );
        assert_eq!(
            host.query_ok("stock.get", json!({ "sku": "widget" }))["available"],
            8,
            "the replayed reservation applied again"
        );
    }
}

/// `host bus flush --format json ARGS` beside `host`, with its plugins folder and its retry
/// policy (the flush applies its own flags' policy, as the host does): the deliveries listed.
fn flush(host: &Host, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["bus", "flush", "--format", "json", "--max-attempts", "1"];
    all.extend_from_slice(args);
    let stdout = host.cli(&all);
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("`host bus flush` printed no JSON ({e}):\n{stdout}"))
}
