//! One partition as the server serves it: the ordering of produced batches by producer
//! sequence number, group commits, deduplication, and the fetches waiting for events.
//!
//! # Produce pipeline
//! 1. [`Partition::begin`] (handler thread): a batch already stored is answered `Duplicate`
//!    at once, without reading its data; a resend of a batch still in flight is `Throttled`.
//! 2. The data is read by RDMA (not here), checked, and [`Partition::submit`]ted.
//! 3. One committer at a time (a job on the I/O pool) takes every submitted batch, orders
//!    them by (producer, seq): the next expected seq of each producer is accepted, an older
//!    one is a `Duplicate`, a later one waits while its predecessor is in flight, or for up
//!    to [`REORDER_GRACE`] for a predecessor not yet begun (batches sent back to back can
//!    reach the handlers out of order), and is `OutOfOrder` after that. All accepted batches are written in **one** append (one fsync
//!    with `sync`): the producer state intent first, then the log (see [`crate::seqstate`]).
//! 4. Each batch is answered with its first id; waiting fetches are woken.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diaspora_driver_files::partition::BatchPayload;
use diaspora_proto::{ProtoError, Status};
use parking_lot::{Condvar, Mutex};

use crate::log::Log;
use crate::seqstate::SeqState;
use crate::timer::TimerHandle;

/// How long a batch waits for a predecessor that has not begun yet before it is refused as
/// `OutOfOrder` (the producer then resends it).
pub const REORDER_GRACE: Duration = Duration::from_secs(1);

/// Waiter ids of held batches' deadlines (top bit set: fetch waiters count from 0).
static GRACE_IDS: AtomicU64 = AtomicU64::new(1 << 63);

/// Where committers run and how they schedule a deadline.
#[derive(Clone)]
pub struct CommitCtx {
    /// The I/O pool committers run on.
    pub pool: diaspora_api::ThreadPool,
    /// Deadlines of held batches.
    pub timers: TimerHandle,
}

/// Appends (group commits) done by every partition of this process.
pub static APPENDS: AtomicU64 = AtomicU64::new(0);

/// How a batch is answered: its first id, or why not.
pub type Reply = Box<dyn FnOnce(Result<u64, ProtoError>) + Send>;

/// A job run when a waiting fetch is woken (by new events, completion, expiry or shutdown).
pub type WakeJob = Box<dyn FnOnce() + Send>;

/// A batch whose data is read and checked, ready to be ordered and appended.
pub struct Ready {
    /// Producer id.
    pub producer: u64,
    /// Its sequence number.
    pub seq: u64,
    /// The events.
    pub payload: BatchPayload,
    /// The answer.
    pub reply: Reply,
}

#[derive(Default)]
struct Queue {
    ready: Vec<Ready>,
    inflight: HashSet<(u64, u64)>,
    /// Batches waiting for their turn, with when they were submitted.
    parked: BTreeMap<(u64, u64), (Ready, Instant)>,
    committing: bool,
}

/// One partition.
pub struct Partition {
    /// Its index in the topic.
    pub index: usize,
    /// Its log.
    pub log: Log,
    count: AtomicU64,
    seq: Mutex<SeqState>,
    q: Mutex<Queue>,
    idle: Condvar,
    waiters: Mutex<Vec<(u64, WakeJob)>>,
}

impl Partition {
    /// A partition whose log holds `count` events.
    pub fn new(index: usize, log: Log, seq: SeqState, count: u64) -> Partition {
        Partition {
            index,
            log,
            count: AtomicU64::new(count),
            seq: Mutex::new(seq),
            q: Mutex::new(Queue::default()),
            idle: Condvar::new(),
            waiters: Mutex::new(Vec::new()),
        }
    }

