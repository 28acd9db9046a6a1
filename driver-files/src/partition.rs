//! One partition: an append-only log made of an index, a metadata and a data file.
//!
//! [`PartitionLog`] is the reusable partition-log API (the files driver and the server store
//! partitions with it). Writers append a whole batch under an exclusive `flock` on the index
//! file (so several processes can produce into the same partition), after applying the
//! crash-recovery rules of [`crate::tail`]: only a torn tail is cut, a committed record is never
//! removed, ids only grow, and new bytes always go after the end of the files. Readers need no
//! lock: they only read records the index already counts, and verify every checksum and every
//! offset (checked arithmetic, bounded by the file lengths) before serving an event.
//!
//! Sealing ([`PartitionLog::seal`]) writes a `sealed` marker under the writer lock, and every
//! append checks it under the same lock, so once `seal` returns no append (of any process) can
//! succeed. Files are opened lazily through a bounded [`FdCache`]; they are opened read-only
//! when the tree is not writable (read-only mount, permissions), for inspection.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use diaspora_api::{DataView, Segment};
use parking_lot::{Mutex, MutexGuard};

use crate::error::{FilesError, FilesResult};
use crate::fdcache::{FdCache, Slot};
use crate::format::{
    encode_header, header_problem, record_count, record_offset, IndexRecord, DATA_EXT, INDEX_EXT,
    INDEX_HEADER_SIZE, META_EXT, RECORD_SIZE, SEGMENT_BASE,
};
use crate::sys::{read_exact_at_into, write_all_vectored_at, FileLock};
use crate::tail::{plan_tail, TailPlan};

/// Largest payload (capacity of its vectors) [`BatchPayload::recycle`] keeps.
pub const MAX_RECYCLED_BYTES: usize = 8 << 20;

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

    /// Empties the payload for reuse, dropping its events' data and keeping the capacity of
    /// its vectors (growing them again for every batch cost a tenth of a metadata-only
    /// producer's pushing thread, in `realloc`). Returns false, and keeps nothing, when they
    /// hold more than [`MAX_RECYCLED_BYTES`]: the payload should then be dropped.
    pub fn recycle(&mut self) -> bool {
        self.data.clear();
        let bytes = self.meta.capacity()
            + self.meta_lens.capacity() * std::mem::size_of::<u32>()
            + self.data.capacity() * std::mem::size_of::<DataView>()
            + self.crcs.capacity() * std::mem::size_of::<(u32, u32)>();
        if bytes > MAX_RECYCLED_BYTES {
            *self = BatchPayload::default();
            return false;
        }
        self.meta.clear();
        self.meta_lens.clear();
        self.crcs.clear();
        true
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
    if data.is_empty() {
        return 0; // CRC-32 of no bytes; metadata-only events skip the hasher's set-up
    }
    let mut h = crc32fast::Hasher::new();
    for s in data.segments() {
        h.update(s);
    }
    h.finalize()
}

/// Name of the marker file of a sealed partition.
pub const SEALED_MARKER: &str = "sealed";

/// The three open files of a partition.
pub(crate) struct Files {
    pub(crate) index: File,
    pub(crate) meta: File,
    pub(crate) data: File,
    writable: bool,
}

/// An open partition.
pub struct PartitionLog {
    dir: PathBuf,
    sealed_path: PathBuf,
    slot: Arc<Slot<Files>>,
    cache: Arc<FdCache>,
    /// Serializes writers of this process (flock does not exclude threads sharing a descriptor).
    write_lock: Mutex<()>,
    sealed: AtomicBool,
    sync: bool,
    /// Calls of [`PartitionLog::sync_files`] that succeeded (tests of `flush_behavior`).
    syncs: std::sync::atomic::AtomicU64,
}

fn path_of(dir: &Path, ext: &str) -> PathBuf {
    dir.join(format!("{SEGMENT_BASE}.{ext}"))
}

pub(crate) fn is_read_only_error(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EROFS) | Some(libc::EACCES) | Some(libc::EPERM)
    )
}

impl Files {
    /// Opens the files read-write, or read-only if the tree does not allow writing.
    fn open(dir: &Path) -> FilesResult<Self> {
        match Files::open_mode(dir, true) {
            Err(FilesError::Io { source, .. }) if is_read_only_error(&source) => {
                Files::open_mode(dir, false)
            }
            other => other,
        }
    }

