//! Exactly-once effects per subscriber. Delivery is at-least-once; the inbox mark (the delivery
//! turning `done`) commits with the subscriber's effects, so a second run of a delivery whose
//! first run committed changes nothing.
//!
//! A genuine redelivery is provoked with two host processes on one SQLite database: both
//! dispatchers scan the same queue and wake for the same retry time, so they run the same
//! delivery at the same moment. Each run counts the order in `flaky`'s state; the count must
//! end at one. On PostgreSQL the two hosts lease disjoint partitions, so the same test checks
//! that neither ever runs a delivery the other runs.

use crate::harness::{EVENTUALLY, FLAKY, Host, ORDERS, host_dir, wait_until};
use serde_json::json;

const ORDERS_PLACED: usize = 20;
/// Retries a few hundred milliseconds apart: long enough for both hosts to have scheduled
/// their wake-up for the same retry, short enough to keep the test quick.
const RETRY: &[&str] = &[
    "--retry-initial-ms",
    "300",
    "--retry-max-ms",
    "300",
    "--max-attempts",
    "1000",
];
/// The dispatcher logs each finished delivery at debug level, with its outcome.
const DISPATCH_LOG: (&str, &str) = ("HOST_LOG", "info,handler_host::dispatcher=debug");
/// The outcome of a run whose delivery another run had already completed.
const DUPLICATE_RUN: &str = "outcome=Skipped";

const FLAKY_NOT_DONE: &str =
    "SELECT COUNT(*) FROM deliveries WHERE subscriber = 'flaky' AND status <> 'done'";

on_every_backend! {
    fn concurrent_redelivery_commits_effects_once() {
        let mut first = Host::start_in(host_dir(&[ORDERS, FLAKY]), RETRY, &[DISPATCH_LOG]);
        let mut second = first.start_beside(RETRY, &[DISPATCH_LOG]);
        let db = first.db();

        // While flaky fails, its deliveries pile up as pending retries that both hosts watch.
        first.command_ok("flaky.set", json!({ "failing": true }));
        let order_ids: Vec<String> = (0..ORDERS_PLACED).map(|i| format!("o-{i}")).collect();
        for (i, order_id) in order_ids.iter().enumerate() {
            let host = if i % 2 == 0 { &first } else { &second };
            host.command_ok(
                "order.place",
                json!({ "order_id": order_id, "sku": "widget", "qty": 1 }),
            );
        }
        wait_until(
            EVENTUALLY,
            "every flaky delivery to have failed once",
            || {
                db.scalar(
                    "SELECT COUNT(*) FROM deliveries WHERE subscriber = 'flaky' AND attempts >= 1",
                    &[],
                ) == ORDERS_PLACED as i64
            },
        );
        // Only runs after the switch are counted: those are the ones whose effects could double.
        let logged_before = [first.log_text().len(), second.log_text().len()];

        first.command_ok("flaky.set", json!({ "failing": false }));
        wait_until(EVENTUALLY, "every flaky delivery to be done", || {
            db.scalar(FLAKY_NOT_DONE, &[]) == 0
        });

        let duplicates: usize = [&first, &second]
            .iter()
            .zip(logged_before)
            .map(|(host, from)| {
                host.log_text()
                    .get(from..)
                    .unwrap_or_default()
                    .matches(DUPLICATE_RUN)
                    .count()
            })
            .sum();
        for order_id in &order_ids {
            assert_eq!(
                second.query_ok("flaky.seen", json!({ "order_id": order_id })),
                json!({ "order_id": order_id, "count": 1 }),
                "{order_id} must be counted once ({duplicates} duplicate runs were logged)"
            );
        }
        if crate::harness::backend() == crate::harness::Backend::Postgres {
            assert_eq!(
                duplicates, 0,
                "two hosts ran one delivery at once, though each leases its own partitions"
            );
        } else {
            assert!(
                duplicates > 0,
                "no delivery ran twice, so this test proved nothing: did the dispatcher's timing \
                 change, or its debug line `delivery finished … {DUPLICATE_RUN}`?"
            );
        }

        // A crash of both and a restart find nothing left to do and change nothing.
        first.kill9();
        second.kill9();
        first.restart();
        assert_eq!(db.scalar(FLAKY_NOT_DONE, &[]), 0);
        for order_id in &order_ids {
            assert_eq!(
                first.query_ok("flaky.seen", json!({ "order_id": order_id }))["count"],
                1
            );
        }
    }
}
