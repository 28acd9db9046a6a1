//! Session liveness: callers send KEEPALIVE frames, callees end the sessions they stop
//! hearing from.
//!
//! A caller killed with `kill -9` never says GOODBYE. Before this, its session (and the long
//! calls it held, and its AV entry) lived until a newcomer evicted it, which only happens once
//! every session is in use: a server could hold a dead consumer's long polls for ever.
//!
//! * **Callee.** With `EngineConfig::session_expiry` set, the HELLO answer carries
//!   `keepalive_ms` (see [`crate::keepalive_interval`]: a fifth of the expiry). Every session
//!   remembers when it last heard from its caller: its HELLO or a KEEPALIVE with the
//!   session's secret (not requests, which carry only the session id that another peer can
//!   name). About ten times per expiry the progress thread ends the sessions that have heard
//!   nothing for the whole expiry, as a GOODBYE would (`sessions_expired`). If this engine
//!   itself did not run for a while (its progress iterations stopped: a stopped process, a
//!   paused VM), keepalives may still sit unread in its queue: every session then gets half
//!   an expiry to be heard again before it can expire.
//! * **Caller.** Each session it opened whose HELLO answer asked for keepalives gets one
//!   every `keepalive_ms`, sent by the progress iteration whatever the caller does (idle,
//!   waiting on a long call, or driving progress inline), with the 8-byte session secret as
//!   the body so no other peer can keep a session alive. KEEPALIVE is never answered. All
//!   keepalives due within a quarter interval go out in one pass (so the sessions line up and
//!   a pass is rare), and none is sent to a peer that still has a frame queued or a send
//!   posted (a dead callee holds at most one send buffer, not one per interval).
//!
//! Eviction (`session_idle`) still looks at the last *request* only, as before: a live caller
//! that sends only keepalives can still give its place to a newcomer when every session is in
//! use.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{Progress, SessionEnd};
use crate::net::Net;
use crate::wire::{Header, Kind};

/// A session this engine opened at a peer (closed with a GOODBYE at shutdown).
pub(super) struct Opened {
    pub(super) fi_addr: u64,
    pub(super) session: u32,
    pub(super) secret: u64,
    /// The keepalive interval the callee asked for, and when the next one is due.
    pub(super) keepalive: Option<(Duration, Instant)>,
}

/// The keepalive interval a HELLO answer asks for: `keepalive_ms` (0, or absent from an older
/// peer: none).
pub(super) fn asked_interval(ms: Option<u32>) -> Option<Duration> {
    ms.filter(|&ms| ms > 0)
        .map(|ms| Duration::from_millis(ms.into()))
}

impl<N: Net> Progress<N> {
    /// What the HELLO answer asks of callers: a keepalive every this many ms (0: none).
    pub(super) fn keepalive_ms(&self) -> u32 {
        self.config.session_expiry.map_or(0, |e| {
            u32::try_from(crate::keepalive_interval(e).as_millis()).unwrap_or(u32::MAX)
        })
    }

    /// Remembers a session this engine opened; schedules its keepalives.
    pub(super) fn note_opened(&mut self, o: Opened) {
        if let Some((_, due)) = o.keepalive {
            self.next_keepalive = Some(self.next_keepalive.map_or(due, |t| t.min(due)));
        }
        self.opened.push_back(o);
        if self.opened.len() > self.config.max_sessions {
            self.opened.pop_front();
        }
    }

    /// Runs at every iteration: sends the keepalives that are due and ends the sessions whose
    /// callers went silent. Two comparisons when nothing is due.
    pub(super) fn liveness(&mut self, now: Instant) {
        let gap = now.saturating_duration_since(self.last_liveness);
        self.last_liveness = now;
        if let Some(expiry) = self.config.session_expiry {
            if gap >= expiry / 4 {
                self.after_own_stall(now, expiry);
            }
        }
        if self.next_keepalive.is_some_and(|t| now >= t) && !self.stopping {
            self.send_keepalives(now);
        }
        if now >= self.next_expiry_check {
            self.expire_sessions(now);
        }
    }

    /// The earlier of the next keepalive and the next expiry check (an idle engine's sleep
    /// ends by then).
    pub(super) fn next_liveness(&self) -> Option<Instant> {
        let check = self.config.session_expiry.map(|_| self.next_expiry_check);
        match (self.next_keepalive, check) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// This engine did not iterate for a quarter of the expiry or more: its callers'
    /// keepalives of that time may be unread yet, so none of its sessions is taken for
    /// silent before half an expiry from now.
    fn after_own_stall(&mut self, now: Instant, expiry: Duration) {
        let floor = now.checked_sub(expiry / 2).unwrap_or(now);
        for s in self.sessions.values_mut() {
            s.last_heard = s.last_heard.max(floor);
        }
    }

    fn send_keepalives(&mut self, now: Instant) {
        let busy = self.posted_to_peers();
        let mut due = Vec::new();
        let mut next: Option<Instant> = None;
        for o in self.opened.iter_mut() {
            let Some((every, at)) = o.keepalive.as_mut() else {
                continue;
            };
            // Due within a quarter interval: sent now, so the sessions line up.
            if now + *every / 4 >= *at {
                if !busy.contains(&o.fi_addr) {
                    due.push((o.fi_addr, o.session, o.secret));
                }
                *at = now + *every;
            }
            next = Some(next.map_or(*at, |t| t.min(*at)));
        }
        self.next_keepalive = next;
        for (fi_addr, session, secret) in due {
            let h = Header {
                kind: Kind::Keepalive,
                op: 0,
                request_id: 0,
                session,
                budget_us: 0,
            };
            self.send_frame(fi_addr, &h, &secret.to_le_bytes(), None);
            self.shared
                .stats
                .keepalives_sent
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A KEEPALIVE: the session heard from its caller. Only with the session's secret;
    /// anything else is dropped.
    pub(super) fn on_keepalive(&mut self, h: &Header, body: &[u8]) {
        match self.sessions.get_mut(&h.session) {
            Some(s) if s.proven_by(body) => {
                s.last_heard = Instant::now();
                self.shared
                    .stats
                    .keepalives_received
                    .fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                self.shared.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Ends the sessions that heard nothing for `session_expiry`; schedules the next look.
    fn expire_sessions(&mut self, now: Instant) {
        let Some(expiry) = self.config.session_expiry else {
            self.next_expiry_check = now + Duration::from_secs(3600);
            return;
        };
        self.next_expiry_check = now + (expiry / 10).max(Duration::from_millis(1));
        let silent: Vec<u32> = self
            .sessions
            .iter()
            .filter(|(_, s)| now.saturating_duration_since(s.last_heard) >= expiry)
            .map(|(&id, _)| id)
            .collect();
        for id in silent {
            self.close_session(id, SessionEnd::Expired);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hello_answer_without_keepalive_ms_asks_for_none() {
        assert_eq!(asked_interval(None), None);
        assert_eq!(asked_interval(Some(0)), None);
        assert_eq!(asked_interval(Some(250)), Some(Duration::from_millis(250)));
    }

    #[test]
    fn the_interval_is_a_fifth_of_the_expiry_and_bounded() {
        let ms = Duration::from_millis;
        assert_eq!(crate::keepalive_interval(ms(15_000)), ms(3000));
        assert_eq!(crate::keepalive_interval(ms(2)), ms(1));
        assert_eq!(
            crate::keepalive_interval(Duration::from_secs(u64::MAX / 2)),
            ms(u32::MAX.into())
        );
    }
}
