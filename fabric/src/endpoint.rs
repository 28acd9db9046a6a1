//! [`Endpoint`]: an RDM endpoint bound to one [`Cq`] (transmit and receive) and one [`Av`], and
//! the `unsafe` posting calls.

use std::os::raw::c_void;
use std::ptr;
use std::sync::Arc;

use fabric_sys as sys;

use crate::address::Address;
use crate::av::{Av, AvInner, PeerAddr};
use crate::context::UNKNOWN_OP;
use crate::cq::{Cq, CqInner};
use crate::domain::{close_fid, Domain, DomainInner, NotSync};
use crate::error::{check, post_result, Error, FiErrno, Result};
use crate::flags;
use crate::mr::LocalSegment;
use crate::mr_policy::PolicyError;
use crate::remote::RemoteRegion;

/// Regions per operation this layer passes at most (further bounded by the provider's
/// `iov_limit` / `rma_iov_limit`).
pub const MAX_IOV: usize = 32;

pub(crate) struct EpInner {
    pub(crate) fid: *mut sys::fid_ep,
    cq: Arc<CqInner>,
    _av: Arc<AvInner>,
    domain: Arc<DomainInner>,
    /// shm: keeps this endpoint's region lock watched until after the close
    /// ([`crate::shm_locks`]).
    shm_watch: std::sync::OnceLock<crate::shm_locks::Ticket>,
}

// SAFETY: see DomainInner.
unsafe impl Send for EpInner {}
// SAFETY: shared references only read immutable fields.
unsafe impl Sync for EpInner {}

impl Drop for EpInner {
    fn drop(&mut self) {
        // SAFETY: opened by fi_endpoint, closed once; MRs bound to it hold an Arc to us. The CQ
        // and AV it is bound to are closed after (their Arcs are fields).
        unsafe { close_fid(&mut (*self.fid).fid) };
    }
}

/// An enabled RDM endpoint.
pub struct Endpoint {
    pub(crate) inner: Arc<EpInner>,
    _not_sync: NotSync,
}

impl Endpoint {
    /// Opens an endpoint on `domain`, binds `cq` for transmit and receive completions and `av`,
    /// and enables it. For the shm provider, names a SIGKILLed process with this process's pid
    /// left in `/dev/shm` are removed first (once per process), so they cannot fail the enable
    /// with EBUSY.
    pub fn open(domain: &Domain, cq: &Cq, av: &Av) -> Result<Endpoint> {
        let d = &domain.inner;
        if !Arc::ptr_eq(&cq.inner.domain, d) || !Arc::ptr_eq(&av.inner.domain, d) {
            return Err(Error::Invalid(
                "the CQ and the AV must belong to the endpoint's domain".into(),
            ));
        }
        if d.caps().provider == "shm" {
            crate::shm_names::remove_stale_once();
        }
        let mut fid: *mut sys::fid_ep = ptr::null_mut();
        // SAFETY: valid domain and info entry; out pointer.
        let rc = unsafe { sys::fi_endpoint(d.fid, d.info(), &mut fid, ptr::null_mut()) };
        check(rc, Error::Endpoint)?;
        let ep = Endpoint {
            inner: Arc::new(EpInner {
                fid,
                cq: cq.inner.clone(),
                _av: av.inner.clone(),
                domain: d.clone(),
                shm_watch: std::sync::OnceLock::new(),
            }),
            _not_sync: NotSync::default(),
        };
        // SAFETY: valid endpoint and CQ fids of the same domain.
        let rc = unsafe {
            sys::fi_ep_bind(fid, &mut (*cq.inner.fid).fid, flags::TRANSMIT | flags::RECV)
        };
        check(rc, |err| Error::EpBind { what: "cq", err })?;
        // SAFETY: valid endpoint and AV fids of the same domain.
        let rc = unsafe { sys::fi_ep_bind(fid, &mut (*av.inner.fid).fid, 0) };
        check(rc, |err| Error::EpBind { what: "av", err })?;
        // SAFETY: a bound endpoint.
        let rc = unsafe { sys::fi_enable(fid) };
        check(rc, Error::Enable)?;
        if d.caps().provider == "shm" {
            if let Some(t) = ep
                .address()
                .ok()
                .and_then(|a| crate::shm_locks::watch(&a, true))
            {
                let _ = ep.inner.shm_watch.set(t);
            }
        }
        Ok(ep)
    }

    /// This endpoint's address (`fi_getname`) with the provider name.
    pub fn address(&self) -> Result<Address> {
        let mut buf = vec![0u8; 256];
        let mut len = buf.len();
        // SAFETY: buf has `len` writable bytes; the provider writes at most `len` and sets the
        // needed length.
        let mut rc = unsafe {
            sys::fi_getname(
                &mut (*self.inner.fid).fid,
                buf.as_mut_ptr().cast(),
                &mut len,
            )
        };
        if rc == -(sys::FI_ETOOSMALL as i32) && len <= crate::address::MAX_ADDRESS_LEN {
            buf.resize(len, 0);
            // SAFETY: as above with the larger buffer.
            rc = unsafe {
                sys::fi_getname(
                    &mut (*self.inner.fid).fid,
                    buf.as_mut_ptr().cast(),
                    &mut len,
                )
            };
        }
        check(rc, Error::Getname)?;
        buf.truncate(len);
        Ok(Address::new(&self.inner.domain.caps().provider, buf)?)
    }

