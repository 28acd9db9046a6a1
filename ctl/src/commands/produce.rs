//! `produce`: pushes `--count` copies of `--metadata`, or one event per line of standard input.

use std::collections::VecDeque;
use std::fmt;
use std::io::BufRead;

use diaspora_api::{
    validate_topic_name, Bytes, EventId, Future, Metadata, Producer, ProducerOptions, Value,
};

use crate::cli::ProduceArgs;
use crate::error::CliError;
use crate::options::{PreScan, Scope};

use super::{open_topic, print_line};

/// Events pushed but not yet known to be stored; beyond this the producer is flushed so memory
/// stays bounded whatever `--count` is.
const MAX_PENDING: usize = 1 << 16;

/// Where an event came from, for error messages.
#[derive(Clone, Copy, Debug)]
enum Origin {
    /// The n-th event (1-based) of a `--count` run.
    Event(u64),
    /// A line (1-based) of standard input.
    Line(u64),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Event(n) => write!(f, "event {n}"),
            Origin::Line(n) => write!(f, "line {n} of standard input"),
        }
    }
}

/// Runs `produce`.
pub fn run(args: ProduceArgs, mut scan: PreScan) -> Result<(), CliError> {
    scan.reject_unused(&[Scope::Driver, Scope::Producer], "produce")?;
    validate_topic_name(&args.topic.name)?;
    let options = ProducerOptions::from_json(&Value::Object(scan.take(Scope::Producer)))?;
    let metadata = if args.stdin {
        None
    } else {
        Some(
            Metadata::from_json_str(&args.metadata)
                .map_err(|e| CliError::api("invalid --metadata", e))?,
        )
    };
    let topic = open_topic(&args.topic.driver, &args.topic.name, &mut scan)?;
    // The API reserves Error::TopicComplete for this; not every driver checks it on push.
    if topic.is_complete()? {
        return Err(diaspora_api::Error::TopicComplete(args.topic.name).into());
    }
    let producer = topic.producer_with("diaspora-ctl", options)?;
    let data = Bytes::from(pattern(args.data_size));
    let mut pusher = Pusher::new(producer, args.partition);

    let pushed = match metadata {
        Some(metadata) => {
            let mut result = Ok(());
            for i in 1..=args.count {
                result = pusher.push(metadata.clone(), data.clone(), Origin::Event(i));
                if result.is_err() {
                    break;
                }
            }
            result
        }
        None => push_lines(&mut pusher, &data),
    };
    let produced = pusher.finish(pushed)?;
    let plural = if produced == 1 { "" } else { "s" };
    print_line(format_args!("produced {produced} event{plural}"))
}

/// Pushes one event per non-blank line of standard input.
fn push_lines(pusher: &mut Pusher, data: &Bytes) -> Result<(), CliError> {
    let stdin = std::io::stdin().lock();
    for (index, line) in (1u64..).zip(stdin.lines()) {
        let line = line.map_err(|source| CliError::Io {
            context: "cannot read standard input",
            source,
        })?;
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        let origin = Origin::Line(index);
        let metadata =
            Metadata::from_json_str(text).map_err(|e| CliError::api(origin.to_string(), e))?;
        pusher.push(metadata, data.clone(), origin)?;
    }
    Ok(())
}

/// Event data of `size` bytes: a recognisable repeating pattern.
fn pattern(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i % 251) as u8).collect()
}

/// Pushes events and keeps track of their futures, reporting the first failure.
struct Pusher {
    producer: Producer,
    partition: Option<usize>,
    pending: VecDeque<(Origin, Future<EventId>)>,
    stored: u64,
}

impl Pusher {
    fn new(producer: Producer, partition: Option<usize>) -> Self {
        Pusher {
            producer,
            partition,
            pending: VecDeque::new(),
            stored: 0,
        }
    }

    /// Pushes one event; fails if it (or an earlier one) was rejected.
    fn push(&mut self, metadata: Metadata, data: Bytes, origin: Origin) -> Result<(), CliError> {
        let future = match self.partition {
            Some(p) => self.producer.push_to(p, metadata, data),
            None => self.producer.push(metadata, data),
        };
        self.pending.push_back((origin, future));
        if self.pending.len() >= MAX_PENDING {
            self.flush()?;
        }
        self.settle(false)
    }

    /// Sends everything queued and waits until it is stored.
    fn flush(&mut self) -> Result<(), CliError> {
        self.producer
            .flush()
            .get()
            .map_err(|e| CliError::api("flush failed", e))
    }

    /// Collects the results of completed pushes (all of them if `all`), oldest first.
    fn settle(&mut self, all: bool) -> Result<(), CliError> {
        while let Some((_, front)) = self.pending.front() {
            if !all && !front.is_ready() {
                break;
            }
            let Some((origin, future)) = self.pending.pop_front() else {
                break;
            };
            future
                .get()
                .map_err(|e| CliError::api(origin.to_string(), e))?;
            self.stored += 1;
        }
        Ok(())
    }

    /// Flushes, waits for every push and returns how many events were stored. If pushing
    /// stopped on an error (`pushed`), events already queued are still flushed and counted,
    /// and the error is returned with that count.
    fn finish(mut self, pushed: Result<(), CliError>) -> Result<u64, CliError> {
        let flushed = self.flush();
        let mut first_error = pushed.and(flushed).err();
        // Keep settling after a failed future so the count covers every stored event.
        while !self.pending.is_empty() {
            if let Err(e) = self.settle(true) {
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            None => Ok(self.stored),
            Some(source) => Err(CliError::Partial {
                produced: self.stored,
                source: Box::new(source),
            }),
        }
    }
}
