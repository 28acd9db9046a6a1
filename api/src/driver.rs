//! The driver interfaces ([`DriverBackend`], [`TopicBackend`], [`ProducerBackend`],
//! [`ConsumerBackend`]) that implementations provide, the user-facing wrappers around them
//! ([`Driver`], [`TopicHandle`], [`Producer`], [`Consumer`]), and the registry of drivers by name.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use parking_lot::RwLock;
use serde_json::Value;

use crate::data::DataView;
use crate::error::{Error, Result};
use crate::event::{Event, EventId};
use crate::future::{Future, Waitable};
use crate::losses::Losses;
use crate::metadata::IntoMetadata;
use crate::metadata::Metadata;
use crate::options::{
    BatchSize, ConsumerOptions, DataAllocator, DataSelector, Ordering, ProducerOptions,
};
use crate::policy::{PartitionSelector, Serializer, TopicPolicies, Validator};
use crate::thread_pool::ThreadPool;

/// A connection to a streaming service (or a directory, for the files driver).
pub trait DriverBackend: Send + Sync {
    /// Creates a topic. `options` is a JSON object (driver-specific keys plus `validator`,
    /// `partition_selector`, `serializer`).
    fn create_topic(&self, name: &str, options: &Value) -> Result<()>;
    /// Opens an existing topic.
    fn open_topic(&self, name: &str) -> Result<Arc<dyn TopicBackend>>;
    /// Whether a topic exists.
    fn topic_exists(&self, name: &str) -> Result<bool>;
    /// Names of all topics, sorted.
    fn list_topics(&self) -> Result<Vec<String>>;
    /// A thread pool suited to this driver.
    fn make_thread_pool(&self, threads: usize) -> ThreadPool {
        ThreadPool::new(threads)
    }

    /// The pool producers use when they are given none. The default, for drivers without
    /// one, is an inline pool (work runs on the pushing thread).
    fn default_thread_pool(&self) -> ThreadPool {
        ThreadPool::inline()
    }

