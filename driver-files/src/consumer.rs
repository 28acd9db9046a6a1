//! The files driver's consumer: reads events in batches, round robin over partitions.
//!
//! A refill reads a run of index records of one partition with one read, the metadata they
//! point to with one more, then, per event, asks the data selector which part of the data to
//! fetch. A dense selection with the default allocator is one mapping of the run's data
//! ([`crate::mapped`], the driver's default `consumer_read = "map"`) or one read of it into a
//! recycled, page-aligned buffer ([`BufPool`], `"read"`), handed out as zero-copy slices; otherwise each
//! event's selection is read into the buffer its allocator provides (positioned reads, no
//! intermediate copy). With no selector the data file is never read. Refills are small (at
//! most [`MAX_REFILL_DATA`] of data), so the buffers they read into stay in the CPU's cache
//! between refills, and an event's data checksum is checked by the pull that delivers it. With
//! a thread pool, the next refill is prefetched while the application processes the current
//! one.
//!
//! Measured on 30,000 events of 64 KiB (2 cores, page cache), each step on its own: one refill
//! of 64 MiB into fresh 64 KiB buffers ran at 5.2 GiB/s (the kernel's copy into cold memory was
//! 54% of the time); 1 MiB refills, 8.7-9.6; one read per refill into recycled buffers that
//! start 16 bytes into a page, 4.2-6.2 (the copy runs at half speed); page-aligned, 10.0-10.5.
//! With 4 MiB refills, reading the 4096 index records an adaptive batch allows to take 64 of
//! them ran at 6.2-7.5 GiB/s, reading 64 at 9.3: the next read's size follows what the last
//! refill took. Mapping the run instead of reading it (the checksum then reads the page cache
//! and nothing is copied) took the same case from 58-64% to 80-85% of the read ceiling (three
//! alternated runs of each, `diaspora-bench both --events 30000 --data-size 65536`).
//!
//! Memory is bounded in bytes: a refill stops adding events once it holds [`MAX_REFILL_META`]
//! of metadata or [`MAX_REFILL_DATA`] of selected data (a larger single event still goes, alone),
//! a prefetch starts only while less than half of [`MAX_BUFFERED_BYTES`] are buffered, and no
//! refill adds anything once that much is.
//!
//! An event that cannot be delivered (damaged on disk, or a data selector, allocator or
//! deserializer that fails or panics on it) fails its own pull with [`Error::EventFailed`],
//! naming its partition and id; the consumer has already moved past it, so the next pull
//! returns the following event, and [`ConsumerBackend::acknowledge`] can acknowledge it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use diaspora_api::{
    Acknowledger, BatchSize, BufferAllocator, ConsumerBackend, ConsumerOptions, DataAllocator,
    DataBuffer, DataDescriptor, DataSelector, DataView, Error, Event, EventId, Future, Result,
    Segment, ThreadPool, Waitable,
};
use parking_lot::Mutex;

use crate::acks::AckStore;
use crate::bufpool::BufPool;
use crate::driver::ConsumerRead;
use crate::error::FilesError;
use crate::format::IndexRecord;
use crate::topic::TopicShared;

/// Records read per refill with an adaptive batch size.
const ADAPTIVE_RECORDS: usize = 4_096;
/// A refill stops adding events once it holds this much selected data (at least one event).
pub(crate) const MAX_REFILL_DATA: u64 = 1 << 20;
/// A refill stops adding events once it holds this much metadata (at least one event).
pub(crate) const MAX_REFILL_META: u64 = 16 << 20;
/// No refill starts while the events already buffered hold this many bytes.
pub(crate) const MAX_BUFFERED_BYTES: u64 = 4 * MAX_REFILL_DATA;
/// Events with at most this much selected data are read into recycled buffers ([`BufPool`]),
/// which hold at most [`MAX_POOLED_BYTES`] when free.
const MAX_POOLED_BUFFER: u64 = MAX_REFILL_DATA;
const MAX_POOLED_BYTES: usize = 2 * MAX_BUFFERED_BYTES as usize;
/// Longest sleep between two polls of an empty topic.
const MAX_POLL_SLEEP: Duration = Duration::from_millis(5);

