//! Producer/consumer options (batch size, in-flight batches, ordering, thread pools) change
//! performance, never what is delivered; flush resolves push futures to sequential ids.

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};

use diaspora_api::{
    json, BatchSize, ConsumerOptions, EventId, Future, Job, Ordering, ProducerOptions, ThreadPool,
    ThreadPoolBackend, TopicHandle,
};

use crate::util::{
    assert_nothing_more, create_topic, flush, meta_u64, pattern, pull_n, pull_nth, wait_for,
};
use crate::DriverFixture;

/// Pushes `n` events (`{"s": s}`, data `pattern(s, 16)`) with `options` and checks a default
/// consumer gets them all exactly once with contiguous ids; with strict ordering, in push order
/// per partition.
fn check_producer(topic: &TopicHandle, options: ProducerOptions, n: u64, label: &str) {
    let strict = options.ordering == Ordering::Strict;
    let producer = topic.producer_with("p", options).expect("producer");
    let futures: Vec<_> = (0..n)
        .map(|s| producer.push(json!({"s": s}), pattern(s, 16)))
        .collect();
    flush(&producer);
    for (s, fut) in futures.into_iter().enumerate() {
        wait_for(fut, &format!("{label}: push {s}"));
    }
    let consumer = topic.consumer("c").expect("consumer");
    let events = pull_n(&consumer, n as usize);
    assert_nothing_more(&consumer, label);
    let mut seen = BTreeSet::new();
    let mut next = [0u64; 2];
    let mut last = [None::<u64>; 2];
    for e in &events {
        let s = meta_u64(e, "s");
        assert!(seen.insert(s), "{label}: event {s} received twice");
        let p = e.partition();
        assert_eq!(e.id(), next[p], "{label}: partition {p} ids contiguous");
        next[p] += 1;
        if strict {
            assert!(
                !matches!(last[p], Some(l) if l >= s),
                "{label}: strict ordering violated in partition {p}"
            );
        }
        last[p] = Some(s);
    }
    assert_eq!(seen.len() as u64, n, "{label}: all events delivered");
}

/// Fixed/adaptive batches, 1 or 8 batches in flight, strict/loose, inline or 2-thread pools.
pub fn producer_option_matrix(f: &dyn DriverFixture) {
    let driver = f.driver();
    let configs = [
        (
            BatchSize::Fixed(7),
            1,
            Ordering::Strict,
            Some(ThreadPool::inline()),
        ),
        (
            BatchSize::Fixed(7),
            1,
            Ordering::Strict,
            Some(ThreadPool::new(2)),
        ),
        (
            BatchSize::Fixed(1),
            8,
            Ordering::Loose,
            Some(ThreadPool::new(2)),
        ),
        (
            BatchSize::Adaptive,
            1,
            Ordering::Loose,
            Some(ThreadPool::inline()),
        ),
        (
            BatchSize::Adaptive,
            8,
            Ordering::Strict,
            Some(driver.make_thread_pool(2)),
        ),
        (BatchSize::Fixed(64), 2, Ordering::Strict, None),
    ];
    for (k, (batch_size, max_num_batches, ordering, thread_pool)) in configs.into_iter().enumerate()
    {
        let label = format!("config {k}: {batch_size:?}, {max_num_batches} batches, {ordering:?}");
        let topic = create_topic(&driver, &format!("prod{k}"), 2);
        let options = ProducerOptions {
            batch_size,
            max_num_batches,
            ordering,
            thread_pool,
        };
        check_producer(&topic, options, 1_000, &label);
    }
}

/// Consumer batch sizes, a single prefetched batch, inline or 2-thread pools, with data.
pub fn consumer_option_matrix(f: &dyn DriverFixture) {
    const N: u64 = 600;
    let driver = f.driver();
    let topic = create_topic(&driver, "cons", 3);
    let producer = topic.producer().expect("producer");
    for s in 0..N {
        drop(producer.push(json!({"s": s}), pattern(s, 32)));
    }
    flush(&producer);
    let configs = [
        (BatchSize::Fixed(1), 1, Some(ThreadPool::inline())),
        (BatchSize::Fixed(3), 1, Some(ThreadPool::new(2))),
        (BatchSize::Adaptive, 1, Some(ThreadPool::inline())),
        (BatchSize::Fixed(100), 4, Some(ThreadPool::new(2))),
        (BatchSize::Adaptive, 2, None),
    ];
    for (k, (batch_size, max_num_batches, thread_pool)) in configs.into_iter().enumerate() {
        let label = format!("consumer config {k}: {batch_size:?}, {max_num_batches} batches");
        let consumer = topic
            .consumer_with(
                &format!("c{k}"),
                ConsumerOptions {
                    batch_size,
                    max_num_batches,
                    thread_pool,
                    data_selector: Some(diaspora_api::select_all()),
                    ..Default::default()
                },
            )
            .expect("consumer");
        let mut seen = BTreeSet::new();
        let mut next = [0u64; 3];
        // Pulled one by one with the configuration in the message (not `pull_n`): a stall
        // says which configuration and partition it hit.
        for i in 0..N as usize {
            let context = format!("{label}, next ids per partition {next:?}: ");
            let e = pull_nth(&consumer, i, N as usize, &context);
            let s = meta_u64(&e, "s");
            assert!(seen.insert(s), "{label}: event {s} twice");
            assert_eq!(e.id(), next[e.partition()], "{label}: ids in order");
            next[e.partition()] += 1;
            assert!(
                e.data().to_vec() == pattern(s, 32),
                "{label}: data of event {s}"
            );
        }
        assert_nothing_more(&consumer, &label);
    }
}

