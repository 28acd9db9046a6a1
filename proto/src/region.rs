//! Lists of [`RemoteRegion`]s inside bodies.
//!
//! ```text
//! | count u32 (≤ max_regions) | count × RemoteRegion (20 + key_len bytes each: see
//!   diaspora_fabric's RemoteRegion encoding) |
//! ```

use diaspora_rpc::wire::{ErrorCode, Reader, WireError, Writer};
use diaspora_rpc::RemoteRegion;

/// Smallest encoded region (its fixed header).
const MIN_REGION: usize = 20;

/// Appends a region list.
pub fn encode_regions(regions: &[RemoteRegion], w: &mut Writer<'_>) {
    w.u32(u32::try_from(regions.len()).unwrap_or(u32::MAX));
    let mut scratch = Vec::with_capacity(64);
    for r in regions {
        scratch.clear();
        r.encode_into(&mut scratch);
        w.raw(&scratch);
    }
}

/// Reads a region list of at most `max` regions.
pub fn decode_regions(r: &mut Reader<'_>, max: usize) -> Result<Vec<RemoteRegion>, WireError> {
    r.list(max, MIN_REGION, |r| {
        let at = r.position();
        let mut peek = r.clone();
        let rest = peek.take(peek.remaining())?;
        match RemoteRegion::decode(rest) {
            Ok((region, used)) => {
                r.take(used)?;
                Ok(region)
            }
            Err(e) => Err(WireError::new(
                ErrorCode::BadBody,
                at,
                e.code() as usize,
                rest.len(),
            )),
        }
    })
}

/// Total length of the regions (saturating).
pub fn total_len(regions: &[RemoteRegion]) -> u64 {
    regions.iter().fold(0u64, |a, r| a.saturating_add(r.len()))
}
