//! The in-memory log behind `--storage memory` (benchmarks; lost at exit).
//!
//! Index records and metadata live in vectors. Data is not copied at all: the log keeps the
//! events' data segments as they arrived (slices of the buffer the server read the batch
//! into, which the server sizes exactly for this storage), so appending never copies or
//! moves what is stored, and reads hand out zero-copy slices (a span across two segments is
//! copied).
//!
//! Two other designs were measured (64 KiB events, one producer over tcp): a growing `Vec`
//! (every byte copied, plus reallocation), and fixed 64 MiB chunks of anonymous memory the
//! batch was copied into (1.25 to 1.35 server CPU-seconds per 20,000 events). Transparent
//! huge pages (`MADV_HUGEPAGE`) on the chunks made it much worse on this VM: the kernel
//! spent 70% of the server's time zeroing 2 MiB pages (`clear_page_erms`).
//!
//! Offsets are the same as the files log's: a record's `data_offset` is its position in the
//! concatenation of every event's data, so consecutive records are contiguous.

use bytes::Bytes;
use diaspora_driver_files::format::IndexRecord;
use diaspora_driver_files::partition::BatchPayload;
use diaspora_driver_files::FilesError;
use parking_lot::RwLock;

/// An in-memory log.
#[derive(Default)]
pub struct MemLog {
    inner: RwLock<MemInner>,
}

#[derive(Default)]
struct MemInner {
    recs: Vec<IndexRecord>,
    meta: Vec<u8>,
    data: Arena,
}

fn out_of_range(start: u64, end: u64, len: u64) -> FilesError {
    FilesError::OutOfRange {
        path: "memory".into(),
        start,
        end,
        file_len: len,
    }
}

impl MemLog {
    /// Appends a batch; returns its first id. The data segments are kept as they are (no
    /// copy).
    pub fn append(&self, batch: &BatchPayload) -> u64 {
        let mut g = self.inner.write();
        let first = g.recs.len() as u64;
        let mut meta_at = 0usize;
        for (i, &ml) in batch.meta_lens.iter().enumerate() {
            let meta_offset = g.meta.len() as u64;
            g.meta
                .extend_from_slice(&batch.meta[meta_at..meta_at + ml as usize]);
            meta_at += ml as usize;
            let data_offset = g.data.len();
            for seg in batch.data[i].segments() {
                g.data.push(seg);
            }
            let (meta_crc, data_crc) = batch.crcs[i];
            g.recs.push(IndexRecord {
                meta_offset,
                data_offset,
                data_len: batch.data[i].len(),
                meta_len: ml,
                meta_crc,
                data_crc,
            });
        }
        first
    }

    /// Number of events.
    pub fn count(&self) -> u64 {
        self.inner.read().recs.len() as u64
    }

    /// Up to `max` index records from `from`.
    pub fn read_records(&self, from: u64, max: usize) -> Vec<IndexRecord> {
        let g = self.inner.read();
        let from = usize::try_from(from)
            .unwrap_or(usize::MAX)
            .min(g.recs.len());
        let end = from.saturating_add(max).min(g.recs.len());
        g.recs[from..end].to_vec()
    }

    /// Metadata bytes `start..end`.
    pub fn meta_span(&self, start: u64, end: u64) -> Result<Bytes, FilesError> {
        let g = self.inner.read();
        let len = g.meta.len() as u64;
        usize::try_from(start)
            .ok()
            .zip(usize::try_from(end).ok())
            .and_then(|(s, e)| g.meta.get(s..e))
            .map(Bytes::copy_from_slice)
            .ok_or_else(|| out_of_range(start, end, len))
    }

    /// Data bytes `start..end` (a zero-copy slice when they lie in one chunk).
    pub fn data_span(&self, start: u64, end: u64) -> Result<Bytes, FilesError> {
        let g = self.inner.read();
        g.data
            .slice(start, end)
            .ok_or_else(|| out_of_range(start, end, g.data.len()))
    }

    /// Copies data bytes from `start` into `out`.
    pub fn data_into(&self, start: u64, out: &mut [u8]) -> Result<(), FilesError> {
        let g = self.inner.read();
        let end = start.saturating_add(out.len() as u64);
        if g.data.copy_into(start, out) {
            Ok(())
        } else {
            Err(out_of_range(start, end, g.data.len()))
        }
    }
}

/// Append-only bytes kept as the stored segments themselves (zero copy: each holds the
/// buffer the server received the batch into); segment `i` covers `starts[i]..` up to the
/// next start.
#[derive(Default)]
struct Arena {
    starts: Vec<u64>,
    segs: Vec<Bytes>,
    len: u64,
}

impl Arena {
    fn len(&self) -> u64 {
        self.len
    }

