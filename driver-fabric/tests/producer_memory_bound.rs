//! A producer's batches hold at most 8 MiB whatever the server accepts (64 MiB here): data
//! that does not go zero copy is staged in a buffer of the batch's size, so with eight
//! batches in flight a producer of 64 KiB events held about 600 MiB (`diaspora-bench produce
//! --driver fabric`), 150 MiB with this bound. A single event above the bound but within the
//! server's limit still goes, alone.

mod common;

use common::memory::MemoryService;
use diaspora_api::{json, BatchSize, ProducerOptions};
use diaspora_driver_fabric::MAX_BATCH_BYTES;

#[test]
fn batches_of_large_events_stay_under_the_producer_bound_and_a_larger_event_goes_alone() {
    let service = MemoryService::new();
    let topic = service.one_partition_topic("t");
    // A fixed batch of 1,000 events (62.5 MiB) would fit the service's limit.
    let options = ProducerOptions {
        batch_size: BatchSize::Fixed(1_000),
        ..ProducerOptions::default()
    };
    let producer = topic.producer_with("p", options).expect("producer");
    let data = bytes::Bytes::from(vec![7u8; 64 << 10]);
    for i in 0..1_000 {
        let _ = producer.push(json!({ "i": i }), data.clone());
    }
    producer
        .flush()
        .wait(30_000)
        .expect("flush")
        .expect("flushed");
    let (bytes, events) = service.largest_batch();
    assert!(
        bytes <= MAX_BATCH_BYTES && events < 1_000,
        "largest batch: {events} events, {bytes} bytes"
    );
    // 12 MiB: above the producer's bound, below the service's 64 MiB.
    let big = bytes::Bytes::from(vec![9u8; 12 << 20]);
    let id = producer
        .push(json!({ "big": true }), big)
        .wait(30_000)
        .expect("push")
        .expect("stored");
    assert_eq!(id, 1_000);
    producer
        .flush()
        .wait(30_000)
        .expect("flush")
        .expect("flushed");
    assert_eq!(service.largest_batch(), (12 << 20, 1));
    assert_eq!(service.stored("t", 0).len(), 1_001);
}
