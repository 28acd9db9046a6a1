//! [`RemoteService`]: the [`Service`] of a real `diaspora-server`, over the rpc engine and the
//! `diaspora-proto` messages.
//!
//! **Discovery and sessions.** The group file gives the provider, the token, the epoch and
//! one address per server progress thread. A request for partition `p` goes to the thread
//! the topic's placement names (admin requests to rank 0 thread 0), through this client's
//! engine `p mod progress_threads`. A connection is the engine's HELLO then a proto `Hello`
//! with the token; a wrong token is refused at once with a clear error. Any session error
//! (transport failure, timeout, unknown session) drops the connection and marks the group
//! file stale: the next request re-reads it, and a new `epoch` (the server restarted, its
//! addresses changed) drops every connection. Producers and consumers then resend (the
//! server deduplicates batches by producer id and sequence number).
//!
//! **Staging.** A batch's table (when it does not fit inline) and its data are copied into
//! one registered staging buffer that the server reads with RDMA; the buffer goes back to a
//! small pool when the server answers, and is dropped (its registration closed, so a late
//! read fails) when the call timed out or the session broke. Fetches give the server a
//! registered landing buffer for the batch table; `FetchData` one for the selected ranges.
//!
//! Connecting blocks, so a request whose connection is not ready is handed to the timer
//! thread: nothing here ever blocks a progress thread.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use diaspora_api::{Error, Value};
use diaspora_proto::admin::Empty;
use diaspora_proto::fetch::{END_OF_STREAM, TABLE_IN_LANDING};
use diaspora_proto::{
    decode_response, BatchTable, BatchTableRef, Commit, CommitResponse, Fetch, FetchDataResponse,
    FetchResponse, GroupFile, Hello, HelloResponse, Limits, Message, Placement, ProduceBatch,
    ProduceResponse, ProtoError, Range, Status, Subscribe, SubscribeResponse, TopicComplete,
    TopicCreate, TopicExists, TopicExistsResponse, TopicList, TopicListResponse, TopicOpen,
    TopicOpenResponse, PROTOCOL_VERSION,
};
use diaspora_rpc::{Buffer, Engine, EngineConfig, Peer, RpcError, WaitStrategy};
use parking_lot::Mutex;

use crate::options::{FabricOptions, WaitOption};
use crate::service::{
    BatchLimits, DataRange, Done, FetchData, FetchRequest, FetchedBatch, FetchedEvent, OutBatch,
    Service, ServiceError, TopicInfo,
};
use crate::timer;

/// Size of a fetch's landing buffer for the batch table.
const LANDING: usize = 4 << 20;
/// Staging buffers are allocated in multiples of this.
const STAGING_GRAIN: usize = 64 << 10;
/// Free staging and landing buffers kept for reuse.
const POOL_KEEP: usize = 16;
/// Most bytes of free buffers kept for reuse (beyond, a returned buffer is released).
const POOL_KEEP_BYTES: usize = 128 << 20;

/// A registered buffer and the generation of the engines that registered it.
type Pooled = (u64, Buffer);

/// What a call keeps alive until its answer: a pooled staging or landing buffer, and the
/// caller's event data registered in place (zero copy) for the server to read.
#[derive(Default)]
struct Kept {
    staging: Option<Pooled>,
    pinned: Vec<Buffer>,
}

impl Kept {
    fn pooled(b: Pooled) -> Kept {
        Kept {
            staging: Some(b),
            pinned: Vec::new(),
        }
    }
}

/// Fetched data owned by a `Bytes`: the first `len` bytes of a pooled landing buffer, given
/// back to the pool when the last slice is dropped.
struct Landed {
    buf: Option<Pooled>,
    len: usize,
    service: std::sync::Weak<RemoteService>,
}

impl AsRef<[u8]> for Landed {
    fn as_ref(&self) -> &[u8] {
        match &self.buf {
            Some((_, b)) => &b.as_slice()[..self.len.min(b.len())],
            None => &[],
        }
    }
}

impl Drop for Landed {
    fn drop(&mut self) {
        if let (Some(b), Some(s)) = (self.buf.take(), self.service.upgrade()) {
            s.give_back(b);
        }
    }
}

/// Event data segments of at least this many bytes are registered in place (no copy into
/// staging) when a batch is sent; smaller ones are copied into one pooled staging buffer.
pub const ZERO_COPY_MIN: usize = 16 * 1024;

/// Why the driver could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteError {
    /// The group file cannot be read.
    #[error("cannot read the group file {path}: {source}")]
    ReadGroup {
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The group file is malformed.
    #[error("group file {path}: {source}")]
    BadGroup {
        /// The file.
        path: String,
        /// What is wrong.
        #[source]
        source: diaspora_proto::GroupError,
    },
    /// The provider asked for is not the servers'.
    #[error("driver.provider is {asked} but the servers of {path} use {group}")]
    Provider {
        /// Asked.
        asked: String,
        /// The group file's.
        group: String,
        /// The file.
        path: String,
    },
    /// An engine could not start.
    #[error("cannot start a {provider} progress thread: {source}")]
    Engine {
        /// Provider.
        provider: String,
        /// Why.
        #[source]
        source: diaspora_rpc::EngineError,
    },
}

