//! The consume phase: pull N events, touch their metadata and data, acknowledge.

use std::hint::black_box;
use std::time::Instant;

use diaspora_api::{select_all, ConsumerOptions, Event, TopicHandle, Value};
use serde_json::Map;

use crate::report::{peak_rss_kib, reset_peak_rss, unix_ns, PhaseResult};

/// How to consume.
#[derive(Clone, Debug)]
pub struct ConsumeConfig {
    /// Consumer name (acknowledgements are recorded under it).
    pub name: String,
    /// Events to pull (0: until the end-of-stream marker of a completed topic).
    pub events: u64,
    /// Expected data size of each event; > 0 selects (reads) all data and checks its length.
    pub data_size: usize,
    /// Acknowledge every N-th event (0: only at the end).
    pub ack_every: u64,
    /// Parse each metadata document.
    pub parse_metadata: bool,
    /// Maximum wait for one event, in milliseconds.
    pub timeout_ms: i64,
    /// Consumer options as JSON (parsed by `ConsumerOptions::from_json`).
    pub options: Map<String, Value>,
}

/// Pulls events from `topic`. The clock starts before the first pull and stops after the last
/// acknowledgement; creating and dropping the consumer are not measured.
pub fn consume(topic: &TopicHandle, config: &ConsumeConfig) -> Result<PhaseResult, String> {
    let mut options = ConsumerOptions::from_json(&Value::Object(config.options.clone()))
        .map_err(|e| format!("consumer options: {e}"))?;
    if config.data_size > 0 && !config.options.contains_key("data") {
        options.data_selector = Some(select_all());
    }
    let consumer = topic
        .consumer_with(&config.name, options)
        .map_err(|e| format!("creating consumer: {e}"))?;

    reset_peak_rss();
    let mut stats = Stats::default();
    // Last event seen in each partition, and whether it was acknowledged already.
    let mut last: Vec<Option<(Event, bool)>> = Vec::new();
    let start_unix_ns = unix_ns();
    let start = Instant::now();
    while config.events == 0 || stats.events < config.events {
        let event = match consumer.pull().wait(config.timeout_ms) {
            Ok(Some(e)) => e,
            Ok(None) => {
                return Err(format!(
                    "no event within {} ms after {} events",
                    config.timeout_ms, stats.events
                ))
            }
            Err(e) => return Err(format!("pull failed after {} events: {e}", stats.events)),
        };
        if event.is_no_more_events() {
            if config.events > 0 {
                return Err(format!(
                    "topic ended after {} of {} events",
                    stats.events, config.events
                ));
            }
            break;
        }
        stats.touch(&event, config)?;
        let acked = config.ack_every > 0 && stats.events % config.ack_every == 0;
        if acked {
            event
                .acknowledge()
                .map_err(|e| format!("acknowledge failed: {e}"))?;
        }
        let p = event.partition();
        if last.len() <= p {
            last.resize_with(p + 1, || None);
        }
        last[p] = Some((event, acked));
    }
    for (event, acked) in last.into_iter().flatten() {
        if !acked {
            event
                .acknowledge()
                .map_err(|e| format!("acknowledge failed: {e}"))?;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let peak_rss_kib = peak_rss_kib();
    black_box(stats.checksum);
    drop(consumer);
    Ok(PhaseResult {
        phase: "consume",
        events: stats.events,
        bytes: stats.bytes,
        seconds,
        peak_rss_kib,
        ceiling: None,
        net_ceiling: None,
        start_unix_ns,
        push_latency: None,
    })
}

#[derive(Default)]
struct Stats {
    events: u64,
    bytes: u64,
    checksum: u64,
}

impl Stats {
    /// Reads what a real consumer would: metadata size (or parsed document) and the data.
    fn touch(&mut self, event: &Event, config: &ConsumeConfig) -> Result<(), String> {
        self.events += 1;
        let metadata = event.metadata();
        self.bytes += metadata.as_bytes().len() as u64;
        if config.parse_metadata {
            let doc = metadata
                .json()
                .map_err(|e| format!("event {}: bad metadata: {e}", event.id()))?;
            self.checksum += doc.as_object().map_or(0, |o| o.len() as u64);
        }
        let data = event.data();
        self.bytes += data.len();
        if config.data_size > 0 && data.len() != config.data_size as u64 {
            return Err(format!(
                "event {} of partition {}: {} bytes of data, expected {}",
                event.id(),
                event.partition(),
                data.len(),
                config.data_size
            ));
        }
        for segment in data.segments() {
            self.checksum += u64::from(segment[0]) + u64::from(segment[segment.len() - 1]);
        }
        Ok(())
    }
}
