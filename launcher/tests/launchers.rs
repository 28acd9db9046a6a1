//! The probe under the real launchers of this machine: `srun` on the single-node Slurm
//! cluster that `slurm/up.sh` brings up (the test calls it; it is a no-op when the cluster
//! is up), `sbatch`, and Open MPI's `mpirun`.
//!
//! These tests need root, Slurm + munge and Open MPI (`scripts/install-deps.sh` installs
//! them). When something is missing they FAIL, saying what; they skip only when
//! `DIASPORA_SKIP_SLURM_TESTS=1` (Slurm tests) or `DIASPORA_SKIP_MPI_TESTS=1` (mpirun tests)
//! is set, and then say so loudly on stderr.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const LIMIT: Duration = Duration::from_secs(100);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn skip(var: &str, why: &str) -> bool {
    if std::env::var(var).as_deref() == Ok("1") {
        eprintln!("!!!!!!!! SKIPPED ({var}=1): {why} !!!!!!!!");
        return true;
    }
    panic!("{why}; install with `bash scripts/install-deps.sh` (as root), or set {var}=1 to skip this test");
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
    let up = Command::new("bash")
        .arg(repo_root().join("slurm/up.sh"))
        .env("SLURM_SKIP_INSTALL", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let o = wait_bounded(up, LIMIT, "slurm/up.sh");
    if !o.status.success() {
        return !skip(
            "DIASPORA_SKIP_SLURM_TESTS",
            &format!("slurm/up.sh failed: {}", text(&o)),
        );
    }
    true
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

fn probe_args(c: &mut Command, run: &Path, g: &Path, extra: &[&str]) {
    c.arg(PROBE)
        .arg("--run-dir")
        .arg(run)
        .arg("--group-file")
        .arg(g)
        .args([
            "--expect-ranks",
            "2",
            "--threads",
            "2",
            "--timeout-ms",
            "60000",
        ])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("DIASPORA_RUN_ID");
}

/// The CPUs each rank's threads were pinned to, per rank, from the group file.
fn cores_per_rank(g: &serde_json::Value) -> Vec<BTreeSet<u64>> {
    g["ranks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r["threads"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["core"].as_u64().expect("pinned core"))
                .collect()
        })
        .collect()
}

/// Both ranks in one group file, distinct processes, and no CPU used by both ranks.
fn check_two_rank_group(g: &Path, out: &str) {
    let gv = group(g);
    let ranks = group_ranks(&gv, 2);
    assert_ne!(ranks[0].1, ranks[1].1, "{gv}");
    let cores = cores_per_rank(&gv);
    assert!(
        cores[0].is_disjoint(&cores[1]),
        "ranks share CPUs {cores:?}\n{out}"
    );
}

