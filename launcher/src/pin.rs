//! Where the progress threads run: one CPU each, inside the CPU set the launcher gave this
//! process, never on another rank's CPUs.
//!
//! [`plan`] is pure: it takes the CPUs this process may use (with their cores), the number
//! of threads and how the node is shared, and returns a [`Layout`]. [`Layout::pin_current`]
//! is the call a progress thread makes to pin itself (`sched_setaffinity` on the calling
//! thread, checked by reading the mask back).
//!
//! Rules, in order:
//! 1. Start from the process's affinity mask (what `srun --cpu-bind`, `mpirun --bind-to` or
//!    `taskset` gave), never from the machine's CPU list: pinning "core i of the machine"
//!    escapes the launcher's binding.
//! 2. If several ranks share the node and each was given the same whole mask (the launcher
//!    did not bind them: `--cpu-bind=none`, `--bind-to none`), split the mask into
//!    `local_size` disjoint parts by core and keep part `local_rank`
//!    ([`Sharing::Auto`] does this when the mask is the whole cgroup cpuset, or every online
//!    CPU).
//! 3. Give each thread a CPU of a different core first (SMT siblings last).
//! 4. More threads than CPUs: threads share CPUs round-robin, and the layout says so.

use std::collections::BTreeMap;
use std::fmt;
use std::io;

/// One CPU (processing unit) and the core it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cpu {
    /// The OS CPU number.
    pub id: u32,
    /// (package, core) as the kernel numbers them; SMT siblings share it.
    pub core: (u32, u32),
}

/// How this rank shares the node with the job's other ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    /// Split when this rank's mask is every online CPU and there are other local ranks.
    Auto,
    /// Always split the mask among the local ranks.
    Split,
    /// Never split: the launcher bound each rank to its own CPUs.
    Whole,
}

/// What to plan for.
#[derive(Debug, Clone, Copy)]
pub struct PinRequest {
    /// Progress threads.
    pub threads: usize,
    /// This rank's index among the ranks of its node.
    pub local_rank: u32,
    /// Ranks of the job on this node.
    pub local_size: u32,
    /// How the node is shared.
    pub sharing: Sharing,
}

/// The chosen CPU of every thread, printable for the server's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// CPU of thread `i`.
    pub cpus: Vec<u32>,
    /// The process's mask as the launcher gave it.
    pub allowed: Vec<u32>,
    /// The part of it this rank uses (after splitting).
    pub mine: Vec<u32>,
    /// `Some((local_rank, local_size))` if the mask was split among local ranks.
    pub split: Option<(u32, u32)>,
    /// Whether some threads share a CPU (more threads than CPUs).
    pub shared: bool,
    /// How the topology was read and how threads are bound.
    pub backend: Backend,
}

/// How the topology is read and threads are bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// sysfs topology, `sched_setaffinity`.
    Sched,
    /// libhwloc (cargo feature `hwloc`).
    Hwloc,
}

