//! The libfabric flag bits this layer uses, as `u64`, whatever integer type bindgen gave the
//! header macro in the installed version (1.x declares some as `u32`, others as `u64`).

#![allow(clippy::unnecessary_cast)]

use fabric_sys as sys;

/// `FI_MSG`
pub const MSG: u64 = sys::FI_MSG as u64;
/// `FI_RMA`
pub const RMA: u64 = sys::FI_RMA as u64;
/// `FI_READ`
pub const READ: u64 = sys::FI_READ as u64;
/// `FI_WRITE`
pub const WRITE: u64 = sys::FI_WRITE as u64;
/// `FI_RECV`
pub const RECV: u64 = sys::FI_RECV as u64;
/// `FI_SEND`
pub const SEND: u64 = sys::FI_SEND as u64;
/// `FI_TRANSMIT`
pub const TRANSMIT: u64 = sys::FI_TRANSMIT as u64;
/// `FI_REMOTE_READ`
pub const REMOTE_READ: u64 = sys::FI_REMOTE_READ as u64;
/// `FI_REMOTE_WRITE`
pub const REMOTE_WRITE: u64 = sys::FI_REMOTE_WRITE as u64;
/// `FI_COMPLETION`
pub const COMPLETION: u64 = sys::FI_COMPLETION as u64;
/// `FI_SOURCE`
pub const SOURCE: u64 = sys::FI_SOURCE as u64;
/// `FI_CONTEXT` (mode bit)
pub const CONTEXT: u64 = sys::FI_CONTEXT as u64;
/// `FI_CONTEXT2` (mode bit)
pub const CONTEXT2: u64 = sys::FI_CONTEXT2 as u64;

/// `FI_MR_LOCAL`
pub const MR_LOCAL: u64 = sys::FI_MR_LOCAL as u64;
/// `FI_MR_RAW`
pub const MR_RAW: u64 = sys::FI_MR_RAW as u64;
/// `FI_MR_VIRT_ADDR`
pub const MR_VIRT_ADDR: u64 = sys::FI_MR_VIRT_ADDR as u64;
/// `FI_MR_ALLOCATED`
pub const MR_ALLOCATED: u64 = sys::FI_MR_ALLOCATED as u64;
/// `FI_MR_PROV_KEY`
pub const MR_PROV_KEY: u64 = sys::FI_MR_PROV_KEY as u64;
/// `FI_MR_ENDPOINT`
pub const MR_ENDPOINT: u64 = sys::FI_MR_ENDPOINT as u64;

/// `FI_ADDR_UNSPEC` / `FI_ADDR_NOTAVAIL` (`(uint64_t)-1`).
pub const ADDR_UNSPEC: u64 = u64::MAX;
