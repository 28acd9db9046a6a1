//! An in-memory [`Service`] with the server's semantics (sequence numbers and deduplication,
//! long-poll fetches, completion, persisted consumer positions), answering on its own
//! "progress" thread like the rpc engine does. It checks the driver's logic without a
//! network; `fail_next` injects retryable failures (a broken session) to exercise retries.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use diaspora_api::{Error, Value};
use diaspora_driver_fabric::service::{
    BatchLimits, DataRange, Done, FetchData, FetchRequest, FetchedBatch, FetchedEvent, OutBatch,
    Service, ServiceError, TopicInfo,
};
use parking_lot::Mutex;

#[derive(Default)]
struct Partition {
    meta: Vec<Bytes>,
    data: Vec<Bytes>,
    crcs: Vec<u32>,
    /// producer id -> (next expected seq, first ids by seq)
    producers: HashMap<u64, (u64, HashMap<u64, u64>)>,
}

struct Topic {
    options: Value,
    partitions: Vec<Partition>,
    complete: bool,
    /// consumer -> partition -> next
    positions: HashMap<String, BTreeMap<usize, u64>>,
}

#[derive(Default)]
struct Store {
    topics: BTreeMap<String, Topic>,
    /// Retryable failures to inject into the next produce attempts (applied after storing
    /// half of them, to exercise "stored but not answered").
    fail_next: usize,
    produce_attempts: u64,
}

type Job = Box<dyn FnOnce() + Send>;
type Parked = Arc<Mutex<Vec<(FetchRequest, Instant, Done<FetchedBatch>)>>>;

/// The in-memory server.
pub struct MemoryService {
    /// Data bytes asked by `fetch_data` so far (counted when asked, before the answer).
    data_requested: std::sync::atomic::AtomicU64,
    /// Largest batch produced so far: (data bytes, events).
    largest_batch: Mutex<(u64, usize)>,
    store: Arc<Mutex<Store>>,
    jobs: mpsc::Sender<Job>,
    parked: Parked,
}

fn refused(e: Error) -> ServiceError {
    ServiceError::refused(e)
}

impl MemoryService {
    pub fn new() -> Arc<MemoryService> {
        let (tx, rx) = mpsc::channel::<Job>();
        let store = Arc::new(Mutex::new(Store::default()));
        let parked: Parked = Arc::new(Mutex::new(Vec::new()));
        let (s2, p2) = (store.clone(), parked.clone());
        std::thread::Builder::new()
            .name("memory-progress".into())
            .spawn(move || loop {
                match rx.recv_timeout(Duration::from_millis(2)) {
                    Ok(job) => job(),
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        // Answer what is parked, then stop.
                        for (r, _, done) in p2.lock().drain(..) {
                            done(Ok(fetch_now(&s2.lock(), &r)));
                        }
                        return;
                    }
                }
                let now = Instant::now();
                let due: Vec<_> = {
                    let mut parked = p2.lock();
                    let st = s2.lock();
                    let mut due = Vec::new();
                    let mut i = 0;
                    while i < parked.len() {
                        let (r, until, _) = &parked[i];
                        let b = fetch_now(&st, r);
                        if !b.events.is_empty() || b.end_of_partition || *until <= now {
                            let (_, _, done) = parked.swap_remove(i);
                            due.push((done, b));
                        } else {
                            i += 1;
                        }
                    }
                    due
                };
                for (done, b) in due {
                    done(Ok(b));
                }
            })
            .expect("spawn memory progress thread");
        Arc::new(MemoryService {
            data_requested: std::sync::atomic::AtomicU64::new(0),
            largest_batch: Mutex::new((0, 0)),
            store,
            jobs: tx,
            parked,
        })
    }

    /// The next `n` produce attempts store the batch but answer with a retryable error.
    pub fn fail_next_produces(&self, n: usize) {
        self.store.lock().fail_next = n;
    }

    /// A fabric driver on this service and its topic `name` of one partition, created.
    pub fn one_partition_topic(self: &Arc<Self>, name: &str) -> diaspora_api::TopicHandle {
        let driver = diaspora_api::Driver::from_backend(
            "fabric",
            Arc::new(diaspora_driver_fabric::FabricDriver::with_service(
                self.clone(),
                Duration::from_secs(10),
            )),
        );
        driver
            .create_topic(name, serde_json::json!({ "num_partitions": 1 }))
            .expect("create");
        driver.open_topic(name).expect("open")
    }

    /// Data bytes consumers asked for with `FetchData` so far.
    pub fn data_bytes_requested(&self) -> u64 {
        self.data_requested
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The largest batch produced so far: (data bytes, events).
    pub fn largest_batch(&self) -> (u64, usize) {
        *self.largest_batch.lock()
    }

    /// Produce attempts seen so far.
    pub fn produce_attempts(&self) -> u64 {
        self.store.lock().produce_attempts
    }

    /// Events stored in a partition.
    pub fn stored(&self, topic: &str, p: usize) -> Vec<Bytes> {
        self.store.lock().topics[topic].partitions[p].meta.clone()
    }

    fn answer(&self, job: impl FnOnce() + Send + 'static) {
        let _ = self.jobs.send(Box::new(job));
    }
}