struct Acks(AckStore);

impl Acknowledger for Acks {
    fn acknowledge(&self, partition: usize, id: EventId) -> Result<()> {
        self.0.acknowledge(partition, id).map_err(Error::from)
    }
}

struct Cursor {
    /// Next id to read, per consumed partition.
    next: Vec<u64>,
    /// Index records to read at the next refill, per consumed partition (at most the batch
    /// size): as many as the last refill could take within its byte budgets, doubled when it
    /// took all it read. Large events fill a refill's data budget with a few records, and
    /// reading and checking the thousands more a batch size allows would cost more than
    /// their data.
    want: Vec<usize>,
    /// Index (in `partitions`) of the partition to try first.
    rr: usize,
    /// Buffers of one refill, kept between refills: allocated anew, their hundreds of KiB
    /// came from `mmap` and were faulted in page by page at every refill (a fifth of the time
    /// of a metadata-only consumer).
    scratch: Scratch,
}

#[derive(Default)]
struct Scratch {
    /// Raw index records.
    raw: Vec<u8>,
    records: Vec<IndexRecord>,
    prepared: Vec<Result<Prepared>>,
    /// The events read, moved to the queue at the end of the refill.
    out: Vec<Buffered>,
}

#[derive(Default)]
pub(crate) struct Queue {
    pub(crate) events: VecDeque<Buffered>,
    /// Metadata and data bytes of the buffered events.
    pub(crate) bytes: u64,
    pub(crate) prefetching: bool,
}

/// A read event, and the checksum its whole data must match when it was selected: checked by
/// the pull that delivers it, so that with a prefetching pool the check of one event overlaps
/// the read of the next ones.
pub(crate) struct Buffered {
    event: Result<Event>,
    data_crc: Option<u32>,
}

impl Buffered {
    fn failed(e: Error) -> Self {
        Buffered {
            event: Err(e),
            data_crc: None,
        }
    }

    /// The event, once its data matches its checksum.
    fn deliver(self, topic: &str) -> Result<Event> {
        let event = self.event?;
        let Some(crc) = self.data_crc else {
            return Ok(event);
        };
        let mut h = crc32fast::Hasher::new();
        for s in event.data().segments() {
            h.update(s);
        }
        if h.finalize() == crc {
            return Ok(event);
        }
        let (p, id) = (event.partition(), event.id());
        Err(event_failed(
            p,
            id,
            Error::Corrupted(format!(
                "topic {topic} partition {p} event {id}: data checksum mismatch"
            )),
        ))
    }
}

/// Bytes an event holds in memory while buffered.
fn event_bytes(b: &Buffered) -> u64 {
    b.event
        .as_ref()
        .map_or(0, |e| e.metadata().as_bytes().len() as u64 + e.data().len())
}

/// `e` as the failure of event `id` of partition `p` (the consumer has moved past it).
fn event_failed(p: usize, id: u64, e: Error) -> Error {
    match e {
        e @ Error::EventFailed { .. } => e,
        e => Error::EventFailed {
            partition: p,
            id,
            source: Box::new(e),
        },
    }
}

pub(crate) struct Inner {
    topic: Arc<TopicShared>,
    acker: Arc<Acks>,
    selector: Option<DataSelector>,
    /// The user's allocator; `None` lets the consumer hand out slices of its own reads.
    allocator: Option<DataAllocator>,
    /// The user's buffer allocator (application memory, several buffers): read into directly.
    buffers: Option<BufferAllocator>,
    partitions: Vec<usize>,
    records_per_refill: usize,
    max_buffered: usize,
    pool: ThreadPool,
    /// Recycled buffers for the data of events read one by one.
    recycled: BufPool,
    /// Runs of whole events are mapped, not read ([`crate::mapped`]).
    map_runs: bool,
    cursor: Mutex<Cursor>,
    pub(crate) queue: Mutex<Queue>,
    /// Bytes of metadata read from the metadata files so far (memory-bound tests).
    pub(crate) meta_read: std::sync::atomic::AtomicU64,
    /// Index records read so far (tests of the read size).
    pub(crate) records_read: std::sync::atomic::AtomicU64,
}

