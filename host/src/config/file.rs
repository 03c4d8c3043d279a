//! The host config file as written: its TOML sections, durations as text, and how they are
//! checked and resolved into a [`HostConfig`] (the format is in [`super`]'s docs).

use super::*;
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    defaults: RawPolicy,
    #[serde(default)]
    plugins: BTreeMap<String, RawPolicy>,
    #[serde(default)]
    idempotency: RawIdempotency,
    #[serde(default)]
    retention: RawRetention,
    #[serde(default)]
    backpressure: RawBackpressure,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    ordering: Option<String>,
    call_deadline: Option<String>,
    memory_mib: Option<u64>,
    calls_per_instance: Option<u64>,
    max_causal_depth: Option<u32>,
    dead_letter_at_once: Option<Vec<String>>,
    #[serde(default)]
    retry: RawRetry,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    initial_delay: Option<String>,
    multiplier: Option<f64>,
    max_delay: Option<String>,
    max_attempts: Option<u32>,
    jitter: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdempotency {
    ttl: Option<String>,
    #[serde(default)]
    ttl_by_kind: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    delivered: Option<String>,
    batch_size: Option<u32>,
    interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackpressure {
    max_due: Option<u64>,
    resume_at: Option<u64>,
}

impl RawConfig {
    pub(super) fn resolve(
        self,
        adjust_defaults: impl FnOnce(&mut PluginPolicy) -> Result<(), ConfigError>,
    ) -> Result<HostConfig, ConfigError> {
        let mut defaults = self.defaults.over(&PluginPolicy::DEFAULT, "defaults")?;
        adjust_defaults(&mut defaults)?;
        validate(&defaults, "defaults")?;
        let plugins = self
            .plugins
            .into_iter()
            .map(|(name, raw)| {
                let key = format!("plugins.{name}");
                let policy = raw.over(&defaults, &key)?;
                validate(&policy, &key)?;
                Ok((name, policy))
            })
            .collect::<Result<_, ConfigError>>()?;
        let mut idempotency = IdempotencyConfig::DEFAULT;
        if let Some(ttl) = &self.idempotency.ttl {
            idempotency.ttl = positive_duration("idempotency.ttl", ttl)?;
        }
        for (kind, ttl) in &self.idempotency.ttl_by_kind {
            let key = format!("idempotency.ttl_by_kind.\"{kind}\"");
            idempotency
                .ttl_by_kind
                .insert(kind.clone(), positive_duration(&key, ttl)?);
        }
        let mut retention = RetentionConfig::DEFAULT;
        if let Some(delivered) = &self.retention.delivered {
            retention.delivered = parse_duration("retention.delivered", delivered)?;
        }
        if let Some(batch) = self.retention.batch_size {
            if batch == 0 {
                return Err(invalid("retention.batch_size", "must be at least 1"));
            }
            retention.batch_size = batch;
        }
        if let Some(interval) = &self.retention.interval {
            retention.interval = positive_duration("retention.interval", interval)?;
        }
        let backpressure = BackpressureConfig::DEFAULT.over(
            self.backpressure.max_due,
            self.backpressure.resume_at,
            ["backpressure.max_due", "backpressure.resume_at"],
        )?;
        Ok(HostConfig {
            defaults,
            plugins,
            idempotency,
            retention,
            backpressure,
        })
    }
}

impl RawPolicy {
    /// This section's values laid over `base`; `section` is its dotted key, for errors.
    fn over(&self, base: &PluginPolicy, section: &str) -> Result<PluginPolicy, ConfigError> {
        let key = |name: &str| format!("{section}.{name}");
        let mut policy = *base;
        if let Some(ordering) = &self.ordering {
            policy.ordering = match ordering.as_str() {
                "strict" => Ordering::Strict,
                "skip" => Ordering::Skip,
                other => {
                    return Err(invalid(
                        &key("ordering"),
                        format!("unknown ordering `{other}`: expected \"strict\" or \"skip\""),
                    ));
                }
            };
        }
        if let Some(deadline) = &self.call_deadline {
            policy.limits.call_deadline = positive_duration(&key("call_deadline"), deadline)?;
        }
        if let Some(mib) = self.memory_mib {
            if mib == 0 || mib > MAX_MEMORY_MIB {
                return Err(invalid(
                    &key("memory_mib"),
                    format!("{mib} is out of range: expected 1 to {MAX_MEMORY_MIB}"),
                ));
            }
            policy.limits.memory_bytes = (mib as usize) << 20;
        }
        if let Some(depth) = self.max_causal_depth {
            if !(1..=MAX_CAUSAL_DEPTH).contains(&depth) {
                return Err(invalid(
                    &key("max_causal_depth"),
                    format!("{depth} is out of range: expected 1 to {MAX_CAUSAL_DEPTH}"),
                ));
            }
            policy.max_causal_depth = depth;
        }
        if let Some(calls) = self.calls_per_instance {
            if !(1..=MAX_CALLS_PER_INSTANCE).contains(&calls) {
                return Err(invalid(
                    &key("calls_per_instance"),
                    format!("{calls} is out of range: expected 1 to {MAX_CALLS_PER_INSTANCE}"),
                ));
            }
            policy.limits.calls_per_instance = calls as usize;
        }
        if let Some(classes) = &self.dead_letter_at_once {
            let mut set = ClassSet::EMPTY;
            for name in classes {
                let class = ErrorClass::parse(name).ok_or_else(|| {
                    invalid(
                        &key("dead_letter_at_once"),
                        format!(
                            "unknown error class `{name}`: expected one of {}",
                            ErrorClass::ALL.map(ErrorClass::as_str).join(", ")
                        ),
                    )
                })?;
                set = set.with(class);
            }
            policy.dead_letter_at_once = set;
        }
        let retry = &self.retry;
        let key = |name: &str| format!("{section}.retry.{name}");
        if let Some(delay) = &retry.initial_delay {
            policy.retry.initial_delay = parse_duration(&key("initial_delay"), delay)?;
        }
        if let Some(delay) = &retry.max_delay {
            policy.retry.max_delay = parse_duration(&key("max_delay"), delay)?;
        }
        if let Some(multiplier) = retry.multiplier {
            if !(1.0..=1000.0).contains(&multiplier) {
                return Err(invalid(
                    &key("multiplier"),
                    format!("{multiplier} is out of range: expected 1.0 to 1000.0"),
                ));
            }
            policy.retry.multiplier = multiplier;
        }
        if let Some(attempts) = retry.max_attempts {
            policy.retry.max_attempts = attempts;
        }
        if let Some(jitter) = retry.jitter {
            if !(0.0..=1.0).contains(&jitter) {
                return Err(invalid(
                    &key("jitter"),
                    format!("{jitter} is out of range: expected 0.0 to 1.0"),
                ));
            }
            policy.retry.jitter = jitter;
        }
        Ok(policy)
    }
}

/// Checks what only holds for the resolved policy (a value may come from `[defaults]`).
fn validate(policy: &PluginPolicy, section: &str) -> Result<(), ConfigError> {
    if policy.retry.max_attempts == 0 {
        return Err(invalid(
            &format!("{section}.retry.max_attempts"),
            "must be at least 1 (the first attempt counts)",
        ));
    }
    if policy.retry.initial_delay > policy.retry.max_delay {
        return Err(invalid(
            &format!("{section}.retry.initial_delay"),
            format!(
                "{} is longer than retry.max_delay ({})",
                format_duration(policy.retry.initial_delay),
                format_duration(policy.retry.max_delay)
            ),
        ));
    }
    if policy.limits.call_deadline.is_zero() {
        return Err(invalid(
            &format!("{section}.call_deadline"),
            "must be longer than 0",
        ));
    }
    if policy.limits.memory_bytes == 0 {
        return Err(invalid(
            &format!("{section}.memory_mib"),
            "must be at least 1",
        ));
    }
    Ok(())
}

/// Parses a duration as people write them: `"250ms"`, `"5s"`, `"1h 30m"`, `"7d"` (the units
/// and spellings of [`humantime`]).
///
/// # Errors
/// A [`ConfigError`] at `key` for anything else.
pub fn parse_duration(key: &str, text: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(text.trim()).map_err(|error| {
        invalid(
            key,
            format!(
                "invalid duration `{text}`: {error}; expected e.g. \"500ms\", \"5s\", \"1h 30m\""
            ),
        )
    })
}

fn positive_duration(key: &str, text: &str) -> Result<Duration, ConfigError> {
    let duration = parse_duration(key, text)?;
    if duration.is_zero() {
        return Err(invalid(key, "must be longer than 0"));
    }
    Ok(duration)
}

/// A duration as [`parse_duration`] reads it back, exactly: `1m 30s`, `1day`.
pub fn format_duration(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}
