//! A topic: a directory holding its configuration, partitions and consumers' acknowledgements.
//!
//! ```text
//! <root>/<topic>/topic.json          options the topic was created with (with defaults filled);
//!                                    the only configuration the driver reads
//! <root>/<topic>/layout              "2\n": the layout version (absent: layout 1)
//! <root>/<topic>/validator.json      the validator's spec, e.g. {"type":"default"} (written
//! <root>/<topic>/serializer.json     at creation for tools, as upstream names them; never
//! <root>/<topic>/partition-selector.json  read back: topic.json is authoritative)
//! <root>/<topic>/complete            present once the topic is marked complete
//! <root>/<topic>/partitions/00000000/ one directory per partition, 8 decimal digits (see
//!                                    `format`); its `sealed` marker is written first, under
//!                                    the partition's writer lock
//! <root>/<topic>/consumers/<c>.acks  acknowledgements of consumer <c> (see `acks`)
//! ```
//!
//! Layout 1 (every topic written before the layout file existed) names partitions with 5
//! digits (`partitions/00000`) and has no component files; its partition files are the same
//! (same [`crate::format::INDEX_VERSION`]). Both layouts are opened, read, appended to,
//! verified and repaired; new topics are always written in layout 2.
//!
//! A topic is created in a hidden temporary directory renamed into place, so a crash never
//! leaves a half-created topic visible.
//!
//! Marking complete seals every partition (under its writer lock, so no append of any process
//! can succeed afterwards, see [`PartitionLog::seal`]) and only then writes `complete`: a
//! consumer that sees `complete` and then finds nothing new has read everything ever stored.
//! A crash between the two leaves the topic refusing appends but not yet complete; marking it
//! complete again finishes the job.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use diaspora_api::{
    ConsumerBackend, ConsumerOptions, Error, PartitionInfo, ProducerBackend, ProducerOptions,
    Result, ThreadPool, TopicBackend, TopicPolicies, Value,
};
use serde_json::json;

use crate::error::FilesError;
use crate::partition::PartitionLog;

/// Name of the configuration file of a topic.
pub const TOPIC_CONFIG: &str = "topic.json";
/// Name of the layout-version file.
pub const LAYOUT_FILE: &str = "layout";
/// Layout version of the topics this version creates.
pub const LAYOUT_VERSION: u32 = 2;
/// The component files of layout 2: (file name, key in the topic options).
pub const COMPONENT_FILES: [(&str, &str); 3] = [
    ("validator.json", "validator"),
    ("serializer.json", "serializer"),
    ("partition-selector.json", "partition_selector"),
];
/// Name of the completion marker.
pub const COMPLETE_MARKER: &str = "complete";
/// Most partitions a topic may have.
pub const MAX_PARTITIONS: u64 = 65_536;

/// Options of a topic, as stored in `topic.json`.
#[derive(Clone, Debug, PartialEq)]
pub struct TopicConfig {
    /// Number of partitions.
    pub num_partitions: usize,
    /// Whether appends are made durable (fdatasync) before they complete.
    pub sync: bool,
    /// The full options (policies included).
    pub options: Value,
    /// The topic's layout version (1 or 2), see the module documentation; `from_options`
    /// gives [`LAYOUT_VERSION`], [`load_config`] what the topic's `layout` file says.
    pub layout: u32,
}

