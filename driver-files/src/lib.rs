//! The files driver of the Diaspora Stream API.
//!
//! Topics are directories under `root_path`, partitions are subdirectories holding an index,
//! a metadata and a data file (see [`format`](mod@format)). It is crash-safe (a writer killed mid-batch
//! leaves a torn tail that is detected and cut, see [`tail`]; a committed record is never cut and
//! an event id never reused; checksums guard every record; [`verify`] reports damage and
//! [`repair`] fixes it explicitly), supports several
//! processes producing to and consuming from the same topic (file locks), and persists each
//! consumer's acknowledgements (see [`acks`]).
//!
//! ```no_run
//! diaspora_driver_files::register();
//! let driver = diaspora_api::Driver::new(
//!     "files",
//!     serde_json::json!({"root_path": "/tmp/diaspora-data"}),
//! )?;
//! # Ok::<(), diaspora_api::Error>(())
//! ```

#![warn(missing_docs)]

pub mod acks;
mod bufpool;
mod consumer;
mod driver;
pub mod error;
pub mod fdcache;
pub mod format;
mod mapped;
pub mod partition;
mod producer;
pub mod repair;
mod sys;
pub mod tail;
#[cfg(test)]
mod tests;
pub mod topic;
pub mod verify;

use std::sync::Arc;

use diaspora_api::{DriverBackend, Result, Value};

pub use consumer::FilesConsumer;
pub use driver::{ConsumerRead, FilesDriver, FilesDriverOptions, FlushBehavior, DEFAULT_ROOT_PATH};
pub use error::FilesError;
pub use producer::FilesProducer;
pub use verify::{verify_topic, PartitionReport};

/// Registers the "files" driver in the API's registry (idempotent).
pub fn register() {
    diaspora_api::register_driver("files", create);
}

fn create(options: &Value) -> Result<Arc<dyn DriverBackend>> {
    Ok(Arc::new(FilesDriver::new(FilesDriverOptions::from_json(
        options,
    )?)?))
}
