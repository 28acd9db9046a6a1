//! [`KafkaDriver`]: the connection (an admin client) and the topic catalogue operations
//! (create, open, exists, list) on the broker.

use std::sync::Arc;
use std::time::{Duration, Instant};

use diaspora_api::{DriverBackend, Error, Result, TopicBackend, Value};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::error::KafkaError;
use crate::options::KafkaOptions;
use crate::producer::Sender;
use crate::topic::{catalogue_topic, KafkaTopic, CATALOGUE_PREFIX};

/// Most partitions a topic may have.
pub const MAX_PARTITIONS: u64 = 65_536;

/// What every topic, producer and consumer of one driver instance shares.
pub struct Conn {
    /// The options.
    pub options: KafkaOptions,
    /// Admin client (topic creation, metadata, watermarks).
    pub admin: AdminClient<DefaultClientContext>,
    /// The producer of catalogue records and end markers (one record at a time).
    pub control: Sender,
}

impl Conn {
    /// Connects: fails within the deadline if no broker answers.
    pub fn connect(options: KafkaOptions) -> Result<Arc<Conn>> {
        let admin: AdminClient<DefaultClientContext> = options
            .admin()
            .create()
            .map_err(|e| KafkaError::client("creating the admin client", e))?;
        admin
            .inner()
            .fetch_metadata(None, options.timeout)
            .map_err(|source| KafkaError::Unreachable {
                servers: options.bootstrap_servers.clone(),
                timeout_ms: options.timeout_ms(),
                source,
            })?;
        let control = Sender::new(&options, None)?;
        Ok(Arc::new(Conn {
            options,
            admin,
            control,
        }))
    }

    /// Names of the broker's topics.
    pub fn kafka_topics(&self) -> Result<Vec<String>> {
        let md = self
            .admin
            .inner()
            .fetch_metadata(None, self.options.timeout)
            .map_err(|e| KafkaError::client("listing topics", e))?;
        Ok(md
            .topics()
            .iter()
            .filter(|t| t.error().is_none())
            .map(|t| t.name().to_owned())
            .collect())
    }

    /// Partitions of a Kafka topic (`None`: no such topic).
    pub fn partition_count(&self, topic: &str) -> Result<Option<usize>> {
        let md = self
            .admin
            .inner()
            .fetch_metadata(None, self.options.timeout)
            .map_err(|e| KafkaError::client(format!("describing topic {topic}"), e))?;
        Ok(md
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none())
            .map(|t| t.partitions().len()))
    }

    /// The high watermark of partition 0 of `topic`.
    pub fn high_watermark(&self, topic: &str) -> Result<i64> {
        let (_, high) = self
            .admin
            .inner()
            .fetch_watermarks(topic, 0, self.options.timeout)
            .map_err(|e| KafkaError::client(format!("reading the watermarks of {topic}"), e))?;
        Ok(high)
    }

    /// Reads the first record of partition 0 of `topic`, waiting for it until the deadline.
    pub fn first_record(&self, topic: &str) -> Result<Vec<u8>> {
        let mut config = self.options.admin();
        // librdkafka needs a group to assign partitions; this one never commits.
        config
            .set("group.id", "__diaspora.catalogue-reader")
            .set("enable.auto.commit", "false");
        let consumer: BaseConsumer = config
            .create()
            .map_err(|e| KafkaError::client("creating a catalogue reader", e))?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Beginning)
            .map_err(|e| KafkaError::client("assigning the catalogue", e))?;
        consumer
            .assign(&tpl)
            .map_err(|e| KafkaError::client("assigning the catalogue", e))?;
        let deadline = Instant::now() + self.options.timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(KafkaError::Timeout {
                    what: format!("reading the catalogue record of {topic}"),
                    timeout_ms: self.options.timeout_ms(),
                }
                .into());
            }
            match consumer.poll(left.min(Duration::from_millis(100))) {
                // Only when a user's `config` enables `enable.partition.eof`: not an error.
                None | Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => continue,
                Some(Err(e)) => {
                    return Err(KafkaError::client(format!("reading {topic}"), e).into())
                }
                Some(Ok(m)) => return Ok(m.payload().unwrap_or_default().to_vec()),
            }
        }
    }

    fn admin_options(&self) -> AdminOptions {
        AdminOptions::new()
            .request_timeout(Some(self.options.timeout))
            .operation_timeout(Some(self.options.timeout))
    }

    /// Creates Kafka topics; `Ok(false)` if the first already existed.
    pub fn create_kafka_topics(&self, topics: &[(&str, usize)]) -> Result<bool> {
        let new: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|(name, n)| NewTopic::new(name, *n as i32, TopicReplication::Fixed(1)))
            .collect();
        let results =
            futures_executor::block_on(self.admin.create_topics(&new, &self.admin_options()))
                .map_err(|e| KafkaError::client("creating topics", e))?;
        for (i, r) in results.into_iter().enumerate() {
            match r {
                Ok(_) => {}
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) if i == 0 => return Ok(false),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(KafkaError::client(
                        format!("creating topic {name}"),
                        rdkafka::error::KafkaError::AdminOp(code),
                    )
                    .into())
                }
            }
        }
        Ok(true)
    }
}

