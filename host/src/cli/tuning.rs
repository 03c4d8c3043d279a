//! The host config file and the flags that override it, shared by every command that runs
//! handlers (`run`, `dev`, `send`, `bus flush`), and the sandbox they configure.

use super::CacheArg;
use crate::config::{ConfigError, HostConfig, PluginPolicy};
use crate::sandbox::{Compiler, Sandbox};
use anyhow::bail;
use clap::Args;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The host config file and the command-line overrides of its `[defaults]` and
/// `[backpressure]`. Built-in defaults come from [`PluginPolicy::DEFAULT`]; the file's
/// `[defaults]` override them, these flags override the file's `[defaults]`, and
/// `[plugins.NAME]` sections override all three for their plugin.
#[derive(Debug, Args)]
pub(crate) struct Tuning {
    /// Host config file (TOML): per-plugin retry, ordering, deadline and memory; idempotency
    /// key lifetimes; retention; the backlog bound. See `docs/guarantees.md`.
    #[arg(long, env = "HOST_CONFIG")]
    pub config: Option<PathBuf>,
    /// Wall-clock budget of one handler call, in milliseconds [default: 5000].
    #[arg(long)]
    pub call_deadline_ms: Option<u64>,
    /// Cap on a plugin's linear memory, in MiB [default: 64].
    #[arg(long)]
    pub memory_mib: Option<usize>,
    /// Attempts per delivery before it is dead-lettered [default: 5].
    #[arg(long)]
    pub max_attempts: Option<u32>,
    /// Delay before the first retry, in milliseconds [default: 200].
    #[arg(long)]
    pub retry_initial_ms: Option<u64>,
    /// Longest delay between retries, in milliseconds [default: 30000].
    #[arg(long)]
    pub retry_max_ms: Option<u64>,
    /// How long an idempotency key's outcome is kept and replayed, in seconds [default: 86400].
    #[arg(long)]
    pub idempotency_ttl_secs: Option<u64>,
    /// Deliveries due and not yet delivered at which commands are refused (503 with
    /// `Retry-After`) until the backlog falls to --resume-at; 0 turns the bound off
    /// [default: 100000, or `[backpressure] max_due` of the config file].
    #[arg(long, env = "HOST_MAX_DUE")]
    pub max_due: Option<u64>,
    /// Due deliveries at or below which refused commands are accepted again; below --max-due
    /// [default: --max-due less a fifth, or `[backpressure] resume_at` of the config file].
    #[arg(long, env = "HOST_RESUME_AT")]
    pub resume_at: Option<u64>,
}

impl Tuning {
    /// The resolved configuration: the file (if any) with these flags applied to its
    /// `[defaults]`.
    pub(super) fn host_config(&self) -> anyhow::Result<HostConfig> {
        let flags = |defaults: &mut PluginPolicy| -> Result<(), ConfigError> {
            let flag = |name: &str, message: &str| ConfigError {
                key: format!("--{name}"),
                message: message.to_owned(),
            };
            if let Some(ms) = self.call_deadline_ms {
                if ms == 0 {
                    return Err(flag("call-deadline-ms", "must be greater than 0"));
                }
                defaults.limits.call_deadline = Duration::from_millis(ms);
            }
            if let Some(mib) = self.memory_mib {
                if mib == 0 || mib as u64 > crate::config::MAX_MEMORY_MIB {
                    return Err(flag("memory-mib", "must be between 1 and 4096"));
                }
                defaults.limits.memory_bytes = mib << 20;
            }
            if let Some(attempts) = self.max_attempts {
                defaults.retry.max_attempts = attempts;
            }
            if let Some(ms) = self.retry_initial_ms {
                defaults.retry.initial_delay = Duration::from_millis(ms);
            }
            if let Some(ms) = self.retry_max_ms {
                defaults.retry.max_delay = Duration::from_millis(ms);
            }
            Ok(())
        };
        let mut config = match &self.config {
            Some(path) => HostConfig::load(path, flags)?,
            None => HostConfig::without_file(flags)?,
        };
        if let Some(secs) = self.idempotency_ttl_secs {
            if secs == 0 {
                bail!("--idempotency-ttl-secs must be greater than 0");
            }
            config.idempotency.ttl = Duration::from_secs(secs);
        }
        config.backpressure =
            config
                .backpressure
                .over(self.max_due, self.resume_at, ["--max-due", "--resume-at"])?;
        Ok(config)
    }
}

/// The sandbox with each configured plugin's own limits, the compiled-component cache, and
/// `compiler`.
pub(super) fn sandbox_for(
    config: &HostConfig,
    cache: &CacheArg,
    compiler: Compiler,
) -> anyhow::Result<Arc<Sandbox>> {
    let plugin_limits = config
        .plugins
        .iter()
        .map(|(name, policy)| (name.clone(), policy.limits))
        .collect();
    Sandbox::with_plugin_limits(
        config.defaults.limits,
        plugin_limits,
        cache.cache(),
        compiler,
    )
}
