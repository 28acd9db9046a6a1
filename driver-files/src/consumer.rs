//! The files driver's consumer: reads events in batches, round robin over partitions.
//!
//! A refill reads a run of index records of one partition with one read, the metadata they
//! point to with one more, then, per event, asks the data selector which part of the data to
//! fetch and reads exactly that into the buffer the allocator provides (positioned reads, no
//! intermediate copy). With no selector the data file is never read. With a thread pool, the next
//! refill is prefetched while the application processes the current one.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use diaspora_api::{
    default_allocator, Acknowledger, BatchSize, ConsumerBackend, ConsumerOptions, DataAllocator,
    DataDescriptor, DataSelector, DataView, Error, Event, EventId, Future, Result, Segment,
    ThreadPool, Waitable,
};
use parking_lot::Mutex;

use crate::acks::AckStore;
use crate::error::FilesError;
use crate::format::IndexRecord;
use crate::topic::TopicShared;

/// Records read per refill with an adaptive batch size.
const ADAPTIVE_RECORDS: usize = 4_096;
/// A refill stops adding events once it holds this much selected data (at least one event).
const MAX_REFILL_DATA: u64 = 64 << 20;
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
    /// Index (in `partitions`) of the partition to try first.
    rr: usize,
}

#[derive(Default)]
struct Queue {
    events: VecDeque<Result<Event>>,
    prefetching: bool,
}

struct Inner {
    topic: Arc<TopicShared>,
    acker: Arc<Acks>,
    selector: Option<DataSelector>,
    allocator: DataAllocator,
    partitions: Vec<usize>,
    records_per_refill: usize,
    max_buffered: usize,
    pool: ThreadPool,
    cursor: Mutex<Cursor>,
    queue: Mutex<Queue>,
}

/// The files driver's [`ConsumerBackend`].
pub struct FilesConsumer {
    inner: Arc<Inner>,
}

