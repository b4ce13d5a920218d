//! The trace context of the request being served, in W3C Trace Context form
//! (`traceparent: 00-<trace id>-<span id>-<flags>`).
//!
//! It continues a `traceparent` the caller (or API Gateway) sent, or starts a trace whose id is
//! the request id, so one id follows an entry from the HTTP request through the outbox and the
//! queue to the consolidator's logs. It is carried in a task-local for the request's handler,
//! which passes it on to the use case as a value; code outside a request sees `None`.
//!
//! When spans are exported (OpenTelemetry, installed by the binary), the exporter is the
//! [`SpanExport`] set with [`export_spans`]: the request's span then continues the caller's
//! trace in the exported tree too, and the request's `traceparent` names that span, so the
//! consumer's spans (which take the outbox's `traceparent` as their parent through
//! [`work_span`]) hang under it. This crate owns the small trait and knows nothing of
//! OpenTelemetry; with no exporter installed, each of these is one load of an empty cell.
//!
//! The sampling decision is made once, at the request's root and before any of its spans is
//! built ([`SpanExport::sampled`]), and travels in the `traceparent`'s sampled flag: a request
//! sampled out keeps its trace id (its log lines, the outbox row, the queue message carry it)
//! but no exported span is made for it, here ([`in_unsampled_trace`], which the exporter's
//! filter reads) or in the consumer ([`sampled_out`]). Building spans only to have the sampler
//! drop them cost a third of a cached read at 1 % sampling (BENCHMARKS.md, session 21). A
//! sampled request's spans are made by the exporter directly ([`request_span`]), not as
//! `tracing` spans.
//!
//! An `X-Amzn-Trace-Id` header (API Gateway's, X-Ray's) is continued like a `traceparent`
//! when no `traceparent` came: `Root=1-<8 hex>-<24 hex>` is the same 128-bit trace id.

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::task::Poll;

use axum::http::{HeaderMap, HeaderName, HeaderValue};

/// What a span exporter does with our spans: a seam owned by the code that makes the spans
/// (this crate, the consumer), implemented by the binary's telemetry module.
pub trait SpanExport: Send + Sync + 'static {
    /// Starts an exported span named `name` of work done for the remote span `parent` names (a
    /// valid `traceparent`; `None`: the root of a new trace), linked to the span `follows`
    /// names; `None` when its trace is not sampled.
    fn start_for(
        &self,
        name: &'static str,
        parent: Option<&str>,
        follows: Option<&str>,
    ) -> Option<Arc<dyn ExportedSpan>>;
    /// The `traceparent` naming `span`, when it is an exported span of a sampled trace.
    fn traceparent_of(&self, span: &tracing::Span) -> Option<String>;
    /// Links `span` to each span `traceparents` name (work done for them, not inside them).
    fn add_links(&self, span: &tracing::Span, traceparents: &[&str]);
    /// The id (32 lowercase hex digits) of a trace started here, given the one derived from
    /// the request id: that one, unless the exporter's id format requires another (X-Ray's
    /// begin with the time).
    fn new_trace_id(&self, from_request: [u8; 32]) -> [u8; 32];
    /// Whether the trace of a request is sampled: the one of the remote span `parent` (a valid
    /// `traceparent`) or else a new one with id `trace`. Decided before any span is built.
    fn sampled(&self, parent: Option<&str>, trace: &str) -> bool;
    /// Starts the exported span of a sampled request: the span `request.traceparent` names
    /// (its trace id and span id), a child of the remote span `request.parent` or else the root
    /// of a new trace. The request is served inside it ([`ExportedRequest::in_scope`]), and it
    /// ends with the response ([`ExportedRequest::end`]).
    fn start_request(&self, request: &RequestSpan<'_>) -> Box<dyn ExportedRequest>;
    /// Starts an exported span named `name`, a child of the exported span being polled on
    /// this thread (a request's, or another of these); `None` when none is.
    fn start_child(&self, name: &'static str) -> Option<Arc<dyn ExportedSpan>>;
}

/// What the exported span of a request is made of.
#[derive(Debug, Clone, Copy)]
pub struct RequestSpan<'a> {
    pub method: &'a str,
    /// The route's template (never the raw path).
    pub route: &'a str,
    /// The caller's `traceparent` (a valid one), if it sent one.
    pub parent: Option<&'a str>,
    /// The request's own: the ids the span takes.
    pub traceparent: &'a str,
}

