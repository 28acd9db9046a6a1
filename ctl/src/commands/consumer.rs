//! `consumer reset`: forgets a consumer name's acknowledgements (files driver).

use diaspora_api::{validate_consumer_name, validate_topic_name};

use crate::cli::ConsumerArgs;
use crate::config::resolve;
use crate::error::CliError;
use crate::options::{PreScan, Scope};

use super::{driver_options, print_line};

/// `consumer reset`: the consumer's next run starts from the first event of every partition.
pub fn reset(args: ConsumerArgs, mut scan: PreScan) -> Result<(), CliError> {
    scan.reject_unused(&[Scope::Driver], "consumer reset")?;
    validate_topic_name(&args.topic.name)?;
    validate_consumer_name(&args.consumer)?;
    let driver = &args.topic.driver;
    if driver.driver != "files" {
        return Err(CliError::WrongDriver {
            command: "consumer reset",
            driver: driver.driver.clone(),
        });
    }
    let options = resolve(
        driver.driver_config.as_deref(),
        driver_options(driver, &mut scan),
    )?;
    let options = diaspora_driver_files::FilesDriverOptions::from_json(&options)?;
    diaspora_driver_files::acks::reset_consumer(
        &options.root_path,
        &args.topic.name,
        &args.consumer,
    )?;
    print_line(format_args!(
        "reset consumer {} of topic {}: its next run starts from the first event of every partition",
        args.consumer, args.topic.name
    ))
}
