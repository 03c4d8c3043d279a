//! The contract: a component built against `handler-host:plugin@0.1.0` loads and runs
//! unchanged beside current ones; 0.2.0's emit options (a schedule, headers, a schema version)
//! reach the stored message and its subscribers; declared payload schemas refuse what does not
//! match, naming the failing path, before anything commits.

use crate::harness::{CONTRACT_V0_1, EVENTUALLY, FLAKY, Host, wait_for};
use crate::ledger::ledger;
use serde_json::{Value, json};
use std::time::Duration;

#[test]
fn a_component_built_against_contract_0_1_loads_and_runs_unchanged() {
    let host = Host::start(&[CONTRACT_V0_1, FLAKY], &[]);
    let stored = host.command_ok("legacy.note", json!({ "text": "still here" }));
    assert_eq!(stored, json!({ "stored": "still here" }));
    let seen = wait_for(EVENTUALLY, "the 0.1 subscriber to see its event", || {
        let answer = host.query_ok("legacy.get", json!({}));
        (!answer["seen"].is_null()).then_some(answer)
    });
    assert_eq!(seen["note"], json!({ "text": "still here" }), "{seen:#}");
    assert_eq!(
        seen["seen"],
        json!({ "text": "still here", "schema_version": 1, "headers": [], "attempt": 1 }),
        "{seen:#}"
    );
    // Its event went through the outbox like any other, with its partition key.
    let keys = host.db().strings(
        "SELECT partition_key FROM messages WHERE kind = ?",
        &["legacy.noted"],
    );
    assert_eq!(keys, ["notes"]);
    // A current plugin serves beside it.
    assert_eq!(host.command("flaky.echo", json!({})).status, 200);
}

on_every_backend! {
    /// A scheduled event is stored at commit, shows as scheduled, holds back no later event of
    /// its partition key, survives a `kill -9`, and is delivered once due, not before.
    fn scheduled_events_wait_for_their_time_and_survive_a_restart() {
        // Long enough that the checks before it is due finish first on a loaded machine.
        const DELAY_MS: i64 = 20_000;
        let mut host = Host::start(&[FLAKY], &[]);
        let answer = host.command_ok("flaky.remind", json!({ "key": "r", "n": 1, "delay_ms": DELAY_MS }));
        assert_eq!(answer, json!({ "scheduled": 1 }));
        host.command_ok("flaky.bump", json!({ "key": "r", "n": 2 }));

        // The later event of the same key is not held back by the scheduled one.
        wait_for(EVENTUALLY, "the unscheduled event to be delivered", || {
            (ledger(&host, "r").1 == [2]).then_some(())
        });
        let pending = host.bus_list("pending");
        let scheduled: Vec<&Value> = pending.iter().filter(|d| d["payload"]["n"] == 1).collect();
        assert_eq!(scheduled.len(), 1, "{pending:#?}");
        assert_eq!(scheduled[0]["scheduled"], true, "{pending:#?}");
        assert_eq!(scheduled[0]["attempts"], 0, "{pending:#?}");
        let table = host.cli(&["bus", "list"]);
        assert!(table.contains("scheduled"), "{table}");

        // Its options were stored with the message: the only one at schema version 2.
        let db = host.db();
        let version = db.scalar(
            "SELECT COUNT(*) FROM messages WHERE kind = ? AND schema_version = 2",
            &["flaky.bumped"],
        );
        assert_eq!(version, 1);
        let headers = db.strings(
            "SELECT headers FROM messages WHERE kind = ? AND schema_version = 2",
            &["flaky.bumped"],
        );
        assert_eq!(headers.len(), 1);
        let headers: Value = serde_json::from_str(&headers[0]).unwrap();
        assert_eq!(headers, json!([["reminder", "yes"]]));

        host.kill9();
        host.restart();
        wait_for(
            EVENTUALLY + Duration::from_millis(DELAY_MS as u64),
            "the scheduled event to be delivered after the restart",
            || (ledger(&host, "r").1 == [2, 1]).then_some(()),
        );
        let db = host.db();
        let late_by = db.scalar(
            "SELECT d.completed_at_ms - m.occurred_at_ms FROM deliveries d
             JOIN messages m ON m.seq = d.message_seq
             WHERE m.kind = ? AND m.schema_version = 2",
            &["flaky.bumped"],
        );
        assert!(late_by >= DELAY_MS, "delivered {late_by} ms after it was emitted");
    }
}

#[test]
fn payload_schemas_refuse_bad_commands_queries_and_emitted_events() {
    let host = Host::start(&[FLAKY], &[]);
    let wrong_type = host.command("flaky.remind", json!({ "key": 5, "n": 1, "delay_ms": 0 }));
    assert_eq!(wrong_type.status, 422, "{wrong_type:?}");
    assert_eq!(wrong_type.error_class(), "rejected", "{wrong_type:?}");
    assert!(
        wrong_type.error_message().contains("`/key`"),
        "{wrong_type:?}"
    );
    assert!(
        wrong_type.error_message().contains("flaky.remind"),
        "{wrong_type:?}"
    );

    let missing = host.command("flaky.remind", json!({ "key": "k", "n": 1 }));
    assert_eq!(missing.status, 422, "{missing:?}");
    assert!(missing.error_message().contains("delay_ms"), "{missing:?}");

    let query = host.query("flaky.envelope", json!({ "kind": 5 }));
    assert_eq!(query.status, 422, "{query:?}");
    assert!(query.error_message().contains("`/kind`"), "{query:?}");

    // The command matches its schema, the event it emits does not: the call fails and its
    // unit of work (the ledger entry of `flaky.bump`, the event) is dropped.
    for kind in ["flaky.remind", "flaky.bump"] {
        let emitted = host.command(kind, json!({ "key": "big", "n": 2_000_000, "delay_ms": 0 }));
        assert_eq!(emitted.status, 500, "{kind}: {emitted:?}");
        assert_eq!(emitted.error_class(), "permanent", "{kind}: {emitted:?}");
        assert!(
            emitted
                .error_message()
                .contains("emitted event `flaky.bumped`")
                && emitted.error_message().contains("`/n`"),
            "{kind}: {emitted:?}"
        );
    }
    assert_eq!(ledger(&host, "big").0, Vec::<u64>::new());
    let stored = host.db().scalar(
        "SELECT COUNT(*) FROM messages WHERE kind = ? AND partition_key = ?",
        &["flaky.bumped", "big"],
    );
    assert_eq!(stored, 0);

    // What matches passes.
    assert_eq!(
        host.command(
            "flaky.remind",
            json!({ "key": "ok", "n": 1, "delay_ms": 0 })
        )
        .status,
        200
    );
}
