//! Completion: once a topic is marked complete, consumers get every event, then the
//! end-of-stream marker (again on every further pull), and pushes fail.

use std::collections::BTreeSet;

use diaspora_api::{json, Error, NO_MORE_EVENTS};

use crate::util::{
    create_topic, drain, flush, meta_u64, open_topic, pull, pull_n, wait_for, wait_for_err,
};
use crate::DriverFixture;

fn produce_and_complete(f: &dyn DriverFixture, name: &str, partitions: usize, n: u64) {
    let driver = f.driver();
    let topic = create_topic(&driver, name, partitions);
    assert!(
        !topic.is_complete().expect("is_complete"),
        "new topic is not complete"
    );
    let producer = topic.producer().expect("producer");
    for i in 0..n {
        drop(producer.push(json!({"i": i}), ()));
    }
    flush(&producer);
    topic.mark_as_complete().expect("mark_as_complete");
    assert!(
        topic.is_complete().expect("is_complete"),
        "after mark_as_complete"
    );
}

/// All events, then the end marker; further pulls keep returning the end marker, which cannot
/// be acknowledged.
pub fn end_marker_after_all_events(f: &dyn DriverFixture) {
    produce_and_complete(f, "done", 2, 40);
    let driver = f.driver();
    let consumer = open_topic(&driver, "done").consumer("c").expect("consumer");
    let events = drain(&consumer, 40);
    let seqs: BTreeSet<u64> = events.iter().map(|e| meta_u64(e, "i")).collect();
    assert_eq!(events.len(), 40, "every event before the end marker");
    assert_eq!(seqs, (0..40).collect(), "each event exactly once");
    for p in 0..2 {
        let ids: Vec<u64> = events
            .iter()
            .filter(|e| e.partition() == p)
            .map(|e| e.id())
            .collect();
        assert_eq!(ids, (0..20).collect::<Vec<_>>(), "partition {p} ids");
    }
    for n in 0..3 {
        let e = pull(&consumer);
        assert!(
            e.is_no_more_events(),
            "pull #{n} after the end must return the end marker again, got {e:?}"
        );
        assert_eq!(e.id(), NO_MORE_EVENTS);
        assert!(e.data().is_empty());
        assert!(
            matches!(e.acknowledge(), Err(Error::Unsupported(_))),
            "the end marker cannot be acknowledged"
        );
    }
}

/// The completion flag is durable: a new driver instance sees it.
pub fn completion_persists_across_restart(f: &dyn DriverFixture) {
    produce_and_complete(f, "done", 1, 10);
    let driver = f.driver();
    let topic = open_topic(&driver, "done");
    assert!(
        topic.is_complete().expect("is_complete"),
        "completion must survive a restart"
    );
    let consumer = topic.consumer("c").expect("consumer");
    let events = drain(&consumer, 10);
    let ids: Vec<u64> = events.iter().map(|e| e.id()).collect();
    assert_eq!(ids, (0..10).collect::<Vec<_>>());
}

/// A complete topic without events yields the end marker at once.
pub fn complete_empty_topic(f: &dyn DriverFixture) {
    let driver = f.driver();
    let topic = create_topic(&driver, "empty", 3);
    topic.mark_as_complete().expect("mark_as_complete");
    let consumer = topic.consumer("c").expect("consumer");
    let mut fut = consumer.pull();
    match fut.wait(2_000) {
        Ok(Some(e)) => assert!(e.is_no_more_events(), "expected end marker, got {e:?}"),
        Ok(None) => panic!("pull on an empty complete topic must return the end marker"),
        Err(e) => panic!("pull failed: {e}"),
    }
}

/// Pushing into a complete topic fails with `TopicComplete` (at producer creation, or on the
/// push future), and stores nothing.
pub fn push_after_complete_fails(f: &dyn DriverFixture) {
    produce_and_complete(f, "done", 1, 5);
    let driver = f.driver();
    let topic = open_topic(&driver, "done");
    match topic.producer() {
        Err(e) => assert!(
            matches!(e.root(), Error::TopicComplete(_)),
            "producer creation on a complete topic: expected TopicComplete, got {e:?}"
        ),
        Ok(producer) => {
            let fut = producer.push(json!({"late": true}), ());
            let flushed = producer.flush();
            let e = wait_for_err(fut, "push into a complete topic");
            assert!(
                matches!(e.root(), Error::TopicComplete(_)),
                "push into a complete topic: expected TopicComplete, got {e:?}"
            );
            // The flush may report the same error or succeed; it must not hang.
            let mut flushed = flushed;
            let _ = flushed.wait(crate::util::TIMEOUT_MS);
        }
    }
    let consumer = topic.consumer("c").expect("consumer");
    let events = drain(&consumer, 5);
    assert_eq!(events.len(), 5, "no late event may be stored");
}

/// A consumer that acknowledged everything, restarted on a complete topic, gets the end marker.
pub fn acked_consumer_on_complete_topic_gets_end(f: &dyn DriverFixture) {
    produce_and_complete(f, "done", 1, 12);
    {
        let driver = f.driver();
        let consumer = open_topic(&driver, "done").consumer("c").expect("consumer");
        let events = pull_n(&consumer, 12);
        events[11].acknowledge().expect("ack last");
    }
    let driver = f.driver();
    let consumer = open_topic(&driver, "done").consumer("c").expect("consumer");
    let e = wait_for(consumer.pull(), "pull after full ack");
    assert!(
        e.is_no_more_events(),
        "everything was acknowledged: expected the end marker, got {e:?}"
    );
}
