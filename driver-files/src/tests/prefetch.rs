//! When a consumer with a thread pool reads ahead, and when a refill adds nothing: the prefetch
//! starts once fewer than half a batch of events and less than half of `MAX_BUFFERED_BYTES` are
//! buffered, never before; a refill adds nothing once `max_buffered` events or
//! `MAX_BUFFERED_BYTES` are buffered.

use std::time::{Duration, Instant};

use diaspora_api::{json, BatchSize, ConsumerBackend, ConsumerOptions, ThreadPool};

use super::{files_consumer as consumer, settle, write_events as write};
use crate::consumer::{FilesConsumer, MAX_BUFFERED_BYTES, MAX_REFILL_DATA};

/// (prefetching, buffered events) right now.
fn state(c: &FilesConsumer) -> (bool, usize) {
    let q = c.inner.queue.lock();
    (q.prefetching, q.events.len())
}

/// Waits (bounded) until no prefetch runs; returns the buffered events then.
fn after_prefetch(c: &FilesConsumer) -> usize {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (prefetching, n) = state(c);
        if !prefetching {
            return n;
        }
        assert!(Instant::now() < deadline, "the prefetch never ended");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn small(n: usize) -> Vec<(String, Vec<u8>)> {
    (0..n)
        .map(|i| (json!({ "i": i }).to_string(), Vec::new()))
        .collect()
}

/// Batches of 10: pulls 1 to 5 leave 9 to 5 events buffered and start no prefetch; pull 6
/// leaves 4, fewer than half a batch, and the next batch is read in the background, with no
/// further pull.
#[test]
fn prefetch_starts_below_half_a_batch_and_not_before() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), small(100));
    let c = consumer(
        dir.path(),
        ConsumerOptions {
            batch_size: BatchSize::Fixed(10),
            thread_pool: Some(ThreadPool::new(1)),
            ..Default::default()
        },
    );
    for i in 1..=5u64 {
        let e = settle(c.pull(), "pull").expect("event");
        assert_eq!(e.id(), i - 1);
        // The flag is set by the pull itself, so a prefetch it started is visible here, running
        // or done (then more than 10 - i events are buffered).
        assert_eq!(
            state(&c),
            (false, 10 - i as usize),
            "after pull {i}: no prefetch while at least half a batch is buffered"
        );
    }
    let e = settle(c.pull(), "pull 6").expect("event");
    assert_eq!(e.id(), 5);
    assert_eq!(
        after_prefetch(&c),
        14,
        "the 4 events left and the next batch of 10, read ahead without a pull"
    );
    for i in 6..100u64 {
        assert_eq!(settle(c.pull(), "pull").expect("event").id(), i);
    }
}

/// The byte bound of the prefetch is strict. Events of half a refill's data cap, two per
/// refill, and a batch size too large to matter: after each pull (and the prefetch it
/// started) a quarter of `MAX_BUFFERED_BYTES` more is buffered, until a pull leaves exactly
/// half of it: that one starts no prefetch; the next one does.
#[test]
fn prefetch_waits_until_less_than_half_the_byte_bound_is_buffered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let meta = |i: usize| json!({ "i": i }).to_string();
    let size = (MAX_REFILL_DATA / 2) as usize; // metadata and data of one event
    let n = 16;
    write(
        dir.path(),
        (0..n).map(|i| (meta(i), vec![i as u8; size - meta(i).len()])),
    );
    let c = consumer(
        dir.path(),
        ConsumerOptions {
            batch_size: BatchSize::Fixed(1000),
            data_selector: Some(diaspora_api::select_all()),
            thread_pool: Some(ThreadPool::new(1)),
            ..Default::default()
        },
    );
    let half = MAX_BUFFERED_BYTES / 2;
    let mut at_half = 0;
    for i in 0..n as u64 {
        let before = c.inner.queue.lock().bytes;
        let e = settle(c.pull(), "pull").expect("event");
        assert_eq!(e.id(), i);
        assert_eq!(
            e.metadata().as_bytes().len() as u64 + e.data().len(),
            size as u64
        );
        let left = before.saturating_sub(size as u64);
        if left >= half {
            assert_eq!(c.inner.queue.lock().bytes, left);
            assert!(
                !c.inner.queue.lock().prefetching,
                "pull {i} left {left} bytes buffered, not less than {half}: no prefetch"
            );
            at_half += usize::from(left == half);
        }
        after_prefetch(&c);
    }
    assert!(at_half > 0, "some pull left exactly half the bound");
}

