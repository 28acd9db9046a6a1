//! Options of `diaspora-server`: command-line flags and a JSON config file (flags win).
//!
//! | flag | config key | default | meaning |
//! |---|---|---|---|
//! | `--data-dir D` | `data_dir` | required | files-driver root holding the topics |
//! | `--group-file G` | `group_file` | required | where the group file is written |
//! | `--provider P` | `provider` | `tcp;ofi_rxm` | libfabric provider (`tcp;ofi_rxm`, `shm`, `verbs;ofi_rxm`, ...) |
//! | `--domain X` | `domain` | none | libfabric domain (`lo` keeps tcp on loopback) |
//! | `--threads N` | `threads` | 1 | progress threads (one endpoint each) |
//! | `--cores 0-3,6` | `cores` | none | pin one progress thread per listed CPU (sets N) |
//! | `--storage files\|memory` | `storage` | `files` | persistent, or in memory for benchmarks |
//! | `--io-threads N` | `io_threads` | 2 | threads doing disk work and checks |
//! | `--run-dir R` | `run_dir` | `<group file>.run` | run directory where the ranks of a group meet (shared file system) |
//! | `--expect-ranks N` | `expect_ranks` | none | refuse to start unless the launcher started exactly N ranks |
//! | `--run-id X` | `run_id` | the launcher's | names this run in the run directory (needed without a launcher run id) |
//! | | `rendezvous_timeout_s` | 60 | how long rank 0 waits for every rank to listen |
//! | `--session-expiry-ms N` | `session_expiry_ms` | 15000 | a client not heard from for this long (its keepalives stopped: killed, node lost) loses its session and its long polls; 0: never |
//! | | `max_batch_events` | 65536 | most events per produced batch |
//! | | `max_batch_bytes` | 64 MiB | most bytes per produced batch |
//! | | `max_fetch_bytes` | 64 MiB | most bytes per fetch |
//! | | `max_inflight_bytes` | 1 GiB | produce bytes in flight before `Throttled` |
//! | | `credits` | 8 | batches in flight per producer and partition |

use std::path::PathBuf;

use diaspora_proto::Limits;
use serde::Deserialize;

use crate::store::StorageKind;

/// Command-line flags.
#[derive(Debug, Clone, Default, clap::Parser)]
#[command(
    name = "diaspora-server",
    about = "Serves Diaspora topics over libfabric"
)]
pub struct Args {
    /// Files-driver root holding the topics.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Where to write the group file.
    #[arg(long)]
    pub group_file: Option<PathBuf>,
    /// libfabric provider.
    #[arg(long)]
    pub provider: Option<String>,
    /// libfabric domain.
    #[arg(long)]
    pub domain: Option<String>,
    /// Number of progress threads.
    #[arg(long)]
    pub threads: Option<usize>,
    /// CPUs to pin progress threads to, e.g. 0-3,6.
    #[arg(long)]
    pub cores: Option<String>,
    /// JSON config file.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// files or memory.
    #[arg(long)]
    pub storage: Option<String>,
    /// Threads for disk work.
    #[arg(long)]
    pub io_threads: Option<usize>,
    /// Run directory where the ranks meet (default: `<group file>.run`).
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// Refuse to start unless the launcher started exactly this many ranks.
    #[arg(long)]
    pub expect_ranks: Option<u32>,
    /// Names this run in the run directory (default: the launcher's job/step id).
    #[arg(long)]
    pub run_id: Option<String>,
    /// A client not heard from for this long (no keepalive) loses its session
    /// and the long polls it held (default 15000; 0: never).
    #[arg(long)]
    pub session_expiry_ms: Option<u64>,
}

/// The config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    data_dir: Option<PathBuf>,
    group_file: Option<PathBuf>,
    provider: Option<String>,
    domain: Option<String>,
    threads: Option<usize>,
    cores: Option<String>,
    storage: Option<StorageKind>,
    io_threads: Option<usize>,
    max_batch_events: Option<u32>,
    max_batch_bytes: Option<u64>,
    max_fetch_bytes: Option<u64>,
    max_inflight_bytes: Option<u64>,
    credits: Option<u32>,
    run_dir: Option<PathBuf>,
    expect_ranks: Option<u32>,
    run_id: Option<String>,
    rendezvous_timeout_s: Option<u64>,
    session_expiry_ms: Option<u64>,
}

