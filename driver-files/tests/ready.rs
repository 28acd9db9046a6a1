//! `is_ready()` of a pending pull reads ahead: on the files driver, where a flushed event is on
//! disk, the first call after the flush (or after the topic is marked complete) says ready.

use std::path::Path;

use diaspora_api::{json, Driver, TopicHandle};

fn topic(root: &Path) -> TopicHandle {
    diaspora_driver_files::register();
    let d = Driver::new("files", json!({"root_path": root})).expect("driver");
    d.create_topic("t", json!({})).expect("create");
    d.open_topic("t").expect("open")
}

#[test]
fn a_pending_pull_is_ready_at_the_first_check_after_a_flush() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = topic(dir.path());
    let c = t.consumer("c").expect("consumer");
    let mut fut = c.pull();
    assert!(!fut.is_ready(), "nothing yet");
    let p = t.producer().expect("producer");
    drop(p.push(json!({"i": 1}), ()));
    p.flush().get().expect("flush");
    assert!(
        fut.is_ready(),
        "the flushed event is read by the check itself"
    );
    let e = fut.wait(0).expect("no error").expect("ready");
    assert_eq!(e.metadata().json().expect("json")["i"], 1);
}

#[test]
fn a_pending_pull_is_ready_at_the_first_check_after_the_topic_completes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = topic(dir.path());
    let c = t.consumer("c").expect("consumer");
    let mut fut = c.pull();
    assert!(!fut.is_ready(), "nothing yet");
    t.mark_as_complete().expect("complete");
    assert!(fut.is_ready(), "the end of the stream is ready at once");
    let e = fut.wait(0).expect("no error").expect("ready");
    assert!(e.is_no_more_events());
}
