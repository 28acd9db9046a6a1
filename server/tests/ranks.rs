//! `diaspora-server` as two ranks under the real launchers of this machine: `srun` on the
//! single-node Slurm cluster that `slurm/up.sh` brings up (the test calls it; a no-op when
//! the cluster is up) and Open MPI's `mpirun`. A protocol client creates a topic on rank 0,
//! produces to every partition at its owning rank and thread, fetches every event back once,
//! then the launcher's signal stops both ranks.
//!
//! These tests need root, Slurm + munge and Open MPI (`scripts/install-deps.sh`). When
//! something is missing they FAIL, saying what; they skip only with
//! `DIASPORA_SKIP_SLURM_TESTS=1` / `DIASPORA_SKIP_MPI_TESTS=1`, and say so on stderr.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use diaspora_proto::{GroupFile, Status};
use diaspora_server::client::{Client, ClientError, Fetched};

const SERVER: &str = env!("CARGO_BIN_EXE_diaspora-server");
const LIMIT: Duration = Duration::from_secs(60);
const PROVIDER: &str = "tcp;ofi_rxm";

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
    let mut up = Command::new("bash")
        .arg(repo_root().join("slurm/up.sh"))
        .env("SLURM_SKIP_INSTALL", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let st = wait_child(&mut up, LIMIT, "slurm/up.sh");
    if !st.success() {
        return !skip(
            "DIASPORA_SKIP_SLURM_TESTS",
            &format!("slurm/up.sh failed ({st})"),
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

/// Waits for `child` at most `limit`; kills it (and fails the test) past that.
fn wait_child(child: &mut Child, limit: Duration, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(st) = diaspora_fabric::try_reap_child(child).unwrap() {
            return st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = diaspora_fabric::reap_child(child);
            panic!("{what}: still running after {limit:?}, killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A launcher process running the server ranks; killed and reaped on drop.
struct Ranks {
    child: Option<Child>,
    log: PathBuf,
}

impl Ranks {
    fn spawn(mut c: Command, log: &Path) -> Ranks {
        let f = std::fs::File::create(log).unwrap();
        let child = c
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .env_remove("DIASPORA_RUN_ID")
            .spawn()
            .unwrap();
        Ranks {
            child: Some(child),
            log: log.to_owned(),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (bounded) for a group file of `n` ranks.
    fn group(&mut self, path: &Path, n: usize) -> GroupFile {
        let deadline = Instant::now() + LIMIT;
        loop {
            if let Ok(text) = std::fs::read_to_string(path) {
                if let Ok(g) = GroupFile::parse(&text) {
                    if g.ranks.len() == n {
                        return g;
                    }
                }
            }
            if let Some(st) = diaspora_fabric::try_reap_child(self.child.as_mut().unwrap()).unwrap()
            {
                panic!("launcher exited early ({st}): {}", self.log());
            }
            assert!(Instant::now() < deadline, "no group file: {}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().unwrap();
        wait_child(&mut c, LIMIT, "launcher")
    }
}

impl Drop for Ranks {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            // SIGKILL leaves shm names (16 MiB of tmpfs each) behind.
            let _ = diaspora_fabric::reap_child(&mut c);
        }
    }
}

fn server_args(c: &mut Command, data: &Path, group: &Path, provider: &str) {
    c.arg(SERVER)
        .arg("--data-dir")
        .arg(data)
        .arg("--group-file")
        .arg(group)
        .args([
            "--provider",
            provider,
            "--threads",
            "2",
            "--expect-ranks",
            "2",
        ]);
}

fn events(n: usize, tag: u8) -> Vec<(Vec<u8>, Vec<u8>)> {
    (0..n)
        .map(|i| {
            (
                format!("{{\"i\":{i},\"p\":{tag}}}").into_bytes(),
                vec![tag ^ i as u8; 64 + i],
            )
        })
        .collect()
}

/// The client half: one group of two ranks, a topic of 4 partitions created on rank 0,
/// produced to at each partition's owner, every event fetched back exactly once.
fn exercise(g: &GroupFile, group: &Path) {
    assert_eq!(g.ranks.len(), 2, "{g:?}");
    assert_eq!(g.ranks[0].rank, 0);
    assert_eq!(g.ranks[1].rank, 1);
    assert_ne!(g.ranks[0].pid, g.ranks[1].pid);
    assert_eq!(g.ranks[0].threads.len(), 2);
    assert_eq!(g.ranks[1].threads.len(), 2);
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(group).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "group file mode");

    let c = Client::connect(group).unwrap();
    assert_eq!(
        c.epoch, g.epoch,
        "rank 1 answers Hello with the group's epoch"
    );
    c.create_topic("t", r#"{"num_partitions": 4}"#).unwrap();
    // Administration is rank 0 thread 0 only.
    let e = match c.call::<_, diaspora_proto::admin::Empty>(
        2,
        &diaspora_proto::admin::TopicCreate {
            name: "u".into(),
            options: "{}".into(),
        },
    ) {
        Err(ClientError::Refused(e)) => e,
        other => panic!("rank 1 must refuse administration, got {other:?}"),
    };
    assert_eq!(e.status, Status::WrongThread, "{e}");
    let t = c.open_topic("t").unwrap();
    let owners: BTreeSet<(u32, u32)> = t.placement.iter().map(|p| (p.rank, p.thread)).collect();
    assert_eq!(
        owners.len(),
        4,
        "every (rank, thread) serves one partition: {:?}",
        t.placement
    );
    for p in 0..4u32 {
        for seq in 0..2u64 {
            let r = c
                .produce(&t, "t", p, 7, seq, &events(10, (p * 2 + seq as u32) as u8))
                .unwrap();
            assert_eq!(r.first_id, seq * 10);
        }
        // Sent to a thread that does not own it: refused, not stored.
        let wrong = (c.owner(&t.placement, p) + 1) % 4;
        let e = match c.call::<_, diaspora_proto::ProduceResponse>(
            wrong,
            &c.produce_request("t", p, 8, 0, &events(1, 0)).unwrap().0,
        ) {
            Err(ClientError::Refused(e)) => e,
            other => panic!("expected WrongThread, got {other:?}"),
        };
        assert_eq!(e.status, Status::WrongThread, "{e}");
    }
    for p in 0..4u32 {
        let mut got: Vec<Fetched> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while got.len() < 20 {
            assert!(
                Instant::now() < deadline,
                "partition {p}: only {} events",
                got.len()
            );
            let (_, batch) = c
                .fetch(&t, "t", p, "c", Some(got.len() as u64), 100, 100, 1 << 20)
                .unwrap();
            got.extend(batch);
        }
        let (f, rest) = c.fetch(&t, "t", p, "c", Some(20), 100, 0, 1 << 20).unwrap();
        assert!(
            rest.is_empty() && f.count == 0,
            "partition {p}: extra events {rest:?}"
        );
        let want: Vec<Fetched> = events(10, (p * 2) as u8)
            .into_iter()
            .chain(events(10, (p * 2 + 1) as u8))
            .enumerate()
            .map(|(i, (meta, data))| Fetched {
                id: i as u64,
                meta,
                data,
            })
            .collect();
        assert_eq!(got, want, "partition {p}");
        c.commit(&t, "t", p, "c", 20).unwrap();
        assert_eq!(c.position(&t, "t", p, "c").unwrap(), 20);
    }
    // Completed on rank 0: rank 1 learns it from the shared data directory.
    c.complete_topic("t").unwrap();
    for p in 0..4u32 {
        let (f, rest) = c.fetch(&t, "t", p, "c", Some(20), 100, 0, 0).unwrap();
        assert!(rest.is_empty(), "partition {p}");
        assert_ne!(
            f.flags & diaspora_proto::fetch::END_OF_STREAM,
            0,
            "partition {p} (rank {}) reports the end of the stream",
            t.placement[p as usize].rank
        );
        let e = match c.produce(&t, "t", p, 9, 0, &events(1, 0)) {
            Err(ClientError::Refused(e)) => e,
            other => panic!("partition {p}: a complete topic must refuse, got {other:?}"),
        };
        assert_eq!(e.status, Status::Complete, "{e}");
    }
}

/// Both ranks logged a clean stop; together they stored 8 batches of 10 events.
fn check_stopped(log: &str) {
    let stops: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("diaspora-server: stopped;"))
        .collect();
    assert_eq!(stops.len(), 2, "both ranks stop cleanly:\n{log}");
    let stored: u64 = stops
        .iter()
        .map(|l| {
            l.split("batches (")
                .nth(1)
                .and_then(|s| s.split(' ').next())
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap()
        })
        .sum();
    assert_eq!(stored, 80, "{log}");
}

fn verify(data: &Path) {
    let report = diaspora_driver_files::verify_topic(data, "t").unwrap();
    assert_eq!(report.len(), 4);
    for r in report {
        assert_eq!(
            (r.records, r.torn_tail_bytes, r.unreadable.is_none()),
            (20, 0, true),
            "{r:?}"
        );
    }
}

#[test]
fn srun_two_server_ranks_serve_one_group_and_stop_on_scancel() {
    if !slurm_up() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let (data, group) = (d.path().join("data"), d.path().join("group.json"));
    let name = format!("ranks-test-{}", std::process::id());
    let mut c = Command::new("srun");
    c.args([
        "-n",
        "2",
        "--time=3",
        "--cpu-bind=cores",
        "--job-name",
        &name,
    ]);
    server_args(&mut c, &data, &group, PROVIDER);
    let mut ranks = Ranks::spawn(c, &d.path().join("srun.log"));
    let g = ranks.group(&group, 2);
    exercise(&g, &group);
    let o = Command::new("scancel")
        .args(["--signal=TERM", "--name", &name])
        .output()
        .unwrap();
    assert!(o.status.success(), "scancel: {o:?}");
    let st = ranks.wait();
    let log = ranks.log();
    assert!(log.contains("(Slurm srun)"), "the launch is logged:\n{log}");
    assert!(
        log.contains("progress thread(s): thread 0 -> cpu"),
        "the layout is logged:\n{log}"
    );
    check_stopped(&log);
    assert!(st.success(), "srun exit {st}:\n{log}");
    verify(&data);
}

#[test]
fn mpirun_two_server_ranks_serve_one_group_and_stop_on_sigterm() {
    if !mpirun_present() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let (data, group) = (d.path().join("data"), d.path().join("group.json"));
    let mut c = Command::new("mpirun");
    c.args([
        "-n",
        "2",
        "--allow-run-as-root",
        "--oversubscribe",
        "--bind-to",
        "none",
    ]);
    server_args(&mut c, &data, &group, PROVIDER);
    let mut ranks = Ranks::spawn(c, &d.path().join("mpirun.log"));
    let g = ranks.group(&group, 2);
    exercise(&g, &group);
    // SIGTERM to each rank (mpirun's own SIGTERM forwarding escalates to SIGKILL after a
    // short delay): both stop cleanly, so mpirun exits with success.
    let t0 = Instant::now();
    for r in &g.ranks {
        // SAFETY: kill has no memory-safety preconditions; the pids are our ranks.
        unsafe { libc::kill(r.pid as i32, libc::SIGTERM) };
    }
    let st = ranks.wait();
    eprintln!("both ranks stopped in {:?}", t0.elapsed());
    let log = ranks.log();
    assert!(st.success(), "mpirun exit {st}:\n{log}");
    assert!(
        log.contains("(Open MPI mpirun)"),
        "the launch is logged:\n{log}"
    );
    check_stopped(&log);
    verify(&data);
}

#[test]
fn memory_storage_is_refused_for_several_ranks_and_a_wrong_rank_count_is_refused() {
    // The launcher's variables alone (as srun sets them), no Slurm needed: the refusal comes
    // before anything listens.
    let d = tempfile::tempdir().unwrap();
    let (data, group) = (d.path().join("data"), d.path().join("group.json"));
    let run = |extra: &[&str], vars: &[(&str, &str)]| {
        let mut c = Command::new(SERVER);
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .arg("--data-dir")
            .arg(&data)
            .arg("--group-file")
            .arg(&group)
            .args(extra)
            .envs(vars.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        let st = wait_child(&mut child, LIMIT, "diaspora-server");
        let o = child.wait_with_output().unwrap();
        (st, String::from_utf8_lossy(&o.stderr).to_string())
    };
    let slurm = [
        ("SLURM_JOB_ID", "999999"),
        ("SLURM_STEP_ID", "0"),
        ("SLURM_PROCID", "0"),
        ("SLURM_STEP_NUM_TASKS", "2"),
        ("SLURM_LOCALID", "0"),
        ("SLURM_STEP_TASKS_PER_NODE", "2"),
    ];
    let (st, err) = run(&["--storage", "memory"], &slurm);
    assert_eq!(st.code(), Some(1), "{err}");
    assert!(
        err.contains("--storage memory cannot be shared by 2 ranks"),
        "{err}"
    );
    let (st, err) = run(&["--expect-ranks", "3"], &slurm);
    assert_eq!(st.code(), Some(1), "{err}");
    assert!(err.contains('3') && err.contains("rank 0 of 2"), "{err}");
    // No launcher and --expect-ranks 2: two unrelated "rank 0 of 1" servers are refused.
    let (st, err) = run(&["--expect-ranks", "2"], &[]);
    assert_eq!(st.code(), Some(1), "{err}");
    assert!(
        err.contains("rank 0 of 1 (no launcher) but 2 ranks were expected"),
        "{err}"
    );
    assert!(!group.exists());
}

#[test]
fn a_rank_that_fails_to_start_stops_the_other_naming_it() {
    if !mpirun_present() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let (data, group) = (d.path().join("data"), d.path().join("group.json"));
    // MPMD: rank 0 is fine, rank 1 asks for a provider that does not exist.
    let mut c = Command::new("mpirun");
    c.args([
        "--allow-run-as-root",
        "--oversubscribe",
        "--bind-to",
        "none",
        "-n",
        "1",
    ]);
    server_args(&mut c, &data, &group, PROVIDER);
    c.args([":", "-n", "1"]);
    server_args(&mut c, &data, &group, "no-such-provider");
    let mut ranks = Ranks::spawn(c, &d.path().join("mpirun.log"));
    let st = ranks.wait();
    let log = ranks.log();
    assert!(!st.success(), "{log}");
    assert!(
        log.lines().any(|l| l.contains("rank 0 of 2")
            && l.contains("rank 1")
            && l.contains("no-such-provider")),
        "rank 0 stops naming rank 1 and its reason:\n{log}"
    );
    assert!(
        !group.exists(),
        "no group file for a group that did not form"
    );
}

/// `diaspora-ctl` next to the server binary (built by a workspace build).
fn ctl() -> PathBuf {
    let p = Path::new(SERVER).with_file_name("diaspora-ctl");
    assert!(
        p.exists(),
        "{} is missing: build it first (`cargo build -p diaspora-ctl`; a workspace `cargo nextest run` builds it)",
        p.display()
    );
    p
}

/// Waits (bounded) for a batch job to leave the queue; returns its final state.
fn wait_job(job: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(110);
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
fn stream_sbatch_runs_two_server_ranks_a_producer_and_a_consumer_through_the_fabric_driver() {
    if !slurm_up() {
        return;
    }
    let ctl = ctl();
    let d = tempfile::tempdir().unwrap();
    let run = d.path().join("run");
    let out_file = d.path().join("out.txt");
    let o = Command::new("sbatch")
        .args(["--parsable", "-n", "2"])
        .arg(format!(
            "--export=ALL,SERVER={SERVER},CTL={},RUN_DIR={},DATA_DIR={},EVENTS=500,APP_SRUN_ARGS=--overlap",
            ctl.display(),
            run.display(),
            d.path().join("data").display()
        ))
        .arg("-o")
        .arg(&out_file)
        .arg(repo_root().join("slurm/stream.sbatch"))
        .output()
        .unwrap();
    assert!(o.status.success(), "sbatch: {o:?}");
    let job = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let state = wait_job(&job);
    let out = std::fs::read_to_string(&out_file).unwrap_or_default();
    assert_eq!(state, "COMPLETED", "{out}");
    assert!(
        out.contains(
            "CHECK OK: 500 events produced, each consumed exactly once, from 4 partitions"
        ),
        "{out}"
    );
    let g = GroupFile::parse(&std::fs::read_to_string(run.join("group.json")).unwrap()).unwrap();
    assert_eq!(g.ranks.len(), 2, "{out}");
    check_both_stopped_with(&out, 500);
    assert!(out.contains("server step exited with status 0"), "{out}");
}

#[test]
fn mpirun_two_server_ranks_with_diaspora_ctl_over_the_fabric_driver() {
    if !mpirun_present() {
        return;
    }
    let ctl = ctl();
    let d = tempfile::tempdir().unwrap();
    let (data, group) = (d.path().join("data"), d.path().join("group.json"));
    let mut c = Command::new("mpirun");
    c.args([
        "-n",
        "2",
        "--allow-run-as-root",
        "--oversubscribe",
        "--bind-to",
        "none",
    ]);
    server_args(&mut c, &data, &group, PROVIDER);
    let mut ranks = Ranks::spawn(c, &d.path().join("mpirun.log"));
    let g = ranks.group(&group, 2);
    let run = |args: &[&str], stdin: Option<&Path>| {
        let mut c = Command::new(&ctl);
        c.args(args)
            .args(["--driver", "fabric", "--driver.group_file"])
            .arg(&group)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c.stdin(match stdin {
            Some(p) => Stdio::from(std::fs::File::open(p).unwrap()),
            None => Stdio::null(),
        });
        let mut child = c.spawn().unwrap();
        let st = wait_child(&mut child, LIMIT, "diaspora-ctl");
        let o = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&o.stdout).to_string();
        assert!(
            st.success(),
            "ctl {args:?}: {st} {text} {}",
            String::from_utf8_lossy(&o.stderr)
        );
        text
    };
    run(
        &[
            "topic",
            "create",
            "--name",
            "t",
            "--topic.num_partitions",
            "4",
        ],
        None,
    );
    let input = d.path().join("in.jsonl");
    let lines: String = (0..400).map(|i| format!("{{\"i\": {i}}}\n")).collect();
    std::fs::write(&input, lines).unwrap();
    run(&["produce", "--name", "t", "--stdin"], Some(&input));
    let out = run(
        &[
            "consume",
            "--name",
            "t",
            "--consumer",
            "c",
            "--count",
            "400",
            "--timeout-ms",
            "30000",
        ],
        None,
    );
    let mut ids: Vec<u64> = out
        .lines()
        .map(|l| {
            let j: serde_json::Value =
                serde_json::from_str(l.splitn(3, ' ').nth(2).unwrap()).unwrap();
            j["i"].as_u64().unwrap()
        })
        .collect();
    let parts: BTreeSet<&str> = out.lines().filter_map(|l| l.split(' ').next()).collect();
    ids.sort();
    assert_eq!(
        ids,
        (0..400).collect::<Vec<_>>(),
        "every event consumed exactly once"
    );
    assert_eq!(parts.len(), 4, "{out}");
    for r in &g.ranks {
        // SAFETY: kill has no memory-safety preconditions; the pids are our ranks.
        unsafe { libc::kill(r.pid as i32, libc::SIGTERM) };
    }
    let st = ranks.wait();
    let log = ranks.log();
    assert!(st.success(), "mpirun exit {st}:\n{log}");
    check_both_stopped_with(&log, 400);
}

/// Both ranks logged a clean stop, and each stored some of the `total` events.
fn check_both_stopped_with(log: &str, total: u64) {
    let per_rank: Vec<u64> = log
        .lines()
        .filter(|l| l.contains("diaspora-server: stopped;"))
        .map(|l| {
            l.split("batches (")
                .nth(1)
                .and_then(|s| s.split(' ').next())
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap()
        })
        .collect();
    assert_eq!(per_rank.len(), 2, "both ranks stop cleanly:\n{log}");
    assert!(
        per_rank.iter().all(|&n| n > 0),
        "both ranks stored events: {per_rank:?}\n{log}"
    );
    assert_eq!(per_rank.iter().sum::<u64>(), total, "{log}");
}
