//! Event metadata: a JSON document, kept as raw text until someone asks for the parsed value.
//!
//! Whatever is accepted as metadata (by [`Metadata::from_json_bytes`], by [`Metadata::check`],
//! hence by every validator and by `Producer::push`) is parseable by [`Metadata::json`]: both
//! run serde_json's parser with the same limits (nesting depth 128, numbers within `f64`,
//! strings of valid Unicode scalar values), the check only skips building the tree.

use std::fmt;
use std::sync::OnceLock;

use bytes::Bytes;
use serde_json::Value;

use crate::error::{Error, Result};

/// The metadata part of an event: a JSON document.
///
/// Metadata read from storage or the network stays as raw bytes and is parsed on first call to
/// [`Metadata::json`], so consumers that only forward or count events never pay for parsing.
/// Metadata built from a string is validated once (without building a tree) and kept as text.
pub struct Metadata {
    raw: Cell<Bytes>,
    value: Cell<Value>,
    /// Set once the raw form is known to parse with [`Metadata::json`]'s parser and limits.
    checked: Cell<()>,
}

/// A value known when the metadata is built, or computed once on first use. A clone knows
/// what the original knows, without `OnceLock`'s synchronization (cloning three `OnceLock`s was
/// a tenth of a producer's per-event time when the application clones one metadata per push).
enum Cell<T> {
    Known(T),
    Lazy(OnceLock<T>),
}

impl<T> Cell<T> {
    fn new() -> Self {
        Cell::Lazy(OnceLock::new())
    }

    fn with(value: T) -> Self {
        Cell::Known(value)
    }

    fn get(&self) -> Option<&T> {
        match self {
            Cell::Known(v) => Some(v),
            Cell::Lazy(l) => l.get(),
        }
    }

    fn get_or_init(&self, f: impl FnOnce() -> T) -> &T {
        match self {
            Cell::Known(v) => v,
            Cell::Lazy(l) => l.get_or_init(f),
        }
    }

    /// Sets the value if it is not known yet (else keeps the first one).
    fn set(&self, value: T) {
        if let Cell::Lazy(l) = self {
            let _ = l.set(value);
        }
    }

    fn get_mut(&mut self) -> Option<&mut T> {
        match self {
            Cell::Known(v) => Some(v),
            Cell::Lazy(l) => l.get_mut(),
        }
    }
}

impl<T: Clone> Clone for Cell<T> {
    fn clone(&self) -> Self {
        match self.get() {
            Some(v) => Cell::Known(v.clone()),
            None => Cell::new(),
        }
    }
}

impl Clone for Metadata {
    fn clone(&self) -> Self {
        Metadata {
            raw: self.raw.clone(),
            value: self.value.clone(),
            checked: self.checked.clone(),
        }
    }
}

impl Metadata {
    /// Metadata from a JSON string; fails with [`Error::InvalidJson`] if the text is not JSON.
    pub fn from_json_str(text: &str) -> Result<Self> {
        Self::from_json_bytes(Bytes::copy_from_slice(text.as_bytes()))
    }

    /// Metadata from JSON bytes, validated without building a tree but with the parser and
    /// limits of [`Metadata::json`]: what this accepts, `json()` parses.
    pub fn from_json_bytes(raw: Bytes) -> Result<Self> {
        check_json(&raw)?;
        let mut m = Self::from_raw_unchecked(raw);
        m.checked = Cell::with(());
        Ok(m)
    }

    /// Metadata from bytes known to hold JSON (e.g. written by a serializer and covered by a
    /// checksum). Parsing errors surface later from [`Metadata::json`].
    pub fn from_raw_unchecked(raw: Bytes) -> Self {
        Metadata {
            raw: Cell::with(raw),
            value: Cell::new(),
            checked: Cell::new(),
        }
    }

    /// Metadata from a parsed JSON value.
    pub fn from_value(value: Value) -> Self {
        Metadata {
            raw: Cell::new(),
            value: Cell::with(value),
            checked: Cell::new(),
        }
    }

