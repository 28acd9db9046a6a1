//! `topic create|list|describe|complete|verify`.

use std::io::Write;

use diaspora_api::{json, validate_topic_name};

use crate::cli::{CreateArgs, ListArgs, TopicArgs};
use crate::config::{merge_component, resolve};
use crate::error::CliError;
use crate::options::{PreScan, Scope};

use super::{open_driver, open_topic, print_line};

/// `topic create`: creates a topic with the merged `--topic-config` / `--topic.<key>` options
/// and the component options (`--validator`, `--validator.<key>`, `--validator-config`, the
/// same for `--serializer` and `--partition-selector`), see [`merge_component`].
pub fn create(args: CreateArgs, mut scan: PreScan) -> Result<(), CliError> {
    scan.reject_unused(
        &[
            Scope::Driver,
            Scope::Topic,
            Scope::Validator,
            Scope::Serializer,
            Scope::PartitionSelector,
        ],
        "topic create",
    )?;
    let name = &args.topic.name;
    validate_topic_name(name)?;
    let mut options = resolve(
        args.topic_config.as_deref(),
        scan.take_typed(Scope::Topic, diaspora_api::STRING_OPTION_KEYS),
    )?;
    let components = [
        (
            Scope::Validator,
            "validator",
            args.validator.as_deref(),
            args.validator_config.as_deref(),
        ),
        (
            Scope::Serializer,
            "serializer",
            args.serializer.as_deref(),
            args.serializer_config.as_deref(),
        ),
        (
            Scope::PartitionSelector,
            "partition_selector",
            args.partition_selector.as_deref(),
            args.partition_selector_config.as_deref(),
        ),
    ];
    if let serde_json::Value::Object(topic) = &mut options {
        for (scope, key, kind, file) in components {
            let prefix = format!("{key}.");
            let string_keys: Vec<&str> = diaspora_api::STRING_OPTION_KEYS
                .iter()
                .filter_map(|k| k.strip_prefix(prefix.as_str()))
                .collect();
            let flags = &scan.scope(scope).flags;
            let flag = match (kind, file, flags.first()) {
                (Some(_), _, _) | (None, None, None) => format!("--{}", scope.name()),
                (None, Some(_), _) => format!("--{}-config", scope.name()),
                (None, None, Some(flag)) => flag.clone(),
            };
            let command_line = scan.take_typed(scope, &string_keys);
            merge_component(topic, key, &flag, kind, file, command_line)?;
        }
    }
    let driver = open_driver(&args.topic.driver, &mut scan)?;
    driver.create_topic(name, options)?;
    print_line(format_args!("created topic {name}"))
}

/// `topic list`: one topic name per line; with `--verbose`, the name, a space and the topic's
/// description (as `topic describe` prints it) on one line of JSON.
pub fn list(args: ListArgs, mut scan: PreScan) -> Result<(), CliError> {
    scan.reject_unused(&[Scope::Driver], "topic list")?;
    let driver = open_driver(&args.driver, &mut scan)?;
    let topics = driver.list_topics()?;
    let mut out = std::io::stdout().lock();
    for topic in topics {
        if args.verbose {
            let handle = driver.open_topic(&topic)?;
            let line = serde_json::to_string(&description(&handle)?).unwrap_or_default();
            writeln!(out, "{topic} {line}").map_err(CliError::output)?;
        } else {
            writeln!(out, "{topic}").map_err(CliError::output)?;
        }
    }
    out.flush().map_err(CliError::output)
}

/// A topic's description: name, options, completion state and partitions.
fn description(topic: &diaspora_api::TopicHandle) -> Result<serde_json::Value, CliError> {
    let partitions: Vec<_> = topic
        .partitions()?
        .into_iter()
        .map(|p| json!({"index": p.index, "info": p.info}))
        .collect();
    let options = topic.options();
    // The components the topic uses, each as a spec (a name is `{"type": name}`; absent is
    // the default one).
    let component = |key: &str| match options.get(key) {
        None | Some(serde_json::Value::Null) => json!({"type": "default"}),
        Some(serde_json::Value::String(kind)) => json!({ "type": kind }),
        Some(spec) => spec.clone(),
    };
    Ok(json!({
        "name": topic.name(),
        "validator": component("validator"),
        "serializer": component("serializer"),
        "partition_selector": component("partition_selector"),
        "complete": topic.is_complete()?,
        "num_partitions": partitions.len(),
        "partitions": partitions,
        "options": options,
    }))
}

/// `topic describe`: name, options, completion state and partitions, as pretty JSON.
pub fn describe(args: TopicArgs, mut scan: PreScan) -> Result<(), CliError> {
    scan.reject_unused(&[Scope::Driver], "topic describe")?;
    validate_topic_name(&args.name)?;
    let topic = open_topic(&args.driver, &args.name, &mut scan)?;
    let description = description(&topic)?;
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
