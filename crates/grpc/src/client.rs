//! The consolidation side: the generated client with a service token on every call, as
//! consolidation's [`LedgerSource`].

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::DateTime;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

use cashflow_consolidation::reconcile::{LedgerDays, LedgerError, LedgerSource};
use cashflow_consolidation::store::LedgerPosting;
use cashflow_domain::{Amount, Balance, BusinessDate, Currency, DayTotals, EntryType, EventId, MerchantId};

use crate::pb;
use crate::pb::ledger_service_client::LedgerServiceClient;

/// The client could not be built or a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid ledger gRPC URL: {0}")]
    InvalidUrl(String),
    #[error("no service token: {0}")]
    Token(String),
    #[error("ledger gRPC call failed: {0}")]
    Call(#[from] Status),
}

/// Where the service token of each call comes from (a fixed token, or one the caller renews
/// before it expires).
#[async_trait]
pub trait TokenSource: Send + Sync + 'static {
    async fn token(&self) -> Result<String, ClientError>;
}

/// A token given once (`--ledger-token`), used until it expires.
pub struct StaticToken(pub String);

#[async_trait]
impl TokenSource for StaticToken {
    async fn token(&self) -> Result<String, ClientError> {
        Ok(self.0.clone())
    }
}

/// The ledger over gRPC. Cheap to clone (one HTTP/2 connection, multiplexed).
#[derive(Clone)]
pub struct LedgerGrpcClient {
    inner: LedgerServiceClient<Channel>,
    tokens: Arc<dyn TokenSource>,
}

impl LedgerGrpcClient {
    /// A client of `url` (`http://host:port`); connects on first use and reconnects as needed.
    pub fn new(url: &str, tokens: Arc<dyn TokenSource>) -> Result<Self, ClientError> {
        let endpoint = Endpoint::from_shared(url.to_owned()).map_err(|e| ClientError::InvalidUrl(e.to_string()))?;
        Ok(Self { inner: LedgerServiceClient::new(endpoint.connect_lazy()), tokens })
    }

    async fn request<T>(&self, message: T) -> Result<Request<T>, ClientError> {
        let token = self.tokens.token().await?;
        let value = MetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|_| ClientError::Token("not visible ASCII".into()))?;
        let mut request = Request::new(message);
        request.metadata_mut().insert("authorization", value);
        Ok(request)
    }

    /// Every entry of `merchant` in `from..=to`, as the server streams them.
    pub async fn stream_entries(
        &self,
        merchant: MerchantId,
        from: BusinessDate,
        to: BusinessDate,
    ) -> Result<tonic::Streaming<pb::Entry>, ClientError> {
        let request = self
            .request(pb::StreamEntriesRequest {
                merchant_id: merchant.to_string(),
                from: from.to_string(),
                to: to.to_string(),
            })
            .await?;
        Ok(self.inner.clone().stream_entries(request).await?.into_inner())
    }

    /// The ledger's day totals of `merchant` in `from..=to`.
    pub async fn day_totals(
        &self,
        merchant: MerchantId,
        from: BusinessDate,
        to: BusinessDate,
    ) -> Result<pb::DayTotalsResponse, ClientError> {
        let request = self
            .request(pb::DayTotalsRequest {
                merchant_id: merchant.to_string(),
                from: from.to_string(),
                to: to.to_string(),
            })
            .await?;
        Ok(self.inner.clone().day_totals(request).await?.into_inner())
    }
}

fn source_error(merchant: MerchantId) -> impl Fn(ClientError) -> LedgerError {
    move |e| match e {
        ClientError::Call(status) if status.code() == Code::NotFound => LedgerError::UnknownMerchant(merchant),
        other => LedgerError::Unavailable(other.to_string()),
    }
}

fn invalid(what: &str) -> impl Fn(String) -> LedgerError + '_ {
    move |e| LedgerError::Invalid(format!("{what}: {e}"))
}

/// An entry of the stream as a posting of its day.
pub fn posting_of(entry: &pb::Entry) -> Result<LedgerPosting, LedgerError> {
    let kind = match pb::EntryType::try_from(entry.r#type) {
        Ok(pb::EntryType::Credit) => EntryType::Credit,
        Ok(pb::EntryType::Debit) => EntryType::Debit,
        _ => return Err(LedgerError::Invalid(format!("entry {}: type {}", entry.id, entry.r#type))),
    };
    Ok(LedgerPosting {
        event_id: EventId::parse(&entry.event_id).map_err(|e| invalid("event_id")(e.to_string()))?,
        kind,
        amount: Amount::from_minor(entry.amount_minor).map_err(|e| invalid("amount_minor")(e.to_string()))?,
        recorded_at: DateTime::from_timestamp_micros(entry.recorded_at_micros)
            .ok_or_else(|| LedgerError::Invalid("recorded_at_micros".into()))?,
    })
}

#[async_trait]
impl LedgerSource for LedgerGrpcClient {
    async fn day_totals(
        &self,
        merchant: MerchantId,
        from: BusinessDate,
        to: BusinessDate,
    ) -> Result<LedgerDays, LedgerError> {
        let answer = LedgerGrpcClient::day_totals(self, merchant, from, to).await.map_err(source_error(merchant))?;
        let currency = Currency::parse(&answer.currency).map_err(|e| invalid("currency")(e.to_string()))?;
        let mut days = BTreeMap::new();
        for day in answer.days {
            let date = BusinessDate::parse(&day.business_date).map_err(|e| invalid("business_date")(e.to_string()))?;
            days.insert(
                date,
                DayTotals {
                    total_credits: Balance::from_minor(day.total_credits),
                    total_debits: Balance::from_minor(day.total_debits),
                    entry_count: day.entry_count,
                },
            );
        }
        Ok(LedgerDays { currency: Some(currency), days })
    }

    async fn day_entries(&self, merchant: MerchantId, date: BusinessDate) -> Result<Vec<LedgerPosting>, LedgerError> {
        let mut stream = self.stream_entries(merchant, date, date).await.map_err(source_error(merchant))?;
        let mut postings = Vec::new();
        while let Some(entry) = stream.message().await.map_err(|s| source_error(merchant)(ClientError::Call(s)))? {
            postings.push(posting_of(&entry)?);
        }
        Ok(postings)
    }
}
