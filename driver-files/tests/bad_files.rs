//! Damaged or foreign files give clear errors, and metadata-only consumers never touch data.

use std::path::Path;

use diaspora_api::{json, select_all, ConsumerOptions, Driver, Error};

fn driver(root: &Path) -> Driver {
    diaspora_driver_files::register();
    Driver::new("files", json!({"root_path": root})).expect("driver")
}

fn produce(d: &Driver, n: u32) {
    d.create_topic("t", json!({})).expect("create");
    let p = d
        .open_topic("t")
        .expect("open")
        .producer()
        .expect("producer");
    for i in 0..n {
        drop(p.push(json!({"i": i}), vec![1u8; 4096]));
    }
    p.flush().get().expect("flush");
}

const PART: &str = "t/partitions/00000000/00000000000000000000";

#[test]
fn metadata_only_consumers_never_read_the_data_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = driver(dir.path());
    produce(&d, 50);
    // Without its data file's contents, metadata-only consumption must still work...
    std::fs::write(dir.path().join(format!("{PART}.data")), b"").expect("truncate data");
    let t = d.open_topic("t").expect("open");
    let c = t.consumer("meta-only").expect("consumer");
    for i in 0..50u64 {
        let e = c.pull().wait(1000).expect("pull").expect("event");
        assert_eq!(e.metadata().json().expect("json")["i"], i);
        assert!(e.data().is_empty());
    }
    // ...while a consumer that wants the data is told it is missing, not handed garbage.
    let c = t
        .consumer_with(
            "with-data",
            ConsumerOptions {
                data_selector: Some(select_all()),
                ..Default::default()
            },
        )
        .expect("consumer");
    let e = c.pull().wait(1000).expect_err("data is gone");
    assert!(matches!(e.root(), Error::Corrupted(_)), "{e:?}");
    assert!(
        e.to_string().contains("outside the metadata or data file"),
        "{e}"
    );
}

#[test]
fn corrupted_topic_config_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = driver(dir.path());
    produce(&d, 1);
    std::fs::write(dir.path().join("t/topic.json"), b"{\"num_partitions\": ").expect("write");
    let e = d.open_topic("t").err().expect("bad config");
    assert!(e.to_string().contains("invalid configuration"), "{e}");
    std::fs::write(dir.path().join("t/topic.json"), b"{\"num_partitions\": 0}").expect("write");
    let e = d.open_topic("t").err().expect("bad value");
    assert!(e.to_string().contains("num_partitions"), "{e}");
}

#[test]
fn foreign_index_file_is_refused_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = driver(dir.path());
    produce(&d, 3);
    let index = dir.path().join(format!("{PART}.index"));
    let mut bytes = std::fs::read(&index).expect("read");
    bytes[0] = b'X';
    std::fs::write(&index, &bytes).expect("write");
    let e = d.open_topic("t").err().expect("bad header");
    assert!(matches!(e, Error::Corrupted(_)), "{e:?}");
    assert!(e.to_string().contains("bad header"), "{e}");
    assert_eq!(
        std::fs::read(&index).expect("read"),
        bytes,
        "file was modified"
    );
}

#[test]
fn missing_partition_files_are_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = driver(dir.path());
    produce(&d, 1);
    std::fs::remove_file(dir.path().join(format!("{PART}.meta"))).expect("rm");
    let e = d.open_topic("t").err().expect("missing file");
    assert!(e.to_string().contains(".meta"), "{e}");
}

#[test]
fn checksummed_records_with_impossible_offsets_are_reported_not_served() {
    use diaspora_driver_files::format::{record_offset, IndexRecord, RECORD_SIZE};
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let d = driver(dir.path());
    produce(&d, 4);
    let index = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.path().join(format!("{PART}.index")))
        .expect("open index");
    let rewrite = |i: u64, f: &dyn Fn(&mut IndexRecord)| {
        let mut b = [0u8; RECORD_SIZE];
        index.read_exact_at(&mut b, record_offset(i)).expect("read");
        let mut r = IndexRecord::decode(&b).expect("valid");
        f(&mut r);
        r.encode(&mut b); // a valid checksum over impossible values
        index.write_all_at(&b, record_offset(i)).expect("write");
    };
    rewrite(1, &|r| r.data_len = u64::MAX / 2);
    rewrite(2, &|r| r.meta_offset = 0);
    let c = d
        .open_topic("t")
        .expect("open")
        .consumer_with(
            "c",
            ConsumerOptions {
                data_selector: Some(select_all()),
                ..Default::default()
            },
        )
        .expect("consumer");
    let mut served = Vec::new();
    let mut errors = 0;
    while let Ok(r) = c.pull().wait(200) {
        match r {
            Some(e) => served.push(e.metadata().json().expect("json")["i"].as_u64().expect("i")),
            None => break,
        }
    }
    // Pull again after the error stopped the loop, until nothing is left.
    loop {
        match c.pull().wait(200) {
            Ok(Some(e)) => {
                served.push(e.metadata().json().expect("json")["i"].as_u64().expect("i"))
            }
            Ok(None) => break,
            Err(_) => errors += 1,
        }
    }
    assert!(errors >= 1, "impossible records went unreported");
    assert!(!served.contains(&1), "record 1 served: {served:?}");
    assert_eq!(served.first(), Some(&0));
    assert_eq!(served.last(), Some(&3));
}
