//! The `cashflow` binary. Everything lives in the library; this only parses the command line.

use std::process::ExitCode;

use clap::Parser;

use cashflow::cli::Cli;
use cashflow::{commands, telemetry};

/// mimalloc instead of glibc's malloc: a request allocates and frees many small buffers (HTTP,
/// JSON, SQL arguments) across threads, where glibc's allocator took ~13% of the CPU of the
/// write path (profiled under load; BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    cashflow::tls::install_default_provider();
    telemetry::init(cli.log_format);
    let outcome = commands::run(cli.command).await;
    // The spans of the last requests, still in the exporter's batch.
    telemetry::shutdown();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
