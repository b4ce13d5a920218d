//! Telemetry in one place: logs, metrics and (when an OTLP endpoint is configured) traces.
//!
//! Logs are human-readable by default and JSON lines for collectors (`--log-format json`),
//! level from `RUST_LOG` (default `info`). Every line logged while a request is served carries
//! the request id, trace id and span id of its `http` span (in `spans` of a JSON line), and
//! every request logs one line (debug, or an error for a 5xx); the consumer's lines carry the
//! trace id of the request that wrote the entry. Secrets never reach a log line: tokens, client
//! secrets and passwords are only ever held in `secrecy` types or request bodies, which are not
//! logged, and neither are entry descriptions; `tests/process.rs` runs a flow at
//! `RUST_LOG=trace` and scans every line for the secrets, tokens and description it used.
//!
//! Metrics use the `metrics` facade everywhere (request counts and latencies, events published
//! and applied, consolidation lag, cache hits, outbox backlog, pool usage) and are rendered in
//! the Prometheus text format at `GET /metrics` on every process. [`DESCRIPTIONS`] is the one
//! list of every series: its kind, unit and `# HELP` text, registered when the recorder is
//! installed, so an operator reading a scrape (or `promtool check metrics`) never meets an
//! unexplained name. A metric added without a line there has no HELP, and the check script
//! (`scripts/check-observability.sh`) fails on it.
//!
//! Traces are exported over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set ([`crate::otel`]
//! says how and why); [`shutdown`] flushes them before the process exits, [`flush`] after each
//! Lambda invocation.

use std::io::IsTerminal;
use std::sync::OnceLock;
use std::time::Duration;

use metrics::Unit;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

/// Output format of the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `info`, but not Postgres's notices ("relation already exists, skipping") that sqlx relays.
const DEFAULT_FILTER: &str = "info,sqlx::postgres::notice=warn";

/// The span export pipeline, when traces are exported (set once by [`init`]).
static TRACES: OnceLock<crate::otel::Pipeline> = OnceLock::new();

/// The longest a flush or the shutdown waits for the exporter.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Installs the global subscriber (once; later calls are ignored, which tests rely on), with
/// the OpenTelemetry exporter when the environment configures one. A bad trace configuration
/// (`CASHFLOW_TRACE_FORMAT`, `OTEL_TRACES_SAMPLER(_ARG)`, an unusable endpoint) is reported
/// and traces stay off: the process serves without them rather than not at all.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let traces = match crate::otel::configured().then(traces).transpose() {
        Ok(traces) => traces,
        Err(e) => {
            eprintln!("traces not exported: {e:#}");
            None
        }
    };
    let Some((pipeline, trace_config)) = traces else {
        let logs = match plain_filter(std::env::var("RUST_LOG").ok().as_deref()) {
            Some(targets) => logs(targets, format),
            None => logs(filter, format),
        };
        let _ = tracing::dispatcher::set_global_default(logs);
        return;
    };
    if with_traces(filter, format, &pipeline, &trace_config) {
        let _ = TRACES.set(pipeline);
    }
}

/// The OTLP pipeline, the trace id format and the sampling the environment asks for.
fn traces() -> anyhow::Result<(crate::otel::Pipeline, crate::otel::TraceConfig)> {
    let config = crate::otel::TraceConfig::from_env().map_err(anyhow::Error::msg)?;
    Ok((crate::otel::Pipeline::otlp_from_env()?, config))
}

/// The logs alone on stderr, the process's subscriber when nothing is exported: filtered by
/// target and level alone when `RUST_LOG` says no more ([`plain_filter`]), by `EnvFilter`
/// when it names spans or fields. The filter is global (it decides once per call site), which
/// is what makes a request cheap.
fn logs<F>(filter: F, format: LogFormat) -> tracing::Dispatch
where
    F: tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync + 'static,
{
    use tracing_subscriber::layer::SubscriberExt;
    tracing_subscriber::registry().with(filter).with(log_layer(format)).into()
}

