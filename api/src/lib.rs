//! Diaspora Stream API: an event-streaming API for HPC.
//!
//! Events have a JSON [`Metadata`] part (small, batched) and a [`DataView`] part (raw bytes,
//! never copied by the producer). Producers push events into the partitions of a topic; named
//! consumers pull them, choosing per event which part of the data to fetch
//! ([`DataSelector`], [`DataAllocator`]), and acknowledge them so a restarted consumer resumes
//! after its last acknowledgement.
//!
//! ```ignore
//! use diaspora_api::Driver;
//! let driver = Driver::new("files", serde_json::json!({"root_path": "/tmp/d"}))?;
//! driver.create_topic("t", serde_json::json!({"num_partitions": 2}))?;
//! let topic = driver.open_topic("t")?;
//! let producer = topic.producer()?;
//! producer.push(r#"{"x":1}"#, vec![1u8, 2, 3]);
//! producer.flush().get()?;
//! let consumer = topic.consumer("c")?;
//! let event = consumer.pull().get()?;
//! event.acknowledge()?;
//! ```

#![warn(missing_docs)]

pub mod data;
pub mod descriptor;
pub mod driver;
pub mod dylib;
pub mod error;
pub mod event;
pub mod future;
pub mod losses;
pub mod metadata;
pub mod options;
pub mod panic;
pub mod policy;
pub mod thread_pool;

pub use bytes::{Bytes, BytesMut};
pub use data::DataView;
pub use descriptor::{DataDescriptor, Segment};
pub use driver::{
    check_name, register_driver, registered_drivers, validate_consumer_name, validate_topic_name,
    Consumer, ConsumerBackend, Driver, DriverBackend, DriverFactory, PartitionInfo, Producer,
    ProducerBackend, TopicBackend, TopicHandle,
};
pub use error::{Error, Result};
pub use event::{Acknowledger, Event, EventId, NO_MORE_EVENTS};
pub use future::{Completion, Future, Waitable};
pub use losses::Losses;
pub use metadata::{IntoMetadata, Metadata};
pub use options::{
    default_allocator, select_all, BatchSize, ConsumerOptions, DataAllocator, DataSelector,
    Ordering, ProducerOptions,
};
pub use panic::{catch_panic, panic_message};
pub use policy::{
    partition_selector_from_spec, serializer_from_spec, validator_from_spec, JsonSerializer,
    JsonValidator, PartitionSelector, RoundRobinSelector, Serializer, TopicPolicies, Validator,
    STRING_OPTION_KEYS,
};
pub use serde_json::{json, Value};
pub use thread_pool::{Job, ThreadPool, ThreadPoolBackend};
