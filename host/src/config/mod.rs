//! The host's configuration. The configuration file (`host run --config host.toml`) sets the
//! delivery policy and the limits of each plugin, how long idempotency keys live, and how long
//! finished deliveries are kept; every other tunable, and the built-in limits of one handler
//! call, has its default written once in `defaults.rs` ([`Limits`], [`DispatchConfig`]).
//!
//! ```toml
//! [defaults]                       # every plugin, unless its own section says otherwise
//! ordering = "strict"              # or "skip": a failing message is parked, its key moves on
//! call_deadline = "5s"
//! memory_mib = 64
//! calls_per_instance = 1           # more: an instance serves that many calls (globals kept)
//! max_causal_depth = 32            # deeper events (handlers emitting in a loop) are dead letters
//! dead_letter_at_once = ["rejected", "permanent", "deadline", "memory_limit"]
//! retry = { initial_delay = "200ms", multiplier = 2.0, max_delay = "30s", max_attempts = 5, jitter = 0.5 }
//!
//! [plugins.billing]                # overrides, field by field, for the plugin named `billing`
//! ordering = "skip"
//! retry = { max_attempts = 10 }
//!
//! [idempotency]
//! ttl = "24h"
//! ttl_by_kind = { "order.place" = "1h" }
//!
//! [retention]
//! delivered = "7d"                 # `done` deliveries (inbox marks) older than this are removed
//! batch_size = 500                 # rows per short delete transaction
//! interval = "1m"                  # how often the maintenance task runs
//!
//! [backpressure]
//! max_due = 100000                 # due, undelivered deliveries at which commands get 503; 0: off
//! resume_at = 80000                # commands are accepted again at or below this many
//! ```
//!
//! Durations are numbers with units, as people write them: `500ms`, `5s`, `1h 30m`, `7d`
//! (`--print-config` prints them the same way: `1m 30s`, `1day`). Every key is optional; the
//! defaults are [`PluginPolicy::DEFAULT`], [`IdempotencyConfig::DEFAULT`],
//! [`RetentionConfig::DEFAULT`] and [`BackpressureConfig::DEFAULT`]. An unknown key or a bad
//! value is an error naming the key.

use crate::error::ErrorClass;
use crate::retry::RetryPolicy;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

mod defaults;
mod file;
pub use defaults::{
    DEFAULT_DATABASE_URL, DEFAULT_IDEMPOTENCY_TTL, DEFAULT_LEASE_TIMEOUT, DEFAULT_LISTEN,
    DEFAULT_MAX_DUE, DispatchConfig, Limits, MAX_MAX_DUE,
};
use file::RawConfig;
pub use file::{format_duration, parse_duration};

/// Largest memory cap a plugin may be given: the pooling allocator reserves address space
/// for this much per instance slot, so an absurd value would fail the engine at start.
pub const MAX_MEMORY_MIB: u64 = 4096;
/// Most calls one instance may serve: an instance is still recycled now and then, so what a
/// long-lived guest accumulates (fragmented memory, caches) is bounded.
pub const MAX_CALLS_PER_INSTANCE: u64 = 1_000_000;
/// Deepest `max_causal_depth` a plugin may be given: past this a chain is a loop.
pub const MAX_CAUSAL_DEPTH: u32 = 10_000;

/// What a failing message does to the later messages of its partition key, per subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ordering {
    /// A pending retry or a dead letter holds back the later messages of its key.
    Strict,
    /// A message that failed once is parked: its retries go on (and it may end dead), but
    /// the later messages of its key no longer wait for it.
    Skip,
}

impl Ordering {
    /// The name the configuration file and `--print-config` use.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Strict => "strict",
            Self::Skip => "skip",
        }
    }
}

/// A set of error classes, cheap to copy and buildable in a `const`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassSet(u16);

impl ClassSet {
    /// No class at all.
    pub const EMPTY: Self = Self(0);
    /// The classes [`ErrorClass::is_retried`] says are not worth another attempt.
    pub const NOT_RETRIED: Self = {
        let mut set = Self::EMPTY;
        let mut i = 0;
        while i < ErrorClass::ALL.len() {
            if !ErrorClass::ALL[i].is_retried() {
                set = set.with(ErrorClass::ALL[i]);
            }
            i += 1;
        }
        set
    };