/// Starts this client's progress threads.
fn start_engines(options: &FabricOptions, provider: &str) -> Result<Vec<Engine>, RemoteError> {
    let mut engines = Vec::new();
    for i in 0..options.progress_threads {
        let mut c = EngineConfig::for_provider(provider);
        c.wait = options.wait.map(|w| match w {
            WaitOption::Spin => WaitStrategy::Spin,
            WaitOption::Block => WaitStrategy::Block,
            WaitOption::SpinThenBlock => WaitStrategy::SpinThenBlock {
                spindown: Duration::from_millis(10),
            },
        });
        c.thread_name = format!("{PROGRESS_THREAD}{i}");
        c.inline_progress = options.inline_progress;
        // shm names endpoints after the process: opening one right after closing another
        // can fail with EBUSY for a moment (libfabric 1.17), so a failed open is retried.
        let mut tries = 0;
        let engine = loop {
            match Engine::new(c.clone()) {
                Ok(e) => break e,
                Err(_) if tries < 10 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(source) => {
                    return Err(RemoteError::Engine {
                        provider: provider.to_owned(),
                        source,
                    })
                }
            }
        };
        engines.push(engine);
    }
    Ok(engines)
}

fn read_group(path: &Path) -> Result<GroupFile, RemoteError> {
    let text = std::fs::read_to_string(path).map_err(|source| RemoteError::ReadGroup {
        path: path.display().to_string(),
        source,
    })?;
    GroupFile::parse(&text).map_err(|source| RemoteError::BadGroup {
        path: path.display().to_string(),
        source,
    })
}

/// One live session with one server thread through one of our engines.
#[derive(Clone, Copy)]
struct Session {
    peer: Peer,
}

struct Conn {
    group: GroupFile,
    /// Bumped whenever the engines are replaced.
    generation: u64,
    /// The group file must be re-read before the next connection.
    stale: bool,
    limits: Limits,
    sessions: HashMap<(usize, Placement), Session>,
    placements: HashMap<String, Vec<Placement>>,
}

/// The service of a `diaspora-server` group.
pub struct RemoteService {
    options: FabricOptions,
    /// The current progress threads; replaced when the servers restart (an engine that
    /// talked to a dead server may not reach its successor: see the README).
    engines: parking_lot::RwLock<Arc<Vec<Engine>>>,
    /// Engines replaced after a restart, kept until this service drops (answers of their
    /// last calls may still arrive).
    retired: Mutex<Vec<Arc<Vec<Engine>>>>,
    client_id: u64,
    conn: Mutex<Conn>,
    /// Free registered buffers, with the generation of the engines that registered them.
    pool: Mutex<Vec<Pooled>>,
    /// Serializes connection attempts (so a burst of requests opens one session).
    connecting: Mutex<()>,
    /// This service, for callbacks.
    me: std::sync::Weak<RemoteService>,
}

const ADMIN: Placement = Placement { rank: 0, thread: 0 };

fn is_session_error(e: &RpcError) -> bool {
    !matches!(
        e,
        RpcError::ShuttingDown
            | RpcError::ProviderMismatch { .. }
            | RpcError::TooLarge { .. }
            | RpcError::InvalidArgument(_)
    )
}

impl RemoteService {
    /// Reads the group file, starts the progress threads and connects to rank 0 (checking
    /// the token).
    pub fn connect(options: FabricOptions) -> diaspora_api::Result<Arc<RemoteService>> {
        let group = read_group(&options.group_file).map_err(Error::driver)?;
        if let Some(asked) = &options.provider {
            if *asked != group.provider {
                return Err(Error::driver(RemoteError::Provider {
                    asked: asked.clone(),
                    group: group.provider.clone(),
                    path: options.group_file.display().to_string(),
                }));
            }
        }
        let engines = start_engines(&options, &group.provider).map_err(Error::driver)?;
        let service = Arc::new_cyclic(|me| RemoteService {
            me: me.clone(),
            client_id: crate::producer::random_id(),
            engines: parking_lot::RwLock::new(Arc::new(engines)),
            retired: Mutex::new(Vec::new()),
            conn: Mutex::new(Conn {
                generation: 0,
                group,
                stale: false,
                limits: Limits::default(),
                sessions: HashMap::new(),
                placements: HashMap::new(),
            }),
            pool: Mutex::new(Vec::new()),
            connecting: Mutex::new(()),
            options,
        });
        // Fail now, with the reason, when the server is unreachable or the token is wrong.
        service
            .session(0, ADMIN, Instant::now() + service.options.timeout)
            .map_err(ServiceError::into_api)?;
        Ok(service)
    }

    fn server_name(&self, pl: Placement) -> String {
        let conn = self.conn.lock();
        let addr = conn
            .group
            .ranks
            .get(pl.rank as usize)
            .and_then(|r| r.threads.get(pl.thread as usize))
            .map(|t| t.address.chars().take(24).collect::<String>())
            .unwrap_or_default();
        format!(
            "rank {} thread {} ({} {addr}…, group file {})",
            pl.rank,
            pl.thread,
            conn.group.provider,
            self.options.group_file.display()
        )
    }

    fn retryable(&self, pl: Placement, reason: impl std::fmt::Display) -> ServiceError {
        ServiceError::Retryable {
            server: self.server_name(pl),
            reason: reason.to_string(),
        }
    }

    /// Drops the session (and marks the group file stale) after a session error.
    fn session_failed(&self, engine: usize, pl: Placement) {
        let mut conn = self.conn.lock();
        conn.sessions.remove(&(engine, pl));
        conn.stale = true;
    }

    fn cached(&self, engine: usize, pl: Placement) -> Option<Session> {
        self.conn.lock().sessions.get(&(engine, pl)).copied()
    }

