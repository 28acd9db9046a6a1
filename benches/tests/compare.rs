//! The driver comparison and the P-process benchmark with real processes: `diaspora-bench
//! compare` at a tiny size (its own diaspora-servers on 127.0.0.1, raw fi_read through
//! diaspora-fabric-bench), `diaspora-bench ranks` under Open MPI's `mpirun -n 2`, a failing
//! rank, and `slurm/bench.sbatch` on the single-node Slurm that `slurm/up.sh` brings up.
//! Only the shape of the outputs is checked, never a timing.
//!
//! The mpirun and Slurm tests need root, Open MPI, Slurm + munge (`scripts/install-deps.sh`);
//! when something is missing they FAIL, saying what; they skip only with
//! `DIASPORA_SKIP_MPI_TESTS=1` / `DIASPORA_SKIP_SLURM_TESTS=1`, and say so on stderr.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BENCH: &str = env!("CARGO_BIN_EXE_diaspora-bench");
const CSV_HEADER: &str = "driver,provider,storage,case,producers,consumers,events,metadata_size,data_size,produce_events_s,produce_mib_s,consume_events_s,consume_mib_s,push_p50_us,push_p99_us,client_peak_rss_mib,server_peak_rss_mib,produced,consumed,error";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A binary next to diaspora-bench in the target directory (a workspace build has it).
fn sibling(name: &str, build: &str) -> PathBuf {
    let p = Path::new(BENCH).with_file_name(name);
    assert!(
        p.exists(),
        "{} is missing: build it first (`{build}`; a workspace `cargo nextest run` builds it)",
        p.display()
    );
    p
}

fn skip(var: &str, why: &str) -> bool {
    if std::env::var(var).as_deref() == Ok("1") {
        eprintln!("!!!!!!!! SKIPPED ({var}=1): {why} !!!!!!!!");
        return true;
    }
    panic!("{why}; install with `bash scripts/install-deps.sh` (as root), or set {var}=1 to skip this test");
}

