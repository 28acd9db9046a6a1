//! A small blocking client of the protocol, for tests and tools (the real client is the
//! `fabric` driver): reads the group file, connects to every progress thread, authenticates,
//! and sends requests one at a time.

use std::path::Path;
use std::time::Duration;

use diaspora_proto::admin::Empty;
use diaspora_proto::fetch::{DATA_IN_LANDING, TABLE_IN_LANDING, WANT_DATA};
use diaspora_proto::produce::TABLE_IN_REGION;
use diaspora_proto::{
    decode_response, BatchTable, BatchTableRef, Commit, CommitResponse, Fetch, FetchResponse,
    GroupError, GroupFile, Hello, HelloResponse, Limits, Message, Placement, ProduceBatch,
    ProduceResponse, ProtoError, Subscribe, TopicComplete, TopicCreate, TopicExists,
    TopicExistsResponse, TopicList, TopicListResponse, TopicOpen, TopicOpenResponse, WireError,
    PROTOCOL_VERSION,
};
use diaspora_rpc::{Engine, EngineConfig, Peer, RpcError};

/// How long a call may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The group file cannot be read.
    #[error("cannot read group file: {0}")]
    Io(#[from] std::io::Error),
    /// The group file is invalid.
    #[error(transparent)]
    Group(#[from] GroupError),
    /// The transport failed.
    #[error("rpc failed: {0}")]
    Rpc(#[from] RpcError),
    /// The server refused the request.
    #[error("server refused: {0}")]
    Refused(#[from] ProtoError),
    /// The server's answer does not decode.
    #[error("malformed answer: {0}")]
    Wire(#[from] WireError),
    /// A landing region or data check failed on the client.
    #[error("{0}")]
    Check(String),
}

/// A connected client.
pub struct Client {
    engine: Engine,
    /// The group file read at connect.
    pub group: GroupFile,
    peers: Vec<Peer>,
    /// The server's limits (after Hello).
    pub limits: Limits,
    /// The epoch the server answered with.
    pub epoch: u64,
}

/// One fetched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// Its id.
    pub id: u64,
    /// Metadata.
    pub meta: Vec<u8>,
    /// Data (empty unless the fetch asked for data).
    pub data: Vec<u8>,
}

impl Client {
    /// Connects to every thread of every rank of the group file at `path` without Hello;
    /// threads are numbered in group-file order (rank 0's first: thread 0 is rank 0 thread 0).
    pub fn connect_unauthenticated(path: &Path) -> Result<Client, ClientError> {
        let group = GroupFile::parse(&std::fs::read_to_string(path)?)?;
        let mut c = EngineConfig::for_provider(&group.provider);
        c.handler_pool = diaspora_api::ThreadPool::new(1);
        c.thread_name = "diaspora-test-client".into();
        let engine =
            Engine::new(c).map_err(|e| ClientError::Check(format!("client engine: {e}")))?;
        let mut peers = Vec::new();
        for r in &group.ranks {
            for t in 0..r.threads.len() {
                let addr = group.address(r.rank, t as u32)?;
                peers.push(engine.connect(&addr, CALL_TIMEOUT).wait()?);
            }
        }
        Ok(Client {
            engine,
            group,
            peers,
            limits: Limits::default(),
            epoch: 0,
        })
    }

    /// Connects and authenticates with the group file's token.
    pub fn connect(path: &Path) -> Result<Client, ClientError> {
        let mut c = Client::connect_unauthenticated(path)?;
        let token = c.group.token.clone();
        c.hello(&token)?;
        Ok(c)
    }

    /// Sends Hello with `token` to every thread.
    pub fn hello(&mut self, token: &str) -> Result<HelloResponse, ClientError> {
        let mut last = None;
        for t in 0..self.peers.len() {
            let h = Hello {
                version: PROTOCOL_VERSION,
                client_id: 0x7e57,
                token: token.to_owned(),
            };
            // A rank that has not yet learnt the group's token (the group was just formed)
            // answers Throttled: retry within a deadline.
            let deadline = std::time::Instant::now() + CALL_TIMEOUT;
            let r: HelloResponse = loop {
                match self.call(t, &h) {
                    Err(ClientError::Refused(e))
                        if e.status == diaspora_proto::Status::Throttled
                            && std::time::Instant::now() < deadline =>
                    {
                        std::thread::sleep(Duration::from_millis(e.detail.clamp(1, 100)));
                    }
                    other => break other?,
                }
            };
            self.limits = r.limits;
            self.epoch = r.epoch;
            last = Some(r);
        }
        last.ok_or_else(|| ClientError::Check("no threads".into()))
    }

    /// The engine (for registering buffers).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Sends `msg` to `thread` and decodes the answer.
    pub fn call<M: Message, R: Message>(&self, thread: usize, msg: &M) -> Result<R, ClientError> {
        let body = self.call_raw(thread, M::OP.code(), msg.to_vec())?;
        Ok(decode_response::<R>(&body, &self.limits)??)
    }

    /// Like [`call`](Self::call) with another deadline.
    pub fn call_within<M: Message, R: Message>(
        &self,
        thread: usize,
        msg: &M,
        timeout: Duration,
    ) -> Result<R, ClientError> {
        let body = self.call_raw_within(thread, M::OP.code(), msg.to_vec(), timeout)?;
        Ok(decode_response::<R>(&body, &self.limits)??)
    }

    /// Sends raw bytes as op `op` to `thread` without waiting.
    pub fn call_raw_pending(
        &self,
        thread: usize,
        op: u16,
        body: Vec<u8>,
    ) -> diaspora_rpc::Pending<Vec<u8>> {
        let peer = self.peers[thread.min(self.peers.len() - 1)];
        self.engine.call(&peer, op, body, Some(CALL_TIMEOUT))
    }

    /// Sends raw bytes as op `op` to `thread`; returns the raw answer.
    pub fn call_raw(&self, thread: usize, op: u16, body: Vec<u8>) -> Result<Vec<u8>, ClientError> {
        self.call_raw_within(thread, op, body, CALL_TIMEOUT)
    }

    fn call_raw_within(
        &self,
        thread: usize,
        op: u16,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, ClientError> {
        let peer = self
            .peers
            .get(thread)
            .ok_or_else(|| ClientError::Check(format!("no thread {thread}")))?;
        Ok(self.engine.call(peer, op, body, Some(timeout)).wait()?)
    }

    /// Creates a topic.
    pub fn create_topic(&self, name: &str, options: &str) -> Result<(), ClientError> {
        let _: Empty = self.call(
            0,
            &TopicCreate {
                name: name.into(),
                options: options.into(),
            },
        )?;
        Ok(())
    }

    /// Opens a topic.
    pub fn open_topic(&self, name: &str) -> Result<TopicOpenResponse, ClientError> {
        self.call(0, &TopicOpen { name: name.into() })
    }

    /// Whether a topic exists.
    pub fn topic_exists(&self, name: &str) -> Result<bool, ClientError> {
        let r: TopicExistsResponse = self.call(0, &TopicExists { name: name.into() })?;
        Ok(r.exists)
    }

    /// Lists topics (first page).
    pub fn list_topics(&self) -> Result<TopicListResponse, ClientError> {
        self.call(0, &TopicList::default())
    }

    /// Marks a topic complete.
    pub fn complete_topic(&self, name: &str) -> Result<(), ClientError> {
        let _: Empty = self.call(0, &TopicComplete { name: name.into() })?;
        Ok(())
    }

    /// The index (in [`Client::call`]'s numbering: every thread of every rank, in group-file
    /// order) of the thread serving `partition`.
    pub fn owner(&self, placement: &[Placement], partition: u32) -> usize {
        let Some(p) = placement.get(partition as usize) else {
            return 0;
        };
        let before: usize = self
            .group
            .ranks
            .iter()
            .take_while(|r| r.rank < p.rank)
            .map(|r| r.threads.len())
            .sum();
        before + p.thread as usize
    }

    /// Produces one batch: the table inline when it fits, else in the region in front of
    /// the data.
    pub fn produce(
        &self,
        topic: &TopicOpenResponse,
        name: &str,
        partition: u32,
        producer_id: u64,
        seq: u64,
        events: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<ProduceResponse, ClientError> {
        let b = self.produce_request(name, partition, producer_id, seq, events)?;
        let thread = self.owner(&topic.placement, partition);
        let r = self.call(thread, &b.0);
        drop(b.1);
        r
    }

    /// Sends batches `seqs` of `producer` all at once (several in flight on the partition)
    /// and waits for every answer, in seq order.
    pub fn produce_pipelined(
        &self,
        topic: &TopicOpenResponse,
        name: &str,
        partition: u32,
        producer_id: u64,
        seqs: std::ops::Range<u64>,
        events: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<Vec<Result<ProduceResponse, ClientError>>, ClientError> {
        let thread = self.owner(&topic.placement, partition);
        let peer = *self
            .peers
            .get(thread)
            .ok_or_else(|| ClientError::Check(format!("no thread {thread}")))?;
        let mut bufs = Vec::new();
        let mut calls = Vec::new();
        for seq in seqs {
            let (b, buf) = self.produce_request(name, partition, producer_id, seq, events)?;
            bufs.push(buf);
            calls.push((peer, ProduceBatch::OP.code(), b.to_vec()));
        }
        let pending = self.engine.call_batch(calls, Some(CALL_TIMEOUT));
        let out = pending
            .into_iter()
            .map(|p| {
                let body = p.wait()?;
                Ok(decode_response::<ProduceResponse>(&body, &self.limits)??)
            })
            .collect();
        drop(bufs);
        Ok(out)
    }

    /// Builds a produce request and the registered buffer it points to (keep it alive until
    /// the answer).
    #[allow(clippy::type_complexity)]
    pub fn produce_request(
        &self,
        name: &str,
        partition: u32,
        producer_id: u64,
        seq: u64,
        events: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<(ProduceBatch, Option<diaspora_rpc::Buffer>), ClientError> {
        let mut t = BatchTable::default();
        for (m, d) in events {
            t.push(m, d.len() as u32, crc32fast::hash(d));
        }
        let mut table = Vec::new();
        t.encode_into(&mut table);
        let inline = table.len() <= self.limits.max_inline as usize;
        let mut region = Vec::new();
        if !inline {
            region.extend_from_slice(&table);
        }
        for (_, d) in events {
            region.extend_from_slice(d);
        }
        let (regions, buf) = if region.is_empty() {
            (vec![], None)
        } else {
            let mut buf = self.engine.register(region.len())?;
            buf.as_mut_slice()[..region.len()].copy_from_slice(&region);
            let r = buf.remote()?;
            let r = r
                .slice(0, region.len() as u64)
                .ok_or_else(|| ClientError::Check("region slice".into()))?;
            (vec![r], Some(buf))
        };
        let _ = TABLE_IN_REGION;
        Ok((
            ProduceBatch {
                topic: name.into(),
                partition,
                producer_id,
                seq,
                count: events.len() as u32,
                meta_len: t.meta.len() as u64,
                data_len: t.data_len(),
                table: inline.then_some(table),
                regions,
            },
            buf,
        ))
    }

    /// Fetches up to `max_events` from `from` (or from the consumer's committed position when
    /// `from` is None), with the data when `landing` > 0 bytes.
    #[allow(clippy::too_many_arguments)]
    pub fn fetch(
        &self,
        topic: &TopicOpenResponse,
        name: &str,
        partition: u32,
        consumer: &str,
        from: Option<u64>,
        max_events: u32,
        wait_ms: u32,
        landing: usize,
    ) -> Result<(FetchResponse, Vec<Fetched>), ClientError> {
        let buf = if landing > 0 {
            Some(self.engine.register(landing)?)
        } else {
            None
        };
        let regions = match &buf {
            Some(b) => vec![b.remote()?],
            None => vec![],
        };
        let mut flags = if landing > 0 { WANT_DATA } else { 0 };
        if from.is_none() {
            flags |= diaspora_proto::fetch::FROM_COMMITTED;
        }
        let f = Fetch {
            topic: name.into(),
            partition,
            consumer: consumer.into(),
            from_id: from.unwrap_or(0),
            max_events,
            max_bytes: u64::MAX,
            wait_ms,
            flags,
            landing: regions,
        };
        let thread = self.owner(&topic.placement, partition);
        let r: FetchResponse = self.call(thread, &f)?;
        let land = buf.as_ref().map(|b| b.as_slice()).unwrap_or(&[]);
        let mut at = 0usize;
        let table_bytes: Vec<u8> = if r.flags & TABLE_IN_LANDING != 0 {
            let l = r.table_len() as usize;
            at = l;
            land.get(..l)
                .ok_or_else(|| ClientError::Check("table beyond the landing".into()))?
                .to_vec()
        } else {
            r.table.clone().unwrap_or_default()
        };
        let t = BatchTableRef::parse(&table_bytes, r.count as usize)?;
        let mut out = Vec::new();
        for (i, (m, len, crc)) in t.iter().enumerate() {
            let data = if r.flags & DATA_IN_LANDING != 0 {
                let d = land
                    .get(at..at + len as usize)
                    .ok_or_else(|| ClientError::Check("data beyond the landing".into()))?;
                at += len as usize;
                if crc32fast::hash(d) != crc {
                    return Err(ClientError::Check(format!(
                        "event {} data CRC mismatch",
                        r.first_id + i as u64
                    )));
                }
                d.to_vec()
            } else {
                Vec::new()
            };
            out.push(Fetched {
                id: r.first_id + i as u64,
                meta: m.to_vec(),
                data,
            });
        }
        Ok((r, out))
    }

    /// Fetches selected byte ranges of stored events (one RPC for all of them); returns the
    /// bytes, range after range.
    pub fn fetch_data(
        &self,
        topic: &TopicOpenResponse,
        name: &str,
        partition: u32,
        ranges: Vec<diaspora_proto::Range>,
        landing: usize,
    ) -> Result<Vec<u8>, ClientError> {
        let buf = self.engine.register(landing.max(1))?;
        let f = diaspora_proto::FetchData {
            topic: name.into(),
            partition,
            ranges,
            landing: vec![buf.remote()?],
        };
        let thread = self.owner(&topic.placement, partition);
        let r: diaspora_proto::FetchDataResponse = self.call(thread, &f)?;
        let out = buf
            .as_slice()
            .get(..r.total as usize)
            .ok_or_else(|| ClientError::Check("total beyond the landing".into()))?
            .to_vec();
        Ok(out)
    }

    /// Commits a consumer's position.
    pub fn commit(
        &self,
        topic: &TopicOpenResponse,
        name: &str,
        partition: u32,
        consumer: &str,
        next_id: u64,
    ) -> Result<u64, ClientError> {
        let thread = self.owner(&topic.placement, partition);
        let r: CommitResponse = self.call(
            thread,
            &Commit {
                topic: name.into(),
                partition,
                consumer: consumer.into(),
                next_id,
            },
        )?;
        Ok(r.next_id)
    }

    /// A consumer's persisted position.
    pub fn position(
        &self,
        topic: &TopicOpenResponse,
        name: &str,
        partition: u32,
        consumer: &str,
    ) -> Result<u64, ClientError> {
        let thread = self.owner(&topic.placement, partition);
        let r: CommitResponse = self.call(
            thread,
            &Subscribe {
                topic: name.into(),
                partition,
                consumer: consumer.into(),
            },
        )?;
        Ok(r.next_id)
    }
}
