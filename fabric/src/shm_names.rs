//! Leftover shm endpoint names of a dead process that had this process's pid.
//!
//! libfabric 1.17's shm provider names each endpoint `/dev/shm/<pid>:<n>:<m>` and removes the
//! name when the endpoint closes. A process killed with SIGKILL leaves its names behind, and a
//! later process that gets the same pid then fails to enable an endpoint with EBUSY ("Device or
//! resource busy"). Before the first shm endpoint of this process is opened, every name carrying
//! this process's pid is necessarily such a leftover (its owner had this pid, so it is dead):
//! [`remove_stale_once`] removes them. It runs once per process, so the live endpoints this
//! process opens afterwards are never touched.

use std::path::Path;

/// The pid of a shm endpoint name `<pid>:<digits>:<digits>` (`None` for anything else).
pub(crate) fn name_pid(name: &str) -> Option<u32> {
    fn digits(p: &str) -> bool {
        !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())
    }
    let mut parts = name.split(':');
    let pid = parts.next().filter(|p| digits(p))?;
    parts.next().filter(|p| digits(p))?;
    parts.next().filter(|p| digits(p))?;
    if parts.next().is_some() {
        return None;
    }
    pid.parse().ok()
}

/// True when `name` is `<pid>:<digits>:<digits>`.
pub(crate) fn is_stale_name(name: &str, pid: u32) -> bool {
    // Compared as text, as before: "0123:1:2" is not pid 123's name.
    name_pid(name) == Some(pid) && name.starts_with(&format!("{pid}:"))
}

/// Removes the names in `dir` that [`is_stale_name`] for `pid`; returns how many were removed.
pub(crate) fn remove_stale_in(dir: &Path, pid: u32) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in rd.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        // Best effort: a name we cannot remove makes the open fail with its own error.
        if is_stale_name(name, pid) && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Removes the shm endpoint names (`/dev/shm/<pid>:<n>:<m>`) of process `pid`, which must be
/// dead (for example a child killed with SIGKILL: its names would otherwise wait for a later
/// process with the same pid, which removes them before its first shm endpoint). Returns how
/// many were removed.
pub fn remove_shm_names_of(pid: u32) -> usize {
    remove_stale_in(Path::new("/dev/shm"), pid)
}

/// Waits for `child` to exit, removes its shm endpoint names, then reaps it.
///
/// The names are removed while the child is a zombie (`waitid` with `WNOWAIT`): its pid cannot
/// belong to another process yet. Removing them after the reap (or again, later) could delete
/// the live names of an unrelated process that got the same pid (`pid_max` may be as low as
/// 32768). A child that the caller already reaped through `std` gets its recorded status and
/// no removal, for that reason.
///
/// Meant for a parent that SIGKILLs its children (tests, launchers, benchmarks): a killed
/// process runs no exit handler, and each name holds 16 MiB of tmpfs memory.
pub fn reap_child(child: &mut std::process::Child) -> std::io::Result<std::process::ExitStatus> {
    if wait_zombie(child.id(), true)? == ChildState::Zombie {
        remove_shm_names_of(child.id());
    }
    child.wait()
}

/// [`reap_child`] without waiting: `Ok(None)` while the child runs.
pub fn try_reap_child(
    child: &mut std::process::Child,
) -> std::io::Result<Option<std::process::ExitStatus>> {
    match wait_zombie(child.id(), false)? {
        ChildState::Running => Ok(None),
        ChildState::Zombie => {
            remove_shm_names_of(child.id());
            child.wait().map(Some)
        }
        // Reaped through `std` already: its recorded status.
        ChildState::Reaped => child.try_wait(),
    }
}

/// What [`wait_zombie`] found.
#[derive(Debug, PartialEq, Eq)]
enum ChildState {
    /// Not exited yet (only without `block`).
    Running,
    /// Exited, not reaped: its pid is still its own.
    Zombie,
    /// Reaped already (`ECHILD`): its pid may be another process's.
    Reaped,
}

