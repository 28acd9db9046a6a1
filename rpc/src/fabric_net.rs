//! [`Net`] on `diaspora-fabric`: one domain, CQ, AV and RDM endpoint, opened for one progress
//! thread (`FI_THREAD_DOMAIN`).

use std::collections::HashMap;
use std::os::fd::RawFd;

use bytes::Bytes;
use diaspora_fabric::{
    Access, Av, Cq, CqOptions, Domain, Endpoint, Error as FiError, Fabric, Hints, Info,
    LocalSegment, MemoryRegion, PageBuf, PeerAddr, RegionBuf, RemoteRegion,
};

use crate::net::{Net, NetError, NetEvent, PostError};

/// Caller-owned `Bytes`, registered in place (read-only).
pub struct SharedBytes(Bytes);

impl std::ops::Deref for SharedBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

// SAFETY: the bytes a `Bytes` points at never move or change while any handle to them lives
// (they are on the heap or static, and `Bytes` gives no mutable access); this value holds one
// handle for as long as the registration exists, and only `Deref` is implemented, so nothing
// writes through it.
unsafe impl RegionBuf for SharedBytes {}

/// A registration: a page-aligned zeroed buffer the engine owns, or the caller's `Bytes`
/// registered in place (read-only: the source of sends and RMA writes, readable by peers).
pub enum FabricMr {
    /// `Handle::register`: writable, peers may read and write it.
    Owned(MemoryRegion<PageBuf>),
    /// `Handle::register_bytes`: read-only.
    Shared(MemoryRegion<SharedBytes>),
}

impl FabricMr {
    fn local(&self, range: std::ops::Range<usize>) -> Result<LocalSegment<'_>, FiError> {
        match self {
            FabricMr::Owned(m) => m.local(range),
            FabricMr::Shared(m) => m.local(range),
        }
    }

    fn writable(&mut self) -> Result<&mut MemoryRegion<PageBuf>, PostError> {
        match self {
            FabricMr::Owned(m) => Ok(m),
            FabricMr::Shared(_) => Err(PostError::Failed(
                "a read-only registration (register_bytes) cannot receive data".into(),
            )),
        }
    }
}

/// One endpoint with its own domain, CQ and AV.
pub struct FabricNet {
    provider: String,
    address: Vec<u8>,
    // Field order is drop order: endpoint, then AV and CQ, then domain and fabric (each also
    // keeps its parent alive, so the order is only for clarity).
    ep: Option<Endpoint>,
    av: Av,
    cq: Cq,
    domain: Domain,
    _fabric: Fabric,
    /// Our peer handles (never reused): each one's AV entry and raw address.
    /// (Fx hash: the keys are ours, never a peer's.)
    peers: rustc_hash::FxHashMap<u64, (PeerAddr, Box<[u8]>)>,
    /// One AV entry per distinct raw address, with the number of handles sharing it.
    /// libfabric merges identical addresses into one `fi_addr_t` (the util AV counts its
    /// users, but shm's removal unmaps the peer whatever the count), so the entry is inserted
    /// once and removed only when its last handle goes.
    entries: HashMap<Box<[u8]>, (PeerAddr, usize)>,
    next_peer: u64,
    completions: Vec<diaspora_fabric::Completion>,
}

/// Why a [`FabricNet`] could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {source}")]
pub struct OpenError {
    /// The step that failed.
    pub step: &'static str,
    /// The libfabric error.
    #[source]
    pub source: FiError,
}

fn step(step: &'static str) -> impl FnOnce(FiError) -> OpenError {
    move |source| OpenError { step, source }
}

