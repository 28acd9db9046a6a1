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
    /// a size class could waste up to half of it).
    pub fn get_exact(&self, len: usize) -> Result<Buffer, RpcError> {
        self.handle.register(len.max(1).div_ceil(4096) * 4096)
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
