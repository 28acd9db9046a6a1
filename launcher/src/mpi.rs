//! The MPI path (cargo feature `mpi`): rank and size from `MPI_COMM_WORLD`, cross-checked
//! against the launcher's variables, and the rendezvous as collectives instead of files.
//!
//! A binary built against one MPI but started by another MPI's launcher (or `srun` with
//! the wrong `--mpi=`) runs N "silent singletons", each rank 0 of 1 by MPI. The launcher's
//! variables still say rank r of N: [`check_against_env`] refuses the mismatch, naming both.
//!
//! Rendezvous: every rank contributes its [`RankEntry`] (ready with its payload, or failed
//! with its reason) as JSON; an allgather of the lengths, then of the bytes
//! (`MPI_Allgatherv`); if any rank failed, every rank returns the error naming it. Else rank
//! 0 writes the group file and broadcasts the epoch and the outcome, so that every rank
//! returns the same result. A rank that dies inside a collective makes the MPI runtime
//! abort the job: nothing waits forever.

use std::time::{SystemTime, UNIX_EPOCH};

use mpi::datatype::PartitionMut;
use mpi::environment::Universe;
use mpi::traits::*;
use mpi::{Count, Threading};

use crate::entry::{EntryState, RankEntry, ENTRY_VERSION, MAX_FILE_BYTES};
use crate::env::{EnvError, Launch, LauncherKind};
use crate::proc::{ProcFs, ProcessProbe};
use crate::rundir::{Group, GroupWriter, RendezvousError};

/// Why MPI cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MpiError {
    /// `MPI_Init_thread` was already called (by another part of the program).
    #[error("MPI is already initialized")]
    AlreadyInitialized,
}

/// Compares MPI's rank and size with the launcher's variables. A launcher seen in the
/// environment must agree with MPI; without one, MPI is trusted.
pub fn check_against_env(env: &Launch, rank: u32, size: u32) -> Result<(), EnvError> {
    if env.kind == LauncherKind::None || (env.rank == rank && env.size == size) {
        return Ok(());
    }
    Err(EnvError::Disagree {
        a: format!("MPI_COMM_WORLD says rank {rank} of {size}"),
        b: format!(
            "the launcher says rank {} of {} ({}: {}); built against another MPI than the launcher's, or wrong srun --mpi=?",
            env.rank,
            env.size,
            env.kind,
            env.evidence.join(" ")
        ),
    })
}

/// MPI, initialized with `MPI_THREAD_MULTIPLE`; finalized when dropped.
pub struct MpiWorld {
    universe: Universe,
    threading: Threading,
}

impl std::fmt::Debug for MpiWorld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "MpiWorld(rank {} of {}, {:?})",
            self.rank(),
            self.size(),
            self.threading
        )
    }
}

impl MpiWorld {
    /// Initializes MPI.
    pub fn init() -> Result<MpiWorld, MpiError> {
        let (universe, threading) = mpi::initialize_with_threading(Threading::Multiple)
            .ok_or(MpiError::AlreadyInitialized)?;
        Ok(MpiWorld {
            universe,
            threading,
        })
    }

    /// The thread level MPI granted.
    pub fn threading(&self) -> Threading {
        self.threading
    }

    /// Rank in `MPI_COMM_WORLD`.
    pub fn rank(&self) -> u32 {
        self.universe.world().rank() as u32
    }

    /// Size of `MPI_COMM_WORLD`.
    pub fn size(&self) -> u32 {
        self.universe.world().size() as u32
    }

    /// The launch as MPI sees it, after [`check_against_env`].
    pub fn launch(&self, env: &Launch) -> Result<Launch, EnvError> {
        let (rank, size) = (self.rank(), self.size());
        check_against_env(env, rank, size)?;
        let mut l = env.clone();
        l.rank = rank;
        l.size = size;
        l.evidence.push(format!("MPI_COMM_WORLD={rank}/{size}"));
        Ok(l)
    }

