//! The engine: one progress thread that owns one endpoint, and the handles other threads use
//! to submit work to it. See the crate README for the threading model.

mod local;
mod progress;
mod serve;
mod waker;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

use crate::completion::{pair, Pending, Sink};
use crate::config::EngineConfig;
use crate::error::{BulkError, EngineError, RpcError};
use crate::fabric_net::FabricNet;
use crate::net::Net;
use crate::wire::{ErrorCode, HEADER_LEN};
use diaspora_fabric::Address;

/// Op code reserved for the engine's own HELLO handshake.
pub const OP_HELLO: u16 = 0;

/// A connected peer, as seen from this engine: where to send (the AV entry) and the session
/// the peer assigned us. Plain data; valid for the engine that produced it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    pub(crate) fi_addr: u64,
    pub(crate) session: u32,
}

impl Peer {
    /// The session id the peer assigned (0 for a peer that called us: see [`Request::peer`]).
    pub fn session(&self) -> u32 {
        self.session
    }
}

/// A request delivered to a handler.
#[derive(Debug)]
pub struct Request {
    /// The op code.
    pub op: u16,
    /// The request body (at most the eager size).
    pub body: Vec<u8>,
    /// The caller: use it for bulk reads and writes of the caller's memory.
    pub peer: Peer,
    /// The caller's deadline, converted to this engine's clock (`None`: no deadline).
    pub deadline: Option<Instant>,
}

/// Answers one request, once. Dropping it unanswered sends an error reply
/// (`HandlerFailed`, or `HandlerPanicked` when dropped by a panic).
pub struct Responder<N: Net = FabricNet> {
    shared: Arc<Shared<N>>,
    session: u32,
    peer: u64,
    request_id: u64,
    op: u16,
    answered: bool,
}

impl<N: Net> Responder<N> {
    /// The id of the caller's session at this engine (what [`Engine::on_session_end`]
    /// reports when the session ends).
    pub fn session(&self) -> u32 {
        self.session
    }

    /// Sends a successful response with `body`.
    pub fn respond(mut self, body: Vec<u8>) {
        self.answered = true;
        self.send(Ok(body));
    }

    /// Sends an error response (`HandlerFailed`) with `message`.
    pub fn fail(mut self, message: &str) {
        self.answered = true;
        self.send(Err((ErrorCode::HandlerFailed, message.to_owned())));
    }

    /// Sends an error response with a specific code.
    pub fn fail_with(mut self, code: ErrorCode, message: &str) {
        self.answered = true;
        self.send(Err((code, message.to_owned())));
    }

    fn send(&self, result: Result<Vec<u8>, (ErrorCode, String)>) {
        let cmd = Cmd::Respond {
            session: self.session,
            peer: self.peer,
            request_id: self.request_id,
            op: self.op,
            result,
        };
        // After shutdown there is nobody to answer to: the caller gets ShuttingDown or a
        // timeout from its own engine.
        let _ = self.shared.submit_direct(cmd);
    }
}

impl<N: Net> Drop for Responder<N> {
    fn drop(&mut self) {
        if !self.answered {
            let r = if std::thread::panicking() {
                (
                    ErrorCode::HandlerPanicked,
                    "the handler panicked".to_owned(),
                )
            } else {
                (
                    ErrorCode::HandlerFailed,
                    "the handler dropped the request unanswered".to_owned(),
                )
            };
            self.send(Err(r));
        }
    }
}

/// A handler: runs on the engine's handler pool, answers through the [`Responder`] (now or
/// later, from any thread).
pub type HandlerFn<N = FabricNet> = dyn Fn(Request, Responder<N>) + Send + Sync + 'static;

/// Told the id of each caller session that ends, and why (see [`Engine::on_session_end`]).
pub type SessionListener = dyn Fn(u32, SessionEnd) + Send + Sync + 'static;

/// Why a caller's session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionEnd {
    /// The caller closed it (GOODBYE).
    Goodbye,
    /// Every session was in use and it was the one idle longest (`session_idle`).
    Evicted,
    /// No keepalive came from its caller for `session_expiry` (a dead or stopped process).
    Expired,
}

/// A registered buffer owned by the caller: moved into a bulk operation and handed back by
/// its completion, so no one can touch or free it while a transfer may use it.
pub struct Buffer<N: Net = FabricNet> {
    mr: Option<N::Mr>,
    shared: Arc<Shared<N>>,
}

