//! The one place the WIT contract in `wit/` is turned into Rust for the host.
//!
//! The current contract (`wit/plugin.wit`, `handler-host:plugin@0.2.0`) is generated at the top;
//! each older version the host still loads has a module of its own ([`v0_1`]) that converts its
//! types to and from the current ones, so nothing else in the host knows old versions exist.
//! Everything else talks to [`PluginWorld`] and the re-exported types through the wrappers in
//! [`crate::plugin`] and [`crate::sandbox`], never to other generated names.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "plugin",
    imports: { default: async | trappable },
    exports: { default: async },
});

pub use self::Plugin as PluginWorld;
pub use self::PluginPre as PluginWorldPre;
pub use self::handler_host::plugin::log::Level as LogLevel;
pub use self::handler_host::plugin::types::{EmitOptions, PayloadSchema, Schedule};
pub use self::handler_host::plugin::{log as log_api, unit_of_work as unit_of_work_api};

/// `handler-host:plugin@0.1.0`, frozen in `wit/v0.1/`: components built against it load and
/// run unchanged. Its `emit` is the current one without options; its `plugin-info` has no
/// schemas.
pub mod v0_1 {
    wasmtime::component::bindgen!({
        path: "../wit/v0.1",
        world: "plugin",
        imports: { default: async | trappable },
        exports: { default: async },
    });

    pub use self::Plugin as PluginWorld;
    pub use self::PluginPre as PluginWorldPre;
    pub use self::handler_host::plugin::log::Level as LogLevel;
    use self::handler_host::plugin::types as old;
    pub use self::handler_host::plugin::{log as log_api, unit_of_work as unit_of_work_api};
    use super::handler_host::plugin::types as current;

    impl From<&current::Envelope> for old::Envelope {
        fn from(e: &current::Envelope) -> Self {
            Self {
                id: e.id.clone(),
                kind: e.kind.clone(),
                partition_key: e.partition_key.clone(),
                tenant_id: e.tenant_id.clone(),
                correlation_id: e.correlation_id.clone(),
                causation_id: e.causation_id.clone(),
                actor: e.actor.clone(),
                schema_version: e.schema_version,
                occurred_at_ms: e.occurred_at_ms,
                attempt: e.attempt,
                headers: e.headers.clone(),
                payload: e.payload.clone(),
            }
        }
    }

    impl From<old::HandlerError> for current::HandlerError {
        fn from(e: old::HandlerError) -> Self {
            match e {
                old::HandlerError::Rejected(m) => Self::Rejected(m),
                old::HandlerError::Retryable(m) => Self::Retryable(m),
                old::HandlerError::Permanent(m) => Self::Permanent(m),
            }
        }
    }

    impl From<old::PluginInfo> for current::PluginInfo {
        fn from(i: old::PluginInfo) -> Self {
            Self {
                name: i.name,
                version: i.version,
                commands: i.commands,
                events: i.events,
                queries: i.queries,
                schemas: Vec::new(),
            }
        }
    }

    impl From<LogLevel> for super::LogLevel {
        fn from(level: LogLevel) -> Self {
            match level {
                LogLevel::Trace => Self::Trace,
                LogLevel::Debug => Self::Debug,
                LogLevel::Info => Self::Info,
                LogLevel::Warn => Self::Warn,
                LogLevel::Error => Self::Error,
            }
        }
    }
}
