//! `diaspora-server`: see `diaspora_server::config` for the options.

use clap::Parser;
use diaspora_server::config::{Args, ServerConfig};

fn main() {
    let args = Args::parse();
    let cfg = match ServerConfig::resolve(&args) {
        Ok(c) => c,
        Err(e) => {
            diaspora_server::say!("diaspora-server: {e}");
            std::process::exit(2);
        }
    };
    // Block SIGINT and SIGTERM before any thread starts (threads inherit the mask), then
    // wait for them here.
    let set = match signals::block() {
        Ok(s) => s,
        Err(e) => {
            diaspora_server::say!("diaspora-server: cannot block signals: {e}");
            std::process::exit(1);
        }
    };
    let running = match diaspora_server::server::start(&cfg) {
        Ok(r) => r,
        Err(e) => {
            diaspora_server::say!("diaspora-server: {e}");
            std::process::exit(1);
        }
    };
    let sig = signals::wait(&set);
    diaspora_server::say!("diaspora-server: signal {sig} received, stopping");
    running.stop();
}

mod signals {
    /// Blocks SIGINT and SIGTERM in this thread; returns the set.
    pub fn block() -> std::io::Result<libc::sigset_t> {
        // SAFETY: sigset_t is plain data; sigemptyset initialises it before any use.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid, exclusively borrowed sigset_t.
        unsafe {
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::sigaddset(&mut set, libc::SIGTERM);
        }
        // SAFETY: `set` is initialised; a null old-set pointer is allowed.
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(std::io::Error::from_raw_os_error(rc));
        }
        Ok(set)
    }

    /// Waits for one of the blocked signals; returns its number.
    pub fn wait(set: &libc::sigset_t) -> i32 {
        loop {
            let mut sig = 0;
            // SAFETY: `set` is an initialised sigset_t and `sig` a valid out pointer.
            let rc = unsafe { libc::sigwait(set, &mut sig) };
            if rc == 0 {
                return sig;
            }
        }
    }
}