    /// The session with `pl` through `engine`, connecting (blocking) if needed.
    fn session(
        &self,
        engine: usize,
        pl: Placement,
        deadline: Instant,
    ) -> Result<Session, ServiceError> {
        if let Some(s) = self.cached(engine, pl) {
            return Ok(s);
        }
        let _one = self.connecting.lock();
        if let Some(s) = self.cached(engine, pl) {
            return Ok(s);
        }
        // Re-read the group file after a session error: a new epoch means new addresses.
        let stale = self.conn.lock().stale;
        if stale {
            match read_group(&self.options.group_file) {
                Ok(g) => {
                    let restarted = g.epoch != self.conn.lock().group.epoch;
                    if restarted {
                        let fresh = start_engines(&self.options, &g.provider)
                            .map_err(|e| self.retryable(pl, e))?;
                        let old = std::mem::replace(&mut *self.engines.write(), Arc::new(fresh));
                        self.retired.lock().push(old);
                        // Dropped once the lock is released (see `buffer`).
                        let old_pool = std::mem::take(&mut *self.pool.lock());
                        drop(old_pool);
                    }
                    let mut conn = self.conn.lock();
                    if restarted {
                        conn.sessions.clear();
                        conn.generation += 1;
                    }
                    conn.group = g;
                    conn.stale = false;
                }
                Err(e) => return Err(self.retryable(pl, e)),
            }
        }
        let (addr, token, epoch) = {
            let conn = self.conn.lock();
            let addr = conn
                .group
                .address(pl.rank, pl.thread)
                .map_err(|e| ServiceError::refused(Error::driver(e)))?;
            let token = self
                .options
                .token
                .clone()
                .unwrap_or_else(|| conn.group.token.clone());
            (addr, token, conn.group.epoch)
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(self.retryable(pl, "deadline passed before connecting"));
        }
        let engines = self.engines();
        let handle = &engines[engine];
        let peer = match handle.connect(&addr, left).wait() {
            Ok(p) => p,
            Err(e) => {
                self.conn.lock().stale = true;
                return Err(self.retryable(pl, format!("cannot connect: {e}")));
            }
        };
        let hello = Hello {
            version: PROTOCOL_VERSION,
            client_id: self.client_id,
            token,
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let body = handle
            .call(
                &peer,
                Hello::OP.code(),
                hello.to_vec(),
                Some(left.max(Duration::from_millis(1))),
            )
            .wait()
            .map_err(|e| {
                self.conn.lock().stale = true;
                self.retryable(pl, format!("hello failed: {e}"))
            })?;
        let limits = Limits::default();
        let resp = match decode_response::<HelloResponse>(&body, &limits) {
            Ok(Ok(r)) => r,
            Ok(Err(e)) if e.status == Status::Unauthorized => {
                return Err(ServiceError::refused(Error::driver(ProtoFailure {
                    server: self.server_name(pl),
                    error: e,
                })))
            }
            Ok(Err(e)) => return Err(self.retryable(pl, e)),
            Err(e) => return Err(self.retryable(pl, format!("malformed hello answer: {e}"))),
        };
        let mut conn = self.conn.lock();
        if resp.epoch != epoch {
            // The file is older than the server that answered: read it again next time.
            conn.stale = true;
        }
        conn.limits = resp.limits;
        let s = Session { peer };
        conn.sessions.insert((engine, pl), s);
        Ok(s)
    }

    /// The longest one attempt of a call may take: a third of the driver's deadline, at
    /// least 250 ms (plus the long poll of fetches, which the server holds on purpose).
    fn attempt_timeout(&self) -> Duration {
        (self.options.timeout / 3).max(Duration::from_millis(250)) + crate::consumer::LONG_POLL
    }

    fn limits(&self) -> Limits {
        self.conn.lock().limits
    }

    fn placement(&self, topic: &str, partition: usize) -> Result<Placement, ServiceError> {
        if let Some(pl) = self
            .conn
            .lock()
            .placements
            .get(topic)
            .and_then(|v| v.get(partition))
        {
            return Ok(*pl);
        }
        self.open_topic(topic)?;
        self.conn
            .lock()
            .placements
            .get(topic)
            .and_then(|v| v.get(partition))
            .copied()
            .ok_or_else(|| {
                ServiceError::refused(Error::InvalidPartition {
                    index: partition,
                    count: 0,
                })
            })
    }

    /// A blocking admin call to rank 0 thread 0.
    fn admin<M: Message, R: Message>(
        &self,
        req: &M,
    ) -> Result<Result<R, ProtoError>, ServiceError> {
        // Retried after session errors (with a fresh session, so a restarted server is
        // found through the group file) until the deadline. A retried TopicCreate whose
        // first attempt was applied answers TopicExists.
        let deadline = Instant::now() + self.options.timeout;
        let body = req.to_vec();
        let mut pause = Duration::from_millis(5);
        loop {
            let attempt = self.session(0, ADMIN, deadline).and_then(|s| {
                let left = deadline.saturating_duration_since(Instant::now());
                let timeout = left
                    .min(self.attempt_timeout())
                    .max(Duration::from_millis(1));
                match self.engines()[0]
                    .call(&s.peer, M::OP.code(), body.clone(), Some(timeout))
                    .wait()
                {
                    Ok(body) => decode_response::<R>(&body, &self.limits())
                        .map_err(|e| self.retryable(ADMIN, format!("malformed answer: {e}"))),
                    Err(e) => {
                        if is_session_error(&e) {
                            self.session_failed(0, ADMIN);
                        }
                        Err(self.rpc_error(ADMIN, e))
                    }
                }
            });
            match attempt {
                Err(ServiceError::Retryable { .. }) if Instant::now() + pause < deadline => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(200));
                }
                other => return other,
            }
        }
    }

    fn rpc_error(&self, pl: Placement, e: RpcError) -> ServiceError {
        if is_session_error(&e) {
            self.retryable(pl, e)
        } else {
            ServiceError::refused(Error::driver(e))
        }
    }

    /// Maps a refusal to the API's error.
    fn refusal(&self, pl: Placement, topic: &str, e: ProtoError) -> ServiceError {
        match e.status {
            s if s.is_retryable() || s == Status::Unauthorized => {
                if s == Status::WrongThread {
                    self.conn.lock().placements.remove(topic);
                }
                if s == Status::Unauthorized {
                    self.conn.lock().sessions.retain(|(_, p), _| *p != pl);
                }
                self.retryable(pl, e)
            }
            Status::OutOfOrder => ServiceError::OutOfOrder {
                server: self.server_name(pl),
                expected: e.detail,
            },
            Status::TopicNotFound => ServiceError::refused(Error::TopicNotFound(topic.into())),
            Status::TopicExists => ServiceError::refused(Error::TopicExists(topic.into())),
            Status::InvalidOptions => ServiceError::refused(Error::option("topic", e.message)),
            Status::Complete => ServiceError::refused(Error::TopicComplete(topic.into())),
            _ => ServiceError::refused(Error::driver(ProtoFailure {
                server: self.server_name(pl),
                error: e,
            })),
        }
    }

    /// A registered buffer of at least `len` bytes, from the pool when one fits.
    fn buffer(&self, engine: usize, len: usize) -> Result<Pooled, RpcError> {
        {
            let generation = self.conn.lock().generation;
            let mut pool = self.pool.lock();
            // Buffers of an older connection are dropped after the lock is released: a drop
            // releases a registration, which must never run under this lock (known issue 14).
            let (keep, stale): (Vec<_>, Vec<_>) =
                pool.drain(..).partition(|(g, _)| *g == generation);
            *pool = keep;
            let found = pool
                .iter()
                .position(|(_, b)| b.len() >= len && b.len() <= len * 4)
                .map(|i| pool.remove(i));
            drop(pool);
            drop(stale);
            if let Some(b) = found {
                return Ok(b);
            }
        }
        let size = len.div_ceil(STAGING_GRAIN).max(1) * STAGING_GRAIN;
        self.engines()[engine]
            .register(size)
            .map(|b| (self.conn.lock().generation, b))
    }

    /// Keeps `b` for reuse within the pool's limits. What is let go is dropped after the pool's
    /// lock is released (a drop releases a registration; see `buffer`).
    fn give_back(&self, b: Pooled) {
        let generation = self.conn.lock().generation;
        if b.0 != generation || b.1.len() > POOL_KEEP_BYTES {
            return drop(b);
        }
        let mut pool = self.pool.lock();
        pool.push(b);
        // Over the limits, the buffers given back longest ago go first.
        let mut kept: usize = pool.iter().map(|(_, x)| x.len()).sum();
        let mut gone = 0;
        while pool.len() - gone > POOL_KEEP || kept > POOL_KEEP_BYTES {
            kept -= pool[gone].1.len();
            gone += 1;
        }
        let evicted: Vec<Pooled> = pool.drain(..gone).collect();
        drop(pool);
        drop(evicted);
    }

    fn engines(&self) -> Arc<Vec<Engine>> {
        self.engines.read().clone()
    }

    /// Runs `f` with the session now if it is open, else on the timer thread after
    /// connecting (connecting blocks; a progress thread must never block).
    fn with_session(
        self: &Arc<Self>,
        engine: usize,
        pl: Placement,
        deadline: Instant,
        f: impl FnOnce(Result<Session, ServiceError>) + Send + 'static,
    ) {
        match self.cached(engine, pl) {
            // Registering a buffer waits for a progress thread: never do it on one.
            Some(s) if !on_progress_thread() => f(Ok(s)),
            _ => {
                let me = self.clone();
                timer::at(Instant::now(), move || f(me.session(engine, pl, deadline)));
            }
        }
    }

    /// An asynchronous call to the owner of a partition: `decode` turns the answer body into
    /// the result; `keep` (a staging or landing buffer) lives until the answer.
    #[allow(clippy::too_many_arguments)]
    fn call_async<T: Send + 'static>(
        self: &Arc<Self>,
        topic: &str,
        partition: usize,
        op: u16,
        body: impl FnOnce(&RemoteService, usize) -> Result<(Vec<u8>, Kept), ServiceError>
            + Send
            + 'static,
        deadline: Instant,
        decode: impl FnOnce(
                &RemoteService,
                Placement,
                Vec<u8>,
                &mut Option<Pooled>,
            ) -> Result<T, ServiceError>
            + Send
            + 'static,
        done: Done<T>,
    ) {
        let pl = match self.placement(topic, partition) {
            Ok(pl) => pl,
            Err(e) => return done(Err(e)),
        };
        let engine = partition % self.options.progress_threads;
        let me = self.clone();
        self.with_session(engine, pl, deadline, move |s| {
            let s = match s {
                Ok(s) => s,
                Err(e) => return done(Err(e)),
            };
            let (body, mut keep) = match body(&me, engine) {
                Ok(b) => b,
                Err(e) => return done(Err(e)),
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return done(Err(me.retryable(pl, "deadline passed")));
            }
            // One attempt gets a part of the deadline, so that a dead session is detected
            // in time to re-read the group file and resend to a restarted server.
            let attempt = left.min(me.attempt_timeout());
            let pending = me.engines()[engine].call(&s.peer, op, body, Some(attempt));
            let me2 = me.clone();
            pending.on_complete(move |r| match r {
                Ok(body) => {
                    // `decode` may take the buffer (zero-copy fetched data keeps it).
                    let mut staging = keep.staging.take();
                    let out = decode(&me2, pl, body, &mut staging);
                    if let Some(b) = staging {
                        me2.give_back(b);
                    }
                    drop(keep.pinned);
                    done(out)
                }
                Err(e) => {
                    // After a timeout or a broken session the server may still touch `keep`:
                    // drop it, which closes its registration.
                    drop(keep);
                    if is_session_error(&e) {
                        me2.session_failed(engine, pl);
                    }
                    done(Err(me2.rpc_error(pl, e)))
                }
            });
        });
    }
}

