//! [`Cq`]: a completion queue in `FI_CQ_FORMAT_DATA`, read in batches; error entries become
//! [`CompletionError`]s carrying the provider errno and `fi_cq_strerror` text.

use std::ffi::CStr;
use std::os::fd::RawFd;
use std::os::raw::{c_int, c_void};
use std::ptr;
use std::sync::Arc;

use fabric_sys as sys;

use crate::context::{ContextMode, ContextSlab};
use crate::domain::{close_fid, Domain, DomainInner, NotSync};
use crate::error::{check, CompletionError, Error, FiErrno, Result};
use crate::flags;

/// Entries read per `fi_cq_read` call at most.
pub const BATCH: usize = 64;

/// Wait object of a CQ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitObj {
    /// No wait object: poll only (always works; shm has nothing else).
    None,
    /// `FI_WAIT_FD` where the provider supports it (tcp family); falls back to
    /// [`WaitObj::None`] where it does not (shm) — see [`Cq::wait_fd`].
    FdIfSupported,
}

/// CQ options.
#[derive(Debug, Clone, Copy)]
pub struct CqOptions {
    /// Entries; 0 = provider default.
    pub size: usize,
    /// Wait object.
    pub wait: WaitObj,
}

impl Default for CqOptions {
    fn default() -> Self {
        CqOptions {
            size: 0,
            wait: WaitObj::FdIfSupported,
        }
    }
}

/// One completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The op id given when posting, or [`crate::UNKNOWN_OP`] when the provider lost the
    /// context (shm 1.17 on a failed RMA: the caller's deadline must then fail the op).
    pub op_id: u64,
    /// Completion flags (`FI_SEND`, `FI_RECV`, `FI_READ`, `FI_WRITE`, `FI_RMA`, `FI_MSG`, ...).
    pub flags: u64,
    /// Bytes received (recv) or transferred.
    pub len: usize,
    /// Remote CQ data, if any.
    pub data: u64,
    /// Ok, or the error entry.
    pub result: std::result::Result<(), CompletionError>,
}

impl Completion {
    /// A receive completion.
    pub fn is_recv(&self) -> bool {
        self.flags & flags::RECV != 0
    }
    /// A send completion.
    pub fn is_send(&self) -> bool {
        self.flags & flags::SEND != 0
    }
    /// An RMA read completion.
    pub fn is_read(&self) -> bool {
        self.flags & flags::READ != 0
    }
    /// An RMA write completion.
    pub fn is_write(&self) -> bool {
        self.flags & flags::WRITE != 0
    }
}

pub(crate) struct CqInner {
    pub(crate) fid: *mut sys::fid_cq,
    pub(crate) domain: Arc<DomainInner>,
    pub(crate) ctx: ContextMode,
    wait_fd: Option<RawFd>,
}

// SAFETY: see DomainInner: no thread affinity; serialised use is the domain's threading contract.
unsafe impl Send for CqInner {}
// SAFETY: shared references only read immutable fields or use the mutex-protected slab.
unsafe impl Sync for CqInner {}

impl Drop for CqInner {
    fn drop(&mut self) {
        // SAFETY: opened by fi_cq_open; endpoints bound to it hold an Arc to us, so they are
        // closed already. The context slab (a field) is freed after this, when no operation can
        // complete any more.
        unsafe { close_fid(&mut (*self.fid).fid) };
    }
}

/// A completion queue.
pub struct Cq {
    pub(crate) inner: Arc<CqInner>,
    _not_sync: NotSync,
}

impl Cq {
    /// Opens a CQ on `domain`.
    pub fn open(domain: &Domain, opts: &CqOptions) -> Result<Cq> {
        let (fid, wait_fd) = match opts.wait {
            WaitObj::None => (open_raw(domain, opts.size, sys::FI_WAIT_NONE)?, None),
            WaitObj::FdIfSupported => match open_raw(domain, opts.size, sys::FI_WAIT_FD) {
                Ok(fid) => match get_wait_fd(fid) {
                    Ok(fd) => (fid, Some(fd)),
                    Err(_no_fd) => {
                        // SAFETY: just opened, not shared.
                        unsafe { close_fid(&mut (*fid).fid) };
                        (open_raw(domain, opts.size, sys::FI_WAIT_NONE)?, None)
                    }
                },
                Err(_unsupported) => (open_raw(domain, opts.size, sys::FI_WAIT_NONE)?, None),
            },
        };
        let ctx = if domain.inner.use_context_slab {
            ContextMode::Slab(ContextSlab::new())
        } else {
            ContextMode::Direct
        };
        Ok(Cq {
            inner: Arc::new(CqInner {
                fid,
                domain: domain.inner.clone(),
                ctx,
                wait_fd,
            }),
            _not_sync: NotSync::default(),
        })
    }