/// The files driver's [`ConsumerBackend`].
pub struct FilesConsumer {
    pub(crate) inner: Arc<Inner>,
}

impl FilesConsumer {
    #[cfg(test)]
    pub(crate) fn new(
        topic: Arc<TopicShared>,
        name: &str,
        options: ConsumerOptions,
    ) -> Result<Self> {
        Self::with_read(topic, name, options, ConsumerRead::default())
    }

    /// A consumer that reads runs of whole events as `read` says.
    pub(crate) fn with_read(
        topic: Arc<TopicShared>,
        name: &str,
        options: ConsumerOptions,
        read: ConsumerRead,
    ) -> Result<Self> {
        let n = topic.partitions.len();
        let partitions = options.partitions_of(n)?;
        let acks = AckStore::load(&topic.ack_path(name), n, &partitions, topic.config.sync)?;
        let start = acks.next_offsets();
        let records_per_refill = match options.batch_size {
            BatchSize::Adaptive => ADAPTIVE_RECORDS,
            BatchSize::Fixed(k) => k.max(1),
        };
        Ok(FilesConsumer {
            inner: Arc::new(Inner {
                cursor: Mutex::new(Cursor {
                    next: partitions.iter().map(|&p| start[p]).collect(),
                    want: vec![records_per_refill; partitions.len()],
                    scratch: Scratch::default(),
                    rr: 0,
                }),
                queue: Mutex::new(Queue::default()),
                meta_read: std::sync::atomic::AtomicU64::new(0),
                records_read: std::sync::atomic::AtomicU64::new(0),
                acker: Arc::new(Acks(acks)),
                selector: options.data_selector,
                allocator: options.data_allocator,
                buffers: options.buffer_allocator,
                records_per_refill,
                max_buffered: records_per_refill * options.max_num_batches.max(1),
                pool: options.thread_pool.unwrap_or_else(ThreadPool::inline),
                recycled: BufPool::new(MAX_POOLED_BYTES),
                map_runs: read == ConsumerRead::Map,
                partitions,
                topic,
            }),
        })
    }
}

impl Inner {
    /// Pops a buffered event, or reads more; `None` if nothing is available yet.
    fn try_next(self: &Arc<Self>) -> Option<Result<Event>> {
        if let Some(e) = self.pop() {
            return Some(e);
        }
        // Checked before reading: if the topic was complete and nothing is left, it is the end.
        let complete = self.topic.is_complete();
        if let Err(e) = diaspora_api::catch_panic("the consumer's read", || self.refill_if_empty())
        {
            return Some(Err(e));
        }
        if let Some(e) = self.pop() {
            return Some(e);
        }
        complete.then(|| Ok(Event::no_more_events()))
    }

    fn pop(self: &Arc<Self>) -> Option<Result<Event>> {
        let mut q = self.queue.lock();
        let e = q.events.pop_front()?;
        q.bytes = q.bytes.saturating_sub(event_bytes(&e));
        let prefetch = self.pool.size() > 0
            && !q.prefetching
            && q.events.len() < self.records_per_refill / 2
            && q.bytes < MAX_BUFFERED_BYTES / 2;
        q.prefetching |= prefetch;
        drop(q);
        if prefetch {
            let me = self.clone();
            self.pool.push_work(
                move || {
                    // A panic here is a driver bug; it is reported by the next pull.
                    let r = diaspora_api::catch_panic("the consumer's prefetch", || me.refill());
                    let mut q = me.queue.lock();
                    if let Err(e) = r {
                        q.events.push_back(Buffered::failed(e));
                    }
                    q.prefetching = false;
                },
                0,
            );
        }
        // Outside the queue lock, while the prefetch (if any) reads on.
        Some(e.deliver(&self.topic.name))
    }

