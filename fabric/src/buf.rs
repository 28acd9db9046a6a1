//! Buffers a [`crate::MemoryRegion`] may own: [`PageBuf`] (page-aligned, zeroed) and any
//! [`RegionBuf`].

use std::alloc::{self, Layout};
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

/// A buffer whose bytes stay at the same address for as long as it is owned and not resized.
///
/// Only `Deref` is required: a read-only buffer (for example shared `bytes::Bytes`, wrapped by
/// the caller) may be registered as the source of sends, RMA writes and remote reads;
/// [`crate::MemoryRegion::as_mut_slice`] exists only for buffers that are also `DerefMut`.
///
/// # Safety
/// Implementors guarantee that `deref()` (and `deref_mut()` when implemented) return the same
/// pointer and length for the whole life of the value (no reallocation through `&mut self` of
/// `[u8]`), and that moving the value does not move the bytes (they are on the heap or static).
pub unsafe trait RegionBuf: Deref<Target = [u8]> + Send + 'static {}

// SAFETY: a Vec's heap pointer does not change while only `&mut [u8]` (not `&mut Vec`) is
// handed out, which is all MemoryRegion does; moving a Vec does not move its heap bytes.
unsafe impl RegionBuf for Vec<u8> {}
// SAFETY: a boxed slice never reallocates; moving the box does not move the bytes.
unsafe impl RegionBuf for Box<[u8]> {}
// SAFETY: PageBuf owns a fixed heap allocation.
unsafe impl RegionBuf for PageBuf {}

/// The system page size.
pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(p)
        .ok()
        .filter(|p| p.is_power_of_two())
        .unwrap_or(4096)
}

/// A zeroed, page-aligned heap buffer (length rounded up to whole pages; `len()` is what was
/// asked).
///
/// From [`MAP_AT`] bytes on, the buffer is an anonymous mapping: the kernel hands out zeroed
/// pages as they are first touched, so allocating costs no `memset` pass over the buffer (the
/// allocator's `alloc_zeroed` with page alignment writes every byte, and registration runs on
/// a progress thread, which then stops serving the network for that long).
pub struct PageBuf {
    ptr: NonNull<u8>,
    len: usize,
    layout: Layout,
    mapped: bool,
}

/// Buffers of at least this many bytes are anonymous mappings.
pub const MAP_AT: usize = 64 * 1024;

// SAFETY: PageBuf uniquely owns its allocation, like Box<[u8]>.
unsafe impl Send for PageBuf {}
// SAFETY: &PageBuf gives only &[u8].
unsafe impl Sync for PageBuf {}

impl PageBuf {
    /// Allocates `len` (> 0) zeroed bytes on page boundaries. `None` if `len` is 0 or too large.
    pub fn new(len: usize) -> Option<PageBuf> {
        let page = page_size();
        let rounded = len.checked_add(page - 1)? & !(page - 1);
        if len == 0 {
            return None;
        }
        let layout = Layout::from_size_align(rounded, page).ok()?;
        if rounded >= MAP_AT {
            // SAFETY: an anonymous private mapping at an address the kernel picks, no fd; the
            // result is checked against MAP_FAILED. Its pages read as zero.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    rounded,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                return None;
            }
            return Some(PageBuf {
                ptr: NonNull::new(p.cast())?,
                len,
                layout,
                mapped: true,
            });
        }
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { alloc::alloc_zeroed(layout) };
        Some(PageBuf {
            ptr: NonNull::new(p)?,
            len,
            layout,
            mapped: false,
        })
    }
}

/// Faults in the whole pages inside `mem` now, on the calling thread (`MADV_POPULATE_WRITE`,
/// Linux 5.14 and later; best effort: on an older kernel, or for a range that holds no whole
/// page, nothing happens and pages are faulted in on first write as before). No byte
/// changes (fresh anonymous pages read as zero either way; present pages are left alone).
///
/// A buffer that RMA lands in is otherwise faulted in page by page while the provider writes
/// into it (over shm under the provider's lock of its shared region, with the peer spinning on
/// that lock meanwhile).
pub fn populate(mem: &[u8]) {
    let page = page_size();
    let start = (mem.as_ptr() as usize).div_ceil(page) * page;
    let end = (mem.as_ptr() as usize + mem.len()) / page * page;
    if start < end {
        // SAFETY: [start, end) lies within `mem`, so it is mapped for the duration of the
        // borrow; populating for write faults pages in without changing any byte, so it
        // cannot disturb other readers or writers of the range.
        unsafe {
            libc::madvise(
                start as *mut libc::c_void,
                end - start,
                libc::MADV_POPULATE_WRITE,
            )
        };
    }
}

impl Deref for PageBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: ptr is valid for len initialised (zeroed) bytes while self lives.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for PageBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, and &mut self gives exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for PageBuf {
    fn drop(&mut self) {
        if self.mapped {
            // SAFETY: mapped in `new` with this length (`layout.size()`), unmapped once.
            unsafe {
                libc::munmap(self.ptr.as_ptr().cast(), self.layout.size());
            }
        } else {
            // SAFETY: allocated in `new` with this layout, freed once.
            unsafe { alloc::dealloc(self.ptr.as_ptr(), self.layout) }
        }
    }
}

impl std::fmt::Debug for PageBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PageBuf({:p}, {} bytes)", self.ptr, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_buf_is_aligned_zeroed_and_writable() {
        let mut b = PageBuf::new(5000).expect("alloc");
        assert_eq!(b.len(), 5000);
        assert_eq!(b.as_ptr() as usize % page_size(), 0);
        assert!(b.iter().all(|&x| x == 0));
        b[4999] = 7;
        assert_eq!(b[4999], 7);
        assert!(PageBuf::new(0).is_none());
        // A mapped one, zeroed and writable to its last byte.
        let mut m = PageBuf::new(MAP_AT + 1).expect("map");
        assert_eq!(m.len(), MAP_AT + 1);
        assert_eq!(m.as_ptr() as usize % page_size(), 0);
        assert!(m.iter().all(|&x| x == 0));
        m[MAP_AT] = 9;
        assert_eq!(m[MAP_AT], 9);
        assert!(PageBuf::new(usize::MAX).is_none());
    }

    /// Pages of `mem` resident in memory (mincore; `mem` starts on a page).
    fn resident(mem: &[u8]) -> usize {
        let mut v = vec![0u8; mem.len().div_ceil(page_size())];
        // SAFETY: `mem` is one live, page-aligned mapping; `v` has one byte per page.
        let r = unsafe { libc::mincore(mem.as_ptr() as *mut _, mem.len(), v.as_mut_ptr()) };
        assert_eq!(r, 0, "mincore");
        v.iter().filter(|b| *b & 1 == 1).count()
    }

    #[test]
    fn populate_faults_in_every_whole_page_and_changes_no_byte() {
        let page = page_size();
        // At least MAP_AT: a fresh anonymous mapping, no page touched yet.
        let b = PageBuf::new(64 * page).expect("map");
        assert_eq!(resident(&b), 0, "a fresh mapping has no resident page");
        populate(&b);
        assert_eq!(resident(&b), 64);
        assert!(b.iter().all(|x| *x == 0));
    }

    #[test]
    fn populate_of_an_unaligned_slice_stays_inside_it() {
        let page = page_size();
        let b = PageBuf::new(16 * page).expect("map");
        // From the middle of page 0 to the middle of page 5: only pages 1 to 4 are whole.
        populate(&b[page / 2..5 * page + page / 2]);
        assert_eq!(resident(&b), 4);
        populate(&b[100..200]);
        populate(&b[..0]);
        assert_eq!(resident(&b), 4);
    }
}
