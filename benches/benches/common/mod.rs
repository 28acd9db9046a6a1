//! Settings shared by the criterion benches: few samples and short windows, so the whole
//! `cargo bench` takes minutes on a 2-core machine.

use std::time::Duration;

use criterion::Criterion;

/// Criterion with small samples; `measure` is the measurement window per benchmark.
pub fn quick(warm_up: Duration, measure: Duration) -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(warm_up)
        .measurement_time(measure)
}
