//! The `"schema"` validator: metadata must satisfy a JSON Schema (draft-07, as upstream).
//!
//! ```json
//! {"validator": {"type": "schema", "schema": {"type": "object", "required": ["energy"],
//!   "properties": {"energy": {"type": "number", "minimum": 0}}}}}
//! ```
//!
//! The schema is checked against the draft-07 meta-schema when the topic is created (a bad
//! schema fails `create_topic`); remote `$ref`s are not fetched (no network resolver is built
//! in), so a schema must be self-contained. Each violation is reported with the JSON pointer
//! of the failing field, e.g. `event rejected by validator: metadata does not comply with the
//! topic's schema: at /energy: -1.0 is less than the minimum of 0`.

use serde_json::Value;

use crate::data::DataView;
use crate::error::{Error, Result};
use crate::metadata::Metadata;
use crate::policy::Validator;

/// At most this many violations are listed in one error.
const MAX_REPORTED: usize = 8;

/// Validates metadata against a JSON Schema (draft-07).
pub struct SchemaValidator {
    schema: Value,
    compiled: jsonschema::Validator,
}

impl std::fmt::Debug for SchemaValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaValidator")
            .field("schema", &self.schema)
            .finish()
    }
}

impl SchemaValidator {
    /// Compiles `schema` (a JSON object); an invalid schema is an [`Error::InvalidOption`] on
    /// `validator.schema` saying what is wrong and where.
    pub fn new(schema: &Value) -> Result<Self> {
        if !schema.is_object() {
            return Err(Error::option(
                "validator.schema",
                "must be a JSON object (a JSON Schema)",
            ));
        }
        let compiled = jsonschema::draft7::new(schema).map_err(|e| {
            Error::option(
                "validator.schema",
                format!(
                    "is not a valid draft-07 JSON Schema: {e} (at {})",
                    e.schema_path()
                ),
            )
        })?;
        Ok(SchemaValidator {
            schema: schema.clone(),
            compiled,
        })
    }

    /// From a spec `{"type": "schema", "schema": {...}}`.
    pub fn from_spec(spec: &Value) -> Result<Self> {
        let schema = spec.get("schema").ok_or_else(|| {
            Error::option(
                "validator.schema",
                "is required by the \"schema\" validator",
            )
        })?;
        Self::new(schema)
    }

    /// The schema.
    pub fn schema(&self) -> &Value {
        &self.schema
    }
}

impl Validator for SchemaValidator {
    fn validate(&self, metadata: &Metadata, _data: &DataView) -> Result<()> {
        let value = metadata.json()?;
        let mut errors = self.compiled.iter_errors(value).peekable();
        if errors.peek().is_none() {
            return Ok(());
        }
        let mut lines = Vec::new();
        let mut count = 0usize;
        for e in errors {
            count += 1;
            if lines.len() < MAX_REPORTED {
                let at = e.instance_path().to_string();
                let at = if at.is_empty() { "/".to_owned() } else { at };
                lines.push(format!("at {at}: {e}"));
            }
        }
        if count > lines.len() {
            lines.push(format!("and {} more", count - lines.len()));
        }
        Err(Error::ValidationFailed(format!(
            "metadata does not comply with the topic's schema: {}",
            lines.join("; ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn energy() -> SchemaValidator {
        SchemaValidator::new(&json!({
            "type": "object",
            "required": ["energy"],
            "properties": {
                "energy": {"type": "number", "minimum": 0},
                "detector": {"type": "object", "properties": {"id": {"type": "integer"}}}
            }
        }))
        .expect("valid schema")
    }

    fn check(v: &SchemaValidator, m: Value) -> Result<()> {
        v.validate(&Metadata::from_value(m), &DataView::new())
    }

    #[test]
    fn schema_accepts_conforming_metadata() {
        let v = energy();
        check(&v, json!({"energy": 3.5})).expect("valid");
        check(&v, json!({"energy": 0, "detector": {"id": 7}})).expect("valid");
    }

    #[test]
    fn schema_violations_name_the_failing_field() {
        let v = energy();
        let e = check(&v, json!({"energy": -1})).expect_err("negative");
        let msg = e.to_string();
        assert!(matches!(e, Error::ValidationFailed(_)), "{e:?}");
        assert!(msg.contains("at /energy"), "{msg}");
        assert!(msg.contains("minimum"), "{msg}");
        let msg = check(&v, json!({"energy": 1, "detector": {"id": "x"}}))
            .expect_err("bad id")
            .to_string();
        assert!(msg.contains("at /detector/id"), "{msg}");
        let msg = check(&v, json!({"other": 1}))
            .expect_err("missing")
            .to_string();
        assert!(msg.contains("energy"), "{msg}");
        assert!(check(&v, json!([1])).is_err());
    }

    #[test]
    fn bad_schemas_are_refused_when_built() {
        let e = SchemaValidator::new(&json!({"type": "no-such-type"})).expect_err("bad");
        assert!(e.to_string().contains("validator.schema"), "{e}");
        assert!(SchemaValidator::new(&json!({"minimum": "zero"})).is_err());
        assert!(SchemaValidator::new(&json!(true)).is_err(), "non-object");
        let e = SchemaValidator::from_spec(&json!({"type": "schema"})).expect_err("missing");
        assert!(e.to_string().contains("is required"), "{e}");
    }

    #[test]
    fn many_violations_are_capped() {
        let props: serde_json::Map<String, Value> = (0..20)
            .map(|i| (format!("f{i}"), json!({"type": "string"})))
            .collect();
        let v = SchemaValidator::new(&json!({"properties": props})).expect("valid");
        let bad: serde_json::Map<String, Value> =
            (0..20).map(|i| (format!("f{i}"), json!(i))).collect();
        let msg = check(&v, Value::Object(bad)).expect_err("bad").to_string();
        assert!(msg.contains("and 12 more"), "{msg}");
    }
}
