//! `diaspora-ctl` against damaged and read-only files-driver trees: read-only commands change
//! nothing (and work on a read-only mount), `topic repair` fixes what `topic verify` reports
//! without reusing an event id.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_diaspora-ctl");

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    #[track_caller]
    fn ok(self) -> Self {
        assert_eq!(
            self.code,
            Some(0),
            "stdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    #[track_caller]
    fn fails_with(self, needle: &str) -> Self {
        assert_eq!(
            self.code,
            Some(1),
            "stdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}: {}",
            self.stderr
        );
        assert!(!self.stderr.contains("panicked"), "{}", self.stderr);
        self
    }
}

/// Runs `diaspora-ctl args... --driver files --driver.root_path root`.
fn ctl(root: &Path, args: &[&str]) -> Run {
    let out = Command::new(BIN)
        .args(args)
        .args(["--driver", "files", "--driver.root_path"])
        .arg(root)
        .stdin(Stdio::null())
        .output()
        .expect("run diaspora-ctl");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Every path under `dir` with its contents (directories as empty).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let p = e.expect("entry").path();
            let rel = p.strip_prefix(dir).expect("prefix").to_owned();
            if p.is_dir() {
                stack.push(p);
                out.insert(rel, Vec::new());
            } else {
                out.insert(rel, std::fs::read(&p).expect("read"));
            }
        }
    }
    out
}

/// A read-only view of a directory: a read-only bind mount when root (chmod does not stop
/// root), else the directory itself with its write permissions removed.
struct ReadOnly {
    path: PathBuf,
    mounted: bool,
    chmodded: Option<PathBuf>,
}

impl ReadOnly {
    fn new(src: &Path, mount_point: &Path) -> Self {
        if is_root() {
            std::fs::create_dir_all(mount_point).expect("mkdir");
            let run = |args: &[&std::ffi::OsStr]| {
                Command::new(args[0])
                    .args(&args[1..])
                    .status()
                    .is_ok_and(|s| s.success())
            };
            if run(&[
                "mount".as_ref(),
                "--bind".as_ref(),
                src.as_ref(),
                mount_point.as_ref(),
            ]) {
                if run(&[
                    "mount".as_ref(),
                    "-o".as_ref(),
                    "remount,ro,bind".as_ref(),
                    mount_point.as_ref(),
                ]) {
                    return ReadOnly {
                        path: mount_point.to_owned(),
                        mounted: true,
                        chmodded: None,
                    };
                }
                run(&["umount".as_ref(), mount_point.as_ref()]);
            }
            eprintln!("note: cannot bind-mount as root here; only checking nothing is created");
        }
        chmod_tree(src, false);
        ReadOnly {
            path: src.to_owned(),
            mounted: false,
            chmodded: Some(src.to_owned()),
        }
    }
}

/// Whether this process runs as root (where chmod does not stop writes).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg(&self.path).status();
        }
        if let Some(p) = &self.chmodded {
            chmod_tree(p, true);
        }
    }
}

fn chmod_tree(dir: &Path, writable: bool) {
    use std::os::unix::fs::PermissionsExt;
    let mut stack = vec![dir.to_owned()];
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            if writable {
                set_mode(&p, 0o755);
            }
            for e in std::fs::read_dir(&p).expect("read_dir") {
                stack.push(e.expect("entry").path());
            }
            if !writable {
                set_mode(&p, 0o555);
            }
        } else {
            set_mode(&p, if writable { 0o644 } else { 0o444 });
        }
    }
    fn set_mode(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
}

