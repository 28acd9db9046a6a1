//! Orchestration: driver setup, one topic per run, phases, and the final report.

use std::path::PathBuf;

use diaspora_api::{Driver, TopicHandle, Value};
use serde_json::{json, Map};

use crate::args::{Args, Generic, Mode};
use crate::ceiling::{self, Ceiling};
use crate::consume::{consume, ConsumeConfig};
use crate::netceiling::{self, NetCeiling};
use crate::produce::{produce, ProduceConfig};
use crate::report::{median, PhaseResult};
use crate::workload::Workload;

/// Where the files driver stores topics when the user gave no `root_path`: a temporary
/// directory, removed when this is dropped.
struct Storage {
    temp: Option<tempfile::TempDir>,
}

/// Runs the benchmark described by `args`, printing results to stdout.
pub fn run(args: &Args, generic: Generic) -> Result<(), String> {
    diaspora_driver_files::register();
    diaspora_driver_fabric::register();
    diaspora_driver_kafka::register();
    crate::memory::register();
    if args.mode == Mode::Ranks {
        return crate::ranks::run(args, &generic);
    }
    let workload = Workload::new(args.metadata_size, args.data_size)?;
    let config = config_json(args, &generic);

    let mut driver_opts = generic.driver.clone();
    let storage = Storage {
        temp: if args.driver == "files" && !driver_opts.contains_key("root_path") {
            let dir = tempfile::Builder::new()
                .prefix("diaspora-bench-")
                .tempdir()
                .map_err(|e| format!("creating a temporary directory: {e}"))?;
            Some(dir)
        } else {
            None
        },
    };
    // With our own temporary storage, `both` gives each run a fresh directory and deletes it
    // afterwards, so runs are independent and disk usage stays at one run's worth.
    let per_run_dirs = storage.temp.is_some() && args.mode == Mode::Both;
    if let (Some(t), false) = (&storage.temp, per_run_dirs) {
        driver_opts.insert("root_path".into(), path_value(t.path().to_path_buf()));
    }
    if !args.json {
        print_header(args, &workload, &driver_opts, &storage);
    }

    let stamp = unique_stamp();
    let mut produced = Vec::new();
    let mut consumed = Vec::new();
    for r in 0..args.runs {
        // A fresh driver per run: no state (caches, open files) carries over between runs.
        let mut opts = driver_opts.clone();
        let run_dir = match (&storage.temp, per_run_dirs) {
            (Some(t), true) => {
                let dir = t.path().join(format!("run-{r}"));
                std::fs::create_dir_all(&dir)
                    .map_err(|e| format!("creating {}: {e}", dir.display()))?;
                opts.insert("root_path".into(), path_value(dir.clone()));
                Some(dir)
            }
            _ => None,
        };
        let driver = new_driver(args, &opts)?;
        let topic_name = topic_name(args, &stamp, r);
        let topic = open_or_create(&driver, args, &generic, &topic_name)?;
        let label = format!("run {}/{}", r + 1, args.runs);
        let ceiling = measure_ceiling(args, &opts, &workload, &label, &config)?;
        let net_ceiling = measure_net_ceiling(args, &opts, &label, &config)?;
        settle(args, &opts)?;
        if args.mode != Mode::Consume {
            let mut p = produce(&topic, &workload, &produce_config(args, &generic))?;
            ceiling::attach(&mut p, ceiling.as_ref(), args.data_size);
            p.net_ceiling.clone_from(&net_ceiling);
            emit(args, &p, &label, Some(r), &config);
            produced.push(p);
        }
        if args.mode != Mode::Produce {
            let name = args
                .consumer_name
                .clone()
                .unwrap_or_else(|| format!("bench-consumer-{stamp}-r{r}"));
            settle(args, &opts)?;
            let mut c = consume(&topic, &consume_config(args, &generic, name))?;
            ceiling::attach(&mut c, ceiling.as_ref(), args.data_size);
            c.net_ceiling.clone_from(&net_ceiling);
            emit(args, &c, &label, Some(r), &config);
            consumed.push(c);
        }
        drop(topic);
        drop(driver);
        if let Some(dir) = run_dir {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                eprintln!("warning: could not remove {}: {e}", dir.display());
            }
        }
    }
    for phase in [&produced, &consumed] {
        if let Some(m) = median(phase) {
            emit(args, &m, "median", None, &config);
        }
    }
    drop(storage);
    Ok(())
}

