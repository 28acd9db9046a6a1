//! The engine's own handler worker, used when `EngineConfig::handler_pool` is inline (the
//! default): a leader/follower pair with the progress thread.
//!
//! While the worker has work or had some within its spin window, it *leads*: it drives
//! progress itself (one `iterate` at a time, under the progress lock) and runs the requests it
//! receives on the same thread, so a request reaches its handler without a thread hand-off,
//! and its answer is posted by the thread that computed it. The progress thread meanwhile
//! *follows*: it naps (at most [`FOLLOWER_NAP`]) on the eventfd only, since the worker reads
//! the CQ, and checks again. Submissions made while the worker leads wake nobody: the
//! worker's next iteration takes them.
//!
//! Before the worker runs a handler it stops leading, so progress never waits for user code:
//! the progress thread takes over within one nap (at once when another thread submits a call
//! or a bulk transfer, whose wake-up ends the nap). Handlers therefore never run while their
//! thread is the one responsible for progress. A handler that waits for an operation of this
//! engine drives progress itself while it waits, as with inline progress, instead of waiting
//! for the progress thread to wake up. When the spin window passes with nothing to do, the
//! worker ends the follower's nap and sleeps on a condition variable, and the progress thread
//! drives alone, with its own wait strategy.
//!
//! On a node with fewer cores than spinning threads (2 cores, a caller and a server per
//! side), this removes one spinning thread per engine and one hand-off per request: shm round
//! trips were about 1.7 times faster here (see the crate README).

use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::Shared;
use crate::net::Net;

/// A handler (or session listener) invocation.
pub(crate) type Job = Box<dyn FnOnce() + Send + 'static>;

/// The longest the progress thread naps while the worker leads: how long progress may wait
/// when the worker starts a handler that submits nothing (a long computation).
pub(crate) const FOLLOWER_NAP: Duration = Duration::from_micros(200);

/// How long a sleeping worker waits before it checks for a stop it missed.
const SLEEP_CHECK: Duration = Duration::from_millis(100);

thread_local! {
    /// On a serving worker: the address of its [`Serve`] (0 elsewhere).
    static ON_WORKER: Cell<usize> = const { Cell::new(0) };
}

struct Queue {
    jobs: VecDeque<Job>,
    sleeping: bool,
    stop: bool,
}

/// The worker's queue and state, shared with the progress thread.
pub(crate) struct Serve {
    queue: Mutex<Queue>,
    cond: Condvar,
    /// The worker drives progress now (or between two of its iterations).
    leading: AtomicBool,
    /// True while `queue.jobs` may hold jobs (set under the lock by `push`, cleared under it
    /// when the last one is taken): the worker's idle passes read this, not the lock.
    queued: AtomicBool,
    /// How long the worker keeps leading after its last piece of work (zero: never leads).
    spin: Duration,
}

impl Serve {
    pub(crate) fn new(spin: Duration) -> Serve {
        Serve {
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                sleeping: false,
                stop: false,
            }),
            cond: Condvar::new(),
            leading: AtomicBool::new(false),
            queued: AtomicBool::new(false),
            spin,
        }
    }

    /// Queues a job; wakes the worker if it sleeps.
    pub(crate) fn push(&self, job: Job) {
        let mut q = self.queue.lock();
        q.jobs.push_back(job);
        self.queued.store(true, Ordering::Release);
        if q.sleeping {
            q.sleeping = false;
            self.cond.notify_one();
        }
    }

    /// True while the worker leads (the progress thread should nap).
    pub(crate) fn leading(&self) -> bool {
        self.leading.load(Ordering::SeqCst)
    }

    /// True on this worker's thread.
    pub(crate) fn is_current(&self) -> bool {
        ON_WORKER.with(Cell::get) == self as *const Serve as usize
    }

    /// True if the worker will drive progress soon after the current job (posts made from a
    /// handler on the worker need not wake the progress thread).
    pub(crate) fn leads_after_jobs(&self) -> bool {
        !self.spin.is_zero() && self.is_current()
    }

    /// Tells the worker to run what is queued and exit.
    pub(crate) fn stop(&self) {
        let mut q = self.queue.lock();
        q.stop = true;
        self.cond.notify_one();
    }

    fn take(&self) -> Option<Job> {
        if !self.queued.load(Ordering::Acquire) {
            return None;
        }
        let mut q = self.queue.lock();
        let job = q.jobs.pop_front();
        if q.jobs.is_empty() {
            self.queued.store(false, Ordering::Release);
        }
        job
    }
}

/// The worker thread's loop.
pub(crate) fn run<N: Net>(shared: Arc<Shared<N>>, serve: Arc<Serve>) {
    ON_WORKER.with(|w| w.set(Arc::as_ptr(&serve) as usize));
    let mut last_work = Instant::now();
    // The latest clock reading (the progress iteration's, while leading: one read per pass).
    let mut now = last_work;
    // Set once the engine stopped driving (shutdown, or a panicked progress thread).
    let mut stopped = false;
    loop {
        if let Some(job) = serve.take() {
            // Follow while user code runs: the progress thread takes over.
            serve.leading.store(false, Ordering::SeqCst);
            // A panic ends the job, not the worker; the job's Responder answers
            // HandlerPanicked while unwinding.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            last_work = Instant::now();
            now = last_work;
            continue;
        }
        if !stopped && now.saturating_duration_since(last_work) < serve.spin {
            serve.leading.store(true, Ordering::SeqCst);
            match lead_once(&shared) {
                Lead::Worked(at) => (last_work, now) = (at, at),
                Lead::Idle(at) => {
                    now = at;
                    // Yield, never a bare spin: the peer (or our caller) may need this core.
                    std::thread::yield_now()
                }
                Lead::Busy => {
                    now = Instant::now();
                    std::thread::yield_now()
                }
                Lead::Stopped => stopped = true,
            }
            continue;
        }
        if serve.leading.swap(false, Ordering::SeqCst) {
            // End the follower's nap now: from here on it drives alone (and blocks on the CQ
            // fd when idle), instead of leaving the endpoint unpolled until the nap ends.
            shared.waker.wake();
        }
        let mut q = serve.queue.lock();
        if q.jobs.is_empty() {
            if q.stop {
                return;
            }
            q.sleeping = true;
            serve.cond.wait_for(&mut q, SLEEP_CHECK);
            q.sleeping = false;
        }
    }
}

/// What one [`lead_once`] did.
enum Lead {
    /// An iteration that did work, and its clock reading.
    Worked(Instant),
    /// An iteration that found nothing, and its clock reading.
    Idle(Instant),
    /// Another thread drives (the progress thread, or an inline caller).
    Busy,
    /// The engine no longer accepts work.
    Stopped,
}

/// One iteration of progress under the lock, if nobody else holds it.
fn lead_once<N: Net>(shared: &Shared<N>) -> Lead {
    let Some(mut core) = shared.core.try_lock() else {
        return Lead::Busy;
    };
    let Some(p) = core.as_mut() else {
        return Lead::Stopped;
    };
    if p.stopping() {
        return Lead::Stopped;
    }
    if p.iterate() {
        Lead::Worked(p.now())
    } else {
        Lead::Idle(p.now())
    }
}
