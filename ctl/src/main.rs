//! `diaspora-ctl`: create, inspect, complete, produce into and consume from Diaspora topics.

use std::ffi::OsString;
use std::process::ExitCode;

use clap::Parser;

mod cli;
mod commands;
mod config;
mod daemon;
mod error;
mod fifo;
mod forward;
mod options;

use cli::Cli;
use error::CliError;

fn main() -> ExitCode {
    diaspora_driver_files::register();
    diaspora_driver_fabric::register();
    diaspora_driver_kafka::register();
    match run(std::env::args_os()) {
        Ok(()) | Err(CliError::BrokenPipe) => ExitCode::SUCCESS,
        Err(CliError::Clap(e)) => {
            // clap renders its own `error: ...` with usage; help and version go to stdout.
            let _ = e.print();
            if e.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: impl IntoIterator<Item = OsString>) -> Result<(), CliError> {
    let mut scan = options::prescan(args)?;
    let cli = Cli::try_parse_from(std::mem::take(&mut scan.rest))?;
    commands::run(cli.command, scan)
}