/// Files driver: writes back what is dirty on the topic's file system before a phase (see
/// [`ceiling::settle`]), unless `--no-ceiling`.
fn settle(args: &Args, opts: &Map<String, Value>) -> Result<(), String> {
    if args.driver != "files" || args.no_ceiling {
        return Ok(());
    }
    let root = files_root(opts);
    if !root.exists() {
        return Ok(());
    }
    ceiling::settle(&root).map_err(|e| format!("syncfs of {}: {e}", root.display()))
}

fn files_root(opts: &Map<String, Value>) -> PathBuf {
    match opts.get("root_path") {
        Some(Value::String(r)) => PathBuf::from(r),
        _ => PathBuf::from("diaspora_data"),
    }
}

/// The files driver's ceiling for this run: sequential 1 MiB writes then reads of as many bytes
/// as the run produces, in the topic's root directory, measured just before the run and
/// printed. `None` for other drivers, with `--no-ceiling`, or when the byte count is unknown
/// (`consume --events 0`).
fn measure_ceiling(
    args: &Args,
    opts: &Map<String, Value>,
    workload: &Workload,
    label: &str,
    config: &Value,
) -> Result<Option<Ceiling>, String> {
    let root = files_root(opts);
    if args.driver != "files" || args.no_ceiling || args.events == 0 {
        return Ok(None);
    }
    std::fs::create_dir_all(&root).map_err(|e| format!("creating {}: {e}", root.display()))?;
    let c = ceiling::measure_files(
        &root,
        args.events * workload.event_bytes(),
        args.ceiling_call_size,
    )
    .map_err(|e| format!("measuring the ceiling in {}: {e}", root.display()))?;
    if args.json {
        println!(
            "{}",
            json!({"kind": "ceiling", "label": label, "ceiling": c.json(), "config": config})
        );
    } else {
        println!("{}", c.text(label));
    }
    Ok(Some(c))
}

/// Fabric driver with data: raw reads of one event's data size on the driver's provider, as
/// many bytes as the phase moves (see [`netceiling`]), unless `--no-ceiling`.
fn measure_net_ceiling(
    args: &Args,
    opts: &Map<String, Value>,
    label: &str,
    config: &Value,
) -> Result<Option<NetCeiling>, String> {
    if args.driver != "fabric" || args.no_ceiling || args.events == 0 || args.data_size == 0 {
        return Ok(None);
    }
    let provider = netceiling::provider(opts)?;
    let bytes = args.events.saturating_mul(args.data_size as u64);
    let c = netceiling::measure(&provider, args.data_size, bytes)
        .map_err(|e| format!("measuring the raw fi_read ceiling on {provider}: {e}"))?;
    if args.json {
        println!(
            "{}",
            json!({"kind": "net_ceiling", "label": label, "net_ceiling": c.json(), "config": config})
        );
    } else {
        println!("{}", c.text(label));
    }
    Ok(Some(c))
}

pub(crate) fn new_driver(args: &Args, opts: &Map<String, Value>) -> Result<Driver, String> {
    Driver::new(&args.driver, Value::Object(opts.clone()))
        .map_err(|e| format!("driver {:?}: {e}", args.driver))
}

pub(crate) fn path_value(p: PathBuf) -> Value {
    Value::String(p.to_string_lossy().into_owned())
}

/// Identifies this invocation, so topics and consumers of different invocations never clash.
fn unique_stamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("{secs}-{}", std::process::id())
}

/// `both` always uses a fresh topic; produce/consume use the given name (suffixed by the run
/// when repeating) so a later `consume` invocation finds what `produce` wrote.
fn topic_name(args: &Args, stamp: &str, run: u64) -> String {
    match (args.mode, args.runs) {
        (Mode::Both | Mode::Ranks, _) => format!("{}-{stamp}-r{run}", args.topic),
        (_, 1) => args.topic.clone(),
        _ => format!("{}-r{run}", args.topic),
    }
}

