//! The fabric driver's producer: per-partition batches sent as one `ProduceBatch` each, with
//! a sequence number per partition, several batches in flight, credits and retries.
//!
//! `push` serializes the metadata into the open batch of its partition and keeps a reference
//! to the data (the service stages it into registered memory when the batch is sent). A batch
//! is *sealed* and sent when it is full (fixed batch size), when its partition has fewer than
//! [`ADAPTIVE_WINDOW`] batches in flight (adaptive: batches grow as much as the network and
//! the server are slower than the application), on `flush`, or at the server's batch limits.
//!
//! **Sequence numbers.** Each producer instance draws a random `producer_id`; each partition
//! numbers its batches 0, 1, 2, ... in seal order. The server stores a partition's batches in
//! sequence order and answers a resent, already stored batch with its original first id, so a
//! retry never duplicates and order holds with several batches in flight (with either
//! [`Ordering`](diaspora_api::Ordering): loose ordering is allowed to be strict).
//!
//! **Credits.** At most `max_num_batches` batches are in flight (sealed, not yet answered);
//! `push` blocks beyond that, so memory is bounded by `max_num_batches` batches.
//!
//! **Retries.** A batch that fails with a retryable error (session broken, server restarted,
//! timeout) or out of order is resent with the same sequence number after a back-off (on the
//! timer thread, never on a progress thread), until the driver's deadline (`timeout_ms` from
//! its sealing) passes; then every future of the batch fails with an error naming the server.
//!
//! **Sending.** With a thread pool in the producer options, each sealed batch is one job on
//! it that sends the next batch of its partition and waits for the server's answer (the pool
//! bounds the sends in flight; a flush is ready as soon as the last job finished). Without
//! one, batches are sent at once and answered asynchronously (on the engine's progress
//! thread, which only completes futures and seals the next batch).
//!
//! **Flush.** `flush` seals every open batch and completes when every batch sealed before it
//! is answered; it fails with [`Error::EventsLost`] if any event pushed since the previous
//! flush was not stored (rejected by `push`, or its batch failed, even before the flush was
//! called and with its futures ignored), naming how many and the first reason.

use std::sync::Arc;
use std::time::{Duration, Instant};

use std::collections::VecDeque;

use diaspora_api::{
    BatchSize, Completion, DataView, Error, EventId, Future, Losses, Metadata, ProducerBackend,
    ProducerOptions, Result, ThreadPool, Waitable,
};
use parking_lot::{Condvar, Mutex, MutexGuard};

use crate::error::FabricError;

use crate::service::{OutBatch, ServiceError};
use crate::timer;
use crate::topic::TopicShared;

/// Adaptive batching seals a partition's batch while it has fewer batches than this in flight.
pub const ADAPTIVE_WINDOW: usize = 2;
/// Most bytes per batch on this side, whatever the server accepts: the data that does not go
/// zero copy is staged in a buffer of the batch's size, and buffers of at most this size are
/// reused from the pool instead of being allocated and faulted in per batch.
pub const MAX_BATCH_BYTES: u64 = 8 << 20;
/// First retry back-off; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(5);
/// Longest retry back-off.
const MAX_BACKOFF: Duration = Duration::from_millis(500);
/// Bytes of the batch table per event besides its metadata (lengths and CRC).
const TABLE_BYTES_PER_EVENT: u64 = 12;
/// Batches remembered for the next flush before completed ones are forgotten.
const PRUNE_AT: usize = 64;

struct OpenBatch {
    meta: Vec<u8>,
    meta_lens: Vec<u32>,
    data: Vec<DataView>,
    data_crcs: Vec<u32>,
    bytes: u64,
    completion: Arc<Completion<u64>>,
}

impl OpenBatch {
    fn new() -> Self {
        OpenBatch {
            meta: Vec::new(),
            meta_lens: Vec::new(),
            data: Vec::new(),
            data_crcs: Vec::new(),
            bytes: 0,
            completion: Completion::new(),
        }
    }
}

/// A batch sealed and not known to be answered.
struct Sealed {
    completion: Arc<Completion<u64>>,
}

struct State {
    open: Vec<Option<OpenBatch>>,
    next_seq: Vec<u64>,
    in_flight: usize,
    in_flight_per_partition: Vec<usize>,
    since_flush: Vec<Sealed>,
}