/// `RUST_LOG` (or [`DEFAULT_FILTER`] when unset) as a filter by target and level alone, when
/// that is all it says (`info`, `warn,cashflow=debug`, …); `None` when it names spans or
/// fields (`[http{route=…}]=debug`), which only [`EnvFilter`] understands, or does not parse.
///
/// The two filters enable the same lines for such a setting, but `EnvFilter` also keeps a
/// book of every span, under a lock the HTTP lanes share, for directives that might name one:
/// each request's `http` span costs it a lookup at creation and at every entry, exit and
/// close. A filter by target decides once per call site and keeps nothing per span.
fn plain_filter(rust_log: Option<&str>) -> Option<tracing_subscriber::filter::Targets> {
    let directives = rust_log.unwrap_or(DEFAULT_FILTER);
    if directives.trim().is_empty() || directives.contains(['[', '{', '}', ']']) {
        return None;
    }
    directives.parse().ok()
}

/// The log lines on stderr in `format`, as a layer of a registry-based subscriber.
fn log_layer<S>(format: LogFormat) -> Box<dyn tracing_subscriber::Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    use tracing_subscriber::Layer;
    // Colours only on a terminal: escape codes in a log file or a collector are noise.
    let logs = tracing_subscriber::fmt::layer().with_ansi(std::io::stderr().is_terminal()).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.fmt_fields(TextFields).boxed(),
        LogFormat::Json => logs.json().flatten_event(true).boxed(),
    }
}

/// Installs logs and the span export to `pipeline` as the global subscriber; false if one
/// was installed already. One filter decides what is made: what the logs' filter enables or
/// the exporter wants ([`crate::otel::LogsOrExported`] says why one).
pub fn with_traces(
    filter: EnvFilter,
    format: LogFormat,
    pipeline: &crate::otel::Pipeline,
    trace_config: &crate::otel::TraceConfig,
) -> bool {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    tracing_subscriber::registry()
        .with(crate::otel::LogsOrExported::new(filter))
        .with(log_layer(format))
        .with(crate::otel::layer(pipeline, trace_config))
        .try_init()
        .is_ok()
}

/// Exports the spans finished so far (blocking until sent, or the export timeout); a no-op
/// when traces are not exported. Lambda calls it at the end of each invocation, as the
/// process may be frozen right after.
pub fn flush() {
    if let Some(pipeline) = TRACES.get() {
        if !pipeline.flush(FLUSH_TIMEOUT) {
            tracing::warn!("spans not all exported: the exporter did not finish within 5 s");
        }
    }
}

/// [`flush`] from async code (a Lambda handler): the wait happens on a blocking thread, not on
/// the runtime's.
pub async fn flush_async() {
    if TRACES.get().is_some() {
        let _ = tokio::task::spawn_blocking(flush).await;
    }
}

/// Exports the spans still held and stops the exporter: the last thing before the process exits.
pub fn shutdown() {
    if let Some(pipeline) = TRACES.get() {
        if !pipeline.shutdown(FLUSH_TIMEOUT) {
            eprintln!("spans not all exported at shutdown: the exporter did not finish within 5 s");
        }
    }
}

/// The text logs' fields, written exactly as `tracing-subscriber`'s default format writes them
/// (`name=value`, the message first), with the common case written directly: a field other
/// than the message, on a writer without colours, is its name, `=` and its value's `Debug`.
///
/// Why: every request makes an `http` span whose five fields (method, route, request id, trace
/// id, span id) the logs format when the span is made, logged or not. The default visitor
/// paints each field's name and `=` (with an empty style when there are no colours) and
/// writes the three through one formatting call: about 1,000 instructions a field, a tenth of
/// a cached read's own instructions (BENCHMARKS.md, session 28). The message, raw
/// identifiers (`r#type`), errors (their sources) and a terminal's colours are left to the
/// default visitor, so a line reads the same either way (`text_fields_write_what_the_default_format_writes`).
struct TextFields;

