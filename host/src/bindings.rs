//! The one place the WIT contract in `wit/` is turned into Rust for the host.
//!
//! Everything else in the host talks to [`PluginWorld`] and the re-exported types through the
//! wrappers in [`crate::plugin`] and [`crate::sandbox`], never to other generated names.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "plugin",
    imports: { default: async | trappable },
    exports: { default: async },
});

pub use self::Plugin as PluginWorld;
pub use self::PluginPre as PluginWorldPre;
pub use self::handler_host::plugin::log::Level as LogLevel;
pub use self::handler_host::plugin::{log as log_api, unit_of_work as unit_of_work_api};
