//! [`Future`]: the result of a non-blocking operation, waited on with a timeout.
//!
//! `wait(timeout_ms)` returns `Ok(None)` when the timeout expires (the wait may be retried),
//! `Ok(Some(value))` once, and a negative timeout blocks until the result is there.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::error::{Error, Result};

/// Something a [`Future`] can wait on. Implemented by drivers for lazily-progressed operations.
pub trait Waitable<T>: Send {
    /// Waits until the result is available or `deadline` passes (`None`: no deadline).
    /// Returns `None` on timeout.
    fn wait_until(&mut self, deadline: Option<Instant>) -> Option<Result<T>>;

    /// Whether `wait_until` would return immediately.
    fn is_ready(&self) -> bool;
}

impl<T> Waitable<T> for Box<dyn Waitable<T>> {
    fn wait_until(&mut self, deadline: Option<Instant>) -> Option<Result<T>> {
        (**self).wait_until(deadline)
    }
    fn is_ready(&self) -> bool {
        (**self).is_ready()
    }
}

enum State<T> {
    Ready(Result<T>),
    Pending(Box<dyn Waitable<T>>),
    Taken,
}

/// The eventual result of an operation.
#[must_use = "a future does nothing unless waited on; drop it explicitly to ignore the result"]
pub struct Future<T> {
    state: State<T>,
}

impl<T> Future<T> {
    /// A future that already holds `value`.
    pub fn ready(value: T) -> Self {
        Future {
            state: State::Ready(Ok(value)),
        }
    }

    /// A future that already holds an error.
    pub fn failed(error: Error) -> Self {
        Future {
            state: State::Ready(Err(error)),
        }
    }

    /// A future completed by a [`Waitable`].
    pub fn pending(w: Box<dyn Waitable<T>>) -> Self {
        Future {
            state: State::Pending(w),
        }
    }

    /// Waits at most `timeout_ms` milliseconds (negative: forever).
    ///
    /// Returns `Ok(None)` on timeout, `Ok(Some(v))` with the result, `Err` if the operation
    /// failed. Once the result has been returned, further calls fail with
    /// [`Error::FutureConsumed`].
    pub fn wait(&mut self, timeout_ms: i64) -> Result<Option<T>> {
        // A ready result needs no deadline (reading the clock was 8% of a fast consumer's time).
        let deadline = if timeout_ms < 0 || matches!(self.state, State::Ready(_)) {
            None
        } else {
            Some(Instant::now() + Duration::from_millis(timeout_ms as u64))
        };
        self.wait_until(deadline)
    }

    /// Waits until `deadline` (`None`: forever). See [`Future::wait`].
    pub fn wait_until(&mut self, deadline: Option<Instant>) -> Result<Option<T>> {
        let result = match &mut self.state {
            State::Taken => return Err(Error::FutureConsumed),
            State::Ready(_) => match std::mem::replace(&mut self.state, State::Taken) {
                State::Ready(r) => r,
                _ => unreachable!("state checked above"),
            },
            State::Pending(w) => match w.wait_until(deadline) {
                None => return Ok(None),
                Some(r) => {
                    self.state = State::Taken;
                    r
                }
            },
        };
        result.map(Some)
    }

    /// Blocks until the result is available and returns it.
    pub fn get(mut self) -> Result<T> {
        match self.wait_until(None)? {
            Some(v) => Ok(v),
            // A wait without deadline only returns None if the waitable breaks its contract.
            None => Err(Error::Closed("future")),
        }
    }

    /// Whether `wait` would return without blocking.
    pub fn is_ready(&self) -> bool {
        match &self.state {
            State::Ready(_) | State::Taken => true,
            State::Pending(w) => w.is_ready(),
        }
    }

