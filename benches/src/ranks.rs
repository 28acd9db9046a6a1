//! `diaspora-bench ranks`: the benchmark as P processes, one per rank, under `srun`,
//! `mpirun` or a script (`--rank R --size N`), on any driver whose storage every rank reaches
//! (files on a shared directory, fabric).
//!
//! Rank and size come from `diaspora_launcher::detect` (Open MPI, PMI, PMIx, Slurm; no MPI
//! needed). The first `--producers K` ranks produce, the other `C = P - K` ranks consume; a job
//! of one rank produces, then consumes. The ranks meet at each step through the launcher's
//! run-directory rendezvous (`<run-dir>/<step>/`, every rank's payload reaching every rank; a
//! rank that fails makes the others stop with an error naming it):
//!
//! 1. `setup`: rank 0 creates the topic (`max(--partitions, K, C)` partitions); every rank has
//!    created its driver;
//! 2. producers push (producer `i` into partitions `p ≡ i (mod K)`, round robin); with
//!    `--concurrent` the consumers pull meanwhile;
//! 3. `produced`: producers publish their results; rank 0 marks the topic complete;
//! 4. consumers pull (consumer `j` from partitions `p ≡ j (mod C)`, under one consumer name),
//!    until the end of the topic or their exact share of the events;
//! 5. `consumed`: consumers publish their results; rank 0 adds them up (events and bytes summed,
//!    time from the first rank's start to the last rank's end, latency histograms merged, peak
//!    RSS per rank), prints them, writes `--results`, and fails unless every produced event was
//!    consumed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use diaspora_api::{TopicHandle, Value};
use diaspora_launcher::{detect, Launch, LauncherKind, ProcessEnv, RendezvousOptions, RunDir};
use serde_json::{json, Map};

use crate::args::{Args, Generic};
use crate::consume::consume;
use crate::histogram::Histogram;
use crate::produce::produce;
use crate::report::PhaseResult;
use crate::run::{config_json, consume_config, new_driver, path_value, produce_config};
use crate::workload::Workload;

/// Who does what in a job of `size` ranks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Roles {
    /// Ranks that produce: `0..producers`.
    pub producers: u32,
    /// Ranks that consume: `producers..size`, or rank 0 after producing in a job of one.
    pub consumers: u32,
    /// Partitions of the topic.
    pub partitions: usize,
    /// A job of one rank, producing then consuming.
    pub solo: bool,
}

impl Roles {
    /// The roles of `size` ranks with `producers` of them producing (default: half, rounded
    /// up), into a topic of at least `partitions` partitions.
    pub fn new(size: u32, producers: Option<u32>, partitions: usize) -> Result<Roles, String> {
        let solo = size == 1;
        let k = producers.unwrap_or(if solo { 1 } else { size.div_ceil(2) });
        if k == 0 || k > size {
            return Err(format!(
                "--producers {k} must be between 1 and the number of ranks ({size})"
            ));
        }
        let consumers = if solo { 1 } else { size - k };
        Ok(Roles {
            producers: k,
            consumers,
            partitions: partitions.max(k as usize).max(consumers as usize).max(1),
            solo,
        })
    }

    /// Partitions producer `i` pushes into.
    pub fn producer_partitions(&self, i: u32) -> Vec<usize> {
        (0..self.partitions)
            .filter(|p| p % self.producers as usize == i as usize)
            .collect()
    }

    /// Partitions consumer `j` pulls from.
    pub fn consumer_partitions(&self, j: u32) -> Vec<usize> {
        (0..self.partitions)
            .filter(|p| p % self.consumers.max(1) as usize == j as usize)
            .collect()
    }

    /// Events producer `i` pushes out of `total`.
    pub fn producer_events(&self, total: u64, i: u32) -> u64 {
        let k = u64::from(self.producers);
        total / k + u64::from(u64::from(i) < total % k)
    }

