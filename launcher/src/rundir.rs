//! The rendezvous through a run directory on a shared file system.
//!
//! ```text
//! every rank                         rank 0
//! ----------                         ------
//! join: mkdir, singleton check,
//!       rank-<r>.json = starting
//! (start the server, learn addresses)
//! publish(payload): = ready          wait: poll rank-0..N-1 until all ready,
//! wait: poll formed.json               a failure record or a dead local pid -> fail naming it,
//!       (and rank 0's liveness)         deadline -> fail naming the missing ranks;
//!                                      GroupWriter::write_group(epoch, ranks);
//!                                      formed.json = formed | failed(rank, reason)
//! ```
//!
//! A [`RunDir`] dropped before its rendezvous finished (an early return, a panic) writes a
//! failure record, so the other ranks stop at once with an error naming it instead of
//! waiting for the deadline. Ranks on other hosts that die without a record (`kill -9`)
//! are found by pid only on their own host; elsewhere the deadline names them.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::atomic::write_file_atomic;
use crate::entry::{
    classify, live_other_run, live_singleton, EntryState, Formed, Outcome, RankEntry, RunKey, Seen,
    ENTRY_VERSION, MAX_FILE_BYTES,
};
use crate::env::Launch;
use crate::proc::{ProcFs, ProcessId, ProcessProbe};

/// A boxed error from a [`GroupWriter`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Writes the group file once every rank is ready (rank 0 only). The server plugs in its
/// own format here (`diaspora-proto`'s group file); use [`write_file_atomic`] with mode
/// `0o600`.
pub trait GroupWriter {
    /// Writes the group of `ranks` (in rank order) with `epoch`.
    fn write_group(&mut self, epoch: u64, ranks: &[RankEntry]) -> Result<(), BoxError>;
}

impl<F> GroupWriter for F
where
    F: FnMut(u64, &[RankEntry]) -> Result<(), BoxError>,
{
    fn write_group(&mut self, epoch: u64, ranks: &[RankEntry]) -> Result<(), BoxError> {
        self(epoch, ranks)
    }
}

/// The longest pause between two reads of the run directory while waiting.
pub const MAX_POLL: Duration = Duration::from_millis(200);

/// Options of a rendezvous.
#[derive(Debug, Clone)]
pub struct RendezvousOptions {
    /// How long [`RunDir::wait`] waits for the group at most.
    pub timeout: Duration,
    /// The first pause between two reads of the run directory while waiting (then doubled
    /// up to [`MAX_POLL`]).
    pub poll: Duration,
    /// A process without launcher (rank 0 of 1) waits this long for other copies'
    /// claims before it trusts that it is alone. Zero disables the check.
    pub singleton_grace: Duration,
    /// Overrides the launcher's run id (needed when the launcher gives none and size > 1).
    pub run_id: Option<String>,
}

impl Default for RendezvousOptions {
    fn default() -> Self {
        RendezvousOptions {
            timeout: Duration::from_secs(60),
            poll: Duration::from_millis(20),
            singleton_grace: Duration::from_secs(1),
            run_id: None,
        }
    }
}

/// The formed group.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// Its epoch: nanoseconds since the Unix epoch when rank 0 formed it, and always above
    /// the epoch of an earlier group formed in the same run directory.
    pub epoch: u64,
    /// Every rank's entry, in rank order.
    pub ranks: Vec<RankEntry>,
}

