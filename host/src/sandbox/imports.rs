//! What a guest may call: the `unit-of-work` and `log` interfaces of the contract, each call
//! checked against the limits before it touches the unit of work or the log. Every version of
//! the contract the host loads links to the same calls: the older ones convert their arguments
//! and delegate to the current ones.

use super::{GuestState, MAX_KEY_BYTES, MAX_LOG_MESSAGE_BYTES, MAX_LOG_MESSAGES_PER_CALL};
use crate::bindings::{EmitOptions, LogLevel, Schedule, log_api, unit_of_work_api, v0_1};
use crate::error::HostError;
use crate::store::now_ms;
use crate::unit_of_work::{AccessError, EmittedEvent};

fn check_key(key: &str) -> Result<(), AccessError> {
    if key.len() > MAX_KEY_BYTES {
        return Err(AccessError::Limit {
            limit: "MAX_KEY_BYTES",
            max: MAX_KEY_BYTES,
            what: format!("a state key of {} bytes", key.len()),
        });
    }
    Ok(())
}

impl crate::bindings::handler_host::plugin::types::Host for GuestState {}

impl unit_of_work_api::Host for GuestState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        check_key(&key)?;
        let unit = self.unit_of_work()?;
        // A limit is the guest's fault and traps as such; only the read itself is the host's.
        unit.check_read(&key)?;
        unit.get(&key)
            .await
            .map_err(|e| wasmtime::Error::new(HostError::database(e)))
    }

    async fn put(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<()> {
        check_key(&key)?;
        Ok(self.unit_of_work()?.put(key, value)?)
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<()> {
        check_key(&key)?;
        Ok(self.unit_of_work()?.delete(key)?)
    }

    async fn emit(
        &mut self,
        kind: String,
        payload: Vec<u8>,
        options: EmitOptions,
    ) -> wasmtime::Result<()> {
        // The clock is read only for a scheduled event.
        let deliver_at_ms = options.deliver.and_then(|schedule| {
            let now = now_ms();
            let at = match schedule {
                Schedule::AfterMs(ms) => now.saturating_add(i64::try_from(ms).unwrap_or(i64::MAX)),
                Schedule::AtMs(at) => i64::try_from(at).unwrap_or(i64::MAX),
            };
            // One already due is due at once: it need not look scheduled.
            (at > now).then_some(at)
        });
        Ok(self.unit_of_work()?.emit(EmittedEvent {
            kind,
            payload,
            partition_key: options.partition_key,
            headers: options.headers,
            schema_version: options.schema_version.unwrap_or(1),
            deliver_at_ms,
        })?)
    }
}

impl v0_1::handler_host::plugin::types::Host for GuestState {}

impl v0_1::unit_of_work_api::Host for GuestState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        unit_of_work_api::Host::get(self, key).await
    }

    async fn put(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<()> {
        unit_of_work_api::Host::put(self, key, value).await
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<()> {
        unit_of_work_api::Host::delete(self, key).await
    }

    async fn emit(
        &mut self,
        kind: String,
        payload: Vec<u8>,
        partition_key: Option<String>,
    ) -> wasmtime::Result<()> {
        let options = EmitOptions {
            partition_key,
            deliver: None,
            headers: Vec::new(),
            schema_version: None,
        };
        unit_of_work_api::Host::emit(self, kind, payload, options).await
    }
}

impl v0_1::log_api::Host for GuestState {
    async fn log(&mut self, level: v0_1::LogLevel, message: String) -> wasmtime::Result<()> {
        log_api::Host::log(self, level.into(), message).await
    }
}

impl log_api::Host for GuestState {
    async fn log(&mut self, level: LogLevel, mut message: String) -> wasmtime::Result<()> {
        self.logged += 1;
        if self.logged > MAX_LOG_MESSAGES_PER_CALL {
            return Ok(());
        }
        if message.len() > MAX_LOG_MESSAGE_BYTES {
            let mut cut = MAX_LOG_MESSAGE_BYTES;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str(" …(truncated)");
        }
        let plugin = &*self.plugin;
        match level {
            LogLevel::Trace => tracing::trace!(plugin, "{message}"),
            LogLevel::Debug => tracing::debug!(plugin, "{message}"),
            LogLevel::Info => tracing::info!(plugin, "{message}"),
            LogLevel::Warn => tracing::warn!(plugin, "{message}"),
            LogLevel::Error => tracing::error!(plugin, "{message}"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_at_the_limit_pass_and_one_byte_more_is_refused() {
        assert!(check_key(&"k".repeat(MAX_KEY_BYTES)).is_ok());
        assert!(check_key("").is_ok());
        let error = check_key(&"k".repeat(MAX_KEY_BYTES + 1)).unwrap_err();
        assert!(error.to_string().contains("MAX_KEY_BYTES"), "{error}");
    }
}
