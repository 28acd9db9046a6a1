//! Topics of a server: created, opened and listed in a files-driver root (the same layout
//! and code as the files driver, so `diaspora-ctl topic verify --driver files` works on a
//! server's data directory), or in memory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use diaspora_api::{Error as ApiError, ThreadPool, Value};
use diaspora_driver_files::acks::AckStore;
use diaspora_driver_files::topic::{self, TopicConfig, TopicShared};
use diaspora_proto::{ProtoError, Status};
use parking_lot::Mutex;

use crate::log::{Log, MemLog};
use crate::partition::Partition;
use crate::seqstate::SeqState;

/// Where topics live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    /// A files-driver root (persistent).
    Files,
    /// In memory (for benchmarks; lost at exit).
    Memory,
}

/// One open topic.
pub struct Topic {
    /// Its name.
    pub name: String,
    /// Its configuration (options JSON included).
    pub config: TopicConfig,
    /// Its partitions.
    pub partitions: Vec<Arc<Partition>>,
    complete: AtomicBool,
    shared: Option<Arc<TopicShared>>,
    acks: Mutex<HashMap<String, Arc<AckStore>>>,
    mem_acks: Mutex<HashMap<String, Vec<u64>>>,
}

impl Topic {
    /// The persisted position (next event to process) of `consumer` in `partition`.
    pub fn position(&self, consumer: &str, partition: usize) -> Result<u64, ProtoError> {
        match self.acks(consumer)? {
            Some(a) => Ok(a.next_offsets().get(partition).copied().unwrap_or(0)),
            None => Ok(self
                .mem_acks
                .lock()
                .get(consumer)
                .and_then(|v| v.get(partition).copied())
                .unwrap_or(0)),
        }
    }

    /// Persists that `consumer` processed every event of `partition` before `next`
    /// (monotonic); returns the persisted position.
    pub fn commit(&self, consumer: &str, partition: usize, next: u64) -> Result<u64, ProtoError> {
        match self.acks(consumer)? {
            Some(a) => {
                if next > 0 {
                    a.acknowledge(partition, next - 1)
                        .map_err(|e| ProtoError::new(Status::Storage, e.to_string()))?;
                }
                Ok(a.next_offsets().get(partition).copied().unwrap_or(0))
            }
            None => {
                let mut g = self.mem_acks.lock();
                let v = g
                    .entry(consumer.to_owned())
                    .or_insert_with(|| vec![0; self.partitions.len()]);
                v[partition] = v[partition].max(next);
                Ok(v[partition])
            }
        }
    }

    /// Whether no more events are accepted. With files storage the files driver's
    /// `complete` marker is checked too: topic administration runs on rank 0, so another
    /// rank of the group learns of the completion from the shared data directory.
    pub fn is_complete(&self) -> bool {
        if self.complete.load(Ordering::Acquire) {
            return true;
        }
        match &self.shared {
            Some(s) if s.is_complete() => {
                self.complete.store(true, Ordering::Release);
                true
            }
            _ => false,
        }
    }

    /// The persisted acknowledgements of `consumer` (memory storage: kept in memory).
    pub fn acks(&self, consumer: &str) -> Result<Option<Arc<AckStore>>, ProtoError> {
        check_name(consumer).map_err(|_| {
            ProtoError::new(
                Status::BadRequest,
                format!("{consumer:?} is not a valid consumer name (one path component, not starting with '.')"),
            )
        })?;
        let Some(shared) = &self.shared else {
            return Ok(None);
        };
        let mut g = self.acks.lock();
        if let Some(a) = g.get(consumer) {
            return Ok(Some(a.clone()));
        }
        let n = self.partitions.len();
        let owned: Vec<usize> = (0..n).collect();
        let a = AckStore::load(&shared.ack_path(consumer), n, &owned, self.config.sync)
            .map_err(|e| ProtoError::new(Status::Storage, e.to_string()))?;
        let a = Arc::new(a);
        g.insert(consumer.to_owned(), a.clone());
        Ok(Some(a))
    }
}

/// The topics of one server.
pub struct Store {
    root: PathBuf,
    kind: StorageKind,
    topics: Mutex<HashMap<String, Arc<Topic>>>,
    pool: ThreadPool,
}

fn api_error(e: ApiError) -> ProtoError {
    match e {
        ApiError::TopicNotFound(n) => {
            ProtoError::new(Status::TopicNotFound, format!("no topic {n:?}"))
        }
        ApiError::TopicExists(n) => {
            ProtoError::new(Status::TopicExists, format!("topic {n:?} already exists"))
        }
        ApiError::InvalidOption { .. } => ProtoError::new(Status::InvalidOptions, e.to_string()),
        other => ProtoError::new(Status::Storage, other.to_string()),
    }
}

/// Checks a topic name: a single path component of printable characters.
pub fn check_name(name: &str) -> Result<(), ProtoError> {
    let bad = name.is_empty()
        || name == "."
        || name == ".."
        || name.starts_with('.')
        || name.contains('/')
        || name.chars().any(|c| c.is_control());
    if bad {
        return Err(ProtoError::new(
            Status::BadRequest,
            format!(
                "{name:?} is not a valid topic name (one path component, not starting with '.')"
            ),
        ));
    }
    Ok(())
}

