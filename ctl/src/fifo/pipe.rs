//! FIFO system calls: create, open without blocking, wait for readiness with a timeout.

use std::fs::{File, OpenOptions};
use std::io;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

/// How long a daemon loop waits before looking at the stop flag again.
pub const TICK_MS: i32 = 100;

/// Creates FIFO `path` (mode 0600) unless a FIFO is already there; anything else there is an
/// error. Returns whether it was created.
pub fn make_fifo(path: &Path) -> io::Result<bool> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_fifo() => return Ok(false),
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "exists and is not a FIFO",
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut bytes = path.as_os_str().as_bytes().to_vec();
    if bytes.contains(&0) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"));
    }
    bytes.push(0);
    // SAFETY: `bytes` is a NUL-terminated buffer that outlives the call.
    let rc = unsafe { libc::mkfifo(bytes.as_ptr().cast(), 0o600) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(true)
}

/// Opens FIFO `path` for reading, non-blocking, holding a write end too: writers can come and
/// go without the reader ever seeing end-of-file.
pub fn open_reader(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    check_fifo(&file)?;
    Ok(file)
}

/// Opens existing FIFO `path` for writing, non-blocking. `Ok(None)` while it has no reader.
pub fn open_writer(path: &Path) -> io::Result<Option<File>> {
    let m = std::fs::symlink_metadata(path)?;
    if !m.file_type().is_fifo() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a FIFO (create it with mkfifo first)",
        ));
    }
    match OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
    {
        Ok(file) => Ok(Some(file)),
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => Ok(None),
        Err(e) => Err(e),
    }
}

fn check_fifo(file: &File) -> io::Result<()> {
    if file.metadata()?.file_type().is_fifo() {
        Ok(())
    } else {
        Err(io::Error::new(io::ErrorKind::InvalidInput, "not a FIFO"))
    }
}

/// Waits up to `timeout_ms` for `file` to be readable (`POLLIN`) or writable (`POLLOUT`).
/// Returns the `revents` (0 on timeout).
pub fn wait(file: &File, events: libc::c_short, timeout_ms: i32) -> io::Result<libc::c_short> {
    let mut fds = libc::pollfd {
        fd: file.as_raw_fd(),
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd, living across the call, and a count of 1.
    let rc = unsafe { libc::poll(&mut fds, 1, timeout_ms) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(e);
    }
    Ok(fds.revents)
}

/// Bytes written into the pipe of `file` and not yet read (`FIONREAD`).
pub fn unread_bytes(file: &File) -> io::Result<u64> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which is valid for the call.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::FIONREAD, &mut n) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Empties the pipe of FIFO write end `writer` through a read end of its own (opened through
/// `/proc/self/fd`, so it is the same FIFO even if its path now names another one), with one
/// `read` call, which the kernel serves atomically with respect to other readers. Returns the
/// bytes taken: the unread end of what was written.
pub fn drain(writer: &File) -> io::Result<u64> {
    let fd = writer.as_raw_fd();
    let reader = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(format!("/proc/self/fd/{fd}"))?;
    if !same_file(&writer.metadata()?, &reader.metadata()?) {
        return Err(io::Error::other("reopened another file"));
    }
    // SAFETY: F_GETPIPE_SZ takes no argument and only reads the descriptor's pipe.
    let capacity = unsafe { libc::fcntl(fd, libc::F_GETPIPE_SZ) };
    let capacity = usize::try_from(capacity)
        .ok()
        .filter(|&c| c >= 4096)
        .unwrap_or(1 << 20)
        .min(16 << 20);
    let mut buf = vec![0u8; capacity];
    let mut taken = 0u64;
    loop {
        match (&reader).read(&mut buf) {
            Ok(0) => return Ok(taken),
            Ok(n) => taken += n as u64,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(taken),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Whether `path` still names the file open as `file`.
pub fn still_named(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => same_file(&a, &b),
        _ => false,
    }
}

fn same_file(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    (a.dev(), a.ino()) == (b.dev(), b.ino())
}