    /// Capabilities of the provider entry the endpoint was opened from.
    pub fn caps(&self) -> &crate::Capabilities {
        self.inner.domain.caps()
    }

    /// The provider's per-operation limits: (local regions, remote regions), capped at
    /// [`MAX_IOV`].
    pub fn iov_limits(&self) -> (usize, usize) {
        let c = self.inner.domain.caps();
        (
            c.tx_iov_limit.clamp(1, MAX_IOV),
            c.rma_iov_limit.clamp(1, MAX_IOV),
        )
    }

    fn acquire(&self, op_id: u64) -> Result<*mut c_void> {
        if op_id == UNKNOWN_OP {
            return Err(Error::Invalid(format!(
                "op id {UNKNOWN_OP:#x} is reserved for completions without a context"
            )));
        }
        Ok(self.inner.cq.ctx.acquire(op_id))
    }

    fn finish(
        &self,
        ret: isize,
        ctx: *mut c_void,
        call: &'static str,
        f: impl FnOnce(FiErrno) -> Error,
    ) -> Result<()> {
        let r = post_result(ret, call, f);
        if r.is_err() {
            self.inner.cq.ctx.release_unposted(ctx);
        }
        r
    }

    /// Posts a send of `local` to `dest`; its completion carries `op_id`.
    ///
    /// # Safety
    /// The region `local` points into must stay alive and unmodified until the completion for
    /// `op_id` has been read from the endpoint's CQ.
    pub unsafe fn post_send(
        &self,
        local: &LocalSegment<'_>,
        dest: PeerAddr,
        op_id: u64,
    ) -> Result<()> {
        let ctx = self.acquire(op_id)?;
        // SAFETY: the segment is registered memory kept alive per the caller's contract; the
        // context is valid until completion.
        let ret = unsafe {
            sys::fi_send(
                self.inner.fid,
                local.ptr.cast(),
                local.len,
                local.desc,
                dest.0,
                ctx,
            )
        };
        self.finish(ret, ctx, "fi_send", Error::Send)
    }

    /// Sends `bytes` to `dest` with `fi_inject`: the provider copies them before returning, so
    /// the buffer (which need not be registered) is free at once, and no completion is
    /// generated on success. At most [`Capabilities::inject_size`](crate::Capabilities) bytes.
    /// An error the transport meets after the call returns may come as an error completion
    /// without a context ([`UNKNOWN_OP`](crate::UNKNOWN_OP)), or not at all: use it where the
    /// reply (or its deadline) tells the outcome.
    pub fn inject(&self, bytes: &[u8], dest: PeerAddr) -> Result<()> {
        let max = self.caps().inject_size;
        if bytes.len() > max {
            return Err(Error::Invalid(format!(
                "{} bytes is over the provider's inject size of {max}",
                bytes.len()
            )));
        }
        // SAFETY: a valid endpoint fid; fi_inject reads `bytes` (valid for its length) only
        // before it returns and keeps no pointer to it.
        let ret =
            unsafe { sys::fi_inject(self.inner.fid, bytes.as_ptr().cast(), bytes.len(), dest.0) };
        post_result(ret, "fi_inject", Error::Send)
    }

    /// Posts a receive into `local` from any peer; its completion carries `op_id` and the
    /// received length.
    ///
    /// # Safety
    /// The region `local` points into must stay alive and must not be read or written by
    /// anyone else until the completion for `op_id` has been read from the endpoint's CQ.
    pub unsafe fn post_recv(&self, local: &LocalSegment<'_>, op_id: u64) -> Result<()> {
        let ctx = self.acquire(op_id)?;
        // SAFETY: as in post_send; the provider writes at most local.len bytes.
        let ret = unsafe {
            sys::fi_recv(
                self.inner.fid,
                local.ptr.cast(),
                local.len,
                local.desc,
                flags::ADDR_UNSPEC,
                ctx,
            )
        };
        self.finish(ret, ctx, "fi_recv", Error::Recv)
    }

