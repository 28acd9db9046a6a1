//! The fabric driver's consumer: long-poll fetches per partition, prefetching, selection and
//! data fetched once per batch, coalesced acknowledgements.
//!
//! **Fetch pipeline.** Each consumed partition has at most one `Fetch` in flight; all the
//! consumed partitions are fetched concurrently, so the window of requests in flight is the
//! number of partitions. A fetch that returns events is followed at once by the next one
//! (prefetch) until `max_num_batches` batches of that partition are buffered; a fetch that
//! returns nothing is reissued by the next pull (long poll: the server holds it up to
//! [`LONG_POLL`] or the pull's remaining wait, whichever is shorter).
//!
//! **Callbacks.** The service answers on its progress threads; answers are only queued there.
//! Deserialization, the [`DataSelector`], the [`DataAllocator`] and data fetches run on the
//! thread that pulls (one batch at a time, so each partition's events stay in order), never
//! on a progress thread.
//!
//! **Data.** Without a selector no data moves. With one, the batch's metadata comes first,
//! the selector runs per event, then one `FetchData` brings every selected range of the batch
//! back to back; each event gets a zero-copy slice of it, or its allocator's buffer filled
//! from it. The pulling thread looks one batch ahead: before it waits for a batch's data, it
//! runs the selector on the next buffered batch and requests that batch's data, so the
//! network works while the application consumes. Whole-event selections are checked against the stored data CRC.
//! A batch is turned into events at most [`MAX_PREPARED_BYTES`] of selected data at a time
//! (the rest waits at the head of its partition's queue), so the data requested or landed
//! ahead of the application stays under about twice that, whatever the events' size.
//!
//! **End of stream.** When the topic is complete and every consumed partition has been read
//! to its end, `pull` returns the end-of-stream marker (every time).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering as AtomicOrdering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use diaspora_api::{
    BatchSize, ConsumerBackend, ConsumerOptions, DataAllocator, DataDescriptor, DataSelector,
    DataView, Error, Event, Future, Metadata, Result, Segment, Waitable,
};
use parking_lot::{Condvar, Mutex};

use crate::acks::{AckHandle, Acks};
use crate::error::FabricError;
use crate::service::{DataRange, Done, FetchData, FetchRequest, FetchedBatch, ServiceError};
use crate::topic::TopicShared;

/// Events asked per fetch with an adaptive batch size.
pub const ADAPTIVE_EVENTS: u32 = 4_096;
/// Longest time the server holds a fetch that has nothing to return.
pub const LONG_POLL: Duration = Duration::from_millis(200);
/// Most bytes asked per fetch (and per `FetchData`).
const MAX_FETCH_BYTES: u64 = 16 << 20;
/// Most selected data bytes a batch is turned into events with (at least one event): a longer
/// fetched batch is split, its rest put back first in its partition's queue. With the
/// look-ahead, a consumer so has at most about twice this much data requested or landed
/// that the application has not pulled yet, whatever the events' size (a fetch of 4,096
/// events of 64 KiB otherwise brought 256 MiB per batch).
const MAX_PREPARED_BYTES: u64 = MAX_FETCH_BYTES;
/// Most ranges per `FetchData` (24 bytes each: the request must fit one eager frame).
const MAX_RANGES: usize = 256;
/// Longest a waiting pull sleeps before it checks for retries.
const MAX_NAP: Duration = Duration::from_millis(50);
/// Pause before refetching a partition after a failure.
const RETRY_PAUSE: Duration = Duration::from_millis(20);

struct Slot {
    partition: usize,
    /// Next id to fetch.
    next: u64,
    in_flight: bool,
    ready: VecDeque<FetchedBatch>,
    /// Events in `ready`.
    buffered: usize,
    /// The topic is complete and `next` is the end of this partition.
    end: bool,
    /// Since when fetches of this partition have been failing.
    failing_since: Option<Instant>,
    /// No fetch before this.
    retry_at: Option<Instant>,
    /// The last fetch returned nothing (or failed): the next one may long-poll, and pulls
    /// do not wait for this partition to keep the round robin.
    empty: bool,
}

