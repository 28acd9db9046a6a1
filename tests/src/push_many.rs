//! `Producer::push_many`: several events per call, one future for their ids, the same events,
//! ids and guarantees as pushing them one by one.

use diaspora_api::{json, BatchSize, Error, ProducerOptions, Value};

use crate::util::{
    assert_nothing_more, create_topic, flush, meta_u64, pattern, pull_n, wait_for, wait_for_err,
};
use crate::DriverFixture;

fn fixed(n: usize) -> ProducerOptions {
    ProducerOptions {
        batch_size: BatchSize::Fixed(n),
        ..Default::default()
    }
}

/// Events `{"s": s}` with data `pattern(s, 24)` for `s` in `range`.
fn events(range: std::ops::Range<u64>) -> impl Iterator<Item = (Value, Vec<u8>)> {
    range.map(|s| (json!({ "s": s }), pattern(s, 24)))
}

/// Groups larger and smaller than the batch size, mixed with single pushes: ids are the push
/// order, every event arrives once, in order, with its data.
pub fn ids_follow_push_order_across_batches(f: &dyn DriverFixture) {
    let driver = f.driver();
    let topic = create_topic(&driver, "many", 1);
    let producer = topic.producer_with("p", fixed(7)).expect("producer");
    let first = producer.push_many(events(0..20));
    let single = producer.push(json!({"s": 20}), pattern(20, 24));
    let second = producer.push_many(events(21..24));
    let third = producer.push_many(events(24..50));
    flush(&producer);
    assert_eq!(
        wait_for(first, "push_many 0..20"),
        (0..20).collect::<Vec<_>>()
    );
    assert_eq!(wait_for(single, "push 20"), 20);
    assert_eq!(wait_for(second, "push_many 21..24"), vec![21, 22, 23]);
    assert_eq!(
        wait_for(third, "push_many 24..50"),
        (24..50).collect::<Vec<_>>()
    );
    let consumer = topic
        .consumer_with(
            "c",
            diaspora_api::ConsumerOptions {
                data_selector: Some(diaspora_api::select_all()),
                ..Default::default()
            },
        )
        .expect("consumer");
    for (i, e) in pull_n(&consumer, 50).into_iter().enumerate() {
        assert_eq!(e.id(), i as u64, "event {i}");
        assert_eq!(meta_u64(&e, "s"), i as u64, "event {i}: metadata");
        assert_eq!(
            e.data().to_vec(),
            pattern(i as u64, 24),
            "event {i}: its own data"
        );
    }
    assert_nothing_more(&consumer, "50 events pushed");
}

/// `push_many_to` puts every event in its partition; `push_many` lets the topic's partition
/// selector place each event, as `push` does; ids are per partition.
pub fn partitions_of_events_pushed_together(f: &dyn DriverFixture) {
    let driver = f.driver();
    let topic = create_topic(&driver, "many", 3);
    let producer = topic.producer().expect("producer");
    let to_two = producer.push_many_to(2, events(0..10));
    let spread = producer.push_many(events(10..40));
    flush(&producer);
    assert_eq!(
        wait_for(to_two, "push_many_to(2)"),
        (0..10).collect::<Vec<_>>()
    );
    let spread_ids = wait_for(spread, "push_many");
    assert_eq!(spread_ids.len(), 30);
    let consumer = topic.consumer("c").expect("consumer");
    let got = pull_n(&consumer, 40);
    assert_nothing_more(&consumer, "40 events pushed");
    let mut per_partition = [Vec::new(), Vec::new(), Vec::new()];
    for e in &got {
        per_partition[e.partition()].push((e.id(), meta_u64(e, "s")));
    }
    // Round robin spreads the 30 evenly, whatever partition it starts at.
    let counts: Vec<usize> = per_partition.iter().map(Vec::len).collect();
    assert_eq!(counts, vec![10, 10, 20], "events per partition");
    for (p, evs) in per_partition.iter().enumerate() {
        let ids: Vec<u64> = evs.iter().map(|&(id, _)| id).collect();
        assert_eq!(
            ids,
            (0..evs.len() as u64).collect::<Vec<_>>(),
            "partition {p}"
        );
    }
    let in_two: Vec<u64> = per_partition[2].iter().map(|&(_, s)| s).take(10).collect();
    assert_eq!(in_two, (0..10).collect::<Vec<_>>(), "push_many_to(2) first");
    // Each id the call gave back is the id of that event in its partition.
    for (k, id) in spread_ids.into_iter().enumerate() {
        let s = 10 + k as u64;
        let found = per_partition
            .iter()
            .flatten()
            .filter(|&&(i, ms)| i == id && ms == s)
            .count();
        assert_eq!(found, 1, "event {s} has id {id} in its partition");
    }
}

