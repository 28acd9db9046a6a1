//! `diaspora-ctl forward`: real daemon processes forwarding between files topics and from a
//! node-local files topic to a real `diaspora-server` (fabric driver), SIGTERM and `kill -9`
//! (at least once, nothing lost), bad configurations. Every wait has a deadline.

#[path = "../../driver-fabric/tests/common/server.rs"]
mod server;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_diaspora-ctl");
const DEADLINE: Duration = Duration::from_secs(60);

fn run(args: &[&str], driver: &[&str], stdin: Option<String>) -> std::process::Output {
    let mut child = Command::new(BIN)
        .args(args)
        .args(driver)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run diaspora-ctl");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).expect("stdin");
    }
    drop(input);
    let o = child.wait_with_output().expect("wait");
    assert!(o.status.success(), "{args:?}: {o:?}");
    o
}

fn files(root: &Path) -> Vec<String> {
    vec![
        "--driver".into(),
        "files".into(),
        "--driver.root_path".into(),
        root.to_str().expect("utf-8").into(),
    ]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Pushes events `{"i": i}` for `ids`, each with 16 bytes of data.
fn produce(driver: &[String], topic: &str, ids: std::ops::Range<u64>) {
    let lines: String = ids.map(|i| format!("{{\"i\": {i}}}\n")).collect();
    run(
        &["produce", "--name", topic, "--stdin", "--data-size", "16"],
        &strs(driver),
        Some(lines),
    );
}

/// The `i` of every event in the topic (with repeats), and whether each had 16 bytes of data;
/// acknowledges nothing.
fn ids(driver: &[String], topic: &str) -> Vec<u64> {
    let o = run(
        &[
            "consume",
            "--name",
            topic,
            "--consumer",
            "check",
            "--timeout-ms",
            "300",
            "--no-ack",
            "--data",
        ],
        &strs(driver),
        None,
    );
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| {
            let rest = l.splitn(3, ' ').nth(2).expect("metadata");
            let (metadata, size) = rest.rsplit_once(' ').expect("data length");
            assert_eq!(size, "16", "data not forwarded: {l}");
            let json: serde_json::Value = serde_json::from_str(metadata).expect("metadata");
            json["i"].as_u64().expect("i")
        })
        .collect()
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

struct Daemon {
    child: Child,
    stderr: PathBuf,
}

impl Daemon {
    fn start(config: &Path) -> Daemon {
        let stderr = config.with_extension("err");
        let child = Command::new(BIN)
            .arg("forward")
            .arg("--config")
            .arg(config)
            .args(["--logging", "info"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("start forward");
        Daemon { child, stderr }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn signal(&mut self, signal: i32) -> (Option<i32>, String) {
        let pid = i32::try_from(self.child.id()).expect("pid");
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
        self.wait()
    }

    fn wait(&mut self) -> (Option<i32>, String) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return (status.code(), self.stderr());
            }
            if start.elapsed() > DEADLINE {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("forward daemon did not stop: {}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn forwards_with_data_stops_on_sigterm_and_resumes_after_its_acknowledgements() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("data");
    let d = files(&root);
    for t in ["src", "dst"] {
        run(&["topic", "create", "--name", t], &strs(&d), None);
    }
    produce(&d, "src", 0..300);
    let yaml = dir.path().join("forward.yaml");
    std::fs::write(
        &yaml,
        format!(
            "drivers:\n  local:\n    type: files\n    options:\n      root_path: \"{}\"\n\
             forward:\n  - from: local/src\n    to:   local/dst\n",
            root.display()
        ),
    )
    .expect("write config");
    let mut daemon = Daemon::start(&yaml);
    wait_until("300 forwarded events", || ids(&d, "dst").len() >= 300);
    let (code, stderr) = daemon.signal(libc::SIGTERM);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("300 event(s) forwarded"), "{stderr}");
    assert_eq!(ids(&d, "dst"), (0..300).collect::<Vec<_>>());

    // The same policy in JSON: it resumes after the acknowledged events, no duplicates.
    produce(&d, "src", 300..350);
    let json = dir.path().join("forward.json");
    std::fs::write(
        &json,
        serde_json::json!({
            "drivers": {"local": {"type": "files", "options": {"root_path": root}}},
            "forward": [{"from": "local/src", "to": "local/dst"}],
        })
        .to_string(),
    )
    .expect("write config");
    let mut daemon = Daemon::start(&json);
    wait_until("350 forwarded events", || ids(&d, "dst").len() >= 350);
    let (code, stderr) = daemon.signal(libc::SIGINT);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(ids(&d, "dst"), (0..350).collect::<Vec<_>>());
}

#[test]
fn kill_9_mid_forward_loses_nothing_the_next_run_delivers_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("data");
    let d = files(&root);
    for t in ["src", "a", "b"] {
        run(&["topic", "create", "--name", t], &strs(&d), None);
    }
    produce(&d, "src", 0..3000);
    let yaml = dir.path().join("forward.yaml");
    // Two policies from one source: each its own worker and consumer name.
    std::fs::write(
        &yaml,
        format!(
            "drivers:\n  local:\n    type: files\n    options:\n      root_path: \"{}\"\n\
             forward:\n  - from: local/src\n    to: local/a\n  - from: local/src\n    to: local/b\n",
            root.display()
        ),
    )
    .expect("write config");
    let mut daemon = Daemon::start(&yaml);
    wait_until("some forwarded events", || !ids(&d, "a").is_empty());
    daemon.signal(libc::SIGKILL);
    let mut daemon = Daemon::start(&yaml);
    let all: BTreeSet<u64> = (0..3000).collect();
    for t in ["a", "b"] {
        wait_until("every event forwarded", || {
            ids(&d, t).into_iter().collect::<BTreeSet<_>>() == all
        });
    }
    let (code, stderr) = daemon.signal(libc::SIGTERM);
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn bad_configurations_and_missing_topics_stop_the_daemon_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("data");
    run(
        &["topic", "create", "--name", "src"],
        &strs(&files(&root)),
        None,
    );
    let cases = [
        ("drivers: {}\nforward: []\n", "no forwarding policy"),
        (
            "drivers:\n  l: {type: files}\nforward:\n  - {from: m/src, to: l/dst}\n",
            "\"m\" is not defined",
        ),
        (
            "drivers:\n  l: {type: nosuchdriver}\nforward:\n  - {from: l/src, to: l/dst}\n",
            "nosuchdriver",
        ),
        ("{\"drivers\": ", "not a valid forward configuration"),
    ];
    for (text, needle) in cases {
        let config = dir.path().join("bad.yaml");
        std::fs::write(&config, text).expect("write");
        let (code, stderr) = Daemon::start(&config).wait();
        assert_eq!(code, Some(1), "{text}: {stderr}");
        assert!(stderr.contains(needle), "{text}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let config = dir.path().join("missing.yaml");
    std::fs::write(
        &config,
        format!(
            "drivers:\n  l:\n    type: files\n    options: {{root_path: \"{}\"}}\n\
             forward:\n  - {{from: l/src, to: l/nope}}\n",
            root.display()
        ),
    )
    .expect("write");
    let (code, stderr) = Daemon::start(&config).wait();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("nope"), "{stderr}");
    let (code, stderr) = Daemon::start(&dir.path().join("absent.yaml")).wait();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("absent.yaml"), "{stderr}");
}

#[test]
fn forwards_a_node_local_files_topic_to_a_diaspora_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("local");
    let local = files(&root);
    run(
        &["topic", "create", "--name", "staging"],
        &strs(&local),
        None,
    );
    produce(&local, "staging", 0..200);

    let group = dir.path().join("diaspora.group");
    let _server = server::ServerProcess::start("tcp;ofi_rxm", &dir.path().join("srv"), &group);
    let remote: Vec<String> = vec![
        "--driver".into(),
        "fabric".into(),
        "--driver.group_file".into(),
        group.to_str().expect("utf-8").into(),
    ];
    run(
        &[
            "topic",
            "create",
            "--name",
            "runs",
            "--topic.num_partitions",
            "2",
        ],
        &strs(&remote),
        None,
    );
    let yaml = dir.path().join("forward.yaml");
    std::fs::write(
        &yaml,
        format!(
            "drivers:\n  node:\n    type: files\n    options:\n      root_path: \"{}\"\n\
             \x20 center:\n    type: fabric\n    options:\n      group_file: \"{}\"\n\
             forward:\n  - from: node/staging\n    to: center/runs\n",
            root.display(),
            group.display()
        ),
    )
    .expect("write config");
    let mut daemon = Daemon::start(&yaml);
    wait_until("200 events on the server", || {
        ids(&remote, "runs").len() >= 200
    });
    let (code, stderr) = daemon.signal(libc::SIGTERM);
    assert_eq!(code, Some(0), "{stderr}");
    let mut got = ids(&remote, "runs");
    got.sort_unstable();
    assert_eq!(got, (0..200).collect::<Vec<_>>());
}
