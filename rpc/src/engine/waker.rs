//! How other threads wake a sleeping progress thread: an eventfd, and an epoll set holding it
//! and (when the provider has one) the CQ's wait fd.

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
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a live u64 to our own eventfd. A full counter
            // (EAGAIN) still leaves the fd readable, which is all that matters.
            unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
        }
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

/// The epoll set the progress thread sleeps in.
pub(crate) struct Sleeper {
    epoll: OwnedFd,
}

impl Sleeper {
    pub(crate) fn new(waker: &Waker, cq_fd: Option<RawFd>) -> Result<Sleeper, EngineError> {
        // SAFETY: no pointers; a negative return is handled.
        let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if ep < 0 {
            let source = io::Error::last_os_error();
            return Err(EngineError::Wakeup {
                what: "epoll_create1",
                source,
            });
        }
        // SAFETY: fresh descriptor owned by nobody else.
        let epoll = unsafe { OwnedFd::from_raw_fd(ep) };
        let s = Sleeper { epoll };
        s.add(waker.fd.as_raw_fd())?;
        if let Some(fd) = cq_fd {
            s.add(fd)?;
        }
        Ok(s)
    }

    fn add(&self, fd: RawFd) -> Result<(), EngineError> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: fd as u64,
        };
        // SAFETY: `ev` is a live epoll_event; both fds are open for the call's duration.
        let r =
            unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
        if r < 0 {
            return Err(EngineError::Wakeup {
                what: "epoll_ctl",
                source: io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// Sleeps until the eventfd or the CQ fd is readable, or `timeout` passes.
    pub(crate) fn sleep(&self, waker: &Waker, timeout: Duration) {
        let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 2];
        // SAFETY: `evs` is a live array of 2 events and we pass its length.
        let n = unsafe { libc::epoll_wait(self.epoll.as_raw_fd(), evs.as_mut_ptr(), 2, ms) };
        for ev in evs.iter().take(n.max(0) as usize) {
            if ev.u64 == waker.fd.as_raw_fd() as u64 {
                waker.drain();
            }
        }
    }
}
