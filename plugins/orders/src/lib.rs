//! The `orders` example plugin: places orders and answers what was ordered.
//!
//! - command `order.place` `{"order_id","sku","qty"}`: stores the order under `order/{order_id}`,
//!   emits `order.placed` (partitioned by order id) and answers `{"order_id","status":"placed"}`.
//! - query `order.get` `{"order_id"}`: the stored order.
//!
//! Bad input (empty ids, a quantity below 1, an order id that was already used) is rejected, so
//! the caller gets a 422 and nothing is written.

use handler_host_sdk::prelude::*;
use serde::{Deserialize, Serialize};

struct Orders;

/// Payload of `order.place`; also what is stored and what `order.placed` carries.
#[derive(Debug, Serialize, Deserialize)]
struct Order {
    order_id: String,
    sku: String,
    // Signed so that a negative quantity is rejected with our message, not a serde error.
    qty: i64,
}

/// Answer of `order.place`.
#[derive(Serialize)]
struct Placed<'a> {
    order_id: &'a str,
    status: &'static str,
}

/// Payload of `order.get`.
#[derive(Deserialize)]
struct GetOrder {
    order_id: String,
}

fn order_key(order_id: &str) -> String {
    format!("order/{order_id}")
}

impl Plugin for Orders {
    fn info() -> PluginInfo {
        PluginInfo::new("orders", env!("CARGO_PKG_VERSION"))
            .command("order.place")
            .query("order.get")
    }

    fn handle_command(msg: Message) -> Result<Reply, HandlerError> {
        match msg.kind() {
            "order.place" => place(&msg),
            other => Err(HandlerError::rejected(format!(
                "orders does not handle command `{other}`"
            ))),
        }
    }

    fn handle_query(msg: Message) -> Result<Reply, HandlerError> {
        match msg.kind() {
            "order.get" => {
                let query: GetOrder = msg.payload()?;
                let order: Order = state::get(&order_key(&query.order_id))?.ok_or_else(|| {
                    HandlerError::rejected(format!("unknown order `{}`", query.order_id))
                })?;
                Reply::json(&order)
            }
            other => Err(HandlerError::rejected(format!(
                "orders does not handle query `{other}`"
            ))),
        }
    }
}

fn place(msg: &Message) -> Result<Reply, HandlerError> {
    let order: Order = msg.payload()?;
    if order.order_id.trim().is_empty() {
        return Err(HandlerError::rejected("order_id must not be empty"));
    }
    if order.sku.trim().is_empty() {
        return Err(HandlerError::rejected("sku must not be empty"));
    }
    if order.qty <= 0 {
        return Err(HandlerError::rejected(format!(
            "qty must be at least 1, got {}",
            order.qty
        )));
    }
    let key = order_key(&order.order_id);
    // Order ids are chosen by the caller, so a second `order.place` with the same id is a
    // mistake (or a replay with a new idempotency key), never a change to the first order.
    if state::get_bytes(&key).is_some() {
        return Err(HandlerError::rejected(format!(
            "order `{}` already exists",
            order.order_id
        )));
    }

    state::put(&key, &order)?;
    events::emit("order.placed", &order, Some(&order.order_id))?;
    log::info!(
        "order {} placed: {} x {}",
        order.order_id,
        order.qty,
        order.sku
    );
    Reply::json(&Placed {
        order_id: &order.order_id,
        status: "placed",
    })
}

export_plugin!(Orders);
