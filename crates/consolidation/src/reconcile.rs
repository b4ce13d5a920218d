//! Reconciliation: the proof that the consolidated reports equal the ledger, and the repair of
//! the days that do not.
//!
//! Consolidation learns the ledger only from events, so a lost event (dropped from the queue),
//! a deduplication marker lost with its event redelivered, or a total altered by hand makes a
//! day drift silently. [`Reconciler`] compares each consolidated day with the ledger's own
//! totals for that day, read through the [`LedgerSource`] port (the gRPC client in
//! `cashflow-grpc`: this crate never reads the ledger's tables), and repairs a drifting day by
//! rebuilding it from the ledger's entries ([`ConsolidationStore::rebuild_day`]).
//!
//! # Why a repair cannot double-count or lose an entry
//! The day's consolidated totals are read *before* the ledger's, and the rebuild writes only if
//! the day still holds what was read. An entry the ledger committed after its totals were read
//! is not in the rebuild and its event is not recorded, so it is applied normally when it
//! arrives; an event applied in between moved the day, so the rebuild writes nothing and the
//! next run looks again. The rebuild records the event id of every entry it counted, so an
//! event still in flight is a duplicate when it arrives.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;

use cashflow_domain::{BusinessDate, Currency, DayTotals, MerchantId};

use crate::cache::ReportCache;
use crate::store::{ConsolidationStore, DayRebuild, LedgerPosting, RebuildOutcome, StoreError};

/// The ledger as reconciliation sees it.
#[async_trait]
pub trait LedgerSource: Send + Sync + 'static {
    /// The merchant's currency and the ledger's totals of each day in `from..=to` with entries.
    async fn day_totals(
        &self,
        merchant: MerchantId,
        from: BusinessDate,
        to: BusinessDate,
    ) -> Result<LedgerDays, LedgerError>;

    /// Every entry of one business date (streamed by the source; one day fits in memory).
    async fn day_entries(&self, merchant: MerchantId, date: BusinessDate) -> Result<Vec<LedgerPosting>, LedgerError>;
}

/// The ledger's view of a merchant's days.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerDays {
    pub currency: Option<Currency>,
    pub days: BTreeMap<BusinessDate, DayTotals>,
}

/// The ledger could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The ledger does not know the merchant.
    #[error("the ledger does not know merchant {0}")]
    UnknownMerchant(MerchantId),
    /// Unreachable, refused our token, or failed; the run can be retried.
    #[error("ledger unavailable: {0}")]
    Unavailable(String),
    /// It answered something that does not parse into the domain.
    #[error("invalid answer from the ledger: {0}")]
    Invalid(String),
}

/// Why a reconciliation run stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One day whose consolidated totals differ from the ledger's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drift {
    pub merchant: MerchantId,
    pub date: BusinessDate,
    /// The ledger's totals (the authority).
    pub expected: DayTotals,
    /// The consolidated totals.
    pub found: DayTotals,
}

/// What a run should cover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// These merchants, or every merchant consolidation knows.
    pub merchants: Option<Vec<MerchantId>>,
    pub from: BusinessDate,
    pub to: BusinessDate,
    /// Rebuild each drifting day from the ledger's entries.
    pub repair: bool,
}

/// A drifting day and what the run did about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    #[serde(flatten)]
    pub drift: Drift,
    /// `None` without `--repair`; `Some(false)` when the day moved while being repaired (it is
    /// looked at again by the next run).
    pub repaired: Option<bool>,
}

/// The outcome of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub merchants: u64,
    /// Days compared (every day with entries on either side).
    pub days_checked: u64,
    pub findings: Vec<Finding>,
}

impl Report {
    /// Whether something still drifts: a finding not repaired.
    pub fn drifts(&self) -> bool {
        self.findings.iter().any(|f| f.repaired != Some(true))
    }
}

/// Compares and repairs; see the module docs.
#[derive(Clone)]
pub struct Reconciler {
    store: Arc<dyn ConsolidationStore>,
    cache: Arc<dyn ReportCache>,
    ledger: Arc<dyn LedgerSource>,
}

impl Reconciler {
    pub fn new(store: Arc<dyn ConsolidationStore>, cache: Arc<dyn ReportCache>, ledger: Arc<dyn LedgerSource>) -> Self {
        Self { store, cache, ledger }
    }

