//! `diaspora-bench`: measures how fast a Diaspora Stream API driver produces and consumes
//! events. Run `diaspora-bench --help` for the options.

use std::process::ExitCode;

use clap::Parser;

mod args;
mod ceiling;
mod consume;
mod memory;
mod produce;
mod report;
mod run;
mod workload;

fn main() -> ExitCode {
    let result = args::split_generic(std::env::args().collect()).and_then(|(generic, rest)| {
        let args = args::Args::parse_from(rest);
        run::run(&args, generic)
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("diaspora-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
