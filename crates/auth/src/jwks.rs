//! An external issuer's signing keys, fetched from its JWKS URL and kept in memory.
//!
//! Verification never waits for the network on the common path: the keys are fetched when
//! the process starts and again every TTL by [`JwksCache::run`]. A token whose `kid` is not
//! in the cache may mean the issuer rotated its keys, so it earns one fetch, but at most one
//! per [`JwksCache::min_refresh_interval`] for the whole process: anyone can send a token with
//! a random `kid`, and a flood of them must not become a flood of fetches against the issuer.
//! A failed fetch keeps the keys already known, so while the endpoint is down cached keys
//! keep verifying and unknown kids are refused; a process whose first fetch fails starts
//! anyway, with no keys, and reports itself degraded ([`JwksCache::is_healthy`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::Algorithm;

use crate::verifier::{usable_keys, VerificationKey};

/// How long fetched keys are used before they are fetched again.
pub const DEFAULT_JWKS_TTL: Duration = Duration::from_secs(300);

/// The least time between two fetches caused by unknown `kid`s.
pub const DEFAULT_MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(5);

/// A JWKS document larger than this is refused (Cognito's is about 1 KiB).
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("fetching the JWKS: {0}")]
    Http(#[from] reqwest::Error),
    #[error("the JWKS endpoint answered {0}")]
    Status(reqwest::StatusCode),
    #[error("the JWKS is larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    #[error("the JWKS is not a JSON key set: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("the JWKS has no key usable with {0:?}")]
    NoUsableKey(Vec<Algorithm>),
}

/// The keys of one JWKS URL.
pub struct JwksCache {
    url: String,
    /// Keys of other algorithms are dropped when fetched.
    algorithms: Vec<Algorithm>,
    http: reqwest::Client,
    /// Swapped whole on every successful fetch.
    keys: RwLock<Arc<[VerificationKey]>>,
    /// When the last fetch started: the rate limit of the fetches unknown kids cause.
    last_fetch: Mutex<Option<Instant>>,
    /// One fetch at a time: tokens waiting on an unknown kid share the fetch under way.
    fetching: tokio::sync::Mutex<()>,
    /// Whether the last fetch succeeded.
    healthy: AtomicBool,
    min_refresh_interval: Duration,
}

impl JwksCache {
    /// A cache of `url`'s keys, empty until [`JwksCache::refresh`]. Fails only if no HTTP
    /// client can be built (no TLS roots on the platform).
    pub fn new(
        url: impl Into<String>,
        algorithms: Vec<Algorithm>,
        min_refresh_interval: Duration,
    ) -> Result<Self, JwksError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .connect_timeout(Duration::from_secs(2))
            .build()?;
        Ok(Self {
            url: url.into(),
            algorithms,
            http,
            keys: RwLock::new(Arc::from(Vec::new())),
            last_fetch: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
            healthy: AtomicBool::new(false),
            min_refresh_interval,
        })
    }

    /// The URL the keys come from.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The least time between two fetches caused by unknown kids.
    pub fn min_refresh_interval(&self) -> Duration {
        self.min_refresh_interval
    }

    /// The keys as of the last successful fetch (none before it).
    pub(crate) fn keys(&self) -> Arc<[VerificationKey]> {
        Arc::clone(&self.keys.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Whether the last fetch succeeded: the readiness probe `oidc_jwks`.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Fetches the keys now, replacing the cached ones on success; on failure they stay.
    #[tracing::instrument(skip_all, fields(url = %self.url))]
    pub async fn refresh(&self) -> Result<usize, JwksError> {
        let _one_at_a_time = self.fetching.lock().await;
        self.fetch_and_swap().await
    }

    /// For a token naming a `kid` that is not cached: fetches again unless a fetch started
    /// less than [`JwksCache::min_refresh_interval`] ago. Returns whether the keys may have
    /// changed (a fetch ran, here or concurrently, and succeeded).
    pub(crate) async fn refresh_for_unknown_kid(&self) -> bool {
        let _one_at_a_time = self.fetching.lock().await;
        let recent = self
            .last_fetch
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|at| at.elapsed() < self.min_refresh_interval);
        if recent {
            // A concurrent waiter's fetch may just have brought the key: the caller looks again.
            return self.is_healthy();
        }
        match self.fetch_and_swap().await {
            Ok(_) => true,
            Err(error) => {
                tracing::warn!(%error, url = %self.url, "could not refresh the JWKS for an unknown kid");
                false
            }
        }
    }

    async fn fetch_and_swap(&self) -> Result<usize, JwksError> {
        *self.last_fetch.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        let result = self.fetch().await;
        let outcome = if result.is_ok() { "ok" } else { "error" };
        metrics::counter!("cashflow_jwks_refresh_total", "result" => outcome).increment(1);
        self.healthy.store(result.is_ok(), Ordering::Relaxed);
        let keys = result?;
        let count = keys.len();
        *self.keys.write().unwrap_or_else(PoisonError::into_inner) = Arc::from(keys);
        Ok(count)
    }

    async fn fetch(&self) -> Result<Vec<VerificationKey>, JwksError> {
        let response = self.http.get(&self.url).send().await?;
        if !response.status().is_success() {
            return Err(JwksError::Status(response.status()));
        }
        if response.content_length().is_some_and(|len| len > MAX_JWKS_BYTES as u64) {
            return Err(JwksError::TooLarge);
        }
        let body = response.bytes().await?;
        if body.len() > MAX_JWKS_BYTES {
            return Err(JwksError::TooLarge);
        }
        let jwks: JwkSet = serde_json::from_slice(&body)?;
        let keys = usable_keys(&jwks, &self.algorithms);
        if keys.is_empty() {
            return Err(JwksError::NoUsableKey(self.algorithms.clone()));
        }
        Ok(keys)
    }

    /// Fetches every `ttl`, forever (sooner, every minimum refresh interval, while fetches
    /// fail); a failed fetch keeps the previous keys.
    pub async fn run(self: Arc<Self>, ttl: Duration) {
        loop {
            let wait = if self.is_healthy() { ttl } else { self.min_refresh_interval.max(Duration::from_secs(1)) };
            tokio::time::sleep(wait).await;
            if let Err(error) = self.refresh().await {
                tracing::warn!(%error, url = %self.url, "could not refresh the JWKS; keeping the cached keys");
            }
        }
    }
}

impl std::fmt::Debug for JwksCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksCache").field("url", &self.url).field("healthy", &self.is_healthy()).finish()
    }
}