impl FilesConsumer {
    pub(crate) fn new(
        topic: Arc<TopicShared>,
        name: &str,
        options: ConsumerOptions,
    ) -> Result<Self> {
        let n = topic.partitions.len();
        let partitions = options.partitions.unwrap_or_else(|| (0..n).collect());
        if partitions.is_empty() {
            return Err(Error::option("consumer.partitions", "must not be empty"));
        }
        for (i, &p) in partitions.iter().enumerate() {
            if p >= n {
                return Err(Error::InvalidPartition { index: p, count: n });
            }
            if partitions[..i].contains(&p) {
                return Err(Error::option(
                    "consumer.partitions",
                    format!("partition {p} listed twice"),
                ));
            }
        }
        let acks = AckStore::load(&topic.ack_path(name), n)?;
        let start = acks.next_offsets();
        let records_per_refill = match options.batch_size {
            BatchSize::Adaptive => ADAPTIVE_RECORDS,
            BatchSize::Fixed(k) => k.max(1),
        };
        Ok(FilesConsumer {
            inner: Arc::new(Inner {
                cursor: Mutex::new(Cursor {
                    next: partitions.iter().map(|&p| start[p]).collect(),
                    rr: 0,
                }),
                queue: Mutex::new(Queue::default()),
                acker: Arc::new(Acks(acks)),
                selector: options.data_selector,
                allocator: options.data_allocator.unwrap_or_else(default_allocator),
                records_per_refill,
                max_buffered: records_per_refill * options.max_num_batches.max(1),
                pool: options.thread_pool.unwrap_or_else(ThreadPool::inline),
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
        self.refill();
        if let Some(e) = self.pop() {
            return Some(e);
        }
        complete.then(|| Ok(Event::no_more_events()))
    }

    fn pop(self: &Arc<Self>) -> Option<Result<Event>> {
        let mut q = self.queue.lock();
        let e = q.events.pop_front()?;
        if self.pool.size() > 0 && !q.prefetching && q.events.len() < self.records_per_refill / 2 {
            q.prefetching = true;
            let me = self.clone();
            drop(q);
            self.pool.push_work(
                move || {
                    me.refill();
                    me.queue.lock().prefetching = false;
                },
                0,
            );
        }
        Some(e)
    }

    /// Reads the next run of events of the first partition (round robin) that has some.
    fn refill(&self) {
        let mut cur = self.cursor.lock();
        if self.queue.lock().events.len() >= self.max_buffered {
            return;
        }
        let np = self.partitions.len();
        for k in 0..np {
            let slot = (cur.rr + k) % np;
            let events = self.read_partition(slot, &mut cur.next[slot]);
            if !events.is_empty() {
                cur.rr = (slot + 1) % np;
                // Appended under the cursor lock: the queue keeps partition order.
                self.queue.lock().events.extend(events);
                return;
            }
        }
    }

    fn read_partition(&self, slot: usize, next: &mut u64) -> Vec<Result<Event>> {
        let p = self.partitions[slot];
        let log = &self.topic.partitions[p];
        let records = match log.read_records(*next, self.records_per_refill) {
            Ok(r) => r,
            Err(FilesError::CorruptRecord {
                path,
                index,
                reason,
            }) if index == *next => {
                *next += 1; // never served; reported once, then skipped
                return vec![Err(FilesError::CorruptRecord {
                    path,
                    index,
                    reason,
                }
                .into())];
            }
            Err(e) => return vec![Err(e.into())],
        };
        if records.is_empty() {
            return Vec::new();
        }
        let take = self.records_within_budget(&records);
        let records = &records[..take];
        let span = match log.read_meta_span(&records[0], &records[take - 1]) {
            Ok(s) => s,
            Err(e) => return vec![Err(e.into())],
        };
        let base = records[0].meta_offset;
        let first_id = *next;
        *next += take as u64;
        records
            .iter()
            .enumerate()
            .map(|(j, rec)| {
                let start = (rec.meta_offset - base) as usize;
                let raw = span.slice(start..start + rec.meta_len as usize);
                self.build_event(p, first_id + j as u64, rec, raw)
            })
            .collect()
    }

    /// How many records fit in one refill's data budget (at least one).
    fn records_within_budget(&self, records: &[IndexRecord]) -> usize {
        if self.selector.is_none() {
            return records.len();
        }
        let mut total = 0u64;
        records
            .iter()
            .position(|r| {
                total += r.data_len;
                total > MAX_REFILL_DATA
            })
            .unwrap_or(records.len())
            .max(1)
    }

    fn build_event(&self, p: usize, id: u64, rec: &IndexRecord, raw: Bytes) -> Result<Event> {
        let corrupt = |what: &str| {
            Error::Corrupted(format!(
                "topic {} partition {p} event {id}: {what} checksum mismatch",
                self.topic.name
            ))
        };
        if crc32fast::hash(&raw) != rec.meta_crc {
            return Err(corrupt("metadata"));
        }
        let metadata = self.topic.policies.serializer.deserialize(raw)?;
        let data = match &self.selector {
            None => DataView::new(),
            Some(select) => {
                let mut location = Vec::with_capacity(16);
                location.extend_from_slice(&rec.data_offset.to_le_bytes());
                location.extend_from_slice(&(p as u64).to_le_bytes());
                let desc = DataDescriptor::new(Bytes::from(location), rec.data_len);
                let wanted = select(&metadata, &desc);
                let segments: Vec<Segment> = wanted.flatten().to_vec();
                if wanted.size() == 0 {
                    DataView::new()
                } else {
                    if segments
                        .iter()
                        .any(|s| s.offset.saturating_add(s.len) > rec.data_len)
                    {
                        return Err(Error::InvalidSelection(format!(
                            "selector chose bytes beyond the {} bytes of event {id}",
                            rec.data_len
                        )));
                    }
                    let mut buf = (self.allocator)(&metadata, &wanted);
                    if buf.len() as u64 != wanted.size() {
                        return Err(Error::AllocatorSize {
                            expected: wanted.size(),
                            got: buf.len(),
                        });
                    }
                    self.topic.partitions[p].read_data(rec, &segments, &mut buf)?;
                    let whole = segments
                        == [Segment {
                            offset: 0,
                            len: rec.data_len,
                        }];
                    if whole && crc32fast::hash(&buf) != rec.data_crc {
                        return Err(corrupt("data"));
                    }
                    DataView::from(buf.freeze())
                }
            }
        };
        Ok(Event::new(id, p, metadata, data, self.acker.clone()))
    }
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

    fn is_ready(&self) -> bool {
        !self.inner.queue.lock().events.is_empty()
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
}
