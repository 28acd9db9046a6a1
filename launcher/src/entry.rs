//! The files of a run directory, and what a rank makes of them (pure logic, no I/O).
//!
//! ```text
//! <run-dir>/
//!   rank-<r>.json          one per rank: RankEntry (state starting -> ready | failed)
//!   formed.json            written by rank 0 last: Formed (the group, or why it failed)
//!   single-<host>-<pid>.json   claims of processes that found no launcher (size 1)
//! ```
//!
//! Every file is JSON, written atomically (temporary + rename), mode 0600, at most
//! [`MAX_FILE_BYTES`]. `rank-3.json`:
//!
//! ```json
//! {"version": 1, "run_id": "slurm:41.0", "rank": 3, "size": 4,
//!  "process": {"host": "node7", "boot": "5d1e...", "pid": 4242, "start": 987654},
//!  "written_ms": 1764745200123, "state": "ready", "error": null,
//!  "payload": {"threads": [{"core": 2, "address": "0200a4b5..."}]}}
//! ```
//!
//! A file is taken for a live rank of this run only if its `run_id`, `rank` and `size` are
//! this run's, and, when it comes from this host (same host name and boot id), its process
//! (pid and start time) still runs. Anything else is stale ([`Seen::Stale`], with the
//! reason, listed if the deadline passes).

use serde::{Deserialize, Serialize};

use crate::proc::{ProcessId, ProcessProbe};

/// Version of the run-directory files.
pub const ENTRY_VERSION: u32 = 1;
/// Larger files are refused unread (a corrupted or hostile run directory).
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// Where a rank is in its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryState {
    /// Joined, not yet published.
    Starting,
    /// Published its payload.
    Ready,
    /// Gave up; `error` says why.
    Failed,
}

/// One rank's file, `rank-<r>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RankEntry {
    /// [`ENTRY_VERSION`].
    pub version: u32,
    /// The run this rank belongs to (see [`crate::Launch::run_id`]); empty if none.
    pub run_id: String,
    /// Its rank.
    pub rank: u32,
    /// The job size it was told.
    pub size: u32,
    /// The process.
    pub process: ProcessId,
    /// Milliseconds since the Unix epoch when written.
    pub written_ms: u64,
    /// Its state.
    pub state: EntryState,
    /// Why it failed (state `failed`).
    pub error: Option<String>,
    /// What the server publishes (its progress-thread addresses); opaque here.
    pub payload: serde_json::Value,
}

/// `formed.json`: the outcome of the rendezvous, written by rank 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Formed {
    /// [`ENTRY_VERSION`].
    pub version: u32,
    /// The run.
    pub run_id: String,
    /// The group's epoch (0 if it failed).
    pub epoch: u64,
    /// The outcome.
    pub outcome: Outcome,
}

/// The outcome of a rendezvous.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Every rank, in order; the group file is written.
    Formed(Vec<RankEntry>),
    /// The group did not form: which rank is to blame and why.
    Failed {
        /// The rank that failed, died or is missing (`None`: several, see `reason`).
        rank: Option<u32>,
        /// Why, as rank 0 reported it.
        reason: String,
    },
}

/// What a rank file says about a rank of this run.
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    /// No file.
    Missing,
    /// A file that is not a live rank of this run; why.
    Stale(String),
    /// Joined, not yet ready.
    Starting(RankEntry),
    /// Ready, with its payload.
    Ready(RankEntry),
    /// It wrote a failure record.
    Failed(RankEntry),
    /// It is of this host and its process is gone.
    Died(RankEntry),
}

/// The run a rank belongs to, as the classification needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunKey {
    /// The run id ("" if none).
    pub run_id: String,
    /// The job size.
    pub size: u32,
}

/// Whether `p` is a process of this host (same host name and boot).
pub fn same_host(p: &ProcessId, me: &ProcessId) -> bool {
    p.host == me.host && p.boot == me.boot
}

