//! System routes: liveness, readiness and the OpenAPI document. Unauthenticated on purpose:
//! load balancers and orchestrators call them; they reveal nothing about merchants.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::OpenApi;

use crate::app::Stores;

/// The dependencies readiness checks.
#[derive(Clone)]
pub struct Readiness {
    stores: Stores,
}

impl Readiness {
    /// Checks every embedded store.
    pub fn from_stores(stores: &Stores) -> Self {
        Self { stores: stores.clone() }
    }

    async fn check(&self) -> Vec<(&'static str, bool)> {
        let t = Duration::from_secs(2);
        let ok = |r: Result<Result<(), String>, tokio::time::error::Elapsed>| matches!(r, Ok(Ok(())));
        let ledger = tokio::time::timeout(t, async { self.stores.ledger_ping().await });
        let consolidation = tokio::time::timeout(t, async { self.stores.consolidation_ping().await });
        let queue = tokio::time::timeout(t, async { self.stores.queue.ping().await.map_err(|e| e.to_string()) });
        let identity = tokio::time::timeout(t, async { self.stores.identity_ping().await });
        let (l, c, q, i) = tokio::join!(ledger, consolidation, queue, identity);
        vec![("ledger_db", ok(l)), ("consolidation_db", ok(c)), ("queue", ok(q)), ("identity_db", ok(i))]
    }
}

impl Stores {
    async fn ledger_ping(&self) -> Result<(), String> {
        cashflow_ledger::LedgerStore::ping(self.ledger.as_ref()).await.map_err(|e| e.to_string())
    }
    async fn consolidation_ping(&self) -> Result<(), String> {
        cashflow_consolidation::ConsolidationStore::ping(self.consolidation.as_ref()).await.map_err(|e| e.to_string())
    }
    async fn identity_ping(&self) -> Result<(), String> {
        cashflow_auth::IdentityStore::ping(self.identity.as_ref()).await.map_err(|e| e.to_string())
    }
}

/// `/health/live`, `/health/ready`, `/openapi.json`.
pub fn router(readiness: Readiness) -> Router {
    let doc = Arc::new(openapi());
    Router::new()
        .route("/health/live", get(|| async { Json(json!({ "status": "ok" })) }))
        .route("/health/ready", get(ready).with_state(readiness))
        .route("/openapi.json", get(move || async move { Json(doc.as_ref().clone()) }))
}

async fn ready(State(readiness): State<Readiness>) -> impl IntoResponse {
    let checks = readiness.check().await;
    let all_up = checks.iter().all(|(_, up)| *up);
    let details: Map<String, Value> =
        checks.into_iter().map(|(name, up)| (name.to_owned(), json!(if up { "up" } else { "down" }))).collect();
    let status = if all_up { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(json!({ "status": if all_up { "ready" } else { "unavailable" }, "checks": details })))
}

/// The OpenAPI document of the whole `/v1` API, generated from the handlers' annotations.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = cashflow_ledger::LedgerApi::openapi();
    doc.merge(cashflow_consolidation::ConsolidationApi::openapi());
    doc.info.title = "cashflow".into();
    doc.info.description = Some(
        "A merchant's ledger of debits and credits and its daily consolidated balance. \
         Every /v1 call needs a Bearer JWT from POST /oauth2/token (client_credentials or password grant); \
         errors are application/problem+json."
            .into(),
    );
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
    );
    doc
}
