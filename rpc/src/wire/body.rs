//! Little-endian readers and writers for frame bodies, and the bodies the engine itself uses.
//!
//! Variable-length items are length-prefixed with a `u32` and every read names a limit: a
//! length or count beyond the limit, or beyond the bytes actually present, is refused before
//! anything is allocated, so a peer cannot size an allocation.
//!
//! ```text
//! bytes:  | len u32 LE | len bytes |
//! list:   | count u32 LE | count items |
//! ERR:    | code u16 LE | message: bytes (UTF-8, at most MAX_ERROR_MESSAGE) |
//! HELLO:  | provider: bytes (≤ 64) | address: bytes (≤ 256) |   (op 0, request)
//! HELLO response: | session u32 LE | max_body u32 LE |
//! ```

use super::{ErrorCode, WireError};

/// Longest error message carried in an ERR body.
pub const MAX_ERROR_MESSAGE: usize = 512;

/// A cursor over a body that decodes little-endian values with bounds checks.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Starts reading at the front of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes left.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The bytes not consumed yet (for decoders that report how much they used).
    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    /// Takes the next `n` raw bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.remaining() < n {
            return Err(WireError::new(
                ErrorCode::Truncated,
                self.pos,
                n,
                self.remaining(),
            ));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// Reads a u8.
    pub fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    /// Reads a little-endian u16.
    pub fn u16(&mut self) -> Result<u16, WireError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    /// Reads a little-endian u32.
    pub fn u32(&mut self) -> Result<u32, WireError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Reads a little-endian u64.
    pub fn u64(&mut self) -> Result<u64, WireError> {
        let b = self.take(8)?;
        let mut a = [0; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    /// Reads length-prefixed bytes of at most `max` bytes (borrowed, no allocation).
    pub fn bytes(&mut self, max: usize) -> Result<&'a [u8], WireError> {
        let at = self.pos;
        let len = self.u32()? as usize;
        if len > max {
            return Err(WireError::new(ErrorCode::TooLarge, at, len, max));
        }
        self.take(len)
    }

    /// Reads a length-prefixed UTF-8 string of at most `max` bytes.
    pub fn str(&mut self, max: usize) -> Result<&'a str, WireError> {
        let at = self.pos;
        let b = self.bytes(max)?;
        std::str::from_utf8(b).map_err(|_| WireError::new(ErrorCode::BadBody, at + 4, b.len(), 0))
    }

    /// Reads a count-prefixed list of at most `max` items, each at least `min_item` bytes
    /// long, decoding each with `item`. The count is checked against both `max` and the bytes
    /// left, so the returned vector's capacity is bounded by the input's size.
    pub fn list<T>(
        &mut self,
        max: usize,
        min_item: usize,
        mut item: impl FnMut(&mut Reader<'a>) -> Result<T, WireError>,
    ) -> Result<Vec<T>, WireError> {
        let at = self.pos;
        let count = self.u32()? as usize;
        if count > max {
            return Err(WireError::new(ErrorCode::TooLarge, at, count, max));
        }
        let need = count.saturating_mul(min_item.max(1));
        if need > self.remaining() {
            return Err(WireError::new(
                ErrorCode::Truncated,
                self.pos,
                need,
                self.remaining(),
            ));
        }
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            out.push(item(self)?);
        }
        Ok(out)
    }

    /// Fails unless every byte was consumed (trailing garbage is a malformed body).
    pub fn finish(&self) -> Result<(), WireError> {
        if self.remaining() != 0 {
            return Err(WireError::new(
                ErrorCode::BadBody,
                self.pos,
                0,
                self.remaining(),
            ));
        }
        Ok(())
    }
}

/// Appends little-endian values to a vector.
#[derive(Debug)]
pub struct Writer<'a> {
    out: &'a mut Vec<u8>,
}

impl<'a> Writer<'a> {
    /// Appends to `out`.
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        Writer { out }
    }

    fn buf(&mut self) -> &mut Vec<u8> {
        self.out
    }

    /// Appends a u8.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf().push(v);
        self
    }

    /// Appends a little-endian u16.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.buf().extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Appends a little-endian u32.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf().extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Appends a little-endian u64.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf().extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Appends raw bytes (no prefix).
    pub fn raw(&mut self, b: &[u8]) -> &mut Self {
        self.buf().extend_from_slice(b);
        self
    }

    /// Appends length-prefixed bytes (`b` must be shorter than 4 GiB; longer is truncated to
    /// its first u32::MAX bytes, which no receiver limit accepts anyway).
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        let len = u32::try_from(b.len()).unwrap_or(u32::MAX);
        self.u32(len);
        self.raw(&b[..len as usize])
    }
}

