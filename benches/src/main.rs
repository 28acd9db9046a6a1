//! `diaspora-bench`: measures how fast a Diaspora Stream API driver produces and consumes
//! events. Run `diaspora-bench --help` for the options.

use std::process::ExitCode;

use clap::Parser;

mod args;
mod ceiling;
mod compare;
mod consume;
mod histogram;
mod latency;
mod memory;
mod netceiling;
mod plot;
mod produce;
mod ranks;
mod report;
mod run;
mod workload;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    let result = if argv.get(1).map(String::as_str) == Some("compare") {
        let rest =
            std::iter::once("diaspora-bench compare".to_owned()).chain(argv.into_iter().skip(2));
        compare::run(&compare::CompareArgs::parse_from(rest))
    } else {
        args::split_generic(argv).and_then(|(generic, rest)| {
            let args = args::Args::parse_from(rest);
            run::run(&args, generic)
        })
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One write: ranks under mpirun or srun share this stderr.
            diaspora_launcher::say!("diaspora-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
