//! Item 9 of issue 5: a consumer's refill is bounded in bytes of metadata, whatever its size.

use std::sync::atomic::Ordering;

use diaspora_api::{json, ConsumerBackend, ConsumerOptions, ThreadPool};

use super::{files_consumer, settle, topic_with, write_events};
use crate::consumer::{FilesConsumer, MAX_BUFFERED_BYTES, MAX_REFILL_DATA, MAX_REFILL_META};
use crate::topic::TopicShared;

fn big_meta(i: usize, pad: usize) -> String {
    format!(r#"{{"i":{i},"pad":"{}"}}"#, "x".repeat(pad))
}

/// Pulling one event of 150 events with 2 MiB of metadata each reads at most the cap
/// (it used to read the metadata of the whole partition, 300 MiB, in one refill).
#[test]
fn one_pull_reads_at_most_the_metadata_cap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = topic_with(dir.path(), 1, |_| {});
    let producer = topic.producer().expect("producer");
    for i in 0..150 {
        drop(producer.push(big_meta(i, 2 << 20), ()));
    }
    settle(producer.flush(), "flush").expect("flush");
    let shared = TopicShared::open(dir.path(), "t", ThreadPool::inline()).expect("open");
    let consumer = FilesConsumer::new(shared, "c", ConsumerOptions::default()).expect("consumer");
    let e = settle(consumer.pull(), "pull").expect("event 0");
    assert_eq!(e.id(), 0);
    assert_eq!(e.metadata().json().expect("json")["i"], 0);
    let read = consumer.inner.meta_read.load(Ordering::SeqCst);
    assert!(
        read <= MAX_REFILL_META,
        "one refill read {read} bytes of metadata, the cap is {MAX_REFILL_META}"
    );
    assert!(read >= 2 << 20, "the first event was read: {read}");
    // The rest is still delivered, in order.
    for i in 1..150u64 {
        let e = settle(consumer.pull(), "pull").expect("event");
        assert_eq!(e.id(), i);
    }
}

/// With a prefetching thread pool, what is buffered stays bounded in bytes too (prefetch used
/// to read ahead up to 4096 events, whatever their size).
#[test]
fn prefetch_buffers_a_bounded_number_of_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = topic_with(dir.path(), 1, |_| {});
    let producer = topic.producer().expect("producer");
    for i in 0..150 {
        drop(producer.push(big_meta(i, 2 << 20), ()));
    }
    settle(producer.flush(), "flush").expect("flush");
    let shared = TopicShared::open(dir.path(), "t", ThreadPool::inline()).expect("open");
    let options = ConsumerOptions {
        thread_pool: Some(ThreadPool::new(1)),
        ..Default::default()
    };
    let consumer = FilesConsumer::new(shared, "c", options).expect("consumer");
    let bound = MAX_BUFFERED_BYTES + MAX_REFILL_META;
    let mut pulled = 0u64;
    for i in 0..40u64 {
        let e = settle(consumer.pull(), "pull").expect("event");
        assert_eq!(e.id(), i);
        pulled += e.metadata().as_bytes().len() as u64;
        drop(e);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let q = consumer.inner.queue.lock();
            assert!(
                q.bytes <= bound,
                "after {i} pulls, {} bytes buffered (bound {bound})",
                q.bytes
            );
            // Counted independently of the queue's own accounting: read minus delivered.
            let read = consumer.inner.meta_read.load(Ordering::SeqCst);
            assert!(
                read - pulled <= bound,
                "after {i} pulls, {} bytes read and not delivered (bound {bound})",
                read - pulled
            );
            if !q.prefetching {
                break;
            }
            drop(q);
            assert!(std::time::Instant::now() < deadline, "prefetch never ended");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
}

/// An event whose metadata alone exceeds the cap is still delivered, by a refill of its own.
#[test]
fn event_larger_than_the_cap_is_delivered_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = topic_with(dir.path(), 1, |_| {});
    let producer = topic.producer().expect("producer");
    let huge = MAX_REFILL_META as usize + 1000;
    drop(producer.push(json!({"i": 0}), ()));
    drop(producer.push(big_meta(1, huge), ()));
    drop(producer.push(json!({"i": 2}), ()));
    settle(producer.flush(), "flush").expect("flush");
    let shared = TopicShared::open(dir.path(), "t", ThreadPool::inline()).expect("open");
    let consumer = FilesConsumer::new(shared, "c", ConsumerOptions::default()).expect("consumer");
    let small = settle(consumer.pull(), "pull 0").expect("event 0");
    assert_eq!(small.id(), 0);
    let first_read = consumer.inner.meta_read.load(Ordering::SeqCst);
    assert!(
        first_read < 1000,
        "the first refill stops before the huge event: {first_read}"
    );
    let e = settle(consumer.pull(), "pull 1").expect("event 1");
    assert_eq!(e.id(), 1);
    assert_eq!(e.metadata().as_bytes().len(), big_meta(1, huge).len());
    let e = settle(consumer.pull(), "pull 2").expect("event 2");
    assert_eq!(e.id(), 2);
}

