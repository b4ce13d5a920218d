//! Traces exported in OpenTelemetry's protocol (OTLP/HTTP, protobuf), when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set; with
//! neither, no exporter is built and no span leaves the process (the logs still carry the
//! trace ids).
//!
//! The spans are `tracing` spans (`ledger.record`, the group-commit wait, the relay's publish,
//! the queue receive, the consumer's apply, the cache invalidation, the report read, token
//! verification), recorded by our layer ([`span`]), under each request's own span, which is
//! recorded directly ([`Export::start_request`]): as a `tracing` span its fields went through
//! the logs' formatter too, 1.4 µs more per traced read (BENCHMARKS.md, session 25). Their
//! parents cross processes through W3C `traceparent`s: the request's (continued from the
//! caller, [`cashflow_http::context`]) travels in the outbox event and the queue message, and
//! the consumer makes each event's span its child.
//!
//! Why these pieces:
//! - Not the OpenTelemetry SDK and `tracing-opentelemetry`, which this module used until
//!   session 27: with them a span sampled at 100 % cost 2–4 µs, and a traced read ran at 72 %
//!   of an untraced one's rate against issue 14's 85 %. What a span is made of here
//!   ([`span`]), how it waits ([`batch`]) and how it is written ([`protobuf`]) are each a
//!   fraction of that; the module docs of each say what was dropped and why. What an
//!   exporter must do is OTLP's, and the protocol is checked against its generated types and,
//!   end to end, against a receiver built on PyPI's `opentelemetry-proto`.
//! - Spans are exported from a thread of their own with a *blocking* HTTP client
//!   ([`otlp`]): an async client there would need a runtime the thread does not have, and
//!   nothing is flushed from the current-thread runtimes that serve HTTP ([`crate::server`]).
//!   A flush or shutdown ([`crate::telemetry::shutdown`]) blocks only its caller until the
//!   thread has sent what it holds, at most 5 s: a collector that never answers delays the
//!   exit by that much and no more (`tests/process.rs`). Requests never wait on export: past
//!   a full queue (`OTEL_BSP_MAX_QUEUE_SIZE`) spans are dropped and counted.
//! - Sampling is configured by the standard `OTEL_TRACES_SAMPLER` and
//!   `OTEL_TRACES_SAMPLER_ARG` (parent-based always-on by default), and decided once per
//!   request, at its root, before any span is built ([`Sampling`], asked by the HTTP
//!   middleware through [`cashflow_http::context::SpanExport::sampled`]): a request whose
//!   caller sampled it out, or that the ratio leaves out, builds no exported span at all, but
//!   keeps its trace id in its log lines, its outbox row and its queue message, whose sampled
//!   flag tells the consumer to skip it too. Building spans only for a sampler to drop them
//!   cost a third of a cached read at 1 % (BENCHMARKS.md, session 21). A trace started
//!   outside a request (a relay or consumer batch) is sampled by the same [`Sampling`].
//! - One subscriber, with one filter ([`LogsOrExported`]): what the logs want or the exporter
//!   wants is made, and the exporting layer skips what is not ours or belongs to a trace
//!   sampled out. A sampled request's spans are recorded directly ([`Export::start_request`],
//!   [`Export::start_child`]), so what a request makes as `tracing` spans is the logs' alone,
//!   sampled or not. The two subscribers of sessions 23–26 (the logs alone for the requests
//!   sampled out) could crash SQLite's worker thread, and per-layer filters cost every
//!   request; [`LogsOrExported`] says how.
//! - The ratio reads the trace id's last 56 bits (the random part of W3C ids, as W3C Trace
//!   Context level 2 and OpenTelemetry's newer samplers do), not the last 63 the SDK read: a
//!   trace started here takes the request id's hex, a random UUID, whose 65th bit is always
//!   set, and the SDK's ratio sampled none of them below 50 %.
//! - `CASHFLOW_TRACE_FORMAT=xray` makes new trace ids X-Ray ids (the first 32 bits are the
//!   Unix time, which X-Ray requires to accept a trace), so our traces join API Gateway's and
//!   Lambda's; the `X-Amzn-Trace-Id` header is continued in either format. In the default
//!   `w3c` format a trace started here takes the request id's hex as its id, as it does in the
//!   logs when nothing is exported.
//! - Only our crates' spans (debug and above) are exported, with the warnings and errors logged
//!   inside them as span events (an error makes its span's status an error; a request's span
//!   is one too when it answers a 5xx). An untraced process builds none of this: its
//!   subscriber is the logs' alone, filtered by `RUST_LOG` as before.

mod batch;
mod otlp;
mod protobuf;
mod span;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cashflow_http::context::{ExportedRequest, ExportedSpan, RequestSpan};
use tracing::subscriber::Interest;
use tracing::{Level, Metadata};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

