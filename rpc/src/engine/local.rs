//! The endpoints this process opened, and which of them are closed: anything posted to a
//! closed endpoint of the *same* process crashes libfabric 1.17's shm provider (SIGSEGV in the
//! peer region's spin lock), so an engine fails such posts instead (`progress::guarded`).
//! Only shm endpoints are recorded: their addresses carry the process id, so no other
//! process can hold one of them.

use parking_lot::Mutex;

/// (raw address, still open) of every engine this process started.
static LOCAL: Mutex<Vec<(Vec<u8>, bool)>> = parking_lot::const_mutex(Vec::new());

/// Records a newly opened endpoint.
pub(crate) fn opened(addr: &[u8]) {
    let mut l = LOCAL.lock();
    match l.iter_mut().find(|(a, _)| a == addr) {
        Some(e) => e.1 = true,
        None => l.push((addr.to_vec(), true)),
    }
}

/// True if `addr` is (or was) an endpoint of this process.
pub(crate) fn is_ours(addr: &[u8]) -> bool {
    LOCAL.lock().iter().any(|(a, _)| a == addr)
}

/// Marks the endpoint at `addr` closed and runs `close` (which closes it), under the lock
/// [`unless_closed`] holds: no frame of this process is being posted to it meanwhile.
pub(crate) fn closing(addr: &[u8], close: impl FnOnce()) {
    let mut l = LOCAL.lock();
    if let Some(e) = l.iter_mut().find(|(a, _)| a == addr) {
        e.1 = false;
    }
    close();
}

/// Runs `post` unless `addr` is an endpoint of this process that is closed, under the lock
/// [`closing`] takes, so that endpoint cannot close while `post` runs. False if skipped.
pub(crate) fn unless_closed(addr: &[u8], post: impl FnOnce()) -> bool {
    let l = LOCAL.lock();
    if l.iter().any(|(a, open)| a == addr && !open) {
        return false;
    }
    post();
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn posts_are_skipped_only_to_closed_endpoints_of_this_process() {
        let a = b"local-test-endpoint-a".to_vec();
        let posts = std::cell::Cell::new(0);
        let post = || posts.set(posts.get() + 1);
        assert!(unless_closed(&a, post), "never seen: not ours, posted");
        assert!(!is_ours(&a));
        opened(&a);
        assert!(is_ours(&a));
        assert!(unless_closed(&a, post), "open: posted");
        let closed_once = std::cell::Cell::new(false);
        closing(&a, || closed_once.set(true));
        assert!(closed_once.get());
        assert!(!unless_closed(&a, post), "closed: skipped");
        opened(&a);
        assert!(
            unless_closed(&a, post),
            "reopened at the same address: posted"
        );
        assert_eq!(posts.get(), 3);
    }
}
