//! `consume`: pulls events and prints `<partition> <id> <metadata-json> [<data-length>]` lines.
//!
//! An event the consumer cannot deliver (damaged on disk) is reported on stderr as
//! `damaged event: partition P event I: reason` and skipped; its acknowledgement moves past it
//! like any other event's, so a rerun does not stop there again. The command then exits with
//! status 1 once everything else was consumed.

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};

use diaspora_api::{
    select_all, validate_consumer_name, validate_topic_name, Consumer, ConsumerOptions, Error,
    Event, EventId, Value,
};

use crate::cli::ConsumeArgs;
use crate::error::CliError;
use crate::options::{PreScan, Scope};

use super::open_topic;

/// Runs `consume`.
pub fn run(args: ConsumeArgs, mut scan: PreScan) -> Result<(), CliError> {
    scan.reject_unused(&[Scope::Driver, Scope::Consumer], "consume")?;
    validate_topic_name(&args.topic.name)?;
    validate_consumer_name(&args.consumer)?;
    let mut options = ConsumerOptions::from_json(&Value::Object(scan.take(Scope::Consumer)))?;
    if args.data {
        options.data_selector = Some(select_all());
    }
    let topic = open_topic(&args.topic.driver, &args.topic.name, &mut scan)?;
    let consumer = topic.consumer_with(&args.consumer, options)?;
    let timeout_ms = if args.follow {
        -1
    } else {
        i64::try_from(args.timeout_ms).unwrap_or(i64::MAX)
    };

    let mut out = BufWriter::new(std::io::stdout().lock());
    // The last event seen in each partition: acknowledging it covers the earlier ones.
    let mut last: BTreeMap<usize, Seen> = BTreeMap::new();
    let mut consumed = 0u64;
    let mut damaged = 0u64;
    let pulled: Result<(), CliError> = loop {
        if args.count.is_some_and(|count| consumed >= count) {
            break Ok(());
        }
        let mut pull = consumer.pull();
        if !pull.is_ready() {
            // About to block: show what we have so far (matters with --follow).
            if let Err(e) = out.flush() {
                break Err(CliError::output(e));
            }
        }
        let event = match pull.wait(timeout_ms) {
            Ok(Some(event)) => event,
            Ok(None) => break Ok(()), // timed out
            Err(Error::EventFailed {
                partition,
                id,
                source,
            }) => {
                // Lines already printed come first, then the report; the consumer has moved on.
                if let Err(e) = out.flush() {
                    break Err(CliError::output(e));
                }
                eprintln!("damaged event: partition {partition} event {id}: {source}");
                damaged += 1;
                last.insert(partition, Seen::Failed(id));
                continue;
            }
            Err(e) => break Err(CliError::api("pull failed", e)),
        };
        if event.is_no_more_events() {
            break Ok(());
        }
        if let Err(e) = write_event(&mut out, &event, args.data) {
            break Err(e);
        }
        consumed += 1;
        last.insert(event.partition(), Seen::Event(event));
    };
    let flushed = out.flush().map_err(CliError::output);
    // Events whose line may not have reached the reader are not acknowledged.
    if let Err(e) = pulled.and(flushed) {
        if !matches!(e, CliError::BrokenPipe | CliError::Io { .. }) {
            acknowledge(&consumer, &last, args.no_ack)?;
        }
        return Err(e);
    }
    acknowledge(&consumer, &last, args.no_ack)?;
    if damaged > 0 {
        return Err(CliError::DamagedEvents {
            topic: args.topic.name,
            count: damaged,
        });
    }
    Ok(())
}

/// The last thing pulled from a partition.
enum Seen {
    /// A delivered event.
    Event(Event),
    /// The id of an event reported damaged.
    Failed(EventId),
}

fn acknowledge(
    consumer: &Consumer,
    last: &BTreeMap<usize, Seen>,
    no_ack: bool,
) -> Result<(), CliError> {
    if no_ack {
        return Ok(());
    }
    for (&partition, seen) in last {
        let (id, acked) = match seen {
            Seen::Event(event) => (event.id(), event.acknowledge()),
            Seen::Failed(id) => (*id, consumer.acknowledge(partition, *id)),
        };
        acked.map_err(|e| {
            CliError::api(
                format!("cannot acknowledge event {id} of partition {partition}"),
                e,
            )
        })?;
    }
    Ok(())
}

/// Writes `<partition> <id> <metadata-json>[ <data-length>]`.
fn write_event(out: &mut impl Write, event: &Event, with_data: bool) -> Result<(), CliError> {
    let metadata = event.metadata();
    let raw = metadata.as_bytes();
    let compact;
    let text: &[u8] = if raw.iter().any(|b| matches!(b, b'\n' | b'\r')) {
        // Keep one line per event even if the producer sent pretty-printed JSON.
        let value = metadata.json().map_err(|e| {
            CliError::api(
                format!("event {} of partition {}", event.id(), event.partition()),
                e,
            )
        })?;
        compact = serde_json::to_vec(value).unwrap_or_default();
        &compact
    } else {
        raw
    };
    let written = write!(out, "{} {} ", event.partition(), event.id())
        .and_then(|()| out.write_all(text))
        .and_then(|()| {
            if with_data {
                write!(out, " {}", event.data().len())
            } else {
                Ok(())
            }
        })
        .and_then(|()| out.write_all(b"\n"));
    written.map_err(CliError::output)
}
