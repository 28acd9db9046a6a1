//! On-disk format of a partition.
//!
//! A partition directory holds three files:
//!
//! - `00000000000000000000.meta`: serialized metadata of every event, back to back;
//! - `00000000000000000000.data`: data of every event, back to back;
//! - `00000000000000000000.index`: a 16-byte header followed by one fixed-size record per event.
//!
//! The index is the commit log: an event exists once its index record is written, and its
//! metadata and data were written before. Bytes of `.meta`/`.data` that no record points to (the
//! leftovers of an interrupted write) are never overwritten: the next append writes after the end
//! of the files, so records never share bytes and offsets only grow (gaps are allowed).
//! Recovery rules (what a crash can cut) are in [`crate::tail`].
//!
//! ```text
//! index header (16 bytes, little-endian)
//! 0        8            12            16
//! +--------+------------+-------------+
//! | magic  | version u32| rec size u32|
//! +--------+------------+-------------+
//!
//! index record (40 bytes, little-endian)
//! 0            8            16          24         28         32         36          40
//! +------------+------------+-----------+----------+----------+----------+-----------+
//! | meta_off   | data_off   | data_len  | meta_len | meta_crc | data_crc | record_crc|
//! | u64        | u64        | u64       | u32      | u32      | u32      | u32       |
//! +------------+------------+-----------+----------+----------+----------+-----------+
//! ```
//!
//! `meta_crc` and `data_crc` are CRC-32 (IEEE) of the metadata and data bytes; `record_crc` is
//! the CRC-32 of bytes `0..36` of the record. Offsets and lengths come from disk and are never
//! trusted: every end is computed with checked arithmetic ([`IndexRecord::checked_meta_end`]),
//! and an end beyond [`MAX_FILE_OFFSET`] is impossible.
//!
//! A *tombstone* (written by `diaspora-ctl topic repair` in place of a damaged record, so the
//! event id is never reused) is a checksum-valid record with `meta_len = 0`, `data_len = 0`,
//! `meta_crc = data_crc = 0xFFFF_FFFF` ([`TOMBSTONE_CRC`]). No real event can look like one (the
//! CRC-32 of empty metadata is 0), so readers of any version refuse to serve it; this version
//! reports it as an event removed by repair.
//!
//! Any change of these layouts bumps [`INDEX_VERSION`]; the golden-bytes tests below pin them.

use std::ops::Range;

/// Base name of the (single) segment of a partition.
pub const SEGMENT_BASE: &str = "00000000000000000000";
/// Extension of the index file.
pub const INDEX_EXT: &str = "index";
/// Extension of the metadata file.
pub const META_EXT: &str = "meta";
/// Extension of the data file.
pub const DATA_EXT: &str = "data";

/// Magic bytes opening an index file.
pub const INDEX_MAGIC: [u8; 8] = *b"DSPIDX\0\x01";
/// Format version.
pub const INDEX_VERSION: u32 = 1;
/// Size of the index header.
pub const INDEX_HEADER_SIZE: u64 = 16;
/// Size of one index record.
pub const RECORD_SIZE: usize = 40;
/// Largest offset a file can have (`off_t` is signed): any record end beyond it is impossible.
pub const MAX_FILE_OFFSET: u64 = i64::MAX as u64;
/// `meta_crc` and `data_crc` of a tombstone (see the module documentation).
pub const TOMBSTONE_CRC: u32 = 0xFFFF_FFFF;

const MAGIC: Range<usize> = 0..8;
const VERSION: Range<usize> = 8..12;
const HEADER_RECORD_SIZE: Range<usize> = 12..16;

const META_OFF: Range<usize> = 0..8;
const DATA_OFF: Range<usize> = 8..16;
const DATA_LEN: Range<usize> = 16..24;
const META_LEN: Range<usize> = 24..28;
const META_CRC: Range<usize> = 28..32;
const DATA_CRC: Range<usize> = 32..36;
const RECORD_CRC: Range<usize> = 36..40;

/// The index file header.
pub fn encode_header() -> [u8; INDEX_HEADER_SIZE as usize] {
    let mut h = [0u8; INDEX_HEADER_SIZE as usize];
    h[MAGIC].copy_from_slice(&INDEX_MAGIC);
    h[VERSION].copy_from_slice(&INDEX_VERSION.to_le_bytes());
    h[HEADER_RECORD_SIZE].copy_from_slice(&(RECORD_SIZE as u32).to_le_bytes());
    h
}

/// Whether `h` is a header this version can read.
pub fn header_is_valid(h: &[u8]) -> bool {
    h.len() >= INDEX_HEADER_SIZE as usize && h[..INDEX_HEADER_SIZE as usize] == encode_header()
}

