//! Starting as one rank of a group under `srun` / `mpirun`: which rank this is, which CPUs
//! its progress threads get, and the rendezvous through the run directory where rank 0
//! writes the one group file of the group.
//!
//! Every rank publishes `{"threads": [GroupThread, ...]}` in its run-directory entry; rank 0
//! adds `"token"` (the group's random token). Once every rank is ready, rank 0 writes the
//! group file (epoch from the launcher's rendezvous, the token, every rank's threads in rank
//! order) and each rank adopts the same token, epoch and thread list from the formed group,
//! so placement (`p mod T` over every (rank, thread) in file order) is the same everywhere.

use std::path::{Path, PathBuf};

use diaspora_launcher::{
    pin, BoxError, Launch, LauncherKind, RankEntry, RendezvousOptions, RunDir,
};
use diaspora_proto::{GroupFile, GroupRank, GroupThread, Placement};

use crate::config::ServerConfig;
use crate::groupfile;
use crate::service::Membership;

/// Why a rank could not join its group.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RankError {
    /// The launcher's environment is inconsistent.
    #[error("cannot tell this process's rank: {0}")]
    Detect(#[source] diaspora_launcher::EnvError),
    /// The launcher started another number of ranks than `--expect-ranks`.
    #[error("{0}")]
    Size(#[source] diaspora_launcher::EnvError),
    /// No CPU layout could be planned or applied.
    #[error("cannot plan the progress threads' CPUs: {0}")]
    Pin(#[source] pin::PinError),
    /// The rendezvous failed (another rank failed or died, timeout, stale directory...).
    #[error("rank {rank} of {size}: {source}")]
    Rendezvous {
        /// This rank.
        rank: u32,
        /// The group size.
        size: u32,
        /// Why.
        #[source]
        source: diaspora_launcher::RendezvousError,
    },
    /// A rank published an entry this server cannot read.
    #[error("rank {rank}'s run-directory entry has no valid thread list: {reason}")]
    BadEntry {
        /// The rank.
        rank: u32,
        /// Why.
        reason: String,
    },
    /// Options that cannot work with several ranks.
    #[error("{0}")]
    Unsupported(String),
}

/// How this process starts.
pub struct Plan {
    /// What the launcher says.
    pub launch: Launch,
    /// Whether to meet the other ranks in a run directory (several ranks, or `--run-dir`).
    pub rendezvous: bool,
    /// One CPU (or none) per progress thread.
    pub cores: Vec<Option<usize>>,
}

/// Detects the rank, checks `--expect-ranks`, and plans the progress threads' CPUs: the
/// `--cores` given, else (when started by a launcher) one CPU per thread inside this
/// process's CPU mask (`diaspora_launcher::pin`), else none (as a plain start always did).
pub fn plan(cfg: &ServerConfig) -> Result<Plan, RankError> {
    let launch =
        diaspora_launcher::detect(&diaspora_launcher::ProcessEnv).map_err(RankError::Detect)?;
    if let Some(n) = cfg.expect_ranks {
        launch.expect_size(n).map_err(RankError::Size)?;
    }
    let rendezvous = launch.size > 1 || cfg.run_dir.is_some();
    if launch.size > 1 && cfg.storage == crate::store::StorageKind::Memory {
        return Err(RankError::Unsupported(format!(
            "{launch}: --storage memory cannot be shared by {} ranks (topics created on rank 0 would not exist on the others); use --storage files on a shared data directory",
            launch.size
        )));
    }
    let cores = if cfg.cores_given || launch.kind == LauncherKind::None {
        cfg.cores.clone()
    } else {
        let layout = pin::plan_for_this_process(pin::PinRequest {
            threads: cfg.cores.len(),
            local_rank: launch.local_rank.unwrap_or(0),
            local_size: launch.local_size.unwrap_or(1),
            sharing: pin::Sharing::Auto,
        })
        .map_err(RankError::Pin)?;
        crate::say!("diaspora-server: {launch}; {layout}");
        (0..cfg.cores.len())
            .map(|i| layout.cpu_for(i).map(|c| c as usize))
            .collect()
    };
    Ok(Plan {
        launch,
        rendezvous,
        cores,
    })
}

/// A rank that joined the run directory and has not yet met the others.
pub struct Joining {
    rd: RunDir,
    launch: Launch,
}

impl Joining {
    /// Joins the run directory `dir` (before anything slow or fallible starts, so a failure
    /// of this rank is recorded there and stops the others).
    pub fn join(dir: &Path, launch: Launch, cfg: &ServerConfig) -> Result<Joining, RankError> {
        let opts = RendezvousOptions {
            timeout: cfg.rendezvous_timeout,
            run_id: cfg.run_id.clone(),
            ..RendezvousOptions::default()
        };
        let rd = RunDir::join(dir, &launch, opts).map_err(|source| RankError::Rendezvous {
            rank: launch.rank,
            size: launch.size,
            source,
        })?;
        Ok(Joining { rd, launch })
    }

    /// This rank.
    pub fn rank(&self) -> u32 {
        self.launch.rank
    }

    /// Records that this rank failed to start: every other rank stops naming it.
    pub fn fail(mut self, reason: &str) {
        if let Err(e) = self.rd.fail(reason) {
            crate::say!("diaspora-server: cannot record the failure in the run directory: {e}");
        }
    }

    /// Publishes this rank's threads, waits for the group (rank 0 writes the group file at
    /// `group_path`), and returns the group file and this rank's membership.
    pub fn meet(
        mut self,
        threads: Vec<GroupThread>,
        provider: &str,
        group_path: &Path,
    ) -> Result<(GroupFile, Membership, RunDir), RankError> {
        let rank = self.launch.rank;
        let size = self.launch.size;
        let rdv = |source| RankError::Rendezvous { rank, size, source };
        let mut payload = serde_json::json!({ "threads": threads });
        if rank == 0 {
            let token = match groupfile::new_token() {
                Ok(t) => t,
                Err(e) => {
                    let reason = format!("cannot draw the group token: {e}");
                    self.fail(&reason);
                    return Err(RankError::Unsupported(reason));
                }
            };
            payload["token"] = serde_json::Value::String(token);
        }
        self.rd.publish(payload).map_err(rdv)?;
        let provider = provider.to_owned();
        let path: PathBuf = group_path.to_owned();
        let mut writer = |epoch: u64, ranks: &[RankEntry]| -> Result<(), BoxError> {
            let g = group_of(epoch, &provider, ranks)?;
            g.check()?;
            groupfile::write(&path, &g)
                .map_err(|e| format!("cannot write the group file {}: {e}", path.display()))?;
            Ok(())
        };
        let formed = self.rd.wait(&mut writer).map_err(rdv)?;
        let g = group_of(formed.epoch, &provider, &formed.ranks)
            .map_err(|reason| RankError::BadEntry { rank, reason })?;
        let m = Membership {
            token: g.token.clone(),
            epoch: g.epoch,
            threads: placements(&g),
        };
        Ok((g, m, self.rd))
    }
}

/// Every (rank, thread) of a group file, in file order.
pub fn placements(g: &GroupFile) -> Vec<Placement> {
    g.ranks
        .iter()
        .flat_map(|r| {
            (0..r.threads.len() as u32).map(move |thread| Placement {
                rank: r.rank,
                thread,
            })
        })
        .collect()
}

/// The group file of the formed group: rank 0's token, every rank's threads in rank order.
pub fn group_of(epoch: u64, provider: &str, ranks: &[RankEntry]) -> Result<GroupFile, String> {
    let token = ranks
        .first()
        .and_then(|e| e.payload.get("token"))
        .and_then(|t| t.as_str())
        .ok_or("rank 0 published no token")?
        .to_owned();
    let ranks = ranks
        .iter()
        .map(|e| {
            let threads: Vec<GroupThread> = e
                .payload
                .get("threads")
                .cloned()
                .ok_or_else(|| format!("rank {} published no threads", e.rank))
                .and_then(|v| {
                    serde_json::from_value(v)
                        .map_err(|err| format!("rank {}'s threads: {err}", e.rank))
                })?;
            Ok(GroupRank {
                rank: e.rank,
                host: e.process.host.clone(),
                pid: e.process.pid,
                threads,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let g = GroupFile {
        version: diaspora_proto::group::GROUP_VERSION,
        epoch,
        token,
        provider: provider.to_owned(),
        ranks,
    };
    g.check().map_err(|e| e.to_string())?;
    Ok(g)
}
