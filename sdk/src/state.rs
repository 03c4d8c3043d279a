//! The plugin's own key-value state, read and written inside the current unit of work.
//!
//! Every write is provisional: it commits together with the handler's result, or not at all
//! when the handler returns an error or panics. Reads see this unit of work's own writes. A plugin
//! sees only its own keys; no other plugin can read or change them.
//!
//! Queries may read but not write: [`put`], [`put_bytes`] and [`delete`] while handling a query
//! are refused by the host, which fails the call.
//!
//! Values written with [`put`] are JSON, so [`get`] can read them back as any type with the same
//! shape.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::HandlerError;
use crate::bindings::handler_host::plugin::unit_of_work;

/// Reads `key` as JSON into a `T`; `None` when the key does not exist.
///
/// # Errors
/// [`HandlerError::Permanent`] naming the key when the stored bytes are not JSON of type `T`:
/// the state is corrupt or its shape changed, and a retry would read the same bytes.
pub fn get<T: DeserializeOwned>(key: &str) -> Result<Option<T>, HandlerError> {
    let Some(bytes) = get_bytes(key) else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|error| {
        HandlerError::permanent(format!(
            "state key `{key}` does not hold the expected JSON: {error}"
        ))
    })
}

/// Writes `value` as JSON under `key`, replacing what was there.
///
/// # Errors
/// [`HandlerError::Permanent`] naming the key when `value` cannot be serialized, which is a
/// bug in the plugin.
pub fn put<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<(), HandlerError> {
    let bytes = serde_json::to_vec(value).map_err(|error| {
        HandlerError::permanent(format!("could not serialize state key `{key}`: {error}"))
    })?;
    put_bytes(key, &bytes);
    Ok(())
}

/// Removes `key`; removing a key that does not exist is not an error.
pub fn delete(key: &str) {
    unit_of_work::delete(key);
}

/// Reads the raw bytes under `key`; `None` when the key does not exist.
pub fn get_bytes(key: &str) -> Option<Vec<u8>> {
    unit_of_work::get(key)
}

/// Writes `value` under `key` exactly as given, replacing what was there.
pub fn put_bytes(key: &str, value: &[u8]) {
    unit_of_work::put(key, value);
}
