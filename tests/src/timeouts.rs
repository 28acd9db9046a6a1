//! Timeouts: `wait(ms)` returns `Ok(None)` when nothing is there yet, and the same future can
//! be waited on again until it completes, exactly once.

use std::time::{Duration, Instant};

use diaspora_api::{json, Error};

use crate::util::{create_topic, flush, meta_u64, TIMEOUT_MS};
use crate::DriverFixture;

/// A pull on an empty topic times out (repeatedly), then succeeds on a retry of the same
/// future once an event is produced.
pub fn pull_timeout_then_retry_succeeds(f: &dyn DriverFixture) {
    let driver = f.driver();
    let topic = create_topic(&driver, "idle", 1);
    let consumer = topic.consumer("c").expect("consumer");
    let mut fut = consumer.pull();
    for attempt in 0..2 {
        let start = Instant::now();
        let r = fut.wait(50);
        let elapsed = start.elapsed();
        assert!(
            matches!(r, Ok(None)),
            "attempt {attempt}: pull on an empty topic must time out, got {r:?}"
        );
        assert!(
            elapsed >= Duration::from_millis(45),
            "attempt {attempt}: wait(50) returned after {elapsed:?}"
        );
        assert!(
            elapsed < Duration::from_secs(2),
            "attempt {attempt}: wait(50) took {elapsed:?}"
        );
    }
    assert!(!fut.is_ready(), "nothing was produced yet");

    let producer = topic.producer().expect("producer");
    drop(producer.push(json!({"late": 7}), ()));
    flush(&producer);

    let deadline = Instant::now() + Duration::from_millis(TIMEOUT_MS as u64);
    let event = loop {
        match fut.wait(50) {
            Ok(Some(e)) => break e,
            Ok(None) if Instant::now() < deadline => continue,
            Ok(None) => panic!("retried pull never saw the produced event"),
            Err(e) => panic!("retried pull failed: {e}"),
        }
    };
    assert_eq!(event.id(), 0);
    assert_eq!(meta_u64(&event, "late"), 7);
    assert!(matches!(fut.wait(0), Err(Error::FutureConsumed)));
}

/// `wait(0)` on an empty topic returns at once with `Ok(None)`.
pub fn wait_zero_on_empty_topic(f: &dyn DriverFixture) {
    let driver = f.driver();
    let topic = create_topic(&driver, "idle", 2);
    let consumer = topic.consumer("c").expect("consumer");
    let mut fut = consumer.pull();
    let start = Instant::now();
    let r = fut.wait(0);
    assert!(matches!(r, Ok(None)), "wait(0) on empty topic: got {r:?}");
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "wait(0) took {:?}",
        start.elapsed()
    );
}

/// Push and pull futures return their value once; later waits fail with `FutureConsumed`.
pub fn future_is_consumed_once(f: &dyn DriverFixture) {
    let driver = f.driver();
    let topic = create_topic(&driver, "once", 1);
    let producer = topic.producer().expect("producer");
    let mut push = producer.push(json!({"a": 1}), ());
    flush(&producer);
    assert!(push.is_ready(), "push future must be ready after flush");
    assert_eq!(push.wait(0).expect("push result"), Some(0));
    assert!(matches!(push.wait(0), Err(Error::FutureConsumed)));

    let consumer = topic.consumer("c").expect("consumer");
    let mut pull = consumer.pull();
    let e = pull
        .wait(TIMEOUT_MS)
        .expect("pull")
        .expect("event within timeout");
    assert_eq!(e.id(), 0);
    assert!(matches!(pull.wait(0), Err(Error::FutureConsumed)));
}

/// `is_ready()` of a pending pull: false while the topic is empty, true (within the bound) once
/// an event is stored, after which `wait(0)` returns it without blocking.
pub fn pending_pull_becomes_ready(f: &dyn DriverFixture) {
    let driver = f.driver();
    let topic = create_topic(&driver, "ready", 1);
    let consumer = topic.consumer("c").expect("consumer");
    let mut fut = consumer.pull();
    assert!(!fut.is_ready(), "nothing to pull yet");
    assert!(fut.wait(0).expect("no error").is_none());
    assert!(!fut.is_ready(), "still nothing to pull");
    let producer = topic.producer().expect("producer");
    drop(producer.push(json!({"i": 7}), ()));
    flush(&producer);
    let deadline = Instant::now() + Duration::from_millis(TIMEOUT_MS as u64);
    while !fut.is_ready() {
        assert!(
            Instant::now() < deadline,
            "a pull with an event to deliver never became ready"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let e = fut
        .wait(0)
        .expect("no error")
        .expect("a ready future returns without waiting");
    assert_eq!(meta_u64(&e, "i"), 7);
}
