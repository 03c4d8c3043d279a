//! The compiled-component cache: a restart with a warm cache compiles nothing, and a corrupt
//! entry is detected and compiled again rather than trusted.

use crate::harness::{DEMO, Host, host_dir};
use serde_json::json;

const COMPILED: &str = "component compiled";
const FROM_CACHE: &str = "component read from the compiled-component cache";
/// Logged once per start, after every plugin is loaded.
const LOADED: &str = "plugins loaded";

/// The log lines of each start, split at the end of each start's loading.
fn starts(host: &Host) -> Vec<String> {
    host.log_text().split(LOADED).map(str::to_owned).collect()
}

#[test]
fn a_warm_restart_compiles_nothing_and_a_corrupt_entry_is_rebuilt() {
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().to_str().unwrap();
    let mut host = Host::start_in(host_dir(DEMO), &[], &[("HOST_CACHE_DIR", cache_dir)]);
    host.restart();
    let runs = starts(&host);
    assert_eq!(runs[0].matches(COMPILED).count(), DEMO.len(), "{}", runs[0]);
    assert_eq!(runs[0].matches(FROM_CACHE).count(), 0, "{}", runs[0]);
    assert_eq!(runs[1].matches(COMPILED).count(), 0, "{}", runs[1]);
    assert_eq!(
        runs[1].matches(FROM_CACHE).count(),
        DEMO.len(),
        "{}",
        runs[1]
    );
    // Components from the cache serve like compiled ones.
    host.command_ok("stock.add", json!({ "sku": "w", "qty": 1 }));

    // Damage one entry: flip its last byte.
    let entry = std::fs::read_dir(cache.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .expect("a cache entry");
    let mut bytes = std::fs::read(&entry).unwrap();
    *bytes.last_mut().unwrap() ^= 0xff;
    std::fs::write(&entry, bytes).unwrap();
    host.restart();
    let runs = starts(&host);
    assert_eq!(runs[2].matches(COMPILED).count(), 1, "{}", runs[2]);
    assert_eq!(
        runs[2].matches(FROM_CACHE).count(),
        DEMO.len() - 1,
        "{}",
        runs[2]
    );
    assert!(runs[2].contains("checksum mismatch"), "{}", runs[2]);
    host.command_ok("stock.add", json!({ "sku": "w", "qty": 1 }));
}