impl<N: Net> Buffer<N> {
    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        self.mr.as_ref().map(N::bytes).unwrap_or(&[])
    }

    /// The bytes, mutably. Empty for a read-only buffer ([`Handle::register_bytes`]); see
    /// [`Buffer::is_read_only`].
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        match self.mr.as_mut().and_then(N::bytes_mut) {
            Some(b) => b,
            None => &mut [],
        }
    }

    /// True for the caller's `Bytes` registered in place by [`Handle::register_bytes`]: peers
    /// may read it, nothing writes it (bulk reads into it fail).
    pub fn is_read_only(&self) -> bool {
        self.mr.as_ref().is_some_and(N::is_read_only)
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// True for a zero-length buffer.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The descriptor a peer uses to read or write this buffer (send it in a request body).
    pub fn remote(&self) -> Result<N::Remote, RpcError> {
        let mr = self
            .mr
            .as_ref()
            .ok_or_else(|| RpcError::InvalidArgument("empty buffer".into()))?;
        N::remote(mr).map_err(|source| RpcError::Transport {
            what: "remote descriptor",
            source,
        })
    }

    fn take(mut self) -> Option<N::Mr> {
        self.mr.take()
    }
}

impl<N: Net> Drop for Buffer<N> {
    fn drop(&mut self) {
        if let Some(mr) = self.mr.take() {
            // Deregistration happens on the progress thread (FI_THREAD_DOMAIN).
            if let Err(Cmd::Release(mr)) = self.shared.submit(Cmd::Release(mr)) {
                // The progress thread is gone: deregister here, one thread at a time.
                let _g = self.shared.late_drop.lock();
                drop(mr);
            }
        }
    }
}

impl<N: Net> std::fmt::Debug for Buffer<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Buffer({} bytes)", self.len())
    }
}

/// Outcome of a bulk transfer: the buffer back, or the error (with the buffer when the
/// transport is done with it).
pub type BulkPending<N = FabricNet> = Pending<Buffer<N>, BulkError<Buffer<N>>>;

/// Counters of what the progress thread refused or dropped.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) refused: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) late: AtomicU64,
    pub(crate) unknown: AtomicU64,
    pub(crate) served: AtomicU64,
    pub(crate) cancels: AtomicU64,
    pub(crate) released_late: AtomicU64,
    pub(crate) sessions_closed: AtomicU64,
    pub(crate) sessions_evicted: AtomicU64,
    pub(crate) sessions_expired: AtomicU64,
    pub(crate) keepalives_sent: AtomicU64,
    pub(crate) keepalives_received: AtomicU64,
    pub(crate) peers: AtomicU64,
    pub(crate) peers_removed: AtomicU64,
    pub(crate) peers_remove_failed: AtomicU64,
}

/// A snapshot of an engine's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Malformed frames answered with an ERR reply.
    pub refused: u64,
    /// Frames dropped without an answer (no readable ids, unknown session, truncated by the
    /// transport).
    pub dropped: u64,
    /// Responses that arrived after their request timed out or was cancelled.
    pub late: u64,
    /// Responses for ids this engine never issued.
    pub unknown: u64,
    /// Requests handed to handlers.
    pub served: u64,
    /// CANCEL frames received.
    pub cancels: u64,
    /// Buffers of timed-out or cancelled transfers freed when their late completion arrived.
    pub released_late: u64,
    /// Sessions their callers closed (GOODBYE).
    pub sessions_closed: u64,
    /// Idle sessions closed to make room for a new caller.
    pub sessions_evicted: u64,
    /// Sessions ended because their caller sent no keepalive for `session_expiry` (a dead
    /// caller).
    pub sessions_expired: u64,
    /// Keepalives this engine sent for the sessions it opened.
    pub keepalives_sent: u64,
    /// Keepalives received with a valid session secret.
    pub keepalives_received: u64,
    /// Peers in the address vector now (callers whose session is open or not yet reaped,
    /// and peers this engine connected to).
    pub peers: u64,
    /// Callers' AV entries removed after their session ended (or their HELLO was refused).
    pub peers_removed: u64,
    /// `fi_av_remove` calls that failed (the entry is forgotten anyway).
    pub peers_remove_failed: u64,
}

pub(crate) enum Cmd<N: Net> {
    Connect {
        id: u64,
        addr: Address,
        timeout: Duration,
        sink: Sink<Peer>,
    },
    Call {
        id: u64,
        peer: Peer,
        op: u16,
        body: Vec<u8>,
        timeout: Option<Duration>,
        sink: Sink<Vec<u8>>,
    },
    RawCall {
        id: u64,
        peer: Peer,
        frame: Vec<u8>,
        timeout: Duration,
        sink: Sink<Vec<u8>>,
    },
    Bulk(BulkCmd<N>),
    Register {
        len: usize,
        sink: Sink<Buffer<N>>,
    },
    RegisterBytes {
        bytes: bytes::Bytes,
        sink: Sink<Buffer<N>>,
    },
    Release(N::Mr),
    Respond {
        session: u32,
        peer: u64,
        request_id: u64,
        op: u16,
        result: Result<Vec<u8>, (ErrorCode, String)>,
    },
    Cancel {
        id: u64,
    },
    Shutdown,
}

