//! `diaspora-ctl fifo`: a daemon bridging named pipes and topics, so a code (Fortran, shell)
//! can stream without linking the library.
//!
//! The daemon creates the control FIFO and reads commands from it (see [`control`]): `path ->
//! topic` creates FIFO `path`, whose lines become events; `path <- topic` writes the topic's
//! events' metadata to the existing FIFO `path`, one line each. Every FIFO is served by its
//! own thread; readers hold a write end of their FIFO so writers can come and go (each
//! `echo > fifo` is a writer). A bad line or command is reported on stderr and skipped. On
//! SIGTERM/SIGINT every producer FIFO is drained and flushed, every future settled, then the
//! daemon exits (0, or 1 if an event could not be stored); FIFOs it created are removed.
//!
//! A consumer FIFO acknowledges an event only once its whole line has been read out of the
//! pipe; lines a reader did not read when it went away are written again, whole, to the next
//! reader; events not yet read at shutdown are not acknowledged, so the next daemon (same
//! consumer name) delivers them again: at least once, never lost.

pub mod control;
pub mod lines;
mod outlet;
mod pipe;

use std::collections::{HashSet, VecDeque};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::Duration;

use diaspora_api::{
    json, validate_consumer_name, Consumer, ConsumerOptions, Driver, Error, Event, EventId, Future,
    Metadata, Producer, ProducerOptions, Value,
};

use crate::cli::FifoArgs;
use crate::commands::open_driver;
use crate::daemon::{self, log, stopping, Level};
use crate::error::CliError;
use crate::options::{PreScan, Scope};
use control::{BatchSize, ControlCommand, Direction, Format};
use lines::{LineSplitter, Piece, MAX_LINE};
use outlet::{Outlet, Undelivered};

/// Pending pushes beyond which a producer FIFO flushes (bounds memory).
const MAX_PENDING: usize = 4096;

type Worker = (PathBuf, JoinHandle<Result<(), String>>);

/// Runs the daemon until SIGTERM or SIGINT.
pub fn run(args: FifoArgs, mut scan: PreScan) -> Result<(), CliError> {
    scan.reject_unused(&[Scope::Driver], "fifo")?;
    daemon::set_level(args.logging);
    daemon::install_stop_handlers().map_err(|source| CliError::Daemon {
        context: "cannot install SIGTERM/SIGINT handlers".into(),
        source,
    })?;
    let driver = open_driver(&args.driver, &mut scan)?;
    let control_path = args.control_file;
    let setup = |context: &str, source| CliError::Daemon {
        context: format!("control file {}: {context}", control_path.display()),
        source,
    };
    let created = pipe::make_fifo(&control_path).map_err(|e| setup("cannot create it", e))?;
    let control = pipe::open_reader(&control_path).map_err(|e| setup("cannot open it", e))?;
    log(
        Level::Info,
        format_args!(
            "listening on {}: send `<path> -> <topic> [(options)]` or `<path> <- <topic> [(options)]`",
            control_path.display()
        ),
    );
    let mut daemon = Daemon {
        driver,
        workers: Vec::new(),
        created: Vec::new(),
        paths: HashSet::new(),
    };
    let read = read_lines(&control, "control file", |line| daemon.command(line));
    let failures = daemon.shutdown();
    if created {
        let _ = std::fs::remove_file(&control_path);
    }
    read.map_err(|e| setup("read failed", e))?;
    if failures.is_empty() {
        log(Level::Info, format_args!("stopped"));
        Ok(())
    } else {
        Err(CliError::DaemonFailed(failures.join("; ")))
    }
}

struct Daemon {
    driver: Driver,
    workers: Vec<Worker>,
    created: Vec<PathBuf>,
    paths: HashSet<PathBuf>,
}

impl Daemon {
    fn command(&mut self, line: &str) {
        let command = match control::parse(line) {
            Ok(Some(command)) => command,
            Ok(None) => return,
            Err(e) => {
                log(
                    Level::Error,
                    format_args!("control command {line:?} skipped: {e}"),
                );
                return;
            }
        };
        log(Level::Debug, format_args!("control command {line:?}"));
        if self.paths.contains(&command.path) {
            log(
                Level::Error,
                format_args!(
                    "control command {line:?} skipped: {} is already served",
                    command.path.display()
                ),
            );
            return;
        }
        match self.start(&command) {
            Ok(worker) => {
                self.paths.insert(command.path.clone());
                self.workers.push((command.path, worker));
            }
            Err(e) => log(
                Level::Error,
                format_args!("control command {line:?} skipped: {e}"),
            ),
        }
    }