    /// Reads the next run of events of the first partition (round robin) that has some.
    pub(crate) fn refill(&self) {
        self.refill_with(false);
    }

    /// A refill for a pull that found nothing buffered: once it holds the cursor (after a
    /// prefetch that held it), it reads only if the queue is still empty, so that the pulling
    /// thread takes what the prefetch read instead of reading alongside it.
    fn refill_if_empty(&self) {
        self.refill_with(true);
    }

    fn refill_with(&self, if_empty: bool) {
        let mut cur = self.cursor.lock();
        {
            let q = self.queue.lock();
            if q.events.len() >= self.max_buffered
                || q.bytes >= MAX_BUFFERED_BYTES
                || (if_empty && !q.events.is_empty())
            {
                return;
            }
        }
        let np = self.partitions.len();
        for k in 0..np {
            let slot = (cur.rr + k) % np;
            let Cursor {
                next,
                want,
                scratch,
                ..
            } = &mut *cur;
            self.read_partition(slot, &mut next[slot], &mut want[slot], scratch);
            if !scratch.out.is_empty() {
                let bytes = scratch.out.iter().map(event_bytes).sum::<u64>();
                // Appended under the cursor lock: the queue keeps partition order.
                let mut q = self.queue.lock();
                q.bytes += bytes;
                q.events.extend(scratch.out.drain(..));
                drop(q);
                cur.rr = (slot + 1) % np;
                return;
            }
        }
    }

    /// Reads the next run of events of partition `slot` into `scratch.out`.
    fn read_partition(&self, slot: usize, next: &mut u64, want: &mut usize, scratch: &mut Scratch) {
        let Scratch {
            raw,
            records,
            prepared,
            out,
        } = scratch;
        let p = self.partitions[slot];
        let log = &self.topic.partitions[p];
        let max = (*want).clamp(1, self.records_per_refill);
        match log.read_records_into(*next, max, records, raw) {
            Ok(()) => {}
            Err(FilesError::CorruptRecord {
                path,
                index,
                reason,
            }) if index == *next => {
                *next += 1; // never served; reported once, then skipped
                let e = FilesError::CorruptRecord {
                    path,
                    index,
                    reason,
                };
                return out.push(Buffered::failed(event_failed(p, index, e.into())));
            }
            Err(e) => return out.push(Buffered::failed(e.into())),
        }
        if records.is_empty() {
            return;
        }
        let (sane, data_len) = match log.sizes() {
            // Data bounds matter only to consumers that read data.
            Ok((_, meta_len, data_len)) => (
                sane_prefix(
                    records,
                    meta_len,
                    self.selector.is_some().then_some(data_len),
                ),
                data_len,
            ),
            Err(e) => return out.push(Buffered::failed(e.into())),
        };
        if sane == 0 {
            // A checksummed record pointing outside its files: never served, reported, skipped.
            let id = *next;
            *next += 1;
            let e = Error::Corrupted(format!(
                "topic {} partition {p} event {id}: record points outside the metadata or data file",
                self.topic.name
            ));
            return out.push(Buffered::failed(event_failed(p, id, e)));
        }
        let take = self.records_within_budget(&records[..sane]);
        self.records_read
            .fetch_add(records.len() as u64, std::sync::atomic::Ordering::Relaxed);
        *want = self.next_want(&records[..take], records.len(), *want);
        let records = &records[..take];
        let span = match log.read_meta_span(&records[0], &records[take - 1]) {
            Ok(s) => s,
            Err(e) => return out.push(Buffered::failed(e.into())),
        };
        self.meta_read
            .fetch_add(span.len() as u64, std::sync::atomic::Ordering::Relaxed);
        let base = records[0].meta_offset;
        let first_id = *next;
        // Phase 1: metadata (checked) and, per event, the selected part of the data.
        prepared.clear();
        prepared.extend(records.iter().enumerate().map(|(j, rec)| {
            let start = (rec.meta_offset - base) as usize;
            let raw = span.slice(start..start + rec.meta_len as usize);
            self.prepare(p, first_id + j as u64, *rec, raw)
        }));
        // Phase 2: data. Dense selections with the default allocator come from one read of the
        // whole run (into a recycled buffer), handed out as zero-copy slices; otherwise each
        // event's selection is read straight into the buffer its allocator provides.
        let selected: u64 = prepared
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .map(|pr| pr.selection.size())
            .sum();
        let run_len = records[take - 1].data_end() - records[0].data_offset;
        let dense = selected * 2 >= run_len;
        let data_run =
            if selected > 0 && self.allocator.is_none() && self.buffers.is_none() && dense {
                match self.read_run(log, &records[0], &records[take - 1], run_len) {
                    Ok(run) => Some(run),
                    Err(e) => return out.push(Buffered::failed(e.into())),
                }
            } else {
                None
            };
        // Every read of the run succeeded: from here on each event is delivered or reported.
        *next += take as u64;
        let run_start = records[0].data_offset;
        out.extend(prepared.drain(..).enumerate().map(|(j, r)| {
            r.and_then(|pr| self.finish(pr, data_run.as_ref(), run_start, data_len))
                .unwrap_or_else(|e| Buffered::failed(event_failed(p, first_id + j as u64, e)))
        }));
    }

