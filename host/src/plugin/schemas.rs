//! The payload schemas a plugin declares in `describe`, compiled once at load and checked
//! against the commands and queries it is handed and the events it emits.

use crate::bindings::PayloadSchema;
use std::collections::HashMap;

/// Longest schema a plugin may declare, in bytes of JSON text.
pub const MAX_SCHEMA_BYTES: usize = 256 << 10;

/// Kind → its compiled schema.
#[derive(Default)]
pub struct Schemas(HashMap<String, jsonschema::Validator>);

/// Why a payload does not match its kind's schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// JSON pointer to the failing value (`/items/0/sku`); empty for the whole payload.
    pub path: String,
    /// What the schema requires that the value breaks, or why the payload is not JSON.
    pub reason: String,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            write!(f, "at the top level: {}", self.reason)
        } else {
            write!(f, "at `{}`: {}", self.path, self.reason)
        }
    }
}

impl Schemas {
    /// Compiles the declared schemas. References are resolved within each schema only: the
    /// host fetches nothing a plugin names.
    ///
    /// # Errors
    /// Names the kind whose schema is not JSON, not a valid schema, declared twice or too long.
    pub fn compile(declared: &[PayloadSchema]) -> Result<Self, String> {
        let mut schemas = HashMap::new();
        for PayloadSchema { kind, schema } in declared {
            if schema.len() > MAX_SCHEMA_BYTES {
                return Err(format!(
                    "the schema of `{kind}` has {} bytes: at most {MAX_SCHEMA_BYTES}",
                    schema.len()
                ));
            }
            let value: serde_json::Value = serde_json::from_str(schema)
                .map_err(|e| format!("the schema of `{kind}` is not JSON: {e}"))?;
            let validator = jsonschema::validator_for(&value)
                .map_err(|e| format!("the schema of `{kind}` is not a valid JSON Schema: {e}"))?;
            if schemas.insert(kind.clone(), validator).is_some() {
                return Err(format!("`{kind}` has two schemas"));
            }
        }
        Ok(Self(schemas))
    }

    /// Checks `payload` against the schema of `kind`; a kind without one passes.
    ///
    /// # Errors
    /// The first mismatch found, a payload that is not JSON included.
    pub fn check(&self, kind: &str, payload: &[u8]) -> Result<(), Mismatch> {
        let Some(validator) = self.0.get(kind) else {
            return Ok(());
        };
        let value: serde_json::Value = serde_json::from_slice(payload).map_err(|e| Mismatch {
            path: String::new(),
            reason: format!("the payload is not JSON: {e}"),
        })?;
        validator.validate(&value).map_err(|error| Mismatch {
            path: error.instance_path().to_string(),
            reason: error.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schemas(kind: &str, schema: &str) -> Result<Schemas, String> {
        Schemas::compile(&[PayloadSchema {
            kind: kind.into(),
            schema: schema.into(),
        }])
    }

    const ORDER: &str = r#"{
        "type": "object",
        "required": ["order_id", "items"],
        "properties": {
            "order_id": {"type": "string"},
            "items": {"type": "array", "items": {
                "type": "object",
                "required": ["sku"],
                "properties": {"sku": {"type": "string"}, "qty": {"type": "integer", "minimum": 1}}
            }}
        }
    }"#;

    #[test]
    fn a_matching_payload_passes_and_a_mismatch_names_the_failing_path() {
        let schemas = schemas("order.place", ORDER).unwrap();
        schemas
            .check(
                "order.place",
                br#"{"order_id":"o1","items":[{"sku":"a","qty":2}]}"#,
            )
            .unwrap();
        let mismatch = schemas
            .check(
                "order.place",
                br#"{"order_id":"o1","items":[{"sku":"a","qty":0}]}"#,
            )
            .unwrap_err();
        assert_eq!(mismatch.path, "/items/0/qty", "{mismatch}");
        assert!(mismatch.reason.contains("minimum"), "{mismatch}");
        let missing = schemas
            .check("order.place", br#"{"items":[]}"#)
            .unwrap_err();
        assert_eq!(missing.path, "");
        assert!(missing.reason.contains("order_id"), "{missing}");
        assert!(
            missing.to_string().starts_with("at the top level"),
            "{missing}"
        );
    }

    #[test]
    fn a_payload_that_is_not_json_fails_and_a_kind_without_a_schema_passes() {
        let schemas = schemas("order.place", ORDER).unwrap();
        let mismatch = schemas.check("order.place", b"not json").unwrap_err();
        assert!(mismatch.reason.contains("not JSON"), "{mismatch}");
        schemas.check("order.cancel", b"not json").unwrap();
    }

    #[test]
    fn a_schema_that_is_not_json_or_not_a_schema_or_declared_twice_is_refused() {
        let error = schemas("k", "{").err().unwrap();
        assert!(error.contains("`k` is not JSON"), "{error}");
        let error = schemas("k", r#"{"type": 12}"#).err().unwrap();
        assert!(error.contains("not a valid JSON Schema"), "{error}");
        let twice = [ORDER, ORDER].map(|schema| PayloadSchema {
            kind: "k".into(),
            schema: schema.into(),
        });
        let error = Schemas::compile(&twice).err().unwrap();
        assert!(error.contains("two schemas"), "{error}");
    }

    #[test]
    fn a_remote_reference_is_not_fetched() {
        let error = schemas("k", r#"{"$ref": "https://example.com/schema.json"}"#)
            .err()
            .unwrap();
        assert!(error.contains("`k`"), "{error}");
    }
}
