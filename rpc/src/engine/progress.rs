//! The progress thread: the only thread that touches its endpoint, CQ, AV and registrations.
//!
//! One loop iteration: take every queued command (one lock, one swap), post what they ask,
//! retry posts that got `-FI_EAGAIN`, read completions in batches, expire deadlines, then —
//! only when nothing happened — wait according to the [`WaitStrategy`].
//!
//! Every posted operation's memory is owned by this thread until its completion is read:
//! receive buffers by `recvs`, send buffers by `sends`, bulk buffers by the op table. On
//! exit (normal or panic) [`Progress`]'s `Drop` closes the endpoint *before* any of them is
//! freed.

use std::collections::{HashMap, HashSet, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::MutexGuard;

use super::{Buffer, BulkCmd, Cmd, Peer, Request, Responder, SessionEnd, Shared, OP_HELLO};
use diaspora_fabric::address::MAX_ADDRESS_LEN as MAX_RAW_ADDRESS;
use diaspora_fabric::Address;

use crate::completion::Sink;
use crate::config::{EngineConfig, WaitStrategy};
use crate::error::{BulkError, RpcError};
use crate::net::{Net, NetError, NetEvent, PostError};
use crate::op_table::{Completes, OpTable, Response, Transport};
use crate::wire::{self, ErrorBody, ErrorCode, Header, Kind, Reader, Writer};

mod keepalive;
mod peers;
mod send;

use keepalive::Opened;

use send::{frame_bytes, OutFrame};

/// Longest provider name a HELLO may carry.
const MAX_PROVIDER: usize = 64;
const TAG_SHIFT: u32 = 62;
const TAG_OP: u64 = 0;
const TAG_RECV: u64 = 1;
const TAG_SEND: u64 = 2;
const CQ_BATCH: usize = 64;
/// An empty [`Progress::iterate_hot`] pass reads the clock once in this many passes.
const HOT_CLOCK_EVERY: u32 = 8;

fn ctx(tag: u64, index: u64) -> u64 {
    (tag << TAG_SHIFT) | index
}

enum OpSink<N: Net> {
    Call(Sink<Vec<u8>>),
    Connect { fi_addr: u64, sink: Sink<Peer> },
    Bulk(Sink<Buffer<N>, BulkError<Buffer<N>>>),
}

struct Op<N: Net> {
    sink: OpSink<N>,
    timeout: Option<Duration>,
    peer: Peer,
}

impl<N: Net> Op<N> {
    fn fail(self, error: RpcError) {
        match self.sink {
            OpSink::Call(s) => s.complete(Err(error)),
            OpSink::Connect { sink, .. } => sink.complete(Err(error)),
            OpSink::Bulk(s) => s.complete(Err(BulkError {
                error,
                buffer: None,
            })),
        }
    }
}

/// What the op table owns for a bulk transfer: the local buffer and the posting cursor.
struct BulkBufs<N: Net> {
    mr: N::Mr,
    write: bool,
    fi_addr: u64,
    regions: Vec<N::Remote>,
    next: usize,
    offset: usize,
}

struct SendSlot<N: Net> {
    mr: N::Mr,
    /// The call whose request this is (fails it if the send fails).
    op: Option<u64>,
    /// A one-off registration for an oversized raw frame: freed instead of reused.
    oversized: bool,
    /// The peer it is posted to, until its completion is read (see [`peers`]).
    to: Option<u64>,
}

enum Outgoing {
    /// Encoded, waiting for a free send buffer.
    Frame {
        fi_addr: u64,
        bytes: Vec<u8>,
        op: Option<u64>,
        /// When it was first queued (it is dropped `send_timeout` later).
        since: Instant,
    },
    /// In a send buffer, waiting to be posted again after `-FI_EAGAIN`.
    Slot {
        slot: usize,
        fi_addr: u64,
        len: usize,
        since: Instant,
    },
}

impl Outgoing {
    fn fi_addr(&self) -> u64 {
        match self {
            Outgoing::Frame { fi_addr, .. } | Outgoing::Slot { fi_addr, .. } => *fi_addr,
        }
    }

    fn since(&self) -> Instant {
        match self {
            Outgoing::Frame { since, .. } | Outgoing::Slot { since, .. } => *since,
        }
    }
}

type Table<N> = OpTable<Op<N>, Option<BulkBufs<N>>, NetError>;

/// A caller's session at this engine.
struct Session {
    fi_addr: u64,
    /// Proves a GOODBYE or a KEEPALIVE comes from the caller (sent in the HELLO answer).
    secret: u64,
    /// When its last request (or its HELLO) arrived (eviction looks at this).
    last_seen: Instant,
    /// When its caller was last heard from: its HELLO or a KEEPALIVE carrying the session's
    /// secret (expiry looks at this; see [`keepalive`]). Requests do not count: they carry
    /// only the session id, which another peer can name.
    last_heard: Instant,
}

impl Session {
    /// Whether a GOODBYE or KEEPALIVE body is exactly this session's 8-byte secret.
    fn proven_by(&self, body: &[u8]) -> bool {
        body.len() == 8 && Reader::new(body).u64().ok() == Some(self.secret)
    }
}

/// An unpredictable 64-bit value (SipHash keyed by the process's random state): the secret
/// that lets only the caller close its session.
fn new_secret(session: u32) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(session);
    h.finish()
}

