//! The report cache port and its in-process implementation.
//!
//! A daily report changes whenever an entry on that day *or any earlier day* is applied (the
//! opening balance rolls forward), so the consumer invalidates a merchant's cached days from
//! the earliest changed date on. A read that missed, computed a report and then stores it
//! must not resurrect a value that an invalidation removed meanwhile: each merchant has a
//! generation, bumped by every invalidation, and a `put` under an old generation is dropped.
//! [`MemoryCache`] keeps that promise across evictions too: merchants without a slot share a
//! floor generation that every eviction raises.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use cashflow_domain::{BusinessDate, MerchantId};

use crate::report::CachedReport;

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
    /// Drawn from [`Slots::clock`] by the last invalidation (or, for a slot a `put` created,
    /// the floor that put was read under): a `put` must bring exactly this one.
    generation: u64,
    days: HashMap<BusinessDate, CachedReport>,
}

/// The merchants kept, and what stands for the generations of those that are not.
#[derive(Default)]
struct Slots {
    merchants: HashMap<MerchantId, MerchantSlot>,
    /// Every generation is drawn from this counter, which only rises, so a value handed out
    /// once is never handed out again for another state.
    clock: u64,
    /// The generation of every merchant without a slot. An eviction raises it past every
    /// generation handed out so far: a reader that missed before the eviction (maybe before an
    /// invalidation whose slot the eviction dropped) then brings an old generation, and its
    /// `put` is dropped instead of storing a report computed from older data.
    floor: u64,
}

impl Slots {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// Makes room for one more merchant when `max` are kept. Slots without reports go first
    /// (they only carry a generation); if that frees less than half, every slot goes, so an
    /// eviction frees at least half the map and its cost is shared by as many inserts.
    fn make_room(&mut self, max: usize) {
        if self.merchants.len() < max {
            return;
        }
        self.merchants.retain(|_, slot| !slot.days.is_empty());
        if self.merchants.len() > max / 2 {
            self.merchants.clear();
        }
        self.floor = self.tick();
    }
}

/// The in-process cache of the embedded default, bounded in merchants and in days per merchant.
pub struct MemoryCache {
    slots: Mutex<Slots>,
    /// Most merchants kept (with reports or only a generation); past it, see
    /// [`Slots::make_room`] (simple, and a cold read is only a few indexed queries).
    max_merchants: usize,
    /// Most days kept per merchant; past it the merchant's days start over.
    max_days: usize,
}

impl MemoryCache {
    /// A cache for up to `max_merchants` merchants of `max_days` days each.
    pub fn new(max_merchants: usize, max_days: usize) -> Self {
        Self { slots: Mutex::new(Slots::default()), max_merchants: max_merchants.max(1), max_days }
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
        match slots.merchants.get(&merchant) {
            Some(slot) => match slot.days.get(&date) {
                Some(report) => Lookup::Hit(report.clone()),
                None => Lookup::Miss(slot.generation),
            },
            None => Lookup::Miss(slots.floor),
        }
    }