    /// This set with `class` added.
    pub const fn with(self, class: ErrorClass) -> Self {
        Self(self.0 | 1 << class as u16)
    }

    /// Whether `class` is in the set.
    pub const fn contains(self, class: ErrorClass) -> bool {
        self.0 & (1 << class as u16) != 0
    }

    /// The classes in the set, in the order of [`ErrorClass::ALL`].
    pub fn iter(self) -> impl Iterator<Item = ErrorClass> {
        ErrorClass::ALL
            .into_iter()
            .filter(move |c| self.contains(*c))
    }
}

/// Everything the host decides per plugin: how its failed deliveries are retried, what a
/// failure does to the order of its keys, and what one of its calls may consume.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PluginPolicy {
    /// How many attempts a failed delivery to this plugin gets, and how far apart.
    pub retry: RetryPolicy,
    /// Whether a failing delivery holds back the later messages of its partition key.
    pub ordering: Ordering,
    /// What one handler call of this plugin may consume.
    pub limits: Limits,
    /// Failure classes that go to the dead-letter queue at once, without further attempts.
    pub dead_letter_at_once: ClassSet,
    /// The deepest message of a causal chain this plugin is given: a command is at depth 0,
    /// an event emitted while handling a message at depth d is at d + 1. Deeper ones are
    /// dead-lettered at once as `loop`.
    pub max_causal_depth: u32,
}

impl PluginPolicy {
    /// The defaults, written once: [`RetryPolicy::DEFAULT`], strict ordering,
    /// [`Limits::DEFAULT`], and the classes that cannot succeed on a retry dead at once.
    pub const DEFAULT: Self = Self {
        retry: RetryPolicy::DEFAULT,
        ordering: Ordering::Strict,
        limits: Limits::DEFAULT,
        dead_letter_at_once: ClassSet::NOT_RETRIED,
        // Real chains (command → event → follow-up → …) are a handful of steps deep; a loop
        // between handlers reaches this within milliseconds.
        max_causal_depth: 32,
    };

    /// Whether a delivery that failed with `class` after `attempt` attempts is dead now.
    pub fn is_dead(&self, class: ErrorClass, attempt: u32) -> bool {
        // A loop is dead whatever the configuration: another attempt would only loop again.
        class == ErrorClass::Loop
            || self.dead_letter_at_once.contains(class)
            || self.retry.is_exhausted(attempt)
    }

    /// The policy as `--print-config` shows it.
    pub fn to_json(&self) -> serde_json::Value {
        let dead_at_once: Vec<&str> = self
            .dead_letter_at_once
            .iter()
            .map(|c| c.as_str())
            .collect();
        json!({
            "ordering": self.ordering.as_str(),
            "call_deadline": format_duration(self.limits.call_deadline),
            "memory_mib": self.limits.memory_bytes >> 20,
            "calls_per_instance": self.limits.calls_per_instance,
            "dead_letter_at_once": dead_at_once,
            "max_causal_depth": self.max_causal_depth,
            "retry": {
                "initial_delay": format_duration(self.retry.initial_delay),
                "multiplier": self.retry.multiplier,
                "max_delay": format_duration(self.retry.max_delay),
                "max_attempts": self.retry.max_attempts,
                "jitter": self.retry.jitter,
            },
        })
    }
}

impl Default for PluginPolicy {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// How long the first outcome of an idempotency key is kept and replayed.
#[derive(Debug, Clone, PartialEq)]
pub struct IdempotencyConfig {
    /// How long a key's first outcome is kept, for the command kinds not in `ttl_by_kind`.
    pub ttl: Duration,
    /// Overrides of `ttl` by command kind.
    pub ttl_by_kind: BTreeMap<String, Duration>,
}

impl IdempotencyConfig {
    /// The built-in defaults, used when the configuration file has no `[idempotency]` section:
    /// [`DEFAULT_IDEMPOTENCY_TTL`] for every kind.
    pub const DEFAULT: Self = Self {
        ttl: DEFAULT_IDEMPOTENCY_TTL,
        ttl_by_kind: BTreeMap::new(),
    };