pub(super) struct Progress<N: Net> {
    net: N,
    shared: Arc<Shared<N>>,
    config: EngineConfig,
    wait: WaitStrategy,
    ops: Table<N>,
    recvs: Vec<Option<N::Mr>>,
    repost: Vec<usize>,
    sends: Vec<Option<SendSlot<N>>>,
    free_sends: Vec<usize>,
    registered_sends: usize,
    outbox: VecDeque<Outgoing>,
    bulk_backlog: VecDeque<u64>,
    /// Keyed by the session ids this engine hands out (Fx hash: a peer only looks ids up).
    sessions: rustc_hash::FxHashMap<u32, Session>,
    next_session: u32,
    /// Sessions this engine opened at peers, kept alive with KEEPALIVEs and closed with a
    /// GOODBYE at shutdown; the oldest are forgotten beyond `max_sessions`.
    opened: VecDeque<Opened>,
    /// When the next keepalive of an opened session is due (None: none asked for).
    next_keepalive: Option<Instant>,
    /// When to look for sessions whose callers went silent (see [`keepalive`]).
    next_expiry_check: Instant,
    /// When [`keepalive`]'s per-iteration check last ran (a longer gap: this engine stalled).
    last_liveness: Instant,
    /// This endpoint's raw address (see [`super::local`]).
    local_addr: Vec<u8>,
    /// On shm, the raw addresses of peers that are endpoints of this process (their posts are
    /// guarded by [`super::local::unless_closed`]).
    local_peers: HashMap<u64, Vec<u8>>,
    /// Whether this provider needs that guard (see [`guards_local_peers`]).
    guard_local: bool,
    in_flight: HashSet<(u32, u64)>,
    /// Callers' AV entries to remove once nothing posted to them is outstanding (see
    /// [`peers`]), and when to look at them next.
    doomed: Vec<u64>,
    next_reap: Instant,
    stopping: bool,
    events: Vec<NetEvent>,
    expired: Vec<(u64, Op<N>)>,
    last_work: Instant,
    /// When the last iteration started its bookkeeping (see [`Progress::now`]).
    now: Instant,
    /// Passes since the clock was last read (see [`iterate_hot`](Self::iterate_hot)).
    stale_passes: u32,
    /// Frames up to this size that nobody waits on are injected (see `send::inject`); 0: never.
    inject_max: usize,
    /// Where an injected frame is encoded.
    scratch: Vec<u8>,
}

/// What an idle driver should do next.
pub(super) enum Idle {
    /// Poll again now (work may be pending, or the strategy spins).
    Spin,
    /// Sleep on the eventfd and the CQ fd for at most this long; the waker is already
    /// marked sleeping.
    Sleep(Duration),
}

/// The thread's entry point: builds the core, publishes it in `shared.core`, then drives it
/// until shutdown. The lock is held for one iteration at a time and never while sleeping, so a
/// caller waiting with inline progress can take over.
pub(super) fn run<N: Net>(
    net: N,
    config: EngineConfig,
    shared: Arc<Shared<N>>,
    ready: Sender<Result<(), RpcError>>,
) {
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
        match Progress::new(net, config, shared.clone()) {
            Ok(p) => *shared.core.lock() = Some(p),
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        let _ = ready.send(Ok(()));
        drive_thread(&shared);
    }));
    if result.is_err() {
        // A panic while holding the core poisons nothing (parking_lot), but the core may be
        // half-updated: drop it (its Drop closes the endpoint before freeing buffers).
        let core = shared.core.lock().take();
        drop(core);
    }
    // Whatever happened, refuse new work and fail what is still queued (a panic drops the
    // op table's sinks during unwinding, which fails them with EngineStopped).
    let leftover = {
        let mut q = shared.queue.lock();
        q.closed = true;
        std::mem::take(&mut q.cmds)
    };
    for cmd in leftover {
        cmd.fail(if result.is_ok() {
            RpcError::ShuttingDown
        } else {
            RpcError::EngineStopped
        });
    }
}