    async fn put(&self, merchant: MerchantId, date: BusinessDate, generation: u64, report: CachedReport) {
        let Ok(mut slots) = self.slots.lock() else { return };
        let slots = &mut *slots;
        if !slots.merchants.contains_key(&merchant) {
            // Without a slot, the merchant was not invalidated since `generation` was read
            // only if no eviction raised the floor meanwhile.
            if generation != slots.floor {
                return;
            }
            slots.make_room(self.max_merchants);
        }
        let slot =
            slots.merchants.entry(merchant).or_insert_with(|| MerchantSlot { generation, ..MerchantSlot::default() });
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
        if !slots.merchants.contains_key(&merchant) {
            slots.make_room(self.max_merchants);
        }
        let generation = slots.tick();
        let slot = slots.merchants.entry(merchant).or_default();
        slot.generation = generation;
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
    use crate::report::DailyBalanceResponse;

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
            closed: false,
            closed_at: None,
            counted_cash: None,
            difference: None,
            adjustments: Vec::new(),
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
    async fn a_report_computed_before_an_invalidation_is_not_stored_after_an_eviction() {
        // Given a cache with room for one merchant, and a reader of `m` that missed
        let cache = MemoryCache::new(1, 64);
        let (m, other) = (MerchantId::new(), MerchantId::new());
        let Lookup::Miss(stale_generation) = cache.get(m, day("2026-11-23")).await else { panic!() };
        // When `m` is invalidated, and another merchant's report then evicts `m`'s slot
        cache.invalidate(m, day("2026-11-23")).await;
        let Lookup::Miss(g) = cache.get(other, day("2026-11-23")).await else { panic!() };
        cache.put(other, day("2026-11-23"), g, report("2.00")).await;
        // Then the reader's report, computed before the invalidation, is not stored
        cache.put(m, day("2026-11-23"), stale_generation, report("1.00")).await;
        assert!(matches!(cache.get(m, day("2026-11-23")).await, Lookup::Miss(_)), "stale report served");
    }

    #[tokio::test]
    async fn an_invalidation_that_evicts_still_drops_the_readers_report_computed_before_it() {
        // Given a full cache, and a reader of an uncached merchant that missed
        let cache = MemoryCache::new(1, 64);
        let (m, other) = (MerchantId::new(), MerchantId::new());
        let Lookup::Miss(g) = cache.get(other, day("2026-11-23")).await else { panic!() };
        cache.put(other, day("2026-11-23"), g, report("2.00")).await;
        let Lookup::Miss(stale_generation) = cache.get(m, day("2026-11-23")).await else { panic!() };
        // When `m` is invalidated, which needs room
        cache.invalidate(m, day("2026-11-23")).await;
        // Then the reader's report is not stored, and a report read after it is
        cache.put(m, day("2026-11-23"), stale_generation, report("1.00")).await;
        let Lookup::Miss(fresh) = cache.get(m, day("2026-11-23")).await else { panic!("stale report served") };
        cache.put(m, day("2026-11-23"), fresh, report("3.00")).await;
        assert_eq!(cache.get(m, day("2026-11-23")).await, Lookup::Hit(report("3.00")));
    }

    #[tokio::test]
    async fn a_flood_of_invalidations_for_distinct_merchants_keeps_the_cache_bounded() {
        // Given a cache for 100 merchants
        let cache = MemoryCache::new(100, 64);
        // When 10,000 merchants it never cached are invalidated
        for _ in 0..10_000 {
            cache.invalidate(MerchantId::new(), day("2026-11-23")).await;
        }
        // Then it holds at most 100 merchants, and still caches
        assert!(cache.slots.lock().unwrap().merchants.len() <= 100);
        let m = MerchantId::new();
        let Lookup::Miss(g) = cache.get(m, day("2026-11-23")).await else { panic!() };
        cache.put(m, day("2026-11-23"), g, report("1.00")).await;
        assert_eq!(cache.get(m, day("2026-11-23")).await, Lookup::Hit(report("1.00")));
    }

    /// One step of a run against the cache: 3 merchants, 2 days, 4 readers.
    #[derive(Debug, Clone)]
    enum Step {
        /// Reader `r` looks merchant `m`'s day `d` up (and remembers what it would compute).
        Get { r: usize, m: usize, d: usize },
        /// Reader `r` stores what it computed after its last miss.
        Put { r: usize },
        /// The consumer invalidates merchant `m` from day `d` on.
        Invalidate { m: usize, d: usize },
    }

    fn steps() -> impl proptest::strategy::Strategy<Value = Vec<Step>> {
        use proptest::prelude::*;
        let step = prop_oneof![
            (0..4usize, 0..3usize, 0..2usize).prop_map(|(r, m, d)| Step::Get { r, m, d }),
            (0..4usize).prop_map(|r| Step::Put { r }),
            (0..3usize, 0..2usize).prop_map(|(m, d)| Step::Invalidate { m, d }),
        ];
        proptest::collection::vec(step, 0..80)
    }

    proptest::proptest! {
        /// Whatever the interleaving of reads, stores, invalidations and evictions (room for
        /// two of three merchants), a hit is the report of the data as it is now.
        #[test]
        fn a_hit_is_never_older_than_the_last_invalidation(steps in steps()) {
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            runtime.block_on(async {
                let cache = MemoryCache::new(2, 64);
                let merchants = [MerchantId::new(), MerchantId::new(), MerchantId::new()];
                let days = [day("2026-11-22"), day("2026-11-23")];
                // The version of the data of each merchant-day: what a report computed now shows.
                let mut version = [[0u64; 2]; 3];
                // Each reader's last miss: where, under which generation, and the version it read.
                let mut misses: [Option<(usize, usize, u64, u64)>; 4] = [None; 4];
                for step in steps {
                    match step {
                        Step::Get { r, m, d } => match cache.get(merchants[m], days[d]).await {
                            Lookup::Hit(served) => {
                                assert_eq!(served, report(&version[m][d].to_string()), "stale hit");
                            }
                            Lookup::Miss(g) => misses[r] = Some((m, d, g, version[m][d])),
                        },
                        Step::Put { r } => {
                            if let Some((m, d, g, v)) = misses[r].take() {
                                cache.put(merchants[m], days[d], g, report(&v.to_string())).await;
                            }
                        }
                        Step::Invalidate { m, d } => {
                            for later in &mut version[m][d..] {
                                *later += 1;
                            }
                            cache.invalidate(merchants[m], days[d]).await;
                        }
                    }
                }
            });
        }
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
