//! Command-line arguments: clap options plus generic `--driver.KEY VALUE` style options.
//!
//! Generic options are removed from argv before clap sees it, so any driver, topic, producer or
//! consumer option can be passed without the benchmark knowing about it:
//! `--driver.root_path /tmp/x`, `--topic.serializer json`, `--producer.ordering=loose`.
//! Values are parsed as JSON when they are valid JSON (`3`, `true`, `[0,1]`) and taken as
//! strings otherwise; dotted keys nest (`--driver.a.b 1` gives `{"a":{"b":1}}`).

use clap::{Parser, ValueEnum};
use serde_json::{Map, Value};

/// What to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Push events into the topic.
    Produce,
    /// Pull events from the topic.
    Consume,
    /// Produce, then consume what was produced.
    Both,
    /// One process per rank (srun, mpirun, or --rank/--size): the first --producers ranks
    /// produce, the others consume, rank 0 aggregates (see `--run-dir`).
    Ranks,
}

/// Benchmark of a Diaspora Stream API driver: throughput of producing and consuming events.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "diaspora-bench",
    version,
    after_help = "Generic options (before or after the others):\n  \
        --driver.KEY VALUE     driver option (files driver: --driver.root_path DIR; \
        without it a temporary directory is used and removed at exit)\n  \
        --topic.KEY VALUE      topic creation option\n  \
        --producer.KEY VALUE   producer option (e.g. --producer.ordering loose)\n  \
        --consumer.KEY VALUE   consumer option"
)]
pub struct Args {
    /// Phase(s) to run.
    #[arg(value_enum, default_value_t = Mode::Both)]
    pub mode: Mode,

    /// Name of the driver ("files", or "memory": an in-process baseline without storage).
    #[arg(long, default_value = "files")]
    pub driver: String,

    /// Topic name (created if missing). With `both`, or with --runs > 1, each run uses its own
    /// topic derived from this name.
    #[arg(long, default_value = "bench")]
    pub topic: String,

    /// Number of partitions of a created topic.
    #[arg(long, default_value_t = 1)]
    pub partitions: usize,

    /// Events per run (consume: 0 reads until the end of a completed topic).
    #[arg(long, default_value_t = 100_000)]
    pub events: u64,

    /// Size in bytes of each event's JSON metadata (at least 2).
    #[arg(long, default_value_t = 30)]
    pub metadata_size: usize,

    /// Size in bytes of each event's data.
    #[arg(long, default_value_t = 0)]
    pub data_size: usize,

    /// Events per batch, for producer and consumer: "adaptive" or a positive integer.
    #[arg(long, default_value = "adaptive", value_parser = parse_batch_size)]
    pub batch_size: Value,

    /// Maximum number of batches in flight (producer) or prefetched (consumer).
    #[arg(long)]
    pub max_batches: Option<usize>,

    /// Threads of the producer's thread pool (0: inline; default: the driver's choice).
    #[arg(long)]
    pub producer_threads: Option<usize>,

    /// Threads of the consumer's thread pool (0: inline; default: the driver's choice).
    #[arg(long)]
    pub consumer_threads: Option<usize>,

    /// Application threads pushing concurrently through clones of one producer.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub push_threads: u64,

    /// Events per push call: 1 pushes them one by one (`Producer::push`), more pushes them in
    /// groups of this many with `Producer::push_many` (one future per group).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub push_many: u64,

    /// Number of repetitions; each run is reported, then the median.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub runs: u64,

    /// Print one JSON object per line instead of text.
    #[arg(long)]
    pub json: bool,

    /// Acknowledge every N-th event (0: only the last event of each partition, at the end).
    #[arg(long, default_value_t = 0)]
    pub ack_every: u64,

    /// Consumer name (default: unique per run, so every run reads from the start).
    #[arg(long)]
    pub consumer_name: Option<String>,

    /// Give up when no event arrives for this long (milliseconds).
    #[arg(long, default_value_t = 60_000)]
    pub timeout_ms: i64,

    /// Parse each consumed event's metadata (Metadata::json) instead of only measuring it.
    #[arg(long)]
    pub parse_metadata: bool,

    /// Do not mark the topic complete after producing.
    #[arg(long)]
    pub no_complete: bool,

    /// ranks: how many ranks produce (the first ones); the others consume (default: half,
    /// rounded up; a job of one rank produces, then consumes).
    #[arg(long)]
    pub producers: Option<u32>,

    /// ranks: directory where the ranks meet (shared by every rank; created if missing).
    #[arg(long)]
    pub run_dir: Option<std::path::PathBuf>,

    /// ranks: this process's rank, instead of detecting it from the launcher (with --size).
    #[arg(long, requires = "size")]
    pub rank: Option<u32>,

    /// ranks: the number of ranks, instead of detecting it from the launcher (with --rank).
    #[arg(long, requires = "rank")]
    pub size: Option<u32>,

    /// ranks: names this run in the run directory (default: DIASPORA_RUN_ID, else the
    /// launcher's job and step).
    #[arg(long)]
    pub run_id: Option<String>,

    /// ranks: consumers pull while producers push (default: consumers start once every
    /// producer has flushed).
    #[arg(long)]
    pub concurrent: bool,