impl FabricNet {
    /// Opens `provider`, optionally restricted to a domain and/or a source address (for
    /// example `127.0.0.1`).
    pub fn open(
        provider: &str,
        domain: Option<&str>,
        source: Option<&str>,
    ) -> Result<FabricNet, OpenError> {
        let mut hints = Hints::provider(provider);
        if let Some(d) = domain {
            hints = hints.with_domain(d);
        }
        if let Some(s) = source {
            hints = hints.with_source(s);
        }
        let info = Info::get(&hints).map_err(step("fi_getinfo"))?;
        let fabric = Fabric::open(&info).map_err(step("fi_fabric"))?;
        let domain = Domain::open(&fabric).map_err(step("fi_domain"))?;
        let cq = Cq::open(&domain, &CqOptions::default()).map_err(step("fi_cq_open"))?;
        let av = Av::open(&domain).map_err(step("fi_av_open"))?;
        let ep = Endpoint::open(&domain, &cq, &av).map_err(step("fi_endpoint"))?;
        let address = ep.address().map_err(step("fi_getname"))?;
        Ok(FabricNet {
            provider: domain.caps().provider.clone(),
            address: address.bytes().to_vec(),
            ep: Some(ep),
            av,
            cq,
            domain,
            _fabric: fabric,
            peers: rustc_hash::FxHashMap::default(),
            entries: HashMap::new(),
            next_peer: 0,
            completions: Vec::with_capacity(64),
        })
    }

    fn ep(&self) -> Result<&Endpoint, PostError> {
        self.ep
            .as_ref()
            .ok_or_else(|| PostError::Failed("the endpoint is closed".into()))
    }

    /// Drops handle `peer`; gives back its AV entry when it was the entry's last handle.
    fn release(&mut self, peer: u64) -> Result<Option<PeerAddr>, NetError> {
        let (p, raw) = self
            .peers
            .remove(&peer)
            .ok_or_else(|| format!("no peer {peer} in the address vector"))?;
        let last = match self.entries.get_mut(&raw) {
            Some((_, users)) if *users > 1 => {
                *users -= 1;
                false
            }
            _ => true,
        };
        if last {
            self.entries.remove(&raw);
        }
        Ok(last.then_some(p))
    }

    fn peer(&self, peer: u64) -> Result<PeerAddr, PostError> {
        self.peers.get(&peer).map(|(p, _)| *p).ok_or_else(|| {
            PostError::Failed(format!("no peer {peer} in the address vector").into())
        })
    }
}

fn post(r: Result<(), FiError>) -> Result<(), PostError> {
    match r {
        Ok(()) => Ok(()),
        Err(FiError::Again { .. }) => Err(PostError::Again),
        Err(e) => Err(PostError::Failed(Box::new(e))),
    }
}

fn failed(e: FiError) -> PostError {
    PostError::Failed(Box::new(e))
}

impl Net for FabricNet {
    type Mr = FabricMr;
    type Remote = RemoteRegion;

    fn provider(&self) -> &str {
        &self.provider
    }

    fn local_address(&self) -> Vec<u8> {
        self.address.clone()
    }

    fn insert_peer(&mut self, raw: &[u8]) -> Result<u64, NetError> {
        let p = match self.entries.get_mut(raw) {
            Some((p, users)) => {
                *users += 1;
                *p
            }
            None => {
                let addr = diaspora_fabric::Address::new(&self.provider, raw.to_vec())?;
                let p = self.av.insert(&addr)?;
                self.entries.insert(raw.into(), (p, 1));
                p
            }
        };
        let handle = self.next_peer;
        self.next_peer += 1;
        self.peers.insert(handle, (p, raw.into()));
        Ok(handle)
    }

    fn remove_peer(&mut self, peer: u64) -> Result<(), NetError> {
        match self.release(peer)? {
            Some(p) => Ok(self.av.remove(p)?),
            None => Ok(()),
        }
    }

    fn forget_peer(&mut self, peer: u64) {
        let _ = self.release(peer);
    }

    fn register(&mut self, len: usize, remote: bool) -> Result<FabricMr, NetError> {
        let buf = PageBuf::new(len.max(1)).ok_or("cannot allocate a page-aligned buffer")?;
        let access = if remote {
            Access::ALL
        } else {
            Access::SEND | Access::RECV | Access::READ | Access::WRITE
        };
        let mut mr = MemoryRegion::register(&self.domain, buf, access)?;
        if let Some(ep) = &self.ep {
            mr.bind(ep)?;
        }
        Ok(FabricMr::Owned(mr))
    }

    fn register_bytes(&mut self, bytes: Bytes) -> Result<FabricMr, NetError> {
        if bytes.is_empty() {
            return Err("cannot register an empty buffer".into());
        }
        let access = Access::SEND | Access::WRITE | Access::REMOTE_READ;
        let mut mr = MemoryRegion::register(&self.domain, SharedBytes(bytes), access)?;
        if let Some(ep) = &self.ep {
            mr.bind(ep)?;
        }
        Ok(FabricMr::Shared(mr))
    }

