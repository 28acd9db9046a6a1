//! Releases shm region locks held by processes that died holding them.
//!
//! libfabric's shm provider (1.17 to 1.19: region layout versions 4 and 5) guards each
//! endpoint's region, a file in `/dev/shm` that the owner and its peers map, with a
//! `pthread_spinlock_t` inside the region. In 1.17 the owner takes it whenever it progresses
//! its queues (every `fi_cq_read` after a peer signalled it); a sender takes the *receiver's*
//! lock for every send and RMA (and holds it during a whole CMA copy). (1.18 and 1.19 moved the
//! command queue to an atomic queue; the lock still guards the inject and SAR pools.) A process killed (`kill -9`, the OOM killer) while it holds one
//! leaves it held for good, and every later call that needs it spins in `pthread_spin_lock`
//! forever: a reader of a killed peer's memory hangs in `fi_read`, and a server whose client
//! died in the middle of a send hangs in its own `fi_cq_read`, for every client. (Found as a
//! hang of `two_process::reads_from_a_killed_peer_fail_without_hanging`, about 1 run in 100;
//! `gdb` showed the reader in `__pthread_spin_lock` under `fi_read`.) No deadline of ours can
//! end a spin inside the provider.
//!
//! So every shm endpoint this process opens, and every shm peer it inserts in an address
//! vector, has its region's first page mapped here as well, and one monitor thread per process
//! samples their lock words every [`SAMPLE_EVERY`](crate::shm_lock_watch::SAMPLE_EVERY), and
//! watches a lock held at two samples in a row for a release in between. A lock that [`Watch`]
//! finds stuck (held, without a single release, for long enough) is released (the spin lock's word set back to free), with a
//! line on stderr and a count in [`shm_locks_released`]. The spinning call then goes on and
//! fails the way calls to a dead peer fail (its CMA copy gets `ESRCH`), or succeeds when the
//! lock was this process's own.
//!
//! Region layout read here (x86_64, glibc), the fields of `struct smr_region` before the lock,
//! identical in libfabric 1.17 to 1.19:
//!
//! ```text
//! offset  0  u8   version (4 or 5; anything else: the region is not watched)
//! offset  4  i32  pid of the owner (must match the pid in the region's name)
//! offset 24  i32  lock: glibc x86_64 pthread_spinlock_t, 1 = free, <= 0 = held
//! ```
//!
//! A peer's region is watched only if its owner pid maps it (`/proc/<pid>/maps`) when it is
//! inserted: in another pid namespace sharing `/dev/shm`, the pid would name some other
//! process, and its death (or life) would say nothing about the owner's.
//!
//! What a release can break: a sender that was *stopped* (SIGSTOP, a debugger) inside a send
//! to this process for longer than [`OWN_HOLD`](crate::shm_lock_watch::OWN_HOLD), just after
//! another peer of this process died, loses its lock; the region's command queue may then see two writers. A dead peer's region is only
//! written by its senders, which fail at once on the dead pid.

use std::collections::HashMap;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use crate::address::Address;
use crate::shm_lock_watch::{
    Probe, Side, Verdict, Watch, BURST, DEATH_CHECK_EVERY, DEATH_WINDOW, SAMPLE_EVERY,
};

/// Region layout versions whose lock is at [`LOCK_OFFSET`].
const KNOWN_VERSIONS: [u8; 2] = [4, 5];
const PID_OFFSET: usize = 4;
const LOCK_OFFSET: usize = 24;
/// glibc's x86_64 `pthread_spin_unlock` stores 1; `pthread_spin_lock` decrements.
const SPIN_FREE: i32 = 1;
/// Bytes mapped per region (the fields above).
const MAP_LEN: usize = 4096;

/// The platforms whose spin lock is the one described above.
const SUPPORTED: bool = cfg!(all(target_arch = "x86_64", target_env = "gnu"));

static RELEASED: AtomicU64 = AtomicU64::new(0);