    /// Events stored.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Acquire)
    }

    /// Starts batch `seq` of `producer`: refuses a stored batch (`Duplicate`) or one already
    /// in flight (`Throttled`).
    pub fn begin(&self, producer: u64, seq: u64) -> Result<(), ProtoError> {
        if let Some(st) = self.seq.try_lock() {
            if let Some(p) = st.get(producer) {
                if seq <= p.last_seq {
                    return Err(duplicate(p.last_seq, p.last_first, p.prev_first, seq));
                }
            }
        }
        let mut q = self.q.lock();
        if !q.inflight.insert((producer, seq)) {
            return Err(ProtoError::with_detail(
                Status::Throttled,
                10,
                format!("batch {seq} of producer {producer:x} is already being stored"),
            ));
        }
        Ok(())
    }

    /// Abandons a begun batch (its data could not be read or checked).
    pub fn abort(self: &Arc<Self>, producer: u64, seq: u64, ctx: &CommitCtx) {
        let mut q = self.q.lock();
        q.inflight.remove(&(producer, seq));
        // Successors waiting for it must now be answered.
        if !q.parked.is_empty() && !q.committing {
            q.committing = true;
            drop(q);
            self.start_committer(ctx);
        }
    }

    fn start_committer(self: &Arc<Self>, ctx: &CommitCtx) {
        let me = self.clone();
        let c = ctx.clone();
        ctx.pool.push_work(move || me.commit_loop(&c), 0);
    }

    /// Starts a committer if none runs (a held batch's deadline passed).
    fn kick(self: &Arc<Self>, ctx: &CommitCtx) {
        let mut q = self.q.lock();
        if !q.committing {
            q.committing = true;
            drop(q);
            self.start_committer(ctx);
        }
    }

    /// Queues a checked batch; starts a committer on `pool` if none runs.
    pub fn submit(self: &Arc<Self>, ready: Ready, ctx: &CommitCtx) {
        let mut q = self.q.lock();
        q.ready.push(ready);
        if !q.committing {
            q.committing = true;
            drop(q);
            self.start_committer(ctx);
        }
    }

    /// Waits (at most 10 s) until no batch is being committed.
    pub fn drain_commits(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut q = self.q.lock();
        while q.committing || !q.ready.is_empty() {
            if self.idle.wait_until(&mut q, deadline).timed_out() {
                break;
            }
        }
    }

    /// Whether batches are queued, parked or in flight.
    pub fn busy(&self) -> bool {
        let q = self.q.lock();
        q.committing || !q.ready.is_empty() || !q.inflight.is_empty()
    }

    fn commit_loop(self: &Arc<Self>, ctx: &CommitCtx) {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.commit_rounds()));
        if let Ok(Some(at)) = r {
            // A batch is held for a predecessor: look again when its grace ends (or earlier,
            // when anything wakes the partition's waiters).
            let id = GRACE_IDS.fetch_add(1, Ordering::Relaxed);
            let me = self.clone();
            let c = ctx.clone();
            self.waiters
                .lock()
                .push((id, Box::new(move || me.kick(&c))));
            ctx.timers.add(at, id, self.clone());
        }
        if r.is_err() {
            // The replies of the batches being committed were dropped by the unwinding: their
            // callers got HandlerPanicked. Let the next batch start a new committer.
            crate::say!(
                "diaspora-server: the committer of partition {} panicked",
                self.index
            );
            let mut q = self.q.lock();
            q.committing = false;
            self.idle.notify_all();
        }
    }

    /// Commits until nothing is left to do; returns when the grace of the earliest batch
    /// still held for a predecessor ends.
    fn commit_rounds(&self) -> Option<Instant> {
        loop {
            let now = Instant::now();
            let mut held: Option<Instant> = None;
            let mut seq = self.seq.lock();
            let mut q = self.q.lock();
            let fresh = std::mem::take(&mut q.ready);
            let had_fresh = !fresh.is_empty();
            for it in fresh {
                q.parked.insert((it.producer, it.seq), (it, now));
            }
            let mut accepted: Vec<Ready> = Vec::new();
            let mut refused: Vec<(Reply, ProtoError)> = Vec::new();
            let mut expected: HashMap<u64, u64> = HashMap::new();
            let keys: Vec<(u64, u64)> = q.parked.keys().copied().collect();
            for (p, s) in keys {
                let exp = *expected.entry(p).or_insert_with(|| seq.expected(p));
                if s > exp && q.inflight.contains(&(p, exp)) {
                    continue; // its predecessor is still being read: wait for it
                }
                if s > exp {
                    if let Some((_, since)) = q.parked.get(&(p, s)) {
                        let until = *since + REORDER_GRACE;
                        if now < until {
                            // Its predecessor has not begun yet: give it time to arrive.
                            held = Some(held.map_or(until, |h| h.min(until)));
                            continue;
                        }
                    }
                }
                let Some((it, _)) = q.parked.remove(&(p, s)) else {
                    continue;
                };
                q.inflight.remove(&(p, s));
                if s == exp {
                    expected.insert(p, s + 1);
                    accepted.push(it);
                } else if s < exp {
                    let e = match seq.get(p) {
                        Some(st) => duplicate(st.last_seq, st.last_first, st.prev_first, s),
                        None => duplicate(u64::MAX, u64::MAX, u64::MAX, s),
                    };
                    refused.push((it.reply, e));
                } else {
                    let e = ProtoError::with_detail(
                        Status::OutOfOrder,
                        exp,
                        format!(
                            "batch {s} of producer {p:x} arrived, but batch {exp} is expected next"
                        ),
                    );
                    refused.push((it.reply, e));
                }
            }
            if !had_fresh && accepted.is_empty() && refused.is_empty() {
                q.committing = false;
                self.idle.notify_all();
                return held;
            }
            drop(q);
            let mut replies: Vec<(Reply, Result<u64, ProtoError>)> =
                refused.into_iter().map(|(r, e)| (r, Err(e))).collect();
            if !accepted.is_empty() {
                self.append_group(&mut seq, accepted, &mut replies);
            }
            drop(seq);
            for (reply, result) in replies {
                reply(result);
            }
            self.wake_all();
        }
    }

    fn append_group(
        &self,
        seq: &mut SeqState,
        accepted: Vec<Ready>,
        replies: &mut Vec<(Reply, Result<u64, ProtoError>)>,
    ) {
        let base = self.count();
        let snapshot = seq.snapshot();
        let mut group = BatchPayload::default();
        let mut offsets = Vec::with_capacity(accepted.len());
        for it in &accepted {
            offsets.push(group.len() as u64);
            seq.record(
                it.producer,
                it.seq,
                base + group.len() as u64,
                it.payload.len() as u32,
            );
            let p = &it.payload;
            group.meta.extend_from_slice(&p.meta);
            group.meta_lens.extend_from_slice(&p.meta_lens);
            group.data.extend(p.data.iter().cloned());
            group.crcs.extend_from_slice(&p.crcs);
        }
        let total = group.len() as u64;
        APPENDS.fetch_add(1, Ordering::Relaxed);
        let result = seq
            .persist()
            .map_err(|e| ProtoError::new(Status::Storage, e.to_string()))
            .and_then(|()| {
                self.log.append(&group).map_err(|e| match e {
                    // The topic was completed while these batches were in flight.
                    diaspora_driver_files::FilesError::Sealed { .. } => {
                        ProtoError::new(Status::Complete, format!("the topic is complete: {e}"))
                    }
                    e => ProtoError::new(Status::Storage, e.to_string()),
                })
            });
        let result = match result {
            Ok(first) if first != base => {
                // Someone else appended to the log: record the real ids.
                seq.restore(snapshot.clone());
                for (it, off) in accepted.iter().zip(&offsets) {
                    seq.record(it.producer, it.seq, first + off, it.payload.len() as u32);
                }
                seq.persist()
                    .map(|()| first)
                    .map_err(|e| ProtoError::new(Status::Storage, e.to_string()))
            }
            other => other,
        };
        match result {
            Ok(first) => {
                self.count.store(first + total, Ordering::Release);
                for (it, off) in accepted.into_iter().zip(offsets) {
                    replies.push((it.reply, Ok(first + off)));
                }
            }
            Err(e) => {
                seq.restore(snapshot);
                for it in accepted {
                    replies.push((it.reply, Err(e.clone())));
                }
            }
        }
    }

    /// Runs `job` now if the partition holds more than `from` events (returns it), else
    /// parks it under `id` until new events arrive or [`take_waiter`](Self::take_waiter).
    pub fn wait_for(&self, from: u64, id: u64, job: WakeJob) -> Option<WakeJob> {
        let mut w = self.waiters.lock();
        if self.count() > from {
            return Some(job);
        }
        w.push((id, job));
        None
    }

    /// Removes the waiter `id` (its deadline passed), if still parked.
    pub fn take_waiter(&self, id: u64) -> Option<WakeJob> {
        let mut w = self.waiters.lock();
        let i = w.iter().position(|(i, _)| *i == id)?;
        Some(w.swap_remove(i).1)
    }

    /// Runs every parked waiter.
    pub fn wake_all(&self) {
        let jobs: Vec<_> = std::mem::take(&mut *self.waiters.lock());
        for (_, job) in jobs {
            job();
        }
    }
}

fn duplicate(last_seq: u64, last_first: u64, prev_first: u64, seq: u64) -> ProtoError {
    let first = if seq == last_seq {
        last_first
    } else if seq.checked_add(1) == Some(last_seq) {
        prev_first
    } else {
        u64::MAX
    };
    ProtoError::with_detail(
        Status::Duplicate,
        first,
        format!("batch {seq} is already stored (first id {first}, u64::MAX: unknown)"),
    )
}
