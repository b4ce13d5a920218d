//! System routes: liveness, readiness, metrics and the OpenAPI document. Unauthenticated on
//! purpose: load balancers, orchestrators and Prometheus call them; they reveal nothing about
//! merchants.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::OpenApi;

use cashflow_auth::{Identities, JwksCache};
use cashflow_consolidation::{ConsolidationStore, ReportCache};
use cashflow_events::EventSource;
use cashflow_ledger::LedgerStore;

type ProbeFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;
type Probe = Arc<dyn Fn() -> ProbeFuture + Send + Sync>;

/// Whether a process can do its job without a dependency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    /// Without it the process cannot serve: readiness fails (503).
    Critical,
    /// Without it the process still serves, degraded (200, `"status": "degraded"`): the ledger
    /// accepts entries while the queue is down; reports are read from the database while the
    /// cache is down. Pulling the process out of rotation would only make things worse.
    Optional,
}

/// The dependencies a process checks before it says it is ready.
#[derive(Clone, Default)]
pub struct Readiness {
    probes: Vec<(&'static str, Need, Probe)>,
}

impl Readiness {
    fn probe<F, Fut>(mut self, name: &'static str, need: Need, f: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.probes.push((name, need, Arc::new(move || Box::pin(f()) as ProbeFuture)));
        self
    }

    /// Checks the ledger database.
    pub fn ledger(self, store: Arc<dyn LedgerStore>) -> Self {
        self.probe("ledger_db", Need::Critical, move || {
            let s = store.clone();
            async move { s.ping().await.map_err(|e| e.to_string()) }
        })
    }

    /// Checks the consolidation database.
    pub fn consolidation(self, store: Arc<dyn ConsolidationStore>) -> Self {
        self.probe("consolidation_db", Need::Critical, move || {
            let s = store.clone();
            async move { s.ping().await.map_err(|e| e.to_string()) }
        })
    }

    /// Checks the queue.
    pub fn queue(self, source: Arc<dyn EventSource>) -> Self {
        self.probe("queue", Need::Optional, move || {
            let s = source.clone();
            async move { s.depth().await.map(|_| ()).map_err(|e| e.to_string()) }
        })
    }

    /// Checks the identity database.
    pub fn identity(self, store: Arc<Identities>) -> Self {
        self.probe("identity_db", Need::Critical, move || {
            let s = store.clone();
            async move { s.ping().await.map_err(|e| e.to_string()) }
        })
    }

    /// Checks the report cache.
    pub fn cache(self, cache: Arc<dyn ReportCache>) -> Self {
        self.probe("cache", Need::Optional, move || {
            let c = cache.clone();
            async move { c.ping().await }
        })
    }

    /// Checks that every external issuer's last JWKS fetch succeeded. Optional: tokens of the
    /// keys already cached (and of the built-in issuer) still verify while it is down.
    pub fn oidc_jwks(self, caches: Vec<Arc<JwksCache>>) -> Self {
        self.probe("oidc_jwks", Need::Optional, move || {
            let down: Vec<String> = caches.iter().filter(|c| !c.is_healthy()).map(|c| c.url().to_owned()).collect();
            async move {
                if down.is_empty() {
                    Ok(())
                } else {
                    Err(format!("JWKS unreachable: {}", down.join(", ")))
                }
            }
        })
    }

    async fn check(&self) -> Vec<(&'static str, Need, bool)> {
        let runs =
            self.probes.iter().map(|(name, need, probe)| {
                let (name, need, probe) = (*name, *need, probe.clone());
                async move {
                    (name, need, matches!(tokio::time::timeout(Duration::from_secs(2), probe()).await, Ok(Ok(()))))
                }
            });
        let checks = futures_join_all(runs).await;
        // The same answer as a gauge, so an alert can say which dependency is down.
        for (name, _, up) in &checks {
            metrics::gauge!("cashflow_dependency_up", "dependency" => *name).set(if *up { 1.0 } else { 0.0 });
        }
        checks
    }
}

/// Runs the probes concurrently (a handful of futures; no need for a combinator crate).
async fn futures_join_all<T: Send + 'static, F: Future<Output = T> + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<T> {
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        if let Ok(r) = h.await {
            out.push(r);
        }
    }
    out
}

