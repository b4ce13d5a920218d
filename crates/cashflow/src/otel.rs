//! Traces exported with OpenTelemetry over OTLP/HTTP, when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set; with neither, no exporter is built and no
//! span leaves the process (the logs still carry the trace ids).
//!
//! The spans are `tracing` spans (`ledger.record`, the group-commit wait, the relay's publish,
//! the queue receive, the consumer's apply, the cache invalidation, the report read, token
//! verification) turned into OpenTelemetry spans by `tracing-opentelemetry`, under each
//! request's own span, which the SDK's tracer makes directly ([`Export::start_request`]): as a
//! `tracing` span its fields went through the logs' formatter and the OpenTelemetry layer,
//! each making a string of every one: 1.4 µs more per traced read (BENCHMARKS.md, session
//! 25). Their parents cross processes through W3C `traceparent`s: the request's (continued
//! from the caller, [`cashflow_http::context`]) travels in the outbox event and the queue
//! message, and the consumer makes each event's span its child.
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
//! - Sampling is configured by the standard `OTEL_TRACES_SAMPLER` and
//!   `OTEL_TRACES_SAMPLER_ARG` (parent-based always-on by default), and decided once per
//!   request, at its root, before any span is built ([`Sampling`], asked by the HTTP
//!   middleware through [`cashflow_http::context::SpanExport::sampled`]): a request whose
//!   caller sampled it out, or that the ratio leaves out, builds no exported span at all, but
//!   keeps its trace id in its log lines, its outbox row and its queue message, whose sampled
//!   flag tells the consumer to skip it too. Letting the SDK's sampler drop spans the
//!   `tracing` layer had already built cost a third of a cached read at 1 % (BENCHMARKS.md).
//!   The SDK is given the same [`Sampling`], so the two never disagree.
//! - A request sampled out is served under a subscriber of its own that has the logs alone
//!   (the one given to [`layer`], which the middleware takes from
//!   [`cashflow_http::context::SpanExport::unsampled`]), so it costs what it costs with no
//!   exporter. Refusing its spans in the exporting layer's filter was not enough: every span
//!   operation still went through both per-layer-filtered layers of the exporting subscriber,
//!   each looking the span up in the registry, and a sampled-out cached read cost 6 µs more
//!   than an untraced one (BENCHMARKS.md, session 23). The filter still refuses the spans of a
//!   sampled-out trace, for code that serves one outside a request's subscriber.
//! - The ratio reads the trace id's last 56 bits (the random part of W3C ids, as W3C Trace
//!   Context level 2 and OpenTelemetry's newer samplers do), not the SDK's last 63: a trace
//!   started here takes the request id's hex, a random UUID, whose 65th bit is always set,
//!   and the SDK's ratio sampled none of them below 50 %.
//! - `CASHFLOW_TRACE_FORMAT=xray` makes new trace ids X-Ray ids (the first 32 bits are the
//!   Unix time, which X-Ray requires to accept a trace), so our traces join API Gateway's and
//!   Lambda's; the `X-Amzn-Trace-Id` header is continued in either format. In the default
//!   `w3c` format a trace started here takes the request id's hex as its id, as it does in the
//!   logs when nothing is exported.
//! - Only our crates' spans (debug and above) and warnings/errors are exported: the per-layer
//!   filter leaves the log filter (`RUST_LOG`) and so the cost of an untraced process as they
//!   were.
//! - Per exported span: no code locations, thread names or busy/idle times, and no
//!   OpenTelemetry context attached on every poll (`with_context_activation(false)`: a span's
//!   parent is found through the `tracing` registry instead, and nothing here reads
//!   `opentelemetry::Context::current()`).

use std::time::{SystemTime, UNIX_EPOCH};

use cashflow_http::context::{ExportedRequest, RequestSpan};
use opentelemetry::trace::{
    Link, SamplingDecision, SamplingResult, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags,
    TraceId, TraceState, Tracer as _, TracerProvider,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, SdkTracerProvider, ShouldSample};
