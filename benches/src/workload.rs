//! The events a producer pushes, built once before the clock starts.

use diaspora_api::{Bytes, Metadata};

/// Prefix and suffix of the generated metadata: `{"x":123456,"name":"<padding>"}`.
const PREFIX: &str = r#"{"x":123456,"name":""#;
const SUFFIX: &str = r#""}"#;
/// Alignment of the data buffer.
const PAGE: usize = 4096;

/// One event's content, shared (zero copy) by every push.
#[derive(Clone, Debug)]
pub struct Workload {
    /// Validated metadata; cloning it shares the bytes.
    pub metadata: Metadata,
    /// Data buffer; cloning it shares the bytes.
    pub data: Bytes,
}

impl Workload {
    /// Metadata of exactly `metadata_size` bytes and `data_size` bytes of data.
    pub fn new(metadata_size: usize, data_size: usize) -> Result<Self, String> {
        let text = metadata_text(metadata_size)?;
        let metadata = Metadata::from_json_str(&text)
            .map_err(|e| format!("generated metadata is not valid: {e}"))?;
        // A recognisable, non-zero pattern so consumers can check what they read. Page-aligned,
        // like the ceiling's buffers: the kernel copies a source that starts 16 bytes into a
        // page (what the system allocator returns for large buffers) about 11% slower (pwritev
        // of 4 x 64 KiB into the page cache, measured here: 4.2 against 4.5-4.9 GiB/s).
        let mut raw = vec![0u8; data_size + PAGE];
        let start = raw.as_ptr().align_offset(PAGE).min(PAGE);
        for (i, b) in raw[start..start + data_size].iter_mut().enumerate() {
            *b = (i % 251) as u8 + 1;
        }
        Ok(Workload {
            metadata,
            data: Bytes::from(raw).slice(start..start + data_size),
        })
    }

    /// Metadata plus data bytes of one event.
    pub fn event_bytes(&self) -> u64 {
        (self.metadata.as_bytes().len() + self.data.len()) as u64
    }
}

/// A JSON object of exactly `size` bytes, like `{"x":123456,"name":"bob"}`.
pub fn metadata_text(size: usize) -> Result<String, String> {
    let fixed = PREFIX.len() + SUFFIX.len();
    if size >= fixed {
        let mut s = String::with_capacity(size);
        s.push_str(PREFIX);
        s.push_str(&"b".repeat(size - fixed));
        s.push_str(SUFFIX);
        Ok(s)
    } else if size >= 2 {
        // Too small for the usual object: `{}` padded with JSON whitespace.
        Ok(format!("{{}}{}", " ".repeat(size - 2)))
    } else {
        Err(format!(
            "--metadata-size {size} is too small: JSON metadata needs at least 2 bytes"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_has_the_requested_size_and_is_json() {
        for size in [2, 5, 21, 22, 30, 1000] {
            let text = metadata_text(size).expect("size ok");
            assert_eq!(text.len(), size);
            serde_json::from_str::<serde_json::Value>(&text).expect("json");
        }
        assert!(metadata_text(1).is_err());
    }

    #[test]
    fn workload_counts_bytes() {
        let w = Workload::new(30, 1024).expect("ok");
        assert_eq!(w.event_bytes(), 1054);
        assert!(w.data.iter().all(|&b| b != 0));
    }
}