/// Name prefix of this client's progress threads.
const PROGRESS_THREAD: &str = "diaspora-client-";

/// Whether the calling thread is one of this client's progress threads (answers arrive on
/// them; anything that waits for a progress thread must not run there).
fn on_progress_thread() -> bool {
    std::thread::current()
        .name()
        .is_some_and(|n| n.starts_with(PROGRESS_THREAD))
}

/// A refusal from the server, with its stable status.
#[derive(Debug, thiserror::Error)]
#[error("server {server} refused: {error}")]
pub struct ProtoFailure {
    /// Which server.
    pub server: String,
    /// The status and message.
    pub error: ProtoError,
}

fn decode_or_retry<R: Message>(
    me: &RemoteService,
    pl: Placement,
    body: &[u8],
) -> Result<Result<R, ProtoError>, ServiceError> {
    decode_response::<R>(body, &me.limits())
        .map_err(|e| me.retryable(pl, format!("malformed answer: {e}")))
}

impl Service for RemoteService {
    fn batch_limits(&self) -> BatchLimits {
        let l = self.limits();
        BatchLimits {
            max_events: l.max_batch_events as usize,
            max_bytes: l.max_batch_bytes,
        }
    }

    fn create_topic(&self, name: &str, options: &Value) -> Result<(), ServiceError> {
        let req = TopicCreate {
            name: name.into(),
            options: options.to_string(),
        };
        self.admin::<_, Empty>(&req)?
            .map(|_| ())
            .map_err(|e| self.refusal(ADMIN, name, e))
    }

