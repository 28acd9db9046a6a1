//! Producer and consumer options, buildable in code or from JSON (for CLIs and config files).

use std::sync::Arc;

use bytes::BytesMut;
use serde_json::{Map, Value};

use crate::buffer::BufferAllocator;
use crate::descriptor::DataDescriptor;
use crate::error::{Error, Result};
use crate::metadata::Metadata;
use crate::thread_pool::ThreadPool;

/// How many events a producer groups into one batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BatchSize {
    /// Send a batch as soon as the previous one is stored: batches grow under load and stay
    /// small (low latency) when the producer is idle.
    #[default]
    Adaptive,
    /// Send a batch every `n` events (or on flush).
    Fixed(usize),
}

/// Whether events of a producer must be stored in push order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Ordering {
    /// Batches of a partition are stored in the order they were created.
    #[default]
    Strict,
    /// Batches may be stored out of order (more parallelism).
    Loose,
}

/// Decides, per event, which part of the data a consumer fetches. Return
/// [`DataDescriptor::null`] to fetch nothing.
pub type DataSelector = Arc<dyn Fn(&Metadata, &DataDescriptor) -> DataDescriptor + Send + Sync>;

/// Provides the buffer the selected data is written into; it must be exactly
/// `descriptor.size()` bytes long.
pub type DataAllocator = Arc<dyn Fn(&Metadata, &DataDescriptor) -> BytesMut + Send + Sync>;

/// A selector fetching all data of every event.
pub fn select_all() -> DataSelector {
    Arc::new(|_, d| d.clone())
}

/// The default allocator: a fresh zeroed buffer per event.
pub fn default_allocator() -> DataAllocator {
    Arc::new(|_, d| BytesMut::zeroed(d.size() as usize))
}

/// Options of a producer.
#[derive(Clone, Debug)]
pub struct ProducerOptions {
    /// Batching policy.
    pub batch_size: BatchSize,
    /// Maximum number of batches sealed but not yet stored; `push` blocks beyond it, which bounds
    /// memory.
    pub max_num_batches: usize,
    /// Ordering guarantee.
    pub ordering: Ordering,
    /// Threads storing batches (`None`: the driver's default).
    pub thread_pool: Option<ThreadPool>,
}

impl Default for ProducerOptions {
    fn default() -> Self {
        ProducerOptions {
            batch_size: BatchSize::Adaptive,
            max_num_batches: 8,
            ordering: Ordering::Strict,
            thread_pool: None,
        }
    }
}

impl ProducerOptions {
    /// Parses `{"batch_size": "adaptive"|N, "max_num_batches": N, "ordering": "strict"|"loose",
    /// "thread_count": N}`; unknown keys are errors.
    pub fn from_json(v: &Value) -> Result<Self> {
        let obj = as_object(v, "producer")?;
        let mut o = ProducerOptions::default();
        for (k, val) in obj.iter() {
            match k.as_str() {
                "batch_size" => o.batch_size = parse_batch_size(val, "producer.batch_size")?,
                "max_num_batches" => o.max_num_batches = positive(val, "producer.max_num_batches")?,
                "ordering" => {
                    o.ordering = match val.as_str() {
                        Some("strict") => Ordering::Strict,
                        Some("loose") => Ordering::Loose,
                        _ => {
                            return Err(Error::option(
                                "producer.ordering",
                                "must be \"strict\" or \"loose\"",
                            ))
                        }
                    }
                }
                "thread_count" => {
                    o.thread_pool = Some(ThreadPool::new(count(val, "producer.thread_count")?))
                }
                other => return Err(unknown_key("producer", other)),
            }
        }
        Ok(o)
    }
}

/// Options of a consumer.
#[derive(Clone)]
pub struct ConsumerOptions {
    /// How many events to read per refill (adaptive: grows while events are available).
    pub batch_size: BatchSize,
    /// Maximum number of prefetched batches held in memory.
    pub max_num_batches: usize,
    /// Which part of each event's data to fetch (`None`: metadata only).
    pub data_selector: Option<DataSelector>,
    /// Where to put fetched data (`None`: [`default_allocator`]).
    pub data_allocator: Option<DataAllocator>,
    /// Where to put fetched data, as one or several buffers, possibly application memory
    /// (see [`crate::buffer`]); replaces `data_allocator`, and setting both is an error.
    pub buffer_allocator: Option<BufferAllocator>,
    /// Partitions to consume (`None`: all).
    pub partitions: Option<Vec<usize>>,
    /// Threads prefetching the next batch while the application processes the current one.
    /// `None` (like a pool of 0 threads): no prefetching, each refill runs on the thread that
    /// pulls. Unlike producers, consumers never use the driver's default pool (the files
    /// driver's `thread_count` is for storing producers' batches).
    pub thread_pool: Option<ThreadPool>,
}

impl Default for ConsumerOptions {
    fn default() -> Self {
        ConsumerOptions {
            batch_size: BatchSize::Adaptive,
            max_num_batches: 2,
            data_selector: None,
            data_allocator: None,
            buffer_allocator: None,
            partitions: None,
            thread_pool: None,
        }
    }
}

impl std::fmt::Debug for ConsumerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerOptions")
            .field("batch_size", &self.batch_size)
            .field("max_num_batches", &self.max_num_batches)
            .field("data_selector", &self.data_selector.is_some())
            .field("data_allocator", &self.data_allocator.is_some())
            .field("buffer_allocator", &self.buffer_allocator.is_some())
            .field("partitions", &self.partitions)
            .field("thread_pool", &self.thread_pool)
            .finish()
    }
}