/// Options parsed with `ProducerOptions::from_json` / `ConsumerOptions::from_json` work.
pub fn producer_options_from_json(f: &dyn DriverFixture) {
    let driver = f.driver();
    let topic = create_topic(&driver, "json", 2);
    let options = ProducerOptions::from_json(&json!({
        "batch_size": 16, "max_num_batches": 2, "ordering": "loose", "thread_count": 2
    }))
    .expect("valid producer options");
    check_producer(&topic, options, 500, "producer options from JSON");
    let consumer = topic
        .consumer_with(
            "from_json",
            ConsumerOptions::from_json(&json!({
                "batch_size": 8, "max_num_batches": 1, "thread_count": 1,
                "partitions": [1], "data": "all"
            }))
            .expect("valid consumer options"),
        )
        .expect("consumer");
    for e in pull_n(&consumer, 250) {
        assert_eq!(e.partition(), 1, "consumer restricted to partition 1");
        assert!(
            e.data().to_vec() == pattern(meta_u64(&e, "s"), 16),
            "data: all"
        );
    }
    assert_nothing_more(&consumer, "partition 1 has 250 events");
}

/// In a 1-partition topic, after flush every push future is ready with id = push index.
pub fn flush_resolves_push_futures_single_partition(f: &dyn DriverFixture) {
    let driver = f.driver();
    let topic = create_topic(&driver, "ids", 1);
    let producer = topic
        .producer_with(
            "p",
            ProducerOptions {
                batch_size: BatchSize::Fixed(9),
                ..Default::default()
            },
        )
        .expect("producer");
    let futures: Vec<_> = (0..100u64)
        .map(|i| producer.push(json!({"i": i}), ()))
        .collect();
    flush(&producer);
    for (i, mut fut) in futures.into_iter().enumerate() {
        assert!(
            fut.is_ready(),
            "push future {i} must be ready once flush completed"
        );
        let id = fut.wait(0).expect("push succeeded");
        assert_eq!(id, Some(i as u64), "push {i}: event id");
    }
}

/// With `push_to`, ids are sequential per partition.
pub fn flush_resolves_push_futures_per_partition(f: &dyn DriverFixture) {
    let driver = f.driver();
    let topic = create_topic(&driver, "ids", 3);
    let producer = topic.producer().expect("producer");
    let futures: Vec<_> = (0..90u64)
        .map(|i| producer.push_to((i % 3) as usize, json!({"i": i}), ()))
        .collect();
    flush(&producer);
    for (i, mut fut) in futures.into_iter().enumerate() {
        assert!(
            fut.is_ready(),
            "push future {i} must be ready once flush completed"
        );
        let id = fut.wait(0).expect("push succeeded");
        assert_eq!(
            id,
            Some(i as u64 / 3),
            "push {i} to partition {}: id",
            i % 3
        );
    }
    let consumer = topic.consumer("c").expect("consumer");
    for e in pull_n(&consumer, 90) {
        let i = meta_u64(&e, "i");
        assert_eq!((e.partition() as u64, e.id()), (i % 3, i / 3), "event {i}");
    }
}

/// A thread pool that holds every job until the test runs it, on the test's thread: it makes
/// "this batch is still in flight" deterministic.
#[derive(Default)]
struct GatedPool {
    jobs: Mutex<VecDeque<Job>>,
    /// Once open, jobs run as they are submitted.
    open: AtomicBool,
}

impl ThreadPoolBackend for GatedPool {
    fn size(&self) -> usize {
        1
    }
    fn push_work(&self, job: Job, _priority: u64) {
        if self.open.load(AtomicOrdering::SeqCst) {
            job();
        } else {
            self.jobs.lock().expect("gated pool lock").push_back(job);
        }
    }
}

/// Opens the gate and runs what it holds when dropped, also when the case fails, so that
/// nothing (a producer's flush on drop) waits forever on a held job. Declare it after the
/// producer: it is dropped first.
struct OpenOnDrop(Arc<GatedPool>);

impl Drop for OpenOnDrop {
    fn drop(&mut self) {
        self.0.open.store(true, AtomicOrdering::SeqCst);
        loop {
            let job = self.0.jobs.lock().map(|mut q| q.pop_front());
            match job {
                Ok(Some(job)) => job(),
                _ => return,
            }
        }
    }
}

impl GatedPool {
    fn queued(&self) -> usize {
        self.jobs.lock().expect("gated pool lock").len()
    }
    /// Runs the queued job at `index` (jobs it submits are queued, not run).
    fn run(&self, index: usize) {
        let job = self.jobs.lock().expect("gated pool lock").remove(index);
        job.expect("a queued job")();
    }
}

