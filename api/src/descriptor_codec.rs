//! The serialized form of a [`DataDescriptor`]: what a network driver sends so that a peer
//! can read a selection of an event's data.
//!
//! ```text
//! DataDescriptor, little-endian, 28 + L + 16·N bytes
//! 0        4          6          8            16           20           24
//! +--------+----------+----------+------------+------------+------------+
//! | "DDSC" | version  | flags    | total u64  | L: loc len | N: segment |
//! | magic  | u16 = 1  | u16 = 0  | data bytes | u32        | count u32  |
//! +--------+----------+----------+------------+------------+------------+
//! 24                 24+L                               24+L+16N   +4
//! +------------------+-----------------------------------+----------+
//! | location (L B)   | N × (offset u64, len u64)         | crc32    |
//! +------------------+-----------------------------------+----------+
//! ```
//!
//! The CRC-32 (IEEE) covers every byte before it. The decoder checks the length against `L`
//! and `N` before allocating anything (a hostile `N` cannot make it allocate), the checksum,
//! and that every segment lies within `total`; each failure is a [`DescriptorError`] with a
//! stable [`code`](DescriptorError::code).

use bytes::Bytes;

use crate::descriptor::{DataDescriptor, Segment};

/// Magic bytes opening a serialized descriptor.
pub const MAGIC: [u8; 4] = *b"DDSC";
/// Version of the format.
pub const VERSION: u16 = 1;
/// Fixed part: header (24 bytes) and checksum (4 bytes).
pub const FIXED_LEN: usize = 28;

/// Why a serialized descriptor was refused. Codes are stable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DescriptorError {
    /// Shorter than the fixed header and checksum (code 1).
    #[error("serialized descriptor is {0} bytes, shorter than the 28-byte minimum")]
    Truncated(usize),
    /// The first four bytes are not `DDSC` (code 2).
    #[error("not a serialized descriptor (bad magic)")]
    BadMagic,
    /// A version or flags this build does not know (code 3).
    #[error(
        "unsupported descriptor version {version} (flags {flags:#x}); this build reads version 1"
    )]
    Unsupported {
        /// The version field.
        version: u16,
        /// The flags field.
        flags: u16,
    },
    /// The length disagrees with the location length and segment count (code 4).
    #[error("serialized descriptor is {got} bytes, its header announces {expected}")]
    LengthMismatch {
        /// Length announced by the header.
        expected: u64,
        /// Length received.
        got: usize,
    },
    /// The checksum does not match (code 5).
    #[error("descriptor checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum {
        /// Checksum in the message.
        stored: u32,
        /// Checksum of the bytes received.
        computed: u32,
    },
    /// A segment lies outside the data, or the selection overflows (code 6).
    #[error("segment {index} [{offset}, +{len}) lies outside the {total} bytes of data")]
    SegmentOutOfRange {
        /// Index of the segment.
        index: usize,
        /// Its offset.
        offset: u64,
        /// Its length.
        len: u64,
        /// The data's size.
        total: u64,
    },
    /// The descriptor is too large to encode (code 7).
    #[error("descriptor too large to encode ({location}-byte location, {segments} segments)")]
    TooLarge {
        /// Location length.
        location: usize,
        /// Number of segments.
        segments: usize,
    },
}

