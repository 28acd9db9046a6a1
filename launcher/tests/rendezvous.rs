//! The run-directory rendezvous with real processes (the probe binary), launcher variables
//! set by hand as srun would set them: group formation, refused singletons, stale files,
//! failed and killed ranks.

#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::*;

const LIMIT: Duration = Duration::from_secs(60);

fn slurm_vars(rank: u32, size: u32, job: &str) -> Vec<(&'static str, String)> {
    vec![
        ("SLURM_PROCID", rank.to_string()),
        ("SLURM_STEP_NUM_TASKS", size.to_string()),
        ("SLURM_STEP_ID", "0".into()),
        ("SLURM_JOB_ID", job.into()),
    ]
}

#[test]
fn two_ranks_from_slurm_variables_form_one_group_file() {
    let d = tempfile::tempdir().unwrap();
    let (run, g) = (d.path().join("run"), d.path().join("group.json"));
    let job = unique("two");
    let kids: Vec<_> = (0..2)
        .map(|r| {
            probe(&run, &g, &slurm_vars(r, 2, &job))
                .args(["--expect-ranks", "2", "--threads", "2"])
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<_> = kids
        .into_iter()
        .map(|k| wait_bounded(k, LIMIT, "probe"))
        .collect();
    for o in &outs {
        assert!(o.status.success(), "{}", text(o));
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("sees 2 ranks"),
            "{}",
            text(o)
        );
    }
    let gv = group(&g);
    let ranks = group_ranks(&gv, 2);
    assert_ne!(ranks[0].1, ranks[1].1, "two processes");
    assert!(gv["epoch"].as_u64().unwrap_or(0) > 0);
    assert_eq!(gv["ranks"][0]["threads"].as_array().map(Vec::len), Some(2));
    let mode = std::fs::metadata(&g).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn copies_started_without_a_launcher_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let (run, g) = (d.path().join("run"), d.path().join("group.json"));
    // with --expect-ranks: refused at once, naming what it found
    let o = wait_bounded(
        probe(&run, &g, &[])
            .args(["--expect-ranks", "3"])
            .spawn()
            .unwrap(),
        LIMIT,
        "probe",
    );
    assert!(!o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("rank 0 of 1") && err.contains("3 ranks were expected"),
        "{err}"
    );

    // without it: the run directory sees three "rank 0 of 1" claims, and all three stop
    let kids: Vec<_> = (0..3)
        .map(|_| {
            probe(&run, &g, &[])
                .args(["--singleton-grace-ms", "3000"])
                .spawn()
                .unwrap()
        })
        .collect();
    for k in kids {
        let o = wait_bounded(k, LIMIT, "probe");
        assert!(!o.status.success(), "{}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("each think they are rank 0 of 1"), "{err}");
    }
    assert!(!g.exists(), "no group file for N unrelated singletons");

    // a single copy alone is fine once the claims of the dead copies above are stale: older
    // than its window (twice its grace). Refused claims younger than that count, so that a
    // copy that starts after its siblings already met and stopped is refused too.
    std::thread::sleep(std::time::Duration::from_millis(600));
    let o = wait_bounded(
        probe(&run, &g, &[])
            .args(["--singleton-grace-ms", "200"])
            .spawn()
            .unwrap(),
        LIMIT,
        "probe",
    );
    assert!(o.status.success(), "{}", text(&o));
    group_ranks(&group(&g), 1);
}

#[test]
fn disagreeing_launcher_variables_name_both() {
    let d = tempfile::tempdir().unwrap();
    let vars = [
        ("OMPI_COMM_WORLD_RANK", "1".to_string()),
        ("OMPI_COMM_WORLD_SIZE", "2".to_string()),
        ("PMIX_RANK", "0".to_string()),
    ];
    let o = wait_bounded(
        probe(&d.path().join("run"), &d.path().join("g"), &vars)
            .spawn()
            .unwrap(),
        LIMIT,
        "probe",
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("OMPI_COMM_WORLD_RANK=1") && err.contains("PMIX_RANK=0"),
        "{err}"
    );
}

/// Writes a rank file as an earlier run (or a dead process) would have left it.
fn plant(run: &std::path::Path, rank: u32, size: u32, run_id: &str, pid: u32, start: u64) {
    std::fs::create_dir_all(run).unwrap();
    let e = serde_json::json!({
        "version": 1, "run_id": run_id, "rank": rank, "size": size,
        "process": {"host": diaspora_launcher::hostname(),
                    "boot": std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap().trim(),
                    "pid": pid, "start": start},
        "written_ms": 1, "state": "ready", "error": null,
        "payload": {"threads": [{"core": 0, "address": "00"}]}});
    std::fs::write(run.join(format!("rank-{rank}.json")), e.to_string()).unwrap();
}

#[test]
fn a_stale_run_directory_is_not_trusted() {
    let d = tempfile::tempdir().unwrap();
    let (run, g) = (d.path().join("run"), d.path().join("group.json"));
    let job = unique("stale");
    // rank 1's slot: a ready entry of an earlier run, by a live process (this test)
    plant(&run, 1, 2, "slurm:earlier.0", std::process::id(), 0);
    let o = wait_bounded(
        probe(&run, &g, &slurm_vars(0, 2, &job))
            .args(["--timeout-ms", "1500"])
            .spawn()
            .unwrap(),
        LIMIT,
        "probe",
    );
    assert!(!o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("missing ranks [1]") && err.contains("another run"),
        "{err}"
    );
    assert!(!g.exists());

    // this run's id, but a process that is gone (pid reused: other start time)
    plant(&run, 1, 2, &format!("slurm:{job}.0"), std::process::id(), 1);
    let o = wait_bounded(
        probe(&run, &g, &slurm_vars(0, 2, &job))
            .args(["--timeout-ms", "5000"])
            .spawn()
            .unwrap(),
        LIMIT,
        "probe",
    );
    assert!(!o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("rank 1") && err.contains("died"), "{err}");
    assert!(!g.exists());

    // a rank waiting for rank 0 does not take an earlier run's formed.json
    let formed = serde_json::json!({"version": 1, "run_id": "slurm:earlier.0", "epoch": 5,
        "outcome": {"formed": []}});
    std::fs::write(run.join("formed.json"), formed.to_string()).unwrap();
    let o = wait_bounded(
        probe(&run, &g, &slurm_vars(1, 2, &unique("stale2")))
            .args(["--timeout-ms", "1000"])
            .spawn()
            .unwrap(),
        LIMIT,
        "probe",
    );
    assert!(!o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no group after"), "{err}");
}

#[test]
fn a_rank_killed_before_publishing_makes_rank_0_fail_naming_it() {
    let d = tempfile::tempdir().unwrap();
    let (run, g) = (d.path().join("run"), d.path().join("group.json"));
    let job = unique("kill");
    let mut hanging = probe(&run, &g, &slurm_vars(1, 2, &job))
        .args(["--hang-rank", "1"])
        .spawn()
        .unwrap();
    let pid = hanging.id();
    // wait (bounded) until rank 1 has joined, then kill -9 it
    let deadline = Instant::now() + LIMIT;
    while !run.join("rank-1.json").exists() {
        assert!(Instant::now() < deadline, "rank 1 never joined");
        assert!(hanging.try_wait().unwrap().is_none(), "rank 1 exited early");
        std::thread::sleep(Duration::from_millis(10));
    }
    // SAFETY: kill(2) on the pid of our own child, which has not been reaped yet.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    let _ = hanging.wait();
    let o = wait_bounded(
        probe(&run, &g, &slurm_vars(0, 2, &job)).spawn().unwrap(),
        LIMIT,
        "probe",
    );
    assert!(!o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("rank 1 (pid {pid} on")) && err.contains("died"),
        "{err}"
    );
    assert!(!g.exists());
}

#[test]
fn a_rank_that_fails_to_start_stops_every_rank_naming_it() {
    let d = tempfile::tempdir().unwrap();
    let (run, g) = (d.path().join("run"), d.path().join("group.json"));
    let job = unique("fail");
    let kids: Vec<_> = (0..3)
        .map(|r| {
            probe(&run, &g, &slurm_vars(r, 3, &job))
                .args(["--fail-rank", "2"])
                .spawn()
                .unwrap()
        })
        .collect();
    for (r, k) in kids.into_iter().enumerate() {
        let o = wait_bounded(k, LIMIT, "probe");
        assert!(!o.status.success(), "rank {r}: {}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        if r != 2 {
            assert!(
                err.contains("rank 2") && err.contains("injected failure"),
                "rank {r}: {err}"
            );
        }
    }
    assert!(!g.exists());
}
