//! Per-topic policies: [`Validator`], [`PartitionSelector`] and [`Serializer`].
//!
//! Each is a trait with named built-in implementations, chosen from a topic's options by a JSON
//! spec: either a name (`"default"`) or an object `{"type": "<name>", ...}`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;

use crate::data::DataView;
use crate::error::{Error, Result};
use crate::metadata::Metadata;

/// Checks events before they are pushed.
pub trait Validator: Send + Sync {
    /// Rejects the event with [`Error::ValidationFailed`] (or [`Error::InvalidJson`]).
    fn validate(&self, metadata: &Metadata, data: &DataView) -> Result<()>;
}

/// Chooses the partition of each event.
pub trait PartitionSelector: Send + Sync {
    /// Returns a partition index in `0..num_partitions`. `requested` is the partition the
    /// caller asked for, if any.
    fn select(
        &self,
        metadata: &Metadata,
        num_partitions: usize,
        requested: Option<usize>,
    ) -> Result<usize>;
}

/// Turns metadata into bytes for storage or transfer, and back.
pub trait Serializer: Send + Sync {
    /// Appends the serialized form of `metadata` to `out`.
    fn serialize(&self, metadata: &Metadata, out: &mut Vec<u8>) -> Result<()>;
    /// Rebuilds metadata from bytes produced by [`Serializer::serialize`].
    fn deserialize(&self, bytes: Bytes) -> Result<Metadata>;
}

/// Default validator: metadata must be JSON that consumers can parse with [`Metadata::json`]
/// (see [`Metadata::check`]; free for metadata built from a checked string).
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonValidator;

impl Validator for JsonValidator {
    fn validate(&self, metadata: &Metadata, _data: &DataView) -> Result<()> {
        metadata.check()
    }
}

/// Validator requiring the metadata to be a JSON object containing the given fields.
#[derive(Debug, Clone)]
pub struct RequiredFieldsValidator {
    fields: Vec<String>,
}

impl Validator for RequiredFieldsValidator {
    fn validate(&self, metadata: &Metadata, _data: &DataView) -> Result<()> {
        let v = metadata.json()?;
        let obj = v
            .as_object()
            .ok_or_else(|| Error::ValidationFailed("metadata must be a JSON object".into()))?;
        for f in &self.fields {
            if !obj.contains_key(f) {
                return Err(Error::ValidationFailed(format!("missing field \"{f}\"")));
            }
        }
        Ok(())
    }
}

/// Default selector: round robin over partitions, honouring an explicit request.
#[derive(Debug, Default)]
pub struct RoundRobinSelector {
    next: AtomicUsize,
}

impl PartitionSelector for RoundRobinSelector {
    fn select(&self, _m: &Metadata, n: usize, requested: Option<usize>) -> Result<usize> {
        check_partitions(n, requested)?;
        if let Some(p) = requested {
            return Ok(p);
        }
        Ok(self.next.fetch_add(1, Ordering::Relaxed) % n)
    }
}

/// Selector hashing a metadata field, so events with the same key land in the same partition.
#[derive(Debug, Clone)]
pub struct KeyHashSelector {
    field: String,
}

impl PartitionSelector for KeyHashSelector {
    fn select(&self, m: &Metadata, n: usize, requested: Option<usize>) -> Result<usize> {
        check_partitions(n, requested)?;
        if let Some(p) = requested {
            return Ok(p);
        }
        let key = m.json()?.get(&self.field).ok_or_else(|| {
            Error::ValidationFailed(format!("missing partition key field \"{}\"", self.field))
        })?;
        // FNV-1a over the key's JSON text: stable across runs and platforms.
        let text = key.to_string();
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in text.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        Ok((h % n as u64) as usize)
    }
}

fn check_partitions(n: usize, requested: Option<usize>) -> Result<()> {
    if n == 0 {
        return Err(Error::InvalidPartition { index: 0, count: 0 });
    }
    match requested {
        Some(p) if p >= n => Err(Error::InvalidPartition { index: p, count: n }),
        _ => Ok(()),
    }
}

/// Default serializer: JSON text.
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonSerializer;

impl Serializer for JsonSerializer {
    fn serialize(&self, metadata: &Metadata, out: &mut Vec<u8>) -> Result<()> {
        out.extend_from_slice(metadata.as_bytes());
        Ok(())
    }
    fn deserialize(&self, bytes: Bytes) -> Result<Metadata> {
        Ok(Metadata::from_raw_unchecked(bytes))
    }
}