    /// Every topic with its metadata (upstream's `listTopics()`): at least `name`,
    /// `num_partitions` and the options it was created with (`validator`, ...). The default
    /// opens each topic; drivers may answer from their catalogue instead.
    fn list_topics_metadata(&self) -> Result<BTreeMap<String, Value>> {
        let mut out = BTreeMap::new();
        for name in self.list_topics()? {
            let topic = match self.open_topic(&name) {
                Ok(t) => t,
                // Removed since it was listed.
                Err(Error::TopicNotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            let mut m = serde_json::Map::new();
            if let Value::Object(options) = topic.options() {
                m.extend(options);
            }
            m.insert("name".into(), Value::from(name.clone()));
            m.insert(
                "num_partitions".into(),
                Value::from(topic.partitions()?.len()),
            );
            out.insert(name, Value::Object(m));
        }
        Ok(out)
    }
}

/// Description of one partition of a topic.
#[derive(Clone, Debug, PartialEq)]
pub struct PartitionInfo {
    /// Index of the partition in the topic.
    pub index: usize,
    /// Driver-specific details (e.g. path, number of stored events).
    pub info: Value,
}

/// A topic as implemented by a driver.
pub trait TopicBackend: Send + Sync {
    /// Name of the topic.
    fn name(&self) -> &str;
    /// The options the topic was created with.
    fn options(&self) -> Value;
    /// The topic's partitions.
    fn partitions(&self) -> Result<Vec<PartitionInfo>>;
    /// Validator, partition selector and serializer of the topic.
    fn policies(&self) -> &TopicPolicies;
    /// Creates a producer.
    fn producer(&self, name: &str, options: ProducerOptions) -> Result<Arc<dyn ProducerBackend>>;
    /// Creates a consumer; `name` identifies its acknowledgements.
    fn consumer(&self, name: &str, options: ConsumerOptions) -> Result<Arc<dyn ConsumerBackend>>;
    /// Marks the topic complete: consumers that reach the end get the end-of-stream marker.
    fn mark_as_complete(&self) -> Result<()>;
    /// Whether the topic was marked complete.
    fn is_complete(&self) -> Result<bool>;

    /// Whether this driver's consumers write into [`ConsumerOptions::buffer_allocator`]'s
    /// buffers themselves. The default, false, makes the API give the driver no allocator and
    /// copy each event's selected data into the buffers instead (correct, one copy).
    fn supports_buffer_allocator(&self) -> bool {
        false
    }
}

/// A producer as implemented by a driver.
pub trait ProducerBackend: Send + Sync {
    /// Queues an event (already converted and validated by [`Producer::push`]).
    fn push(&self, metadata: Metadata, data: DataView, partition: Option<usize>)
        -> Future<EventId>;
    /// Queues `events` in order (already converted and validated by [`Producer::push_many`]),
    /// all into `partition` when given; the future gives their ids, in order, once all are
    /// stored. The default pushes them one by one; drivers with batches override it to take
    /// their lock and make one future for the whole call.
    fn push_many(
        &self,
        events: Vec<(Metadata, DataView)>,
        partition: Option<usize>,
    ) -> Future<Vec<EventId>> {
        Future::all(
            events
                .into_iter()
                .map(|(m, d)| self.push(m, d, partition))
                .collect(),
        )
    }

    /// Sends every queued event; the future completes when all are stored.
    fn flush(&self) -> Future<()>;

    /// Starts storing the events queued so far (seals open batches) without waiting, and
    /// without taking the losses the next `flush` reports. [`Producer`] calls it when a push
    /// future that is not complete yet is waited on, so that waiting right after `push` with a
    /// fixed batch size does not block until the batch fills. The default does nothing: such a
    /// wait then lasts until the batch fills or `flush` is called (correct, never lossy, but
    /// slower); drivers with batches should override it.
    fn send_pending(&self) {}
}

/// A consumer as implemented by a driver.
pub trait ConsumerBackend: Send + Sync {
    /// The next event (or the end-of-stream marker).
    fn pull(&self) -> Future<Event>;

    /// Acknowledges every event of `partition` up to and including `id`, which must have been
    /// delivered or reported failed ([`crate::Error::EventFailed`]) by this consumer.
    fn acknowledge(&self, partition: usize, id: EventId) -> Result<()> {
        let _ = (partition, id);
        Err(Error::Unsupported("acknowledging by position"))
    }
}

/// Creates a driver from its options.
pub type DriverFactory = fn(&Value) -> Result<Arc<dyn DriverBackend>>;

fn registry() -> &'static RwLock<BTreeMap<String, DriverFactory>> {
    static REGISTRY: OnceLock<RwLock<BTreeMap<String, DriverFactory>>> = OnceLock::new();
    REGISTRY.get_or_init(|| RwLock::new(BTreeMap::new()))
}

/// Registers a driver under `name` (replacing any previous one).
pub fn register_driver(name: &str, factory: DriverFactory) {
    registry().write().insert(name.to_owned(), factory);
}

/// Names of the registered drivers.
pub fn registered_drivers() -> Vec<String> {
    registry().read().keys().cloned().collect()
}

/// Checks a topic or consumer name: 1 to 200 characters from `[A-Za-z0-9._-]`, not starting
/// with `.` or `-`, so it can never escape a directory or be taken for a flag.
pub fn check_name(name: &str) -> std::result::Result<(), &'static str> {
    if name.is_empty() {
        return Err("name is empty");
    }
    if name.len() > 200 {
        return Err("name is longer than 200 bytes");
    }
    if name.starts_with('.') || name.starts_with('-') {
        return Err("name must not start with '.' or '-'");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err("only letters, digits, '_', '-' and '.' are allowed");
    }
    Ok(())
}

/// Checks a topic name, see [`check_name`].
pub fn validate_topic_name(name: &str) -> Result<()> {
    check_name(name).map_err(|reason| Error::InvalidTopicName {
        name: name.to_owned(),
        reason,
    })
}

