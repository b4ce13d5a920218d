//! The report cache on Redis (ElastiCache): [`RedisCache`] implements [`ReportCache`] for every
//! process that serves or invalidates daily reports, with the semantics of
//! [`MemoryCache`](crate::MemoryCache) (a report computed before an invalidation is never stored
//! after it; a merchant is invalidated from a date on) plus what a shared, fallible cache needs:
//! an outage never fails a read, and an invalidation lost to an outage never lets a stale report
//! be served by this process.
//!
//! # Layout
//! - `{prefix}:epoch`: the cache epoch, an integer without TTL. It is part of every other key,
//!   so bumping it (`INCR`) orphans the whole cache at once; orphans expire by their TTL. When
//!   absent (first use, eviction, a Redis that lost its data) a script creates it from the
//!   server clock in microseconds, so it never comes back as a value it had before.
//! - `{prefix}:{epoch}:m:{merchant}:days`: one hash per merchant. Field `gen` is the merchant's
//!   generation; every other field is a date (`YYYY-MM-DD`) holding the JSON of a
//!   [`DailyBalanceResponse`](crate::report::DailyBalanceResponse). The TTL is set when the
//!   hash is created and never extended, so no cached report is older than the TTL, whatever
//!   else goes wrong. `gen` also starts from the
//!   server clock in microseconds and only grows (`HINCRBY`) until the hash goes away; a new
//!   hash starts from a later clock, so a generation never repeats.
//!
//! # Operations
//! Each is one Lua script, hence one atomic round trip, and each reads the epoch itself, so every
//! process agrees on the current epoch without caching it.
//! - `get`: `HMGET gen date` in the current epoch (creating the hash with a fresh `gen` if it
//!   is missing). The generation handed to the caller is a fingerprint of epoch and `gen`: the
//!   first 64 bits of `SHA1("{epoch}:{gen}")`.
//! - `put`: stores the report only if the fingerprint of the *current* epoch and `gen` still
//!   equals the one handed out; any invalidation or epoch bump in between changes it.
//! - `invalidate(merchant, from)`: `HINCRBY gen 1`, then `HDEL` every date field `>= from`
//!   (dates are fixed-width, 1970..=9999, so string order is date order). A merchant without
//!   a hash has nothing cached and no generation outstanding that could match again.
//!
//! # Redis unavailable
//! Every command gives up after [`RedisCacheConfig::command_timeout`]. Then `get` answers
//! `Lookup::Miss` with a generation that never matches (the API reads the database and its
//! `put` is dropped without a round trip), `put` does nothing, and reads stop trying Redis until
//! a background `PING`, every [`RedisCacheConfig::retry_interval`], finds it answering again: only
//! the requests in flight when Redis went away ever wait for it. The manager reconnects by itself;
//! a connection that stays broken (a primary that vanished without closing its sockets, as in a
//! failover) is replaced by a fresh one at most every 30 s.
//!
//! A failed `invalidate` is the dangerous case: the report it should have removed could be
//! served once Redis is back. So the cache counts lost invalidations, and until an epoch bump
//! sent *after* the last loss has succeeded, this process serves nothing from Redis and stores
//! nothing: `get` first tries the bump (and misses if it fails), and a background task retries
//! it every `retry_interval`, so other processes, which read the epoch in every script, stop
//! seeing the orphaned reports as soon as Redis is reachable from here again. A bump after a
//! timeout that did reach Redis only costs a cold cache.
//!
//! # Remaining windows, and why they are acceptable
//! Each is bounded by the TTL (10 minutes by default), because no report outlives it.
//! - *Other processes during the outage.* Until this process reaches Redis again, a process
//!   that still can (a partition) serves what the lost invalidation should have removed.
//! - *A crash between the database commit and `invalidate`.* The redelivered event is a
//!   duplicate and invalidates nothing. [`MemoryCache`](crate::MemoryCache) loses its content in
//!   the same crash; Redis does not. Closing this one is the caller's choice: call
//!   [`RedisCache::invalidate_all`] when a consumer starts.
//! - *Redis losing acknowledged writes* (failover to a lagging replica): an invalidation can be
//!   undone. A full loss is harmless: the epoch restarts from the clock, orphaning nothing valid
//!   and matching no old generation.
//! - *Concurrency.* A `get` concurrent with an invalidation may return the report from before
//!   it, as with `MemoryCache`; any `get` that starts after `invalidate` returned does not.
//! - *Coincidences.* A repeated generation needs the Redis clock to step back onto the exact
//!   microsecond a previous hash's generation reached; a fingerprint collision is 2^-64 per
//!   pair. Neither is a practical risk.
//!
//! The scripts derive merchant keys from the epoch they read, which Redis Cluster forbids: this
//! needs a standalone Redis (ElastiCache with cluster mode disabled, with or without replicas),
//! reached through its primary endpoint: even `get` may write (it creates a merchant's hash).
//! Report values are never logged.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, RedisResult, Script};
use tokio::task::JoinHandle;

