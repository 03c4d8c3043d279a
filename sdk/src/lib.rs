//! Write Handler Host plugins in Rust.
//!
//! A plugin is a WebAssembly component that handles commands, events and queries for the host.
//! This crate turns the WIT contract (`wit/plugin.wit`, world `handler-host:plugin/plugin`) into
//! one trait to implement, [`Plugin`], and one macro to export it, [`export_plugin!`]. Payloads,
//! replies, state and events are JSON through serde; the raw bytes stay reachable for those who
//! want them.
//!
//! Everything a handler does happens inside the unit of work of the message it handles: its
//! [`state`] writes and [`events`] commit together when it returns `Ok`, and vanish when it
//! returns a [`HandlerError`] or panics.
//!
//! # Example
//!
//! A complete plugin: a `cdylib` crate depending on this one, `serde` and `serde_json`, built with
//! `cargo build --release --target wasm32-wasip2`. The `plugins/` folder of the repository holds
//! more (`orders`, `inventory`, `order-summary`).
//!
//! ```no_run
//! use handler_host_sdk::prelude::*;
//! use serde::{Deserialize, Serialize};
//!
//! struct Greeter;
//!
//! #[derive(Deserialize)]
//! struct Greet {
//!     name: String,
//! }
//!
//! #[derive(Serialize, Deserialize, Default)]
//! struct Greeted {
//!     times: u64,
//! }
//!
//! impl Plugin for Greeter {
//!     fn info() -> PluginInfo {
//!         PluginInfo::new("greeter", env!("CARGO_PKG_VERSION"))
//!             .command("greeter.greet")
//!             .query("greeter.times")
//!     }
//!
//!     fn handle_command(msg: Message) -> Result<Reply, HandlerError> {
//!         let greet: Greet = msg.payload()?;
//!         if greet.name.is_empty() {
//!             return Err(HandlerError::rejected("name must not be empty"));
//!         }
//!         let key = format!("greeted/{}", greet.name);
//!         let mut greeted: Greeted = state::get(&key)?.unwrap_or_default();
//!         greeted.times += 1;
//!         state::put(&key, &greeted)?;
//!         events::emit("greeter.greeted", &serde_json::json!({ "name": greet.name }), Some(greet.name.as_str()))?;
//!         log::info!("greeted {} ({} times)", greet.name, greeted.times);
//!         Reply::json(&serde_json::json!({ "greeting": format!("hello, {}", greet.name) }))
//!     }
//!
//!     fn handle_query(msg: Message) -> Result<Reply, HandlerError> {
//!         let greet: Greet = msg.payload()?;
//!         let greeted: Greeted = state::get(&format!("greeted/{}", greet.name))?.unwrap_or_default();
//!         Reply::json(&greeted)
//!     }
//! }
//!
//! export_plugin!(Greeter);
//! # fn main() {}
//! ```
//!
//! # Layout
//! - [`Plugin`] and [`PluginInfo`] (`plugin.rs`): what an author implements and declares.
//! - [`Message`] (`message.rs`): the envelope handed to a handler, and its typed payload.
//! - [`Reply`] (`reply.rs`): the answer of a command or query.
//! - [`HandlerError`] (`error.rs`): rejected, retryable or permanent, and what the host does
//!   with each.
//! - [`state`], [`events`], [`log`]: the imports a handler may call.
//! - `bindings.rs`: the one `wit_bindgen::generate!`; `export.rs`: the glue behind
//!   [`export_plugin!`] that adapts a [`Plugin`] to the generated exports.
//!
//! # Outside the wasm target
//! The crate also compiles for the build machine so that `cargo check` and `cargo clippy` work
//! without `--target`, but the imports only exist inside the host: calling [`state`],
//! [`events`] or [`log`] from a native binary or test panics.

// The generated code names the crate by its absolute path (see `bindings.rs`), which must also
// resolve inside the crate itself.
extern crate self as handler_host_sdk;

// Public only so that `__private` can re-export it to `export_plugin!`.
#[doc(hidden)]
pub mod bindings;
mod error;
pub mod events;
mod export;
pub mod log;
mod message;
mod plugin;
mod reply;
pub mod state;

pub use error::HandlerError;
pub use message::Message;
pub use plugin::{Plugin, PluginInfo};
pub use reply::Reply;

/// Everything a plugin usually needs: `use handler_host_sdk::prelude::*;`.
///
/// The modules come in by name so handlers read `state::get`, `events::emit` and
/// `log::info!`.
pub mod prelude {
    pub use crate::{
        HandlerError, Message, Plugin, PluginInfo, Reply, events, export_plugin, log, state,
    };
}

/// Exports a [`Plugin`] implementation as the component's `describe`, `handle-command`,
/// `handle-event` and `handle-query`.
///
/// Invoke it once, at the top level of the plugin's `cdylib` crate:
///
/// ```ignore
/// export_plugin!(Orders);
/// ```
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        const _: () = {
            type HandlerHostPluginExports = $crate::__private::Exports<$plugin>;
            $crate::__private::bindings::export!(
                HandlerHostPluginExports with_types_in $crate::__private::bindings
            );
        };
    };
}

/// What [`export_plugin!`] expands to needs; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::bindings;
    pub use crate::export::Exports;
    pub use wit_bindgen;
}