/// Waits for `child` at most `limit`; kills it (and fails the test) past that.
fn wait_child(child: &mut Child, limit: Duration, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {limit:?}, killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `c` with its output in `log`, bounded by `limit`.
fn run_logged(mut c: Command, log: &Path, limit: Duration, what: &str) -> (bool, String) {
    let f = std::fs::File::create(log).unwrap();
    let mut child = c
        .stdin(Stdio::null())
        .stdout(f.try_clone().unwrap())
        .stderr(f)
        .env_remove("DIASPORA_RUN_ID")
        .spawn()
        .unwrap();
    let st = wait_child(&mut child, limit, what);
    (
        st.success(),
        std::fs::read_to_string(log).unwrap_or_default(),
    )
}

fn csv(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header = lines
        .next()
        .unwrap()
        .split(',')
        .map(str::to_owned)
        .collect();
    (
        header,
        lines
            .map(|l| l.split(',').map(str::to_owned).collect())
            .collect(),
    )
}

fn positive(row: &[String], header: &[String], col: &str) -> f64 {
    let i = header.iter().position(|h| h == col).unwrap();
    let v: f64 = row[i]
        .parse()
        .unwrap_or_else(|_| panic!("{col} = {:?} in {row:?}", row[i]));
    assert!(v > 0.0, "{col} = {v} in {row:?}");
    v
}

#[test]
fn compare_runs_every_driver_at_a_tiny_size_and_writes_csv_json_markdown_and_svg() {
    let server = sibling("diaspora-server", "cargo build -p diaspora-server");
    let fabric_bench = sibling(
        "diaspora-fabric-bench",
        "cargo build -p diaspora-rpc --bin diaspora-fabric-bench",
    );
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    let mut c = Command::new(BENCH);
    c.arg("compare")
        .arg("--out")
        .arg(&out)
        .args(["--scale", "0.0005", "--procs", "1,2", "--sizes", "0,65536"])
        .args(["--raw-secs", "0.02", "--row-timeout-s", "60"])
        .arg("--server")
        .arg(&server)
        .arg("--fabric-bench")
        .arg(&fabric_bench);
    let (ok, log) = run_logged(
        c,
        &d.path().join("compare.log"),
        Duration::from_secs(110),
        "compare",
    );
    assert!(ok, "compare failed:\n{log}");

    // results.csv: 4 drivers x (3 cases x 2 producer counts + 2 sweep sizes), every row
    // without error and every produced event consumed.
    let (header, rows) = csv(&out.join("results.csv"));
    assert_eq!(header.join(","), CSV_HEADER);
    assert_eq!(rows.len(), 4 * (3 * 2 + 2), "{log}");
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    for r in &rows {
        assert_eq!(r.len(), header.len(), "{r:?}");
        assert_eq!(r[col("error")], "", "{r:?}");
        assert_eq!(r[col("produced")], r[col("events")], "{r:?}");
        assert_eq!(r[col("consumed")], r[col("events")], "{r:?}");
        for c in [
            "produce_events_s",
            "produce_mib_s",
            "consume_events_s",
            "consume_mib_s",
            "push_p50_us",
            "push_p99_us",
            "client_peak_rss_mib",
        ] {
            positive(r, &header, c);
        }
        let fabric = r[col("driver")].starts_with("fabric");
        assert_eq!(
            r[col("server_peak_rss_mib")].is_empty(),
            !fabric,
            "a server RSS exactly for fabric rows: {r:?}"
        );
        if fabric {
            positive(r, &header, "server_peak_rss_mib");
        }
    }
    for d in ["files", "memory", "fabric-tcp", "fabric-shm"] {
        for case in ["a", "b", "c", "sweep"] {
            assert!(
                rows.iter()
                    .any(|r| r[col("driver")] == d && r[col("case")] == case),
                "no {d} {case} row"
            );
        }
    }

    // Raw fi_read of both providers, at 64 KiB with 1 and 8 in flight among them.
    let (raw_header, raw) = csv(&out.join("raw_fi_read.csv"));
    assert_eq!(
        raw_header.join(","),
        "provider,size,in_flight,raw_gib_s,engine_gib_s,engine_inline_gib_s"
    );
    for p in ["tcp;ofi_rxm", "shm"] {
        for qd in ["1", "8"] {
            let r = raw
                .iter()
                .find(|r| r[0] == p && r[1] == "65536" && r[2] == qd)
                .unwrap_or_else(|| panic!("no raw {p} 64 KiB qd {qd}: {raw:?}"));
            positive(r, &raw_header, "raw_gib_s");
        }
    }

    // results.json: the same rows with latency histograms, and the (b) produce/raw ratios.
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let jrows = doc["rows"].as_array().unwrap();
    assert_eq!(jrows.len(), rows.len());
    for r in jrows {
        assert!(
            r["produce"]["push_latency"]["buckets"]
                .as_array()
                .is_some_and(|b| !b.is_empty()),
            "{r}"
        );
        let per_rank = r["produce"]["per_rank"].as_array().unwrap().len();
        let expected = if r["driver"] == "memory" {
            1
        } else {
            r["producers"].as_u64().unwrap() as usize
        };
        assert_eq!(per_rank, expected, "{r}");
    }
    let ratios = doc["ratios"].as_array().unwrap();
    assert_eq!(ratios.len(), 2 * 2 * 2, "{ratios:?}");
    assert!(ratios
        .iter()
        .all(|l| l.as_str().unwrap().contains("% of raw fi_read 64 KiB")));
    assert!(doc["errors"].as_array().unwrap().is_empty());

    // results.md and the plots.
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(md.contains("| driver | case | data | P |"), "{md}");
    assert_eq!(md.matches("\n| fabric-tcp |").count(), 8, "{md}");
    assert!(md.contains("Raw `fi_read`"), "{md}");
    for (file, panels) in [("throughput.svg", 2), ("latency.svg", 3)] {
        let svg = std::fs::read_to_string(out.join(file)).unwrap();
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<g class=\"panel\">").count(), panels, "{file}");
        assert_eq!(svg.matches("<polyline").count(), 4 * panels, "{file}");
        for d in ["files", "memory", "fabric-tcp", "fabric-shm"] {
            assert!(svg.contains(&format!("data-name=\"{d}\"")), "{file}: {d}");
        }
        // Every series has points.
        assert!(!svg.contains("points=\"\""), "{file} has an empty series");
    }
    // Each row's scratch space (topics, server data, run directories) is gone.
    assert!(!out.join("scratch").exists());
}