    fn start(
        &mut self,
        command: &ControlCommand,
    ) -> Result<JoinHandle<Result<(), String>>, String> {
        let topic = self
            .driver
            .open_topic(&command.topic)
            .map_err(|e| format!("topic {}: {e}", command.topic))?;
        let batch = command.batch_size.map(|b| match b {
            BatchSize::Adaptive => json!("adaptive"),
            BatchSize::Fixed(n) => json!(n),
        });
        let options = match batch {
            Some(b) => json!({ "batch_size": b }),
            None => json!({}),
        };
        let command = command.clone();
        let path = command.path.display().to_string();
        match command.direction {
            Direction::Produce => {
                let options = ProducerOptions::from_json(&options).map_err(|e| e.to_string())?;
                let producer = topic
                    .producer_with("diaspora-ctl-fifo", options)
                    .map_err(|e| e.to_string())?;
                if pipe::make_fifo(&command.path).map_err(|e| format!("{path}: {e}"))? {
                    self.created.push(command.path.clone());
                }
                let fifo = pipe::open_reader(&command.path).map_err(|e| format!("{path}: {e}"))?;
                log(
                    Level::Info,
                    format_args!("{path} -> {}: ready", command.topic),
                );
                spawn(&path, move || produce(&command, &fifo, producer))
            }
            Direction::Consume => {
                let name = command
                    .consumer
                    .clone()
                    .unwrap_or_else(|| default_consumer_name(&command.path));
                validate_consumer_name(&name).map_err(|e| e.to_string())?;
                let options = ConsumerOptions::from_json(&options).map_err(|e| e.to_string())?;
                let consumer = topic
                    .consumer_with(&name, options)
                    .map_err(|e| e.to_string())?;
                log(
                    Level::Info,
                    format_args!("{path} <- {} (consumer {name}): started", command.topic),
                );
                spawn(&path, move || consume(&command, &consumer))
            }
        }
    }

    /// Stops every worker (they see the stop flag), waits for them; returns their failures.
    fn shutdown(self) -> Vec<String> {
        daemon::request_stop();
        let mut failures = Vec::new();
        for (path, worker) in self.workers {
            let outcome = worker
                .join()
                .unwrap_or_else(|_| Err("its thread panicked".to_owned()));
            if let Err(e) = outcome {
                log(Level::Error, format_args!("{}: {e}", path.display()));
                failures.push(format!("{}: {e}", path.display()));
            }
        }
        for path in self.created {
            let _ = std::fs::remove_file(path);
        }
        failures
    }
}

fn spawn(
    path: &str,
    f: impl FnOnce() -> Result<(), String> + Send + 'static,
) -> Result<JoinHandle<Result<(), String>>, String> {
    std::thread::Builder::new()
        .name(format!("fifo {path}"))
        .spawn(f)
        .map_err(|e| format!("cannot start a thread: {e}"))
}

/// `fifo-<file name>`, keeping only the characters consumer names allow.
fn default_consumer_name(path: &Path) -> String {
    let base = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let clean: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    format!("fifo-{clean}")
}

/// Reads lines from `fifo` until the stop flag is seen and the pipe is empty; calls `on_line`
/// for each (over-long and non-UTF-8 lines are reported and skipped). `what` names the FIFO
/// in reports.
fn read_lines(fifo: &File, what: &str, mut on_line: impl FnMut(&str)) -> std::io::Result<()> {
    read_lines_idle(fifo, what, |line| on_line(line), || {})
}

/// [`read_lines`], calling `on_idle` whenever the pipe was found empty.
fn read_lines_idle(
    mut fifo: &File,
    what: &str,
    mut on_line: impl FnMut(&str),
    mut on_idle: impl FnMut(),
) -> std::io::Result<()> {
    let mut splitter = LineSplitter::new(MAX_LINE);
    let mut buf = vec![0u8; 64 * 1024];
    let mut number = 0u64;
    let mut handle = |piece: Piece<'_>| {
        number += 1;
        match piece {
            Piece::Line(bytes) => match std::str::from_utf8(bytes) {
                Ok(text) => on_line(text),
                Err(e) => log(
                    Level::Error,
                    format_args!("{what}: line {number} skipped: not UTF-8 ({e})"),
                ),
            },
            Piece::TooLong(n) => log(
                Level::Error,
                format_args!("{what}: line {number} skipped: {n} bytes, longer than {MAX_LINE}"),
            ),
        }
    };
    loop {
        let stop = stopping();
        let ready = pipe::wait(fifo, libc::POLLIN, if stop { 0 } else { pipe::TICK_MS })?;
        let mut drained = ready == 0;
        if ready != 0 {
            match fifo.read(&mut buf) {
                Ok(0) => drained = true,
                Ok(n) => splitter.feed(&buf[..n], &mut handle),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => drained = true,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if drained {
            if stop {
                splitter.finish(&mut handle);
                return Ok(());
            }
            on_idle();
        }
    }
}

/// The pushes of a producer FIFO not yet known to be stored, and counts.
struct Pushes<'a> {
    path: &'a str,
    producer: Producer,
    pending: VecDeque<(u64, Future<EventId>)>,
    stored: u64,
    failed: u64,
}