    /// A future whose value is `f` applied to this one's.
    pub fn map<U, F>(self, f: F) -> Future<U>
    where
        T: Send + 'static,
        U: 'static,
        F: FnOnce(T) -> U + Send + 'static,
    {
        match self.state {
            State::Ready(r) => Future {
                state: State::Ready(r.map(f)),
            },
            State::Taken => Future::failed(Error::FutureConsumed),
            State::Pending(w) => Future::pending(Box::new(Mapped::new(w, f))),
        }
    }
}

impl<T: Send + 'static> Future<T> {
    /// A future of every value of `futures`, in order, once all are there; it fails with the
    /// first error among them (in order), once the futures before it have their values.
    pub fn all(futures: Vec<Future<T>>) -> Future<Vec<T>> {
        if futures.is_empty() {
            return Future::ready(Vec::new());
        }
        Future::pending(Box::new(AllOf {
            done: Vec::with_capacity(futures.len()),
            futures,
        }))
    }
}

/// The waitable of [`Future::all`]: `done` holds the values of the first futures.
struct AllOf<T> {
    futures: Vec<Future<T>>,
    done: Vec<T>,
}

impl<T: Send + 'static> Waitable<Vec<T>> for AllOf<T> {
    fn wait_until(&mut self, deadline: Option<Instant>) -> Option<Result<Vec<T>>> {
        while let Some(f) = self.futures.get_mut(self.done.len()) {
            match f.wait_until(deadline) {
                Ok(None) => return None,
                Ok(Some(v)) => self.done.push(v),
                Err(e) => return Some(Err(e)),
            }
        }
        Some(Ok(std::mem::take(&mut self.done)))
    }

    fn is_ready(&self) -> bool {
        self.futures[self.done.len().min(self.futures.len())..]
            .iter()
            .all(Future::is_ready)
    }
}

impl<T: Clone + Send + 'static> Future<T> {
    /// A clonable future whose result can be waited on any number of times (upstream's
    /// futures are copyable and `wait` repeats the value). See [`SharedFuture`].
    pub fn shared(self) -> SharedFuture<T> {
        SharedFuture {
            inner: Arc::new(SharedInner {
                future: Mutex::new(Some(self)),
                result: Completion::new(),
            }),
        }
    }
}

/// A future that can be cloned and waited on repeatedly, from any thread: every `wait` after
/// completion returns the same value (errors are shared, [`Error::Shared`]). One waiter at a
/// time progresses the underlying future; others wait for it within their own deadline.
pub struct SharedFuture<T> {
    inner: Arc<SharedInner<T>>,
}

struct SharedInner<T> {
    future: Mutex<Option<Future<T>>>,
    result: Arc<Completion<T>>,
}

impl<T> Clone for SharedFuture<T> {
    fn clone(&self) -> Self {
        SharedFuture {
            inner: self.inner.clone(),
        }
    }
}

impl<T: Clone + Send + 'static> SharedFuture<T> {
    /// Waits at most `timeout_ms` milliseconds (negative: forever). `Ok(None)` on timeout;
    /// the result, as many times as asked, once there.
    pub fn wait(&self, timeout_ms: i64) -> Result<Option<T>> {
        let deadline = if timeout_ms < 0 {
            None
        } else {
            Some(Instant::now() + Duration::from_millis(timeout_ms as u64))
        };
        self.wait_until(deadline)
    }

    /// Waits until `deadline` (`None`: forever). See [`SharedFuture::wait`].
    pub fn wait_until(&self, deadline: Option<Instant>) -> Result<Option<T>> {
        if let Some(r) = self.done() {
            return r.map(Some);
        }
        let guard = match deadline {
            None => Some(self.inner.future.lock()),
            Some(d) => self.inner.future.try_lock_until(d),
        };
        let Some(mut guard) = guard else {
            // Another waiter holds the future past our deadline.
            return self.done().transpose();
        };
        if let Some(r) = self.done() {
            return r.map(Some);
        }
        let Some(future) = guard.as_mut() else {
            return Err(Error::FutureConsumed);
        };
        match future.wait_until(deadline) {
            Ok(None) => Ok(None),
            Ok(Some(v)) => {
                self.inner.result.complete(Ok(v.clone()));
                *guard = None;
                Ok(Some(v))
            }
            Err(e) => {
                self.inner.result.complete(Err(e));
                *guard = None;
                self.done().transpose()
            }
        }
    }

    /// Blocks until the result is there and returns it (again and again).
    pub fn get(&self) -> Result<T> {
        match self.wait_until(None)? {
            Some(v) => Ok(v),
            None => Err(Error::Closed("future")),
        }
    }

    /// Whether `wait` would return without blocking.
    pub fn is_ready(&self) -> bool {
        if self.inner.result.is_complete() {
            return true;
        }
        match self.inner.future.try_lock() {
            Some(g) => g.as_ref().is_none_or(Future::is_ready),
            None => false,
        }
    }

    fn done(&self) -> Option<Result<T>> {
        if self.inner.result.is_complete() {
            self.inner.result.wait_until(Some(Instant::now()))
        } else {
            None
        }
    }
}