struct State {
    slots: Vec<Slot>,
    /// Slot to take a batch from first.
    rr: usize,
    /// Events ready to be returned.
    events: VecDeque<Result<Event>>,
}

/// `FetchData` requests in flight for one batch.
struct DataWait {
    p: usize,
    deadline: Instant,
    receivers: Vec<mpsc::Receiver<std::result::Result<Bytes, ServiceError>>>,
}

/// A batch whose metadata is deserialized and whose selected data is requested.
struct Prepared {
    p: usize,
    batch: FetchedBatch,
    metas: Vec<Result<Metadata>>,
    /// With a selector: each event's selection and the data requests (`None`: nothing
    /// selected).
    selected: Option<(Vec<Result<DataDescriptor>>, Option<DataWait>)>,
}

struct Inner {
    topic: Arc<TopicShared>,
    name: String,
    acker: Arc<AckHandle>,
    selector: Option<DataSelector>,
    allocator: Option<DataAllocator>,
    per_fetch: u32,
    max_buffered: usize,
    state: Mutex<State>,
    cond: Condvar,
    /// Held while a batch is turned into events: one batch at a time keeps partition order.
    /// It holds the next batch, already prepared (its data on the way) while the current one
    /// is finished: a look-ahead of one batch when there is a selector.
    processing: Mutex<Option<Prepared>>,
    /// Whether `processing` holds a prepared batch (readable without waiting for the lock).
    ahead: AtomicBool,
    /// Pull futures not yet resolved: while there are some, fetches continue in the
    /// background, so a pending pull becomes ready without being waited on.
    pending_pulls: AtomicUsize,
    /// The consumer was dropped: no new fetches.
    closed: AtomicBool,
}

/// The fabric driver's [`ConsumerBackend`].
pub struct FabricConsumer {
    inner: Arc<Inner>,
}

impl FabricConsumer {
    pub(crate) fn new(
        topic: Arc<TopicShared>,
        name: &str,
        options: ConsumerOptions,
    ) -> Result<Self> {
        let n = topic.info.num_partitions;
        let partitions = options.partitions_of(n)?;
        let mut start = Vec::with_capacity(partitions.len());
        for &p in &partitions {
            start.push(
                topic
                    .service
                    .subscribe(&topic.info.name, name, p)
                    .map_err(ServiceError::into_api)?,
            );
        }
        let per_fetch = match options.batch_size {
            BatchSize::Adaptive => ADAPTIVE_EVENTS,
            BatchSize::Fixed(k) => u32::try_from(k.max(1)).unwrap_or(u32::MAX),
        };
        let acks = Acks::new(topic.clone(), name, &partitions, &start);
        Ok(FabricConsumer {
            inner: Arc::new(Inner {
                name: name.to_owned(),
                acker: Arc::new(AckHandle(acks)),
                selector: options.data_selector,
                allocator: options.data_allocator,
                per_fetch,
                max_buffered: per_fetch as usize * options.max_num_batches.max(1),
                state: Mutex::new(State {
                    slots: partitions
                        .iter()
                        .zip(&start)
                        .map(|(&partition, &next)| Slot {
                            partition,
                            next,
                            in_flight: false,
                            ready: VecDeque::new(),
                            buffered: 0,
                            end: false,
                            failing_since: None,
                            retry_at: None,
                            empty: false,
                        })
                        .collect(),
                    rr: 0,
                    events: VecDeque::new(),
                }),
                cond: Condvar::new(),
                processing: Mutex::new(None),
                ahead: AtomicBool::new(false),
                pending_pulls: AtomicUsize::new(0),
                closed: AtomicBool::new(false),
                topic,
            }),
        })
    }
}

