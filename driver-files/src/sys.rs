//! Thin safe wrappers over the system calls std does not expose: `flock`, `pwritev` and
//! `getrlimit`.

use std::fs::File;
use std::io;
use std::os::unix::io::AsRawFd;

use bytes::BytesMut;

/// An advisory lock held on a file until dropped.
pub struct FileLock<'a> {
    file: &'a File,
}

impl<'a> FileLock<'a> {
    /// Takes an exclusive (`exclusive`) or shared lock, blocking until granted.
    pub fn lock(file: &'a File, exclusive: bool) -> io::Result<Self> {
        let op = if exclusive {
            libc::LOCK_EX
        } else {
            libc::LOCK_SH
        };
        loop {
            // SAFETY: the descriptor is owned by `file`, which outlives this call; flock takes no
            // pointers.
            let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
            if rc == 0 {
                return Ok(FileLock { file });
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }
}

impl Drop for FileLock<'_> {
    fn drop(&mut self) {
        // SAFETY: the descriptor is owned by the borrowed file, alive for 'a.
        unsafe {
            libc::flock(self.file.as_raw_fd(), libc::LOCK_UN);
        }
    }
}

/// The soft limit on open descriptors (`ulimit -n`), 1024 if it cannot be read.
pub fn open_file_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for the duration of the call.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    if rc == 0 {
        lim.rlim_cur
    } else {
        1024
    }
}

/// Interprets the result of a read or write system call: `Ok(Some(n))` for `n` bytes moved,
/// `Ok(None)` when interrupted (retry), and an error otherwise, `zero` when nothing was moved.
fn transferred(n: isize, zero: io::ErrorKind, what: &'static str) -> io::Result<Option<usize>> {
    match n {
        0 => Err(io::Error::new(zero, what)),
        n if n > 0 => Ok(Some(n as usize)),
        _ => {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                Ok(None)
            } else {
                Err(err)
            }
        }
    }
}

/// Reads exactly `len` bytes at `offset`, appending them to `buf` without zero-filling first.
pub fn read_exact_at_into(
    file: &File,
    buf: &mut BytesMut,
    len: usize,
    mut offset: u64,
) -> io::Result<()> {
    buf.reserve(len);
    let end = buf.len() + len;
    while buf.len() < end {
        let want = end - buf.len();
        let off = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))?;
        let spare = buf.spare_capacity_mut();
        // SAFETY: `spare` is writable memory owned by `buf` with room for at least `want` bytes
        // (reserved above); the kernel writes at most `want` bytes into it, and nothing reads
        // them before `set_len` below marks the written ones initialized.
        let n = unsafe { libc::pread(file.as_raw_fd(), spare.as_mut_ptr().cast(), want, off) };
        let Some(n) = transferred(
            n,
            io::ErrorKind::UnexpectedEof,
            "file is shorter than its index says",
        )?
        else {
            continue;
        };
        // SAFETY: the kernel initialized `n` (<= `want`) bytes right after the current length.
        unsafe { buf.set_len(buf.len() + n) };
        offset += n as u64;
    }
    Ok(())
}

/// Most iovecs one `pwritev` call accepts (Linux's `IOV_MAX`).
const IOV_MAX: usize = 1024;

/// Writes all `bufs`, back to back, at `offset`, with as few system calls as possible.
pub fn write_all_vectored_at(file: &File, bufs: &[&[u8]], mut offset: u64) -> io::Result<()> {
    let mut bufs: Vec<&[u8]> = bufs.iter().copied().filter(|b| !b.is_empty()).collect();
    let mut start = 0;
    while start < bufs.len() {
        let end = (start + IOV_MAX).min(bufs.len());
        let iov: Vec<libc::iovec> = bufs[start..end]
            .iter()
            .map(|b| libc::iovec {
                iov_base: b.as_ptr() as *mut libc::c_void,
                iov_len: b.len(),
            })
            .collect();
        let off = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))?;
        // SAFETY: every iovec points into a slice borrowed from `bufs`, alive and unmodified for
        // the duration of the call; the kernel only reads from them.
        let n = unsafe {
            libc::pwritev(
                file.as_raw_fd(),
                iov.as_ptr(),
                iov.len() as libc::c_int,
                off,
            )
        };
        let Some(mut written) = transferred(n, io::ErrorKind::WriteZero, "pwritev wrote nothing")?
        else {
            continue;
        };
        offset += written as u64;
        // Skip fully written buffers, trim a partially written one.
        while written > 0 && start < bufs.len() {
            let len = bufs[start].len();
            if written >= len {
                written -= len;
                start += 1;
            } else {
                bufs[start] = &bufs[start][written..];
                written = 0;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn vectored_write_handles_more_than_iov_max_buffers() {
        let f = tempfile::tempfile().expect("tempfile");
        let chunks: Vec<Vec<u8>> = (0..3000u32).map(|i| vec![(i % 251) as u8; 3]).collect();
        let refs: Vec<&[u8]> = chunks.iter().map(|c| c.as_slice()).collect();
        write_all_vectored_at(&f, &refs, 5).expect("write");
        let mut back = vec![0u8; 9000];
        f.read_exact_at(&mut back, 5).expect("read");
        assert_eq!(back, chunks.concat());
    }

    #[test]
    fn uninit_read_appends_exactly_and_reports_short_files() {
        let f = tempfile::tempfile().expect("tempfile");
        f.write_all_at(b"0123456789", 0).expect("write");
        let mut buf = BytesMut::from(&b"ab"[..]);
        read_exact_at_into(&f, &mut buf, 4, 3).expect("read");
        assert_eq!(&buf[..], b"ab3456");
        let e = read_exact_at_into(&f, &mut buf, 8, 5).expect_err("short");
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn shared_locks_coexist() {
        let f = tempfile::tempfile().expect("tempfile");
        let g = f.try_clone().expect("clone");
        let _a = FileLock::lock(&f, false).expect("lock");
        let _b = FileLock::lock(&g, false).expect("lock");
    }
}