use cashflow_domain::{BusinessDate, MerchantId};

use crate::cache::{Lookup, ReportCache};
use crate::report::CachedReport;

/// The generation handed out when Redis could not be asked: no fingerprint is compared with it,
/// because `put` drops it before any round trip.
const NEVER: u64 = u64::MAX;

/// Least age of a connection before a failure replaces it with a fresh one.
const RENEW_CONNECTION_AFTER: Duration = Duration::from_secs(30);

/// Helpers shared by the scripts. `clock()` is the server time in microseconds, the start of
/// every epoch and generation.
const PRELUDE: &str = r"
local function clock()
  local t = redis.call('TIME')
  return t[1] .. string.format('%06d', tonumber(t[2]))
end
local function fingerprint(e, g)
  return string.sub(redis.sha1hex(e .. ':' .. g), 1, 16)
end
local function days_key(e)
  return ARGV[1] .. ':' .. e .. ':m:' .. ARGV[2] .. ':days'
end
";

/// KEYS: epoch. ARGV: prefix, merchant, date, ttl (ms).
/// Returns `{fingerprint}` or `{fingerprint, report}`.
const GET: &str = r"
local e = redis.call('GET', KEYS[1])
if not e then
  e = clock()
  redis.call('SET', KEYS[1], e)
end
local h = days_key(e)
local r = redis.call('HMGET', h, 'gen', ARGV[3])
local g = r[1]
if not g then
  g = clock()
  redis.call('DEL', h)
  redis.call('HSET', h, 'gen', g)
  redis.call('PEXPIRE', h, ARGV[4])
  return {fingerprint(e, g)}
end
if r[2] then
  return {fingerprint(e, g), r[2]}
end
return {fingerprint(e, g)}
";

/// KEYS: epoch. ARGV: prefix, merchant, date, fingerprint, report, ttl (ms).
/// Returns 1 when stored.
const PUT: &str = r"
local e = redis.call('GET', KEYS[1])
if not e then return 0 end
local h = days_key(e)
local g = redis.call('HGET', h, 'gen')
if not g or fingerprint(e, g) ~= ARGV[4] then return 0 end
redis.call('HSET', h, ARGV[3], ARGV[5])
if redis.call('PTTL', h) < 0 then redis.call('PEXPIRE', h, ARGV[6]) end
return 1
";

/// KEYS: epoch. ARGV: prefix, merchant, from.
/// Returns how many days were dropped.
const INVALIDATE: &str = r"
local e = redis.call('GET', KEYS[1])
if not e then return 0 end
local h = days_key(e)
if not redis.call('HGET', h, 'gen') then
  redis.call('DEL', h)
  return 0
end
redis.call('HINCRBY', h, 'gen', 1)
local dropped = 0
for _, field in ipairs(redis.call('HKEYS', h)) do
  if field ~= 'gen' and field >= ARGV[3] then
    redis.call('HDEL', h, field)
    dropped = dropped + 1
  end
end
return dropped
";

/// KEYS: epoch. Returns the new epoch.
const BUMP: &str = r"
if not redis.call('GET', KEYS[1]) then
  redis.call('SET', KEYS[1], clock())
end
return redis.call('INCR', KEYS[1])
";