/// Why an index header is refused, `None` if it is valid.
pub fn header_problem(h: &[u8]) -> Option<&'static str> {
    let good = encode_header();
    if h.len() < good.len() {
        Some("shorter than the 16-byte header")
    } else if h[MAGIC] != good[MAGIC] {
        Some("bad magic")
    } else if h[VERSION] != good[VERSION] {
        Some("unsupported format version")
    } else if h[HEADER_RECORD_SIZE] != good[HEADER_RECORD_SIZE] {
        Some("unexpected record size")
    } else {
        None
    }
}

/// File offset of record `i` (saturating: ids large enough to overflow are beyond any file).
pub fn record_offset(i: u64) -> u64 {
    i.saturating_mul(RECORD_SIZE as u64)
        .saturating_add(INDEX_HEADER_SIZE)
}

/// Number of whole records in an index file of `len` bytes.
pub fn record_count(len: u64) -> u64 {
    len.saturating_sub(INDEX_HEADER_SIZE) / RECORD_SIZE as u64
}

/// One index record: where an event's metadata and data are, and their checksums.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct IndexRecord {
    /// Offset of the metadata in the `.meta` file.
    pub meta_offset: u64,
    /// Offset of the data in the `.data` file.
    pub data_offset: u64,
    /// Length of the data.
    pub data_len: u64,
    /// Length of the metadata.
    pub meta_len: u32,
    /// CRC-32 of the metadata.
    pub meta_crc: u32,
    /// CRC-32 of the data.
    pub data_crc: u32,
}

/// Why a record could not be decoded.
#[derive(Debug, PartialEq, Eq)]
pub enum RecordError {
    /// Fewer than [`RECORD_SIZE`] bytes.
    Short,
    /// `record_crc` does not match.
    Checksum,
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RecordError::Short => "index record is incomplete",
            RecordError::Checksum => "index record fails its own checksum",
        })
    }
}

impl IndexRecord {
    /// A tombstone at the given offsets (see the module documentation).
    pub fn tombstone(meta_offset: u64, data_offset: u64) -> Self {
        IndexRecord {
            meta_offset,
            data_offset,
            data_len: 0,
            meta_len: 0,
            meta_crc: TOMBSTONE_CRC,
            data_crc: TOMBSTONE_CRC,
        }
    }

    /// Whether this record is a tombstone left by a repair.
    pub fn is_tombstone(&self) -> bool {
        self.meta_len == 0
            && self.data_len == 0
            && self.meta_crc == TOMBSTONE_CRC
            && self.data_crc == TOMBSTONE_CRC
    }

    /// End of the metadata in the `.meta` file, `None` if impossible (past [`MAX_FILE_OFFSET`]).
    pub fn checked_meta_end(&self) -> Option<u64> {
        self.meta_offset
            .checked_add(u64::from(self.meta_len))
            .filter(|e| *e <= MAX_FILE_OFFSET)
    }

    /// End of the data in the `.data` file, `None` if impossible (past [`MAX_FILE_OFFSET`]).
    pub fn checked_data_end(&self) -> Option<u64> {
        self.data_offset
            .checked_add(self.data_len)
            .filter(|e| *e <= MAX_FILE_OFFSET)
    }

    /// End of the metadata, saturating: an impossible end is `u64::MAX`, beyond any file.
    pub fn meta_end(&self) -> u64 {
        self.meta_offset.saturating_add(u64::from(self.meta_len))
    }

    /// End of the data, saturating: an impossible end is `u64::MAX`, beyond any file.
    pub fn data_end(&self) -> u64 {
        self.data_offset.saturating_add(self.data_len)
    }

    /// Whether the record lies within metadata and data files of the given lengths.
    pub fn fits(&self, meta_len: u64, data_len: u64) -> bool {
        self.checked_meta_end().is_some_and(|e| e <= meta_len)
            && self.checked_data_end().is_some_and(|e| e <= data_len)
    }

    /// Writes the record into `out` (exactly [`RECORD_SIZE`] bytes).
    pub fn encode(&self, out: &mut [u8; RECORD_SIZE]) {
        out[META_OFF].copy_from_slice(&self.meta_offset.to_le_bytes());
        out[DATA_OFF].copy_from_slice(&self.data_offset.to_le_bytes());
        out[DATA_LEN].copy_from_slice(&self.data_len.to_le_bytes());
        out[META_LEN].copy_from_slice(&self.meta_len.to_le_bytes());
        out[META_CRC].copy_from_slice(&self.meta_crc.to_le_bytes());
        out[DATA_CRC].copy_from_slice(&self.data_crc.to_le_bytes());
        let crc = crc32fast::hash(&out[..RECORD_CRC.start]);
        out[RECORD_CRC].copy_from_slice(&crc.to_le_bytes());
    }