impl Inner {
    /// An event (or error, or the end marker) if one is available now; otherwise makes sure
    /// every partition is being fetched and returns `None`.
    fn try_next(self: &Arc<Self>, wait: Duration) -> Option<Result<Event>> {
        if let Some(e) = self.state.lock().events.pop_front() {
            return Some(e);
        }
        {
            let mut ahead = self.processing.lock();
            let current = match ahead.take() {
                Some(prepared) => Some(prepared),
                None => {
                    let taken = {
                        let mut st = self.state.lock();
                        if let Some(e) = st.events.pop_front() {
                            return Some(e);
                        }
                        take_batch(&mut st)
                    };
                    taken.map(|(_, partition, batch)| self.prepare(partition, batch))
                }
            };
            if let Some(current) = current {
                // Look ahead: request the next batch's data before waiting for this one's.
                if self.selector.is_some() {
                    let next = take_batch(&mut self.state.lock());
                    *ahead = next.map(|(_, partition, batch)| self.prepare(partition, batch));
                }
                self.ahead.store(ahead.is_some(), AtomicOrdering::SeqCst);
                let events = self.finish(current);
                let mut st = self.state.lock();
                st.events.extend(events);
                if let Some(e) = st.events.pop_front() {
                    drop(st);
                    drop(ahead);
                    self.fetch_more(Duration::ZERO);
                    return Some(e);
                }
            }
        }
        {
            let st = self.state.lock();
            if st.events.is_empty()
                && !self.ahead.load(AtomicOrdering::SeqCst)
                && st
                    .slots
                    .iter()
                    .all(|s| s.end && s.ready.is_empty() && !s.in_flight)
            {
                return Some(Ok(Event::no_more_events()));
            }
        }
        self.fetch_more(wait);
        None
    }

    /// Issues a fetch for every partition that has none in flight, room in its buffer, and no
    /// pending retry pause.
    fn fetch_more(self: &Arc<Self>, wait: Duration) {
        if self.closed.load(AtomicOrdering::SeqCst) {
            return;
        }
        let now = Instant::now();
        let long_poll = wait.min(LONG_POLL).as_millis() as u32;
        let requests: Vec<FetchRequest> = {
            let mut st = self.state.lock();
            st.slots
                .iter_mut()
                .filter(|s| {
                    !s.in_flight
                        && !s.end
                        && s.buffered < self.max_buffered
                        && s.retry_at.is_none_or(|t| t <= now)
                })
                .map(|s| {
                    s.in_flight = true;
                    // Only a partition known to be empty is long-polled: one that had events
                    // answers at once, which keeps the round robin quick.
                    let wait_ms = if s.empty { long_poll } else { 0 };
                    FetchRequest {
                        topic: self.topic.info.name.clone(),
                        partition: s.partition,
                        from: s.next,
                        max_events: self.per_fetch,
                        max_bytes: MAX_FETCH_BYTES,
                        wait_ms,
                        data: FetchData::None,
                        deadline: now + self.topic.timeout + wait.min(LONG_POLL),
                    }
                })
                .collect()
        };
        for r in requests {
            let me = self.clone();
            let (partition, from) = (r.partition, r.from);
            self.topic
                .service
                .fetch(r, Box::new(move |res| me.fetched(partition, from, res)));
        }
    }

