//! Who is this process, and is another one still alive? (`/proc`, Linux.)
//!
//! A pid alone is not an identity: pids are reused. A process is identified by its host,
//! the kernel's boot id (a reboot restarts pids) and its start time in clock ticks since
//! boot (field 22 of `/proc/<pid>/stat`), which differs between two processes that had the
//! same pid.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// The identity of a process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessId {
    /// Host name (`/proc/sys/kernel/hostname`).
    pub host: String,
    /// Kernel boot id (`/proc/sys/kernel/random/boot_id`), empty if unreadable.
    pub boot: String,
    /// Process id.
    pub pid: u32,
    /// Start time in clock ticks since boot, 0 if unreadable.
    pub start: u64,
}

/// Answers "is this process alive?" for processes of this host. A trait so that the
/// rendezvous logic is tested without real processes.
pub trait ProcessProbe {
    /// The identity of the calling process.
    fn me(&self) -> &ProcessId;
    /// Whether the process `id` (of this host and boot) still runs. Zombies are dead.
    fn alive(&self, id: &ProcessId) -> bool;
}

/// The real probe, reading `/proc`.
#[derive(Debug, Clone)]
pub struct ProcFs {
    me: ProcessId,
}

impl ProcFs {
    /// Reads this process's identity.
    pub fn new() -> ProcFs {
        let pid = std::process::id();
        ProcFs {
            me: ProcessId {
                host: hostname(),
                boot: read_trim("/proc/sys/kernel/random/boot_id"),
                pid,
                start: stat(pid).map(|(_, s)| s).unwrap_or(0),
            },
        }
    }
}

impl Default for ProcFs {
    fn default() -> Self {
        ProcFs::new()
    }
}

impl ProcessProbe for ProcFs {
    fn me(&self) -> &ProcessId {
        &self.me
    }

    fn alive(&self, id: &ProcessId) -> bool {
        match stat(id.pid) {
            Some((state, start)) => {
                state != 'Z' && state != 'X' && (id.start == 0 || start == id.start)
            }
            None => false,
        }
    }
}

/// This host's name.
pub fn hostname() -> String {
    let h = read_trim("/proc/sys/kernel/hostname");
    if h.is_empty() {
        "localhost".to_string()
    } else {
        h
    }
}

fn read_trim(p: impl AsRef<Path>) -> String {
    std::fs::read_to_string(p)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// (state, start time) of a pid, from `/proc/<pid>/stat`.
fn stat(pid: u32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// Parses `/proc/<pid>/stat`: `pid (comm) state ppid ...`, start time is field 22. The
/// command may contain spaces and parentheses, so fields are counted after the last `)`.
pub fn parse_stat(text: &str) -> Option<(char, u64)> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    // After the state (field 3) comes field 4; the start time is field 22: 18 further on.
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_spaces_and_parens_in_the_command() {
        let line = "4242 (a b) c)) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 987654 20 21\n";
        assert_eq!(parse_stat(line), Some(('S', 987654)));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 1 2"), None);
    }

    #[test]
    fn this_process_is_alive_and_a_reaped_child_is_not() {
        let p = ProcFs::new();
        assert!(p.alive(p.me()));
        assert_ne!(p.me().start, 0);
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let id = ProcessId {
            pid: child.id(),
            start: 0,
            ..p.me().clone()
        };
        child.wait().unwrap();
        assert!(!p.alive(&id));
        // Same pid, other start time: a reused pid is not the process we knew.
        let reused = ProcessId {
            start: p.me().start + 1,
            ..p.me().clone()
        };
        assert!(!p.alive(&reused));
    }
}