/// Waits (bounded) for a batch job to leave the queue; returns its final state.
fn wait_job(job: &str) -> String {
    let deadline = Instant::now() + LIMIT;
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
        if !matches!(
            state.as_str(),
            "PENDING" | "RUNNING" | "COMPLETING" | "CONFIGURING" | ""
        ) {
            return state;
        }
        if Instant::now() > deadline {
            let _ = Command::new("scancel").arg(job).status();
            panic!("job {job} still {state} after {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn srun_two_ranks_form_one_group_file_on_their_own_cpus() {
    if !slurm_up() {
        return;
    }
    // bound by Slurm (task/affinity: one core per task), then unbound (the mask is split)
    for bind in ["--cpu-bind=cores", "--cpu-bind=none"] {
        let d = tempfile::tempdir().unwrap();
        let (run, g) = (d.path().join("run"), d.path().join("group.json"));
        let mut c = Command::new("srun");
        c.args(["-n", "2", "--time=2", bind]);
        probe_args(&mut c, &run, &g, &[]);
        let o = wait_bounded(c.spawn().unwrap(), LIMIT, "srun");
        let out = text(&o);
        assert!(o.status.success(), "{bind}: {out}");
        assert!(
            out.contains("(Slurm srun)") && out.contains("run slurm:"),
            "{out}"
        );
        check_two_rank_group(&g, &out);
        if bind == "--cpu-bind=none" && out.contains("process mask 0-1") {
            assert!(out.contains("split among 2 local ranks"), "{out}");
        }
    }
}

#[test]
fn sbatch_job_refuses_the_batch_shell_and_forms_a_group_with_srun_and_mpirun() {
    if !slurm_up() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let (run, g) = (d.path().join("run"), d.path().join("group.json"));
    let script = d.path().join("job.sh");
    let out_file = d.path().join("out.txt");
    std::fs::write(
        &script,
        format!(
            "#!/bin/bash\n#SBATCH --ntasks=2\n#SBATCH --time=00:02:00\n\
             # the batch shell is not a launch: rank 0 of 1, refused by --expect-ranks 2\n\
             if {p} --run-dir {r}.batch --group-file {g}.batch --expect-ranks 2; then echo BATCH-ACCEPTED; else echo BATCH-REFUSED; fi\n\
             srun {p} --run-dir {r} --group-file {g} --expect-ranks 2 --timeout-ms 60000 && echo STEP-OK\n\
             # mpirun inside the allocation: its ranks inherit the job's SLURM_* variables\n\
             mpirun --allow-run-as-root --oversubscribe -n 2 {p} --run-dir {r}.mpirun --group-file {g}.mpirun --expect-ranks 2 --timeout-ms 60000 && echo MPIRUN-OK\n",
            p = PROBE,
            r = run.display(),
            g = g.display()
        ),
    )
    .unwrap();
    let o = Command::new("sbatch")
        .arg("--parsable")
        .arg("-o")
        .arg(&out_file)
        .arg("-D")
        .arg(d.path())
        .arg(&script)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let job = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let state = wait_job(&job);
    let out = std::fs::read_to_string(&out_file).unwrap_or_default();
    assert_eq!(state, "COMPLETED", "{out}");
    assert!(
        out.contains("BATCH-REFUSED") && out.contains("2 ranks were expected"),
        "{out}"
    );
    assert!(out.contains("STEP-OK"), "{out}");
    assert!(
        out.contains("MPIRUN-OK") && out.contains("(Open MPI mpirun)"),
        "{out}"
    );
    check_two_rank_group(&PathBuf::from(format!("{}.mpirun", g.display())), &out);
    check_two_rank_group(&g, &out);
}

#[test]
fn mpirun_two_ranks_form_one_group_file_on_their_own_cpus() {
    if !mpirun_present() {
        return;
    }
    // bound by mpirun (np <= 2 binds to core), then unbound (the mask is split)
    for bind in ["core", "none"] {
        let d = tempfile::tempdir().unwrap();
        let (run, g) = (d.path().join("run"), d.path().join("group.json"));
        let mut c = Command::new("mpirun");
        c.args([
            "--allow-run-as-root",
            "--oversubscribe",
            "--bind-to",
            bind,
            "-n",
            "2",
        ]);
        probe_args(&mut c, &run, &g, &[]);
        let o = wait_bounded(c.spawn().unwrap(), LIMIT, "mpirun");
        let out = text(&o);
        assert!(o.status.success(), "--bind-to {bind}: {out}");
        assert!(
            out.contains("(Open MPI mpirun)") && out.contains("run ompi:"),
            "{out}"
        );
        check_two_rank_group(&g, &out);
        if bind == "none" {
            assert!(out.contains("split among 2 local ranks"), "{out}");
        }
    }
}

/// `--features mpi`: the rendezvous through MPI collectives, under `mpirun` and under
/// `srun --mpi=pmix`; a rank that fails to start stops every rank, naming it.
#[cfg(feature = "mpi")]
#[test]
fn mpi_feature_rendezvous_under_mpirun_and_srun_pmix() {
    if !mpirun_present() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let run = d.path().join("run");
    let g = d.path().join("group.json");
    let mut c = Command::new("mpirun");
    c.args(["--allow-run-as-root", "--oversubscribe", "-n", "2"]);
    probe_args(&mut c, &run, &g, &["--mpi"]);
    let o = wait_bounded(c.spawn().unwrap(), LIMIT, "mpirun --mpi");
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("MPI_COMM_WORLD=1/2") && out.contains("(mpi)"),
        "{out}"
    );
    check_two_rank_group(&g, &out);

    let g2 = d.path().join("group2.json");
    let mut c = Command::new("mpirun");
    c.args(["--allow-run-as-root", "--oversubscribe", "-n", "2"]);
    probe_args(&mut c, &run, &g2, &["--mpi", "--fail-rank", "1"]);
    let o = wait_bounded(c.spawn().unwrap(), LIMIT, "mpirun --mpi --fail-rank");
    let out = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(
        out.contains("rank 0: rank 1 (pid") && out.contains("injected failure"),
        "{out}"
    );
    assert!(!g2.exists());

    if !slurm_up() {
        return;
    }
    let g3 = d.path().join("group3.json");
    let mut c = Command::new("srun");
    c.args(["--mpi=pmix", "-n", "2", "--time=2"]);
    probe_args(&mut c, &run, &g3, &["--mpi"]);
    let o = wait_bounded(c.spawn().unwrap(), LIMIT, "srun --mpi=pmix");
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("(Slurm srun)") && out.contains("MPI_COMM_WORLD=0/2"),
        "{out}"
    );
    check_two_rank_group(&g3, &out);
}

