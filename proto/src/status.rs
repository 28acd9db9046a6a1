//! Statuses: the first field of every response body. Stable `u16` codes, never reused.
//!
//! ```text
//! ok:     | status u16 = 0 | response body ...                                   |
//! error:  | status u16 > 0 | detail u64 | message: u32 len + UTF-8 (≤ 512 bytes)  |
//! ```

use diaspora_rpc::wire::{Reader, WireError, Writer, MAX_ERROR_MESSAGE};

use crate::{Limits, Message};

/// Why the server refused or failed a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
#[non_exhaustive]
pub enum Status {
    /// Success (never carried by a [`ProtoError`]).
    Ok = 0,
    /// No successful [`Hello`](crate::Hello) on this connection, or a wrong token.
    Unauthorized = 1,
    /// The client speaks a protocol version the server does not.
    UnsupportedVersion = 2,
    /// The request body does not decode, or breaks a rule (zero count, bad lengths).
    BadRequest = 3,
    /// The request exceeds a negotiated limit (events, bytes, regions).
    TooLarge = 4,
    /// No topic of that name.
    TopicNotFound = 5,
    /// A topic of that name already exists.
    TopicExists = 6,
    /// Topic options rejected (the message says which and why).
    InvalidOptions = 7,
    /// The partition index is out of range for the topic.
    NoSuchPartition = 8,
    /// This thread does not own the partition (or is not the admin thread): re-read placement.
    WrongThread = 9,
    /// The batch was already stored; `detail` is its first id.
    Duplicate = 10,
    /// The batch's sequence number is ahead of the next one expected; `detail` is the
    /// expected sequence number (resend from there).
    OutOfOrder = 11,
    /// The topic is complete: no more events are accepted.
    Complete = 12,
    /// Too much in flight; retry after `detail` milliseconds.
    Throttled = 13,
    /// Reading the client's region or writing its landing region failed.
    Transfer = 14,
    /// A data CRC computed by the server does not match the one the client sent.
    CrcMismatch = 15,
    /// The storage failed (I/O error, corruption); the message says what and where.
    Storage = 16,
    /// The server is stopping and refuses new work.
    ShuttingDown = 17,
    /// A bug on the server (the message says what).
    Internal = 18,
    /// A landing region too small for even one event.
    LandingTooSmall = 19,
    /// A status this client does not know (sent by a newer server).
    Unknown = u16::MAX,
}

impl Status {
    const KNOWN: [Status; 20] = [
        Status::Ok,
        Status::Unauthorized,
        Status::UnsupportedVersion,
        Status::BadRequest,
        Status::TooLarge,
        Status::TopicNotFound,
        Status::TopicExists,
        Status::InvalidOptions,
        Status::NoSuchPartition,
        Status::WrongThread,
        Status::Duplicate,
        Status::OutOfOrder,
        Status::Complete,
        Status::Throttled,
        Status::Transfer,
        Status::CrcMismatch,
        Status::Storage,
        Status::ShuttingDown,
        Status::Internal,
        Status::LandingTooSmall,
    ];

    /// The wire value.
    pub fn code(self) -> u16 {
        self as u16
    }

    /// Decodes a wire value; unknown values map to [`Status::Unknown`].
    pub fn from_code(v: u16) -> Status {
        Status::KNOWN
            .into_iter()
            .find(|s| s.code() == v)
            .unwrap_or(Status::Unknown)
    }

    /// Whether the same request may succeed if sent again later (to this server or to its
    /// restarted successor).
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            Status::Throttled | Status::Transfer | Status::ShuttingDown | Status::WrongThread
        )
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}({})", *self as u16)
    }
}

/// An error status with its detail and message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ProtoError {
    /// The status (never [`Status::Ok`]).
    pub status: Status,
    /// The raw code as received (differs from `status` only for [`Status::Unknown`]).
    pub raw: u16,
    /// Status-specific detail (see the module doc), 0 when none.
    pub detail: u64,
    /// What and why.
    pub message: String,
}

impl ProtoError {
    /// An error with no detail.
    pub fn new(status: Status, message: impl Into<String>) -> Self {
        ProtoError {
            status,
            raw: status.code(),
            detail: 0,
            message: message.into(),
        }
    }

    /// An error with a detail value.
    pub fn with_detail(status: Status, detail: u64, message: impl Into<String>) -> Self {
        ProtoError {
            detail,
            ..ProtoError::new(status, message)
        }
    }
}

/// Encodes a successful response with body `msg`.
pub fn encode_ok<M: Message>(msg: &M) -> Vec<u8> {
    let mut out = Vec::new();
    Writer::new(&mut out).u16(0);
    msg.encode(&mut out);
    out
}

/// Encodes an error response (the message is cut at 512 bytes, on a char boundary).
pub fn encode_error(e: &ProtoError) -> Vec<u8> {
    let mut end = e.message.len().min(MAX_ERROR_MESSAGE);
    while !e.message.is_char_boundary(end) {
        end -= 1;
    }
    let code = if e.status == Status::Ok {
        Status::Internal.code()
    } else if e.status == Status::Unknown {
        e.raw
    } else {
        e.status.code()
    };
    let mut out = Vec::new();
    Writer::new(&mut out)
        .u16(code)
        .u64(e.detail)
        .bytes(&e.message.as_bytes()[..end]);
    out
}

/// Decodes a response: the outer error is a malformed body, the inner one a refusal.
pub fn decode_response<M: Message>(
    body: &[u8],
    limits: &Limits,
) -> Result<Result<M, ProtoError>, WireError> {
    let mut r = Reader::new(body);
    let raw = r.u16()?;
    if raw == 0 {
        let rest = r.take(r.remaining())?;
        return M::decode(rest, limits)
            .map(Ok)
            .map_err(|e| WireError::new(e.code, e.offset + 2, e.need, e.have));
    }
    let detail = r.u64()?;
    let message = r.str(MAX_ERROR_MESSAGE)?.to_owned();
    r.finish()?;
    Ok(Err(ProtoError {
        status: Status::from_code(raw),
        raw,
        detail,
        message,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ProduceResponse;

    #[test]
    fn status_codes_are_stable() {
        for (i, s) in Status::KNOWN.iter().enumerate() {
            assert_eq!(s.code() as usize, i);
            assert_eq!(Status::from_code(i as u16), *s);
        }
        assert_eq!(Status::from_code(20), Status::Unknown);
    }

    #[test]
    fn error_round_trips_with_detail_and_unknown_code() {
        let e = ProtoError::with_detail(Status::Duplicate, 42, "seq 3 stored at 42");
        let got = decode_response::<ProduceResponse>(&encode_error(&e), &Limits::default());
        assert_eq!(got.unwrap().unwrap_err(), e);
        let mut raw = encode_error(&e);
        raw[0..2].copy_from_slice(&900u16.to_le_bytes());
        let got = decode_response::<ProduceResponse>(&raw, &Limits::default())
            .unwrap()
            .unwrap_err();
        assert_eq!((got.status, got.raw), (Status::Unknown, 900));
        assert_eq!(
            decode_response::<ProduceResponse>(&encode_error(&got), &Limits::default())
                .unwrap()
                .unwrap_err()
                .raw,
            900
        );
    }

    #[test]
    fn long_messages_are_cut_on_a_char_boundary() {
        let e = ProtoError::new(Status::Storage, "é".repeat(400));
        let got = decode_response::<ProduceResponse>(&encode_error(&e), &Limits::default())
            .unwrap()
            .unwrap_err();
        assert!(got.message.len() <= MAX_ERROR_MESSAGE);
        assert!(got.message.chars().all(|c| c == 'é'));
    }
}
