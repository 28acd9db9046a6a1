//! The partition log behind the server: the files driver's [`PartitionLog`] (same code, same
//! bytes on disk) or an in-memory log for benchmarks.

use std::sync::Arc;

use bytes::Bytes;
use diaspora_driver_files::format::IndexRecord;
use diaspora_driver_files::partition::{BatchPayload, PartitionLog};
use diaspora_driver_files::FilesError;
use parking_lot::RwLock;

/// One partition's events.
pub enum Log {
    /// The files driver's log.
    Files(Arc<PartitionLog>),
    /// Events in memory (lost at exit).
    Memory(MemLog),
}

impl Log {
    /// Appends a batch; returns its first id.
    pub fn append(&self, batch: &BatchPayload) -> Result<u64, FilesError> {
        match self {
            Log::Files(l) => l.append(batch),
            Log::Memory(m) => Ok(m.append(batch)),
        }
    }

    /// Number of events.
    pub fn count(&self) -> Result<u64, FilesError> {
        match self {
            Log::Files(l) => l.count(),
            Log::Memory(m) => Ok(m.inner.read().recs.len() as u64),
        }
    }

    /// Up to `max` index records from `from`.
    pub fn read_records(&self, from: u64, max: usize) -> Result<Vec<IndexRecord>, FilesError> {
        match self {
            Log::Files(l) => l.read_records(from, max),
            Log::Memory(m) => {
                let g = m.inner.read();
                let from = usize::try_from(from)
                    .unwrap_or(usize::MAX)
                    .min(g.recs.len());
                let end = from.saturating_add(max).min(g.recs.len());
                Ok(g.recs[from..end].to_vec())
            }
        }
    }

    /// Metadata of records `first..=last` (consecutive).
    pub fn read_meta_span(
        &self,
        first: &IndexRecord,
        last: &IndexRecord,
    ) -> Result<Bytes, FilesError> {
        match self {
            Log::Files(l) => l.read_meta_span(first, last),
            Log::Memory(m) => {
                let g = m.inner.read();
                Ok(Bytes::copy_from_slice(
                    &g.meta[first.meta_offset as usize..last.meta_end() as usize],
                ))
            }
        }
    }

    /// Data of records `first..=last` (consecutive).
    pub fn read_data_span(
        &self,
        first: &IndexRecord,
        last: &IndexRecord,
    ) -> Result<Bytes, FilesError> {
        match self {
            Log::Files(l) => l.read_data_span(first, last),
            Log::Memory(m) => {
                let g = m.inner.read();
                Ok(Bytes::copy_from_slice(
                    &g.data[first.data_offset as usize..last.data_end() as usize],
                ))
            }
        }
    }

    /// Reads `len` bytes of data starting `offset` bytes into record `first`'s data (the
    /// span may run over the following records, which are contiguous) straight into `out`.
    pub fn read_data_into(
        &self,
        first: &IndexRecord,
        offset: u64,
        out: &mut [u8],
    ) -> Result<(), FilesError> {
        let len = out.len() as u64;
        match self {
            Log::Files(l) => {
                // A record covering the span: read_data checks the range and does one pread.
                let span = IndexRecord {
                    data_offset: first.data_offset,
                    data_len: offset.saturating_add(len),
                    ..IndexRecord::default()
                };
                l.read_data(&span, &[diaspora_api::Segment { offset, len }], out)
            }
            Log::Memory(m) => {
                let g = m.inner.read();
                let start = first.data_offset.saturating_add(offset) as usize;
                let src = start
                    .checked_add(out.len())
                    .and_then(|end| g.data.get(start..end))
                    .ok_or_else(|| FilesError::OutOfRange {
                        path: "memory".into(),
                        start: start as u64,
                        end: start as u64 + len,
                        file_len: g.data.len() as u64,
                    })?;
                out.copy_from_slice(src);
                Ok(())
            }
        }
    }

    /// Seals the partition (no more appends).
    pub fn seal(&self) -> Result<(), FilesError> {
        match self {
            Log::Files(l) => l.seal(),
            Log::Memory(_) => Ok(()),
        }
    }
}

/// An in-memory log.
#[derive(Default)]
pub struct MemLog {
    inner: RwLock<MemInner>,
}

#[derive(Default)]
struct MemInner {
    recs: Vec<IndexRecord>,
    meta: Vec<u8>,
    data: Vec<u8>,
}

impl MemLog {
    fn append(&self, batch: &BatchPayload) -> u64 {
        let mut g = self.inner.write();
        let first = g.recs.len() as u64;
        let mut meta_at = 0usize;
        for (i, &ml) in batch.meta_lens.iter().enumerate() {
            let meta_offset = g.meta.len() as u64;
            let m = &batch.meta[meta_at..meta_at + ml as usize];
            meta_at += ml as usize;
            g.meta.extend_from_slice(m);
            let data_offset = g.data.len() as u64;
            for s in batch.data[i].segments() {
                g.data.extend_from_slice(s);
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
}