    /// Reads the data of records `first..=last` (`run_len` bytes) with one read: into a
    /// recycled buffer if it is small enough to be kept, else into a fresh one.
    fn read_run(
        &self,
        log: &crate::partition::PartitionLog,
        first: &IndexRecord,
        last: &IndexRecord,
        run_len: u64,
    ) -> std::result::Result<Bytes, FilesError> {
        if self.map_runs {
            return log.map_data_span(first, last);
        }
        if run_len > MAX_POOLED_BUFFER {
            return log.read_data_span(first, last);
        }
        // Within the data file: `sane_prefix` checked every record of the run against it.
        let mut buf = self.recycled.take(run_len as usize);
        log.read_data_span_into(first, last, buf.as_mut_slice())?;
        Ok(buf.freeze())
    }

    /// Records to read at the next refill, after one that read `read` records (wanting
    /// `want`) and took `taken`: as many as it took when the budgets stopped it, twice as many
    /// when it took every record and they filled less than half of each budget.
    fn next_want(&self, taken: &[IndexRecord], read: usize, want: usize) -> usize {
        if taken.len() < read {
            return taken.len();
        }
        let meta: u64 = taken.iter().map(|r| u64::from(r.meta_len)).sum();
        let data: u64 = if self.selector.is_some() {
            taken
                .iter()
                .map(|r| r.data_len)
                .fold(0, u64::saturating_add)
        } else {
            0
        };
        if read == want && meta <= MAX_REFILL_META / 2 && data <= MAX_REFILL_DATA / 2 {
            want.saturating_mul(2).min(self.records_per_refill)
        } else {
            want
        }
    }

    /// How many records fit in one refill's metadata and data budgets (at least one).
    fn records_within_budget(&self, records: &[IndexRecord]) -> usize {
        let reads_data = self.selector.is_some();
        let (mut meta, mut data) = (0u64, 0u64);
        records
            .iter()
            .position(|r| {
                meta += u64::from(r.meta_len);
                if reads_data {
                    data = data.saturating_add(r.data_len);
                }
                meta > MAX_REFILL_META || data > MAX_REFILL_DATA
            })
            .unwrap_or(records.len())
            .max(1)
    }

    fn corrupt(&self, p: usize, id: u64, what: &str) -> Error {
        Error::Corrupted(format!(
            "topic {} partition {p} event {id}: {what} checksum mismatch",
            self.topic.name
        ))
    }

