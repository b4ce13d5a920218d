//! Traces exported with OpenTelemetry over OTLP/HTTP, when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set; with neither, no exporter is built and no
//! span leaves the process (the logs still carry the trace ids).
//!
//! The spans are `tracing` spans (the request's `http` span, `ledger.record`, the group-commit
//! wait, the relay's publish, the queue receive, the consumer's apply, the cache invalidation,
//! the report read, token verification) turned into OpenTelemetry spans by
//! `tracing-opentelemetry`. Their parents cross processes through W3C `traceparent`s: the
//! request's (continued from the caller, [`cashflow_http::context`]) travels in the outbox
//! event and the queue message, and the consumer makes each event's span its child.
//!
//! Why these pieces:
//! - The SDK's batch processor runs on its own thread, not on a runtime, and exports with a
//!   *blocking* reqwest client: an async client there would need a runtime the thread does
//!   not have (a panic that silently ends export), and the tonic exporter deadlocks when
//!   flushed from the current-thread runtimes that serve HTTP ([`crate::server`]). A flush or
//!   shutdown ([`crate::telemetry::shutdown`]) blocks only its caller until the processor's
//!   thread has sent what it holds, at most 5 s: a collector that never answers delays the
//!   exit by that much and no more (`tests/process.rs`). Requests never wait on export: past
//!   a full queue (`OTEL_BSP_MAX_QUEUE_SIZE`) spans are dropped.
//! - Sampling is the SDK's standard configuration (`OTEL_TRACES_SAMPLER`,
//!   `OTEL_TRACES_SAMPLER_ARG`; parent-based always-on by default), so a request whose caller
//!   sampled it out is not exported here either, and the consumer follows the request's
//!   decision carried in the `traceparent`'s flags.
//! - `CASHFLOW_TRACE_FORMAT=xray` makes new trace ids X-Ray ids (the first 32 bits are the
//!   Unix time, which X-Ray requires to accept a trace), so our traces join API Gateway's and
//!   Lambda's; the `X-Amzn-Trace-Id` header is continued in either format. In the default
//!   `w3c` format a trace started here takes the request id's hex as its id, as it does in the
//!   logs when nothing is exported.
//! - Only our crates' spans (debug and above) and warnings/errors are exported: the per-layer
//!   filter leaves the log filter (`RUST_LOG`) and so the cost of an untraced process as they
//!   were.

use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider};
use opentelemetry::Context;
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing::{Level, Metadata};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{FilterFn, Filtered};
use tracing_subscriber::Layer;

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

/// Whether the environment asks for spans to be exported (an OTLP endpoint is set).
pub fn configured() -> bool {
    ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
        .iter()
        .any(|var| std::env::var(var).is_ok_and(|v| !v.is_empty()))
}

/// The OTLP/HTTP (protobuf) exporter behind a batch processor, configured by the standard
/// `OTEL_*` variables; the service is named by `OTEL_SERVICE_NAME`, or `cashflow`.
pub fn otlp_provider(format: TraceFormat) -> anyhow::Result<SdkTracerProvider> {
    use opentelemetry_otlp::{Protocol, WithExportConfig};
    let exporter =
        opentelemetry_otlp::SpanExporter::builder().with_http().with_protocol(Protocol::HttpBinary).build()?;
    Ok(provider(format).with_batch_exporter(exporter).build())
}

/// A provider builder with our id generator and resource, to which an exporter is added.
pub fn provider(format: TraceFormat) -> opentelemetry_sdk::trace::TracerProviderBuilder {
    let name = std::env::var("OTEL_SERVICE_NAME").ok().filter(|n| !n.is_empty());
    let resource = Resource::builder().with_service_name(name.unwrap_or_else(|| "cashflow".into())).build();
    SdkTracerProvider::builder().with_id_generator(Ids { format }).with_resource(resource)
}

/// Which spans and events the exporting layer sees: our crates' spans at debug and above, and
/// their warnings and errors (as span events).
fn exported(meta: &Metadata<'_>) -> bool {
    let ours = meta.target().starts_with("cashflow");
    let level = if meta.is_span() { Level::DEBUG } else { Level::WARN };
    ours && *meta.level() <= level
}

