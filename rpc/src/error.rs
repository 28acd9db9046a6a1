//! Errors of the engine: one family for engine set-up, one for operations.

use std::time::Duration;

use crate::net::NetError;
use crate::wire::ErrorCode;

/// Why an [`Engine`](crate::Engine) could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The transport could not be opened (no such provider, getinfo/endpoint failure).
    #[error("cannot open the {provider} endpoint: {source}")]
    Open {
        /// The provider asked for.
        provider: String,
        /// What libfabric said.
        #[source]
        source: NetError,
    },
    /// An option is out of range.
    #[error("invalid engine option {name}: {reason}")]
    InvalidOption {
        /// The option.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The eventfd the progress thread sleeps on could not be created.
    #[error("cannot create the progress thread's {what}: {source}")]
    Wakeup {
        /// `eventfd`.
        what: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The progress thread could not be spawned.
    #[error("cannot spawn the progress thread: {0}")]
    Spawn(#[source] std::io::Error),
    /// The progress thread failed while setting up (pinning, pre-posting receives).
    #[error("progress thread set-up failed: {0}")]
    Setup(#[source] RpcError),
}

/// Why an operation (connect, call, read, write, register) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RpcError {
    /// The operation's deadline passed before it completed.
    #[error("deadline of {0:?} exceeded")]
    Timeout(Duration),
    /// The operation was cancelled by the caller.
    #[error("operation cancelled")]
    Cancelled,
    /// The engine is shutting down (or has stopped): pending operations fail with this.
    #[error("the engine is shutting down")]
    ShuttingDown,
    /// The progress thread died (panicked) before completing the operation.
    #[error("the engine's progress thread stopped unexpectedly")]
    EngineStopped,
    /// The peer answered with an ERR frame.
    #[error("peer refused the request: {code}: {message}")]
    Remote {
        /// The stable code.
        code: ErrorCode,
        /// The peer's message.
        message: String,
    },
    /// The peer answered with a frame this engine cannot decode.
    #[error("malformed reply from the peer: {0}")]
    Wire(#[from] crate::wire::WireError),
    /// A transport call or completion failed (the peer died, a key was invalid, ...).
    #[error("transport failure during {what}: {source}")]
    Transport {
        /// The operation: "send", "read", "write", "register", "insert peer", ...
        what: &'static str,
        /// What libfabric said.
        #[source]
        source: NetError,
    },
    /// The peer uses another provider.
    #[error("provider mismatch: this engine uses {local}, the peer uses {remote}")]
    ProviderMismatch {
        /// This engine's provider.
        local: String,
        /// The peer's provider.
        remote: String,
    },
    /// A request body or a bulk transfer does not fit.
    #[error("{what} too large: {len} bytes, the limit is {max}")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A bad argument (for example op 0, which is reserved, or an empty region list).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

/// A failed bulk transfer: the error, and the local buffer when the transport is done with it.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct BulkError<B> {
    /// Why it failed.
    #[source]
    pub error: RpcError,
    /// The buffer, when it could be handed back (not after a timeout: then the engine keeps it
    /// until the transport has finished with it, and frees it).
    pub buffer: Option<B>,
}

impl<B> From<RpcError> for BulkError<B> {
    fn from(error: RpcError) -> Self {
        BulkError {
            error,
            buffer: None,
        }
    }
}