/// The state of `pid`, a child of this process, without reaping it (`WNOWAIT`); with `block`,
/// waits until it has exited.
fn wait_zombie(pid: u32, block: bool) -> std::io::Result<ChildState> {
    let id: libc::id_t = pid;
    let flags = libc::WEXITED | libc::WNOWAIT | if block { 0 } else { libc::WNOHANG };
    loop {
        // SAFETY: all-zero bytes are a valid `siginfo_t` (plain integers and unions of them).
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a valid, writable `siginfo_t` for the duration of the call; waitid
        // with WNOWAIT changes no process state.
        let rc = unsafe { libc::waitid(libc::P_PID, id, &mut info, flags) };
        if rc == 0 {
            // With WNOHANG, a child that has not exited leaves `si_pid` zero.
            // SAFETY: waitid filled `info` (or left it zeroed); si_pid reads a plain integer.
            return Ok(if unsafe { info.si_pid() } == 0 {
                ChildState::Running
            } else {
                ChildState::Zombie
            });
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::ECHILD) => return Ok(ChildState::Reaped),
            _ => return Err(e),
        }
    }
}

/// Runs [`remove_shm_names_of`] for this process, once per process, and registers
/// [`remove_at_exit`] for its exit.
pub(crate) fn remove_stale_once() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        remove_shm_names_of(std::process::id());
        remove_at_exit();
    });
}

/// Removes this process's endpoint names when it exits normally (returns from `main` or calls
/// `exit`). libfabric 1.17 removes a name only when its endpoint closes, and each name holds
/// 16 MiB of tmpfs memory: a process that exits with an endpoint still open (a client whose
/// last handle was being dropped on a helper thread that the exit cut short, or one that
/// never dropped it) left that memory in `/dev/shm` for good. At exit the names are garbage:
/// the endpoints die with the process, and peers that mapped them keep their mappings.
/// (A SIGKILLed process runs no exit handler: see [`remove_shm_names_of`].)
fn remove_at_exit() {
    extern "C" fn at_exit() {
        remove_shm_names_of(std::process::id());
    }
    // SAFETY: `at_exit` is a plain `extern "C"` function without state, valid for the whole
    // life of the process; registering it has no other effect. A failed registration (out of
    // memory) leaves the names to the endpoints' own close.
    let _ = unsafe { libc::atexit(at_exit) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_pids_endpoint_names_are_stale() {
        assert!(is_stale_name("123:0:1", 123));
        assert!(is_stale_name("123:17:4096", 123));
        assert!(!is_stale_name("1234:0:1", 123));
        assert!(!is_stale_name("123:0", 123));
        assert!(!is_stale_name("123:0:1:2", 123));
        assert!(!is_stale_name("123::1", 123));
        assert!(!is_stale_name("123:a:1", 123));
        assert!(!is_stale_name("sem.123:0:1", 123));
    }

    /// A fake endpoint name of `pid` in /dev/shm (removed by the code under test).
    fn fake_name(pid: u32) -> std::path::PathBuf {
        let p = Path::new("/dev/shm").join(format!("{pid}:0:0"));
        std::fs::write(&p, b"").expect("write a name in /dev/shm");
        p
    }

    fn sleeper() -> std::process::Child {
        std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep")
    }

    #[test]
    fn reaping_a_killed_child_removes_its_names_before_the_pid_is_free() {
        let mut child = sleeper();
        let name = fake_name(child.id());
        assert!(try_reap_child(&mut child).expect("try").is_none());
        assert!(name.exists(), "a running child's names are left alone");
        child.kill().expect("kill");
        let st = reap_child(&mut child).expect("reap");
        assert!(!st.success());
        assert!(!name.exists(), "the killed child's name is gone");
        // Reaped: the pid may be another process's now, so its names are not touched again.
        let again = fake_name(child.id());
        assert_eq!(reap_child(&mut child).expect("again").code(), st.code());
        assert!(again.exists(), "a reaped child's pid is not trusted");
        std::fs::remove_file(again).expect("cleanup");
    }

    #[test]
    fn try_reap_removes_names_once_the_child_exited() {
        let mut child = sleeper();
        let name = fake_name(child.id());
        child.kill().expect("kill");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let st = loop {
            if let Some(st) = try_reap_child(&mut child).expect("try") {
                break st;
            }
            assert!(std::time::Instant::now() < deadline, "sleep did not die");
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        assert!(!st.success());
        assert!(!name.exists());
        assert!(try_reap_child(&mut child).expect("again").is_some());
    }

    #[test]
    fn removes_only_matching_names() {
        let dir = std::env::temp_dir().join(format!("shm-names-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        for n in ["77:0:0", "77:3:9", "770:0:0", "77:x:0", "other"] {
            std::fs::write(dir.join(n), b"").expect("write");
        }
        assert_eq!(remove_stale_in(&dir, 77), 2);
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .expect("read")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["770:0:0", "77:x:0", "other"]);
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
