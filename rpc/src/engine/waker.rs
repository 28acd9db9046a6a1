//! How other threads wake a sleeping progress thread: an eventfd, polled together with the CQ's
//! wait fd when the provider has one.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::error::EngineError;

/// The eventfd submitters ring, and the "is the progress thread asleep" flag.
pub(crate) struct Waker {
    fd: OwnedFd,
    sleeping: AtomicBool,
}

impl Waker {
    pub(crate) fn new() -> Result<Waker, EngineError> {
        // SAFETY: eventfd takes no pointers; a negative return is handled.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(EngineError::Wakeup {
                what: "eventfd",
                source: io::Error::last_os_error(),
            });
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Waker {
            fd,
            sleeping: AtomicBool::new(false),
        })
    }

    /// Wakes the progress thread if it is (about to be) asleep.
    pub(crate) fn wake(&self) {
        if self.sleeping.swap(false, Ordering::SeqCst) {
            self.write();
        }
    }

    /// Writes the eventfd whatever the sleeping flag says (a sleeper wakes at once; one that
    /// is awake finds the fd readable at its next sleep and returns from it at once).
    pub(crate) fn wake_now(&self) {
        self.sleeping.store(false, Ordering::SeqCst);
        self.write();
    }

    fn write(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our own eventfd. A full counter
        // (EAGAIN) still leaves the fd readable, which is all that matters.
        unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Marks the progress thread asleep; it must re-check its queue after this.
    pub(crate) fn set_sleeping(&self) {
        self.sleeping.store(true, Ordering::SeqCst);
    }

    /// Marks the progress thread awake.
    pub(crate) fn set_awake(&self) {
        self.sleeping.store(false, Ordering::SeqCst);
    }

    fn drain(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64 from our own non-blocking eventfd.
        unsafe { libc::read(self.fd.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
    }
}

/// The descriptors a driver sleeps on: the eventfd and (when the provider has one) the CQ's
/// wait fd. `ppoll` rather than epoll: its timeout has nanosecond resolution, so a provider
/// without a wait fd (shm) can sleep for tens of microseconds between polls, really giving the
/// core away (to handler threads) instead of spinning on `sched_yield`.
pub(crate) struct Sleeper {
    fds: Vec<RawFd>,
}

impl Sleeper {
    pub(crate) fn new(waker: &Waker, cq_fd: Option<RawFd>) -> Result<Sleeper, EngineError> {
        let mut fds = vec![waker.fd.as_raw_fd()];
        fds.extend(cq_fd);
        Ok(Sleeper { fds })
    }

    /// Sleeps until the eventfd or the CQ fd is readable, or `timeout` passes.
    pub(crate) fn sleep(&self, waker: &Waker, timeout: Duration) {
        self.sleep_on(&self.fds, waker, timeout)
    }

    /// Sleeps until the eventfd is readable (a submission), or `timeout` passes; not on the CQ
    /// fd, which another thread is reading (a follower while the serving worker leads: the CQ
    /// fd of tcp stays readable until the CQ is read, so polling it would spin).
    pub(crate) fn sleep_on_submissions(&self, waker: &Waker, timeout: Duration) {
        self.sleep_on(&self.fds[..1], waker, timeout)
    }

    fn sleep_on(&self, fds: &[RawFd], waker: &Waker, timeout: Duration) {
        let mut pfds: Vec<libc::pollfd> = fds
            .iter()
            .map(|&fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let ts = libc::timespec {
            tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: `pfds` is a live array of `pfds.len()` pollfds, `ts` a live timespec, and a
        // null signal mask means "leave the mask unchanged".
        let n = unsafe {
            libc::ppoll(
                pfds.as_mut_ptr(),
                pfds.len() as libc::nfds_t,
                &ts,
                std::ptr::null(),
            )
        };
        if n > 0 && pfds[0].revents & libc::POLLIN != 0 {
            waker.drain();
        }
    }
}
