//! The seam between the engine and the libfabric safe layer: what one progress thread needs
//! from its endpoint. [`crate::FabricNet`] implements it on `diaspora-fabric`.
//!
//! Everything here is called only from the progress thread that owns the value
//! (`FI_THREAD_DOMAIN`: one thread per domain, no locking inside libfabric).

use std::os::fd::RawFd;

/// An error from the transport, with the failing call and its provider text.
pub type NetError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a post did not happen.
#[derive(Debug)]
pub enum PostError {
    /// The provider's queue is full (`-FI_EAGAIN`): read the CQ, then post again.
    Again,
    /// The post failed for good.
    Failed(NetError),
}

/// One completion read from the CQ.
#[derive(Debug)]
pub struct NetEvent {
    /// The context the operation was posted with.
    pub ctx: u64,
    /// Bytes received (receives) or transferred.
    pub len: usize,
    /// `Some` when the operation failed (`fi_cq_readerr`).
    pub error: Option<NetError>,
}

/// One endpoint (with its domain, CQ and AV) owned by a progress thread.
pub trait Net: Send + 'static {
    /// Registered memory that owns its buffer.
    type Mr: Send + 'static;
    /// A plain-data descriptor of a peer's registered memory (address, key, length).
    type Remote: Clone + Send + Sync + std::fmt::Debug + 'static;

    /// The provider name (for example `tcp;ofi_rxm`).
    fn provider(&self) -> &str;
    /// This endpoint's raw address (`fi_getname`).
    fn local_address(&self) -> Vec<u8>;
    /// Inserts a peer's raw address into the AV; returns a handle for it, unique for the
    /// life of this endpoint (never handed out again, even after
    /// [`remove_peer`](Net::remove_peer)).
    fn insert_peer(&mut self, raw: &[u8]) -> Result<u64, NetError>;
    /// Removes a peer handle; its AV entry goes (`fi_av_remove`) with the last handle of that
    /// address (identical addresses share one entry). The caller makes sure nothing posted to
    /// it is outstanding; posts to it fail afterwards.
    fn remove_peer(&mut self, peer: u64) -> Result<(), NetError>;
    /// Drops a peer handle without touching the AV: for a peer that is an endpoint of this
    /// process and already closed, whose entry `fi_av_remove` must not touch on shm (it
    /// writes into the peer's unmapped region; see `engine::local`).
    fn forget_peer(&mut self, peer: u64);
    /// Registers a new zeroed buffer of `len` bytes; `remote` allows peers to read and write it.
    fn register(&mut self, len: usize, remote: bool) -> Result<Self::Mr, NetError>;
    /// Registers the caller's `bytes` in place (no copy) as a read-only region: the source of
    /// sends and RMA writes, readable by peers, never written. The returned value owns the
    /// `Bytes`, so the memory lives until the registration is closed.
    fn register_bytes(&mut self, bytes: bytes::Bytes) -> Result<Self::Mr, NetError>;
    /// The bytes of a registered buffer.
    fn bytes(mr: &Self::Mr) -> &[u8];
    /// The bytes of a registered buffer, mutably; `None` for a read-only registration
    /// ([`register_bytes`](Net::register_bytes)).
    fn bytes_mut(mr: &mut Self::Mr) -> Option<&mut [u8]>;
    /// True for a read-only registration.
    fn is_read_only(mr: &Self::Mr) -> bool;
    /// The descriptor peers use to reach all of `mr`.
    fn remote(mr: &Self::Mr) -> Result<Self::Remote, NetError>;
    /// The length of a remote region.
    fn remote_len(remote: &Self::Remote) -> usize;

    /// Posts a receive into all of `mr` (fails for a read-only registration).
    ///
    /// # Safety
    /// `mr` must stay alive and unmoved-from until the completion for `ctx` is read or the
    /// endpoint is closed.
    unsafe fn post_recv(&mut self, mr: &mut Self::Mr, ctx: u64) -> Result<(), PostError>;
    /// Posts a send of the first `len` bytes of `mr` to `peer`.
    ///
    /// # Safety
    /// As for [`post_recv`](Net::post_recv).
    unsafe fn post_send(
        &mut self,
        peer: u64,
        mr: &Self::Mr,
        len: usize,
        ctx: u64,
    ) -> Result<(), PostError>;
    /// The largest message [`inject`](Net::inject) takes (0: the transport cannot inject).
    fn inject_size(&self) -> usize {
        0
    }
    /// Sends `bytes` to `peer` at once, copied before the call returns, with no completion
    /// (a transport error after the call returns may go unreported): for frames whose
    /// outcome nobody waits on.
    fn inject(&mut self, peer: u64, bytes: &[u8]) -> Result<(), PostError> {
        let _ = (peer, bytes);
        Err(PostError::Failed("this transport cannot inject".into()))
    }
    /// Posts an RMA read of all of `remote` into `mr` at `offset`.
    ///
    /// Fails for a read-only registration.
    ///
    /// # Safety
    /// As for [`post_recv`](Net::post_recv); `offset + remote_len(remote) <= mr.len()`.
    unsafe fn post_read(
        &mut self,
        peer: u64,
        mr: &mut Self::Mr,
        offset: usize,
        remote: &Self::Remote,
        ctx: u64,
    ) -> Result<(), PostError>;
    /// Posts an RMA write of `mr[offset..offset + remote_len(remote)]` into `remote`.
    ///
    /// # Safety
    /// As for [`post_read`](Net::post_read).
    unsafe fn post_write(
        &mut self,
        peer: u64,
        mr: &Self::Mr,
        offset: usize,
        remote: &Self::Remote,
        ctx: u64,
    ) -> Result<(), PostError>;

    /// Reads available completions (successes and errors) into `out`.
    fn poll(&mut self, out: &mut Vec<NetEvent>) -> Result<(), NetError>;
    /// The CQ's wait fd, if the provider has one (tcp yes, shm no).
    fn wait_fd(&self) -> Option<RawFd>;
    /// `fi_trywait`: true when it is safe to sleep on [`wait_fd`](Net::wait_fd).
    fn try_wait(&mut self) -> bool;
    /// Closes the endpoint. Afterwards no posted operation touches any buffer, so the engine
    /// may free them.
    fn close(&mut self);
}
