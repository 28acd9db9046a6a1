//! Ordering within a partition: ids are positions 0, 1, 2... in push order, across producers
//! and driver restarts.

use diaspora_api::json;

use crate::util::{
    assert_nothing_more, create_topic, flush, meta_u64, open_topic, pull_n, wait_for,
};
use crate::DriverFixture;

fn expected_meta(i: u64) -> diaspora_api::Value {
    json!({"seq": i, "tag": format!("ev-{i}")})
}

/// 10k events into one partition come back with ids 0..n, in order, with their metadata.
pub fn single_partition_in_order(f: &dyn DriverFixture) {
    const N: u64 = 10_000;
    let driver = f.driver();
    let topic = create_topic(&driver, "ordering", 1);
    let producer = topic.producer().expect("default producer");
    for i in 0..N {
        // Alternate the accepted metadata forms: JSON value and JSON text.
        let fut = if i % 2 == 0 {
            producer.push(expected_meta(i), ())
        } else {
            producer.push(format!(r#"{{"seq":{i},"tag":"ev-{i}"}}"#), ())
        };
        drop(fut);
    }
    flush(&producer);

    let consumer = topic.consumer("c").expect("consumer");
    for (i, e) in (0..N).zip(pull_n(&consumer, N as usize)) {
        assert_eq!(e.partition(), 0, "single-partition topic");
        assert_eq!(
            e.id(),
            i,
            "event ids must be positions 0,1,2,... in push order"
        );
        assert_eq!(
            e.metadata().json().expect("stored metadata is JSON"),
            &expected_meta(i),
            "metadata of event {i}"
        );
        assert!(e.data().is_empty(), "no data was pushed");
    }
    assert_nothing_more(&consumer, "after the 10k produced events");
}

/// A second producer (after the first is flushed) appends after the first one's events.
pub fn sequential_producers_append(f: &dyn DriverFixture) {
    let driver = f.driver();
    let topic = create_topic(&driver, "append", 1);
    for round in 0..3u64 {
        let producer = topic.producer().expect("producer");
        for i in 0..40u64 {
            drop(producer.push(json!({"round": round, "i": i}), ()));
        }
        flush(&producer);
    }
    let consumer = topic.consumer("c").expect("consumer");
    let events = pull_n(&consumer, 120);
    for (pos, e) in events.iter().enumerate() {
        let pos = pos as u64;
        assert_eq!(e.id(), pos);
        assert_eq!(
            e.metadata().json().expect("JSON"),
            &json!({"round": pos / 40, "i": pos % 40})
        );
    }
    assert_nothing_more(&consumer, "after 3 rounds of 40 events");
}

/// A producer on a fresh driver instance (restart) continues the partition's ids.
pub fn producer_appends_after_restart(f: &dyn DriverFixture) {
    {
        let driver = f.driver();
        let topic = create_topic(&driver, "restart", 2);
        let producer = topic.producer().expect("producer");
        for i in 0..10u64 {
            drop(producer.push_to((i % 2) as usize, json!({"gen": 0, "i": i}), ()));
        }
        flush(&producer);
    }
    {
        let driver = f.driver();
        let topic = open_topic(&driver, "restart");
        let producer = topic.producer().expect("producer");
        let futures: Vec<_> = (0..10u64)
            .map(|i| producer.push_to((i % 2) as usize, json!({"gen": 1, "i": i}), ()))
            .collect();
        flush(&producer);
        for (i, fut) in futures.into_iter().enumerate() {
            let id = wait_for(fut, "push after restart");
            assert_eq!(
                id,
                5 + (i as u64) / 2,
                "push {i} after restart: ids continue"
            );
        }
    }
    let driver = f.driver();
    let consumer = open_topic(&driver, "restart")
        .consumer("c")
        .expect("consumer");
    let mut per_partition: [Vec<(u64, u64, u64)>; 2] = [Vec::new(), Vec::new()];
    for e in pull_n(&consumer, 20) {
        let (gen, i) = (meta_u64(&e, "gen"), meta_u64(&e, "i"));
        per_partition[e.partition()].push((e.id(), gen, i));
    }
    for (p, events) in per_partition.iter().enumerate() {
        let expected: Vec<(u64, u64, u64)> = (0..10u64)
            .map(|k| (k, k / 5, 2 * (k % 5) + p as u64))
            .collect();
        assert_eq!(events, &expected, "partition {p}: (id, generation, i)");
    }
    assert_nothing_more(&consumer, "after 20 events");
}

/// Dropping the last handle of a producer flushes its queued events.
pub fn dropping_producer_flushes(f: &dyn DriverFixture) {
    let driver = f.driver();
    let topic = create_topic(&driver, "dropflush", 1);
    {
        let producer = topic
            .producer_with(
                "p",
                diaspora_api::ProducerOptions {
                    batch_size: diaspora_api::BatchSize::Fixed(1000),
                    ..Default::default()
                },
            )
            .expect("producer");
        for i in 0..50u64 {
            drop(producer.push(json!({"i": i}), ()));
        }
        // No flush: batch size 1000 means the events are still queued.
    }
    let consumer = topic.consumer("c").expect("consumer");
    for (i, e) in pull_n(&consumer, 50).iter().enumerate() {
        assert_eq!(e.id(), i as u64);
        assert_eq!(meta_u64(e, "i"), i as u64);
    }
    assert_nothing_more(&consumer, "after the 50 events of the dropped producer");
}
