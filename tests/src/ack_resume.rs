//! Acknowledgements: a consumer restarted with the same name resumes right after its last
//! acknowledged event, per partition; other names are independent.

use std::collections::BTreeMap;

use diaspora_api::json;

use crate::util::{assert_nothing_more, create_topic, flush, meta_u64, open_topic, pull, pull_n};
use crate::DriverFixture;

/// Creates topic `name` with `partitions` partitions and `per_partition` events in each
/// (pushed with `push_to`, metadata `{"p": partition, "k": position}`).
fn produce(f: &dyn DriverFixture, name: &str, partitions: usize, per_partition: u64) {
    let driver = f.driver();
    let topic = create_topic(&driver, name, partitions);
    let producer = topic.producer().expect("producer");
    for k in 0..per_partition {
        for p in 0..partitions {
            drop(producer.push_to(p, json!({"p": p, "k": k}), ()));
        }
    }
    flush(&producer);
}

/// Checks that `events` are the events of one partition from id `first` on, in order.
fn assert_run(events: &[diaspora_api::Event], partition: usize, first: u64, context: &str) {
    for (n, e) in events.iter().enumerate() {
        let want = first + n as u64;
        assert_eq!(
            e.partition(),
            partition,
            "{context}: partition of event #{n}"
        );
        assert_eq!(e.id(), want, "{context}: id of event #{n}");
        assert_eq!(meta_u64(e, "k"), want, "{context}: metadata of event #{n}");
    }
}

/// Consume 100 of 250 events, acknowledge event 60, drop everything; a new driver instance and
/// a consumer with the same name resumes at 61 and then sees every remaining event once.
pub fn resume_after_restart(f: &dyn DriverFixture) {
    produce(f, "ack", 1, 250);
    {
        let driver = f.driver();
        let consumer = open_topic(&driver, "ack")
            .consumer("worker")
            .expect("consumer");
        let events = pull_n(&consumer, 100);
        assert_run(&events, 0, 0, "first run");
        events[60].acknowledge().expect("acknowledge event 60");
    }
    let driver = f.driver();
    let consumer = open_topic(&driver, "ack")
        .consumer("worker")
        .expect("consumer after restart");
    let events = pull_n(&consumer, 189);
    assert_run(&events, 0, 61, "after restart (acknowledged up to 60)");
    assert_nothing_more(&consumer, "after event 249");
}

/// Same as [`resume_after_restart`] without a new driver instance: only the consumer is
/// dropped and recreated.
pub fn resume_on_same_driver_instance(f: &dyn DriverFixture) {
    produce(f, "ack", 1, 50);
    let driver = f.driver();
    let topic = open_topic(&driver, "ack");
    {
        let consumer = topic.consumer("worker").expect("consumer");
        let events = pull_n(&consumer, 30);
        assert_run(&events, 0, 0, "first consumer");
        events[19].acknowledge().expect("acknowledge event 19");
    }
    let consumer = topic.consumer("worker").expect("second consumer");
    assert_run(&pull_n(&consumer, 30), 0, 20, "second consumer, same name");
    assert_nothing_more(&consumer, "after event 49");
}

/// Acknowledgements of one consumer name do not affect another name.
pub fn other_name_starts_at_zero(f: &dyn DriverFixture) {
    produce(f, "ack", 1, 50);
    {
        let driver = f.driver();
        let consumer = open_topic(&driver, "ack")
            .consumer("a")
            .expect("consumer a");
        let events = pull_n(&consumer, 20);
        events[19].acknowledge().expect("acknowledge 19");
    }
    let driver = f.driver();
    let topic = open_topic(&driver, "ack");
    let b = topic.consumer("b").expect("consumer b");
    assert_run(&pull_n(&b, 50), 0, 0, "consumer b (never acknowledged)");
    assert_nothing_more(&b, "consumer b after 50 events");
    let a = topic.consumer("a").expect("consumer a again");
    assert_run(&pull_n(&a, 30), 0, 20, "consumer a resumes after its ack");
    assert_nothing_more(&a, "consumer a after 50 events");
}

/// Events pulled but never acknowledged are delivered again after a restart.
pub fn no_ack_restarts_from_zero(f: &dyn DriverFixture) {
    produce(f, "ack", 1, 40);
    {
        let driver = f.driver();
        let consumer = open_topic(&driver, "ack")
            .consumer("worker")
            .expect("consumer");
        assert_run(&pull_n(&consumer, 30), 0, 0, "first run");
    }
    let driver = f.driver();
    let consumer = open_topic(&driver, "ack")
        .consumer("worker")
        .expect("consumer");
    assert_run(
        &pull_n(&consumer, 40),
        0,
        0,
        "restart without acknowledgement",
    );
    assert_nothing_more(&consumer, "after event 39");
}

/// Acknowledging several times keeps the last acknowledgement.
pub fn latest_ack_wins(f: &dyn DriverFixture) {
    produce(f, "ack", 1, 60);
    {
        let driver = f.driver();
        let consumer = open_topic(&driver, "ack")
            .consumer("worker")
            .expect("consumer");
        let events = pull_n(&consumer, 45);
        events[10].acknowledge().expect("acknowledge 10");
        events[25].acknowledge().expect("acknowledge 25");
        events[40].acknowledge().expect("acknowledge 40");
    }
    let driver = f.driver();
    let consumer = open_topic(&driver, "ack")
        .consumer("worker")
        .expect("consumer");
    assert_run(
        &pull_n(&consumer, 19),
        0,
        41,
        "resume after the last ack (40)",
    );
    assert_nothing_more(&consumer, "after event 59");
}

/// Acknowledgements are per partition: each partition resumes after its own last ack, and a
/// partition never acknowledged restarts at 0.
pub fn acks_are_per_partition(f: &dyn DriverFixture) {
    produce(f, "ack", 3, 20);
    {
        let driver = f.driver();
        let consumer = open_topic(&driver, "ack")
            .consumer("worker")
            .expect("consumer");
        let events = pull_n(&consumer, 60);
        let mut by_partition: BTreeMap<usize, Vec<diaspora_api::Event>> = BTreeMap::new();
        for e in events {
            by_partition.entry(e.partition()).or_default().push(e);
        }
        for (p, events) in &by_partition {
            assert_run(events, *p, 0, "first run");
        }
        by_partition[&0][5].acknowledge().expect("ack p0 id 5");
        by_partition[&1][12].acknowledge().expect("ack p1 id 12");
    }
    let driver = f.driver();
    let consumer = open_topic(&driver, "ack")
        .consumer("worker")
        .expect("consumer");
    let mut by_partition: BTreeMap<usize, Vec<diaspora_api::Event>> = BTreeMap::new();
    // p0: 6..20 (14), p1: 13..20 (7), p2: 0..20 (20).
    for e in pull_n(&consumer, 41) {
        by_partition.entry(e.partition()).or_default().push(e);
    }
    assert_nothing_more(&consumer, "after the unacknowledged events");
    let firsts = [(0usize, 6u64, 14usize), (1, 13, 7), (2, 0, 20)];
    for (p, first, count) in firsts {
        let events = by_partition.get(&p).map(Vec::as_slice).unwrap_or(&[]);
        assert_eq!(events.len(), count, "partition {p}: events after restart");
        assert_run(events, p, first, "after restart");
    }
    // A single pull on a new name still starts at 0 in every partition.
    let fresh = open_topic(&driver, "ack").consumer("fresh").expect("fresh");
    assert_eq!(pull(&fresh).id(), 0, "new consumer name starts at id 0");
}
