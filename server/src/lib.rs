//! diaspora-server: serves topics to the `fabric` driver over libfabric.
//!
//! One rpc [`Engine`](diaspora_rpc::Engine) per progress thread, each with its own address,
//! listed in the group file; partition p is served by thread `p mod T` (see
//! [`diaspora_proto::group::placement`]). Topics are stored in a files-driver root with the
//! files driver's own code, or in memory. See `README.md` for the protocol and guarantees.

#![warn(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod client;
pub mod config;
pub mod groupfile;
pub mod log;
pub mod memlog;
pub mod partition;
pub mod polls;
pub mod pool;
pub mod ranks;
/// One log line, one `write(2)` (shared with every multi-rank binary: `diaspora_launcher::say`).
pub use diaspora_launcher::say;
pub mod seqstate;
pub mod server;
pub mod service;
pub mod store;
pub mod timer;
