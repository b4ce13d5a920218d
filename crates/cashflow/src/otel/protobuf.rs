//! The OTLP trace request (`opentelemetry/proto/collector/trace/v1`) written in protobuf's wire
//! format straight from our [`SpanRecord`]s.
//!
//! Why not the SDK's exporter: it converts each span into the SDK's `SpanData`, then into
//! `prost` messages (an owned `Vec` or `String` for every id, name, key and value), then
//! encodes those; on this machine that conversion and its allocations were ~4 µs of a traced
//! cached read's ~11 µs of extra CPU (BENCHMARKS.md, session 25). Here each span is written
//! once into one buffer, borrowing its strings: a nested message is written in place and its
//! length prefix slid in front of it afterwards (a copy of its own bytes, small next to an
//! allocation). The messages and field numbers are OTLP's, checked by decoding what this
//! writes with `opentelemetry-proto`'s generated types (the tests below) and, end to end, by
//! the Python receiver built on PyPI's `opentelemetry-proto` (`scripts/otlp-receiver.py`).

use super::span::{Kind, SpanEvent, SpanRecord, Value};

/// Wire types.
const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;
const FIXED32: u32 = 5;

/// `Span.flags`: the trace flags' sampled bit, and "whether the parent is remote" is known.
const SAMPLED: u32 = 0x01;
const HAS_IS_REMOTE: u32 = 0x100;
const IS_REMOTE: u32 = 0x200;

/// An `ExportTraceServiceRequest` of `spans`, all of one resource (whose encoded
/// `Resource` message is `resource`) and one instrumentation scope named `scope`.
#[cfg(test)]
pub(crate) fn export_request(resource: &[u8], scope: &str, spans: &[SpanRecord]) -> Vec<u8> {
    let mut written = Vec::new();
    for span in spans {
        span_field(&mut written, span);
    }
    around(resource, scope, &written)
}

/// Appends `span` as a `ScopeSpans.spans` field: what [`around`] wraps. The batch writes each
/// span so on the thread that ended it ([`super::batch`]).
pub(crate) fn span_field(buf: &mut Vec<u8>, span: &SpanRecord) {
    let len = span_len(span);
    tag(buf, 2, LEN);
    varint(buf, len as u64);
    let start = buf.len();
    write_span(buf, span);
    debug_assert_eq!(buf.len() - start, len, "{}", span.name);
}

/// An `ExportTraceServiceRequest` of the spans `written` (each a [`span_field`]), all of one
/// resource (whose encoded `Resource` message is `resource`) and one instrumentation scope
/// named `scope`. The spans are written first, so the two messages around them get their
/// lengths before they are written.
pub(crate) fn around(resource: &[u8], scope: &str, written: &[u8]) -> Vec<u8> {
    let mut scope_field = Vec::with_capacity(scope.len() + 4);
    // ScopeSpans.scope: InstrumentationScope { name = 1 }
    tag(&mut scope_field, 1, LEN);
    varint(&mut scope_field, field_len(scope.len()) as u64);
    string(&mut scope_field, 1, scope);
    let scope_spans = scope_field.len() + written.len();
    // ResourceSpans { resource = 1; scope_spans = 2 }
    let resource_spans = field_len(resource.len()) + field_len(scope_spans);
    let mut buf = Vec::with_capacity(field_len(resource_spans));
    // ExportTraceServiceRequest.resource_spans
    tag(&mut buf, 1, LEN);
    varint(&mut buf, resource_spans as u64);
    bytes(&mut buf, 1, resource);
    tag(&mut buf, 2, LEN);
    varint(&mut buf, scope_spans as u64);
    buf.extend_from_slice(&scope_field);
    buf.extend_from_slice(written);
    buf
}

/// A `Resource` message with `attributes` (string values).
pub(crate) fn resource(attributes: &[(String, String)]) -> Vec<u8> {
    let mut buf = Vec::new();
    for (key, value) in attributes {
        key_value(&mut buf, 1, key, &Value::Str(value.clone()));
    }
    buf
}

