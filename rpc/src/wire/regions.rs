//! Lists of remote regions in request bodies: the descriptors a producer sends so that the
//! server can pull its data (`diaspora_fabric::RemoteRegion`'s own LE encoding, 20 + key
//! bytes each).
//!
//! ```text
//! | count u32 LE | count × RemoteRegion (ver u8, key_len u8, rsvd u16, addr u64, len u64, key) |
//! ```
//!
//! The count is checked against the caller's limit and against the bytes present before the
//! vector is allocated.

use diaspora_fabric::RemoteRegion;

use super::{ErrorCode, Reader, WireError, Writer};

/// Smallest encoded region (no key bytes).
pub const MIN_REGION_LEN: usize = diaspora_fabric::remote::HEADER_LEN;

/// Appends `regions` as a counted list.
pub fn put_regions(w: &mut Writer<'_>, regions: &[RemoteRegion]) {
    let count = u32::try_from(regions.len()).unwrap_or(u32::MAX);
    w.u32(count);
    let mut buf = Vec::new();
    for r in regions.iter().take(count as usize) {
        buf.clear();
        r.encode_into(&mut buf);
        w.raw(&buf);
    }
}

/// Reads a counted list of at most `max` regions.
pub fn read_regions(r: &mut Reader<'_>, max: usize) -> Result<Vec<RemoteRegion>, WireError> {
    r.list(max, MIN_REGION_LEN, |r| {
        let at = r.position();
        let (region, used) = RemoteRegion::decode(r.rest())
            .map_err(|_| WireError::new(ErrorCode::BadBody, at, MIN_REGION_LEN, r.remaining()))?;
        r.take(used)?;
        Ok(region)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn regions_round_trip_and_counts_are_bounded() {
        let regions: Vec<_> = (0..5)
            .map(|i| RemoteRegion::new(i * 4096, 4096, 77 + i).unwrap())
            .collect();
        let mut v = Vec::new();
        put_regions(&mut Writer::new(&mut v), &regions);
        let mut r = Reader::new(&v);
        assert_eq!(read_regions(&mut r, 8).unwrap(), regions);
        assert!(r.finish().is_ok());
        assert_eq!(
            read_regions(&mut Reader::new(&v), 4).unwrap_err().code,
            ErrorCode::TooLarge
        );
        let mut bad = v.clone();
        bad[4] = 9; // version of the first region
        assert_eq!(
            read_regions(&mut Reader::new(&bad), 8).unwrap_err().code,
            ErrorCode::BadBody
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_and_allocate_within_the_input(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(list) = read_regions(&mut Reader::new(&bytes), 1_000_000) {
                prop_assert!(list.capacity() <= bytes.len() / MIN_REGION_LEN + 1);
            }
        }
    }
}
