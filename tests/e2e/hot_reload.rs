//! Hot reload under load: a plugin replaced again and again while commands and events flow
//! loses nothing, runs nothing twice, and every message is handled by exactly one build; a
//! broken build never serves; a removed plugin's deliveries wait for it and resume.

use crate::harness::{
    EVENTUALLY, FLAKY, Host, ORDERS, SWAP, SWAP_B, component, host_dir, wait_for, wait_until,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Replacements of the plugin during the load test.
const SWAPS: usize = 20;
/// The replacement after which a broken build is dropped in.
const BROKEN_AFTER: usize = 10;
/// Threads sending commands during the swaps.
const SENDERS: usize = 3;
/// Commands answered by a new version before the next replacement, so each one serves.
const SERVED_PER_VERSION: usize = 5;

/// `name@version+digest`, as the host labels a build (12 hex digits of its SHA-256).
fn identity(bytes: &[u8]) -> String {
    format!("swap@0.1.0+{}", &hex::encode(Sha256::digest(bytes))[..12])
}

/// Puts `bytes` in place as `file` the way a build tool finishes: written beside, renamed in.
fn replace_file(file: &Path, bytes: &[u8]) {
    let staging = file.with_extension("wasm.partial");
    std::fs::write(&staging, bytes).expect("writing the new build");
    std::fs::rename(&staging, file).expect("renaming the new build into place");
}

/// The build identity `/health` shows for plugin `name`, if it is loaded.
fn serving(host: &Host, name: &str) -> Option<String> {
    host.health()["plugins"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["build"].as_str().map(str::to_owned))
}

/// Waits for `/health` to report a load error, and returns the first.
fn first_load_error(host: &Host, what: &str) -> Value {
    wait_for(EVENTUALLY, what, || {
        host.health()["load_errors"]
            .as_array()
            .and_then(|errors| errors.first().cloned())
    })
}

#[test]
fn a_plugin_replaced_twenty_times_under_load_loses_and_repeats_nothing() {
    let variant_a = std::fs::read(component(SWAP)).unwrap();
    let variant_b = std::fs::read(component(SWAP_B)).unwrap();
    let (id_a, id_b) = (identity(&variant_a), identity(&variant_b));
    assert_ne!(id_a, id_b, "the two variants must be different builds");
    let host = Host::start(&[SWAP], &["--watch"]);
    let file = host.plugins_dir().join(format!("{SWAP}.wasm"));
    assert_eq!(serving(&host, SWAP).as_deref(), Some(id_a.as_str()));

    let next_n = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    // n → the variant that answered it; and every answer that was not a 200.
    let answered = Mutex::new(BTreeMap::<u64, String>::new());
    let failed = Mutex::new(Vec::<String>::new());
    std::thread::scope(|scope| {
        for _ in 0..SENDERS {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let n = next_n.fetch_add(1, Ordering::Relaxed);
                    let answer = host.command("swap.put", json!({ "n": n }));
                    if answer.status == 200 {
                        let variant = answer.body["variant"].as_str().unwrap_or("?").to_owned();
                        answered.lock().unwrap().insert(n, variant);
                    } else {
                        failed.lock().unwrap().push(format!("n={n}: {answer:?}"));
                    }
                }
            });
        }
        let served_by = |variant: &str| {
            answered
                .lock()
                .unwrap()
                .values()
                .filter(|v| *v == variant)
                .count()
        };
        for swap in 1..=SWAPS {
            let (bytes, id, variant) = if swap % 2 == 1 {
                (&variant_b, &id_b, "b")
            } else {
                (&variant_a, &id_a, "a")
            };
            let before = served_by(variant);
            replace_file(&file, bytes);
            wait_until(EVENTUALLY, &format!("swap {swap}: {id} serving"), || {
                serving(&host, SWAP).as_deref() == Some(id.as_str())
            });
            wait_until(
                EVENTUALLY,
                &format!("swap {swap}: {variant} answering"),
                || served_by(variant) >= before + SERVED_PER_VERSION,
            );
            if swap == BROKEN_AFTER {
                // A build cut short: the version serving now must go on serving.
                let broken = &bytes[..bytes.len() / 2];
                replace_file(&file, broken);
                let cause = first_load_error(&host, "the broken build to be reported");
                assert!(
                    cause["file"]
                        .as_str()
                        .unwrap_or_default()
                        .ends_with("swap.wasm"),
                    "{cause}"
                );
                let before = served_by(variant);
                wait_until(EVENTUALLY, "the old version to go on answering", || {
                    served_by(variant) >= before + SERVED_PER_VERSION
                });
                assert_eq!(serving(&host, SWAP).as_deref(), Some(id.as_str()));
                assert!(
                    host.log_text().contains("keeps serving"),
                    "the log says which version keeps serving"
                );
            }
        }
        stop.store(true, Ordering::Relaxed);
    });

    let failed = failed.into_inner().unwrap();
    assert!(
        failed.is_empty(),
        "commands failed during swaps: {failed:#?}"
    );
    let answered = answered.into_inner().unwrap();
    wait_until(EVENTUALLY, "every event to be delivered", || {
        host.db().scalar(
            "SELECT COUNT(*) FROM deliveries WHERE status != 'done'",
            &[],
        ) == 0
    });

    // Every command had its effect once, by the build that answered it; every event once.
    let mut event_variants = BTreeSet::new();
    for (n, variant) in &answered {
        let seen = host.query_ok("swap.get", json!({ "n": n }));
        assert_eq!(
            seen["cmd"], *variant,
            "n={n}: command effect by the answering build"
        );
        assert!(
            seen["evt"].is_string(),
            "n={n}: event effect missing: {seen}"
        );
        assert_eq!(
            seen["dup"],
            Value::Null,
            "n={n}: event effect repeated: {seen}"
        );
        event_variants.insert(seen["evt"].as_str().unwrap().to_owned());
    }
    let db = host.db();
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM deliveries", &[]) as usize,
        answered.len(),
        "one delivery per answered command, none for anything else"
    );
    let builds = db.strings("SELECT DISTINCT handled_by FROM deliveries", &[]);
    for build in &builds {
        assert!(
            *build == id_a || *build == id_b,
            "a delivery was handled by {build}, which is neither build"
        );
    }
    let commands_by: BTreeSet<&String> = answered.values().collect();
    assert_eq!(commands_by.len(), 2, "both builds answered commands");
    assert_eq!(event_variants.len(), 2, "both builds handled events");
    println!(
        "hot reload: swaps={SWAPS} broken=1 commands={} events={} builds={builds:?} lost=0 repeated=0",
        answered.len(),
        answered.len()
    );
}

