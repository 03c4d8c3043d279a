//! A handler that traps: the caller gets a classified 500, the trapped unit of work leaves
//! neither state nor events, and the host keeps serving every plugin.

use crate::harness::{FLAKY, Host, INVENTORY};
use serde_json::json;

on_every_backend! {
    fn panicking_command_is_classified_and_leaves_nothing_behind() {
        let host = Host::start(&[FLAKY, INVENTORY], &[]);
        let db = host.db();

        let answer = host.command("flaky.panic", json!({}));
        assert_eq!(answer.status, 500, "{answer:?}");
        assert_eq!(answer.error_class(), "panic", "{answer:?}");
        assert_eq!(answer.error_plugin(), "flaky", "{answer:?}");

        // The handler wrote `panic/marker` and emitted `flaky.noise` before panicking.
        assert_eq!(
            host.query_ok("flaky.marker", json!({})),
            json!({ "marker": false })
        );
        assert_eq!(
            db.scalar(
                "SELECT COUNT(*) FROM state WHERE plugin = 'flaky' AND key = 'panic/marker'",
                &[]
            ),
            0
        );
        assert_eq!(
            db.scalar(
                "SELECT COUNT(*) FROM messages WHERE kind = 'flaky.noise'",
                &[]
            ),
            0
        );

        // The same plugin and the others still work.
        assert_eq!(
            host.command_ok("stock.add", json!({ "sku": "widget", "qty": 3 })),
            json!({ "sku": "widget", "available": 3 })
        );
        assert_eq!(
            host.command_ok("flaky.set", json!({ "failing": false })),
            json!({ "failing": false })
        );
    }
}
