//! The glue between the generated `Guest` trait and a [`Plugin`], used by
//! [`export_plugin!`](crate::export_plugin).

use std::marker::PhantomData;
use std::sync::Once;

use crate::bindings::handler_host::plugin::types as wit;
use crate::bindings::{Envelope, Guest};
use crate::{Message, Plugin, Reply};

/// Implements the component's exports for the plugin `P`.
///
/// `export_plugin!(P)` names `Exports<P>` through a type alias, because the generated export
/// macro accepts only a plain identifier.
pub struct Exports<P>(PhantomData<P>);

impl<P: Plugin> Guest for Exports<P> {
    fn describe() -> wit::PluginInfo {
        route_panics_to_stderr();
        P::info().into()
    }

    fn handle_command(command: Envelope) -> Result<Vec<u8>, wit::HandlerError> {
        route_panics_to_stderr();
        P::handle_command(Message::new(command))
            .map(Reply::into_bytes)
            .map_err(Into::into)
    }

    fn handle_event(event: Envelope) -> Result<(), wit::HandlerError> {
        route_panics_to_stderr();
        P::handle_event(Message::new(event)).map_err(Into::into)
    }

    fn handle_query(query: Envelope) -> Result<Vec<u8>, wit::HandlerError> {
        route_panics_to_stderr();
        P::handle_query(Message::new(query))
            .map(Reply::into_bytes)
            .map_err(Into::into)
    }
}

/// Makes a panic leave exactly one line on stderr: where it happened and its message.
///
/// The host keeps the guest's stderr and explains a trap with its last line. The default hook
/// would end with "note: run with `RUST_BACKTRACE=1` ...", which explains nothing, on every
/// call, because every call runs in a fresh instance that has never panicked before.
fn route_panics_to_stderr() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        std::panic::set_hook(Box::new(|panic| {
            let reason = panic.payload_as_str().unwrap_or("(no message)");
            // One line, whatever the message holds, so the last line is the whole story.
            let reason = reason.replace('\n', " ");
            match panic.location() {
                Some(at) => eprintln!(
                    "panicked at {}:{}:{}: {reason}",
                    at.file(),
                    at.line(),
                    at.column()
                ),
                None => eprintln!("panicked: {reason}"),
            }
        }));
    });
}
