//! `diaspora-launcher`: what a diaspora server needs to start as N ranks under `srun` or
//! `mpirun`.
//!
//! 1. [`detect`] reads rank, size and run id from the launcher's environment (Open MPI,
//!    MPICH/PMI, PMIx, Slurm), without MPI, cross-checking every source;
//!    [`Launch::expect_size`] refuses N copies that each think they are rank 0 of 1.
//! 2. [`RunDir`] is the rendezvous through a run directory on a shared file system: every
//!    rank publishes its entry (with an opaque payload: its addresses), rank 0 waits for all
//!    and calls a [`GroupWriter`] to write the group file. Stale files of earlier runs are
//!    never taken for live ranks; a rank that fails or dies makes the others stop with an
//!    error naming it.
//! 3. [`pin`] plans one CPU per progress thread inside the process's CPU mask and pins a
//!    thread to it.
//!
//! ```no_run
//! use diaspora_launcher::{detect, pin, ProcessEnv, RendezvousOptions, RunDir};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let launch = detect(&ProcessEnv)?;
//! launch.expect_size(2)?;
//! let layout = pin::plan_for_this_process(pin::PinRequest {
//!     threads: 2,
//!     local_rank: launch.local_rank.unwrap_or(0),
//!     local_size: launch.local_size.unwrap_or(1),
//!     sharing: pin::Sharing::Auto,
//! })?;
//! println!("{launch}; {layout}");
//! let mut rd = RunDir::join("run".as_ref(), &launch, RendezvousOptions::default())?;
//! rd.publish(serde_json::json!({"threads": ["addr0", "addr1"]}))?;
//! let group = rd.wait(&mut |epoch: u64, ranks: &[diaspora_launcher::RankEntry]| {
//!     let text = format!("{{\"epoch\": {epoch}, \"ranks\": {}}}\n", ranks.len());
//!     diaspora_launcher::write_file_atomic("group.json".as_ref(), text.as_bytes(), 0o600)?;
//!     Ok(())
//! })?;
//! println!("group of {} at epoch {}", group.ranks.len(), group.epoch);
//! # Ok(()) }
//! ```

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod atomic;
mod entry;
mod env;
#[cfg(feature = "hwloc")]
mod hwloc;
#[cfg(feature = "mpi")]
pub mod mpi;
pub mod pin;
mod proc;
mod rundir;
pub mod say;

pub use atomic::write_file_atomic;
pub use entry::{EntryState, Formed, Outcome, RankEntry, ENTRY_VERSION, MAX_FILE_BYTES};
pub use env::{detect, tasks_on_node, Env, EnvError, Launch, LauncherKind, ProcessEnv};
pub use proc::{hostname, ProcFs, ProcessId, ProcessProbe};
pub use rundir::{
    BoxError, Group, GroupWriter, RendezvousError, RendezvousOptions, RunDir, MAX_POLL,
};
