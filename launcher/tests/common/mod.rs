//! Helpers shared by the launcher's process tests: run the probe binary with a controlled
//! environment, every wait bounded by a deadline.
#![allow(dead_code)]
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const PROBE: &str = env!("CARGO_BIN_EXE_diaspora-launch-probe");

/// A probe command with an empty environment (no launcher variables leak in from the
/// test's own environment) plus `vars`.
pub fn probe(run_dir: &Path, group: &Path, vars: &[(&str, String)]) -> Command {
    let mut c = Command::new(PROBE);
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .arg("--run-dir")
        .arg(run_dir)
        .arg("--group-file")
        .arg(group)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in vars {
        c.env(k, v);
    }
    c
}

/// Waits for `child` at most `limit`; kills it (and fails the test) past that.
pub fn wait_bounded(mut child: Child, limit: Duration, what: &str) -> Output {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return child.wait_with_output().expect("collect output"),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let out = child.wait_with_output().expect("collect output");
                panic!(
                    "{what}: still running after {limit:?}, killed\nstdout:\n{}\nstderr:\n{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Err(e) => panic!("{what}: wait failed: {e}"),
        }
    }
}

pub fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A run id no other test (or earlier run) uses.
pub fn unique(tag: &str) -> String {
    let ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{tag}-{}-{ns}", std::process::id())
}

/// Reads and parses the group file the probe writes.
pub fn group(path: &Path) -> serde_json::Value {
    let t = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&t).expect("group file is JSON")
}

/// The (rank, pid) pairs of a group file, checked to be ranks 0..n in order.
pub fn group_ranks(g: &serde_json::Value, n: usize) -> Vec<(u64, u64)> {
    let ranks = g["ranks"].as_array().expect("ranks array");
    assert_eq!(ranks.len(), n, "{g}");
    ranks
        .iter()
        .enumerate()
        .map(|(i, r)| {
            assert_eq!(r["rank"].as_u64(), Some(i as u64), "{g}");
            assert!(!r["threads"].as_array().expect("threads").is_empty(), "{g}");
            (
                r["rank"].as_u64().unwrap_or(0),
                r["pid"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}