#[test]
fn a_removed_plugin_stops_receiving_and_its_deliveries_wait_until_it_returns() {
    let dir = host_dir(&[ORDERS, FLAKY]);
    // Removing a plugin with a delivery waiting is what --allow-stranding allows.
    let host = Host::start_in(
        dir,
        &["--watch", "--allow-stranding", "--retry-initial-ms", "1000"],
        &[],
    );
    let flaky_file = host.plugins_dir().join(format!("{FLAKY}.wasm"));
    let flaky_bytes = std::fs::read(&flaky_file).unwrap();
    host.command_ok("flaky.set", json!({ "failing": true }));
    host.command_ok(
        "order.place",
        json!({ "order_id": "w-1", "sku": "s", "qty": 1 }),
    );
    let attempts = |host: &Host| {
        host.db().scalar(
            "SELECT attempts FROM deliveries WHERE subscriber = 'flaky' AND status = 'pending'",
            &[],
        )
    };
    wait_until(EVENTUALLY, "the first attempt to fail", || {
        attempts(&host) == 1
    });

    std::fs::remove_file(&flaky_file).unwrap();
    wait_until(EVENTUALLY, "flaky to be unloaded", || {
        serving(&host, "flaky").is_none()
    });
    assert_eq!(
        host.command("flaky.set", json!({ "failing": false }))
            .status,
        404
    );
    let log = host.log_text();
    assert!(
        log.contains("deliveries wait for the removed plugin"),
        "the log says deliveries wait"
    );
    assert!(
        log.contains("would leave deliveries to `flaky` without a handler: order.placed (1 pending, 0 dead); allowed by --allow-stranding"),
        "the log names what is stranded: {log}"
    );
    // Past its retry time the delivery is neither run nor dead-lettered.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert_eq!(attempts(&host), 1, "the delivery waits, untouched");
    assert_eq!(
        host.db()
            .scalar("SELECT COUNT(*) FROM deliveries WHERE status = 'dead'", &[]),
        0
    );

    std::fs::write(&flaky_file, &flaky_bytes).unwrap();
    wait_until(EVENTUALLY, "flaky to be back", || {
        serving(&host, "flaky").is_some()
    });
    host.command_ok("flaky.set", json!({ "failing": false }));
    wait_until(EVENTUALLY, "the waiting delivery to be done", || {
        host.query_ok("flaky.seen", json!({ "order_id": "w-1" }))["count"] == 1
    });
    assert_eq!(
        host.db().scalar(
            "SELECT COUNT(*) FROM deliveries WHERE subscriber = 'flaky' AND status = 'done'",
            &[]
        ),
        1
    );
}