    /// The lifetime of a key used with command `kind`.
    pub fn ttl_for(&self, kind: &str) -> Duration {
        self.ttl_by_kind.get(kind).copied().unwrap_or(self.ttl)
    }
}

/// How the background maintenance task trims the database.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetentionConfig {
    /// `done` deliveries (inbox marks) completed longer ago than this are deleted, then the
    /// messages left without any delivery.
    pub delivered: Duration,
    /// Rows per delete: each batch is its own short transaction, so the writer is never
    /// held for long.
    pub batch_size: u32,
    /// Pause between two maintenance passes.
    pub interval: Duration,
}

impl RetentionConfig {
    /// The built-in defaults, used when the configuration file does not set them.
    pub const DEFAULT: Self = Self {
        delivered: Duration::from_secs(7 * 24 * 60 * 60),
        batch_size: 500,
        interval: Duration::from_secs(60),
    };
}

/// The bound on the deliveries that are due and not yet delivered (`[backpressure]`, see
/// [`crate::backpressure`]): from `max_due` of them on, commands are refused until they fall
/// to `resume_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackpressureConfig {
    /// Due deliveries at which commands start being refused; 0 turns back-pressure off.
    pub max_due: u64,
    /// Due deliveries at or below which refused commands are accepted again; below
    /// `max_due`, so the host does not flap at the bound.
    pub resume_at: u64,
}

impl BackpressureConfig {
    /// The built-in bound, [`DEFAULT_MAX_DUE`], with its default resume mark.
    pub const DEFAULT: Self = Self::bounded_at(DEFAULT_MAX_DUE);
    /// No bound: commands are never refused for the backlog.
    pub const OFF: Self = Self::bounded_at(0);

    /// The bound `max_due` with its default resume mark: `max_due` less a fifth, rounded so
    /// that it stays below `max_due` (16 for 20, 80,000 for 100,000); off when 0.
    pub const fn bounded_at(max_due: u64) -> Self {
        Self {
            max_due,
            resume_at: max_due - max_due.div_ceil(5),
        }
    }

    /// Whether commands are ever refused for the backlog.
    pub const fn is_on(&self) -> bool {
        self.max_due > 0
    }

    /// `self` with `max_due` and `resume_at` laid over it, as the `[backpressure]` section or
    /// the command line gives them; `keys` name the two in errors. A new `max_due` without a
    /// `resume_at` takes its own default mark, not the one set for the bound it replaces.
    ///
    /// # Errors
    /// `max_due` over [`MAX_MAX_DUE`], `resume_at` not below `max_due`, or a `resume_at`
    /// with back-pressure off.
    pub fn over(
        self,
        max_due: Option<u64>,
        resume_at: Option<u64>,
        keys: [&str; 2],
    ) -> Result<Self, ConfigError> {
        let mut resolved = match max_due {
            Some(bound) if bound > MAX_MAX_DUE => {
                return Err(invalid(
                    keys[0],
                    format!("{bound} is out of range: expected 0 (off) to {MAX_MAX_DUE}"),
                ));
            }
            Some(bound) => Self::bounded_at(bound),
            None => self,
        };
        if let Some(mark) = resume_at {
            if !resolved.is_on() {
                return Err(invalid(
                    keys[1],
                    "has no effect: back-pressure is off (max_due = 0)",
                ));
            }
            if mark >= resolved.max_due {
                return Err(invalid(
                    keys[1],
                    format!(
                        "{mark} must be below max_due ({}): commands are accepted again once \
                         the backlog falls to it",
                        resolved.max_due
                    ),
                ));
            }
            resolved.resume_at = mark;
        }
        Ok(resolved)
    }
}

