//! The guest side of the WIT contract in `wit/plugin.wit`, generated once.
//!
//! Nothing outside this crate should name these items: authors use the wrappers in the rest of
//! the SDK, and [`export_plugin!`](crate::export_plugin) reaches the export glue through
//! `handler_host_sdk::__private`. The module is public only because that macro expands in the
//! plugin's crate.

wit_bindgen::generate!({
    path: "../wit",
    world: "plugin",
    // The export macro is expanded in the plugin's crate, not here, so it has to be
    // `#[macro_export]` and has to find both the bindings and the wit-bindgen runtime through
    // this crate: a plugin depends on `handler-host-sdk` only, never on `wit-bindgen` itself.
    pub_export_macro: true,
    default_bindings_module: "handler_host_sdk::__private::bindings",
    runtime_path: "handler_host_sdk::__private::wit_bindgen::rt",
});
