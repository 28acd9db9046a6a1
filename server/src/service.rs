//! The request handlers of one progress thread: authentication, topic admin (thread 0 of
//! rank 0), produce, fetch, commit. Handlers run on the engine's handler pool; disk work and
//! CRC checks run on the server's I/O pool; nothing blocks a progress thread.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use diaspora_api::{DataView, ThreadPool};
use diaspora_driver_files::partition::BatchPayload;
use diaspora_proto::admin::{Empty, MAX_LIST};
use diaspora_proto::fetch::{
    DATA_IN_LANDING, END_OF_STREAM, FROM_COMMITTED, TABLE_IN_LANDING, WANT_DATA,
};
use diaspora_proto::region::total_len;
use diaspora_proto::table::PER_EVENT;
use diaspora_proto::{
    encode_error, encode_ok, group, BatchTable, BatchTableRef, Commit, CommitResponse, Fetch,
    FetchData, FetchDataResponse, FetchResponse, Hello, HelloResponse, Limits, Message, Op,
    Placement, ProduceBatch, ProduceResponse, ProtoError, RemoteRegion, Status, Subscribe,
    TopicComplete, TopicCreate, TopicExists, TopicExistsResponse, TopicList, TopicListResponse,
    TopicOpen, TopicOpenResponse, WireError, PROTOCOL_VERSION,
};
use diaspora_rpc::wire::ErrorCode;
use diaspora_rpc::{Engine, Handle, Peer, Request, Responder, SessionEnd};
use parking_lot::Mutex;

use crate::partition::{CommitCtx, Partition, Ready};
use crate::polls::HeldPolls;
use crate::pool::{BufPool, Pooled};
use crate::store::{StorageKind, Store, Topic};
use crate::timer::Timers;

/// Longest an RDMA transfer may take when the request carries no deadline.
const BULK_TIMEOUT: Duration = Duration::from_secs(30);

/// State shared by every progress thread of a server.
pub struct Shared {
    /// The topics.
    pub store: Store,
    /// The limits announced in Hello.
    pub limits: Limits,
    /// This rank.
    pub rank: u32,
    /// The group this rank belongs to: set once every rank listens (until then Hello is
    /// answered `Throttled`: the group is still forming).
    membership: OnceLock<Membership>,
    /// Disk work and checks.
    pub io: ThreadPool,
    /// Set when the server stops: new work is refused.
    pub stopping: AtomicBool,
    /// Bytes of produce batches being read or stored.
    pub inflight_bytes: AtomicU64,
    /// Most bytes in flight before producers are throttled.
    pub max_inflight_bytes: u64,
    /// Long-poll deadlines.
    pub timers: Timers,
    next_waiter: AtomicU64,
    /// Counters for the log line at exit.
    pub stats: Counters,
}

/// What every rank of a group shares once the group is formed.
#[derive(Debug, Clone)]
pub struct Membership {
    /// The group file's token.
    pub token: String,
    /// The group file's epoch.
    pub epoch: u64,
    /// Every (rank, thread) of the group, in group-file order (placement is computed from
    /// it).
    pub threads: Vec<Placement>,
}

/// Retry delay (ms) announced to a client that says Hello while the group is forming.
const FORMING_RETRY_MS: u64 = 20;

/// What a server did (logged at exit).
#[derive(Default, Debug)]
pub struct Counters {
    /// Batches stored.
    pub batches: AtomicU64,
    /// Events stored.
    pub events: AtomicU64,
    /// Fetches answered.
    pub fetches: AtomicU64,
    /// Requests refused for lack of authentication.
    pub unauthorized: AtomicU64,
    /// Requests refused as malformed.
    pub malformed: AtomicU64,
    /// Long polls given up because their session ended (client GOODBYE or eviction).
    pub polls_released: AtomicU64,
}

