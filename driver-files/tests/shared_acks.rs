//! Consumers sharing a name on different partitions (one consumer per MPI rank: same name,
//! `partitions: [rank]`) keep each other's acknowledgements, in one process and in several real
//! processes: the test binary re-executes itself as a consumer child (see `child_consumer`).

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use diaspora_api::{json, BatchSize, Consumer, ConsumerOptions, Driver, Event, TopicHandle};

const ROOT_ENV: &str = "DIASPORA_ACKS_CHILD_ROOT";
const PARTITION_ENV: &str = "DIASPORA_ACKS_CHILD_PARTITION";
const COUNT_ENV: &str = "DIASPORA_ACKS_CHILD_COUNT";
/// Bound of every wait for one event.
const PULL_MS: i64 = 30_000;

fn driver(root: &Path) -> Driver {
    diaspora_driver_files::register();
    Driver::new("files", json!({"root_path": root})).expect("driver")
}

fn rank_consumer(t: &TopicHandle, name: &str, partition: usize) -> Consumer {
    t.consumer_with(
        name,
        ConsumerOptions {
            partitions: Some(vec![partition]),
            ..Default::default()
        },
    )
    .expect("consumer")
}

fn pull(c: &Consumer) -> Event {
    let e = c
        .pull()
        .wait(PULL_MS)
        .expect("pull")
        .expect("an event within the deadline");
    assert!(!e.is_no_more_events(), "unexpected end of stream");
    e
}

/// A topic of `partitions` partitions with `per_partition` events in each.
fn topic_with_events(d: &Driver, partitions: usize, per_partition: u64) -> TopicHandle {
    d.create_topic("t", json!({"num_partitions": partitions}))
        .expect("create");
    let t = d.open_topic("t").expect("open");
    let p = t.producer().expect("producer");
    for partition in 0..partitions {
        for seq in 0..per_partition {
            drop(p.push_to(partition, json!({"p": partition, "seq": seq}), ()));
        }
    }
    p.flush().get().expect("flush");
    t
}

/// Pulls `count` events and acknowledges each one; returns the id of the last.
fn pull_and_ack(c: &Consumer, partition: usize, count: u64) -> u64 {
    let mut last = None;
    for _ in 0..count {
        let e = pull(c);
        assert_eq!(e.partition(), partition);
        e.acknowledge().expect("acknowledge");
        last = Some(e.id());
    }
    last.expect("at least one event")
}

#[test]
fn same_name_consumers_in_one_process_keep_each_others_acks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = driver(dir.path());
    let t = topic_with_events(&d, 3, 20);
    let ranks: Vec<Consumer> = (0..3).map(|r| rank_consumer(&t, "rank", r)).collect();
    // Interleaved acknowledgements: each one rewrites the shared file.
    let acked = [7u64, 3, 11];
    for round in 0..11 {
        for (r, c) in ranks.iter().enumerate() {
            if round < acked[r] {
                pull_and_ack(c, r, 1);
            }
        }
    }
    drop(ranks);
    drop(t);
    // Restart: each rank resumes right after its own last acknowledgement.
    let t = driver(dir.path()).open_topic("t").expect("reopen");
    for (r, &n) in acked.iter().enumerate() {
        let e = pull(&rank_consumer(&t, "rank", r));
        assert_eq!(
            (e.partition(), e.id()),
            (r, n),
            "rank {r} resumes after its acks"
        );
    }
    // A consumer of the same name on every partition sees all three positions.
    // (one event per refill, so three pulls visit the three partitions)
    let all = t
        .consumer_with(
            "rank",
            ConsumerOptions {
                batch_size: BatchSize::Fixed(1),
                ..Default::default()
            },
        )
        .expect("consumer");
    let mut firsts: Vec<(usize, u64)> = (0..3)
        .map(|_| pull(&all))
        .map(|e| (e.partition(), e.id()))
        .collect();
    firsts.sort();
    assert_eq!(firsts, vec![(0, 7), (1, 3), (2, 11)]);
}