/// Classifies the text of `rank-<rank>.json` (`None`: no file).
pub fn classify(text: Option<&str>, rank: u32, key: &RunKey, probe: &dyn ProcessProbe) -> Seen {
    let Some(text) = text else {
        return Seen::Missing;
    };
    let e: RankEntry = match serde_json::from_str(text) {
        Ok(e) => e,
        Err(err) => return Seen::Stale(format!("unreadable ({err})")),
    };
    if e.version != ENTRY_VERSION {
        return Seen::Stale(format!(
            "version {} (this build writes {ENTRY_VERSION})",
            e.version
        ));
    }
    if e.run_id != key.run_id {
        return Seen::Stale(format!(
            "from another run ({:?}, this run is {:?}; pid {} on {})",
            e.run_id, key.run_id, e.process.pid, e.process.host
        ));
    }
    if e.rank != rank || e.size != key.size {
        return Seen::Stale(format!(
            "says rank {} of {} (expected rank {rank} of {})",
            e.rank, e.size, key.size
        ));
    }
    let local = same_host(&e.process, probe.me());
    match e.state {
        EntryState::Failed => Seen::Failed(e),
        _ if local && !probe.alive(&e.process) => Seen::Died(e),
        EntryState::Starting => Seen::Starting(e),
        EntryState::Ready => Seen::Ready(e),
    }
}

/// Whether the existing file of my own slot belongs to a live process of another run (so
/// that overwriting it would break that run): returns that entry.
pub fn live_other_run(text: &str, key: &RunKey, probe: &dyn ProcessProbe) -> Option<RankEntry> {
    let e: RankEntry = serde_json::from_str(text).ok()?;
    let me = probe.me();
    let local = same_host(&e.process, me);
    let other = e.run_id != key.run_id || key.run_id.is_empty();
    (local && other && e.process != *me && e.state != EntryState::Failed && probe.alive(&e.process))
        .then_some(e)
}

