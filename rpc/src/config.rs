//! Engine options.

use std::time::Duration;

use diaspora_api::ThreadPool;

/// How a progress thread waits when it has nothing to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitStrategy {
    /// Poll the CQ continuously (yielding the core between empty polls). Lowest latency on a
    /// dedicated core; the default for shm, whose CQ has no wait fd.
    Spin,
    /// `fi_trywait`, then sleep in `ppoll` on the CQ fd and the submission eventfd. The
    /// default for tcp: busy polling a TCP provider on a shared node collapses throughput.
    /// On a provider without a wait fd, sleeps on the eventfd for at most `idle_poll`.
    Block,
    /// Spin while there was work within `spindown`, then block.
    SpinThenBlock {
        /// How long to keep spinning after the last piece of work.
        spindown: Duration,
    },
}

/// The longest nap of a progress thread on a provider without a wait fd (see
/// [`EngineConfig::idle_poll`]).
pub const IDLE_POLL_MAX: Duration = Duration::from_millis(1);

/// The nap of a progress thread without a wait fd that last worked `idle_for` ago: `idle_poll`,
/// then a sixteenth of the idle time, at most [`IDLE_POLL_MAX`] (or `idle_poll` if larger).
pub fn idle_nap(idle_poll: Duration, idle_for: Duration) -> Duration {
    (idle_for / 16).clamp(idle_poll, IDLE_POLL_MAX.max(idle_poll))
}

