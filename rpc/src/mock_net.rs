//! An in-process [`Net`] for engine tests without a provider: endpoints in one [`World`]
//! exchange messages and RMA through shared queues. A peer can be *stalled* (its memory is
//! readable but reads do not complete until released, like a producer that stopped driving
//! progress) or *killed* (its memory is gone and operations on it fail).

use std::collections::{HashMap, VecDeque};
use std::os::fd::RawFd;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::net::{Net, NetError, NetEvent, PostError};

#[derive(Default)]
struct Ep {
    recvs: VecDeque<(u64, usize, *mut u8)>,
    unexpected: VecDeque<Vec<u8>>,
    cq: VecDeque<NetEvent>,
    stalled: bool,
    dead: bool,
    /// Sends to this endpoint answer `-FI_EAGAIN` forever (rxm towards a dead peer).
    refusing: bool,
    /// Reads that target this endpoint while stalled: (reader, ctx, dst, len, src).
    held: Vec<(Vec<u8>, u64, *mut u8, usize, *const u8)>,
}

#[derive(Default)]
struct WorldInner {
    eps: HashMap<Vec<u8>, Ep>,
    /// key -> (owner address, base pointer, length).
    mem: HashMap<u64, (Vec<u8>, usize, usize)>,
    next_key: u64,
}

// SAFETY: the raw pointers in the world point into registered buffers that the engine keeps
// alive until the matching completion (the Net contract), and are only dereferenced under the
// world's lock.
unsafe impl Send for WorldInner {}

/// A set of endpoints that can reach each other.
#[derive(Clone, Default)]
pub(crate) struct World(Arc<Mutex<WorldInner>>);

impl World {
    pub(crate) fn endpoint(&self, name: &str) -> MockNet {
        let addr = name.as_bytes().to_vec();
        self.0.lock().eps.insert(addr.clone(), Ep::default());
        MockNet {
            world: self.clone(),
            addr,
            peers: HashMap::new(),
            next_peer: 0,
            provider: "mock".into(),
        }
    }

    /// Reads of `name`'s memory stop completing until [`World::release`].
    pub(crate) fn stall(&self, name: &str) {
        if let Some(ep) = self.0.lock().eps.get_mut(name.as_bytes()) {
            ep.stalled = true;
        }
    }

    /// Completes the reads held by a stall (copying the data now).
    pub(crate) fn release(&self, name: &str) {
        let mut w = self.0.lock();
        let held = match w.eps.get_mut(name.as_bytes()) {
            Some(ep) => {
                ep.stalled = false;
                std::mem::take(&mut ep.held)
            }
            None => return,
        };
        for (reader, ctx, dst, len, src) in held {
            // SAFETY: both buffers are kept alive by their engines until this completion is
            // read (the reader's op table owns `dst`; `src` is still registered, checked at
            // post time, and the test keeps it alive).
            unsafe { std::ptr::copy_nonoverlapping(src, dst, len) };
            if let Some(ep) = w.eps.get_mut(&reader) {
                ep.cq.push_back(NetEvent {
                    ctx,
                    len,
                    error: None,
                });
            }
        }
    }

    /// Registrations `name` holds.
    pub(crate) fn registered(&self, name: &str) -> usize {
        self.0
            .lock()
            .mem
            .values()
            .filter(|(o, _, _)| o.as_slice() == name.as_bytes())
            .count()
    }

    /// Sends to `name` answer `-FI_EAGAIN` from now on, as rxm does towards a peer that died
    /// (its connection never completes).
    pub(crate) fn refuse_sends(&self, name: &str) {
        if let Some(ep) = self.0.lock().eps.get_mut(name.as_bytes()) {
            ep.refusing = true;
        }
    }

    /// `name` dies: its held reads fail, later operations on it and its own sends fail.
    pub(crate) fn kill(&self, name: &str) {
        let mut w = self.0.lock();
        let held = match w.eps.get_mut(name.as_bytes()) {
            Some(ep) => {
                ep.dead = true;
                std::mem::take(&mut ep.held)
            }
            None => return,
        };
        w.mem
            .retain(|_, (owner, _, _)| owner.as_slice() != name.as_bytes());
        for (reader, ctx, _, _, _) in held {
            if let Some(ep) = w.eps.get_mut(&reader) {
                ep.cq.push_back(NetEvent {
                    ctx,
                    len: 0,
                    error: Some("peer died".into()),
                });
            }
        }
    }
}

