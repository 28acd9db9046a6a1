//! The transport's raw ceiling: RMA reads between two endpoints of this process, with nothing
//! on top (no engine, no queue, no protocol), so a benchmark can print what it achieved as a
//! ratio of what the provider itself does in the same run.
//!
//! [`measure_read`] opens a *target* endpoint, exposing one source buffer of the transfer
//! size, driven by its own thread (on `tcp;ofi_rxm` and `shm` the side that only exposes memory
//! must keep polling its CQ or a read of it stalls), and an *initiator* endpoint on the calling
//! thread that keeps [`ReadSpec::in_flight`] reads of [`ReadSpec::size`] bytes posted until
//! [`ReadSpec::bytes`] bytes have been read. Where the reads land is the question a storing
//! service asks, so it is chosen by [`Landing`]:
//!
//! * [`Landing::Reused`]: `in_flight` buffers of one transfer each, used over and over (what
//!   `diaspora-fabric-bench` measures): source and destination stay in the CPU caches.
//! * [`Landing::Fresh`]: one mapping of `bytes` bytes that was never touched, each read landing
//!   at the next offset: what a server that *keeps* the bytes it receives (memory storage)
//!   must do at least: every page is faulted in and zeroed by the kernel on its first write
//!   (with [`ReadSpec::populate`], by one `madvise` per read just before it is posted).
//!
//! The two threads are pinned to two different CPUs of the caller's allowed set when it has at
//! least two, so they never share a core (with both on one, `taskset -c 0`, 64 KiB reads with
//! 8 in flight over tcp;ofi_rxm run at 1.4 GiB/s here); the caller's own affinity is restored
//! afterwards.
//!
//! On the 2-core VM this was written on, the same loopback reads run at either about 1.4-1.5
//! or about 4.5-5.1 GiB/s (reused landing) from one process to the next, with nothing else
//! running and pinned or not; the slow runs spend their time in the kernel with interrupts
//! disabled (`_raw_spin_unlock_irqrestore`, `handle_softirqs` lead the profile instead of the
//! socket copies). Callers that want the provider's best take the best of a few runs.
//!
//! Both endpoints wait the same way: poll (yielding the core), then, 200 µs after the last
//! piece of work, block on the CQ's wait fd (`fi_trywait` + `poll`) or, without one (shm), nap
//! 50 µs; the engine's default strategy.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::{
    Access, Av, Completion, CompletionError, Cq, CqOptions, Domain, Endpoint, Error, Fabric, Hints,
    Info, MemoryRegion, PageBuf,
};

/// Where the reads of a ceiling land.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Landing {
    /// `in_flight` buffers of one transfer each, reused (cache-hot).
    Reused,
    /// Memory never touched before, one new offset per read (faulted in on first write).
    Fresh,
}

impl Landing {
    /// A short name for reports: `reused` or `fresh`.
    pub fn name(self) -> &'static str {
        match self {
            Landing::Reused => "reused",
            Landing::Fresh => "fresh",
        }
    }
}

/// What to measure.
#[derive(Clone, Debug)]
pub struct ReadSpec {
    /// libfabric provider, e.g. `tcp;ofi_rxm` or `shm`.
    pub provider: String,
    /// Bytes per read (one region each).
    pub size: usize,
    /// Reads kept posted.
    pub in_flight: usize,
    /// Bytes to read in all (rounded up to whole reads, at least one per slot in flight). With
    /// [`Landing::Fresh`] all of it is mapped at once: the caller bounds it.
    pub bytes: u64,
    /// Where the reads land.
    pub landing: Landing,
    /// How long the whole measurement may take.
    pub deadline: Duration,
    /// [`Landing::Fresh`]: fault in each read's destination (`MADV_POPULATE_WRITE`, timed)
    /// just before posting it, instead of letting the provider's write fault it in page by
    /// page; what a server that prepares its landing buffers does.
    pub populate: bool,
}

/// What [`measure_read`] achieved.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReadCeiling {
    /// Bytes read.
    pub bytes: u64,
    /// Seconds from the first post to the last completion.
    pub seconds: f64,
}