    /// Posts an RMA read of the `remote` regions of `peer` into the `local` segments (in order;
    /// the total lengths must be equal). One region each uses `fi_read`, more `fi_readmsg`,
    /// within [`Endpoint::iov_limits`].
    ///
    /// # Safety
    /// The regions the `local` segments point into must stay alive and must not be read or
    /// written by anyone else until the completion for `op_id` has been read from the CQ.
    pub unsafe fn post_read(
        &self,
        local: &[LocalSegment<'_>],
        peer: PeerAddr,
        remote: &[RemoteRegion],
        op_id: u64,
    ) -> Result<()> {
        // SAFETY: forwarded contract.
        unsafe { self.post_rma(Rma::Read, local, peer, remote, op_id) }
    }

    /// Posts an RMA write of the `local` segments into the `remote` regions of `peer` (see
    /// [`Endpoint::post_read`]).
    ///
    /// # Safety
    /// The regions the `local` segments point into must stay alive and unmodified until the
    /// completion for `op_id` has been read from the CQ.
    pub unsafe fn post_write(
        &self,
        local: &[LocalSegment<'_>],
        peer: PeerAddr,
        remote: &[RemoteRegion],
        op_id: u64,
    ) -> Result<()> {
        // SAFETY: forwarded contract.
        unsafe { self.post_rma(Rma::Write, local, peer, remote, op_id) }
    }

    /// # Safety
    /// See post_read/post_write.
    unsafe fn post_rma(
        &self,
        kind: Rma,
        local: &[LocalSegment<'_>],
        peer: PeerAddr,
        remote: &[RemoteRegion],
        op_id: u64,
    ) -> Result<()> {
        let (liov, riov) = self.iov_limits();
        check_count("local iov", local.len(), liov)?;
        check_count("rma iov", remote.len(), riov)?;
        let ltotal: usize = local.iter().map(|s| s.len).sum();
        let rtotal: u64 = remote.iter().map(|r| r.len()).sum();
        if ltotal as u64 != rtotal {
            return Err(Error::Invalid(format!(
                "local segments total {ltotal} bytes but remote regions {rtotal}"
            )));
        }
        let mut rma = [sys::fi_rma_iov::default(); MAX_IOV];
        for (slot, r) in rma.iter_mut().zip(remote) {
            let key = r
                .key_u64()
                .ok_or(Error::MrPolicy(PolicyError::LongKey(r.key_bytes().len())))?;
            *slot = sys::fi_rma_iov {
                addr: r.addr(),
                len: usize::try_from(r.len())
                    .map_err(|_too_big| Error::Invalid("remote region too long".into()))?,
                key,
            };
        }
        let ctx = self.acquire(op_id)?;
        let (call, ret) = if local.len() == 1 && remote.len() == 1 {
            let (l, r) = (&local[0], &rma[0]);
            match kind {
                Rma::Read => (
                    "fi_read",
                    // SAFETY: registered local memory kept alive per the contract; the remote
                    // address/key are the peer's business (a bad one completes with an error).
                    unsafe {
                        sys::fi_read(
                            self.inner.fid,
                            l.ptr.cast(),
                            l.len,
                            l.desc,
                            peer.0,
                            r.addr,
                            r.key,
                            ctx,
                        )
                    },
                ),
                Rma::Write => (
                    "fi_write",
                    // SAFETY: as above.
                    unsafe {
                        sys::fi_write(
                            self.inner.fid,
                            l.ptr.cast(),
                            l.len,
                            l.desc,
                            peer.0,
                            r.addr,
                            r.key,
                            ctx,
                        )
                    },
                ),
            }
        } else {
            let mut iov = [libc::iovec {
                iov_base: ptr::null_mut(),
                iov_len: 0,
            }; MAX_IOV];
            let mut desc = [ptr::null_mut::<c_void>(); MAX_IOV];
            for (i, s) in local.iter().enumerate() {
                iov[i] = libc::iovec {
                    iov_base: s.ptr.cast(),
                    iov_len: s.len,
                };
                desc[i] = s.desc;
            }
            let msg = sys::fi_msg_rma {
                msg_iov: iov.as_ptr().cast(),
                desc: desc.as_mut_ptr(),
                iov_count: local.len(),
                addr: peer.0,
                rma_iov: rma.as_ptr(),
                rma_iov_count: remote.len(),
                context: ctx,
                data: 0,
            };
            match kind {
                // SAFETY: msg points at arrays that live across the call (libfabric copies
                // the iovs); the memory they describe follows the contract.
                Rma::Read => ("fi_readmsg", unsafe {
                    sys::fi_readmsg(self.inner.fid, &msg, flags::COMPLETION)
                }),
                // SAFETY: as above.
                Rma::Write => ("fi_writemsg", unsafe {
                    sys::fi_writemsg(self.inner.fid, &msg, flags::COMPLETION)
                }),
            }
        };
        match kind {
            Rma::Read => self.finish(ret, ctx, call, |err| Error::Read { call, err }),
            Rma::Write => self.finish(ret, ctx, call, |err| Error::Write { call, err }),
        }
    }

    /// The raw fid. Owned by `self`: do not close it.
    pub fn as_raw(&self) -> *mut sys::fid_ep {
        self.inner.fid
    }
}

#[derive(Clone, Copy)]
enum Rma {
    Read,
    Write,
}

fn check_count(what: &'static str, count: usize, limit: usize) -> Result<()> {
    if count == 0 {
        return Err(Error::Invalid(format!("{what}: no regions")));
    }
    if count > limit {
        return Err(Error::TooManyRegions { what, count, limit });
    }
    Ok(())
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Endpoint({:p}, {})",
            self.inner.fid,
            self.inner.domain.caps().provider
        )
    }
}