/// A registered buffer of the mock.
pub(crate) struct MockMr {
    buf: Box<[u8]>,
    /// Registered by `register_bytes` (the mock copies; the contract is what is tested).
    read_only: bool,
    key: u64,
    world: World,
}

impl Drop for MockMr {
    fn drop(&mut self) {
        self.world.0.lock().mem.remove(&self.key);
    }
}

/// A remote region of the mock.
#[derive(Debug, Clone)]
pub(crate) struct MockRemote {
    key: u64,
    offset: usize,
    len: usize,
}

pub(crate) struct MockNet {
    world: World,
    addr: Vec<u8>,
    peers: HashMap<u64, Vec<u8>>,
    next_peer: u64,
    provider: String,
}

impl MockNet {
    fn peer(&self, peer: u64) -> Result<Vec<u8>, PostError> {
        self.peers
            .get(&peer)
            .cloned()
            .ok_or_else(|| PostError::Failed("no such peer".into()))
    }

    fn rma(
        &mut self,
        peer: u64,
        local: *mut u8,
        local_len: usize,
        remote: &MockRemote,
        ctx: u64,
        write: bool,
    ) -> Result<(), PostError> {
        let peer = self.peer(peer)?;
        let mut w = self.world.0.lock();
        let Some((owner, base, len)) = w.mem.get(&remote.key).cloned() else {
            drop(w);
            return self.complete(ctx, 0, Some("invalid key".into()));
        };
        if owner != peer || remote.offset + remote.len > len || remote.len > local_len {
            drop(w);
            return self.complete(ctx, 0, Some("bad remote region".into()));
        }
        let target = (base + remote.offset) as *mut u8;
        let stalled = w.eps.get(&peer).is_some_and(|e| e.stalled);
        if stalled && !write {
            let me = self.addr.clone();
            if let Some(ep) = w.eps.get_mut(&peer) {
                ep.held
                    .push((me, ctx, local, remote.len, target.cast_const()));
            }
            return Ok(());
        }
        // SAFETY: `target` lies in a live registration (checked under the lock) and `local` in
        // a buffer the engine keeps alive until this completion.
        unsafe {
            if write {
                std::ptr::copy_nonoverlapping(local.cast_const(), target, remote.len);
            } else {
                std::ptr::copy_nonoverlapping(target.cast_const(), local, remote.len);
            }
        }
        drop(w);
        self.complete(ctx, remote.len, None)
    }

    fn complete(&mut self, ctx: u64, len: usize, error: Option<NetError>) -> Result<(), PostError> {
        if let Some(ep) = self.world.0.lock().eps.get_mut(&self.addr) {
            ep.cq.push_back(NetEvent { ctx, len, error });
        }
        Ok(())
    }
}

impl Net for MockNet {
    type Mr = MockMr;
    type Remote = MockRemote;

    fn provider(&self) -> &str {
        &self.provider
    }

    fn local_address(&self) -> Vec<u8> {
        self.addr.clone()
    }

    fn insert_peer(&mut self, raw: &[u8]) -> Result<u64, NetError> {
        let handle = self.next_peer;
        self.next_peer += 1;
        self.peers.insert(handle, raw.to_vec());
        Ok(handle)
    }

    fn remove_peer(&mut self, peer: u64) -> Result<(), NetError> {
        match self.peers.remove(&peer) {
            Some(_) => Ok(()),
            None => Err(format!("no peer {peer}").into()),
        }
    }

    fn forget_peer(&mut self, peer: u64) {
        self.peers.remove(&peer);
    }

    fn register(&mut self, len: usize, _remote: bool) -> Result<MockMr, NetError> {
        let buf = vec![0u8; len].into_boxed_slice();
        let mut w = self.world.0.lock();
        w.next_key += 1;
        let key = w.next_key;
        w.mem
            .insert(key, (self.addr.clone(), buf.as_ptr() as usize, len));
        Ok(MockMr {
            buf,
            read_only: false,
            key,
            world: self.world.clone(),
        })
    }

    fn register_bytes(&mut self, bytes: bytes::Bytes) -> Result<MockMr, NetError> {
        if bytes.is_empty() {
            return Err("cannot register an empty buffer".into());
        }
        let mut mr = self.register(bytes.len(), true)?;
        mr.buf.copy_from_slice(&bytes);
        mr.read_only = true;
        Ok(mr)
    }

    fn bytes(mr: &MockMr) -> &[u8] {
        &mr.buf
    }

    fn is_read_only(mr: &MockMr) -> bool {
        mr.read_only
    }