/// How the Redis cache behaves. `Default` is the production setting.
#[derive(Debug, Clone)]
pub struct RedisCacheConfig {
    /// First segment of every key, so several deployments can share one Redis.
    pub key_prefix: String,
    /// Longest time a report stays cached: the bound on every staleness window above.
    pub ttl: Duration,
    /// Longest a cache call waits for Redis before the caller goes on without it.
    pub command_timeout: Duration,
    /// After a failure, how long reads skip Redis; also the period of the epoch-bump retries.
    pub retry_interval: Duration,
    /// `rediss://` only: the CA certificates (PEM) the server's certificate must chain to,
    /// instead of the system's roots (a private CA; ElastiCache's chain to public roots).
    pub ca_cert: Option<Vec<u8>>,
}

impl Default for RedisCacheConfig {
    fn default() -> Self {
        Self {
            key_prefix: "cashflow".into(),
            ttl: Duration::from_secs(600),
            command_timeout: Duration::from_millis(200),
            retry_interval: Duration::from_secs(1),
            ca_cert: None,
        }
    }
}

/// Why the Redis cache could not be built or could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum RedisCacheError {
    /// The URL does not parse or names an unsupported scheme (`rediss://` needs a TLS feature
    /// of the `redis` crate).
    #[error("invalid Redis URL")]
    InvalidUrl(#[source] redis::RedisError),
    /// A configuration value is out of range.
    #[error("invalid Redis cache configuration: {0}")]
    InvalidConfig(&'static str),
    /// Redis refused the command or the connection failed.
    #[error("Redis command failed")]
    Redis(#[source] redis::RedisError),
    /// Redis did not answer in time.
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
}

/// The report cache shared by every process through Redis. See the [module docs](self).
pub struct RedisCache {
    inner: Arc<Inner>,
    /// Retries the epoch bump after a lost invalidation, even when nothing else calls the cache.
    repair: JoinHandle<()>,
}

/// The current connection and when it was opened.
struct Connection {
    manager: ConnectionManager,
    /// Age gate for replacing it (see `RENEW_CONNECTION_AFTER`).
    opened: Instant,
}

struct Inner {
    /// Opens a fresh connection when the current one seems wedged.
    client: Client,
    manager_config: ConnectionManagerConfig,
    /// Cloned out for each call (a `ConnectionManager` is a cheap handle).
    connection: RwLock<Connection>,
    /// `{prefix}:epoch`.
    epoch_key: String,
    prefix: String,
    /// The TTL in milliseconds, as `PEXPIRE` takes it.
    ttl_ms: u64,
    command_timeout: Duration,
    retry_interval: Duration,
    /// Origin of the millisecond clock below.
    origin: Instant,
    /// Reads skip Redis until this many milliseconds after `origin` (0: they don't).
    retry_at_ms: AtomicU64,
    /// Whether the last call failed; logging happens only when it flips.
    unavailable: AtomicBool,
    /// Invalidations lost so far.
    lost: AtomicU64,
    /// `lost` as read just before the last successful epoch bump was sent: every loss up to it
    /// is covered. `lost > bumped_through` means a bump is due before anything is served.
    bumped_through: AtomicU64,
    get: Script,
    put: Script,
    invalidate: Script,
    bump: Script,
}

impl RedisCache {
    /// A cache on the Redis at `url` (`redis://[:password@]host[:port][/db]`, or `rediss://…`
    /// for TLS, ElastiCache's in-transit encryption: the server's certificate is verified
    /// against [`RedisCacheConfig::ca_cert`] or the system's roots, and its host name).
    ///
    /// Fails only on an invalid URL or configuration: an unreachable Redis is logged and
    /// handled like any later outage, so the service starts (and reads from the database)
    /// without it.
    pub async fn connect(url: &str, config: RedisCacheConfig) -> Result<Self, RedisCacheError> {
        if config.key_prefix.is_empty() {
            return Err(RedisCacheError::InvalidConfig("the key prefix is empty"));
        }
        let ttl_ms = u64::try_from(config.ttl.as_millis()).unwrap_or(u64::MAX);
        if ttl_ms == 0 || i64::try_from(ttl_ms).is_err() {
            return Err(RedisCacheError::InvalidConfig("the TTL must be between 1 ms and i64::MAX ms"));
        }
        if config.command_timeout.is_zero() || config.retry_interval.is_zero() {
            return Err(RedisCacheError::InvalidConfig("the command timeout and retry interval must be positive"));
        }
        let client = if url.starts_with("rediss://") {
            // The Redis client builds its TLS configuration from rustls's process default.
            if rustls::crypto::CryptoProvider::get_default().is_none() {
                let _ = rustls::crypto::ring::default_provider().install_default();
            }
            let certificates = redis::TlsCertificates { client_tls: None, root_cert: config.ca_cert.clone() };
            Client::build_with_tls(url, certificates).map_err(RedisCacheError::InvalidUrl)?
        } else if config.ca_cert.is_some() {
            return Err(RedisCacheError::InvalidConfig("a CA certificate needs a rediss:// URL"));
        } else {
            Client::open(url).map_err(RedisCacheError::InvalidUrl)?
        };
        let manager_config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(config.command_timeout))
            .set_number_of_retries(3)
            .set_max_delay(config.retry_interval);
        let manager = ConnectionManager::new_lazy_with_config(client.clone(), manager_config.clone())
            .map_err(RedisCacheError::Redis)?;
        let inner = Arc::new(Inner {
            client,
            manager_config,
            connection: RwLock::new(Connection { manager, opened: Instant::now() }),
            epoch_key: format!("{}:epoch", config.key_prefix),
            prefix: config.key_prefix,
            ttl_ms,
            command_timeout: config.command_timeout,
            retry_interval: config.retry_interval,
            origin: Instant::now(),
            retry_at_ms: AtomicU64::new(0),
            unavailable: AtomicBool::new(false),
            lost: AtomicU64::new(0),
            bumped_through: AtomicU64::new(0),
            get: Script::new(&format!("{PRELUDE}{GET}")),
            put: Script::new(&format!("{PRELUDE}{PUT}")),
            invalidate: Script::new(&format!("{PRELUDE}{INVALIDATE}")),
            bump: Script::new(&format!("{PRELUDE}{BUMP}")),
        });
        let repair = tokio::spawn(repair_lost_invalidations(Arc::downgrade(&inner), config.retry_interval));
        let cache = Self { inner, repair };
        // Only to log the state at startup; a failure is already logged by `check`.
        let _ = cache.check().await;
        Ok(cache)
    }

    /// Whether Redis answers a `PING` in time (for readiness reports).
    pub async fn check(&self) -> Result<(), RedisCacheError> {
        self.inner.ping().await
    }

    /// Drops every cached report of every merchant (bumps the epoch) and voids every
    /// generation handed out so far. A consumer can call it when it starts, to cover an
    /// invalidation lost in a crash between a commit and its `invalidate`.
    pub async fn invalidate_all(&self) -> Result<(), RedisCacheError> {
        self.inner.bump_epoch().await
    }
}

impl Drop for RedisCache {
    fn drop(&mut self) {
        self.repair.abort();
    }
}

/// Every `every`, until the cache is dropped: checks whether Redis is back while it is marked
/// unavailable (reads resume on success), and bumps the epoch while an invalidation is lost.
async fn repair_lost_invalidations(inner: Weak<Inner>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        if inner.unavailable.load(Ordering::Acquire) {
            // Success marks Redis available; a failure is already logged.
            let _ = inner.ping().await;
        }
        if inner.must_bump() {
            // A failure is logged (on the state change) and retried at the next tick.
            let _ = inner.bump_epoch().await;
        }
    }
}