    /// A fetch answered (on a progress thread: queue only, no user code).
    fn fetched(
        self: &Arc<Self>,
        partition: usize,
        from: u64,
        res: std::result::Result<FetchedBatch, ServiceError>,
    ) {
        let mut prefetch = false;
        let mut again = None;
        {
            let mut st = self.state.lock();
            let timeout = self.topic.timeout;
            let mut error = None;
            let Some(slot) = st.slots.iter_mut().find(|s| s.partition == partition) else {
                return;
            };
            slot.in_flight = false;
            slot.empty = !matches!(&res, Ok(b) if !b.events.is_empty());
            match res {
                Ok(b) if b.first_id != from => {
                    slot.retry_at = Some(Instant::now() + RETRY_PAUSE);
                    error = Some(Error::from(FabricError::BadAnswer {
                        server: self
                            .topic
                            .info
                            .placement
                            .get(partition)
                            .cloned()
                            .unwrap_or_default(),
                        what: format!(
                            "fetch of partition {partition} from {from} answered from {}",
                            b.first_id
                        ),
                    }));
                }
                Ok(b) => {
                    slot.failing_since = None;
                    slot.retry_at = None;
                    slot.end = b.end_of_partition;
                    if !b.events.is_empty() {
                        slot.next = from + b.events.len() as u64;
                        slot.buffered += b.events.len();
                        slot.ready.push_back(b);
                        prefetch = !slot.end;
                    }
                }
                Err(ServiceError::Refused(e)) => {
                    slot.retry_at = Some(Instant::now() + RETRY_PAUSE * 10);
                    error = Some(Error::Shared(e));
                }
                Err(e) => {
                    let now = Instant::now();
                    let since = *slot.failing_since.get_or_insert(now);
                    slot.retry_at = Some(now + RETRY_PAUSE);
                    if now.duration_since(since) >= timeout {
                        slot.failing_since = None;
                        error = Some(Error::from(FabricError::FetchFailed {
                            consumer: self.name.clone(),
                            partition,
                            timeout_ms: timeout.as_millis(),
                            reason: e.to_string(),
                        }));
                    }
                }
            }
            if !prefetch && !slot.end && self.pending_pulls.load(AtomicOrdering::SeqCst) > 0 {
                again = Some(slot.retry_at.unwrap_or_else(Instant::now));
            }
            if let Some(e) = error {
                st.events.push_back(Err(e));
            }
            self.cond.notify_all();
        }
        if prefetch {
            self.fetch_more(Duration::ZERO);
        } else if let Some(at) = again {
            let me = self.clone();
            crate::timer::at(at, move || me.fetch_more(LONG_POLL));
        }
    }

    /// The first half of turning a batch into events: metadata, selection, and the data
    /// requested (not waited for), so that the network works while the previous batch is
    /// finished and handed out.
    fn prepare(&self, p: usize, mut batch: FetchedBatch) -> Prepared {
        let first = batch.first_id;
        let serializer = &self.topic.policies.serializer;
        let Some(select) = &self.selector else {
            let metas = batch
                .events
                .iter()
                .map(|e| serializer.deserialize(e.meta.clone()))
                .collect();
            return Prepared {
                p,
                batch,
                metas,
                selected: None,
            };
        };
        // Selection, per event, until the selected data would pass MAX_PREPARED_BYTES (an
        // event's selection is at most its data: the selector runs once per event).
        let mut metas: Vec<Result<Metadata>> = Vec::with_capacity(batch.events.len());
        let mut selections: Vec<Result<DataDescriptor>> = Vec::with_capacity(batch.events.len());
        let mut ranges = Vec::new();
        let mut selected = 0u64;
        for (i, e) in batch.events.iter().enumerate() {
            if i > 0 && selected.saturating_add(e.data_len) > MAX_PREPARED_BYTES {
                break;
            }
            let id = first + i as u64;
            metas.push(serializer.deserialize(e.meta.clone()));
            let Some(Ok(m)) = metas.last() else {
                selections.push(Ok(DataDescriptor::null()));
                continue;
            };
            let mut location = Vec::with_capacity(16);
            location.extend_from_slice(&id.to_le_bytes());
            location.extend_from_slice(&(p as u64).to_le_bytes());
            let wanted = select(m, &DataDescriptor::new(Bytes::from(location), e.data_len));
            if wanted
                .flatten()
                .iter()
                .any(|s| s.offset.saturating_add(s.len) > e.data_len)
            {
                selections.push(Err(Error::InvalidSelection(format!(
                    "selector chose bytes beyond the {} bytes of event {id}",
                    e.data_len
                ))));
                continue;
            }
            ranges.extend(
                wanted
                    .flatten()
                    .iter()
                    .filter(|s| s.len > 0)
                    .map(|s| DataRange {
                        id,
                        offset: s.offset,
                        len: s.len,
                    }),
            );
            selected += wanted.size();
            selections.push(Ok(wanted));
        }
        if metas.len() < batch.events.len() {
            self.put_back(p, &mut batch, metas.len());
        }
        let data = if ranges.is_empty() {
            None
        } else {
            Some(self.start_data(p, ranges))
        };
        Prepared {
            p,
            batch,
            metas,
            selected: Some((selections, data)),
        }
    }