struct Shared {
    topic: Arc<TopicShared>,
    producer_id: u64,
    batch_size: BatchSize,
    max_batches: usize,
    max_events: usize,
    /// The server's most bytes per batch: a larger event is refused.
    max_bytes: u64,
    /// Bytes at which this side seals a batch (at most [`MAX_BATCH_BYTES`]); a single event
    /// up to `max_bytes` still goes, alone.
    seal_bytes: u64,
    state: Mutex<State>,
    cond: Condvar,
    /// Events lost since the last flush reported them.
    losses: Losses,
    /// Where sends run (`None`: asynchronously, from the pushing thread).
    pool: Option<ThreadPool>,
    /// Sealed batches waiting for their job, per partition, in sequence order.
    queues: Vec<Mutex<VecDeque<Queued>>>,
}

/// A sealed batch waiting for its send job.
type Queued = (Arc<OutBatch>, Arc<Completion<u64>>);

/// The fabric driver's [`ProducerBackend`]. Dropping it flushes.
pub struct FabricProducer {
    shared: Arc<Shared>,
}

/// A random 64-bit producer id (no dependency: std's randomly keyed hasher, the clock and the
/// process id).
pub(crate) fn random_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.write_u32(std::process::id());
    h.finish()
}

impl FabricProducer {
    pub(crate) fn new(topic: Arc<TopicShared>, _name: &str, options: ProducerOptions) -> Self {
        let n = topic.info.num_partitions;
        let limits = topic.service.batch_limits();
        FabricProducer {
            shared: Arc::new(Shared {
                producer_id: random_id(),
                batch_size: options.batch_size,
                max_batches: options.max_num_batches.max(1),
                max_events: limits.max_events.max(1),
                max_bytes: limits.max_bytes.max(1),
                seal_bytes: limits.max_bytes.clamp(1, MAX_BATCH_BYTES),
                state: Mutex::new(State {
                    open: (0..n).map(|_| None).collect(),
                    next_seq: vec![0; n],
                    in_flight: 0,
                    in_flight_per_partition: vec![0; n],
                    since_flush: Vec::new(),
                }),
                losses: Losses::new(),
                pool: options.thread_pool,
                queues: (0..n).map(|_| Mutex::new(VecDeque::new())).collect(),
                cond: Condvar::new(),
                topic,
            }),
        }
    }

    /// This producer's id (as the server sees it).
    pub fn producer_id(&self) -> u64 {
        self.shared.producer_id
    }
}

impl Shared {
    /// Whether adding an event of `bytes` to the open batch of `p` would exceed the limits.
    fn would_overflow(&self, st: &State, p: usize, bytes: u64) -> bool {
        st.open[p].as_ref().is_some_and(|b| {
            !b.meta_lens.is_empty()
                && (b.meta_lens.len() >= self.max_events || b.bytes + bytes > self.seal_bytes)
        })
    }

    fn should_seal(&self, st: &State, p: usize) -> bool {
        let Some(b) = &st.open[p] else { return false };
        let count = b.meta_lens.len();
        if count == 0 {
            return false;
        }
        if count >= self.max_events || b.bytes >= self.seal_bytes {
            return true;
        }
        match self.batch_size {
            BatchSize::Fixed(n) => count >= n,
            BatchSize::Adaptive => st.in_flight_per_partition[p] < ADAPTIVE_WINDOW,
        }
    }

    /// Seals the open batch of `p`. With `block`, waits for a credit first (bounded by the
    /// driver's deadline: credits come back when batches are answered or fail); without,
    /// gives up when none is free. Returns the batch to send once the lock is released.
    fn seal_locked(
        &self,
        st: &mut MutexGuard<'_, State>,
        p: usize,
        block: bool,
    ) -> Option<(Arc<OutBatch>, Arc<Completion<u64>>)> {
        st.open[p].as_ref().filter(|b| !b.meta_lens.is_empty())?;
        while st.in_flight >= self.max_batches {
            if !block {
                return None;
            }
            self.cond.wait(st);
        }
        let b = st.open[p].take()?;
        let seq = st.next_seq[p];
        st.next_seq[p] += 1;
        st.in_flight += 1;
        st.in_flight_per_partition[p] += 1;
        if st.since_flush.len() >= PRUNE_AT {
            prune(st);
        }
        st.since_flush.push(Sealed {
            completion: b.completion.clone(),
        });
        let batch = OutBatch {
            topic: self.topic.info.name.clone(),
            partition: p,
            producer_id: self.producer_id,
            seq,
            meta: b.meta,
            meta_lens: b.meta_lens,
            data: b.data,
            data_crcs: b.data_crcs,
            deadline: Instant::now() + self.topic.timeout,
        };
        Some((Arc::new(batch), b.completion))
    }

