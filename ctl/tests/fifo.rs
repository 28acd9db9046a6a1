//! `diaspora-ctl fifo`: a real daemon process, real FIFOs, writers that come and go, readers
//! that leave, bad lines and commands, SIGTERM with everything flushed. Every wait has a
//! deadline.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_diaspora-ctl");
const DEADLINE: Duration = Duration::from_secs(30);

fn ctl(root: &Path, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .args(["--driver", "files", "--driver.root_path"])
        .arg(root)
        .stdin(Stdio::null())
        .output()
        .expect("run diaspora-ctl")
}

fn create(root: &Path, topic: &str) {
    let o = ctl(root, &["topic", "create", "--name", topic]);
    assert!(o.status.success(), "{o:?}");
}

/// Every event's metadata (as `consume` prints it: `<partition> <id> <json>`), without
/// acknowledging anything.
fn consumed(root: &Path, topic: &str, consumer: &str) -> Vec<String> {
    let o = ctl(
        root,
        &[
            "consume",
            "--name",
            topic,
            "--consumer",
            consumer,
            "--timeout-ms",
            "500",
            "--no-ack",
        ],
    );
    assert!(o.status.success(), "{o:?}");
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| l.splitn(3, ' ').nth(2).unwrap_or_default().to_owned())
        .collect()
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn is_fifo(p: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_fifo())
}

fn mkfifo(p: &Path) {
    let o = Command::new("mkfifo").arg(p).output().expect("mkfifo");
    assert!(o.status.success(), "{o:?}");
}

struct Daemon {
    child: Child,
    control: PathBuf,
    stderr: PathBuf,
}

impl Daemon {
    fn start(root: &Path, dir: &Path, level: &str) -> Daemon {
        let control = dir.join("control");
        let stderr = dir.join("daemon.err");
        let child = Command::new(BIN)
            .args(["fifo", "--driver", "files", "--driver.root_path"])
            .arg(root)
            .arg("--control-file")
            .arg(&control)
            .args(["--logging", level])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("start daemon");
        let d = Daemon {
            child,
            control,
            stderr,
        };
        wait_until("the control FIFO", || is_fifo(&d.control));
        d
    }

    /// Writes one command into the control FIFO (a writer that comes and goes).
    fn send(&self, command: &str) {
        write_fifo(&self.control, &format!("{command}\n"));
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn wait_log(&self, needle: &str) {
        wait_until(needle, || self.stderr().contains(needle));
    }

    /// SIGTERM, then waits for the exit (bounded); returns its status code.
    fn terminate(mut self) -> (Option<i32>, String) {
        let pid = i32::try_from(self.child.id()).expect("pid");
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return (status.code(), self.stderr());
            }
            if start.elapsed() > DEADLINE {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("daemon did not stop on SIGTERM: {}", self.stderr());
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

/// Opens the FIFO for writing (in a thread, so a missing reader fails the deadline instead of
/// hanging), writes `text`, closes.
fn write_fifo(path: &Path, text: &str) {
    let (tx, rx) = mpsc::channel();
    let path = path.to_owned();
    let text = text.to_owned();
    std::thread::spawn(move || {
        let r = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|mut f| f.write_all(text.as_bytes()));
        let _ = tx.send(r);
    });
    rx.recv_timeout(DEADLINE)
        .expect("FIFO writer timed out")
        .expect("write FIFO");
}

/// Reads exactly `n` lines from the FIFO one byte at a time (nothing read beyond them), then
/// closes it.
fn read_fifo_exactly(path: &Path, n: usize) -> Vec<String> {
    use std::io::Read;
    let (tx, rx) = mpsc::channel();
    let path = path.to_owned();
    std::thread::spawn(move || {
        let r = std::fs::File::open(&path).and_then(|mut f| {
            let mut lines = Vec::new();
            let mut line = Vec::new();
            let mut byte = [0u8; 1];
            while lines.len() < n {
                if f.read(&mut byte)? == 0 {
                    break;
                }
                if byte[0] == b'\n' {
                    lines.push(String::from_utf8_lossy(&line).into_owned());
                    line.clear();
                } else {
                    line.push(byte[0]);
                }
            }
            Ok(lines)
        });
        let _ = tx.send(r);
    });
    rx.recv_timeout(DEADLINE)
        .expect("FIFO reader timed out")
        .expect("read FIFO")
}

/// Reads `n` lines from the FIFO with one reader (opened in a thread), then closes it.
fn read_fifo(path: &Path, n: usize) -> Vec<String> {
    let (tx, rx) = mpsc::channel();
    let path = path.to_owned();
    std::thread::spawn(move || {
        let r = std::fs::File::open(&path).and_then(|f| {
            BufReader::new(f)
                .lines()
                .take(n)
                .collect::<std::io::Result<Vec<_>>>()
        });
        let _ = tx.send(r);
    });
    rx.recv_timeout(DEADLINE)
        .expect("FIFO reader timed out")
        .expect("read FIFO")
}

#[test]
fn lines_from_writers_that_come_and_go_become_events_and_flow_back_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("data");
    create(&root, "t");
    let d = Daemon::start(&root, dir.path(), "info");
    let input = dir.path().join("in");
    d.send(&format!(
        "{} -> t (format=json, batch_size=4)",
        input.display()
    ));
    wait_until("the producer FIFO", || is_fifo(&input));
    // Five writers one after the other, and a Fortran-style record with a trailing space.
    for w in 0..5 {
        let mut text = String::new();
        for i in 0..10 {
            text.push_str(&format!("{{\"w\": {w}, \"i\": {i}}}\n"));
        }
        if w == 2 {
            text.push_str("{not json\n\n   \n");
        }
        write_fifo(&input, &text);
    }
    write_fifo(&input, "{\"w\": 9, \"i\": 0} \n");
    let expected = 51;
    wait_until("51 stored events", || {
        consumed(&root, "t", "peek").len() >= expected
    });

    let output = dir.path().join("out");
    mkfifo(&output);
    d.send(&format!("{} <- t (format=json)", output.display()));
    let lines = read_fifo(&output, expected);
    assert_eq!(lines.len(), expected);
    let values: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).expect("one JSON document per line"))
        .collect();
    for w in 0..5 {
        for i in 0..10 {
            let want = serde_json::json!({"w": w, "i": i});
            assert!(values.contains(&want), "{want} missing from {lines:?}");
        }
    }
    let (code, stderr) = d.terminate();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("skipped"),
        "bad line not reported: {stderr}"
    );
    assert!(stderr.contains("line 31 skipped"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!dir.path().join("control").exists(), "control FIFO removed");
    assert!(!input.exists(), "producer FIFO removed");
    assert!(output.exists(), "the user's consumer FIFO is left alone");
}

