//! `mark_as_complete` racing with producers (threads of this process and a child process): once
//! complete is marked no append succeeds, and a consumer's end-of-stream comes only after every
//! stored event. Many rounds, each with real threads, files and processes.

use std::path::Path;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diaspora_api::{json, Driver, Error, TopicHandle};

const ROOT_ENV: &str = "DIASPORA_RACE_CHILD_ROOT";

fn driver(root: &Path) -> Driver {
    diaspora_driver_files::register();
    Driver::new("files", json!({"root_path": root})).expect("driver")
}

/// Pushes into `t` until a push fails (the topic is complete) or `deadline`.
fn produce_until_refused(t: &TopicHandle, deadline: Instant) -> u64 {
    let p = match t.producer() {
        Ok(p) => p,
        Err(Error::TopicComplete(_)) => return 0,
        Err(e) => panic!("producer: {e}"),
    };
    let mut stored = 0;
    let mut seq = 0u64;
    while Instant::now() < deadline {
        let futures: Vec<_> = (0..8)
            .map(|_| {
                seq += 1;
                p.push(json!({"seq": seq}), vec![7u8; 64])
            })
            .collect();
        let _ = p.flush().get();
        let mut refused = false;
        for f in futures {
            match f.get() {
                Ok(_) => stored += 1,
                Err(e) if matches!(e.root(), Error::TopicComplete(_)) => refused = true,
                Err(e) => panic!("push failed for another reason: {e:?}"),
            }
        }
        if refused {
            break;
        }
    }
    stored
}

/// Pulls until end-of-stream; returns the number of events seen before it.
fn consume_to_end(t: &TopicHandle, name: &str, deadline: Instant) -> u64 {
    let c = t.consumer(name).expect("consumer");
    let mut n = 0;
    loop {
        assert!(
            Instant::now() < deadline,
            "no end-of-stream before the deadline"
        );
        match c.pull().wait(100) {
            Ok(Some(e)) if e.is_no_more_events() => return n,
            Ok(Some(_)) => n += 1,
            Ok(None) => {}
            Err(e) => panic!("pull: {e}"),
        }
    }
}

/// Events stored in the topic, counted from its files.
fn stored(t: &TopicHandle) -> u64 {
    t.partitions()
        .expect("partitions")
        .iter()
        .map(|p| p.info["num_events"].as_u64().expect("num_events"))
        .sum()
}

#[test]
fn no_event_is_stored_after_a_consumer_saw_the_end_of_a_completed_topic() {
    for round in 0..40u64 {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = driver(dir.path());
        d.create_topic("t", json!({"num_partitions": 2}))
            .expect("create");
        let deadline = Instant::now() + Duration::from_secs(60);
        let started = Arc::new(AtomicBool::new(false));
        let producers: Vec<_> = (0..2)
            .map(|_| {
                let t = d.open_topic("t").expect("open");
                let started = started.clone();
                std::thread::spawn(move || {
                    started.store(true, Ordering::SeqCst);
                    produce_until_refused(&t, deadline)
                })
            })
            .collect();
        let t = d.open_topic("t").expect("open");
        let consumer = {
            let t = d.open_topic("t").expect("open");
            std::thread::spawn(move || consume_to_end(&t, "live", deadline))
        };
        while !started.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        std::thread::sleep(Duration::from_micros(200 * (round % 10)));
        t.mark_as_complete().expect("complete");
        let seen = consumer.join().expect("consumer thread");
        let acked: u64 = producers
            .into_iter()
            .map(|h| h.join().expect("producer thread"))
            .sum();
        let total = stored(&t);
        assert_eq!(
            seen,
            total,
            "round {round}: {} event(s) stored after the consumer's end-of-stream",
            total.saturating_sub(seen)
        );
        assert_eq!(
            acked, total,
            "round {round}: stored events whose push failed"
        );
        // A late producer is refused, and nothing more gets in.
        assert!(matches!(t.producer(), Err(Error::TopicComplete(_))));
        assert_eq!(consume_to_end(&t, "after", deadline), total);
    }
}

/// Not a test on its own: the child producer process. Without the environment it returns.
#[test]
#[ignore = "helper re-executed by other tests"]
fn child_pushes_until_refused() {
    let Ok(root) = std::env::var(ROOT_ENV) else {
        return;
    };
    // Two producers (threads of the child), as in the in-process test.
    let d = driver(Path::new(&root));
    let deadline = Instant::now() + Duration::from_secs(60);
    let producers: Vec<_> = (0..2)
        .map(|_| {
            let t = d.open_topic("t").expect("open");
            std::thread::spawn(move || produce_until_refused(&t, deadline))
        })
        .collect();
    let n: u64 = producers
        .into_iter()
        .map(|h| h.join().expect("producer thread"))
        .sum();
    println!("child stored {n}");
}

fn spawn_child(root: &Path) -> Child {
    Command::new(std::env::current_exe().expect("exe"))
        .args([
            "--exact",
            "child_pushes_until_refused",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROOT_ENV, root)
        .spawn()
        .expect("spawn child")
}

#[test]
fn a_producer_process_racing_with_complete_stores_nothing_after_the_end() {
    for round in 0..20u64 {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = driver(dir.path());
        d.create_topic("t", json!({"num_partitions": 2}))
            .expect("create");
        let t = d.open_topic("t").expect("open");
        let deadline = Instant::now() + Duration::from_secs(60);
        let consumer = {
            let t = d.open_topic("t").expect("open");
            std::thread::spawn(move || consume_to_end(&t, "live", deadline))
        };
        let mut child = spawn_child(dir.path());
        // Let the child commit something (however loaded the machine), then complete while
        // it is in full swing.
        while stored(&t) < 10 + 10 * (round % 5) {
            assert!(Instant::now() < deadline, "child stored nothing");
            assert!(
                child.try_wait().expect("poll").is_none(),
                "child exited early"
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        t.mark_as_complete().expect("complete");
        let seen = consumer.join().expect("consumer thread");
        assert!(child.wait().expect("wait child").success(), "child failed");
        let total = stored(&t);
        assert_eq!(
            seen,
            total,
            "round {round}: {} event(s) stored after end-of-stream",
            total.saturating_sub(seen)
        );
    }
}