/// Checks a consumer name, see [`check_name`].
pub fn validate_consumer_name(name: &str) -> Result<()> {
    check_name(name).map_err(|reason| Error::InvalidConsumerName {
        name: name.to_owned(),
        reason,
    })
}

/// Entry point: a connection to a streaming engine through a named driver.
#[derive(Clone)]
pub struct Driver {
    name: String,
    inner: Arc<dyn DriverBackend>,
}

impl Driver {
    /// Instantiates driver `name` with `options` (a JSON object).
    ///
    /// `name` is a registered driver; or `"<name>:<library>"`, which first loads the driver
    /// library `<library>` (a path, or a file name the dynamic loader searches for, e.g.
    /// `libmydriver.so`) and takes driver `<name>` from it; or, when no driver is registered
    /// under `name`, `lib<name>.so` is loaded from the first directory of `LD_LIBRARY_PATH`
    /// holding it. See [`crate::dylib`] for how libraries are built and checked.
    pub fn new(name: &str, options: Value) -> Result<Self> {
        let (name, library) = match name.split_once(':') {
            Some((n, l)) => (n, Some(l)),
            None => (name, None),
        };
        if let Some(library) = library {
            if name.is_empty() {
                return Err(Error::option(
                    "driver",
                    format!("\"{name}:{library}\" names no driver before ':'"),
                ));
            }
            crate::dylib::load_for(name, std::path::Path::new(library))?;
        }
        let mut factory = registry().read().get(name).copied();
        let mut searched = String::new();
        if factory.is_none() && library.is_none() {
            match crate::dylib::find_library(name, &crate::dylib::search_path()) {
                Ok(path) => {
                    crate::dylib::load_for(name, &path)?;
                    factory = registry().read().get(name).copied();
                }
                Err(what) => searched = format!("; {what}"),
            }
        }
        let factory = factory.ok_or_else(|| Error::UnknownDriver {
            name: name.to_owned(),
            known: {
                let known = registered_drivers();
                if known.is_empty() {
                    "none registered".to_owned()
                } else {
                    known.join(", ")
                }
            },
            searched,
        })?;
        if !(options.is_object() || options.is_null()) {
            return Err(Error::option("driver", "options must be a JSON object"));
        }
        Ok(Driver {
            name: name.to_owned(),
            inner: factory(&options)?,
        })
    }

    /// Wraps a backend directly.
    pub fn from_backend(name: &str, inner: Arc<dyn DriverBackend>) -> Self {
        Driver {
            name: name.to_owned(),
            inner,
        }
    }

    /// Name of the driver.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Creates a topic.
    pub fn create_topic(&self, name: &str, options: Value) -> Result<()> {
        validate_topic_name(name)?;
        if !(options.is_object() || options.is_null()) {
            return Err(Error::option("topic", "options must be a JSON object"));
        }
        // Reject bad policy specs before anything is created.
        TopicPolicies::from_options(&options)?;
        self.inner.create_topic(name, &options)
    }

    /// Opens a topic.
    pub fn open_topic(&self, name: &str) -> Result<TopicHandle> {
        validate_topic_name(name)?;
        Ok(TopicHandle {
            inner: self.inner.open_topic(name)?,
            driver: self.clone(),
        })
    }

    /// Whether a topic exists.
    pub fn topic_exists(&self, name: &str) -> Result<bool> {
        validate_topic_name(name)?;
        self.inner.topic_exists(name)
    }

    /// Names of all topics.
    pub fn list_topics(&self) -> Result<Vec<String>> {
        self.inner.list_topics()
    }

    /// A thread pool of `threads` workers suited to this driver (0: inline).
    pub fn make_thread_pool(&self, threads: usize) -> ThreadPool {
        self.inner.make_thread_pool(threads)
    }

