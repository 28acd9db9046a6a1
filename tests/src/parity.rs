//! Upstream-parity features every driver gets through the API (issue 13): consumer iteration
//! and `process`, buffer allocators (natively or through the API's copy), topic listing with
//! metadata, clamped sub-views, JSON Schema topics, and the introspection getters.

use std::ops::ControlFlow;
use std::sync::Arc;

use diaspora_api::{
    json, BatchSize, ConsumerOptions, DataBuffer, DataDescriptor, Error, Metadata, NumEvents,
    ProducerOptions,
};

use crate::util::{create_topic, flush, meta_u64, pattern, TIMEOUT_MS};
use crate::DriverFixture;

/// `for event in &consumer` yields every event once and ends at end-of-stream;
/// `events(ms)` on a topic that is not complete ends after the timeout.
pub fn consumer_iteration_ends_at_end_of_stream(f: &dyn DriverFixture) {
    let driver = f.driver();
    let topic = create_topic(&driver, "iter", 2);
    let p = topic.producer().expect("producer");
    for i in 0..20u64 {
        let _ = p.push(json!({ "i": i }), ());
    }
    flush(&p);
    let c = topic.consumer("early").expect("consumer");
    // The first event may take a while on a network driver (a Kafka consumer looks up the
    // partition leaders and their offsets first): wait for it with the suite's deadline, then
    // `events(ms)` yields the rest and ends after `ms` without an event.
    let first = c.pull().wait(TIMEOUT_MS).expect("pull").expect("an event");
    drop(first);
    assert_eq!(
        1 + c.events(1000).count(),
        20,
        "{}: before completion",
        f.name()
    );
    topic.mark_as_complete().expect("complete");
    let c = topic.consumer("c").expect("consumer");
    let mut seen: Vec<u64> = (&c)
        .into_iter()
        .map(|e| meta_u64(&e.expect("event"), "i"))
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..20).collect::<Vec<_>>(), "{}", f.name());
}

/// `process` stops on `Break`, after `max_events`, and at end-of-stream, counting exactly.
pub fn process_counts_and_stops(f: &dyn DriverFixture) {
    let driver = f.driver();
    let topic = create_topic(&driver, "proc", 3);
    let p = topic.producer().expect("producer");
    for i in 0..30u64 {
        let _ = p.push(json!({ "i": i }), ());
    }
    flush(&p);
    topic.mark_as_complete().expect("complete");
    let c = topic.consumer("c").expect("consumer");
    let mut n = 0;
    let got = c
        .process(
            |_| {
                n += 1;
                if n == 4 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            },
            TIMEOUT_MS,
            NumEvents::infinity(),
        )
        .expect("process");
    assert_eq!(got, 4);
    let got = c
        .process(|_| ControlFlow::Continue(()), TIMEOUT_MS, NumEvents(6))
        .expect("process");
    assert_eq!(got, 6);
    let got = c
        .process(
            |_| ControlFlow::Continue(()),
            TIMEOUT_MS,
            NumEvents::infinity(),
        )
        .expect("process");
    assert_eq!(got, 20, "{}: the rest, then end-of-stream", f.name());
}

/// A buffer allocator's buffers receive exactly the selected bytes, in order, and the event's
/// data is those buffers.
pub fn buffer_allocator_receives_selected_bytes(f: &dyn DriverFixture) {
    let driver = f.driver();
    let topic = create_topic(&driver, "bufs", 1);
    let p = topic.producer().expect("producer");
    for i in 0..5u64 {
        let _ = p.push(json!({ "i": i }), pattern(i, 300));
    }
    flush(&p);
    let c = topic
        .consumer_with(
            "c",
            ConsumerOptions {
                data_selector: Some(Arc::new(|_: &Metadata, d: &DataDescriptor| {
                    d.strided_view(10, 4, 25, 50)
                        .unwrap_or_else(|_| DataDescriptor::null())
                })),
                buffer_allocator: Some(Arc::new(|_: &Metadata, d: &DataDescriptor| {
                    let n = d.size() as usize;
                    Ok(vec![
                        DataBuffer::from(vec![0u8; 7]),
                        DataBuffer::from(vec![0u8; n - 7]),
                    ])
                })),
                ..Default::default()
            },
        )
        .expect("consumer");
    for e in c.events(200) {
        let e = e.expect("event");
        let whole = pattern(meta_u64(&e, "i"), 300);
        let want: Vec<u8> = (0..4)
            .flat_map(|b| whole[10 + 75 * b..10 + 75 * b + 25].to_vec())
            .collect();
        assert_eq!(
            e.data().segments().len(),
            2,
            "{}: one segment per buffer",
            f.name()
        );
        assert_eq!(e.data().to_vec(), want, "{}", f.name());
    }
}