    /// Events stored in partition `p` once every producer pushed (one push thread each).
    pub fn partition_events(&self, total: u64, p: usize) -> u64 {
        let i = (p % self.producers as usize) as u32;
        let parts = self.producer_partitions(i);
        let n = self.producer_events(total, i);
        let len = parts.len() as u64;
        let idx = parts.iter().position(|&q| q == p).unwrap_or(0) as u64;
        n / len + u64::from(idx < n % len)
    }

    /// Events consumer `j` reads.
    pub fn consumer_events(&self, total: u64, j: u32) -> u64 {
        self.consumer_partitions(j)
            .iter()
            .map(|&p| self.partition_events(total, p))
            .sum()
    }
}

/// Rank, size and run id of this process.
fn launch(args: &Args) -> Result<(Launch, bool), String> {
    let mut launch = match (args.rank, args.size) {
        (Some(rank), Some(size)) => {
            if size == 0 || rank >= size {
                return Err(format!("--rank {rank} must be below --size {size}"));
            }
            Launch {
                rank,
                size,
                local_rank: None,
                local_size: None,
                kind: LauncherKind::None,
                run_id: None,
                evidence: vec![format!("--rank {rank} --size {size}")],
            }
        }
        _ => detect(&ProcessEnv).map_err(|e| format!("finding this process's rank: {e}"))?,
    };
    let explicit = args.rank.is_some();
    if let Some(id) = args.run_id.clone().or_else(|| {
        std::env::var("DIASPORA_RUN_ID")
            .ok()
            .filter(|s| !s.is_empty())
    }) {
        launch.run_id = Some(id);
    }
    Ok((launch, explicit))
}

/// The rendezvous at each step.
struct Steps {
    dir: PathBuf,
    launch: Launch,
    timeout: Duration,
    /// The first step checks that copies started without a launcher are not each "rank 0 of
    /// 1" (a second of grace).
    singleton_check: bool,
}

impl Steps {
    /// Publishes `outcome` (or this rank's failure) at step `name` and returns every rank's
    /// payload in rank order, once all are there.
    fn step(&mut self, name: &str, outcome: Result<Value, String>) -> Result<Vec<Value>, String> {
        let defaults = RendezvousOptions::default();
        let opts = RendezvousOptions {
            timeout: self.timeout,
            singleton_grace: if self.singleton_check {
                defaults.singleton_grace
            } else {
                Duration::ZERO
            },
            run_id: self.launch.run_id.clone(),
            ..defaults
        };
        self.singleton_check = false;
        let mut rd = RunDir::join(&self.dir.join(name), &self.launch, opts)
            .map_err(|e| format!("step {name}: {e}"))?;
        let payload = match outcome {
            Ok(v) => v,
            Err(why) => {
                let _ = rd.fail(&why);
                return Err(why);
            }
        };
        rd.publish(payload)
            .map_err(|e| format!("step {name}: {e}"))?;
        let group = rd
            .wait(&mut |_: u64, _: &[diaspora_launcher::RankEntry]| Ok(()))
            .map_err(|e| format!("step {name}: {e}"))?;
        Ok(group.ranks.into_iter().map(|e| e.payload).collect())
    }
}