impl Pushes<'_> {
    fn push(&mut self, line: u64, metadata: Metadata) {
        self.pending
            .push_back((line, self.producer.push(metadata, Vec::<u8>::new())));
        if self.pending.len() >= MAX_PENDING {
            self.settle();
        }
    }

    /// Flushes and reports every pending push's outcome.
    fn settle(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let path = self.path;
        if let Err(e) = self.producer.flush().get() {
            log(Level::Error, format_args!("{path}: flush failed: {e}"));
        }
        for (line, future) in self.pending.drain(..) {
            match future.get() {
                Ok(id) => {
                    self.stored += 1;
                    log(
                        Level::Trace,
                        format_args!("{path}: line {line} stored as event {id}"),
                    );
                }
                Err(e) => {
                    self.failed += 1;
                    log(
                        Level::Error,
                        format_args!("{path}: line {line} not stored: {e}"),
                    );
                }
            }
        }
    }
}

/// Serves a `path -> topic` FIFO until shutdown.
fn produce(command: &ControlCommand, fifo: &File, producer: Producer) -> Result<(), String> {
    let path = command.path.display().to_string();
    let pushes = std::cell::RefCell::new(Pushes {
        path: &path,
        producer,
        pending: VecDeque::new(),
        stored: 0,
        failed: 0,
    });
    let mut number = 0u64;
    let read = read_lines_idle(
        fifo,
        &path,
        |text| {
            number += 1;
            if text.trim().is_empty() {
                return;
            }
            let metadata = match command.format {
                Format::Raw => Metadata::from_value(Value::String(text.to_owned())),
                Format::Json => match Metadata::from_json_str(text) {
                    Ok(m) => m,
                    Err(e) => {
                        log(
                            Level::Error,
                            format_args!("{path}: line {number} skipped: {e}"),
                        );
                        return;
                    }
                },
            };
            pushes.borrow_mut().push(number, metadata);
        },
        || pushes.borrow_mut().settle(),
    );
    let mut pushes = pushes.into_inner();
    pushes.settle();
    log(
        Level::Info,
        format_args!(
            "{path} -> {}: stopped, {} event(s) stored",
            command.topic, pushes.stored
        ),
    );
    read.map_err(|e| format!("read failed: {e}"))?;
    if pushes.failed > 0 {
        return Err(format!("{} line(s) could not be stored", pushes.failed));
    }
    Ok(())
}

/// Serves a `path <- topic` FIFO until shutdown or the end of a complete topic.
fn consume(command: &ControlCommand, consumer: &Consumer) -> Result<(), String> {
    let path = command.path.display().to_string();
    let mut outlet = Outlet::new(&command.path);
    let mut pull = consumer.pull();
    let outcome = loop {
        if stopping() {
            break Ok(());
        }
        let event = match pull.wait(i64::from(pipe::TICK_MS)) {
            Ok(None) => match outlet.tend() {
                Ok(()) => continue,
                Err(Undelivered::Stopping) => break Ok(()),
                Err(Undelivered::Failed(e)) => break Err(e),
            },
            Ok(Some(event)) => event,
            Err(Error::EventFailed {
                partition,
                id,
                source,
            }) => {
                log(
                    Level::Error,
                    format_args!(
                        "{path}: damaged event: partition {partition} event {id}: {source}"
                    ),
                );
                if let Err(e) = consumer.acknowledge(partition, id) {
                    log(
                        Level::Error,
                        format_args!("{path}: cannot acknowledge: {e}"),
                    );
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
                format_args!(
                    "{path} <- {}: topic complete, all events written",
                    command.topic
                ),
            );
            break Ok(());
        }
        let mut line = render(&event, command.format);
        line.push('\n');
        outlet.queue(event, line);
        match outlet.pump() {
            Ok(()) => {}
            Err(Undelivered::Stopping) => break Ok(()),
            Err(Undelivered::Failed(e)) => break Err(e),
        }
    };
    // Give the reader a moment to read what is in the pipe, so it is acknowledged.
    let until = std::time::Instant::now() + Duration::from_millis(500);
    while outlet.has_unread() && std::time::Instant::now() < until {
        outlet.acknowledge_read();
        std::thread::sleep(Duration::from_millis(10));
    }
    log(
        Level::Info,
        format_args!(
            "{path} <- {}: stopped, {} event(s) read from the FIFO and acknowledged, {} not \
             (they are delivered again to the next consumer of that name)",
            command.topic,
            outlet.acked(),
            outlet.unacknowledged()
        ),
    );
    outcome
}

/// The line of an event: raw format writes a string's text, anything else is JSON on one line.
fn render(event: &Event, format: Format) -> String {
    match event.metadata().json() {
        Ok(Value::String(s)) if format == Format::Raw && !s.contains('\n') => s.clone(),
        Ok(value) => serde_json::to_string(value).unwrap_or_default(),
        Err(_) => event.metadata().as_str().replace('\n', " "),
    }
}