    /// ranks: how long a rank waits for the others at each step, in seconds.
    #[arg(long, default_value_t = 300)]
    pub rendezvous_timeout_s: u64,

    /// ranks: rank 0 writes the aggregated results (JSON) to this file.
    #[arg(long)]
    pub results: Option<std::path::PathBuf>,
    /// Skip the ceiling (files driver: sequential 1 MiB writes then reads of the same number of
    /// bytes on a scratch file next to the topic, measured before each run, each result shown
    /// as a ratio of it), and the `syncfs` that settles the file system before each of its
    /// passes and each phase. Fabric driver with data: raw `fi_read`s of one event's data
    /// size, 8 in flight, on the driver's provider, into reused buffers and into fresh memory
    /// (as many bytes as a phase moves, at most 1 and 4 GiB; best of 3 and 2 passes).
    #[arg(long)]
    pub no_ceiling: bool,

    /// Bytes per `write`/`read` call of the ceiling (1 MiB is the reference).
    #[arg(long, default_value_t = crate::ceiling::CHUNK, value_parser = parse_call_size)]
    pub ceiling_call_size: usize,
}

fn parse_call_size(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=1 << 30).contains(&n) => Ok(n),
        _ => Err(format!(
            "{s:?} is not a call size in bytes between 1 and 1 GiB"
        )),
    }
}

fn parse_batch_size(s: &str) -> Result<Value, String> {
    if s == "adaptive" {
        return Ok(Value::from("adaptive"));
    }
    match s.parse::<u64>() {
        Ok(n) if n > 0 => Ok(Value::from(n)),
        _ => Err(format!(
            "{s:?} is neither \"adaptive\" nor a positive integer"
        )),
    }
}

/// The generic `--PREFIX.KEY VALUE` options found in argv.
#[derive(Debug, Default, Clone)]
pub struct Generic {
    /// `--driver.*`
    pub driver: Map<String, Value>,
    /// `--topic.*`
    pub topic: Map<String, Value>,
    /// `--producer.*`
    pub producer: Map<String, Value>,
    /// `--consumer.*`
    pub consumer: Map<String, Value>,
}

impl Generic {
    fn scope(&mut self, prefix: &str) -> Option<&mut Map<String, Value>> {
        match prefix {
            "driver" => Some(&mut self.driver),
            "topic" => Some(&mut self.topic),
            "producer" => Some(&mut self.producer),
            "consumer" => Some(&mut self.consumer),
            _ => None,
        }
    }
}

/// Splits argv into generic options and what is left for clap.
pub fn split_generic(argv: Vec<String>) -> Result<(Generic, Vec<String>), String> {
    let mut generic = Generic::default();
    let mut rest = Vec::with_capacity(argv.len());
    let mut it = argv.into_iter();
    while let Some(arg) = it.next() {
        if arg == "--" {
            rest.push(arg);
            rest.extend(it.by_ref());
            break;
        }
        let Some(body) = arg.strip_prefix("--") else {
            rest.push(arg);
            continue;
        };
        let Some((prefix, key_and_value)) = body.split_once('.') else {
            rest.push(arg);
            continue;
        };
        let Some(scope) = generic.scope(prefix) else {
            rest.push(arg);
            continue;
        };
        let (key, value) = match key_and_value.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => {
                let v = it
                    .next()
                    .ok_or_else(|| format!("option --{prefix}.{key_and_value} needs a value"))?;
                (key_and_value.to_owned(), v)
            }
        };
        if key.is_empty() || key.split('.').any(str::is_empty) {
            return Err(format!("invalid option name --{prefix}.{key}"));
        }
        insert_dotted(scope, &key, parse_value(&value));
    }
    Ok((generic, rest))
}

fn parse_value(v: &str) -> Value {
    serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_owned()))
}

fn insert_dotted(map: &mut Map<String, Value>, key: &str, value: Value) {
    match key.split_once('.') {
        None => {
            map.insert(key.to_owned(), value);
        }
        Some((head, tail)) => {
            let entry = map
                .entry(head.to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            if let Value::Object(inner) = entry {
                insert_dotted(inner, tail, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn generic_options_are_extracted() {
        let (g, rest) = split_generic(argv(
            "bench produce --driver.root_path /tmp/x --events 5 --topic.a.b=3 --producer.ordering loose",
        ))
        .expect("ok");
        assert_eq!(rest, argv("bench produce --events 5"));
        assert_eq!(g.driver["root_path"], "/tmp/x");
        assert_eq!(g.topic["a"]["b"], 3);
        assert_eq!(g.producer["ordering"], "loose");
    }

    #[test]
    fn missing_value_is_an_error() {
        assert!(split_generic(argv("bench --driver.root_path")).is_err());
        assert!(split_generic(argv("bench --driver..x 1")).is_err());
    }

    #[test]
    fn clap_parses_defaults_and_batch_size() {
        let a = Args::try_parse_from(argv("bench")).expect("ok");
        assert_eq!(a.mode, Mode::Both);
        assert_eq!(a.batch_size, Value::from("adaptive"));
        let a = Args::try_parse_from(argv("bench consume --batch-size 64")).expect("ok");
        assert_eq!(a.mode, Mode::Consume);
        assert_eq!(a.batch_size, Value::from(64));
        assert!(Args::try_parse_from(argv("bench --batch-size 0")).is_err());
    }
}
