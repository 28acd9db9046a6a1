//! [`ThreadPool`]: where producers and consumers run their background work.
//!
//! `ThreadPool::inline()` has zero threads: work runs on the submitting thread, which is the
//! lowest-latency choice for a single-threaded application. `ThreadPool::new(n)` runs work on
//! `n` workers, highest priority first.
//!
//! A job that panics is stopped there and nothing else: the worker survives (the pool keeps
//! its size) and later jobs run. Jobs that complete futures must turn their own panics into
//! errors for those futures (see [`crate::catch_panic`]); the pool only guarantees that a
//! panic never takes a worker, or the submitting thread of an inline pool, down with it.

use std::collections::BinaryHeap;
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex};

/// A unit of work.
pub type Job = Box<dyn FnOnce() + Send + 'static>;

/// What a thread pool implementation provides (drivers may bring their own).
pub trait ThreadPoolBackend: Send + Sync {
    /// Number of worker threads (0 = work runs inline).
    fn size(&self) -> usize;
    /// Submits work; higher `priority` runs first.
    fn push_work(&self, job: Job, priority: u64);
}

/// A shareable handle to a thread pool.
#[derive(Clone)]
pub struct ThreadPool(Arc<dyn ThreadPoolBackend>);

impl ThreadPool {
    /// A pool with no threads: jobs run on the caller's thread.
    pub fn inline() -> Self {
        ThreadPool(Arc::new(InlinePool))
    }

    /// A pool of `threads` workers (0 gives an inline pool).
    pub fn new(threads: usize) -> Self {
        if threads == 0 {
            Self::inline()
        } else {
            ThreadPool(Arc::new(WorkerPool::new(threads)))
        }
    }

    /// Wraps a custom implementation.
    pub fn from_backend(backend: Arc<dyn ThreadPoolBackend>) -> Self {
        ThreadPool(backend)
    }

    /// Number of worker threads.
    pub fn size(&self) -> usize {
        self.0.size()
    }

    /// Submits `job` with `priority`.
    pub fn push_work(&self, job: impl FnOnce() + Send + 'static, priority: u64) {
        self.0.push_work(Box::new(job), priority)
    }
}

impl Default for ThreadPool {
    fn default() -> Self {
        Self::inline()
    }
}

impl std::fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ThreadPool({} threads)", self.size())
    }
}

struct InlinePool;

impl ThreadPoolBackend for InlinePool {
    fn size(&self) -> usize {
        0
    }
    fn push_work(&self, job: Job, _priority: u64) {
        run_job(job)
    }
}