/// Submits `slurm/stream.sbatch` (the user template) with the probe standing in for the
/// server and `cat` of the group file as the application: the servers step forms the
/// group, the application step starts once the group file exists, the job completes.
#[test]
fn stream_sbatch_template_runs_servers_then_the_application() {
    if !slurm_up() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let run = d.path().join("run");
    let g = run.join("group.json");
    let out_file = d.path().join("out.txt");
    let o = Command::new("sbatch")
        .args(["--parsable", "-n", "2"])
        .arg(format!(
            "--export=ALL,SERVER={PROBE},SERVER_ARGS=--threads 1,APP=cat,APP_ARGS={},RUN_DIR={},DATA_DIR={}",
            g.display(),
            run.display(),
            d.path().join("data").display()
        ))
        .arg("-o")
        .arg(&out_file)
        .arg(repo_root().join("slurm/stream.sbatch"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let job = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let state = wait_job(&job);
    let out = std::fs::read_to_string(&out_file).unwrap_or_default();
    assert_eq!(state, "COMPLETED", "{out}");
    assert!(
        out.contains("group file ready") && out.contains("application step exited with status 0"),
        "{out}"
    );
    // the application printed the group file the servers wrote
    assert!(
        out.contains("\"epoch\"") && out.contains("\"token\""),
        "{out}"
    );
    check_two_rank_group(&g, &out);
}

/// `srun -n 2` of a program that does not see the launcher's variables (here `env -i`, as a
/// wrapper script or a mismatched MPI would): two "rank 0 of 1" copies, both refused, no
/// group file.
#[test]
fn srun_copies_without_launcher_variables_are_refused() {
    if !slurm_up() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let (run, g) = (d.path().join("run"), d.path().join("group.json"));
    let mut c = Command::new("srun");
    c.args(["-n", "2", "--time=2", "env", "-i"])
        .arg(PROBE)
        .arg("--run-dir")
        .arg(&run)
        .arg("--group-file")
        .arg(&g)
        .args(["--singleton-grace-ms", "3000"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let o = wait_bounded(c.spawn().unwrap(), LIMIT, "srun env -i");
    let out = text(&o);
    assert!(!o.status.success(), "{out}");
    assert_eq!(
        out.matches("2 processes each think they are rank 0 of 1")
            .count(),
        2,
        "{out}"
    );
    assert!(!g.exists(), "{out}");
}