    /// The pool producers use when given none (the files driver's `thread_count` workers).
    pub fn default_thread_pool(&self) -> ThreadPool {
        self.inner.default_thread_pool()
    }

    /// Every topic with its metadata, by name (upstream's `listTopics()`): `name`,
    /// `num_partitions`, the policies and the other options it was created with, plus
    /// driver-specific keys (the files driver adds `path`).
    pub fn list_topics_metadata(&self) -> Result<BTreeMap<String, Value>> {
        self.inner.list_topics_metadata()
    }
}

/// A handle to an open topic.
#[derive(Clone)]
pub struct TopicHandle {
    inner: Arc<dyn TopicBackend>,
    driver: Driver,
}

impl TopicHandle {
    /// Name of the topic.
    pub fn name(&self) -> &str {
        self.inner.name()
    }

    /// Options the topic was created with.
    pub fn options(&self) -> Value {
        self.inner.options()
    }

    /// The partitions.
    pub fn partitions(&self) -> Result<Vec<PartitionInfo>> {
        self.inner.partitions()
    }

    /// The driver the topic was opened with.
    pub fn driver(&self) -> &Driver {
        &self.driver
    }

    /// The topic's validator.
    pub fn validator(&self) -> Arc<dyn Validator> {
        self.inner.policies().validator.clone()
    }

    /// The topic's partition selector.
    pub fn partition_selector(&self) -> Arc<dyn PartitionSelector> {
        self.inner.policies().partition_selector.clone()
    }

    /// The topic's serializer.
    pub fn serializer(&self) -> Arc<dyn Serializer> {
        self.inner.policies().serializer.clone()
    }

    /// Creates a producer with default options.
    pub fn producer(&self) -> Result<Producer> {
        self.producer_with("", ProducerOptions::default())
    }

    /// Creates a named producer with options.
    pub fn producer_with(&self, name: &str, options: ProducerOptions) -> Result<Producer> {
        let mut effective = options.clone();
        if effective.thread_pool.is_none() {
            effective.thread_pool = Some(self.driver.default_thread_pool());
        }
        Ok(Producer {
            inner: self.inner.producer(name, options)?,
            policies: self.inner.policies().clone(),
            rejected: Arc::new(Losses::new()),
            name: name.into(),
            topic: self.clone(),
            options: Arc::new(effective),
        })
    }

    /// Creates a consumer with default options (metadata only).
    pub fn consumer(&self, name: &str) -> Result<Consumer> {
        self.consumer_with(name, ConsumerOptions::default())
    }

    /// Creates a consumer with options.
    pub fn consumer_with(&self, name: &str, options: ConsumerOptions) -> Result<Consumer> {
        validate_consumer_name(name)?;
        if options.buffer_allocator.is_some() && options.data_allocator.is_some() {
            return Err(Error::option(
                "consumer.buffer_allocator",
                "set either data_allocator or buffer_allocator, not both",
            ));
        }
        let inner = match &options.buffer_allocator {
            Some(alloc) if !self.inner.supports_buffer_allocator() => {
                let mut plain = options.clone();
                plain.buffer_allocator = None;
                Arc::new(crate::buffer::CopyIntoBuffers {
                    inner: self.inner.consumer(name, plain)?,
                    alloc: alloc.clone(),
                }) as Arc<dyn ConsumerBackend>
            }
            _ => self.inner.consumer(name, options.clone())?,
        };
        Ok(Consumer {
            name: name.to_owned(),
            inner,
            topic: self.clone(),
            options: Arc::new(options),
        })
    }

    /// Marks the topic complete.
    pub fn mark_as_complete(&self) -> Result<()> {
        self.inner.mark_as_complete()
    }

    /// Whether the topic was marked complete.
    pub fn is_complete(&self) -> Result<bool> {
        self.inner.is_complete()
    }
}

