//! A clean stop: on SIGTERM the host answers what it took, lets the deliveries that run
//! finish, closes the database and exits 0; on SQLite nothing is left beside the file.

use crate::harness::{DEMO, Host};
use serde_json::json;
use std::path::PathBuf;

#[test]
fn sigterm_finishes_the_work_closes_the_database_and_exits_zero() {
    let mut host = Host::start(DEMO, &[]);
    host.command_ok("stock.add", json!({ "sku": "widget", "qty": 100 }));
    let orders: Vec<String> = (0..20).map(|i| format!("stop-{i}")).collect();
    for id in &orders {
        host.command_ok(
            "order.place",
            json!({ "order_id": id, "sku": "widget", "qty": 1 }),
        );
    }
    // Stopped while the orders' deliveries are still running or queued.
    let status = host.terminate();
    assert!(status.success(), "the host exited with {status}");
    let log = host.log_text();
    assert!(log.contains("stopped"), "no clean stop in the log:\n{log}");
    assert!(
        !log.contains("left to the next start"),
        "deliveries were cut off:\n{log}"
    );

    let url = host.database_url();
    let file = PathBuf::from(url.strip_prefix("sqlite://").expect("a SQLite URL"));
    assert!(file.is_file(), "{} is missing", file.display());
    for suffix in ["-wal", "-shm"] {
        let side = PathBuf::from(format!("{}{suffix}", file.display()));
        assert!(
            !side.exists(),
            "{} is left after a clean stop",
            side.display()
        );
    }

    // Nothing was lost: started again, every order reaches its projection.
    host.restart();
    for id in &orders {
        host.summary_when(id, "reserved", crate::harness::EVENTUALLY);
    }
}
