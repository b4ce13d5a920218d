//! The report cache port and its in-process implementation.
//!
//! A daily report changes whenever an entry on that day *or any earlier day* is applied (the
//! opening balance rolls forward), so the consumer invalidates a merchant's cached days from
//! the earliest changed date on. A read that missed, computed a report and then stores it
//! must not resurrect a value that an invalidation removed meanwhile: each merchant has a
//! generation, bumped by every invalidation, and a `put` under an old generation is dropped.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use axum::body::Bytes;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

use cashflow_domain::{BusinessDate, MerchantId};

use crate::api::DailyBalanceResponse;

/// A daily report as the API sends it: its JSON, serialized once when the report is computed.
/// A cache hit is then answered without building, copying or serializing anything (a clone is
/// a reference count), which on the hottest read of the system is most of the handler's work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedReport(Bytes);

impl CachedReport {
    /// Serializes `report`.
    pub fn of(report: &DailyBalanceResponse) -> Result<Self, serde_json::Error> {
        serde_json::to_vec(report).map(|json| Self(json.into()))
    }

    /// A report stored as JSON elsewhere (Redis), if it is one this version can serve.
    pub fn from_json(json: String) -> Option<Self> {
        serde_json::from_str::<DailyBalanceResponse>(&json).ok().map(|_| Self(json.into()))
    }

    /// The JSON, as sent.
    pub fn json(&self) -> &[u8] {
        &self.0
    }
}

impl IntoResponse for CachedReport {
    fn into_response(self) -> Response {
        ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], self.0).into_response()
    }
}

/// A cache answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Hit(CachedReport),
    /// Not cached; pass the generation back to `put`.
    Miss(u64),
}

/// Caches daily reports.
#[async_trait]
pub trait ReportCache: Send + Sync + 'static {
    /// The cached report of a day, or the generation to store one under.
    async fn get(&self, merchant: MerchantId, date: BusinessDate) -> Lookup;
    /// Stores a report unless the merchant was invalidated since `generation` was read.
    async fn put(&self, merchant: MerchantId, date: BusinessDate, generation: u64, report: CachedReport);
    /// Drops the merchant's cached days from `from` on.
    async fn invalidate(&self, merchant: MerchantId, from: BusinessDate);

    /// Whether the cache is reachable, for readiness (a cache that is down slows reads; it
    /// never fails them).
    async fn ping(&self) -> Result<(), String> {
        Ok(())
    }
}

#[derive(Default)]
struct MerchantSlot {
    generation: u64,
    days: HashMap<BusinessDate, CachedReport>,
}

/// The in-process cache of the embedded default, bounded in merchants.
pub struct MemoryCache {
    slots: Mutex<HashMap<MerchantId, MerchantSlot>>,
    /// Most merchants kept; past it the cache starts over (simple, and a cold read is only a
    /// few indexed queries).
    max_merchants: usize,
    /// Most days kept per merchant.
    max_days: usize,
}

impl MemoryCache {
    /// A cache for up to `max_merchants` merchants of `max_days` days each.
    pub fn new(max_merchants: usize, max_days: usize) -> Self {
        Self { slots: Mutex::new(HashMap::new()), max_merchants, max_days }
    }
}

impl Default for MemoryCache {
    fn default() -> Self {
        Self::new(100_000, 64)
    }
}

#[async_trait]
impl ReportCache for MemoryCache {
    async fn get(&self, merchant: MerchantId, date: BusinessDate) -> Lookup {
        let Ok(slots) = self.slots.lock() else { return Lookup::Miss(u64::MAX) };
        match slots.get(&merchant) {
            Some(slot) => match slot.days.get(&date) {
                Some(report) => Lookup::Hit(report.clone()),
                None => Lookup::Miss(slot.generation),
            },
            None => Lookup::Miss(0),
        }
    }