/// Pushes events into a topic. Dropping a producer flushes it.
///
/// Nothing is lost silently: [`Producer::flush`] fails with [`Error::EventsLost`] if any event
/// pushed since the previous flush was not stored, whether `push` rejected it at once (invalid
/// JSON, validator) or it failed later (storage error, topic completed), and even if its push
/// future was dropped unread. Clones share that record.
#[derive(Clone)]
pub struct Producer {
    inner: Arc<dyn ProducerBackend>,
    policies: TopicPolicies,
    /// Events `push` rejected since the last flush.
    rejected: Arc<Losses>,
    name: Arc<str>,
    topic: TopicHandle,
    /// The options, with the thread pool actually used.
    options: Arc<ProducerOptions>,
}

impl Producer {
    /// Name given at creation (unused by the files driver).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The topic this producer pushes to.
    pub fn topic(&self) -> &TopicHandle {
        &self.topic
    }

    /// Batching policy.
    pub fn batch_size(&self) -> BatchSize {
        self.options.batch_size
    }

    /// Most batches in flight before `push` blocks.
    pub fn max_num_batches(&self) -> usize {
        self.options.max_num_batches
    }

    /// Ordering guarantee.
    pub fn ordering(&self) -> Ordering {
        self.options.ordering
    }

    /// The thread pool storing batches: the one given, or the driver's default pool.
    pub fn thread_pool(&self) -> ThreadPool {
        self.options
            .thread_pool
            .clone()
            .unwrap_or_else(|| self.topic.driver.default_thread_pool())
    }

    /// Queues an event; non-blocking unless `max_num_batches` batches are already in flight.
    ///
    /// `metadata` may be a JSON `&str`/`String`, a `serde_json::Value` or a [`Metadata`];
    /// `data` anything convertible into a [`DataView`] (`Vec<u8>`, `Bytes`, `()`...). Data is
    /// never copied: the producer keeps a reference until the event is stored.
    ///
    /// The future completes once the event is **stored** (stronger than upstream's files
    /// driver, which completes it once the event is batched); `flush()` stays the point where
    /// every pushed event is known stored or reported lost. Waiting on a push future that is
    /// not complete yet (`wait`, `wait_until`, `get`, even `wait(0)`) sends the batch holding
    /// the event, with the other open batches, so a wait right after `push` returns as soon as
    /// that event is stored instead of blocking until the batch fills (a fixed batch size, or
    /// an adaptive one on an inline pool, which seals batches of 4,096 events);
    /// [`Future::is_ready`] polls without sending. To keep batches full, wait on the futures
    /// after `flush()` (or not at all: `flush()` reports every loss).
    pub fn push(&self, metadata: impl IntoMetadata, data: impl Into<DataView>) -> Future<EventId> {
        self.push_impl(metadata, data.into(), None)
    }

    /// Like [`Producer::push`], into a given partition.
    pub fn push_to(
        &self,
        partition: usize,
        metadata: impl IntoMetadata,
        data: impl Into<DataView>,
    ) -> Future<EventId> {
        self.push_impl(metadata, data.into(), Some(partition))
    }

    /// Queues several events in one call: what [`Producer::push`] does for each, in order, for
    /// a fraction of its cost per event (the driver's lock is taken once and one future covers
    /// them all). The future gives their ids, in order, once all are stored; waiting on it
    /// sends their batches, as for `push`.
    ///
    /// Every event is converted and validated before any is queued: if one fails, **none is
    /// queued**, the future fails naming the first that failed (its position in the call), and
    /// the next `flush` counts every event of the call as lost. A failure after that (the
    /// partition selector, the serializer, storage) fails the future as well, with the first
    /// such error, and the next `flush` counts the events it hit, as separate `push` calls
    /// would; the other events are stored.
    pub fn push_many<M, D>(&self, events: impl IntoIterator<Item = (M, D)>) -> Future<Vec<EventId>>
    where
        M: IntoMetadata,
        D: Into<DataView>,
    {
        self.push_many_impl(events, None)
    }

