//! The worked example end to end with real processes: `mpirun -n 2 heat-sim` on the files
//! driver, `heat-analysis` killed with SIGKILL mid-run and restarted; every selected step is
//! logged exactly once, the numbers match a run that was never killed, and the PNG decodes.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SIM: &str = env!("CARGO_BIN_EXE_heat-sim");
const ANALYSIS: &str = env!("CARGO_BIN_EXE_heat-analysis");
const STEPS: u64 = 120;
const K: u64 = 10;

fn mpirun_sim(root: &Path, delay_ms: u64) -> Child {
    Command::new("mpirun")
        .args([
            "-n",
            "2",
            "--oversubscribe",
            "--bind-to",
            "none",
            SIM,
            "--expect-ranks",
            "2",
        ])
        .arg("--root")
        .arg(root)
        .args([
            "--nx",
            "40",
            "--ny",
            "30",
            "--every",
            "5",
            "--steps",
            &STEPS.to_string(),
        ])
        .args(["--delay-ms", &delay_ms.to_string()])
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .stdin(Stdio::null())
        .spawn()
        .expect("mpirun (Debian: openmpi-bin) not found")
}

fn analysis(root: &Path, log: &Path, consumer: &str, extra: &[&str]) -> Command {
    let mut c = Command::new(ANALYSIS);
    c.arg("--root").arg(root).arg("--log").arg(log);
    c.args([
        "--consumer",
        consumer,
        "--k",
        &K.to_string(),
        "--timeout-ms",
        "30000",
    ]);
    c.args(extra);
    c
}

/// Runs `heat-analysis` (no options) to the end of the stream; fails unless it succeeds.
fn run_to_end(root: &Path, log: &Path, consumer: &str) {
    let st = analysis(root, log, consumer, &[])
        .stdout(Stdio::null())
        .status()
        .expect("run");
    assert!(st.success(), "heat-analysis --consumer {consumer}: {st}");
}

