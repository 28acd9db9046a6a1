//! diaspora-proto: the protocol between `diaspora-server` and its clients (the `fabric`
//! driver). Pure code, no I/O: op codes, request and response bodies, status codes, limits,
//! and the group file a server writes for its clients.
//!
//! Every body is encoded with the rpc crate's little-endian [`Reader`]/[`Writer`] helpers and
//! travels inside an rpc frame (which carries the version, ids, deadline and a CRC-32). Every
//! decoder takes the negotiated [`Limits`] and refuses a count or length beyond them, or
//! beyond the bytes present, before allocating anything.
//!
//! # Sessions
//! A client connects with the rpc engine (its HELLO, op 0), then sends [`Hello`] (op
//! [`Op::Hello`]) with the group file's token. Until that succeeds every other request of the
//! connection is answered with [`Status::Unauthorized`]. The answer gives the server's epoch
//! (it changes on every start: a client that sees another epoch knows the server restarted)
//! and the [`Limits`].
//!
//! # Responses
//! Every response body starts with a status:
//!
//! ```text
//! ok:     | status u16 = 0 | response body ...                                   |
//! error:  | status u16 > 0 | detail u64 | message: u32 len + UTF-8 (≤ 512 bytes)  |
//! ```
//!
//! `detail` is the first id of the stored batch for [`Status::Duplicate`], the expected
//! sequence number for [`Status::OutOfOrder`], a retry delay in milliseconds for
//! [`Status::Throttled`], 0 otherwise. Transport-level failures (malformed frame, unknown op,
//! deadline, shutdown) are rpc ERR frames with the rpc crate's codes, not statuses.
//!
//! # Batch tables
//! Produce and fetch move the same [`BatchTable`]: per-event metadata lengths, data lengths
//! and data CRCs, then the metadata bytes. It travels inline when it fits the frame, otherwise
//! in front of the data in the RDMA region (see [`produce`] and [`fetch`]).

#![warn(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod admin;
pub mod fetch;
pub mod group;
pub mod hello;
pub mod limits;
pub mod op;
pub mod produce;
pub mod region;
pub mod status;
pub mod table;
#[cfg(test)]
mod tests;

pub use admin::{
    Empty, Placement, TopicComplete, TopicCreate, TopicExists, TopicExistsResponse, TopicList,
    TopicListResponse, TopicOpen, TopicOpenResponse,
};
pub use fetch::{
    Commit, CommitResponse, Fetch, FetchData, FetchDataResponse, FetchResponse, Range, Subscribe,
    SubscribeResponse,
};
pub use group::{placement, GroupError, GroupFile, GroupRank, GroupThread};
pub use hello::{Hello, HelloResponse, PROTOCOL_VERSION};
pub use limits::Limits;
pub use op::Op;
pub use produce::{ProduceBatch, ProduceResponse};
pub use status::{decode_response, encode_error, encode_ok, ProtoError, Status};
pub use table::{BatchTable, BatchTableRef};

pub use diaspora_rpc::wire::{Reader, WireError, Writer};
pub use diaspora_rpc::RemoteRegion;

/// Longest topic name (bytes).
pub const MAX_TOPIC_NAME: usize = 255;
/// Longest consumer name (bytes).
pub const MAX_CONSUMER_NAME: usize = 255;
/// Longest token (bytes) a [`Hello`] may carry.
pub const MAX_TOKEN: usize = 64;

/// A request or response body: its op and its codec.
pub trait Message: Sized {
    /// The op of the request (responses use their request's op).
    const OP: Op;
    /// Appends the body to `out`.
    fn encode(&self, out: &mut Vec<u8>);
    /// Decodes a whole body (trailing bytes are an error), within `limits`.
    fn decode(body: &[u8], limits: &Limits) -> Result<Self, WireError>;

    /// The encoded body.
    fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(&mut v);
        v
    }
}

/// Reads a reserved field that must be zero.
pub(crate) fn reserved_u16(r: &mut Reader<'_>) -> Result<(), WireError> {
    let at = r.position();
    let v = r.u16()?;
    if v != 0 {
        return Err(bad_body(at, v as usize));
    }
    Ok(())
}

/// A body-level error at `offset`.
pub(crate) fn bad_body(offset: usize, have: usize) -> WireError {
    WireError::new(diaspora_rpc::wire::ErrorCode::BadBody, offset, 0, have)
}

/// A count or length above its limit.
pub(crate) fn too_large(offset: usize, need: usize, max: usize) -> WireError {
    WireError::new(diaspora_rpc::wire::ErrorCode::TooLarge, offset, need, max)
}

/// Reads a non-empty name of at most `max` bytes.
pub(crate) fn name<'a>(r: &mut Reader<'a>, max: usize) -> Result<&'a str, WireError> {
    let at = r.position();
    let s = r.str(max)?;
    if s.is_empty() {
        return Err(bad_body(at, 0));
    }
    Ok(s)
}
