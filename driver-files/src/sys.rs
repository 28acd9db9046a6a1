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

/// Most bytes one `pwritev` call carries: 256 KiB.
///
/// A batch (up to 16 MiB of data) is still written under one lock and committed by one index
/// write; only the system calls are cut. The kernel sizes the page-cache folios of a buffered
/// write by the length of the call, and large folios are costly to allocate once free memory
/// is not made of recently freed large blocks (issue 10, development VM, 1.9 GB written per
/// measurement after a 3-5 s pause: 1 MiB calls 250-280 MiB/s, 16 MiB calls 0.5-0.8 GB/s,
/// 256 KiB calls 1.7-1.8 GiB/s, 128 KiB 1.8-1.9 GiB/s, 64 KiB 1.2-1.3 GiB/s). 256 KiB calls
/// are also long enough that the per-call cost is negligible.
pub const WRITE_CALL_MAX: usize = 256 << 10;

/// Writes all `bufs`, back to back, at `offset`, in as few system calls of at most
/// [`WRITE_CALL_MAX`] bytes as possible.
pub fn write_all_vectored_at(file: &File, bufs: &[&[u8]], offset: u64) -> io::Result<()> {
    write_all_vectored_capped(file, bufs, offset, WRITE_CALL_MAX).map(|_| ())
}

/// [`write_all_vectored_at`] with system calls of at most `max_call` bytes (at least 1);
/// returns the number of `pwritev` calls made.
fn write_all_vectored_capped(
    file: &File,
    bufs: &[&[u8]],
    mut offset: u64,
    max_call: usize,
) -> io::Result<usize> {
    let max_call = max_call.max(1);
    let mut bufs: Vec<&[u8]> = bufs.iter().copied().filter(|b| !b.is_empty()).collect();
    let mut iov: Vec<libc::iovec> = Vec::with_capacity(bufs.len().min(IOV_MAX));
    let mut calls = 0;
    let mut start = 0;
    while start < bufs.len() {
        iov.clear();
        let mut bytes = 0;
        for b in &bufs[start..] {
            if iov.len() == IOV_MAX || bytes == max_call {
                break;
            }
            let take = b.len().min(max_call - bytes);
            iov.push(libc::iovec {
                iov_base: b.as_ptr() as *mut libc::c_void,
                iov_len: take,
            });
            bytes += take;
        }
        let off = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))?;
        // SAFETY: every iovec points into (a prefix of) a slice borrowed from `bufs`, alive and
        // unmodified for the duration of the call; the kernel only reads from them.
        let n = unsafe {
            libc::pwritev(
                file.as_raw_fd(),
                iov.as_ptr(),
                iov.len() as libc::c_int,
                off,
            )
        };
        calls += 1;
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
    Ok(calls)
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
    fn vectored_writes_are_cut_into_calls_of_at_most_the_cap() {
        let f = tempfile::tempfile().expect("tempfile");
        // Buffers shorter than, equal to and longer than the cap, and empty ones.
        let chunks: Vec<Vec<u8>> = [3usize, 0, 7, 20, 1, 0, 6, 15]
            .iter()
            .enumerate()
            .map(|(i, &n)| vec![i as u8 + 1; n])
            .collect();
        let refs: Vec<&[u8]> = chunks.iter().map(|c| c.as_slice()).collect();
        let total: usize = chunks.iter().map(Vec::len).sum();
        let calls = write_all_vectored_capped(&f, &refs, 11, 7).expect("write");
        // A regular file takes every call whole: exactly ceil(total / cap) calls.
        assert_eq!(calls, total.div_ceil(7));
        let mut back = vec![0u8; total];
        f.read_exact_at(&mut back, 11).expect("read");
        assert_eq!(back, chunks.concat());
        assert_eq!(f.metadata().expect("stat").len(), 11 + total as u64);
    }

    #[test]
    fn a_batch_larger_than_the_cap_takes_several_calls_and_iov_max_still_bounds_them() {
        let f = tempfile::tempfile().expect("tempfile");
        let big = vec![9u8; 2 * WRITE_CALL_MAX + 5];
        assert_eq!(
            write_all_vectored_capped(&f, &[&big], 0, WRITE_CALL_MAX).expect("write"),
            3
        );
        let small: Vec<Vec<u8>> = (0..2500u32).map(|i| vec![(i % 7) as u8; 2]).collect();
        let refs: Vec<&[u8]> = small.iter().map(|c| c.as_slice()).collect();
        // 5000 bytes, far below the cap: the 1024-iovec limit decides.
        assert_eq!(
            write_all_vectored_capped(&f, &refs, big.len() as u64, WRITE_CALL_MAX).expect("write"),
            3
        );
        let mut back = vec![0u8; 5000];
        f.read_exact_at(&mut back, big.len() as u64).expect("read");
        assert_eq!(back, small.concat());
        assert_eq!(
            write_all_vectored_capped(&f, &[&[]], 0, 1).expect("empty"),
            0
        );
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
