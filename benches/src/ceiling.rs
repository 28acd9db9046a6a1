//! The ceiling of a storage benchmark: what plain sequential I/O achieves on the same file
//! system, in the same run, for the same number of bytes.
//!
//! [`measure_files`] writes `bytes` bytes into a scratch file with sequential
//! `write` calls of [`CHUNK`] bytes (or another call size) (no sync, as the files driver does not sync by default), then
//! reads them back with sequential `read` calls of the same size, and removes the file; it
//! does this twice and keeps the faster write and the faster read (see [`PASSES`]). It
//! reports both speeds and how much of the file the page cache held right after writing it
//! (`mincore`), so a reader can tell a page-cache figure from a disk figure. Nothing is
//! dropped from the page cache: the ceiling is measured in the state the benchmark left.
//!
//! Each write and each read pass (the ceiling's and the benchmark's phases) starts on a
//! settled file system ([`settle`]: `syncfs`, untimed): otherwise a pass runs while the
//! kernel writes back what the previous one left dirty, and on this 2-core machine that moved
//! the ceiling's read speed between 5.7 and 19 GiB/s and its write speed between 0.9 and
//! 4.9 GiB/s from one run to the next.
//!
//! A result is then shown as a ratio of its ceiling with [`Ceiling::ratio`]: produce against
//! the write speed, consume (with data) against the read speed.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{json, Value};

use crate::report::PhaseResult;

/// Default size of each `write` and `read` call of the ceiling: 1 MiB.
pub const CHUNK: usize = 1 << 20;

/// What plain sequential I/O achieved on one file system.
#[derive(Clone, Debug, PartialEq)]
pub struct Ceiling {
    /// Directory the scratch file was written in.
    pub dir: PathBuf,
    /// Bytes written, then read.
    pub bytes: u64,
    /// Bytes per `write` and `read` call.
    pub call_size: usize,
    /// Seconds the writes took (first `write` to last, without sync).
    pub write_seconds: f64,
    /// Seconds the reads took.
    pub read_seconds: f64,
    /// Fraction (0..=1) of the scratch file's pages resident in the page cache right after it
    /// was written; `None` if it could not be determined.
    pub resident_after_write: Option<f64>,
}

/// Which side of a ceiling a phase is compared with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Sequential writes (producing).
    Write,
    /// Sequential reads (consuming with data).
    Read,
}

impl Ceiling {
    /// Bytes per second of the writes.
    pub fn write_bytes_per_sec(&self) -> f64 {
        rate(self.bytes as f64, self.write_seconds)
    }

    /// Bytes per second of the reads.
    pub fn read_bytes_per_sec(&self) -> f64 {
        rate(self.bytes as f64, self.read_seconds)
    }

    /// Bytes per second of `side`.
    pub fn bytes_per_sec(&self, side: Side) -> f64 {
        match side {
            Side::Write => self.write_bytes_per_sec(),
            Side::Read => self.read_bytes_per_sec(),
        }
    }

    /// `bytes_per_sec` (of a phase) as a fraction of this ceiling's `side`.
    pub fn ratio(&self, side: Side, bytes_per_sec: f64) -> f64 {
        let c = self.bytes_per_sec(side);
        if c > 0.0 && c.is_finite() {
            bytes_per_sec / c
        } else {
            f64::NAN
        }
    }

    /// Whether the whole file was in the page cache after writing it (`None`: unknown).
    pub fn fit_in_page_cache(&self) -> Option<bool> {
        self.resident_after_write.map(|f| f >= 0.999)
    }

    /// One human-readable line; `label` is e.g. "run 1/3".
    pub fn text(&self, label: &str) -> String {
        let cache = match self.resident_after_write {
            Some(f) => format!("{:.0}% in page cache after writing", f * 100.0),
            None => "page cache residency unknown".to_owned(),
        };
        format!(
            "{label:>9} ceiling  {:>10} bytes write {:>9.2} MiB/s read {:>9.2} MiB/s ({} KiB calls; {cache})",
            self.bytes,
            self.write_bytes_per_sec() / MIB,
            self.read_bytes_per_sec() / MIB,
            self.call_size >> 10,
        )
    }

    /// The ceiling as a JSON object (embedded in the results).
    pub fn json(&self) -> Value {
        json!({
            "dir": self.dir.to_string_lossy(),
            "bytes": self.bytes,
            "call_size": self.call_size,
            "write_seconds": self.write_seconds,
            "read_seconds": self.read_seconds,
            "write_mib_per_sec": self.write_bytes_per_sec() / MIB,
            "read_mib_per_sec": self.read_bytes_per_sec() / MIB,
            "resident_after_write": self.resident_after_write,
            "fit_in_page_cache": self.fit_in_page_cache(),
        })
    }
}

