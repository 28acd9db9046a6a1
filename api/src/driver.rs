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
use crate::options::{ConsumerOptions, ProducerOptions};
use crate::policy::TopicPolicies;
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
}

/// A producer as implemented by a driver.
pub trait ProducerBackend: Send + Sync {
    /// Queues an event (already converted and validated by [`Producer::push`]).
    fn push(&self, metadata: Metadata, data: DataView, partition: Option<usize>)
        -> Future<EventId>;
    /// Sends every queued event; the future completes when all are stored.
    fn flush(&self) -> Future<()>;
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
}

/// A handle to an open topic.
#[derive(Clone)]
pub struct TopicHandle {
    inner: Arc<dyn TopicBackend>,
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

    /// Creates a producer with default options.
    pub fn producer(&self) -> Result<Producer> {
        self.producer_with("", ProducerOptions::default())
    }

    /// Creates a named producer with options.
    pub fn producer_with(&self, name: &str, options: ProducerOptions) -> Result<Producer> {
        Ok(Producer {
            inner: self.inner.producer(name, options)?,
            policies: self.inner.policies().clone(),
            rejected: Arc::new(Losses::new()),
        })
    }

    /// Creates a consumer with default options (metadata only).
    pub fn consumer(&self, name: &str) -> Result<Consumer> {
        self.consumer_with(name, ConsumerOptions::default())
    }

    /// Creates a consumer with options.
    pub fn consumer_with(&self, name: &str, options: ConsumerOptions) -> Result<Consumer> {
        validate_consumer_name(name)?;
        Ok(Consumer {
            name: name.to_owned(),
            inner: self.inner.consumer(name, options)?,
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
}

impl Producer {
    /// Queues an event; non-blocking unless `max_num_batches` batches are already in flight.
    ///
    /// `metadata` may be a JSON `&str`/`String`, a `serde_json::Value` or a [`Metadata`];
    /// `data` anything convertible into a [`DataView`] (`Vec<u8>`, `Bytes`, `()`...). Data is
    /// never copied: the producer keeps a reference until the event is stored.
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

    fn push_impl(
        &self,
        metadata: impl IntoMetadata,
        data: DataView,
        partition: Option<usize>,
    ) -> Future<EventId> {
        let metadata = match metadata.into_metadata() {
            Ok(m) => m,
            Err(e) => return Future::failed(self.rejected.reject(e)),
        };
        // Whatever the validator, what is stored must parse back with `Metadata::json`.
        if let Err(e) = metadata.check() {
            return Future::failed(self.rejected.reject(e));
        }
        match crate::catch_panic("the topic's validator", || {
            self.policies.validator.validate(&metadata, &data)
        }) {
            Ok(Ok(())) => {}
            Ok(Err(e)) | Err(e) => return Future::failed(self.rejected.reject(e)),
        }
        self.inner.push(metadata, data, partition)
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
#[derive(Clone)]
pub struct Consumer {
    name: String,
    inner: Arc<dyn ConsumerBackend>,
}

impl Consumer {
    /// Name of the consumer.
    pub fn name(&self) -> &str {
        &self.name
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
