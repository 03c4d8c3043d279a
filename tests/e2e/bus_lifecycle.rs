//! The dead-letter lifecycle through `host bus`: filters (subscriber/plugin, kind, error
//! class; table and JSON), `show`, `stats`, `replay --all` with `--dry-run`, one letter's
//! dry run on the current build (what it would write and emit, or its error), and `purge`,
//! which refuses without `--force`. Also proves `dead_letter_at_once` from `host.toml`: the
//! letters here die at their first failure although five attempts are allowed.

use crate::harness::{EVENTUALLY, wait_until};
use crate::ledger::{bump, ledger, start_with_config, wait_for_events};
use serde_json::{Value, json};

const CONFIG: &str = r#"
[plugins.flaky]
dead_letter_at_once = ["retryable", "permanent"]
retry = { max_attempts = 5 }
"#;

fn json_of(stdout: &str) -> Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{stdout}"))
}

on_every_backend! {
    fn dead_letters_are_filtered_shown_counted_replayed_and_purged() {
        let host = start_with_config(&[], CONFIG);
        bump(&host, "X1", 1, json!({ "poison": true }));
        bump(&host, "X2", 1, json!({ "poison": true }));
        bump(&host, "X3", 1, json!({ "poison": true, "permanent": true }));
        let db = host.db();
        wait_until(EVENTUALLY, "three dead letters", || {
            db.scalar("SELECT COUNT(*) FROM deliveries WHERE status = 'dead'", &[]) == 3
        });

        let list = |args: &[&str]| -> Vec<Value> {
            let mut all = vec!["bus", "list", "--type", "dlq", "--format", "json"];
            all.extend_from_slice(args);
            serde_json::from_value(json_of(&host.cli(&all))).expect("a JSON array")
        };
        let dead = list(&[]);
        assert_eq!(dead.len(), 3, "{dead:#?}");
        assert!(
            dead.iter().all(|d| d["attempts"] == 1),
            "dead at once: {dead:#?}"
        );
        assert_eq!(list(&["--error-class", "permanent"]).len(), 1);
        assert_eq!(list(&["--error-class", "retryable"]).len(), 2);
        assert_eq!(list(&["--kind", "flaky.*"]).len(), 3);
        assert_eq!(list(&["--kind", "order.*"]).len(), 0);
        assert_eq!(list(&["--plugin", "flaky"]).len(), 3);
        assert_eq!(list(&["--subscriber", "nobody"]).len(), 0);
        let table = host.cli(&["bus", "list", "--type", "dlq", "--error-class", "permanent"]);
        assert!(
            table.contains("permanent") && table.contains("X3"),
            "{table}"
        );
        let bad = host.cli_output(&["bus", "list", "--error-class", "oops"]);
        assert!(!bad.status.success());
        // An empty table says so, and how to look elsewhere.
        let empty = host.cli(&["bus", "list", "--type", "dlq", "--kind", "order.*"]);
        assert_eq!(
            empty.trim(),
            "no dead-lettered deliveries match the filters (`--type pending|dlq|done|all` chooses which)"
        );
        // `replay` without an id names the other choice.
        let no_id = host.cli_output(&["bus", "replay"]);
        assert!(!no_id.status.success());
        let said = String::from_utf8_lossy(&no_id.stderr);
        assert!(said.contains("--all"), "{said}");

        let permanent = list(&["--error-class", "permanent"])[0]["id"]
            .as_i64()
            .expect("an id");
        let shown = json_of(&host.cli(&["bus", "show", &permanent.to_string()]));
        assert_eq!(shown["status"], "dead", "{shown:#}");
        assert_eq!(shown["kind"], "flaky.bumped", "{shown:#}");
        assert_eq!(shown["partition_key"], "X3", "{shown:#}");
        assert_eq!(shown["payload"]["n"], 1, "{shown:#}");
        assert_eq!(shown["error_class"], "permanent", "{shown:#}");
        assert!(
            shown["last_error"]
                .as_str()
                .unwrap_or_default()
                .contains("poison")
        );
        assert!(shown["first_failed_at_ms"].as_i64().is_some(), "{shown:#}");
        assert!(shown["last_failed_at_ms"].as_i64().is_some(), "{shown:#}");
        assert!(shown["causation_id"].as_str().is_some(), "{shown:#}");
        assert_eq!(shown["schema_version"], 1, "{shown:#}");
        assert_eq!(shown["emitted_by"], "flaky", "{shown:#}");
        assert!(!host.cli_output(&["bus", "show", "999999"]).status.success());

        let stats = json_of(&host.cli(&["bus", "stats", "--format", "json"]));
        assert_eq!(stats["by_status"]["dead"], 3, "{stats:#}");
        assert_eq!(stats["by_error_class"]["retryable"]["dead"], 2, "{stats:#}");
        assert_eq!(stats["by_error_class"]["permanent"]["dead"], 1, "{stats:#}");
        assert!(host.cli(&["bus", "stats"]).contains("retryable"));

        // A dry run changes nothing.
        let dry = host.cli(&[
            "bus",
            "replay",
            "--all",
            "--error-class",
            "retryable",
            "--dry-run",
        ]);
        assert!(dry.contains("would replay 2"), "{dry}");
        // One letter's dry run runs the current build: still poison, it would fail again.
        let dry_one = json_of(&host.cli(&["bus", "replay", &permanent.to_string(), "--dry-run"]));
        assert_eq!(dry_one["would"], "fail", "{dry_one:#}");
        assert_eq!(dry_one["error_class"], "permanent", "{dry_one:#}");
        assert!(
            dry_one["error"].as_str().unwrap_or_default().contains("poison"),
            "{dry_one:#}"
        );
        assert_eq!(list(&[]).len(), 3);

        // Purge refuses without --force and says how many would go.
        let refused = host.cli_output(&["bus", "purge", "--error-class", "permanent"]);
        assert!(!refused.status.success());
        let said = String::from_utf8_lossy(&refused.stderr);
        assert!(
            said.contains("--force") && said.contains("1 dead-lettered"),
            "{said}"
        );
        assert_eq!(list(&[]).len(), 3);
        let purged = host.cli(&["bus", "purge", "--error-class", "permanent", "--force"]);
        assert!(purged.contains("purged 1"), "{purged}");
        assert_eq!(list(&[]).len(), 2);
        assert_eq!(list(&["--error-class", "permanent"]).len(), 0);

        // Cure X1 only, replay both retryable letters: X1 is delivered once, X2 dies again.
        host.command_ok("flaky.cure", json!({ "key": "X1" }));
        // Cured, X1's letter would now succeed: what it would write, and nothing written.
        let x1 = list(&[])
            .into_iter()
            .find(|d| d["partition_key"] == "X1")
            .expect("X1's dead letter")["id"]
            .to_string();
        let rehearsed = json_of(&host.cli(&["bus", "replay", &x1, "--dry-run"]));
        assert_eq!(rehearsed["would"], "succeed", "{rehearsed:#}");
        assert_eq!(
            rehearsed["writes"],
            json!([{ "key": "events/X1", "before": null, "after": [1] }]),
            "{rehearsed:#}"
        );
        assert_eq!(rehearsed["emits"], json!([]), "{rehearsed:#}");
        assert_eq!(ledger(&host, "X1").1, Vec::<u64>::new());
        assert_eq!(list(&[]).len(), 2);
        let replayed = host.cli(&["bus", "replay", "--all", "--error-class", "retryable"]);
        assert!(replayed.contains("replayed 2"), "{replayed}");
        wait_for_events(&host, "X1", &[1]);
        wait_until(EVENTUALLY, "X2 to be dead again", || {
            list(&[]).len() == 1
                && db.scalar(
                    "SELECT COUNT(*) FROM deliveries WHERE status = 'pending'",
                    &[],
                ) == 0
        });
        assert_eq!(list(&[])[0]["partition_key"], "X2");
        assert_eq!(ledger(&host, "X2").1, Vec::<u64>::new());
        let done = host
            .bus_list("done")
            .into_iter()
            .find(|d| d["partition_key"] == "X1")
            .expect("X1 is done");
        let shown = json_of(&host.cli(&["bus", "show", &done["id"].to_string()]));
        assert!(
            shown["handled_by"]
                .as_str()
                .is_some_and(|v| v.starts_with("flaky@")),
            "{shown:#}"
        );
        assert!(shown["completed_at_ms"].as_i64().is_some(), "{shown:#}");
    }
}