impl ReadCeiling {
    /// Bytes per second.
    pub fn bytes_per_sec(&self) -> f64 {
        if self.seconds > 0.0 {
            self.bytes as f64 / self.seconds
        } else {
            f64::INFINITY
        }
    }
}

/// Why a ceiling could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum CeilingError {
    /// A size, count or byte total that cannot be measured.
    #[error("raw read ceiling: {0}")]
    BadSpec(String),
    /// A libfabric call failed.
    #[error("raw read ceiling: {0}")]
    Fabric(#[from] Error),
    /// A read completed with an error.
    #[error("raw read ceiling: a read failed: {0}")]
    Read(CompletionError),
    /// Memory for the buffers could not be mapped.
    #[error("raw read ceiling: could not map {0} bytes")]
    Alloc(usize),
    /// The reads did not finish within the deadline.
    #[error("raw read ceiling: {done} of {total} reads done after {deadline:?}")]
    Timeout {
        /// Reads completed.
        done: u64,
        /// Reads the measurement needed.
        total: u64,
        /// The deadline.
        deadline: Duration,
    },
    /// A landed read does not hold the source's bytes.
    #[error("raw read ceiling: read {read} landed wrong bytes at offset {offset}")]
    Corrupt {
        /// Which read (fresh landing) or buffer (reused).
        read: u64,
        /// First wrong byte within it.
        offset: usize,
    },
    /// The target's thread failed.
    #[error("raw read ceiling: the target thread failed: {0}")]
    Target(String),
}

/// How long an endpoint polls after its last piece of work before it blocks.
const SPINDOWN: Duration = Duration::from_micros(200);
/// The nap of a provider without a CQ wait fd.
const NAP: Duration = Duration::from_micros(50);

/// One RDM endpoint with its own fabric, domain, CQ and AV, opened on loopback: for raw
/// loops that drive their CQ themselves (this module, `diaspora-fabric-bench`'s raw side).
pub struct RawEndpoint {
    /// The endpoint.
    pub ep: Endpoint,
    /// Its address vector.
    pub av: Av,
    /// Its completion queue.
    pub cq: Cq,
    /// Its domain.
    pub domain: Domain,
    _fabric: Fabric,
}

impl RawEndpoint {
    /// Opens an endpoint of `provider`; tcp is kept on 127.0.0.1 (`FI_SOURCE`: the `lo`
    /// domain hint alone is ignored by rxm).
    pub fn open(provider: &str) -> Result<RawEndpoint, Error> {
        let mut hints = Hints::provider(provider);
        if provider.starts_with("tcp") {
            hints = hints.with_source("127.0.0.1");
        }
        let info = Info::get(&hints)?;
        let fabric = Fabric::open(&info)?;
        let domain = Domain::open(&fabric)?;
        let cq = Cq::open(&domain, &CqOptions::default())?;
        let av = Av::open(&domain)?;
        let ep = Endpoint::open(&domain, &cq, &av)?;
        Ok(RawEndpoint {
            ep,
            av,
            cq,
            domain,
            _fabric: fabric,
        })
    }

    /// A zeroed page-aligned buffer of `len` bytes registered for every access and bound to
    /// the endpoint.
    pub fn register(&self, len: usize) -> Result<MemoryRegion<PageBuf>, CeilingError> {
        let buf = PageBuf::new(len).ok_or(CeilingError::Alloc(len))?;
        let mut mr = MemoryRegion::register(&self.domain, buf, Access::ALL)?;
        mr.bind(&self.ep)?;
        Ok(mr)
    }

    /// Nothing completed: [`idle`] with the engine's default spindown.
    fn idle(&self, last_work: Instant) {
        idle(&self.cq, last_work, SPINDOWN);
    }
}

/// The engine's default idle wait, for loops that poll `cq` themselves: within `spindown`
/// after `last_work`, yield the core; then block on the CQ's wait fd for at most 10 ms
/// (`fi_trywait` + `poll`), or, on a provider without one (shm), nap 50 µs.
pub fn idle(cq: &Cq, last_work: Instant, spindown: Duration) {
    if last_work.elapsed() < spindown {
        return std::thread::yield_now();
    }
    match cq.wait_fd() {
        Some(fd) if cq.trywait().unwrap_or(false) => {
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one live pollfd for the duration of the call; 10 ms at most, so the
            // caller's own stop conditions are seen soon.
            unsafe { libc::poll(&mut pfd, 1, 10) };
        }
        Some(_) => {}
        None => std::thread::sleep(NAP),
    }
}