    /// Appends the encoded record to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let mut buf = [0u8; RECORD_SIZE];
        self.encode(&mut buf);
        out.extend_from_slice(&buf);
    }

    /// Decodes and checks a record.
    pub fn decode(b: &[u8]) -> Result<Self, RecordError> {
        let b: &[u8; RECORD_SIZE] = b
            .get(..RECORD_SIZE)
            .and_then(|s| s.try_into().ok())
            .ok_or(RecordError::Short)?;
        if crc32fast::hash(&b[..RECORD_CRC.start]) != u32_at(b, RECORD_CRC) {
            return Err(RecordError::Checksum);
        }
        Ok(IndexRecord {
            meta_offset: u64_at(b, META_OFF),
            data_offset: u64_at(b, DATA_OFF),
            data_len: u64_at(b, DATA_LEN),
            meta_len: u32_at(b, META_LEN),
            meta_crc: u32_at(b, META_CRC),
            data_crc: u32_at(b, DATA_CRC),
        })
    }
}

fn u64_at(b: &[u8; RECORD_SIZE], r: Range<usize>) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[r]);
    u64::from_le_bytes(a)
}

fn u32_at(b: &[u8; RECORD_SIZE], r: Range<usize>) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[r]);
    u32::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> IndexRecord {
        IndexRecord {
            meta_offset: 1,
            data_offset: 2,
            data_len: 3,
            meta_len: 4,
            meta_crc: 5,
            data_crc: 6,
        }
    }

    #[test]
    fn record_roundtrips_little_endian() {
        let mut b = [0u8; RECORD_SIZE];
        sample().encode(&mut b);
        assert_eq!(&b[0..8], &1u64.to_le_bytes());
        assert_eq!(&b[24..28], &4u32.to_le_bytes());
        assert_eq!(IndexRecord::decode(&b), Ok(sample()));
    }

    #[test]
    fn any_flipped_bit_is_detected() {
        let mut b = [0u8; RECORD_SIZE];
        sample().encode(&mut b);
        for byte in 0..RECORD_SIZE {
            let mut c = b;
            c[byte] ^= 0x10;
            assert_eq!(
                IndexRecord::decode(&c),
                Err(RecordError::Checksum),
                "byte {byte}"
            );
        }
    }

    #[test]
    fn random_bytes_never_panic_and_almost_never_pass() {
        // xorshift: deterministic, no dependency.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut accepted = 0;
        for _ in 0..200_000 {
            let mut b = [0u8; RECORD_SIZE];
            for chunk in b.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
            }
            let cut = (x % (RECORD_SIZE as u64 + 1)) as usize;
            if IndexRecord::decode(&b[..cut]).is_ok() {
                accepted += 1;
            }
        }
        // A 32-bit checksum lets about one in four billion random records through.
        assert!(accepted <= 1, "{accepted} random records accepted");
    }

    /// The on-disk format, byte for byte: changing it must be deliberate (bump INDEX_VERSION
    /// and update these bytes).
    #[test]
    fn golden_bytes_of_the_index_header_and_a_record() {
        assert_eq!(INDEX_VERSION, 1);
        assert_eq!(
            encode_header(),
            [
                b'D', b'S', b'P', b'I', b'D', b'X', 0, 1, // magic
                1, 0, 0, 0, // version 1
                40, 0, 0, 0, // record size 40
            ]
        );
        let rec = IndexRecord {
            meta_offset: 0x0102_0304_0506_0708,
            data_offset: 0x1112_1314_1516_1718,
            data_len: 0x2122_2324_2526_2728,
            meta_len: 0x3132_3334,
            meta_crc: 0x4142_4344,
            data_crc: 0x5152_5354,
        };
        let mut b = [0u8; RECORD_SIZE];
        rec.encode(&mut b);
        let golden: [u8; RECORD_SIZE] = [
            0x08,
            0x07,
            0x06,
            0x05,
            0x04,
            0x03,
            0x02,
            0x01, // meta_off
            0x18,
            0x17,
            0x16,
            0x15,
            0x14,
            0x13,
            0x12,
            0x11, // data_off
            0x28,
            0x27,
            0x26,
            0x25,
            0x24,
            0x23,
            0x22,
            0x21, // data_len
            0x34,
            0x33,
            0x32,
            0x31, // meta_len
            0x44,
            0x43,
            0x42,
            0x41, // meta_crc
            0x54,
            0x53,
            0x52,
            0x51, // data_crc
            GOLDEN_CRC[0],
            GOLDEN_CRC[1],
            GOLDEN_CRC[2],
            GOLDEN_CRC[3], // record_crc
        ];
        assert_eq!(b, golden);
        assert_eq!(IndexRecord::decode(&golden), Ok(rec));
        // The tombstone too.
        let mut t = [0u8; RECORD_SIZE];
        IndexRecord::tombstone(7, 9).encode(&mut t);
        assert_eq!(
            &t[16..36],
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]
        );
        assert!(IndexRecord::decode(&t).expect("valid").is_tombstone());
    }

    /// CRC-32 of the golden record's first 36 bytes, written out so a change of checksum
    /// algorithm is caught too.
    const GOLDEN_CRC: [u8; 4] = [0xb5, 0xe1, 0xc7, 0xa5];

    #[test]
    fn only_a_record_matching_every_tombstone_field_is_a_tombstone() {
        let t = IndexRecord::tombstone(7, 9);
        assert!(t.is_tombstone());
        let variants = [
            IndexRecord { meta_len: 1, ..t },
            IndexRecord { data_len: 1, ..t },
            IndexRecord { meta_crc: 0, ..t },
            IndexRecord { data_crc: 0, ..t },
            // Only one field as in a tombstone.
            IndexRecord {
                meta_len: 5,
                data_len: 5,
                meta_crc: 1,
                ..t
            },
            IndexRecord {
                meta_len: 5,
                data_len: 5,
                data_crc: 1,
                ..t
            },
            IndexRecord {
                meta_len: 5,
                meta_crc: 1,
                data_crc: 1,
                ..t
            },
            IndexRecord {
                data_len: 5,
                meta_crc: 1,
                data_crc: 1,
                ..t
            },
        ];
        for v in variants {
            assert!(!v.is_tombstone(), "{v:?} is not a tombstone");
        }
    }

    #[test]
    fn checked_ends_never_wrap() {
        let mut r = sample();
        r.meta_offset = u64::MAX - 1;
        r.meta_len = 4;
        assert_eq!(r.checked_meta_end(), None);
        assert_eq!(r.meta_end(), u64::MAX);
        assert!(!r.fits(u64::MAX, u64::MAX));
        r.meta_offset = MAX_FILE_OFFSET - 4;
        assert_eq!(r.checked_meta_end(), Some(MAX_FILE_OFFSET));
        r.data_offset = 1;
        r.data_len = MAX_FILE_OFFSET;
        assert_eq!(r.checked_data_end(), None);
        assert_eq!(record_offset(u64::MAX), u64::MAX);
    }

    #[test]
    fn header_problems_are_named() {
        let h = encode_header();
        assert_eq!(header_problem(&h), None);
        assert_eq!(
            header_problem(&h[..3]),
            Some("shorter than the 16-byte header")
        );
        let mut b = h;
        b[0] = b'X';
        assert_eq!(header_problem(&b), Some("bad magic"));
        let mut b = h;
        b[9] = 1;
        assert_eq!(header_problem(&b), Some("unsupported format version"));
        let mut b = h;
        b[12] = 41;
        assert_eq!(header_problem(&b), Some("unexpected record size"));
    }

    proptest::proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..100)) {
            if let Ok(r) = IndexRecord::decode(&bytes) {
                // Accepted only when the checksum matches: re-encoding gives the same bytes.
                let mut b = [0u8; RECORD_SIZE];
                r.encode(&mut b);
                proptest::prop_assert_eq!(&b[..], &bytes[..RECORD_SIZE]);
                let _ = (r.checked_meta_end(), r.checked_data_end(), r.meta_end(), r.data_end());
            }
            let _ = header_problem(&bytes);
            proptest::prop_assert_eq!(header_is_valid(&bytes), header_problem(&bytes).is_none());
        }

        #[test]
        fn any_record_roundtrips(meta_offset: u64, data_offset: u64, data_len: u64, meta_len: u32, meta_crc: u32, data_crc: u32) {
            let r = IndexRecord { meta_offset, data_offset, data_len, meta_len, meta_crc, data_crc };
            let mut b = [0u8; RECORD_SIZE];
            r.encode(&mut b);
            proptest::prop_assert_eq!(IndexRecord::decode(&b), Ok(r));
            let _ = (r.checked_meta_end(), r.checked_data_end(), r.fits(u64::MAX, u64::MAX));
        }
    }

    #[test]
    fn short_record_is_rejected() {
        assert_eq!(IndexRecord::decode(&[0u8; 39]), Err(RecordError::Short));
    }

    #[test]
    fn header_checks_magic_and_version() {
        let h = encode_header();
        assert!(header_is_valid(&h));
        let mut bad = h;
        bad[8] = 2;
        assert!(!header_is_valid(&bad));
        assert!(!header_is_valid(&h[..10]));
        assert_eq!(record_count(16 + 40 * 3 + 7), 3);
        assert_eq!(record_offset(2), 96);
    }
}
