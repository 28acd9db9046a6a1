//! Starting and stopping a server: engines, handlers, the group file.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use diaspora_api::ThreadPool;
use diaspora_proto::{GroupFile, GroupRank, GroupThread};
use diaspora_rpc::{Engine, EngineConfig};

use crate::config::ServerConfig;
use crate::groupfile;
use crate::ranks;
use crate::service::{Membership, Shared, ThreadService};
use crate::store::{StorageKind, Store};

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The data directory cannot be used.
    #[error("cannot use data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A progress thread's engine could not start.
    #[error("cannot start progress thread {thread} on {provider}: {source}")]
    Engine {
        /// The thread.
        thread: usize,
        /// The provider.
        provider: String,
        /// Why.
        #[source]
        source: diaspora_rpc::EngineError,
    },
    /// A handler could not be registered.
    #[error("cannot register handlers: {0}")]
    Handlers(#[source] diaspora_rpc::RpcError),
    /// The group file could not be written.
    #[error("cannot write the group file {path}: {source}")]
    GroupFile {
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// This rank could not join its group (launcher, pinning, rendezvous).
    #[error("{0}")]
    Rank(#[source] crate::ranks::RankError),
    /// Random bytes or a thread could not be had.
    #[error("cannot set up the server: {0}")]
    Setup(#[source] std::io::Error),
}

/// A running server.
pub struct Running {
    engines: Vec<Engine>,
    shared: Arc<Shared>,
    /// The group file of its group (written by rank 0).
    pub group: GroupFile,
    _run_dir: Option<diaspora_launcher::RunDir>,
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}

/// Starts the server described by `cfg` and writes its group file.
///
/// Started by a launcher as one of N ranks (`srun`, `mpirun`; see [`crate::ranks`]), it
/// meets the other ranks in the run directory and rank 0 writes the group's one group file;
/// a plain start is rank 0 of 1 and writes its own.
pub fn start(cfg: &ServerConfig) -> Result<Running, ServerError> {
    let plan = ranks::plan(cfg).map_err(ServerError::Rank)?;
    if !plan.rendezvous {
        return start_rank(cfg, &plan.cores, None);
    }
    let dir = cfg.run_dir_or_default();
    let rank = plan.launch.rank;
    let joining = ranks::Joining::join(&dir, plan.launch, cfg).map_err(ServerError::Rank)?;
    crate::say!(
        "diaspora-server: rank {rank} joined run directory {}",
        dir.display()
    );
    start_rank(cfg, &plan.cores, Some(joining))
}

fn start_rank(
    cfg: &ServerConfig,
    cores: &[Option<usize>],
    joining: Option<ranks::Joining>,
) -> Result<Running, ServerError> {
    let rank = joining.as_ref().map_or(0, |j| j.rank());
    let (engines, shared) = match build(cfg, cores, rank) {
        Ok(b) => b,
        Err(e) => {
            if let Some(j) = joining {
                j.fail(&e.to_string());
            }
            return Err(e);
        }
    };
    let threads: Vec<GroupThread> = engines
        .iter()
        .zip(cores)
        .map(|(e, core)| GroupThread {
            core: core.map(|c| c as u32),
            address: e.address().to_hex(),
        })
        .collect();
    let (group, run_dir) = match joining {
        Some(j) => {
            let (group, m, rd) = j
                .meet(threads, &cfg.provider, &cfg.group_file)
                .map_err(ServerError::Rank)?;
            // Cannot fail: the membership is set only here.
            let _ = shared.join(m);
            (group, Some(rd))
        }
        None => {
            let token = groupfile::new_token().map_err(ServerError::Setup)?;
            let epoch = groupfile::new_epoch().map_err(ServerError::Setup)?;
            let group = GroupFile {
                version: diaspora_proto::group::GROUP_VERSION,
                epoch,
                token,
                provider: cfg.provider.clone(),
                ranks: vec![GroupRank {
                    rank: 0,
                    host: hostname(),
                    pid: std::process::id(),
                    threads,
                }],
            };
            let _ = shared.join(Membership {
                token: group.token.clone(),
                epoch,
                threads: ranks::placements(&group),
            });
            groupfile::write(&cfg.group_file, &group).map_err(|source| ServerError::GroupFile {
                path: cfg.group_file.clone(),
                source,
            })?;
            (group, None)
        }
    };
    let storage = match cfg.storage {
        StorageKind::Files => "files",
        StorageKind::Memory => "memory",
    };
    crate::say!(
        "diaspora-server: rank {rank} of {}: pid {} listening on {} progress thread(s) ({}), storage {storage} in {}, group file {} (epoch {})",
        group.ranks.len(),
        std::process::id(),
        engines.len(),
        cfg.provider,
        cfg.data_dir.display(),
        cfg.group_file.display(),
        group.epoch
    );
    Ok(Running {
        engines,
        shared,
        group,
        _run_dir: run_dir,
    })
}

/// The storage, the engines (listening) and their handlers, before the group is known.
fn build(
    cfg: &ServerConfig,
    cores: &[Option<usize>],
    rank: u32,
) -> Result<(Vec<Engine>, Arc<Shared>), ServerError> {
    let io = ThreadPool::new(cfg.io_threads);
    let store = Store::new(&cfg.data_dir, cfg.storage, io.clone()).map_err(|source| {
        ServerError::DataDir {
            path: cfg.data_dir.clone(),
            source,
        }
    })?;
    let mut engines = Vec::with_capacity(cores.len());
    for (i, core) in cores.iter().enumerate() {
        let mut c = EngineConfig::for_provider(&cfg.provider);
        c.domain = cfg.domain.clone();
        c.cpu = *core;
        c.session_expiry = cfg.session_expiry;
        c.handler_pool = ThreadPool::spinning(1, diaspora_rpc::DEFAULT_SPINDOWN);
        c.thread_name = format!("diaspora-progress-{i}");
        let e = Engine::new(c).map_err(|source| ServerError::Engine {
            thread: i,
            provider: cfg.provider.clone(),
            source,
        })?;
        engines.push(e);
    }
    let shared = Arc::new(
        Shared::new(store, cfg.limits, rank, io, cfg.max_inflight_bytes)
            .map_err(ServerError::Setup)?,
    );
    // Handlers first: a client that read the group file finds every thread answering
    // (Hello is `Throttled` on a rank until it learns the group's token).
    for (i, e) in engines.iter().enumerate() {
        ThreadService::install(e, shared.clone(), i as u32).map_err(ServerError::Handlers)?;
    }
    Ok((engines, shared))
}

impl Running {
    /// Stops: refuses new work, lets in-flight batches be stored and answered, answers the
    /// waiting fetches, then closes the endpoints. Removes nothing from disk.
    pub fn stop(self) {
        self.shared.stopping.store(true, Ordering::Release);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        for t in self.shared.store.open_topics() {
            for p in &t.partitions {
                while p.busy() && std::time::Instant::now() < deadline {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                p.drain_commits();
                p.wake_all();
            }
        }
        self.shared.timers.stop();
        // Let the I/O pool answer what the wake-ups queued.
        std::thread::sleep(std::time::Duration::from_millis(50));
        for e in self.engines {
            e.shutdown();
        }
        let s = &self.shared.stats;
        crate::say!(
            "diaspora-server: stopped; stored {} batches ({} events) in {} appends, answered {} fetches, refused {} unauthenticated and {} malformed requests, released {} long polls of closed sessions",
            s.batches.load(Ordering::Relaxed),
            s.events.load(Ordering::Relaxed),
            crate::partition::APPENDS.load(Ordering::Relaxed),
            s.fetches.load(Ordering::Relaxed),
            s.unauthorized.load(Ordering::Relaxed),
            s.malformed.load(Ordering::Relaxed),
            s.polls_released.load(Ordering::Relaxed),
        );
    }
}