impl Shared {
    /// Builds the shared state.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Store,
        limits: Limits,
        rank: u32,
        io: ThreadPool,
        max_inflight_bytes: u64,
    ) -> std::io::Result<Shared> {
        Ok(Shared {
            store,
            limits,
            rank,
            membership: OnceLock::new(),
            io,
            stopping: AtomicBool::new(false),
            inflight_bytes: AtomicU64::new(0),
            max_inflight_bytes,
            timers: Timers::start()?,
            next_waiter: AtomicU64::new(1),
            stats: Counters::default(),
        })
    }

    /// Sets the group this rank belongs to (once; a second call is refused).
    pub fn join(&self, m: Membership) -> Result<(), Membership> {
        self.membership.set(m)
    }

    /// The group, or `Throttled` while it is still forming.
    pub fn membership(&self) -> Result<&Membership, ProtoError> {
        self.membership.get().ok_or_else(|| {
            ProtoError::with_detail(
                Status::Throttled,
                FORMING_RETRY_MS,
                "the server group is still forming (not every rank listens yet): retry",
            )
        })
    }

    fn placement(&self, partitions: usize) -> Result<Vec<Placement>, ProtoError> {
        Ok(group::placement(&self.membership()?.threads, partitions))
    }
}

/// The handlers of one progress thread.
pub struct ThreadService {
    shared: Arc<Shared>,
    thread: u32,
    handle: Handle,
    pool: Arc<BufPool>,
    authed: Mutex<HashSet<Peer>>,
    /// Parked long polls by session, released when their session ends.
    polls: HeldPolls<Arc<Partition>>,
}

type Resp = Responder;

fn send<M: Message>(resp: Resp, r: Result<M, ProtoError>) {
    match r {
        Ok(m) => resp.respond(encode_ok(&m)),
        Err(e) => resp.respond(encode_error(&e)),
    }
}

fn malformed(e: WireError) -> ProtoError {
    let status = if e.code == ErrorCode::TooLarge {
        Status::TooLarge
    } else {
        Status::BadRequest
    };
    ProtoError::new(status, format!("malformed request body: {e}"))
}

impl ThreadService {
    /// Registers the handlers of thread `thread` on `engine`.
    pub fn install(
        engine: &Engine,
        shared: Arc<Shared>,
        thread: u32,
    ) -> Result<(), diaspora_rpc::RpcError> {
        let svc = Arc::new(ThreadService {
            shared,
            thread,
            handle: engine.handle(),
            pool: BufPool::new(engine.handle()),
            authed: Mutex::new(HashSet::new()),
            polls: HeldPolls::default(),
        });
        for op in Op::ALL {
            let s = svc.clone();
            engine.register_handler(op.code(), move |req, resp| s.dispatch(op, req, resp))?;
        }
        let s = svc.clone();
        engine.on_session_end(move |session, why| s.session_ended(session, why));
        Ok(())
    }

    /// A client's session ended: its parked long polls are dropped now (their answers would
    /// reach nobody), not at their deadlines. A session that ended without its client saying
    /// so (expired: the client died or stopped; evicted) is logged.
    fn session_ended(&self, session: u32, why: SessionEnd) {
        let polls = self.polls.end(session);
        let n = polls.len();
        for (id, p) in polls {
            self.release(&p, id);
        }
        let cause = match why {
            SessionEnd::Goodbye => return,
            SessionEnd::Expired => "expired: nothing heard from its client for the session expiry",
            SessionEnd::Evicted => "evicted: every session in use, it was idle longest",
            _ => "ended",
        };
        crate::say!(
            "diaspora-server: thread {}: session {session} {cause}; released {n} long polls",
            self.thread
        );
    }

    /// Drops waiter `id` of `p` unanswered, if it is still parked there.
    fn release(&self, p: &Partition, id: u64) {
        if let Some(job) = p.take_waiter(id) {
            drop(job);
            self.count_released();
        }
    }

    fn count_released(&self) {
        self.shared
            .stats
            .polls_released
            .fetch_add(1, Ordering::Relaxed);
    }

    fn dispatch(self: &Arc<Self>, op: Op, req: Request, resp: Resp) {
        if op.needs_session() && !self.authed.lock().contains(&req.peer) {
            self.shared
                .stats
                .unauthorized
                .fetch_add(1, Ordering::Relaxed);
            return send::<Empty>(
                resp,
                Err(ProtoError::new(
                    Status::Unauthorized,
                    "this connection is not authenticated: send Hello with the group file's token first",
                )),
            );
        }
        let l = &self.shared.limits;
        match op {
            Op::Hello => send(resp, self.hello(&req)),
            Op::TopicCreate => send(
                resp,
                self.admin(&req, |b| {
                    self.topic_create(TopicCreate::decode(b, l).map_err(malformed)?)
                }),
            ),
            Op::TopicOpen => send(
                resp,
                self.admin(&req, |b| {
                    self.topic_open(TopicOpen::decode(b, l).map_err(malformed)?)
                }),
            ),
            Op::TopicExists => send(
                resp,
                self.admin(&req, |b| {
                    let r = TopicExists::decode(b, l).map_err(malformed)?;
                    Ok(TopicExistsResponse {
                        exists: self.shared.store.exists(&r.name),
                    })
                }),
            ),
            Op::TopicList => send(
                resp,
                self.admin(&req, |b| {
                    self.topic_list(TopicList::decode(b, l).map_err(malformed)?)
                }),
            ),
            Op::TopicComplete => send(
                resp,
                self.admin(&req, |b| {
                    self.topic_complete(TopicComplete::decode(b, l).map_err(malformed)?)
                }),
            ),
            Op::ProduceBatch => self.produce(req, resp),
            Op::Fetch => self.fetch(req, resp),
            Op::FetchData => self.fetch_data(req, resp),
            Op::Commit => send(resp, self.commit(&req)),
            Op::Subscribe => send(resp, self.subscribe(&req)),
        }
    }

