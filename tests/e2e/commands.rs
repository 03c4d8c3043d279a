//! How a command that does not succeed answers, and that its unit of work writes nothing.

use crate::harness::{FLAKY, Host, ORDERS};
use serde_json::json;

on_every_backend! {
    fn bad_commands_answer_4xx_and_write_nothing() {
        let host = Host::start(&[ORDERS], &[]);
        let db = host.db();

        let zero = host.command(
            "order.place",
            json!({ "order_id": "o-0", "sku": "widget", "qty": 0 }),
        );
        assert_eq!(zero.status, 422, "{zero:?}");
        assert_eq!(zero.error_class(), "rejected", "{zero:?}");
        assert_eq!(zero.error_plugin(), "orders", "{zero:?}");
        assert!(zero.error_message().contains("qty"), "{zero:?}");
        assert_eq!(
            host.query("order.get", json!({ "order_id": "o-0" })).status,
            422,
            "a rejected order must not be stored"
        );

        host.command_ok(
            "order.place",
            json!({ "order_id": "o-1", "sku": "widget", "qty": 1 }),
        );
        let duplicate = host.command(
            "order.place",
            json!({ "order_id": "o-1", "sku": "gadget", "qty": 5 }),
        );
        assert_eq!(duplicate.status, 422, "{duplicate:?}");
        assert_eq!(duplicate.error_class(), "rejected", "{duplicate:?}");
        assert_eq!(duplicate.error_plugin(), "orders", "{duplicate:?}");
        assert!(
            duplicate.error_message().contains("already exists"),
            "{duplicate:?}"
        );
        assert_eq!(
            host.query_ok("order.get", json!({ "order_id": "o-1" })),
            json!({ "order_id": "o-1", "sku": "widget", "qty": 1 }),
            "the duplicate must not overwrite the first order"
        );

        let unknown = host.command("order.cancel", json!({ "order_id": "o-1" }));
        assert_eq!(unknown.status, 404, "{unknown:?}");
        assert_eq!(unknown.error_class(), "unknown_kind", "{unknown:?}");
        let unknown_query = host.query("order.list", json!({}));
        assert_eq!(unknown_query.status, 404, "{unknown_query:?}");
        // A kind sent to the other path is pointed at the right one.
        let misrouted = host.command("order.get", json!({ "order_id": "o-1" }));
        assert_eq!(misrouted.status, 404, "{misrouted:?}");
        assert!(
            misrouted
                .error_message()
                .contains("is a query: POST it to /queries/order.get"),
            "{misrouted:?}"
        );
        let misrouted = host.query("order.place", json!({}));
        assert!(
            misrouted
                .error_message()
                .contains("is a command: POST it to /commands/order.place"),
            "{misrouted:?}"
        );

        let not_json = host.command_raw("order.place", b"order_id=o-2&qty=1");
        assert_eq!(not_json.status, 400, "{not_json:?}");
        assert_eq!(not_json.error_class(), "bad_request", "{not_json:?}");

        // Only the one good order left a trace: its state row and its one event.
        assert_eq!(
            db.strings(
                "SELECT key FROM state WHERE plugin = 'orders' ORDER BY key",
                &[]
            ),
            ["order/o-1"]
        );
        assert_eq!(
            db.strings("SELECT partition_key FROM messages ORDER BY seq", &[]),
            ["o-1"]
        );
    }
}

on_every_backend! {
    fn failing_command_answers_by_class_and_rolls_back_its_writes() {
        let host = Host::start(&[FLAKY], &[]);
        for (class, status) in [("rejected", 422), ("retryable", 503), ("permanent", 500)] {
            let answer = host.command("flaky.fail", json!({ "class": class }));
            assert_eq!(answer.status, status, "flaky.fail {class}: {answer:?}");
            assert_eq!(answer.error_class(), class, "{answer:?}");
            assert_eq!(answer.error_plugin(), "flaky", "{answer:?}");
        }
        // Each handler wrote `fail/marker` before failing; none of those writes may survive.
        assert_eq!(
            host.db().scalar(
                "SELECT COUNT(*) FROM state WHERE plugin = 'flaky' AND key = 'fail/marker'",
                &[]
            ),
            0
        );
    }
}
