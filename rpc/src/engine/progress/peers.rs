//! Callers leave the address vector once their session is over.
//!
//! Every HELLO inserts the caller's address under a new handle, never handed out again (see
//! [`Net::insert_peer`]), so each session owns its handle (handles of one address share one AV
//! entry, which goes with the last of them). When the session ends (GOODBYE,
//! eviction of an idle session), or when the HELLO is refused after the insert (provider
//! mismatch, shutting down), the entry is *doomed*. It is removed (`fi_av_remove`) once nothing
//! posted to it is outstanding: no send slot posted to it, no frame queued for it, no bulk
//! transfer whose buffers the op table still owns (libfabric leaves operations in progress to
//! a removed address undefined, hence the wait). A handler that posts to the peer afterwards
//! gets an error from the post: its handle is gone, and no later peer ever gets the same one,
//! so a stale request can never reach another caller's memory.
//!
//! On the calling side, the entry of a connect that fails (timeout, cancel, refused HELLO,
//! failed send) is doomed the same way.
//!
//! Without this, a long-running server kept one AV entry (and the provider's connection state)
//! per caller endpoint it had ever served.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{Op, OpSink, Progress};
use crate::net::Net;

/// How often doomed entries are looked at (each look scans the send slots, the outbox and the
/// op table's buffers).
const REAP_EVERY: Duration = Duration::from_millis(20);

impl<N: Net> Progress<N> {
    /// Marks `fi_addr` for removal once nothing posted to it is outstanding.
    pub(super) fn doom_peer(&mut self, fi_addr: u64) {
        if !self.doomed.contains(&fi_addr) {
            self.doomed.push(fi_addr);
        }
    }

    /// A connect that fails (timeout, cancel, refused, failed send) gives its caller no peer:
    /// the entry its HELLO was sent to goes too, so retries against a dead server do not pile
    /// up entries.
    pub(super) fn forget_failed_connect(&mut self, op: &Op<N>) {
        if let OpSink::Connect { fi_addr, .. } = &op.sink {
            self.doom_peer(*fi_addr);
        }
    }

    /// Removes the doomed entries that nothing uses any more (at most every [`REAP_EVERY`]).
    pub(super) fn reap_peers(&mut self, now: Instant) {
        if self.doomed.is_empty() || now < self.next_reap {
            return;
        }
        self.next_reap = now + REAP_EVERY;
        let doomed = std::mem::take(&mut self.doomed);
        let busy = self.posted_to_peers();
        for fi_addr in doomed {
            if busy.contains(&fi_addr) {
                self.doomed.push(fi_addr);
                continue;
            }
            let local = self.local_peers.remove(&fi_addr);
            let net = &mut self.net;
            let removed = match local {
                None => net.remove_peer(fi_addr),
                // An endpoint of this process: `fi_av_remove` only while it is open (on shm
                // the removal writes into its region, unmapped once it closed).
                Some(raw) => {
                    let mut r = Ok(());
                    if !super::super::local::unless_closed(&raw, || r = net.remove_peer(fi_addr)) {
                        net.forget_peer(fi_addr);
                    }
                    r
                }
            };
            let stats = &self.shared.stats;
            stats.peers.fetch_sub(1, Ordering::Relaxed);
            match removed {
                Ok(()) => stats.peers_removed.fetch_add(1, Ordering::Relaxed),
                Err(_) => stats.peers_remove_failed.fetch_add(1, Ordering::Relaxed),
            };
        }
    }

    /// The peers with a send, a queued frame or a bulk transfer outstanding (one scan per
    /// reap, however many entries are doomed).
    pub(super) fn posted_to_peers(&self) -> HashSet<u64> {
        let sends = self.sends.iter().flatten().filter_map(|s| s.to);
        let queued = self.outbox.iter().map(|o| o.fi_addr());
        let bulk = self.ops.buffers().flatten().map(|b| b.fi_addr);
        sends.chain(queued).chain(bulk).collect()
    }
}