impl<'writer> tracing_subscriber::fmt::FormatFields<'writer> for TextFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        writer: tracing_subscriber::fmt::format::Writer<'writer>,
        fields: R,
    ) -> std::fmt::Result {
        let mut visitor = TextVisitor { writer, is_empty: true, result: Ok(()) };
        fields.record(&mut visitor);
        visitor.result
    }
}

/// [`TextFields`]'s visitor: the default one's state (is this the first field, did a write fail).
struct TextVisitor<'writer> {
    writer: tracing_subscriber::fmt::format::Writer<'writer>,
    is_empty: bool,
    result: std::fmt::Result,
}

impl TextVisitor<'_> {
    /// Hands one field to the default visitor, which writes it after what was written so far.
    fn by_default(&mut self, record: impl FnOnce(&mut tracing_subscriber::fmt::format::DefaultVisitor<'_>)) {
        use tracing_subscriber::field::VisitOutput;
        let mut default = tracing_subscriber::fmt::format::DefaultVisitor::new(self.writer.by_ref(), self.is_empty);
        record(&mut default);
        self.result = default.finish();
        self.is_empty = false;
    }

    /// Whether `field` is written here rather than by the default visitor.
    fn plain(&self, field: &tracing::field::Field) -> bool {
        let name = field.name();
        !self.writer.has_ansi_escapes() && name != "message" && !name.starts_with("r#")
    }
}

impl tracing::field::Visit for TextVisitor<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if self.plain(field) {
            self.record_debug(field, &value);
        } else {
            self.by_default(|default| default.record_str(field, value));
        }
    }

    fn record_error(&mut self, field: &tracing::field::Field, value: &(dyn std::error::Error + 'static)) {
        self.by_default(|default| default.record_error(field, value));
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if self.result.is_err() {
            return;
        }
        if !self.plain(field) {
            return self.by_default(|default| default.record_debug(field, value));
        }
        let separator = if std::mem::take(&mut self.is_empty) { "" } else { " " };
        self.result = self
            .writer
            .write_str(separator)
            .and_then(|()| self.writer.write_str(field.name()))
            .and_then(|()| self.writer.write_str("="))
            .and_then(|()| write!(self.writer, "{value:?}"));
    }
}

/// Latency buckets, in seconds: fine-grained below 10 ms where the API lives, coarse above.
const BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

/// Consolidation lag buckets, in seconds, shaped by its objective (reports lag <= 1 s): a
/// boundary at exactly 1 s, so the SLO's good-event count is one bucket and not an
/// interpolation; eleven below it, down to the milliseconds a healthy consumer takes (with one
/// at 20 ms, the p99 the pipeline is tuned for, so that figure is read off a boundary too);
/// coarse above it for a backlog after an outage.
const LAG_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
];

/// Entries per ledger write transaction: group commit batches concurrent requests.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0];

/// The kind of a series, as Prometheus types it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric family: what `# HELP` says about it.
#[derive(Debug, Clone, Copy)]
pub struct Description {
    pub name: &'static str,
    /// The label names its series carry (none: one series per process).
    pub labels: &'static [&'static str],
    pub kind: Kind,
    /// `Count` for things counted (events, messages, connections): the name says which.
    pub unit: Unit,
    pub help: &'static str,
}

const fn describe(
    name: &'static str,
    labels: &'static [&'static str],
    kind: Kind,
    unit: Unit,
    help: &'static str,
) -> Description {
    Description { name, labels, kind, unit, help }
}

