//! Extractors whose rejections are [`Problem`]s: a client that sends bad JSON or a bad query
//! string gets the same kind of error body as any other mistake.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::{Problem, ProblemType};

/// `axum::Json` with problem rejections.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_problem(rejection)),
        }
    }
}

fn json_problem(rejection: JsonRejection) -> Problem {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ProblemType::UnsupportedMediaType,
            "Expected Content-Type: application/json",
        ),
        JsonRejection::JsonSyntaxError(e) => {
            Problem::new(StatusCode::BAD_REQUEST, ProblemType::MalformedJson, "The body is not valid JSON")
                .detail(e.body_text())
        }
        JsonRejection::JsonDataError(e) => Problem::new(
            StatusCode::BAD_REQUEST,
            ProblemType::InvalidBody,
            "The body does not match the expected shape",
        )
        .detail(e.body_text()),
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            Problem::new(StatusCode::PAYLOAD_TOO_LARGE, ProblemType::PayloadTooLarge, "The body is too large")
        }
        other => Problem::new(other.status(), ProblemType::InvalidBody, "The body could not be read")
            .detail(other.body_text()),
    }
}

/// `axum::extract::Query` with problem rejections.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(ApiQuery(value)),
            Err(rejection) => Err(query_problem(rejection)),
        }
    }
}

fn query_problem(rejection: QueryRejection) -> Problem {
    Problem::new(StatusCode::BAD_REQUEST, ProblemType::InvalidQuery, "The query string is invalid")
        .detail(rejection.body_text())
}
