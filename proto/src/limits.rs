//! Negotiated limits: the server's, sent in the [`HelloResponse`](crate::HelloResponse); every
//! decoder checks counts and lengths against them before allocating.
//!
//! ```text
//! | max_batch_events u32 | max_batch_bytes u64 | max_inline u32 | max_fetch_events u32 |
//! | max_fetch_bytes u64 | max_regions u32 | credits u32 |            (36 bytes)
//! ```

use diaspora_rpc::wire::{Reader, WireError, Writer};

/// Limits of one server, the same for every thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most events in one produced batch.
    pub max_batch_events: u32,
    /// Most bytes in one produced batch (batch table + data).
    pub max_batch_bytes: u64,
    /// Most bytes of a batch table carried inline in a request or response (larger tables
    /// travel in the RDMA region).
    pub max_inline: u32,
    /// Most events one fetch returns (and a [`FetchData`](crate::FetchData) may select).
    pub max_fetch_events: u32,
    /// Most bytes one fetch returns (batch table + data).
    pub max_fetch_bytes: u64,
    /// Most remote regions in one request.
    pub max_regions: u32,
    /// Batches a producer may have in flight per partition.
    pub credits: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_batch_events: 1 << 16,
            max_batch_bytes: 64 << 20,
            max_inline: 6 * 1024,
            max_fetch_events: 1 << 16,
            max_fetch_bytes: 64 << 20,
            max_regions: 256,
            credits: 8,
        }
    }
}

impl Limits {
    /// Encoded size.
    pub const LEN: usize = 36;

    /// Appends the limits.
    pub fn encode(&self, w: &mut Writer<'_>) {
        w.u32(self.max_batch_events)
            .u64(self.max_batch_bytes)
            .u32(self.max_inline)
            .u32(self.max_fetch_events)
            .u64(self.max_fetch_bytes)
            .u32(self.max_regions)
            .u32(self.credits);
    }

    /// Reads limits (any values: a client only lowers its own use to them).
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(Limits {
            max_batch_events: r.u32()?,
            max_batch_bytes: r.u64()?,
            max_inline: r.u32()?,
            max_fetch_events: r.u32()?,
            max_fetch_bytes: r.u64()?,
            max_regions: r.u32()?,
            credits: r.u32()?,
        })
    }
}
