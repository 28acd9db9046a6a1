//! Metadata hot paths: validating a ~30-byte JSON document on push, parsing it lazily on read.

mod common;

use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use diaspora_api::{Bytes, Metadata};

const DOC: &str = r#"{"x":123456,"name":"bobbybob"}"#;

fn metadata(c: &mut Criterion) {
    let mut g = c.benchmark_group("metadata");
    g.throughput(Throughput::Elements(1));

    g.bench_function("from_json_str_30B", |b| {
        b.iter(|| Metadata::from_json_str(black_box(DOC)))
    });
    let raw = Bytes::from_static(DOC.as_bytes());
    g.bench_function("from_json_bytes_30B", |b| {
        b.iter(|| Metadata::from_json_bytes(black_box(raw.clone())))
    });
    // What a producer pays per push for pre-validated metadata.
    let validated = Metadata::from_json_str(DOC).expect("valid");
    g.bench_function("clone_validated", |b| {
        b.iter(|| black_box(&validated).clone())
    });

    // First json() on metadata read from storage: one parse.
    let unparsed = Metadata::from_raw_unchecked(raw.clone());
    g.bench_function("lazy_json_first_call", |b| {
        b.iter_batched(
            || unparsed.clone(),
            |m| {
                let _ = black_box(m.json().expect("json"));
                m
            },
            BatchSize::SmallInput,
        )
    });
    // Later calls: cached.
    let parsed = Metadata::from_raw_unchecked(raw);
    let _ = parsed.json().expect("json");
    g.bench_function("lazy_json_cached", |b| {
        b.iter(|| black_box(&parsed).json().map(|v| v.is_object()))
    });
    // Serializing metadata built from a value (first as_bytes call).
    let value = serde_json::json!({"x": 123456, "name": "bobbybob"});
    g.bench_function("from_value_as_bytes", |b| {
        b.iter_batched(
            || Metadata::from_value(value.clone()),
            |m| {
                black_box(m.as_bytes().len());
                m
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::quick(Duration::from_millis(500), Duration::from_secs(2));
    targets = metadata
}
criterion_main!(benches);
