//! `diaspora-ctl forward --config F`: a daemon that forwards events between topics, across
//! drivers (see [`config`] for the file).
//!
//! One worker thread per policy, with its own consumer on the source (all data fetched) and
//! producer on the destination. Events are pushed to the destination in batches; the source
//! acknowledgement of an event is written only after the destination's flush returned and
//! its push succeeded: a crash or kill loses nothing, and events pushed but not yet
//! acknowledged are forwarded again by the next run (at least once: the destination may see
//! duplicates, never gaps). A push or flush that fails is retried with backoff (100 ms
//! doubling to 5 s) until it succeeds or the daemon is stopped; a worker stopped with a
//! failed event acknowledges nothing from it on, and the daemon exits with 1. SIGTERM/SIGINT
//! flushes every destination and acknowledges what was stored. A worker whose source topic
//! is complete and fully forwarded stops (the destination is not marked complete).

pub mod config;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Duration;

use diaspora_api::{
    select_all, validate_consumer_name, Consumer, ConsumerOptions, Driver, Error, Event, EventId,
    Future, Producer,
};

use crate::daemon::{self, log, stopping, Level};
use crate::error::CliError;
use crate::options::PreScan;
use config::{ForwardConfig, Policy};

/// Events pushed before the destination is flushed and the source acknowledged.
const BATCH: usize = 256;
/// How long a worker waits for a source event before flushing what it has.
const TICK_MS: i64 = 100;

/// Arguments of `forward`.
#[derive(Debug, clap::Args)]
pub struct ForwardArgs {
    /// The configuration: YAML (as upstream) or JSON, see `diaspora-ctl forward --help`.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Messages on stderr at this level and above.
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    pub logging: Level,
}

/// Runs the daemon until SIGTERM or SIGINT (or every source is complete and forwarded).
pub fn run(args: ForwardArgs, scan: PreScan) -> Result<(), CliError> {
    scan.reject_unused(&[], "forward")?;
    daemon::set_level(args.logging);
    let text = std::fs::read_to_string(&args.config).map_err(|source| CliError::Daemon {
        context: format!("cannot read {}", args.config.display()),
        source,
    })?;
    let config = config::parse(&text)
        .map_err(|e| CliError::DaemonFailed(format!("{}: {e}", args.config.display())))?;
    daemon::install_stop_handlers().map_err(|source| CliError::Daemon {
        context: "cannot install SIGTERM/SIGINT handlers".into(),
        source,
    })?;
    let workers = start(&config)?;
    let mut failures = Vec::new();
    for (name, worker) in workers {
        match worker.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push(format!("{name}: {e}")),
            Err(_) => failures.push(format!("{name}: its thread panicked")),
        }
    }
    if failures.is_empty() {
        log(Level::Info, format_args!("stopped"));
        Ok(())
    } else {
        for f in &failures {
            log(Level::Error, format_args!("{f}"));
        }
        Err(CliError::DaemonFailed(failures.join("; ")))
    }
}

type Worker = (String, std::thread::JoinHandle<Result<(), String>>);

/// Opens every driver, topic, consumer and producer (any failure stops the daemon before it
/// forwards anything), then starts one thread per policy.
fn start(config: &ForwardConfig) -> Result<Vec<Worker>, CliError> {
    let mut drivers = std::collections::BTreeMap::new();
    for (name, spec) in &config.drivers {
        let driver = Driver::new(&spec.kind, spec.options.clone())
            .map_err(|e| CliError::api(format!("driver {name} ({})", spec.kind), e))?;
        drivers.insert(name.clone(), driver);
    }
    let mut prepared = Vec::new();
    for policy in &config.policies {
        let name = format!("{} -> {}", policy.from, policy.to);
        let context = |e| CliError::api(name.clone(), e);
        validate_consumer_name(&policy.consumer).map_err(context)?;
        let source = drivers[&policy.from.driver]
            .open_topic(&policy.from.topic)
            .map_err(context)?;
        let dest = drivers[&policy.to.driver]
            .open_topic(&policy.to.topic)
            .map_err(context)?;
        let consumer = source
            .consumer_with(
                &policy.consumer,
                ConsumerOptions {
                    data_selector: Some(select_all()),
                    ..Default::default()
                },
            )
            .map_err(context)?;
        let producer = dest
            .producer_with("diaspora-ctl-forward", Default::default())
            .map_err(context)?;
        prepared.push((name, policy.clone(), consumer, producer));
    }
    let mut workers = Vec::new();
    for (name, policy, consumer, producer) in prepared {
        log(
            Level::Info,
            format_args!("{name}: forwarding (consumer {})", policy.consumer),
        );
        let thread = std::thread::Builder::new()
            .name(format!("forward {name}"))
            .spawn(move || forward(&policy, &consumer, &producer))
            .map_err(|source| CliError::Daemon {
                context: "cannot start a worker thread".into(),
                source,
            })?;
        workers.push((name, thread));
    }
    Ok(workers)
}