/// One invalid event refuses the whole call: none is queued, the future names it, and the
/// next flush counts every event of the call as lost.
pub fn one_invalid_event_refuses_the_whole_call(f: &dyn DriverFixture) {
    let driver = f.driver();
    let topic = create_topic(&driver, "many", 1);
    let producer = topic.producer().expect("producer");
    let metadata = [
        r#"{"s": 0}"#,
        r#"{"s": 1}"#,
        "not json",
        r#"{"s": 3}"#,
        r#"{"s": 4}"#,
    ];
    let refused = producer.push_many(metadata.iter().map(|m| (*m, ())));
    let e = wait_for_err(refused, "push_many with an invalid event");
    assert!(
        matches!(&e, Error::Shared(inner)
            if matches!(**inner, Error::PushManyRefused { index: 2, count: 5, .. })),
        "expected PushManyRefused {{ index: 2, count: 5 }}, got {e:?}"
    );
    assert!(matches!(e.root(), Error::InvalidJson(_)), "root: {e:?}");
    let e = wait_for_err(producer.flush(), "flush after the refused call");
    assert!(
        matches!(e, Error::EventsLost { count: 5, .. }),
        "flush must count the 5 events of the call: {e:?}"
    );
    // Nothing was queued: the next event is the first of the partition.
    assert_eq!(wait_for(producer.push(json!({"s": 9}), ()), "push"), 0);
    flush(&producer);
    let consumer = topic.consumer("c").expect("consumer");
    let got = pull_n(&consumer, 1);
    assert_eq!(meta_u64(&got[0], "s"), 9);
    assert_nothing_more(&consumer, "one event stored");
}

/// Into a partition that does not exist: the call fails and flush counts its events.
pub fn push_many_to_a_missing_partition_fails(f: &dyn DriverFixture) {
    let driver = f.driver();
    let topic = create_topic(&driver, "many", 2);
    let producer = topic.producer().expect("producer");
    let e = wait_for_err(producer.push_many_to(2, events(0..4)), "push_many_to(2)");
    assert!(
        matches!(e.root(), Error::InvalidPartition { index: 2, count: 2 }),
        "expected InvalidPartition {{ 2, 2 }}, got {e:?}"
    );
    let e = wait_for_err(producer.flush(), "flush");
    assert!(
        matches!(e, Error::EventsLost { count: 4, .. }),
        "flush must count the 4 events: {e:?}"
    );
}

/// Waiting on a call's future, or on a push's, sends its batches (a fixed batch size far from
/// full does not keep the wait blocked until flush); an empty call is ready at once.
pub fn waiting_on_push_many_sends_its_batches(f: &dyn DriverFixture) {
    let driver = f.driver();
    let topic = create_topic(&driver, "many", 1);
    let producer = topic.producer_with("p", fixed(100_000)).expect("producer");
    let mut empty = producer.push_many(std::iter::empty::<(Value, ())>());
    assert!(empty.is_ready(), "an empty call is ready");
    assert_eq!(empty.wait(0).expect("empty call"), Some(Vec::new()));
    let ids = wait_for(producer.push_many(events(0..5)), "push_many without flush");
    assert_eq!(ids, vec![0, 1, 2, 3, 4]);
    // So does waiting on one push (the fabric driver blocked here until flush before it sent
    // its open batches on such a wait).
    let id = wait_for(producer.push(json!({"s": 5}), ()), "push without flush");
    assert_eq!(id, 5);
    flush(&producer);
}
