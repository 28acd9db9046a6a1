//! A process that exits with an shm endpoint still open leaves no name in `/dev/shm` (each
//! holds 16 MiB of tmpfs memory): the test binary re-executes itself as the child
//! (`child_exits_with_an_open_endpoint`), which opens an endpoint, forgets it and exits.

mod util;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use util::{hints, info, Node};

const CHILD_ENV: &str = "DIASPORA_FABRIC_SHM_EXIT_CHILD";

/// This process's endpoint names in `/dev/shm` (`<pid>:<n>:<m>`).
fn names_of(pid: u32) -> Vec<String> {
    let prefix = format!("{pid}:");
    std::fs::read_dir("/dev/shm")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// Not a test on its own: the body of the child process. Without the environment it returns.
#[test]
#[ignore = "helper re-executed by other tests"]
fn child_exits_with_an_open_endpoint() {
    if std::env::var(CHILD_ENV).is_err() {
        return;
    }
    let Some(info) = info(&hints("shm")) else {
        println!("NO-SHM");
        return;
    };
    let node = Node::new(&info);
    println!("OPEN {}", names_of(std::process::id()).len());
    // Never closed: the exit must clean up after it.
    std::mem::forget(node);
}

#[test]
fn a_process_exiting_with_an_open_shm_endpoint_leaves_no_name_behind() {
    let mut child = Command::new(std::env::current_exe().expect("exe"))
        .args([
            "--exact",
            "child_exits_with_an_open_endpoint",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn child");
    let pid = child.id();
    let out = child.stdout.take().expect("stdout");
    let lines: Vec<String> = BufReader::new(out).lines().map_while(Result::ok).collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "the child did not exit");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "child failed: {status:?} {lines:?}");
    if lines.iter().any(|l| l.contains("NO-SHM")) {
        eprintln!("SKIP: shm is not available here");
        return;
    }
    let open = lines
        .iter()
        .find_map(|l| l.split("OPEN ").nth(1)) // the harness prints on the same line
        .unwrap_or_else(|| panic!("no OPEN line from the child: {lines:?}"));
    assert!(
        open.parse::<usize>().expect("count") >= 1,
        "the child's endpoint had no name to leave behind: {lines:?}"
    );
    let left = names_of(pid);
    assert!(left.is_empty(), "names left in /dev/shm: {left:?}");
}