/// Options of one [`Engine`](crate::Engine) (one progress thread, one endpoint).
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// libfabric provider: `tcp;ofi_rxm` (default) or `shm`.
    pub provider: String,
    /// libfabric domain; `None` lets libfabric choose (note: `tcp;ofi_rxm` ignores it, use
    /// `source`).
    pub domain: Option<String>,
    /// Source address hint (`FI_SOURCE` node), for example `127.0.0.1` to keep tcp on
    /// loopback.
    pub source: Option<String>,
    /// Wait strategy; `None` picks the provider's default ([`WaitStrategy::default_for`]).
    pub wait: Option<WaitStrategy>,
    /// Callers waiting on an operation drive progress themselves (taking over from the
    /// progress thread while they wait) and submissions are posted by the submitting thread
    /// when no one else is driving. Saves two thread hand-offs per operation, which matters
    /// on oversubscribed nodes; the progress thread still drives whenever no caller waits.
    pub inline_progress: bool,
    /// How long a caller's [`Pending::wait`](crate::Pending::wait) keeps polling for the
    /// outcome (yielding the core) before it sleeps. An outcome that arrives meanwhile costs no
    /// thread wake-up (a futex wake and a context switch: tens of microseconds on a virtual
    /// machine, several times a 64 KiB shm read). Zero: sleep at once. (With `inline_progress`
    /// waiting callers drive progress instead: see `busy_poll`.)
    pub wait_spin: Duration,
    /// With `inline_progress`: how long a waiting caller keeps polling without giving its core
    /// up (a CPU spin hint between polls) once an iteration found nothing, before it yields
    /// between polls (and, past the wait strategy's spin window, sleeps). A `sched_yield` per
    /// empty poll delays noticing an answer by a system call. Measured on this 2-vCPU VM
    /// (`BENCH_BUSY_POLL=0|10 BENCH_MODES=inline BENCH_ONLY=rpc BENCH_RPC_SIZES=64
    /// diaspora-fabric-bench --secs 2 --providers shm`, 10 alternated pairs): 64 B with 1 in
    /// flight, medians 292k round trips/s with zero and 302k with 10 µs (faster in 9 of the 10
    /// pairs); no change beyond noise with 16 in flight, at 4 KiB, or over tcp. The window
    /// costs a core that another thread on it (the peer's handler on an
    /// oversubscribed node) waits for at most this long per wait. Zero: always yield. Only
    /// inline callers spin so; the progress thread and the serving worker always yield (when
    /// they spin too, a progress-thread engine on 2 cores drops from 157k to 117k).
    pub busy_poll: Duration,
    /// Pin the progress thread to this CPU (`sched_setaffinity`).
    pub cpu: Option<usize>,
    /// Largest frame (header + body) sent or received eagerly; receive buffers have this size.
    pub eager_size: usize,
    /// Receive buffers kept posted.
    pub recv_buffers: usize,
    /// Most registered send buffers (sends beyond wait for one to complete).
    pub send_buffers: usize,
    /// Most sessions (connected callers) served at once. A caller's session ends with its
    /// GOODBYE (sent when its engine shuts down); with every session in use, a new caller
    /// takes the place of the one idle longest, if idle for `session_idle` (a killed caller
    /// never says GOODBYE). Otherwise its HELLO is dropped.
    pub max_sessions: usize,
    /// How long a session must have been idle (no request, none in flight) before a new
    /// caller may take its place when `max_sessions` are in use.
    pub session_idle: Duration,
    /// How long a session lives without hearing from its caller (no keepalive with the
    /// session's secret; requests do not count, another peer could name their session id):
    /// past it, the session ends as with a GOODBYE (its requests in flight are forgotten and
    /// their answers dropped, the session listener runs, the caller's AV entry goes once
    /// nothing posted to it is outstanding). This is how a server learns that a caller was
    /// killed (`kill -9`, a lost node) while it held long calls. The HELLO answer asks each
    /// caller for a keepalive every [`keepalive_interval`](crate::keepalive_interval) of it
    /// (a fifth); every engine's progress thread sends them whatever its caller does, so only
    /// a caller whose process stopped running for most of the expiry loses its session (its
    /// later calls then time out). A caller keeps (and keeps alive) the last `max_sessions`
    /// sessions it opened; an older one it still uses expires. A caller built before
    /// keepalives existed sends none and loses its session too (mixed builds are not
    /// supported). `None`: sessions end only by GOODBYE or eviction.
    pub session_expiry: Option<Duration>,
    /// Most requests being handled at once (beyond, callers get `Overloaded`).
    pub max_requests_in_flight: usize,
    /// How long a provider without a wait fd (shm) sleeps before polling again, 50 µs, at
    /// first: the nap then grows with the time since the last work (a sixteenth of it, at
    /// most [`IDLE_POLL_MAX`]), so an engine idle for long does not wake 20,000 times a second.
    /// Submissions end a nap at once (eventfd); only what arrives unasked (a request to a
    /// server idle for 16 ms or more) may wait up to the longer nap.
    pub idle_poll: Duration,
    /// How long shutdown waits for posted operations to complete before closing the endpoint.
    pub drain_timeout: Duration,
    /// Longest a frame waits to be accepted by the provider for one peer (posts answered with
    /// `-FI_EAGAIN`, e.g. rxm towards a peer that died). Beyond, the frame is dropped and its
    /// call (if any) fails: a dead peer cannot hold a send buffer or the outbox forever.
    pub send_timeout: Duration,
    /// Where handlers run (never on the progress thread). An inline pool (the default) means
    /// the engine's own *serving worker*: one thread that, while the wait strategy would spin
    /// (for [`DEFAULT_SPINDOWN`] after its last piece of work by default), drives progress
    /// itself and runs the requests it receives without a thread hand-off, handing progress
    /// back to the progress thread while a handler runs (leader/follower, see the crate
    /// README). Handlers run one at a time there, as on a one-thread pool; give a pool for
    /// handlers that should run in parallel.
    pub handler_pool: ThreadPool,
    /// Frames nobody waits on (answers, error replies, cancels) that fit the provider's
    /// inject size go out with `fi_inject`: no send buffer, no send completion to read. A
    /// transport error after the call returns then goes unreported, as it already does for
    /// such frames (nobody waits on their send): the caller learns of a lost answer by its
    /// deadline either way. Off by default: with it on, the in-process shm conformance
    /// suite (`conformance_wire_shm`, client and stand-in server in one process) crashed
    /// (SIGSEGV) in 2 of about 31 runs on 2026-12-07, cause not found yet (known issue 3
    /// describes a crash of shm sends to a closed endpoint of the same process).
    pub inject_answers: bool,
    /// Name of the progress thread.
    pub thread_name: String,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            provider: "tcp;ofi_rxm".into(),
            domain: None,
            source: None,
            wait: None,
            inline_progress: false,
            wait_spin: Duration::from_micros(50),
            busy_poll: Duration::from_micros(10),
            cpu: None,
            eager_size: 8 * 1024,
            recv_buffers: 64,
            send_buffers: 256,
            max_sessions: 4096,
            session_idle: Duration::from_secs(60),
            session_expiry: Some(DEFAULT_SESSION_EXPIRY),
            max_requests_in_flight: 4096,
            idle_poll: Duration::from_micros(50),
            drain_timeout: Duration::from_millis(500),
            send_timeout: Duration::from_secs(5),
            handler_pool: ThreadPool::inline(),
            inject_answers: false,
            thread_name: "diaspora-progress".into(),
        }
    }
}