/// The exported span of a request being served.
pub trait ExportedRequest: Send + Sync {
    /// Runs `f` with this span current: the spans `f` starts are its children.
    fn in_scope(&self, f: &mut dyn FnMut());
    /// Ends the span with the response's status.
    fn end(&self, status: u16);
}

/// An exported span of a request's trace made by the exporter directly ([`request_span`]).
pub trait ExportedSpan: Send + Sync {
    /// Runs `f` with this span current: the spans `f` starts are its children.
    fn in_scope(&self, f: &mut dyn FnMut());
    /// Sets the attribute `key`.
    fn set(&self, key: &'static str, value: String);
    /// Ends the span; later calls do nothing.
    fn end(&self);
}

static EXPORT: OnceLock<Box<dyn SpanExport>> = OnceLock::new();

/// Installs the process's span exporter (once; a second call is ignored and returns false).
pub fn export_spans(export: Box<dyn SpanExport>) -> bool {
    EXPORT.set(export).is_ok()
}

/// The installed span exporter, if spans are exported.
pub fn span_export() -> Option<&'static dyn SpanExport> {
    EXPORT.get().map(|e| &**e)
}

/// The exported span of work done here for the span `traceparent` names (another process's,
/// come through the outbox and the queue): its child when it is a valid `traceparent`, else the
/// root of a trace of its own, linked to the span `follows` names (the batch it was done in).
/// None when nothing is exported or its trace is sampled out. Made by the exporter directly,
/// not as a `tracing` span, as [`request_span`]'s are: the consumer makes one per event. It
/// ends when dropped.
pub fn work_span(name: &'static str, traceparent: Option<&str>, follows: Option<&str>) -> WorkSpan {
    let Some(export) = span_export() else { return WorkSpan(None) };
    let parent = traceparent.filter(|t| is_valid(t));
    if parent.is_some_and(|t| !is_sampled(t)) {
        return WorkSpan(None);
    }
    WorkSpan(export.start_for(name, parent, follows))
}

/// An exported span of work done for another span ([`work_span`]); it ends when dropped.
pub struct WorkSpan(Option<Arc<dyn ExportedSpan>>);

impl WorkSpan {
    /// Gives the span the attribute `key`; `value` is written out only for an exported span.
    pub fn with(self, key: &'static str, value: impl std::fmt::Display) -> Self {
        if let Some(exported) = &self.0 {
            exported.set(key, value.to_string());
        }
        self
    }
}

impl Drop for WorkSpan {
    fn drop(&mut self) {
        if let Some(exported) = &self.0 {
            exported.end();
        }
    }
}

/// The `traceparent` naming `span` when it is an exported span of a sampled trace (for the
/// spans of work done inside it to link to it).
pub fn traceparent_of_span(span: &tracing::Span) -> Option<String> {
    span_export()?.traceparent_of(span)
}

/// Links `span` to the span of each of `traceparents` (the valid and sampled ones: a link to a
/// trace nobody exported leads nowhere) when spans are exported, all at once.
pub fn link_all<'a>(span: &tracing::Span, traceparents: impl IntoIterator<Item = Option<&'a str>>) {
    let Some(export) = span_export() else { return };
    let others: Vec<&str> = traceparents.into_iter().flatten().filter(|t| is_sampled(t) && is_valid(t)).collect();
    if !others.is_empty() {
        export.add_links(span, &others);
    }
}

/// Whether spans are exported and `traceparent` is a valid context whose trace was sampled
/// out: then work done for it makes no exported span (the consumer skips the event's span).
pub fn sampled_out(traceparent: Option<&str>) -> bool {
    span_export().is_some() && traceparent.is_some_and(|t| is_valid(t) && !is_sampled(t))
}

/// Whether the task is serving a trace that was sampled out (its [`traceparent`]'s flag is
/// clear): the exporter's filter reads it for every span and event, so a sampled-out request
/// builds none. One task-local look-up.
pub fn in_unsampled_trace() -> bool {
    TRACEPARENT.try_with(|t| !is_sampled(t)).unwrap_or(false)
}