    /// The days of `merchant` in `from..=to` whose consolidated totals differ from the ledger's.
    #[tracing::instrument(skip_all, fields(%merchant, %from, %to))]
    pub async fn find_drift(
        &self,
        merchant: MerchantId,
        from: BusinessDate,
        to: BusinessDate,
    ) -> Result<(u64, Vec<Drift>), ReconcileError> {
        // Consolidation first, then the ledger: see the module docs.
        let (_, consolidated) = self.store.days(merchant, from, to).await?;
        let ledger = self.ledger.day_totals(merchant, from, to).await?;
        let dates: BTreeSet<BusinessDate> = consolidated.keys().chain(ledger.days.keys()).copied().collect();
        let drifts = dates
            .iter()
            .filter_map(|date| {
                let expected = ledger.days.get(date).copied().unwrap_or_default();
                let found = consolidated.get(date).copied().unwrap_or_default();
                (expected != found).then_some(Drift { merchant, date: *date, expected, found })
            })
            .collect();
        Ok((dates.len() as u64, drifts))
    }

    /// Rebuilds a drifting day from the ledger's entries and invalidates the merchant's cached
    /// reports from that day on.
    #[tracing::instrument(skip_all, fields(merchant = %drift.merchant, date = %drift.date))]
    pub async fn repair(&self, drift: &Drift, currency: Currency) -> Result<RebuildOutcome, ReconcileError> {
        let entries = self.ledger.day_entries(drift.merchant, drift.date).await?;
        let rebuild = DayRebuild { merchant: drift.merchant, currency, date: drift.date, found: drift.found, entries };
        let outcome = self.store.rebuild_day(&rebuild).await?;
        if outcome == RebuildOutcome::Rebuilt {
            self.cache.invalidate(drift.merchant, drift.date).await;
        }
        Ok(outcome)
    }

    /// Reconciles every merchant of `scope`; `progress` is told after each merchant (done,
    /// total). Records the run's metrics.
    pub async fn run(
        &self,
        scope: &Scope,
        progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) -> Result<Report, ReconcileError> {
        let merchants = match &scope.merchants {
            Some(list) => list.clone(),
            None => self.store.merchants().await?,
        };
        let total = merchants.len() as u64;
        let mut report = Report { merchants: total, ..Report::default() };
        for (done, merchant) in merchants.into_iter().enumerate() {
            let (checked, drifts) = self.find_drift(merchant, scope.from, scope.to).await?;
            report.days_checked += checked;
            if !drifts.is_empty() {
                metrics::counter!("cashflow_reconcile_drifting_total").increment(drifts.len() as u64);
                let currency = match scope.repair {
                    true => self.currency(merchant).await?,
                    false => None,
                };
                for drift in drifts {
                    tracing::warn!(%merchant, date = %drift.date, expected = ?drift.expected, found = ?drift.found, "consolidated day drifts from the ledger");
                    let repaired = match currency {
                        Some(currency) => {
                            let rebuilt = self.repair(&drift, currency).await? == RebuildOutcome::Rebuilt;
                            if rebuilt {
                                metrics::counter!("cashflow_reconcile_repaired_total").increment(1);
                            }
                            Some(rebuilt)
                        }
                        None => None,
                    };
                    report.findings.push(Finding { drift, repaired });
                }
            }
            progress(done as u64 + 1, total);
        }
        let unrepaired = report.findings.iter().filter(|f| f.repaired != Some(true)).count();
        metrics::gauge!("cashflow_reconcile_drifting_days").set(unrepaired as f64);
        let now = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
        metrics::gauge!("cashflow_reconcile_last_success_timestamp_seconds").set(now);
        Ok(report)
    }

    /// The merchant's currency: consolidation's, or the ledger's when consolidation never heard
    /// of the merchant (its registration event was lost too).
    async fn currency(&self, merchant: MerchantId) -> Result<Option<Currency>, ReconcileError> {
        if let Some(books) = self.store.merchant(merchant).await? {
            return Ok(Some(books.currency));
        }
        let today = BusinessDate::of(chrono::Utc::now(), cashflow_domain::MerchantTimeZone::default());
        Ok(self.ledger.day_totals(merchant, today, today).await?.currency)
    }
}
