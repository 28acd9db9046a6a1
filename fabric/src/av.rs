//! [`Av`]: an address vector (`FI_AV_TABLE`) mapping peer [`Address`]es to [`PeerAddr`]s.

use std::collections::HashMap;
use std::ptr;
use std::sync::{Arc, Mutex};

use fabric_sys as sys;

use crate::address::{Address, MAX_ADDRESS_LEN};
use crate::domain::{close_fid, Domain, DomainInner, NotSync};
use crate::error::{check, Error, FiErrno, Result};

/// A peer in an [`Av`] (`fi_addr_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerAddr(pub(crate) sys::fi_addr_t);

impl PeerAddr {
    /// The raw `fi_addr_t`.
    pub fn raw(self) -> sys::fi_addr_t {
        self.0
    }
}

pub(crate) struct AvInner {
    pub(crate) fid: *mut sys::fid_av,
    pub(crate) domain: Arc<DomainInner>,
    /// shm: the peers' region locks watched while their entries live, until after the close
    /// ([`crate::shm_locks`]).
    shm_peers: Mutex<HashMap<sys::fi_addr_t, crate::shm_locks::Ticket>>,
}

// SAFETY: see DomainInner.
unsafe impl Send for AvInner {}
// SAFETY: shared references only read immutable fields.
unsafe impl Sync for AvInner {}

impl Drop for AvInner {
    fn drop(&mut self) {
        // SAFETY: opened by fi_av_open; endpoints bound to it hold an Arc to us.
        unsafe { close_fid(&mut (*self.fid).fid) };
    }
}

/// An address vector.
pub struct Av {
    pub(crate) inner: Arc<AvInner>,
    _not_sync: NotSync,
}

impl Av {
    /// Opens an `FI_AV_TABLE` AV on `domain`.
    pub fn open(domain: &Domain) -> Result<Av> {
        let mut attr = sys::fi_av_attr {
            type_: sys::FI_AV_TABLE,
            ..Default::default()
        };
        let mut fid: *mut sys::fid_av = ptr::null_mut();
        // SAFETY: valid domain, attr and out pointer.
        let rc = unsafe { sys::fi_av_open(domain.inner.fid, &mut attr, &mut fid, ptr::null_mut()) };
        check(rc, Error::AvOpen)?;
        Ok(Av {
            inner: Arc::new(AvInner {
                fid,
                domain: domain.inner.clone(),
                shm_peers: Mutex::new(HashMap::new()),
            }),
            _not_sync: NotSync::default(),
        })
    }

    /// Inserts a peer; refuses an address of another provider.
    pub fn insert(&self, addr: &Address) -> Result<PeerAddr> {
        addr.check_provider(&self.inner.domain.caps().provider)?;
        let mut out: sys::fi_addr_t = crate::flags::ADDR_UNSPEC;
        // The provider reads as many bytes as its address format says, whatever the length of
        // the bytes we got (a group file may hold a short one): pad into a zeroed buffer of the
        // largest accepted length so it can never read past our allocation.
        let mut padded = [0u8; MAX_ADDRESS_LEN];
        padded[..addr.bytes().len()].copy_from_slice(addr.bytes());
        // SAFETY: `padded` holds MAX_ADDRESS_LEN readable bytes (more than any provider's
        // address format); one address, one output slot.
        let ret = unsafe {
            sys::fi_av_insert(
                self.inner.fid,
                padded.as_ptr().cast(),
                1,
                &mut out,
                0,
                ptr::null_mut(),
            )
        };
        if ret != 1 || out == crate::flags::ADDR_UNSPEC {
            let ret = if ret < 0 {
                ret as isize
            } else {
                -(libc::EINVAL as isize)
            };
            return Err(Error::AvInsert(FiErrno::from_ret(ret)));
        }
        if self.inner.domain.caps().provider == "shm" {
            let peers = || {
                self.inner
                    .shm_peers
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
            };
            // Watched outside the lock (it maps the region and reads the owner's /proc maps).
            if !peers().contains_key(&out) {
                if let Some(t) = crate::shm_locks::watch(addr, false) {
                    peers().entry(out).or_insert(t);
                }
            }
        }
        Ok(PeerAddr(out))
    }

    /// Removes a peer.
    pub fn remove(&self, peer: PeerAddr) -> Result<()> {
        let mut a = peer.0;
        // SAFETY: valid AV and one fi_addr_t.
        let rc = unsafe { sys::fi_av_remove(self.inner.fid, &mut a, 1, 0) };
        check(rc, Error::AvRemove)?;
        self.inner
            .shm_peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&peer.0);
        Ok(())
    }

    /// The raw fid. Owned by `self`: do not close it.
    pub fn as_raw(&self) -> *mut sys::fid_av {
        self.inner.fid
    }
}

impl std::fmt::Debug for Av {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Av({:p})", self.inner.fid)
    }
}
