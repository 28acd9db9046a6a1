//! [`MemoryRegion`]: a registered buffer that owns its memory, and the [`LocalSegment`]s and
//! [`RemoteRegion`]s built from it by the domain's [`crate::MrPolicy`].

use std::marker::PhantomData;
use std::ops::{BitOr, Range};
use std::os::raw::c_void;
use std::ptr;
use std::sync::Arc;

use fabric_sys as sys;

use crate::buf::RegionBuf;
use crate::domain::{close_fid, Domain, DomainInner};
use crate::endpoint::{Endpoint, EpInner};
use crate::error::{check, Error, FiErrno, Result};
use crate::flags;
use crate::mr_policy::KeySource;
use crate::remote::RemoteRegion;

/// Access flags of a registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access(pub u64);

impl Access {
    /// `FI_SEND`: source of sends.
    pub const SEND: Access = Access(flags::SEND);
    /// `FI_RECV`: target of receives.
    pub const RECV: Access = Access(flags::RECV);
    /// `FI_READ`: local destination of RMA reads.
    pub const READ: Access = Access(flags::READ);
    /// `FI_WRITE`: local source of RMA writes.
    pub const WRITE: Access = Access(flags::WRITE);
    /// `FI_REMOTE_READ`: peers may read it.
    pub const REMOTE_READ: Access = Access(flags::REMOTE_READ);
    /// `FI_REMOTE_WRITE`: peers may write it.
    pub const REMOTE_WRITE: Access = Access(flags::REMOTE_WRITE);
    /// Every access.
    pub const ALL: Access = Access(
        flags::SEND
            | flags::RECV
            | flags::READ
            | flags::WRITE
            | flags::REMOTE_READ
            | flags::REMOTE_WRITE,
    );
}

impl BitOr for Access {
    type Output = Access;
    fn bitor(self, rhs: Access) -> Access {
        Access(self.0 | rhs.0)
    }
}

struct MrHandle {
    fid: *mut sys::fid_mr,
    desc: *mut c_void,
    key: u64,
    bound: Option<Arc<EpInner>>,
    domain: Arc<DomainInner>,
}

impl Drop for MrHandle {
    fn drop(&mut self) {
        // SAFETY: opened by fi_mr_reg, closed once; the endpoint it may be bound to and the
        // domain are kept alive by the Arcs, which drop after this.
        unsafe { close_fid(&mut (*self.fid).fid) };
    }
}

/// A registered buffer. It owns `B`: the memory lives at least as long as the registration, and
/// [`MemoryRegion::into_buffer`] closes the registration before handing the buffer back.
///
/// Posting operations on it is `unsafe` (see [`Endpoint::post_read`]): the region must stay
/// alive and untouched until the completion of every operation using it has been read.
pub struct MemoryRegion<B: RegionBuf> {
    // Field order: the registration closes before the buffer is freed.
    mr: MrHandle,
    buf: B,
}

// SAFETY: the MR fid has no thread affinity (its use is governed by the domain's threading
// contract) and B is Send.
unsafe impl<B: RegionBuf> Send for MemoryRegion<B> {}

impl<B: RegionBuf> MemoryRegion<B> {
    /// Registers `buf` with `access` (`fi_mr_reg`). Under `FI_MR_PROV_KEY` the provider picks
    /// the key, otherwise the domain's allocator requests a fresh one. Under `FI_MR_ENDPOINT`
    /// call [`MemoryRegion::bind`] before use.
    pub fn register(domain: &Domain, buf: B, access: Access) -> Result<Self> {
        let d = &domain.inner;
        d.policy.check_registrable(buf.len())?;
        let requested = match d.policy.key_source(&d.keys)? {
            KeySource::Provider => 0,
            KeySource::Requested(k) => k,
        };
        let len = buf.len();
        let addr = buf.as_ptr();
        let mut fid: *mut sys::fid_mr = ptr::null_mut();
        // SAFETY: addr/len describe memory owned by `buf`, which this value keeps alive (and in
        // place, RegionBuf) for longer than the registration.
        let rc = unsafe {
            sys::fi_mr_reg(
                d.fid,
                addr.cast(),
                len,
                access.0,
                0,
                requested,
                0,
                &mut fid,
                ptr::null_mut(),
            )
        };
        check(rc, |err| Error::MrReg { len, err })?;
        // SAFETY: fid is a freshly registered MR.
        let (desc, key) = unsafe { (sys::fi_mr_desc(fid), sys::fi_mr_key(fid)) };
        let mr = MrHandle {
            fid,
            desc,
            key,
            bound: None,
            domain: d.clone(),
        };
        if key == sys::FI_KEY_NOTAVAIL_VALUE {
            drop(mr);
            return Err(Error::MrReg {
                len,
                err: FiErrno::from_ret(-(libc::EINVAL as isize)),
            });
        }
        Ok(MemoryRegion { mr, buf })
    }