fn fetch_now(st: &Store, r: &FetchRequest) -> FetchedBatch {
    let Some(t) = st.topics.get(&r.topic) else {
        return FetchedBatch {
            first_id: r.from,
            events: Vec::new(),
            end_of_partition: false,
        };
    };
    let p = &t.partitions[r.partition];
    let from = r.from as usize;
    let end = p.meta.len().min(from + r.max_events as usize);
    let events = (from..end.max(from))
        .map(|i| FetchedEvent {
            meta: p.meta[i].clone(),
            data_len: p.data[i].len() as u64,
            data_crc: p.crcs[i],
            data: (r.data == FetchData::All).then(|| p.data[i].clone()),
        })
        .collect::<Vec<_>>();
    FetchedBatch {
        first_id: r.from,
        end_of_partition: t.complete && from + events.len() >= p.meta.len(),
        events,
    }
}

impl Service for MemoryService {
    fn batch_limits(&self) -> BatchLimits {
        BatchLimits {
            max_events: 10_000,
            max_bytes: 64 << 20,
        }
    }

    fn create_topic(&self, name: &str, options: &Value) -> Result<(), ServiceError> {
        let cfg =
            diaspora_driver_files::topic::TopicConfig::from_options(options).map_err(refused)?;
        let mut st = self.store.lock();
        if st.topics.contains_key(name) {
            return Err(refused(Error::TopicExists(name.into())));
        }
        st.topics.insert(
            name.into(),
            Topic {
                partitions: (0..cfg.num_partitions)
                    .map(|_| Partition::default())
                    .collect(),
                options: cfg.options,
                complete: false,
                positions: HashMap::new(),
            },
        );
        Ok(())
    }

    fn open_topic(&self, name: &str) -> Result<TopicInfo, ServiceError> {
        let st = self.store.lock();
        let t = st
            .topics
            .get(name)
            .ok_or_else(|| refused(Error::TopicNotFound(name.into())))?;
        Ok(TopicInfo {
            name: name.into(),
            options: t.options.clone(),
            num_partitions: t.partitions.len(),
            placement: (0..t.partitions.len())
                .map(|p| format!("memory/{p}"))
                .collect(),
        })
    }

    fn topic_exists(&self, name: &str) -> Result<bool, ServiceError> {
        Ok(self.store.lock().topics.contains_key(name))
    }

    fn list_topics(&self) -> Result<Vec<String>, ServiceError> {
        Ok(self.store.lock().topics.keys().cloned().collect())
    }

    fn mark_complete(&self, topic: &TopicInfo) -> Result<(), ServiceError> {
        let mut st = self.store.lock();
        let t = st
            .topics
            .get_mut(&topic.name)
            .ok_or_else(|| refused(Error::TopicNotFound(topic.name.clone())))?;
        t.complete = true;
        Ok(())
    }

    fn is_complete(&self, topic: &TopicInfo) -> Result<bool, ServiceError> {
        let st = self.store.lock();
        Ok(st.topics.get(&topic.name).is_some_and(|t| t.complete))
    }