    async fn put(&self, merchant: MerchantId, date: BusinessDate, generation: u64, report: CachedReport) {
        let Ok(mut slots) = self.slots.lock() else { return };
        if !slots.contains_key(&merchant) && slots.len() >= self.max_merchants {
            slots.clear();
        }
        let slot = slots.entry(merchant).or_default();
        if slot.generation != generation {
            return;
        }
        if slot.days.len() >= self.max_days {
            slot.days.clear();
        }
        slot.days.insert(date, report);
    }

    async fn invalidate(&self, merchant: MerchantId, from: BusinessDate) {
        let Ok(mut slots) = self.slots.lock() else { return };
        let slot = slots.entry(merchant).or_default();
        slot.generation += 1;
        slot.days.retain(|d, _| *d < from);
    }
}

/// No cache: every read is computed from the store. For a reports-only process on the embedded
/// backend (`cashflow consolidator --no-consumer`): an in-process cache there would never hear
/// the consumer's invalidations, which happen in another process, and would serve stale
/// reports. A shared cache (Redis) has no such problem.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoCache;

#[async_trait]
impl ReportCache for NoCache {
    async fn get(&self, _merchant: MerchantId, _date: BusinessDate) -> Lookup {
        Lookup::Miss(0)
    }

    async fn put(&self, _merchant: MerchantId, _date: BusinessDate, _generation: u64, _report: CachedReport) {}

    async fn invalidate(&self, _merchant: MerchantId, _from: BusinessDate) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(net: &str) -> CachedReport {
        CachedReport::of(&DailyBalanceResponse {
            date: "2026-11-23".into(),
            currency: "BRL".into(),
            opening_balance: "0.00".into(),
            total_credits: net.into(),
            total_debits: "0.00".into(),
            net: net.into(),
            closing_balance: net.into(),
            entry_count: 1,
            as_of: "2026-11-23T10:00:00Z".into(),
        })
        .unwrap()
    }

    fn day(s: &str) -> BusinessDate {
        BusinessDate::parse(s).unwrap()
    }

    #[tokio::test]
    async fn a_stored_report_is_served_until_invalidated() {
        let cache = MemoryCache::default();
        let m = MerchantId::new();
        let Lookup::Miss(generation) = cache.get(m, day("2026-11-23")).await else { panic!("cold cache hit") };
        cache.put(m, day("2026-11-23"), generation, report("1.00")).await;
        assert_eq!(cache.get(m, day("2026-11-23")).await, Lookup::Hit(report("1.00")));
        cache.invalidate(m, day("2026-11-20")).await;
        assert!(matches!(cache.get(m, day("2026-11-23")).await, Lookup::Miss(_)));
    }

    #[tokio::test]
    async fn a_backdated_change_invalidates_later_days_only() {
        let cache = MemoryCache::default();
        let m = MerchantId::new();
        for d in ["2026-11-20", "2026-11-23"] {
            let Lookup::Miss(g) = cache.get(m, day(d)).await else { panic!() };
            cache.put(m, day(d), g, report("1.00")).await;
        }
        cache.invalidate(m, day("2026-11-21")).await;
        assert!(matches!(cache.get(m, day("2026-11-20")).await, Lookup::Hit(_)));
        assert!(matches!(cache.get(m, day("2026-11-23")).await, Lookup::Miss(_)));
    }

    #[tokio::test]
    async fn no_cache_never_serves_a_stored_report() {
        let m = MerchantId::new();
        let Lookup::Miss(g) = NoCache.get(m, day("2026-11-23")).await else { panic!("hit on no cache") };
        NoCache.put(m, day("2026-11-23"), g, report("1.00")).await;
        assert!(matches!(NoCache.get(m, day("2026-11-23")).await, Lookup::Miss(_)));
    }

    #[tokio::test]
    async fn a_report_computed_before_an_invalidation_is_not_stored() {
        let cache = MemoryCache::default();
        let m = MerchantId::new();
        let Lookup::Miss(stale_generation) = cache.get(m, day("2026-11-23")).await else { panic!() };
        cache.invalidate(m, day("2026-11-23")).await;
        cache.put(m, day("2026-11-23"), stale_generation, report("1.00")).await;
        assert!(matches!(cache.get(m, day("2026-11-23")).await, Lookup::Miss(_)));
    }
}