    fn send(self: &Arc<Self>, batch: Arc<OutBatch>, completion: Arc<Completion<u64>>) {
        let Some(pool) = &self.pool else {
            return self.attempt(batch, completion, FIRST_BACKOFF);
        };
        // One job per batch; each sends the oldest queued batch of the partition, so sends
        // leave in sequence order whatever order the pool runs the jobs in.
        let p = batch.partition;
        self.queues[p].lock().push_back((batch, completion));
        let me = self.clone();
        pool.push_work(
            move || {
                let next = me.queues[p].lock().pop_front();
                if let Some((b, c)) = next {
                    me.attempt(b, c.clone(), FIRST_BACKOFF);
                    // Bounded: every batch is answered or failed by its deadline.
                    let _ = c.wait_until(None);
                }
            },
            0,
        );
    }

    fn attempt(
        self: &Arc<Self>,
        batch: Arc<OutBatch>,
        completion: Arc<Completion<u64>>,
        backoff: Duration,
    ) {
        let me = self.clone();
        let b = batch.clone();
        self.topic.service.produce(
            batch,
            Box::new(move |r| me.answered(b, completion, backoff, r)),
        );
    }

    /// The outcome of one attempt (on whatever thread the service answers on).
    fn answered(
        self: &Arc<Self>,
        batch: Arc<OutBatch>,
        completion: Arc<Completion<u64>>,
        backoff: Duration,
        r: std::result::Result<u64, ServiceError>,
    ) {
        let result = match r {
            Ok(first) => Ok(first),
            Err(e @ (ServiceError::Retryable { .. } | ServiceError::OutOfOrder { .. })) => {
                let next = Instant::now() + backoff;
                if next < batch.deadline {
                    let me = self.clone();
                    timer::at(next, move || {
                        me.attempt(batch, completion, (backoff * 2).min(MAX_BACKOFF))
                    });
                    return;
                }
                Err(Error::from(FabricError::BatchTimedOut {
                    partition: batch.partition,
                    seq: batch.seq,
                    events: batch.len(),
                    timeout_ms: self.topic.timeout.as_millis(),
                    reason: e.to_string(),
                }))
            }
            Err(e) => Err(e.into_api()),
        };
        let result = result.map_err(|e| {
            // Counted before the futures complete, so a flush that waited for them sees it.
            let e = Arc::new(e);
            self.losses.record(batch.len() as u64, e.clone());
            Error::Shared(e)
        });
        let p = batch.partition;
        // Release the caller's data before waking anyone.
        drop(batch);
        completion.complete(result);
        let next = {
            let mut st = self.state.lock();
            st.in_flight -= 1;
            st.in_flight_per_partition[p] -= 1;
            self.cond.notify_all();
            if self.should_seal(&st, p) {
                self.seal_locked(&mut st, p, false)
            } else {
                None
            }
        };
        if let Some((b, c)) = next {
            self.send(b, c);
        }
    }