/// A span of a request's path (the token check, the ledger's write and its group-commit
/// wait, the report read), around the work [`RequestPathSpan::run`] is given.
///
/// - Nothing exported: `logs`'s span, as any `tracing` span (`RUST_LOG=debug` shows it).
/// - Exported, the request sampled out: no span at all, without asking the subscriber (with an
///   exporter installed, our crates' debug spans are wanted for some requests and not others,
///   so `tracing` asks the current subscriber at each one whether it is enabled, about 200
///   instructions even when the answer is no; BENCHMARKS.md, session 26).
/// - Exported, the request sampled: a span the exporter makes directly
///   ([`SpanExport::start_child`]), the child of the one being polled (the request's, or
///   another of these), not a `tracing` span. As `tracing` spans, each cost a traced cached
///   read ~4,000 instructions in the subscriber (a registry slot, a look-up per filtered
///   layer at every enter, exit and close), more than the rest of exporting it
///   (BENCHMARKS.md, session 27). The logs then lack it, as they lack every debug span at
///   the default `info` level.
/// - Outside a request being exported (a worker, a test): `logs`'s span, which the
///   exporting layer takes like any of our spans.
pub fn request_span(name: &'static str, logs: impl FnOnce() -> tracing::Span) -> RequestPathSpan {
    let Some(export) = span_export() else { return RequestPathSpan { logs: logs(), exported: None } };
    if in_unsampled_trace() {
        return RequestPathSpan { logs: tracing::Span::none(), exported: None };
    }
    match export.start_child(name) {
        Some(exported) => RequestPathSpan { logs: tracing::Span::none(), exported: Some(exported) },
        None => RequestPathSpan { logs: logs(), exported: None },
    }
}

/// A span of a request's path ([`request_span`]); clones are the same span.
#[derive(Clone)]
pub struct RequestPathSpan {
    logs: tracing::Span,
    exported: Option<Arc<dyn ExportedSpan>>,
}

impl RequestPathSpan {
    /// Sets the attribute `key` (the `tracing` span's field of that name, which must have
    /// been declared, `Empty` if need be).
    pub fn set(&self, key: &'static str, value: &str) {
        self.logs.record(key, value);
        if let Some(exported) = &self.exported {
            exported.set(key, value.to_owned());
        }
    }

    /// Gives the exported span the attribute `key` (the `tracing` span has it from its
    /// declaration); `value` is written out only for an exported span.
    pub fn with(self, key: &'static str, value: impl std::fmt::Display) -> Self {
        if let Some(exported) = &self.exported {
            exported.set(key, value.to_string());
        }
        self
    }

    /// Runs `work` inside the span, which ends when `work` does (or is dropped).
    pub async fn run<F: Future>(self, work: F) -> F::Output {
        use tracing::Instrument;
        let Some(exported) = self.exported else { return work.instrument(self.logs).await };
        let _ends = Ends(exported.clone());
        each_poll_in(|f| exported.in_scope(f), work).await
    }
}

/// Runs `work` with each of its polls inside `in_scope` (an exported span's, which makes the
/// span current on the thread while `work` runs, and only then: a task's polls may run on any
/// thread, between other tasks').
pub(crate) async fn each_poll_in<F: Future>(in_scope: impl Fn(&mut dyn FnMut()), work: F) -> F::Output {
    let mut work = std::pin::pin!(work);
    std::future::poll_fn(|cx| {
        let mut polled = Poll::Pending;
        in_scope(&mut || polled = work.as_mut().poll(cx));
        polled
    })
    .await
}

/// Ends an exported span when dropped.
struct Ends(Arc<dyn ExportedSpan>);

