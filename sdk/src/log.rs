//! Logging into the host's log, where each line is tagged with the plugin's name.
//!
//! Prefer this to printing: a line logged here carries a level, and the contract promises it
//! reaches the host's log, while stdout and stderr are only what the host chooses to keep. Use
//! the macros, which take `format!` arguments:
//!
//! ```no_run
//! use handler_host_sdk::log;
//!
//! let order_id = "o-1";
//! log::info!("order {order_id} placed");
//! log::warn!("stock for {} is low: {}", "sku-1", 2);
//! ```
//!
//! Logging is not part of the unit of work: a line is written even when the handler then fails.

use crate::bindings::handler_host::plugin::log as wit;

pub use crate::{debug, error, info, trace, warn};

/// How severe a log line is; the host decides which levels it keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Step-by-step detail, usually switched off.
    Trace,
    /// Detail for whoever is debugging the plugin.
    Debug,
    /// Something worth knowing happened.
    Info,
    /// Something looks wrong, but the handler carries on.
    Warn,
    /// Something failed.
    Error,
}

impl From<Level> for wit::Level {
    fn from(level: Level) -> Self {
        match level {
            Level::Trace => Self::Trace,
            Level::Debug => Self::Debug,
            Level::Info => Self::Info,
            Level::Warn => Self::Warn,
            Level::Error => Self::Error,
        }
    }
}

/// Writes one line at `level`; the macros call this after formatting.
pub fn write(level: Level, message: &str) {
    wit::log(level.into(), message);
}

/// Logs a `format!`-style message at [`Level::Trace`].
#[macro_export]
macro_rules! trace {
    ($($arg:tt)+) => {
        $crate::log::write($crate::log::Level::Trace, &::std::format!($($arg)+))
    };
}

/// Logs a `format!`-style message at [`Level::Debug`].
#[macro_export]
macro_rules! debug {
    ($($arg:tt)+) => {
        $crate::log::write($crate::log::Level::Debug, &::std::format!($($arg)+))
    };
}

/// Logs a `format!`-style message at [`Level::Info`].
#[macro_export]
macro_rules! info {
    ($($arg:tt)+) => {
        $crate::log::write($crate::log::Level::Info, &::std::format!($($arg)+))
    };
}

/// Logs a `format!`-style message at [`Level::Warn`].
#[macro_export]
macro_rules! warn {
    ($($arg:tt)+) => {
        $crate::log::write($crate::log::Level::Warn, &::std::format!($($arg)+))
    };
}

/// Logs a `format!`-style message at [`Level::Error`].
#[macro_export]
macro_rules! error {
    ($($arg:tt)+) => {
        $crate::log::write($crate::log::Level::Error, &::std::format!($($arg)+))
    };
}
