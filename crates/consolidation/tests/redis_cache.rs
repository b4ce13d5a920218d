//! `RedisCache` against a real Redis (`CASHFLOW_TEST_REDIS_URL`, e.g. `redis://127.0.0.1:6379`).
//! Without the variable these tests show as ignored; the ones that need no server always run.
//! Each test works under its own key prefix and deletes its keys when done. Redis never has to
//! be stopped: an outage is a proxy of ours that starts refusing and cutting connections.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use cashflow_consolidation::cache::{Lookup, ReportCache};
use cashflow_consolidation::report::{CachedReport, DailyBalanceResponse};
use cashflow_consolidation::{RedisCache, RedisCacheConfig};
use cashflow_domain::{BusinessDate, MerchantId};

fn report(closing: &str) -> CachedReport {
    CachedReport::of(&DailyBalanceResponse {
        date: "2026-11-23".into(),
        currency: "BRL".into(),
        opening_balance: "0.00".into(),
        total_credits: closing.into(),
        total_debits: "0.00".into(),
        net: closing.into(),
        closing_balance: closing.into(),
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

fn redis_url() -> String {
    std::env::var("CASHFLOW_TEST_REDIS_URL").expect("CASHFLOW_TEST_REDIS_URL")
}

/// A key prefix of its own, whose keys are deleted on drop (the epoch key has no TTL).
struct Namespace {
    prefix: String,
}

impl Namespace {
    fn new() -> Self {
        Self { prefix: format!("cashflow-test-{}", uuid::Uuid::new_v4()) }
    }

    fn config(&self) -> RedisCacheConfig {
        RedisCacheConfig {
            key_prefix: self.prefix.clone(),
            // Generous, so that a loaded test machine does not turn into an "outage".
            command_timeout: Duration::from_secs(2),
            retry_interval: Duration::from_millis(100),
            ..RedisCacheConfig::default()
        }
    }

    async fn cache(&self) -> RedisCache {
        RedisCache::connect(&redis_url(), self.config()).await.unwrap()
    }

    /// The raw keys under this prefix, for tests that check the layout.
    fn keys(&self) -> Vec<String> {
        let mut conn = redis::Client::open(redis_url()).unwrap().get_connection().unwrap();
        redis::cmd("KEYS").arg(format!("{}:*", self.prefix)).query(&mut conn).unwrap()
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open(redis_url()) else { return };
        let Ok(mut conn) = client.get_connection() else { return };
        let keys: Vec<String> =
            redis::cmd("KEYS").arg(format!("{}:*", self.prefix)).query(&mut conn).unwrap_or_default();
        if !keys.is_empty() {
            let _: redis::RedisResult<i64> = redis::cmd("DEL").arg(keys).query(&mut conn);
        }
    }
}

/// Stores a report the way the API does: `get` for the generation, then `put`.
async fn cache_report(cache: &RedisCache, merchant: MerchantId, date: BusinessDate, report: CachedReport) {
    let Lookup::Miss(generation) = cache.get(merchant, date).await else { panic!("{date} was already cached") };
    cache.put(merchant, date, generation, report).await;
}

/// A TCP proxy to Redis that can be "taken down": then it cuts every connection and refuses
/// new ones (accepts and closes them), as a Redis that went away would.
struct Proxy {
    url: String,
    up: watch::Sender<bool>,
    /// Connections currently relayed.
    live: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Proxy {
    async fn start() -> Self {
        let url = redis_url();
        let authority = url.split("://").nth(1).unwrap().split('/').next().unwrap();
        let host_port = authority.rsplit('@').next().unwrap();
        let upstream: SocketAddr = tokio::net::lookup_host(host_port).await.unwrap().next().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let local = listener.local_addr().unwrap();
        let (up, watching) = watch::channel(true);
        let live = Arc::new(AtomicUsize::new(0));
        let counted = live.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else { return };
                if !*watching.borrow() {
                    continue; // dropped: closed at once
                }
                let mut down = watching.clone();
                let live = counted.clone();
                live.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(upstream).await {
                        tokio::select! {
                            biased;
                            _ = down.wait_for(|up| !*up) => {}
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        }
                    }
                    live.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Self { url: url.replacen(host_port, &local.to_string(), 1), up, live, task }
    }

    /// Returns once every relayed connection is cut.
    async fn take_down(&self) {
        self.up.send_replace(false);
        while self.live.load(Ordering::SeqCst) > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn bring_up(&self) {
        self.up.send_replace(true);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
#[cfg_attr(not(redis_tests), ignore = "set CASHFLOW_TEST_REDIS_URL to run against Redis")]
async fn a_stored_report_is_served_until_invalidated() {
    let ns = Namespace::new();
    let cache = ns.cache().await;
    let m = MerchantId::new();

    cache_report(&cache, m, day("2026-11-23"), report("1.00")).await;
    assert_eq!(cache.get(m, day("2026-11-23")).await, Lookup::Hit(report("1.00")));

    cache.invalidate(m, day("2026-11-20")).await;
    assert!(matches!(cache.get(m, day("2026-11-23")).await, Lookup::Miss(_)));
}

#[tokio::test]
#[cfg_attr(not(redis_tests), ignore = "set CASHFLOW_TEST_REDIS_URL to run against Redis")]
async fn invalidating_from_a_date_drops_that_day_and_later_days_only() {
    let ns = Namespace::new();
    let cache = ns.cache().await;
    let m = MerchantId::new();
    for d in ["2026-11-19", "2026-11-20", "2026-11-21", "2026-12-01"] {
        cache_report(&cache, m, day(d), report("1.00")).await;
    }

    cache.invalidate(m, day("2026-11-20")).await;

    assert!(matches!(cache.get(m, day("2026-11-19")).await, Lookup::Hit(_)));
    for d in ["2026-11-20", "2026-11-21", "2026-12-01"] {
        assert!(matches!(cache.get(m, day(d)).await, Lookup::Miss(_)), "{d} survived");
    }
}

#[tokio::test]
#[cfg_attr(not(redis_tests), ignore = "set CASHFLOW_TEST_REDIS_URL to run against Redis")]
async fn merchants_are_invalidated_independently() {
    let ns = Namespace::new();
    let cache = ns.cache().await;
    let (a, b) = (MerchantId::new(), MerchantId::new());
    cache_report(&cache, a, day("2026-11-23"), report("1.00")).await;
    cache_report(&cache, b, day("2026-11-23"), report("2.00")).await;

    cache.invalidate(a, day("2026-11-01")).await;

    assert!(matches!(cache.get(a, day("2026-11-23")).await, Lookup::Miss(_)));
    assert_eq!(cache.get(b, day("2026-11-23")).await, Lookup::Hit(report("2.00")));
}

#[tokio::test]
#[cfg_attr(not(redis_tests), ignore = "set CASHFLOW_TEST_REDIS_URL to run against Redis")]
async fn a_report_computed_before_an_invalidation_is_not_stored() {
    let ns = Namespace::new();
    let cache = ns.cache().await;
    let m = MerchantId::new();
    let Lookup::Miss(stale) = cache.get(m, day("2026-11-23")).await else { panic!("cold cache hit") };

    cache.invalidate(m, day("2026-11-23")).await;
    cache.put(m, day("2026-11-23"), stale, report("1.00")).await;

    let Lookup::Miss(fresh) = cache.get(m, day("2026-11-23")).await else { panic!("stale report stored") };
    assert_ne!(fresh, stale);
    cache.put(m, day("2026-11-23"), fresh, report("2.00")).await;
    assert_eq!(cache.get(m, day("2026-11-23")).await, Lookup::Hit(report("2.00")));
}

#[tokio::test]
#[cfg_attr(not(redis_tests), ignore = "set CASHFLOW_TEST_REDIS_URL to run against Redis")]
async fn an_invalidation_for_a_later_day_still_voids_outstanding_generations() {
    // The generation is per merchant, as in MemoryCache: any invalidation voids it.
    let ns = Namespace::new();
    let cache = ns.cache().await;
    let m = MerchantId::new();
    let Lookup::Miss(generation) = cache.get(m, day("2026-11-20")).await else { panic!() };

    cache.invalidate(m, day("2026-11-25")).await;
    cache.put(m, day("2026-11-20"), generation, report("1.00")).await;

    assert!(matches!(cache.get(m, day("2026-11-20")).await, Lookup::Miss(_)));
}

#[tokio::test]
#[cfg_attr(not(redis_tests), ignore = "set CASHFLOW_TEST_REDIS_URL to run against Redis")]
async fn another_process_sees_the_reports_and_invalidations_of_the_first() {
    let ns = Namespace::new();
    let (api, consumer) = (ns.cache().await, ns.cache().await);
    let m = MerchantId::new();
    cache_report(&api, m, day("2026-11-23"), report("1.00")).await;
    assert_eq!(consumer.get(m, day("2026-11-23")).await, Lookup::Hit(report("1.00")));

    // A read in flight in one process while the other invalidates.
    let Lookup::Miss(in_flight) = api.get(m, day("2026-11-24")).await else { panic!() };
    consumer.invalidate(m, day("2026-11-23")).await;
    api.put(m, day("2026-11-24"), in_flight, report("1.00")).await;

    assert!(matches!(api.get(m, day("2026-11-23")).await, Lookup::Miss(_)));
    assert!(matches!(api.get(m, day("2026-11-24")).await, Lookup::Miss(_)), "stale put stored");
}

#[tokio::test]
#[cfg_attr(not(redis_tests), ignore = "set CASHFLOW_TEST_REDIS_URL to run against Redis")]
async fn invalidate_all_drops_every_merchant_and_voids_outstanding_generations() {
    let ns = Namespace::new();
    let (cache, other) = (ns.cache().await, ns.cache().await);
    let (a, b) = (MerchantId::new(), MerchantId::new());
    cache_report(&cache, a, day("2026-11-23"), report("1.00")).await;
    let Lookup::Miss(outstanding) = cache.get(b, day("2026-11-23")).await else { panic!() };

    other.invalidate_all().await.unwrap();
    cache.put(b, day("2026-11-23"), outstanding, report("2.00")).await;

    assert!(matches!(cache.get(a, day("2026-11-23")).await, Lookup::Miss(_)));
    assert!(matches!(cache.get(b, day("2026-11-23")).await, Lookup::Miss(_)));
}

#[tokio::test]
#[cfg_attr(not(redis_tests), ignore = "set CASHFLOW_TEST_REDIS_URL to run against Redis")]
async fn no_report_is_served_longer_than_the_ttl_even_when_the_merchant_stays_busy() {
    let ns = Namespace::new();
    let ttl = Duration::from_millis(600);
    let cache = RedisCache::connect(&redis_url(), RedisCacheConfig { ttl, ..ns.config() }).await.unwrap();
    let m = MerchantId::new();
    let start = Instant::now();
    cache_report(&cache, m, day("2026-11-20"), report("1.00")).await;

    // Later writes for the same merchant do not extend the life of earlier reports.
    tokio::time::sleep(Duration::from_millis(300)).await;
    cache_report(&cache, m, day("2026-11-21"), report("1.00")).await;
    if start.elapsed() < ttl {
        assert!(matches!(cache.get(m, day("2026-11-20")).await, Lookup::Hit(_)));
    }

    tokio::time::sleep(ttl.saturating_sub(start.elapsed()) + Duration::from_millis(100)).await;
    assert!(matches!(cache.get(m, day("2026-11-20")).await, Lookup::Miss(_)));
}

#[tokio::test]
#[cfg_attr(not(redis_tests), ignore = "set CASHFLOW_TEST_REDIS_URL to run against Redis")]
async fn every_key_lives_under_the_prefix_and_all_but_the_epoch_expire() {
    let ns = Namespace::new();
    let cache = ns.cache().await;
    let m = MerchantId::new();
    cache_report(&cache, m, day("2026-11-23"), report("1.00")).await;

    let keys = ns.keys();
    let epoch_key = format!("{}:epoch", ns.prefix);
    assert!(keys.contains(&epoch_key), "{keys:?}");
    assert_eq!(keys.len(), 2, "{keys:?}");
    let mut conn = redis::Client::open(redis_url()).unwrap().get_connection().unwrap();
    for key in keys.iter().filter(|k| **k != epoch_key) {
        assert!(key.ends_with(&format!(":m:{m}:days")), "{key}");
        let ttl_ms: i64 = redis::cmd("PTTL").arg(key).query(&mut conn).unwrap();
        assert!(ttl_ms > 0 && ttl_ms <= 600_000, "{key}: {ttl_ms} ms");
    }
}

#[tokio::test]
#[cfg_attr(not(redis_tests), ignore = "set CASHFLOW_TEST_REDIS_URL to run against Redis")]
async fn an_undecodable_cached_value_is_a_miss_that_the_next_put_repairs() {
    let ns = Namespace::new();
    let cache = ns.cache().await;
    let m = MerchantId::new();
    cache_report(&cache, m, day("2026-11-23"), report("1.00")).await;
    let hash = ns.keys().into_iter().find(|k| k.ends_with(":days")).unwrap();
    let mut conn = redis::Client::open(redis_url()).unwrap().get_connection().unwrap();
    let _: i64 = redis::cmd("HSET").arg(&hash).arg("2026-11-23").arg("{not json").query(&mut conn).unwrap();

    let Lookup::Miss(generation) = cache.get(m, day("2026-11-23")).await else { panic!("garbage served") };
    cache.put(m, day("2026-11-23"), generation, report("2.00")).await;

    assert_eq!(cache.get(m, day("2026-11-23")).await, Lookup::Hit(report("2.00")));
}

#[tokio::test]
#[cfg_attr(not(redis_tests), ignore = "set CASHFLOW_TEST_REDIS_URL to run against Redis")]
async fn after_a_lost_invalidation_nothing_stale_is_served_once_redis_is_back() {
    let ns = Namespace::new();
    let proxy = Proxy::start().await;
    let cache = RedisCache::connect(&proxy.url, ns.config()).await.unwrap();
    let m = MerchantId::new();
    cache_report(&cache, m, day("2026-11-22"), report("1.00")).await;
    cache_report(&cache, m, day("2026-11-23"), report("1.00")).await;
    assert_eq!(cache.get(m, day("2026-11-23")).await, Lookup::Hit(report("1.00")));

    // Redis becomes unreachable and the consumer's invalidation is lost.
    proxy.take_down().await;
    cache.invalidate(m, day("2026-11-23")).await;
    assert!(matches!(cache.get(m, day("2026-11-23")).await, Lookup::Miss(_)));

    // Redis is back: the stale report is never served; a fresh one gets cached again.
    proxy.bring_up();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match cache.get(m, day("2026-11-23")).await {
            Lookup::Hit(served) => {
                assert_eq!(served, report("2.00"), "served a report the lost invalidation should have removed");
                break;
            }
            Lookup::Miss(generation) => cache.put(m, day("2026-11-23"), generation, report("2.00")).await,
        }
        assert!(Instant::now() < deadline, "the cache never worked again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Dropping the whole epoch also dropped the days the invalidation would have kept.
    assert!(matches!(cache.get(m, day("2026-11-22")).await, Lookup::Miss(_)));
}

#[tokio::test]
#[cfg_attr(not(redis_tests), ignore = "set CASHFLOW_TEST_REDIS_URL to run against Redis")]
async fn other_processes_stop_serving_what_a_lost_invalidation_should_have_removed_once_it_is_repaired() {
    let ns = Namespace::new();
    let proxy = Proxy::start().await;
    let consumer = RedisCache::connect(&proxy.url, ns.config()).await.unwrap();
    let api = ns.cache().await;
    let m = MerchantId::new();
    cache_report(&api, m, day("2026-11-23"), report("1.00")).await;

    // Only the consumer loses Redis; its invalidation is lost.
    proxy.take_down().await;
    consumer.invalidate(m, day("2026-11-23")).await;
    proxy.bring_up();

    // Without any further call on the consumer, its background repair bumps the epoch.
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Lookup::Hit(_) = api.get(m, day("2026-11-23")).await {
        assert!(Instant::now() < deadline, "the other process kept serving the stale report");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_unreachable_redis_is_a_quick_miss_and_never_an_error() {
    let started = Instant::now();
    let cache = RedisCache::connect("redis://127.0.0.1:1", RedisCacheConfig::default()).await.unwrap();
    assert!(cache.check().await.is_err());
    let m = MerchantId::new();
    for _ in 0..3 {
        let call = Instant::now();
        let Lookup::Miss(generation) = cache.get(m, day("2026-11-23")).await else { panic!("hit without Redis") };
        assert!(call.elapsed() < Duration::from_millis(500), "get took {:?}", call.elapsed());
        cache.put(m, day("2026-11-23"), generation, report("1.00")).await;
        cache.invalidate(m, day("2026-11-23")).await;
    }
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
}

/// A "Redis" that accepts connections and never says a word, like a wedged server: its URL, and
/// the task to abort when done.
async fn silent_redis() -> (String, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("redis://{}", listener.local_addr().unwrap());
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (url, silent)
}

#[tokio::test]
async fn once_redis_is_found_wedged_reads_stop_waiting_for_it() {
    // The first read finds out (it waits the whole command timeout); the reads after it, even
    // past the retry interval, go straight to the database while a background check keeps asking
    // Redis.
    let (url, silent) = silent_redis().await;
    let timeout = Duration::from_secs(2);
    let config =
        RedisCacheConfig { command_timeout: timeout, retry_interval: Duration::from_millis(10), ..Default::default() };
    let cache = RedisCache::connect(&url, config).await.unwrap();
    let m = MerchantId::new();
    assert!(matches!(cache.get(m, day("2026-11-23")).await, Lookup::Miss(_)));
    let reads = Instant::now();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(20)).await; // past the retry interval
        assert!(matches!(cache.get(m, day("2026-11-23")).await, Lookup::Miss(_)));
    }
    assert!(reads.elapsed() < timeout, "reads waited for a wedged Redis: {:?} for 5 reads", reads.elapsed());
    silent.abort();
}

#[tokio::test]
async fn a_redis_that_never_answers_costs_a_read_at_most_the_command_timeout() {
    let (url, silent) = silent_redis().await;
    let config = RedisCacheConfig {
        command_timeout: Duration::from_millis(200),
        retry_interval: Duration::from_millis(10),
        ..RedisCacheConfig::default()
    };
    let cache = RedisCache::connect(&url, config).await.unwrap();
    let m = MerchantId::new();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(20)).await; // past the rest period: really ask
        let call = Instant::now();
        assert!(matches!(cache.get(m, day("2026-11-23")).await, Lookup::Miss(_)));
        assert!(call.elapsed() < Duration::from_millis(700), "get took {:?}", call.elapsed());
    }
    let call = Instant::now();
    cache.invalidate(m, day("2026-11-23")).await;
    assert!(call.elapsed() < Duration::from_millis(700), "invalidate took {:?}", call.elapsed());
    silent.abort();
}