impl Drop for Ends {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// When spans are exported and every one of `traces` (a batch's events') was sampled out: the
/// first of them, which the batch's work is then done for ([`work_of`]), so that none of its
/// spans is exported (each would be the root of a trace of its own, linked to nothing
/// exported). Reads `traces` only with an exporter, and only up to the first trace sampled in
/// or absent.
pub fn all_sampled_out<T: AsRef<str>>(traces: impl IntoIterator<Item = Option<T>>) -> Option<T> {
    span_export()?;
    let mut first = None;
    for trace in traces {
        if !sampled_out(trace.as_ref().map(AsRef::as_ref)) {
            return None;
        }
        first = first.or(trace);
    }
    first
}

/// Runs `f` as work of the trace `traceparent` names ([`with_traceparent`]), or as it is
/// when there is none.
pub async fn work_of<F: std::future::Future>(traceparent: Option<String>, f: F) -> F::Output {
    match traceparent {
        Some(traceparent) => with_traceparent(traceparent, f).await,
        None => f.await,
    }
}

tokio::task_local! {
    static TRACEPARENT: String;
}

/// The `traceparent` of the request this task serves, if any.
pub fn traceparent() -> Option<String> {
    TRACEPARENT.try_with(Clone::clone).ok()
}

/// Runs `f` with `traceparent` as the current trace context (for workers and tests).
pub async fn with_traceparent<F: std::future::Future>(traceparent: String, f: F) -> F::Output {
    TRACEPARENT.scope(traceparent, f).await
}

/// A valid `traceparent` value: version 00, 32 hex trace id, 16 hex span id, 2 hex flags,
/// neither id all zeros. The relay and the consumer ask it of every event they move, so it
/// allocates nothing.
pub fn is_valid(value: &str) -> bool {
    let hex = |s: &[u8]| s.iter().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
    let Ok(v) = <&[u8; 55]>::try_from(value.as_bytes()) else { return false };
    v.starts_with(b"00-")
        && (v[35], v[52]) == (b'-', b'-')
        && hex(&v[3..35])
        && hex(&v[36..52])
        && hex(&v[53..55])
        && v[3..35].iter().any(|b| *b != b'0')
        && v[36..52].iter().any(|b| *b != b'0')
}

/// The trace id of a `traceparent`.
pub fn trace_id(traceparent: &str) -> Option<&str> {
    field(traceparent, 3..35).or_else(|| traceparent.split('-').nth(1))
}

/// The span id of a `traceparent` (the span of the service that wrote it).
pub fn span_id(traceparent: &str) -> Option<&str> {
    field(traceparent, 36..52).or_else(|| traceparent.split('-').nth(2))
}

/// The field at `at` of a `traceparent` of version 00's length and dashes (every one this
/// service writes), without splitting it: each request's log span asks for two, and splitting
/// cost ~1,000 instructions of a cached read's ~50,000 (BENCHMARKS.md, session 26).
fn field(traceparent: &str, at: std::ops::Range<usize>) -> Option<&str> {
    let bytes = traceparent.as_bytes();
    let shaped = bytes.len() == 55 && [2, 35, 52].iter().all(|at| bytes.get(*at) == Some(&b'-'));
    traceparent.get(at).filter(|_| shaped)
}

/// Whether a `traceparent`'s sampled flag (the low bit of its last two hex digits) is set.
/// Every span a request makes asks it ([`request_span`]), so the usual form (two hex digits
/// after the last `-`) is read from its last three bytes.
pub fn is_sampled(traceparent: &str) -> bool {
    let digit = |b: &u8| char::from(*b).to_digit(16);
    if let [.., b'-', high, low] = traceparent.as_bytes() {
        return digit(high).is_some() && digit(low).is_some_and(|low| low & 1 == 1);
    }
    let flags = traceparent.rsplit('-').next().unwrap_or_default();
    u8::from_str_radix(flags, 16).is_ok_and(|f| f & 1 == 1)
}

/// A new span id: 16 hex digits from a fresh (random) UUID.
fn new_span_id() -> u64 {
    uuid::Uuid::new_v4().as_u64_pair().0
}

/// The 32 lowercase hex digits of a request id that is (or contains, hyphens aside) exactly
/// that, as our UUIDs and nginx's `$request_id` are; not all zeros.
fn trace_of_request_id(request_id: &[u8]) -> Option<[u8; 32]> {
    let mut hex = [0u8; 32];
    let mut len = 0;
    for &b in request_id.iter().filter(|b| **b != b'-') {
        if len == hex.len() || !b.is_ascii_hexdigit() {
            return None;
        }
        hex[len] = b.to_ascii_lowercase();
        len += 1;
    }
    (len == hex.len() && hex.iter().any(|b| *b != b'0')).then_some(hex)
}

/// The id of a trace started here: the request id's hex when it is (or contains) 32 hex
/// digits; otherwise a fresh one.
fn new_trace_id(request_id: Option<&HeaderValue>) -> [u8; 32] {
    let derived = request_id.and_then(|id| trace_of_request_id(id.as_bytes()));
    derived.unwrap_or_else(|| {
        let mut hex = [0u8; 32];
        uuid::Uuid::new_v4().simple().encode_lower(&mut hex);
        hex
    })
}

/// A trace started from the request id ([`new_trace_id`]), sampled as far as we know.
#[cfg(test)]
fn start_trace(request_id: Option<&HeaderValue>) -> String {
    traceparent_of(&new_trace_id(request_id), true)
}

/// A `traceparent` in trace `trace` (32 hex digits) naming a new span of ours. Written by
/// hand: every request makes one, and `format!`'s machinery was most of its cost.
fn traceparent_of(trace: &[u8], sampled: bool) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut traceparent = String::with_capacity(55);
    traceparent.push_str("00-");
    // The hex digits are ASCII.
    traceparent.push_str(std::str::from_utf8(trace).unwrap_or_default());
    traceparent.push('-');
    let span = new_span_id();
    for shift in (0..16).rev() {
        traceparent.push(char::from(HEX[((span >> (shift * 4)) & 0xf) as usize]));
    }
    traceparent.push_str(if sampled { "-01" } else { "-00" });
    traceparent
}

