//! Helpers shared by the delivery-guarantee tests: a host started with a `host.toml`, and the
//! `flaky` plugin's ledger (`flaky.bump` commands, the `flaky.bumped` events they emit, and
//! what the subscriber recorded per key).

use crate::harness::{EVENTUALLY, FLAKY, Host, host_dir, wait_until};
use serde_json::{Value, json};

/// Starts a host with the `flaky` plugin (and `others`) and `config` as its `host.toml`.
pub fn start_with_config(others: &[&str], config: &str) -> Host {
    let mut plugins = others.to_vec();
    plugins.push(FLAKY);
    let dir = host_dir(&plugins);
    std::fs::write(dir.path().join("host.toml"), config).expect("writing host.toml");
    Host::start_in(dir, &["--config", "host.toml"], &[])
}

/// `flaky.bump`: appends `n` to the key's command list and emits `flaky.bumped`.
pub fn bump(host: &Host, key: &str, n: u64, extra: Value) {
    let mut payload = json!({ "key": key, "n": n });
    if let (Some(payload), Some(extra)) = (payload.as_object_mut(), extra.as_object()) {
        payload.extend(extra.clone());
    }
    host.command_ok("flaky.bump", payload);
}

/// What `flaky` recorded for `key`: the commands in commit order, the events in the order
/// their effects committed.
pub fn ledger(host: &Host, key: &str) -> (Vec<u64>, Vec<u64>) {
    let answer = host.query_ok("flaky.ledger", json!({ "key": key }));
    let list = |name: &str| -> Vec<u64> {
        serde_json::from_value(answer[name].clone())
            .unwrap_or_else(|e| panic!("ledger {name} of {key}: {e}: {answer}"))
    };
    (list("commands"), list("events"))
}

/// Waits until the subscriber has recorded exactly `events` for `key`.
pub fn wait_for_events(host: &Host, key: &str, events: &[u64]) {
    wait_until(
        EVENTUALLY,
        &format!("flaky to record events {events:?} for key {key}"),
        || ledger(host, key).1 == events,
    );
}

/// The delivery ids of `flaky.bumped` for `key`, in message order, with status and attempts.
pub fn deliveries_of(host: &Host, key: &str) -> Vec<(i64, String, i64)> {
    host.bus_list("all")
        .into_iter()
        .filter(|d| d["kind"] == "flaky.bumped" && d["partition_key"] == key)
        .map(|d| {
            (
                d["id"].as_i64().unwrap_or_default(),
                d["status"].as_str().unwrap_or_default().to_owned(),
                d["attempts"].as_i64().unwrap_or_default(),
            )
        })
        .collect()
}
