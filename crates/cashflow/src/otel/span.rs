//! Our spans as OpenTelemetry spans: the record of one span, and the `tracing` layer that makes
//! one for each of our spans it is given.
//!
//! Why not `tracing-opentelemetry` and the SDK's span: for each span they build an SDK
//! `SpanBuilder`, an OpenTelemetry `Context`, the SDK's span and then its `SpanData`, each with
//! its own allocations, and every traced span cost ~2.3 µs where 85 % of the untraced rate
//! allowed ~2 µs for a whole cached read (BENCHMARKS.md, session 25). A [`SpanRecord`] is the
//! span's ids, name, times and fields, made once when the span starts, kept in the `tracing`
//! registry's extensions while it runs, and handed whole to the batch ([`super::batch`]) when
//! it closes. What it holds is what OTLP carries ([`super::protobuf`]); nothing else.
//!
//! Parents: a span's parent is the nearest span above it that this layer records (the
//! `tracing` registry's, seen through the exporting filter); a span with none, started while a
//! span recorded directly is current ([`current`], set by a request's span or one of its
//! path's around each poll of what it wraps, `super::Direct`), is that span's child; any other
//! starts a trace, sampled as [`super::Sampling`] says. A span of a trace sampled out is still
//! recorded (its children must know they are sampled out) but never handed to the batch.

use std::borrow::Cow;
use std::cell::RefCell;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use super::batch::Batch;
use super::{Ids, Sampling};

/// The kind of a span (OTLP's `SpanKind`), of the two we make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Internal,
    /// A request's span.
    Server,
}

/// An attribute's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Bool(bool),
    Int(i64),
    Float(f64),
}

/// One attribute (its key a `tracing` field name, or one of OpenTelemetry's conventions).
#[derive(Debug, Clone, PartialEq)]
pub struct Attribute {
    pub key: &'static str,
    pub value: Value,
}

/// A warning or error logged inside a span.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanEvent {
    pub time: u64,
    pub name: Cow<'static, str>,
    pub attributes: Vec<Attribute>,
}

/// One span, as it is exported.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanRecord {
    pub(crate) trace: [u8; 16],
    pub(crate) span: [u8; 8],
    /// All zeros for the root of a trace.
    pub(crate) parent: [u8; 8],
    /// Whether the parent is another process's (a caller's, or the request an event came from).
    pub(crate) parent_remote: bool,
    /// Whether its trace is sampled: only then is it exported.
    pub(crate) sampled: bool,
    pub(crate) name: Cow<'static, str>,
    pub(crate) kind: Kind,
    /// Unix time in nanoseconds.
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) attributes: Vec<Attribute>,
    pub(crate) events: Vec<SpanEvent>,
    /// (trace id, span id) of each span this one follows or works for.
    pub(crate) links: Vec<([u8; 16], [u8; 8])>,
    /// Set when the span failed: its status is then an error with this message.
    pub(crate) error: Option<String>,
}