    fn decode<M: Message>(&self, body: &[u8]) -> Result<M, ProtoError> {
        M::decode(body, &self.shared.limits).map_err(|e| {
            self.shared.stats.malformed.fetch_add(1, Ordering::Relaxed);
            malformed(e)
        })
    }

    fn hello(&self, req: &Request) -> Result<HelloResponse, ProtoError> {
        let h: Hello = self.decode(&req.body)?;
        if h.version != PROTOCOL_VERSION {
            return Err(ProtoError::new(
                Status::UnsupportedVersion,
                format!(
                    "protocol version {} is not supported (this server speaks {PROTOCOL_VERSION})",
                    h.version
                ),
            ));
        }
        let m = self.shared.membership()?;
        if !group::tokens_match(&h.token, &m.token) {
            self.shared
                .stats
                .unauthorized
                .fetch_add(1, Ordering::Relaxed);
            crate::say!(
                "diaspora-server: refused client {:016x}: wrong or missing token",
                h.client_id
            );
            return Err(ProtoError::new(
                Status::Unauthorized,
                "wrong or missing token: use the token of the server's current group file",
            ));
        }
        self.authed.lock().insert(req.peer);
        Ok(HelloResponse {
            version: PROTOCOL_VERSION,
            epoch: m.epoch,
            rank: self.shared.rank,
            thread: self.thread,
            limits: self.shared.limits,
        })
    }

    fn admin<M: Message>(
        &self,
        req: &Request,
        f: impl FnOnce(&[u8]) -> Result<M, ProtoError>,
    ) -> Result<M, ProtoError> {
        if self.shared.rank != 0 || self.thread != 0 {
            return Err(ProtoError::new(
                Status::WrongThread,
                "topic administration is served by rank 0, thread 0",
            ));
        }
        f(&req.body).inspect_err(|e| {
            if e.status == Status::BadRequest || e.status == Status::TooLarge {
                self.shared.stats.malformed.fetch_add(1, Ordering::Relaxed);
            }
        })
    }

    fn topic_create(&self, r: TopicCreate) -> Result<Empty, ProtoError> {
        self.shared.store.create(&r.name, &r.options)?;
        crate::say!("diaspora-server: created topic {:?}", r.name);
        Ok(Empty)
    }

    fn topic_open(&self, r: TopicOpen) -> Result<TopicOpenResponse, ProtoError> {
        let t = self.shared.store.open(&r.name)?;
        Ok(TopicOpenResponse {
            options: t.config.options.to_string(),
            complete: t.is_complete(),
            placement: self.shared.placement(t.partitions.len())?,
        })
    }

    fn topic_list(&self, r: TopicList) -> Result<TopicListResponse, ProtoError> {
        let names = self.shared.store.list()?;
        let after: Vec<String> = names.into_iter().filter(|n| *n > r.after).collect();
        let mut out = Vec::new();
        let mut size = 16usize;
        for n in &after {
            size += 4 + n.len();
            if out.len() == MAX_LIST || size > 6 * 1024 {
                break;
            }
            out.push(n.clone());
        }
        Ok(TopicListResponse {
            more: out.len() < after.len(),
            names: out,
        })
    }

    fn topic_complete(&self, r: TopicComplete) -> Result<Empty, ProtoError> {
        let t = self.shared.store.complete(&r.name)?;
        for p in &t.partitions {
            p.wake_all();
        }
        crate::say!("diaspora-server: topic {:?} marked complete", r.name);
        Ok(Empty)
    }