impl Inner {
    fn manager(&self) -> ConnectionManager {
        self.connection.read().unwrap_or_else(PoisonError::into_inner).manager.clone()
    }

    /// Runs one Redis call within the command timeout and records the outcome.
    async fn call<T>(
        &self,
        op: &'static str,
        call: impl Future<Output = RedisResult<T>>,
    ) -> Result<T, RedisCacheError> {
        let result = match tokio::time::timeout(self.command_timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(RedisCacheError::Redis(e)),
            Err(_) => Err(RedisCacheError::Timeout(self.command_timeout)),
        };
        match &result {
            Ok(_) => self.available(),
            Err(e) => self.failed(op, e),
        }
        result
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether reads should skip Redis for now: after a failure, for at least `retry_interval`
    /// and until a call succeeds again (the background check, or an invalidation, which is
    /// always tried), so that no read waits on a Redis that is down.
    fn resting(&self) -> bool {
        self.unavailable.load(Ordering::Acquire) || self.now_ms() < self.retry_at_ms.load(Ordering::Relaxed)
    }

    /// `PING`, within the command timeout.
    async fn ping(&self) -> Result<(), RedisCacheError> {
        let mut connection = self.manager();
        self.call("ping", redis::cmd("PING").query_async::<String>(&mut connection)).await.map(|_| ())
    }

    fn available(&self) {
        self.retry_at_ms.store(0, Ordering::Relaxed);
        if self.unavailable.swap(false, Ordering::AcqRel) {
            tracing::warn!("Redis report cache reachable again");
        }
    }

    fn failed(&self, op: &'static str, error: &RedisCacheError) {
        let retry_interval_ms = u64::try_from(self.retry_interval.as_millis()).unwrap_or(u64::MAX);
        self.retry_at_ms.store(self.now_ms().saturating_add(retry_interval_ms), Ordering::Relaxed);
        if !self.unavailable.swap(true, Ordering::AcqRel) {
            let cause = std::error::Error::source(error).map(ToString::to_string).unwrap_or_default();
            tracing::warn!(op, error = %error, cause, "Redis report cache unavailable; daily reports are read from the database");
        }
        self.renew_old_connection();
    }

    /// Replaces the connection by a fresh one, unless it is recent. The manager reconnects by
    /// itself only on errors it recognises as a dropped connection; a peer that vanished
    /// without closing the socket only ever shows up as timeouts.
    fn renew_old_connection(&self) {
        let mut connection = self.connection.write().unwrap_or_else(PoisonError::into_inner);
        if connection.opened.elapsed() < RENEW_CONNECTION_AFTER {
            return;
        }
        match ConnectionManager::new_lazy_with_config(self.client.clone(), self.manager_config.clone()) {
            Ok(manager) => *connection = Connection { manager, opened: Instant::now() },
            Err(e) => tracing::debug!(error = %e, "could not renew the Redis connection"),
        }
    }

    /// Whether an invalidation was lost since the last epoch bump was sent.
    fn must_bump(&self) -> bool {
        self.lost.load(Ordering::SeqCst) > self.bumped_through.load(Ordering::SeqCst)
    }

    fn invalidation_lost(&self) {
        let first = !self.must_bump();
        self.lost.fetch_add(1, Ordering::SeqCst);
        if first {
            tracing::warn!(
                "a report cache invalidation was lost; this process serves no cached report until the cache epoch is bumped"
            );
        }
    }

    /// Orphans every cached report. Covers every loss counted before the command is sent.
    async fn bump_epoch(&self) -> Result<(), RedisCacheError> {
        let covered = self.lost.load(Ordering::SeqCst);
        let mut connection = self.manager();
        let invocation = self.bump.key(&self.epoch_key);
        let epoch: i64 = self.call("bump epoch", invocation.invoke_async(&mut connection)).await?;
        self.bumped_through.fetch_max(covered, Ordering::SeqCst);
        tracing::info!(epoch, "report cache epoch bumped: every report cached before is dropped");
        Ok(())
    }
}

#[async_trait]
impl ReportCache for RedisCache {
    #[tracing::instrument(level = "debug", skip_all, fields(merchant = %merchant, date = %date))]
    async fn get(&self, merchant: MerchantId, date: BusinessDate) -> Lookup {
        let inner = &self.inner;
        if inner.resting() || (inner.must_bump() && inner.bump_epoch().await.is_err()) {
            return Lookup::Miss(NEVER);
        }
        let mut invocation = inner.get.key(&inner.epoch_key);
        invocation.arg(&inner.prefix).arg(merchant.to_string()).arg(date.to_string()).arg(inner.ttl_ms);
        let mut connection = inner.manager();
        let Ok(reply) = inner.call("get", invocation.invoke_async::<Vec<String>>(&mut connection)).await else {
            return Lookup::Miss(NEVER);
        };
        let Some(generation) = reply.first().and_then(|f| u64::from_str_radix(f, 16).ok()) else {
            tracing::warn!("unexpected reply from the Redis report cache script");
            return Lookup::Miss(NEVER);
        };
        match reply.into_iter().nth(1).map(CachedReport::from_json) {
            Some(Some(report)) => Lookup::Hit(report),
            Some(None) => {
                // Written by another version, say; the next put replaces it.
                tracing::debug!("undecodable cached report ignored");
                Lookup::Miss(generation)
            }
            None => Lookup::Miss(generation),
        }
    }