use opentelemetry_sdk::Resource;
use tracing::subscriber::Interest;
use tracing::{Level, Metadata};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{Filtered, LevelFilter};
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

    /// The share of new traces sampled.
    pub fn share(&self) -> f64 {
        match self {
            Self::AlwaysOn => 1.0,
            Self::AlwaysOff => 0.0,
            Self::Ratio(ratio) => *ratio,
            Self::ParentBased(root) => root.share(),
        }
    }

    /// Whether a trace is sampled: `parent` is the parent's sampled flag, `None` for a new trace.
    pub fn sampled(&self, parent: Option<bool>, trace: TraceId) -> bool {
        self.samples(parent, &|| trace.to_bytes()[9..].iter().fold(0u64, |n, b| n << 8 | u64::from(*b)))
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

impl ShouldSample for Sampling {
    fn should_sample(
        &self,
        parent_context: Option<&Context>,
        trace_id: TraceId,
        _name: &str,
        _span_kind: &SpanKind,
        _attributes: &[KeyValue],
        _links: &[Link],
    ) -> SamplingResult {
        let parent = parent_context.filter(|cx| cx.has_active_span());
        let sampled = self.sampled(parent.map(|cx| cx.span().span_context().is_sampled()), trace_id);
        SamplingResult {
            decision: if sampled { SamplingDecision::RecordAndSample } else { SamplingDecision::Drop },
            attributes: Vec::new(),
            trace_state: parent.map(|cx| cx.span().span_context().trace_state().clone()).unwrap_or_default(),
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

/// The OTLP/HTTP (protobuf) exporter behind a batch processor, configured by the standard
/// `OTEL_*` variables; the service is named by `OTEL_SERVICE_NAME`, or `cashflow`.
pub fn otlp_provider(config: &TraceConfig) -> anyhow::Result<SdkTracerProvider> {
    use opentelemetry_otlp::{Protocol, WithExportConfig};
    let exporter =
        opentelemetry_otlp::SpanExporter::builder().with_http().with_protocol(Protocol::HttpBinary).build()?;
    Ok(provider(config).with_batch_exporter(exporter).build())
}

/// A provider builder with our id generator, sampler and resource, to which an exporter is
/// added.
pub fn provider(config: &TraceConfig) -> opentelemetry_sdk::trace::TracerProviderBuilder {
    let name = std::env::var("OTEL_SERVICE_NAME").ok().filter(|n| !n.is_empty());
    let resource = Resource::builder().with_service_name(name.unwrap_or_else(|| "cashflow".into())).build();
    SdkTracerProvider::builder()
        .with_id_generator(Ids { format: config.format })
        .with_sampler(config.sampling.clone())
        .with_resource(resource)
}

/// Which spans and events the exporting layer takes: our crates' spans at debug and above,
/// and their warnings and errors (as span events); none of a request sampled out, and never
/// the logs-only span of a request not exported (target `cashflow_http::unexported`).
#[derive(Debug, Clone, Copy)]
pub struct Exported;

impl Exported {
    /// What the metadata alone decides (once per call site).
    fn wanted(meta: &Metadata<'_>) -> bool {
        let level = if meta.is_span() { Level::DEBUG } else { Level::WARN };
        let target = meta.target();
        target.starts_with("cashflow") && target != "cashflow_http::unexported" && *meta.level() <= level
    }
}

impl<S> tracing_subscriber::layer::Filter<S> for Exported {
    fn enabled(&self, meta: &Metadata<'_>, _: &tracing_subscriber::layer::Context<'_, S>) -> bool {
        Self::wanted(meta) && !cashflow_http::context::in_unsampled_trace()
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        // "Sometimes": whether the task serves a sampled trace is known only at each call.
        if Self::wanted(meta) {
            Interest::sometimes()
        } else {
            Interest::never()
        }
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::DEBUG)
    }
}

/// The layer that turns our spans into OpenTelemetry spans of `provider`, and installs the
/// [`cashflow_http::context::SpanExport`] that joins them across processes and samples each
/// request as `config` says.
///
/// `unsampled` is the subscriber a request sampled out is served under: the process's logs
/// alone, as they are when nothing is exported.
pub fn layer<S>(
    provider: &SdkTracerProvider,
    config: &TraceConfig,
    unsampled: tracing::Dispatch,
) -> Filtered<tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>, Exported, S>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    let tracer = provider.tracer("cashflow");
    cashflow_http::context::export_spans(Box::new(Export { config: config.clone(), unsampled, tracer }));
    unfiltered_layer(provider).with_filter(Exported)
}

/// The layer [`layer`] filters: every span it sees becomes an OpenTelemetry span of `provider`,
/// with only the spans' own fields (code locations, thread names and busy/idle times would
/// double what each span carries).
pub fn unfiltered_layer<S>(
    provider: &SdkTracerProvider,
) -> tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("cashflow"))
        .with_location(false)
        .with_threads(false)
        .with_target(false)
        .with_tracked_inactivity(false)
        .with_context_activation(false)
}

