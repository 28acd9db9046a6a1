//! Push latency: the time from `push()` to its future being complete, for a sample of the
//! pushes.
//!
//! Waiting on a push future sends its batch early (see `Producer::push`), which would change
//! the batching being measured, so the sampler never waits on a future: a background thread
//! polls the sampled futures with `Future::is_ready` every [`POLL`] (so a figure is at most
//! about one poll interval late) and records `now - push time` in a [`Histogram`].
//!
//! A pass polls from the oldest future and stops after [`MISSES_PER_PASS`] consecutive
//! pending ones: futures complete roughly in push order (a partition's batches are answered
//! in order), so later ones are rarely ready, and one that is gets recorded on a later pass.
//! Polling the whole window every pass cost the producer's process 6% of its CPU samples
//! (64 KiB events over the fabric driver, where about a thousand sampled futures are pending
//! at any time), on a 2-core machine where the benchmark shares the cores with what it
//! measures.

use std::collections::VecDeque;
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use diaspora_api::{EventId, Future};

use crate::histogram::Histogram;

/// Pause between two polls of the pending sampled futures.
pub const POLL: Duration = Duration::from_micros(100);
/// At most this many pending futures are polled per pass (the oldest ones).
const POLL_WINDOW: usize = 256;
/// A pass stops after this many consecutive pending futures.
const MISSES_PER_PASS: usize = 8;
/// Roughly how many pushes are sampled per phase.
const TARGET_SAMPLES: u64 = 20_000;

/// What the sampler saw.
#[derive(Debug, Default)]
pub struct Sampled {
    /// Latencies of the sampled pushes whose future succeeded.
    pub histogram: Histogram,
    /// Sampled pushes whose future failed, and the first reason.
    pub failures: u64,
    /// The first failure.
    pub first_failure: Option<String>,
    /// Sampled futures still pending when the sampler was stopped.
    pub unfinished: u64,
}

/// Samples one push in `every`.
pub struct Sampler {
    every: u64,
    tx: Option<Sender<(Instant, Future<EventId>)>>,
    thread: Option<JoinHandle<Sampled>>,
}

