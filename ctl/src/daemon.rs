//! What the daemons (`fifo`, `forward`) share: `--logging LEVEL` and SIGTERM/SIGINT handling.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

/// Log levels of `--logging`, as upstream names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Level {
    /// Everything, including each event.
    Trace,
    /// Each command and FIFO open/close.
    Debug,
    /// Start, stop and counts.
    Info,
    /// Recoverable problems (a reader went away, a retry).
    Warn,
    /// Lines and commands that were refused and skipped, failed pushes.
    Error,
    /// Only what stops the daemon.
    Critical,
    /// Nothing.
    Off,
}

static LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);

/// Sets the level below which messages are dropped.
pub fn set_level(level: Level) {
    LEVEL.store(level as u8, Ordering::Relaxed);
}

/// Whether messages of `level` are printed.
pub fn enabled(level: Level) -> bool {
    level != Level::Off && level as u8 >= LEVEL.load(Ordering::Relaxed)
}

/// Prints `[level] message` on standard error if `level` is enabled.
pub fn log(level: Level, message: std::fmt::Arguments<'_>) {
    if enabled(level) {
        let name = match level {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warning",
            Level::Error => "error",
            Level::Critical | Level::Off => "critical",
        };
        eprintln!("[diaspora-ctl] [{name}] {message}");
    }
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    STOP.store(true, Ordering::SeqCst);
}

/// Installs SIGTERM and SIGINT handlers that make [`stopping`] true.
pub fn install_stop_handlers() -> std::io::Result<()> {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: `sigaction` is given a zeroed, then filled, struct that lives across the
        // call; the handler only performs an atomic store, which is async-signal-safe.
        let rc = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Whether SIGTERM or SIGINT was received (or [`request_stop`] called).
pub fn stopping() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Asks every daemon loop to stop, as a signal would.
pub fn request_stop() {
    STOP.store(true, Ordering::SeqCst);
}