    fn produce(&self, batch: Arc<OutBatch>, done: Done<u64>) {
        {
            let mut l = self.largest_batch.lock();
            let this = (batch.data_bytes(), batch.len());
            if this.0 > l.0 {
                *l = this;
            }
        }
        let store = self.store.clone();
        self.answer(move || {
            let mut st = store.lock();
            st.produce_attempts += 1;
            let fail = if st.fail_next > 0 {
                st.fail_next -= 1;
                true
            } else {
                false
            };
            let r = (|| {
                let t = st
                    .topics
                    .get_mut(&batch.topic)
                    .ok_or_else(|| refused(Error::TopicNotFound(batch.topic.clone())))?;
                if t.complete {
                    return Err(refused(Error::TopicComplete(batch.topic.clone())));
                }
                let p = &mut t.partitions[batch.partition];
                let (expected, firsts) = p.producers.entry(batch.producer_id).or_default();
                if let Some(&first) = firsts.get(&batch.seq) {
                    return Ok(first);
                }
                if batch.seq != *expected {
                    return Err(ServiceError::OutOfOrder {
                        server: "memory".into(),
                        expected: *expected,
                    });
                }
                let first = p.meta.len() as u64;
                firsts.insert(batch.seq, first);
                *expected += 1;
                let mut at = 0usize;
                for (i, &len) in batch.meta_lens.iter().enumerate() {
                    p.meta
                        .push(Bytes::copy_from_slice(&batch.meta[at..at + len as usize]));
                    at += len as usize;
                    p.data.push(batch.data[i].contiguous());
                    p.crcs.push(batch.data_crcs[i]);
                }
                Ok(first)
            })();
            drop(st);
            if fail {
                done(Err(ServiceError::Retryable {
                    server: "memory".into(),
                    reason: "injected session failure".into(),
                }))
            } else {
                done(r)
            }
        });
    }

    fn fetch(&self, request: FetchRequest, done: Done<FetchedBatch>) {
        let store = self.store.clone();
        let parked = self.parked.clone();
        self.answer(move || {
            let b = fetch_now(&store.lock(), &request);
            if b.events.is_empty() && !b.end_of_partition && request.wait_ms > 0 {
                let until = Instant::now() + Duration::from_millis(request.wait_ms.into());
                parked.lock().push((request, until, done));
            } else {
                done(Ok(b));
            }
        });
    }

    fn fetch_data(
        &self,
        topic: &str,
        partition: usize,
        ranges: Vec<DataRange>,
        _deadline: Instant,
        done: Done<Bytes>,
    ) {
        self.data_requested.fetch_add(
            ranges.iter().map(|r| r.len).sum(),
            std::sync::atomic::Ordering::SeqCst,
        );
        let store = self.store.clone();
        let topic = topic.to_owned();
        self.answer(move || {
            let st = store.lock();
            let p = &st.topics[&topic].partitions[partition];
            let mut out = Vec::new();
            for r in ranges {
                let d = &p.data[r.id as usize];
                out.extend_from_slice(&d[r.offset as usize..(r.offset + r.len) as usize]);
            }
            drop(st);
            done(Ok(Bytes::from(out)));
        });
    }

    fn subscribe(
        &self,
        topic: &str,
        consumer: &str,
        partition: usize,
    ) -> Result<u64, ServiceError> {
        let st = self.store.lock();
        Ok(st
            .topics
            .get(topic)
            .and_then(|t| t.positions.get(consumer))
            .and_then(|m| m.get(&partition))
            .copied()
            .unwrap_or(0))
    }

    fn commit(
        &self,
        topic: &str,
        consumer: &str,
        partition: usize,
        next: u64,
        _deadline: Instant,
        done: Done<()>,
    ) {
        let store = self.store.clone();
        let (topic, consumer) = (topic.to_owned(), consumer.to_owned());
        self.answer(move || {
            let mut st = store.lock();
            if let Some(t) = st.topics.get_mut(&topic) {
                let slot = t
                    .positions
                    .entry(consumer)
                    .or_default()
                    .entry(partition)
                    .or_default();
                *slot = (*slot).max(next);
            }
            drop(st);
            done(Ok(()));
        });
    }
}