    fn bytes(mr: &FabricMr) -> &[u8] {
        match mr {
            FabricMr::Owned(m) => m.as_slice(),
            FabricMr::Shared(m) => m.as_slice(),
        }
    }

    fn is_read_only(mr: &FabricMr) -> bool {
        matches!(mr, FabricMr::Shared(_))
    }

    fn bytes_mut(mr: &mut FabricMr) -> Option<&mut [u8]> {
        match mr {
            FabricMr::Owned(m) => Some(m.as_mut_slice()),
            FabricMr::Shared(_) => None,
        }
    }

    fn remote(mr: &FabricMr) -> Result<RemoteRegion, NetError> {
        Ok(match mr {
            FabricMr::Owned(m) => m.remote()?,
            FabricMr::Shared(m) => m.remote()?,
        })
    }

    fn remote_len(remote: &RemoteRegion) -> usize {
        usize::try_from(remote.len()).unwrap_or(usize::MAX)
    }

    unsafe fn post_recv(&mut self, mr: &mut FabricMr, ctx: u64) -> Result<(), PostError> {
        let seg = mr.writable()?.local_all().map_err(failed)?;
        // SAFETY: forwarded contract: the caller keeps `mr` alive until the completion.
        post(unsafe { self.ep()?.post_recv(&seg, ctx) })
    }

    unsafe fn post_send(
        &mut self,
        peer: u64,
        mr: &FabricMr,
        len: usize,
        ctx: u64,
    ) -> Result<(), PostError> {
        let dest = self.peer(peer)?;
        let seg = mr.local(0..len).map_err(failed)?;
        // SAFETY: forwarded contract.
        post(unsafe { self.ep()?.post_send(&seg, dest, ctx) })
    }

    fn inject_size(&self) -> usize {
        self.ep.as_ref().map_or(0, |ep| ep.caps().inject_size)
    }

    fn inject(&mut self, peer: u64, bytes: &[u8]) -> Result<(), PostError> {
        let dest = self.peer(peer)?;
        post(self.ep()?.inject(bytes, dest))
    }

    unsafe fn post_read(
        &mut self,
        peer: u64,
        mr: &mut FabricMr,
        offset: usize,
        remote: &RemoteRegion,
        ctx: u64,
    ) -> Result<(), PostError> {
        let dest = self.peer(peer)?;
        let end = offset.saturating_add(Self::remote_len(remote));
        let seg = mr.writable()?.local(offset..end).map_err(failed)?;
        // SAFETY: forwarded contract.
        post(unsafe {
            self.ep()?
                .post_read(&[seg], dest, std::slice::from_ref(remote), ctx)
        })
    }

    unsafe fn post_write(
        &mut self,
        peer: u64,
        mr: &FabricMr,
        offset: usize,
        remote: &RemoteRegion,
        ctx: u64,
    ) -> Result<(), PostError> {
        let dest = self.peer(peer)?;
        let end = offset.saturating_add(Self::remote_len(remote));
        let seg = mr.local(offset..end).map_err(failed)?;
        // SAFETY: forwarded contract.
        post(unsafe {
            self.ep()?
                .post_write(&[seg], dest, std::slice::from_ref(remote), ctx)
        })
    }

    fn poll(&mut self, out: &mut Vec<NetEvent>) -> Result<(), NetError> {
        self.completions.clear();
        self.cq.read(&mut self.completions, 64)?;
        for c in self.completions.drain(..) {
            let error = c.result.err().map(|e| Box::new(e) as NetError);
            out.push(NetEvent {
                ctx: c.op_id,
                len: c.len,
                error,
            });
        }
        Ok(())
    }

    fn wait_fd(&self) -> Option<RawFd> {
        self.cq.wait_fd()
    }

    fn try_wait(&mut self) -> bool {
        // fi_trywait on a CQ without a wait object (shm) crashes inside libfabric 1.17: only
        // call it when there is an fd to sleep on.
        match self.cq.wait_fd() {
            Some(_) => self.cq.trywait().unwrap_or(false),
            None => true,
        }
    }

    fn close(&mut self) {
        self.ep = None;
    }
}
