//! When to release a shm region lock that nobody will ever release: the pure decision of
//! [`crate::shm_locks`], fed one sample at a time (no I/O, testable without processes).
//!
//! A region's lock is sampled every [`SAMPLE_EVERY`]. From the second held sample in a row on,
//! each sample also *watches* the lock word for [`BURST`] (a tight loop of reads): a live
//! lock changes hands within microseconds, and a word that goes back to free, or up at all
//! (only a release raises it: waiters only decrement it), shows that someone released it, so
//! it is not stuck and the count starts over. A lock that stayed held through every burst of
//! enough consecutive samples over a long enough time is *stuck*:
//!
//! | region | released when | because |
//! |---|---|---|
//! | a peer's | stuck for [`PEER_HOLD`] ([`PEER_SAMPLES`] samples) and its owner is dead | the owner takes it to progress its own queues, senders only for one copy: with the owner dead, nobody releases it |
//! | this process's | stuck for [`OWN_HOLD`] ([`OWN_SAMPLES`] samples) and a peer of this process died within [`DEATH_WINDOW`] | the holder is a sender, which this process knows as a peer (its address vector holds every caller it answers); the bursts alone can miss the releases of live holders that keep it for long stretches back to back (big CMA copies), and a peer's death is what a dead holder leaves |
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
/// Consecutive held samples this process's own lock needs (besides [`OWN_HOLD`]).
pub(crate) const OWN_SAMPLES: u32 = 80;
/// How recent a peer's death must be to explain this process's own stuck lock: a sender
/// killed inside its send is found dead within a second or two of the hold's start (deaths
/// are looked for every [`DEATH_CHECK_EVERY`]).
pub(crate) const DEATH_WINDOW: Duration = Duration::from_secs(5);
/// How often the peers' owners are checked for death.
pub(crate) const DEATH_CHECK_EVERY: Duration = Duration::from_secs(1);
/// How long each sample after the first held one watches the lock word for a release. Only
/// locks held at two samples in a row are watched so: at most 1% of a core per suspect lock.
pub(crate) const BURST: Duration = Duration::from_micros(200);