#[test]
fn a_rank_that_fails_makes_rank_0_stop_naming_it() {
    let d = tempfile::tempdir().unwrap();
    let run = d.path().join("run");
    let spawn = |rank: &str, driver: &[&str]| {
        Command::new(BENCH)
            .args([
                "ranks", "--rank", rank, "--size", "2", "--run-id", "failing",
            ])
            .arg("--run-dir")
            .arg(&run)
            .args(["--events", "100", "--rendezvous-timeout-s", "60"])
            .args(driver)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let root = d.path().join("files");
    let r0 = spawn(
        "0",
        &[
            "--driver",
            "files",
            "--driver.root_path",
            root.to_str().unwrap(),
        ],
    );
    let mut r1 = spawn("1", &["--driver", "no-such-driver"]);
    let st1 = wait_child(&mut r1, Duration::from_secs(60), "rank 1");
    assert!(!st1.success());
    let o = r0.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "rank 0 must fail: {err}");
    assert!(
        err.contains("rank 1") && err.contains("no-such-driver"),
        "rank 0 names rank 1 and its reason: {err}"
    );
}

fn mpirun_present() -> bool {
    if Command::new("mpirun").arg("--version").output().is_err() {
        return !skip(
            "DIASPORA_SKIP_MPI_TESTS",
            "Open MPI's mpirun is not installed",
        );
    }
    true
}

#[test]
fn ranks_under_mpirun_two_processes_one_producer_one_consumer_every_event_consumed() {
    if !mpirun_present() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let results = d.path().join("results.json");
    let mut c = Command::new("mpirun");
    c.args([
        "-n",
        "2",
        "--allow-run-as-root",
        "--oversubscribe",
        "--bind-to",
        "none",
        BENCH,
        "ranks",
        "--driver",
        "files",
        "--events",
        "3000",
        "--data-size",
        "100",
        "--partitions",
        "3",
    ])
    .arg("--run-dir")
    .arg(d.path().join("run"))
    .arg("--results")
    .arg(&results);
    let (ok, log) = run_logged(
        c,
        &d.path().join("mpirun.log"),
        Duration::from_secs(100),
        "mpirun",
    );
    assert!(ok, "mpirun failed:\n{log}");
    assert!(log.contains("(Open MPI mpirun)"), "launch logged:\n{log}");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&results).unwrap()).unwrap();
    assert_eq!(v["launcher"], "Open MPI mpirun");
    assert_eq!(
        (
            v["size"].as_u64(),
            v["producers"].as_u64(),
            v["consumers"].as_u64()
        ),
        (Some(2), Some(1), Some(1))
    );
    assert_eq!(v["partitions"], 3);
    assert_eq!(v["produce"]["events"], 3000);
    assert_eq!(v["consume"]["events"], 3000);
    assert_eq!(v["produce"]["bytes"], v["consume"]["bytes"]);
    assert_eq!(v["produce"]["per_rank"][0]["rank"], 0);
    assert_eq!(v["consume"]["per_rank"][0]["rank"], 1);
    assert!(v["produce"]["push_p99_us"].as_f64().unwrap() > 0.0);
    // The files driver's data under the run directory is removed by rank 0.
    assert!(!d.path().join("run/data").exists());
}

/// Brings the cluster up (idempotent). `false`: skipped by the env var.
fn slurm_up() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return !skip(
            "DIASPORA_SKIP_SLURM_TESTS",
            "Slurm tests need root (slurm/up.sh starts munged, slurmctld, slurmd)",
        );
    }
    if Command::new("slurmd").arg("-V").output().is_err() {
        return !skip(
            "DIASPORA_SKIP_SLURM_TESTS",
            "Slurm is not installed (no slurmd)",
        );
    }
    let mut up = Command::new("bash")
        .arg(repo_root().join("slurm/up.sh"))
        .env("SLURM_SKIP_INSTALL", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let st = wait_child(&mut up, Duration::from_secs(60), "slurm/up.sh");
    if !st.success() {
        return !skip(
            "DIASPORA_SKIP_SLURM_TESTS",
            &format!("slurm/up.sh failed ({st})"),
        );
    }
    true
}

