//! Event metadata: a JSON document, kept as raw text until someone asks for the parsed value.

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
#[derive(Clone)]
pub struct Metadata {
    raw: OnceLock<Bytes>,
    value: OnceLock<Value>,
}

impl Metadata {
    /// Metadata from a JSON string; fails with [`Error::InvalidJson`] if the text is not JSON.
    pub fn from_json_str(text: &str) -> Result<Self> {
        Self::from_json_bytes(Bytes::copy_from_slice(text.as_bytes()))
    }

    /// Metadata from JSON bytes, validated without building a tree.
    pub fn from_json_bytes(raw: Bytes) -> Result<Self> {
        serde_json::from_slice::<serde::de::IgnoredAny>(&raw).map_err(Error::InvalidJson)?;
        Ok(Self::from_raw_unchecked(raw))
    }

    /// Metadata from bytes known to hold JSON (e.g. written by a serializer and covered by a
    /// checksum). Parsing errors surface later from [`Metadata::json`].
    pub fn from_raw_unchecked(raw: Bytes) -> Self {
        let cell = OnceLock::new();
        let _ = cell.set(raw);
        Metadata {
            raw: cell,
            value: OnceLock::new(),
        }
    }

    /// Metadata from a parsed JSON value.
    pub fn from_value(value: Value) -> Self {
        let cell = OnceLock::new();
        let _ = cell.set(value);
        Metadata {
            raw: OnceLock::new(),
            value: cell,
        }
    }

    /// The empty JSON object `{}`.
    pub fn empty_object() -> Self {
        Self::from_raw_unchecked(Bytes::from_static(b"{}"))
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

    #[test]
    fn unchecked_garbage_fails_lazily() {
        let m = Metadata::from_raw_unchecked(Bytes::from_static(b"not json"));
        assert!(m.json().is_err());
    }
}
