//! Concurrency: several producers and consumers at once lose, duplicate and reorder nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::thread;

use diaspora_api::{json, Event};

use crate::util::{assert_nothing_more, create_topic, drain, flush, meta_u64, pull_n};
use crate::DriverFixture;

/// Checks per-partition ids are 0..n in order and returns (partition, t) -> seqs in id order.
fn check_partitions(events: &[Event]) -> BTreeMap<(usize, u64), Vec<u64>> {
    let mut next_id: BTreeMap<usize, u64> = BTreeMap::new();
    let mut runs: BTreeMap<(usize, u64), Vec<u64>> = BTreeMap::new();
    for e in events {
        let want = next_id.entry(e.partition()).or_insert(0);
        assert_eq!(
            e.id(),
            *want,
            "partition {}: ids must be 0,1,2... in order",
            e.partition()
        );
        *want += 1;
        runs.entry((e.partition(), meta_u64(e, "t")))
            .or_default()
            .push(meta_u64(e, "s"));
    }
    runs
}

/// Checks every (t, s) for t < threads, s < per_thread is present exactly once.
fn check_unique(events: &[Event], threads: u64, per_thread: u64) {
    let mut seen = BTreeSet::new();
    for e in events {
        let key = (meta_u64(e, "t"), meta_u64(e, "s"));
        assert!(
            seen.insert(key),
            "event (thread, seq) = {key:?} received twice"
        );
    }
    assert_eq!(
        seen.len() as u64,
        threads * per_thread,
        "events lost: got {} distinct of {}",
        seen.len(),
        threads * per_thread
    );
}

/// 4 threads x 5000 events, each thread with its own producer, into 2 partitions.
pub fn concurrent_producers(f: &dyn DriverFixture) {
    const THREADS: u64 = 4;
    const PER_THREAD: u64 = 5_000;
    let driver = f.driver();
    let topic = create_topic(&driver, "conc", 2);
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let topic = topic.clone();
            thread::spawn(move || {
                let producer = topic.producer().expect("producer");
                for s in 0..PER_THREAD {
                    drop(producer.push(json!({"t": t, "s": s}), ()));
                }
                flush(&producer);
            })
        })
        .collect();
    for h in handles {
        h.join().expect("producer thread");
    }
    let consumer = topic.consumer("c").expect("consumer");
    let events = pull_n(&consumer, (THREADS * PER_THREAD) as usize);
    assert_nothing_more(&consumer, "after all concurrent events");
    check_unique(&events, THREADS, PER_THREAD);
    // Strict ordering: each producer's events keep their push order within a partition.
    for ((p, t), seqs) in check_partitions(&events) {
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "partition {p}: events of producer {t} out of push order"
        );
    }
}

/// One producer shared (cloned) by 4 threads.
pub fn shared_producer_across_threads(f: &dyn DriverFixture) {
    const THREADS: u64 = 4;
    const PER_THREAD: u64 = 1_000;
    let driver = f.driver();
    let topic = create_topic(&driver, "shared", 2);
    let producer = topic.producer().expect("producer");
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let producer = producer.clone();
            thread::spawn(move || {
                let futures: Vec<_> = (0..PER_THREAD)
                    .map(|s| producer.push(json!({"t": t, "s": s}), ()))
                    .collect();
                flush(&producer);
                futures
                    .into_iter()
                    .map(|fut| crate::util::wait_for(fut, "shared push"))
                    .collect::<Vec<u64>>()
            })
        })
        .collect();
    for h in handles {
        let ids = h.join().expect("thread");
        assert_eq!(ids.len() as u64, PER_THREAD);
        assert!(
            ids.iter().all(|&id| id < THREADS * PER_THREAD),
            "push ids must be positions in a partition"
        );
    }
    let consumer = topic.consumer("c").expect("consumer");
    let events = pull_n(&consumer, (THREADS * PER_THREAD) as usize);
    assert_nothing_more(&consumer, "after all shared-producer events");
    check_unique(&events, THREADS, PER_THREAD);
    check_partitions(&events);
}

/// A consumer reads while a producer writes; it gets every event in order, then the end.
pub fn producer_and_consumer_concurrently(f: &dyn DriverFixture) {
    const N: u64 = 5_000;
    let driver = f.driver();
    let topic = create_topic(&driver, "live", 1);
    let consumer = topic.consumer("c").expect("consumer");
    let reader = thread::spawn(move || drain(&consumer, N as usize));
    let producer = topic.producer().expect("producer");
    for s in 0..N {
        drop(producer.push(json!({"t": 0, "s": s}), ()));
        if s % 500 == 499 {
            flush(&producer);
            thread::sleep(std::time::Duration::from_millis(5));
        }
    }
    flush(&producer);
    topic.mark_as_complete().expect("mark_as_complete");
    let events = reader.join().expect("consumer thread");
    assert_eq!(
        events.len() as u64,
        N,
        "consumer got every event before the end"
    );
    for (s, e) in events.iter().enumerate() {
        assert_eq!(e.id(), s as u64);
        assert_eq!(meta_u64(e, "s"), s as u64);
    }
}

/// Two consumers with different names, in parallel, each get every event.
pub fn independent_consumers_concurrently(f: &dyn DriverFixture) {
    const N: u64 = 2_000;
    let driver = f.driver();
    let topic = create_topic(&driver, "fanout", 2);
    let producer = topic.producer().expect("producer");
    for s in 0..N {
        drop(producer.push(json!({"t": 0, "s": s}), ()));
    }
    flush(&producer);
    topic.mark_as_complete().expect("mark_as_complete");
    let topic = Arc::new(topic);
    let handles: Vec<_> = ["alpha", "beta"]
        .into_iter()
        .map(|name| {
            let topic = topic.clone();
            thread::spawn(move || {
                let consumer = topic.consumer(name).expect("consumer");
                drain(&consumer, N as usize)
            })
        })
        .collect();
    for h in handles {
        let events = h.join().expect("consumer thread");
        check_unique(&events, 1, N);
        check_partitions(&events);
    }
}
