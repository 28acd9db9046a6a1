//! The frame: a fixed 32-byte header followed by the body, sent as one message.
//!
//! ```text
//! offset  size  field        notes
//! 0       2     magic        b"DF"
//! 2       1     version      VERSION (1); anything else is refused
//! 3       1     kind         1 = REQ, 2 = RESP, 3 = ERR, 4 = CANCEL, 5 = GOODBYE,
//!                            6 = KEEPALIVE
//! 4       2     op           u16 LE, the handler's op code (echoed in RESP/ERR)
//! 6       2     flags        u16 LE, every bit reserved: must be zero
//! 8       8     request_id   u64 LE, unique per (session, direction); RESP/ERR/CANCEL echo it
//! 16      4     session      u32 LE, 0 = none (HELLO); assigned by the callee
//! 20      4     budget_us    u32 LE, remaining deadline in µs, 0 = no deadline (relative, so
//!                            clocks need not agree)
//! 24      4     body_len     u32 LE, at most the receiver's max body (checked before use)
//! 28      4     crc32        u32 LE, CRC-32 (IEEE) over bytes 0..28 then the body
//! 32      n     body         body_len bytes
//! ```
//!
//! All integers are little-endian. [`decode`] borrows the body from the input: it never
//! allocates, so no allocation can be sized by a peer. Checks run in a fixed order (length of
//! the header, magic, version, kind, flags, body length against the limit, truncation, CRC) so
//! each malformed frame maps to one stable [`ErrorCode`].

use super::{ErrorCode, WireError};

/// Size of the frame header in bytes.
pub const HEADER_LEN: usize = 32;
/// The magic bytes every frame starts with.
pub const MAGIC: [u8; 2] = *b"DF";
/// The protocol version this engine speaks.
pub const VERSION: u8 = 1;
/// Default largest body a receiver accepts (the engine's eager size minus the header).
pub const DEFAULT_MAX_BODY: usize = 8 * 1024 - HEADER_LEN;

const CRC_AT: usize = 28;

/// What a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// A request: the callee runs the handler for `op` and answers with RESP or ERR.
    Request = 1,
    /// A successful response; the body is the handler's answer.
    Response = 2,
    /// A failure; the body is an [`ErrorBody`](super::ErrorBody).
    Error = 3,
    /// The caller gave up on `request_id`; the callee may stop working on it.
    Cancel = 4,
    /// The caller closes its session (`session`); the body is the 8-byte secret the HELLO
    /// answer carried, so no other peer can close it. The callee frees the session at once.
    Goodbye = 5,
    /// The caller is alive (`session`); the body is the session's 8-byte secret, as for
    /// GOODBYE. Sent at the interval the HELLO answer asked for; never answered. A session
    /// that hears nothing for its expiry ends.
    Keepalive = 6,
}

impl Kind {
    fn from_u8(v: u8) -> Option<Kind> {
        match v {
            1 => Some(Kind::Request),
            2 => Some(Kind::Response),
            3 => Some(Kind::Error),
            4 => Some(Kind::Cancel),
            5 => Some(Kind::Goodbye),
            6 => Some(Kind::Keepalive),
            _ => None,
        }
    }
}

/// The decoded header of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// What the frame is.
    pub kind: Kind,
    /// The op code.
    pub op: u16,
    /// Request id, echoed by responses.
    pub request_id: u64,
    /// Session id (0 = none).
    pub session: u32,
    /// Remaining deadline in microseconds (0 = none).
    pub budget_us: u32,
}

/// A decoded frame: the header and the body borrowed from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The header.
    pub header: Header,
    /// The body, `body_len` bytes.
    pub body: &'a [u8],
}

/// Bytes needed to encode a frame with a body of `body_len` bytes.
pub fn encoded_len(body_len: usize) -> usize {
    HEADER_LEN + body_len
}

