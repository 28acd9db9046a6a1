//! The files driver: a root directory holding one directory per topic.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::sync::Arc;

use diaspora_api::{DriverBackend, Error, Result, ThreadPool, TopicBackend, Value};

use crate::error::FilesError;
use crate::topic::{create_topic, is_topic_dir, load_config, FilesTopic, TopicShared};

/// When appended events are made durable (fdatasync), upstream's `flush_behavior`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FlushBehavior {
    /// Never by the driver (the OS writes back): an OS crash may lose recent events, a process
    /// crash does not. The default, as upstream.
    #[default]
    Buffered,
    /// `Producer::flush` syncs the partitions its events went to before it completes.
    OnFlush,
    /// Every batch is synced before its push futures complete (every topic behaves as if
    /// created with `"sync": true`, acknowledgements included).
    Immediate,
}

/// How consumers get the data of runs of whole events (`consumer_read`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ConsumerRead {
    /// Mapped from the page cache, not copied (`"map"`, the default): the data checksum reads
    /// the page cache directly. A data file truncated by hand under a running consumer ends it
    /// with `SIGBUS`, as for any reader that maps files; the driver never truncates one.
    #[default]
    Map,
    /// Copied with `pread` into recycled buffers (`"read"`).
    Read,
}

/// Default `root_path`, as upstream: `diaspora_data` in the current directory.
pub const DEFAULT_ROOT_PATH: &str = "diaspora_data";

/// Options of the files driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilesDriverOptions {
    /// Directory holding the topics (created by the first topic creation; read-only uses never
    /// create it); default [`DEFAULT_ROOT_PATH`].
    pub root_path: PathBuf,
    /// Background threads storing producers' batches when a producer gives no pool.
    pub thread_count: usize,
    /// When appends are made durable.
    pub flush_behavior: FlushBehavior,
    /// Upstream's `use_file_locking`, accepted for compatibility. This driver always takes
    /// `flock` locks around appends and acknowledgements (it is what makes several processes
    /// safe), so `false` does not turn them off.
    pub use_file_locking: bool,
    /// How consumers read the data of runs of whole events.
    pub consumer_read: ConsumerRead,
}

impl FilesDriverOptions {
    /// Options whose value is a string (a path): a command line that parses values as JSON
    /// must keep their text (`--driver.root_path 2024` is the directory `2024`).
    pub const STRING_KEYS: &'static [&'static str] = &["root_path"];

    /// Parses `{"root_path": "...", "thread_count": N, "flush_behavior":
    /// "buffered"|"on_flush"|"immediate", "use_file_locking": bool, "consumer_read":
    /// "map"|"read"}`; unknown keys are errors. An upstream files-driver configuration is
    /// accepted unchanged.
    pub fn from_json(v: &Value) -> Result<Self> {
        let empty = serde_json::Map::new();
        let obj = match v {
            Value::Object(o) => o,
            Value::Null => &empty,
            _ => return Err(Error::option("driver", "options must be a JSON object")),
        };
        let mut root_path = None;
        let mut thread_count = 1;
        let mut flush_behavior = FlushBehavior::default();
        let mut use_file_locking = false;
        let mut consumer_read = ConsumerRead::default();
        for (k, val) in obj {
            match k.as_str() {
                "root_path" => match val.as_str() {
                    Some(s) if !s.is_empty() => root_path = Some(PathBuf::from(s)),
                    _ => {
                        return Err(Error::option(
                            "driver.root_path",
                            "must be a non-empty string",
                        ))
                    }
                },
                "thread_count" => {
                    thread_count = val
                        .as_u64()
                        .filter(|n| *n <= 1024)
                        .map(|n| n as usize)
                        .ok_or_else(|| {
                            Error::option(
                                "driver.thread_count",
                                "must be an integer from 0 to 1024",
                            )
                        })?
                }
                "flush_behavior" => {
                    flush_behavior = match val.as_str() {
                        Some("buffered") => FlushBehavior::Buffered,
                        Some("on_flush") => FlushBehavior::OnFlush,
                        Some("immediate") => FlushBehavior::Immediate,
                        _ => {
                            return Err(Error::option(
                                "driver.flush_behavior",
                                "must be \"buffered\", \"on_flush\" or \"immediate\"",
                            ))
                        }
                    }
                }
                "use_file_locking" => {
                    use_file_locking = val.as_bool().ok_or_else(|| {
                        Error::option("driver.use_file_locking", "must be true or false")
                    })?
                }
                "consumer_read" => {
                    consumer_read = match val.as_str() {
                        Some("map") => ConsumerRead::Map,
                        Some("read") => ConsumerRead::Read,
                        _ => {
                            return Err(Error::option(
                                "driver.consumer_read",
                                "must be \"map\" or \"read\"",
                            ))
                        }
                    }
                }
                other => {
                    return Err(Error::option(
                        format!("driver.{other}"),
                        "unknown option (known: root_path, thread_count, flush_behavior, \
                         use_file_locking, consumer_read)",
                    ))
                }
            }
        }
        Ok(FilesDriverOptions {
            root_path: root_path.unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT_PATH)),
            thread_count,
            flush_behavior,
            use_file_locking,
            consumer_read,
        })
    }
}

