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

    /// The body parsed as `axum::Json` parses it, answering the same rejections. A body sent
    /// as plain `application/json` (what every client of ours sends) is parsed by `serde_json`
    /// directly: `axum::Json` parses the `Content-Type` into a `Mime` and tracks the path of
    /// every value it reads (`serde_path_to_error`) so that an error can name where it is,
    /// which was a tenth of the instructions of a write's handler and its extractors
    /// (BENCHMARKS.md, session 28). Only a body that fails is parsed again by `axum::Json`, for
    /// its error; any other `Content-Type` takes `axum::Json`'s path.
    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let plain_json = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"application/json"));
        if !plain_json {
            return match axum::Json::<T>::from_request(req, state).await {
                Ok(axum::Json(value)) => Ok(ApiJson(value)),
                Err(rejection) => Err(json_problem(rejection)),
            };
        }
        let bytes = axum::body::Bytes::from_request(req, state).await.map_err(|e| json_problem(e.into()))?;
        match serde_json::from_slice(&bytes) {
            Ok(value) => Ok(ApiJson(value)),
            Err(_) => match axum::Json::<T>::from_bytes(&bytes) {
                Ok(axum::Json(value)) => Ok(ApiJson(value)),
                Err(rejection) => Err(json_problem(rejection)),
            },
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

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::response::IntoResponse;
    use http_body_util::BodyExt;

    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Entry {
        #[serde(rename = "type")]
        kind: String,
        amount: String,
        category: Option<String>,
    }

    /// What a request's answer reads as: the value's `Debug`, or the problem's status and body.
    async fn answer(result: Result<Entry, Problem>) -> String {
        match result {
            Ok(entry) => format!("{entry:?}"),
            Err(problem) => {
                let response = problem.into_response();
                let status = response.status();
                let body = response.into_body().collect().await.unwrap().to_bytes();
                format!("{status} {}", String::from_utf8_lossy(&body))
            }
        }
    }

    fn request(content_type: Option<&str>, body: &str) -> Request {
        let mut request = Request::post("/v1/entries");
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        request.body(Body::from(body.to_owned())).unwrap()
    }

    #[tokio::test]
    async fn a_body_is_parsed_and_refused_exactly_as_axum_json_does() {
        let valid = r#"{"type":"credit","amount":"10.00"}"#;
        let bodies = [
            valid,
            r#"{"type":"credit","amount":"10.00","category":null}"#,
            r#"{"type":"credit"}"#,
            r#"{"type":"credit","amount":10}"#,
            r#"{"type":"credit","amount":"10.00","extra":1}"#,
            r#"{"type":"credit","amount":"10.00"} trailing"#,
            r#"{"type":"credit","amount":"#,
            "",
            "[]",
        ];
        let content_types = [
            Some("application/json"),
            Some("APPLICATION/JSON"),
            Some("application/json; charset=utf-8"),
            Some("text/json"),
            None,
        ];
        for content_type in content_types {
            for body in bodies {
                let ours = ApiJson::<Entry>::from_request(request(content_type, body), &()).await.map(|ApiJson(e)| e);
                let axums = axum::Json::<Entry>::from_request(request(content_type, body), &())
                    .await
                    .map(|axum::Json(e)| e)
                    .map_err(json_problem);
                assert_eq!(answer(ours).await, answer(axums).await, "{content_type:?} {body}");
            }
        }
        let ours = ApiJson::<Entry>::from_request(request(Some("application/json"), valid), &()).await;
        assert_eq!(ours.map(|ApiJson(e)| e.amount).ok().as_deref(), Some("10.00"));
    }
}
