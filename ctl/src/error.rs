//! Errors of the command-line tool; `main` prints them as `error: ...` and exits with 1.

use crate::config::OptionsError;

/// Everything that can make a command fail.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command line does not follow the grammar (or help/version was asked for).
    #[error(transparent)]
    Clap(#[from] clap::Error),
    /// Bad dynamic options or option files.
    #[error(transparent)]
    Options(#[from] OptionsError),
    /// The API refused an operation.
    #[error(transparent)]
    Api(#[from] diaspora_api::Error),
    /// The API refused an operation; `context` says which.
    #[error("{context}: {source}")]
    ApiContext {
        /// What was being done.
        context: String,
        /// The API's error.
        #[source]
        source: diaspora_api::Error,
    },
    /// Reading input or writing output failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A command failed after doing part of its work.
    #[error("{source} ({produced} event(s) were produced before the error)")]
    Partial {
        /// How many events were produced.
        produced: u64,
        /// The error.
        #[source]
        source: Box<CliError>,
    },
    /// `topic verify` found damaged records.
    #[error("topic {topic}: {problems} damaged record(s) found")]
    Damaged {
        /// The topic.
        topic: String,
        /// Number of problems.
        problems: usize,
    },
    /// `consume` skipped events it could not read (each reported on stderr).
    #[error("topic {topic}: {count} damaged event(s) reported and skipped")]
    DamagedEvents {
        /// The topic.
        topic: String,
        /// How many events were skipped.
        count: u64,
    },
    /// The command does not apply to this driver.
    #[error("{command} is only available with the files driver (got \"{driver}\")")]
    WrongDriver {
        /// The command.
        command: &'static str,
        /// The driver given.
        driver: String,
    },
    /// A daemon could not set itself up (control FIFO, signal handlers, configuration).
    #[error("{context}: {source}")]
    Daemon {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A daemon stopped with errors after its clean shutdown (each reported on stderr).
    #[error("{0}")]
    DaemonFailed(String),
    /// The reader of our output went away (e.g. `| head`): stop quietly.
    #[error("broken pipe")]
    BrokenPipe,
}

impl CliError {
    /// Wraps an API error with what was being done.
    pub fn api(context: impl Into<String>, source: diaspora_api::Error) -> Self {
        CliError::ApiContext {
            context: context.into(),
            source,
        }
    }

    /// Wraps an error writing to standard output.
    pub fn output(source: std::io::Error) -> Self {
        if source.kind() == std::io::ErrorKind::BrokenPipe {
            CliError::BrokenPipe
        } else {
            CliError::Io {
                context: "cannot write to standard output",
                source,
            }
        }
    }
}
