//! Crash recovery and damage handling of a partition's files: only a torn tail is cut, ids only
//! grow, appends never overwrite a byte, offsets read from disk never wrap, damaged records are
//! reported (by consumers and `verify`) and repaired only explicitly, with tombstones.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use diaspora_api::{json, select_all, ConsumerOptions, Driver, Error, TopicHandle};
use diaspora_driver_files::format::{record_offset, IndexRecord, RECORD_SIZE};
use diaspora_driver_files::repair::repair_topic;
use diaspora_driver_files::verify_topic;

fn driver(root: &Path) -> Driver {
    diaspora_driver_files::register();
    Driver::new("files", json!({"root_path": root})).expect("driver")
}

/// Creates topic `t` (one partition) holding `n` events `{"i": i}` of `size` bytes of `i`.
fn produce(root: &Path, n: u64, size: usize) -> TopicHandle {
    let d = driver(root);
    d.create_topic("t", json!({})).expect("create");
    let t = d.open_topic("t").expect("open");
    push(&t, 0..n, size);
    t
}

fn push(t: &TopicHandle, ids: std::ops::Range<u64>, size: usize) -> Vec<u64> {
    let p = t.producer().expect("producer");
    let futures: Vec<_> = ids
        .map(|i| p.push(json!({"i": i}), vec![i as u8; size]))
        .collect();
    p.flush().get().expect("flush");
    futures
        .into_iter()
        .map(|f| f.get().expect("stored"))
        .collect()
}

fn file(root: &Path, ext: &str) -> PathBuf {
    root.join(format!("t/partitions/00000000/00000000000000000000.{ext}"))
}

fn len(p: &Path) -> u64 {
    std::fs::metadata(p).expect("stat").len()
}

fn open_rw(p: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(p)
        .expect("open")
}

fn read_record(root: &Path, i: u64) -> IndexRecord {
    let mut b = [0u8; RECORD_SIZE];
    open_rw(&file(root, "index"))
        .read_exact_at(&mut b, record_offset(i))
        .expect("read record");
    IndexRecord::decode(&b).expect("valid record")
}

/// Rewrites record `i` with a valid checksum over `f`'s changes.
fn rewrite_record(root: &Path, i: u64, f: impl FnOnce(&mut IndexRecord)) {
    let mut r = read_record(root, i);
    f(&mut r);
    let mut b = [0u8; RECORD_SIZE];
    r.encode(&mut b);
    open_rw(&file(root, "index"))
        .write_all_at(&b, record_offset(i))
        .expect("write record");
}

fn flip(path: &Path, offset: u64) {
    let f = open_rw(path);
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset).expect("read");
    b[0] ^= 0x40;
    f.write_all_at(&b, offset).expect("write");
}

/// What each event of a full read gives: Ok(i) (checked against its data) or the error text.
fn read_all(t: &TopicHandle, consumer: &str, with_data: bool) -> Vec<Result<u64, String>> {
    let c = t
        .consumer_with(
            consumer,
            ConsumerOptions {
                data_selector: with_data.then(select_all),
                ..Default::default()
            },
        )
        .expect("consumer");
    let mut out = Vec::new();
    for _ in 0..10_000 {
        match c.pull().wait(300) {
            Ok(Some(e)) if e.is_no_more_events() => break,
            Ok(Some(e)) => {
                let i = e.metadata().json().expect("json")["i"].as_u64().expect("i");
                assert_eq!(e.id(), i, "event id and content disagree");
                if with_data {
                    assert!(
                        e.data().to_vec().iter().all(|b| *b == i as u8),
                        "data of {i}"
                    );
                }
                out.push(Ok(i));
            }
            Ok(None) => break,
            Err(e) => {
                assert!(matches!(e.root(), Error::Corrupted(_)), "{e:?}");
                out.push(Err(e.to_string()));
            }
        }
    }
    out
}

fn problem_ids(root: &Path) -> Vec<u64> {
    verify_topic(root, "t").expect("verify")[0]
        .problems
        .iter()
        .map(|p| p.0)
        .collect()
}

// ----- issue 5 item 2: never remove a committed record, never reuse an id -----