pub(crate) struct BulkCmd<N: Net> {
    pub(crate) id: u64,
    pub(crate) write: bool,
    pub(crate) peer: Peer,
    pub(crate) regions: Vec<N::Remote>,
    pub(crate) mr: N::Mr,
    pub(crate) timeout: Option<Duration>,
    pub(crate) sink: Sink<Buffer<N>, BulkError<Buffer<N>>>,
}

impl<N: Net> Cmd<N> {
    /// Fails the command's caller (the engine refused it).
    pub(crate) fn fail(self, error: RpcError) {
        match self {
            Cmd::Connect { sink, .. } => sink.complete(Err(error)),
            Cmd::Call { sink, .. } | Cmd::RawCall { sink, .. } => sink.complete(Err(error)),
            Cmd::Register { sink, .. } | Cmd::RegisterBytes { sink, .. } => {
                sink.complete(Err(error))
            }
            // The buffer goes with the error: nothing was posted.
            Cmd::Bulk(b) => b.sink.complete(Err(BulkError {
                error,
                buffer: None,
            })),
            Cmd::Release(_) | Cmd::Respond { .. } | Cmd::Cancel { .. } | Cmd::Shutdown => {}
        }
    }
}

struct Queue<N: Net> {
    cmds: Vec<Cmd<N>>,
    closed: bool,
}

/// What the submitting threads and the progress thread share.
pub(crate) struct Shared<N: Net> {
    queue: Mutex<Queue<N>>,
    /// True while `queue.cmds` may hold commands (set under the queue lock after a push,
    /// cleared under it when the commands are taken): an idle poll reads this instead of
    /// taking the lock.
    queued: AtomicBool,
    waker: waker::Waker,
    handlers: RwLock<rustc_hash::FxHashMap<u16, Arc<HandlerFn<N>>>>,
    /// Told (on the handler pool) of every session that ends: see
    /// [`Engine::on_session_end`].
    pub(crate) session_listener: RwLock<Option<Arc<SessionListener>>>,
    next_id: AtomicU64,
    stats: Stats,
    max_body: usize,
    provider: String,
    late_drop: Mutex<()>,
    /// The progress state: whoever holds the lock drives progress (the progress thread, or a
    /// caller waiting with inline progress).
    core: Mutex<Option<progress::Progress<N>>>,
    /// The eventfd and the CQ fd, polled by whoever drives.
    sleeper: waker::Sleeper,
    /// Callers currently driving (or waiting to drive) progress inline.
    inline_waiters: AtomicUsize,
    /// `EngineConfig::inline_progress`.
    pub(crate) inline: bool,
    /// `EngineConfig::wait_spin`.
    wait_spin: Duration,
    /// `EngineConfig::busy_poll`.
    busy_poll: Duration,
    /// The engine's own handler worker (when `EngineConfig::handler_pool` is inline): see
    /// [`serve`].
    pub(crate) serve: Option<Arc<serve::Serve>>,
}

impl<N: Net> Shared<N> {
    /// Queues a command and wakes the progress thread; gives it back if the engine stopped.
    pub(crate) fn submit(&self, cmd: Cmd<N>) -> Result<(), Cmd<N>> {
        {
            let mut q = self.queue.lock();
            if q.closed {
                return Err(cmd);
            }
            q.cmds.push(cmd);
            self.queued.store(true, Ordering::Release);
        }
        self.kick();
        Ok(())
    }

    /// Posts `cmd` (a call, a bulk transfer or an answer) at once on this thread when nobody
    /// drives progress at this instant and nothing is queued before it (order is kept);
    /// queues it otherwise. Saves the progress thread's pick-up, which on a busy node is its
    /// next time slice. Runs no callback: posting completes nothing but `cmd`'s own operation
    /// (when the post fails), whose `Pending` the caller does not hold yet; completions are
    /// read by whoever drives progress next, which the wake-up below makes prompt.
    pub(crate) fn submit_direct(&self, cmd: Cmd<N>) -> Result<(), Cmd<N>> {
        debug_assert!(matches!(
            cmd,
            Cmd::Call { .. } | Cmd::Bulk(_) | Cmd::Respond { .. }
        ));
        if let Some(mut core) = self.core.try_lock() {
            if let Some(p) = core.as_mut().filter(|p| !p.stopping()) {
                if !self.queued.load(Ordering::Acquire) {
                    p.command_now(cmd);
                    drop(core);
                    if !self.worker_drives_next() {
                        self.waker.wake();
                    }
                    return Ok(());
                }
            }
        }
        self.submit(cmd)
    }