struct Queued {
    priority: u64,
    seq: u64,
    job: Job,
}
impl PartialEq for Queued {
    fn eq(&self, o: &Self) -> bool {
        self.priority == o.priority && self.seq == o.seq
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Queued {
    // Highest priority first, then FIFO (lowest sequence number first).
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.priority
            .cmp(&o.priority)
            .then_with(|| o.seq.cmp(&self.seq))
    }
}

struct Shared {
    queue: Mutex<(BinaryHeap<Queued>, u64, bool)>,
    cond: Condvar,
}

struct WorkerPool {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl WorkerPool {
    fn new(n: usize) -> Self {
        let shared = Arc::new(Shared {
            queue: Mutex::new((BinaryHeap::new(), 0, false)),
            cond: Condvar::new(),
        });
        let threads = (0..n)
            .filter_map(|i| {
                let s = shared.clone();
                std::thread::Builder::new()
                    .name(format!("diaspora-pool-{i}"))
                    .spawn(move || worker_loop(&s))
                    .ok()
            })
            .collect();
        WorkerPool { shared, threads }
    }
}

fn worker_loop(s: &Shared) {
    loop {
        let job = {
            let mut q = s.queue.lock();
            loop {
                if let Some(item) = q.0.pop() {
                    break item.job;
                }
                if q.2 {
                    return;
                }
                s.cond.wait(&mut q);
            }
        };
        run_job(job);
    }
}

/// Runs a job; a panic ends the job, not the thread (the panic hook has already reported it).
fn run_job(job: Job) {
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
}

impl ThreadPoolBackend for WorkerPool {
    fn size(&self) -> usize {
        self.threads.len()
    }
    fn push_work(&self, job: Job, priority: u64) {
        if self.threads.is_empty() {
            // Spawning failed: degrade to inline rather than lose work.
            return run_job(job);
        }
        let mut q = self.shared.queue.lock();
        let seq = q.1;
        q.1 += 1;
        q.0.push(Queued { priority, seq, job });
        drop(q);
        self.shared.cond.notify_one();
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        // Workers drain the queue before exiting, so submitted work is never lost.
        self.shared.queue.lock().2 = true;
        self.shared.cond.notify_all();
        let me = std::thread::current().id();
        for t in self.threads.drain(..) {
            // The last handle may be dropped by a job running on one of our own workers: that
            // worker exits by itself once the queue is drained, joining it would deadlock.
            if t.thread().id() != me {
                let _ = t.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn inline_pool_runs_immediately() {
        let p = ThreadPool::inline();
        let n = Arc::new(AtomicUsize::new(0));
        let n2 = n.clone();
        p.push_work(
            move || {
                n2.fetch_add(1, Ordering::SeqCst);
            },
            0,
        );
        assert_eq!(n.load(Ordering::SeqCst), 1);
        assert_eq!(p.size(), 0);
    }

    #[test]
    fn pool_dropped_from_its_own_worker_does_not_deadlock() {
        let p = ThreadPool::new(1);
        let (tx, rx) = std::sync::mpsc::channel();
        let holder = p.clone();
        drop(p);
        // The job owns the last handle; dropping it happens on the worker itself.
        holder.clone().push_work(
            move || {
                drop(holder);
                let _ = tx.send(());
            },
            0,
        );
        rx.recv_timeout(std::time::Duration::from_secs(5))
            .expect("job ran");
    }

    /// Waits (bounded) until `n` reaches `target`.
    fn reaches(n: &AtomicUsize, target: usize) -> bool {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while n.load(Ordering::SeqCst) < target {
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::yield_now();
        }
        true
    }

    #[test]
    fn panicking_jobs_keep_the_pool_size_and_later_jobs_run() {
        let p = ThreadPool::new(2);
        for i in 0..6 {
            p.push_work(move || panic!("job {i} panics on purpose"), 0);
        }
        assert_eq!(p.size(), 2);
        // Both workers are alive: two jobs that each wait for the other can only finish if
        // they run at the same time on two threads.
        let running = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..2 {
            let (running, tx) = (running.clone(), tx.clone());
            p.push_work(
                move || {
                    running.fetch_add(1, Ordering::SeqCst);
                    let _ = tx.send(reaches(&running, 2));
                },
                0,
            );
        }
        for _ in 0..2 {
            let both = rx
                .recv_timeout(std::time::Duration::from_secs(20))
                .expect("a job after the panics ran");
            assert!(both, "only one worker survived the panicking jobs");
        }
        let n = Arc::new(AtomicUsize::new(0));
        for _ in 0..100 {
            let n = n.clone();
            p.push_work(
                move || {
                    n.fetch_add(1, Ordering::SeqCst);
                },
                0,
            );
        }
        assert!(reaches(&n, 100), "later jobs did not all run");
    }

    #[test]
    fn inline_pool_contains_a_panicking_job() {
        let p = ThreadPool::inline();
        p.push_work(|| panic!("inline job panics on purpose"), 0);
        let n = Arc::new(AtomicUsize::new(0));
        let n2 = n.clone();
        p.push_work(
            move || {
                n2.fetch_add(1, Ordering::SeqCst);
            },
            0,
        );
        assert_eq!(n.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn worker_pool_runs_everything_before_drop_completes() {
        let n = Arc::new(AtomicUsize::new(0));
        {
            let p = ThreadPool::new(3);
            assert_eq!(p.size(), 3);
            for i in 0..1000 {
                let n2 = n.clone();
                p.push_work(
                    move || {
                        n2.fetch_add(1, Ordering::SeqCst);
                    },
                    i % 7,
                );
            }
        }
        assert_eq!(n.load(Ordering::SeqCst), 1000);
    }
}