/// Why the options are refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A required option is missing.
    #[error("missing option {0} (give --{1} or the config key {0})")]
    Missing(&'static str, &'static str),
    /// The config file cannot be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid.
    #[error("config file {path} is not valid: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What serde says.
        #[source]
        source: serde_json::Error,
    },
    /// An option has a bad value.
    #[error("invalid option {name}: {reason}")]
    Invalid {
        /// The option.
        name: &'static str,
        /// Why.
        reason: String,
    },
}

/// Resolved options.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Files-driver root.
    pub data_dir: PathBuf,
    /// Group file path.
    pub group_file: PathBuf,
    /// Provider.
    pub provider: String,
    /// Domain.
    pub domain: Option<String>,
    /// One entry per progress thread: the CPU to pin it to, if any.
    pub cores: Vec<Option<usize>>,
    /// Storage kind.
    pub storage: StorageKind,
    /// Disk threads.
    pub io_threads: usize,
    /// Limits.
    pub limits: Limits,
    /// Produce bytes in flight before throttling.
    pub max_inflight_bytes: u64,
    /// Whether `cores` was given (`--cores`); otherwise a launched rank plans its own CPUs.
    pub cores_given: bool,
    /// The run directory, if given (a launch of several ranks defaults it, see
    /// [`ServerConfig::run_dir_or_default`]).
    pub run_dir: Option<PathBuf>,
    /// How many ranks the launcher must have started.
    pub expect_ranks: Option<u32>,
    /// Run id override.
    pub run_id: Option<String>,
    /// How long rank 0 waits for every rank.
    pub rendezvous_timeout: std::time::Duration,
    /// How long a silent client keeps its session (`EngineConfig::session_expiry`).
    pub session_expiry: Option<std::time::Duration>,
}

/// Parses a CPU list such as `0-3,6`.
pub fn parse_cores(s: &str) -> Result<Vec<usize>, ConfigError> {
    let bad = |reason: String| ConfigError::Invalid {
        name: "cores",
        reason,
    };
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a, b),
            None => (part, part),
        };
        let a: usize = a
            .trim()
            .parse()
            .map_err(|_| bad(format!("{part:?} is not a CPU or range")))?;
        let b: usize = b
            .trim()
            .parse()
            .map_err(|_| bad(format!("{part:?} is not a CPU or range")))?;
        if a > b || b >= 4096 {
            return Err(bad(format!(
                "{part:?} is not an increasing range below 4096"
            )));
        }
        for c in a..=b {
            if out.contains(&c) {
                return Err(bad(format!("CPU {c} is listed twice")));
            }
            out.push(c);
        }
    }
    if out.is_empty() {
        return Err(bad("the list is empty".into()));
    }
    Ok(out)
}