/// The caller's trace context: a valid `traceparent`, or else an `X-Amzn-Trace-Id` turned
/// into one.
pub(crate) fn incoming(headers: &HeaderMap) -> Option<String> {
    const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
    const XRAY: HeaderName = HeaderName::from_static("x-amzn-trace-id");
    let traceparent = headers.get(TRACEPARENT).and_then(|v| v.to_str().ok()).filter(|v| is_valid(v));
    match traceparent {
        Some(t) => Some(t.to_owned()),
        None => headers.get(XRAY).and_then(|v| v.to_str().ok()).and_then(from_xray),
    }
}

/// The `traceparent` of an X-Ray trace header (`Root=1-5759e988-bd862e3fe1be46a994272793;
/// Parent=53995c3f42cd8ad8;Sampled=1`); `None` without a root and a parent.
pub fn from_xray(header: &str) -> Option<String> {
    let (mut root, mut parent, mut sampled) = (None, None, "01");
    for part in header.split(';').map(str::trim) {
        match part.split_once('=') {
            Some(("Root", v)) => root = v.strip_prefix("1-").and_then(|v| v.split_once('-')),
            Some(("Parent", v)) => parent = Some(v),
            Some(("Sampled", "0")) => sampled = "00",
            _ => {}
        }
    }
    let (time, random) = root?;
    let traceparent = format!("00-{time}{random}-{}-{sampled}", parent?).to_ascii_lowercase();
    is_valid(&traceparent).then_some(traceparent)
}

/// The X-Ray trace header of a `traceparent` (its root, parent and sampled flag).
pub fn to_xray(traceparent: &str) -> Option<String> {
    if !is_valid(traceparent) {
        return None;
    }
    let (trace, span) = (trace_id(traceparent)?, span_id(traceparent)?);
    let sampled = if traceparent.ends_with("01") { 1 } else { 0 };
    Some(format!("Root=1-{}-{};Parent={span};Sampled={sampled}", &trace[..8], &trace[8..]))
}

/// The trace context of a request (called by the shared middleware, [`crate::layers`]).
pub(crate) struct RequestTrace {
    /// Its `traceparent`: the caller's trace (`incoming`) continued with a span of our own, or
    /// a trace started from the request id.
    pub(crate) traceparent: String,
    /// Whether its spans are exported: an exporter is installed and sampled the trace in.
    pub(crate) exported: bool,
}

