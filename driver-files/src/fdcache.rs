//! A bounded cache of open partition files, so a topic of any size works within the process's
//! descriptor limit (`ulimit -n`).
//!
//! Each [`PartitionLog`](crate::partition::PartitionLog) opens its three files on first use and
//! keeps them in a `Slot`. The cache counts slots holding open files; when a newly opened slot
//! takes the count past the capacity, another slot is closed (its files close once no operation
//! holds them: an append or read in progress keeps its `Arc`): a random one among those not used
//! in the last `capacity / 8` accesses. Least-recently-used eviction would miss on every access
//! in the common cyclic pattern (one producer spreading events over more partitions than the
//! cache holds); random eviction keeps part of them hitting, and sparing the recently used keeps
//! a hot working set smaller than the cache open. The hit
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

    /// The files in `slot`, opened with `open` if needed (evicting another slot beyond
    /// capacity).
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
        // Candidates in random order, never the slot just opened: under the common cyclic
        // access (one producer spreading events over more partitions than the cache holds)
        // least-recently-used eviction would miss on every access, random eviction keeps about
        // capacity / partitions of them hitting. Slots used in the last capacity / 8 accesses are
        // spared, so a hot working set smaller than the cache stays open.
        let now = self.clock.load(Ordering::Relaxed);
        let recent = now.saturating_sub((self.capacity as u64 / 8).max(1));
        let mut candidates: Vec<(u64, usize)> = open
            .iter()
            .enumerate()
            .filter(|(_, w)| !Weak::ptr_eq(w, &me))
            .filter_map(|(i, w)| w.upgrade().map(|s| (s.last_used(), i)))
            .map(|(used, i)| {
                let spared = u64::from(used >= recent);
                (spared << 63 | (mix(now ^ i as u64) >> 1), i)
            })
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

/// A 64-bit mix (splitmix64's finalizer): a cheap, deterministic pseudo-random order.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
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

    fn opener<'a>(
        cache: &'a FdCache,
        live: &Arc<AtomicU64>,
        opens: &Arc<AtomicU64>,
    ) -> impl Fn(&Arc<Slot<Counted>>) -> Arc<Counted> + 'a {
        let (live, opens) = (live.clone(), opens.clone());
        move |s| {
            cache
                .get(s, || {
                    live.fetch_add(1, Ordering::SeqCst);
                    opens.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, ()>(Counted(live.clone()))
                })
                .expect("open")
        }
    }

    #[test]
    fn at_most_capacity_slots_stay_open_and_files_in_use_survive_eviction() {
        let cache = FdCache::new(3);
        let (live, opens) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let open = opener(&cache, &live, &opens);
        let slots: Vec<_> = (0..10).map(|_| Slot::<Counted>::new()).collect();
        for s in &slots {
            drop(open(s));
            assert!(live.load(Ordering::SeqCst) <= 3);
        }
        assert_eq!(cache.open_count(), 3);
        // Files in use survive eviction until released.
        let held = open(&slots[0]);
        for s in &slots[1..8] {
            drop(open(s));
        }
        assert!(live.load(Ordering::SeqCst) <= 4, "3 cached + 1 held");
        drop(held);
        assert!(live.load(Ordering::SeqCst) <= 3);
    }

    #[test]
    fn a_hot_working_set_stays_open_among_cold_accesses() {
        let cache = FdCache::new(32);
        let (live, opens) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let open = opener(&cache, &live, &opens);
        let hot: Vec<_> = (0..2).map(|_| Slot::<Counted>::new()).collect();
        for _ in 0..50 {
            for h in &hot {
                drop(open(h));
            }
            drop(open(&Slot::new())); // a cold partition, used once
        }
        assert_eq!(
            opens.load(Ordering::SeqCst),
            2 + 50,
            "a hot slot was evicted"
        );
        assert!(live.load(Ordering::SeqCst) <= 32);
    }

    #[test]
    fn cyclic_access_over_more_slots_than_capacity_still_hits() {
        let cache = FdCache::new(50);
        let (live, opens) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let open = opener(&cache, &live, &opens);
        let slots: Vec<_> = (0..100).map(|_| Slot::<Counted>::new()).collect();
        for _ in 0..20 {
            for s in &slots {
                drop(open(s));
            }
        }
        // LRU would reopen on all 2000 accesses.
        assert!(opens.load(Ordering::SeqCst) < 1900, "{opens:?} opens");
        assert!(live.load(Ordering::SeqCst) <= 50);
    }

    #[test]
    fn capacity_follows_the_descriptor_limit() {
        assert_eq!(default_capacity(1024), 170);
        assert_eq!(default_capacity(10), 4);
        assert_eq!(default_capacity(1 << 20), 4096);
    }
}
