//! Step assembly and the acknowledgement frontier, independent of the stream API.
//!
//! Events arrive per partition in order. A selected step is *complete* when all `ranks`
//! slabs of it arrived. An event may be acknowledged only once it and every earlier event of
//! its partition belong to completed steps (or were not selected): acknowledging an event
//! acknowledges the earlier ones, so acking a slab of an incomplete step would lose it on a
//! restart. [`Tracker::ackable`] returns, per partition, the last event that may be acked.
//!
//! Acknowledgements of two partitions are two writes: a consumer killed between them restarts
//! with one partition past a step and the other before it, so only some slabs of that step
//! come back. Such a step was logged before any of it was acknowledged, so a restarted
//! analysis starts from [`Tracker::resuming`] with the logged steps: their slabs are
//! acknowledged without being assembled, and never wait for slabs that will not come again.

use crate::meta::SlabMeta;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

/// One received slab: metadata and the selected values (a full slab or a column window).
#[derive(Debug, Clone)]
pub struct Slab {
    /// Its metadata.
    pub meta: SlabMeta,
    /// Selected values, row-major, `row1 - row0` rows of `width` columns.
    pub values: Vec<f64>,
}

/// A completed step: its slabs in rank order.
#[derive(Debug)]
pub struct Step {
    /// The step.
    pub step: u64,
    /// Slabs sorted by first row.
    pub slabs: Vec<Slab>,
}

impl Step {
    /// Global (min, max, mean) over every selected value.
    pub fn stats(&self) -> (f64, f64, f64) {
        let (mut lo, mut hi, mut sum, mut n) = (f64::INFINITY, f64::NEG_INFINITY, 0.0, 0usize);
        for s in &self.slabs {
            let (a, b, c) = crate::field::stats(&s.values);
            lo = lo.min(a);
            hi = hi.max(b);
            sum += c;
            n += s.values.len();
        }
        (lo, hi, sum / n.max(1) as f64)
    }

    /// The assembled field (rows in order), row-major.
    pub fn field(&self) -> Vec<f64> {
        self.slabs
            .iter()
            .flat_map(|s| s.values.iter().copied())
            .collect()
    }
}

/// Tracks pending steps and per-partition acknowledgement order. `E` is the event handle.
pub struct Tracker<E> {
    pending: BTreeMap<u64, BTreeMap<u64, Slab>>,
    completed: BTreeSet<u64>,
    queues: HashMap<usize, VecDeque<(E, Option<u64>)>>,
}

impl<E> Default for Tracker<E> {
    fn default() -> Self {
        Tracker {
            pending: BTreeMap::new(),
            completed: BTreeSet::new(),
            queues: HashMap::new(),
        }
    }
}

impl<E> Tracker<E> {
    /// A tracker for a restarted analysis: `done` are the steps an earlier run logged. Their
    /// slabs complete nothing and are acknowledged as they come (some may not come again).
    pub fn resuming(done: impl IntoIterator<Item = u64>) -> Self {
        Tracker {
            completed: done.into_iter().collect(),
            ..Tracker::default()
        }
    }

    /// Whether `step` was completed (here or, for [`Tracker::resuming`], by an earlier run).
    pub fn is_complete(&self, step: u64) -> bool {
        self.completed.contains(&step)
    }

    /// An event that was not selected (nothing to assemble).
    pub fn skip(&mut self, partition: usize, event: E) {
        self.queues
            .entry(partition)
            .or_default()
            .push_back((event, None));
    }

    /// A selected slab; returns the step once all its ranks arrived. A second slab of the same
    /// (step, rank) replaces nothing and completes nothing (duplicate).
    pub fn add(&mut self, partition: usize, event: E, slab: Slab) -> Option<Step> {
        let step = slab.meta.step;
        self.queues
            .entry(partition)
            .or_default()
            .push_back((event, Some(step)));
        if self.completed.contains(&step) {
            return None;
        }
        let ranks = slab.meta.ranks;
        let parts = self.pending.entry(step).or_default();
        parts.entry(slab.meta.rank).or_insert(slab);
        if parts.len() as u64 == ranks {
            let parts = self.pending.remove(&step).unwrap_or_default();
            self.completed.insert(step);
            let mut slabs: Vec<Slab> = parts.into_values().collect();
            slabs.sort_by_key(|s| s.meta.row0);
            return Some(Step { step, slabs });
        }
        None
    }

    /// Pops, per partition, every leading event whose step is complete (or unselected) and
    /// returns the last one popped of each partition: acknowledging it is safe.
    pub fn ackable(&mut self) -> Vec<E> {
        let mut out = Vec::new();
        for q in self.queues.values_mut() {
            let mut last = None;
            while let Some((_, s)) = q.front() {
                if s.is_some_and(|s| !self.completed.contains(&s)) {
                    break;
                }
                last = q.pop_front().map(|(e, _)| e);
            }
            out.extend(last);
        }
        out
    }

    /// Steps with some but not all slabs.
    pub fn incomplete(&self) -> Vec<u64> {
        self.pending.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slab(step: u64, rank: u64) -> Slab {
        Slab {
            meta: SlabMeta {
                step,
                rank,
                ranks: 2,
                nx: 1,
                ny: 2,
                row0: rank,
                row1: rank + 1,
                min: 0.0,
                max: 0.0,
                mean: 0.0,
            },
            values: vec![rank as f64],
        }
    }

    #[test]
    fn a_slab_of_an_incomplete_step_is_never_acknowledged() {
        let mut t = Tracker::default();
        assert!(t.add(0, "s0r0", slab(0, 0)).is_none());
        t.skip(0, "s1r0");
        assert!(t.ackable().is_empty(), "step 0 is not complete");
        let done = t.add(1, "s0r1", slab(0, 1)).expect("complete");
        assert_eq!(done.step, 0);
        assert_eq!(done.stats(), (0.0, 1.0, 0.5));
        let mut acks = t.ackable();
        acks.sort();
        assert_eq!(acks, vec!["s0r1", "s1r0"]);
        assert!(t.add(0, "s2r0", slab(2, 0)).is_none());
        assert!(t.ackable().is_empty());
        assert_eq!(t.incomplete(), vec![2]);
    }

    #[test]
    fn a_resumed_step_acks_its_redelivered_slabs_and_waits_for_no_other() {
        // Killed after acking partition 0 past step 0 but before acking partition 1: only
        // rank 1's slab of step 0 comes back, then step 2 in full.
        let mut t = Tracker::resuming([0]);
        assert!(t.is_complete(0) && !t.is_complete(2));
        assert!(t.add(1, "s0r1", slab(0, 1)).is_none(), "logged already");
        assert_eq!(t.ackable(), vec!["s0r1"]);
        assert!(t.add(0, "s2r0", slab(2, 0)).is_none());
        assert_eq!(t.add(1, "s2r1", slab(2, 1)).map(|s| s.step), Some(2));
        let mut acks = t.ackable();
        acks.sort();
        assert_eq!(acks, vec!["s2r0", "s2r1"]);
        assert!(t.incomplete().is_empty());
    }

    #[test]
    fn duplicates_complete_nothing() {
        let mut t = Tracker::default();
        assert!(t.add(0, 1, slab(0, 0)).is_none());
        assert!(t.add(0, 2, slab(0, 0)).is_none());
        assert!(t.add(0, 3, slab(0, 1)).is_some());
        assert!(t.add(0, 4, slab(0, 1)).is_none());
        assert_eq!(t.ackable(), vec![4]);
    }
}
