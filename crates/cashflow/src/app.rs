//! The composition root: the one place that turns configuration into the parts of a process
//! (ledger API, reports API, token issuer, relay, consumer) over shared backends, and then
//! runs them. `serve` assembles every part; `ledger`, `relay` and `consolidator` some of them
//! ([`crate::processes`]).
//!
//! Building and running are separate steps. [`Parts`] opens a backend the first time a part
//! needs it and builds routers and workers without spawning anything; [`Process::run`] is the
//! only place that starts the workers and the HTTP server. So a caller that wants a router or
//! a worker alone (the integration tests, a handler) takes it without starting a server.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::{watch, OnceCell};

use cashflow_auth::issuer::{Issuer, IssuerConfig};
use cashflow_auth::jwks::{DEFAULT_JWKS_TTL, DEFAULT_MIN_REFRESH_INTERVAL};
use cashflow_auth::oidc::OidcConfig;
use cashflow_auth::{
    Identities, JwksCache, JwtVerifier, Links, OidcVerifier, Refresher, RevocationCheck, TokenVerifier, TrustedIssuers,
    REFRESH_INTERVAL,
};
use cashflow_consolidation::dedup::{DedupWindow, Pruner};
use cashflow_consolidation::{ConsolidationState, ConsolidationStore, Consumer, ConsumerConfig, NoCache, ReportCache};
use cashflow_events::EventSource;
use cashflow_ledger::{Ledger, LedgerState, LedgerStore, OutboxSource, Relay, RelayConfig};
use cashflow_web::session::MIN_SECRET_LEN;
use secrecy::{ExposeSecret, SecretString};

use crate::backends::{BackendArgs, Queue};
use crate::cli::AuthArgs;
use crate::ops::{self, Readiness};
use crate::server::ServerConfig;
use crate::tls::ServerTls;

/// Settings of the application.
#[derive(Debug, Clone)]
pub struct AppConfig {
    pub backends: BackendArgs,
    /// The tokens' `iss`, and the base of the URLs in the OpenID configuration.
    pub public_url: String,
    pub audience: String,
    pub token_ttl: Duration,
    /// Take the client address from the last `X-Forwarded-For` entry (behind a trusted proxy)
    /// for the token endpoint's throttle.
    pub trust_forwarded_for: bool,
    /// The external issuers trusted besides (or instead of) the built-in one.
    pub oidc: OidcConfig,
    /// The web app's shared key material (`--web-secret`); `None`: keys of this process.
    pub web_secret: Option<SecretString>,
}

impl AppConfig {
    /// The embedded backends under `data_dir`, the built-in issuer at `public_url` minting
    /// tokens for the `cashflow` audience that live `token_ttl`, no external issuer: the
    /// settings of a program that builds its own application (tests, tools).
    pub fn embedded(data_dir: impl AsRef<std::path::Path>, public_url: impl Into<String>, token_ttl: Duration) -> Self {
        Self {
            backends: BackendArgs::embedded(data_dir.as_ref().to_path_buf()),
            public_url: public_url.into(),
            audience: "cashflow".to_owned(),
            token_ttl,
            trust_forwarded_for: false,
            oidc: OidcConfig::default(),
            web_secret: None,
        }
    }

    /// The settings given on the command line; `default_public_url` when none is given.
    pub fn from_args(auth: &AuthArgs, backends: &BackendArgs, default_public_url: String) -> anyhow::Result<Self> {
        Ok(Self {
            backends: backends.clone(),
            public_url: auth.public_url.clone().unwrap_or(default_public_url),
            audience: auth.audience.clone(),
            token_ttl: Duration::from_secs(auth.token_ttl_secs),
            trust_forwarded_for: auth.trust_forwarded_for,
            oidc: auth.oidc.config()?,
            web_secret: match &auth.web_secret {
                Some(secret) if secret.expose_secret().len() < MIN_SECRET_LEN => {
                    anyhow::bail!(
                        "--web-secret must be at least {MIN_SECRET_LEN} bytes (e.g. `openssl rand -base64 48`)"
                    )
                }
                other => other.clone(),
            },
        })
    }
}

