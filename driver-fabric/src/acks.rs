//! Coalesced acknowledgements: `event.acknowledge()` records the position (the highest wins)
//! and returns; one `Commit` per partition is in flight at a time, and when it is answered
//! the newest recorded position (if higher) is sent next. Dropping the consumer (and the last
//! event) waits for what is recorded to be committed, bounded by the driver's deadline, so a
//! consumer created after it (here or after a restart) resumes after the last acknowledgement.
//!
//! A failed commit is reported by the next `acknowledge()` of that partition (which records
//! its position anyway and sends it again).

use std::sync::Arc;
use std::time::Instant;

use diaspora_api::{Acknowledger, Error, EventId, Result};
use parking_lot::{Condvar, Mutex};

use crate::error::FabricError;
use crate::topic::TopicShared;

#[derive(Default, Clone)]
struct Slot {
    /// Highest position recorded (next event id).
    wanted: u64,
    /// Highest position the server confirmed.
    committed: u64,
    in_flight: bool,
    error: Option<String>,
}

struct State {
    /// Per topic partition; `None` for partitions this consumer does not consume.
    slots: Vec<Option<Slot>>,
}

pub(crate) struct Acks {
    topic: Arc<TopicShared>,
    consumer: String,
    state: Mutex<State>,
    cond: Condvar,
}

impl Acks {
    pub(crate) fn new(
        topic: Arc<TopicShared>,
        consumer: &str,
        partitions: &[usize],
        start: &[u64],
    ) -> Arc<Acks> {
        let mut slots = vec![None; topic.info.num_partitions];
        for (&p, &s) in partitions.iter().zip(start) {
            slots[p] = Some(Slot {
                wanted: s,
                committed: s,
                ..Default::default()
            });
        }
        Arc::new(Acks {
            topic,
            consumer: consumer.to_owned(),
            state: Mutex::new(State { slots }),
            cond: Condvar::new(),
        })
    }

    /// Sends the recorded position of `p` if none is in flight and it is new.
    fn pump(self: &Arc<Self>, p: usize) {
        let next = {
            let mut st = self.state.lock();
            let Some(Some(s)) = st.slots.get_mut(p) else {
                return;
            };
            if s.in_flight || s.wanted <= s.committed {
                return;
            }
            s.in_flight = true;
            s.wanted
        };
        let me = self.clone();
        self.topic.service.commit(
            &self.topic.info.name,
            &self.consumer,
            p,
            next,
            Instant::now() + self.topic.timeout,
            Box::new(move |r| {
                {
                    let mut st = me.state.lock();
                    if let Some(Some(s)) = st.slots.get_mut(p) {
                        s.in_flight = false;
                        match r {
                            Ok(()) => {
                                s.committed = s.committed.max(next);
                                s.error = None;
                            }
                            Err(e) => {
                                s.error = Some(e.to_string());
                            }
                        }
                    }
                    me.cond.notify_all();
                }
                // Only what was recorded since: a failed commit is resent by the next ack or
                // by `flush`, never in a loop from here.
                let again = {
                    let st = me.state.lock();
                    matches!(st.slots.get(p), Some(Some(s)) if s.error.is_none() && s.wanted > s.committed)
                };
                if again {
                    me.pump(p);
                }
            }),
        );
    }

    /// Sends every recorded position and waits (until `deadline`) for all to be committed.
    pub(crate) fn flush(self: &Arc<Self>, deadline: Instant) -> Result<()> {
        let n = self.state.lock().slots.len();
        for p in 0..n {
            if let Some(Some(s)) = self.state.lock().slots.get_mut(p) {
                s.error = None;
            }
            self.pump(p);
        }
        let mut st = self.state.lock();
        loop {
            let mut pending = false;
            for (p, s) in st.slots.iter().enumerate() {
                let Some(s) = s else { continue };
                if let Some(e) = &s.error {
                    if !s.in_flight {
                        return Err(FabricError::CommitFailed {
                            consumer: self.consumer.clone(),
                            partition: p,
                            reason: e.clone(),
                        }
                        .into());
                    }
                }
                pending |= s.in_flight || s.wanted > s.committed;
            }
            if !pending {
                return Ok(());
            }
            if self.cond.wait_until(&mut st, deadline).timed_out() {
                return Err(FabricError::CommitFailed {
                    consumer: self.consumer.clone(),
                    partition: usize::MAX,
                    reason: format!(
                        "acknowledgements not committed within {} ms",
                        self.topic.timeout.as_millis()
                    ),
                }
                .into());
            }
        }
    }
}

impl Acks {
    /// Records an acknowledgement and sends it unless a commit of that partition is in flight.
    pub(crate) fn acknowledge(self: &Arc<Self>, partition: usize, id: EventId) -> Result<()> {
        let previous_error = {
            let mut st = self.state.lock();
            let Some(Some(s)) = st.slots.get_mut(partition) else {
                return Err(Error::from(FabricError::NotConsumed {
                    consumer: self.consumer.clone(),
                    partition,
                }));
            };
            s.wanted = s.wanted.max(id.saturating_add(1));
            s.error.take()
        };
        self.pump(partition);
        match previous_error {
            Some(reason) => Err(FabricError::CommitFailed {
                consumer: self.consumer.clone(),
                partition,
                reason,
            }
            .into()),
            None => Ok(()),
        }
    }
}

/// What events hold: the acknowledgement state; the last one dropped commits what is left.
pub(crate) struct AckHandle(pub(crate) Arc<Acks>);

impl Acknowledger for AckHandle {
    fn acknowledge(&self, partition: usize, id: EventId) -> Result<()> {
        self.0.acknowledge(partition, id)
    }
}

impl Drop for AckHandle {
    fn drop(&mut self) {
        let _ = self.0.flush(Instant::now() + self.0.topic.timeout);
    }
}