fn drive_thread<N: Net>(shared: &Arc<Shared<N>>) {
    loop {
        if shared.serve.as_ref().is_some_and(|s| s.leading()) {
            // The serving worker drives (see `serve`): follow, napping on the eventfd so that a
            // submission made while the worker runs a handler ends the nap at once (not on
            // the CQ fd: the worker reads the CQ). Queued commands are the leader's to take:
            // checking the queue here and skipping the nap made this thread spin on it while
            // other threads kept submitting (a server's I/O pool), taking a core from them.
            shared.waker.set_sleeping();
            shared
                .sleeper
                .sleep_on_submissions(&shared.waker, super::serve::FOLLOWER_NAP);
            shared.waker.set_awake();
            continue;
        }
        if shared.inline_waiters.load(Ordering::SeqCst) > 0 {
            // A caller is driving progress itself: stay out of its way. A plain sleep, not a
            // poll of the eventfd: draining it here would steal wake-ups meant for the caller.
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        let mut guard = shared.core.lock();
        let Some(p) = guard.as_mut() else { return };
        let work = p.iterate();
        if p.stopping {
            p.drain();
            let core = guard.take();
            drop(guard);
            drop(core);
            return;
        }
        let idle = if work {
            Idle::Spin
        } else {
            match p.idle() {
                // With inline progress the callers drive the latency-critical part: the
                // thread only keeps exposed memory and handlers' answers moving, so it naps
                // instead of spinning (on 2 cores a spinning thread halves the callers).
                Idle::Spin if shared.inline => Idle::Sleep(p.config.idle_poll),
                idle => idle,
            }
        };
        // Hand the lock straight to a caller blocked on it (inline progress): without
        // fairness this loop would re-take it at once and starve the caller.
        MutexGuard::unlock_fair(guard);
        match idle {
            Idle::Spin if work => {}
            Idle::Spin => std::thread::yield_now(),
            Idle::Sleep(t) => {
                shared.sleeper.sleep(&shared.waker, t);
                shared.waker.set_awake();
            }
        }
    }
}

impl<N: Net> Progress<N> {
    fn new(net: N, config: EngineConfig, shared: Arc<Shared<N>>) -> Result<Self, RpcError> {
        if let Some(cpu) = config.cpu {
            pin_to(cpu)?;
        }
        let wait = config
            .wait
            .unwrap_or_else(|| WaitStrategy::default_for(net.provider()));
        let mut p = Progress {
            net,
            shared,
            wait,
            ops: OpTable::new(),
            recvs: Vec::new(),
            repost: Vec::new(),
            sends: Vec::new(),
            free_sends: Vec::new(),
            registered_sends: 0,
            outbox: VecDeque::new(),
            bulk_backlog: VecDeque::new(),
            sessions: rustc_hash::FxHashMap::default(),
            opened: VecDeque::new(),
            next_keepalive: None,
            next_expiry_check: Instant::now(),
            last_liveness: Instant::now(),
            local_addr: Vec::new(),
            local_peers: HashMap::new(),
            guard_local: false,
            // Sessions start at a random-ish point so a restarted engine does not accept a
            // stale session id from a previous incarnation by chance.
            next_session: (std::process::id() << 12) | 1,
            in_flight: HashSet::new(),
            doomed: Vec::new(),
            next_reap: Instant::now(),
            stopping: false,
            events: Vec::with_capacity(CQ_BATCH),
            expired: Vec::new(),
            last_work: Instant::now(),
            now: Instant::now(),
            stale_passes: 0,
            inject_max: 0,
            scratch: Vec::new(),
            config,
        };
        if p.config.inject_answers {
            p.inject_max = p.net.inject_size().min(p.config.eager_size);
        }
        for i in 0..p.config.recv_buffers {
            let mr = p
                .net
                .register(p.config.eager_size, false)
                .map_err(|source| RpcError::Transport {
                    what: "register receive buffer",
                    source,
                })?;
            p.recvs.push(Some(mr));
            p.repost.push(i);
        }
        p.post_recvs()?;
        p.guard_local = guards_local_peers(p.net.provider());
        if p.guard_local {
            p.local_addr = p.net.local_address();
            super::local::opened(&p.local_addr);
        }
        Ok(p)
    }

    /// One pass: commands, retried posts, completions, deadlines. True if anything happened.
    pub(super) fn iterate(&mut self) -> bool {
        self.pass(true)
    }

    /// [`iterate`](Self::iterate) for a caller that polls again at once, in a tight loop (the
    /// busy-poll window of an inline waiter): a pass that finds nothing reads the clock only
    /// every [`HOT_CLOCK_EVERY`] passes, so [`now`](Self::now) lags by a few polls, well under
    /// a microsecond. On this VM a clock read (`clock_gettime` in the vDSO) was 6.5% of an
    /// inline caller's samples at 64 B round trips, most of an empty poll.
    pub(super) fn iterate_hot(&mut self) -> bool {
        self.pass(false)
    }

    fn pass(&mut self, fresh_clock: bool) -> bool {
        let mut work = self.take_commands();
        work |= self.flush_outbox();
        work |= self.flush_bulk_backlog();
        work |= self.poll_cq();
        let _ = self.post_recvs();
        // One clock read per iteration (it is most of an idle poll's cost otherwise).
        self.stale_passes += 1;
        if !(fresh_clock || work || self.stale_passes >= HOT_CLOCK_EVERY) {
            return false;
        }
        self.stale_passes = 0;
        let now = Instant::now();
        self.now = now;
        self.expire(now);
        if work {
            self.last_work = now;
        }
        work
    }

    /// The time read by the last pass that read the clock: the last
    /// [`iterate`](Self::iterate), or an [`iterate_hot`](Self::iterate_hot) at most
    /// `HOT_CLOCK_EVERY - 1` empty passes before.
    pub(super) fn now(&self) -> Instant {
        self.now
    }

    /// True once a shutdown was asked for; the thread then runs [`drain`](Self::drain).
    /// Runs a call, bulk or answer command at once (the caller holds the progress lock; see
    /// `Shared::submit_direct`).
    pub(super) fn command_now(&mut self, cmd: Cmd<N>) {
        self.command(cmd);
        self.last_work = Instant::now();
    }

    /// Remembers the raw address of a peer that is an endpoint of this process; gives back
    /// `fi_addr`.
    fn note_peer(&mut self, fi_addr: u64, raw: &[u8]) -> u64 {
        self.shared.stats.peers.fetch_add(1, Ordering::Relaxed);
        if self.guard_local && super::local::is_ours(raw) {
            self.local_peers.insert(fi_addr, raw.to_vec());
        }
        fi_addr
    }

    /// Registers `len` bytes at once (the caller holds the progress lock).
    pub(super) fn register_now(&mut self, len: usize) -> Result<N::Mr, NetError> {
        self.net.register(len, true)
    }

    /// Registers `bytes` in place at once (the caller holds the progress lock).
    pub(super) fn register_bytes_now(&mut self, bytes: bytes::Bytes) -> Result<N::Mr, NetError> {
        self.net.register_bytes(bytes)
    }

    pub(super) fn stopping(&self) -> bool {
        self.stopping
    }

    // ---- waiting ---------------------------------------------------------------------------

    /// Time since the last iteration that did work (or the last command run at once), as of
    /// the last iteration.
    pub(super) fn idle_for(&self) -> Duration {
        self.now.saturating_duration_since(self.last_work)
    }

    /// Decides how to wait after an iteration without work.
    pub(super) fn idle(&mut self) -> Idle {
        // As of this iteration's clock reading: no second read per empty poll.
        if self.idle_for() < self.wait.spin_window() {
            return Idle::Spin;
        }
        self.shared.waker.set_sleeping();
        let queued = !self.shared.queue.lock().cmds.is_empty();
        let has_fd = self.net.wait_fd().is_some();
        if queued || (has_fd && !self.net.try_wait()) {
            self.shared.waker.set_awake();
            return Idle::Spin;
        }
        let mut timeout = Duration::from_millis(100);
        if !has_fd {
            timeout = crate::config::idle_nap(self.config.idle_poll, self.idle_for());
        }
        if let Some(d) = self.ops.next_deadline() {
            timeout = timeout.min(d.saturating_duration_since(Instant::now()));
        }
        if let Some(d) = self.next_liveness() {
            timeout = timeout.min(d.saturating_duration_since(Instant::now()));
        }
        Idle::Sleep(timeout)
    }

    // ---- commands --------------------------------------------------------------------------

    fn take_commands(&mut self) -> bool {
        if !self.shared.queued.load(Ordering::Acquire) {
            return false;
        }
        let cmds = {
            let mut q = self.shared.queue.lock();
            self.shared.queued.store(false, Ordering::Release);
            std::mem::take(&mut q.cmds)
        };
        if cmds.is_empty() {
            return false;
        }
        for cmd in cmds {
            self.command(cmd);
        }
        true
    }

    fn command(&mut self, cmd: Cmd<N>) {
        if self.stopping {
            return cmd.fail(RpcError::ShuttingDown);
        }
        match cmd {
            Cmd::Connect {
                id,
                addr,
                timeout,
                sink,
            } => self.connect(id, addr, timeout, sink),
            Cmd::Call {
                id,
                peer,
                op,
                body,
                timeout,
                sink,
            } => {
                let budget = budget_us(timeout);
                let header = Header {
                    kind: Kind::Request,
                    op,
                    request_id: id,
                    session: peer.session,
                    budget_us: budget,
                };
                let deadline = timeout.map(|t| Instant::now() + t);
                let entry = Op {
                    sink: OpSink::Call(sink),
                    timeout,
                    peer,
                };
                if self
                    .ops
                    .insert_at(id, Completes::OnResponse, deadline, 0, entry, None)
                {
                    self.send_frame(peer.fi_addr, &header, &body, Some(id));
                }
            }
            Cmd::RawCall {
                id,
                peer,
                frame,
                timeout,
                sink,
            } => {
                let deadline = Some(Instant::now() + timeout);
                let entry = Op {
                    sink: OpSink::Call(sink),
                    timeout: Some(timeout),
                    peer,
                };
                if self
                    .ops
                    .insert_at(id, Completes::OnResponse, deadline, 0, entry, None)
                {
                    self.send(peer.fi_addr, OutFrame::Bytes(frame), Some(id));
                }
            }
            Cmd::Bulk(b) => self.bulk(b),
            Cmd::Register { len, sink } => match self.net.register(len, true) {
                Ok(mr) => sink.complete(Ok(self.shared.wrap(mr))),
                Err(source) => sink.complete(Err(RpcError::Transport {
                    what: "register",
                    source,
                })),
            },
            Cmd::RegisterBytes { bytes, sink } => match self.net.register_bytes(bytes) {
                Ok(mr) => sink.complete(Ok(self.shared.wrap(mr))),
                Err(source) => sink.complete(Err(RpcError::Transport {
                    what: "register bytes",
                    source,
                })),
            },
            Cmd::Release(mr) => drop(mr),
            Cmd::Respond {
                session,
                peer,
                request_id,
                op,
                result,
            } => {
                if !self.in_flight.remove(&(session, request_id)) {
                    return; // cancelled by the caller: nobody waits for this answer
                }
                match result {
                    Ok(body) if body.len() <= self.shared.max_body => {
                        let h = Header {
                            kind: Kind::Response,
                            op,
                            request_id,
                            session,
                            budget_us: 0,
                        };
                        self.send_frame(peer, &h, &body, None);
                    }
                    Ok(body) => {
                        let msg = format!(
                            "response body of {} bytes exceeds {}",
                            body.len(),
                            self.shared.max_body
                        );
                        self.send_error(peer, session, request_id, op, ErrorCode::TooLarge, &msg);
                    }
                    Err((code, msg)) => self.send_error(peer, session, request_id, op, code, &msg),
                }
            }
            Cmd::Cancel { id } => {
                if let Some(op) = self.ops.cancel(id) {
                    self.forget_failed_connect(&op);
                    self.send_cancel(id, &op);
                    op.fail(RpcError::Cancelled);
                }
            }
            Cmd::Shutdown => self.stopping = true,
        }
    }

    fn connect(&mut self, id: u64, addr: Address, timeout: Duration, sink: Sink<Peer>) {
        let fi_addr = match self.net.insert_peer(addr.bytes()) {
            Ok(a) => self.note_peer(a, addr.bytes()),
            Err(source) => {
                return sink.complete(Err(RpcError::Transport {
                    what: "insert peer",
                    source,
                }))
            }
        };
        let mut body = Vec::new();
        Writer::new(&mut body)
            .bytes(self.net.provider().as_bytes())
            .bytes(&self.net.local_address());
        let header = Header {
            kind: Kind::Request,
            op: OP_HELLO,
            request_id: id,
            session: 0,
            budget_us: budget_us(Some(timeout)),
        };
        let peer = Peer {
            fi_addr,
            session: 0,
        };
        let entry = Op {
            sink: OpSink::Connect { fi_addr, sink },
            timeout: Some(timeout),
            peer,
        };
        if self.ops.insert_at(
            id,
            Completes::OnResponse,
            Some(Instant::now() + timeout),
            0,
            entry,
            None,
        ) {
            self.send_frame(fi_addr, &header, &body, Some(id));
        }
    }

    fn bulk(&mut self, b: BulkCmd<N>) {
        let BulkCmd {
            id,
            write,
            peer,
            regions,
            mr,
            timeout,
            sink,
        } = b;
        let Ok(outstanding) = u32::try_from(regions.len()) else {
            let error = RpcError::TooLarge {
                what: "region list",
                len: regions.len(),
                max: u32::MAX as usize,
            };
            return sink.complete(Err(BulkError {
                error,
                buffer: Some(self.shared.wrap(mr)),
            }));
        };
        let deadline = timeout.map(|t| Instant::now() + t);
        let bufs = BulkBufs {
            mr,
            write,
            fi_addr: peer.fi_addr,
            regions,
            next: 0,
            offset: 0,
        };
        let entry = Op {
            sink: OpSink::Bulk(sink),
            timeout,
            peer,
        };
        if self.ops.insert_at(
            id,
            Completes::OnTransport,
            deadline,
            outstanding,
            entry,
            Some(bufs),
        ) {
            self.post_bulk(id);
        }
    }

    /// Posts the remaining regions of bulk op `id`; on `-FI_EAGAIN` queues it for later.
    fn post_bulk(&mut self, id: u64) -> bool {
        let mut failed: Vec<NetError> = Vec::new();
        let mut again = false;
        if let Some(Some(b)) = self.ops.buffers_mut(id) {
            while b.next < b.regions.len() {
                let remote = &b.regions[b.next];
                let len = N::remote_len(remote);
                let c = ctx(TAG_OP, id);
                let local = self.local_peers.get(&b.fi_addr).map(Vec::as_slice);
                let net = &mut self.net;
                let r = guarded(local, || {
                    if b.write {
                        // SAFETY: the op table owns `b.mr` until every posted region of this op
                        // has completed (or the endpoint is closed, in Progress::drop); the
                        // caller checked that the regions fit in the buffer.
                        unsafe { net.post_write(b.fi_addr, &b.mr, b.offset, remote, c) }
                    } else {
                        // SAFETY: as above.
                        unsafe { net.post_read(b.fi_addr, &mut b.mr, b.offset, remote, c) }
                    }
                });
                match r {
                    Ok(()) => {
                        b.next += 1;
                        b.offset += len;
                    }
                    Err(PostError::Again) => {
                        again = true;
                        break;
                    }
                    Err(PostError::Failed(e)) => {
                        // This region and the ones after it will never complete: account for
                        // them now so the op finishes when the posted ones do.
                        let left = b.regions.len() - b.next;
                        b.next = b.regions.len();
                        failed.push(e);
                        for _ in 1..left {
                            failed.push("not posted after an earlier post failed".into());
                        }
                    }
                }
            }
        }
        for e in failed {
            self.transport_done(id, Err(e));
        }
        if again {
            self.bulk_backlog.push_back(id);
        }
        !again
    }

    fn flush_bulk_backlog(&mut self) -> bool {
        let mut work = false;
        while let Some(id) = self.bulk_backlog.pop_front() {
            if !self.post_bulk(id) {
                break;
            }
            work = true;
        }
        work
    }

    // ---- receives --------------------------------------------------------------------------

    fn post_recvs(&mut self) -> Result<(), RpcError> {
        while let Some(&slot) = self.repost.last() {
            let Some(mr) = self.recvs[slot].as_mut() else {
                self.repost.pop();
                continue;
            };
            // SAFETY: `recvs[slot]` owns the buffer until the completion for this context is
            // read (`on_recv`), or the endpoint is closed (Progress::drop) before it is freed.
            match unsafe { self.net.post_recv(mr, ctx(TAG_RECV, slot as u64)) } {
                Ok(()) => {
                    self.repost.pop();
                }
                Err(PostError::Again) => return Ok(()),
                Err(PostError::Failed(source)) => {
                    return Err(RpcError::Transport {
                        what: "post receive",
                        source,
                    })
                }
            }
        }
        Ok(())
    }

    fn poll_cq(&mut self) -> bool {
        let mut events = std::mem::take(&mut self.events);
        events.clear();
        if let Err(e) = self.net.poll(&mut events) {
            // A failing CQ is not recoverable: stop, failing everything pending with it.
            eprintln!("diaspora-rpc: CQ read failed, stopping the engine: {e}");
            self.stopping = true;
        }
        let work = !events.is_empty();
        for ev in events.drain(..) {
            let tag = ev.ctx >> TAG_SHIFT;
            let index = ev.ctx & ((1 << TAG_SHIFT) - 1);
            match tag {
                TAG_RECV => self.on_recv(index as usize, ev),
                TAG_SEND => {
                    let op = self.release_slot(index as usize);
                    if let Some(source) = ev.error {
                        self.fail_send(
                            op,
                            RpcError::Transport {
                                what: "send",
                                source,
                            },
                        );
                    }
                }
                TAG_OP => {
                    let r = match ev.error {
                        Some(e) => Err(e),
                        None => Ok(()),
                    };
                    self.transport_done(index, r);
                }
                _ => {}
            }
        }
        self.events = events;
        work
    }

    fn transport_done(&mut self, id: u64, result: Result<(), NetError>) {
        let Transport::Done {
            buffers,
            sink,
            error,
        } = self.ops.on_transport(id, result)
        else {
            return;
        };
        let Some(b) = buffers else { return };
        let buf = self.shared.wrap(b.mr);
        match sink {
            Some(op) => match (op.sink, error) {
                (OpSink::Bulk(s), None) => s.complete(Ok(buf)),
                (OpSink::Bulk(s), Some(source)) => {
                    let what = if b.write { "write" } else { "read" };
                    let error = RpcError::Transport { what, source };
                    s.complete(Err(BulkError {
                        error,
                        buffer: Some(buf),
                    }));
                }
                (other, _) => Op {
                    sink: other,
                    timeout: op.timeout,
                    peer: op.peer,
                }
                .fail(RpcError::EngineStopped),
            },
            // Timed out or cancelled earlier: the transport is done now, free the buffer.
            None => {
                self.shared
                    .stats
                    .released_late
                    .fetch_add(1, Ordering::Relaxed);
                drop(buf);
            }
        }
    }

    fn on_recv(&mut self, slot: usize, ev: NetEvent) {
        let Some(mr) = self.recvs.get_mut(slot).and_then(Option::take) else {
            return;
        };
        self.repost.push(slot);
        if ev.error.is_some() {
            // Truncated by the transport (larger than a receive buffer) or the peer vanished.
            self.shared.stats.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            let len = ev.len.min(N::bytes(&mr).len());
            self.on_frame(&N::bytes(&mr)[..len]);
        }
        self.recvs[slot] = Some(mr);
    }

    fn on_frame(&mut self, bytes: &[u8]) {
        let stats = &self.shared.stats;
        let frame = match wire::decode(bytes, self.shared.max_body) {
            Ok((frame, _)) => frame,
            Err(e) => {
                // Answer when the header says who to answer; drop otherwise.
                match wire::frame::peek_ids(bytes)
                    .and_then(|(id, s, op)| Some((id, s, op, self.sessions.get(&s)?.fi_addr)))
                {
                    Some((id, session, op, fi_addr)) => {
                        stats.refused.fetch_add(1, Ordering::Relaxed);
                        self.send_error(fi_addr, session, id, op, e.code, &e.to_string());
                    }
                    None => {
                        stats.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
                return;
            }
        };
        let h = frame.header;
        match h.kind {
            Kind::Request if h.op == OP_HELLO => self.on_hello(&h, frame.body),
            Kind::Request => self.on_request(&h, frame.body),
            Kind::Response | Kind::Error => self.on_response(&h, frame.body),
            Kind::Cancel => {
                stats.cancels.fetch_add(1, Ordering::Relaxed);
                self.in_flight.remove(&(h.session, h.request_id));
            }
            Kind::Goodbye => self.on_goodbye(&h, frame.body),
            Kind::Keepalive => self.on_keepalive(&h, frame.body),
        }
    }

    /// A caller closes its session: forget it and its requests (their answers are dropped).
    /// Only with the session's secret; anything else is dropped.
    fn on_goodbye(&mut self, h: &Header, body: &[u8]) {
        match self.sessions.get(&h.session) {
            Some(s) if s.proven_by(body) => {
                self.close_session(h.session, SessionEnd::Goodbye);
            }
            _ => {
                self.shared.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Ends `session` and counts why, before its listener can run: a listener that reads the
    /// counters sees its own end counted.
    fn close_session(&mut self, session: u32, why: SessionEnd) {
        if let Some(s) = self.sessions.remove(&session) {
            self.doom_peer(s.fi_addr);
        }
        let stats = &self.shared.stats;
        match why {
            SessionEnd::Goodbye => &stats.sessions_closed,
            SessionEnd::Evicted => &stats.sessions_evicted,
            SessionEnd::Expired => &stats.sessions_expired,
        }
        .fetch_add(1, Ordering::Relaxed);
        self.in_flight.retain(|&(s, _)| s != session);
        let listener = self.shared.session_listener.read().clone();
        if let Some(f) = listener {
            // User code: on the handler pool, never here. A panic in it is the listener's
            // own (caught, so a pool worker survives it).
            self.dispatch(Box::new(move || {
                let _ = std::panic::catch_unwind(AssertUnwindSafe(|| f(session, why)));
            }));
        }
    }

    /// With every session in use, makes room for a new caller by closing the session idle
    /// longest, if it has been idle for `session_idle` and has no request in flight (a caller
    /// that was killed never says GOODBYE). False if none qualifies.
    fn evict_idle_session(&mut self) -> bool {
        let busy: HashSet<u32> = self.in_flight.iter().map(|&(s, _)| s).collect();
        let oldest = self
            .sessions
            .iter()
            .filter(|(id, _)| !busy.contains(id))
            .min_by_key(|(_, s)| s.last_seen)
            .map(|(&id, s)| (id, s.last_seen));
        match oldest {
            Some((id, seen)) if seen.elapsed() >= self.config.session_idle => {
                self.close_session(id, SessionEnd::Evicted);
                true
            }
            _ => false,
        }
    }

    /// Closes every session this engine opened at its peers (shutdown): best effort, posted
    /// at once or not at all; the drain then lets the sends finish.
    fn say_goodbye(&mut self) {
        self.next_keepalive = None;
        for o in std::mem::take(&mut self.opened) {
            let Opened {
                fi_addr,
                session,
                secret,
                ..
            } = o;
            let h = Header {
                kind: Kind::Goodbye,
                op: 0,
                request_id: 0,
                session,
                budget_us: 0,
            };
            self.send_now(fi_addr, &frame_bytes(&h, &secret.to_le_bytes()));
        }
    }

    fn on_hello(&mut self, h: &Header, body: &[u8]) {
        let mut r = Reader::new(body);
        let parsed = (|| {
            let provider = r.str(MAX_PROVIDER)?;
            let raw = r.bytes(MAX_RAW_ADDRESS)?;
            r.finish()?;
            Ok::<_, wire::WireError>((provider, raw))
        })();
        let (provider, raw) = match parsed {
            Ok(v) => v,
            Err(_) => {
                // No usable return address: nothing to answer to.
                self.shared.stats.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        // A HELLO that is answered with an error needs no session: it must not evict one.
        let refusal = if provider != self.net.provider() {
            self.shared.stats.refused.fetch_add(1, Ordering::Relaxed);
            let msg = format!(
                "this engine uses {}, the caller {provider}",
                self.net.provider()
            );
            Some((ErrorCode::ProviderMismatch, msg))
        } else if self.stopping {
            Some((ErrorCode::ShuttingDown, "shutting down".to_owned()))
        } else {
            None
        };
        if refusal.is_none()
            && self.sessions.len() >= self.config.max_sessions
            && !self.evict_idle_session()
        {
            // Refusing costs nothing: no AV entry, no answer (the caller times out).
            self.shared.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let fi_addr = match self.net.insert_peer(raw) {
            Ok(a) => self.note_peer(a, raw),
            Err(_) => {
                self.shared.stats.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        if let Some((code, msg)) = refusal {
            self.send_error(fi_addr, 0, h.request_id, h.op, code, &msg);
            // The entry goes once the answer is sent: a refused caller costs nothing lasting.
            return self.doom_peer(fi_addr);
        }
        let session = self.next_session;
        self.next_session = self.next_session.wrapping_add(1).max(1);
        let secret = new_secret(session);
        self.sessions.insert(
            session,
            Session {
                fi_addr,
                secret,
                last_seen: Instant::now(),
                last_heard: Instant::now(),
            },
        );
        let mut out = Vec::new();
        Writer::new(&mut out)
            .u32(session)
            .u32(self.shared.max_body as u32)
            .u64(secret)
            .u32(self.keepalive_ms());
        let resp = Header {
            kind: Kind::Response,
            op: OP_HELLO,
            request_id: h.request_id,
            session,
            budget_us: 0,
        };
        self.send_frame(fi_addr, &resp, &out, None);
    }

    fn on_request(&mut self, h: &Header, body: &[u8]) {
        let Some(s) = self.sessions.get_mut(&h.session) else {
            self.shared.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        s.last_seen = Instant::now();
        let fi_addr = s.fi_addr;
        let reply_err = |p: &mut Self, code: ErrorCode, msg: &str| {
            p.shared.stats.refused.fetch_add(1, Ordering::Relaxed);
            p.send_error(fi_addr, h.session, h.request_id, h.op, code, msg);
        };
        if self.stopping {
            return reply_err(self, ErrorCode::ShuttingDown, "the engine is shutting down");
        }
        let Some(handler) = self.shared.handlers.read().get(&h.op).cloned() else {
            return reply_err(
                self,
                ErrorCode::UnknownOp,
                &format!("no handler for op {}", h.op),
            );
        };
        if self.in_flight.len() >= self.config.max_requests_in_flight {
            return reply_err(self, ErrorCode::Overloaded, "too many requests in flight");
        }
        if !self.in_flight.insert((h.session, h.request_id)) {
            return; // a duplicate of a request being served
        }
        self.shared.stats.served.fetch_add(1, Ordering::Relaxed);
        let deadline =
            (h.budget_us > 0).then(|| Instant::now() + Duration::from_micros(h.budget_us.into()));
        let request = Request {
            op: h.op,
            body: body.to_vec(),
            peer: Peer {
                fi_addr,
                session: 0,
            },
            deadline,
        };
        let responder = Responder {
            shared: self.shared.clone(),
            session: h.session,
            peer: fi_addr,
            request_id: h.request_id,
            op: h.op,
            answered: false,
        };
        self.dispatch(Box::new(move || {
            if request.deadline.is_some_and(|d| Instant::now() >= d) {
                return responder.fail_with(
                    ErrorCode::DeadlineExceeded,
                    "deadline passed before the handler ran",
                );
            }
            // A panic drops the responder while unwinding, which answers HandlerPanicked.
            let _ = std::panic::catch_unwind(AssertUnwindSafe(move || handler(request, responder)));
        }));
    }

    /// Hands user code to the serving worker or the handler pool, never runs it here.
    fn dispatch(&self, job: super::serve::Job) {
        match &self.shared.serve {
            Some(s) => s.push(job),
            None => self.config.handler_pool.push_work(job, 0),
        }
    }

    fn on_response(&mut self, h: &Header, body: &[u8]) {
        let op = match self.ops.on_response(h.request_id) {
            Response::Deliver(op) => op,
            Response::Late => {
                self.shared.stats.late.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Response::Unknown => {
                self.shared.stats.unknown.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        let remote_error = || match ErrorBody::decode(body) {
            Ok(e) => RpcError::Remote {
                code: e.code,
                message: e.message,
            },
            Err(e) => RpcError::Wire(e),
        };
        match op.sink {
            OpSink::Call(sink) => match h.kind {
                Kind::Response => sink.complete(Ok(body.to_vec())),
                _ => sink.complete(Err(remote_error())),
            },
            OpSink::Connect { fi_addr, sink } => {
                if h.kind != Kind::Response {
                    self.doom_peer(fi_addr); // refused: the caller never gets this peer
                    let e = match remote_error() {
                        RpcError::Remote {
                            code: ErrorCode::ProviderMismatch,
                            message,
                        } => RpcError::ProviderMismatch {
                            local: self.net.provider().to_owned(),
                            remote: message,
                        },
                        e => e,
                    };
                    return sink.complete(Err(e));
                }
                let mut r = Reader::new(body);
                match (r.u32(), r.u32()) {
                    (Ok(session), Ok(_max_body)) => {
                        // The secret that closes the session, and the keepalive interval the
                        // callee asks for (each absent from older peers).
                        if let Ok(secret) = r.u64() {
                            let every = keepalive::asked_interval(r.u32().ok());
                            self.note_opened(Opened {
                                fi_addr,
                                session,
                                secret,
                                keepalive: every.map(|e| (e, Instant::now() + e)),
                            });
                        }
                        sink.complete(Ok(Peer { fi_addr, session }))
                    }
                    (Err(e), _) | (_, Err(e)) => {
                        self.doom_peer(fi_addr);
                        sink.complete(Err(RpcError::Wire(e)))
                    }
                }
            }
            OpSink::Bulk(_) => {}
        }
    }

    // ---- deadlines and shutdown ------------------------------------------------------------

    fn expire(&mut self, now: Instant) {
        self.reap_peers(now);
        self.liveness(now);
        let mut expired = std::mem::take(&mut self.expired);
        self.ops.expire(now, &mut expired);
        for (id, op) in expired.drain(..) {
            self.forget_failed_connect(&op);
            self.send_cancel(id, &op);
            let t = op.timeout.unwrap_or_default();
            op.fail(RpcError::Timeout(t));
        }
        self.expired = expired;
    }

    pub(super) fn drain(&mut self) {
        self.say_goodbye();
        for (_, op) in self.ops.shutdown() {
            op.fail(RpcError::ShuttingDown);
        }
        // Regions never posted will never complete: account for them so their ops leave.
        while let Some(id) = self.bulk_backlog.pop_front() {
            let left = match self.ops.buffers_mut(id) {
                Some(Some(b)) => {
                    let left = b.regions.len() - b.next;
                    b.next = b.regions.len();
                    left
                }
                _ => 0,
            };
            for _ in 0..left {
                self.transport_done(id, Err("not posted before shutdown".into()));
            }
        }
        // Let posted sends and transfers finish so their buffers are released by their
        // completions, bounded by drain_timeout.
        let until = Instant::now() + self.config.drain_timeout;
        while Instant::now() < until {
            let _ = self.take_commands();
            self.flush_outbox();
            let busy = self.poll_cq();
            let sends_posted = self.free_sends.len() < self.registered_sends
                || self.sends.iter().flatten().any(|s| s.oversized);
            if !busy && !sends_posted && self.ops.is_empty() && self.outbox.is_empty() {
                break;
            }
            if !busy {
                std::thread::yield_now();
            }
        }
    }
}

impl<N: Net> Drop for Progress<N> {
    fn drop(&mut self) {
        // Close the endpoint first: after this no posted operation touches any buffer, so the
        // fields (receive buffers, send buffers, the op table's bulk buffers) may be freed.
        if self.guard_local {
            let net = &mut self.net;
            super::local::closing(&self.local_addr, || net.close());
        } else {
            self.net.close();
        }
        let (sinks, _buffers) = self.ops.close();
        for op in sinks {
            op.fail(RpcError::ShuttingDown);
        }
    }
}

/// Whether posts to endpoints of this process must be guarded against their closing: only on
/// shm, whose addresses carry the process id. Elsewhere an address can be reused, after one
/// of our endpoints closed, by another process's live endpoint (a tcp port), and the guard
/// would refuse posts to it; the mock transport's addresses are test-chosen names shared by
/// unrelated tests of one process.
fn guards_local_peers(provider: &str) -> bool {
    provider == "shm"
}

/// Runs `post` unless the peer is an endpoint of this process (`local`: its raw address)
/// that is closed; then the post fails instead. Posting to a closed endpoint of the same
/// process crashes libfabric 1.17's shm provider (SIGSEGV in the peer region's spin lock).
pub(super) fn guarded(
    local: Option<&[u8]>,
    post: impl FnOnce() -> Result<(), PostError>,
) -> Result<(), PostError> {
    match local {
        None => post(),
        Some(raw) => {
            let mut r = Err(PostError::Failed(
                "the peer, an endpoint of this process, is closed".into(),
            ));
            super::local::unless_closed(raw, || r = post());
            r
        }
    }
}

fn budget_us(timeout: Option<Duration>) -> u32 {
    match timeout {
        None => 0,
        Some(t) => t.as_micros().clamp(1, u32::MAX as u128) as u32,
    }
}

fn pin_to(cpu: usize) -> Result<(), RpcError> {
    // SAFETY: cpu_set_t is plain data; zeroed is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(RpcError::InvalidArgument(format!(
            "cpu {cpu} is beyond CPU_SETSIZE"
        )));
    }
    // SAFETY: `cpu` is below CPU_SETSIZE, checked above.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a live cpu_set_t and we pass its size; 0 means the calling thread.
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        return Err(RpcError::InvalidArgument(format!(
            "cannot pin the progress thread to cpu {cpu}: {e}"
        )));
    }
    Ok(())
}
