//! [`DataView`]: the data part of an event, a list of owned, reference-counted segments.
//!
//! Unlike the C++ API, where the caller must keep raw pointers alive until `flush()`, segments
//! here are [`Bytes`]: the producer holds its own reference, so user data can be neither freed
//! nor mutated before it is stored, and no copy is made.

use bytes::{Bytes, BytesMut};

/// The data part of an event: zero or more immutable segments, logically concatenated.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct DataView {
    segments: Vec<Bytes>,
    len: u64,
}

impl DataView {
    /// An empty view (no data).
    pub fn new() -> Self {
        Self::default()
    }

    /// A view over several segments (empty segments are dropped).
    pub fn from_segments<I: IntoIterator<Item = Bytes>>(segments: I) -> Self {
        let mut v = Self::new();
        for s in segments {
            v.push(s);
        }
        v
    }

    /// Appends a segment.
    pub fn push(&mut self, segment: Bytes) {
        if !segment.is_empty() {
            self.len += segment.len() as u64;
            self.segments.push(segment);
        }
    }

    /// The segments, in order.
    pub fn segments(&self) -> &[Bytes] {
        &self.segments
    }

    /// Total size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the view holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes as one contiguous buffer; free when there is at most one segment.
    pub fn contiguous(&self) -> Bytes {
        match self.segments.len() {
            0 => Bytes::new(),
            1 => self.segments[0].clone(),
            _ => {
                let mut out = BytesMut::with_capacity(self.len as usize);
                for s in &self.segments {
                    out.extend_from_slice(s);
                }
                out.freeze()
            }
        }
    }

    /// Copies the bytes into a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        self.contiguous().to_vec()
    }

    /// Copies `out.len()` bytes starting at `offset` into `out`; returns how many were copied.
    pub fn copy_to(&self, mut offset: u64, out: &mut [u8]) -> usize {
        let mut written = 0;
        for s in &self.segments {
            if written == out.len() {
                break;
            }
            let slen = s.len() as u64;
            if offset >= slen {
                offset -= slen;
                continue;
            }
            let start = offset as usize;
            let n = (s.len() - start).min(out.len() - written);
            out[written..written + n].copy_from_slice(&s[start..start + n]);
            written += n;
            offset = 0;
        }
        written
    }
}

impl std::fmt::Debug for DataView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "DataView({} bytes in {} segments)",
            self.len,
            self.segments.len()
        )
    }
}

impl From<Bytes> for DataView {
    fn from(b: Bytes) -> Self {
        Self::from_segments([b])
    }
}
impl From<Vec<u8>> for DataView {
    fn from(v: Vec<u8>) -> Self {
        Self::from(Bytes::from(v))
    }
}
impl From<&'static [u8]> for DataView {
    fn from(v: &'static [u8]) -> Self {
        Self::from(Bytes::from_static(v))
    }
}
impl From<Vec<Bytes>> for DataView {
    fn from(v: Vec<Bytes>) -> Self {
        Self::from_segments(v)
    }
}
impl From<()> for DataView {
    fn from(_: ()) -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_concatenate() {
        let v = DataView::from_segments([
            Bytes::from_static(b"ab"),
            Bytes::new(),
            Bytes::from_static(b"cde"),
        ]);
        assert_eq!(v.len(), 5);
        assert_eq!(v.segments().len(), 2);
        assert_eq!(v.to_vec(), b"abcde");
        let mut out = [0u8; 3];
        assert_eq!(v.copy_to(1, &mut out), 3);
        assert_eq!(&out, b"bcd");
    }

    #[test]
    fn single_segment_is_zero_copy() {
        let b = Bytes::from(vec![7u8; 1024]);
        let v = DataView::from(b.clone());
        assert_eq!(v.contiguous().as_ptr(), b.as_ptr());
    }
}