    fn submit_direct_or_fail(&self, cmd: Cmd<N>) {
        if let Err(cmd) = self.submit_direct(cmd) {
            cmd.fail(RpcError::ShuttingDown);
        }
    }

    fn submit_all(&self, cmds: Vec<Cmd<N>>) {
        let refused = {
            let mut q = self.queue.lock();
            if q.closed {
                Some(cmds)
            } else {
                q.cmds.extend(cmds);
                self.queued.store(true, Ordering::Release);
                None
            }
        };
        match refused {
            Some(cmds) => cmds
                .into_iter()
                .for_each(|c| c.fail(RpcError::ShuttingDown)),
            None => self.kick(),
        }
    }

    /// True when the serving worker drives progress now (it leads: its next iteration takes
    /// the queue and reaps completions) or right after what it is doing on this thread (a
    /// handler, a completion callback): a submission then needs no wake-up of the progress
    /// thread, whose nap it would only cut short at the price of a syscall and a context
    /// switch. (A submission racing with the worker's switch to a handler waits at most one
    /// follower nap.)
    fn worker_drives_next(&self) -> bool {
        self.serve
            .as_ref()
            .is_some_and(|s| s.leading() || s.leads_after_jobs())
    }

    /// Makes sure someone takes the queue soon: wakes the progress thread unless the serving
    /// worker drives next. Never drives progress on the calling thread, even with inline
    /// progress: a submission can come from anywhere (a `Buffer` dropped under a lock of the
    /// caller's), and an iteration here would run completion callbacks that may take that
    /// very lock (known issue 14: the fabric driver's staging pool deadlocked so). Callers
    /// that wait drive progress themselves in inline mode; this only queues.
    fn kick(&self) {
        if self.worker_drives_next() {
            return;
        }
        if self.inline {
            // The sleeping flag is not reliable here: waiting callers clear it after their
            // own naps while the progress thread may still sleep, so always write the eventfd.
            self.waker.wake_now();
        } else {
            self.waker.wake();
        }
    }

    /// Drives progress on the calling thread until `done()` or `deadline` (inline progress).
    fn drive_inline(&self, done: &dyn Fn() -> bool, deadline: Option<Instant>) {
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.inline_waiters.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(&self.inline_waiters);
        let mut core = self.core.lock();
        // Whether this pass follows the last one at once (no yield or sleep between them).
        let mut hot = false;
        loop {
            if done() {
                return;
            }
            let Some(p) = core.as_mut() else { return };
            if p.stopping() {
                return; // the progress thread drains and closes
            }
            // Polled again at once (below): the clock is read once in a few empty passes.
            let work = if hot { p.iterate_hot() } else { p.iterate() };
            // The iteration's clock reading: no second one per poll.
            if deadline.is_some_and(|d| p.now() >= d) {
                return;
            }
            hot = true;
            if work {
                continue;
            }
            if p.idle_for() < self.busy_poll {
                // Poll again at once (`EngineConfig::busy_poll`): the answer usually comes
                // within microseconds, and a yield here would notice it a system call late.
                std::hint::spin_loop();
                continue;
            }
            hot = false;
            match p.idle() {
                // Yield, never a bare spin: on an oversubscribed node the peer's handler
                // thread may need this core to produce the answer we wait for.
                progress::Idle::Spin => std::thread::yield_now(),
                progress::Idle::Sleep(mut t) => {
                    // Short naps: another sleeper (the progress thread, just before it saw
                    // us) may have consumed an eventfd wake-up meant for us.
                    t = t.min(Duration::from_millis(1));
                    if let Some(d) = deadline {
                        t = t.min(d.saturating_duration_since(Instant::now()));
                    }
                    self.sleeper.sleep(&self.waker, t);
                    self.waker.set_awake();
                }
            }
        }
    }