/// Every metric any process emits. Names follow Prometheus practice: base units in the name
/// (`_seconds`), counters end in `_total`, gauges name what they count (`_events`, `_messages`).
pub const DESCRIPTIONS: &[Description] = &[
    describe(
        "cashflow_http_requests_total",
        &["method", "route", "status"],
        Kind::Counter,
        Unit::Count,
        "HTTP requests answered, by method, route template and status.",
    ),
    describe(
        "cashflow_auth_failures_total",
        &["grant", "reason"],
        Kind::Counter,
        Unit::Count,
        "Token requests refused, by grant and reason (invalid_client, invalid_grant, throttled).",
    ),
    describe(
        "cashflow_jwks_refresh_total",
        &["result"],
        Kind::Counter,
        Unit::Count,
        "Fetches of an external issuer's JWKS (every TTL, or for an unknown kid at most every 5 s), by result (ok, error).",
    ),
    describe(
        "cashflow_token_verification_failures_total",
        &["reason"],
        Kind::Counter,
        Unit::Count,
        "Bearer tokens refused where external issuers are trusted, by reason (untrusted_issuer, unknown_kid, expired, token_use, client, merchant, ...).",
    ),
    describe(
        "cashflow_http_connections_refused_total",
        &[],
        Kind::Counter,
        Unit::Count,
        "Connections closed at once because the process already held --http-max-connections.",
    ),
    describe(
        "cashflow_http_request_duration_seconds",
        &["method", "route", "status"],
        Kind::Histogram,
        Unit::Seconds,
        "Time from receiving a request to its response head, by method, route template and status.",
    ),
    describe(
        "cashflow_ledger_write_batch_entries",
        &[],
        Kind::Histogram,
        Unit::Count,
        "Entries committed per ledger write transaction (concurrent writes share one commit).",
    ),
    describe(
        "cashflow_outbox_backlog_events",
        &[],
        Kind::Gauge,
        Unit::Count,
        "Events committed by the ledger and not yet published to the queue.",
    ),
    describe(
        "cashflow_outbox_oldest_age_seconds",
        &[],
        Kind::Gauge,
        Unit::Seconds,
        "Age of the oldest unpublished outbox event; 0 when the outbox is empty.",
    ),
    describe(
        "cashflow_queue_messages",
        &[],
        Kind::Gauge,
        Unit::Count,
        "Messages in the queue, visible or leased to a consumer.",
    ),
    describe(
        "cashflow_queue_dead_letter_messages",
        &[],
        Kind::Gauge,
        Unit::Count,
        "Messages moved to the dead-letter queue after too many receives; each needs an operator.",
    ),
    describe(
        "cashflow_events_published_total",
        &[],
        Kind::Counter,
        Unit::Count,
        "Outbox events published to the queue by the relay (a republish counts again); none in `serve`, whose consumer reads the outbox.",
    ),
    describe(
        "cashflow_relay_failures_total",
        &[],
        Kind::Counter,
        Unit::Count,
        "Relay publish attempts that failed; the events stay in the outbox and are retried.",
    ),
    describe(
        "cashflow_events_applied_total",
        &[],
        Kind::Counter,
        Unit::Count,
        "Events applied to the daily totals for the first time.",
    ),
    describe(
        "cashflow_events_duplicate_total",
        &[],
        Kind::Counter,
        Unit::Count,
        "Deliveries of events already applied, acknowledged without effect.",
    ),
    describe(
        "cashflow_events_rejected_total",
        &[],
        Kind::Counter,
        Unit::Count,
        "Events that would overflow a day's totals: not applied, left for the dead-letter queue.",
    ),
    describe(
        "cashflow_events_poison_total",
        &[],
        Kind::Counter,
        Unit::Count,
        "Messages that are not valid events; left to the queue's dead-letter policy.",
    ),
    describe(
        "cashflow_consolidation_failures_total",
        &[],
        Kind::Counter,
        Unit::Count,
        "Consumer batches that failed (store or queue down); their messages are redelivered.",
    ),
    describe(
        "cashflow_consolidation_lag_seconds",
        &[],
        Kind::Histogram,
        Unit::Seconds,
        "Time from the ledger's recording of an entry (before its commit) to its effect committed in the daily totals.",
    ),
    describe(
        "cashflow_report_cache_hits_total",
        &[],
        Kind::Counter,
        Unit::Count,
        "Daily balance reads answered from the report cache.",
    ),
    describe(
        "cashflow_report_cache_misses_total",
        &[],
        Kind::Counter,
        Unit::Count,
        "Daily balance reads computed from the consolidation store.",
    ),
    describe(
        "cashflow_db_pool_connections",
        &["pool", "state"],
        Kind::Gauge,
        Unit::Count,
        "Database pool connections, by pool and state (idle, in_use).",
    ),
    describe(
        "cashflow_dependency_up",
        &["dependency"],
        Kind::Gauge,
        Unit::Count,
        "1 when the dependency answered this process's readiness probe at the last scrape, 0 when not.",
    ),
    describe(
        "cashflow_reconcile_drifting_total",
        &[],
        Kind::Counter,
        Unit::Count,
        "Consolidated days reconciliation found to differ from the ledger's own totals.",
    ),
    describe(
        "cashflow_reconcile_repaired_total",
        &[],
        Kind::Counter,
        Unit::Count,
        "Drifting days rebuilt from the ledger's entries.",
    ),
    describe(
        "cashflow_reconcile_drifting_days",
        &[],
        Kind::Gauge,
        Unit::Count,
        "Days the last reconciliation left drifting (not repaired, or moved while being repaired).",
    ),
    describe(
        "cashflow_reconcile_last_success_timestamp_seconds",
        &[],
        Kind::Gauge,
        Unit::Seconds,
        "Unix time the last reconciliation run finished.",
    ),
];

