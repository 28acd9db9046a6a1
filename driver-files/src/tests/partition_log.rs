//! [`PartitionLog`] on its own: what a read returns and refuses, and that a seal persists.

use diaspora_api::{DataView, Segment};

use crate::error::FilesError;
use crate::format::{IndexRecord, INDEX_EXT, SEGMENT_BASE};
use crate::partition::{data_crc, read_up_to, BatchPayload, PartitionLog};

/// A partition in `dir` holding `n` events: metadata `m{i}`, 4 bytes of data `i`.
fn log_with(dir: &std::path::Path, n: u8) -> PartitionLog {
    PartitionLog::create(dir).expect("create");
    let log = PartitionLog::open(dir, false).expect("open");
    let mut batch = BatchPayload::default();
    for i in 0..n {
        let meta = format!("m{i}");
        batch.meta.extend_from_slice(meta.as_bytes());
        let data = DataView::from(vec![i; 4]);
        let crc = data_crc(&data);
        batch.push_event(meta.len() as u32, data, crc);
    }
    assert!(!batch.is_empty());
    assert_eq!(log.append(&batch).expect("append"), 0);
    log
}

#[test]
fn a_read_returns_every_record_asked_for_and_nothing_past_the_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = log_with(dir.path(), 10);
    let all = log.read_records(0, 100).expect("read");
    assert_eq!(all.len(), 10);
    assert_eq!(log.read_records(3, 4).expect("read").len(), 4);
    assert_eq!(log.read_records(7, 100).expect("read"), all[7..].to_vec());
    assert!(log.read_records(10, 5).expect("at the end").is_empty());
    assert!(log.read_records(15, 5).expect("past the end").is_empty());
    assert!(log.read_records(0, 0).expect("none asked").is_empty());
    assert!(BatchPayload::default().is_empty());
}

#[test]
fn a_tombstone_ends_a_read_and_is_reported_with_its_id_and_the_index_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = log_with(dir.path(), 6);
    let recs = log.read_records(0, 10).expect("read");
    let r = &recs[3];
    log.rewrite_record(3, &IndexRecord::tombstone(r.meta_offset, r.data_offset))
        .expect("tombstone");
    assert_eq!(
        log.read_records(0, 10).expect("read").len(),
        3,
        "stops before it"
    );
    match log.read_records(3, 10) {
        Err(FilesError::CorruptRecord { path, index, .. }) => {
            assert_eq!(index, 3);
            assert_eq!(path, dir.path().join(format!("{SEGMENT_BASE}.{INDEX_EXT}")));
        }
        other => panic!("expected the tombstone reported: {other:?}"),
    }
    assert_eq!(log.read_records(4, 10).expect("after it").len(), 2);
}

#[test]
fn a_seal_is_persisted_for_every_later_opener() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = log_with(dir.path(), 1);
    assert!(!log.is_sealed());
    log.seal().expect("seal");
    log.seal().expect("seal again");
    assert!(log.is_sealed());
    let again = PartitionLog::open(dir.path(), false).expect("reopen");
    assert!(again.is_sealed(), "the marker is on disk");
}

#[test]
fn spans_and_segments_outside_the_files_are_refused_before_reading() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = log_with(dir.path(), 3);
    let recs = log.read_records(0, 10).expect("read");
    let (first, last) = (recs[0], recs[2]);
    assert_eq!(
        &log.read_meta_span(&first, &last).expect("span")[..],
        b"m0m1m2"
    );
    assert_eq!(log.read_data_span(&first, &last).expect("span").len(), 12);
    let past = IndexRecord {
        meta_offset: 100,
        data_offset: 100,
        ..last
    };
    assert!(matches!(
        log.read_meta_span(&first, &past),
        Err(FilesError::OutOfRange { .. })
    ));
    assert!(matches!(
        log.read_data_span(&first, &past),
        Err(FilesError::OutOfRange { .. })
    ));
    // A span that would end before it starts.
    assert!(matches!(
        log.read_meta_span(&last, &first),
        Err(FilesError::OutOfRange { .. })
    ));
    // A record whose end is past the largest file offset: refused, not read at that offset.
    let huge = IndexRecord {
        data_offset: u64::MAX / 2,
        data_len: u64::MAX / 2,
        ..last
    };
    let mut out = [0u8; 4];
    let whole = [Segment { offset: 0, len: 4 }];
    assert!(matches!(
        log.read_data(&huge, &whole, &mut out),
        Err(FilesError::OutOfRange { .. })
    ));
    log.read_data(&last, &whole, &mut out).expect("in range");
    assert_eq!(out, [2; 4]);
}

