//! The loop guard: two plugins that answer each other's events without end (`flaky` turns
//! each `loop.pong` into a `loop.ping`, `hostile` each `loop.ping` into a `loop.pong`) are
//! stopped at the subscriber's `max_causal_depth`: the message past it is dead-lettered at
//! once as `loop`, with the chain in its error, and nothing more is emitted.

use crate::harness::{EVENTUALLY, FLAKY, HOSTILE, Host, host_dir, wait_until};
use serde_json::json;

/// Depth of the deepest message delivered: the 7th message of the chain is past it.
const MAX_DEPTH: i64 = 6;

on_every_backend! {
    fn a_loop_between_two_plugins_is_dead_lettered_at_the_depth_limit_naming_the_chain() {
        let dir = host_dir(&[FLAKY, HOSTILE]);
        let config = format!("[defaults]\nmax_causal_depth = {MAX_DEPTH}\n");
        std::fs::write(dir.path().join("host.toml"), config).expect("writing host.toml");
        let host = Host::start_in(dir, &["--config", "host.toml"], &[]);
        host.command_ok("flaky.loop", json!({}));

        wait_until(EVENTUALLY, "the loop to be dead-lettered", || {
            !host.bus_list("dlq").is_empty()
        });
        let dead = host.bus_list("dlq");
        assert_eq!(dead.len(), 1, "{dead:#?}");
        let letter = &dead[0];
        assert_eq!(letter["error_class"], "loop", "{letter:#}");
        // Depths 1 (ping), 2 (pong), … 7 (ping): the 7th is past the limit of 6.
        assert_eq!(letter["kind"], "loop.ping", "{letter:#}");
        assert_eq!(letter["subscriber"], "hostile", "{letter:#}");
        let shown = host.cli(&["bus", "show", &letter["id"].to_string()]);
        let detail: serde_json::Value = serde_json::from_str(&shown).expect("JSON from bus show");
        let error = detail["last_error"].as_str().unwrap_or_default();
        for part in [
            "causal depth 7 is past `max_causal_depth` 6",
            "`loop.ping` from flaky",
            "`loop.pong` from hostile",
            "command ",
        ] {
            assert!(error.contains(part), "the error names {part:?}: {error}");
        }
        assert_eq!(detail["attempts"], 1, "dead at once: {detail:#}");
        assert_eq!(detail["depth"], MAX_DEPTH + 1, "{detail:#}");

        // The chain stopped: seven messages, six delivered, one dead, nothing pending.
        let db = host.db();
        let count = |sql: &str| db.scalar(sql, &[]);
        assert_eq!(count("SELECT COUNT(*) FROM messages"), MAX_DEPTH + 1);
        assert_eq!(count("SELECT MAX(depth) FROM messages"), MAX_DEPTH + 1);
        assert_eq!(
            count("SELECT COUNT(*) FROM deliveries WHERE status = 'done'"),
            MAX_DEPTH
        );
        assert_eq!(
            count("SELECT COUNT(*) FROM deliveries WHERE status = 'pending'"),
            0
        );
    }
}
