//! Issue 5 item 7: `diaspora-ctl consume` reports damaged events on stderr, carries on with the
//! next ones, acknowledges past them, and exits non-zero at the end.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_diaspora-ctl");
const PART: &str = "d/partitions/00000000/00000000000000000000";
/// Index file header and record sizes (see the files driver's `format`).
const INDEX_HEADER: u64 = 16;
const INDEX_RECORD: u64 = 40;
const DATA_SIZE: u64 = 64;

fn ctl(root: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .args(["--driver", "files", "--driver.root_path"])
        .arg(root)
        .stdin(Stdio::null())
        .output()
        .expect("run diaspora-ctl")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "stdout:\n{}\nstderr:\n{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    text(&o.stdout)
}

/// Flips one byte of a partition file.
fn flip(root: &Path, ext: &str, offset: u64) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(root.join(format!("{PART}.{ext}")))
        .expect("open");
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset).expect("read");
    b[0] ^= 0x5a;
    f.write_all_at(&b, offset).expect("write");
}

fn ids(stdout: &str) -> Vec<u64> {
    stdout
        .lines()
        .map(|l| {
            l.split(' ')
                .nth(1)
                .and_then(|id| id.parse().ok())
                .unwrap_or_else(|| panic!("bad line {l:?}"))
        })
        .collect()
}

#[test]
fn consume_reports_damaged_events_and_moves_past_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    ok(ctl(root, &["topic", "create", "--name", "d"]));
    ok(ctl(
        root,
        &[
            "produce",
            "--name",
            "d",
            "--count",
            "7",
            "--data-size",
            "64",
        ],
    ));
    // Metadata offsets, from the metadata as stored (printed verbatim, one line per event).
    let all = ok(ctl(
        root,
        &["consume", "--name", "d", "--consumer", "peek", "--no-ack"],
    ));
    let meta_lens: Vec<u64> = all
        .lines()
        .map(|l| l.splitn(3, ' ').nth(2).expect("metadata").len() as u64)
        .collect();
    assert_eq!(meta_lens.len(), 7, "{all}");
    let meta_offset = |i: usize| meta_lens[..i].iter().sum::<u64>();

    flip(root, "index", INDEX_HEADER + INDEX_RECORD + 3); // event 1: its index record
    flip(root, "data", 2 * DATA_SIZE + 10); // event 2: data
    flip(root, "meta", meta_offset(4) + 1); // event 4: metadata
    flip(root, "data", 6 * DATA_SIZE + 1); // event 6, the last one: data

    let consume = || {
        ctl(
            root,
            &[
                "consume",
                "--name",
                "d",
                "--consumer",
                "c",
                "--data",
                "--timeout-ms",
                "300",
            ],
        )
    };
    let run = consume();
    let (stdout, stderr) = (text(&run.stdout), text(&run.stderr));
    assert_eq!(
        run.status.code(),
        Some(1),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert_eq!(ids(&stdout), vec![0, 3, 5], "the readable events, in order");
    for (id, why) in [(1, "record 1"), (2, "data"), (4, "metadata"), (6, "data")] {
        let line = stderr
            .lines()
            .find(|l| l.starts_with(&format!("damaged event: partition 0 event {id}: ")))
            .unwrap_or_else(|| panic!("event {id} not reported:\n{stderr}"));
        assert!(
            line.contains(why),
            "event {id}: reason lacks {why:?}: {line}"
        );
    }
    assert!(
        stderr.contains("error: topic d: 4 damaged event(s) reported and skipped"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    // Acknowledgements moved past everything reported, the damaged last event included.
    let again = consume();
    assert_eq!(
        again.status.code(),
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        text(&again.stdout),
        text(&again.stderr)
    );
    assert_eq!(text(&again.stdout), "");
    assert_eq!(text(&again.stderr), "");
}
