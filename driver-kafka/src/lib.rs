//! The kafka driver of the Diaspora Stream API: topics on a Kafka-protocol broker (Apache
//! Kafka, Redpanda, tansu...) through librdkafka (the `rdkafka` crate's bundled 2.12.1).
//!
//! Mapping:
//! - a topic is a Kafka topic plus a catalogue topic holding its options and completion
//!   ([`topic`]);
//! - an event is one record whose value frames the serialized metadata and the data
//!   ([`record`]); its id is the record's offset in its partition;
//! - a producer is a librdkafka producer; push futures and `flush` complete from delivery
//!   reports ([`producer`]);
//! - a named consumer is a consumer group; `acknowledge` commits offsets ([`consumer`]);
//! - options: [`options`].

#![warn(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod consumer;
pub mod driver;
pub mod error;
pub mod options;
pub mod producer;
pub mod record;
pub mod topic;
mod turns;

pub use driver::KafkaDriver;
pub use error::KafkaError;
pub use options::KafkaOptions;

use std::sync::Arc;

use diaspora_api::{DriverBackend, Result, Value};

/// Registers the "kafka" driver in the API's registry (idempotent).
pub fn register() {
    diaspora_api::register_driver("kafka", create);
}

fn create(options: &Value) -> Result<Arc<dyn DriverBackend>> {
    Ok(Arc::new(KafkaDriver::connect(KafkaOptions::from_json(
        options,
    )?)?))
}
