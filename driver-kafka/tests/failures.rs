//! Failure tests with a real tansu broker: `kill -9` mid-stream and restart on the same sqlite
//! storage, broker unreachable at start, oversized records.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{free_port, Broker, Storage};
use diaspora_api::{json, Driver, Error};

fn read_all(driver: &Driver, topic: &str, name: &str) -> BTreeSet<u64> {
    let consumer = driver
        .open_topic(topic)
        .expect("open")
        .consumer(name)
        .expect("consumer");
    let mut seen = BTreeSet::new();
    loop {
        match consumer.pull().wait(3_000) {
            Ok(Some(e)) if e.is_no_more_events() => break,
            Ok(Some(e)) => {
                let i = e.metadata().json().expect("json")["i"].as_u64().expect("i");
                seen.insert(i);
            }
            Ok(None) => break,
            Err(e) => panic!("pull failed: {e}"),
        }
    }
    seen
}

/// Events whose flush succeeded survive a `kill -9` of the broker (sqlite storage) while a
/// producer keeps pushing, and the producer's failures are reported, never hidden.
#[test]
fn broker_kill_mid_stream_loses_no_flushed_event() {
    let mut broker = Broker::start(Storage::Sqlite);
    diaspora_driver_kafka::register();
    // tansu 0.6.0's sqlite engine panics on idempotent produce after a restart
    // (lite.rs:503 "more or less than one row", the broker then stops answering), so this
    // test runs without idempotence: a retried batch may then be stored twice (at least once).
    let mut options = broker.options();
    options["producer_config"] = json!({"enable.idempotence": false});
    let driver = Driver::new("kafka", options).expect("driver");
    driver
        .create_topic("t", json!({"num_partitions": 2}))
        .expect("create");
    let mut stored = BTreeSet::new();
    {
        let producer = driver
            .open_topic("t")
            .expect("open")
            .producer()
            .expect("producer");
        let mut next = 0u64;
        for round in 0..6 {
            if round == 3 {
                broker.kill();
            }
            if round == 4 {
                broker.restart();
            }
            let batch: Vec<u64> = (next..next + 50).collect();
            next += 50;
            for &i in &batch {
                drop(producer.push(json!({"i": i}), vec![i as u8; 100]));
            }
            match producer.flush().wait(30_000) {
                Ok(Some(())) => stored.extend(batch),
                Ok(None) => panic!("flush hung past 30 s"),
                Err(e) => eprintln!("round {round}: flush reported {e}"),
            }
        }
    }
    assert!(
        stored.len() >= 150,
        "the rounds before the kill were stored"
    );
    let driver = broker.driver();
    let seen = read_all(&driver, "t", "c");
    let missing: Vec<_> = stored.difference(&seen).collect();
    assert!(
        missing.is_empty(),
        "events whose flush succeeded were lost after kill -9: {missing:?}"
    );
}

/// No broker listening: the driver fails with a clear error within its deadline.
#[test]
fn unreachable_broker_fails_within_the_deadline() {
    diaspora_driver_kafka::register();
    let addr = format!("127.0.0.1:{}", free_port());
    let (tx, rx) = std::sync::mpsc::channel();
    let start = Instant::now();
    std::thread::spawn(move || {
        let r = Driver::new(
            "kafka",
            json!({"bootstrap_servers": addr, "timeout_ms": 1_500}),
        );
        let _ = tx.send(r.err().map(|e| e.to_string()));
    });
    let err = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("Driver::new hung")
        .expect("connecting to no broker must fail");
    assert!(err.contains("no broker of"), "{err}");
    assert!(err.contains("1500 ms"), "{err}");
    eprintln!("failed after {:?}: {err}", start.elapsed());
}

/// A record larger than `message.max.bytes` is refused at push with a clear error, reported by
/// the flush, and stores nothing; a smaller one goes through.
#[test]
fn oversized_record_is_refused() {
    let broker = Broker::start(Storage::Memory);
    diaspora_driver_kafka::register();
    let mut options = broker.options();
    options["config"] = json!({"message.max.bytes": 1 << 20});
    let driver = Driver::new("kafka", options).expect("driver");
    driver.create_topic("t", json!({})).expect("create");
    let topic = driver.open_topic("t").expect("open");
    let producer = topic.producer().expect("producer");
    let e = producer
        .push(json!({"i": 0}), vec![0u8; 2 << 20])
        .get()
        .expect_err("oversized event accepted");
    let msg = e.to_string();
    assert!(msg.contains("exceeds message.max.bytes"), "{msg}");
    assert!(
        matches!(
            producer.flush().get(),
            Err(Error::EventsLost { count: 1, .. })
        ),
        "flush must report the refused event"
    );
    let id = producer
        .push(json!({"i": 1}), vec![0u8; 512 << 10])
        .get()
        .expect("event under the limit");
    assert_eq!(id, 0, "the refused event took no offset");
    producer.flush().get().expect("flush");
}
