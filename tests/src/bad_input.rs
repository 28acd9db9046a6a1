//! Bad input is rejected with the right error, and leaves no trace.

use std::sync::Arc;

use diaspora_api::{
    json, BatchSize, ConsumerOptions, DataAllocator, DataDescriptor, Driver, Error, Metadata,
    ProducerOptions,
};

use crate::util::{
    create_topic, err_of, flush, open_topic, pull, pull_n, wait_for, wait_for_err, within,
};
use crate::DriverFixture;

/// Malformed JSON metadata fails the push future with `InvalidJson`; nothing is stored.
pub fn malformed_json_metadata(f: &dyn DriverFixture) {
    let driver = f.driver();
    let topic = create_topic(&driver, "json", 1);
    let producer = topic.producer().expect("producer");
    for bad in [r#"{"x":"#, "not json", "", r#"{"a":1}}"#] {
        let e = wait_for_err(producer.push(bad, ()), &format!("push({bad:?})"));
        assert!(
            matches!(e.root(), Error::InvalidJson(_)),
            "push({bad:?}): expected InvalidJson, got {e:?}"
        );
    }
    let ok = producer.push(r#"{"ok":true}"#, ());
    let e = wait_for_err(producer.flush(), "flush after 4 rejected pushes");
    assert!(
        matches!(e, Error::EventsLost { count: 4, .. })
            && matches!(e.root(), Error::InvalidJson(_)),
        "flush must report the 4 rejected events: {e:?}"
    );
    flush(&producer); // reported once
    assert_eq!(
        wait_for(ok, "valid push"),
        0,
        "failed pushes must not take ids"
    );
    let consumer = topic.consumer("c").expect("consumer");
    let e = pull(&consumer);
    assert_eq!(e.metadata().json().expect("JSON"), &json!({"ok": true}));
    crate::util::assert_nothing_more(&consumer, "only the valid event is stored");
}

/// Metadata that is JSON syntax but that `Metadata::json()` cannot parse (a number out of
/// range, a lone surrogate, nesting deeper than the parser's limit) is refused by `push`,
/// whatever the topic's validator and however the metadata was built; nothing is stored.
pub fn unparseable_metadata_is_refused(f: &dyn DriverFixture) {
    let driver = f.driver();
    let plain = create_topic(&driver, "limits", 1);
    driver
        .create_topic(
            "limits_fields",
            json!({"num_partitions": 1,
                   "validator": {"type": "required_fields", "fields": ["x"]}}),
        )
        .expect("create");
    let fields = open_topic(&driver, "limits_fields");
    let deep = format!(r#"{{"x":{}{}}}"#, "[".repeat(200), "]".repeat(200));
    let mut deep_value = json!(1);
    for _ in 0..200 {
        deep_value = json!([deep_value]);
    }
    for topic in [&plain, &fields] {
        let producer = topic.producer().expect("producer");
        for bad in [r#"{"x":1e999}"#, r#"{"x":"\ud800"}"#, deep.as_str()] {
            let e = wait_for_err(producer.push(bad, ()), &format!("push({bad:.40})"));
            assert!(
                matches!(e.root(), Error::InvalidJson(_)),
                "push({bad:.40}): expected InvalidJson, got {e:?}"
            );
            let unchecked = Metadata::from_raw_unchecked(diaspora_api::Bytes::from(bad.to_owned()));
            let e = wait_for_err(producer.push(unchecked, ()), "push(unchecked)");
            assert!(matches!(e.root(), Error::InvalidJson(_)), "{e:?}");
        }
        let e = wait_for_err(
            producer.push(json!({"x": deep_value.clone()}), ()),
            "push(deep value)",
        );
        assert!(matches!(e.root(), Error::InvalidJson(_)), "{e:?}");
        let ok = producer.push(r#"{"x":1e300}"#, ());
        let e = wait_for_err(producer.flush(), "flush after 7 rejected pushes");
        assert!(
            matches!(e, Error::EventsLost { count: 7, .. })
                && matches!(e.root(), Error::InvalidJson(_)),
            "flush must report the 7 rejected events: {e:?}"
        );
        flush(&producer); // reported once
        assert_eq!(wait_for(ok, "valid push"), 0, "failed pushes take no id");
        let consumer = topic.consumer("c").expect("consumer");
        let e = pull(&consumer);
        assert_eq!(
            e.metadata().json().expect("parseable"),
            &json!({"x": 1e300})
        );
        crate::util::assert_nothing_more(&consumer, "only the valid event is stored");
    }
}

/// A topic's validator rejects events, also after a restart (policies are persisted).
pub fn validator_rejects_and_persists(f: &dyn DriverFixture) {
    {
        let driver = f.driver();
        driver
            .create_topic(
                "checked",
                json!({"num_partitions": 1,
                       "validator": {"type": "required_fields", "fields": ["x"]}}),
            )
            .expect("create with validator");
    }
    let driver = f.driver();
    let topic = open_topic(&driver, "checked");
    let producer = topic.producer().expect("producer");
    let e = wait_for_err(producer.push(json!({"y": 1}), ()), "push without x");
    assert!(
        matches!(e.root(), Error::ValidationFailed(_)),
        "expected ValidationFailed after reopening, got {e:?}"
    );
    let ok = producer.push(json!({"x": 1}), ());
    let e = wait_for_err(producer.flush(), "flush after a rejected push");
    assert!(
        matches!(e, Error::EventsLost { count: 1, .. })
            && matches!(e.root(), Error::ValidationFailed(_)),
        "flush must report the rejected event: {e:?}"
    );
    assert_eq!(wait_for(ok, "valid push"), 0);
}

/// An unknown driver name is `UnknownDriver`.
pub fn unknown_driver(f: &dyn DriverFixture) {
    let e = err_of(
        Driver::new("no-such-driver-xyz", json!({})),
        "Driver::new(unknown)",
    );
    assert!(
        matches!(e, Error::UnknownDriver { ref name, .. } if name == "no-such-driver-xyz"),
        "expected UnknownDriver, got {e:?}"
    );
    assert!(
        diaspora_api::registered_drivers().contains(&f.driver().name().to_owned()),
        "the driver under test ({}) should be registered under its name",
        f.name()
    );
}

/// Names that could escape a namespace or are empty are `InvalidTopicName` everywhere.
pub fn invalid_topic_names(f: &dyn DriverFixture) {
    let driver = f.driver();
    for bad in [
        "", "..", ".", "a/b", "../x", "/abs", ".hidden", "-flag", "a\0b", "a\\b",
    ] {
        let e = err_of(
            driver.create_topic(bad, json!({"num_partitions": 1})),
            &format!("create_topic({bad:?})"),
        );
        assert!(
            matches!(e.root(), Error::InvalidTopicName { .. }),
            "{bad:?}: {e:?}"
        );
        let e = err_of(driver.open_topic(bad), &format!("open_topic({bad:?})"));
        assert!(
            matches!(e.root(), Error::InvalidTopicName { .. }),
            "{bad:?}: {e:?}"
        );
        let e = err_of(driver.topic_exists(bad), &format!("topic_exists({bad:?})"));
        assert!(
            matches!(e.root(), Error::InvalidTopicName { .. }),
            "{bad:?}: {e:?}"
        );
    }
    assert_eq!(driver.list_topics().expect("list"), Vec::<String>::new());
}

/// Opening a topic that does not exist is `TopicNotFound`.
pub fn missing_topic(f: &dyn DriverFixture) {
    let driver = f.driver();
    let e = err_of(driver.open_topic("nope"), "open_topic(missing)");
    assert!(
        matches!(e.root(), Error::TopicNotFound(ref n) if n == "nope"),
        "expected TopicNotFound(\"nope\"), got {e:?}"
    );
    assert!(!driver.topic_exists("nope").expect("topic_exists"));
}

/// Creating an existing topic is `TopicExists` and leaves the topic's events intact.
pub fn existing_topic(f: &dyn DriverFixture) {
    let driver = f.driver();
    let topic = create_topic(&driver, "dup", 2);
    let producer = topic.producer().expect("producer");
    for i in 0..4u64 {
        drop(producer.push(json!({"i": i}), ()));
    }
    flush(&producer);
    for d in [driver.clone(), f.driver()] {
        let e = err_of(
            d.create_topic("dup", json!({"num_partitions": 5})),
            "create_topic(existing)",
        );
        assert!(
            matches!(e.root(), Error::TopicExists(ref n) if n == "dup"),
            "expected TopicExists(\"dup\"), got {e:?}"
        );
    }
    let topic = open_topic(&f.driver(), "dup");
    assert_eq!(topic.partitions().expect("partitions").len(), 2);
    let consumer = topic.consumer("c").expect("consumer");
    assert_eq!(pull_n(&consumer, 4).len(), 4);
    crate::util::assert_nothing_more(&consumer, "existing topic keeps its 4 events");
}

/// Invalid topic options are `InvalidOption` and create nothing.
pub fn invalid_topic_options(f: &dyn DriverFixture) {
    let driver = f.driver();
    let bad_options = [
        json!({"num_partitions": 0}),
        json!({"num_partitions": "x"}),
        json!({"num_partitions": -1}),
        json!({"num_partitions": 1.5}),
        json!({"num_partitions": 1, "validator": "nope"}),
        json!({"num_partitions": 1, "partition_selector": {"type": "nope"}}),
        json!([1, 2]),
    ];
    for (k, options) in bad_options.into_iter().enumerate() {
        let name = format!("bad{k}");
        let e = err_of(
            driver.create_topic(&name, options.clone()),
            &format!("create_topic with {options}"),
        );
        assert!(
            matches!(e.root(), Error::InvalidOption { .. }),
            "options {options}: expected InvalidOption, got {e:?}"
        );
        assert!(
            !driver.topic_exists(&name).expect("topic_exists"),
            "options {options}: a rejected topic must not exist"
        );
    }
    assert_eq!(driver.list_topics().expect("list"), Vec::<String>::new());
}

/// Invalid consumer names are `InvalidConsumerName`.
pub fn invalid_consumer_names(f: &dyn DriverFixture) {
    let driver = f.driver();
    let topic = create_topic(&driver, "t", 1);
    for bad in ["", "..", "a/b", ".hidden", "x y", "../../etc"] {
        let e = err_of(topic.consumer(bad), &format!("consumer({bad:?})"));
        assert!(
            matches!(e.root(), Error::InvalidConsumerName { .. }),
            "consumer({bad:?}): expected InvalidConsumerName, got {e:?}"
        );
    }
}

/// `push_to` a partition that does not exist fails with `InvalidPartition`.
pub fn push_to_out_of_range_partition(f: &dyn DriverFixture) {
    let driver = f.driver();
    let topic = create_topic(&driver, "t", 2);
    let producer = topic.producer().expect("producer");
    let bad = producer.push_to(2, json!({"i": 0}), ());
    let worse = producer.push_to(usize::MAX, json!({"i": 1}), ());
    let good = producer.push_to(1, json!({"i": 2}), ());
    let flushed = producer.flush();
    for (fut, index) in [(bad, 2usize), (worse, usize::MAX)] {
        let e = wait_for_err(fut, &format!("push_to({index})"));
        assert!(
            matches!(e.root(), Error::InvalidPartition { index: i, count: 2 } if *i == index),
            "push_to({index}): expected InvalidPartition {{ {index}, 2 }}, got {e:?}"
        );
    }
    let e = wait_for_err(flushed, "flush after rejected pushes");
    assert!(
        matches!(e, Error::EventsLost { count: 2, .. })
            && matches!(e.root(), Error::InvalidPartition { .. }),
        "flush must report the 2 rejected events: {e:?}"
    );
    assert_eq!(wait_for(good, "push_to(1)"), 0);
}

/// A consumer of partitions that do not exist is rejected (at creation or on pull).
pub fn consumer_partitions_out_of_range(f: &dyn DriverFixture) {
    let driver = f.driver();
    let topic = create_topic(&driver, "t", 2);
    let options = ConsumerOptions {
        partitions: Some(vec![0, 7]),
        ..Default::default()
    };
    let e = match topic.consumer_with("c", options) {
        Err(e) => e,
        Ok(consumer) => wait_for_err(consumer.pull(), "pull from partition 7"),
    };
    assert!(
        matches!(e.root(), Error::InvalidPartition { index: 7, count: 2 }),
        "expected InvalidPartition {{ 7, 2 }}, got {e:?}"
    );
}

/// Bad producer options in JSON are `InvalidOption`.
pub fn bad_producer_options_json(_f: &dyn DriverFixture) {
    for bad in [
        json!({"batch_size": 0}),
        json!({"batch_size": "big"}),
        json!({"max_num_batches": 0}),
        json!({"ordering": "random"}),
        json!({"thread_count": -1}),
        json!({"batchsize": 4}),
        json!("adaptive"),
    ] {
        let e = err_of(
            ProducerOptions::from_json(&bad),
            &format!("from_json({bad})"),
        );
        assert!(matches!(e, Error::InvalidOption { .. }), "{bad}: {e:?}");
    }
}

/// Options built in code with zero batch size or zero in-flight batches are either rejected
/// with `InvalidOption` at creation or work; they must never deadlock.
pub fn degenerate_producer_options(f: &dyn DriverFixture) {
    let driver = f.driver();
    let configs = [
        ProducerOptions {
            batch_size: BatchSize::Fixed(0),
            ..Default::default()
        },
        ProducerOptions {
            max_num_batches: 0,
            ..Default::default()
        },
    ];
    for (k, options) in configs.into_iter().enumerate() {
        let topic = create_topic(&driver, &format!("deg{k}"), 1);
        let label = format!("degenerate options {options:?}");
        let t = topic.clone();
        let accepted = within(20, &label.clone(), move || {
            match t.producer_with("p", options) {
                Err(e) => {
                    assert!(
                        matches!(e.root(), Error::InvalidOption { .. }),
                        "{label}: {e:?}"
                    );
                    false
                }
                Ok(producer) => {
                    let futs: Vec<_> = (0..20u64)
                        .map(|i| producer.push(json!({"i": i}), ()))
                        .collect();
                    flush(&producer);
                    for (i, fut) in futs.into_iter().enumerate() {
                        assert_eq!(wait_for(fut, &label), i as u64, "{label}: id of push {i}");
                    }
                    true
                }
            }
        });
        if accepted {
            let consumer = topic.consumer("c").expect("consumer");
            assert_eq!(pull_n(&consumer, 20).len(), 20);
        }
    }
}

/// An allocator returning a buffer of the wrong size fails the pull with `AllocatorSize`.
pub fn allocator_of_wrong_size(f: &dyn DriverFixture) {
    let driver = f.driver();
    let topic = create_topic(&driver, "t", 1);
    let producer = topic.producer().expect("producer");
    drop(producer.push(json!({"i": 0}), vec![5u8; 100]));
    flush(&producer);
    let allocator: DataAllocator = Arc::new(|_: &Metadata, d: &DataDescriptor| {
        diaspora_api::BytesMut::zeroed(d.size() as usize / 2)
    });
    let consumer = topic
        .consumer_with(
            "c",
            ConsumerOptions {
                data_selector: Some(diaspora_api::select_all()),
                data_allocator: Some(allocator),
                ..Default::default()
            },
        )
        .expect("consumer");
    let e = wait_for_err(consumer.pull(), "pull with a wrong-size allocator");
    assert!(
        matches!(
            e.root(),
            Error::AllocatorSize {
                expected: 100,
                got: 50
            }
        ),
        "expected AllocatorSize {{ 100, 50 }}, got {e:?}"
    );
}
