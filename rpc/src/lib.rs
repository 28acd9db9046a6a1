//! diaspora-rpc: the RPC + bulk engine of diaspora-rs.
//!
//! - [`wire`]: the versioned, checksummed frame and body codec (pure, no I/O).
//! - [`op_table`]: the sans-IO table of in-flight operations: ids, deadlines, cancellation,
//!   late responses, and ownership of every buffer until the transport is done with it.
//!
//! See `README.md` next to this crate for the protocol and the threading model.

// Tests unwrap freely: a panic there is a test failure with its message.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod op_table;
pub mod wire;
