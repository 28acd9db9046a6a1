//! The record framing: how one Diaspora event is stored in the value of one Kafka record, and
//! the end-of-stream marker record. Pure functions, no I/O.
//!
//! An event record's value (all integers little-endian):
//!
//! ```text
//! offset  size      field
//! 0       4         magic      b"DSK1"
//! 4       4         meta_len   u32: bytes of serialized metadata
//! 8       4         meta_crc   u32: CRC-32 (IEEE) of the metadata bytes
//! 12      4         data_crc   u32: CRC-32 (IEEE) of the data bytes
//! 16      meta_len  metadata   the topic's serializer's output
//! 16+m    rest      data       the event's data (every segment, concatenated)
//! ```
//!
//! The end-of-stream marker is a record whose value is exactly the 4 bytes `b"DSKE"`;
//! `mark_as_complete` appends one to every partition. Kafka checksums record batches too
//! (CRC-32C); the CRCs here also catch a record written by another client under our topic and
//! a bug on either side of the framing.
//!
//! Decoding never allocates: it borrows the metadata and data from the record's value.
//! Stable error codes: [`RecordError::code`].

/// Magic of an event record.
pub const EVENT_MAGIC: [u8; 4] = *b"DSK1";
/// The whole value of an end-of-stream marker record.
pub const END_MARKER: [u8; 4] = *b"DSKE";
/// Bytes before the metadata.
pub const HEADER_LEN: usize = 16;

/// Why a record's value is not a valid Diaspora record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Shorter than the 16-byte header (code 1).
    #[error("record of {0} bytes is shorter than the 16-byte header")]
    TooShort(usize),
    /// The first 4 bytes are neither `DSK1` nor an end marker (code 2).
    #[error("bad magic {0:02x?} (not a record written by the diaspora kafka driver)")]
    BadMagic([u8; 4]),
    /// `meta_len` runs past the end of the record (code 3).
    #[error("metadata length {meta_len} runs past the {len}-byte record")]
    MetadataOverrun {
        /// The header's `meta_len`.
        meta_len: u32,
        /// Record length.
        len: usize,
    },
    /// The metadata does not match `meta_crc` (code 4).
    #[error("metadata checksum mismatch")]
    MetadataChecksum,
    /// The data does not match `data_crc` (code 5).
    #[error("data checksum mismatch")]
    DataChecksum,
    /// The record has no value at all (code 6).
    #[error("record has no value")]
    Empty,
}

impl RecordError {
    /// A stable numeric code for each variant.
    pub fn code(&self) -> u32 {
        match self {
            RecordError::TooShort(_) => 1,
            RecordError::BadMagic(_) => 2,
            RecordError::MetadataOverrun { .. } => 3,
            RecordError::MetadataChecksum => 4,
            RecordError::DataChecksum => 5,
            RecordError::Empty => 6,
        }
    }
}

/// A decoded record.
#[derive(Debug, PartialEq, Eq)]
pub enum Record<'a> {
    /// An event: serialized metadata and data, borrowed from the record.
    Event {
        /// The serialized metadata.
        metadata: &'a [u8],
        /// The data.
        data: &'a [u8],
    },
    /// The end-of-stream marker.
    End,
}

/// Starts an event record in `out` (cleared): the header, with lengths and checksums left at
/// zero until [`finish_event`]. Append the serialized metadata, then call [`mark_data`].
pub fn begin_event(out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&EVENT_MAGIC);
    out.extend_from_slice(&[0u8; HEADER_LEN - 4]);
}

/// Fills `meta_len` and `meta_crc` once the metadata was appended; returns where data starts.
/// Fails if the metadata exceeds 4 GiB.
pub fn mark_data(out: &mut [u8]) -> Result<usize, usize> {
    let meta = out.len() - HEADER_LEN;
    let meta_len = u32::try_from(meta).map_err(|_| meta)?;
    let crc = crc32fast::hash(&out[HEADER_LEN..]);
    out[4..8].copy_from_slice(&meta_len.to_le_bytes());
    out[8..12].copy_from_slice(&crc.to_le_bytes());
    Ok(out.len())
}

