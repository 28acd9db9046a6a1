//! Issue 5 item 1: `flush()` reports every event accepted by `push` since the previous flush
//! that was not stored, even when its batch failed before `flush` was called and its push
//! future was never looked at.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use diaspora_api::{json, Driver, Error, EventId, Future, Producer};

const TIMEOUT: Duration = Duration::from_secs(30);

fn driver(root: &Path) -> Driver {
    diaspora_driver_files::register();
    Driver::new("files", json!({"root_path": root})).expect("driver")
}

/// Waits (bounded) until every future is ready, without taking any result: the failures must
/// have happened before `flush` is called, which is the case that used to be lost.
fn until_all_ready(futures: &[Future<EventId>]) {
    let deadline = Instant::now() + TIMEOUT;
    while !futures.iter().all(|f| f.is_ready()) {
        assert!(Instant::now() < deadline, "push futures still pending");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn flush_result(producer: &Producer) -> diaspora_api::Result<()> {
    match producer.flush().wait(TIMEOUT.as_millis() as i64) {
        Ok(Some(())) => Ok(()),
        Ok(None) => panic!("flush hung"),
        Err(e) => Err(e),
    }
}

fn stored_count(driver: &Driver) -> u64 {
    let consumer = driver
        .open_topic("t")
        .expect("open")
        .consumer("count")
        .expect("consumer");
    let mut n = 0;
    while let Some(e) = consumer.pull().wait(300).expect("pull") {
        if e.is_no_more_events() {
            break;
        }
        assert_eq!(e.id(), n, "stored events are contiguous");
        n += 1;
    }
    n
}

/// A 20 MiB tmpfs mounted on a temporary directory, unmounted when dropped (also when the test
/// fails).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None` (with a message) when not root or when mounting is not permitted here.
    fn mount() -> Option<Self> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED: mounting a small tmpfs needs root");
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=20m", "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("run mount");
        if !out.status.success() {
            eprintln!(
                "SKIPPED: cannot mount a tmpfs: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return None;
        }
        Some(Tmpfs { dir })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn flush_reports_events_lost_to_a_full_file_system() {
    let Some(fs) = Tmpfs::mount() else { return };
    let d = driver(fs.dir.path());
    d.create_topic("t", json!({})).expect("create");
    let producer = d
        .open_topic("t")
        .expect("open")
        .producer()
        .expect("producer");
    // 40 MiB into 20 MiB. The futures are only kept to know when every batch is done.
    let pushes: Vec<_> = (0..40u8)
        .map(|i| producer.push(json!({ "i": i }), vec![i; 1 << 20]))
        .collect();
    until_all_ready(&pushes);
    let e = flush_result(&producer).expect_err("flush must report the lost events");
    let Error::EventsLost { count, .. } = &e else {
        panic!("expected EventsLost, got {e:?}")
    };
    let count = *count;
    assert!(
        e.to_string().contains(&format!("{count} event(s)")),
        "the message names the count: {e}"
    );
    assert!(
        matches!(e.root(), Error::Io { source, .. } if source.raw_os_error() == Some(libc::ENOSPC)),
        "the reason is the full file system: {e:?}"
    );
    let failed = pushes.into_iter().filter_map(|f| f.get().err()).count() as u64;
    assert_eq!(count, failed, "flush counts exactly the failed pushes");
    assert!(count > 0);
    assert_eq!(
        stored_count(&d) + count,
        40,
        "every event is either stored or counted as lost"
    );
    // Reported once: nothing was lost since.
    flush_result(&producer).expect("second flush");
    drop(producer);
    drop(d);
    drop(fs);
}

#[test]
fn flush_reports_events_pushed_after_the_topic_was_marked_complete() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = driver(dir.path());
    d.create_topic("t", json!({})).expect("create");
    let topic = d.open_topic("t").expect("open");
    let producer = topic.producer().expect("producer");
    for i in 0..3 {
        drop(producer.push(json!({ "i": i }), ()));
    }
    flush_result(&producer).expect("flush before completion");
    topic.mark_as_complete().expect("complete");
    let late: Vec<_> = (0..5)
        .map(|i| producer.push(json!({ "late": i }), ()))
        .collect();
    until_all_ready(&late);
    let e = flush_result(&producer).expect_err("flush must report the rejected events");
    assert!(
        matches!(e, Error::EventsLost { count: 5, .. }),
        "expected 5 lost events, got {e:?}"
    );
    assert!(matches!(e.root(), Error::TopicComplete(_)), "{e:?}");
    assert!(e.to_string().contains("5 event(s)"), "{e}");
    assert_eq!(stored_count(&d), 3);
}
