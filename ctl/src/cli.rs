//! The command-line grammar (clap derive). Dynamic `--<scope>.<key>` options are handled
//! before clap sees the arguments, see [`crate::options`].

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

const OPTION_SYNTAX: &str = "\
Dynamic options:
  --driver.<key> <value>    Driver option, e.g. --driver.root_path /tmp/diaspora-data
  --topic.<key> <value>     Topic option (topic create), e.g. --topic.num_partitions 4
  --producer.<key> <value>  Producer option (produce): batch_size, max_num_batches,
                            ordering, thread_count
  --consumer.<key> <value>  Consumer option (consume): batch_size, max_num_batches,
                            partitions, thread_count, data
  --validator.<key> <value>, --serializer.<key> <value>, --partition-selector.<key> <value>
                            Component options (topic create), e.g.
                            --partition-selector key_hash --partition-selector.field run

  `--<scope>.<key>=<value>` works too. Values are parsed as JSON when they are valid JSON
  (3, true, [0,1], \"quoted\"), otherwise taken as strings; string options (root_path,
  policy names, partition_selector.field) keep their text: --driver.root_path 2024 is the
  directory 2024. Dotted keys nest:
  --topic.validator.type required_fields gives {\"validator\": {\"type\": \"required_fields\"}}.
  Options from --driver-config / --topic-config files are merged with command-line options,
  the command line winning. Component options are applied over the topic options in this
  order, each winning over the previous: --topic-config, --topic.<component>.<key>,
  --<component>-config, --<component>.<key>, --<component> NAME.";

/// Command-line tool for Diaspora Stream API topics.
#[derive(Debug, Parser)]
#[command(name = "diaspora-ctl", version, after_help = OPTION_SYNTAX)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, list, describe and complete topics.
    #[command(subcommand)]
    Topic(TopicCommand),
    /// Push events into a topic.
    #[command(after_help = OPTION_SYNTAX)]
    Produce(ProduceArgs),
    /// Pull events from a topic and print them, one line per event:
    /// `<partition> <id> <metadata-json> [<data-length>]`.
    #[command(after_help = OPTION_SYNTAX)]
    Consume(ConsumeArgs),
    /// Manage a consumer name's acknowledgements.
    #[command(subcommand)]
    Consumer(ConsumerCommand),
    /// Run a daemon that bridges named pipes (FIFOs) and topics. It creates the control FIFO
    /// and reads commands from it, one per line: `PATH -> TOPIC [(format=raw|json,
    /// batch_size=N)]` creates FIFO PATH, whose lines become events; `PATH <- TOPIC
    /// [(format=raw|json, batch_size=N, consumer=NAME)]` writes the metadata of the topic's
    /// events to the existing FIFO PATH, one line each. Stops on SIGTERM/SIGINT after
    /// flushing everything.
    #[command(after_help = OPTION_SYNTAX)]
    Fifo(FifoArgs),
    /// Run a daemon that forwards events between topics, across drivers, one worker per
    /// policy of the configuration (YAML or JSON: `drivers:` with `type` and `options`,
    /// `forward:` with `from: driver/topic`, `to: driver/topic`). Source events are
    /// acknowledged only after the destination stored them (at least once). Stops on
    /// SIGTERM/SIGINT after flushing.
    Forward(crate::forward::ForwardArgs),
}

/// Arguments of `fifo`.
#[derive(Debug, Args)]
pub struct FifoArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub driver: DriverArgs,
    /// The control FIFO (created if absent; an existing FIFO is reused).
    #[arg(long, value_name = "PATH")]
    pub control_file: PathBuf,
    /// Messages on stderr at this level and above.
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    pub logging: crate::daemon::Level,
}

/// `consumer` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConsumerCommand {
    /// Forget a consumer name's acknowledgements (files driver): its next run starts from the
    /// first event of every partition, so events it already processed are delivered again.
    /// This is the way out when its acknowledgement file is damaged. Run it while no consumer
    /// of that name is running.
    #[command(after_help = OPTION_SYNTAX)]
    Reset(ConsumerArgs),
}

/// A driver, a topic and a consumer name.
#[derive(Debug, Args)]
pub struct ConsumerArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub topic: TopicArgs,
    /// Consumer name.
    #[arg(long, value_name = "NAME")]
    pub consumer: String,
}

/// `topic` subcommands.
#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    #[command(after_help = OPTION_SYNTAX)]
    Create(CreateArgs),
    /// List the topics, one name per line (with --verbose: the name, a space and the topic's
    /// description as one line of JSON).
    #[command(after_help = OPTION_SYNTAX)]
    List(ListArgs),
    /// Print a topic's options, partitions and completion state as JSON.
    #[command(after_help = OPTION_SYNTAX)]
    Describe(TopicArgs),
    /// Mark a topic as complete: consumers that reach its end are told there are no more
    /// events, and producers can no longer push to it.
    #[command(after_help = OPTION_SYNTAX)]
    Complete(TopicArgs),
    /// Check every record, checksum and offset of a topic's files without changing them
    /// (files driver). Prints a JSON report per partition; exits with 1 if anything is damaged.
    #[command(after_help = OPTION_SYNTAX)]
    Verify(TopicArgs),
    /// Repair a files-driver topic: cut the torn tail of each index, and replace every damaged
    /// record that `verify` reports by a tombstone that keeps its event id (ids are never
    /// reused; the damaged events are lost and consumers report them as removed by repair).
    /// Prints a JSON report per partition.
    #[command(after_help = OPTION_SYNTAX)]
    Repair(TopicArgs),
}