/// The kafka driver.
pub struct KafkaDriver {
    conn: Arc<Conn>,
}

impl KafkaDriver {
    /// Connects to the brokers of `options`.
    pub fn connect(options: KafkaOptions) -> Result<KafkaDriver> {
        Ok(KafkaDriver {
            conn: Conn::connect(options)?,
        })
    }
}

fn num_partitions(options: &Value) -> Result<usize> {
    match options.get("num_partitions") {
        None => Ok(1),
        Some(v) => v
            .as_u64()
            .filter(|n| (1..=MAX_PARTITIONS).contains(n))
            .map(|n| n as usize)
            .ok_or_else(|| {
                Error::option(
                    "topic.num_partitions",
                    format!("must be an integer from 1 to {MAX_PARTITIONS}"),
                )
            }),
    }
}

impl DriverBackend for KafkaDriver {
    fn create_topic(&self, name: &str, options: &Value) -> Result<()> {
        diaspora_api::validate_topic_name(name)?;
        if name.starts_with(CATALOGUE_PREFIX) {
            return Err(KafkaError::ReservedName(name.to_owned()).into());
        }
        let options = match options {
            Value::Null => Value::Object(Default::default()),
            Value::Object(_) => options.clone(),
            _ => return Err(Error::option("topic", "options must be a JSON object")),
        };
        let n = num_partitions(&options)?;
        diaspora_api::TopicPolicies::from_options(&options)?;
        let catalogue = catalogue_topic(name);
        if self.topic_exists(name)? {
            return Err(Error::TopicExists(name.to_owned()));
        }
        // The catalogue topic first: whoever creates it owns the name.
        if !self.conn.create_kafka_topics(&[(&catalogue, 1)])? {
            return Err(Error::TopicExists(name.to_owned()));
        }
        self.conn.create_kafka_topics(&[(name, n)])?;
        let mut stored = options;
        if let Value::Object(m) = &mut stored {
            m.insert("num_partitions".into(), Value::from(n));
        }
        let record = serde_json::to_vec(&stored)
            .map_err(|e| Error::option("topic", format!("cannot encode options: {e}")))?;
        self.conn
            .control
            .send_and_wait(&catalogue, 0, &record, self.conn.options.timeout)?;
        Ok(())
    }

    fn open_topic(&self, name: &str) -> Result<Arc<dyn TopicBackend>> {
        diaspora_api::validate_topic_name(name)?;
        Ok(Arc::new(KafkaTopic::open(self.conn.clone(), name)?))
    }

    fn topic_exists(&self, name: &str) -> Result<bool> {
        diaspora_api::validate_topic_name(name)?;
        let topics = self.conn.kafka_topics()?;
        let catalogue = catalogue_topic(name);
        Ok(topics.contains(&catalogue) && topics.iter().any(|t| t == name))
    }

    fn list_topics(&self) -> Result<Vec<String>> {
        let topics = self.conn.kafka_topics()?;
        let mut out: Vec<String> = topics
            .iter()
            .filter_map(|t| t.strip_prefix(CATALOGUE_PREFIX))
            .filter(|name| topics.iter().any(|t| t == name))
            .map(str::to_owned)
            .collect();
        out.sort();
        Ok(out)
    }
}
