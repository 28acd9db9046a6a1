//! A topic of many partitions is usable within the default descriptor limit (`ulimit -n 1024`):
//! a child process lowers its `RLIMIT_NOFILE`, then creates a 400-partition topic, produces to
//! every partition, consumes, describes, verifies and completes it.

use std::path::Path;
use std::process::Command;

use diaspora_api::{json, select_all, ConsumerOptions, Driver};

const ROOT_ENV: &str = "DIASPORA_NOFILE_CHILD_ROOT";
const PARTITIONS: usize = 400;
const NOFILE: u64 = 1024;

fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

/// Not a test on its own: the child process. Without the environment it returns.
#[test]
#[ignore = "helper re-executed by other tests"]
fn child_uses_a_large_topic_with_a_low_descriptor_limit() {
    let Ok(root) = std::env::var(ROOT_ENV) else {
        return;
    };
    let lim = libc::rlimit {
        rlim_cur: NOFILE,
        rlim_max: NOFILE,
    };
    // SAFETY: `lim` is a valid rlimit for the duration of the call.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
    let root = Path::new(&root);
    diaspora_driver_files::register();
    let d = Driver::new("files", json!({"root_path": root})).expect("driver");
    d.create_topic("big", json!({"num_partitions": PARTITIONS}))
        .expect("create");
    let t = d.open_topic("big").expect("open");
    let p = t.producer().expect("producer");
    let futures: Vec<_> = (0..2 * PARTITIONS)
        .map(|i| p.push_to(i % PARTITIONS, json!({"i": i}), vec![i as u8; 10]))
        .collect();
    p.flush().get().expect("flush");
    for f in futures {
        f.get().expect("stored");
    }
    drop(p);
    let c = t
        .consumer_with(
            "all",
            ConsumerOptions {
                data_selector: Some(select_all()),
                ..Default::default()
            },
        )
        .expect("consumer");
    let mut seen = vec![0u32; PARTITIONS];
    for _ in 0..2 * PARTITIONS {
        let e = c.pull().wait(10_000).expect("pull").expect("event");
        let i = e.metadata().json().expect("json")["i"].as_u64().expect("i") as usize;
        assert_eq!(e.partition(), i % PARTITIONS);
        assert_eq!(e.data().to_vec(), vec![i as u8; 10]);
        e.acknowledge().expect("ack");
        seen[e.partition()] += 1;
    }
    assert!(seen.iter().all(|n| *n == 2), "{seen:?}");
    let described = t.partitions().expect("describe");
    assert_eq!(described.len(), PARTITIONS);
    assert!(described.iter().all(|p| p.info["num_events"] == 2));
    let reports = diaspora_driver_files::verify_topic(root, "big").expect("verify");
    assert_eq!(reports.len(), PARTITIONS);
    assert!(reports.iter().all(|r| r.is_clean() && r.records == 2));
    t.mark_as_complete().expect("complete");
    let end = c.pull().wait(10_000).expect("pull").expect("event");
    assert!(end.is_no_more_events());
    let open = open_descriptors();
    assert!(
        open < NOFILE as usize * 3 / 4,
        "{open} descriptors open: the cache is not bounded"
    );
    println!("child done, {open} descriptors open");
}

#[test]
fn a_400_partition_topic_works_within_1024_descriptors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(std::env::current_exe().expect("exe"))
        .args([
            "--exact",
            "child_uses_a_large_topic_with_a_low_descriptor_limit",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROOT_ENV, dir.path())
        .output()
        .expect("run child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("child done"),
        "child failed:\n{stdout}\n{stderr}"
    );
}