/// How to reach the streaming engine.
#[derive(Debug, Args)]
pub struct DriverArgs {
    /// Driver to use (e.g. `files`; `NAME:LIBRARY.so` loads driver NAME from a driver library,
    /// and an unknown NAME is looked for as libNAME.so on LD_LIBRARY_PATH); its options are
    /// given with --driver.<key> <value>.
    #[arg(long, value_name = "NAME")]
    pub driver: String,
    /// JSON file holding driver options (merged with --driver.<key> options, which win).
    #[arg(long, value_name = "FILE")]
    pub driver_config: Option<PathBuf>,
}

/// A driver and a topic.
#[derive(Debug, Args)]
pub struct TopicArgs {
    /// Name of the topic.
    #[arg(long)]
    pub name: String,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub driver: DriverArgs,
}

/// Arguments of `topic list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub driver: DriverArgs,
    /// Print each topic's description (options, partitions, completion) after its name, as
    /// one line of JSON.
    #[arg(short, long)]
    pub verbose: bool,
}

/// Arguments of `topic create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub topic: TopicArgs,
    /// JSON file holding topic options (merged with --topic.<key> options, which win).
    #[arg(long, value_name = "FILE")]
    pub topic_config: Option<PathBuf>,
    /// Validator of the topic (e.g. `required_fields`, `NAME:LIBRARY.so`); its options are
    /// given with --validator.<key> <value> and --validator-config.
    #[arg(long, value_name = "NAME")]
    pub validator: Option<String>,
    /// JSON file holding validator options (merged with --validator.<key>, which win).
    #[arg(long, value_name = "FILE")]
    pub validator_config: Option<PathBuf>,
    /// Serializer of the topic; options with --serializer.<key> and --serializer-config.
    #[arg(long, value_name = "NAME")]
    pub serializer: Option<String>,
    /// JSON file holding serializer options (merged with --serializer.<key>, which win).
    #[arg(long, value_name = "FILE")]
    pub serializer_config: Option<PathBuf>,
    /// Partition selector of the topic (e.g. `key_hash`); options with
    /// --partition-selector.<key> and --partition-selector-config.
    #[arg(long, value_name = "NAME")]
    pub partition_selector: Option<String>,
    /// JSON file holding partition-selector options (merged with --partition-selector.<key>,
    /// which win).
    #[arg(long, value_name = "FILE")]
    pub partition_selector_config: Option<PathBuf>,
}

/// Arguments of `produce`.
#[derive(Debug, Args)]
pub struct ProduceArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub topic: TopicArgs,
    /// Number of events to push.
    #[arg(long, default_value_t = 1, conflicts_with = "stdin")]
    pub count: u64,
    /// Metadata of every event (a JSON document).
    #[arg(
        long,
        default_value = "{}",
        conflicts_with = "stdin",
        value_name = "JSON"
    )]
    pub metadata: String,
    /// Read events from standard input instead: one JSON metadata document per line (blank
    /// lines are skipped).
    #[arg(long)]
    pub stdin: bool,
    /// Size in bytes of the data attached to each event.
    #[arg(long, default_value_t = 0, value_name = "BYTES")]
    pub data_size: usize,
    /// Push every event into this partition instead of letting the topic's partition
    /// selector choose.
    #[arg(long)]
    pub partition: Option<usize>,
}

/// Arguments of `consume`.
#[derive(Debug, Args)]
pub struct ConsumeArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub topic: TopicArgs,
    /// Consumer name: acknowledgements are recorded under it, and a later run with the same
    /// name resumes after the last acknowledged event.
    #[arg(long, value_name = "NAME")]
    pub consumer: String,
    /// Stop after this many events.
    #[arg(long)]
    pub count: Option<u64>,
    /// Stop when no event arrives within this many milliseconds.
    #[arg(
        long,
        default_value_t = 1000,
        value_name = "MS",
        conflicts_with = "follow"
    )]
    pub timeout_ms: u64,
    /// Wait for new events forever (until the topic is complete or --count is reached).
    #[arg(long)]
    pub follow: bool,
    /// Fetch each event's data and print its length after the metadata.
    #[arg(long)]
    pub data: bool,
    /// Do not acknowledge the consumed events (a later run with the same consumer name will
    /// see them again).
    #[arg(long)]
    pub no_ack: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn grammar_is_consistent() {
        Cli::command().debug_assert();
    }
}