static METRICS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process-wide Prometheus recorder, installed on first use. `None` if another recorder
/// was installed first (then `/metrics` says so instead of failing requests).
pub fn metrics() -> Option<PrometheusHandle> {
    METRICS
        .get_or_init(|| {
            let handle = builder().ok()?.install_recorder().ok()?;
            register(DESCRIPTIONS);
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

fn builder() -> Result<PrometheusBuilder, metrics_exporter_prometheus::BuildError> {
    PrometheusBuilder::new()
        .set_buckets(BUCKETS)?
        .set_buckets_for_metric(Matcher::Full("cashflow_consolidation_lag_seconds".into()), LAG_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full("cashflow_ledger_write_batch_entries".into()), BATCH_BUCKETS)
}

/// Describes every metric to the installed recorder, and starts the counters without labels
/// at 0: a counter that appears at its first increment hides that increment from `rate()`, and
/// an alert on it could not tell "nothing happened" from "not scraped".
fn register(descriptions: &[Description]) {
    for d in descriptions {
        match d.kind {
            Kind::Counter => {
                metrics::describe_counter!(d.name, d.unit, d.help);
                if d.labels.is_empty() {
                    metrics::counter!(d.name).increment(0);
                }
            }
            Kind::Gauge => metrics::describe_gauge!(d.name, d.unit, d.help),
            Kind::Histogram => metrics::describe_histogram!(d.name, d.unit, d.help),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_name_carries_its_unit_or_what_it_counts() {
        for d in DESCRIPTIONS {
            assert!(d.name.starts_with("cashflow_"), "{}", d.name);
            match (d.kind, d.unit) {
                (Kind::Counter, _) => assert!(d.name.ends_with("_total"), "{}: a counter ends in _total", d.name),
                (_, Unit::Seconds) => assert!(d.name.ends_with("_seconds"), "{}: seconds in the name", d.name),
                _ => {
                    let suffix = d.name.rsplit('_').next().unwrap_or_default();
                    assert!(
                        ["events", "messages", "connections", "entries", "days", "up"].contains(&suffix),
                        "{}: a gauge or histogram names what it counts",
                        d.name
                    );
                }
            }
        }
    }

    #[test]
    fn a_rust_log_of_targets_and_levels_is_read_as_such_and_anything_more_is_left_to_env_filter() {
        use tracing::Level;
        // The default: info, but not sqlx's Postgres notices
        let default = plain_filter(None).expect("the default is targets and levels");
        assert!(default.would_enable("cashflow_http::layers", &Level::INFO));
        assert!(!default.would_enable("cashflow_http::layers", &Level::DEBUG));
        assert!(!default.would_enable("sqlx::postgres::notice", &Level::INFO));
        assert!(default.would_enable("sqlx::postgres::notice", &Level::WARN));
        // A level for everything and one for a module tree
        let chosen = plain_filter(Some("warn,cashflow_ledger=debug")).expect("targets and levels");
        assert!(chosen.would_enable("cashflow_ledger::sqlite", &Level::DEBUG));
        assert!(!chosen.would_enable("cashflow_ledger::sqlite", &Level::TRACE));
        assert!(!chosen.would_enable("hyper::proto", &Level::INFO));
        assert!(chosen.would_enable("hyper::proto", &Level::WARN));
        // Spans, fields, nothing at all or nonsense: EnvFilter's to read (or refuse)
        for setting in ["[http{route=/v1/entries}]=debug", "cashflow[ledger.record]=trace", "", "  ", "info,x=loud"] {
            assert!(plain_filter(Some(setting)).is_none(), "{setting:?}");
        }
    }

    #[test]
    fn every_metric_is_described_once() {
        let mut names: Vec<_> = DESCRIPTIONS.iter().map(|d| d.name).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(names.len(), before);
    }

    /// Everything `f` logs, formatted by a text subscriber (no time, colours when `ansi`) whose
    /// fields are written by `fields`.
    fn logged<N>(fields: N, ansi: bool, f: impl FnOnce()) -> String
    where
        N: for<'w> tracing_subscriber::fmt::FormatFields<'w> + Send + Sync + 'static,
    {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buffer(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().map_err(|_| std::io::Error::other("poisoned"))?.extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .without_time()
            .with_ansi(ansi)
            .with_writer(move || writer.clone())
            .fmt_fields(fields)
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let bytes = buffer.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    /// Every kind of field a line of ours carries, in a span and in an event inside it.
    fn a_request_with_a_failure() {
        #[derive(Debug, thiserror::Error)]
        #[error("store unavailable")]
        struct Outer(#[source] std::io::Error);
        let error = Outer(std::io::Error::other("connection refused"));
        let span = tracing::info_span!(
            "http",
            method = %"GET",
            route = %"/v1/balances/daily/{date}",
            request_id = %"7d0c8b1e-2f0a-4c52-9b3e-5a8f1d2c3b4a",
            id = "a \"quoted\" str",
            count = 3_i64,
            ratio = 0.5_f64,
            ok = true,
            r#type = "credit",
            shape = ?Some(1),
        );
        let _entered = span.enter();
        tracing::warn!(
            error = &error as &(dyn std::error::Error + 'static),
            attempt = 2_u64,
            "the write was refused: {}",
            "retrying"
        );
        tracing::info!(message = "only a message");
        tracing::debug!(status = 200_u16, latency_ms = 1_u128, "request served");
    }

    #[test]
    fn text_fields_write_what_the_default_format_writes() {
        for ansi in [false, true] {
            let default = logged(tracing_subscriber::fmt::format::DefaultFields::new(), ansi, a_request_with_a_failure);
            let ours = logged(TextFields, ansi, a_request_with_a_failure);
            assert_eq!(ours, default, "ansi: {ansi}");
            assert_eq!(ours.lines().count(), 3, "{ours}");
        }
        let plain = logged(TextFields, false, a_request_with_a_failure);
        assert!(
            plain.contains(r#"request_id=7d0c8b1e-2f0a-4c52-9b3e-5a8f1d2c3b4a id="a \"quoted\" str" count=3"#),
            "{plain}"
        );
        assert!(plain.contains("error=store unavailable error.sources=[connection refused] attempt=2"), "{plain}");
    }
}