/// Whether a singleton claim (`single-*.json`) is another copy of the same job: refused
/// (state failed) after my claim was written, or this host and alive, or another host with
/// the same non-empty run id, or another host without run id written within `window_ms` of
/// my own claim.
pub fn live_singleton(
    text: &str,
    key: &RunKey,
    my_written_ms: u64,
    window_ms: u64,
    probe: &dyn ProcessProbe,
) -> Option<RankEntry> {
    let e: RankEntry = serde_json::from_str(text).ok()?;
    let me = probe.me();
    if e.process == *me || e.run_id != key.run_id || e.version != ENTRY_VERSION {
        return None;
    }
    // A copy refused while I was looking (its claim rewritten as failed after mine was
    // written), or within the window before my claim (it met another copy and stopped before
    // this one, started a little later, got as far as claiming), is one of mine, even if it
    // has exited since.
    let live = if e.state == EntryState::Failed {
        e.written_ms.saturating_add(window_ms) >= my_written_ms
    } else if same_host(&e.process, me) {
        probe.alive(&e.process)
    } else if !key.run_id.is_empty() {
        true
    } else {
        e.written_ms.abs_diff(my_written_ms) <= window_ms
    };
    live.then_some(e)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    pub(crate) struct FakeProbe {
        pub me: ProcessId,
        pub alive: HashSet<u32>,
    }

    impl ProcessProbe for FakeProbe {
        fn me(&self) -> &ProcessId {
            &self.me
        }
        fn alive(&self, id: &ProcessId) -> bool {
            self.alive.contains(&id.pid)
        }
    }

    pub(crate) fn pid(host: &str, pid: u32) -> ProcessId {
        ProcessId {
            host: host.into(),
            boot: "b".into(),
            pid,
            start: 7,
        }
    }

    fn probe() -> FakeProbe {
        FakeProbe {
            me: pid("a", 1),
            alive: [1, 2].into_iter().collect(),
        }
    }

    fn entry(run: &str, rank: u32, size: u32, p: ProcessId, state: EntryState) -> String {
        serde_json::to_string(&RankEntry {
            version: ENTRY_VERSION,
            run_id: run.into(),
            rank,
            size,
            process: p,
            written_ms: 1000,
            state,
            error: None,
            payload: serde_json::json!({"x": 1}),
        })
        .unwrap()
    }

    fn key() -> RunKey {
        RunKey {
            run_id: "slurm:1.0".into(),
            size: 2,
        }
    }

    #[test]
    fn live_ready_rank_of_this_run() {
        let t = entry("slurm:1.0", 1, 2, pid("a", 2), EntryState::Ready);
        assert!(matches!(
            classify(Some(&t), 1, &key(), &probe()),
            Seen::Ready(_)
        ));
        // another host: its pid cannot be checked here, the run id is trusted
        let t = entry("slurm:1.0", 1, 2, pid("b", 99), EntryState::Starting);
        assert!(matches!(
            classify(Some(&t), 1, &key(), &probe()),
            Seen::Starting(_)
        ));
    }

    #[test]
    fn stale_files_are_never_live() {
        let p = probe();
        let other_run = entry("slurm:0.0", 1, 2, pid("a", 2), EntryState::Ready);
        assert!(
            matches!(classify(Some(&other_run), 1, &key(), &p), Seen::Stale(r) if r.contains("another run"))
        );
        let wrong_rank = entry("slurm:1.0", 0, 2, pid("a", 2), EntryState::Ready);
        assert!(matches!(
            classify(Some(&wrong_rank), 1, &key(), &p),
            Seen::Stale(_)
        ));
        let wrong_size = entry("slurm:1.0", 1, 3, pid("a", 2), EntryState::Ready);
        assert!(matches!(
            classify(Some(&wrong_size), 1, &key(), &p),
            Seen::Stale(_)
        ));
        assert!(
            matches!(classify(Some("{"), 1, &key(), &p), Seen::Stale(r) if r.contains("unreadable"))
        );
        assert_eq!(classify(None, 1, &key(), &p), Seen::Missing);
    }

    #[test]
    fn a_dead_local_process_has_died_and_a_failure_record_wins() {
        let p = probe();
        let dead = entry("slurm:1.0", 1, 2, pid("a", 3), EntryState::Ready);
        assert!(matches!(
            classify(Some(&dead), 1, &key(), &p),
            Seen::Died(_)
        ));
        let failed = entry("slurm:1.0", 1, 2, pid("a", 3), EntryState::Failed);
        assert!(matches!(
            classify(Some(&failed), 1, &key(), &p),
            Seen::Failed(_)
        ));
        // same host name, other boot: an earlier boot's pid says nothing, run id decides
        let mut other_boot = pid("a", 3);
        other_boot.boot = "c".into();
        let t = entry("slurm:1.0", 1, 2, other_boot, EntryState::Ready);
        assert!(matches!(classify(Some(&t), 1, &key(), &p), Seen::Ready(_)));
    }

    #[test]
    fn my_slot_held_by_a_live_process_of_another_run() {
        let p = probe();
        let t = entry("slurm:0.0", 1, 2, pid("a", 2), EntryState::Ready);
        assert!(live_other_run(&t, &key(), &p).is_some());
        let t = entry("slurm:0.0", 1, 2, pid("a", 3), EntryState::Ready);
        assert!(live_other_run(&t, &key(), &p).is_none(), "dead: stale");
        let t = entry("slurm:1.0", 1, 2, pid("a", 2), EntryState::Ready);
        assert!(live_other_run(&t, &key(), &p).is_none(), "same run");
    }

    #[test]
    fn singleton_claims() {
        let p = probe();
        let k = RunKey {
            run_id: String::new(),
            size: 1,
        };
        let alive_here = entry("", 0, 1, pid("a", 2), EntryState::Starting);
        assert!(live_singleton(&alive_here, &k, 1000, 500, &p).is_some());
        let dead_here = entry("", 0, 1, pid("a", 3), EntryState::Starting);
        assert!(live_singleton(&dead_here, &k, 1000, 500, &p).is_none());
        let mine = entry("", 0, 1, pid("a", 1), EntryState::Starting);
        assert!(live_singleton(&mine, &k, 1000, 500, &p).is_none());
        let remote_recent = entry("", 0, 1, pid("b", 3), EntryState::Starting);
        assert!(live_singleton(&remote_recent, &k, 1200, 500, &p).is_some());
        assert!(live_singleton(&remote_recent, &k, 9000, 500, &p).is_none());
        // refused copies count if refused after my claim or within the window before it, even
        // when dead
        let refused = entry("", 0, 1, pid("a", 3), EntryState::Failed);
        assert!(live_singleton(&refused, &k, 900, 500, &p).is_some());
        assert!(live_singleton(&refused, &k, 1001, 500, &p).is_some());
        assert!(live_singleton(&refused, &k, 1500, 500, &p).is_some());
        assert!(live_singleton(&refused, &k, 1501, 500, &p).is_none());
    }

    proptest! {
        #[test]
        fn classify_never_panics(s in ".{0,200}") {
            let _ = classify(Some(&s), 0, &key(), &probe());
            let _ = live_other_run(&s, &key(), &probe());
            let _ = live_singleton(&s, &key(), 0, 10, &probe());
        }
    }
}
