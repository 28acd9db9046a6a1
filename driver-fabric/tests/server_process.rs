#![allow(clippy::unwrap_used)] // tests: a panic is a failure with its message
//! Failure tests with a real `diaspora-server` process: `kill -9` mid-stream and restart on
//! the same data directory (producers resend, every event whose flush succeeded is stored
//! exactly once, consumers resume after their last acknowledgement, clients find the
//! restarted server through the group file), and a killed server (deadlines, errors naming
//! the server), on every provider of `DIASPORA_TEST_PROVIDER` (default tcp;ofi_rxm and shm).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::providers;
use common::server::ServerProcess;
use diaspora_api::{json, Driver};

fn driver(group_file: &std::path::Path, timeout_ms: u64) -> Driver {
    diaspora_driver_fabric::register();
    Driver::new(
        "fabric",
        json!({"group_file": group_file, "timeout_ms": timeout_ms}),
    )
    .expect("fabric driver")
}

/// Every event of the topic, as (partition, id) -> "i".
fn read_all(d: &Driver, consumer: &str) -> BTreeMap<(usize, u64), u64> {
    let topic = d.open_topic("t").unwrap();
    let c = topic.consumer(consumer).unwrap();
    let mut out = BTreeMap::new();
    loop {
        match c.pull().wait(1_500) {
            Ok(Some(e)) if e.is_no_more_events() => break,
            Ok(Some(e)) => {
                let i = e.metadata().json().unwrap()["i"].as_u64().unwrap();
                assert!(
                    out.insert((e.partition(), e.id()), i).is_none(),
                    "event served twice"
                );
            }
            Ok(None) => break,
            Err(e) => panic!("pull: {e}"),
        }
    }
    out
}

#[test]
fn kill_9_mid_stream_then_restart_stores_every_flushed_event_once_and_consumers_resume() {
    for provider in providers() {
        let dir = tempfile::tempdir().unwrap();
        let (data, group) = (dir.path().join("data"), dir.path().join("group.json"));
        let mut server = ServerProcess::start(&provider, &data, &group);
        let d = driver(&group, 20_000);
        d.create_topic("t", json!({"num_partitions": 2})).unwrap();
        let topic = d.open_topic("t").unwrap();
        let producer = topic.producer().unwrap();
        for i in 0..2_000u64 {
            drop(producer.push(json!({ "i": i }), vec![(i % 251) as u8; 64]));
        }
        producer.flush().get().unwrap();

        // A consumer acknowledges event 99 of each partition before the crash.
        {
            let c = topic.consumer("resume").unwrap();
            let mut seen = [0u64; 2];
            while seen.iter().any(|&n| n < 100) {
                let e = c.pull().wait(10_000).unwrap().unwrap();
                if e.id() == 99 {
                    e.acknowledge().unwrap();
                }
                seen[e.partition()] += 1;
            }
        }

        // Producing continues while the server is killed and restarted.
        let pusher = {
            let producer = producer.clone();
            std::thread::spawn(move || {
                let mut confirmed = Vec::new();
                for chunk in 0..8u64 {
                    let range = 2_000 + chunk * 500..2_000 + (chunk + 1) * 500;
                    for i in range.clone() {
                        drop(producer.push(json!({ "i": i }), vec![(i % 251) as u8; 64]));
                    }
                    if producer.flush().get().is_ok() {
                        confirmed.extend(range);
                    }
                }
                confirmed
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        server.kill();
        let server = ServerProcess::start(&provider, &data, &group);
        let confirmed = pusher.join().unwrap();
        producer
            .flush()
            .get()
            .unwrap_or_else(|e| panic!("{provider}: last flush: {e}"));

        let all = read_all(&d, "check");
        let mut count: BTreeMap<u64, usize> = BTreeMap::new();
        for i in all.values() {
            *count.entry(*i).or_default() += 1;
        }
        assert!(
            count.values().all(|&n| n == 1),
            "{provider}: an event is stored twice"
        );
        for i in (0..2_000).chain(confirmed.iter().copied()) {
            assert_eq!(
                count.get(&i),
                Some(&1),
                "{provider}: flushed event {i} lost"
            );
        }
        // Ids are dense per partition (nothing half-stored).
        for p in 0..2 {
            let ids: Vec<u64> = all.keys().filter(|k| k.0 == p).map(|k| k.1).collect();
            assert_eq!(ids, (0..ids.len() as u64).collect::<Vec<_>>(), "{provider}");
        }

        // A consumer of the same name resumes after its acknowledgements (100 per partition).
        let c = topic.consumer("resume").unwrap();
        let e = c.pull().wait(10_000).unwrap().unwrap();
        assert_eq!(e.id(), 100, "{provider}: resumes after the last ack");
        drop(server);
    }
}

#[test]
fn killed_server_fails_futures_within_their_deadline_naming_the_server() {
    for provider in providers() {
        let dir = tempfile::tempdir().unwrap();
        let (data, group) = (dir.path().join("data"), dir.path().join("group.json"));
        let mut server = ServerProcess::start(&provider, &data, &group);
        let d = driver(&group, 1_500);
        d.create_topic("t", json!({"num_partitions": 1})).unwrap();
        let topic = d.open_topic("t").unwrap();
        let producer = topic.producer().unwrap();
        let consumer = topic.consumer("c").unwrap();
        producer.push(json!({"i": 0}), ()).get().unwrap();
        assert_eq!(consumer.pull().wait(10_000).unwrap().unwrap().id(), 0);
        server.kill();

        let mut pull = consumer.pull();
        let start = Instant::now();
        assert!(matches!(pull.wait(200), Ok(None) | Err(_)));
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{provider}: wait(200)"
        );

        let start = Instant::now();
        let mut push = producer.push(json!({"i": 1}), ());
        let e = producer
            .flush()
            .get()
            .expect_err("flush with the server killed");
        assert!(
            start.elapsed() < Duration::from_secs(8),
            "{provider}: {:?}",
            start.elapsed()
        );
        assert!(e.to_string().contains("rank 0 thread 0"), "{provider}: {e}");
        assert!(push.wait(0).is_err());

        let start = Instant::now();
        let failed = loop {
            match pull.wait(100) {
                Ok(None) if start.elapsed() < Duration::from_secs(10) => continue,
                other => break other,
            }
        };
        let e = failed.expect_err("pull with the server killed").to_string();
        assert!(e.contains("rank 0 thread 0"), "{provider}: {e}");
    }
}
