//! Lifetimes from `host.toml`: an idempotency key lives for its command kind's TTL (then the
//! same key runs the command again), other kinds keep the default; the background
//! maintenance task deletes expired keys, delivered rows and then their messages.

use crate::harness::{EVENTUALLY, wait_until};
use crate::ledger::{ledger, start_with_config, wait_for_events};
use serde_json::json;

const CONFIG: &str = r#"
[idempotency]
ttl_by_kind = { "flaky.bump" = "1s" }

[retention]
delivered = "1ms"
interval = "100ms"
batch_size = 2
"#;

on_every_backend! {
    fn keys_expire_per_kind_and_maintenance_trims_delivered_rows() {
        let host = start_with_config(&[], CONFIG);
        let bump = json!({ "key": "T", "n": 1 });
        let first = host.command_with_key("flaky.bump", bump.clone(), "bump-key");
        assert_eq!((first.status, first.replayed()), (200, false), "{first:?}");
        let again = host.command_with_key("flaky.bump", bump.clone(), "bump-key");
        assert_eq!((again.status, again.replayed()), (200, true), "{again:?}");
        let set = host.command_with_key("flaky.set", json!({ "failing": false }), "set-key");
        assert_eq!((set.status, set.replayed()), (200, false), "{set:?}");
        wait_for_events(&host, "T", &[1]);

        // After its 1 s TTL the key is free: the same request runs the command again.
        wait_until(EVENTUALLY, "the flaky.bump key to expire", || {
            !host
                .command_with_key("flaky.bump", bump.clone(), "bump-key")
                .replayed()
        });
        assert_eq!(ledger(&host, "T").0, [1, 1]);
        // flaky.set keeps the default TTL (24 h).
        assert!(
            host.command_with_key("flaky.set", json!({ "failing": false }), "set-key")
                .replayed()
        );

        // The maintenance task removes delivered rows and then their messages, in batches of 2.
        let db = host.db();
        wait_for_events(&host, "T", &[1, 1]);
        wait_until(
            EVENTUALLY,
            "delivered rows and messages to be trimmed",
            || {
                db.scalar("SELECT COUNT(*) FROM deliveries", &[]) == 0
                    && db.scalar("SELECT COUNT(*) FROM messages", &[]) == 0
            },
        );
        // An expired key is deleted too, not only ignored: run one with a key, let it expire.
        host.command_with_key("flaky.bump", json!({ "key": "U", "n": 1 }), "gone-key");
        wait_until(EVENTUALLY, "the expired key to be deleted", || {
            db.scalar(
                "SELECT COUNT(*) FROM idempotency WHERE key = 'gone-key'",
                &[],
            ) == 0
        });
        assert_eq!(
            db.scalar(
                "SELECT COUNT(*) FROM idempotency WHERE key = 'set-key'",
                &[]
            ),
            1
        );
    }
}
