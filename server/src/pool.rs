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
    /// a size class could waste up to half of it), its pages already faulted in (see
    /// [`populate`]).
    pub fn get_exact(&self, len: usize) -> Result<Buffer, RpcError> {
        let mut b = self.handle.register(len.max(1).div_ceil(4096) * 4096)?;
        populate(b.as_mut_slice());
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

/// Faults in every page of `buf` now, on the calling thread (`MADV_POPULATE_WRITE`, Linux
/// 5.14 and later; best effort: on an older kernel the pages are faulted in on first write as
/// before). The bytes do not change (fresh anonymous pages read as zero either way).
///
/// Why: a buffer that a bulk read lands in would otherwise be faulted in page by page while
/// the provider writes into it. Over `shm` that happens under the provider's lock of the
/// shared region, and the peer spins on that lock meanwhile: a producer's progress thread
/// spent 79% of its samples in `pthread_spin_lock` while the server stored 64 KiB events in
/// memory. Faulting the pages in first, in one call: `diaspora-bench produce --driver fabric
/// --events 30000 --data-size 65536`, memory storage, six alternated rounds (three in each
/// order), shm 563-1528 against 1225-1508 MiB/s (producer user time 0.51-2.09 against
/// 0.26-0.32 s), tcp;ofi_rxm 629-882 against 890-1187 MiB/s (server system time 2.05-2.71
/// against 1.50-2.04 s).
pub fn populate(buf: &mut [u8]) {
    if buf.is_empty() {
        return;
    }
    let page = 4096usize;
    let start = buf.as_mut_ptr() as usize;
    // madvise wants a page-aligned start: registered buffers are page-aligned; for any other
    // slice, populate the whole pages inside it.
    let aligned = start.div_ceil(page) * page;
    let end = (start + buf.len()) / page * page;
    if aligned >= end {
        return;
    }
    // SAFETY: [aligned, end) lies within `buf`, which this function borrows mutably, so the
    // range is mapped, writable and not used by anyone else during the call; populating
    // changes no byte of it.
    unsafe {
        libc::madvise(
            aligned as *mut libc::c_void,
            end - aligned,
            libc::MADV_POPULATE_WRITE,
        )
    };
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
    use super::populate;

    /// Pages of `len` bytes at `p` resident in memory (mincore).
    fn resident(p: *mut u8, len: usize) -> usize {
        let pages = len.div_ceil(4096);
        let mut v = vec![0u8; pages];
        // SAFETY: [p, p + len) is one live mapping; `v` has one byte per page.
        let r = unsafe { libc::mincore(p.cast(), len, v.as_mut_ptr()) };
        assert_eq!(r, 0, "mincore");
        v.iter().filter(|b| *b & 1 == 1).count()
    }

    /// A fresh anonymous mapping of `len` bytes (no page touched yet).
    fn mapping(len: usize) -> *mut u8 {
        // SAFETY: an anonymous private mapping the kernel places; checked below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        p.cast()
    }

    #[test]
    fn populate_faults_in_every_whole_page_and_changes_no_byte() {
        let len = 64 * 4096;
        let p = mapping(len);
        assert_eq!(resident(p, len), 0, "a fresh mapping has no resident page");
        // SAFETY: the mapping is live, writable and only used here.
        let buf = unsafe { std::slice::from_raw_parts_mut(p, len) };
        populate(&mut buf[..]);
        assert_eq!(resident(p, len), 64);
        assert!(buf.iter().all(|b| *b == 0));
        // SAFETY: unmapping what `mapping` mapped; `buf` is not used after this.
        unsafe { libc::munmap(p.cast(), len) };
    }

    #[test]
    fn buffers_for_the_memory_log_come_with_their_pages_faulted_in() {
        let mut c = diaspora_rpc::EngineConfig::for_provider("tcp;ofi_rxm");
        c.source = Some("127.0.0.1".into());
        let engine = diaspora_rpc::Engine::new(c).expect("engine on loopback");
        let pool = super::BufPool::new(engine.handle());
        let mut b = pool.get_exact(1 << 20).expect("buffer");
        let len = b.len();
        assert_eq!(len, 1 << 20);
        assert_eq!(resident(b.as_mut_slice().as_mut_ptr(), len), 256);
        drop(b);
        engine.shutdown();
    }

    #[test]
    fn populate_of_an_unaligned_slice_stays_inside_it() {
        let len = 8 * 4096;
        let p = mapping(len);
        // SAFETY: as above.
        let buf = unsafe { std::slice::from_raw_parts_mut(p, len) };
        // From the middle of page 0 to the middle of page 5: only pages 1 to 4 are whole.
        populate(&mut buf[2048..5 * 4096 + 2048]);
        assert_eq!(resident(p, len), 4);
        populate(&mut buf[100..200]);
        populate(&mut buf[..0]);
        assert_eq!(resident(p, len), 4);
        // SAFETY: as above.
        unsafe { libc::munmap(p.cast(), len) };
    }
}