impl Sampler {
    /// A sampler for a phase of `events` pushes.
    pub fn new(events: u64) -> Result<Sampler, String> {
        let (tx, rx) = channel();
        let thread = std::thread::Builder::new()
            .name("bench-latency".into())
            .spawn(move || poll_loop(rx))
            .map_err(|e| format!("starting the latency sampler thread: {e}"))?;
        Ok(Sampler {
            every: (events / TARGET_SAMPLES).max(1),
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// A handle pushing threads use.
    pub fn handle(&self) -> SampleHandle {
        SampleHandle {
            every: self.every,
            tx: self.tx.clone(),
        }
    }

    /// Stops sampling and returns what was seen; futures still pending after `grace` are
    /// counted as unfinished.
    pub fn finish(mut self, grace: Duration) -> Result<Sampled, String> {
        drop(self.tx.take());
        let thread = self
            .thread
            .take()
            .ok_or("latency sampler already finished")?;
        let deadline = Instant::now() + grace;
        // The thread ends once every sampled future is ready or the channel is closed and
        // `grace` has passed; bound the join by polling.
        while !thread.is_finished() {
            if Instant::now() > deadline + Duration::from_secs(1) {
                return Err(format!(
                    "latency sampler still running {grace:?} after the flush"
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut s = thread
            .join()
            .map_err(|_| "the latency sampler thread panicked".to_owned())?;
        if s.unfinished > 0 && s.first_failure.is_none() {
            s.first_failure = Some(format!(
                "{} sampled push future(s) not complete after the flush",
                s.unfinished
            ));
        }
        Ok(s)
    }
}

/// Given to each pushing thread.
#[derive(Clone)]
pub struct SampleHandle {
    every: u64,
    tx: Option<Sender<(Instant, Future<EventId>)>>,
}

impl SampleHandle {
    /// Whether push number `i` (0-based, per thread) is sampled.
    pub fn sampled(&self, i: u64) -> bool {
        self.tx.is_some() && i.is_multiple_of(self.every)
    }

    /// Whether a push of events `first..first + count` (per thread) holds a sampled one.
    pub fn sampled_range(&self, first: u64, count: u64) -> bool {
        self.tx.is_some()
            && count > 0
            && first.div_ceil(self.every).saturating_mul(self.every) < first.saturating_add(count)
    }

    /// Hands a sampled future over, with the instant just before its push.
    pub fn submit(&self, pushed: Instant, f: Future<EventId>) {
        if let Some(tx) = &self.tx {
            // The receiver lives until `finish`; a send error only means it is stopping.
            let _ = tx.send((pushed, f));
        }
    }
}

fn poll_loop(rx: Receiver<(Instant, Future<EventId>)>) -> Sampled {
    let mut pending: VecDeque<(Instant, Future<EventId>)> = VecDeque::new();
    let mut out = Sampled::default();
    let mut closed_at: Option<Instant> = None;
    loop {
        // Take what arrived.
        loop {
            match rx.try_recv() {
                Ok(x) => pending.push_back(x),
                Err(std::sync::mpsc::TryRecvError::Empty) => break,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    closed_at.get_or_insert_with(Instant::now);
                    break;
                }
            }
        }
        let now = Instant::now();
        let (mut i, mut misses) = (0, 0);
        while i < pending.len().min(POLL_WINDOW) && misses < MISSES_PER_PASS {
            if pending[i].1.is_ready() {
                misses = 0;
                if let Some((t0, f)) = pending.remove(i) {
                    match f.get() {
                        Ok(_) => out
                            .histogram
                            .record(now.duration_since(t0).as_nanos() as u64),
                        Err(e) => {
                            out.failures += 1;
                            out.first_failure.get_or_insert_with(|| e.to_string());
                        }
                    }
                }
            } else {
                i += 1;
                misses += 1;
            }
        }
        match closed_at {
            // After the flush every future is complete; give late ones 30 s at most.
            Some(t) if pending.is_empty() || t.elapsed() > Duration::from_secs(30) => {
                out.unfinished = pending.len() as u64;
                return out;
            }
            Some(_) => std::thread::sleep(POLL),
            None if pending.is_empty() => match rx.recv_timeout(Duration::from_millis(10)) {
                Ok(x) => pending.push_back(x),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    closed_at.get_or_insert_with(Instant::now);
                }
            },
            None => std::thread::sleep(POLL),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diaspora_api::{Result, Waitable};
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;

    /// Pending until `done`; counts its polls.
    struct Probe {
        done: Arc<AtomicBool>,
        polls: Arc<AtomicU64>,
    }

    impl Waitable<EventId> for Probe {
        fn wait_until(&mut self, _: Option<Instant>) -> Option<Result<EventId>> {
            self.done.load(Ordering::SeqCst).then_some(Ok(7))
        }
        fn is_ready(&self) -> bool {
            self.polls.fetch_add(1, Ordering::SeqCst);
            self.done.load(Ordering::SeqCst)
        }
    }

    #[test]
    fn a_group_of_pushes_is_sampled_when_it_holds_a_sampled_push() {
        let h = SampleHandle {
            every: 10,
            tx: Some(channel().0),
        };
        let groups: Vec<(u64, u64)> = (0..40).step_by(4).map(|i| (i, 4)).collect();
        let sampled: Vec<u64> = groups
            .iter()
            .filter(|&&(i, k)| h.sampled_range(i, k))
            .map(|&(i, _)| i)
            .collect();
        // Groups 0..4, 8..12, 20..24, 28..32 hold 0, 10, 20 and 30.
        assert_eq!(sampled, vec![0, 8, 20, 28]);
        assert!(!h.sampled_range(1, 0));
        assert!(!h.sampled_range(1, 9));
        assert!(h.sampled_range(1, 10));
        // No overflow near the end of the range (u64::MAX - 5 is a multiple of 10).
        assert!(h.sampled_range(u64::MAX - 5, 1));
        assert!(!h.sampled_range(u64::MAX - 4, 4));
    }

    #[test]
    fn a_pass_stops_at_pending_futures_and_every_future_is_still_recorded() {
        let sampler = Sampler::new(100).expect("sampler");
        let h = sampler.handle();
        let polls = Arc::new(AtomicU64::new(0));
        // Completed in reverse push order: the newest first.
        let flags: Vec<Arc<AtomicBool>> =
            (0..100).map(|_| Arc::new(AtomicBool::new(false))).collect();
        for f in &flags {
            let probe = Probe {
                done: f.clone(),
                polls: polls.clone(),
            };
            h.submit(Instant::now(), Future::pending(Box::new(probe)));
        }
        std::thread::sleep(Duration::from_millis(50));
        let passes_bound = 50_000 / POLL.as_micros() as u64 + 10;
        let seen = polls.load(Ordering::SeqCst);
        assert!(
            seen <= passes_bound * MISSES_PER_PASS as u64,
            "{seen} polls of 100 pending futures in 50 ms"
        );
        for f in flags.iter().rev() {
            f.store(true, Ordering::SeqCst);
        }
        drop(h);
        let s = sampler.finish(Duration::from_secs(10)).expect("finish");
        assert_eq!((s.histogram.count(), s.failures, s.unfinished), (100, 0, 0));
    }
}
