//! diaspora-rpc: the RPC + bulk engine of diaspora-rs.
//!
//! - [`wire`]: the versioned, checksummed frame and body codec (pure, no I/O).
//! - [`op_table`]: the sans-IO table of in-flight operations: ids, deadlines, cancellation,
//!   late responses, and ownership of every buffer until the transport is done with it.
//! - [`Engine`]: one progress thread owning one endpoint; [`Handle`]s submit calls and bulk
//!   transfers to it; handlers run on a [`diaspora_api::ThreadPool`].
//!
//! See `README.md` next to this crate for the protocol and the threading model.

// Tests unwrap freely: a panic there is a test failure with its message.
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod completion;
mod config;
mod engine;
mod error;
mod fabric_net;
#[cfg(test)]
mod mock_net;
pub mod net;
pub mod op_table;
pub mod wire;

pub use completion::Pending;
pub use config::{
    idle_nap, keepalive_interval, EngineConfig, WaitStrategy, DEFAULT_SESSION_EXPIRY,
    DEFAULT_SPINDOWN, IDLE_POLL_MAX,
};
pub use diaspora_fabric::{Address, AddressError, RemoteRegion};
pub use engine::{
    Buffer, BulkPending, Engine, Handle, HandlerFn, Peer, Request, Responder, SessionEnd,
    SessionListener, StatsSnapshot, OP_HELLO,
};
pub use error::{BulkError, EngineError, RpcError};
pub use fabric_net::{FabricMr, FabricNet, OpenError};
