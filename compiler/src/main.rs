//! The `cnnc` command line: parses the arguments, runs the subcommand, prints its error.

mod cli;

use std::process::ExitCode;

use clap::Parser;
use cli::{Cli, Command};
use cnnc::driver::DriverError;

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Inspect(args) => cli::inspect::run(args),
        Command::Opt(args) => cli::opt::run(*args),
        Command::Run(args) => cli::run::run(args),
        Command::Bench(args) => cli::bench::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if matches!(e.downcast_ref(), Some(DriverError::Interrupted { .. })) => {
            eprintln!("{e}");
            ExitCode::from(cnnc::interrupt::EXIT_STATUS)
        }
        Err(e) if matches!(e.downcast_ref(), Some(DriverError::NeedsCalib)) => {
            // A usage error, as clap's are.
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
