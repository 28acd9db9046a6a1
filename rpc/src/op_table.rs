//! The sans-IO table of in-flight operations.
//!
//! An operation has three independent parts, tracked separately because they end at different
//! times:
//!
//! - its **sink** `S` (where the outcome goes: a future, a callback). It leaves the table once,
//!   at the first of: response, last transport completion, deadline, cancellation, shutdown;
//! - its **buffers** `B` (registered memory the transport may still touch). They leave the
//!   table only when the transport has reported *every* posted operation done (success or
//!   error), or in [`OpTable::close`], which the caller runs only after the endpoint is closed.
//!   A timed-out read therefore keeps its destination buffer owned here until its completion
//!   arrives: a late completion can never write into memory that was freed or reused;
//! - its **deadline**: time is passed in by the caller (`now`); there is no clock inside.
//!
//! Operations either complete **on response** (a call: the buffers are the request frame, the
//! outcome is the peer's RESP/ERR) or **on transport** (a bulk RMA read/write: the outcome is
//! the last completion, and the buffers go back to the caller with it).
//!
//! Request ids grow from 1 and are never reused, so a response for an id below the next one
//! that is no longer pending is recognised as *late* (after a timeout or cancellation) and
//! dropped, while an id never issued is *unknown* (a confused or hostile peer).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rustc_hash::FxHashMap;
use std::time::Instant;

/// When an operation's outcome is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completes {
    /// When the peer's response arrives (request/response calls).
    OnResponse,
    /// When the last posted transport operation completes (bulk reads and writes).
    OnTransport,
}

/// What a response did to the table.
#[derive(Debug, PartialEq, Eq)]
pub enum Response<S> {
    /// The operation was waiting: deliver the response to this sink.
    Deliver(S),
    /// The id was issued but its outcome was already decided (timeout, cancel): drop it.
    Late,
    /// The id was never issued, or names an operation that expects no response.
    Unknown,
}

/// What a transport completion did to the table.
#[derive(Debug, PartialEq, Eq)]
pub enum Transport<S, B, E> {
    /// Other posted operations of this op are still outstanding.
    Pending,
    /// The transport is done with the buffers: they leave the table.
    Done {
        /// The buffers, now safe to reuse or free.
        buffers: B,
        /// The sink when the outcome is decided now (an `OnTransport` op that had not timed
        /// out, or an `OnResponse` op whose send failed). `None` when the outcome was already
        /// delivered, or when an `OnResponse` op still waits for its response.
        sink: Option<S>,
        /// The first transport error of the op, if any.
        error: Option<E>,
    },
    /// No op with outstanding transport work has this id (a duplicate completion).
    Unknown,
}

struct Entry<S, B, E> {
    completes: Completes,
    sink: Option<S>,
    buffers: Option<B>,
    outstanding: u32,
    error: Option<E>,
    deadline: Option<Instant>,
}

impl<S, B, E> Entry<S, B, E> {
    fn finished(&self) -> bool {
        self.sink.is_none() && self.outstanding == 0
    }

    /// True if the timer `(deadline, _)` of this entry is live: its outcome is not decided
    /// and `deadline` is its deadline.
    fn armed_at(&self, deadline: Instant) -> bool {
        self.sink.is_some() && self.deadline == Some(deadline)
    }
}

/// Stale timers tolerated beyond the number of ops before the heap is compacted.
const TIMER_SLACK: usize = 64;

/// In-flight operations keyed by request id. `S` is the outcome sink, `B` the buffers the
/// transport may touch, `E` a transport error.
pub struct OpTable<S, B, E> {
    next_id: u64,
    /// Keyed by our own ids (sequential, never chosen by a peer), so a fast unkeyed hash
    /// (Fx) is safe here; SipHash was a few per cent of a small round trip.
    ops: FxHashMap<u64, Entry<S, B, E>>,
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
}

impl<S, B, E> Default for OpTable<S, B, E> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S, B, E> OpTable<S, B, E> {
    /// An empty table; the first id is 1.
    pub fn new() -> Self {
        OpTable {
            next_id: 1,
            ops: FxHashMap::default(),
            timers: BinaryHeap::new(),
        }
    }