    fn open_topic(&self, name: &str) -> Result<TopicInfo, ServiceError> {
        let r: TopicOpenResponse = self
            .admin::<_, TopicOpenResponse>(&TopicOpen { name: name.into() })?
            .map_err(|e| self.refusal(ADMIN, name, e))?;
        let options: Value = serde_json::from_str(&r.options).map_err(|e| {
            ServiceError::refused(Error::Corrupted(format!(
                "server sent topic options that are not JSON: {e}"
            )))
        })?;
        let placement: Vec<String> = r
            .placement
            .iter()
            .map(|p| format!("rank {} thread {}", p.rank, p.thread))
            .collect();
        let num_partitions = r.placement.len();
        self.conn
            .lock()
            .placements
            .insert(name.to_owned(), r.placement);
        Ok(TopicInfo {
            name: name.into(),
            options,
            num_partitions,
            placement,
        })
    }

    fn topic_exists(&self, name: &str) -> Result<bool, ServiceError> {
        self.admin::<_, TopicExistsResponse>(&TopicExists { name: name.into() })?
            .map(|r| r.exists)
            .map_err(|e| self.refusal(ADMIN, name, e))
    }

    fn list_topics(&self) -> Result<Vec<String>, ServiceError> {
        let mut names = Vec::new();
        let mut after = String::new();
        loop {
            let r = self
                .admin::<_, TopicListResponse>(&TopicList {
                    after: after.clone(),
                })?
                .map_err(|e| self.refusal(ADMIN, "", e))?;
            let more = r.more && !r.names.is_empty();
            names.extend(r.names);
            if !more {
                break;
            }
            after = names.last().cloned().unwrap_or_default();
        }
        Ok(names)
    }

    fn mark_complete(&self, topic: &TopicInfo) -> Result<(), ServiceError> {
        self.admin::<_, Empty>(&TopicComplete {
            name: topic.name.clone(),
        })?
        .map(|_| ())
        .map_err(|e| self.refusal(ADMIN, &topic.name, e))
    }

    fn is_complete(&self, topic: &TopicInfo) -> Result<bool, ServiceError> {
        self.admin::<_, TopicOpenResponse>(&TopicOpen {
            name: topic.name.clone(),
        })?
        .map(|r| r.complete)
        .map_err(|e| self.refusal(ADMIN, &topic.name, e))
    }

    fn produce(&self, batch: Arc<OutBatch>, done: Done<u64>) {
        // `Service` takes `&self`; the driver always holds the service in an `Arc`.
        let Some(me) = self.arc() else {
            return done(Err(ServiceError::refused(Error::Closed("fabric driver"))));
        };
        let topic = batch.topic.clone();
        let b2 = batch.clone();
        me.call_async(
            &topic.clone(),
            batch.partition,
            diaspora_proto::Op::ProduceBatch.code(),
            move |me, engine| encode_batch(me, engine, &b2),
            batch.deadline,
            move |me, pl, body, _| match decode_or_retry::<ProduceResponse>(me, pl, &body)? {
                Ok(r) => Ok(r.first_id),
                Err(e) if e.status == Status::Duplicate => Ok(e.detail),
                Err(e) => Err(me.refusal(pl, &topic, e)),
            },
            done,
        );
    }

