//! Producers: each Diaspora producer is one librdkafka producer ([`Sender`]). `push` frames
//! the event (see [`crate::record`]) and hands it to librdkafka, which batches records per
//! partition (`linger.ms`, `batch.size`...) and sends them; the push future completes from
//! librdkafka's **delivery report**: with the record's offset (the event id) once the broker
//! acknowledged it (`acks=all`, idempotent), or with the delivery error. Every failure is also
//! recorded for the next `flush`, which waits until librdkafka's queue is empty (every report
//! served) and fails with [`diaspora_api::Error::EventsLost`] if any event was not stored.
//!
//! Nothing hangs: an event that cannot be delivered fails after `timeout_ms`
//! (librdkafka's `message.timeout.ms`); a `push` that finds librdkafka's queue full retries
//! until the same deadline, then fails; a flush future waits only as long as it is told.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use diaspora_api::{
    BatchSize, Completion, DataView, Error, EventId, Future, Losses, Metadata, ProducerBackend,
    ProducerOptions, Result, ThreadPool, Waitable,
};
use rdkafka::client::ClientContext;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::Message;

use crate::error::KafkaError;
use crate::options::KafkaOptions;
use crate::record;
use crate::topic::TopicShared;

/// Receives librdkafka's delivery reports.
pub struct DeliveryContext {
    losses: Option<Arc<Losses>>,
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Box<Arc<Completion<EventId>>>;

    fn delivery(&self, result: &DeliveryResult<'_>, done: Self::DeliveryOpaque) {
        match result {
            Ok(m) => done.complete(Ok(m.offset().max(0) as EventId)),
            Err((e, m)) => {
                let err = Arc::new(
                    KafkaError::client(
                        format!(
                            "delivering a record to {} partition {}",
                            m.topic(),
                            m.partition()
                        ),
                        e.clone(),
                    )
                    .into_api(),
                );
                if let Some(losses) = &self.losses {
                    losses.record(1, err.clone());
                }
                done.complete(Err(Error::Shared(err)));
            }
        }
    }
}

/// A librdkafka producer whose records complete futures.
pub struct Sender {
    producer: ThreadedProducer<DeliveryContext>,
    timeout: Duration,
    timeout_ms: u64,
}

impl Sender {
    /// A producer; delivery failures are recorded in `losses` when given.
    pub fn new(options: &KafkaOptions, losses: Option<Arc<Losses>>) -> Result<Sender> {
        let producer = options
            .producer()
            .create_with_context(DeliveryContext { losses })
            .map_err(|e| KafkaError::client("creating a producer", e))?;
        Ok(Sender {
            producer,
            timeout: options.timeout,
            timeout_ms: options.timeout_ms(),
        })
    }

    /// Queues `payload` for `topic`/`partition`, retrying while librdkafka's queue is full
    /// until the deadline.
    pub fn send(&self, topic: &str, partition: usize, payload: &[u8]) -> Future<EventId> {
        match self.try_send(topic, partition, payload) {
            Ok(f) => f,
            Err(e) => Future::failed(e),
        }
    }

    /// Like [`Sender::send`], with a queueing failure as an `Err`.
    pub fn try_send(
        &self,
        topic: &str,
        partition: usize,
        payload: &[u8],
    ) -> Result<Future<EventId>> {
        let done = Completion::new();
        let future = done.future();
        self.send_with(topic, partition, payload, done)?;
        Ok(future)
    }

    /// Queues `payload`; `done` completes from its delivery report. On `Err` the record was
    /// not queued and `done` is left incomplete.
    pub fn send_with(
        &self,
        topic: &str,
        partition: usize,
        payload: &[u8],
        done: Arc<Completion<EventId>>,
    ) -> Result<()> {
        let mut record = BaseRecord::<(), [u8], _>::with_opaque_to(topic, Box::new(done))
            .partition(partition as i32)
            .payload(payload);
        let mut deadline = None;
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((
                    rdkafka::error::KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                    r,
                )) => {
                    let d = *deadline.get_or_insert_with(|| Instant::now() + self.timeout);
                    if Instant::now() >= d {
                        return Err(KafkaError::Timeout {
                            what: "queueing a record (librdkafka's queue stayed full)".into(),
                            timeout_ms: self.timeout_ms,
                        }
                        .into());
                    }
                    record = r;
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err((e, _)) => {
                    return Err(KafkaError::client(
                        format!("queueing a record for {topic} partition {partition}"),
                        e,
                    )
                    .into())
                }
            }
        }
    }

    /// Sends one record and waits for its delivery (catalogue records, end markers).
    pub fn send_and_wait(
        &self,
        topic: &str,
        partition: usize,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<EventId> {
        let mut f = self.send(topic, partition, payload);
        f.wait_until(Some(Instant::now() + timeout))?
            .ok_or_else(|| {
                KafkaError::Timeout {
                    what: format!("writing a record to {topic}"),
                    timeout_ms: self.timeout_ms,
                }
                .into()
            })
    }

    /// Records queued or in flight (delivery report not served yet).
    pub fn in_flight(&self) -> i32 {
        self.producer.in_flight_count()
    }

    /// Waits up to `timeout` for the queue to drain.
    pub fn drain(&self, timeout: Duration) {
        let _ = self.producer.flush(timeout);
    }
}