    fn bytes_mut(mr: &mut MockMr) -> Option<&mut [u8]> {
        (!mr.read_only).then_some(&mut mr.buf[..])
    }

    fn remote(mr: &MockMr) -> Result<MockRemote, NetError> {
        Ok(MockRemote {
            key: mr.key,
            offset: 0,
            len: mr.buf.len(),
        })
    }

    fn remote_len(remote: &MockRemote) -> usize {
        remote.len
    }

    unsafe fn post_recv(&mut self, mr: &mut MockMr, ctx: u64) -> Result<(), PostError> {
        if mr.read_only {
            return Err(PostError::Failed("read-only registration".into()));
        }
        let mut w = self.world.0.lock();
        let Some(ep) = w.eps.get_mut(&self.addr) else {
            return Err(PostError::Failed("closed".into()));
        };
        if let Some(msg) = ep.unexpected.pop_front() {
            let n = msg.len().min(mr.buf.len());
            mr.buf[..n].copy_from_slice(&msg[..n]);
            let error: Option<NetError> = (msg.len() > mr.buf.len()).then(|| "truncated".into());
            ep.cq.push_back(NetEvent { ctx, len: n, error });
        } else {
            ep.recvs.push_back((ctx, mr.buf.len(), mr.buf.as_mut_ptr()));
        }
        Ok(())
    }

    unsafe fn post_send(
        &mut self,
        peer: u64,
        mr: &MockMr,
        len: usize,
        ctx: u64,
    ) -> Result<(), PostError> {
        let dest = self.peer(peer)?;
        let msg = mr.buf[..len].to_vec();
        let mut w = self.world.0.lock();
        if w.eps.get(&self.addr).is_some_and(|ep| ep.dead) {
            // A killed process sends nothing.
            return Err(PostError::Failed("this endpoint was killed".into()));
        }
        if w.eps.get(&dest).is_some_and(|ep| ep.refusing) {
            return Err(PostError::Again);
        }
        let ok = match w.eps.get_mut(&dest) {
            Some(ep) if !ep.dead => {
                if let Some((rctx, rlen, ptr)) = ep.recvs.pop_front() {
                    let n = len.min(rlen);
                    // SAFETY: `ptr` is a posted receive buffer of `rlen` bytes, kept alive by
                    // its engine until this completion is read.
                    unsafe { std::ptr::copy_nonoverlapping(msg.as_ptr(), ptr, n) };
                    let error: Option<NetError> = (len > rlen).then(|| "truncated".into());
                    ep.cq.push_back(NetEvent {
                        ctx: rctx,
                        len: n,
                        error,
                    });
                } else {
                    ep.unexpected.push_back(msg);
                }
                true
            }
            _ => false,
        };
        drop(w);
        self.complete(ctx, len, (!ok).then(|| "peer unreachable".into()))
    }

    unsafe fn post_read(
        &mut self,
        peer: u64,
        mr: &mut MockMr,
        offset: usize,
        remote: &MockRemote,
        ctx: u64,
    ) -> Result<(), PostError> {
        if mr.read_only {
            return Err(PostError::Failed("read-only registration".into()));
        }
        let len = mr.buf.len().saturating_sub(offset);
        let ptr = mr.buf[offset..].as_mut_ptr();
        self.rma(peer, ptr, len, remote, ctx, false)
    }

    unsafe fn post_write(
        &mut self,
        peer: u64,
        mr: &MockMr,
        offset: usize,
        remote: &MockRemote,
        ctx: u64,
    ) -> Result<(), PostError> {
        let len = mr.buf.len().saturating_sub(offset);
        let ptr = mr.buf[offset..].as_ptr().cast_mut();
        self.rma(peer, ptr, len, remote, ctx, true)
    }

    fn poll(&mut self, out: &mut Vec<NetEvent>) -> Result<(), NetError> {
        if let Some(ep) = self.world.0.lock().eps.get_mut(&self.addr) {
            out.extend(ep.cq.drain(..));
        }
        Ok(())
    }

    fn wait_fd(&self) -> Option<RawFd> {
        None
    }

    fn try_wait(&mut self) -> bool {
        true
    }

    fn close(&mut self) {
        let mut w = self.world.0.lock();
        if let Some(ep) = w.eps.get_mut(&self.addr) {
            ep.recvs.clear();
            ep.dead = true;
        }
        // Reads held on other endpoints that target our buffers are dropped with us.
        let me = self.addr.clone();
        for ep in w.eps.values_mut() {
            ep.held.retain(|h| h.0 != me);
        }
    }
}