/// Events pushed to the destination, not yet acknowledged on the source.
struct InFlight<'a> {
    name: String,
    producer: &'a Producer,
    pending: VecDeque<(Event, Future<EventId>)>,
    forwarded: u64,
}

impl InFlight<'_> {
    /// Flushes the destination, then acknowledges, in order, every event it stored; a failed
    /// event is pushed again (with backoff) until stored or the daemon stops.
    fn settle(&mut self) -> Result<(), String> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut backoff = Duration::from_millis(100);
        while let Err(e) = self.producer.flush().get() {
            log(
                Level::Warn,
                format_args!("{}: flush failed, retrying: {e}", self.name),
            );
            if !sleep_unless_stopping(&mut backoff) {
                break;
            }
        }
        while let Some((event, future)) = self.pending.pop_front() {
            let mut result = future.get();
            let mut backoff = Duration::from_millis(100);
            while let Err(e) = &result {
                log(
                    Level::Warn,
                    format_args!(
                        "{}: event {} of partition {} not stored, retrying: {e}",
                        self.name,
                        event.id(),
                        event.partition()
                    ),
                );
                if !sleep_unless_stopping(&mut backoff) {
                    let e = format!(
                        "event {} of partition {} could not be stored ({e}); it and the \
                         events after it are not acknowledged and will be forwarded again",
                        event.id(),
                        event.partition()
                    );
                    self.pending.clear();
                    return Err(e);
                }
                let retry = self
                    .producer
                    .push(event.metadata().clone(), event.data().clone());
                let _ = self.producer.flush().get();
                result = retry.get();
            }
            event
                .acknowledge()
                .map_err(|e| format!("cannot acknowledge on the source: {e}"))?;
            self.forwarded += 1;
        }
        Ok(())
    }
}

/// Sleeps `backoff` (then doubles it, up to 5 s) in short steps; false if stopping.
fn sleep_unless_stopping(backoff: &mut Duration) -> bool {
    let until = std::time::Instant::now() + *backoff;
    while std::time::Instant::now() < until {
        if stopping() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    *backoff = (*backoff * 2).min(Duration::from_secs(5));
    !stopping()
}

fn forward(policy: &Policy, consumer: &Consumer, producer: &Producer) -> Result<(), String> {
    let mut in_flight = InFlight {
        name: format!("{} -> {}", policy.from, policy.to),
        producer,
        pending: VecDeque::new(),
        forwarded: 0,
    };
    let mut pull = consumer.pull();
    let outcome = loop {
        if stopping() {
            break Ok(());
        }
        let event = match pull.wait(TICK_MS) {
            Ok(None) => match in_flight.settle() {
                Ok(()) => continue,
                Err(e) => break Err(e),
            },
            Ok(Some(event)) => event,
            Err(Error::EventFailed {
                partition,
                id,
                source,
            }) => {
                // A damaged source event cannot be forwarded; it is reported, and skipped
                // once everything before it is stored.
                log(
                    Level::Error,
                    format_args!(
                        "{}: damaged source event: partition {partition} event {id}: {source}",
                        in_flight.name
                    ),
                );
                if let Err(e) = in_flight.settle() {
                    break Err(e);
                }
                if let Err(e) = consumer.acknowledge(partition, id) {
                    break Err(format!("cannot acknowledge on the source: {e}"));
                }
                pull = consumer.pull();
                continue;
            }
            Err(e) => break Err(format!("pull failed: {e}")),
        };
        pull = consumer.pull();
        if event.is_no_more_events() {
            log(
                Level::Info,
                format_args!("{}: source topic complete", in_flight.name),
            );
            break Ok(());
        }
        let future = producer.push(event.metadata().clone(), event.data().clone());
        in_flight.pending.push_back((event, future));
        if in_flight.pending.len() >= BATCH {
            if let Err(e) = in_flight.settle() {
                break Err(e);
            }
        }
    };
    let settled = in_flight.settle();
    log(
        Level::Info,
        format_args!(
            "{}: stopped, {} event(s) forwarded",
            in_flight.name, in_flight.forwarded
        ),
    );
    outcome.and(settled)
}