#[test]
fn truncated_data_file_keeps_committed_records_and_ids_only_grow() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let t = produce(root, 10, 100);
    // Lose the end of the data file: events 5..9 (committed) point past its end.
    open_rw(&file(root, "data"))
        .set_len(5 * 100 + 30)
        .expect("truncate");
    let index_len = len(&file(root, "index"));
    let t2 = driver(root).open_topic("t").expect("reopen");
    assert_eq!(push(&t2, 10..11, 100), vec![10], "an id was reused");
    assert_eq!(
        len(&file(root, "index")),
        index_len + 40,
        "records were cut"
    );
    let got = read_all(&t, "c", true);
    assert_eq!(got.len(), 11, "{got:?}");
    assert_eq!(got[..5], [Ok(0), Ok(1), Ok(2), Ok(3), Ok(4)]);
    assert!(got[5..10].iter().all(|r| r.is_err()), "{got:?}");
    assert_eq!(got[10], Ok(10));
    assert_eq!(problem_ids(root), vec![5, 6, 7, 8, 9]);
}

#[test]
fn truncated_metadata_file_keeps_committed_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let t = produce(root, 6, 10);
    let meta = file(root, "meta");
    open_rw(&meta).set_len(len(&meta) - 3).expect("truncate");
    assert_eq!(push(&t, 6..7, 10), vec![6]);
    let got = read_all(&t, "c", false);
    assert_eq!(got.len(), 7, "{got:?}");
    assert!(got[5].is_err() && got[6] == Ok(6), "{got:?}");
    assert_eq!(problem_ids(root), vec![5]);
}

#[test]
fn appends_never_overwrite_bytes_after_the_last_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let t = produce(root, 3, 50);
    // Leftovers of an interrupted write (or anything else) after the last record.
    let (meta, data) = (file(root, "meta"), file(root, "data"));
    let (meta_end, data_end) = (len(&meta), len(&data));
    open_rw(&meta)
        .write_all_at(b"LEFTOVER", meta_end)
        .expect("w");
    open_rw(&data)
        .write_all_at(&[0xee; 77], data_end)
        .expect("w");
    assert_eq!(push(&t, 3..4, 50), vec![3]);
    let r = read_record(root, 3);
    assert_eq!(
        (r.meta_offset, r.data_offset),
        (meta_end + 8, data_end + 77)
    );
    let mut junk = [0u8; 8];
    open_rw(&meta)
        .read_exact_at(&mut junk, meta_end)
        .expect("r");
    assert_eq!(&junk, b"LEFTOVER", "metadata leftovers overwritten");
    let mut junk = [0u8; 77];
    open_rw(&data)
        .read_exact_at(&mut junk, data_end)
        .expect("r");
    assert_eq!(junk, [0xee; 77], "data leftovers overwritten");
    assert_eq!(read_all(&t, "c", true), (0..4).map(Ok).collect::<Vec<_>>());
    assert!(problem_ids(root).is_empty(), "gaps are not damage");
}

#[test]
fn damaged_last_record_content_is_reported_not_cut() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let t = produce(root, 4, 20);
    flip(&file(root, "data"), 3 * 20 + 5);
    assert_eq!(push(&t, 4..5, 20), vec![4]);
    let got = read_all(&t, "c", true);
    assert_eq!(got.len(), 5);
    assert!(
        got[3].as_ref().is_err_and(|e| e.contains("checksum")),
        "{got:?}"
    );
    assert_eq!(problem_ids(root), vec![3]);
}

// ----- issue 5 item 3: checked arithmetic on every offset read from disk -----

#[test]
fn wrapping_offsets_never_make_an_append_overwrite_event_0() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let t = produce(root, 3, 30);
    let before_meta = std::fs::read(file(root, "meta")).expect("read");
    let before_data = std::fs::read(file(root, "data")).expect("read");
    // The last record's ends wrap past 2^64 to small values (6 and 4).
    rewrite_record(root, 2, |r| {
        r.meta_offset = u64::MAX - 3;
        r.meta_len = 10;
        r.data_offset = u64::MAX - 5;
        r.data_len = 10;
    });
    assert_eq!(push(&t, 3..4, 30), vec![3]);
    let meta = std::fs::read(file(root, "meta")).expect("read");
    let data = std::fs::read(file(root, "data")).expect("read");
    assert_eq!(
        meta[..before_meta.len()],
        before_meta[..],
        "metadata overwritten"
    );
    assert_eq!(
        data[..before_data.len()],
        before_data[..],
        "data overwritten"
    );
    let got = read_all(&t, "c", true);
    assert_eq!(got.len(), 4, "{got:?}");
    assert_eq!((&got[0], &got[1], &got[3]), (&Ok(0), &Ok(1), &Ok(3)));
    assert!(got[2].is_err());
    assert_eq!(problem_ids(root), vec![2]);
}

