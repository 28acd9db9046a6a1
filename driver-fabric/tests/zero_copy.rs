#![allow(clippy::unwrap_used)] // tests: a panic is a failure with its message
//! Zero copy on the produce side: data segments of at least `ZERO_COPY_MIN` bytes are
//! registered in place (`register_bytes`) and read by the server with RDMA, interleaved with
//! staged runs of small events, within the server's `max_regions`. Every byte must arrive at
//! its place, on every provider of `DIASPORA_TEST_PROVIDER` (tcp;ofi_rxm and shm).

mod common;

use common::providers;
use common::wire_server::WireServer;
use diaspora_api::{json, BatchSize, Driver, ProducerOptions};
use diaspora_driver_fabric::remote::ZERO_COPY_MIN;

fn event_data(i: usize) -> Vec<u8> {
    // Every third event is large (pinned, until the region budget is used), the others small
    // (staged); the large ones straddle the threshold.
    let len = match i % 3 {
        0 => ZERO_COPY_MIN + i * 17,
        1 => ZERO_COPY_MIN - 1,
        _ => i % 50,
    };
    (0..len).map(|k| ((i * 31 + k) % 251) as u8).collect()
}

#[test]
fn large_and_small_events_in_one_batch_arrive_byte_exact() {
    const N: usize = 90;
    for provider in providers() {
        let dir = tempfile::tempdir().unwrap();
        let server = WireServer::start(&provider, dir.path());
        diaspora_driver_fabric::register();
        let d = Driver::new(
            "fabric",
            json!({"group_file": server.group_file, "timeout_ms": 20_000}),
        )
        .unwrap();
        d.create_topic("z", json!({"num_partitions": 1})).unwrap();
        let topic = d.open_topic("z").unwrap();
        let producer = topic
            .producer_with(
                "p",
                ProducerOptions {
                    batch_size: BatchSize::Fixed(N),
                    max_num_batches: 2,
                    ..Default::default()
                },
            )
            .unwrap();
        let futures: Vec<_> = (0..N)
            .map(|i| producer.push(json!({ "i": i }), event_data(i)))
            .collect();
        producer.flush().get().unwrap();
        for (i, f) in futures.into_iter().enumerate() {
            assert_eq!(f.get().unwrap(), i as u64, "{provider}");
        }
        let consumer = topic
            .consumer_with(
                "c",
                diaspora_api::ConsumerOptions {
                    data_selector: Some(diaspora_api::select_all()),
                    ..Default::default()
                },
            )
            .unwrap();
        for i in 0..N {
            let e = consumer.pull().wait(20_000).unwrap().expect("an event");
            assert_eq!(e.id(), i as u64, "{provider}");
            assert!(
                e.data().to_vec() == event_data(i),
                "{provider}: event {i} data ({} bytes)",
                e.data().len()
            );
        }
    }
}

/// Consumed data are slices of the landing buffer they were fetched into (no copy): a buffer
/// goes back to the pool only when the last slice is dropped, so events held by the
/// application keep their bytes while later batches are fetched (into other buffers).
#[test]
fn consumed_data_held_by_the_application_survive_later_fetches() {
    const BATCH: usize = 20;
    const BATCHES: usize = 6;
    for provider in providers() {
        let dir = tempfile::tempdir().unwrap();
        let server = WireServer::start(&provider, dir.path());
        diaspora_driver_fabric::register();
        let d = Driver::new(
            "fabric",
            json!({"group_file": server.group_file, "timeout_ms": 20_000}),
        )
        .unwrap();
        d.create_topic("h", json!({"num_partitions": 1})).unwrap();
        let topic = d.open_topic("h").unwrap();
        let producer = topic
            .producer_with(
                "p",
                ProducerOptions {
                    batch_size: BatchSize::Fixed(BATCH),
                    ..Default::default()
                },
            )
            .unwrap();
        for i in 0..BATCH * BATCHES {
            let _ = producer.push(json!({ "i": i }), event_data(i));
        }
        producer.flush().get().unwrap();
        let consumer = topic
            .consumer_with(
                "c",
                diaspora_api::ConsumerOptions {
                    data_selector: Some(diaspora_api::select_all()),
                    batch_size: BatchSize::Fixed(BATCH),
                    ..Default::default()
                },
            )
            .unwrap();
        let mut held = Vec::new();
        for i in 0..BATCH * BATCHES {
            let e = consumer.pull().wait(20_000).unwrap().expect("an event");
            assert_eq!(e.id(), i as u64, "{provider}");
            // Every other batch is dropped at once: its buffer returns to the pool and is
            // reused for a later fetch while the held ones must stay intact.
            if (i / BATCH).is_multiple_of(2) {
                held.push((i, e));
            }
        }
        for (i, e) in &held {
            assert!(
                e.data().to_vec() == event_data(*i),
                "{provider}: held event {i} changed after later fetches"
            );
        }
    }
}