impl<T> std::fmt::Debug for SharedFuture<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedFuture")
    }
}

impl<T> std::fmt::Debug for Future<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_ready() {
            "Future(ready)"
        } else {
            "Future(pending)"
        })
    }
}

/// A waitable `W` of `T` whose result goes through `f`.
struct Mapped<T, W, F> {
    inner: W,
    f: Option<F>,
    _result: std::marker::PhantomData<fn() -> T>,
}

impl<T, W, F> Mapped<T, W, F> {
    fn new(inner: W, f: F) -> Self {
        Mapped {
            inner,
            f: Some(f),
            _result: std::marker::PhantomData,
        }
    }
}

impl<T, U, W: Waitable<T>, F: FnOnce(T) -> U + Send> Waitable<U> for Mapped<T, W, F> {
    fn wait_until(&mut self, deadline: Option<Instant>) -> Option<Result<U>> {
        let r = self.inner.wait_until(deadline)?;
        match self.f.take() {
            Some(f) => Some(r.map(f)),
            None => Some(Err(Error::FutureConsumed)),
        }
    }
    fn is_ready(&self) -> bool {
        self.inner.is_ready()
    }
}

/// A one-shot result shared between the thread completing an operation and its futures.
///
/// The value is `Clone` so one completion can serve many futures (e.g. all events of a batch);
/// errors are shared through [`Error::Shared`].
pub struct Completion<T> {
    slot: Mutex<Option<std::result::Result<T, Arc<Error>>>>,
    cond: Condvar,
}

impl<T: Clone + Send + 'static> Completion<T> {
    /// A new, incomplete completion.
    pub fn new() -> Arc<Self> {
        Arc::new(Completion {
            slot: Mutex::new(None),
            cond: Condvar::new(),
        })
    }

    /// Completes with `result`. Later calls are ignored.
    pub fn complete(&self, result: Result<T>) {
        let mut slot = self.slot.lock();
        if slot.is_none() {
            *slot = Some(result.map_err(Arc::new));
            self.cond.notify_all();
        }
    }

    /// Whether the result is there.
    pub fn is_complete(&self) -> bool {
        self.slot.lock().is_some()
    }

    /// Waits for the result until `deadline`; `None` on timeout.
    pub fn wait_until(&self, deadline: Option<Instant>) -> Option<Result<T>> {
        let mut slot = self.slot.lock();
        loop {
            if let Some(r) = slot.as_ref() {
                return Some(r.clone().map_err(Error::Shared));
            }
            match deadline {
                None => self.cond.wait(&mut slot),
                Some(d) => {
                    if self.cond.wait_until(&mut slot, d).timed_out() && slot.is_none() {
                        return None;
                    }
                }
            }
        }
    }

    /// A future resolving to this completion's value.
    pub fn future(self: &Arc<Self>) -> Future<T> {
        Future::pending(Box::new(CompletionWaiter {
            completion: self.clone(),
        }))
    }

    /// A future resolving to `f(value)`; cheap way to give each event of a batch its own id.
    pub fn future_with<U, F>(self: &Arc<Self>, f: F) -> Future<U>
    where
        U: 'static,
        F: FnOnce(T) -> U + Send + 'static,
    {
        // One allocation per future (a pending `future().map(f)` takes two).
        let waiter = CompletionWaiter {
            completion: self.clone(),
        };
        Future::pending(Box::new(Mapped::new(waiter, f)))
    }
}

