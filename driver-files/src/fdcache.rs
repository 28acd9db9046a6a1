//! A bounded cache of open partition files, so a topic of any size works within the process's
//! descriptor limit (`ulimit -n`).
//!
//! Each [`PartitionLog`](crate::partition::PartitionLog) opens its three files on first use and
//! keeps them in a [`Slot`]. The cache counts slots holding open files; when a newly opened slot
//! takes the count past the capacity, the least recently used *other* slot is closed (its files
//! close once no operation holds them: an append or read in progress keeps its `Arc`). The hit
//! path takes no global lock: one uncontended mutex (the slot's) and one atomic store.
//!
//! The process-wide cache ([`FdCache::global`]) holds at most a sixth of the soft
//! `RLIMIT_NOFILE` in descriptors (3 per partition), between 4 and 4096 partitions, leaving the
//! rest to the application, acknowledgement files and sockets.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use parking_lot::Mutex;

/// Files of one partition, kept open together.
pub(crate) trait Handles: Send + Sync {}

impl<T: Send + Sync> Handles for T {}

/// Where a partition keeps its open files.
pub(crate) struct Slot<F> {
    files: Mutex<Option<Arc<F>>>,
    last_used: AtomicU64,
}

impl<F> Slot<F> {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Slot {
            files: Mutex::new(None),
            last_used: AtomicU64::new(0),
        })
    }
}

/// Slots with open files, type-erased so partitions of any kind share one cache.
trait Closable: Send + Sync {
    fn last_used(&self) -> u64;
    /// Closes the files unless the slot is busy; returns whether it held files.
    fn try_close(&self) -> bool;
    fn is_open(&self) -> bool;
}

impl<F: Handles> Closable for Slot<F> {
    fn last_used(&self) -> u64 {
        self.last_used.load(Ordering::Relaxed)
    }

    fn try_close(&self) -> bool {
        match self.files.try_lock() {
            Some(mut f) => f.take().is_some(),
            None => false,
        }
    }

    fn is_open(&self) -> bool {
        self.files.try_lock().is_none_or(|f| f.is_some())
    }
}

/// A bounded cache of open partition files.
pub struct FdCache {
    capacity: usize,
    clock: AtomicU64,
    open: Mutex<Vec<Weak<dyn Closable>>>,
}

impl FdCache {
    /// A cache keeping the files of at most `capacity` partitions open (at least 1).
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(FdCache {
            capacity: capacity.max(1),
            clock: AtomicU64::new(1),
            open: Mutex::new(Vec::new()),
        })
    }

    /// The process-wide cache, sized from the soft descriptor limit when first used.
    pub fn global() -> Arc<Self> {
        static GLOBAL: OnceLock<Arc<FdCache>> = OnceLock::new();
        GLOBAL
            .get_or_init(|| FdCache::new(default_capacity(crate::sys::open_file_limit())))
            .clone()
    }

    /// Most partitions whose files are kept open.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Number of partitions whose files are open now.
    pub fn open_count(&self) -> usize {
        let mut open = self.open.lock();
        open.retain(|w| w.upgrade().is_some_and(|s| s.is_open()));
        open.len()
    }

    /// The files in `slot`, opened with `open` if needed (evicting the least recently used
    /// other slot beyond capacity).
    pub(crate) fn get<F: Handles + 'static, E>(
        &self,
        slot: &Arc<Slot<F>>,
        open: impl FnOnce() -> Result<F, E>,
    ) -> Result<Arc<F>, E> {
        slot.last_used.store(
            self.clock.fetch_add(1, Ordering::Relaxed),
            Ordering::Relaxed,
        );
        let mut guard = slot.files.lock();
        if let Some(f) = guard.as_ref() {
            return Ok(f.clone());
        }
        // Opened under the slot's lock: two threads never open the same partition twice.
        let files = Arc::new(open()?);
        *guard = Some(files.clone());
        drop(guard);
        self.admit(slot.clone());
        Ok(files)
    }

    fn admit(&self, slot: Arc<dyn Closable>) {
        let me = Arc::downgrade(&slot);
        let mut open = self.open.lock();
        open.retain(|w| w.strong_count() > 0);
        open.push(me.clone());
        let mut excess = open.len().saturating_sub(self.capacity);
        if excess == 0 {
            return;
        }
        // Least recently used first, never the slot just opened.
        let mut candidates: Vec<(u64, usize)> = open
            .iter()
            .enumerate()
            .filter(|(_, w)| !Weak::ptr_eq(w, &me))
            .filter_map(|(i, w)| w.upgrade().map(|s| (s.last_used(), i)))
            .collect();
        candidates.sort_unstable();
        let mut closed = Vec::new();
        for (_, i) in candidates {
            if excess == 0 {
                break;
            }
            let Some(s) = open[i].upgrade() else { continue };
            // A busy slot (its lock held by an operation opening it) is skipped this time.
            if s.try_close() || !s.is_open() {
                closed.push(i);
                excess -= 1;
            }
        }
        closed.sort_unstable_by(|a, b| b.cmp(a));
        for i in closed {
            open.swap_remove(i);
        }
    }
}

fn default_capacity(nofile: u64) -> usize {
    (nofile / 6).clamp(4, 4096) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Counted(Arc<AtomicU64>);

    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn at_most_capacity_slots_stay_open_and_the_least_recently_used_closes() {
        let cache = FdCache::new(3);
        let live = Arc::new(AtomicU64::new(0));
        let slots: Vec<_> = (0..10).map(|_| Slot::<Counted>::new()).collect();
        let open = |s: &Arc<Slot<Counted>>| {
            cache
                .get(s, || {
                    live.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, ()>(Counted(live.clone()))
                })
                .expect("open")
        };
        for s in &slots {
            drop(open(s));
            assert!(live.load(Ordering::SeqCst) <= 3);
        }
        assert_eq!(cache.open_count(), 3);
        // Slots 7, 8, 9 are open; using 7 makes 8 the least recently used.
        drop(open(&slots[7]));
        drop(open(&slots[0]));
        assert!(slots[7].files.lock().is_some());
        assert!(slots[8].files.lock().is_none());
        // Files in use survive eviction until released.
        let held = open(&slots[1]);
        for s in &slots[2..6] {
            drop(open(s));
        }
        assert_eq!(live.load(Ordering::SeqCst), 4, "3 cached + 1 held");
        drop(held);
        assert_eq!(live.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn capacity_follows_the_descriptor_limit() {
        assert_eq!(default_capacity(1024), 170);
        assert_eq!(default_capacity(10), 4);
        assert_eq!(default_capacity(1 << 20), 4096);
    }
}
