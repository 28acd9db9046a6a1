//! Safe libfabric layer for diaspora-rs: [`Info`] (typed hints in, [`Capabilities`] out),
//! [`Fabric`], [`Domain`], [`Cq`], [`Av`], [`Endpoint`] (RDM), [`MemoryRegion`] owning its
//! buffer, the plain-data [`RemoteRegion`] and printable [`Address`]es. No async runtime: the
//! engine on top drives progress by reading CQs.
//!
//! Handles close in dependency order whatever the drop order: each child holds an `Arc` to its
//! parent (MR -> EP -> CQ/AV -> domain -> fabric). See `fabric/README.md` for the API, the MR
//! rules and the threading contract.
//!
//! Handles are `Send` (they can move to a progress thread):
//!
//! ```
//! fn send<T: Send>() {}
//! send::<diaspora_fabric::Fabric>();
//! send::<diaspora_fabric::Domain>();
//! send::<diaspora_fabric::Cq>();
//! send::<diaspora_fabric::Av>();
//! send::<diaspora_fabric::Endpoint>();
//! send::<diaspora_fabric::MemoryRegion<diaspora_fabric::PageBuf>>();
//! send::<diaspora_fabric::Info>();
//! ```
//!
//! but the objects of a domain are not `Sync` (`FI_THREAD_DOMAIN`: one thread at a time):
//!
//! ```compile_fail
//! fn sync<T: Sync>() {}
//! sync::<diaspora_fabric::Endpoint>();
//! ```
//!
//! ```compile_fail
//! fn sync<T: Sync>() {}
//! sync::<diaspora_fabric::Cq>();
//! ```
//!
//! ```compile_fail
//! fn sync<T: Sync>() {}
//! sync::<diaspora_fabric::MemoryRegion<Vec<u8>>>();
//! ```

pub mod address;
pub mod av;
pub mod buf;
pub mod ceiling;
mod context;
pub mod cq;
pub mod domain;
pub mod endpoint;
pub mod error;
pub mod flags;
pub mod info;
pub mod mr;
pub mod mr_policy;
pub mod remote;
mod shm_lock_watch;
mod shm_locks;
mod shm_names;

pub use address::{Address, AddressError};
pub use av::{Av, PeerAddr};
pub use buf::{page_size, populate, PageBuf, RegionBuf};
pub use context::UNKNOWN_OP;
pub use cq::{Completion, Cq, CqOptions, WaitObj};
pub use domain::{Domain, Fabric};
pub use endpoint::Endpoint;
pub use error::{CompletionError, Error, FiErrno, Result};
pub use info::{Capabilities, Hints, Info, Progress, Threading};
pub use mr::{Access, LocalSegment, MemoryRegion};
pub use mr_policy::{KeyAllocator, KeySource, MrPolicy, PolicyError};
pub use remote::{DecodeError, RemoteRegion};
pub use shm_locks::{hold_shm_region_lock, shm_locks_released, SHM_LOCK_MONITOR_ENV};
pub use shm_names::{reap_child, remove_shm_names_of, try_reap_child};

/// Re-export of the raw bindings, for [`Endpoint::as_raw`]-style escape hatches.
pub use fabric_sys as sys;
