//! Files driver throughput: pushing batches of events (with flush) and pulling them back.
//!
//! Skipped, with a message, when the files driver cannot be instantiated.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use diaspora_api::{
    json, select_all, Bytes, ConsumerOptions, Driver, Metadata, ProducerOptions, TopicHandle,
};

/// Events pushed (and flushed) or pulled per iteration.
const EVENTS: u64 = 10_000;
const DOC: &str = r#"{"x":123456,"name":"bobbybob"}"#;

static NEXT: AtomicU64 = AtomicU64::new(0);

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

fn setup() -> Option<(tempfile::TempDir, Driver)> {
    diaspora_driver_files::register();
    let dir = tempfile::Builder::new()
        .prefix("diaspora-criterion-")
        .tempdir()
        .expect("tempdir");
    match Driver::new("files", json!({"root_path": dir.path()})) {
        Ok(d) => Some((dir, d)),
        Err(e) => {
            eprintln!("files driver unavailable, skipping its benchmarks: {e}");
            None
        }
    }
}

fn new_topic(driver: &Driver) -> TopicHandle {
    let name = unique("topic");
    driver
        .create_topic(&name, json!({"num_partitions": 1}))
        .expect("create topic");
    driver.open_topic(&name).expect("open topic")
}

fn push_batch(topic: &TopicHandle, data: &Bytes) {
    let producer = topic
        .producer_with("criterion", ProducerOptions::default())
        .expect("producer");
    let metadata = Metadata::from_json_str(DOC).expect("valid");
    for _ in 0..EVENTS {
        drop(producer.push(metadata.clone(), data.clone()));
    }
    producer.flush().get().expect("flush");
}

fn produce(c: &mut Criterion) {
    let Some((_dir, driver)) = setup() else {
        return;
    };
    let mut g = c.benchmark_group("files_produce");
    g.throughput(Throughput::Elements(EVENTS));
    for data_size in [0usize, 1024] {
        let data = Bytes::from(vec![1u8; data_size]);
        // A fresh topic per sample keeps log files small and runs comparable.
        g.bench_function(format!("push_flush_10k_data_{data_size}B"), |b| {
            b.iter_custom(|iters| {
                let topic = new_topic(&driver);
                let start = Instant::now();
                for _ in 0..iters {
                    push_batch(&topic, &data);
                }
                start.elapsed()
            })
        });
    }
    g.finish();
}

fn consume(c: &mut Criterion) {
    let Some((_dir, driver)) = setup() else {
        return;
    };
    let mut g = c.benchmark_group("files_consume");
    g.throughput(Throughput::Elements(EVENTS));
    for data_size in [0usize, 1024] {
        let topic = new_topic(&driver);
        push_batch(&topic, &Bytes::from(vec![1u8; data_size]));
        g.bench_function(format!("pull_10k_data_{data_size}B"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    // A new consumer name reads the topic from the start.
                    let options = ConsumerOptions {
                        data_selector: (data_size > 0).then(select_all),
                        ..ConsumerOptions::default()
                    };
                    let consumer = topic
                        .consumer_with(&unique("c"), options)
                        .expect("consumer");
                    let start = Instant::now();
                    let mut bytes = 0u64;
                    for _ in 0..EVENTS {
                        let event = consumer.pull().get().expect("pull");
                        bytes += event.metadata().as_bytes().len() as u64 + event.data().len();
                    }
                    total += start.elapsed();
                    black_box(bytes);
                }
                total
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::quick(Duration::from_secs(1), Duration::from_secs(3));
    targets = produce, consume
}
criterion_main!(benches);
