//! One-shot completions: the progress thread fills a [`Sink`], the caller waits on the
//! matching [`Pending`].
//!
//! A sink that is dropped without being completed (its operation was lost in a panic, or the
//! engine stopped) completes its `Pending` with [`RpcError::EngineStopped`], so no waiter can
//! hang on an operation nobody will finish.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::error::RpcError;

type Callback<T> = Box<dyn FnOnce(T) + Send + 'static>;

enum State<T> {
    Waiting,
    Callback(Callback<T>),
    Done(T),
    Taken,
}

struct Slot<T> {
    state: Mutex<State<T>>,
    cv: Condvar,
    /// Set (after `state` became `Done`) so that polling waiters need not take the lock.
    done: AtomicBool,
}

/// Drives an engine's progress on the waiting thread (inline progress).
pub(crate) trait Drive: Send + Sync {
    /// Makes progress until `done()` or `deadline`.
    fn drive(&self, done: &dyn Fn() -> bool, deadline: Option<Instant>);
}

/// The caller's side of an operation in flight.
#[must_use = "an operation's outcome must be waited for or explicitly ignored"]
pub struct Pending<T, E = RpcError> {
    slot: Arc<Slot<Result<T, E>>>,
    id: u64,
    driver: Option<Arc<dyn Drive>>,
    /// How long `wait` polls before it sleeps on the condition variable.
    spin: Duration,
}

/// The engine's side: completing it wakes the waiter or runs its callback.
pub(crate) struct Sink<T, E: From<RpcError> = RpcError> {
    slot: Option<Arc<Slot<Result<T, E>>>>,
}

pub(crate) fn pair<T, E: From<RpcError>>() -> (Sink<T, E>, Pending<T, E>) {
    let slot = Arc::new(Slot {
        state: Mutex::new(State::Waiting),
        cv: Condvar::new(),
        done: AtomicBool::new(false),
    });
    (
        Sink {
            slot: Some(slot.clone()),
        },
        Pending {
            slot,
            id: 0,
            driver: None,
            spin: Duration::ZERO,
        },
    )
}

impl<T, E: From<RpcError>> Sink<T, E> {
    /// Completes the operation; runs the waiter's callback on this thread if it set one.
    pub(crate) fn complete(mut self, value: Result<T, E>) {
        if let Some(slot) = self.slot.take() {
            fill(&slot, value);
        }
    }
}

fn fill<T>(slot: &Slot<T>, value: T) {
    let mut st = slot.state.lock();
    match std::mem::replace(&mut *st, State::Taken) {
        State::Callback(f) => {
            drop(st);
            f(value);
        }
        State::Waiting => {
            *st = State::Done(value);
            slot.done.store(true, Ordering::Release);
            slot.cv.notify_all();
        }
        other => *st = other,
    }
}

impl<T, E: From<RpcError>> Drop for Sink<T, E> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            fill(&slot, Err(E::from(RpcError::EngineStopped)));
        }
    }
}

impl<T, E> Pending<T, E> {
    pub(crate) fn with_id(mut self, id: u64) -> Self {
        self.id = id;
        self
    }

    /// Makes `wait` drive progress on the waiting thread.
    pub(crate) fn with_driver(mut self, driver: Option<Arc<dyn Drive>>) -> Self {
        self.driver = driver;
        self
    }

    /// Makes `wait` poll for up to `spin` (yielding the core) before it sleeps: an outcome
    /// that arrives meanwhile is taken without a thread wake-up.
    pub(crate) fn with_spin(mut self, spin: Duration) -> Self {
        self.spin = spin;
        self
    }

    /// Polls for the outcome for up to `spin`, or until `deadline`.
    fn spin_until_done(&self, deadline: Option<Instant>) {
        if self.spin.is_zero() {
            return;
        }
        let start = Instant::now();
        let until = deadline.map_or(start + self.spin, |d| d.min(start + self.spin));
        while !self.is_done() && Instant::now() < until {
            std::thread::yield_now();
        }
    }

    /// The operation's request id (to [`cancel`](crate::Engine::cancel) it).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// True once the outcome is available.
    pub fn is_done(&self) -> bool {
        // `done` is set only once the outcome is stored, and the outcome is taken only by
        // this `Pending`, which consumes itself doing so.
        self.slot.done.load(Ordering::Acquire)
    }