fn spec_type<'a>(spec: &'a Value, key: &str) -> Result<&'a str> {
    match spec {
        Value::Null => Ok("default"),
        Value::String(s) => Ok(s),
        Value::Object(o) => match o.get("type") {
            None => Ok("default"),
            Some(Value::String(s)) => Ok(s),
            Some(_) => Err(Error::option(format!("{key}.type"), "must be a string")),
        },
        _ => Err(Error::option(
            key,
            "must be a name or an object with \"type\"",
        )),
    }
}

/// Topic option keys (dotted) whose value is a string: a command line that parses option
/// values as JSON must keep the text of these (a field named `2024` is not the number 2024).
pub const STRING_OPTION_KEYS: &[&str] = &[
    "validator",
    "validator.type",
    "partition_selector",
    "partition_selector.type",
    "partition_selector.field",
    "serializer",
    "serializer.type",
];

/// Refuses keys of an object spec other than `type` and `known` (`key` names the spec).
fn check_spec_keys(spec: &Value, key: &str, kind: &str, known: &[&str]) -> Result<()> {
    let Value::Object(o) = spec else {
        return Ok(());
    };
    match o
        .keys()
        .find(|k| k.as_str() != "type" && !known.contains(&k.as_str()))
    {
        None => Ok(()),
        Some(k) => {
            let mut all = vec!["type"];
            all.extend_from_slice(known);
            Err(Error::option(
                format!("{key}.{k}"),
                format!(
                    "unknown option of {key} \"{kind}\" (known: {})",
                    all.join(", ")
                ),
            ))
        }
    }
}