impl ServerConfig {
    /// Merges flags over the config file they name.
    pub fn resolve(args: &Args) -> Result<ServerConfig, ConfigError> {
        let file = match &args.config {
            None => FileConfig::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                serde_json::from_str(&text).map_err(|source| ConfigError::Parse {
                    path: path.clone(),
                    source,
                })?
            }
        };
        Self::merge(args, file)
    }

    /// Merges flags over a parsed config file.
    pub fn merge(args: &Args, file: FileConfig) -> Result<ServerConfig, ConfigError> {
        let data_dir = args
            .data_dir
            .clone()
            .or(file.data_dir)
            .ok_or(ConfigError::Missing("data_dir", "data-dir"))?;
        let group_file = args
            .group_file
            .clone()
            .or(file.group_file)
            .ok_or(ConfigError::Missing("group_file", "group-file"))?;
        let provider = args
            .provider
            .clone()
            .or(file.provider)
            .unwrap_or_else(|| "tcp;ofi_rxm".into());
        let storage = match args.storage.as_deref() {
            Some("files") => StorageKind::Files,
            Some("memory") => StorageKind::Memory,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "storage",
                    reason: format!("{other:?} is neither files nor memory"),
                })
            }
            None => file.storage.unwrap_or(StorageKind::Files),
        };
        let threads = args.threads.or(file.threads);
        let cores_given = args.cores.is_some() || file.cores.is_some();
        let cores = match args.cores.clone().or(file.cores) {
            Some(list) => {
                let c = parse_cores(&list)?;
                if let Some(n) = threads {
                    if n != c.len() {
                        return Err(ConfigError::Invalid {
                            name: "threads",
                            reason: format!("{n} threads but {} cores listed", c.len()),
                        });
                    }
                }
                c.into_iter().map(Some).collect()
            }
            None => vec![None; threads.unwrap_or(1)],
        };
        if cores.is_empty() || cores.len() > 256 {
            return Err(ConfigError::Invalid {
                name: "threads",
                reason: "must be from 1 to 256".into(),
            });
        }
        let io_threads = args.io_threads.or(file.io_threads).unwrap_or(2);
        if io_threads == 0 || io_threads > 256 {
            return Err(ConfigError::Invalid {
                name: "io_threads",
                reason: "must be from 1 to 256".into(),
            });
        }
        let mut limits = Limits::default();
        if let Some(v) = file.max_batch_events {
            limits.max_batch_events = v.max(1);
        }
        if let Some(v) = file.max_batch_bytes {
            limits.max_batch_bytes = v.max(1);
        }
        if let Some(v) = file.max_fetch_bytes {
            limits.max_fetch_bytes = v.max(1);
        }
        if let Some(v) = file.credits {
            limits.credits = v.max(1);
        }
        let expect_ranks = args.expect_ranks.or(file.expect_ranks);
        if expect_ranks == Some(0) {
            return Err(ConfigError::Invalid {
                name: "expect_ranks",
                reason: "must be at least 1".into(),
            });
        }
        let rendezvous_timeout_s = file.rendezvous_timeout_s.unwrap_or(60);
        if rendezvous_timeout_s == 0 || rendezvous_timeout_s > 86_400 {
            return Err(ConfigError::Invalid {
                name: "rendezvous_timeout_s",
                reason: "must be from 1 to 86400 seconds".into(),
            });
        }
        let expiry_ms = args
            .session_expiry_ms
            .or(file.session_expiry_ms)
            .unwrap_or(diaspora_rpc::DEFAULT_SESSION_EXPIRY.as_millis() as u64);
        if expiry_ms > 86_400_000 || (1..100).contains(&expiry_ms) {
            return Err(ConfigError::Invalid {
                name: "session_expiry_ms",
                reason: "must be from 100 to 86400000 (a day); 0 means never".into(),
            });
        }
        let session_expiry = (expiry_ms > 0).then(|| std::time::Duration::from_millis(expiry_ms));
        let run_id = args.run_id.clone().or(file.run_id);
        if run_id
            .as_deref()
            .is_some_and(|r| r.is_empty() || r.len() > 256)
        {
            return Err(ConfigError::Invalid {
                name: "run_id",
                reason: "must be 1 to 256 bytes".into(),
            });
        }
        Ok(ServerConfig {
            cores_given,
            run_dir: args.run_dir.clone().or(file.run_dir),
            expect_ranks,
            run_id,
            rendezvous_timeout: std::time::Duration::from_secs(rendezvous_timeout_s),
            session_expiry,
            data_dir,
            group_file,
            provider,
            domain: args.domain.clone().or(file.domain),
            cores,
            storage,
            io_threads,
            limits,
            max_inflight_bytes: file.max_inflight_bytes.unwrap_or(1 << 30),
        })
    }
}