/// How many stuck shm region locks this process has released (see the module docs).
pub fn shm_locks_released() -> u64 {
    RELEASED.load(Ordering::Relaxed)
}

/// The region file of a shm address (`fi_shm://<pid>:<uid>:<n>`, NUL-padded), with the pid of
/// its owner. `None` for anything else: nothing outside `/dev/shm` is ever opened.
pub(crate) fn region_path(addr: &Address) -> Option<(PathBuf, u32)> {
    let bytes = addr.bytes();
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let text = std::str::from_utf8(&bytes[..end]).ok()?;
    let name = text.strip_prefix("fi_shm://")?;
    let pid = crate::shm_names::name_pid(name)?;
    Some((Path::new("/dev/shm").join(name), pid))
}

#[doc(hidden)]
/// Fault injection for tests: takes the spin lock of the shm region of `addr` and never
/// releases it (the mapping is leaked), which is what a process killed inside the provider's
/// critical section leaves behind. Kill the calling process afterwards. Waits at most
/// `within` for the lock to come free; fails on an address that is not a shm region of a known
/// layout, or on a platform this module does not watch.
pub fn hold_shm_region_lock(addr: &Address, within: std::time::Duration) -> std::io::Result<()> {
    use std::io::{Error, ErrorKind};
    if !SUPPORTED {
        return Err(Error::new(ErrorKind::Unsupported, "not x86_64 glibc"));
    }
    let (path, pid) = region_path(addr)
        .ok_or_else(|| Error::new(ErrorKind::InvalidInput, "not a shm address"))?;
    let map = Mapping::open(&path, pid).ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidData,
            format!("{}: not a shm region of a known layout", path.display()),
        )
    })?;
    let start = Instant::now();
    while map.try_lock().is_err() {
        if start.elapsed() > within {
            return Err(Error::new(ErrorKind::TimedOut, "the lock never came free"));
        }
        std::hint::spin_loop();
    }
    std::mem::forget(map);
    Ok(())
}

/// The first page of a region, mapped shared.
struct Mapping {
    ptr: *mut u8,
    /// The inode of the mapped file: a region recreated under the same name is another file.
    ino: u64,
}

// SAFETY: the mapping is plain shared memory; the lock word is only accessed atomically.
unsafe impl Send for Mapping {}