impl ConsumerOptions {
    /// The partitions to read of a topic with `count` partitions, as listed (`None`: all, in
    /// order). Every driver checks the list with this: an empty list, a partition listed twice
    /// ([`Error::InvalidOption`] on `consumer.partitions`) and one out of range
    /// ([`Error::InvalidPartition`]) are errors.
    pub fn partitions_of(&self, count: usize) -> Result<Vec<usize>> {
        let Some(list) = &self.partitions else {
            return Ok((0..count).collect());
        };
        if list.is_empty() {
            return Err(Error::option("consumer.partitions", "must not be empty"));
        }
        for (i, &p) in list.iter().enumerate() {
            if p >= count {
                return Err(Error::InvalidPartition { index: p, count });
            }
            if list[..i].contains(&p) {
                return Err(Error::option(
                    "consumer.partitions",
                    format!("partition {p} listed twice"),
                ));
            }
        }
        Ok(list.clone())
    }

    /// Parses `{"batch_size": "adaptive"|N, "max_num_batches": N, "partitions": [..],
    /// "thread_count": N, "data": "none"|"all"}`; unknown keys are errors.
    pub fn from_json(v: &Value) -> Result<Self> {
        let obj = as_object(v, "consumer")?;
        let mut o = ConsumerOptions::default();
        for (k, val) in obj.iter() {
            match k.as_str() {
                "batch_size" => o.batch_size = parse_batch_size(val, "consumer.batch_size")?,
                "max_num_batches" => o.max_num_batches = positive(val, "consumer.max_num_batches")?,
                "thread_count" => {
                    o.thread_pool = Some(ThreadPool::new(count(val, "consumer.thread_count")?))
                }
                "partitions" => {
                    let arr = val.as_array().ok_or_else(|| {
                        Error::option("consumer.partitions", "must be an array of integers")
                    })?;
                    o.partitions = Some(
                        arr.iter()
                            .map(|p| count(p, "consumer.partitions"))
                            .collect::<Result<_>>()?,
                    );
                }
                "data" => {
                    o.data_selector = match val.as_str() {
                        Some("none") => None,
                        Some("all") => Some(select_all()),
                        _ => {
                            return Err(Error::option(
                                "consumer.data",
                                "must be \"none\" or \"all\"",
                            ))
                        }
                    }
                }
                other => return Err(unknown_key("consumer", other)),
            }
        }
        Ok(o)
    }
}

fn as_object<'a>(v: &'a Value, what: &str) -> Result<std::borrow::Cow<'a, Map<String, Value>>> {
    match v {
        Value::Null => Ok(std::borrow::Cow::Owned(Map::new())),
        Value::Object(o) => Ok(std::borrow::Cow::Borrowed(o)),
        _ => Err(Error::option(what, "options must be a JSON object")),
    }
}

fn unknown_key(scope: &str, key: &str) -> Error {
    Error::option(format!("{scope}.{key}"), "unknown option")
}

fn count(v: &Value, key: &str) -> Result<usize> {
    v.as_u64()
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| Error::option(key, "must be a non-negative integer"))
}

fn positive(v: &Value, key: &str) -> Result<usize> {
    match count(v, key)? {
        0 => Err(Error::option(key, "must be at least 1")),
        n => Ok(n),
    }
}

fn parse_batch_size(v: &Value, key: &str) -> Result<BatchSize> {
    match v {
        Value::String(s) if s == "adaptive" => Ok(BatchSize::Adaptive),
        Value::Number(_) => Ok(BatchSize::Fixed(positive(v, key)?)),
        _ => Err(Error::option(
            key,
            "must be \"adaptive\" or a positive integer",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_of_checks_the_list() {
        let with = |ps: Option<Vec<usize>>| ConsumerOptions {
            partitions: ps,
            ..Default::default()
        };
        assert_eq!(with(None).partitions_of(3).expect("all"), [0, 1, 2]);
        assert_eq!(
            with(Some(vec![2, 0])).partitions_of(3).expect("2, 0"),
            [2, 0]
        );
        let empty = with(Some(vec![]))
            .partitions_of(3)
            .expect_err("empty")
            .to_string();
        assert!(
            empty.contains("consumer.partitions") && empty.contains("empty"),
            "{empty}"
        );
        let twice = with(Some(vec![1, 0, 1]))
            .partitions_of(3)
            .expect_err("twice")
            .to_string();
        assert!(twice.contains("partition 1 listed twice"), "{twice}");
        assert!(matches!(
            with(Some(vec![0, 3])).partitions_of(3),
            Err(Error::InvalidPartition { index: 3, count: 3 })
        ));
    }
    use serde_json::json;

    #[test]
    fn producer_options_parse_and_reject_unknown_keys() {
        let o = ProducerOptions::from_json(&json!({"batch_size": 64, "ordering": "loose"}))
            .expect("ok");
        assert_eq!(o.batch_size, BatchSize::Fixed(64));
        assert_eq!(o.ordering, Ordering::Loose);
        let e = ProducerOptions::from_json(&json!({"batchsize": 1})).expect_err("unknown");
        assert!(e.to_string().contains("producer.batchsize"), "{e}");
        assert!(ProducerOptions::from_json(&json!({"batch_size": 0})).is_err());
        assert!(ProducerOptions::from_json(&json!({"batch_size": -3})).is_err());
        assert!(ProducerOptions::from_json(&json!([1])).is_err());
    }

    #[test]
    fn consumer_options_parse() {
        let o =
            ConsumerOptions::from_json(&json!({"partitions": [0, 2], "data": "all"})).expect("ok");
        assert_eq!(o.partitions, Some(vec![0, 2]));
        assert!(o.data_selector.is_some());
        assert!(ConsumerOptions::from_json(&json!({"data": "some"})).is_err());
    }
}
