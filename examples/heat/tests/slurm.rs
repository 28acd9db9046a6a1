//! `slurm/heat.sbatch` on the single-node Slurm cluster that `slurm/up.sh` brings up (the test
//! calls it; a no-op when the cluster is up): a real `diaspora-server` as job step 0, `heat-sim`
//! under `srun --mpi=pmix` as step 1 and `heat-analysis` as step 2, through the `fabric`
//! driver on tcp;ofi_rxm. The job checks that every selected step was analysed exactly once.
//!
//! Needs root, Slurm + munge and Open MPI (`scripts/install-deps.sh`); when something is
//! missing it FAILS saying what, and skips only with `DIASPORA_SKIP_SLURM_TESTS=1`.

#![cfg(feature = "fabric")]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SIM: &str = env!("CARGO_BIN_EXE_heat-sim");

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

fn skip(why: &str) -> bool {
    if std::env::var("DIASPORA_SKIP_SLURM_TESTS").as_deref() == Ok("1") {
        eprintln!("!!!!!!!! SKIPPED (DIASPORA_SKIP_SLURM_TESTS=1): {why} !!!!!!!!");
        return true;
    }
    panic!("{why}; install with `bash scripts/install-deps.sh` (as root), or set DIASPORA_SKIP_SLURM_TESTS=1 to skip this test");
}

fn run_bounded(mut c: Command, limit: Duration, what: &str) -> std::process::Output {
    let child = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.unwrap_or_else(|e| panic!("{what}: {e}")),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("{what} did not finish within {limit:?}");
        }
    }
}

/// `diaspora-server` beside our binaries; built if missing (e.g. `cargo test -p` alone).
fn server_bin_dir() -> PathBuf {
    let dir = Path::new(SIM).parent().expect("bin dir").to_path_buf();
    if !dir.join("diaspora-server").is_file() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut c = Command::new(cargo);
        c.args(["build", "-p", "diaspora-server", "--target-dir"])
            .arg(dir.parent().expect("target dir"));
        let out = run_bounded(
            c,
            Duration::from_secs(100),
            "cargo build -p diaspora-server",
        );
        assert!(
            out.status.success(),
            "cargo build -p diaspora-server: {out:?}"
        );
    }
    dir
}

fn job_state(job: &str) -> (String, String) {
    let s = Command::new("scontrol")
        .args(["show", "job", job])
        .output()
        .expect("scontrol");
    let s = String::from_utf8_lossy(&s.stdout).to_string();
    let state = s
        .split_whitespace()
        .find_map(|w| w.strip_prefix("JobState="))
        .unwrap_or("")
        .to_string();
    (state, s)
}

#[test]
fn heat_sbatch_streams_the_simulation_through_a_server_to_the_analysis_exactly_once() {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root && skip("Slurm tests need root (slurm/up.sh starts munged, slurmctld, slurmd)") {
        return;
    }
    if Command::new("slurmd").arg("-V").output().is_err() && skip("Slurm is not installed") {
        return;
    }
    let mut up = Command::new("bash");
    up.arg(repo_root().join("slurm/up.sh"))
        .env("SLURM_SKIP_INSTALL", "1");
    let st = run_bounded(up, Duration::from_secs(60), "slurm/up.sh");
    if !st.status.success() && skip(&format!("slurm/up.sh failed: {st:?}")) {
        return;
    }
    let bin = server_bin_dir();
    let d = tempfile::tempdir().expect("tempdir");
    let out_file = d.path().join("job.out");
    let mut sb = Command::new("sbatch");
    sb.args(["--parsable", "-n", "2"])
        .arg(format!(
            "--export=ALL,BIN={},OUT={},STEPS=60,EVERY=5,K=20,PNG_STEPS=60,NX=40,NY=30,SRUN_ARGS=--overlap",
            bin.display(),
            d.path().join("out").display()
        ))
        .arg("-o")
        .arg(&out_file)
        .arg(repo_root().join("slurm/heat.sbatch"));
    let o = run_bounded(sb, Duration::from_secs(30), "sbatch");
    assert!(o.status.success(), "sbatch: {o:?}");
    let job = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let deadline = Instant::now() + Duration::from_secs(100);
    let state = loop {
        let (state, all) = job_state(&job);
        if !state.is_empty()
            && !["PENDING", "RUNNING", "CONFIGURING", "COMPLETING"].contains(&state.as_str())
        {
            break state;
        }
        if Instant::now() > deadline {
            let _ = Command::new("scancel").arg(&job).status();
            panic!("job {job} still {state} after the deadline: {all}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = std::fs::read_to_string(&out_file).unwrap_or_default();
    assert_eq!(state, "COMPLETED", "{out}");
    assert!(
        out.contains("[heat] CHECK OK: 4 steps analysed, each exactly once"),
        "{out}"
    );
    let png = d.path().join("out/heat-step000060.png");
    let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("{}: {e}\n{out}", png.display()));
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{}", png.display());
}
