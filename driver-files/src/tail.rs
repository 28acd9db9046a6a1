//! Crash recovery of a partition's tail: what is cut, what is kept, where the next append goes.
//!
//! Pure logic (no file is opened here): [`plan_tail`] reads index records through a callback and
//! decides. The rules, which make ids only grow and appends never overwrite a committed byte:
//!
//! 1. An index shorter than its 16-byte header comes from a crash while creating the partition:
//!    no record exists, the header is rewritten.
//! 2. Bytes after the last whole record (a partial record) are a torn tail: cut.
//! 3. Whole records after the *last checksum-valid record* are a torn tail: cut. They fail their
//!    own checksum and nothing valid follows them, which is what an index write interrupted by a
//!    crash leaves. The last checksum-valid record and every record before it are **never cut**,
//!    whatever they point to: a record that fails its own checksum in the middle of the log, or a
//!    checksum-valid record whose metadata or data is damaged, truncated or out of range, stays
//!    and is reported as corrupted on read (and by `verify`) until `repair` replaces it by a
//!    tombstone that keeps its id.
//! 4. A checksum-valid *last* record that points past the end of the metadata or data file is
//!    kept too (rule 3). The files are written before the index, so after a killed process such a
//!    record cannot exist; it means the file was truncated after the commit (or the index reached
//!    the disk before the data in a power loss without `sync`). We cannot tell these apart, and
//!    cutting it could reuse an id a consumer already acknowledged, so it stays and is reported.
//! 5. The next append writes its metadata at `max(metadata file length, end of the last kept
//!    record)` and its data likewise: never over an existing byte, never inside the range a
//!    kept record claims. A record end that is impossible (overflowing, or beyond
//!    [`MAX_FILE_OFFSET`](crate::format::MAX_FILE_OFFSET)) is ignored for this: no byte can exist there.
//!
//! What a crash can cost: the events of the batches whose index write had not completed (their
//! futures had not completed either, so no caller was told they were stored). A committed event
//! can only be cut if its index record and every record after it were destroyed (rule 3 cannot
//! tell a destroyed index end from a torn write); `verify` before any writer reopens the
//! partition reports such records as a torn tail.

use std::io;

use crate::format::{
    record_count, record_offset, IndexRecord, RecordError, INDEX_HEADER_SIZE, RECORD_SIZE,
};

/// Records read per callback when scanning backwards for the last valid record.
const SCAN_CHUNK: u64 = 256;

/// What recovery decided about the end of a log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TailPlan {
    /// Records kept: ids `0..count` exist.
    pub count: u64,
    /// Length the index must have: the header plus `count` records.
    pub index_len: u64,
    /// Whole records cut because they, and everything after them, fail their own checksum.
    pub cut_records: u64,
    /// Bytes of a partial record cut at the end.
    pub partial_bytes: u64,
    /// Whether the header is missing or incomplete and must be (re)written.
    pub rewrite_header: bool,
    /// Where the next append writes its metadata (never below the metadata file's length).
    pub meta_next: u64,
    /// Where the next append writes its data (never below the data file's length).
    pub data_next: u64,
}

impl TailPlan {
    /// Whether the index must be changed (shortened, or its header rewritten).
    pub fn needs_cut(&self) -> bool {
        self.rewrite_header || self.cut_records > 0 || self.partial_bytes > 0
    }
}

