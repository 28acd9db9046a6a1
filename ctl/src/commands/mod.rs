//! The commands, one file each, and what they share: turning options into a driver.

use diaspora_api::{Driver, TopicHandle};

use crate::cli::{Command, ConsumerCommand, DriverArgs, TopicCommand};
use crate::config::resolve;
use crate::error::CliError;
use crate::options::{PreScan, Scope};

mod consume;
mod consumer;
mod produce;
mod topic;

/// Runs a parsed command with the dynamic options found by the pre-scan.
pub fn run(command: Command, scan: PreScan) -> Result<(), CliError> {
    match command {
        Command::Topic(TopicCommand::Create(args)) => topic::create(args, scan),
        Command::Topic(TopicCommand::List(args)) => topic::list(args, scan),
        Command::Topic(TopicCommand::Describe(args)) => topic::describe(args, scan),
        Command::Topic(TopicCommand::Complete(args)) => topic::complete(args, scan),
        Command::Topic(TopicCommand::Verify(args)) => topic::verify(args, scan),
        Command::Topic(TopicCommand::Repair(args)) => topic::repair(args, scan),
        Command::Produce(args) => produce::run(args, scan),
        Command::Consume(args) => consume::run(args, scan),
        Command::Consumer(ConsumerCommand::Reset(args)) => consumer::reset(args, scan),
        Command::Fifo(args) => crate::fifo::run(args, scan),
        Command::Forward(args) => crate::forward::run(args, scan),
    }
}

/// Instantiates the driver from `--driver`, `--driver-config` and `--driver.<key>` options.
pub(crate) fn open_driver(args: &DriverArgs, scan: &mut PreScan) -> Result<Driver, CliError> {
    let options = resolve(args.driver_config.as_deref(), driver_options(args, scan))?;
    Ok(Driver::new(&args.driver, options)?)
}

/// The `--driver.<key>` options, typed as the driver declares (string options keep their text).
fn driver_options(
    args: &DriverArgs,
    scan: &mut PreScan,
) -> serde_json::Map<String, serde_json::Value> {
    let string_keys: &[&str] = match args.driver.as_str() {
        "files" => diaspora_driver_files::FilesDriverOptions::STRING_KEYS,
        "fabric" => diaspora_driver_fabric::FabricOptions::STRING_KEYS,
        "kafka" => diaspora_driver_kafka::KafkaOptions::STRING_KEYS,
        _ => &[],
    };
    scan.take_typed(Scope::Driver, string_keys)
}

/// Instantiates the driver and opens a topic.
fn open_topic(args: &DriverArgs, name: &str, scan: &mut PreScan) -> Result<TopicHandle, CliError> {
    let driver = open_driver(args, scan)?;
    Ok(driver.open_topic(name)?)
}

/// Prints one line on standard output (`println!` would panic on a closed pipe).
fn print_line(line: impl std::fmt::Display) -> Result<(), CliError> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(CliError::output)
}