#[test]
fn verify_lists_every_bad_record_and_never_aborts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let _t = produce(root, 8, 16);
    rewrite_record(root, 1, |r| r.data_len = u64::MAX); // overflows
    rewrite_record(root, 2, |r| r.meta_offset = 1 << 40); // past the end
    flip(&file(root, "index"), record_offset(3) + 2); // own checksum, mid-log
    flip(&file(root, "meta"), read_record(root, 4).meta_offset); // metadata checksum
    flip(&file(root, "data"), 5 * 16); // data checksum
    rewrite_record(root, 6, |r| r.meta_offset -= 1); // overlaps record 5
    let report = &verify_topic(root, "t").expect("verify never aborts")[0];
    let ids: Vec<u64> = report.problems.iter().map(|p| p.0).collect();
    assert_eq!(ids, vec![1, 2, 3, 4, 5, 6], "{:?}", report.problems);
    assert_eq!(report.records, 8);
    for (needle, (_, problem)) in [
        "overflows",
        "beyond the end of the metadata file",
        "own checksum",
        "metadata checksum mismatch",
        "data checksum mismatch",
        "overlaps",
    ]
    .iter()
    .zip(&report.problems)
    {
        assert!(problem.contains(needle), "{problem:?} lacks {needle:?}");
    }
}

// ----- issue 15 item 2: crash recovery of the index tail -----

#[test]
fn complete_last_record_failing_its_checksum_is_cut_and_the_index_shortened() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let t = produce(root, 5, 8);
    let index = file(root, "index");
    flip(&index, record_offset(4) + 10);
    let report = &verify_topic(root, "t").expect("verify")[0];
    assert!(report.is_clean(), "a torn tail is not damage: {report:?}");
    assert_eq!((report.records, report.torn_tail_records), (4, 1));
    assert_eq!(len(&index), record_offset(5), "verify changed the index");
    assert_eq!(
        push(&t, 4..5, 8),
        vec![4],
        "the torn record's id is the next"
    );
    assert_eq!(len(&index), record_offset(5));
    assert_eq!(read_all(&t, "c", true), (0..5).map(Ok).collect::<Vec<_>>());
    // The cut is really a truncation, also with nothing to append.
    flip(&index, record_offset(4) + 1);
    let p = diaspora_driver_files::partition::PartitionLog::open(
        &root.join("t/partitions/00000000"),
        false,
    )
    .expect("open log");
    let plan = p.recover_tail().expect("recover");
    assert_eq!((plan.count, plan.cut_records), (4, 1));
    assert_eq!(len(&index), record_offset(4), "index not shortened");
}

#[test]
fn checksum_valid_last_record_past_the_end_of_the_files_is_kept_and_reported() {
    // Decided (see tail.rs, rule 4): files are written before the index, so such a record is
    // damage after the commit, not a torn write; cutting it could reuse an acknowledged id.
    for ext in ["data", "meta"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let t = produce(root, 3, 40);
        rewrite_record(root, 2, |r| {
            if ext == "data" {
                r.data_len = 1000;
            } else {
                r.meta_len = 1000;
            }
        });
        let index_len = len(&file(root, "index"));
        let file_end = len(&file(root, ext));
        assert_eq!(push(&t, 3..4, 40), vec![3], "{ext}: id reused");
        assert_eq!(
            len(&file(root, "index")),
            index_len + 40,
            "{ext}: record cut"
        );
        let r2 = read_record(root, 2);
        let r3 = read_record(root, 3);
        let (claimed_end, new_start) = if ext == "data" {
            (r2.data_end(), r3.data_offset)
        } else {
            (r2.meta_end(), r3.meta_offset)
        };
        assert!(claimed_end > file_end);
        assert_eq!(
            new_start, claimed_end,
            "{ext}: new bytes inside a kept record's range"
        );
        let got = read_all(&t, "c", true);
        assert_eq!(got.len(), 4, "{ext}: {got:?}");
        assert!(got[2].is_err() && got[3] == Ok(3), "{ext}: {got:?}");
        assert_eq!(problem_ids(root), vec![2], "{ext}");
    }
}

#[test]
fn index_shorter_than_its_header_is_recovered_and_the_partition_appends() {
    for cut in [0u64, 7, 15] {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let t = produce(root, 0, 0);
        let index = file(root, "index");
        open_rw(&index).set_len(cut).expect("truncate");
        let t2 = driver(root).open_topic("t").expect("a short header opens");
        assert!(verify_topic(root, "t").expect("verify")[0].is_clean());
        assert_eq!(push(&t2, 0..2, 5), vec![0, 1], "cut at {cut}");
        assert_eq!(len(&index), record_offset(2));
        let header = std::fs::read(&index).expect("read");
        assert_eq!(&header[..8], b"DSPIDX\0\x01");
        assert_eq!(read_all(&t, "c", true), vec![Ok(0), Ok(1)]);
    }
}