    fn push(
        self: &Arc<Self>,
        metadata: Metadata,
        data: DataView,
        partition: Option<usize>,
    ) -> Future<EventId> {
        let n = self.topic.info.num_partitions;
        let p = match self
            .topic
            .policies
            .select_partition(&metadata, n, partition)
        {
            Ok(p) => p,
            Err(e) => return Future::failed(self.losses.reject(e)),
        };
        let crc = data_crc(&data);
        let mut serialized = Vec::new();
        if let Err(e) = self
            .topic
            .policies
            .serializer
            .serialize(&metadata, &mut serialized)
        {
            return Future::failed(self.losses.reject(e));
        }
        let Ok(len) = u32::try_from(serialized.len()) else {
            return Future::failed(self.losses.reject(Error::ValidationFailed(
                "serialized metadata exceeds 4 GiB".into(),
            )));
        };
        // As the server counts a batch: its table (12 bytes per event + metadata) and data.
        let bytes = TABLE_BYTES_PER_EVENT + serialized.len() as u64 + data.len();
        if bytes > self.max_bytes || data.len() > u64::from(u32::MAX) {
            return Future::failed(self.losses.reject(Error::ValidationFailed(format!(
                "event of {bytes} bytes (metadata and data) exceeds the server's batch limit of {} bytes (and data of one event is limited to 4 GiB)",
                self.max_bytes
            ))));
        }
        let mut st = self.state.lock();
        if self.would_overflow(&st, p, bytes) {
            // Sent at once, outside the lock: it holds a credit, and sealing the event's own
            // batch below may wait for one (with one batch in flight at most, it waited for
            // this one's, which was never sent).
            if let Some((b, c)) = self.seal_locked(&mut st, p, true) {
                MutexGuard::unlocked(&mut st, || self.send(b, c));
            }
        }
        let batch = st.open[p].get_or_insert_with(OpenBatch::new);
        let index = batch.meta_lens.len() as u64;
        batch.meta.extend_from_slice(&serialized);
        batch.meta_lens.push(len);
        batch.bytes += bytes;
        batch.data.push(data);
        batch.data_crcs.push(crc);
        let future = batch.completion.future_with(move |base| base + index);
        let sealed = if self.should_seal(&st, p) {
            self.seal_locked(&mut st, p, true)
        } else {
            None
        };
        drop(st);
        if let Some((b, c)) = sealed {
            self.send(b, c);
        }
        future
    }

    /// Seals and sends every open batch (blocking while `max_num_batches` are in flight).
    fn send_open(self: &Arc<Self>) {
        for p in 0..self.topic.info.num_partitions {
            let sealed = {
                let mut st = self.state.lock();
                self.seal_locked(&mut st, p, true)
            };
            if let Some((b, c)) = sealed {
                self.send(b, c);
            }
        }
    }

    fn flush(self: &Arc<Self>) -> Future<()> {
        self.send_open();
        let mut st = self.state.lock();
        prune(&mut st);
        let waiting: Vec<Arc<Completion<u64>>> = st
            .since_flush
            .iter()
            .map(|s| s.completion.clone())
            .collect();
        drop(st);
        let mut waiter = FlushWaiter {
            shared: self.clone(),
            waiting,
        };
        match waiter.wait_until(Some(Instant::now())) {
            Some(Ok(())) => Future::ready(()),
            Some(Err(e)) => Future::failed(e),
            None => Future::pending(Box::new(waiter)),
        }
    }
}

/// Forgets the completed batches of `since_flush` (their failures are in the losses).
fn prune(st: &mut State) {
    st.since_flush.retain(|s| !s.completion.is_complete());
}

/// CRC-32 of an event's data, over its segments in order.
pub(crate) fn data_crc(data: &DataView) -> u32 {
    let mut h = crc32fast::Hasher::new();
    for s in data.segments() {
        h.update(s);
    }
    h.finalize()
}

/// Waits for every batch sealed before the flush, then reports every event lost since the
/// previous flush.
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
        Some(self.shared.losses.take_result())
    }

    fn is_ready(&self) -> bool {
        self.waiting.iter().all(|c| c.is_complete())
    }
}

impl ProducerBackend for FabricProducer {
    fn push(
        &self,
        metadata: Metadata,
        data: DataView,
        partition: Option<usize>,
    ) -> Future<EventId> {
        self.shared.push(metadata, data, partition)
    }

    fn flush(&self) -> Future<()> {
        self.shared.flush()
    }

    /// A push future waited on before its batch was sent sends the open batches, so that a
    /// wait right after `push` with a large fixed batch size does not last until `flush`.
    fn send_pending(&self) {
        self.shared.send_open();
    }
}

impl Drop for FabricProducer {
    fn drop(&mut self) {
        // Never drop pushed events silently: send them and wait (bounded: every batch fails
        // within the driver's deadline).
        let _ = self.shared.flush().get();
    }
}