struct CompletionWaiter<T> {
    completion: Arc<Completion<T>>,
}

impl<T: Clone + Send + 'static> Waitable<T> for CompletionWaiter<T> {
    fn wait_until(&mut self, deadline: Option<Instant>) -> Option<Result<T>> {
        self.completion.wait_until(deadline)
    }
    fn is_ready(&self) -> bool {
        self.completion.is_complete()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_future_returns_once() {
        let mut f = Future::ready(5);
        assert!(f.is_ready());
        assert_eq!(f.wait(0).expect("ok"), Some(5));
        assert!(matches!(f.wait(0), Err(Error::FutureConsumed)));
    }

    #[test]
    fn pending_future_times_out_then_completes() {
        let c = Completion::<u64>::new();
        let mut f = c.future_with(|base| base + 3);
        assert_eq!(f.wait(10).expect("no error"), None);
        assert!(!f.is_ready());
        let c2 = c.clone();
        let t = std::thread::spawn(move || c2.complete(Ok(10)));
        assert_eq!(f.wait(-1).expect("ok"), Some(13));
        t.join().expect("thread");
    }

    #[test]
    fn all_gives_every_value_in_order_and_fails_with_the_first_error() {
        assert_eq!(
            Future::<u8>::all(Vec::new()).get().expect("empty"),
            Vec::<u8>::new()
        );
        let a = Completion::<u64>::new();
        let b = Completion::<u64>::new();
        let mut f = Future::all(vec![a.future(), Future::ready(9), b.future_with(|v| v * 2)]);
        assert!(!f.is_ready());
        b.complete(Ok(4));
        assert_eq!(
            f.wait(5).expect("no error"),
            None,
            "the first is not there yet"
        );
        a.complete(Ok(1));
        assert!(f.is_ready());
        assert_eq!(f.wait(0).expect("ok"), Some(vec![1, 9, 8]));
        let c = Completion::<u64>::new();
        let failed = Future::all(vec![
            Future::ready(1),
            Future::failed(Error::Closed("second")),
            c.future(),
        ]);
        let e = failed.get().expect_err("the second failed");
        assert!(matches!(e, Error::Closed("second")), "{e:?}");
    }

    #[test]
    fn shared_error_reaches_every_future() {
        let c = Completion::<u64>::new();
        let f1 = c.future();
        let f2 = c.future();
        c.complete(Err(Error::Closed("producer")));
        assert!(f1.get().is_err());
        let e = f2.get().expect_err("err");
        assert!(matches!(e.root(), Error::Closed(_)));
    }

    #[test]
    fn shared_future_is_waited_on_again_and_by_clones() {
        let c = Completion::<u64>::new();
        let f = c.future().shared();
        let g = f.clone();
        assert_eq!(f.wait(5).expect("no error"), None);
        assert!(!g.is_ready());
        let waiter = {
            let g = g.clone();
            std::thread::spawn(move || g.wait(20_000))
        };
        c.complete(Ok(7));
        assert_eq!(waiter.join().expect("thread").expect("ok"), Some(7));
        for _ in 0..3 {
            assert_eq!(f.wait(0).expect("ok"), Some(7));
            assert_eq!(g.get().expect("ok"), 7);
        }
        assert!(f.is_ready());
        let failed = Future::<u64>::failed(Error::Closed("x")).shared();
        for _ in 0..2 {
            let e = failed.wait(0).expect_err("fails every time");
            assert!(matches!(e.root(), Error::Closed("x")), "{e:?}");
        }
    }
}