/// What a process can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// `/v1/entries`.
    LedgerApi,
    /// `/v1/balances/daily`.
    ReportsApi,
    /// `/oauth2/token` and the JWKS.
    TokenIssuer,
    /// The worker that moves the ledger's outbox to the queue.
    Relay,
    /// The worker that applies the queue's events to the consolidation.
    Consumer,
    /// The merchant's web app at `/`: a client of the other parts' API, in process, with its
    /// live balance fed by this process's consumer.
    Web,
}

impl Part {
    /// Everything: `serve`.
    pub const ALL: [Part; 6] =
        [Part::LedgerApi, Part::ReportsApi, Part::TokenIssuer, Part::Relay, Part::Consumer, Part::Web];
}

/// The backends of one process, each opened the first time a part needs it and shared by
/// every part built afterwards, and the parts built over them. Nothing here spawns a task.
pub struct Parts {
    config: AppConfig,
    /// A process that serves reports but does not consume: no consumer would invalidate an
    /// in-process cache, so it gets none (a shared cache such as Redis is still used).
    reports_only: bool,
    /// A process that relays and consumes over the embedded queue: its consumer reads the
    /// ledger's outbox directly ([`OutboxSource`]) and it runs no relay.
    direct: bool,
    ledger_store: OnceCell<Arc<dyn LedgerStore>>,
    consolidation_store: OnceCell<Arc<dyn ConsolidationStore>>,
    identity: OnceCell<Arc<Identities>>,
    queue: OnceCell<Queue>,
    /// What the consumer receives from: the queue's source, or the [`OutboxSource`].
    source: OnceCell<Arc<dyn EventSource>>,
    cache: OnceCell<Arc<dyn ReportCache>>,
    auth: OnceCell<(Arc<Issuer>, Arc<dyn TokenVerifier>)>,
    /// Reloads revocations and signing keys into `auth`'s issuer and verifier: a worker of the
    /// process that runs them.
    refresher: OnceCell<Refresher>,
    /// The keys of the external issuers `auth` trusts: refreshed by a worker, probed.
    jwks: OnceCell<Vec<Arc<JwksCache>>>,
    /// The verifiers of the external issuers `auth` trusts: the web app's OpenID sign-in
    /// verifies its ID tokens with its issuer's.
    external: OnceCell<Vec<Arc<OidcVerifier>>>,
    /// Also what wakes the relay: a commit through this ledger signals its outbox.
    ledger: OnceCell<Arc<Ledger>>,
    /// The consumer's invalidations, broadcast to the web app's live pages (nobody listens in a
    /// process without the web part; a broadcast without receivers costs nothing).
    live: cashflow_web::Live,
}

impl Parts {
    /// Nothing is opened yet.
    pub fn new(config: AppConfig) -> Self {
        Self {
            config,
            reports_only: false,
            direct: false,
            source: OnceCell::new(),
            ledger_store: OnceCell::new(),
            consolidation_store: OnceCell::new(),
            identity: OnceCell::new(),
            queue: OnceCell::new(),
            cache: OnceCell::new(),
            auth: OnceCell::new(),
            refresher: OnceCell::new(),
            jwks: OnceCell::new(),
            external: OnceCell::new(),
            ledger: OnceCell::new(),
            live: cashflow_web::Live::default(),
        }
    }

    pub async fn ledger_store(&self) -> anyhow::Result<Arc<dyn LedgerStore>> {
        self.ledger_store.get_or_try_init(|| self.config.backends.ledger()).await.cloned()
    }

    pub async fn consolidation_store(&self) -> anyhow::Result<Arc<dyn ConsolidationStore>> {
        self.consolidation_store.get_or_try_init(|| self.config.backends.consolidation()).await.cloned()
    }

    pub async fn identity(&self) -> anyhow::Result<Arc<Identities>> {
        self.identity.get_or_try_init(|| self.config.backends.identity()).await.cloned()
    }

    pub async fn queue(&self) -> anyhow::Result<Queue> {
        self.queue.get_or_try_init(|| self.config.backends.queue()).await.cloned()
    }