/// Why threads cannot be pinned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PinError {
    /// The affinity mask is empty (cannot happen for a running process, but is refused).
    #[error("this process may run on no CPU")]
    NoCpus,
    /// Zero threads asked.
    #[error("no progress threads requested")]
    NoThreads,
    /// `local_rank` is not below `local_size`.
    #[error("local rank {local_rank} of {local_size} is out of range")]
    LocalRank {
        /// The local rank.
        local_rank: u32,
        /// The local size.
        local_size: u32,
    },
    /// A thread index past the layout.
    #[error("thread {0} is not in the layout")]
    NoSuchThread(usize),
    /// `sched_getaffinity` failed.
    #[error("sched_getaffinity failed: {0}")]
    GetAffinity(#[source] io::Error),
    /// `sched_setaffinity` failed (e.g. a cgroup cpuset refuses the CPU).
    #[error("sched_setaffinity to CPU {cpu} failed: {source}")]
    SetAffinity {
        /// The CPU.
        cpu: u32,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A libhwloc call failed (feature `hwloc`).
    #[error("hwloc: {0}")]
    Hwloc(String),
    /// The mask read back is not the one set.
    #[error("pinned to CPU {cpu} but the thread's mask reads {found:?}")]
    NotPinned {
        /// The CPU asked.
        cpu: u32,
        /// The mask read back.
        found: Vec<u32>,
    },
}

/// Plans the layout (pure). `allowed`: this process's CPUs with their cores; `online`: the
/// CPUs a process that the launcher did not bind would have (the cgroup's cpuset, else the
/// machine's online CPUs), to tell "not bound" in [`Sharing::Auto`].
pub fn plan(allowed: &[Cpu], online: &[u32], req: PinRequest) -> Result<Layout, PinError> {
    if allowed.is_empty() {
        return Err(PinError::NoCpus);
    }
    if req.threads == 0 {
        return Err(PinError::NoThreads);
    }
    let local_size = req.local_size.max(1);
    if req.local_rank >= local_size {
        return Err(PinError::LocalRank {
            local_rank: req.local_rank,
            local_size,
        });
    }
    let mut allowed: Vec<Cpu> = allowed.to_vec();
    allowed.sort_by_key(|c| (c.core, c.id));
    allowed.dedup_by_key(|c| c.id);
    // Cores in order, each with its CPUs.
    let mut cores: BTreeMap<(u32, u32), Vec<u32>> = BTreeMap::new();
    for c in &allowed {
        cores.entry(c.core).or_default().push(c.id);
    }
    let cores: Vec<Vec<u32>> = cores.into_values().collect();
    let mut ids: Vec<u32> = allowed.iter().map(|c| c.id).collect();
    ids.sort_unstable();
    let whole_machine = {
        let mut o = online.to_vec();
        o.sort_unstable();
        o.dedup();
        !o.is_empty() && o == ids
    };
    let split = local_size > 1
        && match req.sharing {
            Sharing::Split => true,
            Sharing::Whole => false,
            Sharing::Auto => whole_machine,
        };
    let my_cores: Vec<Vec<u32>> = if split {
        let n = cores.len();
        let k = local_size as usize;
        let r = req.local_rank as usize;
        if n >= k {
            // contiguous parts, the first n % k ranks one core more
            let base = n / k;
            let extra = n % k;
            let from = r * base + r.min(extra);
            let len = base + usize::from(r < extra);
            cores[from..from + len].to_vec()
        } else {
            // more ranks than cores: ranks share cores, round-robin
            vec![cores[r % n].clone()]
        }
    } else {
        cores
    };
    // One CPU per core first, then the SMT siblings.
    let depth = my_cores.iter().map(Vec::len).max().unwrap_or(0);
    let mut order = Vec::new();
    for level in 0..depth {
        for core in &my_cores {
            if let Some(&id) = core.get(level) {
                order.push(id);
            }
        }
    }
    let cpus: Vec<u32> = (0..req.threads).map(|i| order[i % order.len()]).collect();
    let mut mine = order.clone();
    mine.sort_unstable();
    let rank_shares = split && local_size as usize > count_cores(&allowed);
    Ok(Layout {
        shared: req.threads > order.len() || rank_shares,
        cpus,
        allowed: ids,
        mine,
        split: split.then_some((req.local_rank, local_size)),
        backend: Backend::Sched,
    })
}

fn count_cores(cpus: &[Cpu]) -> usize {
    let mut c: Vec<_> = cpus.iter().map(|c| c.core).collect();
    c.sort_unstable();
    c.dedup();
    c.len()
}

/// Formats a CPU list compactly: `0-3,8,10-11`.
pub fn cpu_list(ids: &[u32]) -> String {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let mut out = Vec::new();
    let mut i = 0;
    while i < ids.len() {
        let mut j = i;
        while j + 1 < ids.len() && ids[j + 1] == ids[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            ids[i].to_string()
        } else {
            format!("{}-{}", ids[i], ids[j])
        });
        i = j + 1;
    }
    out.join(",")
}