fn open_or_create(
    driver: &Driver,
    args: &Args,
    generic: &Generic,
    name: &str,
) -> Result<TopicHandle, String> {
    let exists = driver
        .topic_exists(name)
        .map_err(|e| format!("topic {name}: {e}"))?;
    if !exists {
        if args.mode == Mode::Consume {
            return Err(format!(
                "topic {name} does not exist (produce it first, with the same --driver options)"
            ));
        }
        let mut opts = Map::new();
        opts.insert("num_partitions".into(), args.partitions.into());
        opts.extend(generic.topic.clone());
        driver
            .create_topic(name, Value::Object(opts))
            .map_err(|e| format!("creating topic {name}: {e}"))?;
    }
    driver
        .open_topic(name)
        .map_err(|e| format!("opening topic {name}: {e}"))
}

/// Options shared by producer and consumer, overridden by `--producer.*` / `--consumer.*`.
fn common_options(
    args: &Args,
    threads: Option<usize>,
    extra: &Map<String, Value>,
) -> Map<String, Value> {
    let mut o = Map::new();
    o.insert("batch_size".into(), args.batch_size.clone());
    if let Some(n) = args.max_batches {
        o.insert("max_num_batches".into(), n.into());
    }
    if let Some(n) = threads {
        o.insert("thread_count".into(), n.into());
    }
    o.extend(extra.clone());
    o
}

pub(crate) fn produce_config(args: &Args, generic: &Generic) -> ProduceConfig {
    ProduceConfig {
        events: args.events,
        push_threads: args.push_threads,
        push_many: args.push_many,
        options: common_options(args, args.producer_threads, &generic.producer),
        mark_complete: !args.no_complete,
        partitions: None,
    }
}

pub(crate) fn consume_config(args: &Args, generic: &Generic, name: String) -> ConsumeConfig {
    ConsumeConfig {
        name,
        events: args.events,
        data_size: args.data_size,
        ack_every: args.ack_every,
        parse_metadata: args.parse_metadata,
        timeout_ms: args.timeout_ms,
        options: common_options(args, args.consumer_threads, &generic.consumer),
    }
}

fn emit(args: &Args, r: &PhaseResult, label: &str, run: Option<u64>, config: &Value) {
    if args.json {
        println!(
            "{}",
            r.json(if run.is_some() { "run" } else { "median" }, run, config)
        );
    } else {
        println!("{}", r.text(label));
    }
}

pub(crate) fn config_json(args: &Args, generic: &Generic) -> Value {
    json!({
        "mode": mode_name(args.mode),
        "driver": args.driver,
        "partitions": args.partitions,
        "events": args.events,
        "metadata_size": args.metadata_size,
        "data_size": args.data_size,
        "batch_size": args.batch_size,
        "max_batches": args.max_batches,
        "producer_threads": args.producer_threads,
        "consumer_threads": args.consumer_threads,
        "push_threads": args.push_threads,
        "push_many": args.push_many,
        "ack_every": args.ack_every,
        "runs": args.runs,
        "driver_options": generic.driver,
        "topic_options": generic.topic,
        "producer_options": generic.producer,
        "consumer_options": generic.consumer,
    })
}

fn print_header(args: &Args, w: &Workload, driver_opts: &Map<String, Value>, s: &Storage) {
    let storage = match &s.temp {
        Some(t) => format!(" (temporary: {})", t.path().display()),
        None => String::new(),
    };
    println!(
        "diaspora-bench {}: driver {} {}{storage}",
        mode_name(args.mode),
        args.driver,
        Value::Object(driver_opts.clone()),
    );
    println!(
        "  {} events x ({} B metadata {} + {} B data), {} partition(s), batch {}, max batches {}, \
         producer threads {}, consumer threads {}, push threads {}, events per push {}, {} run(s)",
        args.events,
        w.metadata.as_bytes().len(),
        w.metadata,
        w.data.len(),
        args.partitions,
        args.batch_size,
        args.max_batches.map_or("default".into(), |n| n.to_string()),
        args.producer_threads
            .map_or("default".into(), |n| n.to_string()),
        args.consumer_threads
            .map_or("default".into(), |n| n.to_string()),
        args.push_threads,
        args.push_many,
        args.runs,
    );
}

pub(crate) fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Produce => "produce",
        Mode::Consume => "consume",
        Mode::Both => "both",
        Mode::Ranks => "ranks",
    }
}
