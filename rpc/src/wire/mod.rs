//! The wire protocol: frames, error codes and body helpers. Pure code, no I/O.
//!
//! See [`frame`] for the byte layout. Every decoder borrows from its input and checks every
//! length against a limit before use; decoding never panics on arbitrary bytes (property
//! tests in each module).

mod body;
mod code;
pub mod frame;
mod regions;

pub use body::{ErrorBody, Reader, Writer, MAX_ERROR_MESSAGE};
pub use code::ErrorCode;
pub use frame::{decode, encode, encode_into, Frame, Header, Kind, HEADER_LEN, VERSION};
pub use regions::{put_regions, read_regions, MIN_REGION_LEN};

/// A frame or body that does not decode, with where and by how much.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed frame: {code} at byte {offset} (need {need}, have {have})")]
pub struct WireError {
    /// The stable code, sent back in the ERR reply.
    pub code: ErrorCode,
    /// Byte offset of the offending field within the frame or body.
    pub offset: usize,
    /// Bytes (or items) the field needs or declares.
    pub need: usize,
    /// Bytes (or items) available or allowed.
    pub have: usize,
}

impl WireError {
    /// Builds an error.
    pub fn new(code: ErrorCode, offset: usize, need: usize, have: usize) -> Self {
        WireError {
            code,
            offset,
            need,
            have,
        }
    }
}