/// Fills `data_crc` once the data (everything after `data_start`) was appended.
pub fn finish_event(out: &mut [u8], data_start: usize) {
    let crc = crc32fast::hash(&out[data_start..]);
    out[12..16].copy_from_slice(&crc.to_le_bytes());
}

/// Encodes an event record in one call (tests, tools).
pub fn encode_event(metadata: &[u8], data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + metadata.len() + data.len());
    begin_event(&mut out);
    out.extend_from_slice(metadata);
    let start = mark_data(&mut out).unwrap_or(out.len());
    out.extend_from_slice(data);
    finish_event(&mut out, start);
    out
}

/// Decodes a record's value, checking both checksums.
pub fn decode(value: Option<&[u8]>) -> Result<Record<'_>, RecordError> {
    let value = value.ok_or(RecordError::Empty)?;
    if value == END_MARKER {
        return Ok(Record::End);
    }
    if value.len() < HEADER_LEN {
        return Err(RecordError::TooShort(value.len()));
    }
    let word =
        |at: usize| u32::from_le_bytes([value[at], value[at + 1], value[at + 2], value[at + 3]]);
    let magic = [value[0], value[1], value[2], value[3]];
    if magic != EVENT_MAGIC {
        return Err(RecordError::BadMagic(magic));
    }
    let meta_len = word(4);
    let end = HEADER_LEN
        .checked_add(meta_len as usize)
        .filter(|&e| e <= value.len())
        .ok_or(RecordError::MetadataOverrun {
            meta_len,
            len: value.len(),
        })?;
    let metadata = &value[HEADER_LEN..end];
    let data = &value[end..];
    if crc32fast::hash(metadata) != word(8) {
        return Err(RecordError::MetadataChecksum);
    }
    if crc32fast::hash(data) != word(12) {
        return Err(RecordError::DataChecksum);
    }
    Ok(Record::Event { metadata, data })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn end_marker_and_errors() {
        assert_eq!(decode(Some(&END_MARKER)), Ok(Record::End));
        assert_eq!(decode(None), Err(RecordError::Empty));
        assert_eq!(decode(Some(b"DSK1")), Err(RecordError::TooShort(4)));
        let mut r = encode_event(b"{}", b"abc");
        r[0] = b'X';
        assert!(matches!(decode(Some(&r)), Err(RecordError::BadMagic(_))));
        let mut r = encode_event(b"{}", b"abc");
        r[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode(Some(&r)),
            Err(RecordError::MetadataOverrun { .. })
        ));
        let mut r = encode_event(b"{}", b"abc");
        let last = r.len() - 1;
        r[last] ^= 1;
        assert_eq!(decode(Some(&r)), Err(RecordError::DataChecksum));
        let mut r = encode_event(b"{}", b"abc");
        r[16] ^= 1;
        assert_eq!(decode(Some(&r)), Err(RecordError::MetadataChecksum));
    }

    proptest! {
        #[test]
        fn round_trip(meta in proptest::collection::vec(any::<u8>(), 0..64),
                      data in proptest::collection::vec(any::<u8>(), 0..256)) {
            let r = encode_event(&meta, &data);
            prop_assert_eq!(decode(Some(&r)), Ok(Record::Event { metadata: &meta, data: &data }));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(Some(&bytes));
        }

        #[test]
        fn any_single_bit_flip_is_caught(meta in proptest::collection::vec(any::<u8>(), 0..32),
                                         data in proptest::collection::vec(any::<u8>(), 1..64),
                                         bit in any::<usize>()) {
            let mut r = encode_event(&meta, &data);
            let bit = bit % (r.len() * 8);
            r[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(decode(Some(&r)).is_err() || r == END_MARKER);
        }
    }
}