/// The layer that turns our spans into OpenTelemetry spans of `provider`, and installs the
/// [`cashflow_http::context::SpanExport`] that joins them across processes.
pub fn layer<S>(
    provider: &SdkTracerProvider,
    format: TraceFormat,
) -> Filtered<tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>, FilterFn, S>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    cashflow_http::context::export_spans(Box::new(Export { format }));
    // Only the spans' own fields: code locations, thread names and busy/idle times would
    // double what each span carries.
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("cashflow"))
        .with_location(false)
        .with_threads(false)
        .with_target(false)
        .with_tracked_inactivity(false)
        .with_filter(FilterFn::new(exported as fn(&Metadata<'_>) -> bool))
}

thread_local! {
    /// The id the next trace started on this thread takes (set by [`Export::start`] around the
    /// one call that may start a trace).
    static NEXT_TRACE: Cell<Option<TraceId>> = const { Cell::new(None) };
}

/// Trace and span ids: random, except a trace id handed over in [`NEXT_TRACE`], and the time
/// prefix of X-Ray ids.
#[derive(Debug)]
struct Ids {
    format: TraceFormat,
}

impl IdGenerator for Ids {
    fn new_trace_id(&self) -> TraceId {
        if let Some(id) = NEXT_TRACE.with(Cell::take) {
            return id;
        }
        let random = RandomIdGenerator::default().new_trace_id();
        match self.format {
            TraceFormat::W3c => random,
            TraceFormat::Xray => xray_trace_id(random, SystemTime::now()),
        }
    }

    fn new_span_id(&self) -> SpanId {
        RandomIdGenerator::default().new_span_id()
    }
}

/// `random` with its first 32 bits replaced by the Unix time (X-Ray's `1-<time>-<random>`).
fn xray_trace_id(random: TraceId, now: SystemTime) -> TraceId {
    let seconds = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as u32;
    let mut bytes = random.to_bytes();
    bytes[..4].copy_from_slice(&seconds.to_be_bytes());
    TraceId::from_bytes(bytes)
}

/// The remote span a valid `traceparent` names.
fn remote(traceparent: &str) -> Option<SpanContext> {
    let trace = TraceId::from_hex(cashflow_http::context::trace_id(traceparent)?).ok()?;
    let span = SpanId::from_hex(cashflow_http::context::span_id(traceparent)?).ok()?;
    let flags = u8::from_str_radix(traceparent.rsplit('-').next()?, 16).ok()?;
    let context = SpanContext::new(trace, span, TraceFlags::new(flags), true, TraceState::default());
    context.is_valid().then_some(context)
}

/// The `traceparent` of a span context.
fn traceparent_of(context: &SpanContext) -> Option<String> {
    context
        .is_valid()
        .then(|| format!("00-{}-{}-{:02x}", context.trace_id(), context.span_id(), context.trace_flags().to_u8()))
}

/// [`cashflow_http::context::SpanExport`] through `tracing-opentelemetry`.
struct Export {
    format: TraceFormat,
}

impl cashflow_http::context::SpanExport for Export {
    fn set_parent(&self, span: &tracing::Span, traceparent: &str) {
        if let Some(parent) = remote(traceparent) {
            // Fails only for a span already started or not exported: it keeps its own parent.
            let _ = span.set_parent(Context::new().with_remote_span_context(parent));
        }
    }

    fn add_link(&self, span: &tracing::Span, traceparent: &str) {
        if let Some(other) = remote(traceparent) {
            span.add_link(other);
        }
    }

    fn start(&self, span: &tracing::Span, parent: Option<&str>, new_trace: &str) -> Option<String> {
        match parent {
            Some(parent) => self.set_parent(span, parent),
            None if self.format == TraceFormat::W3c => {
                NEXT_TRACE.with(|next| next.set(TraceId::from_hex(new_trace).ok()));
            }
            None => {}
        }
        // Starts the span: the sampler decides and the ids are drawn now.
        let context = span.context();
        NEXT_TRACE.with(|next| next.set(None));
        traceparent_of(context.span().span_context())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_xray_trace_id_begins_with_the_unix_time_of_its_start() {
        let random = TraceId::from_hex("0123456789abcdef0123456789abcdef").unwrap();
        let at = UNIX_EPOCH + std::time::Duration::from_secs(0x5759_e988);
        assert_eq!(xray_trace_id(random, at).to_string(), "5759e98889abcdef0123456789abcdef");
    }

    #[test]
    fn a_new_trace_takes_the_id_handed_over_once_and_xray_ids_carry_the_time() {
        let handed = TraceId::from_hex("0a37b3206160403c8af4150f3ade4544").unwrap();
        let w3c = Ids { format: TraceFormat::W3c };
        NEXT_TRACE.with(|next| next.set(Some(handed)));
        assert_eq!(w3c.new_trace_id(), handed);
        assert_ne!(w3c.new_trace_id(), handed, "taken once");

        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let xray = Ids { format: TraceFormat::Xray }.new_trace_id().to_bytes();
        let seconds = u64::from(u32::from_be_bytes([xray[0], xray[1], xray[2], xray[3]]));
        assert!(seconds.abs_diff(now) <= 1, "{seconds} vs {now}");
    }

    #[test]
    fn a_traceparent_round_trips_through_a_remote_span_context() {
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let context = remote(traceparent).unwrap();
        assert!(context.is_remote() && context.is_sampled());
        assert_eq!(traceparent_of(&context).as_deref(), Some(traceparent));
        assert!(!remote("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap().is_sampled());
    }
}
