//! Crash safety and multi-process tests, with real processes: the test binary re-executes itself
//! as a producer child (see `child_producer`), which is killed with SIGKILL mid-write or left to
//! finish concurrently with others.

use std::collections::HashSet;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use diaspora_api::{json, select_all, ConsumerOptions, Driver, Error, TopicHandle};

const ROOT_ENV: &str = "DIASPORA_CHILD_ROOT";
const TAG_ENV: &str = "DIASPORA_CHILD_TAG";
const COUNT_ENV: &str = "DIASPORA_CHILD_COUNT";

fn driver(root: &Path) -> Driver {
    diaspora_driver_files::register();
    Driver::new("files", json!({"root_path": root})).expect("driver")
}

/// Not a test on its own: the body of the child processes. Without the environment it returns.
#[test]
#[ignore = "helper re-executed by other tests"]
fn child_producer() {
    let Ok(root) = std::env::var(ROOT_ENV) else {
        return;
    };
    let tag = std::env::var(TAG_ENV).expect("tag");
    let count: u64 = std::env::var(COUNT_ENV)
        .expect("count")
        .parse()
        .expect("count");
    let t = driver(Path::new(&root)).open_topic("t").expect("open");
    let p = t.producer().expect("producer");
    let payload = vec![0xabu8; 3000];
    for seq in 0..count {
        drop(p.push(json!({"tag": tag, "seq": seq}), payload.clone()));
        if seq % 512 == 0 {
            p.flush().get().expect("flush");
        }
    }
    p.flush().get().expect("flush");
}

fn spawn_child(root: &Path, tag: &str, count: u64) -> Child {
    Command::new(std::env::current_exe().expect("exe"))
        .args([
            "--exact",
            "child_producer",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROOT_ENV, root)
        .env(TAG_ENV, tag)
        .env(COUNT_ENV, count.to_string())
        .spawn()
        .expect("spawn child")
}

/// Reads everything; returns (tag, seq) pairs and the errors met.
fn drain(t: &TopicHandle, consumer: &str) -> (Vec<(String, u64)>, Vec<Error>) {
    let c = t
        .consumer_with(
            consumer,
            ConsumerOptions {
                data_selector: Some(select_all()),
                ..Default::default()
            },
        )
        .expect("consumer");
    let (mut events, mut errors) = (Vec::new(), Vec::new());
    loop {
        match c.pull().wait(200) {
            Ok(Some(e)) if e.is_no_more_events() => break,
            Ok(Some(e)) => {
                assert_eq!(e.data().len(), 3000, "data length of {e:?}");
                assert!(e.data().to_vec().iter().all(|b| *b == 0xab));
                let m = e.metadata().json().expect("json");
                events.push((
                    m["tag"].as_str().expect("tag").to_owned(),
                    m["seq"].as_u64().expect("seq"),
                ));
            }
            Ok(None) => break,
            Err(e) => errors.push(e),
        }
    }
    (events, errors)
}

#[test]
fn kill_9_mid_write_leaves_a_clean_prefix_and_appends_continue() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = driver(dir.path());
    d.create_topic("t", json!({"num_partitions": 1}))
        .expect("create");
    let mut child = spawn_child(dir.path(), "a", 1_000_000);
    // Wait until it has committed a few thousand events (however loaded the machine is), let it
    // run on a little so the kill lands mid-write, then kill it without warning.
    let index = dir
        .path()
        .join("t/partitions/00000000/00000000000000000000.index");
    let started = std::time::Instant::now();
    while std::fs::metadata(&index).map(|m| m.len()).unwrap_or(0) < 16 + 40 * 3000 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "child wrote nothing in 60 s"
        );
        assert!(
            child.try_wait().expect("poll child").is_none(),
            "child exited early"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(50));
    child.kill().expect("kill -9");
    child.wait().expect("reap");

    let t = d.open_topic("t").expect("open");
    let (events, errors) = drain(&t, "c1");
    assert!(errors.is_empty(), "errors after crash: {errors:?}");
    assert!(
        !events.is_empty(),
        "child wrote nothing before being killed"
    );
    for (i, (tag, seq)) in events.iter().enumerate() {
        assert_eq!(
            (tag.as_str(), *seq),
            ("a", i as u64),
            "event {i} out of sequence"
        );
    }
    // A new writer appends after the cut tail; nothing before it is lost or duplicated.
    let p = t.producer().expect("producer");
    let id = p
        .push(json!({"tag": "b", "seq": 0}), vec![0xabu8; 3000])
        .get()
        .expect("push");
    assert_eq!(id, events.len() as u64);
    drop(p);
    let (after, errors) = drain(&t, "c2");
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(after.len(), events.len() + 1);
    assert_eq!(after.last(), Some(&("b".to_owned(), 0)));
}