    #[tracing::instrument(level = "debug", skip_all, fields(merchant = %merchant, date = %date))]
    async fn put(&self, merchant: MerchantId, date: BusinessDate, generation: u64, report: CachedReport) {
        let inner = &self.inner;
        // While a bump is due, whatever is stored now would be orphaned by it.
        if generation == NEVER || inner.resting() || inner.must_bump() {
            return;
        }
        let mut invocation = inner.put.key(&inner.epoch_key);
        invocation
            .arg(&inner.prefix)
            .arg(merchant.to_string())
            .arg(date.to_string())
            .arg(format!("{generation:016x}"))
            .arg(report.json())
            .arg(inner.ttl_ms);
        let mut connection = inner.manager();
        // A failed put only leaves the day uncached.
        let _ = inner.call("put", invocation.invoke_async::<i64>(&mut connection)).await;
    }

    #[tracing::instrument(level = "debug", skip_all, fields(merchant = %merchant, from = %from))]
    async fn invalidate(&self, merchant: MerchantId, from: BusinessDate) {
        let inner = &self.inner;
        // While a bump is due, an invalidation adds nothing to it; if it cannot be done now,
        // counting this one as lost makes sure the bump that covers it is sent after it.
        // Otherwise always try, even right after a failure: a success spares a whole-cache bump.
        if inner.must_bump() && (inner.resting() || inner.bump_epoch().await.is_err()) {
            inner.invalidation_lost();
            return;
        }
        let mut invocation = inner.invalidate.key(&inner.epoch_key);
        invocation.arg(&inner.prefix).arg(merchant.to_string()).arg(from.to_string());
        let mut connection = inner.manager();
        if inner.call("invalidate", invocation.invoke_async::<i64>(&mut connection)).await.is_err() {
            inner.invalidation_lost();
        }
    }