/// Parses a kernel CPU list (`0-3,8`), as in `/sys/devices/system/cpu/online`. Ranges
/// larger than 65,536 CPUs are refused.
pub fn parse_cpu_list(s: &str) -> Option<Vec<u32>> {
    let mut out = Vec::new();
    let s = s.trim();
    if s.is_empty() {
        return Some(out);
    }
    for part in s.split(',') {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<u32>().ok()?, b.parse::<u32>().ok()?),
            None => {
                let a = part.parse::<u32>().ok()?;
                (a, a)
            }
        };
        if b < a || b - a > 65_536 || out.len() > 65_536 {
            return None;
        }
        out.extend(a..=b);
    }
    Some(out)
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} progress thread(s): ", self.cpus.len())?;
        for (i, c) in self.cpus.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "thread {i} -> cpu {c}")?;
        }
        write!(f, "; process mask {}", cpu_list(&self.allowed))?;
        if let Some((r, s)) = self.split {
            write!(
                f,
                "; not bound by the launcher, split among {s} local ranks: this is local rank {r}, cpus {}",
                cpu_list(&self.mine)
            )?;
        }
        if self.shared {
            f.write_str("; SHARED: more threads (or local ranks) than cpus")?;
        }
        f.write_str(match self.backend {
            Backend::Sched => " (sysfs + sched_setaffinity)",
            Backend::Hwloc => " (hwloc)",
        })?;
        Ok(())
    }
}

impl Layout {
    /// The CPU of thread `i`.
    pub fn cpu_for(&self, i: usize) -> Option<u32> {
        self.cpus.get(i).copied()
    }

    /// Pins the calling thread to the CPU of thread `i`, and checks it by reading the
    /// mask back.
    pub fn pin_current(&self, i: usize) -> Result<u32, PinError> {
        let cpu = self.cpu_for(i).ok_or(PinError::NoSuchThread(i))?;
        match self.backend {
            Backend::Sched => set_thread_affinity(cpu)?,
            #[cfg(feature = "hwloc")]
            Backend::Hwloc => crate::hwloc::bind_thread(cpu)?,
            #[cfg(not(feature = "hwloc"))]
            Backend::Hwloc => {
                return Err(PinError::Hwloc("built without the hwloc feature".into()))
            }
        }
        let found = thread_affinity()?;
        if found != [cpu] {
            return Err(PinError::NotPinned { cpu, found });
        }
        Ok(cpu)
    }
}

/// The calling thread's affinity mask (`sched_getaffinity(0)`; on Linux the process mask
/// is the main thread's, which a new thread inherits).
pub fn thread_affinity() -> Result<Vec<u32>, PinError> {
    // SAFETY: cpu_set_t is a plain bit array; all zeroes is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable cpu_set_t of the size passed; pid 0 is the caller.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Err(PinError::GetAffinity(io::Error::last_os_error()));
    }
    let max = 8 * std::mem::size_of::<libc::cpu_set_t>();
    Ok((0..max)
        // SAFETY: `i` is below the set's capacity in bits; CPU_ISSET only reads `set`.
        .filter(|&i| unsafe { libc::CPU_ISSET(i, &set) })
        .map(|i| i as u32)
        .collect())
}