/// Trace and span ids: random, with the time prefix of X-Ray ids. (A request's exported span
/// takes its ids from the request's `traceparent` instead: [`Export::start_request`].)
#[derive(Debug)]
struct Ids {
    format: TraceFormat,
}

impl IdGenerator for Ids {
    fn new_trace_id(&self) -> TraceId {
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

/// A context whose span is the remote one a valid `traceparent` names.
fn remote_context(traceparent: &str) -> Option<Context> {
    remote(traceparent).map(|span| Context::new().with_remote_span_context(span))
}

/// The remote span a valid `traceparent` names.
fn remote(traceparent: &str) -> Option<SpanContext> {
    let trace = TraceId::from(hex_id(cashflow_http::context::trace_id(traceparent)?)?);
    let span = SpanId::from(u64::try_from(hex_id(cashflow_http::context::span_id(traceparent)?)?).ok()?);
    let flags = u8::from_str_radix(traceparent.rsplit('-').next()?, 16).ok()?;
    let context = SpanContext::new(trace, span, TraceFlags::new(flags), true, TraceState::default());
    context.is_valid().then_some(context)
}

/// The `traceparent` of a span context.
#[cfg(test)]
fn traceparent_of(context: &SpanContext) -> Option<String> {
    context
        .is_valid()
        .then(|| format!("00-{}-{}-{:02x}", context.trace_id(), context.span_id(), context.trace_flags().to_u8()))
}

/// [`cashflow_http::context::SpanExport`] through `tracing-opentelemetry`, and the SDK's
/// tracer for the requests' own spans.
struct Export {
    config: TraceConfig,
    unsampled: tracing::Dispatch,
    tracer: opentelemetry_sdk::trace::Tracer,
}

/// A request's exported span, in the OpenTelemetry context its handler runs in: the spans
/// `tracing-opentelemetry` starts meanwhile find no exported `tracing` span above them (the
/// request's `tracing` span is the logs' alone), so they take this context's span as their
/// parent.
struct HttpSpan {
    cx: Context,
}

impl ExportedRequest for HttpSpan {
    fn in_scope(&self, f: &mut dyn FnMut()) {
        let _current = self.cx.clone().attach();
        f();
    }

    fn end(&self, status: u16) {
        let span = self.cx.span();
        span.set_attribute(KeyValue::new("http.response.status_code", i64::from(status)));
        if status >= 500 {
            span.set_status(Status::error(""));
        }
        span.end();
    }
}

impl cashflow_http::context::SpanExport for Export {
    fn set_parent(&self, span: &tracing::Span, traceparent: &str) {
        if let Some(parent) = remote_context(traceparent) {
            // Fails only for a span already started or not exported: it keeps its own parent.
            let _ = span.set_parent(parent);
        }
    }

    fn add_link(&self, span: &tracing::Span, traceparent: &str) {
        if let Some(other) = remote(traceparent) {
            span.add_link(other);
        }
    }

    fn new_trace_id(&self, from_request: [u8; 32]) -> [u8; 32] {
        match self.config.format {
            TraceFormat::W3c => from_request,
            TraceFormat::Xray => {
                let id = xray_trace_id(RandomIdGenerator::default().new_trace_id(), SystemTime::now());
                let mut hex = [0u8; 32];
                for (digit, value) in hex.iter_mut().zip(id.to_bytes().iter().flat_map(|b| [b >> 4, b & 0xf])) {
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
        let parent = request.parent.and_then(remote_context).unwrap_or_default();
        let mut builder = self
            .tracer
            .span_builder(format!("{} {}", request.method, request.route))
            .with_kind(SpanKind::Server)
            .with_attributes([
                KeyValue::new("http.request.method", request.method.to_owned()),
                KeyValue::new("http.route", request.route.to_owned()),
            ]);
        // The request's own ids, which its `traceparent` already carries to the outbox event.
        if let Some(own) = remote(request.traceparent) {
            builder.trace_id = Some(own.trace_id());
            builder.span_id = Some(own.span_id());
        }
        let span = self.tracer.build_with_context(builder, &parent);
        Box::new(HttpSpan { cx: parent.with_span(span) })
    }

    fn unsampled(&self) -> &tracing::Dispatch {
        &self.unsampled
    }

    fn sampled_share(&self) -> f64 {
        self.config.sampling.share()
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
            let id = TraceId::from_hex(hex).unwrap();
            let low56 = u128::from_be_bytes(id.to_bytes()) as u64 & ((1 << 56) - 1);
            assert_eq!(low56_of_hex(hex), low56, "{hex}");
            for ratio in [0.0, 0.01, 0.5, 0.9999, 1.0] {
                let sampling = Sampling::ParentBased(Box::new(Sampling::Ratio(ratio)));
                assert_eq!(sampling.samples(None, &|| low56_of_hex(hex)), sampling.sampled(None, id), "{hex} {ratio}");
            }
        }
        assert_eq!(low56_of_hex("4bf92f3577b34da6a3ce929d0e0e473"), 0);
        assert_eq!(low56_of_hex("4bf92f3577b34da6a3ce929d0e0e473z"), 0);
    }

    #[test]
    fn an_xray_trace_id_begins_with_the_unix_time_of_its_start() {
        let random = TraceId::from_hex("0123456789abcdef0123456789abcdef").unwrap();
        let at = UNIX_EPOCH + std::time::Duration::from_secs(0x5759_e988);
        assert_eq!(xray_trace_id(random, at).to_string(), "5759e98889abcdef0123456789abcdef");
    }

    #[test]
    fn xray_trace_ids_carry_the_time_of_their_start() {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let xray = Ids { format: TraceFormat::Xray }.new_trace_id().to_bytes();
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
        let sampled = (0..20_000)
            .filter(|_| {
                let id = TraceId::from_bytes(*uuid::Uuid::new_v4().as_bytes());
                ratio.sampled(None, id)
            })
            .count();
        assert!((100..=300).contains(&sampled), "{sampled} of 20,000 sampled at 1 %");
        let id = TraceId::from_hex("0a37b3206160403c8a00000000000001").unwrap();
        assert!(Sampling::Ratio(0.0001).sampled(None, id));
        assert!(!Sampling::Ratio(0.0).sampled(None, id));
        assert!(!Sampling::Ratio(0.9999).sampled(None, TraceId::from_hex("0a37b3206160403c8affffffffffffff").unwrap()));
    }

    #[test]
    fn a_parent_based_sampler_follows_the_callers_flag_and_the_sdk_decides_the_same() {
        let sampling = Sampling::ParentBased(Box::new(Sampling::Ratio(0.5)));
        let out_by_ratio = TraceId::from_hex("4bf92f3577b34da6a3ffffffffffffff").unwrap();
        assert!(!sampling.sampled(None, out_by_ratio));
        assert!(sampling.sampled(Some(true), out_by_ratio));
        assert!(!sampling.sampled(Some(false), TraceId::from_hex("4bf92f3577b34da6a300000000000001").unwrap()));
        let sampled_parent = remote("00-4bf92f3577b34da6a3ffffffffffffff-00f067aa0ba902b7-01").unwrap();
        let cx = Context::new().with_remote_span_context(sampled_parent);
        let decision = |cx: Option<&Context>| {
            sampling.should_sample(cx, out_by_ratio, "http", &SpanKind::Server, &[], &[]).decision
        };
        assert_eq!(decision(Some(&cx)), SamplingDecision::RecordAndSample);
        assert_eq!(decision(None), SamplingDecision::Drop);
    }

    #[test]
    fn an_xray_id_for_a_new_request_trace_is_lowercase_hex_with_the_time_first() {
        let tracer = || SdkTracerProvider::builder().build().tracer("test");
        let export = Export {
            config: TraceConfig { format: TraceFormat::Xray, sampling: Sampling::default() },
            unsampled: tracing::Dispatch::none(),
            tracer: tracer(),
        };
        let from_request = *b"0a37b3206160403c8af4150f3ade4544";
        use cashflow_http::context::SpanExport;
        let hex = export.new_trace_id(from_request);
        let id = TraceId::from_hex(std::str::from_utf8(&hex).unwrap()).unwrap();
        assert_eq!(id.to_string().as_bytes(), hex);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let seconds = u64::from_str_radix(std::str::from_utf8(&hex[..8]).unwrap(), 16).unwrap();
        assert!(seconds.abs_diff(now) <= 1, "{seconds} vs {now}");
        let w3c = Export { config: TraceConfig::default(), unsampled: tracing::Dispatch::none(), tracer: tracer() };
        assert_eq!(w3c.new_trace_id(from_request), from_request);
    }

    #[test]
    fn a_requests_span_takes_its_ids_continues_its_caller_and_ends_with_its_status() {
        use cashflow_http::context::SpanExport;
        let exporter = opentelemetry_sdk::trace::InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
        let export = Export {
            config: TraceConfig::default(),
            unsampled: tracing::Dispatch::none(),
            tracer: provider.tracer("t"),
        };
        let caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let own = "00-4bf92f3577b34da6a3ce929d0e0e4736-53995c3f42cd8ad8-01";
        let new = "00-0a37b3206160403c8af4150f3ade4544-0a37b3206160403c-01";
        let served = |parent: Option<&str>, traceparent: &str, status: u16| {
            let span = export.start_request(&RequestSpan { method: "POST", route: "/v1/entries", parent, traceparent });
            // What starts inside it is its child.
            span.in_scope(&mut || assert_eq!(Context::current().span().span_context().span_id(), ids(traceparent).1));
            span.end(status);
        };
        served(Some(caller), own, 201);
        served(None, new, 503);

        let spans = exporter.get_finished_spans().unwrap();
        let [continued, started] = spans.as_slice() else { panic!("{spans:?}") };
        assert_eq!((continued.name.as_ref(), continued.span_kind.clone()), ("POST /v1/entries", SpanKind::Server));
        assert_eq!((continued.span_context.trace_id(), continued.span_context.span_id()), ids(own));
        assert_eq!(continued.parent_span_id, ids(caller).1);
        assert_eq!(continued.status, Status::Unset);
        assert_eq!((started.span_context.trace_id(), started.span_context.span_id()), ids(new));
        assert_eq!(started.parent_span_id, SpanId::INVALID, "a trace started here");
        assert!(matches!(started.status, Status::Error { .. }), "a 5xx is an error: {:?}", started.status);
        let status_code = |span: &opentelemetry_sdk::trace::SpanData| {
            span.attributes.iter().find(|kv| kv.key.as_str() == "http.response.status_code").map(|kv| kv.value.clone())
        };
        assert_eq!(status_code(continued), Some(opentelemetry::Value::I64(201)));
        assert_eq!(status_code(started), Some(opentelemetry::Value::I64(503)));
    }

    fn ids(traceparent: &str) -> (TraceId, SpanId) {
        let context = remote(traceparent).unwrap();
        (context.trace_id(), context.span_id())
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
