//! `consumer_read`: runs of whole events mapped (the default) or copied with `pread` deliver the
//! same bytes, the same checksum failures, and data that outlives the consumer and its files.

use std::os::unix::fs::FileExt;
use std::path::Path;

use diaspora_api::{json, select_all, ConsumerOptions, Driver, Error, Event, Value};
use diaspora_driver_files::{ConsumerRead, FilesDriverOptions};

const PART: &str = "t/partitions/00000000/00000000000000000000";
const MODES: [&str; 2] = ["map", "read"];
const WAIT_MS: i64 = 20_000;

fn driver(root: &Path, read: &str) -> Driver {
    diaspora_driver_files::register();
    Driver::new("files", json!({"root_path": root, "consumer_read": read})).expect("driver")
}

/// Event `i`'s data: `size` bytes that differ from every other event's and position's.
fn data(i: usize, size: usize) -> Vec<u8> {
    (0..size).map(|k| ((k * 31 + i * 7) % 251) as u8).collect()
}

fn produce(d: &Driver, sizes: &[usize]) {
    d.create_topic("t", json!({})).expect("create");
    let p = d
        .open_topic("t")
        .expect("open")
        .producer()
        .expect("producer");
    for (i, &size) in sizes.iter().enumerate() {
        drop(p.push(json!({"i": i}), data(i, size)));
    }
    p.flush()
        .wait(WAIT_MS)
        .expect("flush")
        .expect("flushed in time");
}

fn consume(d: &Driver, n: usize) -> Vec<Result<Event, Error>> {
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
    (0..n)
        .map(|_| match c.pull().wait(WAIT_MS) {
            Ok(Some(e)) => Ok(e),
            Ok(None) => panic!("pull still pending after {WAIT_MS} ms"),
            Err(e) => Err(e),
        })
        .collect()
}

#[test]
fn the_option_parses_and_bad_values_are_refused() {
    let parse = |v: Value| FilesDriverOptions::from_json(&v).map(|o| o.consumer_read);
    assert_eq!(parse(json!({})).expect("default"), ConsumerRead::Map);
    assert_eq!(
        parse(json!({"consumer_read": "map"})).expect("map"),
        ConsumerRead::Map
    );
    assert_eq!(
        parse(json!({"consumer_read": "read"})).expect("read"),
        ConsumerRead::Read
    );
    for bad in [json!("mmap"), json!(1), json!(null)] {
        let e = parse(json!({ "consumer_read": bad })).expect_err("bad value");
        assert!(e.to_string().contains("driver.consumer_read"), "{e}");
    }
}

/// Sizes across page boundaries, an empty event, runs of many events and one event larger than
/// a refill's data budget (1 MiB), so that runs start and end at every kind of offset.
#[test]
fn both_modes_deliver_every_byte_and_the_data_outlives_consumer_driver_and_files() {
    let mut sizes = vec![0, 1, 4095, 4096, 4097, 100, 65536, 3 << 20, 7, 65536];
    sizes.extend((0..200).map(|i| 1000 + i * 13));
    for mode in MODES {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = driver(dir.path(), mode);
        produce(&d, &sizes);
        let events: Vec<Event> = consume(&d, sizes.len())
            .into_iter()
            .map(|r| r.expect("event"))
            .collect();
        drop(d);
        // The files are gone; what was delivered stays readable and intact.
        std::fs::remove_dir_all(dir.path().join("t")).expect("remove topic");
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e.id(), i as u64, "{mode}");
            assert_eq!(e.data().to_vec(), data(i, sizes[i]), "{mode}: event {i}");
        }
    }
}

#[test]
fn both_modes_report_a_damaged_event_and_serve_the_next() {
    for mode in MODES {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = driver(dir.path(), mode);
        produce(&d, &[65536; 6]);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join(format!("{PART}.data")))
            .expect("open data");
        // One byte of event 2, on a page of its own inside the run.
        file.write_all_at(&[0xff ^ data(2, 65536)[5000]], 2 * 65536 + 5000)
            .expect("damage");
        drop(file);
        let got = consume(&d, 6);
        for (i, r) in got.iter().enumerate() {
            match (i, r) {
                (2, Err(e)) => {
                    assert!(matches!(e.root(), Error::Corrupted(_)), "{mode}: {e:?}");
                    assert!(e.to_string().contains("data checksum"), "{mode}: {e}");
                }
                (2, Ok(_)) => panic!("{mode}: damaged event served"),
                (_, Ok(e)) => assert_eq!(e.data().to_vec(), data(i, 65536), "{mode}: {i}"),
                (_, Err(e)) => panic!("{mode}: event {i}: {e}"),
            }
        }
    }
}

/// A consumer that keeps up with a producer appending to the same files maps only committed
/// bytes, and every event arrives whole.
#[test]
fn both_modes_read_while_a_producer_appends() {
    const N: usize = 400;
    for mode in MODES {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = driver(dir.path(), mode);
        d.create_topic("t", json!({})).expect("create");
        let topic = d.open_topic("t").expect("open");
        let writer = {
            let p = topic.producer().expect("producer");
            std::thread::spawn(move || {
                for i in 0..N {
                    drop(p.push(json!({"i": i}), data(i, 20_000 + i)));
                    if i % 16 == 0 {
                        p.flush().wait(WAIT_MS).expect("flush").expect("in time");
                    }
                }
                p.flush().wait(WAIT_MS).expect("flush").expect("in time");
            })
        };
        for (i, r) in consume(&d, N).into_iter().enumerate() {
            let e = r.expect("event");
            assert_eq!(e.data().to_vec(), data(i, 20_000 + i), "{mode}: event {i}");
        }
        writer.join().expect("producer thread");
    }
}