    /// The empty JSON object `{}`.
    pub fn empty_object() -> Self {
        Self::from_raw_unchecked(Bytes::from_static(b"{}"))
    }

    /// Checks that the metadata, in the form it will be stored or sent, parses with
    /// [`Metadata::json`]'s parser and limits (a value nested deeper than 128 levels does not).
    /// Free for metadata already checked (e.g. built by [`Metadata::from_json_str`]); one
    /// parse pass, without building a tree, otherwise.
    pub fn check(&self) -> Result<()> {
        if self.checked.get().is_some() {
            return Ok(());
        }
        check_json(self.raw_bytes())?;
        self.checked.set(());
        Ok(())
    }

    /// The parsed JSON value (parsed once, on first call).
    pub fn json(&self) -> Result<&Value> {
        if let Some(v) = self.value.get() {
            return Ok(v);
        }
        let raw = self.raw.get().map(|b| b.as_ref()).unwrap_or(b"null");
        let parsed: Value = serde_json::from_slice(raw).map_err(Error::InvalidJson)?;
        Ok(self.value.get_or_init(|| parsed))
    }

    /// The serialized JSON bytes (serialized once, on first call, if built from a value).
    pub fn as_bytes(&self) -> &[u8] {
        self.raw_bytes().as_ref()
    }

    /// The serialized JSON bytes as a shared buffer.
    pub fn raw_bytes(&self) -> &Bytes {
        self.raw.get_or_init(|| {
            let v = self.value.get().unwrap_or(&Value::Null);
            // Serializing a `Value` into a Vec cannot fail: keys are strings and the writer is
            // infallible.
            Bytes::from(serde_json::to_vec(v).unwrap_or_else(|_| b"null".to_vec()))
        })
    }

    /// The JSON text (lossy if the stored bytes are not UTF-8, which a checked source never is).
    pub fn as_str(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(self.as_bytes())
    }

    /// Whether the raw form is available without serializing.
    pub fn has_raw(&self) -> bool {
        self.raw.get().is_some()
    }

    /// Whether the parsed form is available without parsing.
    pub fn is_parsed(&self) -> bool {
        self.value.get().is_some()
    }

    /// The parsed JSON value, for editing in place (upstream's mutable `json()`). Parses the
    /// raw form first if needed; the raw form is then dropped and re-serialized on demand, so
    /// what is pushed is the edited value.
    pub fn json_mut(&mut self) -> Result<&mut Value> {
        self.json()?;
        self.raw = Cell::new();
        self.checked = Cell::new();
        match self.value.get_mut() {
            Some(v) => Ok(v),
            // `json()` just filled it; kept total rather than unwrapped.
            None => Err(Error::Closed("metadata value")),
        }
    }

    /// The JSON text, compact (`indent` `None`, as the stored form) or pretty-printed with
    /// `indent` spaces per level (upstream's `dump(indent)`).
    pub fn dump(&self, indent: Option<usize>) -> Result<String> {
        let Some(n) = indent else {
            return Ok(self.as_str().into_owned());
        };
        let value = self.json()?;
        let pad = vec![b' '; n];
        let mut out = Vec::new();
        let mut ser = serde_json::Serializer::with_formatter(
            &mut out,
            serde_json::ser::PrettyFormatter::with_indent(&pad),
        );
        serde::Serialize::serialize(value, &mut ser).map_err(Error::InvalidJson)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

/// Parses `raw` as one JSON document with exactly the parser and limits [`Metadata::json`]
/// uses (`serde_json::from_slice::<Value>`), without building the tree.
fn check_json(raw: &[u8]) -> Result<()> {
    serde_json::from_slice::<Checked>(raw)
        .map(|_| ())
        .map_err(Error::InvalidJson)
}

/// A JSON value that was parsed and thrown away. Unlike `serde::de::IgnoredAny`, which
/// serde_json skips without recursion limit, number range or escape checks, it goes through
/// `deserialize_any` at every level, the path `Value` takes.
struct Checked;

impl<'de> serde::Deserialize<'de> for Checked {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(CheckedVisitor)
    }
}

struct CheckedVisitor;

impl<'de> serde::de::Visitor<'de> for CheckedVisitor {
    type Value = Checked;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> std::result::Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_i64<E>(self, _: i64) -> std::result::Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_u64<E>(self, _: u64) -> std::result::Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_f64<E>(self, _: f64) -> std::result::Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_str<E>(self, _: &str) -> std::result::Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_unit<E>(self) -> std::result::Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<Checked, A::Error> {
        while map.next_entry::<Checked, Checked>()?.is_some() {}
        Ok(Checked)
    }
}

impl Default for Metadata {
    fn default() -> Self {
        Self::empty_object()
    }
}

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Metadata({})", self.as_str())
    }
}

