//! `host bus` and `host trace` beside a running host go through its admin API: the host's own
//! plugins run a flush and a dry-run replay (the command line is given a plugins folder that
//! does not exist), the admin token is asked for and used, and the database is read directly
//! when the token is missing, when the host has stopped (its registration is gone) or was
//! killed (its registration stays, and is passed over). `bus metrics --reset` counts from the
//! reset on.

use crate::harness::{DEMO, FLAKY, Host};
use serde_json::{Value, json};

const TOKEN: &str = "via-s3cret";

/// What stderr says when the command line goes through a host.
const THROUGH: &str = "(through the admin API of the host at ";

on_every_backend! {
    fn bus_and_trace_go_through_a_running_host_and_fall_back_to_the_database() {
        let mut plugins = DEMO.to_vec();
        plugins.push(FLAKY);
        let mut host = Host::start(
            &plugins,
            &["--no-dispatch", "--admin-token", TOKEN, "--max-attempts", "1"],
        );
        let db = host.db();
        assert_eq!(
            db.strings("SELECT address FROM running_hosts", &[]),
            [host.base_url().to_owned()],
            "the host registers its address"
        );
        host.command_ok("stock.add", json!({ "sku": "widget", "qty": 10 }));
        host.command_ok("flaky.set", json!({ "failing": true }));
        let placed = host.command("order.place", json!({ "order_id": "o-v", "sku": "widget", "qty": 1 }));
        let correlation_id = placed.headers["correlation-id"].to_str().unwrap().to_owned();
        let token = [("HOST_ADMIN_TOKEN", TOKEN)];
        // No plugins here: what runs handlers can only have run in the host.
        let elsewhere = ["--plugins", "/nonexistent/plugins"];

        // With the token: through the host, and the same deliveries the database holds.
        let (stdout, stderr) = via(&host, &["bus", "list", "--format", "json"], &token);
        assert!(stderr.contains(&format!("{THROUGH}{})", host.base_url())), "{stderr}");
        let listed: Vec<i64> = ids(&stdout);
        let pending = db.scalar("SELECT COUNT(*) FROM deliveries WHERE status = 'pending'", &[]);
        assert_eq!(listed.len() as i64, pending, "{stdout}");
        assert_eq!(pending, 3, "inventory, order-summary and flaky wait for order.placed");

        // Without it: the host asks for it, and the database answers the same.
        let (plain, stderr) = via(&host, &["bus", "list", "--format", "json"], &[]);
        assert!(stderr.contains("wants its admin token"), "{stderr}");
        assert!(!stderr.contains(THROUGH), "{stderr}");
        assert_eq!(ids(&plain), listed);

        // The flush runs in the host, with its plugins and its policy (one attempt).
        let mut args = vec!["bus", "flush", "--format", "json"];
        args.extend(elsewhere);
        let (stdout, stderr) = via(&host, &args, &token);
        assert!(stderr.contains(THROUGH), "{stderr}");
        let flushed: Vec<Value> = serde_json::from_str(&stdout).unwrap();
        let outcome_of = |subscriber: &str| -> Vec<&str> {
            flushed
                .iter()
                .filter(|f| f["subscriber"] == subscriber)
                .map(|f| f["outcome"].as_str().unwrap())
                .collect()
        };
        assert_eq!(outcome_of("flaky"), ["dead"], "{flushed:#?}");
        assert_eq!(outcome_of("inventory"), ["done"], "{flushed:#?}");
        assert_eq!(db.scalar("SELECT COUNT(*) FROM deliveries WHERE status = 'pending'", &[]), 0);
        assert_eq!(host.query_ok("stock.get", json!({ "sku": "widget" }))["available"], 9);

        // A dry-run replay of the dead letter runs the host's build, changing nothing.
        let letter = db.scalar("SELECT id FROM deliveries WHERE status = 'dead'", &[]);
        let mut args = vec!["bus", "replay", "--dry-run"];
        let letter_arg = letter.to_string();
        args.push(&letter_arg);
        args.extend(elsewhere);
        let (stdout, _) = via(&host, &args, &token);
        let rehearsal: Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!((rehearsal["delivery"].as_i64(), rehearsal["would"].as_str()), (Some(letter), Some("fail")), "{rehearsal:#}");
        assert_eq!(rehearsal["error_class"], "retryable");
        assert_eq!(db.scalar("SELECT COUNT(*) FROM deliveries WHERE status = 'dead'", &[]), 1);

        // The trace, through the host, is the one the database gives.
        let (through, _) = via(&host, &["trace", &correlation_id, "--format", "json"], &token);
        let (direct, _) = via(&host, &["trace", &correlation_id, "--format", "json"], &[]);
        assert_eq!(
            serde_json::from_str::<Value>(&through).unwrap(),
            serde_json::from_str::<Value>(&direct).unwrap()
        );

        // Metrics count from the reset on.
        let (report, _) = via(&host, &["bus", "metrics", "--format", "json"], &token);
        let report: Value = serde_json::from_str(&report).unwrap();
        assert_eq!(report["deliveries"].as_array().unwrap().len(), 4, "{report:#}");
        // Through the host: its own commands too (the database keeps none).
        let placed = command_metrics(&report, "order.place");
        assert_eq!((placed["plugin"].as_str(), placed["ok"].as_u64()), (Some("orders"), Some(1)), "{report:#}");
        assert!(placed["latency_p99_ms"].as_f64().is_some_and(|ms| ms > 0.0), "{placed:#}");
        let rejected = host.command("order.place", json!({ "order_id": "o-x", "sku": "widget", "qty": 0 }));
        assert_eq!(rejected.status, 422);
        let (report, _) = via(&host, &["bus", "metrics", "--format", "json"], &token);
        let report: Value = serde_json::from_str(&report).unwrap();
        let placed = command_metrics(&report, "order.place");
        let failed: u64 = placed["failed_by_class"].as_object().unwrap().values().map(|n| n.as_u64().unwrap()).sum();
        assert_eq!((placed["ok"].as_u64(), failed), (Some(1), 1), "the rejected order counts as failed: {placed:#}");
        assert_eq!(placed["failure_rate"], 0.5);
        let (reset, _) = via(&host, &["bus", "metrics", "--reset", "--format", "json"], &token);
        let reset_at = serde_json::from_str::<Value>(&reset).unwrap()["reset_at_ms"].as_i64().unwrap();
        let (table, _) = via(&host, &["bus", "metrics"], &token);
        assert!(table.contains("this host has answered none"), "the command figures were reset too: {table}");
        // Messages occur in milliseconds: the next one is surely after the reset.
        std::thread::sleep(std::time::Duration::from_millis(5));
        host.command_ok("order.place", json!({ "order_id": "o-w", "sku": "widget", "qty": 1 }));
        via(&host, &["bus", "flush"], &token);
        for envs in [&token[..], &[]] {
            let (report, _) = via(&host, &["bus", "metrics", "--format", "json"], envs);
            let report: Value = serde_json::from_str(&report).unwrap();
            if envs.is_empty() {
                assert!(report["commands"].is_null(), "the database keeps no commands: {report:#}");
            } else {
                let placed = command_metrics(&report, "order.place");
                assert_eq!(placed["ok"], 1, "only o-w counts since the reset: {report:#}");
                assert!(placed["failed_by_class"].as_object().unwrap().is_empty(), "{report:#}");
            }
            assert_eq!(report["reset_at_ms"], reset_at, "{report:#}");
            let inventory: Vec<&Value> = report["deliveries"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|m| m["subscriber"] == "inventory")
                .collect();
            assert_eq!(inventory.len(), 1, "{report:#}");
            assert_eq!(inventory[0]["done"], 1, "only o-w's delivery counts: {report:#}");
        }

        // A named host that does not answer is an error, not a quiet fallback.
        let refused = host.cli_output_with(&["bus", "stats", "--host-url", "http://127.0.0.1:9"], &[]);
        assert!(!refused.status.success());
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(stderr.contains("cannot reach the host at http://127.0.0.1:9"), "{stderr}");

        // Stopped: its registration is gone, and the database answers.
        host.terminate();
        let letters: Vec<i64> = db
            .strings("SELECT CAST(id AS TEXT) FROM deliveries WHERE status = 'dead' ORDER BY id", &[])
            .iter()
            .map(|id| id.parse().unwrap())
            .collect();
        assert_eq!(letters.len(), 2, "flaky failed o-v and o-w");
        assert_eq!(db.scalar("SELECT COUNT(*) FROM running_hosts", &[]), 0);
        let (stdout, stderr) = via(&host, &["bus", "list", "--type", "dlq", "--format", "json"], &token);
        assert!(!stderr.contains(THROUGH), "{stderr}");
        assert_eq!(ids(&stdout), letters);

        // Killed: the registration stays, and is passed over.
        host.restart();
        host.kill9();
        assert_eq!(db.scalar("SELECT COUNT(*) FROM running_hosts", &[]), 1);
        let (stdout, stderr) = via(&host, &["bus", "list", "--type", "dlq", "--format", "json"], &token);
        assert!(!stderr.contains(THROUGH), "{stderr}");
        assert_eq!(ids(&stdout), letters);
    }
}

/// `host ARGS` beside `host` with `envs`: its stdout and stderr; panics when it fails.
fn via(host: &Host, args: &[&str], envs: &[(&str, &str)]) -> (String, String) {
    let output = host.cli_output_with(args, envs);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "`host {}` failed:\n{stdout}{stderr}",
        args.join(" ")
    );
    (stdout, stderr)
}

/// The figures of command `kind` in a `bus metrics --format json` report.
fn command_metrics(report: &Value, kind: &str) -> Value {
    report["commands"]
        .as_array()
        .and_then(|commands| commands.iter().find(|c| c["kind"] == kind))
        .cloned()
        .unwrap_or_else(|| panic!("no figures of {kind}: {report:#}"))
}

/// The ids of a `bus list --format json`.
fn ids(stdout: &str) -> Vec<i64> {
    let rows: Vec<Value> =
        serde_json::from_str(stdout).unwrap_or_else(|e| panic!("no JSON list ({e}):\n{stdout}"));
    rows.iter().map(|r| r["id"].as_i64().unwrap()).collect()
}