/// A refill stops adding events once it holds `MAX_REFILL_DATA` of selected data, whatever the
/// batch size asks for (150 events of just over a 64th of it: one refill holds at most 64).
#[test]
fn one_refill_holds_at_most_the_data_cap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = topic_with(dir.path(), 1, |_| {});
    let producer = topic.producer().expect("producer");
    let size = (MAX_REFILL_DATA / 64) as usize + 1;
    for i in 0..150u32 {
        drop(producer.push(json!({ "i": i }), vec![i as u8; size]));
    }
    settle(producer.flush(), "flush").expect("flush");
    let shared = TopicShared::open(dir.path(), "t", ThreadPool::inline()).expect("open");
    let options = ConsumerOptions {
        data_selector: Some(diaspora_api::select_all()),
        ..Default::default()
    };
    let consumer = FilesConsumer::new(shared, "c", options).expect("consumer");
    let e = settle(consumer.pull(), "pull").expect("event 0");
    assert_eq!(e.data().len(), size as u64);
    let q = consumer.inner.queue.lock();
    let held = q.bytes + e.data().len() + e.metadata().as_bytes().len() as u64;
    assert!(
        held <= MAX_REFILL_DATA + 64 * 16,
        "one refill holds {held} bytes (cap {MAX_REFILL_DATA} of data)"
    );
    assert!(
        q.events.len() >= 60,
        "but fills it: {} events",
        q.events.len()
    );
}

/// The refill caps are inclusive: two events of exactly half `MAX_REFILL_META` of metadata fill
/// one refill together, and the third waits for the next.
#[test]
fn two_events_of_exactly_half_the_metadata_cap_share_a_refill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let half = (MAX_REFILL_META / 2) as usize;
    let pad = half - big_meta(0, 0).len();
    write_events(dir.path(), (0..3).map(|i| (big_meta(i, pad), Vec::new())));
    let consumer = files_consumer(dir.path(), ConsumerOptions::default());
    let e = settle(consumer.pull(), "pull").expect("event 0");
    assert_eq!(e.metadata().as_bytes().len(), half);
    assert_eq!(
        consumer.inner.meta_read.load(Ordering::SeqCst),
        2 * half as u64
    );
    assert_eq!(
        consumer.inner.queue.lock().events.len(),
        1,
        "event 1 came too"
    );
}

/// Likewise for data: two events of exactly half `MAX_REFILL_DATA` share a refill.
#[test]
fn two_events_of_exactly_half_the_data_cap_share_a_refill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let half = (MAX_REFILL_DATA / 2) as usize;
    write_events(
        dir.path(),
        (0..3u8).map(|i| (json!({ "i": i }).to_string(), vec![i; half])),
    );
    let consumer = files_consumer(dir.path(), reading_data());
    let e = settle(consumer.pull(), "pull").expect("event 0");
    assert_eq!(e.data().len(), half as u64);
    assert_eq!(
        consumer.inner.queue.lock().events.len(),
        1,
        "event 1 came too"
    );
}

/// A refill reads about as many index records as its budgets let it take: 64 KiB events fill
/// the data cap with a few records, and reading the 4096 an adaptive batch allows at every
/// refill would check thousands of records to deliver a few.
#[test]
fn refills_of_large_events_read_few_more_records_than_they_take() {
    let dir = tempfile::tempdir().expect("tempdir");
    let size = 64 << 10;
    let per_refill = (MAX_REFILL_DATA / size as u64) as usize;
    let n = 20 * per_refill;
    write_events(
        dir.path(),
        (0..n).map(|i| (json!({ "i": i }).to_string(), vec![0u8; size])),
    );
    let consumer = files_consumer(dir.path(), reading_data());
    for i in 0..n as u64 {
        assert_eq!(settle(consumer.pull(), "pull").expect("event").id(), i);
    }
    let read = consumer.inner.records_read.load(Ordering::SeqCst) as usize;
    // The first refill reads every record (n); each later one about what it takes.
    assert!(
        read <= 2 * n + per_refill,
        "{read} index records read to deliver {n} events"
    );
}

/// Small events still get whole batches per refill once the read size has adapted up: with
/// no data selected, 10,000 events of tiny metadata take few refills.
#[test]
fn refills_of_small_events_read_whole_batches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = 10_000u64;
    write_events(
        dir.path(),
        (0..n).map(|i| (json!({ "i": i }).to_string(), Vec::new())),
    );
    let consumer = files_consumer(dir.path(), ConsumerOptions::default());
    for i in 0..n {
        assert_eq!(settle(consumer.pull(), "pull").expect("event").id(), i);
        if i == 0 {
            assert_eq!(
                consumer.inner.queue.lock().events.len(),
                4095,
                "one refill took a whole adaptive batch"
            );
        }
    }
    assert_eq!(consumer.inner.records_read.load(Ordering::SeqCst), n);
}

/// Options of a consumer that reads every event's whole data.
fn reading_data() -> ConsumerOptions {
    ConsumerOptions {
        data_selector: Some(diaspora_api::select_all()),
        ..Default::default()
    }
}
