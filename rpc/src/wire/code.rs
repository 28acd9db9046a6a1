//! Stable error codes carried in `ERR` frames.
//!
//! A code is a `u16` on the wire. Codes are **never reused**: a retired code keeps its number
//! and new codes take the next free one. Unknown codes received from a newer peer decode to
//! [`ErrorCode::Unknown`] with the raw value kept, so an old engine can still report them.

/// Why a peer refused or failed a request (the `code` of an `ERR` frame body).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The frame does not start with the magic bytes `"DF"`.
    BadMagic = 1,
    /// The frame's protocol version is not one this engine speaks.
    UnsupportedVersion = 2,
    /// The frame's `kind` byte is not REQ, RESP, ERR or CANCEL.
    BadKind = 3,
    /// A reserved flag bit is set.
    ReservedFlags = 4,
    /// The frame is shorter than its header or than its declared body.
    Truncated = 5,
    /// The declared body is larger than the receiver's maximum frame size.
    TooLarge = 6,
    /// The CRC32 over header and body does not match.
    BadChecksum = 7,
    /// No handler is registered for the request's op code.
    UnknownOp = 8,
    /// The request names a session the receiver does not know.
    UnknownSession = 9,
    /// The request's deadline budget ran out before it could be served.
    DeadlineExceeded = 10,
    /// The handler ran and returned an error (its message follows the code).
    HandlerFailed = 11,
    /// The receiver is shutting down and no longer serves requests.
    ShuttingDown = 12,
    /// The body does not decode as the op's request body.
    BadBody = 13,
    /// The peer uses another libfabric provider (both ends must match).
    ProviderMismatch = 14,
    /// The handler panicked.
    HandlerPanicked = 15,
    /// The receiver has too many sessions or requests in flight; retry later.
    Overloaded = 16,
    /// A code this engine does not know (sent by a newer peer).
    Unknown = u16::MAX,
}

impl ErrorCode {
    /// Decodes a wire value; values this engine does not know map to [`ErrorCode::Unknown`].
    pub fn from_u16(v: u16) -> ErrorCode {
        use ErrorCode::*;
        match v {
            1 => BadMagic,
            2 => UnsupportedVersion,
            3 => BadKind,
            4 => ReservedFlags,
            5 => Truncated,
            6 => TooLarge,
            7 => BadChecksum,
            8 => UnknownOp,
            9 => UnknownSession,
            10 => DeadlineExceeded,
            11 => HandlerFailed,
            12 => ShuttingDown,
            13 => BadBody,
            14 => ProviderMismatch,
            15 => HandlerPanicked,
            16 => Overloaded,
            _ => Unknown,
        }
    }

    /// The wire value.
    pub fn as_u16(self) -> u16 {
        self as u16
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} ({})", self, self.as_u16())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_stable() {
        // The numbers are part of the protocol: this table must only ever grow.
        let table = [
            (ErrorCode::BadMagic, 1),
            (ErrorCode::UnsupportedVersion, 2),
            (ErrorCode::BadKind, 3),
            (ErrorCode::ReservedFlags, 4),
            (ErrorCode::Truncated, 5),
            (ErrorCode::TooLarge, 6),
            (ErrorCode::BadChecksum, 7),
            (ErrorCode::UnknownOp, 8),
            (ErrorCode::UnknownSession, 9),
            (ErrorCode::DeadlineExceeded, 10),
            (ErrorCode::HandlerFailed, 11),
            (ErrorCode::ShuttingDown, 12),
            (ErrorCode::BadBody, 13),
            (ErrorCode::ProviderMismatch, 14),
            (ErrorCode::HandlerPanicked, 15),
            (ErrorCode::Overloaded, 16),
        ];
        for (code, v) in table {
            assert_eq!(code.as_u16(), v);
            assert_eq!(ErrorCode::from_u16(v), code);
        }
        assert_eq!(ErrorCode::from_u16(0), ErrorCode::Unknown);
        assert_eq!(ErrorCode::from_u16(17), ErrorCode::Unknown);
    }
}
