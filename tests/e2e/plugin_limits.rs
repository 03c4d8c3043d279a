//! Per-plugin limits from `host.toml`: `[plugins.hostile]` gets a short call deadline and a
//! small memory cap; the other plugin keeps the defaults and keeps working. And instances
//! reused across calls only where a plugin's section says so.

use crate::harness::{HOSTILE, Host, host_dir};
use serde_json::json;
use std::time::{Duration, Instant};

const CONFIG: &str = r#"
[plugins.hostile]
call_deadline = "300ms"
memory_mib = 16
"#;

#[test]
fn a_plugins_own_deadline_and_memory_cap_apply_to_its_calls_only() {
    let dir = host_dir(&[HOSTILE, crate::harness::FLAKY]);
    std::fs::write(dir.path().join("host.toml"), CONFIG).expect("writing host.toml");
    let host = Host::start_in(dir, &["--config", "host.toml"], &[]);

    let started = Instant::now();
    let looped = host.command("hostile.loop", json!({}));
    let took = started.elapsed();
    assert_eq!(looped.error_class(), "deadline", "{looped:?}");
    assert!(looped.error_message().contains("300 ms"), "{looped:?}");
    assert!(
        took < Duration::from_secs(3),
        "stopped by its own 300 ms deadline, not the 5 s default: {took:?}"
    );

    let hoarded = host.command("hostile.oom", json!({}));
    assert_eq!(hoarded.error_class(), "memory_limit", "{hoarded:?}");
    assert!(
        hoarded.error_message().contains(&(16u64 << 20).to_string()),
        "{hoarded:?}"
    );

    // The other plugin runs under the defaults.
    host.command_ok("flaky.set", json!({ "failing": false }));
}

/// Calls served by the `hostile` instance that answered, this one included.
fn calls(host: &Host) -> u64 {
    host.query_ok("hostile.calls", json!({}))["calls"]
        .as_u64()
        .expect("a count of calls")
}

#[test]
fn instances_are_fresh_per_call_unless_a_plugin_reuses_them_and_a_trap_or_error_discards_one() {
    // The default: every call sees a fresh instance, so a guest's globals start over.
    let host = Host::start(&[HOSTILE], &[]);
    let fresh: Vec<u64> = (0..3).map(|_| calls(&host)).collect();
    assert_eq!(fresh, [1, 1, 1]);
    drop(host);

    let dir = host_dir(&[HOSTILE]);
    let config = "[plugins.hostile]\ncalls_per_instance = 3\n";
    std::fs::write(dir.path().join("host.toml"), config).expect("writing host.toml");
    let host = Host::start_in(dir, &["--config", "host.toml"], &[]);
    // One caller at a time: the same instance serves three calls, then a new one takes over.
    let reused: Vec<u64> = (0..5).map(|_| calls(&host)).collect();
    assert_eq!(reused, [1, 2, 3, 1, 2]);

    // A trap discards the instance it ran on: the next call starts afresh.
    let panicked = host.command("hostile.panic", json!({}));
    assert_eq!(panicked.error_class(), "panic", "{panicked:?}");
    assert_eq!(calls(&host), 1);
    // So does a handler error, on the instance's second call of three.
    let refused = host.command("hostile.write", json!({ "no": "key" }));
    assert_eq!(refused.status, 422, "{refused:?}");
    assert_eq!(calls(&host), 1);
}