/// Runs this rank.
pub fn run(args: &Args, generic: &Generic) -> Result<(), String> {
    let workload = Workload::new(args.metadata_size, args.data_size)?;
    let (launch, explicit) = launch(args)?;
    let (rank, size) = (launch.rank, launch.size);
    let roles = Roles::new(size, args.producers, args.partitions)?;
    if args.driver == "memory" && size > 1 {
        return Err(
            "the memory driver lives inside one process: run it with one rank (--push-threads N \
             for several pushing threads)"
                .into(),
        );
    }
    let exact_counts = args.push_threads == 1 || roles.partitions == roles.producers as usize;
    if (args.concurrent || args.no_complete) && !exact_counts {
        return Err(
            "--concurrent and --no-complete need exact per-consumer counts: use --push-threads 1, \
             or as many partitions as producers"
                .into(),
        );
    }
    let temp_run_dir;
    let run_dir = match (&args.run_dir, roles.solo) {
        (Some(d), _) => d.clone(),
        (None, true) => {
            temp_run_dir = tempfile::Builder::new()
                .prefix("diaspora-bench-ranks-")
                .tempdir()
                .map_err(|e| format!("creating a temporary run directory: {e}"))?;
            temp_run_dir.path().to_path_buf()
        }
        (None, false) => {
            return Err(format!(
                "rank {rank} of {size}: --run-dir DIR is required (a directory every rank reaches)"
            ))
        }
    };
    let mut opts = generic.driver.clone();
    let own_data = args.driver == "files" && !opts.contains_key("root_path");
    let data_dir = run_dir.join("data");
    if own_data {
        opts.insert("root_path".into(), path_value(data_dir.clone()));
    }
    let mut steps = Steps {
        dir: run_dir.clone(),
        launch: launch.clone(),
        timeout: Duration::from_secs(args.rendezvous_timeout_s),
        singleton_check: launch.kind == LauncherKind::None && !explicit,
    };
    let role = if rank < roles.producers {
        "producer"
    } else {
        "consumer"
    };
    if rank == 0 && !args.json {
        println!(
            "diaspora-bench ranks: {launch}; {}, {} partition(s), driver {} {}",
            if roles.solo {
                "one rank: produces, then consumes".to_owned()
            } else {
                format!(
                    "{} producer(s), {} consumer(s)",
                    roles.producers, roles.consumers
                )
            },
            roles.partitions,
            args.driver,
            Value::Object(opts.clone()),
        );
    }

    // 1. setup
    let setup = (|| -> Result<(diaspora_api::Driver, Value), String> {
        if own_data && rank == 0 {
            std::fs::create_dir_all(&data_dir)
                .map_err(|e| format!("creating {}: {e}", data_dir.display()))?;
        }
        let driver = new_driver(args, &opts)?;
        let mut payload =
            json!({"rank": rank, "role": role, "host": diaspora_launcher::hostname()});
        if rank == 0 {
            let name = topic_name(&args.topic, launch.run_id.as_deref());
            let mut topic_opts = Map::new();
            topic_opts.insert("num_partitions".into(), roles.partitions.into());
            topic_opts.extend(generic.topic.clone());
            driver
                .create_topic(&name, Value::Object(topic_opts))
                .map_err(|e| format!("creating topic {name}: {e}"))?;
            payload["topic"] = name.into();
        }
        Ok((driver, payload))
    })();
    let (driver, setup_payload) = match setup {
        Ok((d, p)) => (Some(d), Ok(p)),
        Err(e) => (None, Err(format!("rank {rank}: {e}"))),
    };
    let all = steps.step("setup", setup_payload)?;
    let driver = driver.ok_or("no driver")?;
    let topic_name = all
        .first()
        .and_then(|p| p.get("topic"))
        .and_then(Value::as_str)
        .ok_or("rank 0 published no topic name")?
        .to_owned();
    let topic = driver
        .open_topic(&topic_name)
        .map_err(|e| format!("opening topic {topic_name}: {e}"));
    let consumer_name = format!("bench-{topic_name}");

    // 2. produce (and consume, with --concurrent)
    let mut produced: Result<Value, String> = Ok(json!(null));
    let mut consumed: Result<Value, String> = Ok(json!(null));
    let topic = match topic {
        Ok(t) => Some(t),
        Err(e) => {
            produced = Err(format!("rank {rank}: {e}"));
            None
        }
    };
    if let Some(topic) = &topic {
        if rank < roles.producers {
            produced = produce_as(args, generic, topic, &workload, &roles, rank)
                .map(|r| rank_json(rank, "producer", &r))
                .map_err(|e| format!("rank {rank} (producer): {e}"));
        } else if args.concurrent {
            consumed = consume_as(
                args,
                generic,
                topic,
                &roles,
                rank - roles.producers,
                true,
                &consumer_name,
            )
            .map(|r| rank_json(rank, "consumer", &r))
            .map_err(|e| format!("rank {rank} (consumer): {e}"));
        }
    }
    // A consumer's failure during --concurrent is reported at this step already.
    let produced_step = match (&produced, &consumed) {
        (Err(e), _) | (Ok(_), Err(e)) => Err(e.clone()),
        (Ok(v), Ok(_)) => Ok(v.clone()),
    };
    let producers = steps.step("produced", produced_step)?;
    let topic = topic.ok_or("no topic")?;

    // 3. complete, 4. consume
    if rank == 0 && !args.no_complete {
        if let Err(e) = topic.mark_as_complete() {
            consumed = Err(format!("rank 0: marking topic {topic_name} complete: {e}"));
        }
    }
    let consumes_now = roles.solo || (rank >= roles.producers && !args.concurrent);
    if consumes_now && consumed.is_ok() {
        let j = if roles.solo {
            0
        } else {
            rank - roles.producers
        };
        consumed = consume_as(
            args,
            generic,
            &topic,
            &roles,
            j,
            exact_counts && args.no_complete,
            &consumer_name,
        )
        .map(|r| rank_json(rank, "consumer", &r))
        .map_err(|e| format!("rank {rank} (consumer): {e}"));
    }
    let consumers = steps.step("consumed", consumed)?;
    drop(topic);
    drop(driver);

    // 5. rank 0 adds up
    if rank != 0 {
        return Ok(());
    }
    let produce = aggregate("produce", &producers)?;
    let consume = aggregate("consume", &consumers)?;
    let result = json!({
        "kind": "ranks",
        "launcher": launch.kind.to_string(),
        "run_id": launch.run_id,
        "size": size,
        "producers": roles.producers,
        "consumers": roles.consumers,
        "partitions": roles.partitions,
        "topic": topic_name,
        "config": config_json(args, generic),
        "produce": produce.json(),
        "consume": consume.json(),
    });
    if args.json {
        println!("{result}");
    } else {
        println!("{}", produce.text(roles.producers));
        println!("{}", consume.text(roles.consumers));
    }
    if let Some(path) = &args.results {
        write_results(path, &result)?;
    }
    if own_data {
        if let Err(e) = std::fs::remove_dir_all(&data_dir) {
            eprintln!("warning: could not remove {}: {e}", data_dir.display());
        }
    }
    if produce.events != consume.events {
        return Err(format!(
            "{} events produced but {} consumed",
            produce.events, consume.events
        ));
    }
    Ok(())
}

