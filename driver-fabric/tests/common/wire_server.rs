//! A stand-in server speaking the real protocol (`diaspora-proto` bodies in rpc frames, RDMA
//! reads of producers' staging buffers, RDMA writes into consumers' landing buffers) over a
//! real libfabric endpoint, storing into [`MemoryService`]. It lets the driver's network half
//! run on `tcp;ofi_rxm` and `shm` without `diaspora-server`; the tests against the real
//! server binary are in `server_process.rs`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use diaspora_api::{Error, ThreadPool};
use diaspora_driver_fabric::service::{
    DataRange, FetchData, FetchRequest, OutBatch, Service, ServiceError, TopicInfo,
};
use diaspora_proto::admin::Empty;
use diaspora_proto::fetch::{END_OF_STREAM, TABLE_IN_LANDING};
use diaspora_proto::{
    encode_error, encode_ok, BatchTable, BatchTableRef, Commit, CommitResponse, Fetch,
    FetchDataResponse, FetchResponse, GroupFile, GroupRank, GroupThread, Hello, HelloResponse,
    Limits, Message, Op, Placement, ProduceBatch, ProduceResponse, ProtoError, Status, Subscribe,
    TopicComplete, TopicCreate, TopicExists, TopicExistsResponse, TopicList, TopicListResponse,
    TopicOpen, TopicOpenResponse, PROTOCOL_VERSION,
};
use diaspora_rpc::{Engine, EngineConfig, Handle, Request};

use super::memory::MemoryService;

pub const TOKEN: &str = "0123456789abcdef0123456789abcdef";

pub struct WireServer {
    pub engine: Engine,
    pub memory: Arc<MemoryService>,
    pub group_file: PathBuf,
}

fn wait<T: Send + 'static>(
    f: impl FnOnce(Box<dyn FnOnce(Result<T, ServiceError>) + Send>),
) -> Result<T, ServiceError> {
    let (tx, rx) = mpsc::sync_channel(1);
    f(Box::new(move |r| {
        let _ = tx.send(r);
    }));
    rx.recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| Err(ServiceError::refused(Error::Closed("memory"))))
}

fn to_proto(e: ServiceError) -> ProtoError {
    match e {
        ServiceError::OutOfOrder { expected, .. } => {
            ProtoError::with_detail(Status::OutOfOrder, expected, "out of order")
        }
        ServiceError::Refused(e) => match e.root() {
            Error::TopicNotFound(_) => ProtoError::new(Status::TopicNotFound, e.to_string()),
            Error::TopicExists(_) => ProtoError::new(Status::TopicExists, e.to_string()),
            Error::TopicComplete(_) => ProtoError::new(Status::Complete, e.to_string()),
            Error::InvalidOption { .. } => ProtoError::new(Status::InvalidOptions, e.to_string()),
            _ => ProtoError::new(Status::Internal, e.to_string()),
        },
        other => ProtoError::new(Status::Transfer, other.to_string()),
    }
}

fn reply<M: Message>(r: Result<M, ProtoError>) -> Vec<u8> {
    match r {
        Ok(m) => encode_ok(&m),
        Err(e) => encode_error(&e),
    }
}

fn info(name: &str) -> TopicInfo {
    TopicInfo {
        name: name.into(),
        options: serde_json::Value::Null,
        num_partitions: 0,
        placement: Vec::new(),
    }
}

impl WireServer {
    pub fn start(provider: &str, dir: &Path) -> WireServer {
        Self::start_with(provider, dir, MemoryService::new(), 1)
    }

    pub fn start_with(
        provider: &str,
        dir: &Path,
        memory: Arc<MemoryService>,
        epoch: u64,
    ) -> WireServer {
        let mut c = EngineConfig::for_provider(provider);
        c.handler_pool = ThreadPool::new(16);
        c.thread_name = "wire-server".into();
        let engine = Engine::new(c).unwrap_or_else(|e| panic!("server engine on {provider}: {e}"));
        let limits = Limits::default();
        let handle = engine.handle();
        for op in Op::ALL {
            let (m, h) = (memory.clone(), handle.clone());
            engine
                .register_handler(op.code(), move |req, resp| {
                    let body = serve(&m, &h, &limits, epoch, req);
                    resp.respond(body);
                })
                .expect("register handler");
        }
        let group = GroupFile {
            version: 1,
            epoch,
            token: TOKEN.into(),
            provider: provider.into(),
            ranks: vec![GroupRank {
                rank: 0,
                host: "localhost".into(),
                pid: std::process::id(),
                threads: vec![GroupThread {
                    core: None,
                    address: engine.address().to_hex(),
                }],
            }],
        };
        let group_file = dir.join("group.json");
        std::fs::write(&group_file, group.to_json()).expect("write group file");
        WireServer {
            engine,
            memory,
            group_file,
        }
    }
}