    /// The report cache ([`NoCache`] in a reports-only process with the in-process cache).
    pub async fn cache(&self) -> anyhow::Result<Arc<dyn ReportCache>> {
        self.cache
            .get_or_try_init(|| async {
                if self.reports_only && self.config.backends.cache_url == crate::backends::MEMORY_CACHE {
                    return Ok(Arc::new(NoCache) as Arc<dyn ReportCache>);
                }
                self.config.backends.cache().await
            })
            .await
            .cloned()
    }

    /// The built-in issuer and the verifier that trusts it, refusing revoked credentials (as of
    /// the last reload: the process's [`Refresher`] worker reloads every [`REFRESH_INTERVAL`]).
    pub async fn auth(&self) -> anyhow::Result<(Arc<Issuer>, Arc<dyn TokenVerifier>)> {
        self.auth
            .get_or_try_init(|| async {
                let identity = self.identity().await?;
                let key = identity.signing_key().await.context("loading the token signing key")?;
                let issuer = Arc::new(Issuer::new(
                    IssuerConfig {
                        issuer: self.config.public_url.trim_end_matches('/').to_owned(),
                        audience: self.config.audience.clone(),
                        token_ttl: self.config.token_ttl,
                        trust_forwarded_for: self.config.trust_forwarded_for,
                        ..IssuerConfig::default()
                    },
                    key,
                    identity.clone(),
                ));
                let jwt = Arc::new(
                    JwtVerifier::new(issuer.verifier_config(), issuer.jwks()).context("building the token verifier")?,
                );
                let check = Arc::new(RevocationCheck::new(jwt.clone()));
                let links = Arc::new(Links::default());
                let refresher = Refresher {
                    identities: identity,
                    issuer: issuer.clone(),
                    verifier: jwt,
                    check: check.clone(),
                    links: links.clone(),
                };
                refresher.refresh().await.context("loading revocations and signing keys")?;
                let _ = self.refresher.set(refresher);
                let builtin: Arc<dyn TokenVerifier> = check;
                let oidc = &self.config.oidc;
                if oidc.issuers.is_empty() {
                    return Ok((issuer, builtin));
                }
                let policy = Arc::new(oidc.policy.clone());
                let mut external = Vec::new();
                for (iss, jwks_url) in &oidc.issuers {
                    let verifier = OidcVerifier::new(iss, jwks_url, policy.clone(), DEFAULT_MIN_REFRESH_INTERVAL)
                        .with_context(|| format!("trusting the OIDC issuer {iss}"))?
                        .with_links(links.clone());
                    // A process starts while an issuer's JWKS is down: it is degraded, not dead.
                    if let Err(error) = verifier.jwks().refresh().await {
                        tracing::warn!(%error, issuer = %iss, "could not fetch the JWKS; starting without its keys");
                    }
                    external.push(Arc::new(verifier));
                }
                let _ = self.jwks.set(external.iter().map(|v| v.jwks().clone()).collect());
                let _ = self.external.set(external.clone());
                let builtin = oidc.trust_builtin.then(|| (issuer.verifier_config().issuer, builtin));
                let verifier: Arc<dyn TokenVerifier> = Arc::new(TrustedIssuers::new(builtin, external));
                Ok((issuer, verifier))
            })
            .await
            .cloned()
    }

    /// What reloads revocations, signing keys and identity links, once [`Parts::auth`] has
    /// built it: a process without background workers (a Lambda function) calls it itself.
    pub fn refresher(&self) -> Option<&Refresher> {
        self.refresher.get()
    }

    pub async fn ledger(&self) -> anyhow::Result<Arc<Ledger>> {
        self.ledger.get_or_try_init(|| async { Ok(Arc::new(Ledger::new(self.ledger_store().await?))) }).await.cloned()
    }

    /// The ledger API (`/v1/entries`).
    pub async fn ledger_api(&self) -> anyhow::Result<Router> {
        let (ledger, (_, verifier)) = (self.ledger().await?, self.auth().await?);
        Ok(cashflow_ledger::router(LedgerState { ledger, verifier }))
    }

