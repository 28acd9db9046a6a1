//! Errors of the files driver, converted into [`diaspora_api::Error`] at the API boundary.

use std::path::PathBuf;

/// Errors raised by the files driver's storage layer.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// A system call on a file failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done ("open", "write", "lock"...).
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A file does not start with the expected header.
    #[error("{path}: not a diaspora {what} file (bad header)")]
    BadHeader {
        /// The file.
        path: PathBuf,
        /// Which kind of file was expected.
        what: &'static str,
    },
    /// A stored record failed its checksum or points outside its file.
    #[error("{path}: record {index} is corrupted: {reason}")]
    CorruptRecord {
        /// The file.
        path: PathBuf,
        /// Index of the record.
        index: u64,
        /// What check failed.
        reason: String,
    },
    /// A read would go outside its file: a record with impossible offsets.
    #[error("{path}: bytes {start}..{end} are outside the file ({file_len} bytes)")]
    OutOfRange {
        /// The file.
        path: PathBuf,
        /// First byte asked for.
        start: u64,
        /// One past the last byte asked for (saturated at `u64::MAX`).
        end: u64,
        /// Length of the file.
        file_len: u64,
    },
    /// The partition was sealed (its topic marked complete): it accepts no more events.
    #[error("{path}: partition is sealed (topic marked complete)")]
    Sealed {
        /// The partition directory.
        path: PathBuf,
    },
    /// The partition's files could only be opened read-only (read-only mount or permissions).
    #[error("{path}: partition is read-only, cannot {op}")]
    ReadOnly {
        /// The partition directory.
        path: PathBuf,
        /// What was refused ("append", "seal", "repair").
        op: &'static str,
    },
    /// A consumer's acknowledgement file has no usable slot: its position is unknown.
    #[error(
        "{path}: acknowledgements are unusable: {reason}. To restart this consumer name from \
         the first event of every partition (events it already processed are delivered again), \
         run `{reset}`"
    )]
    DamagedAcks {
        /// The file.
        path: PathBuf,
        /// What check failed.
        reason: String,
        /// The command that resets the consumer.
        reset: String,
    },
    /// A consumer acknowledged a partition it does not consume.
    #[error("{path}: partition {partition} is not one this consumer consumes")]
    NotConsumed {
        /// The acknowledgement file.
        path: PathBuf,
        /// The partition.
        partition: usize,
    },
    /// A topic's `layout` file names a layout this version does not know (written by a newer
    /// version, or damaged).
    #[error("{path}: unsupported topic layout {found:?} (this version reads layouts 1 and 2)")]
    BadLayout {
        /// The `layout` file.
        path: PathBuf,
        /// What it holds (at most 32 bytes of it).
        found: String,
    },
    /// A JSON configuration file is unreadable.
    #[error("{path}: invalid configuration: {source}")]
    BadConfig {
        /// The file.
        path: PathBuf,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
}

impl FilesError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        FilesError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

impl From<FilesError> for diaspora_api::Error {
    fn from(e: FilesError) -> Self {
        match e {
            FilesError::Io { op, path, source } => {
                diaspora_api::Error::io(format!("{op} {}", path.display()), source)
            }
            other @ (FilesError::BadHeader { .. }
            | FilesError::CorruptRecord { .. }
            | FilesError::OutOfRange { .. }
            | FilesError::DamagedAcks { .. }) => diaspora_api::Error::Corrupted(other.to_string()),
            FilesError::Sealed { path } => diaspora_api::Error::TopicComplete(topic_of(&path)),
            other => diaspora_api::Error::driver(other),
        }
    }
}

/// The topic name of a partition directory `<root>/<topic>/partitions/<index>`.
fn topic_of(partition_dir: &std::path::Path) -> String {
    partition_dir
        .parent()
        .and_then(|p| p.parent())
        .and_then(|t| t.file_name())
        .map_or_else(
            || partition_dir.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
}

/// Result alias of the storage layer.
pub type FilesResult<T> = std::result::Result<T, FilesError>;
