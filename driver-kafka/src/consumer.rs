//! Consumers: each Diaspora consumer `c` is one librdkafka consumer in consumer group `c`,
//! assigned the topic's partitions it reads (no group rebalancing: two consumers with the same
//! name both read every partition they are given, as with the other drivers).
//!
//! - It starts at the group's committed offset of each partition (the first record when the
//!   group has none), so a restarted consumer resumes after its last acknowledgement;
//!   `acknowledge(p, id)` commits offset `id + 1` of partition `p` synchronously.
//! - Kafka fetches whole records: the data selector runs on the consumer, which copies only the
//!   selected bytes out of the fetched record (into the allocator's buffer when one is given);
//!   with no selector the data is never copied. Memory is bounded by librdkafka's prefetch
//!   queue (`queued.max.messages.kbytes`, 64 MiB by default; see [`crate::options`]) plus one
//!   decoded event.
//! - Partitions are served in turns of the batch size (`turns.rs`): a partition whose
//!   records were not fetched yet keeps its turn (up to 2 s) unless librdkafka reported that it
//!   has nothing more stored (`enable.partition.eof`, which the driver sets).
//! - A partition's end marker record ends that partition; once every partition read is ended
//!   the consumer returns the end-of-stream marker (again on every later pull).
//! - A record that does not decode, or on which the selector/allocator/serializer fails, fails
//!   its own pull with [`Error::EventFailed`]; the next pull returns the next record.

use std::sync::Arc;
use std::time::{Duration, Instant};

use diaspora_api::{
    Acknowledger, BytesMut, ConsumerBackend, ConsumerOptions, DataDescriptor, DataView, Error,
    Event, EventId, Future, Result, Waitable,
};
use diaspora_api::{DataAllocator, DataSelector};
use parking_lot::Mutex;
use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, DefaultConsumerContext};
use rdkafka::message::BorrowedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::error::KafkaError;
use crate::record::{self, Record};
use crate::topic::TopicShared;
use crate::turns::{Polled, Turns, TURN_WAIT};

/// The kafka driver's [`ConsumerBackend`].
pub struct KafkaConsumer {
    inner: Arc<Inner>,
}

struct Inner {
    topic: Arc<TopicShared>,
    consumer: Arc<BaseConsumer>,
    /// One librdkafka queue per partition read (same order as `partitions`), served in turn.
    queues: Vec<PartitionQueue<DefaultConsumerContext>>,
    /// Partitions read.
    partitions: Vec<usize>,
    selector: Option<DataSelector>,
    allocator: Option<DataAllocator>,
    state: Mutex<State>,
    acker: Arc<dyn Acknowledger>,
}

struct State {
    /// Per partition index: the end marker was read.
    ended: Vec<bool>,
    /// Per partition index: the offset after the last record delivered (`None`: nothing yet).
    next: Vec<Option<u64>>,
    /// An event polled by `is_ready` and not handed out yet.
    ready: Option<Result<Event>>,
    /// Per partition index: records below this offset were acknowledged (`resume: "scan"`).
    skip_below: Vec<u64>,
    /// Round-robin turns over the partition slots.
    turns: Turns,
}

struct Acker {
    topic: Arc<TopicShared>,
    consumer: Arc<Mutex<Option<std::sync::Weak<Inner>>>>,
}

impl Acknowledger for Acker {
    fn acknowledge(&self, partition: usize, id: EventId) -> Result<()> {
        let inner = self
            .consumer
            .lock()
            .as_ref()
            .and_then(std::sync::Weak::upgrade)
            .ok_or(Error::Closed("consumer"))?;
        inner.commit(partition, id)
    }
}