    /// Appends `seg` without copying it.
    fn push(&mut self, seg: &Bytes) {
        if seg.is_empty() {
            return;
        }
        self.starts.push(self.len);
        self.segs.push(seg.clone());
        self.len += seg.len() as u64;
    }

    /// The index of the segment holding byte `at` (`at < len`).
    fn locate(&self, at: u64) -> usize {
        self.starts.partition_point(|&s| s <= at) - 1
    }

    /// Bytes `start..end`, or `None` if they are not all stored.
    fn slice(&self, start: u64, end: u64) -> Option<Bytes> {
        if start > end || end > self.len {
            return None;
        }
        if start == end {
            return Some(Bytes::new());
        }
        let i = self.locate(start);
        let off = (start - self.starts[i]) as usize;
        let len = (end - start) as usize;
        if off + len <= self.segs[i].len() {
            return Some(self.segs[i].slice(off..off + len));
        }
        let mut v = vec![0u8; len];
        self.copy_into(start, &mut v).then(|| Bytes::from(v))
    }

    /// Copies the bytes from `start` into `out`; `false` if they are not all stored.
    fn copy_into(&self, start: u64, out: &mut [u8]) -> bool {
        let end = start.saturating_add(out.len() as u64);
        if end > self.len {
            return false;
        }
        if out.is_empty() {
            return true;
        }
        let mut i = self.locate(start);
        let mut off = (start - self.starts[i]) as usize;
        let mut done = 0usize;
        while done < out.len() {
            let seg = &self.segs[i];
            let n = (out.len() - done).min(seg.len() - off);
            out[done..done + n].copy_from_slice(&seg[off..off + n]);
            done += n;
            i += 1;
            off = 0;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_within_and_across_segments_read_back_exactly() {
        let mut a = Arena::default();
        let first = Bytes::from((0..1000).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
        let second = Bytes::from((0..100).map(|i| i as u8 ^ 0x5a).collect::<Vec<u8>>());
        a.push(&first);
        a.push(&Bytes::new());
        a.push(&second);
        assert_eq!(a.len(), 1100);
        // Inside one segment: a zero-copy slice of it.
        let s = a.slice(5, 15).unwrap();
        assert_eq!(&s[..], &first[5..15]);
        assert_eq!(s.as_ptr(), first[5..].as_ptr());
        // Across the boundary: copied, byte exact.
        let got = a.slice(980, 1020).unwrap();
        let mut want = first[980..].to_vec();
        want.extend_from_slice(&second[..20]);
        assert_eq!(&got[..], &want[..]);
        let mut out = vec![0u8; 40];
        assert!(a.copy_into(980, &mut out));
        assert_eq!(out, want);
        assert!(a.copy_into(1099, &mut [0u8; 1]));
        // Beyond the end: refused, never a panic.
        assert!(a.slice(0, 1101).is_none());
        assert!(a.slice(10, 5).is_none());
        assert!(!a.copy_into(1099, &mut [0u8; 2]));
        assert!(!a.copy_into(u64::MAX, &mut [0u8; 2]));
        assert_eq!(a.slice(1100, 1100).unwrap().len(), 0);
        assert!(Arena::default().copy_into(0, &mut []));
    }

    #[test]
    fn a_slice_outlives_the_log_and_later_appends() {
        let mut a = Arena::default();
        a.push(&Bytes::from_static(b"hello"));
        let s = a.slice(0, 5).unwrap();
        a.push(&Bytes::from(vec![7u8; 1000]));
        drop(a);
        assert_eq!(&s[..], b"hello");
    }

    #[test]
    fn log_offsets_match_the_files_layout() {
        use diaspora_api::DataView;
        let log = MemLog::default();
        let batch = BatchPayload {
            meta: b"{}{\"a\":1}".to_vec(),
            meta_lens: vec![2, 7],
            data: vec![
                DataView::from(Bytes::from_static(b"xyz")),
                DataView::default(),
            ],
            crcs: vec![(1, 2), (3, 4)],
        };
        assert_eq!(log.append(&batch), 0);
        assert_eq!(log.append(&batch), 2);
        let recs = log.read_records(0, 10);
        assert_eq!(recs.len(), 4);
        assert_eq!((recs[2].meta_offset, recs[2].data_offset), (9, 3));
        assert_eq!(&log.data_span(0, 6).unwrap()[..], b"xyzxyz");
        assert_eq!(&log.meta_span(9, 11).unwrap()[..], b"{}");
        assert!(log.meta_span(0, 100).is_err());
        let mut out = [0u8; 2];
        log.data_into(4, &mut out).unwrap();
        assert_eq!(&out, b"yz");
    }
}
