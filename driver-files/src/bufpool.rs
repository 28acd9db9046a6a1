//! Recycled read buffers for a consumer's event data.
//!
//! A consumer reads each large event's data into a buffer of its own, hands it to the
//! application as [`Bytes`], and the application drops it some time later, often on another
//! thread than the one that will read the next refill. Left to the system allocator, such
//! buffers are returned to the kernel and faulted back in (zeroed) page by page: measured here,
//! a prefetching consumer of 64 KiB events took 12 page faults per event and ran at a fifth of
//! its inline speed. Recycled, the next refill reads into memory that is mapped and still in
//! cache.
//!
//! The pool holds at most [`BufPool::new`]'s `max_bytes` of free buffers; a buffer dropped
//! when the pool is full is freed. A buffer fits a request if its capacity is at least the
//! request and at most a quarter (plus a page) more, so that mixed sizes waste little memory.

use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;

/// Capacities are multiples of this.
const PAGE: usize = 4096;

/// The unit of a buffer: page-aligned, so that the kernel's copy from the page cache writes
/// whole aligned cache lines (with the system allocator's 16-byte-offset buffers, the copy of a
/// 1 MiB read ran at half speed here).
#[derive(Clone, Copy)]
#[repr(C, align(4096))]
struct Page([u8; PAGE]);

#[derive(Default)]
struct Free {
    bufs: Vec<Vec<Page>>,
    /// Sum of the capacities in `bufs`.
    bytes: usize,
}

struct Shared {
    free: Mutex<Free>,
    max_bytes: usize,
}

/// A bounded pool of free read buffers. Clones share the pool.
#[derive(Clone)]
pub(crate) struct BufPool {
    shared: Arc<Shared>,
}

impl BufPool {
    /// A pool that keeps at most `max_bytes` of free buffers. Requests larger than that are
    /// served by fresh buffers and never kept.
    pub(crate) fn new(max_bytes: usize) -> Self {
        BufPool {
            shared: Arc::new(Shared {
                free: Mutex::new(Free::default()),
                max_bytes,
            }),
        }
    }

    /// A buffer of `len` bytes, recycled if a fitting one is free (its contents are then
    /// whatever it held; fresh buffers are zeroed).
    pub(crate) fn take(&self, len: usize) -> PoolBuf {
        let limit = len.saturating_add(len / 4).saturating_add(PAGE);
        let recycled = {
            let mut free = self.shared.free.lock();
            let found = free
                .bufs
                .iter()
                .position(|b| b.len() * PAGE >= len && b.len() * PAGE <= limit);
            found.map(|i| {
                let b = free.bufs.swap_remove(i);
                free.bytes -= b.len() * PAGE;
                b
            })
        };
        let buf = recycled.unwrap_or_else(|| vec![Page([0; PAGE]); len.div_ceil(PAGE).max(1)]);
        PoolBuf {
            buf,
            len,
            pool: self.shared.clone(),
        }
    }

    /// Bytes of free buffers held.
    #[cfg(test)]
    pub(crate) fn free_bytes(&self) -> usize {
        self.shared.free.lock().bytes
    }
}

/// A buffer taken from a [`BufPool`]; it goes back to the pool when dropped (directly, or as
/// the owner of the [`Bytes`] made by [`PoolBuf::freeze`]).
pub(crate) struct PoolBuf {
    /// Its whole allocation (every byte is initialized).
    buf: Vec<Page>,
    /// The bytes in use: `..len`.
    len: usize,
    pool: Arc<Shared>,
}

impl PoolBuf {
    /// Capacity in bytes.
    fn capacity(&self) -> usize {
        self.buf.len() * PAGE
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `buf` holds `buf.len()` pages of initialized bytes (`Page` is a plain byte
        // array without padding), and `len <= capacity()`; the slice borrows `self` mutably.
        unsafe { std::slice::from_raw_parts_mut(self.buf.as_mut_ptr().cast::<u8>(), self.len) }
    }

    /// The buffer as shared bytes; it returns to the pool once every clone is dropped.
    pub(crate) fn freeze(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

impl AsRef<[u8]> for PoolBuf {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: as in `as_mut_slice`, with a shared borrow.
        unsafe { std::slice::from_raw_parts(self.buf.as_ptr().cast::<u8>(), self.len) }
    }
}

impl Drop for PoolBuf {
    fn drop(&mut self) {
        let cap = self.capacity();
        let mut free = self.pool.free.lock();
        if free.bytes + cap <= self.pool.max_bytes {
            free.bytes += cap;
            free.bufs.push(std::mem::take(&mut self.buf));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_buffer_is_reused_for_a_fitting_request() {
        let pool = BufPool::new(1 << 20);
        let mut b = pool.take(65536);
        b.as_mut_slice()[0] = 7;
        let addr = b.as_ref().as_ptr();
        let bytes = b.freeze();
        assert_eq!(bytes.len(), 65536);
        assert_eq!(pool.free_bytes(), 0, "in use");
        let clone = bytes.clone();
        drop(bytes);
        assert_eq!(pool.free_bytes(), 0, "a clone still uses it");
        drop(clone);
        assert_eq!(pool.free_bytes(), 65536);
        // A slightly smaller request fits; the contents are what the buffer held.
        let again = pool.take(60000);
        assert_eq!(again.as_ref().as_ptr(), addr);
        assert_eq!(again.as_ref().len(), 60000);
        assert_eq!(again.as_ref()[0], 7);
        assert_eq!(pool.free_bytes(), 0);
    }

    #[test]
    fn requests_far_smaller_or_larger_get_fresh_zeroed_buffers() {
        let pool = BufPool::new(1 << 20);
        drop(pool.take(65536));
        let small = pool.take(4096);
        assert_ne!(
            small.capacity(),
            65536,
            "a 64 KiB buffer for 4 KiB would waste 60 KiB"
        );
        assert!(small.as_ref().iter().all(|&x| x == 0));
        let large = pool.take(65537);
        assert!(large.capacity() >= 65537);
        assert_eq!(large.as_ref().as_ptr() as usize % PAGE, 0, "page-aligned");
        assert_eq!(pool.free_bytes(), 65536, "the 64 KiB buffer is still free");
    }

    #[test]
    fn the_pool_keeps_at_most_max_bytes() {
        let pool = BufPool::new(3 * 4096);
        let bufs: Vec<PoolBuf> = (0..5).map(|_| pool.take(4096)).collect();
        drop(bufs);
        assert_eq!(pool.free_bytes(), 3 * 4096);
        drop(pool.take(1 << 20));
        assert_eq!(
            pool.free_bytes(),
            3 * 4096,
            "larger than the pool: never kept"
        );
    }

    #[test]
    fn zero_length_requests_work() {
        let pool = BufPool::new(4096);
        let mut b = pool.take(0);
        assert!(b.as_mut_slice().is_empty());
        assert!(b.freeze().is_empty());
    }

    #[test]
    fn buffers_dropped_on_other_threads_come_back() {
        let pool = BufPool::new(1 << 20);
        let bytes = pool.take(8192).freeze();
        std::thread::spawn(move || drop(bytes))
            .join()
            .expect("thread");
        assert_eq!(pool.free_bytes(), 8192);
    }
}
