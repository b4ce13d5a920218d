//! Middleware every service shares: a request id on every request and response (and inside
//! every problem body), a panic turned into a 500 problem instead of a dropped connection, a
//! tracing span per request, request count and latency metrics per route and status, a
//! body-size limit, and problem bodies for unknown routes.
//!
//! Request ids in problem bodies, the trace context and the metrics are one middleware
//! ([`around`]) rather than three: each `from_fn` layer clones the boxed service below it and
//! boxes a future per request, and on a cached report read those layers cost as much as the
//! handler. For the same reason the metric handles of each (route, method, status) are looked
//! up once and kept ([`RouteMetrics`]), instead of building and hashing their label set twice per
//! request.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use http_body_util::BodyExt;
use metrics::{Counter, Histogram};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::problem::PROBLEM_JSON;
use crate::Problem;

/// The request id header, set by us when the client (or the API gateway) did not.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Largest request body accepted. An entry is a few hundred bytes; 16 KiB leaves room for
/// long descriptions in any script and still stops abuse early.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// Wraps a service router with the shared layers and problem fallbacks.
pub fn common(router: Router) -> Router {
    router
        .fallback(|| async { Problem::new(StatusCode::NOT_FOUND, "not-found", "No such route") })
        .method_not_allowed_fallback(|| async {
            Problem::new(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", "Method not allowed for this route")
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(Arc::new(RouteMetrics::default()), around))
        .layer(CatchPanicLayer::custom(panic_problem))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let matched =
                req.extensions().get::<axum::extract::MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_default();
            let request_id = req.headers().get(&REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("");
            tracing::info_span!(
                "http",
                method = %req.method(),
                route = %matched,
                request_id = %request_id,
                trace_id = tracing::field::Empty
            )
        }))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

/// Everything the service does around each request, innermost layer first: the request id
/// into problem bodies, the trace context ([`crate::context`]) for the handler and the response,
/// and the request's metrics.
async fn around(State(metrics): State<Arc<RouteMetrics>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let route = req.extensions().get::<MatchedPath>().cloned();
    let request_id = req.headers().get(&REQUEST_ID).cloned();
    let response = crate::context::propagate(req, next).await;
    let response = match request_id {
        Some(id) if is_problem(&response) => with_request_id(response, &id).await,
        _ => response,
    };
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    let (count, latency) = metrics.handles(route, &method, response.status());
    count.increment(1);
    latency.record(started.elapsed().as_secs_f64());
    response
}

/// `cashflow_http_requests_total` and `cashflow_http_request_duration_seconds`, labelled by
/// method, route template (never the raw path: ids would explode the label set) and status,
/// with each label set's handles registered once.
#[derive(Default)]
struct RouteMetrics {
    by_route: RwLock<HashMap<String, Vec<Handles>>>,
}

/// The metric handles of one method and status of a route.
type Handles = (Method, StatusCode, Counter, Histogram);

impl RouteMetrics {
    fn handles(&self, route: &str, method: &Method, status: StatusCode) -> (Counter, Histogram) {
        let find = |known: &HashMap<String, Vec<Handles>>| {
            known
                .get(route)?
                .iter()
                .find(|(m, s, _, _)| m == method && *s == status)
                .map(|(_, _, c, h)| (c.clone(), h.clone()))
        };
        if let Some(found) = self.by_route.read().ok().as_deref().and_then(find) {
            return found;
        }
        let labels = [
            ("method", method.as_str().to_owned()),
            ("route", route.to_owned()),
            ("status", status.as_u16().to_string()),
        ];
        let handles = (
            metrics::counter!("cashflow_http_requests_total", &labels),
            metrics::histogram!("cashflow_http_request_duration_seconds", &labels),
        );
        if let Ok(mut known) = self.by_route.write() {
            known.entry(route.to_owned()).or_default().push((
                method.clone(),
                status,
                handles.0.clone(),
                handles.1.clone(),
            ));
        }
        handles
    }
}

fn panic_problem(_err: Box<dyn Any + Send + 'static>) -> Response {
    tracing::error!("handler panicked");
    Problem::internal().into_response()
}

fn is_problem(response: &Response) -> bool {
    response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes() == PROBLEM_JSON.as_bytes())
}

/// Adds `request_id` to a problem body. Only error responses pay for the rewrite.
async fn with_request_id(response: Response, request_id: &HeaderValue) -> Response {
    let (mut parts, body) = response.into_parts();
    let bytes = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let mut value: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    if let (Some(obj), Ok(id)) = (value.as_object_mut(), request_id.to_str()) {
        obj.insert("request_id".into(), id.into());
    }
    let body = value.to_string();
    parts.headers.remove(header::CONTENT_LENGTH);
    if let Ok(len) = HeaderValue::from_str(&body.len().to_string()) {
        parts.headers.insert(header::CONTENT_LENGTH, len);
    }
    Response::from_parts(parts, Body::from(body))
}
