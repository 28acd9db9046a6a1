//! `topic create|list|describe|complete|verify`.

use std::io::Write;

use diaspora_api::{json, validate_topic_name};

use crate::cli::{CreateArgs, DriverArgs, TopicArgs};
use crate::config::resolve;
use crate::error::CliError;
use crate::options::{PreScan, Scope};

use super::{open_driver, open_topic, print_line};

/// `topic create`: creates a topic with the merged `--topic-config` / `--topic.<key>` options.
pub fn create(args: CreateArgs, mut scan: PreScan) -> Result<(), CliError> {
    scan.reject_unused(&[Scope::Driver, Scope::Topic], "topic create")?;
    let name = &args.topic.name;
    validate_topic_name(name)?;
    let options = resolve(
        args.topic_config.as_deref(),
        scan.take_typed(Scope::Topic, diaspora_api::STRING_OPTION_KEYS),
    )?;
    let driver = open_driver(&args.topic.driver, &mut scan)?;
    driver.create_topic(name, options)?;
    print_line(format_args!("created topic {name}"))
}

/// `topic list`: one topic name per line.
pub fn list(args: DriverArgs, mut scan: PreScan) -> Result<(), CliError> {
    scan.reject_unused(&[Scope::Driver], "topic list")?;
    let driver = open_driver(&args, &mut scan)?;
    let topics = driver.list_topics()?;
    let mut out = std::io::stdout().lock();
    for topic in topics {
        writeln!(out, "{topic}").map_err(CliError::output)?;
    }
    out.flush().map_err(CliError::output)
}

/// `topic describe`: name, options, completion state and partitions, as pretty JSON.
pub fn describe(args: TopicArgs, mut scan: PreScan) -> Result<(), CliError> {
    scan.reject_unused(&[Scope::Driver], "topic describe")?;
    validate_topic_name(&args.name)?;
    let topic = open_topic(&args.driver, &args.name, &mut scan)?;
    let partitions: Vec<_> = topic
        .partitions()?
        .into_iter()
        .map(|p| json!({"index": p.index, "info": p.info}))
        .collect();
    let description = json!({
        "name": topic.name(),
        "options": topic.options(),
        "complete": topic.is_complete()?,
        "num_partitions": partitions.len(),
        "partitions": partitions,
    });
    // Serializing a `Value` cannot fail.
    print_line(serde_json::to_string_pretty(&description).unwrap_or_default())
}

/// `topic complete`: marks the topic complete.
pub fn complete(args: TopicArgs, mut scan: PreScan) -> Result<(), CliError> {
    scan.reject_unused(&[Scope::Driver], "topic complete")?;
    validate_topic_name(&args.name)?;
    let topic = open_topic(&args.driver, &args.name, &mut scan)?;
    topic.mark_as_complete()?;
    print_line(format_args!("marked topic {} as complete", args.name))
}

/// The root directory of a files-driver topic command (`command` is refused elsewhere).
fn files_root(
    args: &TopicArgs,
    scan: &mut PreScan,
    command: &'static str,
) -> Result<std::path::PathBuf, CliError> {
    scan.reject_unused(&[Scope::Driver], command)?;
    validate_topic_name(&args.name)?;
    if args.driver.driver != "files" {
        return Err(CliError::WrongDriver {
            command,
            driver: args.driver.driver.clone(),
        });
    }
    let options = resolve(
        args.driver.driver_config.as_deref(),
        super::driver_options(&args.driver, scan),
    )?;
    Ok(diaspora_driver_files::FilesDriverOptions::from_json(&options)?.root_path)
}

/// `topic verify`: full read-only check of a files-driver topic.
pub fn verify(args: TopicArgs, mut scan: PreScan) -> Result<(), CliError> {
    let root = files_root(&args, &mut scan, "topic verify")?;
    let reports = diaspora_driver_files::verify_topic(&root, &args.name)?;
    let problems: usize = reports
        .iter()
        .map(|r| r.problems.len() + usize::from(r.unreadable.is_some()))
        .sum();
    let json: Vec<_> = reports.iter().map(|r| r.to_json()).collect();
    // Serializing a `Value` cannot fail.
    print_line(serde_json::to_string_pretty(&json).unwrap_or_default())?;
    if problems > 0 {
        return Err(CliError::Damaged {
            topic: args.name,
            problems,
        });
    }
    Ok(())
}

/// `topic repair`: explicit repair of a files-driver topic (tombstones, ids never reused).
pub fn repair(args: TopicArgs, mut scan: PreScan) -> Result<(), CliError> {
    let root = files_root(&args, &mut scan, "topic repair")?;
    let reports = diaspora_driver_files::repair::repair_topic(&root, &args.name)?;
    let json: Vec<_> = reports.iter().map(|r| r.to_json()).collect();
    // Serializing a `Value` cannot fail.
    print_line(serde_json::to_string_pretty(&json).unwrap_or_default())
}