    /// Runs `f` on the progress state now if no thread holds it (the progress thread is
    /// asleep or between iterations) and the engine is not stopping; `None` otherwise (the
    /// caller queues a command instead). Never blocks, so it cannot deadlock on the progress
    /// thread itself.
    fn with_idle_core(
        self: &Arc<Self>,
        f: impl FnOnce(&mut progress::Progress<N>) -> Result<N::Mr, crate::net::NetError>,
        what: &'static str,
    ) -> Option<Result<Buffer<N>, RpcError>> {
        let mut core = self.core.try_lock()?;
        let p = core.as_mut()?;
        if p.stopping() {
            return None;
        }
        let r = f(p);
        drop(core);
        Some(match r {
            Ok(mr) => Ok(self.wrap(mr)),
            Err(source) => Err(RpcError::Transport { what, source }),
        })
    }

    fn submit_or_fail(&self, cmd: Cmd<N>) {
        if let Err(cmd) = self.submit(cmd) {
            cmd.fail(RpcError::ShuttingDown);
        }
    }

    fn id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn wrap(self: &Arc<Self>, mr: N::Mr) -> Buffer<N> {
        Buffer {
            mr: Some(mr),
            shared: self.clone(),
        }
    }
}

impl<N: Net> crate::completion::Drive for Shared<N> {
    fn drive(&self, done: &dyn Fn() -> bool, deadline: Option<Instant>) {
        self.drive_inline(done, deadline)
    }
}

/// A cloneable handle that submits work to an engine's progress thread (handlers capture one
/// to issue bulk transfers). It does not keep the progress thread running: once the
/// [`Engine`] shuts down, every operation fails with [`RpcError::ShuttingDown`].
pub struct Handle<N: Net = FabricNet> {
    shared: Arc<Shared<N>>,
}

impl<N: Net> Clone for Handle<N> {
    fn clone(&self) -> Self {
        Handle {
            shared: self.shared.clone(),
        }
    }
}

/// One progress thread with its own endpoint, and the owner of its lifetime. Dropping it (or
/// [`shutdown`](Engine::shutdown)) fails pending operations with
/// [`RpcError::ShuttingDown`], drains the transport, closes the endpoint, then frees buffers.
pub struct Engine<N: Net = FabricNet> {
    handle: Handle<N>,
    address: Address,
    thread: Option<JoinHandle<()>>,
    /// The serving worker (see [`serve`]), when the handler pool is inline.
    serve_thread: Option<JoinHandle<()>>,
}

impl Engine<FabricNet> {
    /// Opens an endpoint on `config.provider` (restricted to `config.domain` if set) and
    /// starts its progress thread.
    pub fn new(config: EngineConfig) -> Result<Engine<FabricNet>, EngineError> {
        let net = FabricNet::open(
            &config.provider,
            config.domain.as_deref(),
            config.source.as_deref(),
        )
        .map_err(|e| EngineError::Open {
            provider: config.provider.clone(),
            source: Box::new(e),
        })?;
        Engine::with_net(net, config)
    }
}