#[test]
fn torn_tail_is_cut_on_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = driver(dir.path());
    d.create_topic("t", json!({})).expect("create");
    let t = d.open_topic("t").expect("open");
    let p = t.producer().expect("producer");
    for seq in 0..10u64 {
        drop(p.push(json!({"tag": "a", "seq": seq}), vec![0xabu8; 3000]));
    }
    p.flush().get().expect("flush");
    drop(p);
    // Simulate a writer killed mid-batch: half an index record, garbage metadata and data.
    let part = dir.path().join("t/partitions/00000000");
    for (ext, junk) in [
        ("index", vec![7u8; 17]),
        ("meta", b"{\"tag\":".to_vec()),
        ("data", vec![1u8; 999]),
    ] {
        let mut f = OpenOptions::new()
            .append(true)
            .open(part.join(format!("00000000000000000000.{ext}")))
            .expect("open");
        f.write_all(&junk).expect("append junk");
    }
    let t = d.open_topic("t").expect("reopen");
    let (events, errors) = drain(&t, "c");
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(events.len(), 10);
    let p = t.producer().expect("producer");
    assert_eq!(
        p.push(json!({"tag": "a", "seq": 10}), vec![0xabu8; 3000])
            .get()
            .expect("push"),
        10
    );
    drop(p);
    let (events, errors) = drain(&t, "c3");
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        events.iter().map(|e| e.1).collect::<Vec<_>>(),
        (0..11).collect::<Vec<_>>()
    );
}

#[test]
fn corrupted_records_are_reported_never_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = driver(dir.path());
    d.create_topic("t", json!({})).expect("create");
    let t = d.open_topic("t").expect("open");
    let p = t.producer().expect("producer");
    for seq in 0..5u64 {
        drop(p.push(json!({"tag": "a", "seq": seq}), vec![0xabu8; 3000]));
    }
    drop(p);
    let part = dir.path().join("t/partitions/00000000");
    let flip = |ext: &str, offset: u64| {
        use std::os::unix::fs::FileExt;
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(part.join(format!("00000000000000000000.{ext}")))
            .expect("open");
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, offset).expect("read");
        b[0] ^= 0x40;
        f.write_all_at(&b, offset).expect("write");
    };
    flip("index", 16 + 40 + 3); // record 1
    flip("meta", 2 * 22 + 1); // near the start of event 2's metadata
    flip("data", 3 * 3000 + 10); // event 3's data
    let (events, errors) = drain(&t, "c");
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(
        errors
            .iter()
            .all(|e| matches!(e.root(), Error::Corrupted(_))),
        "{errors:?}"
    );
    assert_eq!(events.iter().map(|e| e.1).collect::<Vec<_>>(), vec![0, 4]);
}

#[test]
fn concurrent_processes_lose_and_duplicate_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = driver(dir.path());
    d.create_topic("t", json!({"num_partitions": 2}))
        .expect("create");
    let per_child = 3000u64;
    let children: Vec<Child> = ["x", "y", "z"]
        .iter()
        .map(|tag| spawn_child(dir.path(), tag, per_child))
        .collect();
    // Consume concurrently from this process while the children write.
    let t = d.open_topic("t").expect("open");
    let c = t.consumer("live").expect("consumer");
    let mut seen = 0u64;
    while seen < 3 * per_child {
        if c.pull().wait(10_000).expect("pull").is_some() {
            seen += 1;
        }
    }
    for mut ch in children {
        assert!(ch.wait().expect("wait").success(), "child failed");
    }
    let (events, errors) = drain(&t, "after");
    assert!(errors.is_empty(), "{errors:?}");
    let unique: HashSet<_> = events.iter().cloned().collect();
    assert_eq!(events.len() as u64, 3 * per_child);
    assert_eq!(unique.len() as u64, 3 * per_child, "duplicates");
    for tag in ["x", "y", "z"] {
        let mut seqs: Vec<u64> = events.iter().filter(|e| e.0 == tag).map(|e| e.1).collect();
        seqs.sort_unstable();
        assert_eq!(seqs, (0..per_child).collect::<Vec<_>>(), "tag {tag}");
    }
}
