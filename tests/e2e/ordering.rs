//! Per-key ordering under failure, per subscriber policy (`host.toml`):
//!
//! - `strict`: a failing message holds back the later messages of its key — while it waits
//!   for a retry and after it is dead — until it is replayed and succeeds; other keys are not
//!   held up by more than one retry step.
//! - `skip`: the failing message is parked; the later messages of its key move on while it
//!   retries and after it is dead.

use crate::harness::{EVENTUALLY, wait_until};
use crate::ledger::{bump, deliveries_of, ledger, start_with_config, wait_for_events};
use serde_json::json;

/// The one retry step of these tests: constant, no jitter, so "one step" is exact.
const STEP_MS: i64 = 1000;
const OTHER_KEYS: usize = 6;

fn config(ordering: &str) -> String {
    format!(
        "[plugins.flaky]\nordering = \"{ordering}\"\n\
         retry = {{ initial_delay = \"{STEP_MS}ms\", max_delay = \"{STEP_MS}ms\", multiplier = 1.0, jitter = 0.0, max_attempts = 3 }}\n"
    )
}

fn wait_dead(host: &crate::harness::Host, id: i64) {
    wait_until(EVENTUALLY, &format!("delivery {id} to be dead"), || {
        host.db().scalar(
            "SELECT COUNT(*) FROM deliveries WHERE id = CAST(? AS BIGINT) AND status = 'dead'",
            &[&id.to_string()],
        ) == 1
    });
}

on_every_backend! {
    fn strict_poison_holds_back_its_key_only_until_replayed() {
        let host = start_with_config(&[], &config("strict"));
        bump(&host, "P", 1, json!({ "poison": true }));
        bump(&host, "P", 2, json!({}));
        wait_until(EVENTUALLY, "the poison message to fail once", || {
            deliveries_of(&host, "P")[0].2 >= 1
        });
        let poison = deliveries_of(&host, "P")[0].0;

        // Other keys flow while the poison waits for its retry.
        for k in 0..OTHER_KEYS {
            bump(&host, &format!("K{k}"), 1, json!({}));
        }
        for k in 0..OTHER_KEYS {
            wait_for_events(&host, &format!("K{k}"), &[1]);
        }
        let worst = host.db().scalar(
            "SELECT MAX(d.completed_at_ms - m.occurred_at_ms)
             FROM deliveries d JOIN messages m ON m.seq = d.message_seq
             WHERE m.partition_key LIKE 'K%'",
            &[],
        );
        assert!(
            worst < STEP_MS,
            "other keys were delayed {worst} ms by the poison message (one retry step is {STEP_MS} ms)"
        );

        wait_dead(&host, poison);
        // Something committed after the death was delivered, so the dispatcher has scanned since.
        bump(&host, "Z", 1, json!({}));
        wait_for_events(&host, "Z", &[1]);
        assert_eq!(
            ledger(&host, "P"),
            (vec![1, 2], vec![]),
            "P 2 waits behind its dead letter"
        );
        let p = deliveries_of(&host, "P");
        assert_eq!(
            (p[1].1.as_str(), p[1].2),
            ("pending", 0),
            "never attempted: {p:?}"
        );

        // Fix the cause, replay the letter: the key is released, in order.
        host.command_ok("flaky.cure", json!({ "key": "P" }));
        host.bus_replay(poison);
        wait_for_events(&host, "P", &[1, 2]);
    }
}

on_every_backend! {
    fn skip_parks_the_failing_message_and_the_key_moves_on() {
        let host = start_with_config(&[], &config("skip"));
        bump(&host, "P", 1, json!({ "poison": true }));
        bump(&host, "P", 2, json!({}));
        // P 2 is handled while P 1 still waits for its retries.
        wait_for_events(&host, "P", &[2]);
        let p = deliveries_of(&host, "P");
        assert_ne!(p[0].1, "done", "{p:?}");

        wait_dead(&host, p[0].0);
        // A dead letter under `skip` does not hold its key either.
        bump(&host, "P", 3, json!({}));
        wait_for_events(&host, "P", &[2, 3]);

        host.command_ok("flaky.cure", json!({ "key": "P" }));
        host.bus_replay(p[0].0);
        wait_for_events(&host, "P", &[2, 3, 1]);
        assert_eq!(ledger(&host, "P").0, [1, 2, 3]);
    }
}
