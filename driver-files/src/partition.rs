//! One partition: an append-only log made of an index, a metadata and a data file.
//!
//! Writers append a whole batch under an exclusive `flock` on the index file (so several
//! processes can produce into the same partition) after checking and cutting any torn tail left
//! by a writer killed mid-batch. Readers need no lock: they only read records the index already
//! counts, and verify every checksum before serving an event.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use diaspora_api::{DataView, Segment};
use parking_lot::Mutex;

use crate::error::{FilesError, FilesResult};
use crate::format::{
    encode_header, header_is_valid, record_count, record_offset, IndexRecord, DATA_EXT, INDEX_EXT,
    INDEX_HEADER_SIZE, META_EXT, RECORD_SIZE, SEGMENT_BASE,
};
use crate::sys::{read_exact_at_into, write_all_vectored_at, FileLock};

/// Events of one batch, ready to be appended.
#[derive(Default)]
pub struct BatchPayload {
    /// Serialized metadata of all events, back to back.
    pub meta: Vec<u8>,
    /// Length of each event's metadata in `meta`.
    pub meta_lens: Vec<u32>,
    /// Data of each event.
    pub data: Vec<DataView>,
    /// CRC-32 of each event's metadata and data, computed by the pushing thread so checksums
    /// are computed in parallel with the storing of the previous batch.
    pub crcs: Vec<(u32, u32)>,
}

impl BatchPayload {
    /// Number of events.
    pub fn len(&self) -> usize {
        self.meta_lens.len()
    }

    /// Whether the batch has no event.
    pub fn is_empty(&self) -> bool {
        self.meta_lens.is_empty()
    }

    /// Appends one event whose serialized metadata is the last `meta_len` bytes of `meta` and
    /// whose data has CRC-32 `data_crc` (see [`data_crc`]).
    pub fn push_event(&mut self, meta_len: u32, data: DataView, data_crc: u32) {
        let start = self.meta.len() - meta_len as usize;
        let meta_crc = crc32fast::hash(&self.meta[start..]);
        self.meta_lens.push(meta_len);
        self.crcs.push((meta_crc, data_crc));
        self.data.push(data);
    }
}

/// CRC-32 of an event's data, as stored in its index record.
pub fn data_crc(data: &DataView) -> u32 {
    let mut h = crc32fast::Hasher::new();
    for s in data.segments() {
        h.update(s);
    }
    h.finalize()
}

/// Where the next append goes, as derived from the last valid index record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tail {
    /// Number of valid records.
    pub count: u64,
    /// End of the last event's metadata.
    pub meta_end: u64,
    /// End of the last event's data.
    pub data_end: u64,
}

/// An open partition.
pub struct PartitionLog {
    dir: PathBuf,
    index: File,
    meta: File,
    data: File,
    /// Serializes writers of this process (flock does not exclude threads sharing a descriptor).
    write_lock: Mutex<()>,
    sync: bool,
    /// Calls of [`PartitionLog::sync_files`] that succeeded (tests of `flush_behavior`).
    syncs: std::sync::atomic::AtomicU64,
}

fn path_of(dir: &Path, ext: &str) -> PathBuf {
    dir.join(format!("{SEGMENT_BASE}.{ext}"))
}

fn open_file(path: &Path, create: bool) -> FilesResult<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .open(path)
        .map_err(|e| FilesError::io("open", path, e))
}

impl PartitionLog {
    /// Creates the files of a new, empty partition in `dir` (which must exist).
    pub fn create(dir: &Path) -> FilesResult<()> {
        let index_path = path_of(dir, INDEX_EXT);
        let index = open_file(&index_path, true)?;
        index
            .write_all_at(&encode_header(), 0)
            .map_err(|e| FilesError::io("write", &index_path, e))?;
        open_file(&path_of(dir, META_EXT), true)?;
        open_file(&path_of(dir, DATA_EXT), true)?;
        Ok(())
    }