impl Mapping {
    /// Maps `path` if it holds a region of a known layout owned by `pid`.
    fn open(path: &Path, pid: u32) -> Option<Mapping> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .ok()?;
        let meta = file.metadata().ok()?;
        if !meta.is_file() || meta.len() < MAP_LEN as u64 {
            return None;
        }
        // SAFETY: a new shared mapping of an open regular file at least MAP_LEN long; the
        // kernel picks the address. The mapping stays valid after `file` is closed.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                MAP_LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return None;
        }
        let m = Mapping {
            ptr: ptr.cast(),
            ino: std::os::unix::fs::MetadataExt::ino(&meta),
        };
        // SAFETY: offsets 0 and PID_OFFSET..+4 are inside the MAP_LEN mapped bytes; the owner
        // wrote them before it published its name.
        let (version, owner) = unsafe {
            (
                m.ptr.read_volatile(),
                m.ptr.add(PID_OFFSET).cast::<i32>().read_unaligned(),
            )
        };
        let word = m.lock_word().load(Ordering::Relaxed);
        let plausible = word <= SPIN_FREE;
        (KNOWN_VERSIONS.contains(&version) && u32::try_from(owner) == Ok(pid) && plausible)
            .then_some(m)
    }

    fn lock_word(&self) -> &AtomicI32 {
        // SAFETY: LOCK_OFFSET is 4-byte aligned inside the page-aligned mapping, which lives as
        // long as `self`; other processes access the word atomically too (lock decl, movl).
        unsafe { AtomicI32::from_ptr(self.ptr.add(LOCK_OFFSET).cast()) }
    }

    /// `pthread_spin_trylock`: takes the lock if it is free (1 -> 0); otherwise the word.
    fn try_lock(&self) -> Result<(), i32> {
        self.lock_word()
            .compare_exchange(SPIN_FREE, 0, Ordering::AcqRel, Ordering::Acquire)
            .map(drop)
    }

    fn is_locked(&self) -> bool {
        self.lock_word().load(Ordering::Acquire) < SPIN_FREE
    }

    /// Watches the lock for `d`: true if it stayed held without a single release. In a tight
    /// loop it tries to take the lock the way `pthread_spin_trylock` does (1 -> 0): taking it
    /// proves it free, and it is given back at once (the protected data is not touched, so
    /// mutual exclusion holds). Trying, rather than only reading, steals the cache line from a
    /// live holder that releases and takes the lock again back to back, whose free moment a
    /// reader could miss every time. A word that goes up also shows a release (waiters only
    /// decrement it; a release sets it to 1 and the next taker to 0 or below).
    fn held_through(&self, d: std::time::Duration) -> bool {
        let w = self.lock_word();
        let mut prev = w.load(Ordering::Acquire);
        let end = Instant::now() + d;
        let mut n = 0u32;
        loop {
            match self.try_lock() {
                Ok(_) => {
                    // pthread_spin_unlock: store 1, whatever waiters did meanwhile.
                    w.store(SPIN_FREE, Ordering::Release);
                    return false;
                }
                Err(v) if v > prev => return false,
                Err(v) => prev = v,
            }
            n = n.wrapping_add(1);
            if n.is_multiple_of(64) && Instant::now() >= end {
                return true;
            }
        }
    }

    /// Sets a held lock back to free; false if it was freed meanwhile.
    fn release(&self) -> bool {
        let w = self.lock_word();
        let mut cur = w.load(Ordering::Acquire);
        while cur < SPIN_FREE {
            match w.compare_exchange(cur, SPIN_FREE, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return true,
                Err(now) => cur = now,
            }
        }
        false
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: mapped by `open` with MAP_LEN bytes, unmapped once.
        unsafe { libc::munmap(self.ptr.cast(), MAP_LEN) };
    }
}

/// The start time of process `pid` (field 22 of `/proc/<pid>/stat`), `None` if it is gone or a
/// zombie.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// True when process `pid` maps the file `path` with inode `ino` (a line of
/// `/proc/<pid>/maps` with that inode ends with the path, possibly followed by ` (deleted)`):
/// the pid in a peer's region is then its owner as this process sees it, and its liveness can
/// be checked. A pid that does not map its region (an owner in another pid namespace sharing
/// `/dev/shm`, a forged name) is not watched: its `/proc` entry would say nothing about the
/// owner. The inode tells a region from another one created later under the same name.
fn maps_file(pid: u32, path: &Path, ino: u64) -> bool {
    use std::io::BufRead;
    use std::os::unix::ffi::OsStrExt;
    let Ok(f) = std::fs::File::open(format!("/proc/{pid}/maps")) else {
        return false;
    };
    let want = path.as_os_str().as_bytes();
    let ino = ino.to_string();
    std::io::BufReader::new(f)
        .split(b'\n')
        .map_while(Result::ok)
        .any(|line| {
            let named = {
                let l = line.strip_suffix(b" (deleted)").unwrap_or(&line);
                l.len() > want.len() && l.ends_with(want) && l[l.len() - want.len() - 1] == b' '
            };
            // address perms offset dev inode path
            named
                && line
                    .split(|b| *b == b' ')
                    .filter(|f| !f.is_empty())
                    .nth(4)
                    .is_some_and(|f| f == ino.as_bytes())
        })
}

struct Region {
    map: Mapping,
    name: String,
    pid: u32,
    /// The owner's start time when the region was first watched: another process that got
    /// its pid later does not make it alive.
    start: Option<u64>,
    watch: Watch,
    refs: usize,
    /// A peer's region: whether and when its owner was found dead (checked every
    /// [`DEATH_CHECK_EVERY`]).
    owner: Owner,
}