    /// Splits `batch` after its first `keep` events and puts the rest back at the head of
    /// partition `p`'s queue (the caller holds `processing`, so nothing is taken between).
    fn put_back(&self, p: usize, batch: &mut FetchedBatch, keep: usize) {
        let rest = FetchedBatch {
            first_id: batch.first_id + keep as u64,
            events: batch.events.split_off(keep),
            end_of_partition: batch.end_of_partition,
        };
        batch.end_of_partition = false;
        let mut st = self.state.lock();
        match st.slots.iter_mut().find(|s| s.partition == p) {
            Some(slot) => {
                slot.buffered += rest.events.len();
                slot.ready.push_front(rest);
            }
            // Not reachable (the batch was taken from that slot); never dropped silently.
            None => st.events.push_back(Err(Error::Corrupted(format!(
                "consumer {}: events {}.. of partition {p} have no queue to go back to",
                self.name, rest.first_id
            )))),
        }
    }

    /// The second half: waits for the data and builds the events.
    fn finish(&self, prepared: Prepared) -> Vec<Result<Event>> {
        let Prepared {
            p,
            batch,
            metas,
            selected,
        } = prepared;
        let first = batch.first_id;
        let Some((selections, data)) = selected else {
            return metas
                .into_iter()
                .enumerate()
                .map(|(i, m)| {
                    m.map(|m| {
                        Event::new(first + i as u64, p, m, DataView::new(), self.acker.clone())
                    })
                })
                .collect();
        };
        let mut data = match data {
            None => Ok(Parts::default()),
            Some(w) => self.wait_data(w).map_err(Arc::new),
        };
        metas
            .into_iter()
            .zip(selections)
            .zip(&batch.events)
            .enumerate()
            .map(|(i, ((m, sel), e))| {
                let id = first + i as u64;
                let m = m?;
                let sel = sel?;
                let size = sel.size() as usize;
                let view = if size == 0 {
                    DataView::new()
                } else {
                    let parts = data.as_mut().map_err(|e| Error::Shared(e.clone()))?;
                    let bytes = parts.take(size).ok_or_else(|| {
                        Error::from(FabricError::BadAnswer {
                            server: self.server(p),
                            what: format!(
                                "selected data of event {id} is missing from the answer ({} bytes)",
                                parts.total()
                            ),
                        })
                    })?;
                    let whole = sel.flatten()
                        == [Segment {
                            offset: 0,
                            len: e.data_len,
                        }];
                    if whole && crc32fast::hash(&bytes) != e.data_crc {
                        return Err(Error::Corrupted(format!(
                            "topic {} partition {p} event {id}: data checksum mismatch",
                            self.topic.info.name
                        )));
                    }
                    match &self.allocator {
                        None => DataView::from(bytes),
                        Some(alloc) => {
                            let mut buf = alloc(&m, &sel);
                            if buf.len() != size {
                                return Err(Error::AllocatorSize {
                                    expected: size as u64,
                                    got: buf.len(),
                                });
                            }
                            buf.copy_from_slice(&bytes);
                            DataView::from(buf.freeze())
                        }
                    }
                };
                Ok(Event::new(id, p, m, view, self.acker.clone()))
            })
            .collect()
    }

    fn server(&self, p: usize) -> String {
        self.topic
            .info
            .placement
            .get(p)
            .cloned()
            .unwrap_or_default()
    }

    /// Requests the selected ranges of a batch: one `FetchData` per [`MAX_RANGES`] ranges or
    /// [`MAX_FETCH_BYTES`] bytes (a request must fit one frame), all in flight at once.
    fn start_data(&self, p: usize, ranges: Vec<DataRange>) -> DataWait {
        let deadline = Instant::now() + self.topic.timeout;
        let mut chunks: Vec<Vec<DataRange>> = Vec::new();
        let mut bytes = 0u64;
        for r in ranges {
            let full = chunks
                .last()
                .is_none_or(|c| c.len() >= MAX_RANGES || bytes + r.len > MAX_FETCH_BYTES);
            if full {
                chunks.push(Vec::new());
                bytes = 0;
            }
            bytes += r.len;
            if let Some(c) = chunks.last_mut() {
                c.push(r);
            }
        }
        let receivers: Vec<_> = chunks
            .into_iter()
            .map(|c| {
                let (tx, rx) = mpsc::sync_channel(1);
                self.topic.service.fetch_data(
                    &self.topic.info.name,
                    p,
                    c,
                    deadline,
                    Box::new(move |r| {
                        let _ = tx.send(r);
                    }),
                );
                rx
            })
            .collect();
        DataWait {
            p,
            deadline,
            receivers,
        }
    }