/// The kafka driver's [`ProducerBackend`].
pub struct KafkaProducer {
    inner: Arc<ProducerInner>,
}

struct ProducerInner {
    topic: Arc<TopicShared>,
    sender: Sender,
    losses: Arc<Losses>,
    max_record: usize,
    /// With a thread pool: the batching state; without one, records go straight to librdkafka.
    batches: Option<Batches>,
}

/// One framed event waiting in a batch.
struct Pending {
    partition: usize,
    record: Vec<u8>,
    done: Arc<Completion<EventId>>,
}

/// Batching through the producer's thread pool (when one is given): `push` frames events into
/// the open batch; a batch is sealed when full (`batch_size`; adaptive: at once if no batch is
/// in flight, else at 4,096 events), on `flush` and when a push future is waited on; each
/// sealed batch is one pool job that hands the oldest sealed batch to librdkafka (so batches
/// reach the broker in push order whichever job runs first) and waits for its delivery reports.
struct Batches {
    pool: ThreadPool,
    size: BatchSize,
    max_in_flight: usize,
    open: Mutex<Vec<Pending>>,
    sealed: Mutex<VecDeque<Vec<Pending>>>,
    /// Serializes the hand-over of sealed batches to librdkafka.
    send_order: Mutex<()>,
    /// Sealed batches whose job has not finished.
    in_flight: AtomicUsize,
}

/// Most events of an adaptive batch.
const ADAPTIVE_MAX: usize = 4096;

impl KafkaProducer {
    /// A producer for `topic`.
    pub fn new(topic: Arc<TopicShared>, options: ProducerOptions) -> Result<KafkaProducer> {
        let batches = options.thread_pool.map(|pool| Batches {
            pool,
            size: options.batch_size,
            max_in_flight: options.max_num_batches.max(1),
            open: Mutex::new(Vec::new()),
            sealed: Mutex::new(VecDeque::new()),
            send_order: Mutex::new(()),
            in_flight: AtomicUsize::new(0),
        });
        let losses = Arc::new(Losses::new());
        let options = &topic.conn.options;
        let sender = Sender::new(options, Some(losses.clone()))?;
        let max_record = options.message_max_bytes()?;
        Ok(KafkaProducer {
            inner: Arc::new(ProducerInner {
                sender,
                losses,
                max_record,
                topic,
                batches,
            }),
        })
    }
}

impl ProducerInner {
    fn frame(&self, metadata: &Metadata, data: &DataView, out: &mut Vec<u8>) -> Result<()> {
        record::begin_event(out);
        diaspora_api::catch_panic("the topic's serializer", || {
            self.topic.policies.serializer.serialize(metadata, out)
        })??;
        let start = record::mark_data(out).map_err(|len| {
            Error::option(
                "metadata",
                format!("serialized metadata of {len} bytes exceeds 4 GiB"),
            )
        })?;
        let size = start as u64 + data.len();
        if size > self.max_record as u64 {
            return Err(KafkaError::RecordTooLarge {
                size: size.min(usize::MAX as u64) as usize,
                max: self.max_record,
            }
            .into());
        }
        out.reserve(data.len() as usize);
        for s in data.segments() {
            out.extend_from_slice(s);
        }
        record::finish_event(out, start);
        Ok(())
    }

    fn push(
        self: &Arc<Self>,
        metadata: &Metadata,
        data: &DataView,
        partition: Option<usize>,
    ) -> Result<Future<EventId>> {
        if self
            .topic
            .complete
            .load(std::sync::atomic::Ordering::Acquire)
        {
            return Err(Error::TopicComplete(self.topic.name.clone()));
        }
        let p =
            self.topic
                .policies
                .select_partition(metadata, self.topic.num_partitions, partition)?;
        let mut buf = Vec::with_capacity(record::HEADER_LEN + metadata.as_bytes().len() + 16);
        self.frame(metadata, data, &mut buf)?;
        let Some(b) = &self.batches else {
            return self.sender.try_send(&self.topic.name, p, &buf);
        };
        let done = Completion::new();
        let future = done.future();
        let full = {
            let mut open = b.open.lock();
            open.push(Pending {
                partition: p,
                record: buf,
                done,
            });
            match b.size {
                BatchSize::Fixed(n) => open.len() >= n.max(1),
                BatchSize::Adaptive => {
                    open.len() >= ADAPTIVE_MAX || b.in_flight.load(AtomicOrdering::Acquire) == 0
                }
            }
        };
        if full {
            self.wait_for_room(b)?;
            self.seal(b);
        }
        Ok(future)
    }