#[test]
fn a_version_that_claims_a_kind_of_another_plugin_is_refused_and_the_old_one_serves() {
    let host = Host::start(&[SWAP, ORDERS], &["--watch"]);
    let before = serving(&host, SWAP).expect("swap serves");
    // A second copy of `orders` under another file name: same plugin name and kinds.
    let copy = host.plugins_dir().join("orders-copy.wasm");
    std::fs::copy(component(ORDERS), &copy).unwrap();
    let error = first_load_error(&host, "the copy to be refused");
    assert!(
        error["cause"]
            .as_str()
            .unwrap_or_default()
            .contains("already loaded"),
        "{error}"
    );
    host.command_ok(
        "order.place",
        json!({ "order_id": "c-1", "sku": "s", "qty": 1 }),
    );
    assert_eq!(serving(&host, SWAP), Some(before));
    std::fs::remove_file(&copy).unwrap();
    wait_until(EVENTUALLY, "the error to clear", || {
        host.health()["load_errors"]
            .as_array()
            .is_some_and(Vec::is_empty)
    });
    assert!(
        serving(&host, "orders").is_some(),
        "the original still serves"
    );
}

#[test]
fn a_change_that_would_strand_deliveries_is_refused_until_they_are_gone() {
    let dir = host_dir(&[ORDERS, FLAKY]);
    // One attempt: flaky's failed delivery is a dead letter at once.
    let host = Host::start_in(dir, &["--watch", "--max-attempts", "1"], &[]);
    let flaky_file = host.plugins_dir().join(format!("{FLAKY}.wasm"));
    let flaky = serving(&host, FLAKY).expect("flaky serves");
    host.command_ok("flaky.set", json!({ "failing": true }));
    host.command_ok(
        "order.place",
        json!({ "order_id": "s-1", "sku": "s", "qty": 1 }),
    );
    wait_until(EVENTUALLY, "flaky's delivery to be dead", || {
        host.db()
            .scalar("SELECT COUNT(*) FROM deliveries WHERE status = 'dead'", &[])
            == 1
    });

    // Another plugin in flaky's file: flaky's dead letter would have no handler.
    replace_file(&flaky_file, &std::fs::read(component(SWAP)).unwrap());
    let error = first_load_error(&host, "the other plugin to be refused");
    let cause = error["cause"].as_str().unwrap_or_default();
    assert!(
        cause.contains(
            "would leave deliveries to `flaky` without a handler: order.placed (0 pending, 1 dead)"
        ) && cause.contains("--allow-stranding"),
        "{error}"
    );
    assert_eq!(
        serving(&host, FLAKY).as_deref(),
        Some(flaky.as_str()),
        "the old version serves on"
    );
    assert_eq!(
        host.command("flaky.set", json!({ "failing": false }))
            .status,
        200
    );

    // Removed: refused too, and flaky serves on from memory.
    std::fs::remove_file(&flaky_file).unwrap();
    wait_until(EVENTUALLY, "the removal to be refused", || {
        host.health()["load_errors"]
            .as_array()
            .is_some_and(|errors| {
                errors.iter().any(|e| {
                    e["cause"].as_str().is_some_and(|c| {
                        c.starts_with("removing") && c.contains("order.placed (0 pending, 1 dead)")
                    })
                })
            })
    });
    assert_eq!(serving(&host, FLAKY).as_deref(), Some(flaky.as_str()));

    // The dead letter purged, the next change of the folder unloads flaky.
    host.cli(&["bus", "purge", "--subscriber", FLAKY, "--force"]);
    std::fs::write(host.plugins_dir().join("notes.txt"), "a change").unwrap();
    wait_until(EVENTUALLY, "flaky to be unloaded", || {
        serving(&host, FLAKY).is_none()
    });
    wait_until(EVENTUALLY, "the refusal to clear", || {
        host.health()["load_errors"]
            .as_array()
            .is_some_and(Vec::is_empty)
    });
}