/// What the monitor knows of a peer region's owner.
#[derive(Clone, Copy)]
enum Owner {
    /// Alive when last checked (or this process's own region: never checked).
    Alive,
    /// Found dead at this time: evidence for a stuck lock of our own for [`DEATH_WINDOW`].
    DiedAt(Instant),
    /// Already dead when the region was first watched: no evidence.
    DeadWhenWatched,
}

#[derive(Default)]
struct Registry {
    regions: HashMap<(PathBuf, bool), Region>,
    monitor_started: bool,
}

struct Shared {
    registry: Mutex<Registry>,
    wake: Condvar,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| Shared {
        registry: Mutex::new(Registry::default()),
        wake: Condvar::new(),
    })
}

fn lock(s: &Shared) -> MutexGuard<'_, Registry> {
    s.registry.lock().unwrap_or_else(|e| e.into_inner())
}

/// Keeps a region watched while it lives.
pub(crate) struct Ticket {
    key: (PathBuf, bool),
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut reg = lock(shared());
        if let Some(r) = reg.regions.get_mut(&self.key) {
            r.refs -= 1;
            if r.refs == 0 {
                reg.regions.remove(&self.key);
            }
        }
    }
}

/// Environment variable that turns the monitor off (`off` or `0`), for a node where the
/// caveat above matters more than a dead peer's lock.
pub const SHM_LOCK_MONITOR_ENV: &str = "DIASPORA_SHM_LOCK_MONITOR";

fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        SUPPORTED
            && !matches!(
                std::env::var(SHM_LOCK_MONITOR_ENV).as_deref(),
                Ok("off" | "0")
            )
    })
}

/// Watches the region of a shm endpoint of this process (`own`) or of a peer. `None` when the
/// address is not a shm region of a known layout, on a platform whose spin lock is not the
/// one described above, or with the monitor turned off ([`SHM_LOCK_MONITOR_ENV`]).
pub(crate) fn watch(addr: &Address, own: bool) -> Option<Ticket> {
    if !enabled() {
        return None;
    }
    let (path, pid) = region_path(addr)?;
    watch_path(path, pid, own, !own)
}

/// [`watch`] for a region file; with `check_owner`, only if `pid` maps it ([`maps_file`]).
fn watch_path(path: PathBuf, pid: u32, own: bool, check_owner: bool) -> Option<Ticket> {
    let key = (path, own);
    let s = shared();
    {
        let mut reg = lock(s);
        if let Some(r) = reg.regions.get_mut(&key) {
            r.refs += 1;
            return Some(Ticket { key });
        }
    }
    // Opened and checked outside the registry lock (file system calls).
    let map = Mapping::open(&key.0, pid)?;
    if check_owner && !maps_file(pid, &key.0, map.ino) {
        return None;
    }
    let start = start_time(pid);
    let name = key.0.file_name()?.to_string_lossy().into_owned();
    let mut reg = lock(s);
    reg.regions
        .entry(key.clone())
        .and_modify(|r| r.refs += 1)
        .or_insert_with(|| Region {
            map,
            name,
            pid,
            start,
            watch: Watch::new(if own { Side::Own } else { Side::Peer }),
            refs: 1,
            owner: if !own && start.is_none() {
                Owner::DeadWhenWatched
            } else {
                Owner::Alive
            },
        });
    if !reg.monitor_started {
        reg.monitor_started = std::thread::Builder::new()
            .name("diaspora-shm-locks".into())
            .spawn(monitor)
            .is_ok();
    }
    drop(reg);
    s.wake.notify_one();
    Some(Ticket { key })
}