    /// Waits for the data requested by [`start_data`](Self::start_data): the answers in
    /// order, not copied together.
    fn wait_data(&self, w: DataWait) -> Result<Parts> {
        let DataWait {
            p,
            deadline,
            receivers,
        } = w;
        let mut parts = Vec::with_capacity(receivers.len());
        for rx in receivers {
            let left = deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(1);
            let part = rx.recv_timeout(left).unwrap_or_else(|_| {
                Err(ServiceError::Retryable {
                    server: self.server(p),
                    reason: "no answer to FetchData within the deadline".into(),
                })
            });
            parts.push(part.map_err(ServiceError::into_api)?);
        }
        Ok(Parts {
            parts: parts.into(),
            at: 0,
        })
    }
}

/// The answers to a batch's `FetchData` requests, handed out in order as zero-copy slices.
#[derive(Default)]
struct Parts {
    parts: VecDeque<Bytes>,
    /// Bytes of `parts[0]` already handed out.
    at: usize,
}

impl Parts {
    /// The next `size` bytes: a slice of one answer, or (an event whose ranges were split
    /// between two requests) a copy of the pieces; `None` if the answers are shorter.
    fn take(&mut self, size: usize) -> Option<Bytes> {
        while self.parts.front().is_some_and(|b| self.at == b.len()) {
            self.parts.pop_front();
            self.at = 0;
        }
        let first = self.parts.front()?;
        if first.len() - self.at >= size {
            let out = first.slice(self.at..self.at + size);
            self.at += size;
            return Some(out);
        }
        if self.total() < size {
            return None;
        }
        let mut out = bytes::BytesMut::with_capacity(size);
        while out.len() < size {
            let b = self.parts.front()?;
            let n = (b.len() - self.at).min(size - out.len());
            out.extend_from_slice(&b[self.at..self.at + n]);
            self.at += n;
            if self.at == b.len() {
                self.parts.pop_front();
                self.at = 0;
            }
        }
        Some(out.freeze())
    }

    /// Bytes not handed out yet.
    fn total(&self) -> usize {
        self.parts.iter().map(Bytes::len).sum::<usize>() - self.at
    }
}

/// Takes the next fetched batch, round robin over partitions: a partition whose answer is
/// on its way (and was not empty last time) is waited for rather than skipped, so no
/// partition gets more than a batch ahead of another.
fn take_batch(st: &mut State) -> Option<(usize, usize, FetchedBatch)> {
    let n = st.slots.len();
    for k in 0..n {
        let i = (st.rr + k) % n;
        let slot = &mut st.slots[i];
        if let Some(b) = slot.ready.pop_front() {
            slot.buffered -= b.events.len();
            st.rr = (i + 1) % n;
            return Some((i, st.slots[i].partition, b));
        }
        if slot.in_flight && !slot.empty && !slot.end {
            return None;
        }
    }
    None
}

/// Calls an asynchronous service method and waits for its answer until `deadline` (plus a
/// grace period: the service enforces the deadline itself and answers with a timeout).
pub(crate) fn block_on<T: Send + 'static>(
    deadline: Instant,
    call: impl FnOnce(Done<T>),
) -> std::result::Result<T, ServiceError> {
    let (tx, rx) = mpsc::sync_channel(1);
    call(Box::new(move |r| {
        let _ = tx.send(r);
    }));
    let grace = Duration::from_secs(1);
    let left = deadline.saturating_duration_since(Instant::now()) + grace;
    match rx.recv_timeout(left) {
        Ok(r) => r,
        Err(_) => Err(ServiceError::Retryable {
            server: "(no answer)".into(),
            reason: format!("no answer within the deadline (+{grace:?})"),
        }),
    }
}