fn serve(m: &Arc<MemoryService>, h: &Handle, limits: &Limits, epoch: u64, req: Request) -> Vec<u8> {
    let Some(op) = Op::from_code(req.op) else {
        return encode_error(&ProtoError::new(Status::BadRequest, "unknown op"));
    };
    let bad = |e: diaspora_proto::WireError| {
        encode_error(&ProtoError::new(Status::BadRequest, e.to_string()))
    };
    match op {
        Op::Hello => match Hello::decode(&req.body, limits) {
            Err(e) => bad(e),
            Ok(hello) if hello.token != TOKEN => {
                encode_error(&ProtoError::new(Status::Unauthorized, "wrong token"))
            }
            Ok(_) => encode_ok(&HelloResponse {
                version: PROTOCOL_VERSION,
                epoch,
                rank: 0,
                thread: 0,
                limits: *limits,
            }),
        },
        Op::TopicCreate => match TopicCreate::decode(&req.body, limits) {
            Err(e) => bad(e),
            Ok(r) => {
                let options: serde_json::Value =
                    serde_json::from_str(&r.options).unwrap_or(serde_json::Value::Null);
                reply(
                    m.create_topic(&r.name, &options)
                        .map(|_| Empty)
                        .map_err(to_proto),
                )
            }
        },
        Op::TopicOpen => match TopicOpen::decode(&req.body, limits) {
            Err(e) => bad(e),
            Ok(r) => reply(
                m.open_topic(&r.name)
                    .and_then(|t| {
                        let complete = m.is_complete(&t)?;
                        Ok(TopicOpenResponse {
                            options: t.options.to_string(),
                            complete,
                            placement: vec![Placement { rank: 0, thread: 0 }; t.num_partitions],
                        })
                    })
                    .map_err(to_proto),
            ),
        },
        Op::TopicExists => match TopicExists::decode(&req.body, limits) {
            Err(e) => bad(e),
            Ok(r) => reply(
                m.topic_exists(&r.name)
                    .map(|exists| TopicExistsResponse { exists })
                    .map_err(to_proto),
            ),
        },
        Op::TopicList => match TopicList::decode(&req.body, limits) {
            Err(e) => bad(e),
            Ok(r) => reply(
                m.list_topics()
                    .map(|names| TopicListResponse {
                        names: names.into_iter().filter(|n| *n > r.after).collect(),
                        more: false,
                    })
                    .map_err(to_proto),
            ),
        },
        Op::TopicComplete => match TopicComplete::decode(&req.body, limits) {
            Err(e) => bad(e),
            Ok(r) => reply(
                m.mark_complete(&info(&r.name))
                    .map(|_| Empty)
                    .map_err(to_proto),
            ),
        },
        Op::ProduceBatch => match ProduceBatch::decode(&req.body, limits) {
            Err(e) => bad(e),
            Ok(b) => reply(produce(m, h, &req, b)),
        },
        Op::Fetch => match Fetch::decode(&req.body, limits) {
            Err(e) => bad(e),
            Ok(f) => reply(fetch(m, h, &req, limits, f)),
        },
        Op::FetchData => match diaspora_proto::FetchData::decode(&req.body, limits) {
            Err(e) => bad(e),
            Ok(f) => reply(fetch_data(m, h, &req, f)),
        },
        Op::Commit => match Commit::decode(&req.body, limits) {
            Err(e) => bad(e),
            Ok(c) => reply(
                wait(|done| {
                    m.commit(
                        &c.topic,
                        &c.consumer,
                        c.partition as usize,
                        c.next_id,
                        Instant::now(),
                        done,
                    )
                })
                .map(|_| CommitResponse { next_id: c.next_id })
                .map_err(to_proto),
            ),
        },
        Op::Subscribe => match Subscribe::decode(&req.body, limits) {
            Err(e) => bad(e),
            Ok(s) => reply(
                m.subscribe(&s.topic, &s.consumer, s.partition as usize)
                    .map(|next_id| CommitResponse { next_id })
                    .map_err(to_proto),
            ),
        },
    }
}