/// The monitor thread: samples every watched lock, releases the stuck ones, sleeps while
/// nothing is watched.
fn monitor() {
    let s = shared();
    let mut released = Vec::new();
    let mut deaths_checked: Option<Instant> = None;
    loop {
        let mut reg = lock(s);
        while reg.regions.is_empty() {
            reg = s.wake.wait(reg).unwrap_or_else(|e| e.into_inner());
        }
        let now = Instant::now();
        if deaths_checked.is_none_or(|t| now.duration_since(t) >= DEATH_CHECK_EVERY) {
            deaths_checked = Some(now);
            for ((path, own), r) in reg.regions.iter_mut() {
                let alive = matches!(r.owner, Owner::Alive);
                if !*own && alive && owner_gone(r.pid, path, r.map.ino, &mut r.start) {
                    r.owner = Owner::DiedAt(now);
                }
            }
        }
        let a_peer_died_recently = reg
            .regions
            .values()
            .any(|r| matches!(r.owner, Owner::DiedAt(t) if now.duration_since(t) <= DEATH_WINDOW));
        for ((path, own), r) in reg.regions.iter_mut() {
            let Region {
                map,
                name,
                pid,
                start,
                watch,
                ..
            } = r;
            let locked = map.is_locked();
            let mut probe = RegionProbe {
                map,
                path,
                pid: *pid,
                start,
                a_peer_died_recently,
            };
            if watch.observe(locked, now, &mut probe) == Verdict::Release && map.release() {
                RELEASED.fetch_add(1, Ordering::Relaxed);
                released.push((name.clone(), *pid, *own));
            }
        }
        drop(reg);
        // Printed without the registry lock: a blocked or closed stderr must not stall the
        // endpoints and address vectors that register and drop watches.
        for (name, pid, own) in released.drain(..) {
            let whose = if own {
                "this process's own region, held without a release for 2 s after a peer died"
            } else {
                "a peer's region, whose owner died holding it"
            };
            let _ = writeln!(
                std::io::stderr(),
                "diaspora-fabric: shm: released the lock of /dev/shm/{name} ({whose}; owner pid {pid})"
            );
        }
        std::thread::sleep(SAMPLE_EVERY);
    }
}

/// What the monitor looks at for one region beyond its lock word.
struct RegionProbe<'a> {
    map: &'a Mapping,
    path: &'a Path,
    pid: u32,
    start: &'a mut Option<u64>,
    a_peer_died_recently: bool,
}

impl Probe for RegionProbe<'_> {
    fn held_through_burst(&mut self) -> bool {
        self.map.held_through(BURST)
    }

    fn owner_dead(&mut self) -> bool {
        owner_gone(self.pid, self.path, self.map.ino, self.start)
    }

    fn a_peer_died_recently(&mut self) -> bool {
        self.a_peer_died_recently
    }
}