    /// Registers an operation that will post `outstanding` transport operations, and returns
    /// its request id. The buffers stay in the table until all of them complete.
    pub fn insert(
        &mut self,
        completes: Completes,
        deadline: Option<Instant>,
        outstanding: u32,
        sink: S,
        buffers: B,
    ) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        if let Some(d) = deadline {
            self.push_timer(d, id);
        }
        let entry = Entry {
            completes,
            sink: Some(sink),
            buffers: Some(buffers),
            outstanding,
            error: None,
            deadline,
        };
        self.ops.insert(id, entry);
        id
    }

    /// Registers an operation under an id chosen by the caller (ids handed out by another
    /// counter, for example by submitting threads). Returns false, and inserts nothing, when
    /// `id` is 0 or already in the table.
    pub fn insert_at(
        &mut self,
        id: u64,
        completes: Completes,
        deadline: Option<Instant>,
        outstanding: u32,
        sink: S,
        buffers: B,
    ) -> bool {
        if id == 0 || self.ops.contains_key(&id) {
            return false;
        }
        self.next_id = self.next_id.max(id.saturating_add(1));
        if let Some(d) = deadline {
            self.push_timer(d, id);
        }
        let entry = Entry {
            completes,
            sink: Some(sink),
            buffers: Some(buffers),
            outstanding,
            error: None,
            deadline,
        };
        self.ops.insert(id, entry);
        true
    }

    /// The buffers of `id`, while the table owns them (to post more transport work on them).
    pub fn buffers_mut(&mut self, id: u64) -> Option<&mut B> {
        self.ops.get_mut(&id)?.buffers.as_mut()
    }

    /// The id the next [`insert`](Self::insert) will return.
    pub fn peek_next_id(&self) -> u64 {
        self.next_id
    }

    /// A response (RESP or ERR) for `id` arrived.
    pub fn on_response(&mut self, id: u64) -> Response<S> {
        let Some(entry) = self.ops.get_mut(&id) else {
            return if id != 0 && id < self.next_id {
                Response::Late
            } else {
                Response::Unknown
            };
        };
        if entry.completes != Completes::OnResponse {
            return Response::Unknown;
        }
        match entry.sink.take() {
            Some(sink) => {
                self.remove_if_finished(id);
                Response::Deliver(sink)
            }
            None => Response::Late,
        }
    }

    /// The transport completed one posted operation of `id` (with `Err` on failure).
    pub fn on_transport(&mut self, id: u64, result: Result<(), E>) -> Transport<S, B, E> {
        let Some(entry) = self.ops.get_mut(&id) else {
            return Transport::Unknown;
        };
        if entry.outstanding == 0 {
            return Transport::Unknown;
        }
        entry.outstanding -= 1;
        if let Err(e) = result {
            entry.error.get_or_insert(e);
        }
        if entry.outstanding > 0 {
            return Transport::Pending;
        }
        let error = entry.error.take();
        let sink = match entry.completes {
            Completes::OnTransport => entry.sink.take(),
            // A failed send gets no response: its outcome is decided now.
            Completes::OnResponse if error.is_some() => entry.sink.take(),
            Completes::OnResponse => None,
        };
        let buffers = entry.buffers.take();
        self.remove_if_finished(id);
        match buffers {
            Some(buffers) => Transport::Done {
                buffers,
                sink,
                error,
            },
            None => Transport::Unknown,
        }
    }

    /// Cancels `id`: returns its sink if its outcome was not decided yet. Its buffers stay
    /// until the transport completes.
    pub fn cancel(&mut self, id: u64) -> Option<S> {
        let sink = self.ops.get_mut(&id)?.sink.take();
        self.remove_if_finished(id);
        sink
    }

    /// Moves the sinks of every operation whose deadline is at or before `now` into `expired`
    /// (with their ids). Their buffers stay until the transport completes.
    pub fn expire(&mut self, now: Instant, expired: &mut Vec<(u64, S)>) {
        while let Some(Reverse((d, id))) = self.timers.peek().copied() {
            if d > now {
                break;
            }
            self.timers.pop();
            let Some(entry) = self.ops.get_mut(&id) else {
                continue;
            };
            if entry.deadline != Some(d) {
                continue;
            }
            if let Some(sink) = entry.sink.take() {
                expired.push((id, sink));
            }
            self.remove_if_finished(id);
        }
    }

    /// The earliest deadline of an operation whose outcome is still pending.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(Reverse((d, id))) = self.timers.peek().copied() {
            match self.ops.get(&id) {
                Some(e) if e.armed_at(d) => return Some(d),
                _ => {
                    self.timers.pop();
                }
            }
        }
        None
    }

    /// Takes every pending sink (to fail it with a shutdown error). Buffers stay until the
    /// transport completes or [`close`](Self::close).
    pub fn shutdown(&mut self) -> Vec<(u64, S)> {
        let mut out = Vec::new();
        let mut ids: Vec<u64> = self.ops.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            if let Some(sink) = self.ops.get_mut(&id).and_then(|e| e.sink.take()) {
                out.push((id, sink));
            }
            self.remove_if_finished(id);
        }
        self.timers.clear();
        out
    }

    /// Empties the table, returning every sink still pending and every buffer still owned.
    ///
    /// Call this only once the endpoint is closed: only then is the transport guaranteed to
    /// no longer touch the buffers.
    pub fn close(&mut self) -> (Vec<S>, Vec<B>) {
        let mut sinks = Vec::new();
        let mut bufs = Vec::new();
        for (_, mut e) in self.ops.drain() {
            sinks.extend(e.sink.take());
            bufs.extend(e.buffers.take());
        }
        self.timers.clear();
        (sinks, bufs)
    }

    /// Operations in the table (pending outcome or buffers still owned).
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// True when nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Operations whose outcome is still pending.
    pub fn pending(&self) -> usize {
        self.ops.values().filter(|e| e.sink.is_some()).count()
    }

    /// Every buffer the table still owns (the transport may still touch them).
    pub fn buffers(&self) -> impl Iterator<Item = &B> {
        self.ops.values().filter_map(|e| e.buffers.as_ref())
    }

    /// True while the table still owns `id`'s buffers.
    pub fn owns_buffers(&self, id: u64) -> bool {
        self.ops.get(&id).is_some_and(|e| e.buffers.is_some())
    }

    /// Arms a deadline. Timers of ops that ended are not removed when they end (a heap has no
    /// cheap removal); they are skipped when they come due. Left alone, they piled up: in 3 s
    /// of `diaspora-fabric-bench` round trips (30 s timeouts, 300,000 calls a second) the
    /// heap reached 524,288 timers, nearly all of finished calls, and it can hold up to a
    /// timeout's worth of calls (24 bytes each). So when stale timers outnumber
    /// the ops in the table (plus [`TIMER_SLACK`]), the heap keeps only the live ones: at most
    /// `2 * len + TIMER_SLACK` timers, at an amortised O(1) cost per op.
    fn push_timer(&mut self, deadline: Instant, id: u64) {
        if self.timers.len() >= 2 * self.ops.len() + TIMER_SLACK {
            let ops = &self.ops;
            self.timers
                .retain(|Reverse((d, id))| ops.get(id).is_some_and(|e| e.armed_at(*d)));
        }
        self.timers.push(Reverse((deadline, id)));
    }

    /// Timers held, live or stale (for tests).
    #[cfg(test)]
    fn timers_held(&self) -> usize {
        self.timers.len()
    }

    fn remove_if_finished(&mut self, id: u64) {
        if self.ops.get(&id).is_some_and(Entry::finished) {
            self.ops.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    type Table = OpTable<&'static str, Vec<u8>, &'static str>;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn call_delivers_its_response_and_frees_the_send_buffer_on_send_completion() {
        let t0 = Instant::now();
        let mut t = Table::new();
        let id = t.insert(Completes::OnResponse, Some(t0 + ms(10)), 1, "call", vec![1]);
        assert_eq!(id, 1);
        let done = t.on_transport(id, Ok(()));
        assert_eq!(
            done,
            Transport::Done {
                buffers: vec![1],
                sink: None,
                error: None
            }
        );
        assert_eq!(t.pending(), 1);
        assert_eq!(t.on_response(id), Response::Deliver("call"));
        assert!(t.is_empty());
        assert_eq!(t.on_response(id), Response::Late);
    }

    #[test]
    fn response_before_send_completion_keeps_the_buffer_until_the_send_is_done() {
        let mut t = Table::new();
        let id = t.insert(Completes::OnResponse, None, 1, "call", vec![1]);
        assert_eq!(t.on_response(id), Response::Deliver("call"));
        assert!(t.owns_buffers(id));
        assert!(matches!(
            t.on_transport(id, Ok(())),
            Transport::Done { sink: None, .. }
        ));
        assert!(t.is_empty());
    }

    #[test]
    fn failed_send_decides_the_call() {
        let mut t = Table::new();
        let id = t.insert(Completes::OnResponse, None, 1, "call", vec![]);
        let done = t.on_transport(id, Err("peer gone"));
        assert_eq!(
            done,
            Transport::Done {
                buffers: vec![],
                sink: Some("call"),
                error: Some("peer gone")
            }
        );
        assert!(t.is_empty());
    }

    #[test]
    fn timed_out_read_keeps_its_buffer_until_the_transport_completes() {
        let t0 = Instant::now();
        let mut t = Table::new();
        let id = t.insert(
            Completes::OnTransport,
            Some(t0 + ms(5)),
            2,
            "read",
            vec![0; 4],
        );
        let mut expired = Vec::new();
        t.expire(t0 + ms(4), &mut expired);
        assert!(expired.is_empty());
        assert_eq!(t.next_deadline(), Some(t0 + ms(5)));
        t.expire(t0 + ms(5), &mut expired);
        assert_eq!(expired, vec![(id, "read")]);
        assert_eq!(t.next_deadline(), None);
        // The outcome is decided, but the transport may still write into the buffer.
        assert!(t.owns_buffers(id));
        assert_eq!(t.on_transport(id, Ok(())), Transport::Pending);
        assert!(t.owns_buffers(id));
        let done = t.on_transport(id, Err("late"));
        assert_eq!(
            done,
            Transport::Done {
                buffers: vec![0; 4],
                sink: None,
                error: Some("late")
            }
        );
        assert!(t.is_empty());
        assert_eq!(t.on_transport(id, Ok(())), Transport::Unknown);
    }

    #[test]
    fn bulk_op_hands_its_buffer_back_with_the_outcome() {
        let mut t = Table::new();
        let id = t.insert(Completes::OnTransport, None, 3, "read", vec![7]);
        assert_eq!(t.on_transport(id, Ok(())), Transport::Pending);
        assert_eq!(t.on_transport(id, Err("key")), Transport::Pending);
        let done = t.on_transport(id, Ok(()));
        assert_eq!(
            done,
            Transport::Done {
                buffers: vec![7],
                sink: Some("read"),
                error: Some("key")
            }
        );
        assert_eq!(t.on_response(id), Response::Late);
    }

    #[test]
    fn late_response_after_timeout_is_recognised_and_unknown_ids_are_not() {
        let t0 = Instant::now();
        let mut t = Table::new();
        let id = t.insert(Completes::OnResponse, Some(t0 + ms(1)), 0, "call", vec![]);
        let mut expired = Vec::new();
        t.expire(t0 + ms(2), &mut expired);
        assert_eq!(expired.len(), 1);
        assert!(t.is_empty());
        assert_eq!(t.on_response(id), Response::Late);
        assert_eq!(t.on_response(id + 1), Response::Unknown);
        assert_eq!(t.on_response(0), Response::Unknown);
        assert_eq!(t.on_response(u64::MAX), Response::Unknown);
    }

    #[test]
    fn response_to_a_bulk_op_is_unknown() {
        let mut t = Table::new();
        let id = t.insert(Completes::OnTransport, None, 1, "read", vec![]);
        assert_eq!(t.on_response(id), Response::Unknown);
        assert_eq!(t.pending(), 1);
    }

    #[test]
    fn cancel_takes_the_sink_once_and_keeps_buffers() {
        let mut t = Table::new();
        let id = t.insert(Completes::OnTransport, None, 1, "read", vec![1]);
        assert_eq!(t.cancel(id), Some("read"));
        assert_eq!(t.cancel(id), None);
        assert!(t.owns_buffers(id));
        assert!(matches!(
            t.on_transport(id, Ok(())),
            Transport::Done { sink: None, .. }
        ));
        assert!(t.is_empty());
    }

    #[test]
    fn deadlines_expire_in_order_and_cancelled_ones_are_skipped() {
        let t0 = Instant::now();
        let mut t = Table::new();
        let a = t.insert(Completes::OnResponse, Some(t0 + ms(30)), 0, "a", vec![]);
        let b = t.insert(Completes::OnResponse, Some(t0 + ms(10)), 0, "b", vec![]);
        let c = t.insert(Completes::OnResponse, Some(t0 + ms(20)), 0, "c", vec![]);
        let _d = t.insert(Completes::OnResponse, None, 0, "d", vec![]);
        t.cancel(b);
        assert_eq!(t.next_deadline(), Some(t0 + ms(20)));
        let mut expired = Vec::new();
        t.expire(t0 + ms(100), &mut expired);
        assert_eq!(expired, vec![(c, "c"), (a, "a")]);
        assert_eq!(t.pending(), 1);
    }

    #[test]
    fn shutdown_fails_every_pending_op_and_close_returns_the_buffers() {
        let mut t = Table::new();
        let a = t.insert(Completes::OnResponse, None, 0, "a", vec![1]);
        let b = t.insert(Completes::OnTransport, None, 1, "b", vec![2]);
        let c = t.insert(Completes::OnResponse, None, 1, "c", vec![3]);
        assert!(matches!(t.on_transport(c, Ok(())), Transport::Done { .. }));
        let failed = t.shutdown();
        assert_eq!(failed, vec![(a, "a"), (b, "b"), (c, "c")]);
        // b's read is still posted: its buffer stays until the endpoint is closed.
        assert_eq!(t.len(), 1);
        assert!(t.owns_buffers(b));
        let (sinks, bufs) = t.close();
        assert!(sinks.is_empty());
        assert_eq!(bufs, vec![vec![2]]);
        assert!(t.is_empty());
    }

    #[test]
    fn caller_chosen_ids_advance_the_late_horizon() {
        let mut t = Table::new();
        assert!(t.insert_at(10, Completes::OnResponse, None, 0, "a", vec![]));
        assert!(!t.insert_at(10, Completes::OnResponse, None, 0, "b", vec![]));
        assert!(!t.insert_at(0, Completes::OnResponse, None, 0, "b", vec![]));
        assert!(t.insert_at(4, Completes::OnResponse, None, 0, "c", vec![]));
        assert_eq!(t.on_response(7), Response::Late);
        assert_eq!(t.on_response(11), Response::Unknown);
        assert_eq!(t.on_response(4), Response::Deliver("c"));
        assert_eq!(t.insert(Completes::OnResponse, None, 0, "d", vec![]), 11);
    }

    #[test]
    fn timers_of_ended_ops_do_not_pile_up() {
        let t0 = Instant::now();
        let mut t = Table::new();
        // One long-lived op, then many short calls, each answered before the next.
        let keep = t.insert(Completes::OnResponse, Some(t0 + ms(50)), 0, "keep", vec![]);
        for i in 0..10_000u64 {
            let id = t.insert(
                Completes::OnResponse,
                Some(t0 + ms(1000 + i)),
                0,
                "x",
                vec![],
            );
            assert_eq!(t.on_response(id), Response::Deliver("x"));
            assert!(
                t.timers_held() <= 2 * t.len() + TIMER_SLACK,
                "{} timers for {} ops",
                t.timers_held(),
                t.len()
            );
        }
        // A cancelled op's timer is stale too; the live one still expires.
        let c = t.insert(Completes::OnResponse, Some(t0 + ms(20)), 0, "c", vec![]);
        t.cancel(c);
        assert_eq!(t.next_deadline(), Some(t0 + ms(50)));
        let mut expired = Vec::new();
        t.expire(t0 + ms(60), &mut expired);
        assert_eq!(expired, vec![(keep, "keep")]);
    }

    #[test]
    fn ids_are_never_reused() {
        let mut t = Table::new();
        let mut last = 0;
        for _ in 0..100 {
            let id = t.insert(Completes::OnResponse, None, 0, "x", vec![]);
            assert!(id > last);
            last = id;
            assert_eq!(t.on_response(id), Response::Deliver("x"));
        }
        assert_eq!(t.peek_next_id(), last + 1);
    }
}