    async fn ping(&self) -> Result<(), String> {
        self.check().await.map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_invalid_configuration_is_refused() {
        let url = "redis://127.0.0.1:1";
        for config in [
            RedisCacheConfig { key_prefix: String::new(), ..RedisCacheConfig::default() },
            RedisCacheConfig { ttl: Duration::ZERO, ..RedisCacheConfig::default() },
            RedisCacheConfig { command_timeout: Duration::ZERO, ..RedisCacheConfig::default() },
            RedisCacheConfig { retry_interval: Duration::ZERO, ..RedisCacheConfig::default() },
        ] {
            assert!(matches!(RedisCache::connect(url, config).await, Err(RedisCacheError::InvalidConfig(_))));
        }
        assert!(matches!(
            RedisCache::connect("not a url", RedisCacheConfig::default()).await,
            Err(RedisCacheError::InvalidUrl(_))
        ));
    }

    #[tokio::test]
    async fn a_put_under_the_never_generation_costs_nothing() {
        let cache = RedisCache::connect("redis://127.0.0.1:1", RedisCacheConfig::default()).await.unwrap();
        assert!(cache.inner.unavailable.load(Ordering::SeqCst), "the startup probe noticed");
        let report = CachedReport::of(&crate::report::tests::report(false)).unwrap();
        // Clear the rest period so that only the NEVER check can skip the round trip.
        cache.inner.retry_at_ms.store(0, Ordering::SeqCst);
        cache.put(MerchantId::new(), BusinessDate::parse("2026-11-23").unwrap(), NEVER, report).await;
        assert_eq!(cache.inner.retry_at_ms.load(Ordering::SeqCst), 0, "no call was made");
    }

    #[tokio::test]
    async fn a_lost_invalidation_is_covered_only_by_a_bump_sent_after_it() {
        let cache = RedisCache::connect("redis://127.0.0.1:1", RedisCacheConfig::default()).await.unwrap();
        assert!(!cache.inner.must_bump());
        cache.invalidate(MerchantId::new(), BusinessDate::parse("2026-11-23").unwrap()).await;
        assert!(cache.inner.must_bump());
        // A bump that started before a second loss does not cover it.
        let covered = cache.inner.lost.load(Ordering::SeqCst);
        cache.inner.invalidation_lost();
        cache.inner.bumped_through.fetch_max(covered, Ordering::SeqCst);
        assert!(cache.inner.must_bump());
    }
}