/// Measures raw RMA reads as `spec` says (see the module documentation).
pub fn measure_read(spec: &ReadSpec) -> Result<ReadCeiling, CeilingError> {
    if spec.size == 0 || spec.in_flight == 0 {
        return Err(CeilingError::BadSpec(format!(
            "size {} and in_flight {} must both be at least 1",
            spec.size, spec.in_flight
        )));
    }
    let size = spec.size as u64;
    let total = spec.bytes.div_ceil(size).max(spec.in_flight as u64);
    let fresh_len = match spec.landing {
        Landing::Reused => 0,
        Landing::Fresh => usize::try_from(total.checked_mul(size).ok_or_else(|| {
            CeilingError::BadSpec(format!("{total} reads of {size} bytes overflow"))
        })?)
        .map_err(|_| CeilingError::BadSpec(format!("{total} reads of {size} bytes")))?,
    };

    let target = RawEndpoint::open(&spec.provider)?;
    let mut source = target.register(spec.size)?;
    for (b, v) in source.as_mut_slice().iter_mut().zip(pattern(spec.size)) {
        *b = v;
    }
    let region = source.remote()?;
    let target_addr = target.ep.address()?;

    let initiator = RawEndpoint::open(&spec.provider)?;
    let peer = initiator.av.insert(&target_addr)?;
    // The target also knows the initiator (rxm answers over the connection either way).
    target.av.insert(&initiator.ep.address()?)?;

    let cpus = allowed_cpus();
    let target_cpu = cpus.get(1).copied();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let target_thread = std::thread::Builder::new()
        .name("raw-ceiling-target".into())
        .spawn(move || -> Result<(), Error> {
            if let Some(cpu) = target_cpu {
                pin(&[cpu]);
            }
            let mut out: Vec<Completion> = Vec::new();
            let mut last_work = Instant::now();
            while !stop2.load(Ordering::Acquire) {
                out.clear();
                if target.cq.read(&mut out, 16)? > 0 {
                    last_work = Instant::now();
                } else {
                    target.idle(last_work);
                }
            }
            // The source region closes before its endpoint (it holds the endpoint alive).
            drop(source);
            Ok(())
        })
        .map_err(|e| CeilingError::Target(e.to_string()))?;

    if target_cpu.is_some() {
        pin(&cpus[..1]);
    }
    let result = initiate(&initiator, spec, peer, region, total, fresh_len);
    if target_cpu.is_some() {
        pin(&cpus);
    }
    stop.store(true, Ordering::Release);
    let joined = target_thread
        .join()
        .map_err(|_| CeilingError::Target("panicked".into()))?;
    let ceiling = result?;
    joined.map_err(|e| CeilingError::Target(e.to_string()))?;
    Ok(ceiling)
}