/// `<topic>-<run id>` with the run id's characters outside `[A-Za-z0-9_-]` replaced.
fn topic_name(base: &str, run_id: Option<&str>) -> String {
    let id = run_id.map_or_else(
        || format!("{}-{}", std::process::id(), crate::report::unix_ns()),
        |s| {
            s.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                        c
                    } else {
                        '-'
                    }
                })
                .collect()
        },
    );
    format!("{base}-{id}")
}

fn produce_as(
    args: &Args,
    generic: &Generic,
    topic: &TopicHandle,
    workload: &Workload,
    roles: &Roles,
    i: u32,
) -> Result<PhaseResult, String> {
    let mut config = produce_config(args, generic);
    config.events = roles.producer_events(args.events, i);
    config.partitions = Some(roles.producer_partitions(i));
    config.mark_complete = false;
    produce(topic, workload, &config)
}

fn consume_as(
    args: &Args,
    generic: &Generic,
    topic: &TopicHandle,
    roles: &Roles,
    j: u32,
    exact: bool,
    name: &str,
) -> Result<PhaseResult, String> {
    let mut config = consume_config(args, generic, name.to_owned());
    config.events = if exact {
        roles.consumer_events(args.events, j)
    } else {
        0 // until the end of the completed topic
    };
    config
        .options
        .insert("partitions".into(), json!(roles.consumer_partitions(j)));
    consume(topic, &config)
}

