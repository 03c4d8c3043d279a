//! The crash loop: commands over HTTP across many partition keys, a subscriber that fails
//! transiently at random, and `kill -9` at random instants, again and again. After the last
//! restart and the drain:
//!
//! - every command answered 2xx has its effects, once (its `n` is in the key's command list
//!   exactly once, in the order the client sent them — clients retry with the same
//!   idempotency key until answered, across crashes);
//! - every event's effect happened exactly once for the subscriber, in per-key commit order
//!   (`flaky` is `strict`): the key's event list equals its command list;
//! - nothing is stuck: no pending and no dead delivery; on SQLite, `PRAGMA integrity_check` is ok.
//!
//! `CRASH_LOOP_KILLS` sets the number of kills (default 30).

use crate::ledger::{Load, set_targets, start_with_config, targets};
use rand::Rng;
use std::time::{Duration, Instant};

const DEFAULT_KILLS: usize = 30;
const KEYS: usize = 24;
const CLIENTS: usize = 6;
/// Share of delivery attempts the subscriber fails with `retryable`.
const FAIL_PERCENT: u64 = 30;
/// How long the host runs between a restart and the next kill: random in this range.
const RUN_MS: std::ops::Range<u64> = 80..400;
/// Enough attempts that a transient failure at 30 % never dead-letters (0.3^1000).
const CONFIG: &str = r#"
[plugins.flaky]
ordering = "strict"
retry = { initial_delay = "25ms", multiplier = 2.0, max_delay = "100ms", jitter = 0.5, max_attempts = 1000 }
"#;

on_every_backend! {
    fn kill_9_at_random_instants_loses_nothing_and_keeps_order() {
        let kills: usize = std::env::var("CRASH_LOOP_KILLS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_KILLS);
        let started = Instant::now();
        let mut host = start_with_config(&[], CONFIG);
        let targets = targets(&[&host]);
        let load = Load::start(&targets, KEYS, CLIENTS, FAIL_PERCENT);

        let mut rng = rand::rng();
        for _ in 0..kills {
            // The kill instant is the random variable of this test, not a synchronisation.
            std::thread::sleep(Duration::from_millis(rng.random_range(RUN_MS)));
            host.kill9();
            host.restart();
            set_targets(&targets, &[&host]);
        }

        let outcome = load.finish(&host);
        let mut violations = outcome.violations;
        let db = host.db();
        if crate::harness::backend() == crate::harness::Backend::Sqlite {
            let integrity = db.strings("PRAGMA integrity_check", &[]);
            if integrity != ["ok"] {
                violations.push(format!("integrity_check: {integrity:?}"));
            }
        }
        println!(
            "kills={kills} {} violations={} ({:.1}s)",
            outcome.counts,
            violations.len(),
            started.elapsed().as_secs_f64()
        );
        assert!(
            violations.is_empty(),
            "{violations:#?}\n{}",
            host.log_text().len()
        );
        assert!(
            outcome.commands as usize >= kills,
            "the load must keep going across the kills"
        );
    }
}