    /// The rendezvous through MPI collectives (every rank calls it). `mine`: this rank's
    /// payload, or why it failed to start.
    pub fn rendezvous(
        &self,
        launch: &Launch,
        mine: Result<serde_json::Value, String>,
        writer: &mut dyn GroupWriter,
    ) -> Result<Group, RendezvousError> {
        let world = self.universe.world();
        let size = self.size() as usize;
        let probe = ProcFs::new();
        let (state, error, payload) = match mine {
            Ok(p) => (EntryState::Ready, None, p),
            Err(e) => (EntryState::Failed, Some(e), serde_json::Value::Null),
        };
        let entry = RankEntry {
            version: ENTRY_VERSION,
            run_id: launch.run_id.clone().unwrap_or_else(|| "mpi".into()),
            rank: self.rank(),
            size: self.size(),
            process: probe.me().clone(),
            written_ms: now_ns() / 1_000_000,
            state,
            error,
            payload,
        };
        let mut bytes = serde_json::to_vec(&entry).unwrap_or_default();
        if bytes.len() as u64 > MAX_FILE_BYTES {
            let mut small = entry.clone();
            small.state = EntryState::Failed;
            small.error = Some(format!(
                "entry of {} bytes is over {MAX_FILE_BYTES}",
                bytes.len()
            ));
            small.payload = serde_json::Value::Null;
            bytes = serde_json::to_vec(&small).unwrap_or_default();
        }
        let my_len = bytes.len() as Count;
        let mut lens = vec![0 as Count; size];
        world.all_gather_into(&my_len, &mut lens[..]);
        if lens.iter().any(|&l| l < 0 || l as u64 > MAX_FILE_BYTES) {
            return Err(RendezvousError::Misuse(
                "an MPI peer sent an entry length out of range",
            ));
        }
        let displs: Vec<Count> = lens
            .iter()
            .scan(0, |acc, &x| {
                let d = *acc;
                *acc += x;
                Some(d)
            })
            .collect();
        let total: usize = lens.iter().map(|&l| l as usize).sum();
        let mut buf = vec![0u8; total];
        {
            let mut part = PartitionMut::new(&mut buf[..], &lens[..], &displs[..]);
            world.all_gather_varcount_into(&bytes[..], &mut part);
        }
        let mut ranks = Vec::with_capacity(size);
        for (r, (&l, &d)) in lens.iter().zip(&displs).enumerate() {
            let slice = &buf[d as usize..d as usize + l as usize];
            let e: RankEntry =
                serde_json::from_slice(slice).map_err(|e| RendezvousError::RankFailed {
                    rank: r as u32,
                    pid: 0,
                    host: "?".into(),
                    reason: format!("its entry does not decode: {e}"),
                })?;
            ranks.push(e);
        }
        if let Some(f) = ranks.iter().find(|e| e.state == EntryState::Failed) {
            return Err(RendezvousError::RankFailed {
                rank: f.rank,
                pid: f.process.pid,
                host: f.process.host.clone(),
                reason: f.error.clone().unwrap_or_default(),
            });
        }
        // Rank 0 writes the group file, then tells everyone the epoch and the outcome.
        let root = world.process_at_rank(0);
        let mut epoch = 0u64;
        let mut outcome: Vec<u8> = Vec::new();
        let mut write_err = None;
        if self.rank() == 0 {
            epoch = now_ns();
            if let Err(e) = writer.write_group(epoch, &ranks) {
                outcome = format!("rank 0: writing the group file failed: {e}").into_bytes();
                write_err = Some(e);
            }
        }
        root.broadcast_into(&mut epoch);
        let mut olen = outcome.len() as u64;
        root.broadcast_into(&mut olen);
        if olen > MAX_FILE_BYTES {
            return Err(RendezvousError::Misuse(
                "rank 0 broadcast an outcome out of range",
            ));
        }
        outcome.resize(olen as usize, 0);
        if olen > 0 {
            root.broadcast_into(&mut outcome[..]);
        }
        if let Some(e) = write_err {
            return Err(RendezvousError::GroupWrite(e));
        }
        if !outcome.is_empty() {
            return Err(RendezvousError::GroupFailed {
                rank: Some(0),
                reason: String::from_utf8_lossy(&outcome).into_owned(),
            });
        }
        Ok(Group { epoch, ranks })
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::detect;

    #[test]
    fn silent_singletons_are_refused_naming_both() {
        let env = detect(&[("OMPI_COMM_WORLD_RANK", "1"), ("OMPI_COMM_WORLD_SIZE", "2")]).unwrap();
        let e = check_against_env(&env, 0, 1).unwrap_err().to_string();
        assert!(
            e.contains("rank 0 of 1") && e.contains("rank 1 of 2"),
            "{e}"
        );
        assert!(check_against_env(&env, 1, 2).is_ok());
        let none = detect(&[("HOME", "/")]).unwrap();
        assert!(
            check_against_env(&none, 3, 4).is_ok(),
            "no launcher variables: MPI decides"
        );
    }
}