    /// The reports API (`/v1/balances/daily`).
    pub async fn reports_api(&self) -> anyhow::Result<Router> {
        let (store, cache, (_, verifier)) =
            (self.consolidation_store().await?, self.cache().await?, self.auth().await?);
        Ok(cashflow_consolidation::router(ConsolidationState { store, cache, verifier }))
    }

    /// The token issuer's routes (`/oauth2/token`, JWKS, discovery).
    pub async fn token_issuer(&self) -> anyhow::Result<Router> {
        Ok(cashflow_auth::issuer::router(self.auth().await?.0))
    }

    /// The web app over `api` (the API routers of this process, called in process): pages show
    /// what the API's verifier grants; sign-in by password when the built-in issuer is trusted,
    /// and through the OpenID Provider's hosted UI when its web app client is configured; its
    /// live panel hears this process's consumer's commits, or with `poll` is polled at that
    /// interval (a front that cannot stream events: Lambda).
    pub async fn web(&self, api: Router, poll: Option<Duration>) -> anyhow::Result<Router> {
        let (_, verifier) = self.auth().await?;
        let public_url = &self.config.public_url;
        let oidc = match &self.config.oidc.web {
            None => None,
            Some(client) => {
                let id_tokens = self
                    .external
                    .get()
                    .and_then(|external| external.iter().find(|v| v.issuer() == client.issuer))
                    .cloned()
                    .with_context(|| format!("the web app's issuer {} is not trusted", client.issuer))?;
                let sign_in = cashflow_web::OidcSignIn::new(client.clone(), public_url, id_tokens, verifier.clone())
                    .map_err(|e| anyhow::anyhow!("the web app's OpenID sign-in: {e}"))?;
                tracing::info!(issuer = %client.issuer, callback = %sign_in.redirect_uri(), "web: sign-in through the OpenID Provider");
                Some(sign_in)
            }
        };
        let web = cashflow_web::WebState::in_process(api, self.live.clone(), public_url).with_sign_in(
            verifier,
            self.config.oidc.trust_builtin,
            oidc,
        );
        let web = match &self.config.web_secret {
            Some(secret) => web.with_secret(secret.expose_secret().as_bytes()),
            None => web,
        };
        Ok(cashflow_web::router(match poll {
            Some(every) => web.polling(every),
            None => web,
        }))
    }

    /// A relay from the ledger's outbox to the queue. It is woken by the commits of this
    /// process's ledger; in a process whose ledger takes no entries it polls.
    pub async fn relay(&self) -> anyhow::Result<Relay> {
        Ok(relay(self.ledger_store().await?, &self.queue().await?, &*self.ledger().await?))
    }

    /// Where the consumer receives: the queue, or in a process that also relays over the
    /// embedded queue, the ledger's outbox with the queue behind it ([`OutboxSource`]).
    pub async fn source(&self) -> anyhow::Result<Arc<dyn EventSource>> {
        self.source
            .get_or_try_init(|| async {
                let queue = self.queue().await?;
                let Some(config) = queue.outbox.clone().filter(|_| self.direct) else {
                    return Ok(queue.source);
                };
                let wake = self.ledger().await?.outbox_signal();
                let outbox = OutboxSource::new(self.ledger_store().await?, queue.source, queue.publisher, wake, config);
                anyhow::Ok(Arc::new(outbox) as Arc<dyn EventSource>)
            })
            .await
            .cloned()
    }

    /// A consumer from the queue (or the outbox, see [`Self::source`]) into the consolidation
    /// store.
    pub async fn consumer(&self) -> anyhow::Result<Consumer> {
        Ok(consumer(self.consolidation_store().await?, self.source().await?, self.live.wrap(self.cache().await?)))
    }

    /// How long consolidation keeps deduplication markers.
    pub fn dedup_window(&self) -> anyhow::Result<DedupWindow> {
        self.config.backends.dedup_window()
    }

    /// The pruner of consolidation's deduplication markers, run beside the consumer.
    pub async fn pruner(&self) -> anyhow::Result<Pruner> {
        let window = self.config.backends.dedup_window()?;
        Ok(Pruner::new(self.consolidation_store().await?, window, PRUNE_EVERY))
    }