fn set_thread_affinity(cpu: u32) -> Result<(), PinError> {
    let max = 8 * std::mem::size_of::<libc::cpu_set_t>();
    if cpu as usize >= max {
        return Err(PinError::SetAffinity {
            cpu,
            source: io::Error::from(io::ErrorKind::InvalidInput),
        });
    }
    // SAFETY: all zeroes is a valid empty cpu_set_t.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is below the set's capacity (checked above); CPU_SET writes one bit.
    unsafe { libc::CPU_SET(cpu as usize, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 is the calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(PinError::SetAffinity {
            cpu,
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// The machine's online CPUs (`/sys/devices/system/cpu/online`), empty if unreadable.
pub fn online_cpus() -> Vec<u32> {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|s| parse_cpu_list(&s))
        .unwrap_or_default()
}

/// The core of a CPU from sysfs (`topology/physical_package_id`, `topology/core_id`); a
/// CPU without topology is its own core.
fn core_of(id: u32) -> (u32, u32) {
    let read = |f: &str| {
        std::fs::read_to_string(format!("/sys/devices/system/cpu/cpu{id}/topology/{f}"))
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
    };
    match (read("physical_package_id"), read("core_id")) {
        (Some(p), Some(c)) if p >= 0 && c >= 0 => (p as u32, c as u32),
        _ => (u32::MAX, id),
    }
}

/// This process's CPUs with their cores (affinity mask + sysfs topology).
pub fn allowed_cpus() -> Result<Vec<Cpu>, PinError> {
    Ok(thread_affinity()?
        .into_iter()
        .map(|id| Cpu {
            id,
            core: core_of(id),
        })
        .collect())
}

/// The CPUs of this process's cgroup cpuset (v2 `cpuset.cpus.effective`, v1
/// `cpuset/cpuset.cpus`, as seen at the cgroup namespace root), if readable.
pub fn cgroup_cpus() -> Option<Vec<u32>> {
    [
        "/sys/fs/cgroup/cpuset.cpus.effective",
        "/sys/fs/cgroup/cpuset/cpuset.cpus",
    ]
    .iter()
    .find_map(|p| std::fs::read_to_string(p).ok())
    .and_then(|s| parse_cpu_list(&s))
    .filter(|v| !v.is_empty())
}

/// What an unbound process of this machine may use: [`cgroup_cpus`], else [`online_cpus`].
pub fn unbound_cpus() -> Vec<u32> {
    cgroup_cpus().unwrap_or_else(online_cpus)
}

/// Plans the layout for this process: its CPUs with their cores ([`allowed_cpus`], or
/// hwloc with the `hwloc` feature), [`unbound_cpus`], [`plan`].
pub fn plan_for_this_process(req: PinRequest) -> Result<Layout, PinError> {
    #[cfg(feature = "hwloc")]
    {
        // hwloc unusable at run time (no topology): fall back to sysfs + sched_setaffinity;
        // the layout's backend says which one was used.
        if let Ok(cpus) = crate::hwloc::allowed_cpus() {
            let mut l = plan(&cpus, &unbound_cpus(), req)?;
            l.backend = Backend::Hwloc;
            return Ok(l);
        }
        plan(&allowed_cpus()?, &unbound_cpus(), req)
    }
    #[cfg(not(feature = "hwloc"))]
    plan(&allowed_cpus()?, &unbound_cpus(), req)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cpus(pairs: &[(u32, u32)]) -> Vec<Cpu> {
        pairs
            .iter()
            .map(|&(id, core)| Cpu {
                id,
                core: (0, core),
            })
            .collect()
    }

    fn req(threads: usize, local_rank: u32, local_size: u32, sharing: Sharing) -> PinRequest {
        PinRequest {
            threads,
            local_rank,
            local_size,
            sharing,
        }
    }

    #[test]
    fn one_cpu_per_core_before_smt_siblings() {
        // 2 cores x 2 SMT: cpus 0,2 on core 0, 1,3 on core 1
        let a = cpus(&[(0, 0), (1, 1), (2, 0), (3, 1)]);
        let l = plan(&a, &[0, 1, 2, 3], req(3, 0, 1, Sharing::Auto)).unwrap();
        assert_eq!(l.cpus, vec![0, 1, 2]);
        assert!(!l.shared);
        assert!(l.to_string().contains("thread 1 -> cpu 1"), "{l}");
    }

    #[test]
    fn stays_inside_the_launcher_mask() {
        // srun bound this rank to cpu 1 of a 2-cpu machine
        let l = plan(&cpus(&[(1, 1)]), &[0, 1], req(2, 1, 2, Sharing::Auto)).unwrap();
        assert_eq!(l.cpus, vec![1, 1]);
        assert!(l.shared && l.split.is_none(), "{l}");
        assert!(l.to_string().contains("SHARED"));
    }

    #[test]
    fn unbound_local_ranks_get_disjoint_parts() {
        let a = cpus(&[(0, 0), (1, 1), (2, 2), (3, 3), (4, 4)]);
        let all = [0, 1, 2, 3, 4];
        let mut seen = Vec::new();
        for r in 0..2 {
            let l = plan(&a, &all, req(8, r, 2, Sharing::Auto)).unwrap();
            assert_eq!(l.split, Some((r, 2)));
            seen.extend(l.mine.clone());
            for c in &l.cpus {
                assert!(l.mine.contains(c));
            }
        }
        seen.sort_unstable();
        assert_eq!(seen, all, "parts are disjoint and cover the mask");
        // explicit Whole never splits
        let l = plan(&a, &all, req(2, 1, 2, Sharing::Whole)).unwrap();
        assert_eq!(l.cpus, vec![0, 1]);
    }

    #[test]
    fn more_local_ranks_than_cores_share_round_robin() {
        let a = cpus(&[(0, 0), (1, 1)]);
        let l = plan(&a, &[0, 1], req(1, 3, 4, Sharing::Split)).unwrap();
        assert_eq!(l.cpus, vec![1]);
        assert!(l.shared);
    }

    #[test]
    fn bad_requests() {
        let a = cpus(&[(0, 0)]);
        assert!(matches!(
            plan(&[], &[0], req(1, 0, 1, Sharing::Auto)),
            Err(PinError::NoCpus)
        ));
        assert!(matches!(
            plan(&a, &[0], req(0, 0, 1, Sharing::Auto)),
            Err(PinError::NoThreads)
        ));
        assert!(matches!(
            plan(&a, &[0], req(1, 2, 2, Sharing::Auto)),
            Err(PinError::LocalRank { .. })
        ));
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(cpu_list(&[3, 0, 1, 2, 8, 10, 11]), "0-3,8,10-11");
        assert_eq!(parse_cpu_list("0-3,8\n"), Some(vec![0, 1, 2, 3, 8]));
        assert_eq!(parse_cpu_list(""), Some(vec![]));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("0-4294967295"), None);
        assert_eq!(parse_cpu_list("a"), None);
    }

    #[test]
    fn a_thread_pins_itself_inside_the_process_mask() {
        let l = plan_for_this_process(req(2, 0, 1, Sharing::Whole)).unwrap();
        let mask = thread_affinity().unwrap();
        let l2 = l.clone();
        let got = std::thread::spawn(move || l2.pin_current(1))
            .join()
            .unwrap()
            .unwrap();
        assert!(mask.contains(&got), "{got} in {mask:?}");
        assert!(matches!(l.pin_current(5), Err(PinError::NoSuchThread(5))));
    }

    #[cfg(feature = "hwloc")]
    #[test]
    fn hwloc_sees_the_same_mask_as_sched_getaffinity_and_pins() {
        let via_hwloc: Vec<u32> = {
            let mut v: Vec<u32> = crate::hwloc::allowed_cpus()
                .unwrap()
                .iter()
                .map(|c| c.id)
                .collect();
            v.sort_unstable();
            v
        };
        assert_eq!(via_hwloc, thread_affinity().unwrap());
        let l = plan_for_this_process(req(1, 0, 1, Sharing::Whole)).unwrap();
        assert_eq!(l.backend, Backend::Hwloc);
        assert!(l.to_string().contains("(hwloc)"));
        let got = std::thread::spawn(move || l.pin_current(0))
            .join()
            .unwrap()
            .unwrap();
        assert!(via_hwloc.contains(&got));
    }

    proptest! {
        #[test]
        fn plans_stay_inside_the_mask(
            ids in proptest::collection::btree_set(0u32..64, 1..16),
            threads in 1usize..20, local_size in 1u32..6, r in 0u32..6, smt in 1u32..3,
        ) {
            let a: Vec<Cpu> = ids.iter().map(|&id| Cpu { id, core: (0, id / smt) }).collect();
            let local_rank = r % local_size;
            let l = plan(&a, &[], req(threads, local_rank, local_size, Sharing::Split)).unwrap();
            prop_assert_eq!(l.cpus.len(), threads);
            for c in &l.cpus { prop_assert!(ids.contains(c)); prop_assert!(l.mine.contains(c)); }
            let _ = parse_cpu_list(&cpu_list(&l.cpus));
        }

        #[test]
        fn parse_cpu_list_never_panics(s in "[0-9,-]{0,24}") {
            let _ = parse_cpu_list(&s);
        }
    }
}
