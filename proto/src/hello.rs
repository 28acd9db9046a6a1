//! [`Hello`]: authenticate a connection and learn the server's epoch and limits.
//!
//! ```text
//! request:  | version u16 | reserved u16 = 0 | client_id u64 | token: u32 len + bytes (≤ 64) |
//! response: | version u16 | reserved u16 = 0 | epoch u64 | rank u32 | thread u32 | Limits (36) |
//! ```
//!
//! A wrong or missing token is answered with [`Status::Unauthorized`](crate::Status) and the
//! connection stays unauthenticated. A version the server does not speak is answered with
//! [`Status::UnsupportedVersion`](crate::Status).

use diaspora_rpc::wire::{Reader, WireError, Writer};

use crate::{reserved_u16, Limits, Message, Op, MAX_TOKEN};

/// The protocol version this crate speaks. Version 2 (2026-12-06): a request's regions are
/// bounded by [`Limits::max_regions`](crate::Limits) *and* by the room beside its inline
/// table (see the fabric driver's `plan_request`); servers advertise 256 regions, which a
/// version-1 client would fill beside a full inline table, past the eager frame.
pub const PROTOCOL_VERSION: u16 = 2;

/// Request of [`Op::Hello`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The client's protocol version.
    pub version: u16,
    /// A random id of the client instance (for logs).
    pub client_id: u64,
    /// The group file's token.
    pub token: String,
}

impl Message for Hello {
    const OP: Op = Op::Hello;

    fn encode(&self, out: &mut Vec<u8>) {
        Writer::new(out)
            .u16(self.version)
            .u16(0)
            .u64(self.client_id)
            .bytes(self.token.as_bytes());
    }

    fn decode(body: &[u8], _limits: &Limits) -> Result<Self, WireError> {
        let mut r = Reader::new(body);
        let version = r.u16()?;
        reserved_u16(&mut r)?;
        let client_id = r.u64()?;
        let token = r.str(MAX_TOKEN)?.to_owned();
        r.finish()?;
        Ok(Hello {
            version,
            client_id,
            token,
        })
    }
}

/// Response of [`Op::Hello`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelloResponse {
    /// The version the server speaks on this connection.
    pub version: u16,
    /// The server's epoch (the group file's; it changes on every start).
    pub epoch: u64,
    /// The rank that answered.
    pub rank: u32,
    /// The progress thread that answered.
    pub thread: u32,
    /// The server's limits.
    pub limits: Limits,
}

impl Message for HelloResponse {
    const OP: Op = Op::Hello;

    fn encode(&self, out: &mut Vec<u8>) {
        let mut w = Writer::new(out);
        w.u16(self.version)
            .u16(0)
            .u64(self.epoch)
            .u32(self.rank)
            .u32(self.thread);
        self.limits.encode(&mut w);
    }

    fn decode(body: &[u8], _limits: &Limits) -> Result<Self, WireError> {
        let mut r = Reader::new(body);
        let version = r.u16()?;
        reserved_u16(&mut r)?;
        let epoch = r.u64()?;
        let rank = r.u32()?;
        let thread = r.u32()?;
        let limits = Limits::decode(&mut r)?;
        r.finish()?;
        Ok(HelloResponse {
            version,
            epoch,
            rank,
            thread,
            limits,
        })
    }
}