/// The files driver.
pub struct FilesDriver {
    root: PathBuf,
    pool: ThreadPool,
    flush_behavior: FlushBehavior,
    consumer_read: ConsumerRead,
}

impl FilesDriver {
    /// A driver over the root directory. Nothing is created until a topic is: listing,
    /// describing, verifying and consuming work on a read-only tree and leave it untouched.
    pub fn new(options: FilesDriverOptions) -> Result<Self> {
        Ok(FilesDriver {
            root: options.root_path,
            pool: ThreadPool::new(options.thread_count),
            flush_behavior: options.flush_behavior,
            consumer_read: options.consumer_read,
        })
    }
}

impl DriverBackend for FilesDriver {
    fn create_topic(&self, name: &str, options: &Value) -> Result<()> {
        diaspora_api::validate_topic_name(name)?;
        create_topic(&self.root, name, options)
    }

    fn open_topic(&self, name: &str) -> Result<Arc<dyn TopicBackend>> {
        diaspora_api::validate_topic_name(name)?;
        Ok(Arc::new(FilesTopic {
            shared: TopicShared::open_with(
                &self.root,
                name,
                self.pool.clone(),
                self.flush_behavior,
            )?,
            consumer_read: self.consumer_read,
        }))
    }

    fn topic_exists(&self, name: &str) -> Result<bool> {
        diaspora_api::validate_topic_name(name)?;
        Ok(is_topic_dir(&self.root.join(name)))
    }

    fn list_topics(&self) -> Result<Vec<String>> {
        let entries = match fs::read_dir(&self.root) {
            Ok(entries) => entries,
            // No root yet: no topic was ever created.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(FilesError::io("list", &self.root, e).into()),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::from(FilesError::io("list", &self.root, e)))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if diaspora_api::check_name(&name).is_ok() && is_topic_dir(&entry.path()) {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    fn default_thread_pool(&self) -> ThreadPool {
        self.pool.clone()
    }

    /// From each topic's `topic.json`, without opening its partitions: `name`, `path`,
    /// `num_partitions`, the policies and the other options.
    fn list_topics_metadata(&self) -> Result<BTreeMap<String, Value>> {
        let mut out = BTreeMap::new();
        for name in self.list_topics()? {
            let config = match load_config(&self.root, &name) {
                Ok(c) => c,
                Err(Error::TopicNotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            let mut m = match config.options {
                Value::Object(o) => o,
                _ => serde_json::Map::new(),
            };
            m.insert("name".into(), Value::from(name.clone()));
            m.insert(
                "path".into(),
                Value::from(self.root.join(&name).display().to_string()),
            );
            out.insert(name, Value::Object(m));
        }
        Ok(out)
    }
}