    /// Like [`Producer::push_many`], every event into a given partition.
    pub fn push_many_to<M, D>(
        &self,
        partition: usize,
        events: impl IntoIterator<Item = (M, D)>,
    ) -> Future<Vec<EventId>>
    where
        M: IntoMetadata,
        D: Into<DataView>,
    {
        self.push_many_impl(events, Some(partition))
    }

    fn push_many_impl<M, D>(
        &self,
        events: impl IntoIterator<Item = (M, D)>,
        partition: Option<usize>,
    ) -> Future<Vec<EventId>>
    where
        M: IntoMetadata,
        D: Into<DataView>,
    {
        let mut events = events.into_iter();
        let mut admitted = Vec::with_capacity(events.size_hint().0);
        while let Some((metadata, data)) = events.next() {
            let data = data.into();
            match self.admit(metadata, &data) {
                Ok(m) => admitted.push((m, data)),
                Err(e) => {
                    let index = admitted.len();
                    let count = (index + 1 + events.count()) as u64;
                    let e = Arc::new(Error::PushManyRefused {
                        index,
                        count,
                        source: Box::new(e),
                    });
                    self.rejected.record(count, e.clone());
                    return Future::failed(Error::Shared(e));
                }
            }
        }
        if admitted.is_empty() {
            return Future::ready(Vec::new());
        }
        let future = self.inner.push_many(admitted, partition);
        self.send_on_wait(future)
    }

    fn push_impl(
        &self,
        metadata: impl IntoMetadata,
        data: DataView,
        partition: Option<usize>,
    ) -> Future<EventId> {
        let metadata = match self.admit(metadata, &data) {
            Ok(m) => m,
            Err(e) => return Future::failed(self.rejected.reject(e)),
        };
        let future = self.inner.push(metadata, data, partition);
        self.send_on_wait(future)
    }

    /// Converts and validates an event's metadata (the caller records a rejection).
    fn admit(&self, metadata: impl IntoMetadata, data: &DataView) -> Result<Metadata> {
        let metadata = metadata.into_metadata()?;
        // Whatever the validator, what is stored must parse back with `Metadata::json`.
        metadata.check()?;
        match crate::catch_panic("the topic's validator", || {
            self.policies.validator.validate(&metadata, data)
        }) {
            Ok(Ok(())) => Ok(metadata),
            Ok(Err(e)) | Err(e) => Err(e),
        }
    }

    /// `future`, made to send the open batches when waited on before it is complete.
    fn send_on_wait<T: Send + 'static>(&self, future: Future<T>) -> Future<T> {
        if self.options.batch_size != BatchSize::Fixed(1) && !future.is_ready() {
            return Future::pending(Box::new(SendOnWait {
                future,
                producer: self.inner.clone(),
                sent: false,
            }));
        }
        future
    }

    /// Sends all queued events; the future completes when they are stored.
    ///
    /// It fails with [`Error::EventsLost`] (how many, and the first reason) if any event pushed
    /// since the previous flush was not stored, including events whose push future already
    /// reported the failure. Each loss is reported by one flush.
    pub fn flush(&self) -> Future<()> {
        let rejected = self.rejected.take();
        let flushed = self.inner.flush();
        match rejected {
            None => flushed,
            Some((count, reason)) => Future::pending(Box::new(WithRejections {
                flushed,
                rejected: Some((count, reason)),
                record: self.rejected.clone(),
            })),
        }
    }
}

/// A push future that, when waited on before it is complete, has the driver send the open
/// batches (see [`Producer::push`]).
struct SendOnWait<T> {
    future: Future<T>,
    producer: Arc<dyn ProducerBackend>,
    sent: bool,
}

impl<T: Send> Waitable<T> for SendOnWait<T> {
    fn wait_until(&mut self, deadline: Option<std::time::Instant>) -> Option<Result<T>> {
        if !self.sent && !self.future.is_ready() {
            self.sent = true;
            self.producer.send_pending();
        }
        self.future.wait_until(deadline).transpose()
    }

    fn is_ready(&self) -> bool {
        self.future.is_ready()
    }
}