/// Attaches `ceiling` to a phase's result: produce is compared with the write ceiling, consume
/// with the read ceiling when it read data (`data_size > 0`), metadata-only consume with none.
pub fn attach(result: &mut PhaseResult, ceiling: Option<&Ceiling>, data_size: usize) {
    let side = match result.phase {
        "produce" => Side::Write,
        "consume" if data_size > 0 => Side::Read,
        _ => return,
    };
    result.ceiling = ceiling.map(|c| (side, c.clone()));
}

const MIB: f64 = 1024.0 * 1024.0;

fn rate(amount: f64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        amount / seconds
    } else {
        f64::INFINITY
    }
}

/// Writes then reads `bytes` bytes with sequential calls of `call_size` bytes (at least 1;
/// [`CHUNK`] is the reference) on a scratch file in `dir`, which is removed before this
/// returns (also on error).
pub fn measure_files(dir: &Path, bytes: u64, call_size: usize) -> io::Result<Ceiling> {
    let call_size = call_size.max(1);
    // Not all zeros (a file system could special-case them), not all one byte.
    let mut buf = AlignedBuf::new(call_size);
    for (i, b) in buf.as_mut_slice().iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    let mut back = AlignedBuf::new(call_size);
    let mut best = one_pass(dir, bytes, buf.as_mut_slice(), back.as_mut_slice())?;
    for _ in 1..PASSES {
        let p = one_pass(dir, bytes, buf.as_mut_slice(), back.as_mut_slice())?;
        best = Pass {
            write_seconds: best.write_seconds.min(p.write_seconds),
            read_seconds: best.read_seconds.min(p.read_seconds),
            resident_after_write: p.resident_after_write.or(best.resident_after_write),
        };
    }
    Ok(Ceiling {
        dir: dir.to_path_buf(),
        bytes,
        call_size,
        write_seconds: best.write_seconds,
        read_seconds: best.read_seconds,
        resident_after_write: best.resident_after_write,
    })
}

/// Write and read passes of the ceiling; each speed is the best of them. On a virtual machine
/// the first pass can run at a fraction of the next (in this one: 0.43 against 4.9 GB/s for
/// `dd` into a fresh file), because page-cache pages the guest had freed must first be faulted
/// back in by the host; the benchmark's own phases then reuse those pages.
const PASSES: usize = 2;

struct Pass {
    write_seconds: f64,
    read_seconds: f64,
    resident_after_write: Option<f64>,
}

/// Writes `bytes` bytes into a new scratch file with calls of `buf.len()` bytes, reads them back
/// into `back`, and removes the file (also on error).
fn one_pass(dir: &Path, bytes: u64, buf: &[u8], back: &mut [u8]) -> io::Result<Pass> {
    let call_size = buf.len();
    let mut scratch = tempfile::Builder::new()
        .prefix(".diaspora-bench-ceiling-")
        .tempfile_in(dir)?;
    settle(dir)?;
    let start = Instant::now();
    let mut left = bytes;
    while left > 0 {
        let n = usize::try_from(left).map_or(call_size, |l| l.min(call_size));
        scratch.as_file_mut().write_all(&buf[..n])?;
        left -= n as u64;
    }
    let write_seconds = start.elapsed().as_secs_f64();
    let resident_after_write = resident_fraction(scratch.as_file(), bytes);

    let mut file = scratch.reopen()?;
    settle(dir)?;
    let start = Instant::now();
    let mut read = 0u64;
    loop {
        let n = file.read(back)?;
        if n == 0 {
            break;
        }
        read += n as u64;
    }
    let read_seconds = start.elapsed().as_secs_f64();
    std::hint::black_box(&back);
    if read != bytes {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("ceiling: read back {read} of the {bytes} bytes written"),
        ));
    }
    scratch.close()?;
    Ok(Pass {
        write_seconds,
        read_seconds,
        resident_after_write,
    })
}

/// A zeroed, page-aligned buffer, as `dd` uses: the kernel copies to and from the page cache
/// at up to twice the speed it gets with the system allocator's buffers, which start 16 bytes
/// into a page (measured here: 1 MiB reads at 5.5-7.9 against 14-19 GiB/s).
struct AlignedBuf {
    pages: Vec<Page>,
    len: usize,
}

#[derive(Clone, Copy)]
#[repr(C, align(4096))]
struct Page([u8; 4096]);