/// Waits for an event, issuing long polls, until the deadline.
struct PullWaiter {
    inner: Arc<Inner>,
}

impl Waitable<Event> for PullWaiter {
    fn wait_until(&mut self, deadline: Option<Instant>) -> Option<Result<Event>> {
        loop {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if let Some(e) = self.inner.try_next(left.unwrap_or(LONG_POLL)) {
                return Some(e);
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return None;
            }
            let nap = left.unwrap_or(MAX_NAP).min(MAX_NAP);
            let mut st = self.inner.state.lock();
            if st.events.is_empty()
                && !self.inner.ahead.load(AtomicOrdering::SeqCst)
                && st.slots.iter().all(|s| s.ready.is_empty())
            {
                let _ = self.inner.cond.wait_for(&mut st, nap);
            }
        }
    }

    fn is_ready(&self) -> bool {
        let st = self.inner.state.lock();
        !st.events.is_empty()
            || self.inner.ahead.load(AtomicOrdering::SeqCst)
            || st.slots.iter().any(|s| !s.ready.is_empty())
    }
}

impl Drop for PullWaiter {
    fn drop(&mut self) {
        self.inner
            .pending_pulls
            .fetch_sub(1, AtomicOrdering::SeqCst);
    }
}

impl ConsumerBackend for FabricConsumer {
    fn pull(&self) -> Future<Event> {
        // Counted before the first fetch leaves, so its answer keeps the fetching going.
        self.inner
            .pending_pulls
            .fetch_add(1, AtomicOrdering::SeqCst);
        let waiter = PullWaiter {
            inner: self.inner.clone(),
        };
        match self.inner.try_next(Duration::ZERO) {
            Some(Ok(e)) => Future::ready(e),
            Some(Err(e)) => Future::failed(e),
            None => Future::pending(Box::new(waiter)),
        }
    }
}

impl Drop for FabricConsumer {
    fn drop(&mut self) {
        // No new fetches; wait (a long poll at most) for those in flight, so that a process
        // exiting after dropping its consumer leaves no request behind on the server.
        self.inner.closed.store(true, AtomicOrdering::SeqCst);
        {
            let deadline = Instant::now() + LONG_POLL + Duration::from_secs(1);
            let mut st = self.inner.state.lock();
            while st.slots.iter().any(|s| s.in_flight) {
                if self.inner.cond.wait_until(&mut st, deadline).timed_out() {
                    break;
                }
            }
        }
        // Commit what was acknowledged, so a consumer of the same name created next resumes
        // after it (bounded by the driver's deadline).
        let _ = self
            .inner
            .acker
            .0
            .flush(Instant::now() + self.inner.topic.timeout);
    }
}

#[cfg(test)]
mod tests {
    use super::Parts;
    use bytes::Bytes;

    fn parts(p: &[&[u8]]) -> Parts {
        Parts {
            parts: p.iter().map(|b| Bytes::copy_from_slice(b)).collect(),
            at: 0,
        }
    }

    #[test]
    fn slices_of_one_answer_are_not_copied() {
        let mut p = parts(&[b"abcdef", b"ghij"]);
        let first = p.parts[0].as_ptr();
        let a = p.take(2).expect("2");
        assert_eq!(&a[..], b"ab");
        assert_eq!(a.as_ptr(), first, "zero copy");
        assert_eq!(&p.take(4).expect("4")[..], b"cdef");
        assert_eq!(&p.take(4).expect("4")[..], b"ghij");
        assert_eq!(p.total(), 0);
        assert!(p.take(1).is_none());
        assert_eq!(p.take(0).map(|b| b.len()), None, "nothing left at all");
    }

    #[test]
    fn an_event_split_between_answers_is_put_together() {
        let mut p = parts(&[b"abc", b"", b"defg", b"h"]);
        assert_eq!(&p.take(2).expect("2")[..], b"ab");
        assert_eq!(&p.take(5).expect("5")[..], b"cdefg");
        assert_eq!(p.total(), 1);
        assert!(p.take(2).is_none(), "too short: nothing taken");
        assert_eq!(&p.take(1).expect("1")[..], b"h");
    }
}