impl fmt::Display for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_str())
    }
}

impl PartialEq for Metadata {
    fn eq(&self, other: &Self) -> bool {
        match (self.json(), other.json()) {
            (Ok(a), Ok(b)) => a == b,
            _ => self.as_bytes() == other.as_bytes(),
        }
    }
}

impl From<Value> for Metadata {
    fn from(v: Value) -> Self {
        Self::from_value(v)
    }
}

impl TryFrom<&str> for Metadata {
    type Error = Error;
    fn try_from(s: &str) -> Result<Self> {
        Self::from_json_str(s)
    }
}

impl TryFrom<String> for Metadata {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        Self::from_json_bytes(Bytes::from(s))
    }
}

/// Anything a producer accepts as metadata: a [`Metadata`], a JSON string or a JSON value.
pub trait IntoMetadata {
    /// Converts, validating JSON text.
    fn into_metadata(self) -> Result<Metadata>;
}

impl IntoMetadata for Metadata {
    fn into_metadata(self) -> Result<Metadata> {
        Ok(self)
    }
}
impl IntoMetadata for Value {
    fn into_metadata(self) -> Result<Metadata> {
        Ok(Metadata::from_value(self))
    }
}
impl IntoMetadata for &str {
    fn into_metadata(self) -> Result<Metadata> {
        Metadata::from_json_str(self)
    }
}
impl IntoMetadata for String {
    fn into_metadata(self) -> Result<Metadata> {
        Metadata::try_from(self)
    }
}
impl IntoMetadata for &String {
    fn into_metadata(self) -> Result<Metadata> {
        Metadata::from_json_str(self)
    }
}
impl IntoMetadata for Bytes {
    fn into_metadata(self) -> Result<Metadata> {
        Metadata::from_json_bytes(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_metadata_is_validated_but_not_parsed() {
        let m = Metadata::from_json_str(r#"{"x":42,"name":"bob"}"#).expect("valid");
        assert!(!m.is_parsed());
        assert_eq!(m.json().expect("parse")["x"], 42);
        assert!(m.is_parsed());
    }

    #[test]
    fn malformed_json_is_rejected_with_clear_error() {
        let err = Metadata::from_json_str("{\"x\":").expect_err("must fail");
        assert!(err.to_string().contains("invalid JSON"), "{err}");
    }

    #[test]
    fn value_metadata_serializes_on_demand() {
        let m = Metadata::from_value(serde_json::json!({"a": [1, 2]}));
        assert_eq!(m.as_bytes(), br#"{"a":[1,2]}"#);
    }

    /// Documents that parse as JSON syntax but not with `Metadata::json`'s limits.
    fn unparseable() -> Vec<(&'static str, String)> {
        vec![
            ("number out of range", r#"{"x":1e999}"#.to_owned()),
            ("lone surrogate", r#"{"s":"\ud800"}"#.to_owned()),
            ("lone trailing surrogate", r#"["\udc00x"]"#.to_owned()),
            (
                "nested 200 deep",
                format!("{}{}", "[".repeat(200), "]".repeat(200)),
            ),
            (
                "objects nested 129 deep",
                format!("{}1{}", r#"{"a":"#.repeat(129), "}".repeat(129)),
            ),
        ]
    }

    #[test]
    fn what_is_accepted_is_what_json_parses() {
        for (what, text) in unparseable() {
            assert!(
                serde_json::from_str::<serde::de::IgnoredAny>(&text).is_ok(),
                "{what}: the syntax-only check used to accept it"
            );
            assert!(serde_json::from_str::<Value>(&text).is_err(), "{what}");
            let e = Metadata::from_json_str(&text).expect_err(what);
            assert!(e.to_string().contains("invalid JSON"), "{what}: {e}");
            assert!(Metadata::from_raw_unchecked(Bytes::from(text))
                .check()
                .is_err());
        }
        for ok in [
            r#"{"x":1e300,"s":"\ud83d\ude00","n":-0.0}"#.to_owned(),
            format!("{}{}", "[".repeat(127), "]".repeat(127)),
        ] {
            let m = Metadata::from_json_str(&ok).expect("accepted");
            m.json().expect("and parseable");
        }
    }

    #[test]
    fn values_too_deep_to_read_back_fail_the_check() {
        let mut v = Value::Null;
        for _ in 0..200 {
            v = Value::Array(vec![v]);
        }
        let m = Metadata::from_value(v);
        assert!(m.check().is_err());
        Metadata::from_value(serde_json::json!({"a": [1, 2]}))
            .check()
            .expect("shallow value");
    }

    #[test]
    fn unchecked_garbage_fails_lazily() {
        let m = Metadata::from_raw_unchecked(Bytes::from_static(b"not json"));
        assert!(m.json().is_err());
    }

    #[test]
    fn json_mut_edits_what_is_stored() {
        let mut m = Metadata::from_json_str(r#"{"a":1}"#).expect("json");
        m.json_mut().expect("parses")["b"] = serde_json::json!([true]);
        assert_eq!(m.as_str(), r#"{"a":1,"b":[true]}"#);
        m.check().expect("still valid");
        let mut bad = Metadata::from_raw_unchecked(Bytes::from_static(b"{nope"));
        assert!(bad.json_mut().is_err());
    }

    #[test]
    fn clones_know_what_the_original_knows_and_edit_apart() {
        let m = Metadata::from_raw_unchecked(Bytes::from_static(br#"{"a":1}"#));
        assert!(!m.is_parsed());
        let c = m.clone();
        assert_eq!(c.as_str(), r#"{"a":1}"#);
        assert!(!c.is_parsed(), "cloning parses nothing");
        // Computed after the clone: each computes its own.
        assert_eq!(m.json().expect("json")["a"], 1);
        assert!(m.is_parsed() && !c.is_parsed());
        // Computed before the clone: the clone has it.
        let mut d = m.clone();
        assert!(d.is_parsed());
        d.json_mut().expect("json")["a"] = serde_json::json!(2);
        assert_eq!(d.as_str(), r#"{"a":2}"#);
        assert_eq!(m.as_str(), r#"{"a":1}"#, "the original is unchanged");
        // A value-built metadata serializes lazily, once, and its clone keeps the text.
        let v = Metadata::from_value(serde_json::json!({"k": "v"}));
        assert!(!v.has_raw());
        assert_eq!(v.as_str(), r#"{"k":"v"}"#);
        assert!(v.clone().has_raw());
        // Validity checks carry over too, and a bad document stays bad in a clone.
        let bad = Metadata::from_raw_unchecked(Bytes::from_static(b"{nope"));
        assert!(bad.check().is_err());
        assert!(bad.clone().check().is_err());
    }

    #[test]
    fn dump_compact_and_indented() {
        let m = Metadata::from_json_str(r#"{"a":{"b":1}}"#).expect("json");
        assert_eq!(m.dump(None).expect("dump"), r#"{"a":{"b":1}}"#);
        assert_eq!(
            m.dump(Some(2)).expect("dump"),
            "{\n  \"a\": {\n    \"b\": 1\n  }\n}"
        );
        assert_eq!(
            m.dump(Some(0)).expect("dump"),
            "{\n\"a\": {\n\"b\": 1\n}\n}"
        );
    }
}