    fn fetch(&self, request: FetchRequest, done: Done<FetchedBatch>) {
        let Some(me) = self.arc() else {
            return done(Err(ServiceError::refused(Error::Closed("fabric driver"))));
        };
        let topic = request.topic.clone();
        let r2 = request.clone();
        me.call_async(
            &topic.clone(),
            request.partition,
            diaspora_proto::Op::Fetch.code(),
            move |me, engine| {
                let limits = me.limits();
                let landing_len = LANDING.min(limits.max_fetch_bytes as usize).max(4096);
                let landing = me
                    .buffer(engine, landing_len)
                    .map_err(|e| ServiceError::refused(Error::driver(e)))?;
                let region = landing
                    .1
                    .remote()
                    .map_err(|e| ServiceError::refused(Error::driver(e)))?;
                let req = Fetch {
                    topic: r2.topic.clone(),
                    partition: r2.partition as u32,
                    consumer: String::new(),
                    from_id: r2.from,
                    max_events: r2.max_events.min(limits.max_fetch_events),
                    max_bytes: r2.max_bytes.min(limits.max_fetch_bytes),
                    wait_ms: r2.wait_ms,
                    flags: if r2.data == FetchData::All {
                        diaspora_proto::fetch::WANT_DATA
                    } else {
                        0
                    },
                    landing: vec![region],
                };
                Ok((req.to_vec(), Kept::pooled(landing)))
            },
            request.deadline,
            move |me, pl, body, landing| {
                let r = match decode_or_retry::<FetchResponse>(me, pl, &body)? {
                    Ok(r) => r,
                    Err(e) => return Err(me.refusal(pl, &topic, e)),
                };
                decode_fetch(me, pl, &r, landing.as_ref().map(|(_, b)| b))
            },
            done,
        );
    }

    fn fetch_data(
        &self,
        topic: &str,
        partition: usize,
        ranges: Vec<DataRange>,
        deadline: Instant,
        done: Done<Bytes>,
    ) {
        let Some(me) = self.arc() else {
            return done(Err(ServiceError::refused(Error::Closed("fabric driver"))));
        };
        let total: u64 = ranges.iter().map(|r| r.len).sum();
        let t = topic.to_owned();
        me.call_async(
            topic,
            partition,
            diaspora_proto::Op::FetchData.code(),
            move |me, engine| {
                let landing = me
                    .buffer(engine, total as usize)
                    .map_err(|e| ServiceError::refused(Error::driver(e)))?;
                let region = landing
                    .1
                    .remote()
                    .map_err(|e| ServiceError::refused(Error::driver(e)))?;
                let region = region.slice(0, total).ok_or_else(|| {
                    ServiceError::refused(Error::Corrupted("landing region too small".into()))
                })?;
                let req = diaspora_proto::FetchData {
                    topic: t.clone(),
                    partition: partition as u32,
                    ranges: ranges
                        .iter()
                        .map(|r| Range {
                            id: r.id,
                            offset: r.offset,
                            len: r.len,
                        })
                        .collect(),
                    landing: vec![region],
                };
                Ok((req.to_vec(), Kept::pooled(landing)))
            },
            deadline,
            move |me, pl, body, landing| {
                let r = match decode_or_retry::<FetchDataResponse>(me, pl, &body)? {
                    Ok(r) => r,
                    Err(e) => return Err(me.refusal(pl, "", e)),
                };
                let len = landing.as_ref().map_or(0, |(_, b)| b.len());
                if landing.is_none() {
                    return Err(me.retryable(pl, "no landing buffer"));
                }
                if r.total != total || total as usize > len {
                    return Err(me.retryable(
                        pl,
                        format!("FetchData wrote {} bytes, {total} were asked", r.total),
                    ));
                }
                // Zero copy: the events' data are slices of the landing buffer, which goes
                // back to the pool when the last of them is dropped.
                Ok(Bytes::from_owner(Landed {
                    buf: landing.take(),
                    len: total as usize,
                    service: me.me.clone(),
                }))
            },
            done,
        );
    }

    fn subscribe(
        &self,
        topic: &str,
        consumer: &str,
        partition: usize,
    ) -> Result<u64, ServiceError> {
        let deadline = Instant::now() + self.options.timeout;
        let req = Subscribe {
            topic: topic.into(),
            partition: partition as u32,
            consumer: consumer.into(),
        };
        let t = topic.to_owned();
        crate::consumer::block_on(deadline, |done| {
            let Some(me) = self.arc() else {
                return done(Err(ServiceError::refused(Error::Closed("fabric driver"))));
            };
            me.call_async(
                topic,
                partition,
                diaspora_proto::Op::Subscribe.code(),
                move |_, _| Ok((req.to_vec(), Kept::default())),
                deadline,
                move |me, pl, body, _| match decode_or_retry::<SubscribeResponse>(me, pl, &body)? {
                    Ok(r) => Ok(r.next_id),
                    Err(e) => Err(me.refusal(pl, &t, e)),
                },
                done,
            )
        })
    }

    fn commit(
        &self,
        topic: &str,
        consumer: &str,
        partition: usize,
        next: u64,
        deadline: Instant,
        done: Done<()>,
    ) {
        let Some(me) = self.arc() else {
            return done(Err(ServiceError::refused(Error::Closed("fabric driver"))));
        };
        let req = Commit {
            topic: topic.into(),
            partition: partition as u32,
            consumer: consumer.into(),
            next_id: next,
        };
        let t = topic.to_owned();
        me.call_async(
            topic,
            partition,
            diaspora_proto::Op::Commit.code(),
            move |_, _| Ok((req.to_vec(), Kept::default())),
            deadline,
            move |me, pl, body, _| match decode_or_retry::<CommitResponse>(me, pl, &body)? {
                Ok(_) => Ok(()),
                Err(e) => Err(me.refusal(pl, &t, e)),
            },
            done,
        );
    }
}

