//! [`Fabric`] and [`Domain`] handles.

use std::ptr;
use std::sync::Arc;

use fabric_sys as sys;

use crate::error::{check, Error, Result};
use crate::info::{Capabilities, Info};
use crate::mr_policy::{KeyAllocator, MrPolicy};

pub(crate) struct FabricInner {
    pub(crate) fid: *mut sys::fid_fabric,
    /// The single `fi_info` entry this fabric (and its domains and endpoints) was opened from.
    pub(crate) info: Info,
    pub(crate) caps: Capabilities,
}

// SAFETY: a fabric fid is thread-safe in every threading model (fi_domain(3)), and the only
// other field is the owned info.
unsafe impl Send for FabricInner {}
// SAFETY: as above.
unsafe impl Sync for FabricInner {}

impl Drop for FabricInner {
    fn drop(&mut self) {
        // SAFETY: fid was opened by fi_fabric and every child holds an Arc to us, so all children
        // are closed already.
        unsafe { close_fid(&mut (*self.fid).fid) };
    }
}

/// Closes a fid, ignoring the result (Drop cannot report it; libfabric frees the object
/// whatever it returns, except -FI_EBUSY which our dependency order rules out).
///
/// # Safety
/// `fid` must be an open fid closed exactly once.
pub(crate) unsafe fn close_fid(fid: *mut sys::fid) {
    // SAFETY: per the contract.
    let _ret = unsafe { sys::fi_close(fid) };
}

/// An open fabric (`fi_fabric`).
#[derive(Clone)]
pub struct Fabric {
    pub(crate) inner: Arc<FabricInner>,
}

impl Fabric {
    /// Opens the fabric of the first entry of `info`.
    pub fn open(info: &Info) -> Result<Fabric> {
        let info = info.dup_first()?;
        let caps = info.caps();
        let mut fid: *mut sys::fid_fabric = ptr::null_mut();
        // SAFETY: info is a valid single entry with a fabric_attr; fid is an out pointer.
        let rc = unsafe { sys::fi_fabric((*info.as_raw()).fabric_attr, &mut fid, ptr::null_mut()) };
        check(rc, Error::Fabric)?;
        Ok(Fabric {
            inner: Arc::new(FabricInner { fid, info, caps }),
        })
    }

    /// Capabilities of the entry this fabric was opened from.
    pub fn caps(&self) -> &Capabilities {
        &self.inner.caps
    }

    /// The raw fid. Owned by `self`: do not close it; valid while any handle of this fabric
    /// lives.
    pub fn as_raw(&self) -> *mut sys::fid_fabric {
        self.inner.fid
    }
}

pub(crate) struct DomainInner {
    pub(crate) fid: *mut sys::fid_domain,
    pub(crate) fabric: Arc<FabricInner>,
    pub(crate) policy: MrPolicy,
    pub(crate) keys: KeyAllocator,
    pub(crate) use_context_slab: bool,
}

// SAFETY: the domain fid has no thread affinity; concurrent use is governed by the threading
// level and documented on `Domain` (objects of one FI_THREAD_DOMAIN domain are used from one
// thread at a time). The inner is only touched by Drop and by the handles that own it.
unsafe impl Send for DomainInner {}
// SAFETY: shared references to the inner only read immutable fields or the atomic key counter.
unsafe impl Sync for DomainInner {}

impl Drop for DomainInner {
    fn drop(&mut self) {
        // SAFETY: opened by fi_domain; all children (CQ, AV, EP, MR) hold an Arc to us.
        unsafe { close_fid(&mut (*self.fid).fid) };
    }
}

impl DomainInner {
    pub(crate) fn caps(&self) -> &Capabilities {
        &self.fabric.caps
    }

    pub(crate) fn info(&self) -> *mut sys::fi_info {
        self.fabric.info.as_raw()
    }
}

/// An open domain (`fi_domain`), with the MR rules of its provider.
///
/// Threading: the layer asks for `FI_THREAD_DOMAIN` by default; then **all objects of one
/// domain (its CQs, AVs, endpoints, memory regions) must be used from one thread at a time**.
/// The handles are `Send` (to move them to a progress thread) and not `Sync`; the engine keeps
/// a domain's objects on its progress thread. See `fabric/README.md`.
pub struct Domain {
    pub(crate) inner: Arc<DomainInner>,
    _not_sync: NotSync,
}

/// Makes a handle `!Sync` (it stays `Send`): objects of an `FI_THREAD_DOMAIN` domain must not
/// be used from two threads at once.
pub(crate) type NotSync = std::marker::PhantomData<std::cell::Cell<()>>;

impl Domain {
    /// Opens a domain on `fabric`. Refuses providers whose `mr_mode` this layer cannot honour
    /// (`FI_MR_RAW`).
    pub fn open(fabric: &Fabric) -> Result<Domain> {
        let caps = &fabric.inner.caps;
        let policy = MrPolicy::new(caps.mr_mode)?;
        let mut fid: *mut sys::fid_domain = ptr::null_mut();
        // SAFETY: valid fabric fid and info entry; fid is an out pointer.
        let rc = unsafe {
            sys::fi_domain(
                fabric.inner.fid,
                fabric.inner.info.as_raw(),
                &mut fid,
                ptr::null_mut(),
            )
        };
        check(rc, Error::Domain)?;
        Ok(Domain {
            inner: Arc::new(DomainInner {
                fid,
                fabric: fabric.inner.clone(),
                policy,
                keys: KeyAllocator::new(),
                use_context_slab: caps.needs_context() || fabric.inner.info.force_context(),
            }),
            _not_sync: NotSync::default(),
        })
    }

    /// Capabilities of the provider entry.
    pub fn caps(&self) -> &Capabilities {
        self.inner.caps()
    }

    /// The MR rules of this domain.
    pub fn mr_policy(&self) -> MrPolicy {
        self.inner.policy
    }

    /// True when operations carry layer-owned `fi_context2` storage (the provider demands
    /// `FI_CONTEXT`/`FI_CONTEXT2`, or [`crate::Hints::force_context_storage`]).
    pub fn uses_context_storage(&self) -> bool {
        self.inner.use_context_slab
    }

    /// The raw fid. Owned by `self`: do not close it.
    pub fn as_raw(&self) -> *mut sys::fid_domain {
        self.inner.fid
    }
}

impl std::fmt::Debug for Fabric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Fabric({:p}, {})",
            self.inner.fid, self.inner.caps.provider
        )
    }
}

impl std::fmt::Debug for Domain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Domain")
            .field("fid", &self.inner.fid)
            .field("provider", &self.inner.caps().provider)
            .field("mr_policy", &self.inner.policy)
            .finish()
    }
}