/// True when the owner `pid` of the region at `path`, which had start time `start` when first
/// watched, is gone: no process, a zombie, or another process with its pid that does not map
/// the region. (libfabric reuses an existing name's file for a new endpoint with that name: a
/// new process with the pid that maps it is the region's live owner, and becomes the one
/// checked.)
fn owner_gone(pid: u32, path: &Path, ino: u64, start: &mut Option<u64>) -> bool {
    let now = start_time(pid);
    if now.is_none() {
        return true;
    }
    if now == *start {
        return false;
    }
    if maps_file(pid, path, ino) {
        *start = now;
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shm(bytes: &[u8]) -> Address {
        Address::new("shm", bytes.to_vec()).expect("address")
    }

    #[test]
    fn only_shm_names_map_to_region_files() {
        let mut b = b"fi_shm://123:1000:7".to_vec();
        b.resize(64, 0);
        assert_eq!(
            region_path(&shm(&b)),
            Some((PathBuf::from("/dev/shm/123:1000:7"), 123))
        );
        for bad in [
            &b"fi_shm://../../etc/passwd"[..],
            b"fi_shm://123:1000",
            b"fi_shm://123:1000:7/x",
            b"fi_sockaddr_in://127.0.0.1:80",
            b"123:1000:7",
            b"fi_shm://\xff:1:2",
        ] {
            assert_eq!(region_path(&shm(bad)), None, "{bad:?}");
        }
    }

    /// A fake region file: version 4, owner `pid`, lock word `lock`.
    fn fake_region(tag: &str, pid: u32, version: u8, lock: i32) -> PathBuf {
        let p =
            std::env::temp_dir().join(format!("diaspora-shm-locks-{}-{tag}", std::process::id()));
        let mut b = vec![0u8; MAP_LEN];
        b[0] = version;
        b[PID_OFFSET..PID_OFFSET + 4].copy_from_slice(&(pid as i32).to_ne_bytes());
        b[LOCK_OFFSET..LOCK_OFFSET + 4].copy_from_slice(&lock.to_ne_bytes());
        std::fs::write(&p, b).expect("write a fake region");
        p
    }

    fn lock_word(p: &Path) -> i32 {
        let b = std::fs::read(p).expect("read the fake region");
        i32::from_ne_bytes(b[LOCK_OFFSET..LOCK_OFFSET + 4].try_into().expect("4 bytes"))
    }

    /// The pid of a process that has exited and been reaped.
    fn dead_pid() -> u32 {
        let mut c = std::process::Command::new("true").spawn().expect("spawn");
        let pid = c.id();
        c.wait().expect("wait");
        pid
    }

    fn wait_for_word(p: &Path, want: i32, within: std::time::Duration) -> i32 {
        let start = Instant::now();
        loop {
            let w = lock_word(p);
            if w == want || start.elapsed() > within {
                return w;
            }
            std::thread::sleep(SAMPLE_EVERY);
        }
    }

    #[test]
    fn a_dead_owners_held_lock_is_released() {
        let pid = dead_pid();
        let p = fake_region("dead", pid, 4, -1);
        let t = watch_path(p.clone(), pid, false, false).expect("watched");
        let w = wait_for_word(&p, SPIN_FREE, std::time::Duration::from_secs(10));
        drop(t);
        let _ = std::fs::remove_file(&p);
        assert_eq!(w, SPIN_FREE, "the lock of a dead owner stayed held");
    }

    #[test]
    fn a_live_owners_held_lock_is_kept() {
        let pid = std::process::id();
        let p = fake_region("live", pid, 5, 0);
        let t = watch_path(p.clone(), pid, false, false).expect("watched");
        // Ten times the hold after which a dead owner's lock goes.
        std::thread::sleep(crate::shm_lock_watch::PEER_HOLD * 10);
        let w = lock_word(&p);
        drop(t);
        let _ = std::fs::remove_file(&p);
        assert_eq!(w, 0, "the lock of a live owner was released");
    }

    #[test]
    fn an_own_region_stuck_after_a_peer_died_is_released() {
        let pid = std::process::id();
        // A peer of this process that dies: what explains a stuck lock of our own.
        let mut peer = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let pp = fake_region("peer-of-own", peer.id(), 4, 1);
        let pt = watch_path(pp.clone(), peer.id(), false, false).expect("peer watched");
        let _ = peer.kill();
        let _ = peer.wait();
        let p = fake_region("own", pid, 4, 0);
        let t = watch_path(p.clone(), pid, true, false).expect("watched");
        let w = wait_for_word(&p, SPIN_FREE, std::time::Duration::from_secs(20));
        drop((t, pt));
        let _ = std::fs::remove_file(&p);
        let _ = std::fs::remove_file(&pp);
        assert_eq!(
            w, SPIN_FREE,
            "a lock held for good in our own region stayed held"
        );
    }

    /// A live holder that takes and releases our own lock back to back for 3 s (more than
    /// `OWN_HOLD`): held at nearly every sample, never stuck. Each of its releases checks
    /// that the word was still its own (0): a release by the monitor under it would show.
    #[test]
    fn a_lock_busy_with_a_live_holder_is_never_released() {
        let pid = std::process::id();
        let p = fake_region("busy", pid, 4, 1);
        let t = watch_path(p.clone(), pid, true, false).expect("watched");
        let holder = {
            let p = p.clone();
            std::thread::spawn(move || {
                let m = Mapping::open(&p, std::process::id()).expect("map");
                let w = m.lock_word();
                let (mut rounds, mut stolen) = (0u64, 0u64);
                let end = Instant::now() + std::time::Duration::from_secs(3);
                while Instant::now() < end {
                    while w
                        .compare_exchange(SPIN_FREE, 0, Ordering::AcqRel, Ordering::Relaxed)
                        .is_err()
                    {
                        std::hint::spin_loop();
                    }
                    // Hold it for about 20 µs, then release and take it again at once.
                    let until = Instant::now() + std::time::Duration::from_micros(20);
                    while Instant::now() < until {
                        std::hint::spin_loop();
                    }
                    if w.compare_exchange(0, SPIN_FREE, Ordering::AcqRel, Ordering::Relaxed)
                        .is_err()
                    {
                        stolen += 1;
                        w.store(SPIN_FREE, Ordering::Release);
                    }
                    rounds += 1;
                }
                (rounds, stolen)
            })
        };
        let (rounds, stolen) = holder.join().expect("holder thread");
        drop(t);
        let _ = std::fs::remove_file(&p);
        assert!(rounds > 1000, "the holder ran {rounds} rounds");
        assert_eq!(stolen, 0, "the monitor released a live holder's lock");
    }

    #[test]
    fn unknown_layouts_and_owners_are_not_watched() {
        let pid = std::process::id();
        let v = fake_region("v9", pid, 9, 1);
        assert!(
            watch_path(v.clone(), pid, false, false).is_none(),
            "version 9"
        );
        let o = fake_region("other", pid, 4, 1);
        assert!(
            watch_path(o.clone(), pid + 1, false, false).is_none(),
            "pid mismatch"
        );
        // A live process that does not map the region it would own: not watched.
        let mut sleeper = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let s = fake_region("sleeper", sleeper.id(), 4, 1);
        let watched = watch_path(s.clone(), sleeper.id(), false, true).is_some();
        let _ = sleeper.kill();
        let _ = sleeper.wait();
        let _ = std::fs::remove_file(&s);
        assert!(!watched, "owner not mapping it");
        let _ = std::fs::remove_file(&v);
        let _ = std::fs::remove_file(&o);
        assert!(watch_path(PathBuf::from("/nonexistent/1:2:3"), pid, false, false).is_none());
    }

    #[test]
    fn an_owner_is_one_that_maps_its_region() {
        let pid = std::process::id();
        let p = fake_region("mapped", pid, 4, 1);
        let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&p).expect("stat"));
        assert!(!maps_file(pid, &p, ino), "not mapped yet");
        let f = std::fs::File::open(&p).expect("open");
        // SAFETY: a shared read-only mapping of an open file of MAP_LEN bytes, unmapped below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                MAP_LEN,
                libc::PROT_READ,
                libc::MAP_SHARED,
                std::os::fd::AsRawFd::as_raw_fd(&f),
                0,
            )
        };
        assert_ne!(ptr, libc::MAP_FAILED);
        assert!(maps_file(pid, &p, ino), "mapped by this process");
        assert!(
            !maps_file(pid, &p, ino + 1),
            "another file under the same name"
        );
        // Deleted while mapped: still its owner.
        std::fs::remove_file(&p).expect("remove");
        assert!(maps_file(pid, &p, ino), "mapped after its name is removed");
        // A path that is a suffix of the mapped one is not it.
        let tail = PathBuf::from(p.file_name().expect("name"));
        assert!(
            !maps_file(pid, &tail, ino),
            "a suffix without its directory"
        );
        // SAFETY: mapped above with MAP_LEN bytes, unmapped once.
        unsafe { libc::munmap(ptr, MAP_LEN) };
        assert!(!maps_file(pid, &p, ino), "unmapped");
    }
}