    /// Opens the partition in `dir`; `sync` makes every append durable (fdatasync) before
    /// its futures complete.
    pub fn open(dir: &Path, sync: bool) -> FilesResult<Self> {
        let index_path = path_of(dir, INDEX_EXT);
        let index = open_file(&index_path, false)?;
        let mut header = [0u8; INDEX_HEADER_SIZE as usize];
        let n = read_up_to(&index, &mut header, 0)
            .map_err(|e| FilesError::io("read", &index_path, e))?;
        // A header shorter than 16 bytes can only come from a crash during creation; it is
        // rewritten by the first append. Anything else that is not our header is refused.
        if n == header.len() && !header_is_valid(&header) {
            return Err(FilesError::BadHeader {
                path: index_path,
                what: "index",
            });
        }
        Ok(PartitionLog {
            index,
            meta: open_file(&path_of(dir, META_EXT), false)?,
            data: open_file(&path_of(dir, DATA_EXT), false)?,
            dir: dir.to_owned(),
            write_lock: Mutex::new(()),
            sync,
            syncs: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Directory of the partition.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn index_path(&self) -> PathBuf {
        path_of(&self.dir, INDEX_EXT)
    }

    fn file_len(&self, file: &File, ext: &str) -> FilesResult<u64> {
        file.metadata()
            .map(|m| m.len())
            .map_err(|e| FilesError::io("stat", path_of(&self.dir, ext), e))
    }

    /// Number of records the index holds (some may still fail their checks).
    pub fn count(&self) -> FilesResult<u64> {
        Ok(record_count(self.file_len(&self.index, INDEX_EXT)?))
    }

    /// Appends a batch; returns the id of its first event.
    pub fn append(&self, batch: &BatchPayload) -> FilesResult<u64> {
        let _guard = self.write_lock.lock();
        let _flock = FileLock::lock(&self.index, true)
            .map_err(|e| FilesError::io("lock", self.index_path(), e))?;
        let tail = self.recover_tail_locked()?;
        if batch.is_empty() {
            return Ok(tail.count);
        }
        // 1. metadata and data, at the offsets the last valid record says (overwriting any
        //    torn tail), 2. index records: the commit point.
        self.meta
            .write_all_at(&batch.meta, tail.meta_end)
            .map_err(|e| FilesError::io("write", path_of(&self.dir, META_EXT), e))?;
        let mut segs: Vec<&[u8]> = Vec::new();
        for d in &batch.data {
            segs.extend(d.segments().iter().map(|s| s.as_ref()));
        }
        write_all_vectored_at(&self.data, &segs, tail.data_end)
            .map_err(|e| FilesError::io("write", path_of(&self.dir, DATA_EXT), e))?;
        if self.sync {
            self.meta
                .sync_data()
                .map_err(|e| FilesError::io("sync", path_of(&self.dir, META_EXT), e))?;
            self.data
                .sync_data()
                .map_err(|e| FilesError::io("sync", path_of(&self.dir, DATA_EXT), e))?;
        }
        let mut records = Vec::with_capacity(batch.len() * RECORD_SIZE);
        let (mut meta_off, mut data_off) = (tail.meta_end, tail.data_end);
        for ((len, data), (meta_crc, data_crc)) in
            batch.meta_lens.iter().zip(&batch.data).zip(&batch.crcs)
        {
            let rec = IndexRecord {
                meta_offset: meta_off,
                data_offset: data_off,
                data_len: data.len(),
                meta_len: *len,
                meta_crc: *meta_crc,
                data_crc: *data_crc,
            };
            meta_off = rec.meta_end();
            data_off = rec.data_end();
            rec.encode_into(&mut records);
        }
        self.index
            .write_all_at(&records, record_offset(tail.count))
            .map_err(|e| FilesError::io("write", self.index_path(), e))?;
        if self.sync {
            self.index
                .sync_data()
                .map_err(|e| FilesError::io("sync", self.index_path(), e))?;
        }
        Ok(tail.count)
    }

    /// Makes everything appended so far durable (fdatasync of the data, metadata and index
    /// files, in that order): the `on_flush` flush behaviour.
    pub fn sync_files(&self) -> FilesResult<()> {
        self.data
            .sync_data()
            .map_err(|e| FilesError::io("sync", path_of(&self.dir, DATA_EXT), e))?;
        self.meta
            .sync_data()
            .map_err(|e| FilesError::io("sync", path_of(&self.dir, META_EXT), e))?;
        self.index
            .sync_data()
            .map_err(|e| FilesError::io("sync", self.index_path(), e))?;
        self.syncs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Whether every append is synced before it completes.
    pub fn syncs_every_append(&self) -> bool {
        self.sync
    }

    /// How many times [`PartitionLog::sync_files`] succeeded on this handle.
    pub fn sync_count(&self) -> u64 {
        self.syncs.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Reads the selected `segments` of a record's data into `buffers`, in order (their
    /// lengths add up to the segments'): one positioned read per piece, straight into each
    /// buffer.
    pub fn read_data_into(
        &self,
        rec: &IndexRecord,
        segments: &[Segment],
        buffers: &mut [&mut [u8]],
    ) -> FilesResult<()> {
        let mut b = 0usize;
        let mut at = 0usize; // position in buffers[b]
        for s in segments {
            let mut off = rec.data_offset + s.offset;
            let mut left = s.len as usize;
            while left > 0 {
                while b < buffers.len() && at == buffers[b].len() {
                    b += 1;
                    at = 0;
                }
                let Some(buf) = buffers.get_mut(b) else {
                    return Err(FilesError::CorruptRecord {
                        path: path_of(&self.dir, DATA_EXT),
                        index: 0,
                        reason: "buffers shorter than the selection".into(),
                    });
                };
                let n = left.min(buf.len() - at);
                self.data
                    .read_exact_at(&mut buf[at..at + n], off)
                    .map_err(|e| FilesError::io("read", path_of(&self.dir, DATA_EXT), e))?;
                at += n;
                off += n as u64;
                left -= n;
            }
        }
        Ok(())
    }

    /// Checks the end of the log and cuts a torn tail. Takes the exclusive lock.
    pub fn recover_tail(&self) -> FilesResult<Tail> {
        let _guard = self.write_lock.lock();
        let _flock = FileLock::lock(&self.index, true)
            .map_err(|e| FilesError::io("lock", self.index_path(), e))?;
        self.recover_tail_locked()
    }

    /// Finds the last valid record; truncates the index after it. Caller holds the lock.
    fn recover_tail_locked(&self) -> FilesResult<Tail> {
        let len = self.file_len(&self.index, INDEX_EXT)?;
        if len < INDEX_HEADER_SIZE {
            // Crash during creation: no record can exist yet.
            self.index
                .write_all_at(&encode_header(), 0)
                .map_err(|e| FilesError::io("write", self.index_path(), e))?;
            return Ok(Tail {
                count: 0,
                meta_end: 0,
                data_end: 0,
            });
        }
        let meta_len = self.file_len(&self.meta, META_EXT)?;
        let data_len = self.file_len(&self.data, DATA_EXT)?;
        let mut count = record_count(len);
        let mut buf = [0u8; RECORD_SIZE];
        let tail = loop {
            if count == 0 {
                break Tail {
                    count: 0,
                    meta_end: 0,
                    data_end: 0,
                };
            }
            self.index
                .read_exact_at(&mut buf, record_offset(count - 1))
                .map_err(|e| FilesError::io("read", self.index_path(), e))?;
            match IndexRecord::decode(&buf) {
                Ok(r) if r.meta_end() <= meta_len && r.data_end() <= data_len => {
                    break Tail {
                        count,
                        meta_end: r.meta_end(),
                        data_end: r.data_end(),
                    }
                }
                _ => count -= 1,
            }
        };
        if record_offset(tail.count) != len {
            self.index
                .set_len(record_offset(tail.count))
                .map_err(|e| FilesError::io("truncate", self.index_path(), e))?;
        }
        Ok(tail)
    }

    /// Reads and checks up to `max` records starting at `from`, stopping before the first one
    /// not yet (completely) written. A record that fails its checks in the middle of the log is
    /// reported as corruption.
    pub fn read_records(&self, from: u64, max: usize) -> FilesResult<Vec<IndexRecord>> {
        let count = self.count()?;
        if from >= count || max == 0 {
            return Ok(Vec::new());
        }
        let n = (count - from).min(max as u64) as usize;
        let mut buf = vec![0u8; n * RECORD_SIZE];
        let got = read_up_to(&self.index, &mut buf, record_offset(from))
            .map_err(|e| FilesError::io("read", self.index_path(), e))?;
        let mut out = Vec::with_capacity(n);
        for (i, chunk) in buf[..got - got % RECORD_SIZE]
            .chunks_exact(RECORD_SIZE)
            .enumerate()
        {
            match IndexRecord::decode(chunk) {
                Ok(r) => out.push(r),
                Err(_) if out.is_empty() => {
                    return self.recheck_bad_record(from + i as u64, max);
                }
                Err(_) => break,
            }
        }
        Ok(out)
    }

    /// A record failed at the head of a read: let recovery cut it if it is a torn tail, else
    /// report corruption.
    fn recheck_bad_record(&self, id: u64, max: usize) -> FilesResult<Vec<IndexRecord>> {
        let tail = self.recover_tail()?;
        if id >= tail.count {
            return Ok(Vec::new());
        }
        let mut buf = [0u8; RECORD_SIZE];
        self.index
            .read_exact_at(&mut buf, record_offset(id))
            .map_err(|e| FilesError::io("read", self.index_path(), e))?;
        match IndexRecord::decode(&buf) {
            Ok(_) => self.read_records(id, max),
            Err(e) => Err(FilesError::CorruptRecord {
                path: self.index_path(),
                index: id,
                reason: format!("{e:?}"),
            }),
        }
    }

    /// Reads the metadata of consecutive records in one read.
    pub fn read_meta_span(&self, first: &IndexRecord, last: &IndexRecord) -> FilesResult<Bytes> {
        read_span(
            &self.meta,
            &path_of(&self.dir, META_EXT),
            first.meta_offset,
            last.meta_end(),
        )
    }

    /// Reads the data of consecutive records in one read.
    pub fn read_data_span(&self, first: &IndexRecord, last: &IndexRecord) -> FilesResult<Bytes> {
        read_span(
            &self.data,
            &path_of(&self.dir, DATA_EXT),
            first.data_offset,
            last.data_end(),
        )
    }

    /// Reads the selected `segments` of a record's data into `out` (exactly their total size).
    pub fn read_data(
        &self,
        rec: &IndexRecord,
        segments: &[Segment],
        out: &mut [u8],
    ) -> FilesResult<()> {
        let mut pos = 0usize;
        for s in segments {
            let len = s.len as usize;
            self.data
                .read_exact_at(&mut out[pos..pos + len], rec.data_offset + s.offset)
                .map_err(|e| FilesError::io("read", path_of(&self.dir, DATA_EXT), e))?;
            pos += len;
        }
        Ok(())
    }

    /// Reads the selected `segments` of a record's data into a new buffer (not zero-filled).
    pub fn read_data_new(&self, rec: &IndexRecord, segments: &[Segment]) -> FilesResult<BytesMut> {
        let total: u64 = segments.iter().map(|s| s.len).sum();
        let mut buf = BytesMut::with_capacity(total as usize);
        for s in segments {
            read_exact_at_into(
                &self.data,
                &mut buf,
                s.len as usize,
                rec.data_offset + s.offset,
            )
            .map_err(|e| FilesError::io("read", path_of(&self.dir, DATA_EXT), e))?;
        }
        Ok(buf)
    }

    /// The index, metadata and data files, for read-only inspection.
    pub(crate) fn files(&self) -> (&File, &File, &File) {
        (&self.index, &self.meta, &self.data)
    }

    /// Sizes of the three files, for descriptions.
    pub fn sizes(&self) -> FilesResult<(u64, u64, u64)> {
        Ok((
            self.file_len(&self.index, INDEX_EXT)?,
            self.file_len(&self.meta, META_EXT)?,
            self.file_len(&self.data, DATA_EXT)?,
        ))
    }
}

/// Reads bytes `start..end` of a file into a new buffer.
fn read_span(file: &File, path: &Path, start: u64, end: u64) -> FilesResult<Bytes> {
    let len =
        usize::try_from(end.saturating_sub(start)).map_err(|_| FilesError::CorruptRecord {
            path: path.to_owned(),
            index: 0,
            reason: "span too large".into(),
        })?;
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, start)
        .map_err(|e| FilesError::io("read", path, e))?;
    Ok(Bytes::from(buf))
}

/// Reads as much of `buf` as the file holds at `offset`.
fn read_up_to(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}