/// Builds a validator from its spec: `"default"`/`"json"`, or
/// `{"type": "required_fields", "fields": [...]}`. Unknown keys are errors.
pub fn validator_from_spec(spec: &Value) -> Result<Arc<dyn Validator>> {
    let kind = spec_type(spec, "validator")?;
    match kind {
        "default" | "json" => {
            check_spec_keys(spec, "validator", kind, &[])?;
            Ok(Arc::new(JsonValidator))
        }
        "required_fields" => {
            check_spec_keys(spec, "validator", kind, &["fields"])?;
            let fields = spec
                .get("fields")
                .and_then(Value::as_array)
                .ok_or_else(|| Error::option("validator.fields", "must be an array of strings"))?
                .iter()
                .map(|f| {
                    f.as_str().map(str::to_owned).ok_or_else(|| {
                        Error::option("validator.fields", "must be an array of strings")
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(Arc::new(RequiredFieldsValidator { fields }))
        }
        other => Err(Error::option(
            "validator",
            format!("unknown validator \"{other}\" (known: default, json, required_fields)"),
        )),
    }
}

/// Builds a partition selector from its spec: `"default"`/`"round_robin"`, or
/// `{"type": "key_hash", "field": "name"}`. Unknown keys are errors.
pub fn partition_selector_from_spec(spec: &Value) -> Result<Arc<dyn PartitionSelector>> {
    let kind = spec_type(spec, "partition_selector")?;
    match kind {
        "default" | "round_robin" => {
            check_spec_keys(spec, "partition_selector", kind, &[])?;
            Ok(Arc::new(RoundRobinSelector::default()))
        }
        "key_hash" => {
            check_spec_keys(spec, "partition_selector", kind, &["field"])?;
            let field = spec
                .get("field")
                .and_then(Value::as_str)
                .ok_or_else(|| Error::option("partition_selector.field", "must be a string"))?;
            Ok(Arc::new(KeyHashSelector {
                field: field.to_owned(),
            }))
        }
        other => Err(Error::option(
            "partition_selector",
            format!(
                "unknown partition selector \"{other}\" (known: default, round_robin, key_hash)"
            ),
        )),
    }
}

/// Builds a serializer from its spec: `"default"`/`"json"`. Unknown keys are errors.
pub fn serializer_from_spec(spec: &Value) -> Result<Arc<dyn Serializer>> {
    let kind = spec_type(spec, "serializer")?;
    match kind {
        "default" | "json" => {
            check_spec_keys(spec, "serializer", kind, &[])?;
            Ok(Arc::new(JsonSerializer))
        }
        other => Err(Error::option(
            "serializer",
            format!("unknown serializer \"{other}\" (known: default, json)"),
        )),
    }
}

/// The three policies of a topic.
#[derive(Clone)]
pub struct TopicPolicies {
    /// Checks events before they are pushed.
    pub validator: Arc<dyn Validator>,
    /// Chooses partitions.
    pub partition_selector: Arc<dyn PartitionSelector>,
    /// Encodes metadata.
    pub serializer: Arc<dyn Serializer>,
}

impl TopicPolicies {
    /// Reads `validator`, `partition_selector` and `serializer` from topic options.
    pub fn from_options(options: &Value) -> Result<Self> {
        let null = Value::Null;
        let get = |k: &str| options.get(k).unwrap_or(&null);
        Ok(TopicPolicies {
            validator: validator_from_spec(get("validator"))?,
            partition_selector: partition_selector_from_spec(get("partition_selector"))?,
            serializer: serializer_from_spec(get("serializer"))?,
        })
    }
}

impl TopicPolicies {
    /// Picks the partition of an event with the partition selector, checking that the
    /// selector's answer is in range (a custom selector may be wrong).
    pub fn select_partition(
        &self,
        metadata: &Metadata,
        num_partitions: usize,
        requested: Option<usize>,
    ) -> Result<usize> {
        let selected = crate::catch_panic("the topic's partition selector", || {
            self.partition_selector
                .select(metadata, num_partitions, requested)
        })??;
        match selected {
            p if p < num_partitions => Ok(p),
            p => Err(Error::InvalidPartition {
                index: p,
                count: num_partitions,
            }),
        }
    }
}

impl Default for TopicPolicies {
    fn default() -> Self {
        TopicPolicies {
            validator: Arc::new(JsonValidator),
            partition_selector: Arc::new(RoundRobinSelector::default()),
            serializer: Arc::new(JsonSerializer),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_robin_cycles_and_honours_requests() {
        let s = RoundRobinSelector::default();
        let m = Metadata::default();
        let picks: Vec<_> = (0..6).map(|_| s.select(&m, 3, None).expect("ok")).collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
        assert_eq!(s.select(&m, 3, Some(2)).expect("ok"), 2);
        assert!(s.select(&m, 3, Some(3)).is_err());
    }

    #[test]
    fn key_hash_is_stable_per_key() {
        let s =
            partition_selector_from_spec(&json!({"type": "key_hash", "field": "k"})).expect("spec");
        let a = Metadata::from_value(json!({"k": "alpha"}));
        let first = s.select(&a, 8, None).expect("ok");
        for _ in 0..10 {
            assert_eq!(s.select(&a, 8, None).expect("ok"), first);
        }
        assert!(s.select(&Metadata::from_value(json!({})), 8, None).is_err());
    }

    #[test]
    fn unknown_policy_names_are_clear_errors() {
        let e = validator_from_spec(&json!("nope")).err().expect("error");
        assert!(e.to_string().contains("unknown validator \"nope\""), "{e}");
        assert!(serializer_from_spec(&json!(42)).is_err());
    }

    #[test]
    fn json_validator_rejects_what_consumers_cannot_parse() {
        let v = validator_from_spec(&json!("json")).expect("spec");
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        for text in [r#"{"x":1e999}"#, r#"{"s":"\ud800"}"#, deep.as_str()] {
            // Built unchecked, as a driver or a forwarding application may do.
            let m = Metadata::from_raw_unchecked(Bytes::copy_from_slice(text.as_bytes()));
            let e = v.validate(&m, &DataView::new()).expect_err(text);
            assert!(e.to_string().contains("invalid JSON"), "{text}: {e}");
        }
        let ok = Metadata::from_raw_unchecked(Bytes::from_static(br#"{"x":1}"#));
        v.validate(&ok, &DataView::new()).expect("valid");
        ok.json().expect("parseable");
    }

    #[test]
    fn unknown_spec_keys_are_refused_by_every_policy() {
        let e =
            partition_selector_from_spec(&json!({"type": "key_hash", "field": "k", "feild": 1}))
                .err()
                .expect("unknown key");
        let msg = e.to_string();
        assert!(msg.contains("partition_selector.feild"), "{msg}");
        assert!(msg.contains("known: type, field"), "{msg}");
        for bad in [
            json!({"type": "round_robin", "field": "k"}),
            json!({"field": "k"}),
        ] {
            assert!(partition_selector_from_spec(&bad).is_err(), "{bad}");
        }
        assert!(
            validator_from_spec(&json!({"type": "required_fields", "fields": [], "x": 1})).is_err()
        );
        assert!(validator_from_spec(&json!({"type": "json", "fields": []})).is_err());
        assert!(serializer_from_spec(&json!({"type": "json", "pretty": true})).is_err());
        partition_selector_from_spec(&json!({"type": "key_hash", "field": "k"}))
            .expect("known keys");
        validator_from_spec(&json!({"type": "required_fields", "fields": ["a"]})).expect("known");
    }

    #[test]
    fn required_fields_validator_rejects_missing_fields() {
        let v = validator_from_spec(&json!({"type": "required_fields", "fields": ["x"]}))
            .expect("spec");
        assert!(v
            .validate(&Metadata::from_value(json!({"x": 1})), &DataView::new())
            .is_ok());
        assert!(v
            .validate(&Metadata::from_value(json!({"y": 1})), &DataView::new())
            .is_err());
    }
}
