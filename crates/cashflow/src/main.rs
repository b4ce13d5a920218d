//! The `cashflow` binary. Everything lives in the library; this only parses the command line.

use std::process::ExitCode;

use clap::Parser;

use cashflow::cli::Cli;
use cashflow::{commands, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    match commands::run(cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
