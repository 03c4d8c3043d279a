//! The `order-summary` example plugin: a projection of what happened to each order.
//!
//! It subscribes to `order.*` and `stock.*` and keeps `summary/{order_id}`:
//! `order.placed` → "placed", `stock.reserved` → "reserved", `stock.rejected` → "rejected" with
//! the reason. Query `order.summary` `{"order_id"}` answers
//! `{"order_id","status","sku","qty","reason"?}`.
//!
//! Statuses only move forward (placed → reserved or rejected): should a stock event ever be
//! handled before the `order.placed` it answers, the late `order.placed` fills in nothing it
//! would have to undo. Event kinds it does not know are ignored, so new `order.*` or `stock.*`
//! events elsewhere never fail this plugin.

use handler_host_sdk::prelude::*;
use serde::{Deserialize, Serialize};

struct OrderSummary;

/// Where an order stands, in the order it gets there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    Placed,
    Reserved,
    Rejected,
}

impl Status {
    /// How far along the order is; a status may only replace one of a lower step.
    fn step(self) -> u8 {
        match self {
            Self::Placed => 0,
            Self::Reserved | Self::Rejected => 1,
        }
    }
}

/// What `summary/{order_id}` holds, and the answer of `order.summary`.
#[derive(Debug, Serialize, Deserialize)]
struct Summary {
    order_id: String,
    status: Status,
    sku: String,
    qty: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// The fields this projection reads from `order.placed`, `stock.reserved` and
/// `stock.rejected`; `reason` is only in the last.
#[derive(Deserialize)]
struct OrderEvent {
    order_id: String,
    sku: String,
    qty: i64,
    #[serde(default)]
    reason: Option<String>,
}

/// Payload of `order.summary`.
#[derive(Deserialize)]
struct GetSummary {
    order_id: String,
}

fn summary_key(order_id: &str) -> String {
    format!("summary/{order_id}")
}

impl Plugin for OrderSummary {
    fn info() -> PluginInfo {
        PluginInfo::new("order-summary", env!("CARGO_PKG_VERSION"))
            .event("order.*")
            .event("stock.*")
            .query("order.summary")
    }

    fn handle_event(msg: Message) -> Result<(), HandlerError> {
        let status = match msg.kind() {
            "order.placed" => Status::Placed,
            "stock.reserved" => Status::Reserved,
            "stock.rejected" => Status::Rejected,
            _ => return Ok(()),
        };
        record(status, msg.payload()?)
    }

    fn handle_query(msg: Message) -> Result<Reply, HandlerError> {
        match msg.kind() {
            "order.summary" => {
                let query: GetSummary = msg.payload()?;
                let summary: Summary =
                    state::get(&summary_key(&query.order_id))?.ok_or_else(|| {
                        HandlerError::rejected(format!("no summary for order {}", query.order_id))
                    })?;
                Reply::json(&summary)
            }
            other => Err(HandlerError::rejected(format!(
                "plugin `order-summary` does not handle query `{other}`"
            ))),
        }
    }
}

/// Moves the order's summary to `status`, unless it is already as far or further along.
fn record(status: Status, event: OrderEvent) -> Result<(), HandlerError> {
    let key = summary_key(&event.order_id);
    if let Some(current) = state::get::<Summary>(&key)?
        && current.status.step() >= status.step()
    {
        log::debug!(
            "order {} stays {:?}; ignoring {:?}",
            event.order_id,
            current.status,
            status
        );
        return Ok(());
    }
    let summary = Summary {
        order_id: event.order_id,
        status,
        sku: event.sku,
        qty: event.qty,
        reason: match status {
            Status::Rejected => Some(event.reason.unwrap_or_default()),
            Status::Placed | Status::Reserved => None,
        },
    };
    state::put(&key, &summary)
}

export_plugin!(OrderSummary);