impl<N: Net> Engine<N> {
    /// Starts a progress thread that owns `net` (any transport: see [`Net`]).
    pub fn with_net(net: N, config: EngineConfig) -> Result<Engine<N>, EngineError> {
        if config.eager_size < HEADER_LEN + 64 || config.eager_size > 1 << 20 {
            let reason = format!("{} is outside 96 ..= 1 MiB", config.eager_size);
            return Err(EngineError::InvalidOption {
                name: "eager_size",
                reason,
            });
        }
        if config.recv_buffers == 0 || config.send_buffers == 0 {
            let reason = "recv_buffers and send_buffers must be at least 1".to_owned();
            return Err(EngineError::InvalidOption {
                name: "recv_buffers",
                reason,
            });
        }
        let provider = net.provider().to_owned();
        let serve = (config.handler_pool.size() == 0).then(|| {
            let wait = config
                .wait
                .unwrap_or_else(|| crate::config::WaitStrategy::default_for(&provider));
            Arc::new(serve::Serve::new(wait.spin_window()))
        });
        if provider != config.provider {
            let reason = format!(
                "the endpoint uses {provider}, the config says {}",
                config.provider
            );
            return Err(EngineError::InvalidOption {
                name: "provider",
                reason,
            });
        }
        let address = Address::new(&provider, net.local_address())
            .map_err(|e| EngineError::Setup(RpcError::InvalidArgument(e.to_string())))?;
        let waker = waker::Waker::new()?;
        let sleeper = waker::Sleeper::new(&waker, net.wait_fd())?;
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                cmds: Vec::new(),
                closed: false,
            }),
            queued: AtomicBool::new(false),
            waker,
            core: Mutex::new(None),
            sleeper,
            inline_waiters: AtomicUsize::new(0),
            inline: config.inline_progress,
            wait_spin: config.wait_spin,
            busy_poll: config.busy_poll,
            handlers: RwLock::new(rustc_hash::FxHashMap::default()),
            session_listener: RwLock::new(None),
            next_id: AtomicU64::new(1),
            stats: Stats::default(),
            max_body: config.eager_size - HEADER_LEN,
            provider,
            late_drop: Mutex::new(()),
            serve: serve.clone(),
        });
        let serve_name = format!("{}-serve", config.thread_name);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name(config.thread_name.clone())
            .spawn(move || progress::run(net, config, thread_shared, ready_tx))
            .map_err(EngineError::Spawn)?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(EngineError::Setup(e));
            }
            Err(_) => {
                let _ = thread.join();
                return Err(EngineError::Setup(RpcError::EngineStopped));
            }
        }
        let mut engine = Engine {
            handle: Handle { shared },
            address,
            thread: Some(thread),
            serve_thread: None,
        };
        if let Some(serve) = serve {
            let shared = engine.handle.shared.clone();
            let t = std::thread::Builder::new()
                .name(serve_name)
                .spawn(move || serve::run(shared, serve))
                .map_err(EngineError::Spawn)?; // dropping `engine` stops the progress thread
            engine.serve_thread = Some(t);
        }
        Ok(engine)
    }

    /// This engine's address (print it into a group file; peers [`connect`](Handle::connect)).
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// A cloneable submission handle.
    pub fn handle(&self) -> Handle<N> {
        self.handle.clone()
    }

    /// Registers the handler for `op` (replacing any previous one). Op 0 is reserved.
    pub fn register_handler(
        &self,
        op: u16,
        handler: impl Fn(Request, Responder<N>) + Send + Sync + 'static,
    ) -> Result<(), RpcError> {
        if op == OP_HELLO {
            return Err(RpcError::InvalidArgument(
                "op 0 is reserved for HELLO".into(),
            ));
        }
        self.handle
            .shared
            .handlers
            .write()
            .insert(op, Arc::new(handler));
        Ok(())
    }

    /// Calls `listener` with the id of every caller session that ends at this engine, and
    /// why (its caller's GOODBYE, eviction of an idle session, or expiry of a silent one), on
    /// the handler pool, never on the
    /// progress thread; replaces any previous listener. A session's requests still being
    /// handled get answers nobody receives: a handler holding a request for long (a long
    /// poll) can release it early by matching [`Responder::session`]. Ids are not reused by
    /// an engine until its session counter wraps (2^32 sessions).
    pub fn on_session_end(&self, listener: impl Fn(u32, SessionEnd) + Send + Sync + 'static) {
        *self.handle.shared.session_listener.write() = Some(Arc::new(listener));
    }

    /// Stops the engine: pending operations fail with [`RpcError::ShuttingDown`], posted
    /// transfers drain (bounded by `drain_timeout`), the endpoint closes, buffers are freed.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let _ = self.handle.shared.submit(Cmd::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // The serving worker runs what is queued (answers now refused: their callers get
        // ShuttingDown or their timeout) and exits; not joined from itself (a handler that
        // drops the last engine), where it exits after that handler.
        if let Some(s) = &self.handle.shared.serve {
            s.stop();
        }
        if let Some(t) = self.serve_thread.take() {
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
        // Handlers may hold handles to this engine: drop them to break the cycle.
        self.handle.shared.handlers.write().clear();
        *self.handle.shared.session_listener.write() = None;
    }
}

impl<N: Net> Drop for Engine<N> {
    fn drop(&mut self) {
        self.stop();
    }
}

impl<N: Net> std::ops::Deref for Engine<N> {
    type Target = Handle<N>;

    fn deref(&self) -> &Handle<N> {
        &self.handle
    }
}

impl<N: Net> Handle<N> {
    /// Connects to the engine at `addr` (HELLO handshake). Fails with
    /// [`RpcError::ProviderMismatch`] when `addr` uses another provider.
    pub fn connect(&self, addr: &Address, timeout: Duration) -> Pending<Peer> {
        let (sink, pending) = pair();
        let id = self.shared.id();
        if addr.provider() != self.shared.provider {
            sink.complete(Err(RpcError::ProviderMismatch {
                local: self.shared.provider.clone(),
                remote: addr.provider().to_owned(),
            }));
            return self.tag(pending, id);
        }
        self.shared.submit_or_fail(Cmd::Connect {
            id,
            addr: addr.clone(),
            timeout,
            sink,
        });
        self.tag(pending, id)
    }