/// A driver's flush, plus the events the API rejected before it reached the driver.
struct WithRejections {
    flushed: Future<()>,
    rejected: Option<(u64, Arc<Error>)>,
    record: Arc<Losses>,
}

impl Waitable<()> for WithRejections {
    fn wait_until(&mut self, deadline: Option<std::time::Instant>) -> Option<Result<()>> {
        let flushed = match self.flushed.wait_until(deadline) {
            Ok(None) => return None,
            Ok(Some(())) => Ok(()),
            Err(e) => Err(e),
        };
        let Some((count, reason)) = self.rejected.take() else {
            return Some(Err(Error::FutureConsumed));
        };
        Some(Err(match flushed {
            Ok(()) => Error::EventsLost {
                count,
                source: reason,
            },
            Err(Error::EventsLost {
                count: lost,
                source,
            }) => Error::EventsLost {
                count: lost.saturating_add(count),
                source,
            },
            Err(other) => {
                // Reported by the next flush instead.
                self.record.record(count, reason);
                other
            }
        }))
    }

    fn is_ready(&self) -> bool {
        self.flushed.is_ready()
    }
}

/// Pulls events from a topic.
///
/// `for event in &consumer` iterates until end-of-stream or until no event arrives within 5 s
/// (see [`Consumer::events`]); [`Consumer::process`] runs a processor over events.
#[derive(Clone)]
pub struct Consumer {
    name: String,
    pub(crate) inner: Arc<dyn ConsumerBackend>,
    topic: TopicHandle,
    options: Arc<ConsumerOptions>,
}

impl Consumer {
    /// Name of the consumer.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The topic this consumer reads.
    pub fn topic(&self) -> &TopicHandle {
        &self.topic
    }

    /// Events read per refill.
    pub fn batch_size(&self) -> BatchSize {
        self.options.batch_size
    }

    /// Most prefetched batches held in memory.
    pub fn max_num_batches(&self) -> usize {
        self.options.max_num_batches
    }

    /// The prefetching thread pool (an inline pool when none was given: no prefetching).
    pub fn thread_pool(&self) -> ThreadPool {
        self.options.thread_pool.clone().unwrap_or_default()
    }

    /// The data selector (`None`: metadata only).
    pub fn data_selector(&self) -> Option<DataSelector> {
        self.options.data_selector.clone()
    }

    /// The data allocator (`None`: the driver's default buffers).
    pub fn data_allocator(&self) -> Option<DataAllocator> {
        self.options.data_allocator.clone()
    }

    /// The partitions consumed (upstream's `targets`; `None`: all).
    pub fn partitions(&self) -> Option<&[usize]> {
        self.options.partitions.as_deref()
    }

    /// The next event; the end-of-stream marker once a completed topic is exhausted.
    pub fn pull(&self) -> Future<Event> {
        self.inner.pull()
    }

    /// Acknowledges every event of `partition` up to and including `id`, like
    /// [`Event::acknowledge`]. This is how a consumer moves past an event it could not receive:
    /// a pull that fails with [`Error::EventFailed`] names the partition and id to acknowledge.
    /// `id` must already have been delivered or reported by this consumer.
    pub fn acknowledge(&self, partition: usize, id: EventId) -> Result<()> {
        self.inner.acknowledge(partition, id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_driver_lists_known_ones() {
        let e = Driver::new("no-such-driver", Value::Null)
            .err()
            .expect("error");
        let msg = e.to_string();
        assert!(msg.contains("unknown driver \"no-such-driver\""), "{msg}");
    }

    #[test]
    fn names_that_escape_are_rejected() {
        for bad in [
            "",
            "..",
            "../x",
            "a/b",
            ".hidden",
            "-flag",
            "a\0b",
            "x y",
            &"a".repeat(201),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["t", "my_topic", "a.b-c", "T0"] {
            assert!(check_name(good).is_ok(), "{good:?} rejected");
        }
    }
}