/// One rank's result as published in the run directory.
fn rank_json(rank: u32, role: &str, r: &PhaseResult) -> Value {
    json!({
        "rank": rank,
        "role": role,
        "host": diaspora_launcher::hostname(),
        "events": r.events,
        "bytes": r.bytes,
        "seconds": r.seconds,
        "start_unix_ns": r.start_unix_ns,
        "peak_rss_kib": r.peak_rss_kib,
        "push_latency": r.push_latency.as_ref().map(Histogram::to_json),
    })
}

/// A phase added up over the ranks.
#[derive(Debug)]
pub struct Aggregate {
    phase: &'static str,
    events: u64,
    bytes: u64,
    seconds: f64,
    peak_rss_kib_max: Option<u64>,
    latency: Option<Histogram>,
    per_rank: Vec<Value>,
}

fn field_u64(v: &Value, k: &str) -> Result<u64, String> {
    v.get(k)
        .and_then(Value::as_u64)
        .ok_or_else(|| format!("rank result: {k:?} must be an unsigned integer in {v}"))
}

/// Adds up the non-null results of `payloads` (one per rank; other ranks publish `null`).
pub fn aggregate(phase: &'static str, payloads: &[Value]) -> Result<Aggregate, String> {
    let mut a = Aggregate {
        phase,
        events: 0,
        bytes: 0,
        seconds: 0.0,
        peak_rss_kib_max: None,
        latency: None,
        per_rank: Vec::new(),
    };
    let (mut first, mut last) = (u64::MAX, 0u64);
    for p in payloads.iter().filter(|p| !p.is_null()) {
        a.events += field_u64(p, "events")?;
        a.bytes += field_u64(p, "bytes")?;
        let seconds = p
            .get("seconds")
            .and_then(Value::as_f64)
            .filter(|s| s.is_finite() && *s >= 0.0)
            .ok_or_else(|| format!("rank result: bad \"seconds\" in {p}"))?;
        let start = field_u64(p, "start_unix_ns")?;
        first = first.min(start);
        last = last.max(start.saturating_add((seconds * 1e9) as u64));
        if let Some(k) = p.get("peak_rss_kib").and_then(Value::as_u64) {
            a.peak_rss_kib_max = Some(a.peak_rss_kib_max.unwrap_or(0).max(k));
        }
        if let Some(h) = p.get("push_latency").filter(|h| !h.is_null()) {
            let h = Histogram::from_json(h)?;
            a.latency.get_or_insert_with(Histogram::default).merge(&h);
        }
        a.per_rank.push(p.clone());
    }
    if last > first {
        a.seconds = (last - first) as f64 / 1e9;
    }
    Ok(a)
}

impl Aggregate {
    fn rate(&self, x: f64) -> f64 {
        if self.seconds > 0.0 {
            x / self.seconds
        } else {
            0.0
        }
    }

    fn latency_us(&self, q: f64) -> Option<f64> {
        self.latency
            .as_ref()
            .and_then(|h| h.quantile(q))
            .map(|ns| ns as f64 / 1000.0)
    }

    /// The phase as JSON (the `produce` / `consume` objects of the results file).
    pub fn json(&self) -> Value {
        json!({
            "events": self.events,
            "bytes": self.bytes,
            "seconds": self.seconds,
            "events_per_sec": self.rate(self.events as f64),
            "mib_per_sec": self.rate(self.bytes as f64 / (1024.0 * 1024.0)),
            "push_p50_us": self.latency_us(0.5),
            "push_p99_us": self.latency_us(0.99),
            "peak_rss_kib_max": self.peak_rss_kib_max,
            "push_latency": self.latency.as_ref().map(Histogram::to_json),
            "per_rank": self.per_rank,
        })
    }

