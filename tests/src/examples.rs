//! The getting-started examples of the user guide (seed 003), as tests.

use diaspora_api::{json, DataView, Metadata};

use crate::util::{assert_nothing_more, create_topic, open_topic, pull, wait_for};
use crate::DriverFixture;

/// The C++ producer (100 events `{"x":42,"name":"bob"}`, no data, one flush), then the consumer
/// (`my_consumer`, 100 pulls, acknowledge every 10th), each with its own driver instance; a
/// restarted `my_consumer` has nothing left to read.
pub fn seed_producer_and_consumer(f: &dyn DriverFixture) {
    create_topic(&f.driver(), "my_topic", 1);
    {
        // producer.cpp
        let driver = f.driver();
        let topic = open_topic(&driver, "my_topic");
        let producer = topic.producer().expect("producer");
        for _ in 0..100 {
            let metadata = Metadata::from_json_str(r#"{"x":42,"name":"bob"}"#).expect("JSON");
            let future = producer.push(metadata, DataView::new());
            drop(future); // auto event_id = future.wait(-1).value();
        }
        let mut flushed = producer.flush();
        flushed
            .wait(-1)
            .expect("flush")
            .expect("no timeout with -1");
    }
    {
        // consumer.cpp
        let driver = f.driver();
        let topic = open_topic(&driver, "my_topic");
        let consumer = topic.consumer("my_consumer").expect("consumer");
        for i in 0..100u64 {
            let mut pulled = consumer.pull();
            let event = pulled
                .wait(crate::util::TIMEOUT_MS)
                .expect("pull")
                .expect("event");
            assert_eq!(event.id(), i);
            assert_eq!(
                event.metadata().json().expect("JSON"),
                &json!({"x": 42, "name": "bob"})
            );
            assert!(event.data().is_empty(), "data is not pulled by default");
            if (i + 1) % 10 == 0 {
                event.acknowledge().expect("acknowledge");
            }
        }
    }
    let driver = f.driver();
    let consumer = open_topic(&driver, "my_topic")
        .consumer("my_consumer")
        .expect("consumer");
    assert_nothing_more(&consumer, "my_consumer acknowledged all 100 events");
    let other = open_topic(&driver, "my_topic")
        .consumer("someone_else")
        .expect("consumer");
    assert_eq!(pull(&other).id(), 0);
}

/// The Python producer: metadata `{"x": i*42, "name": "bob"}`, empty bytes, waiting on each
/// push future (which must then resolve to the event id without an explicit flush).
pub fn seed_python_producer_waits_each_future(f: &dyn DriverFixture) {
    let driver = f.driver();
    let topic = create_topic(&driver, "my_topic", 1);
    let producer = topic.producer().expect("producer");
    for i in 0..100u64 {
        let future = producer.push(json!({"x": i * 42, "name": "bob"}), Vec::<u8>::new());
        let event_id = wait_for(future, &format!("push {i} without flush"));
        assert_eq!(event_id, i);
    }
    let consumer = topic.consumer("my_consumer").expect("consumer");
    for i in 0..100u64 {
        let event = pull(&consumer);
        assert_eq!(event.id(), i);
        assert_eq!(
            event.metadata().json().expect("JSON"),
            &json!({"x": i * 42, "name": "bob"})
        );
    }
}
