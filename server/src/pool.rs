//! Registered buffers reused across requests (no registration per batch in steady state).

use std::collections::HashMap;
use std::sync::Arc;

use diaspora_rpc::{Buffer, Handle, RpcError};
use parking_lot::Mutex;

/// Smallest buffer handed out.
const MIN_CLASS: usize = 64 * 1024;
/// Largest buffer kept for reuse.
const MAX_POOLED: usize = 64 << 20;
/// Buffers kept per size class.
const PER_CLASS: usize = 8;

/// A pool of registered buffers of one engine, by power-of-two size class.
pub struct BufPool {
    handle: Handle,
    free: Mutex<HashMap<usize, Vec<Buffer>>>,
}

impl BufPool {
    /// A pool registering on `handle`'s engine.
    pub fn new(handle: Handle) -> Arc<BufPool> {
        Arc::new(BufPool {
            handle,
            free: Mutex::new(HashMap::new()),
        })
    }

    /// A buffer of at least `len` bytes.
    pub fn get(&self, len: usize) -> Result<Buffer, RpcError> {
        let class = len.max(MIN_CLASS).next_power_of_two();
        if let Some(b) = self.free.lock().get_mut(&class).and_then(Vec::pop) {
            return Ok(b);
        }
        self.handle.register(class)
    }

    /// A newly registered buffer of `len` bytes rounded up to 4 KiB (for data a log keeps:
    /// a size class could waste up to half of it), its pages already faulted in
    /// ([`diaspora_fabric::populate`]), on the calling thread.
    ///
    /// Why: over `shm` the provider faulted the pages in under its lock of the shared region
    /// while the reads landed, and the peer spun on that lock meanwhile (a producer's progress
    /// thread spent 79% of its samples in `pthread_spin_lock` while the server stored 64 KiB
    /// events in memory). With the pages faulted in first: `diaspora-bench produce --driver
    /// fabric --events 30000 --data-size 65536`, memory storage, six alternated rounds (three
    /// in each order), shm 563-1528 against 1225-1508 MiB/s (producer user time 0.51-2.09
    /// against 0.26-0.32 s), tcp;ofi_rxm 629-882 against 890-1187 MiB/s (server system time
    /// 2.05-2.71 against 1.50-2.04 s).
    pub fn get_exact(&self, len: usize) -> Result<Buffer, RpcError> {
        let b = self.handle.register(len.max(1).div_ceil(4096) * 4096)?;
        diaspora_fabric::populate(b.as_slice());
        Ok(b)
    }

    /// Gives a buffer back.
    pub fn put(&self, b: Buffer) {
        let class = b.len();
        if class > MAX_POOLED || !class.is_power_of_two() {
            return;
        }
        let mut g = self.free.lock();
        let v = g.entry(class).or_default();
        if v.len() < PER_CLASS {
            v.push(b);
        }
    }
}

/// A buffer's first `len` bytes, owned by a `Bytes`; the buffer goes back to its pool when
/// the last `Bytes` referring to it is dropped.
pub struct Pooled {
    buf: Option<Buffer>,
    len: usize,
    pool: Arc<BufPool>,
}

impl Pooled {
    /// Wraps `buf` (of at least `len` bytes).
    pub fn new(buf: Buffer, len: usize, pool: Arc<BufPool>) -> Pooled {
        let len = len.min(buf.len());
        Pooled {
            buf: Some(buf),
            len,
            pool,
        }
    }
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        match &self.buf {
            Some(b) => &b.as_slice()[..self.len],
            None => &[],
        }
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(b) = self.buf.take() {
            self.pool.put(b);
        }
    }
}

#[cfg(test)]
mod tests {
    /// Pages of `mem` resident in memory (mincore; `mem` starts on a page).
    fn resident(mem: &[u8]) -> usize {
        let mut v = vec![0u8; mem.len().div_ceil(4096)];
        // SAFETY: `mem` is one live, page-aligned mapping; `v` has one byte per page.
        let r = unsafe { libc::mincore(mem.as_ptr() as *mut _, mem.len(), v.as_mut_ptr()) };
        assert_eq!(r, 0, "mincore");
        v.iter().filter(|b| *b & 1 == 1).count()
    }

    #[test]
    fn buffers_for_the_memory_log_come_with_their_pages_faulted_in() {
        let mut c = diaspora_rpc::EngineConfig::for_provider("tcp;ofi_rxm");
        c.source = Some("127.0.0.1".into());
        let engine = diaspora_rpc::Engine::new(c).expect("engine on loopback");
        let pool = super::BufPool::new(engine.handle());
        let b = pool.get_exact(1 << 20).expect("buffer");
        assert_eq!(b.len(), 1 << 20);
        assert_eq!(resident(b.as_slice()), 256);
        drop(b);
        engine.shutdown();
    }
}