    fn open_mode(dir: &Path, writable: bool) -> FilesResult<Self> {
        let open = |ext: &str| {
            let path = path_of(dir, ext);
            OpenOptions::new()
                .read(true)
                .write(writable)
                .open(&path)
                .map_err(|e| FilesError::io("open", path, e))
        };
        let files = Files {
            index: open(INDEX_EXT)?,
            meta: open(META_EXT)?,
            data: open(DATA_EXT)?,
            writable,
        };
        let mut header = [0u8; INDEX_HEADER_SIZE as usize];
        let index_path = path_of(dir, INDEX_EXT);
        let n = read_up_to(&files.index, &mut header, 0)
            .map_err(|e| FilesError::io("read", &index_path, e))?;
        // A header shorter than 16 bytes can only come from a crash during creation; it is
        // rewritten by the first append. Anything else that is not our header is refused.
        if n == header.len() && header_problem(&header).is_some() {
            return Err(FilesError::BadHeader {
                path: index_path,
                what: "index",
            });
        }
        Ok(files)
    }

    fn len(&self, file: &File, dir: &Path, ext: &str) -> FilesResult<u64> {
        file.metadata()
            .map(|m| m.len())
            .map_err(|e| FilesError::io("stat", path_of(dir, ext), e))
    }
}

impl PartitionLog {
    /// Creates the files of a new, empty partition in `dir` (which must exist).
    pub fn create(dir: &Path) -> FilesResult<()> {
        let create = |ext: &str| {
            let path = path_of(dir, ext);
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map(|f| (f, path.clone()))
                .map_err(|e| FilesError::io("create", path, e))
        };
        let (index, index_path) = create(INDEX_EXT)?;
        index
            .write_all_at(&encode_header(), 0)
            .map_err(|e| FilesError::io("write", &index_path, e))?;
        create(META_EXT)?;
        create(DATA_EXT)?;
        Ok(())
    }

    /// Opens the partition in `dir` with the process-wide descriptor cache; `sync` makes every
    /// append durable (fdatasync) before it returns. The files are checked (existence, header)
    /// now, then closed and reopened on demand.
    pub fn open(dir: &Path, sync: bool) -> FilesResult<Self> {
        PartitionLog::open_with(dir, sync, FdCache::global())
    }

    /// Like [`open`](Self::open), with a given descriptor cache.
    pub fn open_with(dir: &Path, sync: bool, cache: Arc<FdCache>) -> FilesResult<Self> {
        let log = PartitionLog {
            dir: dir.to_owned(),
            sealed_path: dir.join(SEALED_MARKER),
            slot: Slot::new(),
            cache,
            write_lock: Mutex::new(()),
            sealed: AtomicBool::new(false),
            sync,
            syncs: std::sync::atomic::AtomicU64::new(0),
        };
        log.files()?;
        Ok(log)
    }