    /// Probes of every backend opened so far: a process is ready when what it uses is.
    pub fn readiness(&self) -> Readiness {
        let mut readiness = Readiness::default();
        if let Some(store) = self.ledger_store.get() {
            readiness = readiness.ledger(store.clone());
        }
        if let Some(store) = self.consolidation_store.get() {
            readiness = readiness.consolidation(store.clone());
        }
        if let Some(queue) = self.queue.get() {
            readiness = readiness.queue(queue.source.clone());
        }
        if let Some(identity) = self.identity.get() {
            readiness = readiness.identity(identity.clone());
        }
        if let Some(cache) = self.cache.get() {
            readiness = readiness.cache(cache.clone());
        }
        if let Some(jwks) = self.jwks.get() {
            readiness = readiness.oidc_jwks(jwks.clone());
        }
        readiness
    }
}

fn relay(store: Arc<dyn LedgerStore>, queue: &Queue, ledger: &Ledger) -> Relay {
    Relay::new(store, queue.publisher.clone(), ledger.outbox_signal(), RelayConfig::default())
}

fn consumer(store: Arc<dyn ConsolidationStore>, source: Arc<dyn EventSource>, cache: Arc<dyn ReportCache>) -> Consumer {
    Consumer::new(store, source, cache, ConsumerConfig::default())
}

/// How often the consumer's process prunes deduplication markers past the window (and how long
/// after it starts it first does: see `cashflow_consolidation::dedup`).
const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(600);

/// A background worker of a process.
enum Worker {
    Relay(Relay),
    Consumer(Consumer),
    /// Forgets deduplication markers past the window.
    Pruner(Pruner),
    Gauges(Gauges),
    Refresher(Refresher),
    /// Refetches an external issuer's keys every TTL.
    Jwks(Arc<JwksCache>),
}

/// A process assembled from parts, not running: its HTTP API and its background workers.
pub struct Process {
    router: Router,
    workers: Vec<Worker>,
    /// The web app's live streams, ended at shutdown so that in-flight connections drain.
    live: Option<cashflow_web::Live>,
}

impl Process {
    /// Builds `run` over `parts`, with the system routes (health, metrics, OpenAPI) and the
    /// gauges every process has.
    pub async fn assemble(mut parts: Parts, run: &[Part]) -> anyhow::Result<(Self, Parts)> {
        crate::telemetry::metrics();
        let has = |part| run.contains(&part);
        parts.reports_only = has(Part::ReportsApi) && !has(Part::Consumer);
        parts.direct = has(Part::Relay) && has(Part::Consumer) && parts.queue().await?.outbox.is_some();
        let mut api = Router::new();
        let mut workers = Vec::new();
        if has(Part::LedgerApi) {
            api = api.merge(parts.ledger_api().await?);
        }
        if has(Part::ReportsApi) {
            api = api.merge(parts.reports_api().await?);
        }
        if has(Part::TokenIssuer) {
            api = api.merge(parts.token_issuer().await?);
        }
        let mut live = None;
        if has(Part::Web) {
            let web = parts.web(api.clone(), None).await?;
            api = api.merge(web);
            live = Some(parts.live.clone());
        }
        if has(Part::Relay) && !parts.direct {
            workers.push(Worker::Relay(parts.relay().await?));
        }
        if has(Part::Consumer) {
            workers.push(Worker::Consumer(parts.consumer().await?));
            workers.push(Worker::Pruner(parts.pruner().await?));
        }
        // The queue's depth is sampled where it is consumed, and by a relay running alone
        // (which has nothing else to show); a ledger only publishes.
        let samples_queue = has(Part::Consumer) || (has(Part::Relay) && !has(Part::LedgerApi));
        workers.push(Worker::Gauges(Gauges {
            ledger: parts.ledger_store.get().cloned(),
            consolidation: parts.consolidation_store.get().cloned(),
            queue: parts.queue.get().filter(|_| samples_queue).map(|q| q.source.clone()),
            outbox_queued: parts.direct,
        }));
        if let Some(refresher) = parts.refresher.get() {
            workers.push(Worker::Refresher(refresher.clone()));
        }
        for jwks in parts.jwks.get().into_iter().flatten() {
            workers.push(Worker::Jwks(jwks.clone()));
        }
        let router = cashflow_http::layers::common(api.merge(ops::router(parts.readiness())));
        Ok((Self { router, workers, live }, parts))
    }

