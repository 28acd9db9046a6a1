//! The fabric driver of the Diaspora Stream API: a client of `diaspora-server` over the rpc
//! engine (libfabric: `tcp;ofi_rxm`, `shm`, `verbs;ofi_rxm`, ...).
//!
//! - [`service`]: the seam between the driver's logic and the network ([`Service`]).
//! - [`FabricProducer`]: per-partition batches with sequence numbers, credits and retries.
//! - [`FabricConsumer`]: long-poll fetches, prefetching, selections fetched once per batch,
//!   coalesced acknowledgements.
//! - [`options`]: the driver options (`group_file`, `provider`, `timeout_ms`, ...).

#![warn(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod acks;
mod consumer;
mod driver;
pub mod error;
pub mod options;
mod producer;
pub mod remote;
pub mod service;
mod timer;
mod topic;

pub use consumer::FabricConsumer;
pub use driver::{check_topic_options, FabricDriver, MAX_PARTITIONS};
pub use error::FabricError;
pub use options::FabricOptions;
pub use producer::{FabricProducer, MAX_BATCH_BYTES};
pub use service::Service;
pub use topic::FabricTopic;

use std::sync::Arc;

use diaspora_api::{DriverBackend, Result, Value};

/// Registers the "fabric" driver in the API's registry (idempotent).
pub fn register() {
    diaspora_api::register_driver("fabric", create);
}

fn create(options: &Value) -> Result<Arc<dyn DriverBackend>> {
    let options = FabricOptions::from_json(options)?;
    let timeout = options.timeout;
    let service = remote::RemoteService::connect(options)?;
    Ok(Arc::new(FabricDriver::with_service(service, timeout)))
}