#[test]
fn an_older_consumer_of_the_same_partition_never_moves_acks_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = driver(dir.path());
    let t = topic_with_events(&d, 2, 10);
    let ahead = rank_consumer(&t, "c", 0);
    let behind = rank_consumer(&t, "c", 0);
    pull_and_ack(&ahead, 0, 6);
    pull_and_ack(&behind, 0, 2); // acknowledges ids 0 and 1, already covered
    drop((ahead, behind));
    let e = pull(&rank_consumer(
        &driver(dir.path()).open_topic("t").expect("open"),
        "c",
        0,
    ));
    assert_eq!(e.id(), 6);
}

/// Not a test on its own: the body of the child processes. Without the environment it returns.
#[test]
#[ignore = "helper re-executed by other tests"]
fn child_consumer() {
    let Ok(root) = std::env::var(ROOT_ENV) else {
        return;
    };
    let partition: usize = std::env::var(PARTITION_ENV)
        .expect("partition")
        .parse()
        .expect("partition");
    let count: u64 = std::env::var(COUNT_ENV)
        .expect("count")
        .parse()
        .expect("count");
    let t = driver(Path::new(&root)).open_topic("t").expect("open");
    let c = rank_consumer(&t, "rank", partition);
    pull_and_ack(&c, partition, count);
}

fn spawn_child(root: &Path, partition: usize, count: u64) -> Child {
    Command::new(std::env::current_exe().expect("exe"))
        .args([
            "--exact",
            "child_consumer",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROOT_ENV, root)
        .env(PARTITION_ENV, partition.to_string())
        .env(COUNT_ENV, count.to_string())
        .spawn()
        .expect("spawn child")
}

fn wait_child(mut child: Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(status) = child.try_wait().expect("poll child") {
            assert!(status.success(), "{what} failed: {status}");
            return;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish in 90 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn same_name_consumers_in_separate_processes_keep_each_others_acks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = driver(dir.path());
    let acked = [400u64, 250, 333, 100];
    topic_with_events(&d, acked.len(), 500);
    // One process per rank, all acknowledging one event at a time, concurrently.
    let children: Vec<Child> = acked
        .iter()
        .enumerate()
        .map(|(r, &n)| spawn_child(dir.path(), r, n))
        .collect();
    for (r, child) in children.into_iter().enumerate() {
        wait_child(child, &format!("rank {r}"));
    }
    // Restart each rank (a fresh driver, as a new job would): it resumes after its own acks.
    let t = driver(dir.path()).open_topic("t").expect("reopen");
    for (r, &n) in acked.iter().enumerate() {
        let e = pull(&rank_consumer(&t, "rank", r));
        assert_eq!(
            (e.partition(), e.id()),
            (r, n),
            "rank {r} resumes after its acks"
        );
    }
    // A second round in new processes continues from there.
    let more = [50u64, 50, 50, 50];
    let children: Vec<Child> = more
        .iter()
        .enumerate()
        .map(|(r, &n)| spawn_child(dir.path(), r, n))
        .collect();
    for (r, child) in children.into_iter().enumerate() {
        wait_child(child, &format!("rank {r}, second round"));
    }
    let t = driver(dir.path()).open_topic("t").expect("reopen");
    for r in 0..acked.len() {
        let e = pull(&rank_consumer(&t, "rank", r));
        assert_eq!(
            e.id(),
            acked[r] + more[r],
            "rank {r} after the second round"
        );
    }
}

#[test]
fn reset_consumer_restarts_a_name_from_the_first_event_and_names_its_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = driver(dir.path());
    let t = topic_with_events(&d, 2, 3);
    let c = t.consumer("c").expect("consumer");
    for _ in 0..6 {
        pull(&c).acknowledge().expect("ack");
    }
    drop(c);
    let path = diaspora_driver_files::acks::reset_consumer(dir.path(), "t", "c").expect("reset");
    assert_eq!(path, dir.path().join("t").join("consumers").join("c.acks"));
    assert_eq!(
        diaspora_driver_files::acks::read(&path, 2).expect("read"),
        [0, 0]
    );
    let c = t.consumer("c").expect("consumer again");
    let e = pull(&c);
    assert_eq!(e.id(), 0, "the first event again");
    assert!(diaspora_driver_files::acks::reset_consumer(dir.path(), "no-such-topic", "c").is_err());
    assert!(diaspora_driver_files::acks::reset_consumer(dir.path(), "t", "bad/name").is_err());
}
