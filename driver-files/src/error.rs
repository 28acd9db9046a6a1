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
            | FilesError::DamagedAcks { .. }) => diaspora_api::Error::Corrupted(other.to_string()),
            other => diaspora_api::Error::driver(other),
        }
    }
}

/// Result alias of the storage layer.
pub type FilesResult<T> = std::result::Result<T, FilesError>;
