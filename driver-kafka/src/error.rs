//! [`KafkaError`]: the kafka driver's error family, converted into [`diaspora_api::Error`] at
//! the boundary ([`KafkaError::into_api`]).

use crate::record::RecordError;

/// Everything the kafka driver itself can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KafkaError {
    /// librdkafka reported an error while doing `what`.
    #[error("kafka: {what}: {source}")]
    Client {
        /// What the driver was doing ("creating topic t", "committing offsets"...).
        what: String,
        /// librdkafka's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// No broker of `bootstrap_servers` answered within the driver's deadline.
    #[error("kafka: no broker of {servers:?} answered within {timeout_ms} ms: {source}")]
    Unreachable {
        /// The `bootstrap_servers` option.
        servers: String,
        /// The deadline (`timeout_ms`).
        timeout_ms: u64,
        /// librdkafka's last error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// An event's record (framing + serialized metadata + data) is larger than the producer's
    /// `message.max.bytes`; it was refused before being sent.
    #[error(
        "kafka: event record of {size} bytes exceeds message.max.bytes ({max} bytes); raise \
         \"message.max.bytes\" in the driver's \"config\" (and the broker's limit) or push \
         smaller events"
    )]
    RecordTooLarge {
        /// Size of the framed record.
        size: usize,
        /// The producer's limit.
        max: usize,
    },
    /// A record of a topic could not be decoded (not written by this driver, or damaged).
    #[error("kafka: topic {topic} partition {partition} offset {offset}: {source}")]
    BadRecord {
        /// Kafka topic.
        topic: String,
        /// Partition.
        partition: usize,
        /// Offset of the record.
        offset: u64,
        /// What is wrong with it.
        #[source]
        source: RecordError,
    },
    /// The topic's catalogue record (its options) is missing or unreadable.
    #[error("kafka: catalogue of topic {topic}: {reason}")]
    BadCatalogue {
        /// The Diaspora topic.
        topic: String,
        /// What is wrong.
        reason: String,
    },
    /// An operation did not finish within the driver's deadline.
    #[error("kafka: {what} did not finish within {timeout_ms} ms")]
    Timeout {
        /// What was being done.
        what: String,
        /// The deadline (`timeout_ms`).
        timeout_ms: u64,
    },
    /// The name is reserved for the driver's catalogue topics.
    #[error(
        "kafka: topic names starting with \"{}\" are reserved for the driver",
        crate::topic::CATALOGUE_PREFIX
    )]
    ReservedName(String),
}

impl KafkaError {
    /// Wraps a librdkafka error with what was being done.
    pub fn client(what: impl Into<String>, source: rdkafka::error::KafkaError) -> Self {
        KafkaError::Client {
            what: what.into(),
            source,
        }
    }

    /// Converts into the API's error.
    pub fn into_api(self) -> diaspora_api::Error {
        match self {
            KafkaError::BadRecord { .. } => diaspora_api::Error::Corrupted(self.to_string()),
            e => diaspora_api::Error::driver(e),
        }
    }
}

impl From<KafkaError> for diaspora_api::Error {
    fn from(e: KafkaError) -> Self {
        e.into_api()
    }
}