    fn text(&self, ranks: u32) -> String {
        let latency = match (self.latency_us(0.5), self.latency_us(0.99)) {
            (Some(a), Some(b)) => format!("  push p50 {a:.0} us p99 {b:.0} us"),
            _ => String::new(),
        };
        format!(
            "    ranks {:<8} {:>10} events {:>9.3} s {:>12.0} events/s {:>11.2} MiB/s  {} rank(s), peak RSS max {:.1} MiB{latency}",
            self.phase,
            self.events,
            self.seconds,
            self.rate(self.events as f64),
            self.rate(self.bytes as f64 / (1024.0 * 1024.0)),
            ranks,
            self.peak_rss_kib_max.unwrap_or(0) as f64 / 1024.0,
        )
    }
}

fn write_results(path: &Path, v: &Value) -> Result<(), String> {
    let text = serde_json::to_string_pretty(v).map_err(|e| format!("results: {e}"))?;
    diaspora_launcher::write_file_atomic(path, format!("{text}\n").as_bytes(), 0o644)
        .map_err(|e| format!("writing {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn roles_split_ranks_and_partitions() {
        let r = Roles::new(1, None, 1).expect("ok");
        assert!(r.solo);
        assert_eq!((r.producers, r.consumers, r.partitions), (1, 1, 1));
        let r = Roles::new(4, None, 1).expect("ok");
        assert_eq!((r.producers, r.consumers, r.partitions), (2, 2, 2));
        let r = Roles::new(3, Some(1), 4).expect("ok");
        assert_eq!((r.producers, r.consumers, r.partitions), (1, 2, 4));
        assert_eq!(r.consumer_partitions(1), vec![1, 3]);
        assert!(Roles::new(2, Some(0), 1).is_err());
        assert!(Roles::new(2, Some(3), 1).is_err());
    }

    proptest! {
        #[test]
        fn consumers_read_exactly_what_producers_push(
            size in 2u32..9, k in 1u32..9, parts in 1usize..12, total in 0u64..10_000,
        ) {
            prop_assume!(k < size);
            let r = Roles::new(size, Some(k), parts).expect("ok");
            let pushed: u64 = (0..r.producers).map(|i| r.producer_events(total, i)).sum();
            prop_assert_eq!(pushed, total);
            let stored: u64 = (0..r.partitions).map(|p| r.partition_events(total, p)).sum();
            prop_assert_eq!(stored, total);
            let read: u64 = (0..r.consumers).map(|j| r.consumer_events(total, j)).sum();
            prop_assert_eq!(read, total);
            for j in 0..r.consumers {
                prop_assert!(!r.consumer_partitions(j).is_empty());
            }
        }
    }

    #[test]
    fn aggregate_sums_spans_and_rejects_bad_input() {
        let mut h = Histogram::default();
        h.record(1000);
        let a = aggregate(
            "produce",
            &[
                json!({"events": 10, "bytes": 100, "seconds": 1.0, "start_unix_ns": 1_000_000_000u64, "peak_rss_kib": 5, "push_latency": h.to_json()}),
                json!(null),
                json!({"events": 5, "bytes": 50, "seconds": 2.0, "start_unix_ns": 1_500_000_000u64, "peak_rss_kib": 9, "push_latency": null}),
            ],
        )
        .expect("ok");
        assert_eq!((a.events, a.bytes, a.peak_rss_kib_max), (15, 150, Some(9)));
        assert!((a.seconds - 2.5).abs() < 1e-9);
        assert_eq!(a.latency.as_ref().map(Histogram::count), Some(1));
        assert!(aggregate("produce", &[json!({"events": "x"})]).is_err());
        assert!(aggregate(
            "produce",
            &[json!({"events": 1, "bytes": 1, "seconds": -1.0, "start_unix_ns": 0})]
        )
        .is_err());
    }

    #[test]
    fn topic_names_are_sanitised() {
        assert_eq!(topic_name("t", Some("slurm:12.3")), "t-slurm-12-3");
    }
}