/// The body of an ERR frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorBody {
    /// The stable code.
    pub code: ErrorCode,
    /// The raw code as received (differs from `code` only for [`ErrorCode::Unknown`]).
    pub raw_code: u16,
    /// Human-readable detail.
    pub message: String,
}

impl ErrorBody {
    /// Encodes `code` and `message` (cut at [`MAX_ERROR_MESSAGE`] bytes, on a char boundary).
    pub fn encode(code: ErrorCode, message: &str, out: &mut Vec<u8>) {
        let mut end = message.len().min(MAX_ERROR_MESSAGE);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        Writer::new(out)
            .u16(code.as_u16())
            .bytes(&message.as_bytes()[..end]);
    }

    /// Decodes an ERR body.
    pub fn decode(body: &[u8]) -> Result<ErrorBody, WireError> {
        let mut r = Reader::new(body);
        let raw_code = r.u16()?;
        let message = r.str(MAX_ERROR_MESSAGE)?.to_owned();
        r.finish()?;
        Ok(ErrorBody {
            code: ErrorCode::from_u16(raw_code),
            raw_code,
            message,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bytes_beyond_the_limit_are_refused_before_allocating() {
        let mut v = Vec::new();
        Writer::new(&mut v).u32(u32::MAX);
        let err = Reader::new(&v).bytes(16).unwrap_err();
        assert_eq!(
            (err.code, err.need, err.have),
            (ErrorCode::TooLarge, u32::MAX as usize, 16)
        );
    }

    #[test]
    fn list_count_is_checked_against_the_bytes_present() {
        let mut v = Vec::new();
        Writer::new(&mut v).u32(1000).u64(1);
        let err = Reader::new(&v).list(10_000, 8, |r| r.u64()).unwrap_err();
        assert_eq!(err.code, ErrorCode::Truncated);
        let err = Reader::new(&v).list(10, 8, |r| r.u64()).unwrap_err();
        assert_eq!(err.code, ErrorCode::TooLarge);
    }

    #[test]
    fn error_body_round_trips_and_cuts_long_messages_on_char_boundaries() {
        let long = "é".repeat(MAX_ERROR_MESSAGE);
        let mut v = Vec::new();
        ErrorBody::encode(ErrorCode::HandlerFailed, &long, &mut v);
        let e = ErrorBody::decode(&v).unwrap();
        assert_eq!(e.code, ErrorCode::HandlerFailed);
        assert!(e.message.len() <= MAX_ERROR_MESSAGE);
        assert!(long.starts_with(&e.message));
    }

    #[test]
    fn trailing_bytes_are_a_bad_body() {
        let mut v = Vec::new();
        ErrorBody::encode(ErrorCode::UnknownOp, "x", &mut v);
        v.push(0);
        assert_eq!(ErrorBody::decode(&v).unwrap_err().code, ErrorCode::BadBody);
    }

    proptest! {
        #[test]
        fn reader_never_panics_and_lists_stay_bounded(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let mut r = Reader::new(&bytes);
            if let Ok(items) = r.list(1_000_000, 8, |r| r.u64()) {
                prop_assert!(items.capacity() <= bytes.len() / 8 + 1);
            }
            let _ = Reader::new(&bytes).bytes(64);
            let _ = Reader::new(&bytes).str(64);
            let _ = ErrorBody::decode(&bytes);
        }

        #[test]
        fn values_round_trip(a in any::<u8>(), b in any::<u16>(), c in any::<u32>(), d in any::<u64>(),
                             s in proptest::collection::vec(any::<u8>(), 0..40)) {
            let mut v = Vec::new();
            Writer::new(&mut v).u8(a).u16(b).u32(c).u64(d).bytes(&s);
            let mut r = Reader::new(&v);
            prop_assert_eq!(r.u8().unwrap(), a);
            prop_assert_eq!(r.u16().unwrap(), b);
            prop_assert_eq!(r.u32().unwrap(), c);
            prop_assert_eq!(r.u64().unwrap(), d);
            prop_assert_eq!(r.bytes(40).unwrap(), &s[..]);
            prop_assert!(r.finish().is_ok());
        }
    }
}