    /// The HTTP API, every part's routes behind the common layers.
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// Serves HTTP (HTTPS with `tls`) on `listener` and runs the workers until `shutdown`
    /// turns true; in-flight requests finish, then the workers stop.
    pub async fn run(
        self,
        listener: TcpListener,
        server: ServerConfig,
        tls: Option<Arc<ServerTls>>,
        shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let workers: Vec<_> = self
            .workers
            .into_iter()
            .map(|worker| match worker {
                Worker::Relay(relay) => tokio::spawn(relay.run(shutdown.clone())),
                Worker::Consumer(consumer) => tokio::spawn(consumer.run(shutdown.clone())),
                Worker::Pruner(pruner) => tokio::spawn(pruner.run(shutdown.clone())),
                Worker::Gauges(gauges) => tokio::spawn(gauges.run(shutdown.clone())),
                Worker::Refresher(refresher) => until_shutdown(refresher.run(REFRESH_INTERVAL), shutdown.clone()),
                Worker::Jwks(jwks) => until_shutdown(jwks.run(DEFAULT_JWKS_TTL), shutdown.clone()),
            })
            .collect();
        if let Some(live) = self.live {
            let mut closing = shutdown.clone();
            tokio::spawn(async move {
                let _ = closing.wait_for(|stop| *stop).await;
                live.close();
            });
        }
        crate::server::serve(listener, self.router, server, tls, shutdown).await?;
        for worker in workers {
            let _ = worker.await;
        }
        Ok(())
    }
}

/// Runs `work` (a loop that never ends) until `shutdown` turns true.
fn until_shutdown(
    work: impl std::future::Future<Output = ()> + Send + 'static,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        tokio::select! {
            () = work => {}
            _ = shutdown.wait_for(|stop| *stop) => {}
        }
    })
}

/// The all-in-one application (`serve`): every part, and the backends under them for the
/// demo and the tests.
pub struct Application {
    pub ledger_store: Arc<dyn LedgerStore>,
    pub consolidation_store: Arc<dyn ConsolidationStore>,
    pub identity: Arc<Identities>,
    pub queue: Queue,
    pub cache: Arc<dyn ReportCache>,
    pub ledger: Arc<Ledger>,
    pub issuer: Arc<Issuer>,
    pub verifier: Arc<dyn TokenVerifier>,
    /// Consolidation commits, pushed to the web app's pages.
    pub live: cashflow_web::Live,
    process: Process,
}

impl Application {
    /// Opens the backends and wires every part; starts nothing.
    pub async fn build(config: &AppConfig) -> anyhow::Result<Self> {
        let (process, parts) = Process::assemble(Parts::new(config.clone()), &Part::ALL).await?;
        let (issuer, verifier) = parts.auth().await?;
        Ok(Self {
            ledger_store: parts.ledger_store().await?,
            consolidation_store: parts.consolidation_store().await?,
            identity: parts.identity().await?,
            queue: parts.queue().await?,
            cache: parts.cache().await?,
            ledger: parts.ledger().await?,
            issuer,
            verifier,
            live: parts.live.clone(),
            process,
        })
    }

    /// The HTTP API.
    pub fn router(&self) -> Router {
        self.process.router()
    }

    /// A relay from the ledger's outbox to the queue.
    pub fn relay(&self) -> Relay {
        relay(self.ledger_store.clone(), &self.queue, &self.ledger)
    }

    /// A consumer from the queue into the consolidation store.
    pub fn consumer(&self) -> Consumer {
        consumer(self.consolidation_store.clone(), self.queue.source.clone(), self.live.wrap(self.cache.clone()))
    }

    /// The process to run: every part ([`Process::run`]).
    pub fn into_process(self) -> Process {
        self.process
    }
}

