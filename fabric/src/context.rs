//! Per-operation context storage for providers that demand `FI_CONTEXT`/`FI_CONTEXT2` mode.
//!
//! Without that mode the caller's `u64` op id itself is passed as the `void *context` and comes
//! back in the completion ([`ContextMode::Direct`]). With it, the provider owns an
//! `fi_context2` per in-flight operation, so each op gets a slot here whose address is stable
//! until the slab is dropped (with the CQ, after every endpoint bound to it is closed).

use std::os::raw::c_void;
use std::sync::Mutex;

use fabric_sys as sys;

/// Slots per chunk.
const CHUNK: usize = 256;

/// The op id of a completion whose provider lost the context (`op_context` NULL; shm 1.17 does
/// that for a failed RMA). Posting refuses this id.
pub const UNKNOWN_OP: u64 = u64::MAX;

/// How op ids travel through libfabric's `void *context`.
#[derive(Debug)]
pub(crate) enum ContextMode {
    /// The context pointer value is `op_id + 1` (so NULL never names an operation).
    Direct,
    /// A slot of the slab is the context; it records the op id.
    Slab(ContextSlab),
}

impl ContextMode {
    /// The context pointer for a new operation.
    pub(crate) fn acquire(&self, op_id: u64) -> *mut c_void {
        match self {
            ContextMode::Direct => op_id.wrapping_add(1) as usize as *mut c_void,
            ContextMode::Slab(s) => s.acquire(op_id).cast(),
        }
    }

    /// Returns the slot of an operation that was never posted (the post failed).
    pub(crate) fn release_unposted(&self, ctx: *mut c_void) {
        if let ContextMode::Slab(s) = self {
            // SAFETY: ctx came from `acquire` on this slab and libfabric did not take it.
            unsafe { s.release(ctx.cast()) };
        }
    }

    /// The op id of a completed operation's context; frees its slot. A NULL context (a
    /// provider that lost it) gives [`UNKNOWN_OP`].
    ///
    /// # Safety
    /// `ctx` must be NULL or the context of an operation posted with `acquire` on this mode,
    /// reported complete by libfabric exactly once.
    pub(crate) unsafe fn complete(&self, ctx: *mut c_void) -> u64 {
        if ctx.is_null() {
            return UNKNOWN_OP;
        }
        match self {
            ContextMode::Direct => (ctx as usize as u64).wrapping_sub(1),
            ContextMode::Slab(s) => {
                let slot: *mut Slot = ctx.cast();
                // SAFETY: per the contract, slot is a live slot of this slab.
                let op_id = unsafe { (*slot).op_id };
                // SAFETY: the operation is complete, the provider no longer uses the slot.
                unsafe { s.release(slot) };
                op_id
            }
        }
    }
}

#[repr(C)]
struct Slot {
    /// Must be first: libfabric sees a pointer to the slot as a `struct fi_context2 *`.
    ctx: sys::fi_context2,
    op_id: u64,
    index: u32,
}

#[derive(Debug)]
struct SlabState {
    chunks: Vec<*mut Slot>,
    free: Vec<u32>,
}

/// Stable `fi_context2` slots.
#[derive(Debug)]
pub(crate) struct ContextSlab {
    state: Mutex<SlabState>,
}

// SAFETY: the chunk pointers are heap allocations owned by the slab (freed only in Drop); all
// access to the bookkeeping goes through the mutex, and a slot's fields are written only by the
// thread that acquired it before it is handed to libfabric.
unsafe impl Send for ContextSlab {}
// SAFETY: as above; shared access is serialised by the mutex.
unsafe impl Sync for ContextSlab {}

impl ContextSlab {
    pub(crate) fn new() -> Self {
        ContextSlab {
            state: Mutex::new(SlabState {
                chunks: Vec::new(),
                free: Vec::new(),
            }),
        }
    }

    fn acquire(&self, op_id: u64) -> *mut Slot {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.free.is_empty() {
            let base = st.chunks.len() * CHUNK;
            let chunk: Box<[Slot]> = (0..CHUNK)
                .map(|i| Slot {
                    ctx: sys::fi_context2::default(),
                    op_id: 0,
                    index: u32::try_from(base + i).unwrap_or(u32::MAX),
                })
                .collect();
            st.chunks.push(Box::into_raw(chunk).cast::<Slot>());
            st.free.extend((base..base + CHUNK).rev().map(|i| i as u32));
        }
        let index = st.free.pop().unwrap_or(0) as usize;
        // SAFETY: index < chunks.len() * CHUNK by construction; the chunk is a live allocation
        // of CHUNK slots.
        let slot = unsafe { st.chunks[index / CHUNK].add(index % CHUNK) };
        // SAFETY: the slot is free (not in libfabric's hands); we hold the lock.
        unsafe {
            (*slot).op_id = op_id;
            (*slot).ctx = sys::fi_context2::default();
        }
        slot
    }

    /// # Safety
    /// `slot` came from `acquire` on this slab and is no longer used by libfabric.
    unsafe fn release(&self, slot: *mut Slot) {
        // SAFETY: per the contract the slot is live and ours again.
        let index = unsafe { (*slot).index };
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.free.push(index);
    }
}

impl Drop for ContextSlab {
    fn drop(&mut self) {
        let st = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        for &chunk in &st.chunks {
            let slice = std::ptr::slice_from_raw_parts_mut(chunk, CHUNK);
            // SAFETY: each chunk was made by Box::into_raw of a CHUNK-slot boxed slice and is
            // freed once, here.
            drop(unsafe { Box::from_raw(slice) });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slab_returns_op_ids_and_reuses_slots() {
        let m = ContextMode::Slab(ContextSlab::new());
        let ctxs: Vec<_> = (0..600u64).map(|i| (i, m.acquire(i * 3))).collect();
        let distinct: std::collections::HashSet<_> =
            ctxs.iter().map(|(_, c)| *c as usize).collect();
        assert_eq!(distinct.len(), 600);
        for (i, c) in &ctxs {
            // SAFETY: each ctx was acquired above and is completed once.
            assert_eq!(unsafe { m.complete(*c) }, i * 3);
        }
        let again = m.acquire(7);
        assert!(distinct.contains(&(again as usize)), "slot reused");
        m.release_unposted(again);
    }

    #[test]
    fn direct_mode_passes_the_id() {
        let m = ContextMode::Direct;
        for id in [0, 1, 0xdead_beef, UNKNOWN_OP - 1] {
            let c = m.acquire(id);
            assert!(!c.is_null());
            // SAFETY: direct mode never dereferences.
            assert_eq!(unsafe { m.complete(c) }, id);
        }
        // SAFETY: NULL is allowed and never dereferenced.
        assert_eq!(unsafe { m.complete(std::ptr::null_mut()) }, UNKNOWN_OP);
        let s = ContextMode::Slab(ContextSlab::new());
        // SAFETY: as above.
        assert_eq!(unsafe { s.complete(std::ptr::null_mut()) }, UNKNOWN_OP);
    }
}
