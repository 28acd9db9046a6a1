//! Long polls held for their callers' sessions, so that a session that ends (its client's
//! GOODBYE, or eviction once idle) gives up its parked fetches at once instead of holding
//! them, their landing descriptors and their answer slots until their deadlines.
//!
//! A fetch parks in two steps (noted here, then parked on its partition), and a session may end
//! between them; [`HeldPolls::end`] therefore remembers the last [`RECENT`] ended sessions, and
//! the fetch checks [`HeldPolls::ended`] after parking. Whichever side comes second releases
//! the poll; [`Partition::take_waiter`](crate::partition::Partition::take_waiter) hands a parked job out once, so it is released once.

use parking_lot::Mutex;
use std::collections::{HashMap, HashSet, VecDeque};

/// How many ended sessions are remembered for fetches parking concurrently with the end.
pub const RECENT: usize = 1024;

/// The parked long polls of one progress thread's sessions; `P` is where a poll is parked
/// (the server uses `Arc<Partition>`).
pub struct HeldPolls<P> {
    inner: Mutex<Inner<P>>,
}

impl<P> Default for HeldPolls<P> {
    fn default() -> Self {
        HeldPolls {
            inner: Mutex::new(Inner {
                held: HashMap::new(),
                ended: VecDeque::new(),
                ended_set: HashSet::new(),
            }),
        }
    }
}

struct Inner<P> {
    /// session -> waiter id -> the partition it is parked on.
    held: HashMap<u32, HashMap<u64, P>>,
    /// The last [`RECENT`] sessions that ended, oldest first (and as a set).
    ended: VecDeque<u32>,
    ended_set: HashSet<u32>,
}

impl<P> HeldPolls<P> {
    /// Notes that waiter `id` of `session` is about to park on `partition`. False if the
    /// session already ended (do not park: nobody will receive the answer).
    pub fn note(&self, session: u32, id: u64, partition: P) -> bool {
        let mut g = self.inner.lock();
        if g.ended_set.contains(&session) {
            return false;
        }
        g.held.entry(session).or_default().insert(id, partition);
        true
    }

    /// Waiter `id` of `session` ran (new events, or its deadline): forget it.
    pub fn done(&self, session: u32, id: u64) {
        let mut g = self.inner.lock();
        if let Some(m) = g.held.get_mut(&session) {
            m.remove(&id);
            if m.is_empty() {
                g.held.remove(&session);
            }
        }
    }

    /// Whether `session` ended recently (a fetch that parked meanwhile must release itself).
    pub fn ended(&self, session: u32) -> bool {
        self.inner.lock().ended_set.contains(&session)
    }

    /// `session` ended: returns its parked waiters, to be released.
    pub fn end(&self, session: u32) -> Vec<(u64, P)> {
        let mut g = self.inner.lock();
        if g.ended_set.insert(session) {
            g.ended.push_back(session);
            if g.ended.len() > RECENT {
                if let Some(old) = g.ended.pop_front() {
                    g.ended_set.remove(&old);
                }
            }
        }
        g.held
            .remove(&session)
            .map(|m| m.into_iter().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How many polls are noted.
    fn noted<P>(h: &HeldPolls<P>) -> usize {
        h.inner.lock().held.values().map(HashMap::len).sum()
    }

    #[test]
    fn a_session_that_ends_hands_out_its_polls_once_and_keeps_others() {
        let h = HeldPolls::<&str>::default();
        assert!(h.note(1, 10, "p0"));
        assert!(h.note(1, 11, "p1"));
        assert!(h.note(2, 12, "p0"));
        h.done(1, 10);
        assert_eq!(noted(&h), 2);
        let mut got = h.end(1);
        got.sort();
        assert_eq!(got, vec![(11, "p1")]);
        assert!(h.end(1).is_empty(), "released twice");
        assert_eq!(noted(&h), 1);
        assert!(!h.ended(2));
        h.done(2, 12);
        assert_eq!(noted(&h), 0);
    }

    #[test]
    fn a_poll_of_a_recently_ended_session_is_not_parked() {
        let h = HeldPolls::<()>::default();
        h.end(7);
        assert!(h.ended(7));
        assert!(!h.note(7, 1, ()));
        assert_eq!(noted(&h), 0);
    }

    #[test]
    fn only_the_last_sessions_are_remembered() {
        let h = HeldPolls::<()>::default();
        for s in 0..(RECENT as u32 + 5) {
            h.end(s);
            h.end(s); // twice: remembered once
        }
        assert!(!h.ended(4), "the oldest are forgotten");
        assert!(h.ended(5));
        assert!(h.ended(RECENT as u32 + 4));
        assert_eq!(h.inner.lock().ended.len(), RECENT);
        assert_eq!(h.inner.lock().ended_set.len(), RECENT);
    }
}
