//! The `inventory` example plugin: keeps stock per SKU and reserves it for placed orders.
//!
//! - command `stock.add` `{"sku","qty"}`: adds to `stock/{sku}`, answers `{"sku","available"}`.
//! - event `order.placed` `{"order_id","sku","qty"}`: reserves the stock and emits
//!   `stock.reserved`, or emits `stock.rejected` with a reason when there is not enough. Both are
//!   partitioned by order id, so every subscriber sees them after the order they answer.
//! - query `stock.get` `{"sku"}`: `{"sku","available"}`, 0 for a SKU never stocked.
//!
//! A reservation is exactly-once without any bookkeeping here: the host runs each delivery in a
//! unit of work and drops redeliveries it already committed, so a retried `order.placed` cannot
//! subtract twice.

use handler_host_sdk::prelude::*;
use serde::{Deserialize, Serialize};

struct Inventory;

/// Payload of `stock.add`.
#[derive(Deserialize)]
struct AddStock {
    sku: String,
    // Signed so that a negative quantity is rejected with our message, not a serde error.
    qty: i64,
}

/// Payload of `stock.get`.
#[derive(Deserialize)]
struct GetStock {
    sku: String,
}

/// What `stock/{sku}` holds, and the answer of `stock.add` and `stock.get`.
#[derive(Serialize, Deserialize)]
struct Stock {
    sku: String,
    available: i64,
}

/// The `order.placed` event as the `orders` plugin emits it.
#[derive(Deserialize)]
struct OrderPlaced {
    order_id: String,
    sku: String,
    qty: i64,
}

/// Payload of `stock.reserved`.
#[derive(Serialize)]
struct StockReserved<'a> {
    order_id: &'a str,
    sku: &'a str,
    qty: i64,
}

/// Payload of `stock.rejected`.
#[derive(Serialize)]
struct StockRejected<'a> {
    order_id: &'a str,
    sku: &'a str,
    qty: i64,
    reason: String,
}

fn stock_key(sku: &str) -> String {
    format!("stock/{sku}")
}

/// The stock of `sku`; a SKU never stocked has none available.
fn load(sku: &str) -> Result<Stock, HandlerError> {
    Ok(state::get(&stock_key(sku))?.unwrap_or_else(|| Stock {
        sku: sku.to_owned(),
        available: 0,
    }))
}

impl Plugin for Inventory {
    fn info() -> PluginInfo {
        PluginInfo::new("inventory", env!("CARGO_PKG_VERSION"))
            .command("stock.add")
            .event("order.placed")
            .query("stock.get")
    }

    fn handle_command(msg: Message) -> Result<Reply, HandlerError> {
        match msg.kind() {
            "stock.add" => add(&msg),
            other => Err(HandlerError::rejected(format!(
                "plugin `inventory` does not handle command `{other}`"
            ))),
        }
    }

    fn handle_event(msg: Message) -> Result<(), HandlerError> {
        match msg.kind() {
            "order.placed" => reserve(&msg),
            // Subscribed to `order.placed` only; anything else is not ours to act on.
            _ => Ok(()),
        }
    }

    fn handle_query(msg: Message) -> Result<Reply, HandlerError> {
        match msg.kind() {
            "stock.get" => {
                let query: GetStock = msg.payload()?;
                Reply::json(&load(&query.sku)?)
            }
            other => Err(HandlerError::rejected(format!(
                "plugin `inventory` does not handle query `{other}`"
            ))),
        }
    }
}

fn add(msg: &Message) -> Result<Reply, HandlerError> {
    let add: AddStock = msg.payload()?;
    if add.sku.trim().is_empty() {
        return Err(HandlerError::rejected("sku must not be empty"));
    }
    if add.qty <= 0 {
        return Err(HandlerError::rejected(format!(
            "qty must be at least 1, got {}",
            add.qty
        )));
    }
    let mut stock = load(&add.sku)?;
    stock.available = stock.available.checked_add(add.qty).ok_or_else(|| {
        HandlerError::rejected(format!(
            "adding {} to {} available of `{}` overflows",
            add.qty, stock.available, add.sku
        ))
    })?;
    state::put(&stock_key(&add.sku), &stock)?;
    log::info!("stock of {} is now {}", stock.sku, stock.available);
    Reply::json(&stock)
}

fn reserve(msg: &Message) -> Result<(), HandlerError> {
    let order: OrderPlaced = msg.payload()?;
    let mut stock = load(&order.sku)?;
    let partition = Some(order.order_id.as_str());

    if order.qty > 0 && stock.available >= order.qty {
        stock.available -= order.qty;
        state::put(&stock_key(&order.sku), &stock)?;
        log::info!(
            "reserved {} x {} for order {}; {} left",
            order.qty,
            order.sku,
            order.order_id,
            stock.available
        );
        events::emit(
            "stock.reserved",
            &StockReserved {
                order_id: &order.order_id,
                sku: &order.sku,
                qty: order.qty,
            },
            partition,
        )
    } else {
        let reason = if order.qty <= 0 {
            format!("qty must be at least 1, got {}", order.qty)
        } else {
            format!(
                "insufficient stock of `{}`: {} available, {} requested",
                order.sku, stock.available, order.qty
            )
        };
        log::warn!("order {} not reserved: {reason}", order.order_id);
        events::emit(
            "stock.rejected",
            &StockRejected {
                order_id: &order.order_id,
                sku: &order.sku,
                qty: order.qty,
                reason,
            },
            partition,
        )
    }
}

export_plugin!(Inventory);