    /// Waits for the outcome. The engine enforces the operation's deadline, so this returns
    /// by then (or when the engine stops).
    pub fn wait(self) -> Result<T, E> {
        if let Some(d) = &self.driver {
            d.drive(&|| self.is_done(), None);
        }
        self.spin_until_done(None);
        let mut st = self.slot.state.lock();
        loop {
            if let State::Done(_) = &*st {
                if let State::Done(v) = std::mem::replace(&mut *st, State::Taken) {
                    return v;
                }
            }
            self.slot.cv.wait(&mut st);
        }
    }

    /// Waits at most `timeout`; gives the `Pending` back if the outcome is not there yet.
    pub fn wait_timeout(self, timeout: Duration) -> Result<Result<T, E>, Self> {
        let deadline = Instant::now() + timeout;
        if let Some(d) = &self.driver {
            d.drive(&|| self.is_done(), Some(deadline));
        }
        self.spin_until_done(Some(deadline));
        {
            let mut st = self.slot.state.lock();
            loop {
                if let State::Done(_) = &*st {
                    if let State::Done(v) = std::mem::replace(&mut *st, State::Taken) {
                        return Ok(v);
                    }
                }
                if self.slot.cv.wait_until(&mut st, deadline).timed_out() {
                    break;
                }
            }
        }
        Err(self)
    }

    /// Instead of waiting, runs `f` with the outcome on the thread that completes it (the
    /// progress thread: keep `f` short, or hand the work to a pool).
    pub fn on_complete(self, f: impl FnOnce(Result<T, E>) + Send + 'static) {
        let mut st = self.slot.state.lock();
        match std::mem::replace(&mut *st, State::Taken) {
            State::Done(v) => {
                drop(st);
                f(v);
            }
            State::Waiting => *st = State::Callback(Box::new(f)),
            other => *st = other,
        }
    }
}

impl<T, E> std::fmt::Debug for Pending<T, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pending(id {}, done {})", self.id, self.is_done())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completing_wakes_the_waiter() {
        let (sink, pending) = pair::<u32, RpcError>();
        let t = std::thread::spawn(move || sink.complete(Ok(5)));
        assert_eq!(pending.wait().unwrap(), 5);
        t.join().unwrap();
    }

    #[test]
    fn a_dropped_sink_fails_the_waiter_instead_of_hanging_it() {
        let (sink, pending) = pair::<u32, RpcError>();
        drop(sink);
        assert!(matches!(pending.wait(), Err(RpcError::EngineStopped)));
    }

    #[test]
    fn wait_timeout_gives_the_pending_back() {
        let (sink, pending) = pair::<u32, RpcError>();
        let pending = pending.wait_timeout(Duration::from_millis(1)).unwrap_err();
        sink.complete(Ok(1));
        assert_eq!(
            pending
                .wait_timeout(Duration::from_secs(5))
                .ok()
                .unwrap()
                .unwrap(),
            1
        );
    }

    #[test]
    fn a_spinning_wait_takes_an_outcome_completed_while_it_polls() {
        let (sink, pending) = pair::<u32, RpcError>();
        let pending = pending.with_spin(Duration::from_secs(10));
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(5));
            sink.complete(Ok(7));
        });
        let start = Instant::now();
        assert_eq!(pending.wait().unwrap(), 7);
        // It returned when the outcome came, not when the spin ran out.
        assert!(start.elapsed() < Duration::from_secs(5));
        t.join().unwrap();
    }

    #[test]
    fn a_spinning_wait_timeout_still_gives_up_at_its_deadline() {
        let (sink, pending) = pair::<u32, RpcError>();
        let pending = pending.with_spin(Duration::from_secs(30));
        let start = Instant::now();
        let pending = pending
            .wait_timeout(Duration::from_millis(20))
            .expect_err("nothing completed it");
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the spin outlived the deadline: {:?}",
            start.elapsed()
        );
        sink.complete(Ok(3));
        assert_eq!(pending.wait().unwrap(), 3);
    }

    #[test]
    fn callbacks_run_once_whether_set_before_or_after_completion() {
        let (tx, rx) = std::sync::mpsc::channel();
        let (sink, pending) = pair::<u32, RpcError>();
        let tx2 = tx.clone();
        pending.on_complete(move |v| tx2.send(v.unwrap()).unwrap());
        sink.complete(Ok(1));
        let (sink, pending) = pair::<u32, RpcError>();
        sink.complete(Ok(2));
        pending.on_complete(move |v| tx.send(v.unwrap()).unwrap());
        assert_eq!(rx.recv().unwrap(), 1);
        assert_eq!(rx.recv().unwrap(), 2);
    }
}