/// A refill adds nothing once `max_buffered` (batch size × `max_num_batches`) events are
/// buffered, whatever their bytes.
#[test]
fn refill_adds_nothing_once_max_buffered_events_are_buffered() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), small(30));
    let c = consumer(
        dir.path(),
        ConsumerOptions {
            batch_size: BatchSize::Fixed(10),
            max_num_batches: 1,
            ..Default::default()
        },
    );
    c.inner.refill();
    assert_eq!(state(&c).1, 10);
    c.inner.refill();
    assert_eq!(
        state(&c).1,
        10,
        "10 events buffered, the bound: nothing added"
    );
}

/// A refill adds nothing once `MAX_BUFFERED_BYTES` are buffered, whatever the event count.
#[test]
fn refill_adds_nothing_once_max_buffered_bytes_are_buffered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let size = MAX_REFILL_DATA as usize; // one event per refill
    let n = (MAX_BUFFERED_BYTES / MAX_REFILL_DATA) as usize + 2;
    write(
        dir.path(),
        (0..n).map(|i| (json!({ "i": i }).to_string(), vec![i as u8; size])),
    );
    let c = consumer(
        dir.path(),
        ConsumerOptions {
            batch_size: BatchSize::Fixed(100),
            data_selector: Some(diaspora_api::select_all()),
            ..Default::default()
        },
    );
    for k in 1..n - 1 {
        c.inner.refill();
        assert_eq!(state(&c).1, k, "one event per refill");
    }
    let q = c.inner.queue.lock();
    assert!(q.bytes >= MAX_BUFFERED_BYTES, "{} bytes buffered", q.bytes);
    drop(q);
    c.inner.refill();
    assert_eq!(
        state(&c).1,
        n - 2,
        "the byte bound is reached: nothing added"
    );
}

/// Data checksums are checked by the pull that delivers an event, also when a prefetch read
/// it: a damaged event fails its own pull, and the events around it are delivered.
#[test]
fn damaged_data_read_ahead_fails_its_own_pull() {
    let dir = tempfile::tempdir().expect("tempdir");
    let size = 64 << 10;
    write(
        dir.path(),
        (0..40u8).map(|i| (json!({ "i": i }).to_string(), vec![i; size])),
    );
    let data = dir
        .path()
        .join("t/partitions/00000000/00000000000000000000.data");
    let mut bytes = std::fs::read(&data).expect("read data file");
    bytes[25 * size + 100] ^= 0xff;
    std::fs::write(&data, bytes).expect("write data file");
    let c = consumer(
        dir.path(),
        ConsumerOptions {
            batch_size: BatchSize::Fixed(4),
            data_selector: Some(diaspora_api::select_all()),
            thread_pool: Some(ThreadPool::new(1)),
            ..Default::default()
        },
    );
    for i in 0..40u64 {
        match settle(c.pull(), "pull") {
            Ok(e) => {
                assert_ne!(i, 25, "the damaged event was delivered");
                assert_eq!(e.id(), i);
                assert_eq!(e.data().to_vec(), vec![i as u8; size]);
            }
            Err(diaspora_api::Error::EventFailed {
                partition,
                id,
                source,
            }) => {
                assert_eq!((i, partition, id), (25, 0, 25));
                assert!(
                    source.to_string().contains("data checksum mismatch"),
                    "{source}"
                );
            }
            Err(e) => panic!("pull {i}: {e}"),
        }
    }
}