    /// Sends a request for `op` with `body` and returns its pending response body. With a
    /// `timeout`, the call fails with [`RpcError::Timeout`] once it passes (the peer is told
    /// with a CANCEL, and a late answer is dropped).
    pub fn call(
        &self,
        peer: &Peer,
        op: u16,
        body: Vec<u8>,
        timeout: Option<Duration>,
    ) -> Pending<Vec<u8>> {
        let (sink, pending) = pair();
        let id = self.shared.id();
        match self.check_call(op, &body) {
            Err(e) => sink.complete(Err(e)),
            Ok(()) => {
                let cmd = Cmd::Call {
                    id,
                    peer: *peer,
                    op,
                    body,
                    timeout,
                    sink,
                };
                self.shared.submit_direct_or_fail(cmd);
            }
        }
        self.tag(pending, id)
    }

    /// Sends many requests in one hand-off to the progress thread.
    pub fn call_batch(
        &self,
        calls: impl IntoIterator<Item = (Peer, u16, Vec<u8>)>,
        timeout: Option<Duration>,
    ) -> Vec<Pending<Vec<u8>>> {
        let mut cmds = Vec::new();
        let mut out = Vec::new();
        for (peer, op, body) in calls {
            let (sink, pending) = pair();
            let id = self.shared.id();
            match self.check_call(op, &body) {
                Err(e) => sink.complete(Err(e)),
                Ok(()) => cmds.push(Cmd::Call {
                    id,
                    peer,
                    op,
                    body,
                    timeout,
                    sink,
                }),
            }
            out.push(self.tag(pending, id));
        }
        self.shared.submit_all(cmds);
        out
    }

    fn check_call(&self, op: u16, body: &[u8]) -> Result<(), RpcError> {
        if op == OP_HELLO {
            return Err(RpcError::InvalidArgument(
                "op 0 is reserved for HELLO".into(),
            ));
        }
        if body.len() > self.shared.max_body {
            return Err(RpcError::TooLarge {
                what: "request body",
                len: body.len(),
                max: self.shared.max_body,
            });
        }
        Ok(())
    }

    /// Sends raw bytes as a frame and waits for whatever answer carries the id (for testing
    /// peers against malformed frames). `make(id, session)` builds the bytes.
    #[doc(hidden)]
    pub fn call_raw(
        &self,
        peer: &Peer,
        timeout: Duration,
        make: impl FnOnce(u64, u32) -> Vec<u8>,
    ) -> Pending<Vec<u8>> {
        let (sink, pending) = pair();
        let id = self.shared.id();
        let frame = make(id, peer.session);
        self.shared.submit_or_fail(Cmd::RawCall {
            id,
            peer: *peer,
            frame,
            timeout,
            sink,
        });
        self.tag(pending, id)
    }

    /// Registers a zeroed buffer of `len` bytes that peers may read and write.
    ///
    /// When no thread is driving progress at this moment (the progress thread sleeps), the
    /// registration is done at once on the calling thread, under the progress lock (so the
    /// domain is still used by one thread at a time); otherwise it is queued for the progress
    /// thread.
    pub fn register(&self, len: usize) -> Result<Buffer<N>, RpcError> {
        if let Some(r) = self
            .shared
            .with_idle_core(|p| p.register_now(len), "register")
        {
            return r;
        }
        let (sink, pending) = pair();
        self.shared.submit_or_fail(Cmd::Register { len, sink });
        pending.with_spin(self.shared.wait_spin).wait()
    }

    /// Registers the caller's `bytes` in place, without copying them, as a read-only buffer
    /// peers may read (the source of a produce batch the server pulls with RDMA, or of
    /// [`Handle::write`]). The buffer owns the `Bytes`: the memory lives until the buffer is
    /// dropped and the registration closed, so no safe code can free it while a transfer may
    /// use it. Bulk reads *into* it fail. An empty `bytes` is refused.
    pub fn register_bytes(&self, bytes: bytes::Bytes) -> Result<Buffer<N>, RpcError> {
        if bytes.is_empty() {
            return Err(RpcError::InvalidArgument(
                "cannot register an empty buffer".into(),
            ));
        }
        let mut bytes = Some(bytes);
        if let Some(r) = self.shared.with_idle_core(
            |p| match bytes.take() {
                Some(b) => p.register_bytes_now(b),
                None => Err("register bytes: nothing to register".into()),
            },
            "register bytes",
        ) {
            return r;
        }
        let Some(bytes) = bytes else {
            return Err(RpcError::InvalidArgument("bytes already taken".into()));
        };
        let (sink, pending) = pair();
        self.shared
            .submit_or_fail(Cmd::RegisterBytes { bytes, sink });
        pending.with_spin(self.shared.wait_spin).wait()
    }