    /// Checks the metadata and asks the selector what to fetch.
    fn prepare(&self, p: usize, id: u64, rec: IndexRecord, raw: Bytes) -> Result<Prepared> {
        if crc32fast::hash(&raw) != rec.meta_crc {
            return Err(self.corrupt(p, id, "metadata"));
        }
        let metadata =
            diaspora_api::catch_panic("the topic's serializer (deserializing)", || {
                self.topic.policies.serializer.deserialize(raw)
            })??;
        let selection = match &self.selector {
            None => DataDescriptor::null(),
            Some(select) => {
                let mut location = Vec::with_capacity(16);
                location.extend_from_slice(&rec.data_offset.to_le_bytes());
                location.extend_from_slice(&(p as u64).to_le_bytes());
                let whole = DataDescriptor::new(Bytes::from(location), rec.data_len);
                let wanted = diaspora_api::catch_panic("the consumer's data selector", || {
                    select(&metadata, &whole)
                })?;
                if wanted
                    .flatten()
                    .iter()
                    .any(|s| s.offset.saturating_add(s.len) > rec.data_len)
                {
                    return Err(Error::InvalidSelection(format!(
                        "selector chose bytes beyond the {} bytes of event {id}",
                        rec.data_len
                    )));
                }
                wanted
            }
        };
        Ok(Prepared {
            p,
            id,
            rec,
            metadata,
            selection,
        })
    }

    /// Fetches the selected data (from `run`, the data of the whole refill starting at file
    /// offset `run_start`, when given; `data_len` is the data file's length the run was checked
    /// against) and builds the event. Its data checksum is left to the pull that delivers it.
    fn finish(
        &self,
        pr: Prepared,
        run: Option<&Bytes>,
        run_start: u64,
        data_len: u64,
    ) -> Result<Buffered> {
        let Prepared {
            p,
            id,
            rec,
            metadata,
            selection,
        } = pr;
        let segments = selection.flatten();
        let whole = segments
            == [Segment {
                offset: 0,
                len: rec.data_len,
            }];
        let data = if selection.is_empty() {
            DataView::new()
        } else if let Some(run) = run {
            let base = (rec.data_offset - run_start) as usize;
            let slice = |s: &Segment| {
                run.slice(base + s.offset as usize..base + (s.offset + s.len) as usize)
            };
            let bytes = if let [one] = segments {
                slice(one)
            } else {
                let mut buf = BytesMut::with_capacity(selection.size() as usize);
                for s in segments {
                    buf.extend_from_slice(&slice(s));
                }
                buf.freeze()
            };
            DataView::from(bytes)
        } else if let Some(balloc) = &self.buffers {
            let mut buffers = diaspora_api::buffer::allocate(balloc, &metadata, &selection)?;
            {
                let mut slices: Vec<&mut [u8]> =
                    buffers.iter_mut().map(DataBuffer::as_mut_slice).collect();
                self.topic.partitions[p].read_data_into(&rec, segments, &mut slices)?;
            }
            DataView::from_segments(buffers.into_iter().map(DataBuffer::into_bytes))
        } else if self.allocator.is_none() && selection.size() <= MAX_POOLED_BUFFER {
            // Checked by `sane_prefix` for the run; checked again before anything is taken.
            if rec.checked_data_end().is_none_or(|e| e > data_len) {
                return Err(FilesError::OutOfRange {
                    path: self.topic.partitions[p].data_path(),
                    start: rec.data_offset,
                    end: rec.data_end(),
                    file_len: data_len,
                }
                .into());
            }
            let mut buf = self.recycled.take(selection.size() as usize);
            self.topic.partitions[p].read_data(&rec, segments, buf.as_mut_slice())?;
            DataView::from(buf.freeze())
        } else {
            let log = &self.topic.partitions[p];
            let buf = match &self.allocator {
                None => log.read_data_new(&rec, segments, data_len)?,
                Some(alloc) => {
                    let mut buf =
                        diaspora_api::catch_panic("the consumer's data allocator", || {
                            alloc(&metadata, &selection)
                        })?;
                    if buf.len() as u64 != selection.size() {
                        return Err(Error::AllocatorSize {
                            expected: selection.size(),
                            got: buf.len(),
                        });
                    }
                    log.read_data(&rec, segments, &mut buf)?;
                    buf
                }
            };
            DataView::from(buf.freeze())
        };
        let event = Event::new(id, p, metadata, data, self.acker.clone())
            .with_partition_info(self.topic.partition_infos[p].clone());
        Ok(Buffered {
            event: Ok(event),
            data_crc: whole.then_some(rec.data_crc),
        })
    }
}