    /// Blocks while `max_num_batches` batches are in flight (until the deadline).
    fn wait_for_room(&self, b: &Batches) -> Result<()> {
        let deadline = Instant::now() + self.sender.timeout;
        while b.in_flight.load(AtomicOrdering::Acquire) >= b.max_in_flight {
            if Instant::now() >= deadline {
                return Err(KafkaError::Timeout {
                    what: format!("waiting for one of {} batches in flight", b.max_in_flight),
                    timeout_ms: self.sender.timeout_ms,
                }
                .into());
            }
            std::thread::sleep(Duration::from_micros(100));
        }
        Ok(())
    }

    /// Seals the open batch (if any) and submits its job.
    fn seal(self: &Arc<Self>, b: &Batches) {
        let batch = std::mem::take(&mut *b.open.lock());
        if batch.is_empty() {
            return;
        }
        b.in_flight.fetch_add(1, AtomicOrdering::AcqRel);
        b.sealed.lock().push_back(batch);
        let inner = self.clone();
        b.pool.push_work(move || inner.run_job(), 0);
    }

    /// A pool job: sends the oldest sealed batch, waits for its delivery reports.
    fn run_job(&self) {
        let Some(b) = &self.batches else { return };
        let batch = {
            let _order = b.send_order.lock();
            let Some(batch) = b.sealed.lock().pop_front() else {
                b.in_flight.fetch_sub(1, AtomicOrdering::AcqRel);
                return;
            };
            let sent = diaspora_api::catch_panic("the job storing a batch", || {
                for e in &batch {
                    if let Err(err) = self.sender.send_with(
                        &self.topic.name,
                        e.partition,
                        &e.record,
                        e.done.clone(),
                    ) {
                        e.done.complete(Err(self.losses.reject(err)));
                    }
                }
            });
            if let Err(err) = sent {
                let err = Arc::new(err);
                for e in &batch {
                    if !e.done.is_complete() {
                        self.losses.record(1, err.clone());
                        e.done.complete(Err(Error::Shared(err.clone())));
                    }
                }
            }
            batch
        };
        // Delivery fails by itself after message.timeout.ms; the margin covers the report.
        let deadline = Instant::now() + self.sender.timeout + Duration::from_secs(5);
        for e in &batch {
            let _ = e.done.wait_until(Some(deadline));
        }
        b.in_flight.fetch_sub(1, AtomicOrdering::AcqRel);
    }
}

impl ProducerBackend for KafkaProducer {
    fn send_pending(&self) {
        if let Some(b) = &self.inner.batches {
            self.inner.seal(b);
        }
    }

    fn push(
        &self,
        metadata: Metadata,
        data: DataView,
        partition: Option<usize>,
    ) -> Future<EventId> {
        match self.inner.push(&metadata, &data, partition) {
            Ok(f) => f,
            Err(e) => Future::failed(self.inner.losses.reject(e)),
        }
    }

    fn flush(&self) -> Future<()> {
        if let Some(b) = &self.inner.batches {
            self.inner.seal(b);
        }
        Future::pending(Box::new(FlushWaiter {
            inner: self.inner.clone(),
        }))
    }
}

impl Drop for KafkaProducer {
    fn drop(&mut self) {
        let mut flushed = ProducerBackend::flush(self);
        let _ = flushed.wait_until(Some(Instant::now() + self.inner.sender.timeout));
    }
}

/// Waits until every record queued is delivered or failed.
struct FlushWaiter {
    inner: Arc<ProducerInner>,
}

impl Waitable<()> for FlushWaiter {
    fn wait_until(&mut self, deadline: Option<Instant>) -> Option<Result<()>> {
        loop {
            if self.is_ready() {
                return Some(self.inner.losses.take_result());
            }
            let step = Duration::from_millis(50);
            let step = match deadline {
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return None;
                    }
                    step.min(d - now)
                }
                None => step,
            };
            self.inner.sender.drain(step);
        }
    }

    fn is_ready(&self) -> bool {
        match &self.inner.batches {
            // Each job returns once its events' delivery reports completed their futures.
            Some(b) => b.in_flight.load(AtomicOrdering::Acquire) == 0,
            None => self.inner.sender.in_flight() == 0,
        }
    }
}