impl RemoteService {
    /// This service as an `Arc` (it is only ever created in one, see [`RemoteService::connect`]).
    fn arc(&self) -> Option<Arc<RemoteService>> {
        self.me.upgrade()
    }
}

impl Drop for RemoteService {
    fn drop(&mut self) {
        // The last reference may go away in an answer's callback, on one of our progress
        // threads: an engine cannot stop (join) its own thread, so let another thread do it.
        if on_progress_thread() {
            let engines = std::mem::take(&mut *self.engines.write());
            let retired = std::mem::take(&mut *self.retired.lock());
            let pool = std::mem::take(&mut *self.pool.lock());
            let _ = std::thread::Builder::new()
                .name("diaspora-client-drop".into())
                .spawn(move || drop((pool, engines, retired)));
        }
    }
}

/// One region of a batch, in the order the server reads them back to back.
enum Piece<'a> {
    /// Bytes `start..end` of the staging buffer.
    Staged(usize, usize),
    /// The caller's segment, registered in place.
    Pinned(&'a bytes::Bytes),
}

/// Encoded size of a remote region at most: 20 bytes and the longest key
/// (`diaspora_fabric::remote::MAX_KEY_LEN`, 32; a test checks they agree).
const REGION_MAX_BYTES: usize = 20 + 32;
/// Regions a request could always carry beside an inline table of `max_inline` bytes (the
/// protocol's first limit); a request never holds more than that table and these regions.
const BASE_REGIONS: usize = 16;

/// Whether a batch's table goes inline and how many regions its request may carry, for a
/// table of `table_len` bytes and `big` segments worth registering in place. The request's
/// table and regions together stay within `max_inline + BASE_REGIONS` regions' bytes, so it
/// fits the eager frame whatever the key length; the table moves into the staging buffer
/// when that lets more segments go zero copy.
fn plan_request(
    table_len: usize,
    big: usize,
    max_inline: usize,
    server_regions: usize,
) -> (bool, usize) {
    let budget = max_inline + BASE_REGIONS * REGION_MAX_BYTES;
    let server = server_regions.max(1);
    let with_table = (budget.saturating_sub(table_len) / REGION_MAX_BYTES).min(server);
    let without = (budget / REGION_MAX_BYTES).min(server);
    // Each pinned segment may cost two regions (the staged run before it and itself), plus one.
    let wanted = 2 * big + 1;
    let inline = table_len <= max_inline && (wanted <= with_table || with_table >= without);
    (inline, if inline { with_table } else { without }.max(1))
}

/// Encodes a `ProduceBatch`: the table (when not inline) and small data are copied into one
/// pooled staging buffer; data segments of at least [`ZERO_COPY_MIN`] bytes are registered in
/// place, as long as the server's `max_regions` allows.
fn encode_batch(
    me: &RemoteService,
    engine: usize,
    b: &OutBatch,
) -> Result<(Vec<u8>, Kept), ServiceError> {
    let limits = me.limits();
    let mut table = BatchTable::default();
    let mut at = 0usize;
    for (i, &len) in b.meta_lens.iter().enumerate() {
        let data_len = u32::try_from(b.data[i].len()).map_err(|_| {
            ServiceError::refused(Error::ValidationFailed(format!(
                "event data of {} bytes exceeds the protocol's 4 GiB limit",
                b.data[i].len()
            )))
        })?;
        table.push(&b.meta[at..at + len as usize], data_len, b.data_crcs[i]);
        at += len as usize;
    }
    let mut encoded = Vec::with_capacity(table.encoded_len());
    table.encode_into(&mut encoded);
    let data_len = b.data_bytes();
    let big = b
        .data
        .iter()
        .flat_map(|d| d.segments())
        .filter(|s| s.len() >= ZERO_COPY_MIN)
        .count();
    let (inline, max_regions) = plan_request(
        encoded.len(),
        big,
        limits.max_inline as usize,
        limits.max_regions as usize,
    );
    // Plan the regions: staged runs and pinned segments, in byte order.
    let mut pieces: Vec<Piece> = Vec::new();
    let mut staged = 0usize;
    let mut run_start = 0usize;
    if !inline {
        staged = encoded.len();
    }
    for d in &b.data {
        for seg in d.segments() {
            // Taking this segment costs at most two regions (the run before it and itself),
            // and one more may follow it.
            if seg.len() >= ZERO_COPY_MIN && pieces.len() + 3 <= max_regions {
                if staged > run_start {
                    pieces.push(Piece::Staged(run_start, staged));
                }
                pieces.push(Piece::Pinned(seg));
                run_start = staged;
            } else {
                staged += seg.len();
            }
        }
    }
    if staged > run_start {
        pieces.push(Piece::Staged(run_start, staged));
    }
    let mut kept = Kept::default();
    let driver = |e| ServiceError::refused(Error::driver(e));
    if staged > 0 {
        let mut staging = me.buffer(engine, staged).map_err(driver)?;
        let out = staging.1.as_mut_slice();
        let mut pos = 0;
        if !inline {
            out[..encoded.len()].copy_from_slice(&encoded);
            pos = encoded.len();
        }
        for d in &b.data {
            for s in d.segments() {
                if s.len() >= ZERO_COPY_MIN
                    && pieces
                        .iter()
                        .any(|p| matches!(p, Piece::Pinned(x) if std::ptr::eq(*x, s)))
                {
                    continue;
                }
                out[pos..pos + s.len()].copy_from_slice(s);
                pos += s.len();
            }
        }
        kept.staging = Some(staging);
    }
    let mut regions = Vec::with_capacity(pieces.len());
    for p in &pieces {
        let region = match p {
            Piece::Staged(start, end) => kept
                .staging
                .as_ref()
                .ok_or_else(|| ServiceError::refused(Error::Corrupted("no staging".into())))?
                .1
                .remote()
                .map_err(driver)?
                .slice(*start as u64, (*end - *start) as u64),
            Piece::Pinned(seg) => {
                let buf = me.engines()[engine]
                    .register_bytes((*seg).clone())
                    .map_err(driver)?;
                let r = buf.remote().map_err(driver)?.slice(0, seg.len() as u64);
                kept.pinned.push(buf);
                r
            }
        };
        regions.push(
            region.ok_or_else(|| {
                ServiceError::refused(Error::Corrupted("staging too small".into()))
            })?,
        );
    }
    let req = ProduceBatch {
        topic: b.topic.clone(),
        partition: b.partition as u32,
        producer_id: b.producer_id,
        seq: b.seq,
        count: b.len() as u32,
        meta_len: b.meta.len() as u64,
        data_len,
        table: inline.then_some(encoded),
        regions,
    };
    Ok((req.to_vec(), kept))
}