pub use batch::{BatchSettings, InMemory, SpanExporter};
pub use otlp::{OtlpExporter, OtlpSettings};
pub use span::{Attribute, Kind, SpanEvent, SpanLayer, SpanRecord, Value};

/// The id format of traces started here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TraceFormat {
    /// W3C ids (a trace started here takes the request id's hex).
    #[default]
    W3c,
    /// X-Ray ids: the first 8 hex digits are the Unix time of the trace's start.
    Xray,
}

impl TraceFormat {
    /// `CASHFLOW_TRACE_FORMAT` (`w3c`, the default, or `xray`).
    pub fn from_env() -> Result<Self, String> {
        match std::env::var("CASHFLOW_TRACE_FORMAT").as_deref() {
            Err(_) | Ok("") | Ok("w3c") => Ok(Self::W3c),
            Ok("xray") => Ok(Self::Xray),
            Ok(other) => Err(format!("CASHFLOW_TRACE_FORMAT={other}: expected w3c or xray")),
        }
    }
}

/// Which traces are sampled (`OTEL_TRACES_SAMPLER`, with `OTEL_TRACES_SAMPLER_ARG` for the
/// ratios), decided from the trace id and the parent's sampled flag alone, so the HTTP
/// middleware can decide before building a span and the SDK decides the same when it starts it.
#[derive(Debug, Clone, PartialEq)]
pub enum Sampling {
    AlwaysOn,
    AlwaysOff,
    /// This share of traces, by the last 56 bits of their id.
    Ratio(f64),
    /// The parent's decision when there is a parent; the inner one for a new trace.
    ParentBased(Box<Sampling>),
}

impl Default for Sampling {
    /// The SDK's default: follow the caller, sample every new trace.
    fn default() -> Self {
        Self::ParentBased(Box::new(Self::AlwaysOn))
    }
}

impl Sampling {
    /// From `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`.
    pub fn from_env() -> Result<Self, String> {
        let sampler = std::env::var("OTEL_TRACES_SAMPLER").ok().filter(|s| !s.is_empty());
        let arg = std::env::var("OTEL_TRACES_SAMPLER_ARG").ok().filter(|s| !s.is_empty());
        Self::parse(sampler.as_deref(), arg.as_deref())
    }

    /// `sampler` as `OTEL_TRACES_SAMPLER` names it, with its `arg` (a ratio: 1.0 when absent,
    /// as the specification says).
    pub fn parse(sampler: Option<&str>, arg: Option<&str>) -> Result<Self, String> {
        let ratio = || match arg {
            None => Ok(1.0),
            Some(arg) => arg
                .parse::<f64>()
                .ok()
                .filter(|r| (0.0..=1.0).contains(r))
                .ok_or_else(|| format!("OTEL_TRACES_SAMPLER_ARG={arg}: expected a ratio from 0 to 1")),
        };
        let parent_based = |root: Sampling| Self::ParentBased(Box::new(root));
        Ok(match sampler {
            None | Some("parentbased_always_on") => parent_based(Self::AlwaysOn),
            Some("always_on") => Self::AlwaysOn,
            Some("always_off") => Self::AlwaysOff,
            Some("traceidratio") => Self::Ratio(ratio()?),
            Some("parentbased_always_off") => parent_based(Self::AlwaysOff),
            Some("parentbased_traceidratio") => parent_based(Self::Ratio(ratio()?)),
            Some(other) => {
                return Err(format!(
                    "OTEL_TRACES_SAMPLER={other}: expected always_on, always_off, traceidratio, \
                     parentbased_always_on, parentbased_always_off or parentbased_traceidratio"
                ))
            }
        })
    }

    /// Whether a trace is sampled: `parent` is the parent's sampled flag, `None` for a new trace.
    pub fn sampled_bytes(&self, parent: Option<bool>, trace: &[u8; 16]) -> bool {
        self.samples(parent, &|| trace[9..].iter().fold(0u64, |n, b| n << 8 | u64::from(*b)))
    }

    /// [`Self::sampled`], given how to read the low 56 bits of the trace id (what the ratio
    /// samples by), which only a new trace under a ratio needs.
    fn samples(&self, parent: Option<bool>, low56: &dyn Fn() -> u64) -> bool {
        match self {
            Self::AlwaysOn => true,
            Self::AlwaysOff => false,
            Self::Ratio(ratio) => (low56() as f64) < ratio * (1u64 << 56) as f64,
            Self::ParentBased(root) => parent.unwrap_or_else(|| root.samples(None, low56)),
        }
    }
}

