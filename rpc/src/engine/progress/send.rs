//! The send path of the progress thread: registered send buffers (a bounded pool, plus
//! one-off registrations for oversized raw frames), the outbox of frames waiting for a buffer
//! or for a retry after `-FI_EAGAIN`, and error/cancel frames.

use std::collections::{HashSet, VecDeque};
use std::time::Instant;

use super::{ctx, guarded, Op, OpSink, Outgoing, Progress, SendSlot, TAG_SEND};
use crate::error::RpcError;
use crate::net::{Net, NetError, PostError};
use crate::wire::{ErrorBody, ErrorCode, Header, Kind};

impl<N: Net> Progress<N> {
    pub(super) fn send_error(
        &mut self,
        fi_addr: u64,
        session: u32,
        request_id: u64,
        op: u16,
        code: ErrorCode,
        msg: &str,
    ) {
        let mut body = Vec::new();
        ErrorBody::encode(code, msg, &mut body);
        let h = Header {
            kind: Kind::Error,
            op,
            request_id,
            session,
            budget_us: 0,
        };
        self.send_frame(fi_addr, &h, &body, None);
    }

    pub(super) fn send_cancel(&mut self, id: u64, op: &Op<N>) {
        if matches!(op.sink, OpSink::Call(_)) {
            let h = Header {
                kind: Kind::Cancel,
                op: 0,
                request_id: id,
                session: op.peer.session,
                budget_us: 0,
            };
            self.send_frame(op.peer.fi_addr, &h, &[], None);
        }
    }

    /// Sends the frame `h` + `body`, encoded straight into a send buffer when one is free and
    /// nothing waits before it (one copy of the body), through the outbox otherwise.
    pub(super) fn send_frame(&mut self, fi_addr: u64, h: &Header, body: &[u8], op: Option<u64>) {
        self.send(fi_addr, OutFrame::Encode(h, body), op);
    }

    pub(super) fn send(&mut self, fi_addr: u64, frame: OutFrame<'_>, op: Option<u64>) {
        if op.is_none() && self.outbox.is_empty() && self.inject(fi_addr, &frame) {
            return;
        }
        let since = Instant::now();
        if !self.outbox.is_empty() {
            return self.outbox.push_back(Outgoing::Frame {
                fi_addr,
                bytes: frame.into_bytes(),
                op,
                since,
            });
        }
        let len = frame.len();
        match self.take_send_slot(len, op) {
            Ok(Some(slot)) => {
                let written = self.sends[slot]
                    .as_mut()
                    .and_then(|s| N::bytes_mut(&mut s.mr))
                    .is_some_and(|dst| frame.write(dst));
                if !written {
                    // Cannot happen (send buffers are writable and sized for the frame): fail
                    // the call rather than send garbage.
                    let op = self.release_slot(slot);
                    let source = "frame does not fit its send buffer".into();
                    return self.fail_send(
                        op,
                        RpcError::Transport {
                            what: "encode frame",
                            source,
                        },
                    );
                }
                if !self.post_send(slot, fi_addr, len) {
                    self.outbox.push_back(Outgoing::Slot {
                        slot,
                        fi_addr,
                        len,
                        since,
                    });
                }
            }
            Ok(None) => self.outbox.push_back(Outgoing::Frame {
                fi_addr,
                bytes: frame.into_bytes(),
                op,
                since,
            }),
            Err(source) => self.fail_send(
                op,
                RpcError::Transport {
                    what: "register send buffer",
                    source,
                },
            ),
        }
    }