impl SpanRecord {
    pub(crate) fn new(
        trace: [u8; 16],
        span: [u8; 8],
        parent: [u8; 8],
        kind: Kind,
        name: Cow<'static, str>,
        start: u64,
    ) -> Self {
        Self {
            trace,
            span,
            parent,
            parent_remote: false,
            sampled: true,
            name,
            kind,
            start,
            end: start,
            attributes: Vec::new(),
            events: Vec::new(),
            links: Vec::new(),
            error: None,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn trace_id(&self) -> opentelemetry::trace::TraceId {
        opentelemetry::trace::TraceId::from_bytes(self.trace)
    }

    pub fn span_id(&self) -> opentelemetry::trace::SpanId {
        opentelemetry::trace::SpanId::from_bytes(self.span)
    }

    /// `SpanId::INVALID` for the root of a trace.
    pub fn parent_span_id(&self) -> opentelemetry::trace::SpanId {
        opentelemetry::trace::SpanId::from_bytes(self.parent)
    }

    pub fn parent_is_remote(&self) -> bool {
        self.parent_remote
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The value of attribute `key`, as text.
    pub fn attribute(&self, key: &str) -> Option<String> {
        self.attributes.iter().find(|a| a.key == key).map(|a| match &a.value {
            Value::Str(s) => s.clone(),
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => f.to_string(),
        })
    }

    /// The spans it links to: (trace id, span id).
    pub fn links(&self) -> Vec<(opentelemetry::trace::TraceId, opentelemetry::trace::SpanId)> {
        self.links
            .iter()
            .map(|(t, s)| (opentelemetry::trace::TraceId::from_bytes(*t), opentelemetry::trace::SpanId::from_bytes(*s)))
            .collect()
    }

    pub fn is_error(&self) -> bool {
        self.error.is_some()
    }

    pub fn events(&self) -> &[SpanEvent] {
        &self.events
    }

    /// Adds a warning or error logged inside the span as its event; an error makes the span's
    /// status an error.
    fn add_event(&mut self, event: &Event<'_>) {
        let meta = event.metadata();
        let (mut message, mut attributes) = (None, Vec::new());
        event.record(&mut Values(|key, value| match (key, value) {
            ("message", Value::Str(text)) => message = Some(text),
            (key, value) => attributes.push(Attribute { key, value }),
        }));
        let name: Cow<'static, str> = message.map_or(Cow::Borrowed(meta.name()), Cow::Owned);
        if *meta.level() == tracing::Level::ERROR {
            self.error = Some(name.to_string());
        }
        attributes.push(Attribute { key: "level", value: Value::Str(meta.level().as_str().to_owned()) });
        attributes.push(Attribute { key: "target", value: Value::Str(meta.target().to_owned()) });
        self.events.push(SpanEvent { time: now(), name, attributes });
    }

    pub(crate) fn set(&mut self, key: &'static str, value: Value) {
        match self.attributes.iter_mut().find(|a| a.key == key) {
            Some(attribute) => attribute.value = value,
            None => self.attributes.push(Attribute { key, value }),
        }
    }
}

/// The current time as Unix nanoseconds.
pub(crate) fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// A span recorded directly: its record, until it ends.
pub(crate) type Held = Arc<std::sync::Mutex<Option<SpanRecord>>>;

/// A span's (trace id, span id).
pub(crate) type SpanIds = ([u8; 16], [u8; 8]);

thread_local! {
    /// The span recorded directly (a request's, or one of its path's) being polled on this
    /// thread: (trace id, span id), and its record, which the warnings and errors logged
    /// meanwhile join as events.
    static CURRENT: RefCell<Option<(SpanIds, Held)>> = const { RefCell::new(None) };
}

/// Runs `f` with the directly recorded span `ids` (whose record is `held`) current on this
/// thread.
pub(crate) fn in_request(ids: SpanIds, held: &Held, f: &mut dyn FnMut()) {
    let previous = CURRENT.with(|c| c.replace(Some((ids, held.clone()))));
    f();
    CURRENT.with(|c| *c.borrow_mut() = previous);
}

/// The directly recorded span being polled on this thread, if any.
pub(crate) fn current() -> Option<SpanIds> {
    CURRENT.with(|c| c.borrow().as_ref().map(|(ids, _)| *ids))
}

/// The layer that records our spans and hands the sampled ones to the batch when they close.
pub struct SpanLayer {
    pub(crate) sampling: Sampling,
    pub(crate) ids: Ids,
    pub(crate) batch: Arc<Batch>,
}

impl SpanLayer {
    /// The record of a span starting now, under `parent` (trace id, span id, sampled) or at
    /// the root of a new trace.
    fn start(&self, name: &'static str, parent: Option<([u8; 16], [u8; 8], bool)>) -> SpanRecord {
        let (trace, parent, sampled) = match parent {
            Some(parent) => parent,
            None => {
                let trace = self.ids.new_trace_id();
                (trace, [0; 8], self.sampling.sampled_bytes(None, &trace))
            }
        };
        let mut record = SpanRecord::new(trace, self.ids.new_span_id(), parent, Kind::Internal, name.into(), now());
        record.sampled = sampled;
        record
    }
}

impl<S> Layer<S> for SpanLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        // The filter makes what the logs want too: only ours, and not of a trace sampled out.
        if !super::exported(attrs.metadata()) || cashflow_http::context::in_unsampled_trace() {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        let parent = span
            .parent()
            .and_then(|p| p.extensions().get::<SpanRecord>().map(|r| (r.trace, r.span, r.sampled)))
            .or_else(|| current().map(|(trace, span)| (trace, span, true)));
        let mut record = self.start(attrs.metadata().name(), parent);
        attrs.record(&mut Values(|key, value| record.set(key, value)));
        span.extensions_mut().insert(record);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            if let Some(record) = span.extensions_mut().get_mut::<SpanRecord>() {
                values.record(&mut Values(|key, value| record.set(key, value)));
            }
        }
    }

    fn on_follows_from(&self, id: &Id, follows: &Id, ctx: Context<'_, S>) {
        let Some(other) = ctx.span(follows) else { return };
        let Some(link) = other.extensions().get::<SpanRecord>().filter(|r| r.sampled).map(|r| (r.trace, r.span)) else {
            return;
        };
        if let Some(span) = ctx.span(id) {
            if let Some(record) = span.extensions_mut().get_mut::<SpanRecord>() {
                record.links.push(link);
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if !super::exported(event.metadata()) {
            return;
        }
        // The innermost `tracing` span of ours, else the directly recorded span being polled.
        if let Some(span) = ctx.event_span(event) {
            if let Some(record) = span.extensions_mut().get_mut::<SpanRecord>() {
                record.add_event(event);
                return;
            }
        }
        CURRENT.with(|c| {
            if let Some((_, held)) = c.borrow().as_ref() {
                if let Some(record) = held.lock().ok().as_deref_mut().and_then(Option::as_mut) {
                    record.add_event(event);
                }
            }
        });
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(mut record) = span.extensions_mut().remove::<SpanRecord>() else { return };
        if record.sampled {
            record.end = now();
            self.batch.push(record);
        }
    }
}

/// Runs `f` on the record of `span` when it is one of ours, kept by the process's registry.
pub(crate) fn with_record(span: &tracing::Span, f: impl FnOnce(&mut SpanRecord)) {
    let mut f = Some(f);
    span.with_subscriber(|(id, dispatch)| {
        let Some(registry) = dispatch.downcast_ref::<tracing_subscriber::Registry>() else { return };
        let Some(span) = registry.span(id) else { return };
        let mut extensions = span.extensions_mut();
        if let (Some(record), Some(f)) = (extensions.get_mut::<SpanRecord>(), f.take()) {
            f(record);
        }
    });
}

/// Hands each field of a span or event to `F` as an attribute value.
struct Values<F: FnMut(&'static str, Value)>(F);

impl<F: FnMut(&'static str, Value)> Visit for Values<F> {
    fn record_str(&mut self, field: &Field, value: &str) {
        (self.0)(field.name(), Value::Str(value.to_owned()));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        (self.0)(field.name(), Value::Bool(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        (self.0)(field.name(), Value::Int(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        (self.0)(field.name(), i64::try_from(value).map_or_else(|_| Value::Str(value.to_string()), Value::Int));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        (self.0)(field.name(), Value::Float(value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        (self.0)(field.name(), Value::Str(format!("{value:?}")));
    }
}

/// The ids [`in_request`] made current on this thread (for tests).
#[cfg(test)]
pub(crate) fn in_request_ids() -> Option<([u8; 16], [u8; 8])> {
    current()
}
