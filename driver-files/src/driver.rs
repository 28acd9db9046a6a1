//! The files driver: a root directory holding one directory per topic.

use std::fs;
use std::path::PathBuf;
use std::sync::Arc;

use diaspora_api::{DriverBackend, Error, Result, ThreadPool, TopicBackend, Value};

use crate::error::FilesError;
use crate::topic::{create_topic, is_topic_dir, FilesTopic, TopicShared};

/// Options of the files driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilesDriverOptions {
    /// Directory holding the topics (created by the first topic creation; read-only uses never
    /// create it).
    pub root_path: PathBuf,
    /// Background threads storing producers' batches when a producer gives no pool.
    pub thread_count: usize,
}

impl FilesDriverOptions {
    /// Options whose value is a string (a path): a command line that parses values as JSON
    /// must keep their text (`--driver.root_path 2024` is the directory `2024`).
    pub const STRING_KEYS: &'static [&'static str] = &["root_path"];

    /// Parses `{"root_path": "...", "thread_count": N}`; unknown keys are errors.
    pub fn from_json(v: &Value) -> Result<Self> {
        let empty = serde_json::Map::new();
        let obj = match v {
            Value::Object(o) => o,
            Value::Null => &empty,
            _ => return Err(Error::option("driver", "options must be a JSON object")),
        };
        let mut root_path = None;
        let mut thread_count = 1;
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
                other => {
                    return Err(Error::option(
                        format!("driver.{other}"),
                        "unknown option (known: root_path, thread_count)",
                    ))
                }
            }
        }
        Ok(FilesDriverOptions {
            root_path: root_path.ok_or_else(|| {
                Error::option("driver.root_path", "is required by the files driver")
            })?,
            thread_count,
        })
    }
}

/// The files driver.
pub struct FilesDriver {
    root: PathBuf,
    pool: ThreadPool,
}

impl FilesDriver {
    /// A driver over the root directory. Nothing is created until a topic is: listing,
    /// describing, verifying and consuming work on a read-only tree and leave it untouched.
    pub fn new(options: FilesDriverOptions) -> Result<Self> {
        Ok(FilesDriver {
            root: options.root_path,
            pool: ThreadPool::new(options.thread_count),
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
            shared: TopicShared::open(&self.root, name, self.pool.clone())?,
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
}