    /// The topic and partition of a data-path request, which this thread must own.
    fn partition(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<(Arc<Topic>, Arc<Partition>), ProtoError> {
        if self.shared.stopping.load(Ordering::Acquire) {
            return Err(ProtoError::new(
                Status::ShuttingDown,
                "the server is stopping",
            ));
        }
        let t = self.shared.store.open(topic)?;
        let Some(p) = t.partitions.get(partition as usize).cloned() else {
            return Err(ProtoError::new(
                Status::NoSuchPartition,
                format!(
                    "topic {topic:?} has {} partitions, not {}",
                    t.partitions.len(),
                    partition + 1
                ),
            ));
        };
        let placement = self.shared.placement(t.partitions.len())?;
        let Some(owner) = placement.get(partition as usize).copied() else {
            return Err(ProtoError::new(
                Status::Internal,
                "the group has no progress threads",
            ));
        };
        if owner.rank != self.shared.rank || owner.thread != self.thread {
            return Err(ProtoError::new(
                Status::WrongThread,
                format!(
                    "partition {partition} of {topic:?} is served by rank {} thread {}, not rank {} thread {}",
                    owner.rank, owner.thread, self.shared.rank, self.thread
                ),
            ));
        }
        Ok((t, p))
    }

    fn produce(self: &Arc<Self>, req: Request, resp: Resp) {
        let b: ProduceBatch = match self.decode(&req.body) {
            Ok(b) => b,
            Err(e) => return send::<ProduceResponse>(resp, Err(e)),
        };
        let (t, p) = match self.partition(&b.topic, b.partition) {
            Ok(x) => x,
            Err(e) => return send::<ProduceResponse>(resp, Err(e)),
        };
        if t.is_complete() {
            let e = ProtoError::new(Status::Complete, format!("topic {:?} is complete", b.topic));
            return send::<ProduceResponse>(resp, Err(e));
        }
        let need = b.region_len();
        let used = self.shared.inflight_bytes.fetch_add(need, Ordering::AcqRel);
        if used > 0 && used + need > self.shared.max_inflight_bytes {
            self.shared.inflight_bytes.fetch_sub(need, Ordering::AcqRel);
            let e = ProtoError::with_detail(
                Status::Throttled,
                1,
                "too many bytes in flight on this server",
            );
            return send::<ProduceResponse>(resp, Err(e));
        }
        if let Err(e) = p.begin(b.producer_id, b.seq) {
            self.shared.inflight_bytes.fetch_sub(need, Ordering::AcqRel);
            return send::<ProduceResponse>(resp, Err(e));
        }
        if need == 0 {
            let me = self.clone();
            let io = self.shared.io.clone();
            io.push_work(move || me.store_batch(b, Bytes::new(), p, resp, need), 0);
            return;
        }
        // The memory log keeps the received buffer itself (no copy): size it exactly rather
        // than by power-of-two class, and do not expect it back in the pool.
        let buf = match if self.shared.store.kind() == StorageKind::Memory {
            self.pool.get_exact(need as usize)
        } else {
            self.pool.get(need as usize)
        } {
            Ok(buf) => buf,
            Err(e) => {
                self.shared.inflight_bytes.fetch_sub(need, Ordering::AcqRel);
                p.abort(b.producer_id, b.seq, &self.commit_ctx());
                let e = ProtoError::new(
                    Status::Internal,
                    format!("cannot register {need} bytes: {e}"),
                );
                return send::<ProduceResponse>(resp, Err(e));
            }
        };
        // Leave time to answer before the caller's deadline passes.
        let timeout = req
            .deadline
            .map(|d| {
                let left = d.saturating_duration_since(Instant::now());
                left.saturating_sub((left / 5).max(Duration::from_millis(50)))
            })
            .unwrap_or(BULK_TIMEOUT)
            .min(BULK_TIMEOUT);
        let me = self.clone();
        let regions = b.regions.clone();
        self.handle
            .read(&req.peer, regions, buf, Some(timeout))
            .on_complete(move |r| {
                // On the progress thread: hand everything else to the I/O pool.
                let io = me.shared.io.clone();
                io.push_work(
                    move || match r {
                        Ok(buf) => {
                            let bytes =
                                Bytes::from_owner(Pooled::new(buf, need as usize, me.pool.clone()));
                            me.store_batch(b, bytes, p, resp, need);
                        }
                        Err(e) => {
                            if let Some(buf) = e.buffer {
                                me.pool.put(buf);
                            }
                            me.shared.inflight_bytes.fetch_sub(need, Ordering::AcqRel);
                            p.abort(b.producer_id, b.seq, &me.commit_ctx());
                            let e = ProtoError::new(
                                Status::Transfer,
                                format!(
                                    "cannot read batch {} of producer {:x}: {}",
                                    b.seq, b.producer_id, e.error
                                ),
                            );
                            send::<ProduceResponse>(resp, Err(e));
                        }
                    },
                    0,
                );
            });
    }

    /// Checks a batch whose region bytes are `bytes`, and queues it for the committer.
    fn store_batch(
        self: &Arc<Self>,
        b: ProduceBatch,
        bytes: Bytes,
        p: Arc<Partition>,
        resp: Resp,
        need: u64,
    ) {
        let payload = match check_batch(&b, &bytes) {
            Ok(x) => x,
            Err(e) => {
                self.shared.inflight_bytes.fetch_sub(need, Ordering::AcqRel);
                p.abort(b.producer_id, b.seq, &self.commit_ctx());
                return send::<ProduceResponse>(resp, Err(e));
            }
        };
        let me = self.clone();
        let count = b.count;
        let reply = Box::new(move |r: Result<u64, ProtoError>| {
            me.shared.inflight_bytes.fetch_sub(need, Ordering::AcqRel);
            if r.is_ok() {
                me.shared.stats.batches.fetch_add(1, Ordering::Relaxed);
                me.shared
                    .stats
                    .events
                    .fetch_add(count as u64, Ordering::Relaxed);
            }
            send(
                resp,
                r.map(|first_id| ProduceResponse {
                    first_id,
                    count,
                    credits: me.shared.limits.credits,
                }),
            );
        });
        p.submit(
            Ready {
                producer: b.producer_id,
                seq: b.seq,
                payload,
                reply,
            },
            &self.commit_ctx(),
        );
    }

    /// Where the partitions' committers run and schedule deadlines.
    fn commit_ctx(&self) -> CommitCtx {
        CommitCtx {
            pool: self.shared.io.clone(),
            timers: self.shared.timers.handle(),
        }
    }

    fn fetch(self: &Arc<Self>, req: Request, resp: Resp) {
        let f: Fetch = match self.decode(&req.body) {
            Ok(f) => f,
            Err(e) => return send::<FetchResponse>(resp, Err(e)),
        };
        let (t, p) = match self.partition(&f.topic, f.partition) {
            Ok(x) => x,
            Err(e) => return send::<FetchResponse>(resp, Err(e)),
        };
        let me = self.clone();
        let io = self.shared.io.clone();
        io.push_work(move || me.serve_fetch(f, t, p, req.peer, resp, true), 0);
    }

    fn serve_fetch(
        self: &Arc<Self>,
        mut f: Fetch,
        t: Arc<Topic>,
        p: Arc<Partition>,
        peer: Peer,
        resp: Resp,
        may_wait: bool,
    ) {
        if f.flags & FROM_COMMITTED != 0 {
            match t.position(&f.consumer, p.index) {
                Ok(pos) => f.from_id = pos,
                Err(e) => return send::<FetchResponse>(resp, Err(e)),
            }
            f.flags &= !FROM_COMMITTED;
        }
        let count = p.count();
        if f.from_id >= count {
            let complete = t.is_complete();
            let stopping = self.shared.stopping.load(Ordering::Acquire);
            if !complete && !stopping && may_wait && f.wait_ms > 0 {
                let id = self.shared.next_waiter.fetch_add(1, Ordering::Relaxed);
                let at = Instant::now() + Duration::from_millis(f.wait_ms as u64);
                let session = resp.session();
                if !self.polls.note(session, id, p.clone()) {
                    // The session ended while this fetch was on its way: nobody is waiting.
                    return self.count_released();
                }
                let me = self.clone();
                let (t2, p2) = (t.clone(), p.clone());
                let from = f.from_id;
                let job: Box<dyn FnOnce() + Send> = Box::new(move || {
                    me.polls.done(session, id);
                    let io = me.shared.io.clone();
                    io.push_work(move || me.serve_fetch(f, t2, p2, peer, resp, false), 0);
                });
                match p.wait_for(from, id, job) {
                    None => {
                        if self.polls.ended(session) {
                            // Ended between the note and the park: `session_ended` may have
                            // missed it.
                            self.polls.done(session, id);
                            return self.release(&p, id);
                        }
                        self.shared.timers.add(at, id, p)
                    }
                    Some(job) => job(),
                }
                return;
            }
            self.shared.stats.fetches.fetch_add(1, Ordering::Relaxed);
            let flags = if complete && f.from_id >= count {
                END_OF_STREAM
            } else {
                0
            };
            return send(
                resp,
                Ok(FetchResponse {
                    first_id: f.from_id,
                    count: 0,
                    flags,
                    meta_len: 0,
                    data_len: 0,
                    table: Some(Vec::new()),
                }),
            );
        }
        match self.read_batch(&f, &t, &p) {
            Ok((r, None)) => {
                self.shared.stats.fetches.fetch_add(1, Ordering::Relaxed);
                send(resp, Ok(r))
            }
            Ok((r, Some((buf, len)))) => {
                let regions = match slice_regions(&f.landing, len as u64) {
                    Some(x) => x,
                    None => {
                        self.pool.put(buf);
                        let e = ProtoError::new(
                            Status::Internal,
                            "landing regions shorter than computed",
                        );
                        return send::<FetchResponse>(resp, Err(e));
                    }
                };
                let me = self.clone();
                self.handle
                    .write(&peer, buf, regions, Some(BULK_TIMEOUT))
                    .on_complete(move |w| match w {
                        Ok(buf) => {
                            me.pool.put(buf);
                            me.shared.stats.fetches.fetch_add(1, Ordering::Relaxed);
                            send(resp, Ok(r));
                        }
                        Err(e) => {
                            if let Some(buf) = e.buffer {
                                me.pool.put(buf);
                            }
                            let e = ProtoError::new(
                                Status::Transfer,
                                format!("cannot write the landing region: {}", e.error),
                            );
                            send::<FetchResponse>(resp, Err(e));
                        }
                    });
            }
            Err(e) => send::<FetchResponse>(resp, Err(e)),
        }
    }

    /// Reads the events a fetch returns; the buffer (and its used length) when something
    /// goes to the landing regions.
    #[allow(clippy::type_complexity)]
    fn read_batch(
        &self,
        f: &Fetch,
        t: &Topic,
        p: &Partition,
    ) -> Result<(FetchResponse, Option<(diaspora_rpc::Buffer, usize)>), ProtoError> {
        let storage =
            |e: diaspora_driver_files::FilesError| ProtoError::new(Status::Storage, e.to_string());
        let limits = &self.shared.limits;
        let recs = p
            .log
            .read_records(f.from_id, f.max_events as usize)
            .map_err(storage)?;
        let want_data = f.flags & WANT_DATA != 0;
        let landing = total_len(&f.landing);
        let max_inline = limits.max_inline as u64;
        let (mut n, mut table, mut data) = (0usize, 0u64, 0u64);
        let mut prev: Option<&diaspora_driver_files::format::IndexRecord> = None;
        for r in &recs {
            // A batch is read with one read per file: stop where the bytes are not
            // contiguous (after a crash the log resumes after a gap).
            if let Some(q) = prev {
                if r.meta_offset != q.meta_end() || (want_data && r.data_offset != q.data_end()) {
                    break;
                }
            }
            prev = Some(r);
            let t2 = table + PER_EVENT as u64 + r.meta_len as u64;
            let d2 = data + if want_data { r.data_len } else { 0 };
            let in_landing =
                (if t2 <= max_inline { 0 } else { t2 }) + if want_data { d2 } else { 0 };
            let fits = in_landing <= landing
                && t2 + d2 <= f.max_bytes.max(1)
                && r.data_len <= u32::MAX as u64;
            if !fits {
                if n == 0 {
                    return Err(ProtoError::with_detail(
                        Status::LandingTooSmall,
                        in_landing.max(t2 + d2),
                        format!(
                            "event {} needs {} bytes (landing has {landing}, max_bytes {})",
                            f.from_id,
                            in_landing.max(t2 + d2),
                            f.max_bytes
                        ),
                    ));
                }
                break;
            }
            n += 1;
            table = t2;
            data = d2;
        }
        let recs = &recs[..n];
        let (first, last) = (&recs[0], &recs[n - 1]);
        if want_data && last.data_end() != first.data_offset + data {
            return Err(ProtoError::new(
                Status::Storage,
                format!(
                    "the data of events {}..={} is not contiguous",
                    f.from_id,
                    f.from_id + n as u64 - 1
                ),
            ));
        }
        let meta = p.log.read_meta_span(first, last).map_err(storage)?;
        let mut bt = BatchTable::default();
        let mut at = 0usize;
        for r in recs {
            let m = meta.get(at..at + r.meta_len as usize).ok_or_else(|| {
                ProtoError::new(Status::Storage, "metadata span shorter than its records")
            })?;
            at += r.meta_len as usize;
            bt.push(m, r.data_len as u32, r.data_crc);
        }
        let count = p.count();
        let eos = t.is_complete() && f.from_id + n as u64 >= count;
        let table_inline = table <= max_inline;
        let mut flags = if eos { END_OF_STREAM } else { 0 };
        let mut out_len = 0usize;
        if !table_inline {
            flags |= TABLE_IN_LANDING;
            out_len += table as usize;
        }
        if want_data {
            flags |= DATA_IN_LANDING;
            out_len += data as usize;
        }
        let mut resp = FetchResponse {
            first_id: f.from_id,
            count: n as u32,
            flags,
            meta_len: bt.meta.len() as u64,
            data_len: bt.data_len(),
            table: None,
        };
        if table_inline {
            let mut v = Vec::with_capacity(table as usize);
            bt.encode_into(&mut v);
            resp.table = Some(v);
        }
        if out_len == 0 {
            return Ok((resp, None));
        }
        let mut buf = self.pool.get(out_len).map_err(|e| {
            ProtoError::new(
                Status::Internal,
                format!("cannot register {out_len} bytes: {e}"),
            )
        })?;
        let dst = buf.as_mut_slice();
        let mut at = 0usize;
        if !table_inline {
            let mut v = Vec::with_capacity(table as usize);
            bt.encode_into(&mut v);
            dst[..v.len()].copy_from_slice(&v);
            at = v.len();
        }
        if want_data && data > 0 {
            p.log
                .read_data_into(first, 0, &mut dst[at..at + data as usize])
                .map_err(storage)?;
        }
        Ok((resp, Some((buf, out_len))))
    }

    fn fetch_data(self: &Arc<Self>, req: Request, resp: Resp) {
        let f: FetchData = match self.decode(&req.body) {
            Ok(f) => f,
            Err(e) => return send::<FetchDataResponse>(resp, Err(e)),
        };
        let (_t, p) = match self.partition(&f.topic, f.partition) {
            Ok(x) => x,
            Err(e) => return send::<FetchDataResponse>(resp, Err(e)),
        };
        let me = self.clone();
        let io = self.shared.io.clone();
        io.push_work(
            move || {
                let r = me.read_ranges(&f, &p);
                match r {
                    Err(e) => send::<FetchDataResponse>(resp, Err(e)),
                    Ok((buf, total)) => {
                        let Some(regions) = slice_regions(&f.landing, total) else {
                            me.pool.put(buf);
                            let e = ProtoError::new(
                                Status::LandingTooSmall,
                                "the landing regions are shorter than the ranges",
                            );
                            return send::<FetchDataResponse>(resp, Err(e));
                        };
                        if total == 0 {
                            me.pool.put(buf);
                            return send(resp, Ok(FetchDataResponse { total }));
                        }
                        let me2 = me.clone();
                        me.handle
                            .write(&req.peer, buf, regions, Some(BULK_TIMEOUT))
                            .on_complete(move |w| match w {
                                Ok(buf) => {
                                    me2.pool.put(buf);
                                    send(resp, Ok(FetchDataResponse { total }));
                                }
                                Err(e) => {
                                    let e = ProtoError::new(
                                        Status::Transfer,
                                        format!("cannot write the landing region: {}", e.error),
                                    );
                                    send::<FetchDataResponse>(resp, Err(e));
                                }
                            });
                    }
                }
            },
            0,
        );
    }

    fn read_ranges(
        &self,
        f: &FetchData,
        p: &Partition,
    ) -> Result<(diaspora_rpc::Buffer, u64), ProtoError> {
        let storage =
            |e: diaspora_driver_files::FilesError| ProtoError::new(Status::Storage, e.to_string());
        let total = f.ranges.iter().try_fold(0u64, |a, r| a.checked_add(r.len));
        let total = total
            .filter(|&t| t <= self.shared.limits.max_fetch_bytes && t <= total_len(&f.landing))
            .ok_or_else(|| {
                ProtoError::new(
                    Status::TooLarge,
                    "the ranges exceed max_fetch_bytes or the landing regions",
                )
            })?;
        let mut buf = self.pool.get(total.max(1) as usize).map_err(|e| {
            ProtoError::new(
                Status::Internal,
                format!("cannot register {total} bytes: {e}"),
            )
        })?;
        let mut at = 0usize;
        for g in &f.ranges {
            let recs = p.log.read_records(g.id, 1).map_err(storage)?;
            let Some(rec) = recs.first() else {
                return Err(ProtoError::new(
                    Status::BadRequest,
                    format!("event {} is not stored", g.id),
                ));
            };
            if g.offset.checked_add(g.len).is_none_or(|e| e > rec.data_len) {
                return Err(ProtoError::new(
                    Status::BadRequest,
                    format!(
                        "range {}+{} is outside event {}'s {} bytes of data",
                        g.offset, g.len, g.id, rec.data_len
                    ),
                ));
            }
            let l = g.len as usize;
            p.log
                .read_data_into(rec, g.offset, &mut buf.as_mut_slice()[at..at + l])
                .map_err(storage)?;
            at += l;
        }
        Ok((buf, total))
    }

    fn commit(&self, req: &Request) -> Result<CommitResponse, ProtoError> {
        let c: Commit = self.decode(&req.body)?;
        let (t, p) = self.partition(&c.topic, c.partition)?;
        if c.next_id > p.count() {
            return Err(ProtoError::new(
                Status::BadRequest,
                format!(
                    "cannot commit {} in partition {}: it holds {} events",
                    c.next_id,
                    c.partition,
                    p.count()
                ),
            ));
        }
        let next_id = t.commit(&c.consumer, p.index, c.next_id)?;
        Ok(CommitResponse { next_id })
    }

    fn subscribe(&self, req: &Request) -> Result<CommitResponse, ProtoError> {
        let s: Subscribe = self.decode(&req.body)?;
        let (t, p) = self.partition(&s.topic, s.partition)?;
        Ok(CommitResponse {
            next_id: t.position(&s.consumer, p.index)?,
        })
    }
}

/// Checks the batch table and every data CRC; builds the payload the log appends.
pub fn check_batch(b: &ProduceBatch, region: &Bytes) -> Result<BatchPayload, ProtoError> {
    let bad = |m: String| ProtoError::new(Status::BadRequest, m);
    let (table_bytes, data) = match &b.table {
        Some(t) => (Bytes::copy_from_slice(t), region.clone()),
        None => {
            let tl = b.table_len() as usize;
            if region.len() < tl {
                return Err(bad("region shorter than the batch table".into()));
            }
            (region.slice(..tl), region.slice(tl..))
        }
    };
    let t = BatchTableRef::parse(&table_bytes, b.count as usize)
        .map_err(|e| bad(format!("malformed batch table: {e}")))?;
    if t.total_data_len() != b.data_len
        || data.len() as u64 != b.data_len
        || t.meta().len() as u64 != b.meta_len
    {
        return Err(bad("batch table lengths do not match the request".into()));
    }
    let mut payload = BatchPayload {
        meta: t.meta().to_vec(),
        meta_lens: Vec::with_capacity(t.len()),
        data: Vec::with_capacity(t.len()),
        crcs: Vec::with_capacity(t.len()),
    };
    let mut at = 0usize;
    for (i, (m, len, crc)) in t.iter().enumerate() {
        let d = data.slice(at..at + len as usize);
        at += len as usize;
        let got = crc32fast::hash(&d);
        if got != crc {
            return Err(ProtoError::with_detail(
                Status::CrcMismatch,
                i as u64,
                format!(
                    "event {i} of batch {}: data CRC {got:08x}, the producer sent {crc:08x}",
                    b.seq
                ),
            ));
        }
        payload.meta_lens.push(m.len() as u32);
        payload.crcs.push((crc32fast::hash(m), crc));
        payload.data.push(DataView::from(d));
    }
    Ok(payload)
}

/// The prefix of `regions` covering exactly `len` bytes.
pub fn slice_regions(regions: &[RemoteRegion], len: u64) -> Option<Vec<RemoteRegion>> {
    let mut out = Vec::new();
    let mut left = len;
    for r in regions {
        if left == 0 {
            break;
        }
        let take = left.min(r.len());
        out.push(r.slice(0, take)?);
        left -= take;
    }
    (left == 0).then_some(out)
}