#[test]
fn data_read_into_several_buffers_crosses_their_boundaries() {
    let dir = tempfile::tempdir().expect("tempdir");
    PartitionLog::create(dir.path()).expect("create");
    let log = PartitionLog::open(dir.path(), false).expect("open");
    let mut batch = BatchPayload::default();
    batch.meta.extend_from_slice(b"m");
    let data = DataView::from((0u8..10).collect::<Vec<u8>>());
    let crc = data_crc(&data);
    batch.push_event(1, data, crc);
    log.append(&batch).expect("append");
    let rec = log.read_records(0, 1).expect("read")[0];
    let segments = [Segment { offset: 1, len: 3 }, Segment { offset: 5, len: 5 }];
    let (mut a, mut b) = ([0u8; 4], [0u8; 4]);
    {
        let mut bufs: Vec<&mut [u8]> = vec![&mut a, &mut b];
        log.read_data_into(&rec, &segments, &mut bufs)
            .expect("read");
    }
    assert_eq!((a, b), ([1, 2, 3, 5], [6, 7, 8, 9]));
    let mut short = [0u8; 7];
    let mut bufs: Vec<&mut [u8]> = vec![&mut short];
    assert!(matches!(
        log.read_data_into(&rec, &segments, &mut bufs),
        Err(FilesError::OutOfRange { .. })
    ));
}

#[test]
fn a_read_error_is_returned_not_retried() {
    // A directory opens, but every read fails (EISDIR).
    let dir = tempfile::tempdir().expect("tempdir");
    let d = std::fs::File::open(dir.path()).expect("open dir");
    let mut buf = [0u8; 8];
    assert!(read_up_to(&d, &mut buf, 0).is_err());
}

#[test]
fn only_permission_and_read_only_errors_fall_back_to_a_read_only_open() {
    use crate::partition::is_read_only_error;
    for errno in [libc::EROFS, libc::EACCES, libc::EPERM] {
        assert!(is_read_only_error(&std::io::Error::from_raw_os_error(
            errno
        )));
    }
    for errno in [libc::ENOENT, libc::EISDIR, libc::EMFILE] {
        assert!(!is_read_only_error(&std::io::Error::from_raw_os_error(
            errno
        )));
    }
}

#[test]
fn empty_data_has_the_crc_of_no_bytes() {
    assert_eq!(
        crate::partition::data_crc(&diaspora_api::DataView::new()),
        crc32fast::hash(&[])
    );
    let one = diaspora_api::DataView::from(vec![7u8]);
    assert_eq!(crate::partition::data_crc(&one), crc32fast::hash(&[7]));
}

/// A recycled payload is empty, keeps its capacity, and one that grew too large is dropped.
#[test]
fn recycled_payloads_are_empty_and_bounded() {
    let mut p = crate::partition::BatchPayload::default();
    for i in 0..100u32 {
        p.meta.extend_from_slice(b"{}");
        p.push_event(2, diaspora_api::DataView::from(vec![i as u8; 10]), i);
    }
    assert!(p.recycle());
    assert!(p.is_empty() && p.meta.is_empty() && p.data.is_empty() && p.crcs.is_empty());
    assert!(p.meta.capacity() >= 200 && p.data.capacity() >= 100);
    p.meta.reserve(crate::partition::MAX_RECYCLED_BYTES + 1);
    assert!(!p.recycle());
    assert_eq!(p.meta.capacity(), 0);
}