#[test]
fn read_only_commands_create_nothing_and_work_on_a_read_only_tree() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("data");
    ctl(
        &src,
        &[
            "topic",
            "create",
            "--name",
            "t",
            "--topic.num_partitions",
            "2",
        ],
    )
    .ok();
    ctl(
        &src,
        &[
            "produce",
            "--name",
            "t",
            "--count",
            "6",
            "--data-size",
            "10",
        ],
    )
    .ok();
    ctl(
        &src,
        &["consume", "--name", "t", "--consumer", "c1", "--count", "2"],
    )
    .ok();
    let before = snapshot(&src);
    let ro = ReadOnly::new(&src, &dir.path().join("ro"));
    let root = ro.path.clone();

    let list = ctl(&root, &["topic", "list"]).ok();
    assert_eq!(list.stdout.trim(), "t");
    let described = ctl(&root, &["topic", "describe", "--name", "t"]).ok();
    assert!(
        described.stdout.contains("\"num_events\": 3"),
        "{}",
        described.stdout
    );
    ctl(&root, &["topic", "verify", "--name", "t"]).ok();
    // An existing consumer resumes after its acknowledgements; a new one starts at 0.
    let c1 = ctl(
        &root,
        &[
            "consume",
            "--name",
            "t",
            "--consumer",
            "c1",
            "--no-ack",
            "--data",
        ],
    )
    .ok();
    assert_eq!(c1.stdout.lines().count(), 4, "{}", c1.stdout);
    let fresh = ctl(
        &root,
        &["consume", "--name", "t", "--consumer", "new", "--no-ack"],
    )
    .ok();
    assert_eq!(fresh.stdout.lines().count(), 6, "{}", fresh.stdout);
    // A root that does not exist is listed as empty, not created.
    let missing = root.join("nowhere");
    assert_eq!(ctl(&missing, &["topic", "list"]).ok().stdout, "");
    ctl(&missing, &["topic", "describe", "--name", "t"]).fails_with("not found");
    assert!(!missing.exists(), "list created the root");
    if ro.mounted {
        // Writing commands fail clearly on a read-only mount.
        ctl(&root, &["produce", "--name", "t", "--count", "1"]).fails_with("read-only");
    }
    drop(ro);
    assert_eq!(
        snapshot(&src),
        before,
        "a read-only command changed the tree"
    );
}

#[test]
fn repair_fixes_what_verify_reports_and_never_reuses_ids() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    ctl(root, &["topic", "create", "--name", "r"]).ok();
    ctl(
        root,
        &[
            "produce",
            "--name",
            "r",
            "--count",
            "6",
            "--data-size",
            "32",
        ],
    )
    .ok();
    let part = root.join("r/partitions/00000000/00000000000000000000");
    let data = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(part.with_extension("data"))
        .expect("open data");
    data.write_all_at(&[0xff], 2 * 32 + 3)
        .expect("damage event 2");
    data.set_len(5 * 32 + 1)
        .expect("truncate: event 5 past the end");
    let damaged = ctl(root, &["topic", "verify", "--name", "r"]).fails_with("2 damaged record(s)");
    assert!(
        damaged.stdout.contains("data checksum mismatch"),
        "{}",
        damaged.stdout
    );

    let repaired = ctl(root, &["topic", "repair", "--name", "r"]).ok();
    let report: serde_json::Value = serde_json::from_str(&repaired.stdout).expect("json");
    let ids: Vec<u64> = report[0]["tombstoned"]
        .as_array()
        .expect("tombstoned")
        .iter()
        .map(|t| t["record"].as_u64().expect("record"))
        .collect();
    assert_eq!(ids, vec![2, 5]);
    let clean = ctl(root, &["topic", "verify", "--name", "r"]).ok();
    assert!(
        clean.stdout.contains("\"tombstones\": 2"),
        "{}",
        clean.stdout
    );

    ctl(
        root,
        &[
            "produce",
            "--name",
            "r",
            "--count",
            "1",
            "--data-size",
            "32",
        ],
    )
    .ok();
    // The new event is 6, not a reused id.
    let described = ctl(root, &["topic", "describe", "--name", "r"]).ok();
    assert!(
        described.stdout.contains("\"num_events\": 7"),
        "{}",
        described.stdout
    );
    let consumed = ctl(
        root,
        &["consume", "--name", "r", "--consumer", "c", "--data"],
    );
    let ids: Vec<&str> = consumed
        .stdout
        .lines()
        .map(|l| l.split(' ').nth(1).expect("id"))
        .collect();
    // Events 2 and 5 are gone for good and reported as such; the others are all served.
    assert_eq!(
        ids,
        ["0", "1", "3", "4", "6"],
        "{}\n{}",
        consumed.stdout,
        consumed.stderr
    );
    assert!(
        consumed.stderr.contains("removed by topic repair"),
        "{}",
        consumed.stderr
    );
    let other = Command::new(BIN)
        .args(["topic", "repair", "--name", "r", "--driver", "other"])
        .output()
        .expect("run");
    assert_eq!(other.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&other.stderr);
    assert!(
        stderr.contains("only available with the files driver"),
        "{stderr}"
    );
}
