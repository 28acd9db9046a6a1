//! A topic of the kafka driver.
//!
//! A Diaspora topic `T` is the Kafka topic `T` (its partitions are the topic's partitions)
//! plus a one-partition **catalogue topic** `__diaspora.T`:
//!
//! - offset 0 holds the topic's options as JSON (`num_partitions`, `validator`,
//!   `partition_selector`, `serializer` and any other key given at creation), so every client
//!   that opens the topic applies the same policies;
//! - any record after it means the topic was marked complete.
//!
//! Each catalogue record is sent alone and awaited before the next, so every record batch of
//! the catalogue holds one record. `is_complete` is then "the catalogue's high watermark is
//! above 1", which holds even on brokers such as tansu whose high watermark is wrong for
//! multi-record batches (it is the last batch's base offset + 1).
//!
//! `mark_as_complete` first appends an end marker record (see [`crate::record`]) to every
//! partition of `T`, then the completion record to the catalogue: a consumer ends its stream
//! once it has read the marker of each of its partitions, so every consumer sees the
//! completion, whatever process it runs in.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use diaspora_api::{
    ConsumerBackend, ConsumerOptions, Error, PartitionInfo, ProducerBackend, ProducerOptions,
    Result, TopicBackend, TopicPolicies, Value,
};
use serde_json::json;

use crate::consumer::KafkaConsumer;
use crate::driver::Conn;
use crate::error::KafkaError;
use crate::producer::KafkaProducer;
use crate::record::END_MARKER;

/// Prefix of catalogue topics.
pub const CATALOGUE_PREFIX: &str = "__diaspora.";

/// The catalogue topic of Diaspora topic `name`.
pub fn catalogue_topic(name: &str) -> String {
    format!("{CATALOGUE_PREFIX}{name}")
}

/// What a topic handle, its producers and its consumers share.
pub struct TopicShared {
    /// The connection.
    pub conn: Arc<Conn>,
    /// Name (of both the Diaspora and the Kafka topic).
    pub name: String,
    /// The catalogue topic.
    pub catalogue: String,
    /// The options stored at creation.
    pub options: Value,
    /// Number of partitions.
    pub num_partitions: usize,
    /// The policies built from the options.
    pub policies: TopicPolicies,
    /// Known complete (set by `mark_as_complete` or a catalogue read).
    pub complete: AtomicBool,
}

impl TopicShared {
    /// Whether the topic is complete (asks the broker unless already known).
    pub fn is_complete(&self) -> Result<bool> {
        if self.complete.load(Ordering::Acquire) {
            return Ok(true);
        }
        let complete = self.conn.high_watermark(&self.catalogue)? > 1;
        if complete {
            self.complete.store(true, Ordering::Release);
        }
        Ok(complete)
    }
}

/// The kafka driver's [`TopicBackend`].
pub struct KafkaTopic {
    shared: Arc<TopicShared>,
}

impl KafkaTopic {
    /// Opens topic `name`: reads its catalogue record.
    pub fn open(conn: Arc<Conn>, name: &str) -> Result<KafkaTopic> {
        let catalogue = catalogue_topic(name);
        let topics = conn.kafka_topics()?;
        if !topics.contains(&catalogue) || !topics.iter().any(|t| t == name) {
            return Err(Error::TopicNotFound(name.to_owned()));
        }
        let bad = |reason: String| -> Error {
            KafkaError::BadCatalogue {
                topic: name.to_owned(),
                reason,
            }
            .into()
        };
        let raw = conn.first_record(&catalogue)?;
        let options: Value =
            serde_json::from_slice(&raw).map_err(|e| bad(format!("options are not JSON: {e}")))?;
        let policies = TopicPolicies::from_options(&options)?;
        let stored = options
            .get("num_partitions")
            .and_then(Value::as_u64)
            .ok_or_else(|| bad("no num_partitions".into()))? as usize;
        let actual = conn
            .partition_count(name)?
            .ok_or_else(|| Error::TopicNotFound(name.to_owned()))?;
        if actual < stored {
            return Err(bad(format!(
                "created with {stored} partitions, the broker has {actual}"
            )));
        }
        Ok(KafkaTopic {
            shared: Arc::new(TopicShared {
                conn,
                name: name.to_owned(),
                catalogue,
                options,
                num_partitions: stored,
                policies,
                complete: AtomicBool::new(false),
            }),
        })
    }
}

impl TopicBackend for KafkaTopic {
    fn name(&self) -> &str {
        &self.shared.name
    }

    fn options(&self) -> Value {
        self.shared.options.clone()
    }

    fn partitions(&self) -> Result<Vec<PartitionInfo>> {
        Ok((0..self.shared.num_partitions)
            .map(|index| PartitionInfo {
                index,
                info: json!({"kafka_topic": self.shared.name, "kafka_partition": index}),
            })
            .collect())
    }

    fn policies(&self) -> &TopicPolicies {
        &self.shared.policies
    }

    fn producer(&self, _name: &str, options: ProducerOptions) -> Result<Arc<dyn ProducerBackend>> {
        if self.shared.is_complete()? {
            return Err(Error::TopicComplete(self.shared.name.clone()));
        }
        Ok(Arc::new(KafkaProducer::new(self.shared.clone(), options)?))
    }

    fn consumer(&self, name: &str, options: ConsumerOptions) -> Result<Arc<dyn ConsumerBackend>> {
        Ok(Arc::new(KafkaConsumer::new(
            self.shared.clone(),
            name,
            options,
        )?))
    }

    fn mark_as_complete(&self) -> Result<()> {
        let s = &self.shared;
        let timeout = s.conn.options.timeout;
        let futures: Vec<_> = (0..s.num_partitions)
            .map(|p| s.conn.control.send(&s.name, p, &END_MARKER))
            .collect();
        let deadline = std::time::Instant::now() + timeout;
        for mut f in futures {
            match f.wait_until(Some(deadline))? {
                Some(_) => {}
                None => {
                    return Err(KafkaError::Timeout {
                        what: format!("writing the end markers of {}", s.name),
                        timeout_ms: s.conn.options.timeout_ms(),
                    }
                    .into())
                }
            }
        }
        s.conn
            .control
            .send_and_wait(&s.catalogue, 0, b"{\"complete\":true}", timeout)?;
        s.complete.store(true, Ordering::Release);
        Ok(())
    }

    fn is_complete(&self) -> Result<bool> {
        self.shared.is_complete()
    }
}
