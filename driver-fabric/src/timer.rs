//! One background thread running delayed jobs (retry back-offs), so that no progress thread
//! and no user thread ever sleeps on behalf of a retry.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::OnceLock;
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

type Job = Box<dyn FnOnce() + Send + 'static>;

struct Entry {
    at: Instant,
    seq: u64,
    job: Job,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

struct Timer {
    heap: Mutex<(BinaryHeap<Reverse<Entry>>, u64)>,
    cond: Condvar,
}

fn timer() -> &'static Timer {
    static TIMER: OnceLock<&'static Timer> = OnceLock::new();
    TIMER.get_or_init(|| {
        let t: &'static Timer = Box::leak(Box::new(Timer {
            heap: Mutex::new((BinaryHeap::new(), 0)),
            cond: Condvar::new(),
        }));
        let spawned = std::thread::Builder::new()
            .name("diaspora-fabric-timer".into())
            .spawn(move || run(t));
        if let Err(e) = spawned {
            // Without the thread, jobs run inline when scheduled (see `after`).
            eprintln!("diaspora-driver-fabric: cannot spawn the timer thread: {e}");
        }
        t
    })
}

fn run(t: &'static Timer) {
    let mut guard = t.heap.lock();
    loop {
        let now = Instant::now();
        match guard.0.peek() {
            Some(Reverse(e)) if e.at <= now => {
                if let Some(Reverse(e)) = guard.0.pop() {
                    drop(guard);
                    // A panicking job must not stop the retries of everyone else.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(e.job));
                    guard = t.heap.lock();
                }
            }
            Some(Reverse(e)) => {
                let at = e.at;
                t.cond.wait_until(&mut guard, at);
            }
            None => t.cond.wait(&mut guard),
        }
    }
}

/// Runs `job` on the timer thread at `at` (at once if `at` has passed).
pub(crate) fn at(at: Instant, job: impl FnOnce() + Send + 'static) {
    let t = timer();
    let mut guard = t.heap.lock();
    guard.1 += 1;
    let seq = guard.1;
    guard.0.push(Reverse(Entry {
        at,
        seq,
        job: Box::new(job),
    }));
    t.cond.notify_one();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn jobs_run_in_deadline_order() {
        let (tx, rx) = mpsc::channel();
        let now = Instant::now();
        for (k, ms) in [(2, 60u64), (0, 0), (1, 30)] {
            let tx = tx.clone();
            at(now + Duration::from_millis(ms), move || {
                let _ = tx.send(k);
            });
        }
        let got: Vec<i32> = (0..3)
            .map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap())
            .collect();
        assert_eq!(got, vec![0, 1, 2]);
        assert!(now.elapsed() >= Duration::from_millis(60));
    }
}
