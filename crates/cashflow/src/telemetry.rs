//! Telemetry in one place: logs and metrics.
//!
//! Logs are human-readable by default and JSON lines for collectors (`--log-format json`),
//! level from `RUST_LOG` (default `info`). Secrets never reach a log line: tokens, client
//! secrets and passwords are only ever held in `secrecy` types or request bodies, which are not
//! logged.
//!
//! Metrics use the `metrics` facade everywhere (request counts and latencies, events published
//! and applied, consolidation lag, cache hits, outbox backlog, pool usage) and are rendered in
//! the Prometheus text format at `GET /metrics` on every process.
//!
//! Reconciliation (`cashflow_consolidation::reconcile`, the consolidator's scheduled runs and
//! `cashflow reconcile`):
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `cashflow_reconcile_drifting_days_total` | counter | consolidated days found to differ from the ledger |
//! | `cashflow_reconcile_repaired_days_total` | counter | drifting days rebuilt from the ledger's entries |
//! | `cashflow_reconcile_drifting_days` | gauge | days the last run left drifting (not repaired, or moved while repairing) |
//! | `cashflow_reconcile_last_success_timestamp_seconds` | gauge | Unix time the last run finished |

use std::io::IsTerminal;
use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

/// Output format of the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `info`, but not Postgres's notices ("relation already exists, skipping") that sqlx relays.
const DEFAULT_FILTER: &str = "info,sqlx::postgres::notice=warn";

/// Installs the global subscriber (once; later calls are ignored, which tests rely on).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    // Colours only on a terminal: escape codes in a log file or a collector are noise.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Latency buckets, in seconds: fine-grained below 10 ms where the API lives, coarse above
/// for the consolidation lag during an outage.
const BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

static METRICS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process-wide Prometheus recorder, installed on first use. `None` if another recorder
/// was installed first (then `/metrics` says so instead of failing requests).
pub fn metrics() -> Option<PrometheusHandle> {
    METRICS
        .get_or_init(|| {
            let handle = PrometheusBuilder::new().set_buckets(BUCKETS).ok()?.install_recorder().ok()?;
            // Histograms need periodic upkeep to bound their memory.
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || loop {
                    std::thread::sleep(Duration::from_secs(5));
                    upkeep.run_upkeep();
                })
                .ok()?;
            Some(handle)
        })
        .clone()
}
