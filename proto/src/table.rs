//! The batch table: what a produced or fetched batch holds, event by event.
//!
//! ```text
//! | meta_len u32 × n | data_len u32 × n | data_crc u32 × n | metadata bytes (Σ meta_len) |
//! ```
//!
//! `data_crc` is the CRC-32 (IEEE, `crc32fast`) of the event's data, the value the files
//! driver stores in the event's index record. The table travels inline in the frame when it
//! fits [`Limits::max_inline`](crate::Limits::max_inline), otherwise in front of the data in
//! the RDMA region.

use diaspora_rpc::wire::{ErrorCode, WireError};

/// Bytes per event in the fixed part of a table.
pub const PER_EVENT: usize = 12;

/// A table being built (by a producer, or by the server for a fetch).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchTable {
    /// Metadata length of each event.
    pub meta_lens: Vec<u32>,
    /// Data length of each event.
    pub data_lens: Vec<u32>,
    /// Data CRC-32 of each event.
    pub data_crcs: Vec<u32>,
    /// The metadata of every event, back to back.
    pub meta: Vec<u8>,
}

impl BatchTable {
    /// Adds one event.
    pub fn push(&mut self, meta: &[u8], data_len: u32, data_crc: u32) {
        self.meta_lens
            .push(u32::try_from(meta.len()).unwrap_or(u32::MAX));
        self.meta.extend_from_slice(meta);
        self.data_lens.push(data_len);
        self.data_crcs.push(data_crc);
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.meta_lens.len()
    }

    /// Whether it has no event.
    pub fn is_empty(&self) -> bool {
        self.meta_lens.is_empty()
    }

    /// Encoded size.
    pub fn encoded_len(&self) -> usize {
        PER_EVENT * self.len() + self.meta.len()
    }

    /// Sum of the data lengths.
    pub fn data_len(&self) -> u64 {
        self.data_lens.iter().map(|&l| l as u64).sum()
    }

    /// Appends the encoded table.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.reserve(self.encoded_len());
        for v in self
            .meta_lens
            .iter()
            .chain(&self.data_lens)
            .chain(&self.data_crcs)
        {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&self.meta);
    }
}

/// A decoded table, borrowing its bytes (no allocation).
#[derive(Debug, Clone, Copy)]
pub struct BatchTableRef<'a> {
    count: usize,
    fixed: &'a [u8],
    meta: &'a [u8],
    data_len: u64,
}

impl<'a> BatchTableRef<'a> {
    /// Parses the table of `count` events that must fill `bytes` exactly.
    pub fn parse(bytes: &'a [u8], count: usize) -> Result<Self, WireError> {
        let fixed_len =
            count
                .checked_mul(PER_EVENT)
                .ok_or(WireError::new(ErrorCode::TooLarge, 0, count, 0))?;
        if bytes.len() < fixed_len {
            return Err(WireError::new(
                ErrorCode::Truncated,
                0,
                fixed_len,
                bytes.len(),
            ));
        }
        let (fixed, meta) = bytes.split_at(fixed_len);
        let mut meta_total = 0u64;
        let mut data_total = 0u64;
        for i in 0..count {
            meta_total += word(fixed, i) as u64;
            data_total += word(fixed, count + i) as u64;
        }
        if meta_total != meta.len() as u64 {
            return Err(WireError::new(
                ErrorCode::BadBody,
                fixed_len,
                usize::try_from(meta_total).unwrap_or(usize::MAX),
                meta.len(),
            ));
        }
        Ok(BatchTableRef {
            count,
            fixed,
            meta,
            data_len: data_total,
        })
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether it has no event.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Metadata length of event `i` (`i < len()`).
    pub fn meta_len(&self, i: usize) -> u32 {
        word(self.fixed, i)
    }

    /// Data length of event `i`.
    pub fn data_len(&self, i: usize) -> u32 {
        word(self.fixed, self.count + i)
    }

    /// Data CRC of event `i`.
    pub fn data_crc(&self, i: usize) -> u32 {
        word(self.fixed, 2 * self.count + i)
    }

    /// All metadata bytes, back to back.
    pub fn meta(&self) -> &'a [u8] {
        self.meta
    }

    /// Sum of the data lengths.
    pub fn total_data_len(&self) -> u64 {
        self.data_len
    }

    /// Encoded size.
    pub fn encoded_len(&self) -> usize {
        self.fixed.len() + self.meta.len()
    }

    /// Events in order: (metadata, data length, data CRC).
    pub fn iter(&self) -> impl Iterator<Item = (&'a [u8], u32, u32)> + '_ {
        let mut at = 0usize;
        (0..self.count).map(move |i| {
            let len = self.meta_len(i) as usize;
            let m = &self.meta[at..at + len];
            at += len;
            (m, self.data_len(i), self.data_crc(i))
        })
    }

    /// An owned copy.
    pub fn to_owned_table(&self) -> BatchTable {
        let mut t = BatchTable::default();
        for (m, l, c) in self.iter() {
            t.push(m, l, c);
        }
        t
    }
}

fn word(b: &[u8], i: usize) -> u32 {
    let s = &b[4 * i..4 * i + 4];
    u32::from_le_bytes([s[0], s[1], s[2], s[3]])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn tables_round_trip(events in proptest::collection::vec(
            (proptest::collection::vec(any::<u8>(), 0..40), any::<u32>(), any::<u32>()), 0..50)) {
            let mut t = BatchTable::default();
            for (m, l, c) in &events {
                t.push(m, *l, *c);
            }
            let mut bytes = Vec::new();
            t.encode_into(&mut bytes);
            prop_assert_eq!(bytes.len(), t.encoded_len());
            let r = BatchTableRef::parse(&bytes, events.len()).unwrap();
            prop_assert_eq!(r.to_owned_table(), t.clone());
            prop_assert_eq!(r.total_data_len(), t.data_len());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300),
                                       count in 0usize..100) {
            if let Ok(r) = BatchTableRef::parse(&bytes, count) {
                prop_assert_eq!(r.iter().count(), count);
            }
        }
    }

    #[test]
    fn huge_counts_are_refused_without_allocating() {
        assert!(BatchTableRef::parse(&[0; 12], usize::MAX).is_err());
        assert!(BatchTableRef::parse(&[0; 12], 1 << 40).is_err());
    }

    #[test]
    fn metadata_lengths_must_fill_the_table() {
        let mut t = BatchTable::default();
        t.push(b"abc", 1, 2);
        let mut bytes = Vec::new();
        t.encode_into(&mut bytes);
        bytes.push(0);
        assert_eq!(
            BatchTableRef::parse(&bytes, 1).unwrap_err().code,
            ErrorCode::BadBody
        );
        assert!(BatchTableRef::parse(&bytes[..bytes.len() - 2], 1).is_err());
    }
}