impl Store {
    /// A store over `root` (created if missing, for files storage).
    pub fn new(root: &Path, kind: StorageKind, pool: ThreadPool) -> std::io::Result<Store> {
        if kind == StorageKind::Files {
            std::fs::create_dir_all(root)?;
        }
        Ok(Store {
            root: root.to_owned(),
            kind,
            topics: Mutex::new(HashMap::new()),
            pool,
        })
    }

    /// The storage kind.
    pub fn kind(&self) -> StorageKind {
        self.kind
    }

    /// Creates a topic; options are validated as the files driver validates them.
    pub fn create(&self, name: &str, options: &str) -> Result<(), ProtoError> {
        check_name(name)?;
        let options: Value = serde_json::from_str(options).map_err(|e| {
            ProtoError::new(
                Status::InvalidOptions,
                format!("topic options are not JSON: {e}"),
            )
        })?;
        match self.kind {
            StorageKind::Files => {
                topic::create_topic(&self.root, name, &options).map_err(api_error)
            }
            StorageKind::Memory => {
                let config = TopicConfig::from_options(&options).map_err(api_error)?;
                let mut g = self.topics.lock();
                if g.contains_key(name) {
                    return Err(api_error(ApiError::TopicExists(name.to_owned())));
                }
                let partitions = (0..config.num_partitions)
                    .map(|i| {
                        Arc::new(Partition::new(
                            i,
                            Log::Memory(MemLog::default()),
                            SeqState::in_memory(),
                            0,
                        ))
                    })
                    .collect();
                g.insert(
                    name.to_owned(),
                    Arc::new(Topic {
                        name: name.to_owned(),
                        config,
                        partitions,
                        complete: AtomicBool::new(false),
                        shared: None,
                        acks: Mutex::new(HashMap::new()),
                        mem_acks: Mutex::new(HashMap::new()),
                    }),
                );
                Ok(())
            }
        }
    }

    /// Opens a topic (once; later calls share it).
    pub fn open(&self, name: &str) -> Result<Arc<Topic>, ProtoError> {
        check_name(name)?;
        let mut g = self.topics.lock();
        if let Some(t) = g.get(name) {
            return Ok(t.clone());
        }
        if self.kind == StorageKind::Memory {
            return Err(api_error(ApiError::TopicNotFound(name.to_owned())));
        }
        let shared = TopicShared::open(&self.root, name, self.pool.clone()).map_err(api_error)?;
        let mut partitions = Vec::with_capacity(shared.partitions.len());
        for (i, p) in shared.partitions.iter().enumerate() {
            let count = p
                .count()
                .map_err(|e| ProtoError::new(Status::Storage, e.to_string()))?;
            let seq = SeqState::load(p.dir(), count, shared.config.sync)
                .map_err(|e| ProtoError::new(Status::Storage, e.to_string()))?;
            partitions.push(Arc::new(Partition::new(
                i,
                Log::Files(p.clone()),
                seq,
                count,
            )));
        }
        let t = Arc::new(Topic {
            name: name.to_owned(),
            config: shared.config.clone(),
            partitions,
            complete: AtomicBool::new(shared.is_complete()),
            shared: Some(shared),
            acks: Mutex::new(HashMap::new()),
            mem_acks: Mutex::new(HashMap::new()),
        });
        g.insert(name.to_owned(), t.clone());
        Ok(t)
    }

    /// Whether a topic exists.
    pub fn exists(&self, name: &str) -> bool {
        if check_name(name).is_err() {
            return false;
        }
        match self.kind {
            StorageKind::Files => topic::is_topic_dir(&self.root.join(name)),
            StorageKind::Memory => self.topics.lock().contains_key(name),
        }
    }

    /// Names of every topic, sorted.
    pub fn list(&self) -> Result<Vec<String>, ProtoError> {
        let mut names: Vec<String> = match self.kind {
            StorageKind::Memory => self.topics.lock().keys().cloned().collect(),
            StorageKind::Files => {
                let rd = std::fs::read_dir(&self.root).map_err(|e| {
                    ProtoError::new(
                        Status::Storage,
                        format!("cannot list {}: {e}", self.root.display()),
                    )
                })?;
                rd.filter_map(|e| e.ok())
                    .filter(|e| topic::is_topic_dir(&e.path()))
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect()
            }
        };
        names.sort();
        Ok(names)
    }

    /// Every topic opened so far.
    pub fn open_topics(&self) -> Vec<Arc<Topic>> {
        self.topics.lock().values().cloned().collect()
    }

    /// Marks a topic complete: seals its partitions (files: writes the files driver's
    /// `complete` marker), and wakes its waiting fetches.
    pub fn complete(&self, name: &str) -> Result<Arc<Topic>, ProtoError> {
        let t = self.open(name)?;
        for p in &t.partitions {
            p.drain_commits();
        }
        if let Some(shared) = &t.shared {
            shared
                .mark_complete()
                .map_err(|e| ProtoError::new(Status::Storage, e.to_string()))?;
        }
        t.complete.store(true, Ordering::Release);
        Ok(t)
    }
}