/// `/health/live`, `/health/ready`, `/metrics`, `/openapi.json`.
pub fn router(readiness: Readiness) -> Router {
    let doc = Arc::new(openapi());
    Router::new()
        .route("/health/live", get(|| async { Json(json!({ "status": "ok" })) }))
        .route("/health/ready", get(ready).with_state(readiness.clone()))
        .route("/metrics", get(metrics).with_state(readiness))
        .route("/openapi.json", get(move || async move { Json(doc.as_ref().clone()) }))
}

async fn ready(State(readiness): State<Readiness>) -> impl IntoResponse {
    let checks = readiness.check().await;
    let critical_up = checks.iter().all(|(_, need, up)| *up || *need == Need::Optional);
    let all_up = checks.iter().all(|(_, _, up)| *up);
    let details: Map<String, Value> =
        checks.into_iter().map(|(name, _, up)| (name.to_owned(), json!(if up { "up" } else { "down" }))).collect();
    let (status, word) = match (critical_up, all_up) {
        (true, true) => (StatusCode::OK, "ready"),
        (true, false) => (StatusCode::OK, "degraded"),
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
    };
    (status, Json(json!({ "status": word, "checks": details })))
}

/// Probes the dependencies first, so `cashflow_dependency_up` is as fresh as the scrape (a
/// process nobody asks for readiness still reports it); a probe gives up after 2 s, well within
/// a scrape timeout.
async fn metrics(State(readiness): State<Readiness>) -> impl IntoResponse {
    readiness.check().await;
    match crate::telemetry::metrics() {
        Some(handle) => {
            ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], handle.render()).into_response()
        }
        None => cashflow_http::Problem::unavailable("no metrics recorder is installed in this process").into_response(),
    }
}

/// The OpenAPI document of the whole `/v1` API, generated from the handlers' annotations, with
/// the answers every operation shares (401, 403, 413, …: see [`cashflow_http::openapi`]).
pub fn openapi() -> Value {
    let mut doc = cashflow_ledger::LedgerApi::openapi();
    doc.merge(cashflow_consolidation::ConsolidationApi::openapi());
    doc.merge(cashflow_auth::issuer::AuthApi::openapi());
    doc.info.title = "cashflow".into();
    doc.info.description = Some(
        "A merchant's ledger of debits and credits and its daily consolidated balance. \
         Every /v1 call needs a Bearer JWT from POST /oauth2/token (client_credentials or password grant) \
         or from a trusted OpenID Connect issuer such as Amazon Cognito, whose token names its merchant by a \
         claim or through an identity link of its subject or machine client (401 with a detail naming the \
         missing claim and link otherwise); errors are application/problem+json."
            .into(),
    );
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
    );
    let mut doc = serde_json::to_value(doc).unwrap_or_else(|_| json!({}));
    cashflow_http::openapi::document_shared_answers(&mut doc, "/v1/", "/oauth2/token");
    doc
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn ready_status(readiness: Readiness) -> (StatusCode, Value) {
        let response = router(readiness)
            .oneshot(Request::builder().uri("/health/ready").body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap())
    }

    async fn up() -> Result<(), String> {
        Ok(())
    }

    async fn down() -> Result<(), String> {
        Err("connection refused".to_owned())
    }

    #[tokio::test]
    async fn a_down_database_makes_the_process_unready() {
        let readiness =
            Readiness::default().probe("ledger_db", Need::Critical, down).probe("queue", Need::Optional, up);
        let (status, body) = ready_status(readiness).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["status"], "unavailable");
        assert_eq!(body["checks"]["ledger_db"], "down");
    }

    #[tokio::test]
    async fn a_down_queue_or_cache_only_degrades_the_process() {
        let readiness =
            Readiness::default().probe("ledger_db", Need::Critical, up).probe("cache", Need::Optional, down);
        let (status, body) = ready_status(readiness).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["status"], "degraded");
        assert_eq!(body["checks"]["cache"], "down");
    }

    #[tokio::test]
    async fn a_probe_that_hangs_counts_as_down() {
        let hangs = || async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(())
        };
        let (status, _) = ready_status(Readiness::default().probe("ledger_db", Need::Critical, hangs)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }
}