/// Every nested message's length is worked out before it is written (`*_len`), so each span
/// is written in one pass, byte by byte where the fields are small.
fn write_span(buf: &mut Vec<u8>, span: &SpanRecord) {
    bytes(buf, 1, &span.trace);
    bytes(buf, 2, &span.span);
    if span.parent != [0; 8] {
        bytes(buf, 4, &span.parent);
    }
    string(buf, 5, &span.name);
    varint_field(buf, 6, kind(span.kind));
    fixed64(buf, 7, span.start);
    fixed64(buf, 8, span.end);
    for attribute in &span.attributes {
        key_value(buf, 9, attribute.key, &attribute.value);
    }
    for event in &span.events {
        tag(buf, 11, LEN);
        varint(buf, event_len(event) as u64);
        fixed64(buf, 1, event.time);
        string(buf, 2, &event.name);
        for attribute in &event.attributes {
            key_value(buf, 3, attribute.key, &attribute.value);
        }
    }
    for (trace, link) in &span.links {
        tag(buf, 13, LEN);
        varint(buf, LINK_LEN as u64);
        bytes(buf, 1, trace);
        bytes(buf, 2, link);
        fixed32(buf, 6, SAMPLED | HAS_IS_REMOTE | IS_REMOTE);
    }
    if let Some(error) = &span.error {
        // Status { message = 2; code = 3 (STATUS_CODE_ERROR = 2) }
        tag(buf, 15, LEN);
        varint(buf, status_len(error) as u64);
        if !error.is_empty() {
            string(buf, 2, error);
        }
        varint_field(buf, 3, 2);
    }
    let remote = if span.parent != [0; 8] && span.parent_remote { IS_REMOTE } else { 0 };
    fixed32(buf, 16, SAMPLED | HAS_IS_REMOTE | remote);
}

/// The length of a span's message.
fn span_len(span: &SpanRecord) -> usize {
    let parent = if span.parent != [0; 8] { field_len(8) } else { 0 };
    let attributes: usize = span.attributes.iter().map(|a| field_len(key_value_len(a.key, &a.value))).sum();
    let events: usize = span.events.iter().map(|e| field_len(event_len(e))).sum();
    let links = span.links.len() * field_len(LINK_LEN);
    let status = span.error.as_deref().map_or(0, |error| field_len(status_len(error)));
    field_len(16)
        + field_len(8)
        + parent
        + field_len(span.name.len())
        + 1
        + varint_len(kind(span.kind))
        + 2 * 9
        + attributes
        + events
        + links
        + status
        // flags: field 16 takes a two-byte tag
        + 2
        + 4
}

/// A link's message: its trace id, span id and flags.
const LINK_LEN: usize = 18 + 10 + 5;

fn event_len(event: &SpanEvent) -> usize {
    let attributes: usize = event.attributes.iter().map(|a| field_len(key_value_len(a.key, &a.value))).sum();
    9 + field_len(event.name.len()) + attributes
}

fn status_len(message: &str) -> usize {
    let message = if message.is_empty() { 0 } else { field_len(message.len()) };
    message + 2
}

/// OTLP's `SpanKind` numbers.
fn kind(kind: Kind) -> u64 {
    match kind {
        Kind::Internal => 1,
        Kind::Server => 2,
    }
}

/// `KeyValue { key = 1; AnyValue value = 2 }` as field `field`; `AnyValue`'s one-of: string 1,
/// bool 2, int 3, double 4.
fn key_value(buf: &mut Vec<u8>, field: u32, key: &str, value: &Value) {
    tag(buf, field, LEN);
    varint(buf, key_value_len(key, value) as u64);
    string(buf, 1, key);
    tag(buf, 2, LEN);
    varint(buf, any_value_len(value) as u64);
    match value {
        Value::Str(s) => string(buf, 1, s),
        Value::Bool(b) => varint_field(buf, 2, u64::from(*b)),
        Value::Int(i) => varint_field(buf, 3, *i as u64),
        Value::Float(f) => fixed64(buf, 4, f.to_bits()),
    }
}

fn key_value_len(key: &str, value: &Value) -> usize {
    field_len(key.len()) + field_len(any_value_len(value))
}

fn any_value_len(value: &Value) -> usize {
    match value {
        Value::Str(s) => field_len(s.len()),
        Value::Bool(_) => 2,
        Value::Int(i) => 1 + varint_len(*i as u64),
        Value::Float(_) => 9,
    }
}

/// The bytes of a length-delimited field (of a field number below 16) with `len` bytes of content.
fn field_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

fn varint_len(value: u64) -> usize {
    (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
}

fn bytes(buf: &mut Vec<u8>, field: u32, data: &[u8]) {
    tag(buf, field, LEN);
    varint(buf, data.len() as u64);
    buf.extend_from_slice(data);
}

fn string(buf: &mut Vec<u8>, field: u32, s: &str) {
    bytes(buf, field, s.as_bytes());
}

fn varint_field(buf: &mut Vec<u8>, field: u32, value: u64) {
    tag(buf, field, VARINT);
    varint(buf, value);
}

fn fixed64(buf: &mut Vec<u8>, field: u32, value: u64) {
    tag(buf, field, FIXED64);
    buf.extend_from_slice(&value.to_le_bytes());
}

fn fixed32(buf: &mut Vec<u8>, field: u32, value: u32) {
    tag(buf, field, FIXED32);
    buf.extend_from_slice(&value.to_le_bytes());
}

fn tag(buf: &mut Vec<u8>, field: u32, wire: u32) {
    varint(buf, u64::from(field << 3 | wire));
}

fn varint(buf: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        buf.push((value as u8) | 0x80);
        value >>= 7;
    }
    buf.push(value as u8);
}

