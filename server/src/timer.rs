//! Deadlines of long-polling fetches, and of batches held for a late predecessor: one thread
//! that runs each parked job of a partition when its time comes (unless it ran earlier).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::partition::Partition;

/// The deadline thread.
pub struct Timers {
    inner: Arc<Inner>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

struct Inner {
    due: Mutex<BTreeMap<(Instant, u64), Arc<Partition>>>,
    cv: Condvar,
    stop: AtomicBool,
}

impl Timers {
    /// Starts the thread.
    pub fn start() -> std::io::Result<Timers> {
        let inner = Arc::new(Inner {
            due: Mutex::new(BTreeMap::new()),
            cv: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let i = inner.clone();
        let thread = std::thread::Builder::new()
            .name("diaspora-timers".into())
            .spawn(move || run(&i))?;
        Ok(Timers {
            inner,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Runs `partition`'s waiter `id` at `at` if it is still parked then.
    pub fn add(&self, at: Instant, id: u64, partition: Arc<Partition>) {
        self.handle().add(at, id, partition);
    }

    /// A handle that adds deadlines (for the partitions' committers).
    pub fn handle(&self) -> TimerHandle {
        TimerHandle(self.inner.clone())
    }

    /// Stops the thread, running every pending waiter now.
    pub fn stop(&self) {
        self.inner.stop.store(true, Ordering::Release);
        self.inner.cv.notify_one();
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

/// Adds deadlines to a [`Timers`] thread (after it stopped, they never fire).
#[derive(Clone)]
pub struct TimerHandle(Arc<Inner>);

impl TimerHandle {
    /// Runs `partition`'s waiter `id` at `at` if it is still parked then.
    pub fn add(&self, at: Instant, id: u64, partition: Arc<Partition>) {
        self.0.due.lock().insert((at, id), partition);
        self.0.cv.notify_one();
    }
}

impl Drop for Timers {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(inner: &Inner) {
    let mut due = inner.due.lock();
    loop {
        let stopping = inner.stop.load(Ordering::Acquire);
        let now = Instant::now();
        let mut fire = Vec::new();
        while let Some(entry) = due.first_entry() {
            if entry.key().0 > now && !stopping {
                break;
            }
            let ((_, id), p) = entry.remove_entry();
            fire.push((id, p));
        }
        if !fire.is_empty() {
            drop(due);
            for (id, p) in fire {
                if let Some(job) = p.take_waiter(id) {
                    job();
                }
            }
            due = inner.due.lock();
            continue;
        }
        if stopping {
            return;
        }
        let wait = due
            .first_key_value()
            .map(|((at, _), _)| at.saturating_duration_since(now))
            .unwrap_or(Duration::from_millis(500))
            .min(Duration::from_millis(500));
        inner.cv.wait_for(&mut due, wait);
    }
}
