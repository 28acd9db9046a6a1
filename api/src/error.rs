//! Errors of the Diaspora Stream API.
//!
//! One enum per family: [`Error`] is what every public operation returns; drivers convert their
//! own error families into it at the boundary (see [`Error::driver`]).

use std::sync::Arc;

/// Result alias used throughout the API.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every error the user-facing API can return.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No driver is registered under this name.
    #[error("unknown driver \"{name}\" (known drivers: {known}{searched})")]
    UnknownDriver {
        /// The name that was asked for.
        name: String,
        /// Comma-separated list of registered drivers.
        known: String,
        /// Where a library for it was searched (`; no libx.so in LD_LIBRARY_PATH (...)`), or
        /// empty.
        searched: String,
    },
    /// A driver library could not be loaded or used.
    #[error("driver library {library}: {reason}")]
    DriverLibrary {
        /// The library, as given or as found.
        library: String,
        /// What went wrong (the loader's message, a missing symbol, an ABI mismatch...).
        reason: String,
    },
    /// An option given to a driver, topic, producer or consumer is invalid.
    #[error("invalid option \"{key}\": {reason}")]
    InvalidOption {
        /// Dotted path of the offending option.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A topic name is empty, too long, or could escape the driver's namespace.
    #[error("invalid topic name {name:?}: {reason}")]
    InvalidTopicName {
        /// The rejected name.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// The topic does not exist.
    #[error("topic \"{0}\" not found")]
    TopicNotFound(String),
    /// The topic already exists.
    #[error("topic \"{0}\" already exists")]
    TopicExists(String),
    /// A consumer name is invalid.
    #[error("invalid consumer name {name:?}: {reason}")]
    InvalidConsumerName {
        /// The rejected name.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// Metadata is not valid JSON.
    #[error("invalid JSON metadata: {0}")]
    InvalidJson(#[source] serde_json::Error),
    /// The topic's validator rejected an event.
    #[error("event rejected by validator: {0}")]
    ValidationFailed(String),
    /// A partition index is out of range.
    #[error("partition {index} out of range (topic has {count} partitions)")]
    InvalidPartition {
        /// Requested partition.
        index: usize,
        /// Number of partitions of the topic.
        count: usize,
    },
    /// A data selection (sub-range, strided view...) does not fit in the event's data.
    #[error("invalid data selection: {0}")]
    InvalidSelection(String),
    /// The data allocator returned a buffer of the wrong size.
    #[error("data allocator returned {got} bytes, {expected} were needed")]
    AllocatorSize {
        /// Size the descriptor asked for.
        expected: u64,
        /// Size the allocator returned.
        got: usize,
    },
    /// A future's value was already taken by a previous `wait`.
    #[error("future already consumed")]
    FutureConsumed,
    /// The producer or consumer was closed.
    #[error("{0} is closed")]
    Closed(&'static str),
    /// The topic was marked complete: no more events can be pushed to it.
    #[error("topic \"{0}\" is complete; no more events can be pushed")]
    TopicComplete(String),
    /// An operation is not supported by this driver.
    #[error("operation not supported by driver: {0}")]
    Unsupported(&'static str),
    /// An I/O error, with what was being done.
    #[error("{context}: {source}")]
    Io {
        /// What the driver was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Stored data failed an integrity check; the event is not served.
    #[error("corrupted data: {0}")]
    Corrupted(String),
    /// User code (a selector, allocator, validator, serializer) or a background job panicked;
    /// the operation it was part of failed instead of hanging.
    #[error("{what} panicked: {message}")]
    Panicked {
        /// What was running ("the data selector", "the job storing a batch"...).
        what: String,
        /// The panic's message.
        message: String,
    },
    /// `flush()`: events accepted by `push` since the previous flush were not stored (their
    /// push futures failed too, with the same reason).
    #[error("{count} event(s) pushed since the previous flush were not stored: {source}")]
    EventsLost {
        /// How many events were lost.
        count: u64,
        /// Why (the first failure).
        #[source]
        source: Arc<Error>,
    },
    /// A consumer could not deliver one event (damaged on disk, or a user callback failed on
    /// it) and moved past it: the next pull returns the following event. Acknowledging `id`
    /// of `partition` (see `Consumer::acknowledge`) skips it for good.
    #[error("partition {partition} event {id}: {source}")]
    EventFailed {
        /// Partition of the event.
        partition: usize,
        /// Id of the event.
        id: u64,
        /// Why it could not be delivered.
        #[source]
        source: Box<Error>,
    },
    /// [`crate::Producer::push_many`]: one of the events pushed together was refused before
    /// any was queued (none of them is; the next flush counts them all as lost).
    #[error("event {index} of {count} pushed together was refused, so none was queued: {source}")]
    PushManyRefused {
        /// Position of the refused event in the call.
        index: usize,
        /// Events in the call.
        count: u64,
        /// Why it was refused.
        #[source]
        source: Box<Error>,
    },
    /// A serialized [`crate::DataDescriptor`] was refused (see [`crate::descriptor_codec`]).
    #[error("invalid serialized data descriptor: {0}")]
    BadDescriptor(#[from] crate::descriptor_codec::DescriptorError),
    /// An error raised by a driver, in its own family.
    #[error(transparent)]
    Driver(Box<dyn std::error::Error + Send + Sync + 'static>),
    /// The same error shared by several futures (e.g. every event of a failed batch).
    #[error(transparent)]
    Shared(Arc<Error>),
}

impl Error {
    /// Wraps a driver-specific error.
    pub fn driver<E: std::error::Error + Send + Sync + 'static>(e: E) -> Self {
        Error::Driver(Box::new(e))
    }

    /// Builds an [`Error::Io`] with context.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// Builds an [`Error::InvalidOption`].
    pub fn option(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidOption {
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// Returns the innermost error: the cause behind [`Error::Shared`], [`Error::EventsLost`]
    /// and [`Error::EventFailed`].
    pub fn root(&self) -> &Error {
        match self {
            Error::Shared(inner) => inner.root(),
            Error::EventsLost { source, .. } => source.root(),
            Error::EventFailed { source, .. } => source.root(),
            Error::PushManyRefused { source, .. } => source.root(),
            e => e,
        }
    }
}
