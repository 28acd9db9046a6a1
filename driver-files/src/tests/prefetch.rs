//! When a consumer with a thread pool reads ahead, and when a refill adds nothing: the prefetch
//! starts once fewer than half a batch of events and less than half of `MAX_BUFFERED_BYTES` are
//! buffered, never before; a refill adds nothing once `max_buffered` events or
//! `MAX_BUFFERED_BYTES` are buffered.

use std::time::{Duration, Instant};

use diaspora_api::{json, BatchSize, ConsumerBackend, ConsumerOptions, ThreadPool};

use super::{settle, topic_with};
use crate::consumer::{FilesConsumer, MAX_BUFFERED_BYTES};
use crate::topic::TopicShared;

/// Writes `events` (metadata, data) to a one-partition topic under `dir`.
fn write(dir: &std::path::Path, events: Vec<(String, Vec<u8>)>) {
    let topic = topic_with(dir, 1, |_| {});
    let producer = topic.producer().expect("producer");
    for (meta, data) in events {
        drop(producer.push(meta, data));
    }
    settle(producer.flush(), "flush").expect("flush");
}

fn consumer(dir: &std::path::Path, options: ConsumerOptions) -> FilesConsumer {
    let shared = TopicShared::open(dir, "t", ThreadPool::inline()).expect("open");
    FilesConsumer::new(shared, "c", options).expect("consumer")
}

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

/// The byte bound of the prefetch is strict: with exactly half of `MAX_BUFFERED_BYTES` still
/// buffered (one event of 32 MiB of metadata and data), no prefetch starts; once it is pulled
/// too, one does.
#[test]
fn prefetch_waits_until_less_than_half_the_byte_bound_is_buffered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let meta = |i: usize| json!({ "i": i }).to_string();
    let half = (MAX_BUFFERED_BYTES / 2) as usize;
    write(
        dir.path(),
        vec![
            (meta(0), vec![0; half - meta(0).len()]),
            (meta(1), vec![1; half - meta(1).len()]),
            // Past the refill's 64 MiB data cap: the first refill holds events 0 and 1 only.
            (meta(2), vec![2; 1 << 20]),
        ],
    );
    let c = consumer(
        dir.path(),
        ConsumerOptions {
            batch_size: BatchSize::Fixed(4),
            data_selector: Some(diaspora_api::select_all()),
            thread_pool: Some(ThreadPool::new(1)),
            ..Default::default()
        },
    );
    let e = settle(c.pull(), "pull 0").expect("event 0");
    assert_eq!(
        e.metadata().as_bytes().len() as u64 + e.data().len(),
        half as u64
    );
    assert_eq!(
        c.inner.queue.lock().bytes,
        half as u64,
        "event 1 is buffered"
    );
    assert_eq!(
        state(&c),
        (false, 1),
        "1 event, fewer than half a batch, but exactly half the byte bound: no prefetch"
    );
    drop(e);
    let e = settle(c.pull(), "pull 1").expect("event 1");
    assert_eq!(e.id(), 1);
    assert_eq!(after_prefetch(&c), 1, "event 2 was read ahead");
    assert_eq!(settle(c.pull(), "pull 2").expect("event 2").id(), 2);
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
    let quarter = (MAX_BUFFERED_BYTES / 4) as usize;
    write(
        dir.path(),
        (0..5u8)
            .map(|i| (json!({ "i": i }).to_string(), vec![i; quarter]))
            .collect(),
    );
    let c = consumer(
        dir.path(),
        ConsumerOptions {
            batch_size: BatchSize::Fixed(100),
            data_selector: Some(diaspora_api::select_all()),
            ..Default::default()
        },
    );
    c.inner.refill();
    let q = c.inner.queue.lock();
    assert_eq!(
        q.events.len(),
        4,
        "the 64 MiB data cap stops the first refill"
    );
    assert!(q.bytes >= MAX_BUFFERED_BYTES, "{} bytes buffered", q.bytes);
    drop(q);
    c.inner.refill();
    assert_eq!(state(&c).1, 4, "the byte bound is reached: nothing added");
}
