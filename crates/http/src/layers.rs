//! Middleware every service shares: a request id on every request and response (and inside
//! every problem body), a panic turned into a 500 problem instead of a dropped connection, a
//! tracing span per request, request count and latency metrics per route and status, a
//! body-size limit, and problem bodies for unknown routes.

use std::any::Any;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use http_body_util::BodyExt;
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
        .layer(middleware::from_fn(request_id_in_problems))
        .layer(middleware::from_fn(record_metrics))
        .layer(middleware::from_fn(crate::context::propagate))
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

/// `cashflow_http_requests_total` and `cashflow_http_request_duration_seconds`, labelled by
/// method, route template (never the raw path: ids would explode the label set) and status.
async fn record_metrics(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().as_str().to_owned();
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_owned();
    let response = next.run(req).await;
    let labels = [("method", method), ("route", route), ("status", response.status().as_u16().to_string())];
    metrics::counter!("cashflow_http_requests_total", &labels).increment(1);
    metrics::histogram!("cashflow_http_request_duration_seconds", &labels).record(started.elapsed().as_secs_f64());
    response
}

fn panic_problem(_err: Box<dyn Any + Send + 'static>) -> Response {
    tracing::error!("handler panicked");
    Problem::internal().into_response()
}

/// Adds `request_id` to every problem body. Only error responses pay for the rewrite.
async fn request_id_in_problems(req: Request, next: Next) -> Response {
    let request_id = req.headers().get(&REQUEST_ID).cloned();
    let response = next.run(req).await;
    let is_problem =
        response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes() == PROBLEM_JSON.as_bytes());
    let Some(request_id) = request_id.filter(|_| is_problem) else {
        return response;
    };
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
