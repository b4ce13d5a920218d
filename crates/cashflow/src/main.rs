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

/// The runtime of everything but the HTTP lanes (one current-thread runtime per core,
/// [`cashflow::server`]): the relay, the consumer, the Postgres writers, gRPC and the database
/// and cache clients. Those tasks mostly wait on I/O and do their work per batch, not per
/// request, so one worker per four cores is plenty, and each worker more is a thread the
/// kernel must wake and switch to on another core: with two workers on two cores instead of
/// one, a closed loop of writes cost 8 % more server CPU per write embedded and 4 % more on
/// Postgres (BENCHMARKS.md, session 24). `TOKIO_WORKER_THREADS` sets another count.
fn workers() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or((cores / 4).max(1))
}

fn main() -> ExitCode {
    match tokio::runtime::Builder::new_multi_thread().worker_threads(workers()).enable_all().build() {
        Ok(runtime) => runtime.block_on(run()),
        Err(e) => {
            eprintln!("error: no async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> ExitCode {
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