/// Waits (bounded) for a batch job to leave the queue; returns its final state.
fn wait_job(job: &str, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let s = Command::new("scontrol")
            .args(["show", "job", job])
            .output()
            .unwrap();
        let s = String::from_utf8_lossy(&s.stdout).to_string();
        let state = s
            .split_whitespace()
            .find_map(|w| w.strip_prefix("JobState="))
            .unwrap_or("")
            .to_string();
        if !state.is_empty()
            && !["PENDING", "RUNNING", "CONFIGURING", "COMPLETING"].contains(&state.as_str())
        {
            return state;
        }
        if Instant::now() > deadline {
            let _ = Command::new("scancel").arg(job).status();
            panic!("job {job} still {state} after the deadline: {s}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn bench_sbatch_runs_the_comparison_and_a_two_rank_srun_step_on_the_single_node_slurm() {
    if !slurm_up() {
        return;
    }
    let server = sibling("diaspora-server", "cargo build -p diaspora-server");
    let fabric_bench = sibling(
        "diaspora-fabric-bench",
        "cargo build -p diaspora-rpc --bin diaspora-fabric-bench",
    );
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    let out_file = d.path().join("job.txt");
    let o = Command::new("sbatch")
        .args(["--parsable", "-N", "1", "-n", "2", "-c", "1"])
        .arg("--export=ALL")
        .env("BENCH", BENCH)
        .env("SERVER", &server)
        .env("FABRIC_BENCH", &fabric_bench)
        .env("OUT_DIR", &out)
        .env("DATA_DIR", d.path().join("data"))
        .envs([
            ("SCALE", "0.0002"),
            ("PROCS", "1"),
            ("SIZES", "1024"),
            ("DRIVERS", "files,fabric-tcp"),
            ("RAW_SECS", "0.02"),
            ("RANKS", "2"),
            ("SRUN_ARGS", "--overlap"),
        ])
        .arg("-o")
        .arg(&out_file)
        .arg(repo_root().join("slurm/bench.sbatch"))
        .output()
        .unwrap();
    assert!(o.status.success(), "sbatch: {o:?}");
    let job = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let state = wait_job(&job, Duration::from_secs(110));
    let text = std::fs::read_to_string(&out_file).unwrap_or_default();
    assert_eq!(state, "COMPLETED", "{text}");
    assert!(
        text.contains("step 1 (compare) exited with status 0"),
        "{text}"
    );
    // Step 1: the comparison's files.
    let (header, rows) = csv(&out.join("compare/results.csv"));
    assert_eq!(header.join(","), CSV_HEADER);
    assert_eq!(rows.len(), 2 * (3 + 1), "{text}");
    for f in [
        "results.json",
        "results.md",
        "throughput.svg",
        "latency.svg",
        "raw_fi_read.csv",
    ] {
        assert!(out.join("compare").join(f).exists(), "{f}: {text}");
    }
    // Step 2: two srun ranks through the fabric driver against the server step, per case.
    for case in ["a", "b", "c"] {
        let v: Value = serde_json::from_str(
            &std::fs::read_to_string(out.join(format!("ranks-{case}.json")))
                .unwrap_or_else(|e| panic!("ranks-{case}.json: {e}\n{text}")),
        )
        .unwrap();
        assert_eq!(v["launcher"], "Slurm srun", "{v}");
        assert_eq!(v["size"], 2);
        assert_eq!(v["produce"]["events"], v["consume"]["events"], "{v}");
        assert!(v["produce"]["events"].as_u64().unwrap() > 0);
        assert!(
            text.contains(&format!("step 2 case ({case}): 2 ranks")),
            "{text}"
        );
    }
    assert!(text.contains("server step exited with status 0"), "{text}");
}