/// Encodes `header` and `body` into the front of `out`; returns the bytes written.
///
/// Fails with [`ErrorCode::TooLarge`] when `out` is too small or the body does not fit a u32.
pub fn encode_into(header: &Header, body: &[u8], out: &mut [u8]) -> Result<usize, WireError> {
    let total = encoded_len(body.len());
    if out.len() < total || u32::try_from(body.len()).is_err() {
        return Err(WireError::new(ErrorCode::TooLarge, 0, total, out.len()));
    }
    let (head, rest) = out.split_at_mut(HEADER_LEN);
    head[0..2].copy_from_slice(&MAGIC);
    head[2] = VERSION;
    head[3] = header.kind as u8;
    head[4..6].copy_from_slice(&header.op.to_le_bytes());
    head[6..8].copy_from_slice(&0u16.to_le_bytes());
    head[8..16].copy_from_slice(&header.request_id.to_le_bytes());
    head[16..20].copy_from_slice(&header.session.to_le_bytes());
    head[20..24].copy_from_slice(&header.budget_us.to_le_bytes());
    head[24..28].copy_from_slice(&(body.len() as u32).to_le_bytes());
    rest[..body.len()].copy_from_slice(body);
    let crc = checksum(&head[..CRC_AT], body);
    head[CRC_AT..HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
    Ok(total)
}

/// Encodes into a new vector (convenience for tests and cold paths).
pub fn encode(header: &Header, body: &[u8]) -> Vec<u8> {
    let mut out = vec![0; encoded_len(body.len())];
    // Cannot fail: `out` has exactly the needed size and bodies in memory are < 4 GiB here.
    match encode_into(header, body, &mut out) {
        Ok(_) => out,
        Err(_) => Vec::new(),
    }
}

/// Decodes one frame from the front of `input`, accepting bodies of at most `max_body` bytes.
///
/// Returns the frame (borrowing its body from `input`) and the bytes it used.
pub fn decode(input: &[u8], max_body: usize) -> Result<(Frame<'_>, usize), WireError> {
    let head = input
        .get(..HEADER_LEN)
        .ok_or_else(|| WireError::new(ErrorCode::Truncated, 0, HEADER_LEN, input.len()))?;
    if head[0..2] != MAGIC {
        return Err(WireError::new(ErrorCode::BadMagic, 0, 2, 2));
    }
    if head[2] != VERSION {
        return Err(WireError::new(ErrorCode::UnsupportedVersion, 2, 1, 1));
    }
    let kind = Kind::from_u8(head[3]).ok_or(WireError::new(ErrorCode::BadKind, 3, 1, 1))?;
    let flags = u16::from_le_bytes([head[6], head[7]]);
    if flags != 0 {
        return Err(WireError::new(ErrorCode::ReservedFlags, 6, 2, 2));
    }
    let body_len = u32_at(head, 24) as usize;
    if body_len > max_body {
        return Err(WireError::new(ErrorCode::TooLarge, 24, body_len, max_body));
    }
    let total = HEADER_LEN + body_len;
    let body = input.get(HEADER_LEN..total).ok_or_else(|| {
        WireError::new(
            ErrorCode::Truncated,
            HEADER_LEN,
            body_len,
            input.len() - HEADER_LEN,
        )
    })?;
    let crc = u32_at(head, CRC_AT);
    if crc != checksum(&head[..CRC_AT], body) {
        return Err(WireError::new(ErrorCode::BadChecksum, CRC_AT, 4, 4));
    }
    let header = Header {
        kind,
        op: u16::from_le_bytes([head[4], head[5]]),
        request_id: u64::from_le_bytes(array8(&head[8..16])),
        session: u32_at(head, 16),
        budget_us: u32_at(head, 20),
    };
    Ok((Frame { header, body }, total))
}

/// Reads the request id and session of a frame whose header is intact enough to answer, even
/// when the frame itself is refused (so the error reply can echo them). `None` when the input
/// is shorter than a header or does not start with the magic.
pub fn peek_ids(input: &[u8]) -> Option<(u64, u32, u16)> {
    let head = input.get(..HEADER_LEN)?;
    if head[0..2] != MAGIC {
        return None;
    }
    Some((
        u64::from_le_bytes(array8(&head[8..16])),
        u32_at(head, 16),
        u16::from_le_bytes([head[4], head[5]]),
    ))
}

fn checksum(head: &[u8], body: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(head);
    h.update(body);
    h.finalize()
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn array8(b: &[u8]) -> [u8; 8] {
    let mut a = [0; 8];
    a.copy_from_slice(b);
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header(kind: Kind) -> Header {
        Header {
            kind,
            op: 7,
            request_id: 0x0102_0304_0506_0708,
            session: 9,
            budget_us: 1_000,
        }
    }

    #[test]
    fn layout_is_little_endian_as_documented() {
        let bytes = encode(&header(Kind::Request), b"abc");
        assert_eq!(&bytes[0..2], b"DF");
        assert_eq!(bytes[2], 1);
        assert_eq!(bytes[3], 1);
        assert_eq!(&bytes[4..6], &[7, 0]);
        assert_eq!(&bytes[6..8], &[0, 0]);
        assert_eq!(&bytes[8..16], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(&bytes[16..20], &[9, 0, 0, 0]);
        assert_eq!(&bytes[20..24], &1_000u32.to_le_bytes());
        assert_eq!(&bytes[24..28], &[3, 0, 0, 0]);
        assert_eq!(&bytes[32..], b"abc");
    }

    #[test]
    fn wrong_version_is_refused_with_its_code() {
        let mut bytes = encode(&header(Kind::Request), b"x");
        bytes[2] = 2;
        assert_eq!(
            decode(&bytes, 64).unwrap_err().code,
            ErrorCode::UnsupportedVersion
        );
    }

    #[test]
    fn reserved_flag_bits_are_refused() {
        for bit in 0..16 {
            let mut bytes = encode(&header(Kind::Request), b"x");
            let flags = 1u16 << bit;
            bytes[6..8].copy_from_slice(&flags.to_le_bytes());
            assert_eq!(
                decode(&bytes, 64).unwrap_err().code,
                ErrorCode::ReservedFlags
            );
        }
    }

    #[test]
    fn oversize_body_is_refused_before_reading_it() {
        let mut bytes = encode(&header(Kind::Request), b"");
        bytes[24..28].copy_from_slice(&u32::MAX.to_le_bytes());
        let err = decode(&bytes, 1024).unwrap_err();
        assert_eq!(err.code, ErrorCode::TooLarge);
        assert_eq!(
            (err.offset, err.need, err.have),
            (24, u32::MAX as usize, 1024)
        );
    }

    #[test]
    fn truncated_frames_say_how_much_is_missing() {
        let bytes = encode(&header(Kind::Response), b"hello");
        let err = decode(&bytes[..10], 64).unwrap_err();
        assert_eq!(
            (err.code, err.need, err.have),
            (ErrorCode::Truncated, 32, 10)
        );
        let err = decode(&bytes[..34], 64).unwrap_err();
        assert_eq!(
            (err.code, err.offset, err.need, err.have),
            (ErrorCode::Truncated, 32, 5, 2)
        );
    }

    #[test]
    fn bad_magic_and_kind_are_refused() {
        let mut bytes = encode(&header(Kind::Cancel), b"");
        bytes[3] = 5;
        let crc = checksum(&bytes[..CRC_AT], &bytes[HEADER_LEN..]);
        bytes[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(decode(&bytes, 64).unwrap().0.header.kind, Kind::Goodbye);
        bytes[3] = 6;
        let crc = checksum(&bytes[..CRC_AT], &bytes[HEADER_LEN..]);
        bytes[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(decode(&bytes, 64).unwrap().0.header.kind, Kind::Keepalive);
        bytes[3] = 7;
        assert_eq!(decode(&bytes, 64).unwrap_err().code, ErrorCode::BadKind);
        bytes[3] = 0;
        assert_eq!(decode(&bytes, 64).unwrap_err().code, ErrorCode::BadKind);
        bytes[0] = b'X';
        assert_eq!(decode(&bytes, 64).unwrap_err().code, ErrorCode::BadMagic);
        assert_eq!(peek_ids(&bytes), None);
    }

    #[test]
    fn encode_into_a_short_buffer_fails() {
        let mut out = [0u8; 33];
        let err = encode_into(&header(Kind::Request), b"ab", &mut out).unwrap_err();
        assert_eq!(
            (err.code, err.need, err.have),
            (ErrorCode::TooLarge, 34, 33)
        );
    }

    fn arb_header() -> impl Strategy<Value = Header> {
        (
            1u8..=6,
            any::<u16>(),
            any::<u64>(),
            any::<u32>(),
            any::<u32>(),
        )
            .prop_map(|(k, op, request_id, session, budget_us)| Header {
                kind: Kind::from_u8(k).unwrap_or(Kind::Request),
                op,
                request_id,
                session,
                budget_us,
            })
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok((frame, used)) = decode(&bytes, 128) {
                prop_assert!(used <= bytes.len());
                prop_assert!(frame.body.len() <= 128);
            }
            let _ = peek_ids(&bytes);
        }

        #[test]
        fn arbitrary_headers_with_valid_magic_never_panic(
            tail in proptest::collection::vec(any::<u8>(), 30..120),
            version in prop_oneof![Just(VERSION), any::<u8>()],
        ) {
            let mut bytes = b"DF".to_vec();
            bytes.extend_from_slice(&tail);
            bytes[2] = version;
            let _ = decode(&bytes, 64);
        }

        #[test]
        fn encode_decode_round_trip(
            h in arb_header(),
            body in proptest::collection::vec(any::<u8>(), 0..300),
            trailing in proptest::collection::vec(any::<u8>(), 0..8),
        ) {
            let mut bytes = encode(&h, &body);
            let len = bytes.len();
            bytes.extend_from_slice(&trailing);
            let (frame, used) = decode(&bytes, 300).unwrap();
            prop_assert_eq!(used, len);
            prop_assert_eq!(frame.header, h);
            prop_assert_eq!(frame.body, &body[..]);
            prop_assert_eq!(peek_ids(&bytes), Some((h.request_id, h.session, h.op)));
        }

        #[test]
        fn any_flipped_bit_is_detected(
            h in arb_header(),
            body in proptest::collection::vec(any::<u8>(), 0..64),
            bit in any::<proptest::sample::Index>(),
        ) {
            let mut bytes = encode(&h, &body);
            let bit = bit.index(bytes.len() * 8);
            bytes[bit / 8] ^= 1 << (bit % 8);
            // A flip in the length field may make the frame look truncated or oversize; any
            // other flip is caught by a field check or the CRC. It never decodes.
            prop_assert!(decode(&bytes, 64).is_err());
        }
    }
}