/// Samples the gauges that no request updates: outbox backlog and age, queue depth, pool usage.
pub struct Gauges {
    pub ledger: Option<Arc<dyn LedgerStore>>,
    pub consolidation: Option<Arc<dyn ConsolidationStore>>,
    /// The queue's own source (not the [`OutboxSource`] in front of it).
    pub queue: Option<Arc<dyn EventSource>>,
    /// Whether the ledger's outbox is part of the queue's messages: where the consumer reads
    /// the outbox ([`Parts::source`]), the backlog sampled for the outbox gauges is added to
    /// the queue's depth, as [`OutboxSource`]'s own depth does, rather than read again.
    pub outbox_queued: bool,
}

impl Gauges {
    /// Every second until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            self.sample().await;
            tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    async fn sample(&self) {
        let mut pools = Vec::new();
        let mut outbox = None;
        if let Some(ledger) = &self.ledger {
            if let Ok(backlog) = ledger.outbox_backlog().await {
                outbox = Some(backlog.count);
                metrics::gauge!("cashflow_outbox_backlog_events").set(backlog.count as f64);
                let age =
                    backlog.oldest.map_or(0.0, |t| (chrono::Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0);
                metrics::gauge!("cashflow_outbox_oldest_age_seconds").set(age);
            }
            pools.extend(ledger.pool_usage());
        }
        if let Some(consolidation) = &self.consolidation {
            pools.extend(consolidation.pool_usage());
        }
        for (pool, open, idle) in pools {
            metrics::gauge!("cashflow_db_pool_connections", "pool" => pool, "state" => "idle").set(f64::from(idle));
            metrics::gauge!("cashflow_db_pool_connections", "pool" => pool, "state" => "in_use")
                .set(f64::from(open.saturating_sub(idle)));
        }
        if let Some(queue) = &self.queue {
            let queued = if self.outbox_queued { outbox } else { Some(0) };
            if let (Ok(Some(depth)), Some(queued)) = (queue.depth().await, queued) {
                metrics::gauge!("cashflow_queue_messages").set((depth + queued) as f64);
            }
            if let Ok(Some(dead)) = queue.dead_letter_depth().await {
                metrics::gauge!("cashflow_queue_dead_letter_messages").set(dead as f64);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn config_of(args: &[&str]) -> anyhow::Result<AppConfig> {
        let cli = Cli::try_parse_from([&["cashflow", "serve"], args].concat())?;
        let Command::Serve(serve) = cli.command else { anyhow::bail!("not serve") };
        AppConfig::from_args(&serve.auth, &BackendArgs::embedded("data"), "http://127.0.0.1:8080".into())
    }

    #[test]
    fn a_web_secret_shorter_than_32_bytes_is_refused_and_a_long_one_is_kept() {
        let refused = config_of(&["--web-secret", "too-short"]).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(refused.contains("--web-secret must be at least 32 bytes"), "{refused}");
        let secret = "k".repeat(48);
        let config = config_of(&["--web-secret", &secret]).expect("a 48-byte secret");
        assert_eq!(config.web_secret.as_ref().map(|s| s.expose_secret().len()), Some(48));
        assert!(config_of(&[]).expect("no secret").web_secret.is_none(), "keys of the process by default");
    }

    #[test]
    fn a_secret_that_begins_with_a_dash_is_a_value_not_an_option() {
        // Client secrets are base64url: one in 64 begins with `-` (a CI run met "-0…")
        let cli = Cli::try_parse_from([
            "cashflow",
            "reconcile",
            "--client-id",
            "cf_abc",
            "--client-secret",
            "-0Jx8kq_secret",
            "--json",
        ])
        .expect("parsed");
        let Command::Reconcile(reconcile) = cli.command else { panic!("not reconcile") };
        let secret = reconcile.ledger.client_secret.as_ref().map(|s| s.expose_secret().to_owned());
        assert_eq!(secret.as_deref(), Some("-0Jx8kq_secret"));
        assert!(reconcile.json, "the options after it are still read");
        let secret = "-".repeat(40);
        let config = config_of(&["--web-secret", &secret]).expect("a secret of dashes");
        assert_eq!(config.web_secret.as_ref().map(|s| s.expose_secret().len()), Some(40));
    }
}