/// Decides the tail of a log whose index, metadata and data files have the given lengths.
/// `read(first, buf)` fills `buf` (a whole number of records) with records `first..`; it is
/// only called for records the index holds. At most `index_len / 40` records are read, in
/// chunks, from the end: arbitrary bytes cannot make this loop forever.
pub fn plan_tail(
    index_len: u64,
    meta_len: u64,
    data_len: u64,
    mut read: impl FnMut(u64, &mut [u8]) -> io::Result<()>,
) -> io::Result<TailPlan> {
    if index_len < INDEX_HEADER_SIZE {
        return Ok(TailPlan {
            count: 0,
            index_len: INDEX_HEADER_SIZE,
            cut_records: 0,
            partial_bytes: 0,
            rewrite_header: true,
            meta_next: meta_len,
            data_next: data_len,
        });
    }
    let whole = record_count(index_len);
    let partial_bytes = index_len - record_offset(whole);
    let mut buf = vec![0u8; (SCAN_CHUNK as usize) * RECORD_SIZE];
    let mut end = whole; // records end..whole fail their checksum
    let mut last = None;
    // The last record first (the common case: one 40-byte read per append), then chunks.
    let mut chunk_len = 1;
    'scan: while end > 0 {
        let first = end.saturating_sub(chunk_len);
        chunk_len = SCAN_CHUNK;
        let n = (end - first) as usize;
        let chunk = &mut buf[..n * RECORD_SIZE];
        read(first, chunk)?;
        for (i, raw) in chunk.chunks_exact(RECORD_SIZE).enumerate().rev() {
            match IndexRecord::decode(raw) {
                Ok(rec) => {
                    last = Some(rec);
                    end = first + i as u64 + 1;
                    break 'scan;
                }
                Err(RecordError::Checksum | RecordError::Short) => {}
            }
        }
        end = first;
    }
    let next = |file_len: u64, rec_end: Option<u64>| rec_end.map_or(file_len, |e| e.max(file_len));
    Ok(TailPlan {
        count: end,
        index_len: record_offset(end),
        cut_records: whole - end,
        partial_bytes,
        rewrite_header: false,
        meta_next: next(meta_len, last.and_then(|r| r.checked_meta_end())),
        data_next: next(data_len, last.and_then(|r| r.checked_data_end())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::encode_header;
    use proptest::prelude::*;

    /// An index file in memory.
    fn plan(index: &[u8], meta_len: u64, data_len: u64) -> TailPlan {
        let mut reads = 0u64;
        let p = plan_tail(index.len() as u64, meta_len, data_len, |first, buf| {
            reads += (buf.len() / RECORD_SIZE) as u64;
            let start = record_offset(first) as usize;
            buf.copy_from_slice(&index[start..start + buf.len()]);
            Ok(())
        })
        .expect("in-memory reads cannot fail");
        assert!(
            reads <= record_count(index.len() as u64),
            "read a record twice"
        );
        p
    }

    fn rec(meta: u64, data: u64) -> IndexRecord {
        IndexRecord {
            meta_offset: meta,
            data_offset: data,
            data_len: 10,
            meta_len: 5,
            meta_crc: 1,
            data_crc: 2,
        }
    }

    fn index_of(records: &[IndexRecord]) -> Vec<u8> {
        let mut v = encode_header().to_vec();
        for r in records {
            r.encode_into(&mut v);
        }
        v
    }

    #[test]
    fn clean_log_keeps_everything_and_appends_after_the_files() {
        let idx = index_of(&[rec(0, 0), rec(5, 10)]);
        let p = plan(&idx, 10, 20);
        assert_eq!((p.count, p.cut_records, p.partial_bytes), (2, 0, 0));
        assert!(!p.needs_cut());
        assert_eq!((p.meta_next, p.data_next), (10, 20));
        // Leftovers of an interrupted write after the last record are never overwritten.
        let p = plan(&idx, 17, 99);
        assert_eq!((p.meta_next, p.data_next), (17, 99));
    }

    #[test]
    fn trailing_records_failing_their_checksum_are_cut_a_middle_one_never() {
        let mut idx = index_of(&[rec(0, 0), rec(5, 10), rec(10, 20), rec(15, 30)]);
        idx[16 + 40 + 3] ^= 1; // record 1: in the middle
        let p = plan(&idx, 20, 40);
        assert_eq!((p.count, p.cut_records), (4, 0));
        idx[16 + 40 + 3] ^= 1; // record 1 sound again
        let len = idx.len();
        idx[len - 1] ^= 1; // record 3: the last one
        idx[len - 41] ^= 1; // record 2: now also in the torn tail
        idx.extend_from_slice(&[9; 7]); // and a partial record
        let p = plan(&idx, 20, 40);
        assert_eq!((p.count, p.cut_records, p.partial_bytes), (2, 2, 7));
        assert_eq!(p.index_len, record_offset(2));
        assert_eq!((p.meta_next, p.data_next), (20, 40));
    }

    #[test]
    fn a_valid_last_record_past_the_end_of_the_files_is_kept_and_appends_go_after_it() {
        let idx = index_of(&[rec(0, 0), rec(5, 10)]);
        let p = plan(&idx, 6, 12); // both files truncated after the commit
        assert_eq!((p.count, p.cut_records), (2, 0));
        assert_eq!((p.meta_next, p.data_next), (10, 20));
    }

    #[test]
    fn impossible_ends_never_wrap_the_append_position() {
        let mut r = rec(u64::MAX - 2, 0);
        r.data_len = u64::MAX;
        r.data_offset = 5;
        let p = plan(&index_of(&[rec(0, 0), r]), 100, 200);
        assert_eq!(p.count, 2);
        assert_eq!((p.meta_next, p.data_next), (100, 200));
    }

    #[test]
    fn index_shorter_than_its_header_is_a_crash_during_creation() {
        for len in 0..16 {
            let p = plan(&encode_header()[..len], 3, 4);
            assert!(p.rewrite_header && p.needs_cut());
            assert_eq!(
                (p.count, p.index_len, p.meta_next, p.data_next),
                (0, 16, 3, 4)
            );
        }
    }

    #[test]
    fn an_index_of_garbage_is_scanned_in_chunks_once() {
        let mut idx = encode_header().to_vec();
        idx.resize(idx.len() + 40 * 1000 + 3, 0xa5);
        let p = plan(&idx, 0, 0);
        assert_eq!((p.count, p.cut_records, p.partial_bytes), (0, 1000, 3));
    }

    proptest! {
        /// Arbitrary index bytes and file lengths: no panic, nothing before the last valid
        /// record is cut, and the next append never lands on an existing byte or inside a kept
        /// record's (possible) range.
        #[test]
        fn recovery_of_arbitrary_bytes_never_cuts_or_overwrites_committed_bytes(
            records in proptest::collection::vec((0u64..1000, 0u64..1000, any::<bool>()), 0..20),
            noise in proptest::collection::vec(any::<u8>(), 0..100),
            meta_len in 0u64..2000,
            data_len in 0u64..2000,
            header_cut in 0usize..17,
        ) {
            let mut idx = encode_header().to_vec();
            let mut last_valid = None;
            for (i, (m, d, damaged)) in records.iter().enumerate() {
                let r = rec(*m, *d);
                let mut b = [0u8; RECORD_SIZE];
                r.encode(&mut b);
                if *damaged {
                    b[i % RECORD_SIZE] ^= 0x80;
                } else {
                    last_valid = Some((i as u64, r));
                }
                idx.extend_from_slice(&b);
            }
            idx.extend_from_slice(&noise);
            if header_cut < 16 {
                idx.truncate(header_cut);
                last_valid = None;
            }
            let p = plan(&idx, meta_len, data_len);
            prop_assert!(p.meta_next >= meta_len && p.data_next >= data_len);
            prop_assert!(p.index_len <= (idx.len() as u64).max(16));
            if let Some((i, r)) = last_valid {
                prop_assert!(p.count > i, "cut the last valid record {i}");
                prop_assert!(p.meta_next >= r.meta_end() && p.data_next >= r.data_end());
            }
            // Idempotent: planning again on the cut index keeps the same records.
            let mut cut = idx.clone();
            if p.rewrite_header {
                cut = encode_header().to_vec();
            } else {
                cut.truncate(p.index_len as usize);
            }
            let again = plan(&cut, meta_len, data_len);
            prop_assert_eq!(again.count, p.count);
            prop_assert!(!again.needs_cut());
        }

        #[test]
        fn any_bytes_at_all_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600), m: u64, d: u64) {
            let p = plan(&bytes, m, d);
            prop_assert!(p.meta_next >= m && p.data_next >= d);
        }
    }
}