impl TopicConfig {
    /// Parses and checks topic options; unknown keys are errors, except those holding an
    /// object, which are user metadata kept as given.
    pub fn from_options(options: &Value) -> Result<Self> {
        let empty = serde_json::Map::new();
        let obj = match options {
            Value::Null => &empty,
            Value::Object(o) => o,
            _ => return Err(Error::option("topic", "options must be a JSON object")),
        };
        let mut num_partitions = 1usize;
        let mut sync = false;
        for (k, v) in obj {
            match k.as_str() {
                "num_partitions" => {
                    num_partitions = v
                        .as_u64()
                        .filter(|n| (1..=MAX_PARTITIONS).contains(n))
                        .map(|n| n as usize)
                        .ok_or_else(|| {
                            Error::option(
                                "topic.num_partitions",
                                format!("must be an integer from 1 to {MAX_PARTITIONS}"),
                            )
                        })?;
                }
                "sync" => {
                    sync = v
                        .as_bool()
                        .ok_or_else(|| Error::option("topic.sync", "must be true or false"))?
                }
                "validator" | "partition_selector" | "serializer" => {}
                // User metadata, as upstream allows (`--topic.config.option1 v`): kept in
                // topic.json and shown by `options()`. Unknown scalars are still errors, so a
                // misspelt option (`num_partition: 4`) is caught.
                _ if v.is_object() => {}
                other => {
                    return Err(Error::option(
                        format!("topic.{other}"),
                        "unknown option (known: num_partitions, sync, validator, partition_selector, serializer; an object under any other key is kept as user metadata)",
                    ))
                }
            }
        }
        TopicPolicies::from_options(options)?;
        let mut full = obj.clone();
        full.insert("num_partitions".into(), json!(num_partitions));
        full.insert("sync".into(), json!(sync));
        Ok(TopicConfig {
            num_partitions,
            sync,
            options: Value::Object(full),
            layout: LAYOUT_VERSION,
        })
    }
}

/// Reads and checks the configuration of topic `name` under `root`, opening nothing else.
pub fn load_config(root: &Path, name: &str) -> Result<TopicConfig> {
    let cfg_path = root.join(name).join(TOPIC_CONFIG);
    let text = match fs::read(&cfg_path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::TopicNotFound(name.to_owned()))
        }
        Err(e) => return Err(FilesError::io("read", &cfg_path, e).into()),
    };
    let options: Value = serde_json::from_slice(&text).map_err(|source| {
        Error::from(FilesError::BadConfig {
            path: cfg_path.clone(),
            source,
        })
    })?;
    let mut config = TopicConfig::from_options(&options)?;
    config.layout = read_layout(&root.join(name))?;
    Ok(config)
}

