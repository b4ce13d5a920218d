//! `ledger-api`, `reports-api` and `web`: the processes' routers, behind the same common
//! layers, driven by API Gateway HTTP API (v2) events through `lambda_http`.
//!
//! `web` is the merchant's web app ([`cashflow::app::Parts::web`]) over the ledger and reports
//! routers in the same function, as in `serve`. API Gateway's HTTP APIs cannot stream, so its
//! live panel is polled every [`WEB_POLL_INTERVAL`] with `If-None-Match` instead of listening
//! to server-sent events. Its routes have no JWT authorizer: the app has its own session
//! cookie, checked by the same verifier on every call it makes to the routers.
//!
//! API Gateway's JWT authorizer has already checked the token when an event arrives; the
//! routers check it again with the verifier the composition root builds, so the function is
//! never more trusting than the process. Revocations and identity links reach a warm function
//! within [`REFRESH_INTERVAL`], as they reach a process: the first request after the interval
//! reloads them.
//!
//! When a request commits events to the ledger's outbox (`ledger-api` recording or reversing
//! an entry, closing a day; a form of `web` doing the same), the function publishes those
//! events, and only those, before answering: Lambda may freeze the environment right after the
//! answer, so a relay task would not run, and publishing the whole outbox would have concurrent
//! invocations each publish the others' events ([`cashflow_ledger::Committed`]). The publish
//! is bounded by [`PUBLISH_TIMEOUT`]; if it fails or is slow, the answer goes out anyway and
//! the rows stay in the outbox for `outbox-sweep`.

use std::convert::Infallible;
use std::time::Duration;

use axum::response::IntoResponse;
use axum::Router;
use http_body_util::BodyExt;
use lambda_http::{Body, Request, Response};
use tokio::sync::OnceCell;
use tower::ServiceExt;

use cashflow_http::problem::Problem;

use cashflow::app::Parts;
use cashflow_auth::REFRESH_INTERVAL;
use cashflow_ledger::{Committed, Relay};

/// Longest a `ledger-api` invocation waits for the inline publish of its entry's event.
pub const PUBLISH_TIMEOUT: Duration = Duration::from_millis(300);

/// How often the web app's live panel is polled on Lambda (a `304` costs one invocation).
pub const WEB_POLL_INTERVAL: Duration = Duration::from_secs(5);

/// Which router a function serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Ledger,
    Reports,
    Web,
}

/// An HTTP function: its router (and, for the ledger, the inline publish), built on the
/// first invocation and kept for the life of the execution environment.
pub struct HttpFunction {
    api: Api,
    parts: Parts,
    built: OnceCell<(Router, Option<Relay>)>,
    publish_timeout: Duration,
}

impl HttpFunction {
    /// Nothing is opened until the first invocation.
    pub fn new(api: Api, parts: Parts) -> Self {
        Self { api, parts, built: OnceCell::new(), publish_timeout: PUBLISH_TIMEOUT }
    }

    /// The same, publishing inline for at most `timeout`.
    pub fn with_publish_timeout(mut self, timeout: Duration) -> Self {
        self.publish_timeout = timeout;
        self
    }

    /// The parts the function is built from (its backends, once opened).
    pub fn parts(&self) -> &Parts {
        &self.parts
    }

    async fn built(&self) -> anyhow::Result<&(Router, Option<Relay>)> {
        self.built
            .get_or_try_init(|| async {
                Ok(match self.api {
                    Api::Ledger => {
                        let router = cashflow_http::layers::common(self.parts.ledger_api().await?);
                        (router, Some(self.parts.relay().await?))
                    }
                    Api::Reports => (cashflow_http::layers::common(self.parts.reports_api().await?), None),
                    Api::Web => {
                        let api = self.parts.ledger_api().await?.merge(self.parts.reports_api().await?);
                        let router = cashflow_http::layers::common(self.parts.web(api, Some(WEB_POLL_INTERVAL)).await?);
                        (router, Some(self.parts.relay().await?))
                    }
                })
            })
            .await
    }

    /// Answers one API Gateway request. A backend that cannot be opened is a `503` problem
    /// (the next invocation tries again), never a failed invocation.
    pub async fn handle(&self, request: Request) -> Result<Response<Body>, Infallible> {
        let response = match self.built().await {
            Ok((router, relay)) => {
                self.refresh_auth().await;
                let request = request.map(|body| axum::body::Body::from(body.to_vec()));
                let (response, committed) = Committed::collect(router.clone().oneshot(request)).await;
                let response = match response {
                    Ok(response) => response,
                    Err(never) => match never {},
                };
                if let (false, Some(relay)) = (committed.is_empty(), relay) {
                    publish(relay, &committed, self.publish_timeout).await;
                }
                response
            }
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), "backends unavailable");
                Problem::unavailable("the service's backends are unavailable; retry").into_response()
            }
        };
        Ok(to_lambda(response).await)
    }

    /// Reloads revocations, signing keys and identity links when the copy is older than
    /// [`REFRESH_INTERVAL`]: no background worker runs in a frozen environment, so a warm
    /// function does it on the request path, at most once per interval. A failed reload keeps
    /// the previous copy (and is retried by the next request).
    async fn refresh_auth(&self) {
        if let Some(refresher) = self.parts.refresher() {
            if let Err(error) = refresher.refresh_if_older_than(REFRESH_INTERVAL).await {
                tracing::warn!(%error, "could not reload revocations, keys and identity links");
            }
        }
    }
}

/// Publishes the events `committed` names, waiting at most `timeout`; a failure or a timeout
/// is logged and leaves them in the outbox for `outbox-sweep`.
pub async fn publish(relay: &Relay, committed: &Committed, timeout: Duration) {
    match tokio::time::timeout(timeout, relay.publish_committed(committed)).await {
        Ok(Ok(published)) => tracing::debug!(published, "outbox published inline"),
        Ok(Err(e)) => tracing::warn!(error = format!("{e:#}"), "inline publish failed; the sweep publishes it"),
        Err(_) => {
            tracing::warn!(timeout_ms = timeout.as_millis() as u64, "inline publish timed out; the sweep publishes it")
        }
    }
}

/// An axum response as `lambda_http`'s: UTF-8 bodies as text, anything else as binary.
async fn to_lambda(response: axum::response::Response) -> Response<Body> {
    let (head, body) = response.into_parts();
    let body = match body.collect().await {
        Ok(collected) => match String::from_utf8(collected.to_bytes().to_vec()) {
            Ok(text) if text.is_empty() => Body::Empty,
            Ok(text) => Body::Text(text),
            Err(e) => Body::Binary(e.into_bytes()),
        },
        Err(e) => {
            tracing::error!(error = %e, "response body failed");
            let mut failed = Response::new(Body::Empty);
            *failed.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
            return failed;
        }
    };
    Response::from_parts(head, body)
}
