//! `push_many` in the files driver: when the batches of a call are sealed, and backpressure
//! within one call.

use std::time::{Duration, Instant};

use diaspora_api::{json, BatchSize, ProducerOptions, ThreadPool};

use super::{settle, topic_with};

fn ten_events() -> impl Iterator<Item = (diaspora_api::Value, Vec<u8>)> {
    (0..10u8).map(|i| (json!({ "i": i }), vec![i; 8]))
}

/// With adaptive batches and an idle writer, the call's events go into one batch that is
/// sealed when the call ends, without a flush or a wait (`is_ready` polls without sending):
/// the future becomes ready by itself.
#[test]
fn an_adaptive_batch_of_one_call_is_sealed_when_the_call_ends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = topic_with(dir.path(), 1, |_| {});
    let producer = topic
        .producer_with(
            "",
            ProducerOptions {
                thread_pool: Some(ThreadPool::new(1)),
                ..Default::default()
            },
        )
        .expect("producer");
    let f = producer.push_many(ten_events());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f.is_ready() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(f.is_ready(), "the call's batch was never sealed");
    assert_eq!(
        settle(f, "push_many").expect("stored"),
        (0..10).collect::<Vec<_>>()
    );
}

/// Full batches of one call are handed over as they fill, even when `max_num_batches` is
/// reached inside the call and the pool has one worker: the call waits for room instead of
/// deadlocking on batches of its own that it has not handed over yet.
#[test]
fn a_call_longer_than_max_num_batches_waits_for_room_and_stores_everything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = topic_with(dir.path(), 2, |_| {});
    let producer = topic
        .producer_with(
            "",
            ProducerOptions {
                batch_size: BatchSize::Fixed(2),
                max_num_batches: 1,
                thread_pool: Some(ThreadPool::new(1)),
                ..Default::default()
            },
        )
        .expect("producer");
    let (tx, rx) = std::sync::mpsc::channel();
    let p = producer.clone();
    std::thread::spawn(move || {
        let f = p.push_many_to(1, (0..40u32).map(|i| (json!({ "i": i }), ())));
        let _ = tx.send(settle(f, "push_many"));
    });
    let ids = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("push_many hung")
        .expect("stored");
    assert_eq!(ids, (0..40).collect::<Vec<_>>());
    settle(producer.flush(), "flush").expect("flush");
}
