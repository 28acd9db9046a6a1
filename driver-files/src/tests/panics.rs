//! Item 4 of issue 5: a panic in user code or in a background job fails the affected futures
//! with an error naming what panicked; nothing hangs, no worker dies, nothing is skipped.

use std::sync::Arc;

use diaspora_api::{
    json, BatchSize, Bytes, BytesMut, ConsumerOptions, DataAllocator, DataDescriptor, DataSelector,
    DataView, Error, JsonSerializer, Metadata, ProducerBackend, ProducerOptions, Result,
    Serializer, ThreadPool, Validator,
};

use super::{settle, topic_with};
use crate::producer::FilesProducer;
use crate::topic::TopicShared;

fn is_panic(e: &Error, what: &str, message: &str) -> bool {
    matches!(e.root(), Error::Panicked { what: w, message: m } if w.contains(what) && m == message)
}

fn has_boom(m: &Metadata) -> bool {
    m.as_bytes().windows(4).any(|w| w == b"boom")
}

struct PanickyValidator;
impl Validator for PanickyValidator {
    fn validate(&self, m: &Metadata, _: &DataView) -> Result<()> {
        if has_boom(m) {
            panic!("validator panics on purpose");
        }
        Ok(())
    }
}

/// Writes part of the metadata, then panics on "boom": the partial bytes must not be stored.
struct PanickySerializer;
impl Serializer for PanickySerializer {
    fn serialize(&self, m: &Metadata, out: &mut Vec<u8>) -> Result<()> {
        if has_boom(m) {
            out.extend_from_slice(b"{\"half");
            panic!("serializer panics on purpose");
        }
        JsonSerializer.serialize(m, out)
    }
    fn deserialize(&self, bytes: Bytes) -> Result<Metadata> {
        JsonSerializer.deserialize(bytes)
    }
}

/// Consumes topic `topic` with metadata-only consumer "check": the `x` of every event.
fn stored_xs(topic: &diaspora_api::TopicHandle) -> Vec<(u64, i64)> {
    let c = topic.consumer("check").expect("consumer");
    let mut out = Vec::new();
    loop {
        match c.pull().wait(300).expect("pull") {
            None => return out,
            Some(e) => {
                let x = e.metadata().json().expect("json")["x"].as_i64().expect("x");
                out.push((e.id(), x));
            }
        }
    }
}

#[test]
fn validator_panic_fails_that_push_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = topic_with(dir.path(), 1, |p| p.validator = Arc::new(PanickyValidator));
    let producer = topic.producer().expect("producer");
    let a = producer.push(json!({"x": 1}), ());
    let e = settle(producer.push(json!({"x": 9, "boom": 1}), ()), "push").expect_err("panicked");
    assert!(
        is_panic(&e, "validator", "validator panics on purpose"),
        "{e:?}"
    );
    assert!(e.to_string().contains("validator panics on purpose"), "{e}");
    let b = producer.push(json!({"x": 2}), ());
    let lost = settle(producer.flush(), "flush").expect_err("flush reports the rejected push");
    assert!(
        matches!(lost, Error::EventsLost { count: 1, .. }),
        "{lost:?}"
    );
    assert!(is_panic(&lost, "validator", "validator panics on purpose"));
    assert_eq!(settle(a, "a").expect("a"), 0);
    assert_eq!(settle(b, "b").expect("b"), 1);
    assert_eq!(stored_xs(&topic), vec![(0, 1), (1, 2)]);
}

/// A one-partition topic under `root` whose serializer is [`PanickySerializer`], and its
/// producer: batches of 3, stored by a pool of one thread.
fn panicky_serializer_producer(
    root: &std::path::Path,
) -> (diaspora_api::TopicHandle, diaspora_api::Producer) {
    let topic = topic_with(root, 1, |p| p.serializer = Arc::new(PanickySerializer));
    let producer = topic
        .producer_with(
            "",
            ProducerOptions {
                batch_size: BatchSize::Fixed(3),
                thread_pool: Some(ThreadPool::new(1)),
                ..Default::default()
            },
        )
        .expect("producer");
    (topic, producer)
}