/// Reads a topic's layout version: 1 when the `layout` file is absent.
fn read_layout(topic_dir: &Path) -> Result<u32> {
    let path = topic_dir.join(LAYOUT_FILE);
    match fs::read(&path) {
        Ok(bytes) => match std::str::from_utf8(&bytes).map(str::trim) {
            Ok("2") => Ok(2),
            Ok("1") => Ok(1),
            _ => {
                let shown = &bytes[..bytes.len().min(32)];
                Err(FilesError::BadLayout {
                    path,
                    found: String::from_utf8_lossy(shown).into_owned(),
                }
                .into())
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(1),
        Err(e) => Err(FilesError::io("read", &path, e).into()),
    }
}

/// The spec of a topic component as written in its component file: a name becomes
/// `{"type": name}`, an absent component `{"type": "default"}`.
fn component_spec(options: &Value, key: &str) -> Value {
    match options.get(key) {
        None | Some(Value::Null) => json!({"type": "default"}),
        Some(Value::String(kind)) => json!({ "type": kind }),
        Some(other) => other.clone(),
    }
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The directory of partition `index` in a topic of layout `layout`.
pub fn partition_dir(topic_dir: &Path, layout: u32, index: usize) -> PathBuf {
    let name = if layout == 1 {
        format!("{index:05}")
    } else {
        format!("{index:08}")
    };
    topic_dir.join("partitions").join(name)
}

/// Creates topic `name` under `root`.
pub fn create_topic(root: &Path, name: &str, options: &Value) -> Result<()> {
    let config = TopicConfig::from_options(options)?;
    fs::create_dir_all(root).map_err(|e| Error::from(FilesError::io("mkdir", root, e)))?;
    let target = root.join(name);
    if target.exists() {
        return Err(Error::TopicExists(name.to_owned()));
    }
    let tmp = root.join(format!(
        ".tmp-{name}-{}-{}",
        std::process::id(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let build = || -> std::result::Result<(), FilesError> {
        let mkdir = |p: &Path| fs::create_dir_all(p).map_err(|e| FilesError::io("mkdir", p, e));
        mkdir(&tmp.join("consumers"))?;
        for i in 0..config.num_partitions {
            let dir = partition_dir(&tmp, LAYOUT_VERSION, i);
            mkdir(&dir)?;
            PartitionLog::create(&dir)?;
        }
        let write = |path: PathBuf, bytes: Vec<u8>| {
            fs::write(&path, bytes).map_err(|e| FilesError::io("write", &path, e))
        };
        for (file, key) in COMPONENT_FILES {
            let spec = component_spec(&config.options, key);
            write(
                tmp.join(file),
                serde_json::to_vec_pretty(&spec).unwrap_or_default(),
            )?;
        }
        write(
            tmp.join(LAYOUT_FILE),
            format!("{LAYOUT_VERSION}\n").into_bytes(),
        )?;
        let text = serde_json::to_vec_pretty(&config.options).unwrap_or_default();
        let cfg = tmp.join(TOPIC_CONFIG);
        fs::write(&cfg, text).map_err(|e| FilesError::io("write", &cfg, e))
    };
    if let Err(e) = build() {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e.into());
    }
    // rename(2) onto an existing non-empty directory fails: exactly one creator wins.
    if let Err(e) = fs::rename(&tmp, &target) {
        let _ = fs::remove_dir_all(&tmp);
        return Err(if target.exists() {
            Error::TopicExists(name.to_owned())
        } else {
            Error::io(format!("rename {} into place", tmp.display()), e)
        });
    }
    Ok(())
}

/// Whether `dir` holds a topic.
pub fn is_topic_dir(dir: &Path) -> bool {
    dir.join(TOPIC_CONFIG).is_file()
}

/// State shared by a topic handle and its producers and consumers.
pub struct TopicShared {
    /// Topic name.
    pub name: String,
    /// Topic directory.
    pub dir: PathBuf,
    /// Parsed configuration.
    pub config: TopicConfig,
    /// Policies.
    pub policies: TopicPolicies,
    /// Open partitions.
    pub partitions: Vec<Arc<PartitionLog>>,
    /// Pool producers use when none is given.
    pub default_pool: ThreadPool,
    /// The driver's `flush_behavior`.
    pub flush_behavior: crate::driver::FlushBehavior,
    /// Per partition, what consumers attach to its events ([`diaspora_api::Event::partition_info`]).
    pub partition_infos: Vec<Arc<Value>>,
}

impl TopicShared {
    /// Opens topic `name` under `root` with the default (buffered) flush behaviour.
    pub fn open(root: &Path, name: &str, default_pool: ThreadPool) -> Result<Arc<Self>> {
        Self::open_with(root, name, default_pool, Default::default())
    }

    /// Opens topic `name` under `root`; `immediate` flush behaviour makes it sync every append.
    pub fn open_with(
        root: &Path,
        name: &str,
        default_pool: ThreadPool,
        flush_behavior: crate::driver::FlushBehavior,
    ) -> Result<Arc<Self>> {
        let (dir, mut config) = TopicShared::read_config(root, name)?;
        if flush_behavior == crate::driver::FlushBehavior::Immediate {
            config.sync = true;
        }
        let policies = TopicPolicies::from_options(&config.options)?;
        let partitions = open_partitions(&dir, &config)
            .into_iter()
            .map(|p| p.map(Arc::new))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let partition_infos = (0..config.num_partitions)
            .map(|i| {
                Arc::new(json!({
                    "topic": name,
                    "path": partition_dir(&dir, config.layout, i).display().to_string(),
                }))
            })
            .collect();
        Ok(Arc::new(TopicShared {
            name: name.to_owned(),
            dir,
            config,
            policies,
            partitions,
            default_pool,
            flush_behavior,
            partition_infos,
        }))
    }

    /// Reads and checks the configuration of topic `name` under `root`; returns the topic's
    /// directory and configuration. Changes nothing.
    pub fn read_config(root: &Path, name: &str) -> Result<(PathBuf, TopicConfig)> {
        let dir = root.join(name);
        Ok((dir, load_config(root, name)?))
    }

    /// Path of consumer `name`'s acknowledgement file.
    pub fn ack_path(&self, consumer: &str) -> PathBuf {
        self.dir.join("consumers").join(format!("{consumer}.acks"))
    }

    /// Whether the topic was marked complete.
    pub fn is_complete(&self) -> bool {
        self.dir.join(COMPLETE_MARKER).exists()
    }

    /// Marks the topic complete: seals every partition, then writes the `complete` marker.
    pub fn mark_complete(&self) -> std::result::Result<(), FilesError> {
        for p in &self.partitions {
            p.seal()?;
        }
        let path = self.dir.join(COMPLETE_MARKER);
        let marker = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| FilesError::io("create", &path, e))?;
        marker
            .sync_all()
            .map_err(|e| FilesError::io("sync", &path, e))?;
        fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| FilesError::io("sync", &self.dir, e))
    }
}

/// Opens (checks) each partition of a topic, one result per partition; opening never writes.
pub fn open_partitions(
    dir: &Path,
    config: &TopicConfig,
) -> Vec<std::result::Result<PartitionLog, FilesError>> {
    (0..config.num_partitions)
        .map(|i| PartitionLog::open(&partition_dir(dir, config.layout, i), config.sync))
        .collect()
}

/// The files driver's [`TopicBackend`].
pub struct FilesTopic {
    pub(crate) shared: Arc<TopicShared>,
    /// How its consumers read data (the driver's `consumer_read`).
    pub(crate) consumer_read: crate::driver::ConsumerRead,
}

impl TopicBackend for FilesTopic {
    fn name(&self) -> &str {
        &self.shared.name
    }

    fn options(&self) -> Value {
        self.shared.config.options.clone()
    }

    fn partitions(&self) -> Result<Vec<PartitionInfo>> {
        self.shared
            .partitions
            .iter()
            .enumerate()
            .map(|(index, p)| {
                let (index_bytes, meta_bytes, data_bytes) = p.sizes()?;
                Ok(PartitionInfo {
                    index,
                    info: json!({
                        "path": p.dir().display().to_string(),
                        "num_events": p.count()?,
                        "index_bytes": index_bytes,
                        "metadata_bytes": meta_bytes,
                        "data_bytes": data_bytes,
                    }),
                })
            })
            .collect()
    }

    fn policies(&self) -> &TopicPolicies {
        &self.shared.policies
    }

    fn producer(&self, name: &str, options: ProducerOptions) -> Result<Arc<dyn ProducerBackend>> {
        if self.shared.is_complete() {
            return Err(Error::TopicComplete(self.shared.name.clone()));
        }
        let _ = name; // producers are anonymous in the files driver
        Ok(Arc::new(crate::producer::FilesProducer::new(
            self.shared.clone(),
            options,
        )))
    }

    fn consumer(&self, name: &str, options: ConsumerOptions) -> Result<Arc<dyn ConsumerBackend>> {
        Ok(Arc::new(crate::consumer::FilesConsumer::with_read(
            self.shared.clone(),
            name,
            options,
            self.consumer_read,
        )?))
    }

    fn mark_as_complete(&self) -> Result<()> {
        self.shared.mark_complete().map_err(Into::into)
    }

    fn is_complete(&self) -> Result<bool> {
        Ok(self.shared.is_complete())
    }

    fn supports_buffer_allocator(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Arbitrary JSON documents, biased towards the keys a topic config has.
    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(|f| json!(f)),
            "[a-z_]{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            let key = prop_oneof![
                Just("num_partitions".to_owned()),
                Just("sync".to_owned()),
                Just("validator".to_owned()),
                Just("partition_selector".to_owned()),
                Just("serializer".to_owned()),
                "[a-z_]{1,8}",
            ];
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                proptest::collection::btree_map(key, inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Any `topic.json` bytes: a clean error or a checked configuration, never a panic.
        #[test]
        fn arbitrary_topic_json_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let dir = tempfile::tempdir().expect("tempdir");
            std::fs::create_dir(dir.path().join("t")).expect("mkdir");
            std::fs::write(dir.path().join("t").join(TOPIC_CONFIG), &bytes).expect("write");
            if let Ok((_, c)) = TopicShared::read_config(dir.path(), "t") {
                prop_assert!((1..=MAX_PARTITIONS as usize).contains(&c.num_partitions));
            }
        }

        /// Any JSON document as topic options: accepted only with a valid partition count, and
        /// what is accepted reads back the same.
        #[test]
        fn arbitrary_topic_options_never_panic(v in json_value()) {
            if let Ok(c) = TopicConfig::from_options(&v) {
                prop_assert!((1..=MAX_PARTITIONS as usize).contains(&c.num_partitions));
                let again = TopicConfig::from_options(&c.options).expect("stored options reload");
                prop_assert_eq!(again, c);
            }
        }
    }
}