/// How traces are made: the id format and the sampling.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TraceConfig {
    pub format: TraceFormat,
    pub sampling: Sampling,
}

impl TraceConfig {
    /// `CASHFLOW_TRACE_FORMAT`, `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`.
    pub fn from_env() -> Result<Self, String> {
        Ok(Self { format: TraceFormat::from_env()?, sampling: Sampling::from_env()? })
    }
}

/// Whether the environment asks for spans to be exported (an OTLP endpoint is set).
pub fn configured() -> bool {
    ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
        .iter()
        .any(|var| std::env::var(var).is_ok_and(|v| !v.is_empty()))
}

/// The exporting half of tracing: the batch of finished spans and the thread that exports
/// it. [`layer`] feeds it; [`crate::telemetry`] flushes it.
#[derive(Clone)]
pub struct Pipeline {
    batch: Arc<batch::Batch>,
}

impl Pipeline {
    /// Spans exported to `exporter` in batches.
    pub fn new(exporter: impl SpanExporter, settings: BatchSettings) -> std::io::Result<Self> {
        Ok(Self { batch: batch::Batch::start(Box::new(exporter), settings)? })
    }

    /// The OTLP/HTTP exporter and the batch settings the `OTEL_*` variables configure.
    pub fn otlp_from_env() -> anyhow::Result<Self> {
        let settings = OtlpSettings::from_env().map_err(anyhow::Error::msg)?;
        let batch = BatchSettings::from_env().map_err(anyhow::Error::msg)?;
        Ok(Self::new(OtlpExporter::new(settings), batch)?)
    }

    /// Exports every span finished so far; false if `timeout` passed first.
    pub fn flush(&self, timeout: Duration) -> bool {
        self.batch.flush(timeout)
    }

    /// Flushes (up to `timeout`) and stops exporting.
    pub fn shutdown(&self, timeout: Duration) -> bool {
        self.batch.shutdown(timeout)
    }
}

/// Whether the exporter takes what `meta` describes: our crates' spans at debug and above, and
/// their warnings and errors (as span events), never the logs' own span of a request (target
/// `cashflow_http::unexported`). Only the metadata decides; a trace sampled out is refused
/// apart, at each span.
pub(crate) fn exported(meta: &Metadata<'_>) -> bool {
    let level = if meta.is_span() { Level::DEBUG } else { Level::WARN };
    let target = meta.target();
    target.starts_with("cashflow") && target != "cashflow_http::unexported" && *meta.level() <= level
}

/// The process's one filter when spans are exported: a span or event is made when the logs'
/// filter (`RUST_LOG`) enables it or the exporter wants it ([`exported`]). The logs and the
/// exporting layer then both see everything made, and each ignores what is not its own: the
/// exporter every span but ours, the logs our debug spans (which show as the context of the
/// lines logged inside them, as any span does).
///
/// Why one subscriber with one filter, not one filter per layer, nor a subscriber of the logs'
/// own for the requests not exported: `tracing-subscriber`'s per-layer filters look each span
/// up in the registry for each layer at every enter, exit and close (~2,500 instructions of a
/// cached read's ~50,000 under a 1 % ratio, BENCHMARKS.md, session 27); and a registry closes
/// a span's parent through the thread's *default* subscriber, so a span of a second subscriber
/// that ended on another thread (SQLite's worker thread holds the span of each query it runs)
/// made the first look up a span it never had, and panic (tokio-rs/tracing#1656): a
/// token request under valgrind found it.
pub struct LogsOrExported {
    logs: tracing_subscriber::EnvFilter,
}

impl LogsOrExported {
    pub fn new(logs: tracing_subscriber::EnvFilter) -> Self {
        Self { logs }
    }
}

impl<S> Layer<S> for LogsOrExported
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        let logs = Layer::<S>::register_callsite(&self.logs, meta);
        match exported(meta) {
            // Whether its trace is sampled is known only at each call.
            true if !logs.is_always() => Interest::sometimes(),
            _ => logs,
        }
    }

    fn enabled(&self, meta: &Metadata<'_>, cx: Context<'_, S>) -> bool {
        Layer::<S>::enabled(&self.logs, meta, cx) || (exported(meta) && !cashflow_http::context::in_unsampled_trace())
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Layer::<S>::max_level_hint(&self.logs).map(|logs| logs.max(LevelFilter::DEBUG))
    }

    // The logs' filter keeps what it needs for directives that name spans.
    fn on_new_span(&self, attrs: &tracing::span::Attributes<'_>, id: &tracing::span::Id, cx: Context<'_, S>) {
        Layer::<S>::on_new_span(&self.logs, attrs, id, cx);
    }

    fn on_record(&self, id: &tracing::span::Id, values: &tracing::span::Record<'_>, cx: Context<'_, S>) {
        Layer::<S>::on_record(&self.logs, id, values, cx);
    }

    fn on_enter(&self, id: &tracing::span::Id, cx: Context<'_, S>) {
        Layer::<S>::on_enter(&self.logs, id, cx);
    }

    fn on_exit(&self, id: &tracing::span::Id, cx: Context<'_, S>) {
        Layer::<S>::on_exit(&self.logs, id, cx);
    }

    fn on_close(&self, id: tracing::span::Id, cx: Context<'_, S>) {
        Layer::<S>::on_close(&self.logs, id, cx);
    }
}