impl KafkaConsumer {
    /// A consumer of `topic` in group `name`.
    pub fn new(
        topic: Arc<TopicShared>,
        name: &str,
        options: ConsumerOptions,
    ) -> Result<KafkaConsumer> {
        let n = topic.num_partitions;
        // Sorted: `slot` looks partitions up by binary search.
        let mut partitions = options.partitions_of(n)?;
        partitions.sort_unstable();
        let consumer: Arc<BaseConsumer> = Arc::new(
            topic
                .conn
                .options
                .consumer(name)
                .create()
                .map_err(|e| KafkaError::client("creating a consumer", e))?,
        );
        let assign_err = |e| KafkaError::client("assigning partitions", e);
        let mut tpl = TopicPartitionList::new();
        for &p in &partitions {
            tpl.add_partition(&topic.name, p as i32);
        }
        // The group's committed offsets, fetched now so that the first pull only fetches.
        let committed = consumer
            .committed_offsets(tpl, topic.conn.options.timeout)
            .map_err(|e| KafkaError::client(format!("reading the offsets of group {name}"), e))?;
        let mut start = TopicPartitionList::new();
        let mut skip_below = Vec::with_capacity(partitions.len());
        let scan = topic.conn.options.resume_scan;
        for &p in &partitions {
            let committed = committed
                .find_partition(&topic.name, p as i32)
                .map(|e| e.offset());
            // Offset 0 rather than `Beginning` saves a ListOffsets round trip; if retention
            // removed it, `auto.offset.reset=earliest` moves to the first record kept.
            let (offset, skip) = match committed {
                Some(Offset::Offset(n)) if n >= 0 && !scan => (Offset::Offset(n), 0),
                Some(Offset::Offset(n)) if n >= 0 => (Offset::Offset(0), n as u64),
                _ => (Offset::Offset(0), 0),
            };
            skip_below.push(skip);
            start
                .add_partition_offset(&topic.name, p as i32, offset)
                .map_err(assign_err)?;
        }
        let queues = partitions
            .iter()
            .map(|&p| {
                consumer
                    .split_partition_queue(&topic.name, p as i32)
                    .ok_or_else(|| {
                        KafkaError::client(
                            "splitting a partition queue",
                            rdkafka::error::KafkaError::Subscription(format!("partition {p}")),
                        )
                    })
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        consumer.assign(&start).map_err(assign_err)?;
        let turn_len = match options.batch_size {
            diaspora_api::BatchSize::Fixed(n) => n.max(1),
            diaspora_api::BatchSize::Adaptive => 256,
        };
        let slot = Arc::new(Mutex::new(None));
        let acker = Arc::new(Acker {
            topic: topic.clone(),
            consumer: slot.clone(),
        });
        let _ = &acker.topic;
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                ended: vec![false; partitions.len()],
                next: vec![None; partitions.len()],
                ready: None,
                skip_below,
                turns: Turns::new(partitions.len(), turn_len, TURN_WAIT),
            }),
            partitions,
            topic,
            consumer,
            queues,
            selector: options.data_selector,
            allocator: options.data_allocator,
            acker,
        });
        *slot.lock() = Some(Arc::downgrade(&inner));
        Ok(KafkaConsumer { inner })
    }
}

impl Inner {
    fn slot(&self, partition: usize) -> Option<usize> {
        self.partitions.binary_search(&partition).ok()
    }

    /// The slot of librdkafka's partition number `p`, if this consumer reads it.
    fn slot_of(&self, p: i32) -> Option<usize> {
        usize::try_from(p).ok().and_then(|p| self.slot(p))
    }

    fn fetch_error(&self, e: rdkafka::error::KafkaError) -> Error {
        KafkaError::client(format!("fetching from {}", self.topic.name), e).into()
    }

