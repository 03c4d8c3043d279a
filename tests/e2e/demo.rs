//! The demo flow: a command, the events it causes across plugins, and the queries that show
//! the outcome.

use crate::harness::{DEMO, EVENTUALLY, Host};
use serde_json::json;
use std::time::Duration;

/// How quickly the demo promises a placed order to be reserved.
const DEMO_LATENCY: Duration = Duration::from_secs(1);

on_every_backend! {
    fn placed_order_is_reserved_and_an_order_beyond_stock_is_rejected() {
        let host = Host::start(DEMO, &[]);

        let stock = host.command_ok("stock.add", json!({ "sku": "widget", "qty": 10 }));
        assert_eq!(stock, json!({ "sku": "widget", "available": 10 }));
        let placed = host.command_ok(
            "order.place",
            json!({ "order_id": "o-1", "sku": "widget", "qty": 2 }),
        );
        assert_eq!(placed, json!({ "order_id": "o-1", "status": "placed" }));

        let summary = host.summary_when("o-1", "reserved", DEMO_LATENCY);
        assert_eq!(summary["sku"], "widget");
        assert_eq!(summary["qty"], 2);
        assert_eq!(
            host.query_ok("stock.get", json!({ "sku": "widget" })),
            json!({ "sku": "widget", "available": 8 })
        );

        host.command_ok(
            "order.place",
            json!({ "order_id": "o-2", "sku": "widget", "qty": 9 }),
        );
        let summary = host.summary_when("o-2", "rejected", EVENTUALLY);
        let reason = summary["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains("insufficient stock"),
            "rejection reason: {summary}"
        );
        assert_eq!(
            host.query_ok("stock.get", json!({ "sku": "widget" }))["available"],
            8,
            "a rejected order must not take stock"
        );
        assert_eq!(
            host.query_ok("order.get", json!({ "order_id": "o-2" })),
            json!({ "order_id": "o-2", "sku": "widget", "qty": 9 })
        );
    }
}