/// Why a rendezvous failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RendezvousError {
    /// A file system operation failed.
    #[error("run directory: cannot {what} {path}: {source}")]
    Io {
        /// The operation.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Several ranks but no run id to tell this run's files from an earlier run's.
    #[error("rank {rank} of {size} but the launcher gives no run id: pass a run id (--run-id or DIASPORA_RUN_ID) so that files of an earlier run are not taken for live ranks")]
    NoRunId {
        /// This rank.
        rank: u32,
        /// The size.
        size: u32,
    },
    /// My slot is held by a live process of another run.
    #[error("run directory {dir} is in use: rank {rank}'s file belongs to live process {pid} on {host} of run {run_id:?}; use another run directory")]
    InUse {
        /// The directory.
        dir: PathBuf,
        /// The slot.
        rank: u32,
        /// Its process.
        pid: u32,
        /// Its host.
        host: String,
        /// Its run.
        run_id: String,
    },
    /// Several processes without a launcher each think they are rank 0 of 1.
    #[error("{} processes each think they are rank 0 of 1 in run directory {dir} (this one and {}): started without a launcher (or by the wrong one)? Start them with srun or mpirun, or pass --expect-ranks", others.len() + 1, others.join(", "))]
    Singletons {
        /// The directory.
        dir: PathBuf,
        /// The others, as `pid P on H`.
        others: Vec<String>,
    },
    /// A rank wrote a failure record.
    #[error("rank {rank} (pid {pid} on {host}) failed to start: {reason}")]
    RankFailed {
        /// The rank.
        rank: u32,
        /// Its pid.
        pid: u32,
        /// Its host.
        host: String,
        /// What it said.
        reason: String,
    },
    /// A rank's process is gone without a failure record.
    #[error("rank {rank} (pid {pid} on {host}) died before the group formed")]
    RankDied {
        /// The rank.
        rank: u32,
        /// Its pid.
        pid: u32,
        /// Its host.
        host: String,
    },
    /// Rank 0 reported that the group did not form.
    #[error("the group did not form: {reason}")]
    GroupFailed {
        /// The rank to blame, if one.
        rank: Option<u32>,
        /// Rank 0's reason.
        reason: String,
    },
    /// The deadline passed.
    #[error("rank {rank}: no group after {waited:?}: {}", describe_missing(missing, stale, *waiting_for_rank0))]
    Timeout {
        /// This rank.
        rank: u32,
        /// How long it waited.
        waited: Duration,
        /// Ranks without a (live, ready) file.
        missing: Vec<u32>,
        /// Stale files found in their slots, `rank-R.json: reason`.
        stale: Vec<String>,
        /// A non-zero rank waiting for rank 0's `formed.json`.
        waiting_for_rank0: bool,
    },
    /// The group writer failed (rank 0).
    #[error("writing the group file failed: {0}")]
    GroupWrite(#[source] BoxError),
    /// `publish`/`fail`/`wait` called in the wrong order or twice.
    #[error("rendezvous misuse: {0}")]
    Misuse(&'static str),
    /// An MPI peer sent something out of range (feature `mpi`).
    #[error("MPI rendezvous: {0}")]
    MpiPeer(&'static str),
}

fn describe_missing(missing: &[u32], stale: &[String], rank0: bool) -> String {
    let mut s = if rank0 && missing.is_empty() {
        "rank 0 did not write formed.json".to_string()
    } else {
        format!("missing ranks {missing:?}")
    };
    if !stale.is_empty() {
        s.push_str(&format!(" (stale files ignored: {})", stale.join("; ")));
    }
    s
}

/// This process's place in a run directory.
#[derive(Debug)]
pub struct RunDir<P: ProcessProbe = ProcFs> {
    dir: PathBuf,
    rank: u32,
    key: RunKey,
    opts: RendezvousOptions,
    probe: P,
    payload: Option<serde_json::Value>,
    finished: bool,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Reads a small file; `Ok(None)` if absent. Larger than [`MAX_FILE_BYTES`] is read as an
/// invalid file (classified as stale), never allocated.
fn read_small(path: &Path) -> Result<Option<String>, RendezvousError> {
    let f = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(RendezvousError::Io {
                what: "open",
                path: path.into(),
                source,
            })
        }
    };
    let mut buf = Vec::new();
    f.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(|source| RendezvousError::Io {
            what: "read",
            path: path.into(),
            source,
        })?;
    if buf.len() as u64 > MAX_FILE_BYTES {
        return Ok(Some(format!("<larger than {MAX_FILE_BYTES} bytes>")));
    }
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

impl RunDir<ProcFs> {
    /// Joins the run directory `dir` (created if needed, mode 0700) as the rank `launch`
    /// says, with the real `/proc` probe.
    pub fn join(
        dir: &Path,
        launch: &Launch,
        opts: RendezvousOptions,
    ) -> Result<RunDir<ProcFs>, RendezvousError> {
        RunDir::join_with(dir, launch, opts, ProcFs::new())
    }
}

impl<P: ProcessProbe> RunDir<P> {
    /// [`RunDir::join`] with another process probe.
    pub fn join_with(
        dir: &Path,
        launch: &Launch,
        opts: RendezvousOptions,
        probe: P,
    ) -> Result<RunDir<P>, RendezvousError> {
        let run_id = opts
            .run_id
            .clone()
            .or_else(|| launch.run_id.clone())
            .unwrap_or_default();
        if run_id.is_empty() && launch.size > 1 {
            return Err(RendezvousError::NoRunId {
                rank: launch.rank,
                size: launch.size,
            });
        }
        {
            use std::os::unix::fs::DirBuilderExt;
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|source| RendezvousError::Io {
                    what: "create",
                    path: dir.into(),
                    source,
                })?;
        }
        let mut rd = RunDir {
            dir: dir.to_path_buf(),
            rank: launch.rank,
            key: RunKey {
                run_id,
                size: launch.size,
            },
            opts,
            probe,
            payload: None,
            finished: false,
        };
        let mine = rd.rank_path(rd.rank);
        if let Some(text) = read_small(&mine)? {
            if let Some(e) = live_other_run(&text, &rd.key, &rd.probe) {
                rd.finished = true; // not ours: never overwrite it
                return Err(RendezvousError::InUse {
                    dir: rd.dir.clone(),
                    rank: rd.rank,
                    pid: e.process.pid,
                    host: e.process.host,
                    run_id: e.run_id,
                });
            }
        }
        if launch.size == 1 && !rd.opts.singleton_grace.is_zero() {
            if let Err(e) = rd.singleton_check() {
                rd.finished = true;
                return Err(e);
            }
        }
        rd.write_entry(EntryState::Starting, None)?;
        Ok(rd)
    }

    /// This rank.
    pub fn rank(&self) -> u32 {
        self.rank
    }

    /// The run id in use ("" for a singleton without one).
    pub fn run_id(&self) -> &str {
        &self.key.run_id
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn rank_path(&self, r: u32) -> PathBuf {
        self.dir.join(format!("rank-{r}.json"))
    }

    fn formed_path(&self) -> PathBuf {
        self.dir.join("formed.json")
    }

    fn entry(&self, state: EntryState, error: Option<String>) -> RankEntry {
        RankEntry {
            version: ENTRY_VERSION,
            run_id: self.key.run_id.clone(),
            rank: self.rank,
            size: self.key.size,
            process: self.probe.me().clone(),
            written_ms: now_ms(),
            state,
            error,
            payload: self.payload.clone().unwrap_or(serde_json::Value::Null),
        }
    }

    fn write_json(
        &self,
        path: &Path,
        value: &impl serde::Serialize,
    ) -> Result<(), RendezvousError> {
        let mut text = serde_json::to_vec_pretty(value).map_err(|e| RendezvousError::Io {
            what: "encode",
            path: path.into(),
            source: io::Error::other(e),
        })?;
        text.push(b'\n');
        write_file_atomic(path, &text, 0o600).map_err(|source| RendezvousError::Io {
            what: "write",
            path: path.into(),
            source,
        })
    }

    fn write_entry(&self, state: EntryState, error: Option<String>) -> Result<(), RendezvousError> {
        self.write_json(&self.rank_path(self.rank), &self.entry(state, error))
    }

    /// Claims "rank 0 of 1" and looks for other live claims, before and after the grace.
    fn singleton_check(&self) -> Result<(), RendezvousError> {
        let me = self.probe.me();
        let claim_path = self.dir.join(format!("single-{}-{}.json", me.host, me.pid));
        let claim = self.entry(EntryState::Starting, None);
        self.write_json(&claim_path, &claim)?;
        let window = self.opts.singleton_grace.as_millis() as u64 * 2;
        let scan = || -> Result<Vec<String>, RendezvousError> {
            let mut others = Vec::new();
            let rd = fs::read_dir(&self.dir).map_err(|source| RendezvousError::Io {
                what: "list",
                path: self.dir.clone(),
                source,
            })?;
            for ent in rd.flatten() {
                let name = ent.file_name();
                let name = name.to_string_lossy();
                if !(name.starts_with("single-") && name.ends_with(".json")) {
                    continue;
                }
                if let Some(text) = read_small(&ent.path())? {
                    if let Some(e) =
                        live_singleton(&text, &self.key, claim.written_ms, window, &self.probe)
                    {
                        others.push(format!("pid {} on {}", e.process.pid, e.process.host));
                    }
                }
            }
            others.sort();
            Ok(others)
        };
        let mut others = scan()?;
        if others.is_empty() {
            std::thread::sleep(self.opts.singleton_grace);
            others = scan()?;
        }
        if others.is_empty() {
            Ok(())
        } else {
            // Stay visible to the copies still looking, after this process exits.
            let refused = self.entry(EntryState::Failed, Some("several rank 0 of 1".into()));
            let _ = self.write_json(&claim_path, &refused);
            Err(RendezvousError::Singletons {
                dir: self.dir.clone(),
                others,
            })
        }
    }

    /// Publishes this rank's payload (its addresses): the rank is ready.
    pub fn publish(&mut self, payload: serde_json::Value) -> Result<(), RendezvousError> {
        if self.finished {
            return Err(RendezvousError::Misuse(
                "publish after the rendezvous finished",
            ));
        }
        if self.payload.is_some() {
            return Err(RendezvousError::Misuse("publish called twice"));
        }
        self.payload = Some(payload);
        self.write_entry(EntryState::Ready, None)
    }

    /// Records that this rank failed to start, so that the others stop naming it.
    pub fn fail(&mut self, reason: &str) -> Result<(), RendezvousError> {
        if self.finished {
            return Err(RendezvousError::Misuse(
                "fail after the rendezvous finished",
            ));
        }
        self.finished = true;
        self.write_entry(EntryState::Failed, Some(reason.to_string()))?;
        if self.rank == 0 {
            self.write_formed(
                0,
                Outcome::Failed {
                    rank: Some(0),
                    reason: reason.to_string(),
                },
            )?;
        }
        Ok(())
    }

    fn write_formed(&self, epoch: u64, outcome: Outcome) -> Result<(), RendezvousError> {
        let f = Formed {
            version: ENTRY_VERSION,
            run_id: self.key.run_id.clone(),
            epoch,
            outcome,
        };
        self.write_json(&self.formed_path(), &f)
    }

    /// Waits for the group. Rank 0 waits for every rank, calls `writer` and records the
    /// outcome; the other ranks wait for that outcome. Every failure names the rank.
    pub fn wait(&mut self, writer: &mut dyn GroupWriter) -> Result<Group, RendezvousError> {
        if self.finished {
            return Err(RendezvousError::Misuse(
                "wait after the rendezvous finished",
            ));
        }
        if self.payload.is_none() {
            return Err(RendezvousError::Misuse("wait before publish"));
        }
        let result = if self.rank == 0 {
            self.wait_rank0(writer)
        } else {
            self.wait_other()
        };
        self.finished = true;
        result
    }

    fn previous_epoch(&self) -> u64 {
        read_small(&self.formed_path())
            .ok()
            .flatten()
            .and_then(|t| serde_json::from_str::<Formed>(&t).ok())
            .map(|f| f.epoch)
            .unwrap_or(0)
    }

    fn wait_rank0(&mut self, writer: &mut dyn GroupWriter) -> Result<Group, RendezvousError> {
        let start = Instant::now();
        let deadline = start + self.opts.timeout;
        let mut nap = self.opts.poll;
        let result = loop {
            let mut ready = Vec::with_capacity(self.key.size as usize);
            let mut missing = Vec::new();
            let mut stale = Vec::new();
            let mut fatal = None;
            for r in 0..self.key.size {
                let text = read_small(&self.rank_path(r))?;
                match classify(text.as_deref(), r, &self.key, &self.probe) {
                    Seen::Ready(e) => ready.push(e),
                    Seen::Starting(_) | Seen::Missing => missing.push(r),
                    Seen::Stale(why) => {
                        missing.push(r);
                        stale.push(format!("rank-{r}.json: {why}"));
                    }
                    Seen::Failed(e) => {
                        fatal = Some(RendezvousError::RankFailed {
                            rank: r,
                            pid: e.process.pid,
                            host: e.process.host,
                            reason: e.error.unwrap_or_else(|| "no reason given".into()),
                        });
                        break;
                    }
                    Seen::Died(e) => {
                        fatal = Some(RendezvousError::RankDied {
                            rank: r,
                            pid: e.process.pid,
                            host: e.process.host,
                        });
                        break;
                    }
                }
            }
            if let Some(e) = fatal {
                break Err(e);
            }
            if missing.is_empty() {
                let epoch = now_ns().max(self.previous_epoch().saturating_add(1));
                match writer.write_group(epoch, &ready) {
                    Ok(()) => {
                        break Ok(Group {
                            epoch,
                            ranks: ready,
                        })
                    }
                    Err(e) => break Err(RendezvousError::GroupWrite(e)),
                }
            }
            if Instant::now() >= deadline {
                break Err(RendezvousError::Timeout {
                    rank: 0,
                    waited: start.elapsed(),
                    missing,
                    stale,
                    waiting_for_rank0: false,
                });
            }
            nap = self.nap(nap, deadline);
        };
        match &result {
            Ok(g) => self.write_formed(g.epoch, Outcome::Formed(g.ranks.clone()))?,
            Err(e) => {
                let rank = match e {
                    RendezvousError::RankFailed { rank, .. }
                    | RendezvousError::RankDied { rank, .. } => Some(*rank),
                    RendezvousError::Timeout { missing, .. } if missing.len() == 1 => {
                        missing.first().copied()
                    }
                    RendezvousError::GroupWrite(_) => Some(0),
                    _ => None,
                };
                let reason = format!("rank 0: {e}");
                // Best effort: the error to return is the one above.
                let _ = self.write_entry(EntryState::Failed, Some(reason.clone()));
                let _ = self.write_formed(0, Outcome::Failed { rank, reason });
            }
        }
        result
    }

    /// This run's `formed.json`, if rank 0 wrote it: the group, or why it did not form.
    fn formed_outcome(&self) -> Result<Option<Result<Group, RendezvousError>>, RendezvousError> {
        let Some(text) = read_small(&self.formed_path())? else {
            return Ok(None);
        };
        let Ok(f) = serde_json::from_str::<Formed>(&text) else {
            return Ok(None);
        };
        if f.run_id != self.key.run_id || f.version != ENTRY_VERSION {
            return Ok(None);
        }
        Ok(Some(match f.outcome {
            Outcome::Formed(ranks) => Ok(Group {
                epoch: f.epoch,
                ranks,
            }),
            Outcome::Failed { rank, reason } => Err(RendezvousError::GroupFailed { rank, reason }),
        }))
    }

    fn wait_other(&mut self) -> Result<Group, RendezvousError> {
        let start = Instant::now();
        let deadline = start + self.opts.timeout;
        let mut nap = self.opts.poll;
        loop {
            if let Some(outcome) = self.formed_outcome()? {
                return outcome;
            }
            // Rank 0 itself may fail or die without formed.json. It may also have written
            // formed.json and exited since the read above: a rank 0 found gone is blamed only
            // if formed.json is still missing after that (else a quick rank 0 that formed the
            // group and finished would be reported dead).
            let text = read_small(&self.rank_path(0))?;
            let seen = classify(text.as_deref(), 0, &self.key, &self.probe);
            if matches!(seen, Seen::Failed(_) | Seen::Died(_)) {
                if let Some(outcome) = self.formed_outcome()? {
                    return outcome;
                }
            }
            match seen {
                Seen::Failed(e) => {
                    return Err(RendezvousError::RankFailed {
                        rank: 0,
                        pid: e.process.pid,
                        host: e.process.host,
                        reason: e.error.unwrap_or_else(|| "no reason given".into()),
                    })
                }
                Seen::Died(e) => {
                    return Err(RendezvousError::RankDied {
                        rank: 0,
                        pid: e.process.pid,
                        host: e.process.host,
                    })
                }
                _ => {}
            }
            if Instant::now() >= deadline {
                return Err(RendezvousError::Timeout {
                    rank: self.rank,
                    waited: start.elapsed(),
                    missing: Vec::new(),
                    stale: Vec::new(),
                    waiting_for_rank0: true,
                });
            }
            nap = self.nap(nap, deadline);
        }
    }

    /// Sleeps `nap` (not past `deadline`) and returns the next nap: doubled up to
    /// [`MAX_POLL`] (or `poll` if larger), so that many ranks polling a shared file system
    /// for long cost little.
    fn nap(&self, nap: Duration, deadline: Instant) -> Duration {
        let left = deadline.saturating_duration_since(Instant::now());
        std::thread::sleep(nap.min(left));
        (nap * 2).min(MAX_POLL.max(self.opts.poll))
    }

    /// The identity this rank writes.
    pub fn process(&self) -> &ProcessId {
        self.probe.me()
    }
}

impl<P: ProcessProbe> Drop for RunDir<P> {
    fn drop(&mut self) {
        if !self.finished {
            let why = if std::thread::panicking() {
                "panicked before the group formed"
            } else {
                "gave up before the group formed"
            };
            let _ = self.fail(why);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::detect;

    fn launch(rank: &str, size: &str, job: &str) -> Launch {
        detect(&[
            ("SLURM_PROCID", rank),
            ("SLURM_STEP_NUM_TASKS", size),
            ("SLURM_STEP_ID", "0"),
            ("SLURM_JOB_ID", job),
        ])
        .unwrap()
    }

    fn quick() -> RendezvousOptions {
        RendezvousOptions {
            timeout: Duration::from_secs(20),
            poll: Duration::from_millis(5),
            singleton_grace: Duration::ZERO,
            run_id: None,
        }
    }

    #[test]
    fn a_dropped_rank_records_a_failure_that_rank_0_reports() {
        let d = tempfile::tempdir().unwrap();
        let mut r0 = RunDir::join(d.path(), &launch("0", "2", "9"), quick()).unwrap();
        r0.publish(serde_json::json!(0)).unwrap();
        {
            let r1 = RunDir::join(d.path(), &launch("1", "2", "9"), quick()).unwrap();
            drop(r1); // an early return before publish
        }
        let mut never = |_: u64, _: &[RankEntry]| -> Result<(), BoxError> { panic!("no group") };
        let e = r0.wait(&mut never).unwrap_err();
        assert!(
            matches!(&e, RendezvousError::RankFailed { rank: 1, reason, .. } if reason.contains("gave up")),
            "{e}"
        );
        let formed: Formed =
            serde_json::from_str(&fs::read_to_string(d.path().join("formed.json")).unwrap())
                .unwrap();
        assert!(matches!(
            formed.outcome,
            Outcome::Failed { rank: Some(1), .. }
        ));
    }

    /// A probe for rank 1 that, when asked whether rank 0 still runs, first lets rank 0 form
    /// the group (write formed.json) and then answers that it is gone: rank 0 finished between
    /// rank 1's read of formed.json and its look at rank 0, as a quick `srun` step can.
    struct RankZeroFinishesMeanwhile {
        me: ProcessId,
        rank0: std::cell::RefCell<Option<RunDir<ProcFs>>>,
        armed: std::rc::Rc<std::cell::Cell<bool>>,
    }

    impl ProcessProbe for RankZeroFinishesMeanwhile {
        fn me(&self) -> &ProcessId {
            &self.me
        }
        fn alive(&self, _: &ProcessId) -> bool {
            if !self.armed.get() {
                return true;
            }
            if let Some(mut r0) = self.rank0.borrow_mut().take() {
                let mut ok = |_: u64, _: &[RankEntry]| -> Result<(), BoxError> { Ok(()) };
                r0.wait(&mut ok).expect("rank 0 forms the group");
            }
            false
        }
    }

    #[test]
    fn a_rank_0_that_formed_the_group_and_exited_is_not_reported_dead() {
        let d = tempfile::tempdir().unwrap();
        let mut r0 = RunDir::join(d.path(), &launch("0", "2", "11"), quick()).unwrap();
        r0.publish(serde_json::json!({"addr": "a"})).unwrap();
        let armed = std::rc::Rc::new(std::cell::Cell::new(false));
        let probe = RankZeroFinishesMeanwhile {
            me: ProcFs::new().me().clone(),
            rank0: std::cell::RefCell::new(Some(r0)),
            armed: armed.clone(),
        };
        let mut r1 = RunDir::join_with(d.path(), &launch("1", "2", "11"), quick(), probe).unwrap();
        r1.publish(serde_json::json!({"addr": "b"})).unwrap();
        armed.set(true);
        let mut unused = |_: u64, _: &[RankEntry]| -> Result<(), BoxError> { Ok(()) };
        let g = r1.wait(&mut unused).expect("the group rank 0 formed");
        assert_eq!(g.ranks.len(), 2);
        assert_eq!(g.ranks[0].payload["addr"], "a");
    }

    #[test]
    fn every_rank_gets_the_same_group_and_epochs_grow() {
        let d = tempfile::tempdir().unwrap();
        let mut epochs = Vec::new();
        for job in ["1", "2"] {
            let dir = d.path().to_path_buf();
            let other = std::thread::spawn(move || {
                let mut r1 = RunDir::join(&dir, &launch("1", "2", job), quick()).unwrap();
                r1.publish(serde_json::json!({"addr": "b"})).unwrap();
                let mut unused = |_: u64, _: &[RankEntry]| -> Result<(), BoxError> { Ok(()) };
                r1.wait(&mut unused).unwrap()
            });
            let mut r0 = RunDir::join(d.path(), &launch("0", "2", job), quick()).unwrap();
            r0.publish(serde_json::json!({"addr": "a"})).unwrap();
            let mut calls = 0;
            let mut w = |_: u64, ranks: &[RankEntry]| -> Result<(), BoxError> {
                calls += 1;
                assert_eq!(ranks.len(), 2);
                Ok(())
            };
            let g0 = r0.wait(&mut w).unwrap();
            let g1 = other.join().unwrap();
            assert_eq!(calls, 1);
            assert_eq!(g0, g1);
            assert_eq!(g0.ranks[1].payload["addr"], "b");
            epochs.push(g0.epoch);
        }
        assert!(epochs[1] > epochs[0]);
    }

    #[test]
    fn a_slot_held_by_a_live_process_of_another_run_is_not_overwritten() {
        let d = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let me = ProcFs::new().me().clone();
        let held = RankEntry {
            version: ENTRY_VERSION,
            run_id: "slurm:other.0".into(),
            rank: 0,
            size: 2,
            process: ProcessId {
                pid: child.id(),
                start: 0,
                ..me
            },
            written_ms: 0,
            state: EntryState::Ready,
            error: None,
            payload: serde_json::Value::Null,
        };
        let path = d.path().join("rank-0.json");
        fs::write(&path, serde_json::to_string(&held).unwrap()).unwrap();
        let e = RunDir::join(d.path(), &launch("0", "2", "3"), quick()).unwrap_err();
        assert!(matches!(e, RendezvousError::InUse { rank: 0, .. }), "{e}");
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            serde_json::to_string(&held).unwrap()
        );
        let _ = child.kill();
        let _ = child.wait();
        // once that process is gone, its file is stale and the slot is taken over
        assert!(RunDir::join(d.path(), &launch("0", "2", "3"), quick()).is_ok());
    }

    #[test]
    fn several_ranks_without_a_run_id_are_refused_and_misuse_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let mut l = launch("0", "2", "3");
        l.run_id = None;
        let e = RunDir::join(d.path(), &l, quick()).unwrap_err();
        assert!(matches!(e, RendezvousError::NoRunId { .. }), "{e}");
        let mut r = RunDir::join(d.path(), &launch("0", "1", "4"), quick()).unwrap();
        let mut w = |_: u64, _: &[RankEntry]| -> Result<(), BoxError> { Ok(()) };
        assert!(matches!(r.wait(&mut w), Err(RendezvousError::Misuse(_))));
        r.publish(serde_json::json!(1)).unwrap();
        assert!(matches!(
            r.publish(serde_json::json!(1)),
            Err(RendezvousError::Misuse(_))
        ));
        assert_eq!(r.wait(&mut w).unwrap().ranks.len(), 1);
    }

    #[test]
    fn a_group_writer_error_fails_rank_0_and_is_reported_to_the_others() {
        let d = tempfile::tempdir().unwrap();
        let mut r0 = RunDir::join(d.path(), &launch("0", "1", "5"), quick()).unwrap();
        r0.publish(serde_json::json!(0)).unwrap();
        let mut w = |_: u64, _: &[RankEntry]| -> Result<(), BoxError> { Err("disk full".into()) };
        let e = r0.wait(&mut w).unwrap_err();
        assert!(e.to_string().contains("disk full"), "{e}");
        let formed: Formed =
            serde_json::from_str(&fs::read_to_string(d.path().join("formed.json")).unwrap())
                .unwrap();
        assert!(
            matches!(formed.outcome, Outcome::Failed { rank: Some(0), reason } if reason.contains("disk full"))
        );
    }
}