    /// Reads up to `max` (at least 1, at most [`BATCH`]) completions, appending them to `out`; returns how
    /// many. 0 means none is ready. Reading also drives manual progress: call it regularly even
    /// when nothing was posted (a peer's RMA on our memory needs it).
    pub fn read(&self, out: &mut Vec<Completion>, max: usize) -> Result<usize> {
        // Not zeroed: this runs on every poll, and the provider writes the entries it reports.
        let mut buf = [std::mem::MaybeUninit::<sys::fi_cq_data_entry>::uninit(); BATCH];
        let n = max.clamp(1, BATCH);
        // SAFETY: buf holds n entries of the CQ's format (FI_CQ_FORMAT_DATA).
        let ret = unsafe { sys::fi_cq_read(self.inner.fid, buf.as_mut_ptr().cast(), n) };
        if ret > 0 {
            let got = (ret as usize).min(n);
            for e in &buf[..got] {
                // SAFETY: fi_cq_read wrote the first `got` entries.
                let e = unsafe { e.assume_init_ref() };
                // SAFETY: op_context is the context of one of our posted operations, reported
                // complete once.
                let op_id = unsafe { self.inner.ctx.complete(e.op_context) };
                out.push(Completion {
                    op_id,
                    flags: e.flags,
                    len: e.len,
                    data: e.data,
                    result: Ok(()),
                });
            }
            return Ok(got);
        }
        if ret == 0 {
            return Ok(0);
        }
        if FiErrno::is_again_ret(ret) {
            return Ok(0);
        }
        let err = FiErrno::from_ret(ret);
        if err.errno == sys::FI_EAVAIL as i32 {
            out.push(self.read_err()?);
            return Ok(1);
        }
        Err(Error::CqRead(err))
    }

    fn read_err(&self) -> Result<Completion> {
        let mut e = sys::fi_cq_err_entry::default();
        // SAFETY: e is a zeroed entry (err_data_size 0: the provider supplies its own err_data
        // buffer, valid until the next CQ call).
        let ret = unsafe { sys::fi_cq_readerr(self.inner.fid, &mut e, 0) };
        if ret < 0 {
            return Err(Error::CqReadErr(FiErrno::from_ret(ret)));
        }
        let mut text = [0 as std::os::raw::c_char; 256];
        // SAFETY: valid CQ, the entry's prov_errno/err_data, a 256-byte buffer.
        let p = unsafe {
            sys::fi_cq_strerror(
                self.inner.fid,
                e.prov_errno,
                e.err_data,
                text.as_mut_ptr(),
                text.len(),
            )
        };
        let prov_text = if p.is_null() {
            String::new()
        } else {
            // SAFETY: fi_cq_strerror returns a NUL-terminated string (ours or a static one).
            unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
        };
        // SAFETY: the failed operation's context, reported once.
        let op_id = unsafe { self.inner.ctx.complete(e.op_context) };
        Ok(Completion {
            op_id,
            flags: e.flags,
            len: e.len,
            data: e.data,
            result: Err(CompletionError {
                op_id,
                err: FiErrno::from_ret(e.err as isize),
                prov_errno: e.prov_errno,
                prov_text,
                flags: e.flags,
                len: e.len,
            }),
        })
    }

    /// The CQ's wait fd (`FI_WAIT_FD` + `fi_control(FI_GETWAIT)`), or `None` when the provider
    /// has none (shm): then poll. Before sleeping on it, call [`Cq::trywait`]. The fd belongs to
    /// the CQ: do not close it; it is valid while the CQ is open.
    pub fn wait_fd(&self) -> Option<RawFd> {
        self.inner.wait_fd
    }

    /// `fi_trywait` on this CQ: `Ok(true)` means it is safe to block on [`Cq::wait_fd`];
    /// `Ok(false)` means completions may be pending (read the CQ first).
    pub fn trywait(&self) -> Result<bool> {
        if self.inner.wait_fd.is_none() {
            return Err(Error::Invalid(
                "fi_trywait needs a CQ with a wait fd (this provider has none: poll it)".into(),
            ));
        }
        let mut fid = unsafe_fid(self.inner.fid);
        // SAFETY: a valid fabric and an array of one CQ fid of that fabric.
        let ret = unsafe { sys::fi_trywait(self.inner.domain.fabric.fid, &mut fid, 1) };
        if ret == 0 {
            return Ok(true);
        }
        if FiErrno::is_again_ret(ret as isize) {
            Ok(false)
        } else {
            Err(Error::TryWait(FiErrno::from_ret(ret as isize)))
        }
    }

    /// The raw fid. Owned by `self`: do not close it.
    pub fn as_raw(&self) -> *mut sys::fid_cq {
        self.inner.fid
    }
}

fn unsafe_fid(cq: *mut sys::fid_cq) -> *mut sys::fid {
    // SAFETY: `fid` is the first member of fid_cq; taking its address does not read memory.
    unsafe { ptr::addr_of_mut!((*cq).fid) }
}

fn open_raw(domain: &Domain, size: usize, wait: sys::fi_wait_obj) -> Result<*mut sys::fid_cq> {
    let mut attr = sys::fi_cq_attr {
        size,
        format: sys::FI_CQ_FORMAT_DATA,
        wait_obj: wait,
        ..Default::default()
    };
    let mut fid: *mut sys::fid_cq = ptr::null_mut();
    // SAFETY: valid domain, attr and out pointer.
    let rc = unsafe { sys::fi_cq_open(domain.inner.fid, &mut attr, &mut fid, ptr::null_mut()) };
    check(rc, Error::CqOpen)?;
    Ok(fid)
}

fn get_wait_fd(cq: *mut sys::fid_cq) -> Result<RawFd> {
    let mut fd: c_int = -1;
    // SAFETY: FI_GETWAIT on a CQ with FI_WAIT_FD writes an int fd into arg.
    let rc = unsafe {
        sys::fi_control(
            unsafe_fid(cq),
            sys::FI_GETWAIT as c_int,
            (&mut fd as *mut c_int).cast::<c_void>(),
        )
    };
    check(rc, Error::GetWait)?;
    if fd < 0 {
        return Err(Error::GetWait(FiErrno::from_ret(-(libc::EBADF as isize))));
    }
    Ok(fd)
}

impl std::fmt::Debug for Cq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Cq({:p}, wait_fd {:?})",
            self.inner.fid, self.inner.wait_fd
        )
    }
}