    /// RMA-reads every region of `remote` (in order, back to back) from `peer` into `into`,
    /// which comes back with the completion.
    pub fn read(
        &self,
        peer: &Peer,
        remote: Vec<N::Remote>,
        into: Buffer<N>,
        timeout: Option<Duration>,
    ) -> BulkPending<N> {
        self.bulk(false, peer, remote, into, timeout)
    }

    /// RMA-writes `from` (back to back) into every region of `remote` at `peer`.
    pub fn write(
        &self,
        peer: &Peer,
        from: Buffer<N>,
        remote: Vec<N::Remote>,
        timeout: Option<Duration>,
    ) -> BulkPending<N> {
        self.bulk(true, peer, remote, from, timeout)
    }

    fn bulk(
        &self,
        write: bool,
        peer: &Peer,
        regions: Vec<N::Remote>,
        buf: Buffer<N>,
        timeout: Option<Duration>,
    ) -> BulkPending<N> {
        let (sink, pending) = pair();
        let id = self.shared.id();
        let total: usize = regions.iter().map(N::remote_len).sum();
        let err = if regions.is_empty() {
            Some(RpcError::InvalidArgument(
                "a bulk transfer needs at least one region".into(),
            ))
        } else if total > buf.len() {
            Some(RpcError::TooLarge {
                what: "bulk transfer",
                len: total,
                max: buf.len(),
            })
        } else {
            None
        };
        if let Some(error) = err {
            sink.complete(Err(BulkError {
                error,
                buffer: Some(buf),
            }));
            return self.tag(pending, id);
        }
        let Some(mr) = buf.take() else {
            sink.complete(Err(RpcError::InvalidArgument("empty buffer".into()).into()));
            return self.tag(pending, id);
        };
        let cmd = Cmd::Bulk(BulkCmd {
            id,
            write,
            peer: *peer,
            regions,
            mr,
            timeout,
            sink,
        });
        self.shared.submit_direct_or_fail(cmd);
        self.tag(pending, id)
    }

    /// The caller's side of operation `id`: its id, and how `wait` drives and polls.
    fn tag<T, E>(&self, pending: Pending<T, E>, id: u64) -> Pending<T, E> {
        pending
            .with_id(id)
            .with_driver(self.driver())
            .with_spin(self.shared.wait_spin)
    }

    /// Who drives progress while the operation's caller waits: the caller itself with inline
    /// progress, or when it is this engine's serving worker (a handler waiting for its own
    /// bulk transfer: the progress thread would have to wake up first).
    fn driver(&self) -> Option<Arc<dyn crate::completion::Drive>> {
        let on_worker = self.shared.serve.as_ref().is_some_and(|s| s.is_current());
        (self.shared.inline || on_worker)
            .then(|| self.shared.clone() as Arc<dyn crate::completion::Drive>)
    }

    /// Cancels the operation with this id: its caller gets [`RpcError::Cancelled`] (buffers of
    /// a cancelled transfer stay with the engine until the transport is done with them).
    pub fn cancel(&self, id: u64) {
        let _ = self.shared.submit(Cmd::Cancel { id });
    }

    /// The engine's counters.
    pub fn stats(&self) -> StatsSnapshot {
        let s = &self.shared.stats;
        StatsSnapshot {
            refused: s.refused.load(Ordering::Relaxed),
            dropped: s.dropped.load(Ordering::Relaxed),
            late: s.late.load(Ordering::Relaxed),
            unknown: s.unknown.load(Ordering::Relaxed),
            served: s.served.load(Ordering::Relaxed),
            cancels: s.cancels.load(Ordering::Relaxed),
            released_late: s.released_late.load(Ordering::Relaxed),
            sessions_closed: s.sessions_closed.load(Ordering::Relaxed),
            sessions_evicted: s.sessions_evicted.load(Ordering::Relaxed),
            sessions_expired: s.sessions_expired.load(Ordering::Relaxed),
            keepalives_sent: s.keepalives_sent.load(Ordering::Relaxed),
            keepalives_received: s.keepalives_received.load(Ordering::Relaxed),
            peers: s.peers.load(Ordering::Relaxed),
            peers_removed: s.peers_removed.load(Ordering::Relaxed),
            peers_remove_failed: s.peers_remove_failed.load(Ordering::Relaxed),
        }
    }

    /// Largest request or response body.
    pub fn max_body(&self) -> usize {
        self.shared.max_body
    }
}

#[cfg(test)]
mod session_tests;
#[cfg(test)]
mod tests;