    /// Directory of the partition.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn files(&self) -> FilesResult<Arc<Files>> {
        self.cache.get(&self.slot, || Files::open(&self.dir))
    }

    fn index_path(&self) -> PathBuf {
        path_of(&self.dir, INDEX_EXT)
    }

    /// Path of the data file.
    pub fn data_path(&self) -> PathBuf {
        path_of(&self.dir, DATA_EXT)
    }

    /// Whether the files are writable (false on a read-only tree).
    pub fn is_writable(&self) -> FilesResult<bool> {
        Ok(self.files()?.writable)
    }

    /// Number of records the index holds (some may still fail their checks, and a torn tail
    /// may still be counted until the next writer cuts it).
    pub fn count(&self) -> FilesResult<u64> {
        let f = self.files()?;
        Ok(record_count(f.len(&f.index, &self.dir, INDEX_EXT)?))
    }

    /// Takes the writer locks (this process's and the cross-process `flock`).
    fn lock_writer<'a>(
        &'a self,
        f: &'a Files,
        op: &'static str,
    ) -> FilesResult<(MutexGuard<'a, ()>, FileLock<'a>)> {
        if !f.writable {
            return Err(FilesError::ReadOnly {
                path: self.dir.clone(),
                op,
            });
        }
        let guard = self.write_lock.lock();
        let flock = FileLock::lock(&f.index, true)
            .map_err(|e| FilesError::io("lock", self.index_path(), e))?;
        Ok((guard, flock))
    }

    /// Whether the partition is sealed (checked on disk until seen sealed once).
    pub fn is_sealed(&self) -> bool {
        if self.sealed.load(Ordering::Acquire) {
            return true;
        }
        let sealed = self.sealed_path.exists();
        if sealed {
            self.sealed.store(true, Ordering::Release);
        }
        sealed
    }

    /// Seals the partition: once this returns, no append of any process can succeed (appends
    /// check the marker under the writer lock this takes). Idempotent.
    pub fn seal(&self) -> FilesResult<()> {
        let f = self.files()?;
        let _locks = self.lock_writer(&f, "seal")?;
        if !self.sealed_path.exists() {
            let marker = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&self.sealed_path)
                .map_err(|e| FilesError::io("create", &self.sealed_path, e))?;
            marker
                .sync_all()
                .map_err(|e| FilesError::io("sync", &self.sealed_path, e))?;
            sync_dir(&self.dir)?;
        }
        self.sealed.store(true, Ordering::Release);
        Ok(())
    }

    /// Appends a batch; returns the id of its first event. Fails with [`FilesError::Sealed`]
    /// once the partition is sealed. On any error nothing of the batch is committed.
    pub fn append(&self, batch: &BatchPayload) -> FilesResult<u64> {
        let f = self.files()?;
        let _locks = self.lock_writer(&f, "append")?;
        if self.is_sealed() {
            return Err(FilesError::Sealed {
                path: self.dir.clone(),
            });
        }
        let tail = self.recover_tail_locked(&f)?;
        if batch.is_empty() {
            return Ok(tail.count);
        }
        // 1. metadata and data, after the end of the files (never over an earlier byte),
        // 2. index records: the commit point. Metadata and data go in system calls of at most
        // `sys::WRITE_CALL_MAX` bytes (see there why).
        write_all_vectored_at(&f.meta, &[&batch.meta], tail.meta_next)
            .map_err(|e| FilesError::io("write", path_of(&self.dir, META_EXT), e))?;
        let mut segs: Vec<&[u8]> = Vec::new();
        for d in &batch.data {
            segs.extend(d.segments().iter().map(|s| s.as_ref()));
        }
        write_all_vectored_at(&f.data, &segs, tail.data_next)
            .map_err(|e| FilesError::io("write", path_of(&self.dir, DATA_EXT), e))?;
        if self.sync {
            f.meta
                .sync_data()
                .map_err(|e| FilesError::io("sync", path_of(&self.dir, META_EXT), e))?;
            f.data
                .sync_data()
                .map_err(|e| FilesError::io("sync", path_of(&self.dir, DATA_EXT), e))?;
        }
        let mut records = Vec::with_capacity(batch.len() * RECORD_SIZE);
        let (mut meta_off, mut data_off) = (tail.meta_next, tail.data_next);
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
        let committed = f
            .index
            .write_all_at(&records, tail.index_len)
            .and_then(|()| {
                if self.sync {
                    f.index.sync_data()
                } else {
                    Ok(())
                }
            });
        if let Err(e) = committed {
            // A partly written index must not commit part of a batch reported as failed.
            let _ = f.index.set_len(tail.index_len);
            return Err(FilesError::io("write", self.index_path(), e));
        }
        Ok(tail.count)
    }

    /// Makes everything appended so far durable (fdatasync of the data, metadata and index
    /// files, in that order): the `on_flush` flush behaviour. (fdatasync acts on the file, so
    /// a descriptor reopened by the cache syncs what an evicted one wrote.)
    pub fn sync_files(&self) -> FilesResult<()> {
        let f = self.files()?;
        f.data
            .sync_data()
            .map_err(|e| FilesError::io("sync", path_of(&self.dir, DATA_EXT), e))?;
        f.meta
            .sync_data()
            .map_err(|e| FilesError::io("sync", path_of(&self.dir, META_EXT), e))?;
        f.index
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
        let f = self.files()?;
        let mut b = 0usize;
        let mut at = 0usize; // position in buffers[b]
        for s in segments {
            let (mut off, mut left) = self.segment_range(rec, s)?;
            while left > 0 {
                while b < buffers.len() && at == buffers[b].len() {
                    b += 1;
                    at = 0;
                }
                let Some(buf) = buffers.get_mut(b) else {
                    return Err(FilesError::OutOfRange {
                        path: path_of(&self.dir, DATA_EXT),
                        start: off,
                        end: off.saturating_add(left as u64),
                        file_len: rec.data_len,
                    });
                };
                let n = left.min(buf.len() - at);
                f.data
                    .read_exact_at(&mut buf[at..at + n], off)
                    .map_err(|e| FilesError::io("read", path_of(&self.dir, DATA_EXT), e))?;
                at += n;
                off += n as u64;
                left -= n;
            }
        }
        Ok(())
    }

    /// Applies the crash-recovery rules ([`crate::tail`]): cuts a torn tail of the index and
    /// says where the next append goes. Takes the writer lock; on a read-only tree it only
    /// inspects (see [`inspect_tail`](Self::inspect_tail)).
    pub fn recover_tail(&self) -> FilesResult<TailPlan> {
        let f = self.files()?;
        if !f.writable {
            return self.plan(&f);
        }
        let _locks = self.lock_writer(&f, "recover")?;
        self.recover_tail_locked(&f)
    }

    /// What recovery would do, without changing anything. Takes a shared lock, so it never
    /// sees an append in progress as a torn tail.
    pub fn inspect_tail(&self) -> FilesResult<TailPlan> {
        let f = self.files()?;
        let _guard = self.write_lock.lock();
        let _flock = FileLock::lock(&f.index, f.writable)
            .map_err(|e| FilesError::io("lock", self.index_path(), e))?;
        self.plan(&f)
    }

    fn plan(&self, f: &Files) -> FilesResult<TailPlan> {
        let index_len = f.len(&f.index, &self.dir, INDEX_EXT)?;
        let meta_len = f.len(&f.meta, &self.dir, META_EXT)?;
        let data_len = f.len(&f.data, &self.dir, DATA_EXT)?;
        plan_tail(index_len, meta_len, data_len, |first, buf| {
            f.index.read_exact_at(buf, record_offset(first))
        })
        .map_err(|e| FilesError::io("read", self.index_path(), e))
    }

    /// Plans and applies the cut. Caller holds the writer lock.
    fn recover_tail_locked(&self, f: &Files) -> FilesResult<TailPlan> {
        let plan = self.plan(f)?;
        if plan.rewrite_header {
            f.index
                .write_all_at(&encode_header(), 0)
                .map_err(|e| FilesError::io("write", self.index_path(), e))?;
        }
        if plan.needs_cut() {
            f.index
                .set_len(plan.index_len)
                .map_err(|e| FilesError::io("truncate", self.index_path(), e))?;
        }
        Ok(plan)
    }

    /// Reads and checks up to `max` records starting at `from`, stopping before the first one
    /// not yet (completely) written. A record that fails its checks in the middle of the log,
    /// or a tombstone, is reported as corruption ([`FilesError::CorruptRecord`] with its id).
    pub fn read_records(&self, from: u64, max: usize) -> FilesResult<Vec<IndexRecord>> {
        let mut out = Vec::new();
        self.read_records_into(from, max, &mut out, &mut Vec::new())?;
        Ok(out)
    }

    /// As [`read_records`](Self::read_records), into `out` (cleared first), with `raw` as the
    /// buffer of the index bytes: a reader that keeps both saves two allocations per read.
    pub fn read_records_into(
        &self,
        from: u64,
        max: usize,
        out: &mut Vec<IndexRecord>,
        raw: &mut Vec<u8>,
    ) -> FilesResult<()> {
        out.clear();
        let count = self.count()?;
        if from >= count || max == 0 {
            return Ok(());
        }
        let n = (count - from).min(max as u64) as usize;
        raw.resize(n * RECORD_SIZE, 0);
        let buf = &mut raw[..n * RECORD_SIZE];
        let f = self.files()?;
        let got = read_up_to(&f.index, buf, record_offset(from))
            .map_err(|e| FilesError::io("read", self.index_path(), e))?;
        out.reserve(n);
        // Only the first record's failure is an error (its id is `from`); a later one ends the
        // read, and the next read starts with it.
        for chunk in buf[..got - got % RECORD_SIZE].chunks_exact(RECORD_SIZE) {
            match IndexRecord::decode(chunk) {
                Ok(r) if r.is_tombstone() && out.is_empty() => {
                    return Err(FilesError::CorruptRecord {
                        path: self.index_path(),
                        index: from,
                        reason: "event was damaged and removed by topic repair".into(),
                    });
                }
                Ok(r) if r.is_tombstone() => break,
                Ok(r) => out.push(r),
                Err(_) if out.is_empty() => {
                    *out = self.recheck_bad_record(from, max)?;
                    return Ok(());
                }
                Err(_) => break,
            }
        }
        Ok(())
    }

    /// A record failed at the head of a read: let recovery cut it if it is a torn tail (or an
    /// append still in progress), else report corruption.
    fn recheck_bad_record(&self, id: u64, max: usize) -> FilesResult<Vec<IndexRecord>> {
        let tail = self.recover_tail()?;
        if id >= tail.count {
            return Ok(Vec::new());
        }
        let mut buf = [0u8; RECORD_SIZE];
        self.files()?
            .index
            .read_exact_at(&mut buf, record_offset(id))
            .map_err(|e| FilesError::io("read", self.index_path(), e))?;
        match IndexRecord::decode(&buf) {
            Ok(_) => self.read_records(id, max),
            Err(e) => Err(FilesError::CorruptRecord {
                path: self.index_path(),
                index: id,
                reason: e.to_string(),
            }),
        }
    }

    /// Overwrites record `id` (which must exist) with `rec`, durably. For repair only: the
    /// caller holds no lock; this takes the writer lock.
    pub(crate) fn rewrite_record(&self, id: u64, rec: &IndexRecord) -> FilesResult<()> {
        let f = self.files()?;
        let _locks = self.lock_writer(&f, "repair")?;
        let plan = self.recover_tail_locked(&f)?;
        if id >= plan.count {
            return Err(FilesError::CorruptRecord {
                path: self.index_path(),
                index: id,
                reason: "record to repair no longer exists".into(),
            });
        }
        let mut b = [0u8; RECORD_SIZE];
        rec.encode(&mut b);
        f.index
            .write_all_at(&b, record_offset(id))
            .and_then(|()| f.index.sync_data())
            .map_err(|e| FilesError::io("write", self.index_path(), e))
    }

    /// Reads the metadata of consecutive records in one read.
    pub fn read_meta_span(&self, first: &IndexRecord, last: &IndexRecord) -> FilesResult<Bytes> {
        let f = self.files()?;
        read_span(
            &f.meta,
            &path_of(&self.dir, META_EXT),
            first.meta_offset,
            last.checked_meta_end(),
        )
    }

    /// Reads the data of consecutive records in one read.
    pub fn read_data_span(&self, first: &IndexRecord, last: &IndexRecord) -> FilesResult<Bytes> {
        let f = self.files()?;
        read_span(
            &f.data,
            &path_of(&self.dir, DATA_EXT),
            first.data_offset,
            last.checked_data_end(),
        )
    }

    /// The data of consecutive records, mapped instead of copied (see [`crate::mapped`]), after
    /// checking that the span lies within the data file; read like
    /// [`read_data_span`](Self::read_data_span) where the file cannot be mapped.
    pub fn map_data_span(&self, first: &IndexRecord, last: &IndexRecord) -> FilesResult<Bytes> {
        let f = self.files()?;
        let path = path_of(&self.dir, DATA_EXT);
        let file_len = f.len(&f.data, &self.dir, DATA_EXT)?;
        let start = first.data_offset;
        let end = last.checked_data_end();
        let len = match end {
            Some(end) if start < end && end <= file_len => usize::try_from(end - start).ok(),
            _ => None,
        };
        let Some(len) = len else {
            if end == Some(start) {
                return Ok(Bytes::new());
            }
            return Err(FilesError::OutOfRange {
                path,
                start,
                end: end.unwrap_or(u64::MAX),
                file_len,
            });
        };
        match crate::mapped::map_range(&f.data, start, len) {
            Ok(b) => Ok(b),
            // A file system without mmap: the same bytes, copied.
            Err(_) => read_span(&f.data, &path, start, end),
        }
    }

    /// Reads the data of consecutive records into `out`, which must be exactly as long as
    /// their data, after checking that the span lies within the data file.
    pub fn read_data_span_into(
        &self,
        first: &IndexRecord,
        last: &IndexRecord,
        out: &mut [u8],
    ) -> FilesResult<()> {
        let f = self.files()?;
        let path = path_of(&self.dir, DATA_EXT);
        let file_len = f.len(&f.data, &self.dir, DATA_EXT)?;
        let start = first.data_offset;
        let end = last.checked_data_end();
        match end {
            Some(end) if start <= end && end <= file_len && end - start == out.len() as u64 => {}
            _ => {
                return Err(FilesError::OutOfRange {
                    path,
                    start,
                    end: end.unwrap_or(u64::MAX),
                    file_len,
                })
            }
        }
        f.data
            .read_exact_at(out, start)
            .map_err(|e| FilesError::io("read", path, e))
    }

    /// File offsets `start..end` of a segment of a record's data, checked.
    fn segment_range(&self, rec: &IndexRecord, s: &Segment) -> FilesResult<(u64, usize)> {
        let bad = || FilesError::OutOfRange {
            path: path_of(&self.dir, DATA_EXT),
            start: rec.data_offset.saturating_add(s.offset),
            end: rec
                .data_offset
                .saturating_add(s.offset)
                .saturating_add(s.len),
            file_len: rec.data_len,
        };
        let inside = s
            .offset
            .checked_add(s.len)
            .is_some_and(|e| e <= rec.data_len);
        let start = rec.data_offset.checked_add(s.offset).filter(|_| inside);
        match (start, usize::try_from(s.len)) {
            (Some(start), Ok(len)) if rec.checked_data_end().is_some() => Ok((start, len)),
            _ => Err(bad()),
        }
    }

    /// Reads the selected `segments` of a record's data into `out` (exactly their total size).
    pub fn read_data(
        &self,
        rec: &IndexRecord,
        segments: &[Segment],
        out: &mut [u8],
    ) -> FilesResult<()> {
        let f = self.files()?;
        let out_len = out.len() as u64;
        let mut pos = 0usize;
        for s in segments {
            let (start, len) = self.segment_range(rec, s)?;
            let dst = pos
                .checked_add(len)
                .and_then(|end| out.get_mut(pos..end))
                .ok_or_else(|| FilesError::OutOfRange {
                    path: path_of(&self.dir, DATA_EXT),
                    start: pos as u64,
                    end: pos.saturating_add(len) as u64,
                    file_len: out_len,
                })?;
            f.data
                .read_exact_at(dst, start)
                .map_err(|e| FilesError::io("read", path_of(&self.dir, DATA_EXT), e))?;
            pos += len;
        }
        Ok(())
    }

    /// Reads the selected `segments` of a record's data into a new buffer (not zero-filled).
    /// `data_len` is the data file's length as the caller last saw it (files only grow while
    /// open; a record beyond it is refused before anything is allocated): a reader that checks
    /// a run of records against one `sizes()` saves a `stat` per event.
    pub fn read_data_new(
        &self,
        rec: &IndexRecord,
        segments: &[Segment],
        data_len: u64,
    ) -> FilesResult<BytesMut> {
        let f = self.files()?;
        if rec.checked_data_end().is_none_or(|e| e > data_len) {
            return Err(FilesError::OutOfRange {
                path: path_of(&self.dir, DATA_EXT),
                start: rec.data_offset,
                end: rec.data_end(),
                file_len: data_len,
            });
        }
        let ranges = segments
            .iter()
            .map(|s| self.segment_range(rec, s))
            .collect::<FilesResult<Vec<_>>>()?;
        // Bounded by the record's data, itself within the file.
        let total: usize = ranges.iter().map(|(_, len)| *len).sum();
        let mut buf = BytesMut::with_capacity(total);
        for (start, len) in ranges {
            read_exact_at_into(&f.data, &mut buf, len, start)
                .map_err(|e| FilesError::io("read", path_of(&self.dir, DATA_EXT), e))?;
        }
        Ok(buf)
    }

    /// Sizes of the three files (index, metadata, data), for descriptions.
    pub fn sizes(&self) -> FilesResult<(u64, u64, u64)> {
        let f = self.files()?;
        Ok((
            f.len(&f.index, &self.dir, INDEX_EXT)?,
            f.len(&f.meta, &self.dir, META_EXT)?,
            f.len(&f.data, &self.dir, DATA_EXT)?,
        ))
    }
}

/// Makes a directory entry change (a created file) durable.
fn sync_dir(dir: &Path) -> FilesResult<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| FilesError::io("sync", dir, e))
}

/// Reads bytes `start..end` of a file into a new buffer, after checking the range lies within
/// the file (so no allocation is sized by a damaged record). `end` is `None` when impossible.
fn read_span(file: &File, path: &Path, start: u64, end: Option<u64>) -> FilesResult<Bytes> {
    let file_len = file
        .metadata()
        .map(|m| m.len())
        .map_err(|e| FilesError::io("stat", path, e))?;
    let len = match end {
        Some(end) if start <= end && end <= file_len => usize::try_from(end - start).ok(),
        _ => None,
    };
    let Some(len) = len else {
        return Err(FilesError::OutOfRange {
            path: path.to_owned(),
            start,
            end: end.unwrap_or(u64::MAX),
            file_len,
        });
    };
    // Not zero-filled first: the span is read straight into fresh capacity.
    let mut buf = BytesMut::with_capacity(len);
    read_exact_at_into(file, &mut buf, len, start).map_err(|e| FilesError::io("read", path, e))?;
    Ok(buf.freeze())
}

/// Reads as much of `buf` as the file holds at `offset`.
pub(crate) fn read_up_to(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
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
