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

/// True when `name` is `<pid>:<digits>:<digits>`.
pub(crate) fn is_stale_name(name: &str, pid: u32) -> bool {
    let prefix = format!("{pid}:");
    let Some(rest) = name.strip_prefix(&prefix) else {
        return false;
    };
    let mut parts = rest.split(':');
    let digits =
        |p: Option<&str>| p.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    digits(parts.next()) && digits(parts.next()) && parts.next().is_none()
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
