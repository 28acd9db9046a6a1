//! A batch is sealed (and, on an inline pool, stored) once it holds `MAX_BATCH_DATA` of data
//! or `MAX_BATCH_META` of metadata, whatever the batch size asks for: a producer's memory is
//! bounded in bytes, not only in events.

use diaspora_api::{json, BatchSize, ProducerOptions, ThreadPool};

use super::{settle, topic_with};
use crate::producer::{MAX_BATCH_DATA, MAX_BATCH_META};

fn fixed_huge_batches() -> ProducerOptions {
    ProducerOptions {
        batch_size: BatchSize::Fixed(1_000_000),
        thread_pool: Some(ThreadPool::inline()),
        ..Default::default()
    }
}

#[test]
fn a_batch_is_stored_once_it_holds_the_data_cap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = topic_with(dir.path(), 1, |_| {});
    let producer = topic
        .producer_with("p", fixed_huge_batches())
        .expect("producer");
    let size = 1 << 20;
    let n = (MAX_BATCH_DATA / size) as usize;
    let first = producer.push(json!({"i": 0}), vec![0u8; size as usize]);
    for i in 1..n - 1 {
        drop(producer.push(json!({ "i": i }), vec![0u8; size as usize]));
    }
    assert!(!first.is_ready(), "below the cap, nothing is stored");
    drop(producer.push(json!({"i": n - 1}), vec![0u8; size as usize]));
    assert!(
        first.is_ready(),
        "at the cap, the batch is stored without flush"
    );
    assert_eq!(settle(first, "first").expect("stored"), 0);
}

#[test]
fn a_batch_is_stored_once_it_holds_the_metadata_cap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = topic_with(dir.path(), 1, |_| {});
    let producer = topic
        .producer_with("p", fixed_huge_batches())
        .expect("producer");
    let pad = "x".repeat(1 << 20);
    let first = producer.push(json!({"i": 0, "pad": pad}), ());
    let mut pushed = 1;
    while (pushed + 1) * (1 << 20) < MAX_BATCH_META {
        drop(producer.push(json!({"i": pushed, "pad": pad}), ()));
        pushed += 1;
    }
    assert!(!first.is_ready(), "below the cap, nothing is stored");
    for i in 0..2 {
        drop(producer.push(json!({"i": pushed + i, "pad": pad}), ()));
    }
    assert!(
        first.is_ready(),
        "past the cap, the batch is stored without flush"
    );
    assert_eq!(settle(first, "first").expect("stored"), 0);
}
