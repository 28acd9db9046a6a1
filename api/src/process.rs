//! Consumption loops: iterating over a [`Consumer`] and [`Consumer::process`].
//!
//! ```ignore
//! for event in &consumer {          // until end-of-stream, or 5 s without an event
//!     let event = event?;
//!     println!("{}", event.metadata());
//!     event.acknowledge()?;
//! }
//! let n = consumer.process(|event| {
//!     if event.metadata().json().map_or(false, |m| m["last"] == true) {
//!         return ControlFlow::Break(()); // upstream: throw StopEventProcessor
//!     }
//!     ControlFlow::Continue(())
//! }, 5_000, NumEvents::infinity())?;
//! ```

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use crate::driver::Consumer;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::thread_pool::ThreadPool;

/// How long iteration with `for event in &consumer` waits for each event (upstream's default
/// `timeout_ms` of `begin()` and `process()`).
pub const DEFAULT_TIMEOUT_MS: i64 = 5_000;

/// Most events [`Consumer::process`] handles (upstream's `NumEvents`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NumEvents(pub u64);

impl NumEvents {
    /// No limit.
    pub fn infinity() -> Self {
        NumEvents(u64::MAX)
    }
}

impl From<u64> for NumEvents {
    fn from(n: u64) -> Self {
        NumEvents(n)
    }
}

/// Iterator over a consumer's events, see [`Consumer::events`].
pub struct Events<'a> {
    consumer: &'a Consumer,
    timeout_ms: i64,
    done: bool,
}

impl Iterator for Events<'_> {
    type Item = Result<Event>;

    fn next(&mut self) -> Option<Result<Event>> {
        if self.done {
            return None;
        }
        match self.consumer.pull().wait(self.timeout_ms) {
            Ok(Some(e)) if e.is_no_more_events() => {
                self.done = true;
                None
            }
            Ok(Some(e)) => Some(Ok(e)),
            Ok(None) => {
                self.done = true;
                None
            }
            // The consumer moved past that event: later ones still come.
            Err(e @ Error::EventFailed { .. }) => Some(Err(e)),
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

impl std::iter::FusedIterator for Events<'_> {}

impl<'a> IntoIterator for &'a Consumer {
    type Item = Result<Event>;
    type IntoIter = Events<'a>;

    /// [`Consumer::events`] with [`DEFAULT_TIMEOUT_MS`].
    fn into_iter(self) -> Events<'a> {
        self.events(DEFAULT_TIMEOUT_MS)
    }
}

/// Counts jobs in flight and wakes the loop when they are all done.
#[derive(Default)]
struct InFlight {
    count: Mutex<u64>,
    cond: Condvar,
}

impl Consumer {
    /// Iterates over events: each item is the next event, or the error of a pull. Ends at
    /// end-of-stream (the marker itself is not yielded), when no event arrives within
    /// `timeout_ms` (negative: never), or after an error other than [`Error::EventFailed`]
    /// (after which the consumer has moved past the failed event, so iteration goes on).
    pub fn events(&self, timeout_ms: i64) -> Events<'_> {
        Events {
            consumer: self,
            timeout_ms,
            done: false,
        }
    }

    /// Runs `processor` on events, on this thread, until it returns
    /// [`ControlFlow::Break`] (upstream: throwing `StopEventProcessor`), `max_events` were
    /// processed, the stream ends, or no event arrives within `timeout_ms` (negative: never).
    /// Returns how many events were processed; a failed pull stops the loop with its error
    /// (for [`Error::EventFailed`], the consumer has moved past the event: acknowledge it and
    /// call `process` again to go on).
    pub fn process<P>(
        &self,
        mut processor: P,
        timeout_ms: i64,
        max_events: NumEvents,
    ) -> Result<u64>
    where
        P: FnMut(Event) -> ControlFlow<()>,
    {
        let mut processed = 0u64;
        while processed < max_events.0 {
            let event = match self.pull().wait(timeout_ms)? {
                None => break,
                Some(e) if e.is_no_more_events() => break,
                Some(e) => e,
            };
            processed += 1;
            if processor(event).is_break() {
                break;
            }
        }
        Ok(processed)
    }

    /// [`Consumer::process`] with the processor run by `thread_pool`, several events at once
    /// (as upstream's `process(..., threadPool)`). Pulling stops at the first `Break`; events
    /// already handed to the pool are still processed unless they had not started, in which
    /// case they are skipped (not acknowledged, so a restarted consumer gets them again).
    /// Returns once every started processor has returned, with how many ran; a processor that
    /// panics stops the loop with [`Error::Panicked`].
    pub fn process_with_pool<P>(
        &self,
        processor: P,
        timeout_ms: i64,
        max_events: NumEvents,
        thread_pool: &ThreadPool,
    ) -> Result<u64>
    where
        P: Fn(Event) -> ControlFlow<()> + Send + Sync + 'static,
    {
        use std::sync::atomic::Ordering::SeqCst;
        let processor = Arc::new(processor);
        let stop = Arc::new(AtomicBool::new(false));
        let ran = Arc::new(AtomicU64::new(0));
        let failure: Arc<Mutex<Option<Error>>> = Arc::new(Mutex::new(None));
        let in_flight = Arc::new(InFlight::default());
        let mut pulled = 0u64;
        let mut result = Ok(());
        while pulled < max_events.0 && !stop.load(SeqCst) {
            let event = match self.pull().wait(timeout_ms) {
                Ok(None) => break,
                Ok(Some(e)) if e.is_no_more_events() => break,
                Ok(Some(e)) => e,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            pulled += 1;
            *in_flight.count.lock() += 1;
            let (processor, stop, ran, failure, in_flight) = (
                processor.clone(),
                stop.clone(),
                ran.clone(),
                failure.clone(),
                in_flight.clone(),
            );
            thread_pool.push_work(
                move || {
                    if !stop.load(SeqCst) {
                        ran.fetch_add(1, SeqCst);
                        match crate::catch_panic("the event processor", || processor(event)) {
                            Ok(ControlFlow::Continue(())) => {}
                            Ok(ControlFlow::Break(())) => stop.store(true, SeqCst),
                            Err(e) => {
                                stop.store(true, SeqCst);
                                failure.lock().get_or_insert(e);
                            }
                        }
                    }
                    let mut n = in_flight.count.lock();
                    *n -= 1;
                    if *n == 0 {
                        in_flight.cond.notify_all();
                    }
                },
                0,
            );
        }
        let mut n = in_flight.count.lock();
        while *n > 0 {
            in_flight.cond.wait(&mut n);
        }
        drop(n);
        if let Some(e) = failure.lock().take() {
            return Err(e);
        }
        result.map(|()| ran.load(SeqCst))
    }
}
