//! The produce phase: push N events (shared metadata and data, zero copy), then flush.

use std::time::{Duration, Instant};

use diaspora_api::{EventId, Future, Producer, ProducerOptions, TopicHandle, Value};
use serde_json::Map;

use crate::latency::{SampleHandle, Sampler};
use crate::report::{peak_rss_kib, reset_peak_rss, unix_ns, PhaseResult};
use crate::workload::Workload;

/// How to produce.
#[derive(Clone, Debug)]
pub struct ProduceConfig {
    /// Events to push.
    pub events: u64,
    /// Application threads pushing through clones of one producer.
    pub push_threads: u64,
    /// Events per push call (more than 1: `Producer::push_many`).
    pub push_many: u64,
    /// Producer options as JSON (parsed by `ProducerOptions::from_json`).
    pub options: Map<String, Value>,
    /// Mark the topic complete once everything is stored.
    pub mark_complete: bool,
    /// Partitions to push into, round robin (`None`: the topic's partition selector).
    pub partitions: Option<Vec<usize>>,
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

    let sampler = Sampler::new(config.events)?;
    let targets = Targets(config.partitions.clone().filter(|p| !p.is_empty()));
    reset_peak_rss();
    let start_unix_ns = unix_ns();
    let start = Instant::now();
    let last_futures = if config.push_threads <= 1 {
        vec![push_n(
            &producer,
            workload,
            config.events,
            &sampler.handle(),
            &targets,
            0,
            config.push_many,
        )]
    } else {
        push_parallel(
            &producer,
            workload,
            config.events,
            config.push_threads,
            &sampler,
            &targets,
            config.push_many,
        )
    };
    producer
        .flush()
        .get()
        .map_err(|e| format!("flush failed: {e}"))?;
    let seconds = start.elapsed().as_secs_f64();
    let peak_rss_kib = peak_rss_kib();
    let sampled = sampler.finish(Duration::from_secs(35))?;
    if let Some(why) = sampled.first_failure {
        return Err(format!(
            "{} sampled push(es) failed: {why}",
            sampled.failures + sampled.unfinished
        ));
    }

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
        net_ceiling: None,
        start_unix_ns,
        push_latency: Some(sampled.histogram),
    })
}

/// Where each push goes.
struct Targets(Option<Vec<usize>>);

impl Targets {
    /// Pushes `k` events (`k` > 1) with one `push_many` call, the `group`-th of its thread:
    /// with given partitions, groups go round robin over them. The future of the last.
    fn push_many(
        &self,
        producer: &Producer,
        workload: &Workload,
        group: u64,
        k: u64,
    ) -> Future<EventId> {
        let events = (0..k).map(|_| (workload.metadata.clone(), workload.data.clone()));
        let ids = match &self.0 {
            None => producer.push_many(events),
            Some(parts) => {
                producer.push_many_to(parts[(group % parts.len() as u64) as usize], events)
            }
        };
        ids.map(|ids| ids.last().copied().unwrap_or_default())
    }

    fn push(&self, producer: &Producer, workload: &Workload, i: u64) -> Future<EventId> {
        match &self.0 {
            None => producer.push(workload.metadata.clone(), workload.data.clone()),
            Some(parts) => producer.push_to(
                parts[(i % parts.len() as u64) as usize],
                workload.metadata.clone(),
                workload.data.clone(),
            ),
        }
    }
}

/// Pushes `n` events; returns the future of the last one (sampled ones go to the latency
/// sampler, the others are dropped unread). `offset` spreads threads over the partitions.
fn push_n(
    producer: &Producer,
    workload: &Workload,
    n: u64,
    sample: &SampleHandle,
    targets: &Targets,
    offset: u64,
    per_call: u64,
) -> Option<Future<EventId>> {
    if n == 0 {
        return None;
    }
    if per_call > 1 {
        // Groups of `per_call` events; a sampled group's latency is its last event's.
        let mut i = 0;
        for group in 0.. {
            let k = per_call.min(n - i);
            let sampled = sample.sampled_range(i, k);
            let t0 = Instant::now();
            let f = targets.push_many(producer, workload, group + offset, k);
            i += k;
            if i == n {
                return Some(f);
            }
            if sampled {
                sample.submit(t0, f);
            } else {
                drop(f);
            }
        }
    }
    for i in 0..n - 1 {
        if sample.sampled(i) {
            let t0 = Instant::now();
            sample.submit(t0, targets.push(producer, workload, i + offset));
        } else {
            drop(targets.push(producer, workload, i + offset));
        }
    }
    Some(targets.push(producer, workload, n - 1 + offset))
}

fn push_parallel(
    producer: &Producer,
    workload: &Workload,
    events: u64,
    threads: u64,
    sampler: &Sampler,
    targets: &Targets,
    per_call: u64,
) -> Vec<Option<Future<EventId>>> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                // Spread the remainder over the first threads.
                let n = events / threads + u64::from(t < events % threads);
                let producer = producer.clone();
                let sample = sampler.handle();
                s.spawn(move || push_n(&producer, workload, n, &sample, targets, t, per_call))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(None))
            .collect()
    })
}
