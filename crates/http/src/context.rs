//! The trace context of the request being served, in W3C Trace Context form
//! (`traceparent: 00-<trace id>-<span id>-<flags>`).
//!
//! It continues a `traceparent` the caller (or API Gateway) sent, or starts a trace whose id is
//! the request id, so one id follows an entry from the HTTP request through the outbox and the
//! queue to the consolidator's logs. It is carried in a task-local for the request's handler,
//! which passes it on to the use case as a value; code outside a request sees `None`.

use axum::http::{HeaderMap, HeaderValue};

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
/// neither id all zeros.
pub fn is_valid(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    let hex =
        |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
    matches!(parts.as_slice(), [v, t, s, f]
        if *v == "00" && hex(t, 32) && hex(s, 16) && hex(f, 2)
            && t.bytes().any(|b| b != b'0') && s.bytes().any(|b| b != b'0'))
}

/// The trace id of a `traceparent`.
pub fn trace_id(traceparent: &str) -> Option<&str> {
    traceparent.split('-').nth(1)
}

/// A new span id: 16 hex digits from a fresh (random) UUID.
fn span_id() -> u64 {
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

/// A trace derived from the request id when it is (or contains) 32 hex digits; otherwise a
/// fresh one.
fn start_trace(request_id: Option<&HeaderValue>) -> String {
    let derived = request_id.and_then(|id| trace_of_request_id(id.as_bytes()));
    let trace = derived.unwrap_or_else(|| {
        let mut hex = [0u8; 32];
        uuid::Uuid::new_v4().simple().encode_lower(&mut hex);
        hex
    });
    // The hex digits are ASCII.
    let trace = std::str::from_utf8(&trace).unwrap_or_default();
    format!("00-{trace}-{:016x}-01", span_id())
}

/// The trace context of a request: the caller's trace continued with a span of our own, or a
/// trace started from the request id (called by the shared middleware, [`crate::layers`]).
pub(crate) fn for_request(headers: &HeaderMap, request_id: &HeaderValue) -> String {
    let incoming = headers.get("traceparent").and_then(|v| v.to_str().ok()).filter(|v| is_valid(v));
    match incoming {
        Some(parent) => {
            format!("00-{}-{:016x}-{}", trace_id(parent).unwrap_or_default(), span_id(), &parent[53..55])
        }
        None => start_trace(Some(request_id)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[tokio::test]
    async fn the_context_is_visible_inside_its_scope_only() {
        assert_eq!(traceparent(), None);
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned();
        let seen = with_traceparent(tp.clone(), async { traceparent() }).await;
        assert_eq!(seen, Some(tp));
    }
}