impl ServerConfig {
    /// The run directory: the one given, else `<group file>.run` next to the group file.
    pub fn run_dir_or_default(&self) -> PathBuf {
        match &self.run_dir {
            Some(r) => r.clone(),
            None => {
                let mut name = self
                    .group_file
                    .file_name()
                    .map(|n| n.to_os_string())
                    .unwrap_or_else(|| "group.json".into());
                name.push(".run");
                self.group_file.with_file_name(name)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse_and_bad_ones_are_refused() {
        assert_eq!(parse_cores("0-3,6").unwrap(), [0, 1, 2, 3, 6]);
        for bad in ["", "3-1", "a", "1,1", "0-99999"] {
            assert!(parse_cores(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn flags_win_over_the_config_file() {
        let file: FileConfig = serde_json::from_str(
            r#"{"data_dir": "/a", "group_file": "/g", "provider": "shm", "threads": 3, "storage": "memory"}"#,
        )
        .unwrap();
        let args = Args {
            provider: Some("tcp;ofi_rxm".into()),
            ..Args::default()
        };
        let c = ServerConfig::merge(&args, file).unwrap();
        assert_eq!(c.provider, "tcp;ofi_rxm");
        assert_eq!(c.cores.len(), 3);
        assert_eq!(c.storage, StorageKind::Memory);
        assert_eq!(c.data_dir, PathBuf::from("/a"));
        assert_eq!(c.run_dir_or_default(), PathBuf::from("/g.run"));
        assert!(!c.cores_given);
    }

    #[test]
    fn rank_options_come_from_flags_or_the_config_file() {
        let file: FileConfig = serde_json::from_str(
            r#"{"data_dir": "/a", "group_file": "/x/g.json", "run_dir": "/r", "expect_ranks": 4, "rendezvous_timeout_s": 5}"#,
        )
        .unwrap();
        let c = ServerConfig::merge(&Args::default(), file.clone()).unwrap();
        assert_eq!(c.run_dir_or_default(), PathBuf::from("/r"));
        assert_eq!(c.expect_ranks, Some(4));
        assert_eq!(c.rendezvous_timeout, std::time::Duration::from_secs(5));
        let args = Args {
            expect_ranks: Some(2),
            run_dir: Some("/s".into()),
            ..Args::default()
        };
        let c = ServerConfig::merge(&args, file).unwrap();
        assert_eq!(c.expect_ranks, Some(2));
        assert_eq!(c.run_dir_or_default(), PathBuf::from("/s"));
        let bad: FileConfig =
            serde_json::from_str(r#"{"data_dir": "/a", "group_file": "/g", "expect_ranks": 0}"#)
                .unwrap();
        let e = ServerConfig::merge(&Args::default(), bad).unwrap_err();
        assert!(e.to_string().contains("expect_ranks"), "{e}");
    }

    #[test]
    fn the_session_expiry_defaults_to_15_s_and_zero_means_never() {
        let base = r#""data_dir": "/a", "group_file": "/g""#;
        let parse = |extra: &str| -> FileConfig {
            serde_json::from_str(&format!("{{{base}{extra}}}")).expect("config")
        };
        let secs = std::time::Duration::from_secs;
        let c = ServerConfig::merge(&Args::default(), parse("")).expect("default");
        assert_eq!(c.session_expiry, Some(secs(15)));
        let c = ServerConfig::merge(&Args::default(), parse(r#", "session_expiry_ms": 0"#))
            .expect("zero");
        assert_eq!(c.session_expiry, None);
        let args = Args {
            session_expiry_ms: Some(2500),
            ..Args::default()
        };
        let c = ServerConfig::merge(&args, parse(r#", "session_expiry_ms": 0"#)).expect("flag");
        assert_eq!(
            c.session_expiry,
            Some(std::time::Duration::from_millis(2500))
        );
        for bad in ["86400001", "1", "99"] {
            let e = ServerConfig::merge(
                &Args::default(),
                parse(&format!(r#", "session_expiry_ms": {bad}"#)),
            )
            .expect_err("out of range");
            assert!(e.to_string().contains("session_expiry_ms"), "{bad}: {e}");
        }
    }

    #[test]
    fn unknown_config_keys_and_missing_options_are_errors() {
        assert!(serde_json::from_str::<FileConfig>(r#"{"data_dri": "/a"}"#).is_err());
        let e = ServerConfig::merge(&Args::default(), FileConfig::default()).unwrap_err();
        assert!(e.to_string().contains("data-dir"), "{e}");
    }
}
