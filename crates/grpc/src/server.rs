//! The ledger side: [`LedgerGrpc`] implements the generated `LedgerService` over a
//! [`LedgerStore`], behind a check of the `authorization` metadata.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use cashflow_auth::{AuthError, Scope, TokenVerifier};
use cashflow_domain::{BusinessDate, Entry, EntryType, MerchantId};
use cashflow_events::Event;
use cashflow_ledger::store::{EntryQuery, LedgerStore, StoreError};

use crate::pb;
use crate::pb::ledger_service_server::{LedgerService, LedgerServiceServer};

/// Entries read from the store per page of a stream.
pub const PAGE: u32 = 500;

/// The service: reads the ledger store, never writes it.
#[derive(Clone)]
pub struct LedgerGrpc {
    store: Arc<dyn LedgerStore>,
}

impl LedgerGrpc {
    pub fn new(store: Arc<dyn LedgerStore>) -> Self {
        Self { store }
    }
}

fn store_status(e: StoreError) -> Status {
    tracing::error!(error = %e, "ledger store failed while serving gRPC");
    Status::unavailable("the ledger store is unavailable")
}

fn merchant_of(text: &str) -> Result<MerchantId, Status> {
    MerchantId::parse(text).map_err(|e| Status::invalid_argument(format!("merchant_id: {e}")))
}

fn range_of(from: &str, to: &str) -> Result<(BusinessDate, BusinessDate), Status> {
    let from = BusinessDate::parse(from).map_err(|e| Status::invalid_argument(format!("from: {e}")))?;
    let to = BusinessDate::parse(to).map_err(|e| Status::invalid_argument(format!("to: {e}")))?;
    if to < from {
        return Err(Status::invalid_argument("to is before from"));
    }
    Ok((from, to))
}

/// The wire form of an entry.
pub fn entry_message(e: &Entry) -> pb::Entry {
    pb::Entry {
        id: e.id.to_string(),
        event_id: Event::id_of_entry(e.id).to_string(),
        merchant_id: e.merchant_id.to_string(),
        r#type: match e.kind {
            EntryType::Credit => pb::EntryType::Credit,
            EntryType::Debit => pb::EntryType::Debit,
        } as i32,
        amount_minor: e.amount.minor(),
        currency: e.currency.code().to_owned(),
        business_date: e.business_date.to_string(),
        occurred_at_micros: e.occurred_at.timestamp_micros(),
        recorded_at_micros: e.recorded_at.timestamp_micros(),
        reversal_of: e.reversal_of.map(|id| id.to_string()).unwrap_or_default(),
        description: e.description.as_str().to_owned(),
        category: e.category.as_ref().map(|c| c.as_str().to_owned()).unwrap_or_default(),
        adjusts_date: e.adjusts_date.map(|d| d.to_string()).unwrap_or_default(),
    }
}

#[tonic::async_trait]
impl LedgerService for LedgerGrpc {
    type StreamEntriesStream = ReceiverStream<Result<pb::Entry, Status>>;

    #[tracing::instrument(skip_all, fields(merchant = %request.get_ref().merchant_id))]
    async fn stream_entries(
        &self,
        request: Request<pb::StreamEntriesRequest>,
    ) -> Result<Response<Self::StreamEntriesStream>, Status> {
        let req = request.into_inner();
        let merchant = merchant_of(&req.merchant_id)?;
        let (from, to) = range_of(&req.from, &req.to)?;
        // One page read ahead at most: memory stays bounded whatever the merchant's size, and
        // a client that stops reading stops the reads (the send waits, then fails on drop).
        let (tx, rx) = mpsc::channel(PAGE as usize);
        let store = self.store.clone();
        tokio::spawn(async move {
            let mut query = EntryQuery { from, to, after: None, limit: PAGE };
            loop {
                let page = match store.entries(merchant, &query).await {
                    Ok(page) => page,
                    Err(e) => {
                        let _ = tx.send(Err(store_status(e))).await;
                        return;
                    }
                };
                let last = page.last().map(|e| (e.business_date, e.id));
                for entry in &page {
                    if tx.send(Ok(entry_message(entry))).await.is_err() {
                        return;
                    }
                }
                match last {
                    Some(last) if page.len() == PAGE as usize => query.after = Some(last),
                    _ => return,
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    #[tracing::instrument(skip_all, fields(merchant = %request.get_ref().merchant_id))]
    async fn day_totals(
        &self,
        request: Request<pb::DayTotalsRequest>,
    ) -> Result<Response<pb::DayTotalsResponse>, Status> {
        let req = request.into_inner();
        let merchant = merchant_of(&req.merchant_id)?;
        let (from, to) = range_of(&req.from, &req.to)?;
        let Some(found) = self.store.merchant(merchant).await.map_err(store_status)? else {
            return Err(Status::not_found("unknown merchant"));
        };
        let days = self.store.day_totals(merchant, from, to).await.map_err(store_status)?;
        Ok(Response::new(pb::DayTotalsResponse {
            currency: found.currency.code().to_owned(),
            days: days
                .into_iter()
                .map(|(date, t)| pb::DayTotal {
                    business_date: date.to_string(),
                    total_credits: t.total_credits.minor(),
                    total_debits: t.total_debits.minor(),
                    entry_count: t.entry_count,
                })
                .collect(),
        }))
    }
}

/// Checks every call's `authorization: Bearer <jwt>` with the same verifier as HTTP: no or a
/// bad token is `UNAUTHENTICATED`, a token without `ledger:read` is `PERMISSION_DENIED`.
#[derive(Clone)]
pub struct RequireLedgerRead {
    verifier: Arc<dyn TokenVerifier>,
}

impl tonic::service::Interceptor for RequireLedgerRead {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let header = request.metadata().get("authorization").ok_or_else(|| Status::unauthenticated("missing token"))?;
        let value = header.to_str().map_err(|_| Status::unauthenticated("malformed authorization"))?;
        let token = match value.trim().split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => token.trim(),
            _ => return Err(Status::unauthenticated("expected `Bearer <token>`")),
        };
        let principal = self.verifier.verify(token).map_err(|e| match e {
            AuthError::InsufficientScope(_) => Status::permission_denied(e.to_string()),
            other => Status::unauthenticated(other.to_string()),
        })?;
        principal.require(Scope::LedgerRead).map_err(|e| Status::permission_denied(e.to_string()))?;
        Ok(request)
    }
}

/// The ledger service (authenticated), the standard health service and server reflection v1
/// and v1alpha (so `grpcurl` and other common clients can list and describe the services).
pub async fn routes(
    store: Arc<dyn LedgerStore>,
    verifier: Arc<dyn TokenVerifier>,
) -> Result<tonic::service::Routes, tonic_reflection::server::Error> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<LedgerServiceServer<LedgerGrpc>>().await;
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            // Both reflection protocols, in both: a client listing through either sees both.
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
            .include_reflection_service(false)
    };
    let ledger = LedgerServiceServer::with_interceptor(LedgerGrpc::new(store), RequireLedgerRead { verifier });
    Ok(tonic::service::Routes::new(ledger)
        .add_service(health_service)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?))
}

/// Serves `routes` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    routes: tonic::service::Routes,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(?addr, "serving gRPC");
    tonic::transport::Server::builder()
        .add_routes(routes)
        .serve_with_incoming_shutdown(tonic::transport::server::TcpIncoming::from(listener), shutdown)
        .await
}
