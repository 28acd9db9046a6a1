//! The files driver's producer: per-partition batches stored by a thread pool.
//!
//! `push` serializes the metadata into the open batch of the chosen partition and keeps a
//! reference to the data (no copy). A batch is *sealed* when it is full (fixed batch size), when
//! its partition's writer is idle (adaptive batch size: batches grow exactly as much as the
//! storage is slower than the application), on `flush`, or when it holds too many bytes. Sealed
//! batches are stored by the thread pool: with strict ordering through a per-partition queue
//! drained by one job at a time, with loose ordering as independent jobs. At most
//! `max_num_batches` batches are in flight; `push` blocks beyond that, bounding memory.
//!
//! Nothing is lost silently: a batch that cannot be stored fails its events' futures, and is
//! also counted against the next `flush`, which fails with [`Error::EventsLost`] (how many
//! events, and the first reason) even when the batch failed before `flush` was called and its
//! push futures were ignored; so is an event `push` rejects (partition selector, serializer).
//! A panic while storing (a driver bug) fails the batch the same way; a panic in the serializer
//! fails that one push.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use diaspora_api::{
    BatchSize, Completion, DataView, Error, EventId, Future, Losses, Metadata, Ordering,
    ProducerBackend, ProducerOptions, Result, ThreadPool, Waitable,
};
use parking_lot::{Condvar, Mutex};

use crate::driver::FlushBehavior;
use crate::partition::{data_crc, BatchPayload};
use crate::topic::TopicShared;

/// Adaptive batches never hold more events than this.
const ADAPTIVE_MAX_EVENTS: usize = 65_536;
/// Without background threads, adaptive batches are sealed at this many events.
const INLINE_BATCH_EVENTS: usize = 4_096;
/// Any batch is sealed once it references this much data.
pub(crate) const MAX_BATCH_DATA: u64 = 16 << 20;
/// Any batch is sealed once it holds this much metadata.
pub(crate) const MAX_BATCH_META: usize = 8 << 20;

struct OpenBatch {
    payload: BatchPayload,
    completion: Arc<Completion<u64>>,
    data_bytes: u64,
}

struct SealedBatch {
    partition: usize,
    payload: BatchPayload,
    completion: Arc<Completion<u64>>,
}

struct State {
    open: Vec<Option<OpenBatch>>,
    in_flight: usize,
    in_flight_per_partition: Vec<usize>,
    unfinished: Vec<Arc<Completion<u64>>>,
    /// Emptied payloads of stored batches, their capacity kept for the next batches (see
    /// [`BatchPayload::recycle`]).
    spare: Vec<BatchPayload>,
}

/// Most emptied payloads a producer keeps for reuse.
const MAX_SPARE_PAYLOADS: usize = 2;

#[derive(Default)]
struct PartitionQueue {
    queue: VecDeque<SealedBatch>,
    draining: bool,
}

enum Job {
    Drain(usize),
    Single(SealedBatch),
}

struct Shared {
    topic: Arc<TopicShared>,
    batch_size: BatchSize,
    max_batches: usize,
    ordering: Ordering,
    pool: ThreadPool,
    state: Mutex<State>,
    cond: Condvar,
    queues: Vec<Mutex<PartitionQueue>>,
    /// Events rejected by `push` or lost with their batch, until a flush reports them.
    losses: Losses,
    /// Per partition: stored since the last sync (`on_flush` flush behaviour).
    dirty: Vec<std::sync::atomic::AtomicBool>,
    /// Test hook: the next store panics as a driver bug would.
    #[cfg(test)]
    panic_in_store: std::sync::atomic::AtomicBool,
}

/// The files driver's [`ProducerBackend`]. Dropping it flushes.
pub struct FilesProducer {
    shared: Arc<Shared>,
}