impl AlignedBuf {
    fn new(len: usize) -> Self {
        AlignedBuf {
            pages: vec![Page([0; 4096]); len.div_ceil(4096)],
            len,
        }
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `pages` holds `len.div_ceil(4096)` pages of initialized bytes (`Page` is a
        // plain byte array without padding), so `len` bytes from its start are in bounds; the
        // slice borrows `self` mutably.
        unsafe { std::slice::from_raw_parts_mut(self.pages.as_mut_ptr().cast::<u8>(), self.len) }
    }
}

/// Writes back everything dirty on the file system holding `dir` (`syncfs`), so that the pass
/// that follows does not share the machine with the write-back of the one before.
pub fn settle(dir: &Path) -> io::Result<()> {
    let d = File::open(dir)?;
    // SAFETY: `d` is an open descriptor for the duration of the call; syncfs takes no
    // pointers.
    if unsafe { libc::syncfs(d.as_raw_fd()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Fraction of the first `len` bytes of `file` resident in the page cache (`mmap` + `mincore`),
/// `None` if the kernel does not tell. 1.0 for an empty file.
pub fn resident_fraction(file: &File, len: u64) -> Option<f64> {
    if len == 0 {
        return Some(1.0);
    }
    let len = usize::try_from(len).ok()?;
    // SAFETY: sysconf takes no pointers.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).ok()?;
    if page == 0 {
        return None;
    }
    let pages = len.div_ceil(page);
    let mut vec = vec![0u8; pages];
    // SAFETY: a fresh read-only shared mapping of a file we hold open, at an address the
    // kernel chooses; it is unmapped below and never read through.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    if addr == libc::MAP_FAILED {
        return None;
    }
    // SAFETY: `addr..addr+len` is the mapping created above; `vec` has one byte per page of it.
    let rc = unsafe { libc::mincore(addr, len, vec.as_mut_ptr()) };
    // SAFETY: unmaps exactly the mapping created above, which nothing references.
    unsafe { libc::munmap(addr, len) };
    if rc != 0 {
        return None;
    }
    let resident = vec.iter().filter(|&&b| b & 1 != 0).count();
    Some(resident as f64 / pages as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_the_requested_bytes_and_removes_its_scratch_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Not a multiple of the call size: the last call is short.
        let bytes = 3 * CHUNK as u64 + 12_345;
        let c = measure_files(dir.path(), bytes, CHUNK).expect("ceiling");
        assert_eq!(c.bytes, bytes);
        assert_eq!(c.dir, dir.path());
        assert!(c.write_seconds > 0.0 && c.read_seconds > 0.0);
        let left: Vec<_> = std::fs::read_dir(dir.path()).expect("ls").collect();
        assert!(left.is_empty(), "scratch file left behind: {left:?}");
        let f = c.resident_after_write.expect("mincore works on Linux");
        assert!((0.0..=1.0).contains(&f), "{f}");
        let j = c.json();
        assert_eq!(j["bytes"], bytes);
        assert_eq!(j["call_size"], CHUNK);
        assert!(c.text("run 1/1").contains("ceiling"));
        assert!(c.text("run 1/1").contains("1024 KiB calls"));
        let small = measure_files(dir.path(), 10_000, 4096).expect("small calls");
        assert_eq!((small.bytes, small.call_size), (10_000, 4096));
        assert!(std::fs::read_dir(dir.path()).expect("ls").next().is_none());
    }

    #[test]
    fn a_missing_directory_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = measure_files(&dir.path().join("absent"), 10, CHUNK).expect_err("no directory");
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn residency_of_a_file_just_written_is_reported() {
        let mut f = tempfile::tempfile().expect("tempfile");
        f.write_all(&vec![7u8; 1 << 16]).expect("write");
        let r = resident_fraction(&f, 1 << 16).expect("mincore");
        assert!((0.0..=1.0).contains(&r));
        assert_eq!(resident_fraction(&f, 0), Some(1.0));
    }

    #[test]
    fn ratios_compare_with_the_matching_side() {
        let c = Ceiling {
            dir: PathBuf::from("/x"),
            bytes: 1000,
            call_size: CHUNK,
            write_seconds: 1.0,
            read_seconds: 0.5,
            resident_after_write: Some(1.0),
        };
        assert_eq!(c.ratio(Side::Write, 900.0), 0.9);
        assert_eq!(c.ratio(Side::Read, 1000.0), 0.5);
        assert_eq!(c.fit_in_page_cache(), Some(true));
        let zero = Ceiling {
            write_seconds: 0.0,
            ..c
        };
        assert!(zero.ratio(Side::Write, 1.0).is_nan());
    }
}
