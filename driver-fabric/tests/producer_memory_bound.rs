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

/// An event larger than the producer's bound, pushed after a small one that is still in the
/// open batch, with one batch in flight at most: the open batch is sealed to make room and
/// must be sent before the large event's own batch waits for a credit (it waited for the
/// credit the unsent batch held, forever).
#[test]
fn a_large_event_after_a_small_one_with_one_batch_in_flight_is_stored() {
    let service = MemoryService::new();
    let topic = service.one_partition_topic("t");
    let options = ProducerOptions {
        batch_size: BatchSize::Fixed(10),
        max_num_batches: 1,
        ..ProducerOptions::default()
    };
    let producer = topic.producer_with("p", options).expect("producer");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let small = producer.push(json!({ "i": 0 }), vec![1u8; 16]);
        let big = producer.push(json!({ "i": 1 }), vec![2u8; (MAX_BATCH_BYTES + 1) as usize]);
        let flushed = producer.flush().wait(30_000);
        let _ = tx.send((small.get(), big.get(), flushed));
    });
    let (small, big, flushed) = rx
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("push of the large event hung");
    assert_eq!(small.expect("small stored"), 0);
    assert_eq!(big.expect("large stored"), 1);
    assert!(matches!(flushed, Ok(Some(()))), "{flushed:?}");
    assert_eq!(service.stored("t", 0).len(), 2);
}