impl FilesProducer {
    pub(crate) fn new(topic: Arc<TopicShared>, options: ProducerOptions) -> Self {
        let n = topic.partitions.len();
        let pool = options
            .thread_pool
            .unwrap_or_else(|| topic.default_pool.clone());
        FilesProducer {
            shared: Arc::new(Shared {
                batch_size: options.batch_size,
                max_batches: options.max_num_batches.max(1),
                ordering: options.ordering,
                pool,
                state: Mutex::new(State {
                    open: (0..n).map(|_| None).collect(),
                    in_flight: 0,
                    in_flight_per_partition: vec![0; n],
                    unfinished: Vec::new(),
                    spare: Vec::new(),
                }),
                losses: Losses::new(),
                dirty: (0..n)
                    .map(|_| std::sync::atomic::AtomicBool::new(false))
                    .collect(),
                cond: Condvar::new(),
                queues: (0..n)
                    .map(|_| Mutex::new(PartitionQueue::default()))
                    .collect(),
                topic,
                #[cfg(test)]
                panic_in_store: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }
}

#[cfg(test)]
impl FilesProducer {
    /// Makes the next batch store panic, as a driver bug would.
    pub(crate) fn inject_store_panic(&self) {
        self.shared
            .panic_in_store
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Shared {
    fn should_seal(&self, st: &State, p: usize) -> bool {
        self.is_full(st, p)
            || (self.batch_size == BatchSize::Adaptive
                && self.pool.size() > 0
                && st.open[p].is_some()
                && st.in_flight_per_partition[p] == 0)
    }

    /// Whether the open batch of `p` is full (adaptive batches are also sealed earlier, when
    /// their partition's writer is idle: see [`should_seal`](Self::should_seal)).
    fn is_full(&self, st: &State, p: usize) -> bool {
        let Some(b) = &st.open[p] else { return false };
        let count = b.payload.len();
        if b.data_bytes >= MAX_BATCH_DATA || b.payload.meta.len() >= MAX_BATCH_META {
            return true;
        }
        match self.batch_size {
            BatchSize::Fixed(n) => count >= n,
            BatchSize::Adaptive if self.pool.size() == 0 => count >= INLINE_BATCH_EVENTS,
            BatchSize::Adaptive => count >= ADAPTIVE_MAX_EVENTS,
        }
    }

    /// Seals the open batch of `p`. With `block`, waits for room first; without, gives up if
    /// `max_num_batches` are in flight. Returns the job to schedule once the lock is released.
    fn seal_locked(
        &self,
        st: &mut parking_lot::MutexGuard<'_, State>,
        p: usize,
        block: bool,
    ) -> Option<Job> {
        while st.in_flight >= self.max_batches {
            if !block {
                return None;
            }
            self.cond.wait(st);
        }
        let batch = st.open[p].take()?;
        st.in_flight += 1;
        st.in_flight_per_partition[p] += 1;
        if st.unfinished.len() >= 64 {
            st.unfinished.retain(|c| !c.is_complete());
        }
        st.unfinished.push(batch.completion.clone());
        let sealed = SealedBatch {
            partition: p,
            payload: batch.payload,
            completion: batch.completion,
        };
        match self.ordering {
            Ordering::Loose => Some(Job::Single(sealed)),
            Ordering::Strict => {
                // Enqueued under the state lock: queue order is seal order.
                let mut q = self.queues[p].lock();
                q.queue.push_back(sealed);
                if q.draining {
                    None
                } else {
                    q.draining = true;
                    Some(Job::Drain(p))
                }
            }
        }
    }

    fn schedule(self: &Arc<Self>, job: Option<Job>) {
        if let Some(job) = job {
            let me = self.clone();
            self.pool.push_work(move || me.run(job), 0);
        }
    }

    fn run(self: &Arc<Self>, job: Job) {
        match job {
            Job::Single(b) => self.store(b),
            Job::Drain(p) => loop {
                let next = {
                    let mut q = self.queues[p].lock();
                    match q.queue.pop_front() {
                        Some(b) => b,
                        None => {
                            q.draining = false;
                            return;
                        }
                    }
                };
                self.store(next);
            },
        }
    }

    fn store(self: &Arc<Self>, batch: SealedBatch) {
        let p = batch.partition;
        let count = batch.payload.len() as u64;
        // A panic here is a driver bug: it fails this batch, never the worker or a waiter.
        let result = diaspora_api::catch_panic("the job storing a batch", || {
            #[cfg(test)]
            if self
                .panic_in_store
                .swap(false, std::sync::atomic::Ordering::SeqCst)
            {
                panic!("injected store panic");
            }
            // One stat per batch: a topic marked complete accepts no more events.
            if self.topic.is_complete() {
                Err(Error::TopicComplete(self.topic.name.clone()))
            } else {
                self.topic.partitions[p]
                    .append(&batch.payload)
                    .map_err(Error::from)
            }
        })
        .and_then(|r| r);
        // Release the data before waking anyone. The events are stored (or not) by now: a panic
        // in a user's buffer owner while dropping it changes neither (the hook reported it).
        let mut payload = batch.payload;
        let spare = diaspora_api::catch_panic("releasing a batch's data", move || {
            payload.recycle().then_some(payload)
        })
        .ok()
        .flatten();
        let result = match result {
            Ok(base) => {
                // Set before the futures complete, so a flush that waited for them syncs it.
                if self.topic.flush_behavior == FlushBehavior::OnFlush {
                    self.dirty[p].store(true, std::sync::atomic::Ordering::SeqCst);
                }
                Ok(base)
            }
            Err(e) => {
                // Counted before the futures complete, so a flush that waited for them sees it.
                let e = Arc::new(e);
                self.losses.record(count, e.clone());
                Err(Error::Shared(e))
            }
        };
        batch.completion.complete(result);
        let job = {
            let mut st = self.state.lock();
            st.in_flight -= 1;
            st.in_flight_per_partition[p] -= 1;
            if let Some(spare) = spare.filter(|_| st.spare.len() < MAX_SPARE_PAYLOADS) {
                st.spare.push(spare);
            }
            self.cond.notify_all();
            // What accumulated while this batch was stored goes now if it is due (adaptive
            // batches are due as soon as their partition's writer is idle).
            if self.should_seal(&st, p) {
                self.seal_locked(&mut st, p, false)
            } else {
                None
            }
        };
        self.schedule(job);
    }

    /// Appends one event (data checksum `crc`) to the open batch of `p`, opening one if
    /// needed; gives the batch's completion and the event's index in it. A serializer that
    /// fails or panics leaves no partial bytes and the error is returned (the caller records
    /// the loss).
    fn append_locked<'s>(
        &self,
        st: &'s mut State,
        p: usize,
        metadata: &Metadata,
        data: DataView,
        crc: u32,
    ) -> Result<(&'s Arc<Completion<u64>>, u64)> {
        let State { open, spare, .. } = st;
        let batch = open[p].get_or_insert_with(|| OpenBatch {
            payload: spare.pop().unwrap_or_default(),
            completion: Completion::new(),
            data_bytes: 0,
        });
        let before = batch.payload.meta.len();
        let meta = &mut batch.payload.meta;
        let serialized = diaspora_api::catch_panic("the topic's serializer", || {
            self.topic.policies.serializer.serialize(metadata, meta)
        })
        .and_then(|r| r);
        let len = batch.payload.meta.len() - before;
        let len = match (serialized, u32::try_from(len)) {
            (Ok(()), Ok(len)) => len,
            (r, _) => {
                batch.payload.meta.truncate(before);
                return Err(r.err().unwrap_or_else(|| {
                    Error::ValidationFailed("serialized metadata exceeds 4 GiB".into())
                }));
            }
        };
        let index = batch.payload.len() as u64;
        batch.data_bytes += data.len();
        batch.payload.push_event(len, data, crc);
        Ok((&batch.completion, index))
    }

    fn push(
        self: &Arc<Self>,
        metadata: Metadata,
        data: DataView,
        partition: Option<usize>,
    ) -> Future<EventId> {
        let n = self.topic.partitions.len();
        let p = match self
            .topic
            .policies
            .select_partition(&metadata, n, partition)
        {
            Ok(p) => p,
            Err(e) => return Future::failed(self.losses.reject(e)),
        };
        // Checksummed before taking the lock, so concurrent pushers do not serialize on it.
        let crc = data_crc(&data);
        let mut st = self.state.lock();
        let (completion, index) = match self.append_locked(&mut st, p, &metadata, data, crc) {
            Ok(appended) => appended,
            Err(e) => return Future::failed(self.losses.reject(e)),
        };
        let future = completion.future_with(move |base| base + index);
        let job = if self.should_seal(&st, p) {
            self.seal_locked(&mut st, p, true)
        } else {
            None
        };
        drop(st);
        self.schedule(job);
        future
    }

    /// [`push`](Self::push) for many events under one lock, with one future for all.
    fn push_many(
        self: &Arc<Self>,
        events: Vec<(Metadata, DataView)>,
        partition: Option<usize>,
    ) -> Future<Vec<EventId>> {
        let total = events.len();
        let n = self.topic.partitions.len();
        let mut runs: Vec<Run> = Vec::new();
        let mut touched = vec![false; n];
        // The first event the partition selector or the serializer failed on, as repeated
        // `push` calls would: that event is lost (and counted), the others go on.
        let mut failed: Option<Arc<Error>> = None;
        // Unlike `push`, partitions and checksums are computed under the lock (released only
        // while a full batch is handed over): the events are not moved once more.
        let mut st = self.state.lock();
        for (metadata, data) in events {
            let p = match self
                .topic
                .policies
                .select_partition(&metadata, n, partition)
            {
                Ok(p) => p,
                Err(e) => {
                    self.lose_one(&mut failed, e);
                    continue;
                }
            };
            let crc = data_crc(&data);
            let (completion, index) = match self.append_locked(&mut st, p, &metadata, data, crc) {
                Ok(appended) => appended,
                Err(e) => {
                    self.lose_one(&mut failed, e);
                    continue;
                }
            };
            match runs.last_mut() {
                Some(r) if Arc::ptr_eq(&r.completion, completion) && r.next() == index => {
                    r.count += 1
                }
                _ => runs.push(Run {
                    completion: completion.clone(),
                    first: index,
                    count: 1,
                }),
            }
            touched[p] = true;
            // Full batches go at once (an adaptive batch whose writer is idle waits for the
            // end of the call, so that the call's events share batches).
            if self.is_full(&st, p) {
                self.seal_and_schedule(&mut st, p);
            }
        }
        for p in (0..n).filter(|&p| touched[p]) {
            if self.should_seal(&st, p) {
                self.seal_and_schedule(&mut st, p);
            }
        }
        drop(st);
        if let Some(e) = failed {
            return Future::failed(Error::Shared(e));
        }
        Future::pending(Box::new(ManyIds {
            runs,
            ids: Vec::with_capacity(total),
        }))
    }

    /// Seals the open batch of `p` (waiting for room) and schedules it at once, outside the
    /// lock: a later seal of the same call may wait for it to be stored.
    fn seal_and_schedule(self: &Arc<Self>, st: &mut parking_lot::MutexGuard<'_, State>, p: usize) {
        let job = self.seal_locked(st, p, true);
        parking_lot::MutexGuard::unlocked(st, || self.schedule(job));
    }

    /// Records one event of a `push_many` lost because of `e` (at once, so a flush that
    /// follows the call counts it); `failed` keeps the first reason for the call's future.
    fn lose_one(&self, failed: &mut Option<Arc<Error>>, e: Error) {
        let e = Arc::new(e);
        self.losses.record(1, e.clone());
        failed.get_or_insert(e);
    }

    fn flush(self: &Arc<Self>) -> Future<()> {
        for p in 0..self.topic.partitions.len() {
            let job = {
                let mut st = self.state.lock();
                self.seal_locked(&mut st, p, true)
            };
            self.schedule(job);
        }
        let mut st = self.state.lock();
        st.unfinished.retain(|c| !c.is_complete());
        let waiting = st.unfinished.clone();
        drop(st);
        let mut waiter = FlushWaiter {
            shared: self.clone(),
            waiting,
        };
        // Already done (or nothing to wait for): the result, with earlier failures, right away.
        match waiter.wait_until(Some(Instant::now())) {
            Some(Ok(())) => Future::ready(()),
            Some(Err(e)) => Future::failed(e),
            None => Future::pending(Box::new(waiter)),
        }
    }
}

/// Consecutive events of one `push_many` call in one batch: indexes `first..first + count`.
struct Run {
    completion: Arc<Completion<u64>>,
    first: u64,
    count: u64,
}

impl Run {
    fn next(&self) -> u64 {
        self.first + self.count
    }
}

/// The future of a `push_many`: the ids of its runs, in order, once their batches are stored.
struct ManyIds {
    runs: Vec<Run>,
    /// Ids of the runs whose batches were waited for.
    ids: Vec<EventId>,
}

impl Waitable<Vec<EventId>> for ManyIds {
    fn wait_until(&mut self, deadline: Option<Instant>) -> Option<Result<Vec<EventId>>> {
        let mut done = 0;
        let mut failed = None;
        for r in &self.runs {
            match r.completion.wait_until(deadline) {
                None => break,
                Some(Ok(base)) => self.ids.extend(base + r.first..base + r.next()),
                Some(Err(e)) => {
                    failed = Some(e);
                    break;
                }
            }
            done += 1;
        }
        self.runs.drain(..done);
        if let Some(e) = failed {
            return Some(Err(e));
        }
        self.runs
            .is_empty()
            .then(|| Ok(std::mem::take(&mut self.ids)))
    }

    fn is_ready(&self) -> bool {
        self.runs.iter().all(|r| r.completion.is_complete())
    }
}

/// Waits for every batch that was in flight when `flush` was called, then reports every event
/// lost since the previous flush (including batches that failed before this one was called).
struct FlushWaiter {
    shared: Arc<Shared>,
    waiting: Vec<Arc<Completion<u64>>>,
}

impl Waitable<()> for FlushWaiter {
    fn wait_until(&mut self, deadline: Option<Instant>) -> Option<Result<()>> {
        while let Some(c) = self.waiting.last() {
            // A failed batch is counted in the losses before its completion is set.
            let _ = c.wait_until(deadline)?;
            self.waiting.pop();
        }
        // `on_flush`: the stored events become durable before the flush completes. A failed
        // sync fails this flush; the partition stays dirty, so the next flush syncs it again.
        for (p, dirty) in self.shared.dirty.iter().enumerate() {
            if dirty.swap(false, std::sync::atomic::Ordering::SeqCst) {
                if let Err(e) = self.shared.topic.partitions[p].sync_files() {
                    dirty.store(true, std::sync::atomic::Ordering::SeqCst);
                    return Some(Err(e.into()));
                }
            }
        }
        Some(self.shared.losses.take_result())
    }

    fn is_ready(&self) -> bool {
        self.waiting.iter().all(|c| c.is_complete())
    }
}

impl ProducerBackend for FilesProducer {
    fn push(
        &self,
        metadata: Metadata,
        data: DataView,
        partition: Option<usize>,
    ) -> Future<EventId> {
        self.shared.push(metadata, data, partition)
    }

    fn push_many(
        &self,
        events: Vec<(Metadata, DataView)>,
        partition: Option<usize>,
    ) -> Future<Vec<EventId>> {
        self.shared.push_many(events, partition)
    }

    fn flush(&self) -> Future<()> {
        self.shared.flush()
    }

    /// Seals every open batch (blocking while `max_num_batches` are in flight, as `push`
    /// does) without waiting for them or taking the losses `flush` reports.
    fn send_pending(&self) {
        for p in 0..self.shared.topic.partitions.len() {
            let job = {
                let mut st = self.shared.state.lock();
                self.shared.seal_locked(&mut st, p, true)
            };
            self.shared.schedule(job);
        }
    }
}

impl Drop for FilesProducer {
    fn drop(&mut self) {
        // Never lose pushed events: store them before the producer goes away.
        let _ = self.shared.flush().get();
    }
}