/// The layer that turns our spans into OpenTelemetry spans exported by `pipeline`, and
/// installs the [`cashflow_http::context::SpanExport`] that joins them across processes and
/// samples each request as `config` says. It goes above [`LogsOrExported`], which decides what
/// is made.
pub fn layer(pipeline: &Pipeline, config: &TraceConfig) -> SpanLayer {
    let export = Export { config: config.clone(), pipeline: pipeline.clone() };
    cashflow_http::context::export_spans(Box::new(export));
    unfiltered_layer(pipeline, config)
}

/// The layer [`layer`] returns, without installing the [`cashflow_http::context::SpanExport`].
pub fn unfiltered_layer(pipeline: &Pipeline, config: &TraceConfig) -> SpanLayer {
    SpanLayer { sampling: config.sampling.clone(), ids: Ids { format: config.format }, batch: pipeline.batch.clone() }
}

/// Trace and span ids: random, with the time prefix of X-Ray ids. (A request's exported span
/// takes its ids from the request's `traceparent` instead: [`Export::start_request`].)
#[derive(Debug, Clone, Copy)]
pub struct Ids {
    format: TraceFormat,
}

impl Ids {
    /// A new trace id: random (122 bits of a v4 UUID), X-Ray's with the time first.
    pub(crate) fn new_trace_id(&self) -> [u8; 16] {
        let random = *uuid::Uuid::new_v4().as_bytes();
        match self.format {
            TraceFormat::W3c => random,
            TraceFormat::Xray => xray_trace_id(random, SystemTime::now()),
        }
    }

    /// A new span id, never all zeros.
    pub(crate) fn new_span_id(&self) -> [u8; 8] {
        let (high, low) = uuid::Uuid::new_v4().as_u64_pair();
        (high ^ low).max(1).to_be_bytes()
    }
}

/// `random` with its first 32 bits replaced by the Unix time (X-Ray's `1-<time>-<random>`).
fn xray_trace_id(mut random: [u8; 16], now: SystemTime) -> [u8; 16] {
    let seconds = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as u32;
    random[..4].copy_from_slice(&seconds.to_be_bytes());
    random
}

/// The number a trace or span id of at most 32 hex digits writes.
fn hex_id(hex: &str) -> Option<u128> {
    if hex.is_empty() || hex.len() > 32 {
        return None;
    }
    hex.bytes().try_fold(0u128, |id, digit| Some(id << 4 | u128::from(hex_digit(digit)?)))
}

/// The low 56 bits of a trace id of 32 hex digits, from its last 14 digits alone (0 when it
/// is not one, as for `TraceId::INVALID`). Every new trace's sampling decision reads them:
/// `TraceId::from_hex` parsed all 32 digits with `u128::from_str_radix`, ~600 instructions,
/// 0.7 % of a cached read's at 1 % sampling (BENCHMARKS.md, session 26).
fn low56_of_hex(hex: &str) -> u64 {
    let digits = hex.as_bytes().get(18..).filter(|_| hex.len() == 32).unwrap_or_default();
    digits.iter().try_fold(0u64, |n, digit| Some(n << 4 | u64::from(hex_digit(*digit)?))).unwrap_or(0)
}

