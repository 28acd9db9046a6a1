//! Options of the fabric driver (`--driver.<key>` on the command line).
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `group_file` | required | the group file the server wrote (addresses, token, epoch) |
//! | `provider` | the group file's | libfabric provider (`tcp;ofi_rxm`, `shm`, ...) |
//! | `timeout_ms` | 30000 | deadline of every call to the server (push, flush, pull, admin) |
//! | `progress_threads` | 1 | progress threads (endpoints) of this client |
//! | `wait` | provider's | `spin`, `block` or `spin_then_block` (progress threads' idle wait) |
//! | `token` | the group file's | the token presented to the server |
//! | `inline_progress` | false | threads waiting on the network drive progress themselves (saves two thread hand-offs per operation; see `EngineConfig::inline_progress`) |

use std::path::PathBuf;
use std::time::Duration;

use diaspora_api::{Error, Result, Value};

/// How a progress thread waits for work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitOption {
    /// Poll continuously.
    Spin,
    /// Sleep on the completion queue's fd.
    Block,
    /// Spin for 10 ms after the last work, then block.
    SpinThenBlock,
}

/// Options of the fabric driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FabricOptions {
    /// The group file.
    pub group_file: PathBuf,
    /// Provider override.
    pub provider: Option<String>,
    /// Deadline of every call.
    pub timeout: Duration,
    /// Number of progress threads.
    pub progress_threads: usize,
    /// Wait strategy override.
    pub wait: Option<WaitOption>,
    /// Token override.
    pub token: Option<String>,
    /// Callers drive progress while they wait (`EngineConfig::inline_progress`).
    pub inline_progress: bool,
}

/// Keys of the options.
pub const KNOWN_KEYS: &str =
    "group_file, provider, timeout_ms, progress_threads, wait, token, inline_progress";

impl FabricOptions {
    /// Options whose value is a string: a command line that parses values as JSON must keep
    /// their text (`--driver.token 1234` is the token `"1234"`).
    pub const STRING_KEYS: &'static [&'static str] = &["group_file", "provider", "wait", "token"];

    /// Parses the driver options; unknown keys and out-of-range values are errors.
    pub fn from_json(v: &Value) -> Result<Self> {
        let empty = serde_json::Map::new();
        let obj = match v {
            Value::Object(o) => o,
            Value::Null => &empty,
            _ => return Err(Error::option("driver", "options must be a JSON object")),
        };
        let mut o = FabricOptions {
            group_file: PathBuf::new(),
            provider: None,
            timeout: Duration::from_secs(30),
            progress_threads: 1,
            wait: None,
            token: None,
            inline_progress: false,
        };
        let mut group_file = None;
        for (k, val) in obj {
            match k.as_str() {
                "group_file" => group_file = Some(PathBuf::from(non_empty(val, "group_file")?)),
                "provider" => o.provider = Some(non_empty(val, "provider")?),
                "token" => o.token = Some(non_empty(val, "token")?),
                "timeout_ms" => {
                    let ms = val
                        .as_u64()
                        .filter(|ms| (1..=86_400_000).contains(ms))
                        .ok_or_else(|| {
                            Error::option(
                                "driver.timeout_ms",
                                "must be an integer from 1 to 86400000 (one day)",
                            )
                        })?;
                    o.timeout = Duration::from_millis(ms);
                }
                "progress_threads" => {
                    o.progress_threads = val
                        .as_u64()
                        .filter(|n| (1..=64).contains(n))
                        .map(|n| n as usize)
                        .ok_or_else(|| {
                            Error::option(
                                "driver.progress_threads",
                                "must be an integer from 1 to 64",
                            )
                        })?
                }
                "inline_progress" => {
                    o.inline_progress = val.as_bool().ok_or_else(|| {
                        Error::option("driver.inline_progress", "must be true or false")
                    })?
                }
                "wait" => {
                    o.wait = Some(match val.as_str() {
                        Some("spin") => WaitOption::Spin,
                        Some("block") => WaitOption::Block,
                        Some("spin_then_block") => WaitOption::SpinThenBlock,
                        _ => {
                            return Err(Error::option(
                                "driver.wait",
                                "must be \"spin\", \"block\" or \"spin_then_block\"",
                            ))
                        }
                    })
                }
                other => {
                    return Err(Error::option(
                        format!("driver.{other}"),
                        format!("unknown option (known: {KNOWN_KEYS})"),
                    ))
                }
            }
        }
        o.group_file = group_file.ok_or_else(|| {
            Error::option("driver.group_file", "is required by the fabric driver")
        })?;
        Ok(o)
    }
}

fn non_empty(v: &Value, key: &str) -> Result<String> {
    match v.as_str() {
        Some(s) if !s.is_empty() => Ok(s.to_owned()),
        _ => Err(Error::option(
            format!("driver.{key}"),
            "must be a non-empty string",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key_of(e: Error) -> String {
        match e {
            Error::InvalidOption { key, .. } => key,
            other => panic!("expected InvalidOption, got {other:?}"),
        }
    }

    #[test]
    fn defaults_and_overrides() {
        let o = FabricOptions::from_json(&json!({"group_file": "/g.json"})).unwrap();
        assert_eq!(o.group_file, PathBuf::from("/g.json"));
        assert_eq!(o.timeout, Duration::from_secs(30));
        assert_eq!(o.progress_threads, 1);
        assert_eq!((o.provider, o.wait, o.token), (None, None, None));
        assert!(!o.inline_progress);
        let o = FabricOptions::from_json(&json!({
            "group_file": "g", "provider": "shm", "timeout_ms": 250, "progress_threads": 2,
            "wait": "spin", "token": "abc", "inline_progress": true
        }))
        .unwrap();
        assert_eq!(o.provider.as_deref(), Some("shm"));
        assert_eq!(o.timeout, Duration::from_millis(250));
        assert_eq!(o.progress_threads, 2);
        assert_eq!(o.wait, Some(WaitOption::Spin));
        assert_eq!(o.token.as_deref(), Some("abc"));
        assert!(o.inline_progress);
    }

    #[test]
    fn bad_options_name_their_key() {
        let cases = [
            (json!({}), "driver.group_file"),
            (json!({"group_file": ""}), "driver.group_file"),
            (json!({"group_file": 3}), "driver.group_file"),
            (
                json!({"group_file": "g", "timeout_ms": 0}),
                "driver.timeout_ms",
            ),
            (
                json!({"group_file": "g", "timeout_ms": -5}),
                "driver.timeout_ms",
            ),
            (
                json!({"group_file": "g", "timeout_ms": "1"}),
                "driver.timeout_ms",
            ),
            (
                json!({"group_file": "g", "progress_threads": 0}),
                "driver.progress_threads",
            ),
            (
                json!({"group_file": "g", "inline_progress": "yes"}),
                "driver.inline_progress",
            ),
            (
                json!({"group_file": "g", "progress_threads": 65}),
                "driver.progress_threads",
            ),
            (json!({"group_file": "g", "wait": "nap"}), "driver.wait"),
            (
                json!({"group_file": "g", "root_path": "x"}),
                "driver.root_path",
            ),
        ];
        for (v, key) in cases {
            assert_eq!(
                key_of(FabricOptions::from_json(&v).unwrap_err()),
                key,
                "{v}"
            );
        }
        assert!(FabricOptions::from_json(&json!([1])).is_err());
    }
}