/// Turns a fetch answer into events (the table inline or in the landing buffer).
fn decode_fetch(
    me: &RemoteService,
    pl: Placement,
    r: &FetchResponse,
    landing: Option<&Buffer>,
) -> Result<FetchedBatch, ServiceError> {
    let table_len = r.table_len() as usize;
    let bytes: Bytes = if r.flags & TABLE_IN_LANDING != 0 {
        let landing =
            landing.ok_or_else(|| me.retryable(pl, "table in landing, but no landing"))?;
        let slice = landing
            .as_slice()
            .get(..table_len)
            .ok_or_else(|| me.retryable(pl, "table larger than the landing buffer"))?;
        Bytes::copy_from_slice(slice)
    } else {
        Bytes::from(r.table.clone().unwrap_or_default())
    };
    let t = BatchTableRef::parse(&bytes, r.count as usize)
        .map_err(|e| me.retryable(pl, format!("malformed batch table: {e}")))?;
    if t.total_data_len() != r.data_len {
        return Err(me.retryable(
            pl,
            format!(
                "fetch answer says {} data bytes, its table {}",
                r.data_len,
                t.total_data_len()
            ),
        ));
    }
    let meta = bytes.slice(bytes.len() - t.meta().len()..);
    let mut at = 0usize;
    let events = (0..t.len())
        .map(|i| {
            let len = t.meta_len(i) as usize;
            let e = FetchedEvent {
                meta: meta.slice(at..at + len),
                data_len: u64::from(t.data_len(i)),
                data_crc: t.data_crc(i),
                data: None,
            };
            at += len;
            e
        })
        .collect();
    Ok(FetchedBatch {
        first_id: r.first_id,
        events,
        end_of_partition: r.flags & END_OF_STREAM != 0,
    })
}

#[cfg(test)]
mod plan_tests {
    use super::{plan_request, BASE_REGIONS, REGION_MAX_BYTES};

    const INLINE: usize = 6 * 1024;

    #[test]
    fn the_longest_region_is_the_fabric_layers() {
        assert_eq!(REGION_MAX_BYTES, 20 + diaspora_fabric::remote::MAX_KEY_LEN);
    }

    /// Bytes of a request's table (if inline) and regions, at the longest key.
    fn request_bytes(table_len: usize, inline: bool, regions: usize) -> usize {
        (if inline { table_len } else { 0 }) + regions * REGION_MAX_BYTES
    }

    #[test]
    fn the_old_limit_of_16_regions_plans_as_before() {
        // A full inline table with a server of 16 regions: inline, 16 regions.
        assert_eq!(plan_request(INLINE, 100, INLINE, 16), (true, 16));
        assert_eq!(plan_request(100, 0, INLINE, 16), (true, 16));
        // A table too large to go inline.
        assert_eq!(plan_request(INLINE + 1, 0, INLINE, 16), (false, 16));
    }

    #[test]
    fn a_table_moves_out_of_line_when_that_lets_the_big_segments_go_zero_copy() {
        // 128 events of 64 KiB with 30-byte metadata: a 5.4 KiB table.
        let table = 128 * 42;
        let (inline, regions) = plan_request(table, 128, INLINE, 256);
        assert!(!inline);
        assert!(regions > 128, "{regions}");
        // Few big segments: the table stays inline.
        let (inline, regions) = plan_request(table, 4, INLINE, 256);
        assert!(inline && regions >= 9, "{inline} {regions}");
    }

    #[test]
    fn a_request_never_carries_more_than_the_first_protocol_allowed() {
        let most = INLINE + BASE_REGIONS * REGION_MAX_BYTES;
        for table in [0, 1, 100, 2_000, INLINE - 1, INLINE, INLINE + 1, 100_000] {
            for big in [0, 1, 7, 16, 100, 128, 1_000] {
                for server in [0, 1, 3, 16, 64, 256, 100_000] {
                    let (inline, regions) = plan_request(table, big, INLINE, server);
                    assert!(regions >= 1 && regions <= server.max(1));
                    assert!(!inline || table <= INLINE);
                    assert!(
                        request_bytes(table, inline, regions) <= most,
                        "table {table} big {big} server {server}: {inline} {regions}"
                    );
                }
            }
        }
    }
}