fn hex_digit(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// The remote span a valid `traceparent` names: (trace id, span id, sampled). One of version
/// 00's shape (every one this service writes) is read by position, two digits to a byte: the
/// consumer reads one per event, the relay one per link, and each request its own (~700
/// instructions each by a digit-at-a-time parse of the whole ids, BENCHMARKS.md, session 27).
fn remote(traceparent: &str) -> Option<([u8; 16], [u8; 8], bool)> {
    let b = traceparent.as_bytes();
    let (trace, span, flags) = if b.len() == 55 && (b[2], b[35], b[52]) == (b'-', b'-', b'-') {
        (hex_bytes::<16>(&b[3..35])?, hex_bytes::<8>(&b[36..52])?, hex_bytes::<1>(&b[53..55])?[0])
    } else {
        let trace = hex_id(cashflow_http::context::trace_id(traceparent)?)?.to_be_bytes();
        let span = u64::try_from(hex_id(cashflow_http::context::span_id(traceparent)?)?).ok()?.to_be_bytes();
        let flags = traceparent.rsplit('-').next().filter(|f| f.len() == 2).and_then(hex_id)?;
        (trace, span, flags as u8)
    };
    (trace != [0; 16] && span != [0; 8]).then_some((trace, span, flags & 1 == 1))
}

/// The `N` bytes that `2 × N` hex digits write.
fn hex_bytes<const N: usize>(hex: &[u8]) -> Option<[u8; N]> {
    let mut bytes = [0u8; N];
    if hex.len() != 2 * N {
        return None;
    }
    for (byte, pair) in bytes.iter_mut().zip(hex.chunks_exact(2)) {
        *byte = hex_digit(pair[0])? << 4 | hex_digit(pair[1])?;
    }
    Some(bytes)
}

/// [`cashflow_http::context::SpanExport`] through our [`SpanLayer`], and the requests' own
/// spans.
struct Export {
    config: TraceConfig,
    pipeline: Pipeline,
}

/// A span recorded here directly rather than through `tracing`: a request's (whose fields as a
/// `tracing` span went through the logs' formatter too) and those of its path
/// ([`cashflow_http::context::request_span`]). While it is polled its ids are current on the
/// thread ([`span::in_request`]), so the spans started meanwhile, of either kind, are its
/// children.
struct Direct {
    ids: ([u8; 16], [u8; 8]),
    /// Taken when the span ends.
    record: span::Held,
    batch: Arc<batch::Batch>,
}

impl Direct {
    fn new(record: SpanRecord, batch: &Arc<batch::Batch>) -> Self {
        let ids = (record.trace, record.span);
        Self { ids, record: Arc::new(std::sync::Mutex::new(Some(record))), batch: batch.clone() }
    }

    /// Ends the span (once), after `last` has had the record.
    fn finish(&self, last: impl FnOnce(&mut SpanRecord)) {
        let taken = self.record.lock().ok().and_then(|mut r| r.take());
        let Some(mut record) = taken else { return };
        last(&mut record);
        record.end = span::now();
        self.batch.push(record);
    }
}

impl ExportedRequest for Direct {
    fn in_scope(&self, f: &mut dyn FnMut()) {
        span::in_request(self.ids, &self.record, f);
    }

    fn end(&self, status: u16) {
        self.finish(|record| {
            record
                .attributes
                .push(Attribute { key: "http.response.status_code", value: Value::Int(i64::from(status)) });
            if status >= 500 {
                record.error = Some(String::new());
            }
        });
    }
}

impl ExportedSpan for Direct {
    fn in_scope(&self, f: &mut dyn FnMut()) {
        span::in_request(self.ids, &self.record, f);
    }

    fn set(&self, key: &'static str, value: String) {
        if let Ok(mut record) = self.record.lock() {
            if let Some(record) = record.as_mut() {
                record.set(key, Value::Str(value));
            }
        }
    }

    fn end(&self) {
        self.finish(|_| {});
    }
}

impl cashflow_http::context::SpanExport for Export {
    fn start_for(
        &self,
        name: &'static str,
        parent: Option<&str>,
        follows: Option<&str>,
    ) -> Option<Arc<dyn ExportedSpan>> {
        let ids = Ids { format: self.config.format };
        let (trace, parent, sampled) = match parent.and_then(remote) {
            Some((trace, span, flag)) => (trace, Some(span), self.config.sampling.sampled_bytes(Some(flag), &trace)),
            None => {
                let trace = ids.new_trace_id();
                (trace, None, self.config.sampling.sampled_bytes(None, &trace))
            }
        };
        if !sampled {
            return None;
        }
        let mut record = SpanRecord::new(
            trace,
            ids.new_span_id(),
            parent.unwrap_or([0; 8]),
            Kind::Internal,
            name.into(),
            span::now(),
        );
        record.parent_remote = parent.is_some();
        if let Some((trace, span, _)) = follows.and_then(remote) {
            record.links.push((trace, span));
        }
        Some(Arc::new(Direct::new(record, &self.pipeline.batch)))
    }

    fn traceparent_of(&self, span: &tracing::Span) -> Option<String> {
        let mut ids = None;
        span::with_record(span, |record| ids = record.sampled.then_some((record.trace, record.span)));
        let (trace, span) = ids?;
        Some(format!("00-{:032x}-{:016x}-01", u128::from_be_bytes(trace), u64::from_be_bytes(span)))
    }

    fn add_links(&self, span: &tracing::Span, traceparents: &[&str]) {
        span::with_record(span, |record| {
            record.links.extend(traceparents.iter().filter_map(|t| remote(t)).map(|(trace, span, _)| (trace, span)));
        });
    }

    fn new_trace_id(&self, from_request: [u8; 32]) -> [u8; 32] {
        match self.config.format {
            TraceFormat::W3c => from_request,
            TraceFormat::Xray => {
                let id = Ids { format: TraceFormat::Xray }.new_trace_id();
                let mut hex = [0u8; 32];
                for (digit, value) in hex.iter_mut().zip(id.iter().flat_map(|b| [b >> 4, b & 0xf])) {
                    *digit = b"0123456789abcdef"[usize::from(value)];
                }
                hex
            }
        }
    }

    fn sampled(&self, parent: Option<&str>, trace: &str) -> bool {
        self.config.sampling.samples(parent.map(cashflow_http::context::is_sampled), &|| low56_of_hex(trace))
    }

    fn start_request(&self, request: &RequestSpan<'_>) -> Box<dyn ExportedRequest> {
        // The request's own ids, which its `traceparent` already carries to the outbox event.
        let (trace, own, _) = remote(request.traceparent).unwrap_or_else(|| {
            let ids = Ids { format: self.config.format };
            (ids.new_trace_id(), ids.new_span_id(), true)
        });
        let parent = request.parent.and_then(remote).filter(|(caller, _, _)| *caller == trace);
        let name = format!("{} {}", request.method, request.route);
        let mut record =
            SpanRecord::new(trace, own, parent.map_or([0; 8], |p| p.1), Kind::Server, name.into(), span::now());
        record.parent_remote = parent.is_some();
        record.attributes.extend([
            Attribute { key: "http.request.method", value: Value::Str(request.method.to_owned()) },
            Attribute { key: "http.route", value: Value::Str(request.route.to_owned()) },
        ]);
        Box::new(Direct::new(record, &self.pipeline.batch))
    }

    fn start_child(&self, name: &'static str) -> Option<Arc<dyn ExportedSpan>> {
        let (trace, parent) = span::current()?;
        let own = Ids { format: self.config.format }.new_span_id();
        let record = SpanRecord::new(trace, own, parent, Kind::Internal, name.into(), span::now());
        Some(Arc::new(Direct::new(record, &self.pipeline.batch)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hex_id_reads_as_a_radix_parse_reads_it_and_anything_else_is_refused() {
        let ids = [
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "00000000000000000000000000000001",
            "ffffffffffffffffffffffffffffffff",
            "4BF92F3577B34DA6A3CE929D0E0E4736",
            "00f067aa0ba902b7",
        ];
        for hex in ids {
            assert_eq!(hex_id(hex), Some(u128::from_str_radix(hex, 16).unwrap()), "{hex}");
        }
        let not_ids =
            ["", "4bf92f3577b34da6a3ce929d0e0e47361", "4bf92f3577b34da6a3ce929d0e0e473g", "+bf92f35", " 4bf9"];
        for hex in not_ids {
            assert_eq!(hex_id(hex), None, "{hex:?}");
        }
    }

    #[test]
    fn a_new_trace_is_sampled_by_the_low_56_bits_of_its_id_read_from_its_hex() {
        let ids = [
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "0a37b3206160403c8a00000000000001",
            "0a37b3206160403c8affffffffffffff",
        ];
        for hex in ids {
            let id = u128::from_str_radix(hex, 16).unwrap();
            let low56 = id as u64 & ((1 << 56) - 1);
            assert_eq!(low56_of_hex(hex), low56, "{hex}");
            for ratio in [0.0, 0.01, 0.5, 0.9999, 1.0] {
                let sampling = Sampling::ParentBased(Box::new(Sampling::Ratio(ratio)));
                let by_hex = sampling.samples(None, &|| low56_of_hex(hex));
                assert_eq!(by_hex, sampling.sampled_bytes(None, &id.to_be_bytes()), "{hex} {ratio}");
            }
        }
        assert_eq!(low56_of_hex("4bf92f3577b34da6a3ce929d0e0e473"), 0);
        assert_eq!(low56_of_hex("4bf92f3577b34da6a3ce929d0e0e473z"), 0);
    }

    #[test]
    fn an_xray_trace_id_begins_with_the_unix_time_of_its_start() {
        let random = 0x0123456789abcdef0123456789abcdef_u128.to_be_bytes();
        let at = UNIX_EPOCH + std::time::Duration::from_secs(0x5759_e988);
        assert_eq!(xray_trace_id(random, at), 0x5759e98889abcdef0123456789abcdef_u128.to_be_bytes());
    }

    #[test]
    fn xray_trace_ids_carry_the_time_of_their_start() {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let xray = Ids { format: TraceFormat::Xray }.new_trace_id();
        let seconds = u64::from(u32::from_be_bytes([xray[0], xray[1], xray[2], xray[3]]));
        assert!(seconds.abs_diff(now) <= 1, "{seconds} vs {now}");
    }

    #[test]
    fn the_sampler_variables_name_the_standard_samplers_and_a_bad_one_is_refused() {
        let parent_based = |root| Sampling::ParentBased(Box::new(root));
        assert_eq!(Sampling::parse(None, None), Ok(parent_based(Sampling::AlwaysOn)));
        assert_eq!(
            Sampling::parse(Some("parentbased_traceidratio"), Some("0.01")),
            Ok(parent_based(Sampling::Ratio(0.01)))
        );
        assert_eq!(Sampling::parse(Some("traceidratio"), None), Ok(Sampling::Ratio(1.0)));
        assert_eq!(Sampling::parse(Some("always_off"), None), Ok(Sampling::AlwaysOff));
        assert_eq!(Sampling::parse(Some("parentbased_always_off"), None), Ok(parent_based(Sampling::AlwaysOff)));
        assert!(Sampling::parse(Some("parentbased_traceidratio"), Some("1.5")).is_err());
        assert!(Sampling::parse(Some("traceidratio"), Some("one percent")).is_err());
        assert!(Sampling::parse(Some("sometimes"), None).is_err());
    }

    #[test]
    fn a_ratio_samples_its_share_of_traces_started_from_random_uuid_request_ids() {
        // Random UUIDs have fixed version and variant bits; the SDK's ratio, which reads the
        // last 63 bits, sampled none of them below 50 %.
        let ratio = Sampling::ParentBased(Box::new(Sampling::Ratio(0.01)));
        let sampled = (0..20_000).filter(|_| ratio.sampled_bytes(None, uuid::Uuid::new_v4().as_bytes())).count();
        assert!((100..=300).contains(&sampled), "{sampled} of 20,000 sampled at 1 %");
        let id = 0x0a37b3206160403c8a00000000000001_u128.to_be_bytes();
        assert!(Sampling::Ratio(0.0001).sampled_bytes(None, &id));
        assert!(!Sampling::Ratio(0.0).sampled_bytes(None, &id));
        let last = 0x0a37b3206160403c8affffffffffffff_u128.to_be_bytes();
        assert!(!Sampling::Ratio(0.9999).sampled_bytes(None, &last));
    }

    #[test]
    fn a_parent_based_sampler_follows_the_callers_flag() {
        let sampling = Sampling::ParentBased(Box::new(Sampling::Ratio(0.5)));
        let out_by_ratio = 0x4bf92f3577b34da6a3ffffffffffffff_u128.to_be_bytes();
        assert!(!sampling.sampled_bytes(None, &out_by_ratio));
        assert!(sampling.sampled_bytes(Some(true), &out_by_ratio));
        assert!(!sampling.sampled_bytes(Some(false), &0x4bf92f3577b34da6a300000000000001_u128.to_be_bytes()));
        // A ratio alone ignores the parent.
        assert!(!Sampling::Ratio(0.5).sampled_bytes(Some(true), &out_by_ratio));
    }

    fn export(config: TraceConfig, memory: &InMemory) -> Export {
        let pipeline = Pipeline::new(memory.clone(), BatchSettings::default()).unwrap();
        Export { config, pipeline }
    }

    #[test]
    fn an_xray_id_for_a_new_request_trace_is_lowercase_hex_with_the_time_first() {
        use cashflow_http::context::SpanExport;
        let memory = InMemory::default();
        let xray = export(TraceConfig { format: TraceFormat::Xray, sampling: Sampling::default() }, &memory);
        let from_request = *b"0a37b3206160403c8af4150f3ade4544";
        let hex = xray.new_trace_id(from_request);
        let text = std::str::from_utf8(&hex).unwrap();
        assert!(text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "{text}");
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let seconds = u64::from_str_radix(&text[..8], 16).unwrap();
        assert!(seconds.abs_diff(now) <= 1, "{seconds} vs {now}");
        let w3c = export(TraceConfig::default(), &memory);
        assert_eq!(w3c.new_trace_id(from_request), from_request);
    }

    #[test]
    fn a_requests_span_takes_its_ids_continues_its_caller_and_ends_with_its_status() {
        use cashflow_http::context::SpanExport;
        let memory = InMemory::default();
        let export = export(TraceConfig::default(), &memory);
        let caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let own = "00-4bf92f3577b34da6a3ce929d0e0e4736-53995c3f42cd8ad8-01";
        let new = "00-0a37b3206160403c8af4150f3ade4544-0a37b3206160403c-01";
        let served = |parent: Option<&str>, traceparent: &str, status: u16| {
            let span = export.start_request(&RequestSpan { method: "POST", route: "/v1/entries", parent, traceparent });
            // What starts inside it is its child.
            let (trace, own, _) = remote(traceparent).unwrap();
            span.in_scope(&mut || assert_eq!(span::in_request_ids(), Some((trace, own))));
            assert_eq!(span::in_request_ids(), None, "only while in scope");
            span.end(status);
            span.end(status); // a second end exports nothing more
        };
        served(Some(caller), own, 201);
        served(None, new, 503);
        assert!(export.pipeline.flush(std::time::Duration::from_secs(5)));

        let spans = memory.spans();
        let [continued, started] = spans.as_slice() else { panic!("{spans:?}") };
        assert_eq!((continued.name(), continued.kind()), ("POST /v1/entries", Kind::Server));
        assert_eq!((continued.trace, continued.span), ids(own));
        assert_eq!(continued.parent, ids(caller).1);
        assert!(continued.parent_is_remote() && !continued.is_error());
        assert_eq!((started.trace, started.span), ids(new));
        assert_eq!(started.parent, [0; 8], "a trace started here");
        assert!(started.is_error(), "a 5xx is an error");
        assert_eq!(continued.attribute("http.response.status_code").as_deref(), Some("201"));
        assert_eq!(started.attribute("http.response.status_code").as_deref(), Some("503"));
        assert_eq!(continued.attribute("http.route").as_deref(), Some("/v1/entries"));
        assert_eq!(continued.attribute("http.request.method").as_deref(), Some("POST"));
        assert!(continued.end >= continued.start && continued.start > 0);
    }

    #[test]
    fn warnings_and_errors_logged_inside_a_directly_recorded_span_are_its_events() {
        use cashflow_http::context::SpanExport;
        use tracing_subscriber::layer::SubscriberExt;
        let memory = InMemory::default();
        let export = export(TraceConfig::default(), &memory);
        let subscriber = tracing_subscriber::registry().with(unfiltered_layer(&export.pipeline, &export.config));
        tracing::subscriber::with_default(subscriber, || {
            let traceparent = "00-0a37b3206160403c8af4150f3ade4544-0a37b3206160403c-01";
            let span = export.start_request(&RequestSpan { method: "GET", route: "/r", parent: None, traceparent });
            span.in_scope(&mut || {
                tracing::warn!(target: "cashflow_test", retry_in_ms = 50_u64, "cache unavailable");
                tracing::error!(target: "cashflow_test", "store failed");
                tracing::warn!(target: "hyper", "not ours");
            });
            tracing::warn!(target: "cashflow_test", "outside the span");
            span.end(200);
        });
        assert!(export.pipeline.flush(std::time::Duration::from_secs(5)));

        let spans = memory.spans();
        let [request] = spans.as_slice() else { panic!("{spans:?}") };
        let names: Vec<&str> = request.events().iter().map(|e| e.name.as_ref()).collect();
        assert_eq!(names, ["cache unavailable", "store failed"]);
        let retry = request.events()[0].attributes.iter().find(|a| a.key == "retry_in_ms").map(|a| a.value.clone());
        assert_eq!(retry, Some(Value::Int(50)));
        assert!(request.is_error(), "an error inside makes the span an error, whatever the status");
    }

    fn ids(traceparent: &str) -> ([u8; 16], [u8; 8]) {
        let (trace, span, _) = remote(traceparent).unwrap();
        (trace, span)
    }

    #[test]
    fn a_traceparent_read_by_position_reads_as_one_split_at_its_dashes() {
        for traceparent in [
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-00",
            "00-ffffffffffffffffffffffffffffffff-ffffffffffffffff-ff",
        ] {
            let (trace, span, sampled) = remote(traceparent).unwrap();
            let parts: Vec<&str> = traceparent.split('-').collect();
            assert_eq!(u128::from_be_bytes(trace), u128::from_str_radix(parts[1], 16).unwrap());
            assert_eq!(u64::from_be_bytes(span), u64::from_str_radix(parts[2], 16).unwrap());
            assert_eq!(sampled, u8::from_str_radix(parts[3], 16).unwrap() & 1 == 1);
        }
        assert_eq!(remote("00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01"), None);
        assert_eq!(remote("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x"), None);
    }

    #[test]
    fn a_traceparent_names_a_remote_span_and_anything_else_names_none() {
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let (trace, span, sampled) = remote(traceparent).unwrap();
        assert_eq!(u128::from_be_bytes(trace), 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(u64::from_be_bytes(span), 0x00f067aa0ba902b7);
        assert!(sampled);
        assert!(!remote("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap().2);
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "nonsense",
        ] {
            assert_eq!(remote(bad), None, "{bad}");
        }
    }
}
