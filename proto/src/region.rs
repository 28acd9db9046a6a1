//! Lists of [`RemoteRegion`]s inside bodies: the rpc crate's encoding
//! ([`diaspora_rpc::wire::put_regions`] / [`diaspora_rpc::wire::read_regions`]).
//!
//! ```text
//! | count u32 (≤ max_regions) | count × RemoteRegion (20 + key_len bytes each: see
//!   diaspora_fabric's RemoteRegion encoding) |
//! ```

use diaspora_rpc::wire::{put_regions, read_regions, Reader, WireError, Writer};
use diaspora_rpc::RemoteRegion;

/// Appends a region list.
pub fn encode_regions(regions: &[RemoteRegion], w: &mut Writer<'_>) {
    put_regions(w, regions);
}

/// Reads a region list of at most `max` regions.
pub fn decode_regions(r: &mut Reader<'_>, max: usize) -> Result<Vec<RemoteRegion>, WireError> {
    read_regions(r, max)
}

/// Total length of the regions (saturating).
pub fn total_len(regions: &[RemoteRegion]) -> u64 {
    regions.iter().fold(0u64, |a, r| a.saturating_add(r.len()))
}
