//! Errors of the fabric driver (converted into [`diaspora_api::Error::Driver`] at the API
//! boundary; refusals the API has a variant for are reported with that variant).

/// What the fabric driver reports beyond the API's own variants.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FabricError {
    /// A batch could not be stored before the driver's deadline.
    #[error("batch {seq} of partition {partition} ({events} events) not stored within {timeout_ms} ms: {reason}")]
    BatchTimedOut {
        /// Partition.
        partition: usize,
        /// Its sequence number.
        seq: u64,
        /// Its events.
        events: usize,
        /// The deadline.
        timeout_ms: u128,
        /// The last failure.
        reason: String,
    },
    /// A fetch kept failing for longer than the driver's deadline.
    #[error(
        "consumer {consumer}: partition {partition} unreachable for {timeout_ms} ms: {reason}"
    )]
    FetchFailed {
        /// Consumer name.
        consumer: String,
        /// Partition.
        partition: usize,
        /// The deadline.
        timeout_ms: u128,
        /// The last failure.
        reason: String,
    },
    /// The server returned something inconsistent (wrong count, ids or lengths).
    #[error("server {server} sent an inconsistent answer: {what}")]
    BadAnswer {
        /// Which server.
        server: String,
        /// What is wrong.
        what: String,
    },
    /// A consumer's position could not be committed.
    #[error(
        "consumer {consumer}: acknowledgement of partition {partition} not committed: {reason}"
    )]
    CommitFailed {
        /// Consumer name.
        consumer: String,
        /// Partition (`usize::MAX`: several).
        partition: usize,
        /// Why.
        reason: String,
    },
    /// Acknowledgement of a partition this consumer does not consume.
    #[error("consumer {consumer} does not consume partition {partition}")]
    NotConsumed {
        /// Consumer name.
        consumer: String,
        /// Partition.
        partition: usize,
    },
}

impl From<FabricError> for diaspora_api::Error {
    fn from(e: FabricError) -> Self {
        diaspora_api::Error::driver(e)
    }
}