/// Waits for a child with a deadline; kills it and fails past it.
fn wait(mut child: Child, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// step -> (count, line)
fn steps(log: &Path) -> BTreeMap<u64, (usize, String)> {
    let mut m: BTreeMap<u64, (usize, String)> = BTreeMap::new();
    let text = std::fs::read_to_string(log).unwrap_or_default();
    // Only complete lines: the analysis may be writing one while we read.
    let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    for l in complete.lines() {
        let s: u64 = l
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("step line");
        let e = m.entry(s).or_insert((0, l.to_string()));
        e.0 += 1;
    }
    m
}

#[test]
fn analysis_killed_and_restarted_mid_run_logs_every_selected_step_exactly_once() {
    if std::env::var_os("DIASPORA_SKIP_MPI_TESTS").is_some() {
        eprintln!("skipped: DIASPORA_SKIP_MPI_TESTS");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("topics");
    let log = dir.path().join("steps.log");
    let sim = mpirun_sim(&root, 20);
    // The analysis starts while the simulation runs (the topic may not exist yet).
    let deadline = Instant::now() + Duration::from_secs(30);
    while !root.join("heat").exists() {
        assert!(
            Instant::now() < deadline,
            "the simulation never created its topic"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut first = analysis(&root, &log, "a", &[])
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(30);
    while steps(&log).len() < 3 {
        assert!(
            Instant::now() < deadline,
            "the analysis logged fewer than 3 steps in 30 s"
        );
        assert!(
            first.try_wait().expect("try_wait").is_none(),
            "analysis exited early"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    first.kill().expect("SIGKILL"); // Child::kill is SIGKILL on Unix
    let _ = first.wait();
    let before = steps(&log).len();
    assert!(
        before < (STEPS / K + 1) as usize,
        "killed after the end: not mid-run"
    );
    let second = analysis(&root, &log, "a", &["--png-steps", "60,120"])
        .arg("--png-dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn");
    assert!(wait(sim, "mpirun heat-sim").success());
    assert!(wait(second, "restarted analysis").success());

    let got = steps(&log);
    let want: Vec<u64> = (0..=STEPS).step_by(K as usize).collect();
    assert_eq!(
        got.keys().copied().collect::<Vec<_>>(),
        want,
        "killed after {before} steps"
    );
    for (s, (n, _)) in &got {
        assert_eq!(*n, 1, "step {s} logged {n} times");
    }

    // The same numbers as a fresh consumer that was never killed.
    let log2 = dir.path().join("fresh.log");
    run_to_end(&root, &log2, "fresh");
    let fresh = steps(&log2);
    assert_eq!(
        fresh.values().map(|v| &v.1).collect::<Vec<_>>(),
        got.values().map(|v| &v.1).collect::<Vec<_>>()
    );

    // A restarted consumer with nothing left logs nothing more.
    run_to_end(&root, &log, "a");
    assert_eq!(steps(&log), got);

    // (step 0 was done before the kill.) The PNGs exist and are 40 x 30 RGB PNGs with valid chunk CRCs.
    for s in [60, 120] {
        let png = std::fs::read(dir.path().join(format!("heat-step{s:06}.png"))).expect("png");
        check_png(&png, 40, 30);
    }
}

fn check_png(b: &[u8], w: u32, h: u32) {
    assert_eq!(&b[..8], b"\x89PNG\r\n\x1a\n");
    let mut i = 8;
    let mut kinds = Vec::new();
    while i < b.len() {
        let len = u32::from_be_bytes(b[i..i + 4].try_into().expect("len")) as usize;
        let body = &b[i + 4..i + 8 + len];
        let crc = u32::from_be_bytes(b[i + 8 + len..i + 12 + len].try_into().expect("crc"));
        assert_eq!(crc32fast::hash(body), crc, "chunk CRC");
        if &body[..4] == b"IHDR" {
            assert_eq!(u32::from_be_bytes(body[4..8].try_into().expect("w")), w);
            assert_eq!(u32::from_be_bytes(body[8..12].try_into().expect("h")), h);
        }
        kinds.push(String::from_utf8_lossy(&body[..4]).to_string());
        i += 12 + len;
    }
    assert_eq!(kinds, ["IHDR", "IDAT", "IEND"]);
}

#[test]
fn a_column_window_selects_only_those_columns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("topics");
    // Single-rank run (no launcher): MPI initialises as one rank.
    let st = Command::new(SIM)
        .arg("--root")
        .arg(&root)
        .args([
            "--nx",
            "16",
            "--ny",
            "8",
            "--steps",
            "20",
            "--every",
            "10",
            "--expect-ranks",
            "1",
        ])
        .status()
        .expect("sim");
    assert!(st.success());
    let log = dir.path().join("w.log");
    let st = analysis(&root, &log, "w", &["--cols", "4:12", "--png-steps", "20"])
        .arg("--png-dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .status()
        .expect("analysis");
    assert!(st.success());
    assert_eq!(steps(&log).keys().copied().collect::<Vec<_>>(), [0, 10, 20]);
    let png = std::fs::read(dir.path().join("heat-step000020.png")).expect("png");
    check_png(&png, 8, 8);
    // A bad window is refused with a clear error.
    let out = analysis(&root, &log, "w", &["--cols", "9:3"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--cols"));
}

/// A kill between the acknowledgements of two partitions, made on purpose: consumer "a" has
/// partition 0 acknowledged past its slab of step 20 and partition 1 only up to step 15 (the
/// analysis logged steps 0..=20 before acknowledging). The restarted analysis gets back only
/// rank 1's slab of step 20: it must not wait for rank 0's, and it logs every later step once.
#[test]
fn restart_after_a_kill_between_two_partitions_acks_completes_the_run() {
    if std::env::var_os("DIASPORA_SKIP_MPI_TESTS").is_some() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("topics");
    assert!(wait(mpirun_sim(&root, 0), "mpirun heat-sim").success());
    // The reference: a consumer that was never interrupted.
    let full = dir.path().join("full.log");
    run_to_end(&root, &full, "full");
    let want = steps(&full);
    assert_eq!(want.len() as u64, STEPS / K + 1);

    // Consumer "a" acknowledged up to (partition 0: step 20) and (partition 1: step 15).
    let root_s = root.to_str().expect("utf-8 path").to_owned();
    let driver = diaspora_example_heat::open_driver(&Some(root_s), &None).expect("driver");
    let topic = driver.open_topic("heat").expect("topic");
    let consumer = topic.consumer("a").expect("consumer");
    let upto = [20u64, 15];
    let mut acked = [false; 2];
    while !acked.iter().all(|&a| a) {
        let event = consumer
            .pull()
            .wait(10_000)
            .expect("pull")
            .expect("an event within 10 s");
        assert!(!event.is_no_more_events(), "the stream ended early");
        let p = event.partition();
        let step = event.metadata().json().expect("json")["step"]
            .as_u64()
            .expect("step");
        if !acked[p] && step == upto[p] {
            event.acknowledge().expect("ack");
            acked[p] = true;
        }
    }
    drop(consumer);
    let log = dir.path().join("a.log");
    let logged: String = want
        .range(..=20)
        .map(|(_, (_, l))| format!("{l}\n"))
        .collect();
    std::fs::write(&log, logged).expect("write log");

    let out = analysis(&root, &log, "a", &[])
        .stdout(Stdio::null())
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "restarted analysis: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(steps(&log), want, "every step logged once, same numbers");
}
