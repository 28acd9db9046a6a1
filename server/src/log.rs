//! The partition log behind the server: the files driver's [`PartitionLog`] (same code, same
//! bytes on disk) or an in-memory log for benchmarks.

use std::sync::Arc;

use bytes::Bytes;
use diaspora_driver_files::format::IndexRecord;
use diaspora_driver_files::partition::{BatchPayload, PartitionLog};
use diaspora_driver_files::FilesError;

pub use crate::memlog::MemLog;

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
            Log::Memory(m) => Ok(m.count()),
        }
    }

    /// Up to `max` index records from `from`.
    pub fn read_records(&self, from: u64, max: usize) -> Result<Vec<IndexRecord>, FilesError> {
        match self {
            Log::Files(l) => l.read_records(from, max),
            Log::Memory(m) => Ok(m.read_records(from, max)),
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
            Log::Memory(m) => m.meta_span(first.meta_offset, last.meta_end()),
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
            Log::Memory(m) => m.data_span(first.data_offset, last.data_end()),
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
            Log::Memory(m) => m.data_into(first.data_offset.saturating_add(offset), out),
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
