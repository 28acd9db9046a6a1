//! [`ThreadPool`]: where producers and consumers run their background work.
//!
//! `ThreadPool::inline()` has zero threads: work runs on the submitting thread, which is the
//! lowest-latency choice for a single-threaded application. `ThreadPool::new(n)` runs work on
//! `n` workers, highest priority first. `ThreadPool::spinning(n, spin)` keeps a worker polling
//! its queue for `spin` after its last job before it sleeps, so work submitted at a steady pace
//! (one request per round trip) is picked up without waking a sleeping thread.
//!
//! A job that panics is stopped there and nothing else: the worker survives (the pool keeps
//! its size) and later jobs run. Jobs that complete futures must turn their own panics into
//! errors for those futures (see [`crate::catch_panic`]); the pool only guarantees that a
//! panic never takes a worker, or the submitting thread of an inline pool, down with it.

use std::collections::BinaryHeap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard};

/// A unit of work.
pub type Job = Box<dyn FnOnce() + Send + 'static>;

/// What a thread pool implementation provides (drivers may bring their own).
pub trait ThreadPoolBackend: Send + Sync {
    /// Number of worker threads (0 = work runs inline).
    fn size(&self) -> usize;
    /// Submits work; higher `priority` runs first.
    fn push_work(&self, job: Job, priority: u64);
    /// Jobs submitted and not finished yet (queued or running); upstream's `ThreadPool::size()`.
    /// The default, for pools that do not count, is 0.
    fn pending_tasks(&self) -> usize {
        0
    }
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
            ThreadPool(Arc::new(WorkerPool::new(threads, Duration::ZERO)))
        }
    }

    /// A pool of `threads` workers that keep polling their queue (yielding the core between
    /// polls) for `spin` after their last job before they sleep. A job submitted meanwhile
    /// starts without a thread wake-up (a futex wake and a context switch, tens of
    /// microseconds on a virtual machine); an idle pool costs no CPU once `spin` has passed.
    /// For latency-bound request handlers; `spin` of zero is [`ThreadPool::new`].
    pub fn spinning(threads: usize, spin: Duration) -> Self {
        if threads == 0 {
            Self::inline()
        } else {
            ThreadPool(Arc::new(WorkerPool::new(threads, spin)))
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

    /// Jobs submitted and not finished yet, queued or running (what upstream's
    /// `ThreadPool::size()` counts; this crate's [`ThreadPool::size`] is the thread count).
    /// Always 0 for an inline pool, whose jobs finish before `push_work` returns.
    pub fn pending_tasks(&self) -> usize {
        self.0.pending_tasks()
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
    /// Jobs taken by a worker and not finished.
    running: std::sync::atomic::AtomicUsize,
    /// How long an idle worker polls before it sleeps.
    spin: Duration,
}

struct WorkerPool {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl WorkerPool {
    fn new(n: usize, spin: Duration) -> Self {
        let shared = Arc::new(Shared {
            queue: Mutex::new((BinaryHeap::new(), 0, false)),
            cond: Condvar::new(),
            running: std::sync::atomic::AtomicUsize::new(0),
            spin,
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
            // When this worker found its queue empty (the start of its spin).
            let mut idle_since: Option<Instant> = None;
            loop {
                if let Some(item) = q.0.pop() {
                    // Counted under the queue lock: a job is always queued or running.
                    s.running.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    break item.job;
                }
                if q.2 {
                    return;
                }
                if !s.spin.is_zero()
                    && idle_since.get_or_insert_with(Instant::now).elapsed() < s.spin
                {
                    // Yield, never a bare spin: on an oversubscribed node the thread that
                    // produces our next job may need this core.
                    MutexGuard::unlocked(&mut q, std::thread::yield_now);
                    continue;
                }
                s.cond.wait(&mut q);
            }
        };
        run_job(job);
        s.running.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
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
    fn pending_tasks(&self) -> usize {
        let q = self.shared.queue.lock();
        q.0.len()
            + self
                .shared
                .running
                .load(std::sync::atomic::Ordering::SeqCst)
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

    /// The fields of a /proc `stat` file after the command name: the state first, then
    /// ppid, ... (utime and stime at 11 and 12).
    fn stat_fields(path: &str) -> Vec<String> {
        let stat = std::fs::read_to_string(path).expect("stat");
        let rest = &stat[stat.rfind(')').expect("comm") + 2..];
        rest.split_whitespace().map(str::to_owned).collect()
    }

    /// CPU time of the calling thread, in clock ticks (utime + stime of /proc/thread-self/stat).
    fn thread_cpu_ticks() -> u64 {
        let f = stat_fields("/proc/thread-self/stat");
        f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")
    }

    #[test]
    fn a_custom_backend_receives_the_work() {
        struct Counting(AtomicUsize);
        impl ThreadPoolBackend for Counting {
            fn size(&self) -> usize {
                7
            }
            fn push_work(&self, job: Job, _priority: u64) {
                self.0.fetch_add(1, Ordering::SeqCst);
                job();
            }
        }
        let backend = Arc::new(Counting(AtomicUsize::new(0)));
        let p = ThreadPool::from_backend(backend.clone());
        assert_eq!(p.size(), 7);
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        p.push_work(
            move || {
                r.fetch_add(1, Ordering::SeqCst);
            },
            3,
        );
        assert_eq!(backend.0.load(Ordering::SeqCst), 1);
        assert_eq!(ran.load(Ordering::SeqCst), 1);
    }

    /// The scheduler state of thread `tid` of this process (`R` running or runnable, `S`
    /// sleeping, ...), from /proc/self/task/<tid>/stat.
    fn thread_state(tid: &str) -> char {
        let f = stat_fields(&format!("/proc/self/task/{tid}/stat"));
        f[0].chars().next().expect("state")
    }

    #[test]
    fn a_spinning_worker_keeps_polling_after_a_job_and_a_plain_one_sleeps() {
        for (pool, spins) in [
            (
                ThreadPool::spinning(1, std::time::Duration::from_secs(30)),
                true,
            ),
            (ThreadPool::new(1), false),
        ] {
            let (tx, rx) = std::sync::mpsc::channel();
            pool.push_work(
                move || {
                    let me = std::fs::read_link("/proc/thread-self").expect("thread-self");
                    let tid = me.file_name().expect("tid").to_string_lossy().into_owned();
                    tx.send(tid).expect("send");
                },
                0,
            );
            let tid = rx
                .recv_timeout(std::time::Duration::from_secs(10))
                .expect("job ran");
            std::thread::sleep(std::time::Duration::from_millis(50));
            // A polling worker is runnable (R) nearly always; a sleeping one never is.
            let running = (0..200)
                .filter(|_| {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                    thread_state(&tid) == 'R'
                })
                .count();
            if spins {
                assert!(running > 0, "the spinning worker slept at once");
            } else {
                assert_eq!(running, 0, "a plain worker polled its queue");
            }
        }
    }

    #[test]
    fn a_spinning_worker_picks_up_jobs_and_sleeps_once_its_spin_has_passed() {
        let p = ThreadPool::spinning(1, std::time::Duration::from_millis(20));
        assert_eq!(p.size(), 1);
        let (tx, rx) = std::sync::mpsc::channel();
        let ticks = move |p: &ThreadPool| {
            let tx = tx.clone();
            p.push_work(move || tx.send(thread_cpu_ticks()).expect("send"), 0);
        };
        let wait = std::time::Duration::from_secs(10);
        // Back-to-back jobs inside the spin window all run.
        for _ in 0..100 {
            ticks(&p);
            rx.recv_timeout(wait).expect("job ran");
        }
        ticks(&p);
        let before = rx.recv_timeout(wait).expect("job ran");
        // 500 ms idle: a worker that kept polling would burn most of it (50 ticks at 100 Hz).
        std::thread::sleep(std::time::Duration::from_millis(500));
        ticks(&p);
        let after = rx
            .recv_timeout(wait)
            .expect("a sleeping worker is woken by new work");
        assert!(
            after - before <= 10,
            "the idle worker used {} ticks of CPU in 500 ms: it did not stop spinning",
            after - before
        );
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

    /// Occupies `p`'s worker with a job that waits (bounded) for the returned sender.
    fn block_the_worker(p: &ThreadPool) -> std::sync::mpsc::Sender<()> {
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        p.push_work(
            move || {
                let _ = started_tx.send(());
                let _ = go_rx.recv_timeout(std::time::Duration::from_secs(20));
            },
            0,
        );
        started_rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("blocker started");
        go_tx
    }

    #[test]
    fn pending_tasks_counts_queued_and_running_jobs() {
        let p = ThreadPool::new(1);
        assert_eq!(p.pending_tasks(), 0);
        let go_tx = block_the_worker(&p);
        p.push_work(|| {}, 0);
        p.push_work(|| {}, 0);
        assert_eq!(p.pending_tasks(), 3, "one running, two queued");
        go_tx.send(()).expect("release");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while p.pending_tasks() > 0 {
            assert!(std::time::Instant::now() < deadline, "jobs never finished");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(ThreadPool::inline().pending_tasks(), 0);
    }

    #[test]
    fn queued_jobs_run_highest_priority_first_then_in_submission_order() {
        let p = ThreadPool::new(1);
        let go_tx = block_the_worker(&p);
        // Queued behind the blocker: (label, priority).
        let order = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let jobs = [
            ("a", 1),
            ("b", 5),
            ("c", 1),
            ("d", 9),
            ("e", 5),
            ("f", 1),
            ("g", 0),
            ("h", 9),
        ];
        for (label, priority) in jobs {
            let order = order.clone();
            p.push_work(move || order.lock().push(label), priority);
        }
        go_tx.send(()).expect("release");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while order.lock().len() < jobs.len() {
            assert!(std::time::Instant::now() < deadline, "jobs never ran");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(
            *order.lock(),
            ["d", "h", "b", "e", "a", "c", "f", "g"],
            "highest priority first, FIFO among equals"
        );
    }

    #[test]
    fn queued_equality_matches_the_ordering() {
        let q = |priority, seq| Queued {
            priority,
            seq,
            job: Box::new(|| {}),
        };
        assert!(q(3, 7) == q(3, 7));
        assert!(q(3, 7) != q(3, 8));
        assert!(q(3, 7) != q(4, 7));
        assert!(q(3, 7) != q(4, 8));
        assert_eq!(
            q(3, 7).partial_cmp(&q(3, 7)),
            Some(std::cmp::Ordering::Equal)
        );
        assert_eq!(
            q(4, 7).partial_cmp(&q(3, 7)),
            Some(std::cmp::Ordering::Greater)
        );
        assert_eq!(
            q(3, 7).partial_cmp(&q(3, 6)),
            Some(std::cmp::Ordering::Less)
        );
    }

    #[test]
    fn debug_names_the_thread_count() {
        assert_eq!(format!("{:?}", ThreadPool::new(2)), "ThreadPool(2 threads)");
        assert_eq!(
            format!("{:?}", ThreadPool::inline()),
            "ThreadPool(0 threads)"
        );
    }
}