fn produce(
    m: &Arc<MemoryService>,
    h: &Handle,
    req: &Request,
    b: ProduceBatch,
) -> Result<ProduceResponse, ProtoError> {
    let region_len = b.region_len() as usize;
    let pulled = if region_len > 0 {
        let buf = h
            .register(region_len)
            .map_err(|e| ProtoError::new(Status::Internal, e.to_string()))?;
        let buf = h
            .read(
                &req.peer,
                b.regions.clone(),
                buf,
                Some(Duration::from_secs(10)),
            )
            .wait()
            .map_err(|e| ProtoError::new(Status::Transfer, e.to_string()))?;
        buf.as_slice()[..region_len].to_vec()
    } else {
        Vec::new()
    };
    let (table_bytes, data) = match &b.table {
        Some(t) => (t.clone(), &pulled[..]),
        None => {
            let n = b.table_len() as usize;
            (pulled[..n].to_vec(), &pulled[n..])
        }
    };
    let t = BatchTableRef::parse(&table_bytes, b.count as usize)
        .map_err(|e| ProtoError::new(Status::BadRequest, e.to_string()))?;
    let mut out = OutBatch {
        topic: b.topic.clone(),
        partition: b.partition as usize,
        producer_id: b.producer_id,
        seq: b.seq,
        meta: t.meta().to_vec(),
        meta_lens: Vec::new(),
        data: Vec::new(),
        data_crcs: Vec::new(),
        deadline: Instant::now(),
    };
    let mut at = 0usize;
    for i in 0..t.len() {
        out.meta_lens.push(t.meta_len(i));
        let len = t.data_len(i) as usize;
        let d = bytes::Bytes::copy_from_slice(&data[at..at + len]);
        if crc32fast::hash(&d) != t.data_crc(i) {
            return Err(ProtoError::new(Status::CrcMismatch, "data crc"));
        }
        out.data.push(d.into());
        out.data_crcs.push(t.data_crc(i));
        at += len;
    }
    let count = b.count;
    wait(|done| m.produce(Arc::new(out), done))
        .map(|first_id| ProduceResponse {
            first_id,
            count,
            credits: 8,
        })
        .map_err(to_proto)
}

fn fetch(
    m: &Arc<MemoryService>,
    h: &Handle,
    req: &Request,
    limits: &Limits,
    f: Fetch,
) -> Result<FetchResponse, ProtoError> {
    let landing_len: u64 = f.landing.iter().map(|r| r.len()).sum();
    let b = wait(|done| {
        m.fetch(
            FetchRequest {
                topic: f.topic.clone(),
                partition: f.partition as usize,
                from: f.from_id,
                max_events: f.max_events,
                max_bytes: f.max_bytes,
                wait_ms: f.wait_ms,
                data: FetchData::None,
                deadline: Instant::now(),
            },
            done,
        )
    })
    .map_err(to_proto)?;
    // As many events as fit the landing (or inline).
    let room = if f.landing.is_empty() {
        limits.max_inline as u64
    } else {
        landing_len
    };
    let mut table = BatchTable::default();
    for e in &b.events {
        if (table.encoded_len() + 12 + e.meta.len()) as u64 > room && !table.is_empty() {
            break;
        }
        table.push(&e.meta, e.data_len as u32, e.data_crc);
    }
    let count = table.len();
    let mut encoded = Vec::new();
    table.encode_into(&mut encoded);
    let mut flags = 0;
    if b.end_of_partition && count == b.events.len() {
        flags |= END_OF_STREAM;
    }
    let inline = encoded.len() <= limits.max_inline as usize;
    let table_field = if inline || f.landing.is_empty() {
        Some(encoded)
    } else {
        let mut buf = h
            .register(encoded.len())
            .map_err(|e| ProtoError::new(Status::Internal, e.to_string()))?;
        buf.as_mut_slice()[..encoded.len()].copy_from_slice(&encoded);
        let region = f.landing[0]
            .slice(0, encoded.len() as u64)
            .ok_or_else(|| ProtoError::new(Status::LandingTooSmall, "landing"))?;
        h.write(&req.peer, buf, vec![region], Some(Duration::from_secs(10)))
            .wait()
            .map_err(|e| ProtoError::new(Status::Transfer, e.to_string()))?;
        flags |= TABLE_IN_LANDING;
        None
    };
    Ok(FetchResponse {
        first_id: b.first_id,
        count: count as u32,
        flags,
        meta_len: table.meta.len() as u64,
        data_len: table.data_len(),
        table: table_field,
    })
}

fn fetch_data(
    m: &Arc<MemoryService>,
    h: &Handle,
    req: &Request,
    f: diaspora_proto::FetchData,
) -> Result<FetchDataResponse, ProtoError> {
    let ranges: Vec<DataRange> = f
        .ranges
        .iter()
        .map(|r| DataRange {
            id: r.id,
            offset: r.offset,
            len: r.len,
        })
        .collect();
    let bytes =
        wait(|done| m.fetch_data(&f.topic, f.partition as usize, ranges, Instant::now(), done))
            .map_err(to_proto)?;
    if !bytes.is_empty() {
        let mut buf = h
            .register(bytes.len())
            .map_err(|e| ProtoError::new(Status::Internal, e.to_string()))?;
        buf.as_mut_slice()[..bytes.len()].copy_from_slice(&bytes);
        let region = f.landing[0]
            .slice(0, bytes.len() as u64)
            .ok_or_else(|| ProtoError::new(Status::LandingTooSmall, "landing"))?;
        h.write(&req.peer, buf, vec![region], Some(Duration::from_secs(10)))
            .wait()
            .map_err(|e| ProtoError::new(Status::Transfer, e.to_string()))?;
    }
    Ok(FetchDataResponse {
        total: bytes.len() as u64,
    })
}