/// `list_topics_metadata` lists every topic with its name, partition count and policies.
pub fn list_topics_metadata_describes_each_topic(f: &dyn DriverFixture) {
    let driver = f.driver();
    driver
        .create_topic(
            "m1",
            json!({"num_partitions": 3, "validator": {"type": "required_fields", "fields": ["x"]}}),
        )
        .expect("create");
    create_topic(&driver, "m2", 1);
    let listed = driver.list_topics_metadata().expect("list");
    assert_eq!(
        listed.keys().collect::<Vec<_>>(),
        ["m1", "m2"],
        "{}",
        f.name()
    );
    assert_eq!(listed["m1"]["num_partitions"], 3);
    assert_eq!(listed["m1"]["name"], "m1");
    assert_eq!(listed["m1"]["validator"]["type"], "required_fields");
    assert_eq!(listed["m2"]["num_partitions"], 1);
}

/// `sub_view` past the end is clamped (as upstream): the consumer gets the tail.
pub fn clamped_sub_view_selects_the_tail(f: &dyn DriverFixture) {
    let driver = f.driver();
    let topic = create_topic(&driver, "clamp", 1);
    let p = topic.producer().expect("producer");
    let _ = p.push(json!({ "i": 0 }), pattern(0, 100));
    flush(&p);
    let c = topic
        .consumer_with(
            "c",
            ConsumerOptions {
                data_selector: Some(Arc::new(|_: &Metadata, d: &DataDescriptor| {
                    d.sub_view(90, 20).expect("clamped, never an error")
                })),
                ..Default::default()
            },
        )
        .expect("consumer");
    let e = crate::util::pull(&c);
    assert_eq!(e.data().to_vec(), pattern(0, 100)[90..], "{}", f.name());
}

/// A JSON Schema topic refuses events that violate it, naming the field, also after a
/// restart (the schema is stored with the topic).
pub fn json_schema_topic_validates_after_restart(f: &dyn DriverFixture) {
    let schema =
        json!({"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}});
    f.driver()
        .create_topic(
            "schema",
            json!({"validator": {"type": "schema", "schema": schema}}),
        )
        .expect("create");
    let driver = f.driver();
    let topic = crate::util::open_topic(&driver, "schema");
    let p = topic.producer().expect("producer");
    crate::util::wait_for(p.push(json!({"n": 1}), ()), "valid push");
    let e = crate::util::wait_for_err(p.push(json!({"n": "one"}), ()), "invalid push");
    assert!(matches!(e.root(), Error::ValidationFailed(_)), "{e:?}");
    assert!(e.to_string().contains("/n"), "{}: {e}", f.name());
}

/// Producer and consumer getters report their options; the topic knows its driver.
pub fn introspection_reports_options(f: &dyn DriverFixture) {
    let driver = f.driver();
    let topic = create_topic(&driver, "intro", 2);
    assert_eq!(topic.driver().name(), driver.name());
    let p = topic
        .producer_with(
            "prod",
            ProducerOptions {
                batch_size: BatchSize::Fixed(3),
                max_num_batches: 5,
                ..Default::default()
            },
        )
        .expect("producer");
    assert_eq!(
        (p.name(), p.batch_size(), p.max_num_batches()),
        ("prod", BatchSize::Fixed(3), 5)
    );
    assert_eq!(p.topic().name(), "intro");
    let c = topic
        .consumer_with(
            "cons",
            ConsumerOptions {
                partitions: Some(vec![1]),
                max_num_batches: 3,
                ..Default::default()
            },
        )
        .expect("consumer");
    assert_eq!(c.partitions(), Some(&[1usize][..]));
    assert_eq!(c.max_num_batches(), 3);
    assert_eq!(c.topic().name(), "intro");
    let _ = p.push_to(1, json!({"i": 0}), ());
    flush(&p);
    let e = crate::util::pull(&c);
    assert_eq!(e.partition_info().index, 1, "{}", f.name());
}