/// What the monitor can look at beyond the lock word (I/O in [`crate::shm_locks`]).
pub(crate) trait Probe {
    /// Watches the lock for [`BURST`]: true if it stayed held without a single release.
    fn held_through_burst(&mut self) -> bool;
    /// True when the region's owner is dead (asked only for a peer's stuck lock).
    fn owner_dead(&mut self) -> bool;
    /// True when a peer of this process (a region it watches as a peer's) was found dead
    /// within the last [`DEATH_WINDOW`] (asked only for this process's own stuck lock).
    fn a_peer_died_recently(&mut self) -> bool;
}

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

    /// Takes one sample: `locked` is what the lock word showed at `now`; `probe` is asked to
    /// watch the lock from the second held sample in a row on, and about the owner only for a
    /// peer's lock that has been stuck long enough.
    pub(crate) fn observe(&mut self, locked: bool, now: Instant, probe: &mut dyn Probe) -> Verdict {
        if !locked || (self.held > 0 && !probe.held_through_burst()) {
            self.held = 0;
            self.since = None;
            return Verdict::Free;
        }
        self.held = self.held.saturating_add(1);
        let since = *self.since.get_or_insert(now);
        let held_for = now.saturating_duration_since(since);
        let stuck = match self.side {
            Side::Peer => self.held >= PEER_SAMPLES && held_for >= PEER_HOLD && probe.owner_dead(),
            Side::Own => {
                self.held >= OWN_SAMPLES && held_for >= OWN_HOLD && probe.a_peer_died_recently()
            }
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

    /// A probe with fixed answers that counts its calls.
    struct Fixed {
        stuck: bool,
        /// The owner is dead (peer's lock) / a peer died recently (own lock).
        dead: bool,
        bursts: u32,
        owner_asked: u32,
        deaths_asked: u32,
    }

    fn probe(stuck: bool, dead: bool) -> Fixed {
        Fixed {
            stuck,
            dead,
            bursts: 0,
            owner_asked: 0,
            deaths_asked: 0,
        }
    }

    impl Probe for Fixed {
        fn held_through_burst(&mut self) -> bool {
            self.bursts += 1;
            self.stuck
        }
        fn owner_dead(&mut self) -> bool {
            self.owner_asked += 1;
            self.dead
        }
        fn a_peer_died_recently(&mut self) -> bool {
            self.deaths_asked += 1;
            self.dead
        }
    }

    /// Feeds `n` held samples `SAMPLE_EVERY` apart from `t0`; returns the verdicts.
    fn held(w: &mut Watch, t0: Instant, n: u32, p: &mut Fixed) -> Vec<Verdict> {
        (0..n)
            .map(|i| w.observe(true, t0 + SAMPLE_EVERY * i, p))
            .collect()
    }

    fn first_release(v: &[Verdict]) -> Option<usize> {
        v.iter().position(|x| *x == Verdict::Release)
    }

    #[test]
    fn a_dead_peers_stuck_lock_is_released_once_held_long_enough() {
        let mut w = Watch::new(Side::Peer);
        let v = held(&mut w, Instant::now(), 20, &mut probe(true, true));
        let at = first_release(&v).expect("released");
        // 100 ms at 20 ms a sample: the sixth sample (index 5) is the first 100 ms after the
        // first one.
        assert_eq!(at, 5, "{v:?}");
        assert!(v[..at].iter().all(|x| *x == Verdict::Held));
    }

    #[test]
    fn a_live_peers_lock_is_never_released() {
        let mut w = Watch::new(Side::Peer);
        let v = held(&mut w, Instant::now(), 1000, &mut probe(true, false));
        assert_eq!(first_release(&v), None);
    }

    #[test]
    fn a_lock_seen_released_in_a_burst_is_never_released_however_long_it_looks_held() {
        // Held at every sample, but a release shows in every burst: live holders in turn
        // (a busy progress loop and its senders), not a dead one.
        for side in [Side::Own, Side::Peer] {
            let mut w = Watch::new(side);
            let mut p = probe(false, true);
            let v = held(&mut w, Instant::now(), 1000, &mut p);
            assert_eq!(first_release(&v), None, "{side:?}");
            assert_eq!(p.owner_asked, 0, "{side:?}");
        }
    }

    #[test]
    fn the_first_held_sample_costs_no_burst_and_the_owner_is_asked_only_when_stuck_long() {
        let mut w = Watch::new(Side::Peer);
        let mut p = probe(true, true);
        let t0 = Instant::now();
        assert_eq!(w.observe(true, t0, &mut p), Verdict::Held);
        assert_eq!(p.bursts, 0, "a burst on the first held sample");
        for i in 1..5 {
            assert_eq!(
                w.observe(true, t0 + SAMPLE_EVERY * i, &mut p),
                Verdict::Held
            );
        }
        assert_eq!(p.bursts, 4);
        assert_eq!(
            p.owner_asked, 0,
            "owner asked before the hold was long enough"
        );
        // A free sample: no burst either.
        assert_eq!(
            w.observe(false, t0 + SAMPLE_EVERY * 5, &mut p),
            Verdict::Free
        );
        assert_eq!(p.bursts, 4);
    }

    #[test]
    fn a_free_sample_starts_the_count_over() {
        let mut w = Watch::new(Side::Peer);
        let mut p = probe(true, true);
        let t0 = Instant::now();
        for i in 0..100u32 {
            // Held four samples in five: never five in a row over 100 ms.
            let locked = i % 5 != 4;
            let v = w.observe(locked, t0 + SAMPLE_EVERY * i, &mut p);
            assert_ne!(v, Verdict::Release, "sample {i}");
        }
    }

    #[test]
    fn samples_must_also_span_the_time() {
        // A monitor that sampled in a burst (many samples within a few ms) must not release.
        let mut w = Watch::new(Side::Own);
        let mut p = probe(true, true);
        let t0 = Instant::now();
        for i in 0..1000u32 {
            let v = w.observe(true, t0 + Duration::from_micros(u64::from(i)), &mut p);
            assert_ne!(v, Verdict::Release, "sample {i}");
        }
        // ... and a long time with few samples (a descheduled monitor) does not either.
        let mut w = Watch::new(Side::Own);
        assert_eq!(w.observe(true, t0, &mut p), Verdict::Held);
        assert_eq!(
            w.observe(true, t0 + Duration::from_secs(60), &mut p),
            Verdict::Held
        );
    }

    #[test]
    fn an_own_stuck_lock_is_released_after_its_longer_hold_once_a_peer_died() {
        let mut w = Watch::new(Side::Own);
        let mut p = probe(true, true);
        let v = held(&mut w, Instant::now(), 101, &mut p);
        let at = first_release(&v).expect("released");
        // 2 s at 20 ms a sample: sample index 100.
        assert_eq!(at, 100, "{v:?}");
        assert_eq!(p.owner_asked, 0, "our own liveness is not asked");
        assert_eq!(p.deaths_asked, 1);
        // Freed, then held again: counted from scratch.
        let t1 = Instant::now() + Duration::from_secs(10);
        assert_eq!(w.observe(false, t1, &mut p), Verdict::Free);
        let v = held(&mut w, t1 + SAMPLE_EVERY, 100, &mut p);
        assert_eq!(first_release(&v), None);
    }

    #[test]
    fn an_own_stuck_lock_is_kept_while_no_peer_died() {
        // Live holders that keep it for long stretches can look stuck through every burst;
        // without a dead peer to explain it, it stays.
        let mut w = Watch::new(Side::Own);
        let mut p = probe(true, false);
        let v = held(&mut w, Instant::now(), 1000, &mut p);
        assert_eq!(first_release(&v), None);
        assert!(p.deaths_asked > 0);
    }
}