#[test]
fn serializer_panic_fails_that_push_and_leaves_no_partial_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (topic, producer) = panicky_serializer_producer(dir.path());
    let a = producer.push(json!({"x": 1}), ());
    let e = settle(producer.push(json!({"x": 9, "boom": 1}), ()), "push").expect_err("panicked");
    assert!(
        is_panic(&e, "serializer", "serializer panics on purpose"),
        "{e:?}"
    );
    let b = producer.push(json!({"x": 2}), ());
    let lost = settle(producer.flush(), "flush").expect_err("flush reports the failed push");
    assert!(
        matches!(lost, Error::EventsLost { count: 1, .. }),
        "{lost:?}"
    );
    assert!(is_panic(
        &lost,
        "serializer",
        "serializer panics on purpose"
    ));
    settle(producer.flush(), "flush").expect("reported once");
    assert_eq!(settle(a, "a").expect("a"), 0);
    assert_eq!(settle(b, "b").expect("b"), 1);
    assert_eq!(stored_xs(&topic), vec![(0, 1), (1, 2)]);
}

/// `push_many`: a serializer panic on the third of five events fails the call's future and
/// loses that event only, as five `push` calls would: the other four are stored (a batch of
/// three sealed in the middle of the call, the fourth by the flush), the next flush counts
/// the one lost, and no partial bytes are stored.
#[test]
fn serializer_panic_in_push_many_loses_that_event_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (topic, producer) = panicky_serializer_producer(dir.path());
    let events = [
        json!({"x": 1}),
        json!({"x": 2}),
        json!({"x": 9, "boom": 1}),
        json!({"x": 3}),
        json!({"x": 4}),
    ];
    let e = settle(
        producer.push_many(events.into_iter().map(|m| (m, ()))),
        "push_many",
    )
    .expect_err("panicked");
    assert!(
        is_panic(&e, "serializer", "serializer panics on purpose"),
        "{e:?}"
    );
    let lost = settle(producer.flush(), "flush").expect_err("flush reports the lost event");
    assert!(
        matches!(lost, Error::EventsLost { count: 1, .. }),
        "{lost:?}"
    );
    settle(producer.flush(), "flush").expect("reported once");
    let after = producer.push(json!({"x": 5}), ());
    settle(producer.flush(), "flush").expect("flush");
    assert_eq!(settle(after, "after").expect("after"), 4);
    assert_eq!(
        stored_xs(&topic),
        vec![(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]
    );
}

/// A panic while a batch is stored (a driver bug, injected) fails that batch's futures and the
/// next flush; the one worker of the pool survives and stores the next batch.
#[test]
fn store_panic_fails_the_batch_and_flush_without_hanging() {
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = topic_with(dir.path(), 1, |_| {});
    let shared = TopicShared::open(dir.path(), "t", ThreadPool::inline()).expect("open");
    let producer = FilesProducer::new(
        shared,
        ProducerOptions {
            batch_size: BatchSize::Fixed(3),
            thread_pool: Some(ThreadPool::new(1)),
            ..Default::default()
        },
    );
    producer.inject_store_panic();
    let push = |x: i64| {
        producer.push(
            Metadata::from_value(json!({ "x": x })),
            DataView::new(),
            None,
        )
    };
    let lost: Vec<_> = (0..3).map(push).collect();
    for f in lost {
        let e = settle(f, "push in the panicking batch").expect_err("batch failed");
        assert!(
            is_panic(&e, "storing a batch", "injected store panic"),
            "{e:?}"
        );
    }
    let e = settle(producer.flush(), "flush").expect_err("flush reports the lost batch");
    assert!(
        matches!(e, Error::EventsLost { count: 3, .. }),
        "flush must name the 3 lost events: {e:?}"
    );
    assert!(e.to_string().contains("injected store panic"), "{e}");
    let kept: Vec<_> = (10..13).map(push).collect();
    settle(producer.flush(), "second flush").expect("nothing lost since the last flush");
    let ids: Vec<_> = kept
        .into_iter()
        .map(|f| settle(f, "push").expect("stored"))
        .collect();
    assert_eq!(ids, vec![0, 1, 2], "the panicked batch took no ids");
    assert_eq!(stored_xs(&topic), vec![(0, 10), (1, 11), (2, 12)]);
}

/// Data whose owner panics when the last reference is dropped (on the pool's worker).
struct PanicOnDrop(Vec<u8>);
impl AsRef<[u8]> for PanicOnDrop {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}
impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        panic!("data owner panics on drop on purpose");
    }
}