impl DescriptorError {
    /// The stable numeric code of this error.
    pub fn code(&self) -> u32 {
        match self {
            DescriptorError::Truncated(_) => 1,
            DescriptorError::BadMagic => 2,
            DescriptorError::Unsupported { .. } => 3,
            DescriptorError::LengthMismatch { .. } => 4,
            DescriptorError::Checksum { .. } => 5,
            DescriptorError::SegmentOutOfRange { .. } => 6,
            DescriptorError::TooLarge { .. } => 7,
        }
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

impl DataDescriptor {
    /// The serialized form (see [`crate::descriptor_codec`]). Fails only for a location of
    /// 4 GiB or more, or 2³² segments or more, which the format cannot hold.
    pub fn to_bytes(&self) -> Result<Vec<u8>, DescriptorError> {
        let loc = self.location();
        let segs = self.selections();
        let (Ok(loc_len), Ok(count)) = (u32::try_from(loc.len()), u32::try_from(segs.len())) else {
            return Err(DescriptorError::TooLarge {
                location: loc.len(),
                segments: segs.len(),
            });
        };
        let mut out = Vec::with_capacity(FIXED_LEN + loc.len() + 16 * segs.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&self.total_size().to_le_bytes());
        out.extend_from_slice(&loc_len.to_le_bytes());
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(loc);
        for s in segs {
            out.extend_from_slice(&s.offset.to_le_bytes());
            out.extend_from_slice(&s.len.to_le_bytes());
        }
        let crc = crc32(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        Ok(out)
    }

    /// Rebuilds a descriptor from [`DataDescriptor::to_bytes`]; hostile input gets a
    /// [`DescriptorError`], never a panic or an allocation larger than the input.
    pub fn from_bytes(b: &[u8]) -> Result<Self, DescriptorError> {
        if b.len() < FIXED_LEN {
            return Err(DescriptorError::Truncated(b.len()));
        }
        if b[..4] != MAGIC {
            return Err(DescriptorError::BadMagic);
        }
        let (version, flags) = (u16_at(b, 4), u16_at(b, 6));
        if version != VERSION || flags != 0 {
            return Err(DescriptorError::Unsupported { version, flags });
        }
        let total = u64_at(b, 8);
        let loc_len = u64::from(u32_at(b, 16));
        let count = u64::from(u32_at(b, 20));
        let expected = FIXED_LEN as u64 + loc_len + 16 * count;
        if expected != b.len() as u64 {
            return Err(DescriptorError::LengthMismatch {
                expected,
                got: b.len(),
            });
        }
        let body = b.len() - 4;
        let stored = u32_at(b, body);
        let computed = crc32(&b[..body]);
        if stored != computed {
            return Err(DescriptorError::Checksum { stored, computed });
        }
        let loc_end = 24 + loc_len as usize;
        let location = Bytes::copy_from_slice(&b[24..loc_end]);
        // `count` segments fit in the input (checked above), so this allocation is bounded by it.
        let mut selection = Vec::with_capacity(count as usize);
        for (index, chunk) in b[loc_end..body].chunks_exact(16).enumerate() {
            let (offset, len) = (u64_at(chunk, 0), u64_at(chunk, 8));
            if offset.checked_add(len).is_none_or(|end| end > total) {
                return Err(DescriptorError::SegmentOutOfRange {
                    index,
                    offset,
                    len,
                    total,
                });
            }
            selection.push(Segment { offset, len });
        }
        DataDescriptor::from_parts(location, total, selection).ok_or(
            DescriptorError::SegmentOutOfRange {
                index: 0,
                offset: 0,
                len: u64::MAX,
                total,
            },
        )
    }
}

/// CRC-32 (IEEE), bitwise: descriptors are small.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> DataDescriptor {
        DataDescriptor::new(Bytes::from_static(b"partition-3@4096"), 100)
            .strided_view(2, 3, 4, 6)
            .expect("fits")
            .sub_view(1, 9)
            .expect("fits")
    }

    #[test]
    fn descriptor_round_trips_through_bytes() {
        for d in [
            sample(),
            DataDescriptor::null(),
            DataDescriptor::new(Bytes::new(), 0),
            DataDescriptor::new(Bytes::from_static(b"x"), u64::MAX),
        ] {
            let b = d.to_bytes().expect("encodes");
            assert_eq!(DataDescriptor::from_bytes(&b).expect("decodes"), d);
        }
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926, "CRC-32/IEEE check value");
    }

    #[test]
    fn descriptor_decoder_errors_have_stable_codes() {
        let good = sample().to_bytes().expect("encodes");
        let e = DataDescriptor::from_bytes(&good[..10]).expect_err("short");
        assert_eq!(e.code(), 1);
        let mut b = good.clone();
        b[0] = b'X';
        assert_eq!(DataDescriptor::from_bytes(&b).expect_err("magic").code(), 2);
        let mut b = good.clone();
        b[4] = 2;
        assert_eq!(
            DataDescriptor::from_bytes(&b).expect_err("version").code(),
            3
        );
        let mut b = good.clone();
        b.push(0);
        assert_eq!(
            DataDescriptor::from_bytes(&b).expect_err("length").code(),
            4
        );
        let mut b = good.clone();
        b[30] ^= 1;
        assert_eq!(DataDescriptor::from_bytes(&b).expect_err("crc").code(), 5);
        // A hostile count is refused by the length check, before any allocation.
        let mut b = good.clone();
        b[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(DataDescriptor::from_bytes(&b).expect_err("count").code(), 4);
        // A segment outside the data, with a correct checksum.
        let d = DataDescriptor::new(Bytes::new(), 10);
        let mut b = d.to_bytes().expect("encodes");
        let n = b.len();
        b[24..32].copy_from_slice(&5u64.to_le_bytes()); // offset 5, len 10 > total 10
        let crc = crc32(&b[..n - 4]);
        b[n - 4..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(DataDescriptor::from_bytes(&b).expect_err("range").code(), 6);
    }

    fn arb_descriptor() -> impl Strategy<Value = DataDescriptor> {
        (
            proptest::collection::vec(any::<u8>(), 0..40),
            0u64..10_000,
            proptest::collection::vec((0u64..10_000, 0u64..10_000), 0..8),
        )
            .prop_map(|(loc, total, ranges)| {
                let base = DataDescriptor::new(Bytes::from(loc), total);
                let ranges: Vec<(u64, u64)> = ranges
                    .into_iter()
                    .filter(|&(o, l)| o.saturating_add(l) <= total)
                    .collect();
                base.unstructured_view(&ranges).expect("ranges fit")
            })
    }

    proptest! {
        #[test]
        fn descriptor_encoding_round_trips(d in arb_descriptor()) {
            let b = d.to_bytes().expect("encodes");
            prop_assert_eq!(DataDescriptor::from_bytes(&b).expect("decodes"), d);
        }

        #[test]
        fn descriptor_decoder_never_panics_on_garbage(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = DataDescriptor::from_bytes(&b);
        }

        #[test]
        fn corrupted_descriptors_are_refused_or_identical(d in arb_descriptor(), at in any::<usize>(), bit in 0u8..8) {
            let mut b = d.to_bytes().expect("encodes");
            let i = at % b.len();
            b[i] ^= 1 << bit;
            match DataDescriptor::from_bytes(&b) {
                Err(_) => {}
                Ok(back) => prop_assert_eq!(back, d),
            }
        }
    }
}