/// Producer storing through a [`GatedPool`], one event per batch, many batches in flight.
fn gated_producer(topic: &TopicHandle, pool: &Arc<GatedPool>) -> diaspora_api::Producer {
    topic
        .producer_with(
            "gated",
            ProducerOptions {
                batch_size: BatchSize::Fixed(1),
                max_num_batches: 1_000,
                ordering: Ordering::Loose,
                thread_pool: Some(ThreadPool::from_backend(pool.clone())),
            },
        )
        .expect("producer")
}

/// Runs every queued job, `last` last; before that, the flush must stay pending.
fn release_all_checking(pool: &GatedPool, flushed: &mut Future<()>, last: usize) {
    let n = pool.queued();
    assert!(n > 1);
    pool.jobs.lock().expect("lock").swap(last, n - 1);
    while pool.queued() > 1 {
        assert!(
            !flushed.is_ready(),
            "flush ready with {} batches in flight",
            pool.queued()
        );
        assert!(flushed.wait(0).expect("no error").is_none());
        pool.run(0);
    }
    assert!(!flushed.is_ready(), "flush ready with one batch in flight");
    pool.run(0);
    assert!(
        flushed.is_ready(),
        "flush not ready once every batch is stored"
    );
    assert_eq!(flushed.wait(0).expect("flush succeeded"), Some(()));
}

/// `flush()` waits for every in-flight batch, also beyond 64 of them, and `is_ready()` of the
/// flush future is false until the last one is stored.
pub fn flush_waits_for_every_batch_beyond_64(f: &dyn DriverFixture) {
    const N: u64 = 150;
    let driver = f.driver();
    let topic = create_topic(&driver, "many", 1);
    let pool = Arc::new(GatedPool::default());
    let producer = gated_producer(&topic, &pool);
    let _gate = OpenOnDrop(pool.clone());
    let mut all: Vec<Future<EventId>> = Vec::new();
    for (round, last) in [(0u64, N as usize / 2), (1, 0)] {
        let futures: Vec<_> = (0..N)
            .map(|i| producer.push(json!({"i": round * N + i}), ()))
            .collect();
        assert_eq!(pool.queued() as u64, N, "one job per full batch");
        let mut flushed = producer.flush();
        release_all_checking(&pool, &mut flushed, last);
        assert!(
            futures.iter().all(|f| f.is_ready()),
            "every push is complete once flush is"
        );
        all.extend(futures);
    }
    let ids: BTreeSet<u64> = all.into_iter().map(|f| wait_for(f, "push")).collect();
    assert_eq!(ids, (0..2 * N).collect(), "every event got its own id");
    let consumer = topic.consumer("c").expect("consumer");
    assert_eq!(pull_n(&consumer, 2 * N as usize).len() as u64, 2 * N);
    assert_nothing_more(&consumer, "all events consumed");
}

/// With a fixed batch size, a full batch is stored without any flush, and not before it is full.
pub fn full_fixed_batch_is_stored_without_flush(f: &dyn DriverFixture) {
    let driver = f.driver();
    let topic = create_topic(&driver, "full", 1);
    let pool = Arc::new(GatedPool::default());
    let producer = topic
        .producer_with(
            "fixed",
            ProducerOptions {
                batch_size: BatchSize::Fixed(4),
                thread_pool: Some(ThreadPool::from_backend(pool.clone())),
                ..Default::default()
            },
        )
        .expect("producer");
    let gate = OpenOnDrop(pool.clone());
    let mut futures: Vec<_> = (0..3u64)
        .map(|i| producer.push(json!({"i": i}), ()))
        .collect();
    assert_eq!(pool.queued(), 0, "a batch of 3 of 4 is not sent");
    assert!(futures.iter().all(|f| !f.is_ready()));
    futures.push(producer.push(json!({"i": 3}), ()));
    assert_eq!(pool.queued(), 1, "the full batch is sent at once");
    pool.run(0);
    for (i, fut) in futures.into_iter().enumerate() {
        assert!(fut.is_ready(), "push {i}: stored without flush");
        assert_eq!(wait_for(fut, "push"), i as u64);
    }
    let consumer = topic.consumer("c").expect("consumer");
    let got: Vec<u64> = pull_n(&consumer, 4)
        .iter()
        .map(|e| meta_u64(e, "i"))
        .collect();
    assert_eq!(got, vec![0, 1, 2, 3]);
    drop(gate);
    // The same with the driver's own threads: the batch completes without flush.
    let producer = topic
        .producer_with(
            "fixed-threads",
            ProducerOptions {
                batch_size: BatchSize::Fixed(4),
                thread_pool: Some(ThreadPool::new(2)),
                ..Default::default()
            },
        )
        .expect("producer");
    let ids: Vec<u64> = (4..8u64)
        .map(|i| producer.push(json!({"i": i}), ()))
        .collect::<Vec<_>>()
        .into_iter()
        .map(|f| wait_for(f, "push of a full batch"))
        .collect();
    assert_eq!(ids, vec![4, 5, 6, 7]);
    drop(producer);
}