    fn commit(&self, partition: usize, id: EventId) -> Result<()> {
        let Some(slot) = self.slot(partition) else {
            return Err(Error::option(
                "partition",
                format!(
                    "this consumer does not read partition {partition} (it reads {:?})",
                    self.partitions
                ),
            ));
        };
        let next = self.state.lock().next[slot];
        if next.is_none_or(|n| id >= n) {
            return Err(Error::option(
                "id",
                format!("event {id} of partition {partition} was not read by this consumer yet"),
            ));
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(
            &self.topic.name,
            partition as i32,
            Offset::Offset(id as i64 + 1),
        )
        .map_err(|e| KafkaError::client("committing offsets", e))?;
        self.consumer.commit(&tpl, CommitMode::Sync).map_err(|e| {
            KafkaError::client(
                format!("committing partition {partition} offset {}", id + 1),
                e,
            )
            .into()
        })
    }

    /// The next record of the partitions in turn, waiting up to `wait`; `None` if none came.
    fn poll(&self, state: &mut State, wait: Duration) -> Option<Result<Event>> {
        if let Some(e) = state.ready.take() {
            return Some(e);
        }
        let deadline = Instant::now() + wait;
        loop {
            if state.ended.iter().all(|&e| e) {
                return Some(Ok(Event::no_more_events()));
            }
            let got = self.pass(state);
            let Some((slot, msg)) = got else {
                // Serves librdkafka's events (errors, offsets) while waiting. librdkafka may
                // also hand a split partition's records to the main queue (rust-rdkafka's
                // `split_partition_queue` is racy: MaterializeInc/materialize#3375). Dropping
                // them would lose them for good; they are delivered like the partition queue's
                // (possibly after a later record of their partition: out of order rather than
                // lost).
                let left = deadline.saturating_duration_since(Instant::now());
                match self.consumer.poll(left.min(Duration::from_millis(5))) {
                    Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                        if let Some(slot) = self.slot_of(p) {
                            state.turns.reached_end(slot);
                        }
                    }
                    Some(Err(e)) => return Some(Err(self.fetch_error(e))),
                    Some(Ok(m)) => {
                        let slot = self.slot_of(m.partition());
                        // Not counted in the turns: the partition's own queue may hold its end
                        // report already (the queues race), and counting this record would
                        // clear it, making the partition hold the turn for TURN_WAIT.
                        if let Some(slot) = slot.filter(|&s| !state.ended[s]) {
                            if let Some(r) = self.deliver(state, slot, &m) {
                                return Some(r);
                            }
                        }
                    }
                    None => {}
                }
                if Instant::now() >= deadline {
                    return None;
                }
                continue;
            };
            let msg = match msg {
                Ok(m) => m,
                Err(e) => return Some(Err(self.fetch_error(e))),
            };
            if let Some(r) = self.deliver(state, slot, &msg) {
                return Some(r);
            }
        }
    }

