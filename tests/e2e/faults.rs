//! Fault points (`HOST_FAULT`, see `host/src/fault.rs`): the process aborts at the worst
//! instants of a unit of work. After each crash and a restart, the caller retries with its
//! idempotency key, and the order's effects — the stock reservation by `inventory`, the
//! projection in `order-summary` — happen exactly once; nothing is lost.
//!
//! - `before_commit`: the batch was written in its transaction but not committed.
//! - `after_commit`: committed; no answer sent, the dispatcher not woken.
//! - `after_effects`: a subscriber's handler succeeded; its effects and inbox mark (one
//!   write) were not submitted — the delivery must run again, and count once.

use crate::harness::{DEMO, EVENTUALLY, Host, wait_until};
use serde_json::json;
use std::time::Duration;

const STOCK: i64 = 10;

/// POSTs `order.place` with an idempotency key; `None` when the connection broke.
fn place(host: &Host, key: &str) -> Option<(u16, bool)> {
    let response = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
        .post(format!("{}/commands/order.place", host.base_url()))
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .body(json!({ "order_id": "o-1", "sku": "widget", "qty": 1 }).to_string())
        .send()
        .ok()?;
    let replayed = response
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true");
    Some((response.status().as_u16(), replayed))
}

/// Runs one order through a host armed at `point`, then checks exactly-once after restart.
/// Returns whether the retried command was answered from the idempotency record.
fn crash_at(point: &str) -> bool {
    let mut host = Host::start(DEMO, &[]);
    host.command_ok("stock.add", json!({ "sku": "widget", "qty": STOCK }));
    // Nothing may be left for the armed host to commit before the order itself.
    let db = host.db();
    db.wait_all_done(EVENTUALLY);
    host.restart_with_envs(&[("HOST_FAULT", point)]);

    let first = place(&host, "order-1");
    wait_until(EVENTUALLY, &format!("the host to abort at {point}"), || {
        host.has_exited()
    });
    assert!(
        host.log_text().contains(&format!("HOST_FAULT={point}")),
        "the host died, but not at the fault point:\n{}",
        host.log_text()
    );
    host.restart_with_envs(&[]);

    let (status, replayed) = place(&host, "order-1").expect("the restarted host answers");
    assert_eq!(
        status, 200,
        "{point}: the retried command (first answer: {first:?})"
    );
    host.summary_when("o-1", "reserved", EVENTUALLY);
    db.wait_all_done(EVENTUALLY);
    assert_eq!(
        host.query_ok("stock.get", json!({ "sku": "widget" }))["available"],
        STOCK - 1,
        "{point}: the order reserved stock exactly once"
    );
    assert_eq!(
        db.scalar(
            "SELECT COUNT(*) FROM messages WHERE kind = 'order.placed'",
            &[]
        ),
        1
    );
    // order.placed to inventory and order-summary, stock.reserved to order-summary.
    assert_eq!(db.scalar("SELECT COUNT(*) FROM deliveries", &[]), 3);
    replayed
}

on_every_backend! {
    fn crash_before_commit_loses_the_unanswered_command_and_the_retry_runs_it_once() {
        let replayed = crash_at("before_commit");
        assert!(
            !replayed,
            "nothing was committed, so the retry ran the command afresh"
        );
    }
}

on_every_backend! {
    fn crash_after_commit_keeps_the_command_and_the_retry_replays_it() {
        let replayed = crash_at("after_commit");
        assert!(
            replayed,
            "the first run committed, so the retry is answered from its record"
        );
    }
}

on_every_backend! {
    fn crash_after_a_subscribers_effects_redelivers_and_counts_once() {
        crash_at("after_effects");
    }
}
