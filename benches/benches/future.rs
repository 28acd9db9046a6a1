//! Futures: the per-event cost of a push's result, ready or completed by another thread.

mod common;

use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use diaspora_api::{Completion, Future};

fn future(c: &mut Criterion) {
    let mut g = c.benchmark_group("future");
    g.bench_function("ready_wait", |b| {
        b.iter(|| Future::ready(black_box(7u64)).wait(0))
    });
    g.bench_function("ready_drop", |b| {
        b.iter(|| drop(black_box(Future::ready(7u64))))
    });
    // One completion shared by a batch: the per-event future as a driver would hand it out.
    let done = Completion::<u64>::new();
    done.complete(Ok(1000));
    g.bench_function("completed_future_with_get", |b| {
        b.iter(|| done.future_with(|base| base + 1).get())
    });
    g.bench_function("completed_future_with_drop", |b| {
        b.iter(|| drop(black_box(done.future_with(|base| base + 1))))
    });
    // Completion by a worker thread while the caller waits: the cost of a cross-thread wake-up
    // (channel send + condvar notify), as when a driver's thread pool stores a batch.
    let (tx, rx) = std::sync::mpsc::channel::<std::sync::Arc<Completion<u64>>>();
    let worker = std::thread::spawn(move || {
        for c in rx {
            c.complete(Ok(1));
        }
    });
    g.bench_function("cross_thread_completion", |b| {
        b.iter(|| {
            let c = Completion::<u64>::new();
            let f = c.future();
            tx.send(c).expect("worker alive");
            f.get()
        })
    });
    drop(tx);
    worker.join().expect("worker");
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::quick(Duration::from_millis(500), Duration::from_secs(2));
    targets = future
}
criterion_main!(benches);