    /// One round-robin pass over the partition queues ([`Turns::pass`]): the first record or
    /// error found, with its slot.
    fn pass<'a>(
        &'a self,
        state: &mut State,
    ) -> Option<(usize, rdkafka::error::KafkaResult<BorrowedMessage<'a>>)> {
        let queues = &self.queues;
        state.turns.pass(Instant::now(), &state.ended, |slot| {
            Some(match queues[slot].poll(Duration::ZERO)? {
                Err(rdkafka::error::KafkaError::PartitionEOF(_)) => Polled::End,
                r => Polled::Item(r),
            })
        })
    }

    /// The event of partition slot `slot`'s record `msg`; `None` when it is skipped (an end
    /// marker, or below `skip_below`).
    fn deliver(&self, state: &mut State, slot: usize, msg: &impl Message) -> Option<Result<Event>> {
        let p = self.partitions[slot];
        let offset = msg.offset().max(0) as u64;
        if offset < state.skip_below[slot] {
            return None;
        }
        // `max`: a record from the main queue may be older than one delivered already.
        state.next[slot] = Some(state.next[slot].map_or(offset + 1, |n| n.max(offset + 1)));
        match record::decode(msg.payload()) {
            Ok(Record::End) => {
                state.ended[slot] = true;
                None
            }
            Ok(Record::Event { metadata, data }) => Some(
                self.event(p, offset, metadata, data)
                    .map_err(|e| Error::EventFailed {
                        partition: p,
                        id: offset,
                        source: Box::new(e),
                    }),
            ),
            Err(source) => Some(Err(Error::EventFailed {
                partition: p,
                id: offset,
                source: Box::new(
                    KafkaError::BadRecord {
                        topic: self.topic.name.clone(),
                        partition: p,
                        offset,
                        source,
                    }
                    .into(),
                ),
            })),
        }
    }

    fn event(&self, p: usize, id: u64, meta: &[u8], data: &[u8]) -> Result<Event> {
        let metadata =
            diaspora_api::catch_panic("the topic's serializer (deserializing)", || {
                self.topic
                    .policies
                    .serializer
                    .deserialize(diaspora_api::Bytes::copy_from_slice(meta))
            })??;
        let view = match &self.selector {
            None => DataView::new(),
            Some(select) => {
                let whole = DataDescriptor::new(
                    diaspora_api::Bytes::from(id.to_le_bytes().to_vec()),
                    data.len() as u64,
                );
                let wanted = diaspora_api::catch_panic("the consumer's data selector", || {
                    select(&metadata, &whole)
                })?;
                let segments = wanted.flatten();
                if segments
                    .iter()
                    .any(|s| s.offset.saturating_add(s.len) > data.len() as u64)
                {
                    return Err(Error::InvalidSelection(format!(
                        "selector chose bytes beyond the {} bytes of event {id}",
                        data.len()
                    )));
                }
                let size = wanted.size() as usize;
                let mut buf = match &self.allocator {
                    None => BytesMut::zeroed(size),
                    Some(alloc) => {
                        let buf =
                            diaspora_api::catch_panic("the consumer's data allocator", || {
                                alloc(&metadata, &wanted)
                            })?;
                        if buf.len() != size {
                            return Err(Error::AllocatorSize {
                                expected: size as u64,
                                got: buf.len(),
                            });
                        }
                        buf
                    }
                };
                let mut at = 0;
                for s in segments {
                    let (o, l) = (s.offset as usize, s.len as usize);
                    buf[at..at + l].copy_from_slice(&data[o..o + l]);
                    at += l;
                }
                if size == 0 {
                    DataView::new()
                } else {
                    DataView::from(buf.freeze())
                }
            }
        };
        Ok(Event::new(id, p, metadata, view, self.acker.clone()))
    }

    fn next_until(&self, deadline: Option<Instant>) -> Option<Result<Event>> {
        loop {
            let wait = match deadline {
                None => Duration::from_millis(100),
                Some(d) => d
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(100)),
            };
            let mut state = self.state.lock();
            if let Some(e) = self.poll(&mut state, wait) {
                return Some(e);
            }
            drop(state);
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return None;
            }
        }
    }
}

struct PullWaiter {
    inner: Arc<Inner>,
}

impl Waitable<Event> for PullWaiter {
    fn wait_until(&mut self, deadline: Option<Instant>) -> Option<Result<Event>> {
        self.inner.next_until(deadline)
    }

    fn is_ready(&self) -> bool {
        let mut state = self.inner.state.lock();
        if state.ready.is_some() {
            return true;
        }
        state.ready = self.inner.poll(&mut state, Duration::ZERO);
        state.ready.is_some()
    }
}

impl ConsumerBackend for KafkaConsumer {
    fn pull(&self) -> Future<Event> {
        let mut state = self.inner.state.lock();
        match self.inner.poll(&mut state, Duration::ZERO) {
            Some(Ok(e)) => Future::ready(e),
            Some(Err(e)) => Future::failed(e),
            None => Future::pending(Box::new(PullWaiter {
                inner: self.inner.clone(),
            })),
        }
    }

    fn acknowledge(&self, partition: usize, id: EventId) -> Result<()> {
        self.inner.commit(partition, id)
    }
}
