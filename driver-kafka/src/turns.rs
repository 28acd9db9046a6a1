//! Round-robin turns over a consumer's partitions (pure logic, no librdkafka).
//!
//! A partition serves up to `len` events in a row (its turn), then the next partition takes
//! over. Every pass tries every partition once, starting with the one whose turn it is, so a
//! partition with events is never skipped for good, however many passes found nothing.
//!
//! Records that librdkafka hands to the consumer's main queue instead of the partition's
//! (the queues race) are delivered without counting in the turns.
//!
//! A partition found empty gives its turn up only when librdkafka reported its end (a
//! PARTITION_EOF after its last record, `enable.partition.eof`), or once it kept the turn for
//! [`TURN_WAIT`] with nothing. The records of a partition whose fetch is still in flight
//! (say, librdkafka's first fetch did not include it) are waited for rather than skipped, so
//! the other partitions do not run ahead of it. The wait is bounded so that a partition whose
//! broker stopped answering does not stop the others: it is skipped at once from then on,
//! until it delivers something again.
//!
//! (The consumer's first version moved the turn while it computed each slot from it: with 3
//! partitions, a pass that found nothing came back to where it started, and one partition was
//! never polled again. A consumer whose only busy partition had served one turn stalled.)

use std::time::{Duration, Instant};

/// Longest time a partition with nothing fetched, and no end reported, keeps the turn.
pub(crate) const TURN_WAIT: Duration = Duration::from_secs(2);

/// What polling a partition's queue gave.
pub(crate) enum Polled<T> {
    /// librdkafka's report that the partition has nothing more stored (for now).
    End,
    /// A record or an error: served to the caller.
    Item(T),
}

/// The turn state of `n` partition slots.
#[derive(Clone, Debug)]
pub(crate) struct Turns {
    n: usize,
    len: usize,
    turn: usize,
    served: usize,
    /// Per slot: librdkafka reported the end and no record came since.
    at_end: Vec<bool>,
    /// Per slot: since when it has kept the turn with nothing fetched.
    waiting_since: Vec<Option<Instant>>,
    wait: Duration,
}

impl Turns {
    /// Turns of `len` events (at least 1) over `n` slots; an empty slot keeps its turn up to
    /// `wait`.
    pub(crate) fn new(n: usize, len: usize, wait: Duration) -> Turns {
        Turns {
            n,
            len: len.max(1),
            turn: 0,
            served: 0,
            at_end: vec![false; n],
            waiting_since: vec![None; n],
            wait,
        }
    }

    /// One pass: polls the slots in [`order`](Self::order), skipping those `ended` (their end
    /// marker record was read), until one gives an item, which counts as served. End reports
    /// met on the way are taken. `None` when no slot gave an item, or when a slot found empty
    /// keeps the turn ([`keeps_turn`](Self::keeps_turn)): its fetch is waited for.
    pub(crate) fn pass<T>(
        &mut self,
        now: Instant,
        ended: &[bool],
        mut poll: impl FnMut(usize) -> Option<Polled<T>>,
    ) -> Option<(usize, T)> {
        for slot in self.order() {
            if ended[slot] {
                continue;
            }
            loop {
                match poll(slot) {
                    // The turn may pass on (after this record, if any follows).
                    Some(Polled::End) => self.reached_end(slot),
                    Some(Polled::Item(item)) => {
                        self.served(slot);
                        return Some((slot, item));
                    }
                    None => break,
                }
            }
            if self.keeps_turn(slot, now) {
                return None;
            }
        }
        None
    }

    /// The slots to try for the next event, in order: the slot whose turn it is, then every
    /// other slot once, round robin.
    fn order(&self) -> impl Iterator<Item = usize> {
        let (turn, n) = (self.turn, self.n);
        (0..n).map(move |k| (turn + k) % n)
    }

    /// `slot`'s queue gave something (a record, skipped or not, or an error): it has the turn
    /// (a slot found empty gave its turn up), and passes it on once it served `len` in a row.
    fn served(&mut self, slot: usize) {
        self.at_end[slot] = false;
        self.waiting_since[slot] = None;
        if slot != self.turn {
            self.turn = slot;
            self.served = 0;
        }
        self.served += 1;
        if self.served >= self.len {
            self.turn = (slot + 1) % self.n;
            self.served = 0;
        }
    }

    /// librdkafka reported that `slot` has nothing more stored (for now).
    pub(crate) fn reached_end(&mut self, slot: usize) {
        self.at_end[slot] = true;
        self.waiting_since[slot] = None;
    }

