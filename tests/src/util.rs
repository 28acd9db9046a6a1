//! Helpers shared by the cases: bounded waits, topic setup, data patterns.

use std::sync::mpsc;
use std::time::Duration;

use diaspora_api::{json, Consumer, Driver, Error, Event, Future, Producer, Result, TopicHandle};

/// Upper bound of every wait that is expected to succeed (a driver that needs longer is broken
/// or hung; the case fails instead of blocking the suite).
pub const TIMEOUT_MS: i64 = 15_000;

/// A short wait used to check that nothing (more) arrives.
pub const QUIET_MS: i64 = 100;

/// Creates a topic with `partitions` partitions and opens it.
pub fn create_topic(driver: &Driver, name: &str, partitions: usize) -> TopicHandle {
    driver
        .create_topic(name, json!({ "num_partitions": partitions }))
        .unwrap_or_else(|e| panic!("create_topic({name:?}, {partitions} partitions) failed: {e}"));
    open_topic(driver, name)
}

/// Opens an existing topic.
/// A consumer named `name` that fetches all the data of every event.
pub fn data_consumer(topic: &TopicHandle, name: &str) -> Consumer {
    topic
        .consumer_with(
            name,
            diaspora_api::ConsumerOptions {
                data_selector: Some(diaspora_api::select_all()),
                ..Default::default()
            },
        )
        .expect("consumer")
}

pub fn open_topic(driver: &Driver, name: &str) -> TopicHandle {
    driver
        .open_topic(name)
        .unwrap_or_else(|e| panic!("open_topic({name:?}) failed: {e}"))
}

/// Waits (bounded) for a future that must succeed.
pub fn wait_for<T>(mut future: Future<T>, what: &str) -> T {
    match future.wait(TIMEOUT_MS) {
        Ok(Some(v)) => v,
        Ok(None) => panic!("{what}: timed out after {TIMEOUT_MS} ms"),
        Err(e) => panic!("{what}: failed: {e}"),
    }
}

/// Waits (bounded) for a future that must fail, and returns the error.
pub fn wait_for_err<T>(mut future: Future<T>, what: &str) -> Error {
    match future.wait(TIMEOUT_MS) {
        Ok(Some(_)) => panic!("{what}: succeeded, an error was expected"),
        Ok(None) => panic!("{what}: timed out after {TIMEOUT_MS} ms, an error was expected"),
        Err(e) => e,
    }
}

/// The error of a result that must be an error.
pub fn err_of<T>(r: Result<T>, what: &str) -> Error {
    match r {
        Ok(_) => panic!("{what}: succeeded, an error was expected"),
        Err(e) => e,
    }
}

/// Flushes a producer and waits for it.
pub fn flush(producer: &Producer) {
    wait_for(producer.flush(), "producer.flush()");
}

/// Pulls one event (or the end marker).
pub fn pull(consumer: &Consumer) -> Event {
    wait_for(consumer.pull(), "consumer.pull()")
}

/// Pulls exactly `n` events, none of which may be the end marker. A failure names the next id
/// of each partition so far (which partition stopped delivering).
pub fn pull_n(consumer: &Consumer, n: usize) -> Vec<Event> {
    let mut next: Vec<u64> = Vec::new();
    (0..n)
        .map(|i| {
            let context = if next.is_empty() {
                String::new()
            } else {
                format!("(next id per partition so far: {next:?}) ")
            };
            let e = pull_nth(consumer, i, n, &context);
            let p = e.partition();
            if next.len() <= p {
                next.resize(p + 1, 0);
            }
            next[p] = next[p].max(e.id() + 1);
            e
        })
        .collect()
}

/// Pulls event `i` of `n` expected, which may not be the end marker; `context` (may be empty)
/// goes into the failure message.
pub fn pull_nth(consumer: &Consumer, i: usize, n: usize, context: &str) -> Event {
    let e = wait_for(
        consumer.pull(),
        &format!("{context}consumer.pull() of event {i} of {n}"),
    );
    assert!(
        !e.is_no_more_events(),
        "{context}got the end marker after {i} events, {n} were expected"
    );
    e
}

/// Pulls until the end marker; fails if more than `max` events come first.
pub fn drain(consumer: &Consumer, max: usize) -> Vec<Event> {
    let mut out = Vec::new();
    loop {
        let e = pull(consumer);
        if e.is_no_more_events() {
            return out;
        }
        assert!(
            out.len() < max,
            "more than {max} events before the end marker"
        );
        out.push(e);
    }
}

/// Checks that no event arrives within [`QUIET_MS`].
pub fn assert_nothing_more(consumer: &Consumer, context: &str) {
    let mut f = consumer.pull();
    match f.wait(QUIET_MS) {
        Ok(None) => {}
        Ok(Some(e)) => panic!("{context}: unexpected extra event {e:?}"),
        Err(e) => panic!("{context}: pull failed: {e}"),
    }
}

/// An unsigned integer field of an event's metadata.
pub fn meta_u64(event: &Event, key: &str) -> u64 {
    let v = event
        .metadata()
        .json()
        .unwrap_or_else(|e| panic!("metadata of {event:?} is not JSON: {e}"));
    v.get(key)
        .and_then(|x| x.as_u64())
        .unwrap_or_else(|| panic!("metadata {v} has no unsigned field {key:?}"))
}

/// Deterministic, event-specific bytes (so misplaced or shifted data is detected).
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| {
            let x = i
                .wrapping_mul(31)
                .wrapping_add(seed.wrapping_mul(131))
                .wrapping_add(i >> 8);
            (x % 251) as u8
        })
        .collect()
}

/// Runs `f` on another thread and fails if it does not finish within `secs` seconds (for
/// operations that might deadlock in a broken driver).
pub fn within<T: Send + 'static>(
    secs: u64,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        let r = f();
        let _ = tx.send(());
        r
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(()) => handle.join().unwrap_or_else(|_| panic!("{what}: panicked")),
        Err(mpsc::RecvTimeoutError::Disconnected) => match handle.join() {
            Ok(v) => v,
            Err(p) => std::panic::resume_unwind(p),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what}: did not finish within {secs} s (deadlock?)")
        }
    }
}
