//! Per-plugin limits from `host.toml`: `[plugins.hostile]` gets a short call deadline and a
//! small memory cap; the other plugin keeps the defaults and keeps working.

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