impl EngineConfig {
    /// A default configuration for `provider`.
    pub fn for_provider(provider: &str) -> Self {
        EngineConfig {
            provider: provider.into(),
            ..Default::default()
        }
    }
}

impl WaitStrategy {
    /// How long a thread keeps polling after its last piece of work before it blocks:
    /// always for `Spin`, never for `Block`.
    pub(crate) fn spin_window(&self) -> Duration {
        match *self {
            WaitStrategy::Spin => Duration::MAX,
            WaitStrategy::Block => Duration::ZERO,
            WaitStrategy::SpinThenBlock { spindown } => spindown,
        }
    }

    /// The default for every provider: spin (yielding the core) for 200 µs after the last piece
    /// of work, then block (tcp: `fi_trywait` and `ppoll` on the CQ fd; shm, which has no wait
    /// fd: naps of `idle_poll`, 50 µs, growing to 1 ms when idle for long). A steady stream of
    /// work never waits for a wake-up, an idle engine costs no CPU. Blocking at once (`Block`) saves the spin on a node whose
    /// cores are all busy, at the price of a thread wake-up per message: tcp;ofi_rxm round
    /// trips fell from about 24k to 10k per second here.
    pub fn default_for(_provider: &str) -> WaitStrategy {
        WaitStrategy::SpinThenBlock {
            spindown: DEFAULT_SPINDOWN,
        }
    }
}

/// The default [`EngineConfig::session_expiry`]: a killed caller's session ends within 15 s.
pub const DEFAULT_SESSION_EXPIRY: Duration = Duration::from_secs(15);

/// How often a callee whose sessions expire after `expiry` asks its callers to send a
/// keepalive: a fifth of it (so four in a row may be lost or late), at least 1 ms, and at
/// most `u32::MAX` ms (what the HELLO answer carries).
pub fn keepalive_interval(expiry: Duration) -> Duration {
    (expiry / 5).clamp(
        Duration::from_millis(1),
        Duration::from_millis(u32::MAX.into()),
    )
}

/// How long the default wait strategy, and the default handler pool, keep polling after work.
pub const DEFAULT_SPINDOWN: Duration = Duration::from_micros(200);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_idle_nap_grows_with_the_idle_time_and_stays_bounded() {
        let poll = Duration::from_micros(50);
        let us = Duration::from_micros;
        assert_eq!(idle_nap(poll, Duration::ZERO), poll);
        assert_eq!(idle_nap(poll, us(500)), poll); // a sixteenth is below idle_poll
        assert_eq!(idle_nap(poll, us(1600)), us(100));
        assert_eq!(idle_nap(poll, us(8000)), us(500));
        assert_eq!(idle_nap(poll, Duration::from_secs(3600)), IDLE_POLL_MAX);
        // An idle_poll above the cap is kept, never shortened.
        let long = Duration::from_millis(5);
        assert_eq!(idle_nap(long, Duration::from_secs(3600)), long);
        assert_eq!(idle_nap(long, Duration::ZERO), long);
    }
}
