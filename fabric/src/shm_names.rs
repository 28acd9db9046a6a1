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

/// Runs [`remove_shm_names_of`] for this process, once per process.
pub(crate) fn remove_stale_once() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        remove_shm_names_of(std::process::id());
    });
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
