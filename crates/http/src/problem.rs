//! RFC 9457 problem details (`application/problem+json`).
//!
//! Every error a client can see has a stable `type` (`/problems/<slug>`) that code can match
//! on, a human `title`, an optional `detail` about this occurrence, and the request id (added
//! by [`crate::layers`]) to correlate with our logs.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use crate::problem_type::ProblemType;

/// The media type of problem bodies.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// One problem response.
#[derive(Debug, Clone)]
pub struct Problem {
    status: StatusCode,
    kind: ProblemType,
    title: &'static str,
    detail: Option<String>,
    extra: Map<String, Value>,
}

impl Problem {
    /// A problem of a listed type with a short human title.
    pub fn new(status: StatusCode, kind: ProblemType, title: &'static str) -> Self {
        Self { status, kind, title, detail: None, extra: Map::new() }
    }

    /// What went wrong this time, for humans.
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// An extension member (for example the offending `field`).
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_owned(), value.into());
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable `type`.
    pub fn kind(&self) -> ProblemType {
        self.kind
    }

    /// The stable slug of the `type`.
    pub fn slug(&self) -> &'static str {
        self.kind.slug()
    }

    /// 400 with a field name, the common shape of a validation failure.
    pub fn invalid_field(kind: ProblemType, field: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, kind, "The request is invalid").detail(detail).with("field", field)
    }

    /// 404 for a resource that does not exist for this caller.
    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, ProblemType::NotFound, "Not found").detail(format!("{what} not found"))
    }

    /// 500 with no detail: the cause goes to the log, never to the client.
    pub fn internal() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, ProblemType::Internal, "Internal server error")
    }

    /// 503 when a dependency is unavailable.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, ProblemType::Unavailable, "Service temporarily unavailable")
            .detail(detail)
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        let mut body = Map::new();
        body.insert("type".into(), self.kind.uri().into());
        body.insert("title".into(), self.title.into());
        body.insert("status".into(), self.status.as_u16().into());
        if let Some(detail) = &self.detail {
            body.insert("detail".into(), detail.clone().into());
        }
        for (k, v) in &self.extra {
            body.insert(k.clone(), v.clone());
        }
        Value::Object(body)
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.kind)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut response = (self.status, self.body().to_string()).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        response
    }
}
