//! On-disk format of a partition.
//!
//! A partition directory holds three files:
//!
//! - `00000000000000000000.meta`: serialized metadata of every event, back to back;
//! - `00000000000000000000.data`: data of every event, back to back;
//! - `00000000000000000000.index`: a 16-byte header followed by one fixed-size record per event.
//!
//! The index is the commit log: an event exists once its index record is written, and its
//! metadata and data were written before. Everything in `.meta`/`.data` beyond what the last valid
//! record points to is the torn tail of an interrupted write and is overwritten by the next one.
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
//! the CRC-32 of bytes `0..36` of the record.

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

/// File offset of record `i`.
pub fn record_offset(i: u64) -> u64 {
    INDEX_HEADER_SIZE + i * RECORD_SIZE as u64
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

impl IndexRecord {
    /// End of the metadata in the `.meta` file.
    pub fn meta_end(&self) -> u64 {
        self.meta_offset + u64::from(self.meta_len)
    }

    /// End of the data in the `.data` file.
    pub fn data_end(&self) -> u64 {
        self.data_offset + self.data_len
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