/// The CPUs this thread may run on (empty if unknown).
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_getaffinity writes at most its
    // size into it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 is this thread; the size is the set's.
    let r = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if r != 0 {
        return Vec::new();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` is below CPU_SETSIZE.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

/// Restricts this thread to `cpus` (best effort: a failure leaves it where it was).
fn pin(cpus: &[usize]) {
    // SAFETY: as in `allowed_cpus`.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus {
        // SAFETY: `cpu` came from `allowed_cpus`, so it is below CPU_SETSIZE.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // SAFETY: pid 0 is this thread; the set is initialised and of the size given.
    unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
}

/// The initiator's loop: keeps `spec.in_flight` reads posted until `total` are done.
fn initiate(
    side: &RawEndpoint,
    spec: &ReadSpec,
    peer: crate::PeerAddr,
    region: crate::RemoteRegion,
    total: u64,
    fresh_len: usize,
) -> Result<ReadCeiling, CeilingError> {
    let size = spec.size;
    let reused: Vec<MemoryRegion<PageBuf>> = match spec.landing {
        Landing::Reused => (0..spec.in_flight)
            .map(|_| side.register(size))
            .collect::<Result<_, _>>()?,
        Landing::Fresh => Vec::new(),
    };
    let fresh = match spec.landing {
        Landing::Fresh => Some(side.register(fresh_len)?),
        Landing::Reused => None,
    };
    let outcome = run_reads(side, spec, peer, &region, total, &reused, fresh.as_ref());
    if outcome.is_err() {
        // Reads may still be posted into these buffers: keep them (and their registrations)
        // for the rest of the process rather than free memory the provider may still write.
        std::mem::forget(reused);
        std::mem::forget(fresh);
        return outcome;
    }
    // Untimed: every landed byte must be the source's, or the figure measured nothing.
    let landed: Vec<&[u8]> = match &fresh {
        Some(f) => f.as_slice()[..fresh_len].chunks(size).collect(),
        None => reused.iter().map(|b| &b.as_slice()[..size]).collect(),
    };
    for (i, chunk) in landed.iter().enumerate() {
        if let Some(at) = chunk.iter().zip(pattern(size)).position(|(a, b)| *a != b) {
            return Err(CeilingError::Corrupt {
                read: i as u64,
                offset: at,
            });
        }
    }
    outcome
}

/// The source's bytes: `1 + i % 251`, never zero (a read that landed nothing shows).
fn pattern(len: usize) -> impl Iterator<Item = u8> {
    (0..len).map(|i| (i % 251) as u8 + 1)
}

fn run_reads(
    side: &RawEndpoint,
    spec: &ReadSpec,
    peer: crate::PeerAddr,
    region: &crate::RemoteRegion,
    total: u64,
    reused: &[MemoryRegion<PageBuf>],
    fresh: Option<&MemoryRegion<PageBuf>>,
) -> Result<ReadCeiling, CeilingError> {
    let size = spec.size;
    let start = Instant::now();
    let deadline = start + spec.deadline;
    let timeout = |done| CeilingError::Timeout {
        done,
        total,
        deadline: spec.deadline,
    };
    let mut out: Vec<Completion> = Vec::new();
    let (mut posted, mut done) = (0u64, 0u64);
    let mut last_work = start;
    // Posts read number `n` into slot `slot` (its op id), retrying -FI_EAGAIN while polling
    // (completions polled meanwhile stay in `out`). `false`: the deadline passed.
    let post = |n: u64, slot: usize, out: &mut Vec<Completion>| -> Result<bool, CeilingError> {
        let seg = match fresh {
            Some(f) => {
                let at = n as usize * size;
                if spec.populate {
                    crate::populate(&f.as_slice()[at..at + size]);
                }
                f.local(at..at + size)?
            }
            None => reused[slot].local(0..size)?,
        };
        loop {
            // SAFETY: the segment's region (`reused` or `fresh`) outlives every posted read:
            // the caller frees them only after every read completed, and leaks them otherwise.
            let r = unsafe {
                side.ep.post_read(
                    std::slice::from_ref(&seg),
                    peer,
                    std::slice::from_ref(region),
                    slot as u64,
                )
            };
            match r {
                Ok(()) => return Ok(true),
                Err(e) if e.is_retryable() => {
                    side.cq.read(out, 64)?;
                    if Instant::now() > deadline {
                        return Ok(false);
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    for slot in 0..spec.in_flight.min(total as usize) {
        if !post(posted, slot, &mut out)? {
            return Err(timeout(done));
        }
        posted += 1;
    }
    while done < total {
        side.cq.read(&mut out, 64)?;
        if out.is_empty() {
            if Instant::now() > deadline {
                return Err(timeout(done));
            }
            side.idle(last_work);
            continue;
        }
        last_work = Instant::now();
        for c in std::mem::take(&mut out) {
            c.result.map_err(CeilingError::Read)?;
            done += 1;
            if posted < total {
                if !post(posted, c.op_id as usize, &mut out)? {
                    return Err(timeout(done));
                }
                posted += 1;
            }
        }
    }
    Ok(ReadCeiling {
        bytes: done * size as u64,
        seconds: start.elapsed().as_secs_f64(),
    })
}
