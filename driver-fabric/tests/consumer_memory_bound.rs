//! A consumer's memory does not grow with the size of a fetched batch: it turns at most
//! 16 MiB of selected data into events at a time (a longer batch is split) and looks one
//! such piece ahead. Before this, a fetch of up to 4,096 events was one piece: 256 MiB of
//! data requested at once for 64 KiB events, then copied together (about 1 GiB of peak RSS in
//! `diaspora-bench consume` over a real server).

mod common;

use std::sync::Arc;

use common::memory::MemoryService;
use diaspora_api::{json, ConsumerOptions, DataDescriptor, Metadata};

const EVENT: usize = 64 << 10;
const EVENTS: usize = 1_000; // 62.5 MiB: one fetch (the service answers up to 4,096 events)
const PIECE: u64 = 16 << 20;

fn data_of(i: usize) -> Vec<u8> {
    let mut d = vec![(i % 251) as u8; EVENT];
    d[..8].copy_from_slice(&(i as u64).to_le_bytes());
    d
}

/// The next event, within 10 s.
fn next(c: &diaspora_api::Consumer) -> diaspora_api::Event {
    c.pull()
        .wait(10_000)
        .expect("pull")
        .expect("an event within 10 s")
}

#[test]
fn a_consumer_asks_for_at_most_two_pieces_of_data_ahead_of_what_it_returned() {
    let service = MemoryService::new();
    let topic = service.one_partition_topic("t");
    let producer = topic.producer().expect("producer");
    for i in 0..EVENTS {
        let _ = producer.push(json!({ "i": i }), data_of(i));
    }
    producer
        .flush()
        .wait(30_000)
        .expect("flush")
        .expect("flushed");
    assert_eq!(service.data_bytes_requested(), 0);

    let options = ConsumerOptions {
        data_selector: Some(Arc::new(|_: &Metadata, d: &DataDescriptor| d.clone())),
        ..ConsumerOptions::default()
    };
    let consumer = topic.consumer_with("c", options).expect("consumer");
    let mut returned = 0u64;
    for i in 0..EVENTS {
        let event = next(&consumer);
        assert_eq!(event.id(), i as u64);
        let data = event.data().to_vec();
        assert_eq!(data, data_of(i), "event {i}'s data");
        returned += data.len() as u64;
        let asked = service.data_bytes_requested();
        assert!(
            asked <= returned + 2 * PIECE,
            "after {} events ({returned} bytes) the consumer had asked for {asked} bytes",
            i + 1
        );
    }
    assert_eq!(service.data_bytes_requested(), (EVENTS * EVENT) as u64);
    // Selections that are not the whole event (a window per event) split the same way and
    // reach the application intact.
    let options = ConsumerOptions {
        data_selector: Some(Arc::new(|_: &Metadata, d: &DataDescriptor| {
            d.strided_view(8, 4, 1024, 4096)
                .unwrap_or_else(|_| DataDescriptor::null())
        })),
        ..ConsumerOptions::default()
    };
    let windows = topic.consumer_with("w", options).expect("consumer");
    for i in 0..EVENTS {
        let event = next(&windows);
        let want: Vec<u8> = (0..4)
            .flat_map(|r| data_of(i)[8 + r * 5120..8 + r * 5120 + 1024].to_vec())
            .collect();
        assert_eq!(event.data().to_vec(), want, "event {i}'s window");
    }
}