    /// Sends a frame whose outcome nobody waits for (an answer, an error, a cancel) with
    /// `fi_inject` when it fits the provider's inject size: no send buffer is taken and no
    /// send completion has to be read, on either side of the critical path of a round trip.
    /// True if sent, or if it failed for good (nobody to tell: as for a failed post of such a
    /// frame through a buffer). False on `-FI_EAGAIN` or when it does not fit: send it the
    /// usual way.
    fn inject(&mut self, fi_addr: u64, frame: &OutFrame<'_>) -> bool {
        let len = frame.len();
        if len > self.inject_max {
            return false;
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.resize(len, 0);
        if !frame.write(&mut scratch) {
            self.scratch = scratch;
            return false;
        }
        let local = self.local_peers.get(&fi_addr).map(Vec::as_slice);
        let net = &mut self.net;
        let r = guarded(local, || net.inject(fi_addr, &scratch));
        self.scratch = scratch;
        !matches!(r, Err(PostError::Again))
    }

    /// Posts `bytes` to `fi_addr` at once, or not at all (no free send buffer, `-FI_EAGAIN`,
    /// or a failed post): for best-effort frames that must not be posted later, outside the
    /// caller's control (GOODBYE). True if posted.
    pub(super) fn send_now(&mut self, fi_addr: u64, bytes: &[u8]) -> bool {
        let Ok(Some(slot)) = self.take_send_slot(bytes.len(), None) else {
            return false;
        };
        self.fill_slot(slot, bytes);
        let Some(s) = self.sends[slot].as_ref() else {
            return false;
        };
        let local = self.local_peers.get(&fi_addr).map(Vec::as_slice);
        let net = &mut self.net;
        // SAFETY: as in `post_send`: `sends[slot]` owns the buffer until its completion is
        // read or the endpoint is closed.
        let r = guarded(local, || unsafe {
            net.post_send(fi_addr, &s.mr, bytes.len(), ctx(TAG_SEND, slot as u64))
        });
        if r.is_ok() {
            self.posted_to(slot, fi_addr);
            return true;
        }
        // Not posted: the slot goes back to the pool (an oversized one is freed).
        self.release_slot(slot);
        false
    }

    fn take_send_slot(&mut self, len: usize, op: Option<u64>) -> Result<Option<usize>, NetError> {
        if len > self.config.eager_size {
            let mr = self.net.register(len, false)?;
            return Ok(Some(self.put_slot(SendSlot {
                mr,
                op,
                oversized: true,
                to: None,
            })));
        }
        if let Some(slot) = self.free_sends.pop() {
            if let Some(s) = self.sends[slot].as_mut() {
                s.op = op;
            }
            return Ok(Some(slot));
        }
        if self.registered_sends >= self.config.send_buffers {
            return Ok(None);
        }
        let mr = self.net.register(self.config.eager_size, false)?;
        self.registered_sends += 1;
        Ok(Some(self.put_slot(SendSlot {
            mr,
            op,
            oversized: false,
            to: None,
        })))
    }

    fn put_slot(&mut self, s: SendSlot<N>) -> usize {
        if let Some(i) = self.sends.iter().position(Option::is_none) {
            self.sends[i] = Some(s);
            i
        } else {
            self.sends.push(Some(s));
            self.sends.len() - 1
        }
    }

    fn fill_slot(&mut self, slot: usize, bytes: &[u8]) {
        // Send slots are always engine-owned (writable) registrations of at least the frame's
        // length (`send_slot` sizes them).
        if let Some(dst) = self.sends[slot]
            .as_mut()
            .and_then(|s| N::bytes_mut(&mut s.mr))
            .and_then(|b| b.get_mut(..bytes.len()))
        {
            dst.copy_from_slice(bytes);
        }
    }

    /// Posts slot `slot`; returns false on `-FI_EAGAIN` (the caller queues it for retry).
    fn post_send(&mut self, slot: usize, fi_addr: u64, len: usize) -> bool {
        let Some(s) = self.sends[slot].as_ref() else {
            return true;
        };
        let local = self.local_peers.get(&fi_addr).map(Vec::as_slice);
        let net = &mut self.net;
        // SAFETY: `sends[slot]` owns the buffer until its completion is read (`on_send_done`)
        // or the endpoint is closed (Progress::drop closes it before freeing `sends`).
        let r = guarded(local, || unsafe {
            net.post_send(fi_addr, &s.mr, len, ctx(TAG_SEND, slot as u64))
        });
        match r {
            Ok(()) => {
                self.posted_to(slot, fi_addr);
                true
            }
            Err(PostError::Again) => false,
            Err(PostError::Failed(source)) => {
                let op = self.release_slot(slot);
                self.fail_send(
                    op,
                    RpcError::Transport {
                        what: "send",
                        source,
                    },
                );
                true
            }
        }
    }

    /// Retries the queued frames, peer by peer: a peer whose post answers `-FI_EAGAIN` (or
    /// that waits for a free send buffer) keeps its frames, in order, for the next pass, while
    /// the frames of every other peer go on. A peer therefore holds at most one send buffer
    /// while it does not accept sends, and a frame that waited `send_timeout` is dropped (its
    /// call fails): one dead peer can neither stall the endpoint nor take all send buffers.
    pub(super) fn flush_outbox(&mut self) -> bool {
        if self.outbox.is_empty() {
            return false;
        }
        let now = Instant::now();
        let mut work = false;
        let mut blocked: HashSet<u64> = HashSet::new();
        let mut no_buffer = false;
        let mut kept = VecDeque::with_capacity(self.outbox.len());
        let queued = std::mem::take(&mut self.outbox);
        for out in queued {
            let fi_addr = out.fi_addr();
            if now.saturating_duration_since(out.since()) >= self.config.send_timeout {
                self.drop_outgoing(out);
                work = true;
                continue;
            }
            if blocked.contains(&fi_addr) {
                kept.push_back(out);
                continue;
            }
            match out {
                Outgoing::Slot {
                    slot,
                    fi_addr,
                    len,
                    since,
                } => {
                    if self.post_send(slot, fi_addr, len) {
                        work = true;
                    } else {
                        blocked.insert(fi_addr);
                        kept.push_back(Outgoing::Slot {
                            slot,
                            fi_addr,
                            len,
                            since,
                        });
                    }
                }
                Outgoing::Frame {
                    fi_addr,
                    bytes,
                    op,
                    since,
                } => {
                    let taken = if no_buffer {
                        Ok(None)
                    } else {
                        self.take_send_slot(bytes.len(), op)
                    };
                    match taken {
                        Ok(Some(slot)) => {
                            self.fill_slot(slot, &bytes);
                            if self.post_send(slot, fi_addr, bytes.len()) {
                                work = true;
                            } else {
                                blocked.insert(fi_addr);
                                kept.push_back(Outgoing::Slot {
                                    slot,
                                    fi_addr,
                                    len: bytes.len(),
                                    since,
                                });
                            }
                        }
                        Ok(None) => {
                            // Later frames to this peer stay behind this one (order per peer).
                            no_buffer = true;
                            blocked.insert(fi_addr);
                            kept.push_back(Outgoing::Frame {
                                fi_addr,
                                bytes,
                                op,
                                since,
                            });
                        }
                        Err(source) => {
                            work = true;
                            self.fail_send(
                                op,
                                RpcError::Transport {
                                    what: "register send buffer",
                                    source,
                                },
                            );
                        }
                    }
                }
            }
        }
        // Frames queued meanwhile (by a failed call's callback) go after the kept ones.
        kept.append(&mut self.outbox);
        self.outbox = kept;
        work
    }

    /// Drops a frame that waited `send_timeout` for its peer, freeing its send buffer and
    /// failing its call.
    fn drop_outgoing(&mut self, out: Outgoing) {
        let op = match out {
            Outgoing::Slot { slot, .. } => self.release_slot(slot),
            Outgoing::Frame { op, .. } => op,
        };
        self.fail_send(
            op,
            RpcError::Transport {
                what: "send",
                source: format!(
                    "the peer accepted no send within send_timeout ({:?}): unreachable or dead",
                    self.config.send_timeout
                )
                .into(),
            },
        );
    }

    /// Notes that slot `slot` is posted to `fi_addr` (its AV entry stays until it completes).
    fn posted_to(&mut self, slot: usize, fi_addr: u64) {
        if let Some(s) = self.sends.get_mut(slot).and_then(Option::as_mut) {
            s.to = Some(fi_addr);
        }
    }

    pub(super) fn release_slot(&mut self, slot: usize) -> Option<u64> {
        let s = self.sends.get_mut(slot)?;
        if let Some(s) = s.as_mut() {
            s.to = None;
        }
        let op = s.as_mut().and_then(|s| s.op.take());
        if s.as_ref().is_some_and(|s| s.oversized) {
            *s = None;
        } else {
            self.free_sends.push(slot);
        }
        op
    }

    pub(super) fn fail_send(&mut self, op: Option<u64>, error: RpcError) {
        if let Some(id) = op {
            if let Some(op) = self.ops.cancel(id) {
                self.forget_failed_connect(&op);
                op.fail(error);
            }
        }
    }
}

pub(super) fn frame_bytes(h: &Header, body: &[u8]) -> Vec<u8> {
    crate::wire::encode(h, body)
}

/// A frame to send: already encoded (a raw frame), or a header and body that are encoded
/// into the send buffer itself.
pub(super) enum OutFrame<'a> {
    Bytes(Vec<u8>),
    Encode(&'a Header, &'a [u8]),
}

impl OutFrame<'_> {
    fn len(&self) -> usize {
        match self {
            OutFrame::Bytes(b) => b.len(),
            OutFrame::Encode(_, body) => crate::wire::frame::encoded_len(body.len()),
        }
    }

    /// Writes the frame into the front of `dst`; false if it does not fit.
    fn write(&self, dst: &mut [u8]) -> bool {
        match self {
            OutFrame::Bytes(b) => dst
                .get_mut(..b.len())
                .map(|d| d.copy_from_slice(b))
                .is_some(),
            OutFrame::Encode(h, body) => crate::wire::encode_into(h, body, dst).is_ok(),
        }
    }

    /// The encoded bytes, for the outbox.
    fn into_bytes(self) -> Vec<u8> {
        match self {
            OutFrame::Bytes(b) => b,
            OutFrame::Encode(h, body) => frame_bytes(h, body),
        }
    }
}
