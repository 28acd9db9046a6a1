//! When to release a shm region lock that nobody will ever release: the pure decision of
//! [`crate::shm_locks`], fed one sample at a time (no I/O, testable without processes).
//!
//! A region's lock is sampled every [`SAMPLE_EVERY`]. A lock found held in enough consecutive
//! samples over a long enough time is *stuck*:
//!
//! | region | released when | because |
//! |---|---|---|
//! | a peer's | held in [`PEER_SAMPLES`] samples over [`PEER_HOLD`] and its owner is dead | the owner takes it to progress its own queues, senders only for one copy: no live process holds it that long |
//! | this process's | held in [`OWN_SAMPLES`] samples over [`OWN_HOLD`] | only a sender that died (or was stopped) inside its send holds it that long; the owner's liveness says nothing, since the owner is us |
//!
//! A live owner's lock is never released (its own process, if it runs this code, releases it as
//! its own region).

use std::time::{Duration, Instant};

/// How often the monitor samples every watched lock.
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_millis(20);
/// How long a dead peer's lock must have been held before it is released.
pub(crate) const PEER_HOLD: Duration = Duration::from_millis(100);
/// Consecutive held samples a dead peer's lock needs (besides [`PEER_HOLD`]).
pub(crate) const PEER_SAMPLES: u32 = 4;
/// How long this process's own lock must have been held before it is released.
pub(crate) const OWN_HOLD: Duration = Duration::from_secs(2);
/// Consecutive held samples this process's own lock needs (besides [`OWN_HOLD`]). A live
/// progress loop that holds its lock half of the time shows 80 held samples in a row with a
/// probability of 2^-80.
pub(crate) const OWN_SAMPLES: u32 = 80;

/// Whose region a lock guards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// An endpoint of this process.
    Own,
    /// A peer's endpoint (mapped by an address vector entry).
    Peer,
}

/// What one sample leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The lock is free.
    Free,
    /// Held, not (yet) stuck.
    Held,
    /// Held for good: release it.
    Release,
}

/// One lock's history of samples.
#[derive(Debug)]
pub(crate) struct Watch {
    side: Side,
    /// Consecutive samples that found the lock held.
    held: u32,
    /// When the first of them was taken.
    since: Option<Instant>,
}

impl Watch {
    pub(crate) fn new(side: Side) -> Watch {
        Watch {
            side,
            held: 0,
            since: None,
        }
    }

    /// Takes one sample: `locked` is what the lock word showed at `now`; `owner_dead` is asked
    /// only for a peer's lock that has been held long enough (it reads `/proc`).
    pub(crate) fn observe(
        &mut self,
        locked: bool,
        now: Instant,
        owner_dead: impl FnOnce() -> bool,
    ) -> Verdict {
        if !locked {
            self.held = 0;
            self.since = None;
            return Verdict::Free;
        }
        self.held = self.held.saturating_add(1);
        let since = *self.since.get_or_insert(now);
        let held_for = now.saturating_duration_since(since);
        let stuck = match self.side {
            Side::Peer => self.held >= PEER_SAMPLES && held_for >= PEER_HOLD && owner_dead(),
            Side::Own => self.held >= OWN_SAMPLES && held_for >= OWN_HOLD,
        };
        if stuck {
            // Start over: a lock released and taken again must be held as long again.
            self.held = 0;
            self.since = None;
            Verdict::Release
        } else {
            Verdict::Held
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `n` held samples `SAMPLE_EVERY` apart from `t0`; returns the verdicts.
    fn held(w: &mut Watch, t0: Instant, n: u32, dead: bool) -> Vec<Verdict> {
        (0..n)
            .map(|i| w.observe(true, t0 + SAMPLE_EVERY * i, || dead))
            .collect()
    }

    fn first_release(v: &[Verdict]) -> Option<usize> {
        v.iter().position(|x| *x == Verdict::Release)
    }

    #[test]
    fn a_dead_peers_lock_is_released_once_held_long_enough() {
        let mut w = Watch::new(Side::Peer);
        let v = held(&mut w, Instant::now(), 20, true);
        let at = first_release(&v).expect("released");
        // 100 ms at 20 ms a sample: the sixth sample (index 5) is the first 100 ms after the
        // first one.
        assert_eq!(at, 5, "{v:?}");
        assert!(v[..at].iter().all(|x| *x == Verdict::Held));
    }

    #[test]
    fn a_live_peers_lock_is_never_released() {
        let mut w = Watch::new(Side::Peer);
        let v = held(&mut w, Instant::now(), 1000, false);
        assert_eq!(first_release(&v), None);
    }

    #[test]
    fn the_owner_is_asked_only_once_the_lock_was_held_long_enough() {
        let mut w = Watch::new(Side::Peer);
        let t0 = Instant::now();
        for i in 0..5 {
            let v = w.observe(true, t0 + SAMPLE_EVERY * i, || {
                panic!("owner checked after {i} samples")
            });
            assert_eq!(v, Verdict::Held);
        }
    }

    #[test]
    fn a_free_sample_starts_the_count_over() {
        let mut w = Watch::new(Side::Peer);
        let t0 = Instant::now();
        for i in 0..100u32 {
            // Held four samples in five: never five in a row over 100 ms.
            let locked = i % 5 != 4;
            let v = w.observe(locked, t0 + SAMPLE_EVERY * i, || true);
            assert_ne!(v, Verdict::Release, "sample {i}");
        }
    }

    #[test]
    fn samples_must_also_span_the_time() {
        // A monitor that sampled in a burst (many samples within a few ms) must not release.
        let mut w = Watch::new(Side::Own);
        let t0 = Instant::now();
        for i in 0..1000u32 {
            let v = w.observe(true, t0 + Duration::from_micros(u64::from(i)), || true);
            assert_ne!(v, Verdict::Release, "sample {i}");
        }
        // ... and a long time with few samples (a descheduled monitor) does not either.
        let mut w = Watch::new(Side::Own);
        assert_eq!(w.observe(true, t0, || true), Verdict::Held);
        assert_eq!(
            w.observe(true, t0 + Duration::from_secs(60), || true),
            Verdict::Held
        );
    }

    #[test]
    fn an_own_lock_is_released_after_its_longer_hold_whoever_holds_it() {
        let mut w = Watch::new(Side::Own);
        let v = held(&mut w, Instant::now(), 101, false);
        let at = first_release(&v).expect("released");
        // 2 s at 20 ms a sample: sample index 100.
        assert_eq!(at, 100, "{v:?}");
        // Freed, then held again: counted from scratch.
        let t1 = Instant::now() + Duration::from_secs(10);
        assert_eq!(w.observe(false, t1, || true), Verdict::Free);
        let v = held(&mut w, t1 + SAMPLE_EVERY, 100, false);
        assert_eq!(first_release(&v), None);
    }
}
