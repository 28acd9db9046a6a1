//! The produce phase: push N events (shared metadata and data, zero copy), then flush.

use std::time::Instant;

use diaspora_api::{EventId, Future, Producer, ProducerOptions, TopicHandle, Value};
use serde_json::Map;

use crate::report::{peak_rss_kib, reset_peak_rss, PhaseResult};
use crate::workload::Workload;

/// How to produce.
#[derive(Clone, Debug)]
pub struct ProduceConfig {
    /// Events to push.
    pub events: u64,
    /// Application threads pushing through clones of one producer.
    pub push_threads: u64,
    /// Producer options as JSON (parsed by `ProducerOptions::from_json`).
    pub options: Map<String, Value>,
    /// Mark the topic complete once everything is stored.
    pub mark_complete: bool,
}

/// Pushes `config.events` events into `topic` and waits for them to be stored.
///
/// The clock starts just before the first push and stops when `flush` completes; creating the
/// producer and marking the topic complete are not measured.
pub fn produce(
    topic: &TopicHandle,
    workload: &Workload,
    config: &ProduceConfig,
) -> Result<PhaseResult, String> {
    let options = ProducerOptions::from_json(&Value::Object(config.options.clone()))
        .map_err(|e| format!("producer options: {e}"))?;
    let producer = topic
        .producer_with("diaspora-bench", options)
        .map_err(|e| format!("creating producer: {e}"))?;

    reset_peak_rss();
    let start = Instant::now();
    let last_futures = if config.push_threads <= 1 {
        vec![push_n(&producer, workload, config.events)]
    } else {
        push_parallel(&producer, workload, config.events, config.push_threads)
    };
    producer
        .flush()
        .get()
        .map_err(|e| format!("flush failed: {e}"))?;
    let seconds = start.elapsed().as_secs_f64();
    let peak_rss_kib = peak_rss_kib();

    // The last event of each pushing thread must have been stored by the flush; a failed push
    // (whose future was dropped unread) shows up here too, as the driver fails later events.
    for f in last_futures.into_iter().flatten() {
        f.get().map_err(|e| format!("push failed: {e}"))?;
    }
    drop(producer);
    if config.mark_complete {
        if let Err(e) = topic.mark_as_complete() {
            eprintln!(
                "warning: could not mark topic {} complete: {e}",
                topic.name()
            );
        }
    }
    Ok(PhaseResult {
        phase: "produce",
        events: config.events,
        bytes: config.events * workload.event_bytes(),
        seconds,
        peak_rss_kib,
        ceiling: None,
    })
}

/// Pushes `n` events; returns the future of the last one (the others are dropped unread).
fn push_n(producer: &Producer, workload: &Workload, n: u64) -> Option<Future<EventId>> {
    if n == 0 {
        return None;
    }
    for _ in 1..n {
        drop(producer.push(workload.metadata.clone(), workload.data.clone()));
    }
    Some(producer.push(workload.metadata.clone(), workload.data.clone()))
}

fn push_parallel(
    producer: &Producer,
    workload: &Workload,
    events: u64,
    threads: u64,
) -> Vec<Option<Future<EventId>>> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                // Spread the remainder over the first threads.
                let n = events / threads + u64::from(t < events % threads);
                let producer = producer.clone();
                s.spawn(move || push_n(&producer, workload, n))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(None))
            .collect()
    })
}