/// The resolved configuration of a host.
#[derive(Debug, Clone, PartialEq)]
pub struct HostConfig {
    /// The policy of every plugin without a section of its own (`[defaults]`, over the built-in
    /// [`PluginPolicy::DEFAULT`]).
    pub defaults: PluginPolicy,
    /// Plugins with a section of their own, resolved over `defaults`.
    pub plugins: BTreeMap<String, PluginPolicy>,
    /// How long idempotency keys live (`[idempotency]`).
    pub idempotency: IdempotencyConfig,
    /// How long finished deliveries are kept, and how they are trimmed (`[retention]`).
    pub retention: RetentionConfig,
    /// The bound on due deliveries past which commands are refused (`[backpressure]`).
    pub backpressure: BackpressureConfig,
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            defaults: PluginPolicy::DEFAULT,
            plugins: BTreeMap::new(),
            idempotency: IdempotencyConfig::DEFAULT,
            retention: RetentionConfig::DEFAULT,
            backpressure: BackpressureConfig::DEFAULT,
        }
    }
}

/// A configuration value that is not valid, with the dotted key it was found at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{key}`: {message}")]
pub struct ConfigError {
    /// Where the value was found, as a dotted key: `plugins.billing.retry.jitter`.
    pub key: String,
    /// What is wrong with the value, for people.
    pub message: String,
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.to_owned(),
        message: message.into(),
    }
}

impl HostConfig {
    /// The policy of plugin `name`: its own section, or the defaults.
    pub fn policy(&self, name: &str) -> &PluginPolicy {
        self.plugins.get(name).unwrap_or(&self.defaults)
    }

    /// Reads and resolves the configuration file at `path`; `adjust_defaults` applies
    /// command-line overrides to `[defaults]` before the plugin sections are laid over it.
    ///
    /// # Errors
    /// Fails when the file cannot be read, is not valid TOML, has an unknown key or a bad
    /// value; the message names the file and the key.
    pub fn load(
        path: &Path,
        adjust_defaults: impl FnOnce(&mut PluginPolicy) -> Result<(), ConfigError>,
    ) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read host config {}: {e}", path.display()))?;
        Self::parse(&text, adjust_defaults)
            .map_err(|e| anyhow::anyhow!("invalid host config {}: {e}", path.display()))
    }

    /// Parses and resolves a configuration text (see the module docs for the format).
    ///
    /// # Errors
    /// A TOML error (which names an unknown key and its line) or a [`ConfigError`].
    pub fn parse(
        text: &str,
        adjust_defaults: impl FnOnce(&mut PluginPolicy) -> Result<(), ConfigError>,
    ) -> anyhow::Result<Self> {
        let raw: RawConfig = toml::from_str(text)?;
        Ok(raw.resolve(adjust_defaults)?)
    }

    /// Resolves the built-in defaults with command-line overrides only (no file).
    ///
    /// # Errors
    /// A [`ConfigError`] from `adjust_defaults`.
    pub fn without_file(
        adjust_defaults: impl FnOnce(&mut PluginPolicy) -> Result<(), ConfigError>,
    ) -> Result<Self, ConfigError> {
        RawConfig::default().resolve(adjust_defaults)
    }

    /// The effective configuration as `--print-config` shows it, for the plugins named.
    pub fn to_json(&self, plugins: &[String]) -> serde_json::Value {
        let mut names: Vec<&String> = self.plugins.keys().chain(plugins).collect();
        names.sort();
        names.dedup();
        let per_plugin: serde_json::Map<_, _> = names
            .into_iter()
            .map(|name| (name.clone(), self.policy(name).to_json()))
            .collect();
        json!({
            "defaults": self.defaults.to_json(),
            "plugins": per_plugin,
            "idempotency": {
                "ttl": format_duration(self.idempotency.ttl),
                "ttl_by_kind": self.idempotency.ttl_by_kind.iter()
                    .map(|(k, v)| (k.clone(), json!(format_duration(*v))))
                    .collect::<serde_json::Map<_, _>>(),
            },
            "retention": {
                "delivered": format_duration(self.retention.delivered),
                "batch_size": self.retention.batch_size,
                "interval": format_duration(self.retention.interval),
            },
            "backpressure": {
                "max_due": self.backpressure.max_due,
                "resume_at": self.backpressure.resume_at,
            },
        })
    }
}

#[cfg(test)]
mod tests;