#[test]
fn panic_releasing_data_in_the_background_does_not_block_flush() {
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = topic_with(dir.path(), 1, |_| {});
    let producer = topic
        .producer_with(
            "",
            ProducerOptions {
                thread_pool: Some(ThreadPool::new(1)),
                ..Default::default()
            },
        )
        .expect("producer");
    let futures: Vec<_> = (0..4)
        .map(|x| {
            // One panicking owner per batch at most: a second panic while unwinding aborts.
            let data = if x == 2 {
                Bytes::from_owner(PanicOnDrop(vec![x as u8; 100]))
            } else {
                Bytes::from(vec![x as u8; 100])
            };
            producer.push(json!({ "x": x }), data)
        })
        .collect();
    settle(producer.flush(), "flush").expect("stored (the panic came after)");
    for (i, f) in futures.into_iter().enumerate() {
        assert_eq!(settle(f, "push").expect("stored"), i as u64);
    }
    assert_eq!(
        stored_xs(&topic),
        vec![(0, 0), (1, 1), (2, 2), (3, 3)],
        "every event stored"
    );
}

fn i_of(m: &Metadata) -> u64 {
    m.json().ok().and_then(|v| v["i"].as_u64()).unwrap_or(0)
}

/// A selector that panics on event 2 and an allocator that panics on event 4 fail exactly those
/// pulls; the others are delivered, in order, with their data; prefetch carries on.
fn consumer_callbacks_panic(pool: ThreadPool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = topic_with(dir.path(), 1, |_| {});
    let producer = topic.producer().expect("producer");
    for i in 0..7u64 {
        drop(producer.push(json!({ "i": i }), vec![i as u8; 10]));
    }
    settle(producer.flush(), "flush").expect("flush");
    let selector: DataSelector = Arc::new(|m: &Metadata, d: &DataDescriptor| {
        if i_of(m) == 2 {
            panic!("selector panics on purpose");
        }
        d.clone()
    });
    let allocator: DataAllocator = Arc::new(|m: &Metadata, d: &DataDescriptor| {
        if i_of(m) == 4 {
            panic!("allocator panics on purpose");
        }
        BytesMut::zeroed(d.size() as usize)
    });
    let consumer = topic
        .consumer_with(
            "c",
            ConsumerOptions {
                data_selector: Some(selector),
                data_allocator: Some(allocator),
                batch_size: BatchSize::Fixed(3),
                thread_pool: Some(pool),
                ..Default::default()
            },
        )
        .expect("consumer");
    for i in 0..7u64 {
        let r = settle(consumer.pull(), "pull");
        match i {
            2 | 4 => {
                let e = r.expect_err("this event's callback panicked");
                let (what, msg) = if i == 2 {
                    ("data selector", "selector panics on purpose")
                } else {
                    ("data allocator", "allocator panics on purpose")
                };
                assert!(
                    matches!(&e, Error::EventFailed { partition: 0, id, .. } if *id == i),
                    "event {i}: {e:?}"
                );
                assert!(is_panic(&e, what, msg), "event {i}: {e:?}");
            }
            _ => {
                let e = r.unwrap_or_else(|e| panic!("event {i}: {e}"));
                assert_eq!((e.id(), i_of(e.metadata())), (i, i));
                assert_eq!(e.data().to_vec(), vec![i as u8; 10], "event {i}: data");
            }
        }
    }
    let mut end = consumer.pull();
    assert!(
        end.wait(200).expect("no error").is_none(),
        "nothing after event 6"
    );
    // The failed event can be acknowledged by position, only by a consumer that read it.
    consumer
        .acknowledge(0, 4)
        .expect("acknowledge past the failed event");
    assert!(
        consumer.acknowledge(0, 7).is_err(),
        "event 7 was never read"
    );
    assert!(
        consumer.acknowledge(1, 0).is_err(),
        "partition 1 does not exist"
    );
    let again = topic.consumer("c").expect("restart");
    let e = settle(again.pull(), "pull after restart").expect("event 5");
    assert_eq!(
        e.id(),
        5,
        "the restarted consumer resumes after the acknowledged event"
    );
}

#[test]
fn selector_and_allocator_panics_fail_their_pull_inline() {
    consumer_callbacks_panic(ThreadPool::inline());
}

#[test]
fn selector_and_allocator_panics_fail_their_pull_with_prefetch() {
    consumer_callbacks_panic(ThreadPool::new(1));
}
