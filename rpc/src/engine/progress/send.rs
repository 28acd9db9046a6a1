//! The send path of the progress thread: registered send buffers (a bounded pool, plus
//! one-off registrations for oversized raw frames), the outbox of frames waiting for a buffer
//! or for a retry after `-FI_EAGAIN`, and error/cancel frames.

use super::{ctx, Op, OpSink, Outgoing, Progress, SendSlot, TAG_SEND};
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
        self.send(fi_addr, frame_bytes(&h, &body), None);
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
            self.send(op.peer.fi_addr, frame_bytes(&h, &[]), None);
        }
    }

    pub(super) fn send(&mut self, fi_addr: u64, bytes: Vec<u8>, op: Option<u64>) {
        if !self.outbox.is_empty() {
            return self
                .outbox
                .push_back(Outgoing::Frame { fi_addr, bytes, op });
        }
        match self.take_send_slot(bytes.len(), op) {
            Ok(Some(slot)) => {
                self.fill_slot(slot, &bytes);
                self.post_send(slot, fi_addr, bytes.len());
            }
            Ok(None) => self
                .outbox
                .push_back(Outgoing::Frame { fi_addr, bytes, op }),
            Err(source) => self.fail_send(
                op,
                RpcError::Transport {
                    what: "register send buffer",
                    source,
                },
            ),
        }
    }

    fn take_send_slot(&mut self, len: usize, op: Option<u64>) -> Result<Option<usize>, NetError> {
        if len > self.config.eager_size {
            let mr = self.net.register(len, false)?;
            return Ok(Some(self.put_slot(SendSlot {
                mr,
                op,
                oversized: true,
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
        if let Some(s) = self.sends[slot].as_mut() {
            N::bytes_mut(&mut s.mr)[..bytes.len()].copy_from_slice(bytes);
        }
    }

    /// Posts slot `slot`; returns false on `-FI_EAGAIN` (queued for retry).
    fn post_send(&mut self, slot: usize, fi_addr: u64, len: usize) -> bool {
        let Some(s) = self.sends[slot].as_ref() else {
            return true;
        };
        // SAFETY: `sends[slot]` owns the buffer until its completion is read (`on_send_done`)
        // or the endpoint is closed (Progress::drop closes it before freeing `sends`).
        let r = unsafe {
            self.net
                .post_send(fi_addr, &s.mr, len, ctx(TAG_SEND, slot as u64))
        };
        match r {
            Ok(()) => true,
            Err(PostError::Again) => {
                self.outbox
                    .push_front(Outgoing::Slot { slot, fi_addr, len });
                false
            }
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

    pub(super) fn flush_outbox(&mut self) -> bool {
        let mut work = false;
        while let Some(out) = self.outbox.pop_front() {
            match out {
                Outgoing::Slot { slot, fi_addr, len } => {
                    if !self.post_send(slot, fi_addr, len) {
                        return work;
                    }
                }
                Outgoing::Frame { fi_addr, bytes, op } => {
                    match self.take_send_slot(bytes.len(), op) {
                        Ok(Some(slot)) => {
                            self.fill_slot(slot, &bytes);
                            if !self.post_send(slot, fi_addr, bytes.len()) {
                                return work;
                            }
                        }
                        Ok(None) => {
                            self.outbox
                                .push_front(Outgoing::Frame { fi_addr, bytes, op });
                            return work;
                        }
                        Err(source) => self.fail_send(
                            op,
                            RpcError::Transport {
                                what: "register send buffer",
                                source,
                            },
                        ),
                    }
                }
            }
            work = true;
        }
        work
    }

    pub(super) fn release_slot(&mut self, slot: usize) -> Option<u64> {
        let s = self.sends.get_mut(slot)?;
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
                op.fail(error);
            }
        }
    }
}

pub(super) fn frame_bytes(h: &Header, body: &[u8]) -> Vec<u8> {
    crate::wire::encode(h, body)
}