#[cfg(test)]
mod tests {
    use super::super::span::Attribute;
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value;
    use prost::Message as _;

    fn span(name: &'static str) -> SpanRecord {
        let mut span = SpanRecord::new([7; 16], [8; 8], [0; 8], Kind::Internal, name.into(), 1_700_000_000_000_000_001);
        span.end = 1_700_000_000_000_900_000;
        span
    }

    fn value(kv: &opentelemetry_proto::tonic::common::v1::KeyValue) -> any_value::Value {
        kv.value.clone().and_then(|v| v.value).unwrap()
    }

    #[test]
    fn what_is_written_decodes_as_otlp_with_every_field_in_its_place() {
        let mut server = span("GET /v1/balances/daily/{date}");
        server.kind = Kind::Server;
        server.parent = [9; 8];
        server.parent_remote = true;
        server.attributes.push(Attribute { key: "http.route", value: Value::Str("/v1/balances/daily/{date}".into()) });
        server.attributes.push(Attribute { key: "http.response.status_code", value: Value::Int(503) });
        server.attributes.push(Attribute { key: "negative", value: Value::Int(-3) });
        server.attributes.push(Attribute { key: "ok", value: Value::Bool(true) });
        server.attributes.push(Attribute { key: "ratio", value: Value::Float(0.25) });
        server.error = Some("boom".into());
        let mut batch = span("consolidation.batch");
        batch.links.push(([1; 16], [2; 8]));
        batch.events.push(SpanEvent {
            time: 1_700_000_000_000_500_000,
            name: "poison message".into(),
            attributes: vec![Attribute { key: "level", value: Value::Str("WARN".into()) }],
        });
        // Long enough for two-byte length prefixes.
        let mut long = span("report.read");
        long.attributes.push(Attribute { key: "description", value: Value::Str("x".repeat(300)) });
        let resource = resource(&[("service.name".into(), "cashflow".into())]);

        let bytes = export_request(&resource, "cashflow", &[server, batch, long]);
        let request = ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();

        let [resource_spans] = request.resource_spans.as_slice() else { panic!("{request:?}") };
        let service = &resource_spans.resource.as_ref().unwrap().attributes[0];
        assert_eq!(
            (service.key.as_str(), value(service)),
            ("service.name", any_value::Value::StringValue("cashflow".into()))
        );
        let [scope_spans] = resource_spans.scope_spans.as_slice() else { panic!() };
        assert_eq!(scope_spans.scope.as_ref().unwrap().name, "cashflow");
        let [server, batch, long] = scope_spans.spans.as_slice() else { panic!() };
        assert_eq!((server.trace_id.as_slice(), server.span_id.as_slice()), (&[7; 16][..], &[8; 8][..]));
        assert_eq!(server.parent_span_id, vec![9; 8]);
        assert_eq!((server.name.as_str(), server.kind), ("GET /v1/balances/daily/{date}", 2));
        assert_eq!(
            (server.start_time_unix_nano, server.end_time_unix_nano),
            (1_700_000_000_000_000_001, 1_700_000_000_000_900_000)
        );
        let attribute = |key: &str| server.attributes.iter().find(|kv| kv.key == key).map(value);
        assert_eq!(attribute("http.response.status_code"), Some(any_value::Value::IntValue(503)));
        assert_eq!(attribute("negative"), Some(any_value::Value::IntValue(-3)));
        assert_eq!(attribute("ok"), Some(any_value::Value::BoolValue(true)));
        assert_eq!(attribute("ratio"), Some(any_value::Value::DoubleValue(0.25)));
        let status = server.status.as_ref().unwrap();
        assert_eq!((status.code, status.message.as_str()), (2, "boom"));
        assert_eq!(server.flags, 0x301, "sampled, parent remote");
        assert_eq!((batch.kind, batch.parent_span_id.len(), batch.flags), (1, 0, 0x101));
        assert_eq!(batch.status, None);
        let link = &batch.links[0];
        assert_eq!((link.trace_id.as_slice(), link.span_id.as_slice()), (&[1; 16][..], &[2; 8][..]));
        let event = &batch.events[0];
        assert_eq!((event.name.as_str(), event.time_unix_nano), ("poison message", 1_700_000_000_000_500_000));
        assert_eq!(value(&event.attributes[0]), any_value::Value::StringValue("WARN".into()));
        assert_eq!(value(&long.attributes[0]), any_value::Value::StringValue("x".repeat(300)));
    }

    #[test]
    fn a_varint_is_seven_bits_a_byte_low_first() {
        let cases: [(u64, &[u8]); 5] = [
            (0, &[0]),
            (1, &[1]),
            (127, &[0x7f]),
            (300, &[0xac, 0x02]),
            (u64::MAX, &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
        ];
        for (value, expected) in cases {
            let mut buf = Vec::new();
            varint(&mut buf, value);
            assert_eq!(buf, expected, "{value}");
        }
    }
}
