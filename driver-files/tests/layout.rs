//! Topic layouts: new topics are written in layout 2 (`partitions/00000000`, component files,
//! `layout` file); topics written in layout 1 (5-digit partition directories, no component
//! files, no `layout` file: every topic written before layout 2) still open, read, append,
//! verify and repair; an unknown layout is a clear error.

use std::path::Path;

use diaspora_api::{json, ConsumerOptions, Driver, TopicHandle, Value};
use diaspora_driver_files::repair::repair_topic;
use diaspora_driver_files::topic::{COMPONENT_FILES, LAYOUT_FILE};
use diaspora_driver_files::verify_topic;

fn driver(root: &Path) -> Driver {
    diaspora_driver_files::register();
    Driver::new("files", json!({"root_path": root})).expect("driver")
}

fn push(t: &TopicHandle, ids: std::ops::Range<u64>) {
    let p = t.producer().expect("producer");
    let futures: Vec<_> = ids
        .map(|i| p.push(json!({"i": i}), vec![i as u8; 3]))
        .collect();
    p.flush().get().expect("flush");
    for f in futures {
        f.get().expect("stored");
    }
}

/// Every event's `i`, in partition order then id order, read by a fresh consumer `name`.
fn read_all(t: &TopicHandle, name: &str) -> Vec<u64> {
    let c = t
        .consumer_with(name, ConsumerOptions::default())
        .expect("consumer");
    let mut out = Vec::new();
    for _ in 0..10_000 {
        match c.pull().wait(300).expect("pull") {
            Some(e) if e.is_no_more_events() => break,
            Some(e) => {
                out.push(e.metadata().json().expect("json")["i"].as_u64().expect("i"));
                e.acknowledge().expect("ack");
            }
            None => break,
        }
    }
    out.sort_unstable();
    out
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).expect("read")).expect("valid JSON")
}

#[test]
fn new_topics_use_eight_digit_partitions_and_component_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = driver(dir.path());
    d.create_topic(
        "t",
        json!({"num_partitions": 3, "validator": "json",
               "partition_selector": {"type": "key_hash", "field": "k"}}),
    )
    .expect("create");
    let topic = dir.path().join("t");
    for i in 0..3 {
        assert!(
            topic.join(format!("partitions/0000000{i}")).is_dir(),
            "partition {i}"
        );
    }
    assert!(!topic.join("partitions/00000").exists());
    assert_eq!(
        std::fs::read_to_string(topic.join(LAYOUT_FILE)).expect("layout"),
        "2\n"
    );
    assert_eq!(
        read_json(&topic.join("validator.json")),
        json!({"type": "json"})
    );
    assert_eq!(
        read_json(&topic.join("serializer.json")),
        json!({"type": "default"})
    );
    assert_eq!(
        read_json(&topic.join("partition-selector.json")),
        json!({"type": "key_hash", "field": "k"})
    );
    let t = d.open_topic("t").expect("open");
    let info = &t.partitions().expect("partitions")[2].info;
    assert!(
        info["path"]
            .as_str()
            .expect("path")
            .ends_with("t/partitions/00000002"),
        "{info}"
    );
}

/// Turns topic `t` (layout 2) into exactly what the code before layout 2 wrote: 5-digit
/// partition directories, no `layout` file, no component files. `topic.json` and the
/// partition files were the same then.
fn downgrade_to_layout_1(topic: &Path, partitions: usize) {
    for i in 0..partitions {
        std::fs::rename(
            topic.join(format!("partitions/{i:08}")),
            topic.join(format!("partitions/{i:05}")),
        )
        .expect("rename partition");
    }
    std::fs::remove_file(topic.join(LAYOUT_FILE)).expect("rm layout");
    for (file, _) in COMPONENT_FILES {
        std::fs::remove_file(topic.join(file)).expect("rm component file");
    }
}

#[test]
fn layout_1_topics_still_open_read_append_verify_and_repair() {
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = dir.path().join("t");
    {
        let d = driver(dir.path());
        d.create_topic("t", json!({"num_partitions": 2}))
            .expect("create");
        push(&d.open_topic("t").expect("open"), 0..10);
    }
    downgrade_to_layout_1(&topic, 2);
    let mut names: Vec<String> = std::fs::read_dir(topic.join("partitions"))
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["00000", "00001"]);

    let d = driver(dir.path());
    assert_eq!(d.list_topics().expect("list"), ["t"]);
    let t = d.open_topic("t").expect("open a layout-1 topic");
    assert_eq!(read_all(&t, "c"), (0..10).collect::<Vec<_>>());
    push(&t, 10..15);
    // The consumer resumes after its acknowledgements, in the same old-layout directories.
    assert_eq!(read_all(&t, "c"), (10..15).collect::<Vec<_>>());
    assert!(topic.join("partitions/00000").is_dir());
    assert!(!topic.join("partitions/00000000").exists());
    assert!(!topic.join(LAYOUT_FILE).exists(), "opening never rewrites");
    let info = &t.partitions().expect("partitions")[1].info;
    assert!(
        info["path"]
            .as_str()
            .expect("path")
            .ends_with("t/partitions/00001"),
        "{info}"
    );

    let reports = verify_topic(dir.path(), "t").expect("verify");
    assert_eq!(reports.len(), 2);
    assert_eq!(reports.iter().map(|r| r.records).sum::<u64>(), 15);
    assert!(reports
        .iter()
        .all(|r| r.problems.is_empty() && r.unreadable.is_none()));
    let repaired = repair_topic(dir.path(), "t").expect("repair");
    assert_eq!(repaired.len(), 2);
}

#[test]
fn an_unknown_or_damaged_layout_file_is_a_clear_error() {
    for content in ["3\n", "", "\u{0}\u{ff}garbage"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = driver(dir.path());
        d.create_topic("t", json!({})).expect("create");
        std::fs::write(dir.path().join("t").join(LAYOUT_FILE), content).expect("write");
        let e = match d.open_topic("t") {
            Ok(_) => panic!("layout {content:?} accepted"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains("unsupported topic layout"), "{e}");
        assert!(e.contains("layout"), "{e}");
        let e = verify_topic(dir.path(), "t").expect_err("verify refuses it too");
        assert!(e.to_string().contains("unsupported topic layout"), "{e}");
    }
}
