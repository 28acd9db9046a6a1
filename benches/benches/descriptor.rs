//! DataDescriptor views: what a consumer's data selector computes for every event.

mod common;

use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use diaspora_api::{Bytes, DataDescriptor};

fn descriptor(c: &mut Criterion) {
    let mut g = c.benchmark_group("descriptor");
    let whole = DataDescriptor::new(Bytes::from_static(b"partition-0/data@123456"), 64 << 20);

    g.bench_function("sub_view_contiguous", |b| {
        b.iter(|| black_box(&whole).sub_view(black_box(4096), black_box(65536)))
    });
    for blocks in [16u64, 256, 4096] {
        g.bench_with_input(
            BenchmarkId::new("strided_view", blocks),
            &blocks,
            |b, &n| b.iter(|| black_box(&whole).strided_view(0, n, 1024, 3072)),
        );
        // A sub-view of a strided view walks its segments.
        let strided = whole.strided_view(0, blocks, 1024, 3072).expect("fits");
        g.bench_with_input(
            BenchmarkId::new("sub_view_of_strided", blocks),
            &blocks,
            |b, &n| b.iter(|| black_box(&strided).sub_view(512, (n - 1) * 1024)),
        );
    }
    g.bench_function("select_all_clone", |b| b.iter(|| black_box(&whole).clone()));
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::quick(Duration::from_millis(500), Duration::from_secs(2));
    targets = descriptor
}
criterion_main!(benches);
