//! The seam between the driver's logic (batching, sequence numbers, retries, fetch pipeline,
//! acknowledgements) and the network: what the producer, consumer and topic need from a
//! server, as plain values. [`crate::remote::RemoteService`] implements it over the rpc engine
//! and the `diaspora-proto` messages; the tests implement it in memory to check the logic
//! without a network (quinn-like separation of state logic from I/O).
//!
//! Calls that carry events ([`Service::produce`], [`Service::fetch`], [`Service::commit`]) are
//! asynchronous: they return at once and call `done` exactly once, from any thread (often a
//! progress thread, so `done` must be quick and must never run user callbacks). The others
//! block until the server answered or the driver's deadline passed.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use diaspora_api::{DataView, Value};

/// Called once with the outcome of an asynchronous call.
pub type Done<T> = Box<dyn FnOnce(Result<T, ServiceError>) + Send + 'static>;

/// Why a call to the server failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The session broke or the server did not answer in time (transport failure, timeout,
    /// restart): the request may or may not have been applied. Resending it with the same
    /// sequence number is safe (the server deduplicates).
    #[error("server {server}: {reason}")]
    Retryable {
        /// Which server (its address or rank/thread, as in the group file).
        server: String,
        /// What happened.
        reason: String,
    },
    /// The server has not stored the batches before this one yet (another batch of the same
    /// partition is being resent): resend this one once they are stored.
    #[error("server {server}: out of order, expected sequence number {expected}")]
    OutOfOrder {
        /// Which server.
        server: String,
        /// The next sequence number the server expects from this producer.
        expected: u64,
    },
    /// The server refused the request for good; the error says why, as the API reports it.
    #[error("{0}")]
    Refused(Arc<diaspora_api::Error>),
}

impl ServiceError {
    /// A refusal carrying an API error.
    pub fn refused(e: diaspora_api::Error) -> Self {
        ServiceError::Refused(Arc::new(e))
    }

    /// The error as the API reports it.
    pub fn into_api(self) -> diaspora_api::Error {
        match self {
            ServiceError::Refused(e) => diaspora_api::Error::Shared(e),
            other => diaspora_api::Error::driver(other),
        }
    }
}

/// A topic as the server describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicInfo {
    /// Its name.
    pub name: String,
    /// The options it was created with (defaults filled in: at least `num_partitions`).
    pub options: Value,
    /// Number of partitions.
    pub num_partitions: usize,
    /// Where each partition lives (server-specific text, shown by `partitions()`).
    pub placement: Vec<String>,
}

/// One sealed batch of a producer for one partition. The data views are the caller's
/// (`Bytes` are reference counted): the service stages or registers them.
#[derive(Debug)]
pub struct OutBatch {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: usize,
    /// The producer instance (random, fixed for its lifetime).
    pub producer_id: u64,
    /// Sequence number of this batch in its partition (0, 1, 2, ... per producer instance).
    pub seq: u64,
    /// Serialized metadata of every event, back to back.
    pub meta: Vec<u8>,
    /// Length of each event's serialized metadata.
    pub meta_lens: Vec<u32>,
    /// Each event's data.
    pub data: Vec<DataView>,
    /// CRC-32 of each event's data.
    pub data_crcs: Vec<u32>,
    /// When the producer gives up on this batch.
    pub deadline: Instant,
}

impl OutBatch {
    /// Number of events.
    pub fn len(&self) -> usize {
        self.meta_lens.len()
    }

    /// Whether the batch has no events.
    pub fn is_empty(&self) -> bool {
        self.meta_lens.is_empty()
    }

    /// Total data bytes.
    pub fn data_bytes(&self) -> u64 {
        self.data.iter().map(DataView::len).sum()
    }
}

/// Which data a fetch brings back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchData {
    /// Metadata only.
    None,
    /// Every event's whole data.
    All,
}

/// A fetch of one partition.
#[derive(Debug, Clone)]
pub struct FetchRequest {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: usize,
    /// First event id wanted.
    pub from: u64,
    /// Most events to return.
    pub max_events: u32,
    /// Most data bytes to return (at least one event is returned whatever its size).
    pub max_bytes: u64,
    /// How long the server may hold the request while there is nothing to return (long poll).
    pub wait_ms: u32,
    /// Whether to bring the data.
    pub data: FetchData,
    /// When the call fails with a timeout.
    pub deadline: Instant,
}

/// One fetched event (before deserialization).
#[derive(Debug, Clone)]
pub struct FetchedEvent {
    /// Serialized metadata.
    pub meta: Bytes,
    /// Length of its data.
    pub data_len: u64,
    /// CRC-32 of its data.
    pub data_crc: u32,
    /// Its data, when the fetch asked for it.
    pub data: Option<Bytes>,
}

/// What a fetch returned.
#[derive(Debug, Clone)]
pub struct FetchedBatch {
    /// Id of the first event (the request's `from`).
    pub first_id: u64,
    /// The events, in id order.
    pub events: Vec<FetchedEvent>,
    /// The topic is complete and `first_id + events.len()` is the end of this partition.
    pub end_of_partition: bool,
}

/// One selected range of one event's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataRange {
    /// Event id.
    pub id: u64,
    /// Offset in the event's data.
    pub offset: u64,
    /// Length.
    pub len: u64,
}

/// Largest batch the server accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Most events per batch.
    pub max_events: usize,
    /// Most metadata plus data bytes per batch.
    pub max_bytes: u64,
}

/// What the driver needs from a server.
pub trait Service: Send + Sync + 'static {
    /// The largest batch [`Service::produce`] accepts.
    fn batch_limits(&self) -> BatchLimits;
    /// Creates a topic (`options` already checked by the API: an object with valid policies).
    fn create_topic(&self, name: &str, options: &Value) -> Result<(), ServiceError>;
    /// Describes a topic.
    fn open_topic(&self, name: &str) -> Result<TopicInfo, ServiceError>;
    /// Whether a topic exists.
    fn topic_exists(&self, name: &str) -> Result<bool, ServiceError>;
    /// Every topic name, sorted.
    fn list_topics(&self) -> Result<Vec<String>, ServiceError>;
    /// Marks a topic complete.
    fn mark_complete(&self, topic: &TopicInfo) -> Result<(), ServiceError>;
    /// Whether a topic is complete.
    fn is_complete(&self, topic: &TopicInfo) -> Result<bool, ServiceError>;
    /// Appends a batch; `done` gets the id of its first event. A resent batch (same producer
    /// and sequence number) that was already stored succeeds with its original first id.
    fn produce(&self, batch: Arc<OutBatch>, done: Done<u64>);
    /// Fetches events of a partition.
    fn fetch(&self, request: FetchRequest, done: Done<FetchedBatch>);
    /// Fetches selected data ranges of a partition's events; `done` gets them back to back.
    fn fetch_data(
        &self,
        topic: &str,
        partition: usize,
        ranges: Vec<DataRange>,
        deadline: Instant,
        done: Done<Bytes>,
    );
    /// The position (next event id) a consumer persisted for a partition (0 if none).
    fn subscribe(&self, topic: &str, consumer: &str, partition: usize)
        -> Result<u64, ServiceError>;
    /// Persists a consumer's position in a partition (monotonic: a lower value is ignored).
    fn commit(
        &self,
        topic: &str,
        consumer: &str,
        partition: usize,
        next: u64,
        deadline: Instant,
        done: Done<()>,
    );
}