    /// `slot` has nothing fetched at `now`: whether the pass stops and waits for it rather than
    /// going on to the slots after it in this pass's order. `false` once its end was reported
    /// or it waited [`Self::new`]'s `wait`. Every slot of a pass is asked in turn order until
    /// one says yes, so the pass waits for the first slot, from the one whose turn it is,
    /// whose fetch may still bring records (a slot at its end passes the wait on to the next).
    fn keeps_turn(&mut self, slot: usize, now: Instant) -> bool {
        if self.at_end[slot] {
            return false;
        }
        let since = *self.waiting_since[slot].get_or_insert(now);
        now.saturating_duration_since(since) < self.wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A partition as librdkafka's queue shows it: `queued` records fetched, then an end
    /// report if `eof_queued`.
    #[derive(Clone, Debug, Default)]
    struct Slot {
        queued: usize,
        eof_queued: bool,
    }

    /// One [`Turns::pass`] over `slots` (none ended), polled as the consumer polls its queues.
    fn pass(t: &mut Turns, slots: &mut [Slot], now: Instant) -> Option<usize> {
        let ended = vec![false; slots.len()];
        t.pass(now, &ended, |s| {
            if slots[s].queued > 0 {
                slots[s].queued -= 1;
                Some(Polled::Item(()))
            } else if std::mem::take(&mut slots[s].eof_queued) {
                Some(Polled::End)
            } else {
                None
            }
        })
        .map(|(s, ())| s)
    }

    fn ended(queued: usize) -> Slot {
        Slot {
            queued,
            eof_queued: true,
        }
    }

    fn drain(t: &mut Turns, slots: &mut [Slot], now: Instant) -> Vec<usize> {
        std::iter::from_fn(|| pass(t, slots, now)).collect()
    }

    #[test]
    fn a_lone_busy_slot_is_served_to_its_end() {
        let now = Instant::now();
        for n in 1..6 {
            for lone in 0..n {
                let mut t = Turns::new(n, 5, TURN_WAIT);
                let mut slots = vec![ended(0); n];
                slots[lone] = ended(12);
                assert_eq!(
                    drain(&mut t, &mut slots, now),
                    vec![lone; 12],
                    "{n} slots, events in slot {lone} only"
                );
            }
        }
    }

    #[test]
    fn ended_slots_are_not_polled() {
        // No wait: an empty slot passes its turn on at once, so the pass reaches every slot.
        let mut t = Turns::new(3, 5, Duration::ZERO);
        let mut polled = Vec::new();
        let got = t.pass(Instant::now(), &[false, true, false], |s| {
            polled.push(s);
            None::<Polled<()>>
        });
        assert!(got.is_none());
        assert_eq!(polled, [0, 2]);
    }

    #[test]
    fn full_slots_take_turns_of_len() {
        let mut t = Turns::new(3, 2, TURN_WAIT);
        let mut slots = vec![ended(4); 3];
        let got = drain(&mut t, &mut slots, Instant::now());
        assert_eq!(got, [0, 0, 1, 1, 2, 2, 0, 0, 1, 1, 2, 2]);
    }

    #[test]
    fn an_ended_slot_passes_its_turn_on() {
        let mut t = Turns::new(3, 3, TURN_WAIT);
        let mut slots = vec![ended(1), ended(5), ended(5)];
        let got = drain(&mut t, &mut slots, Instant::now());
        assert_eq!(got, [0, 1, 1, 1, 2, 2, 2, 1, 1, 2, 2]);
    }

    #[test]
    fn a_slot_not_fetched_yet_keeps_its_turn_until_its_records_come() {
        let t0 = Instant::now();
        let mut t = Turns::new(3, 5, TURN_WAIT);
        // Slot 0's first fetch has not answered; slots 1 and 2 hold everything.
        let mut slots = vec![Slot::default(), ended(40), ended(40)];
        assert_eq!(pass(&mut t, &mut slots, t0), None, "slot 0 keeps the turn");
        let later = t0 + TURN_WAIT / 2;
        assert_eq!(
            pass(&mut t, &mut slots, later),
            None,
            "still within the wait"
        );
        slots[0] = ended(40);
        let got = drain(&mut t, &mut slots, later);
        let first: Vec<_> = got.iter().take(15).copied().collect();
        assert_eq!(first, [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2]);
        assert_eq!(got.len(), 120);
    }

    #[test]
    fn a_silent_slot_gives_its_turn_up_after_the_wait_and_is_skipped_from_then_on() {
        let t0 = Instant::now();
        let mut t = Turns::new(3, 2, TURN_WAIT);
        let mut slots = vec![Slot::default(), ended(3), ended(3)];
        assert_eq!(pass(&mut t, &mut slots, t0), None);
        let late = t0 + TURN_WAIT;
        // Past the wait: the others are served, and slot 0 no longer holds them up.
        assert_eq!(drain(&mut t, &mut slots, late), [1, 1, 2, 2, 1, 2]);
        // Slot 0 answers at last: it is served, and waited for again when it runs dry.
        slots[0] = Slot {
            queued: 1,
            eof_queued: false,
        };
        slots[1].queued = 1;
        assert_eq!(pass(&mut t, &mut slots, late), Some(0));
        assert_eq!(
            pass(&mut t, &mut slots, late),
            None,
            "slot 0 in flight again"
        );
        assert_eq!(pass(&mut t, &mut slots, late + TURN_WAIT), Some(1));
    }

    proptest! {
        /// Whatever came before, a pass tries every slot exactly once; with every end reported,
        /// all events are served; while every slot has records, no slot runs more than `len`
        /// ahead of another.
        #[test]
        fn every_pass_tries_every_slot(n in 1usize..8, len in 0usize..7,
                                       counts in proptest::collection::vec(0usize..20, 8)) {
            let now = Instant::now();
            let mut t = Turns::new(n, len, TURN_WAIT);
            let mut slots: Vec<Slot> = counts[..n].iter().map(|&c| ended(c)).collect();
            let total: usize = counts[..n].iter().sum();
            let min_count = counts[..n].iter().copied().min().unwrap_or(0);
            let mut got = vec![0usize; n];
            let mut served = 0;
            loop {
                let mut order: Vec<_> = t.order().collect();
                order.sort_unstable();
                prop_assert_eq!(order, (0..n).collect::<Vec<_>>());
                let Some(s) = pass(&mut t, &mut slots, now) else { break };
                got[s] += 1;
                served += 1;
                let (hi, lo) = (got.iter().max().copied().unwrap_or(0),
                                got.iter().min().copied().unwrap_or(0));
                if lo < min_count {
                    prop_assert!(hi - lo <= len.max(1), "counts {:?}, turns of {}", got, len);
                }
            }
            prop_assert_eq!(served, total);
        }
    }
}