/// How many leading records can be read together: each lies within the metadata file (and
/// the data file, when `data_len` is given), and each starts where the previous one ended, so
/// one span read covers them and slicing it cannot fail.
fn sane_prefix(records: &[IndexRecord], meta_len: u64, data_len: Option<u64>) -> usize {
    let within = |r: &IndexRecord| {
        let meta_ok = r
            .meta_offset
            .checked_add(u64::from(r.meta_len))
            .is_some_and(|e| e <= meta_len);
        let data_ok = data_len.is_none_or(|len| {
            r.data_offset
                .checked_add(r.data_len)
                .is_some_and(|e| e <= len)
        });
        meta_ok && data_ok
    };
    let follows = |prev: &IndexRecord, r: &IndexRecord| {
        r.meta_offset == prev.meta_end() && (data_len.is_none() || r.data_offset == prev.data_end())
    };
    match records.first() {
        Some(first) if within(first) => {}
        _ => return 0,
    }
    1 + records
        .windows(2)
        .take_while(|w| within(&w[1]) && follows(&w[0], &w[1]))
        .count()
}

/// An event whose metadata is read and whose data selection is decided.
struct Prepared {
    p: usize,
    id: u64,
    rec: IndexRecord,
    metadata: diaspora_api::Metadata,
    selection: DataDescriptor,
}

/// Polls until an event arrives or the deadline passes.
struct PullWaiter {
    inner: Arc<Inner>,
}

impl Waitable<Event> for PullWaiter {
    fn wait_until(&mut self, deadline: Option<Instant>) -> Option<Result<Event>> {
        let mut sleep = Duration::from_micros(20);
        loop {
            if let Some(e) = self.inner.try_next() {
                return Some(e);
            }
            let now = Instant::now();
            let nap = match deadline {
                Some(d) if now >= d => return None,
                Some(d) => sleep.min(d - now),
                None => sleep,
            };
            std::thread::sleep(nap);
            sleep = (sleep * 2).min(MAX_POLL_SLEEP);
        }
    }

    /// Reads ahead if nothing is buffered: true when an event (or the end marker) is there.
    fn is_ready(&self) -> bool {
        if !self.inner.queue.lock().events.is_empty() {
            return true;
        }
        // As in `try_next`: a topic complete before the read has nothing more to wait for.
        let complete = self.inner.topic.is_complete();
        // A panicking read is reported by the wait, which reads again.
        let read =
            diaspora_api::catch_panic("the consumer's read", || self.inner.refill_if_empty());
        read.is_err() || complete || !self.inner.queue.lock().events.is_empty()
    }
}

impl ConsumerBackend for FilesConsumer {
    fn pull(&self) -> Future<Event> {
        match self.inner.try_next() {
            Some(Ok(e)) => Future::ready(e),
            Some(Err(e)) => Future::failed(e),
            None => Future::pending(Box::new(PullWaiter {
                inner: self.inner.clone(),
            })),
        }
    }

    fn acknowledge(&self, partition: usize, id: EventId) -> Result<()> {
        let inner = &self.inner;
        let Some(slot) = inner.partitions.iter().position(|&p| p == partition) else {
            return Err(Error::option(
                "partition",
                format!(
                    "this consumer does not read partition {partition} (it reads {:?})",
                    inner.partitions
                ),
            ));
        };
        let next = inner.cursor.lock().next[slot];
        if id >= next {
            return Err(Error::option(
                "id",
                format!(
                    "event {id} of partition {partition} was not read by this consumer yet \
                     (next is {next})"
                ),
            ));
        }
        inner.acker.acknowledge(partition, id)
    }
}