    /// `FI_MR_ENDPOINT`: binds the region to `ep` (`fi_mr_bind`) and enables it
    /// (`fi_mr_enable`); the region then keeps the endpoint open until it is dropped. A no-op
    /// for providers without that bit.
    pub fn bind(&mut self, ep: &Endpoint) -> Result<()> {
        if !self.mr.domain.policy.needs_bind() || self.mr.bound.is_some() {
            return Ok(());
        }
        // SAFETY: valid MR and endpoint fids of the same domain.
        let rc = unsafe { sys::fi_mr_bind(self.mr.fid, &mut (*ep.inner.fid).fid, 0) };
        check(rc, Error::MrBind)?;
        // SAFETY: a bound MR.
        let rc = unsafe { sys::fi_mr_enable(self.mr.fid) };
        check(rc, Error::MrEnable)?;
        self.mr.bound = Some(ep.inner.clone());
        Ok(())
    }

    fn check_usable(&self) -> Result<()> {
        Ok(self
            .mr
            .domain
            .policy
            .check_usable(self.mr.bound.is_some())?)
    }

    /// The descriptor a peer needs to read/write the whole region.
    pub fn remote(&self) -> Result<RemoteRegion> {
        self.remote_range(0..self.buf.len())
    }

    /// The descriptor of bytes `range` of the region (`FI_MR_VIRT_ADDR`: virtual address, else
    /// offset from the start; the key from `fi_mr_key`).
    pub fn remote_range(&self, range: Range<usize>) -> Result<RemoteRegion> {
        self.check_usable()?;
        self.check_range(&range)?;
        let vaddr = self.buf.as_ptr() as u64;
        let addr = self.mr.domain.policy.remote_addr(vaddr, range.start as u64);
        RemoteRegion::new(addr, (range.end - range.start) as u64, self.mr.key)
            .ok_or_else(|| Error::Invalid("remote region address overflows".into()))
    }

    /// A local segment (pointer, length and `fi_mr_desc`) of bytes `range`, to post.
    pub fn local(&self, range: Range<usize>) -> Result<LocalSegment<'_>> {
        self.check_usable()?;
        self.check_range(&range)?;
        Ok(LocalSegment {
            // SAFETY: range.start <= len, checked above.
            ptr: unsafe { self.buf.as_ptr().add(range.start) }.cast_mut(),
            len: range.end - range.start,
            desc: self.mr.desc,
            _region: PhantomData,
        })
    }

    /// A local segment of the whole region.
    pub fn local_all(&self) -> Result<LocalSegment<'_>> {
        self.local(0..self.buf.len())
    }

    fn check_range(&self, range: &Range<usize>) -> Result<()> {
        if range.start > range.end || range.end > self.buf.len() {
            return Err(Error::Invalid(format!(
                "range {range:?} outside a region of {} bytes",
                self.buf.len()
            )));
        }
        Ok(())
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True for an empty region (never: registration refuses them).
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The bytes. Do not call while an operation that writes this region is in flight (the
    /// `unsafe` post contract).
    pub fn as_slice(&self) -> &[u8] {
        &self.buf
    }

    /// The key (`fi_mr_key`).
    pub fn key(&self) -> u64 {
        self.mr.key
    }

    /// `fi_mr_desc` (a provider pointer; may be NULL when the provider needs none).
    pub fn desc(&self) -> *mut c_void {
        self.mr.desc
    }

    /// Closes the registration and returns the buffer.
    pub fn into_buffer(self) -> B {
        let MemoryRegion { mr, buf } = self;
        drop(mr);
        buf
    }

    /// The raw MR fid. Owned by `self`: do not close it.
    pub fn as_raw(&self) -> *mut sys::fid_mr {
        self.mr.fid
    }
}

impl<B: RegionBuf + std::ops::DerefMut> MemoryRegion<B> {
    /// The bytes, mutable. Do not call while an operation using this region is in flight.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.buf
    }
}

/// Part of a registered region, ready to post: pointer, length, descriptor. Borrowing the
/// region keeps it from being dropped while the segment exists; the `unsafe` post contract
/// extends that to the operation's completion.
#[derive(Debug, Clone, Copy)]
pub struct LocalSegment<'a> {
    pub(crate) ptr: *mut u8,
    pub(crate) len: usize,
    pub(crate) desc: *mut c_void,
    _region: PhantomData<&'a [u8]>,
}

impl LocalSegment<'_> {
    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<B: RegionBuf> std::fmt::Debug for MemoryRegion<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryRegion")
            .field("addr", &self.buf.as_ptr())
            .field("len", &self.buf.len())
            .field("key", &self.mr.key)
            .field("bound", &self.mr.bound.is_some())
            .finish()
    }
}