/// The trace context of a request continuing `incoming` (a valid `traceparent`) or started
/// here. With an exporter, the exporter decides whether it is sampled and the flag says so;
/// without one, the caller's flag is passed on and a trace started here is flagged sampled
/// (whoever exports downstream may sample it).
pub(crate) fn for_request(
    incoming: Option<&str>,
    request_id: &HeaderValue,
    export: Option<&dyn SpanExport>,
) -> RequestTrace {
    let Some(export) = export else {
        let traceparent = match incoming {
            Some(parent) => {
                format!("00-{}-{:016x}-{}", trace_id(parent).unwrap_or_default(), new_span_id(), &parent[53..55])
            }
            None => traceparent_of(&new_trace_id(Some(request_id)), true),
        };
        return RequestTrace { traceparent, exported: false };
    };
    let trace = match incoming {
        // A valid traceparent's trace id is 32 hex digits at 3..35.
        Some(parent) => parent.as_bytes().get(3..35).and_then(|t| <[u8; 32]>::try_from(t).ok()).unwrap_or([b'0'; 32]),
        None => export.new_trace_id(new_trace_id(Some(request_id))),
    };
    let sampled = export.sampled(incoming, std::str::from_utf8(&trace).unwrap_or_default());
    RequestTrace { traceparent: traceparent_of(&trace, sampled), exported: sampled }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ids_of_a_traceparent_are_its_second_and_third_fields_whatever_its_length() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!((trace_id(tp), span_id(tp)), (Some("4bf92f3577b34da6a3ce929d0e0e4736"), Some("00f067aa0ba902b7")));
        // Not of version 00's shape: split at its dashes, as always
        let odd = "01-abc-def-01-extra";
        assert_eq!((trace_id(odd), span_id(odd)), (Some("abc"), Some("def")));
        let shifted = "000-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01";
        assert_eq!(shifted.len(), 55);
        assert_eq!(trace_id(shifted), Some("4bf92f3577b34da6a3ce929d0e0e473"));
        assert_eq!((trace_id("none"), span_id("")), (None, None));
        // A multi-byte character in an id reads as the split reads it
        let wide = "00-4bf92f3577b34da6a3ce929d0e0e47é-00f067aa0ba902b7-01";
        assert_eq!(wide.len(), 55);
        assert_eq!(trace_id(wide), wide.split('-').nth(1));
    }

    #[test]
    fn the_sampled_flag_is_the_low_bit_of_the_last_two_hex_digits() {
        let tp = |flags: &str| format!("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-{flags}");
        let cases =
            [("01", true), ("00", false), ("03", true), ("02", false), ("0F", true), ("0e", false), ("0g", false)];
        for (flags, sampled) in cases {
            assert_eq!(is_sampled(&tp(flags)), sampled, "{flags}");
        }
        // Other lengths read as a hex number, as they always did
        for (flags, sampled) in [("1", true), ("001", true), ("g1", false), ("", false)] {
            assert_eq!(is_sampled(&tp(flags)), sampled, "{flags:?}");
        }
        assert!(is_sampled("01") && !is_sampled("") && !is_sampled("-"), "no `-`: the whole value is the flags");
    }

    #[test]
    fn only_well_formed_traceparents_are_continued() {
        assert!(is_valid("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        ] {
            assert!(!is_valid(bad), "{bad}");
        }
    }

    #[test]
    fn a_trace_started_from_a_uuid_request_id_carries_its_hex() {
        let id = HeaderValue::from_static("0a37b320-6160-403c-8af4-150f3ade4544");
        let tp = start_trace(Some(&id));
        assert!(is_valid(&tp), "{tp}");
        assert_eq!(trace_id(&tp), Some("0a37b3206160403c8af4150f3ade4544"));
        assert_eq!(span_id(&tp).map(str::len), Some(16));
        assert!(is_valid(&start_trace(None)));
        assert!(is_valid(&start_trace(Some(&HeaderValue::from_static("not-hex")))));
        // nginx's $request_id: 32 hex digits, no hyphens; upper case is lowered.
        let nginx = start_trace(Some(&HeaderValue::from_static("0A37B3206160403C8AF4150F3ADE4544")));
        assert_eq!(trace_id(&nginx), Some("0a37b3206160403c8af4150f3ade4544"));
        // An all-zero id is not a valid trace id; neither is one digit too many.
        for unusable in ["00000000-0000-0000-0000-000000000000", "0a37b3206160403c8af4150f3ade45440"] {
            let tp = start_trace(Some(&HeaderValue::from_static(unusable)));
            assert!(is_valid(&tp), "{tp}");
            assert_ne!(trace_id(&tp), Some(&unusable.replace('-', "")[..32]), "{unusable}");
        }
    }

    #[test]
    fn an_xray_trace_header_is_the_same_trace_as_a_traceparent() {
        let header = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1";
        let traceparent = from_xray(header).unwrap();
        assert_eq!(traceparent, "00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01");
        assert_eq!(to_xray(&traceparent).as_deref(), Some(header));
        assert_eq!(
            from_xray("Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=0").as_deref(),
            Some("00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-00")
        );
        // Lambda's header before any segment has no parent; a root alone names no span.
        assert_eq!(from_xray("Root=1-5759e988-bd862e3fe1be46a994272793"), None);
        assert_eq!(from_xray("Root=1-zz59e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8"), None);
    }

    #[tokio::test]
    async fn the_context_is_visible_inside_its_scope_only() {
        assert_eq!(traceparent(), None);
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned();
        let seen = with_traceparent(tp.clone(), async { traceparent() }).await;
        assert_eq!(seen, Some(tp));
    }
}