// ----- issue 15 item 6: bounds and contiguity of every record of a read batch -----

#[test]
fn bad_records_in_the_middle_of_a_read_batch_are_rejected() {
    for (what, with_data) in [
        ("meta past end", false),
        ("overlap", false),
        ("data past end", true),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let t = produce(root, 10, 12);
        match what {
            "meta past end" => rewrite_record(root, 5, |r| r.meta_offset += 1 << 20),
            "overlap" => {
                let prev = read_record(root, 4);
                rewrite_record(root, 5, |r| r.meta_offset = prev.meta_offset);
            }
            _ => rewrite_record(root, 5, |r| r.data_offset += 1 << 20),
        }
        let got = read_all(&t, "c", with_data);
        assert_eq!(got.len(), 10, "{what}: {got:?}");
        for (i, r) in got.iter().enumerate() {
            assert_eq!(r.is_ok(), i != 5, "{what}: event {i}: {r:?}");
        }
    }
}

/// A record that does not follow its predecessor is read in a refill of its own, even when its
/// bytes are valid: here every event is identical, so a record pointing at event 0's metadata
/// or data passes every checksum and must be delivered, and so must the events read before it
/// (taken into the same span, it would make the span end before it starts).
#[test]
fn a_valid_record_that_does_not_follow_its_predecessor_starts_a_new_span() {
    for with_data in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let d = driver(root);
        d.create_topic("t", json!({})).expect("create");
        let t = d.open_topic("t").expect("open");
        let p = t.producer().expect("producer");
        for _ in 0..10 {
            drop(p.push(json!({"same": 1}), vec![7u8; 25]));
        }
        p.flush().get().expect("flush");
        if with_data {
            rewrite_record(root, 5, |r| r.data_offset = 0);
        } else {
            rewrite_record(root, 5, |r| r.meta_offset = 0);
        }
        let c = t
            .consumer_with(
                "c",
                ConsumerOptions {
                    data_selector: with_data.then(select_all),
                    batch_size: diaspora_api::BatchSize::Fixed(3),
                    ..Default::default()
                },
            )
            .expect("consumer");
        for i in 0..10u64 {
            let e = c
                .pull()
                .wait(20_000)
                .unwrap_or_else(|e| panic!("data {with_data}: event {i}: {e}"))
                .expect("an event within the deadline");
            assert_eq!(e.id(), i, "data {with_data}");
            assert_eq!(e.metadata().json().expect("json")["same"], 1);
            if with_data {
                assert_eq!(e.data().to_vec(), vec![7u8; 25], "data of {i}");
            }
        }
    }
}

// ----- explicit repair -----

#[test]
fn repair_replaces_damaged_records_by_tombstones_and_never_reuses_ids() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let t = produce(root, 10, 25);
    flip(&file(root, "index"), record_offset(2) + 3); // own checksum
    flip(&file(root, "data"), 4 * 25 + 1); // data checksum
    rewrite_record(root, 6, |r| r.meta_offset = u64::MAX - 1); // wraps
    open_rw(&file(root, "data"))
        .set_len(8 * 25 + 3)
        .expect("trunc"); // 8, 9 past the end
    let index = file(root, "index");
    open_rw(&index)
        .write_all_at(&[1, 2, 3], len(&index))
        .expect("torn tail");
    assert_eq!(problem_ids(root), vec![2, 4, 6, 8, 9]);

    let reports = repair_topic(root, "t").expect("repair");
    let fixed: Vec<u64> = reports[0].tombstoned.iter().map(|p| p.0).collect();
    assert_eq!(fixed, vec![2, 4, 6, 8, 9]);
    assert_eq!(reports[0].cut_bytes, 3);
    let after = &verify_topic(root, "t").expect("verify")[0];
    assert!(after.is_clean(), "{after:?}");
    assert_eq!((after.records, after.tombstones), (10, 5));
    // Repair is idempotent.
    assert!(repair_topic(root, "t").expect("again")[0]
        .tombstoned
        .is_empty());

    assert_eq!(push(&t, 10..12, 25), vec![10, 11], "ids only grow");
    let got = read_all(&t, "c", true);
    assert_eq!(got.len(), 12, "{got:?}");
    for (i, r) in got.iter().enumerate() {
        match r {
            Ok(id) => assert_eq!(*id, i as u64),
            Err(e) => {
                assert!([2, 4, 6, 8, 9].contains(&i), "event {i}: {e}");
                assert!(e.contains("removed by topic repair"), "{e}");
            }
        }
    }
}