#[test]
fn sigterm_flushes_every_line_already_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("data");
    create(&root, "t");
    let d = Daemon::start(&root, dir.path(), "error");
    let input = dir.path().join("in");
    // Large batches: nothing is flushed by size, only by idleness or shutdown.
    d.send(&format!("{} -> t (batch_size=100000)", input.display()));
    wait_until("the producer FIFO", || is_fifo(&input));
    let text: String = (0..2000).map(|i| format!("line {i}\n")).collect();
    // Held open while the daemon is told to stop: the FIFO is still being written.
    let mut writer = std::fs::OpenOptions::new()
        .write(true)
        .open(&input)
        .expect("open");
    writer.write_all(text.as_bytes()).expect("write");
    let (code, stderr) = d.terminate();
    drop(writer);
    assert_eq!(code, Some(0), "{stderr}");
    let events = consumed(&root, "t", "c");
    assert_eq!(events.len(), 2000, "{stderr}");
    assert_eq!(events[0], "\"line 0\"");
    assert_eq!(events[1999], "\"line 1999\"");
}

#[test]
fn bad_commands_are_reported_and_skipped_and_the_daemon_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("data");
    create(&root, "t");
    let d = Daemon::start(&root, dir.path(), "error");
    let regular = dir.path().join("regular");
    std::fs::write(&regular, "x").expect("write");
    d.send("this is not a command");
    d.send(&format!(
        "{} -> no-such-topic",
        dir.path().join("a").display()
    ));
    d.send(&format!(
        "{} -> t (format=xml)",
        dir.path().join("b").display()
    ));
    d.send(&format!("{} -> t", regular.display()));
    d.send(&format!("{} <- t", dir.path().join("missing").display()));
    d.wait_log("this is not a command");
    d.wait_log("no-such-topic");
    d.wait_log("xml");
    d.wait_log("not a FIFO");
    // The consumer of a missing FIFO fails in its own thread, reported at shutdown.
    let input = dir.path().join("in");
    d.send(&format!("{} -> t", input.display()));
    wait_until("the producer FIFO", || is_fifo(&input));
    d.send(&format!("{} -> t", input.display()));
    d.wait_log("already served");
    write_fifo(&input, "still working\n");
    wait_until("the event", || consumed(&root, "t", "peek").len() == 1);
    let (code, stderr) = d.terminate();
    assert_eq!(
        code,
        Some(1),
        "the failed consumer FIFO makes the exit status 1: {stderr}"
    );
    assert!(stderr.contains("missing"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!dir.path().join("a").exists() && !dir.path().join("b").exists());
    assert_eq!(std::fs::read(&regular).expect("read"), b"x");
}

#[test]
fn a_reader_that_leaves_loses_nothing_the_next_reader_gets_the_rest() {
    // (A reader that reads bytes and drops them, like a buffered reader closed early, loses
    // them: acknowledgement follows what left the pipe.)
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("data");
    create(&root, "t");
    let o = Command::new(BIN)
        .args(["produce", "--name", "t", "--stdin"])
        .args(["--driver", "files", "--driver.root_path"])
        .arg(&root)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .and_then(|mut c| {
            let mut stdin = c.stdin.take().expect("stdin");
            for i in 0..100 {
                writeln!(stdin, "\"e{i}\"")?;
            }
            drop(stdin);
            c.wait_with_output()
        })
        .expect("produce");
    assert!(o.status.success(), "{o:?}");
    let d = Daemon::start(&root, dir.path(), "warn");
    let output = dir.path().join("out");
    mkfifo(&output);
    d.send(&format!("{} <- t (consumer=viz)", output.display()));
    // The first reader reads 10 lines and leaves; whatever the daemon had written into the
    // pipe beyond them goes to the second reader: nothing lost, nothing twice. The second
    // reader opens once the daemon has taken the lines back. (One that opens in the instant
    // between the daemon finding the FIFO without a reader and the take-back, and reads part
    // of a line in it, gets that line again whole after the part: the outlet cannot tell its
    // read from the departed reader's. That window is covered, with its documented outcome,
    // by the unit tests of `ctl/src/fifo/outlet.rs`; this test hit it once in CI on
    // 2026-12-08, `e1` then `e10`.)
    let mut seen = read_fifo_exactly(&output, 10);
    d.wait_log("reader went away");
    seen.extend(read_fifo_exactly(&output, 90));
    assert_eq!(seen, (0..100).map(|i| format!("e{i}")).collect::<Vec<_>>());
    let (code, stderr) = d.terminate();
    assert_eq!(code, Some(0), "{stderr}");
}
