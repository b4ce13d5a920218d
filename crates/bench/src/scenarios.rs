//! The scenarios of issue 6 (`faults` is in [`crate::faults`]). Each starts its own system under test (fresh data directory, or
//! fresh database and queue), measures, checks that the books are exact, stops it, and then
//! measures the ceilings on the same machine while nothing else runs.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::hyper_floor::HyperFloor;
use crate::nginx::{Nginx, NginxBin};
use crate::oha::{self, Group, Load, Oha, Request, RunResult, Stop};
use crate::report::{Check, Outcome, Row};
use crate::storage::{self, Target};
use crate::sut::{Backend, BackendKind, FreshDatabase, Merchant, Role, Services, Sut};
use crate::tls::{cpu_seconds, BenchTls};

/// Ramp steps as fractions of the closed-loop maximum, when no `--rates` are given.
const RAMP_FRACTIONS: [f64; 7] = [0.25, 0.5, 0.7, 0.8, 0.9, 0.95, 1.0];
/// Runs of a ramp step before it counts as failed on latency alone: the machine is a shared
/// VM where one stall of a few tens of milliseconds now and then fails a 10 s step whose rate is
/// otherwise easily held. A step with failed requests is never retried.
const STEP_ATTEMPTS: usize = 2;
/// Bisections between the last rate held and the first missed, after the ramp stopped.
const REFINE_STEPS: usize = 2;
/// The gap (as a fraction of the missed rate) below which the ramp's answer is left as it is.
const REFINE_GAP: f64 = 0.1;
/// A step must deliver this fraction of its target rate to count as sustained.
const DELIVERED: f64 = 0.95;
/// The consumer's batch size (`ConsumerConfig::default()`), for the consolidation ceiling.
const CONSUMER_BATCH: usize = 500;

/// Everything a scenario needs to know.
pub struct Ctx {
    /// `--tls`: the certificate `read` and `write` are served with.
    pub tls: Option<Arc<BenchTls>>,
    pub root: PathBuf,
    pub bin: PathBuf,
    pub oha: Oha,
    pub nginx: NginxBin,
    pub backend: BackendKind,
    pub services: Services,
    pub smoke: bool,
    /// `--duration`, if given.
    pub duration: Option<u64>,
    pub connections: usize,
    pub merchants: usize,
    pub hot_share: f64,
    pub rates: Option<Vec<f64>>,
    /// The p99 objective of the scenario being run.
    pub p99_ms: f64,
    /// Connections and objectives per scenario, unless given on the command line.
    pub defaults: ScenarioDefaults,
    pub fresh_rate: f64,
    /// `faults`: the writes per second.
    pub faults_rate: f64,
    /// `faults`: the report reads per second.
    pub read_rate: f64,
    /// `soak`: its rates, length and sampling window.
    pub soak: SoakPlan,
    /// `--otel-sampling`: the sampling ratios of the traced runs (none: no traced runs).
    pub otel_sampling: Option<Vec<f64>>,
    pub backlog_entries: u64,
    pub seed_entries: u64,
    pub catch_up_timeout: Duration,
    /// The business date every entry falls on (yesterday in São Paulo: never in the future,
    /// never crossing midnight during a run).
    pub date: String,
    pub occurred_at: String,
}

/// How a soak runs (`crate::soak`).
#[derive(Debug, Clone, Serialize)]
pub struct SoakPlan {
    /// Writes per second.
    pub rate: f64,
    /// Report reads per second beside the writes (0: none).
    pub read_rate: f64,
    pub duration_s: u64,
    pub window_s: u64,
}

/// What differs between scenarios by default.
pub struct ScenarioDefaults {
    pub connections: usize,
    /// `write` and `fresh`: durable writes wait for an fsync, and need more connections in
    /// flight to offer a high rate (Little's law).
    pub write_connections: usize,
    pub p99_ms: f64,
    /// `read`: issue 6's read target is p99 ≤ 10 ms.
    pub read_p99_ms: f64,
}

impl Ctx {
    /// Takes on the connections and p99 objective of `scenario`.
    pub fn enter(&mut self, scenario: &str) {
        // `fresh` holds the rate `write` found sustainable, with the same connections.
        let writes = matches!(scenario, "write" | "fresh");
        self.connections = if writes { self.defaults.write_connections } else { self.defaults.connections };
        self.p99_ms = if scenario == "read" { self.defaults.read_p99_ms } else { self.defaults.p99_ms };
    }
}

/// The settings a scenario ran with, for the results file.
#[derive(Debug, Serialize)]
pub struct Settings<'a> {
    pub seconds_per_run: f64,
    pub connections: usize,
    pub merchants: usize,
    pub hot_share: f64,
    pub layout: Vec<(usize, f64)>,
    pub p99_objective_ms: f64,
    pub rates: &'a Option<Vec<f64>>,
    pub fresh_rate: f64,
    pub faults_rate: f64,
    pub read_rate: f64,
    pub backlog_entries: u64,
    pub business_date: &'a str,
    pub entry_body: String,
    /// `read` and `write` over HTTPS.
    pub tls: bool,
}

impl Ctx {
    /// Seconds of each measured run: `--duration`, else the scenario's default.
    pub fn run_for(&self, default_secs: u64) -> Duration {
        let secs = self.duration.unwrap_or(if self.smoke { 2 } else { default_secs });
        Duration::from_secs(secs.max(1))
    }

    pub fn layout(&self) -> Vec<(usize, f64)> {
        oha::layout(self.merchants, self.connections, self.hot_share)
    }

    pub fn groups(&self, merchants: &[Merchant]) -> Vec<Group> {
        self.layout()
            .into_iter()
            .zip(merchants)
            .enumerate()
            .map(|(merchant, ((connections, share), m))| Group { merchant, token: m.token.clone(), connections, share })
            .collect()
    }

    pub fn entry_body(&self) -> String {
        serde_json::json!({
            "type": "credit",
            "amount": "1.00",
            "description": "bench",
            "category": "bench",
            "occurred_at": self.occurred_at,
        })
        .to_string()
    }

    pub fn write_request(&self) -> Request {
        Request {
            method: "POST",
            path: "/v1/entries".into(),
            body: Some(self.entry_body()),
            expect: 201,
            new_connections: false,
        }
    }

    pub fn read_request(&self) -> Request {
        Request {
            method: "GET",
            path: format!("/v1/balances/daily/{}", self.date),
            body: None,
            expect: 200,
            new_connections: false,
        }
    }

    fn occurred_at_utc(&self) -> anyhow::Result<DateTime<Utc>> {
        Ok(DateTime::parse_from_rfc3339(&self.occurred_at).context("occurred_at")?.with_timezone(&Utc))
    }

    pub fn settings(&self, default_secs: u64) -> Settings<'_> {
        Settings {
            seconds_per_run: self.run_for(default_secs).as_secs_f64(),
            connections: self.connections,
            merchants: self.merchants,
            hot_share: self.hot_share,
            layout: self.layout(),
            p99_objective_ms: self.p99_ms,
            rates: &self.rates,
            fresh_rate: self.fresh_rate,
            faults_rate: self.faults_rate,
            read_rate: self.read_rate,
            backlog_entries: self.backlog_entries,
            business_date: &self.date,
            entry_body: self.entry_body(),
            tls: self.tls.is_some(),
        }
    }

    /// The ramp: `--rates`, or fractions of the closed-loop maximum.
    fn ramp_rates(&self, probe: Option<&RunResult>) -> Vec<f64> {
        match (&self.rates, probe) {
            (Some(rates), _) => rates.clone(),
            (None, Some(p)) => RAMP_FRACTIONS.iter().map(|f| (p.ok_per_sec * f).round().max(1.0)).collect(),
            (None, None) => Vec::new(),
        }
    }

    fn step_passes(&self, r: &RunResult) -> bool {
        r.failures() == 0
            && r.p99_ms.is_some_and(|p| p <= self.p99_ms)
            && r.target_rate.is_none_or(|t| r.ok_per_sec >= DELIVERED * t)
    }

    /// A fresh place for a storage ceiling: a temporary directory or a new database.
    async fn storage_target(&self, label: &str) -> anyhow::Result<(Target, StorageHold)> {
        match self.backend {
            BackendKind::Embedded => {
                let dir = tempfile::Builder::new().prefix("cashflow-bench-storage").tempdir().context("temp dir")?;
                Ok((Target::Sqlite(dir.path().to_path_buf()), StorageHold::Dir(dir)))
            }
            BackendKind::Production => {
                let db = FreshDatabase::create(&self.services.pg_admin_url, &crate::sut::run_name(label)).await?;
                Ok((Target::Postgres(db.url.clone()), StorageHold::Db(db)))
            }
        }
    }
}

/// Keeps a storage target alive; cleaned up by [`StorageHold::release`].
enum StorageHold {
    Dir(tempfile::TempDir),
    Db(FreshDatabase),
}

impl StorageHold {
    async fn release(self) {
        match self {
            StorageHold::Dir(dir) => drop(dir),
            StorageHold::Db(db) => db.drop_now().await,
        }
    }
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.2} ms"))
}

fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| a / b)
}

fn pct(r: Option<f64>) -> String {
    r.map_or_else(|| "-".into(), |r| format!("{:.1}%", r * 100.0))
}

/// The final exactness check: each merchant's daily balance holds exactly the entries that
/// got a 201 (each a credit of 1.00).
pub async fn check_exact(
    ctx: &Ctx,
    sut: &Sut,
    base: &str,
    merchants: &[Merchant],
    written: &[u64],
) -> anyhow::Result<Vec<Check>> {
    let mut checks = Vec::new();
    for (i, (m, n)) in merchants.iter().zip(written).enumerate() {
        let (status, body) = sut.balance(base, &m.token, &ctx.date).await?;
        let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let count = json.get("entry_count").and_then(|v| v.as_u64());
        let credits = json.get("total_credits").and_then(|v| v.as_str()).unwrap_or("");
        let debits = json.get("total_debits").and_then(|v| v.as_str()).unwrap_or("");
        let want_credits = format!("{n}.00");
        let passed = status == 200 && count == Some(*n) && credits == want_credits && debits == "0.00";
        checks.push(Check::new(
            format!("exact: merchant {i}"),
            passed,
            format!(
                "{n} entries got 201 (credits {want_credits}); the daily balance says HTTP {status}, entry_count {}, \
                 total_credits {credits}, total_debits {debits}",
                count.map_or("-".into(), |c| c.to_string())
            ),
        ));
    }
    Ok(checks)
}

/// Creates the merchants and waits for consolidation to have registered them.
pub async fn setup_merchants(ctx: &Ctx, sut: &Sut, issuer: &str, consolidation: &str) -> anyhow::Result<Vec<Merchant>> {
    let merchants = sut.merchants(ctx.merchants.max(1), issuer).await?;
    sut.wait_applied(consolidation, merchants.len() as u64, ctx.catch_up_timeout).await?;
    Ok(merchants)
}

/// Runs a scenario body against a fresh system under test, and always stops it.
pub async fn with_sut<T>(
    ctx: &Ctx,
    label: &str,
    body: impl AsyncFnOnce(&mut Sut) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    with_sut_of(ctx, &ctx.bin, label, body).await
}

/// [`with_sut`] with the `cashflow` binary `bin` (`compare` runs two builds).
pub async fn with_sut_of<T>(
    ctx: &Ctx,
    bin: &std::path::Path,
    label: &str,
    body: impl AsyncFnOnce(&mut Sut) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let backend = Backend::prepare(ctx.backend, &ctx.root, &ctx.services, label).await?;
    // `--tls` is for the HTTP figures of `read` and `write`.
    let tls = if matches!(label, "read" | "write") { ctx.tls.clone() } else { None };
    let mut sut = Sut::new(bin, backend, tls)?;
    let result = body(&mut sut).await;
    sut.shutdown().await;
    result
}

fn scheme(ctx: &Ctx) -> &'static str {
    crate::tls::scheme(ctx.tls.as_deref())
}

/// `cpu` seconds over `ok` successful requests, as a fact in µs per request.
fn cpu_fact(out: &mut Outcome, name: &str, cpu: Option<f64>, ok: u64) {
    if let Some(cpu) = cpu.filter(|_| ok > 0) {
        let per = cpu / ok as f64 * 1e6;
        out.fact(name, format!("{per:.1} µs ({ok} requests, {cpu:.2} s CPU)"), Some(per));
    }
}

/// The server's CPU per request over a closed-loop run of `request` (if any: writes are
/// measured over their ramp, where they are counted); and over runs of `GET /health/live` on
/// keep-alive connections and on a new connection (with its TLS handshake, under `--tls`) per
/// request: the difference is the cost of setting up a connection.
async fn server_cpu(
    ctx: &Ctx,
    out: &mut Outcome,
    sut: &Sut,
    base: &str,
    request: Option<&Request>,
    groups: &[Group],
    duration: Duration,
) -> anyhow::Result<()> {
    let pid = sut.pid(Role::Serve);
    let scheme = scheme(ctx);
    let closed = Load { rate: None, stop: Stop::After(duration) };
    if let Some(request) = request {
        let before = pid.and_then(cpu_seconds);
        let run = ctx.oha.run(base, request, closed, groups).await?;
        let cpu = before.zip(pid.and_then(cpu_seconds)).map(|(a, b)| b - a);
        cpu_fact(out, &format!("server CPU per request ({scheme}, closed loop)"), cpu, run.ok);
    }
    for new_connections in [false, true] {
        let live = Request { method: "GET", path: "/health/live".into(), body: None, expect: 200, new_connections };
        let before = pid.and_then(cpu_seconds);
        let run = ctx.oha.run(base, &live, closed, groups).await?;
        let cpu = before.zip(pid.and_then(cpu_seconds)).map(|(a, b)| b - a);
        let what = if new_connections { "a new connection each" } else { "keep-alive" };
        cpu_fact(out, &format!("server CPU per GET /health/live ({scheme}, {what})"), cpu, run.ok);
    }
    Ok(())
}

/// nginx with the same requests: closed loop, and at the service's sustainable rate.
async fn http_ceiling(
    ctx: &Ctx,
    out: &mut Outcome,
    request: &Request,
    groups: &[Group],
    body: &str,
    sustainable: Option<f64>,
    duration: Duration,
) -> anyhow::Result<RunResult> {
    let mut nginx = Nginx::start(&ctx.nginx, request.expect, body, ctx.tls.as_deref()).await?;
    let result = async {
        let cpu_before = nginx.pid().and_then(cpu_seconds);
        let max = ctx.oha.run(&nginx.base, request, Load { rate: None, stop: Stop::After(duration) }, groups).await?;
        let cpu = cpu_before.zip(nginx.pid().and_then(cpu_seconds)).map(|(a, b)| b - a);
        cpu_fact(out, &format!("nginx CPU per request ({}, closed loop)", scheme(ctx)), cpu, max.ok);
        out.rows.push(Row::run("nginx closed loop (HTTP ceiling)", &max, None));
        if let Some(rate) = sustainable {
            let at = ctx
                .oha
                .run(&nginx.base, request, Load { rate: Some(rate), stop: Stop::After(duration) }, groups)
                .await?;
            out.rows.push(Row::run("nginx at the sustainable rate", &at, None));
            out.detail("nginx_at_sustainable_rate", &at);
        }
        out.detail("nginx_closed_loop", &max);
        Ok::<_, anyhow::Error>(max)
    }
    .await;
    nginx.stop().await;
    let max = result?;
    out.checks.push(Check::new(
        "nginx ceiling answered",
        max.failures() == 0 && max.ok > 0,
        format!("{} ok, {} failed", max.ok, max.failures()),
    ));
    if ctx.tls.is_none() {
        http_floor(ctx, out, request, groups, body, duration).await?;
    }
    Ok(max)
}

/// The HTTP library's floor ([`crate::hyper_floor`]) with the same requests, closed loop: its
/// CPU per request beside nginx's and ours.
async fn http_floor(
    ctx: &Ctx,
    out: &mut Outcome,
    request: &Request,
    groups: &[Group],
    body: &str,
    duration: Duration,
) -> anyhow::Result<()> {
    let floor = HyperFloor::start(request.expect, body)?;
    let cpu_before = floor.cpu_seconds();
    let run = ctx.oha.run(&floor.base, request, Load { rate: None, stop: Stop::After(duration) }, groups).await?;
    let cpu = cpu_before.zip(floor.cpu_seconds()).map(|(a, b)| b - a);
    drop(floor);
    cpu_fact(out, "hyper alone: CPU per request (http, closed loop)", cpu, run.ok);
    // Ours against the library's, where the request is the same: the measure that carries
    // over between machines (BENCHMARKS.md, session 33).
    if let Some(floor_us) = cpu.filter(|_| run.ok > 0).map(|cpu| cpu / run.ok as f64 * 1e6) {
        let ours = [
            ("server CPU per request (http, closed loop)", "  the request's CPU over hyper alone's"),
            ("server CPU per GET /health/live (http, keep-alive)", "  the liveness probe's CPU over hyper alone's"),
        ];
        for (figure, name) in ours {
            if let Some(us) = out.figures.get(figure).copied() {
                let times = us / floor_us;
                out.fact(name, format!("{times:.2}× ({us:.1} µs / {floor_us:.1} µs)"), Some(times));
            }
        }
    }
    out.rows.push(Row::run("hyper alone closed loop (HTTP library floor)", &run, None));
    out.detail("hyper_floor_closed_loop", &run);
    out.checks.push(Check::new(
        "HTTP library floor answered",
        run.failures() == 0 && run.ok > 0,
        format!("{} ok, {} failed", run.ok, run.failures()),
    ));
    Ok(())
}

/// What the ramp found.
struct Ramp {
    probe: Option<RunResult>,
    steps: Vec<RunResult>,
    sustainable: Option<RunResult>,
}

/// The closed-loop probe (unless `--rates`) and the ramp, calling `settle` after every run (the
/// write scenario counts its 201s and waits for consolidation there). A step that misses the
/// objective on latency alone gets a second run ([`STEP_ATTEMPTS`]); the ramp stops at the first
/// step that fails, then bisects between the last rate held and that one ([`REFINE_STEPS`]).
async fn run_ramp(
    ctx: &Ctx,
    base: &str,
    request: &Request,
    groups: &[Group],
    duration: Duration,
    mut settle: impl AsyncFnMut(&RunResult) -> anyhow::Result<()>,
) -> anyhow::Result<Ramp> {
    let probe = if ctx.rates.is_none() {
        let p = ctx.oha.run(base, request, Load { rate: None, stop: Stop::After(duration) }, groups).await?;
        settle(&p).await?;
        Some(p)
    } else {
        None
    };
    let mut steps = Vec::new();
    let mut sustainable: Option<RunResult> = None;
    let mut failed_at = None;
    // Runs one step (with its retry); whether the rate was held.
    let mut step = async |rate: f64, steps: &mut Vec<RunResult>| -> anyhow::Result<Option<RunResult>> {
        for attempt in 1..=STEP_ATTEMPTS {
            let r = ctx.oha.run(base, request, Load { rate: Some(rate), stop: Stop::After(duration) }, groups).await?;
            settle(&r).await?;
            let passed = ctx.step_passes(&r);
            steps.push(r.clone());
            if passed {
                return Ok(Some(r));
            }
            if r.failures() > 0 || attempt == STEP_ATTEMPTS {
                break;
            }
        }
        Ok(None)
    };
    for rate in ctx.ramp_rates(probe.as_ref()) {
        match step(rate, &mut steps).await? {
            Some(r) => sustainable = Some(r),
            None => {
                failed_at = Some(rate);
                break;
            }
        }
    }
    // The ramp's steps are coarse at the bottom (a quarter, then half of the probe): narrow the
    // gap between the last rate held and the first one missed, halving it up to
    // `REFINE_STEPS` times while it is wider than `REFINE_GAP` of the missed rate.
    let mut held = sustainable.as_ref().and_then(|r| r.target_rate).unwrap_or(0.0);
    if let Some(mut missed) = failed_at.filter(|_| ctx.rates.is_none()) {
        for _ in 0..REFINE_STEPS {
            if missed - held <= missed * REFINE_GAP {
                break;
            }
            let rate = ((held + missed) / 2.0).round();
            match step(rate, &mut steps).await? {
                Some(r) => {
                    held = rate;
                    sustainable = Some(r);
                }
                None => missed = rate,
            }
        }
    }
    Ok(Ramp { probe, steps, sustainable })
}

/// `write`: POST /v1/entries at increasing rates until p99 exceeds the objective or requests
/// fail; then the HTTP and storage ceilings.
pub async fn write(ctx: &Ctx) -> anyhow::Result<Outcome> {
    let duration = ctx.run_for(10);
    let request = ctx.write_request();
    let mut out = Outcome::default();
    let (groups, sample, ramp) = with_sut(ctx, "write", async |sut: &mut Sut| {
        let base = sut.start(Role::Serve).await?;
        let merchants = setup_merchants(ctx, sut, &base, &base).await?;
        let groups = ctx.groups(&merchants);
        let mut written = vec![0u64; merchants.len()];
        let mut sample = String::new();
        for (i, m) in merchants.iter().enumerate() {
            let body = sut.post_entry(&base, &m.token, &ctx.entry_body()).await?;
            written[i] += 1;
            if i == 0 {
                sample = body;
            }
        }
        let applied_before = merchants.len() as u64;
        let expected = |written: &[u64]| applied_before + written.iter().sum::<u64>();
        sut.wait_applied(&base, expected(&written), ctx.catch_up_timeout).await?;

        let mut catch_up = Vec::new();
        let cpu_before = sut.pid(Role::Serve).and_then(cpu_seconds);
        let found = run_ramp(ctx, &base, &request, &groups, duration, async |r: &RunResult| {
            for g in &r.groups {
                written[g.merchant] += g.ok;
            }
            // Each step starts from a quiet system: consolidation has caught up.
            catch_up.push(sut.wait_applied(&base, expected(&written), ctx.catch_up_timeout).await?.as_secs_f64());
            Ok(())
        })
        .await?;
        // Every write of the ramp, with its relay and consolidation (`serve` runs them all).
        let cpu = cpu_before.zip(sut.pid(Role::Serve).and_then(cpu_seconds)).map(|(a, b)| b - a);
        let ramp_ok = found.probe.iter().chain(&found.steps).map(|r| r.ok).sum();
        cpu_fact(
            &mut out,
            &format!("server CPU per write ({}, over the ramp, consolidation included)", scheme(ctx)),
            cpu,
            ramp_ok,
        );
        server_cpu(ctx, &mut out, sut, &base, None, &groups, duration).await?;
        out.checks.extend(check_exact(ctx, sut, &base, &merchants, &written).await?);
        if let Some((rss, peak)) = sut.rss(Role::Serve) {
            out.fact("server RSS (now / peak)", format!("{rss:.0} MiB / {peak:.0} MiB"), Some(peak));
        }
        out.fact("entries written (all got 201)", written.iter().sum::<u64>().to_string(), None);
        out.detail("consolidation_catch_up_seconds_after_each_run", &catch_up);
        Ok((groups, sample, found))
    })
    .await?;

    ramp_rows(ctx, &mut out, &ramp);
    let sustainable_rate = ramp.sustainable.as_ref().and_then(|r| r.target_rate);
    let nginx = http_ceiling(ctx, &mut out, &request, &groups, &sample, sustainable_rate, duration).await?;

    let (target, hold) = ctx.storage_target("storage").await?;
    let storage =
        storage::ledger_ceiling(&target, &ctx.layout(), duration, storage::bench_entry(ctx.occurred_at_utc()?)?).await;
    hold.release().await;
    let storage = storage?;
    out.rows.push(Row::storage("storage: Ledger::record (storage ceiling)", &storage));
    out.checks.push(Check::new(
        "storage ceiling recorded",
        storage.failures == 0 && storage.ok > 0,
        format!("{} ok, {} failed", storage.ok, storage.failures),
    ));

    summarize_ramp(ctx, &mut out, &ramp, &nginx, Some(storage.ok_per_sec));
    tracing_cost(ctx, &mut out, "write", &request, duration).await?;
    out.detail("probe", &ramp.probe);
    out.detail("steps", &ramp.steps);
    out.detail("storage_ceiling", &storage);
    Ok(out)
}

/// The table rows of a ramp: the probe, then every step run with its verdict.
fn ramp_rows(ctx: &Ctx, out: &mut Outcome, ramp: &Ramp) {
    if let Some(p) = &ramp.probe {
        out.rows.push(Row::run("cashflow closed loop (probe)", p, None));
    }
    for r in &ramp.steps {
        out.rows.push(Row::run("cashflow at rate", r, Some(ctx.step_passes(r))));
    }
}

fn summarize_ramp(ctx: &Ctx, out: &mut Outcome, ramp: &Ramp, nginx: &RunResult, storage: Option<f64>) {
    match &ramp.sustainable {
        Some(s) => {
            let rate = s.target_rate.unwrap_or(s.ok_per_sec);
            out.fact(
                "sustainable rate",
                format!("{rate:.0}/s (p99 ≤ {} ms, no errors, ≥ {:.0}% delivered)", ctx.p99_ms, DELIVERED * 100.0),
                Some(rate),
            );
            out.fact(
                "  latency at that rate",
                format!("p50 {} · p95 {} · p99 {} · max {}", ms(s.p50_ms), ms(s.p95_ms), ms(s.p99_ms), ms(s.max_ms)),
                s.p99_ms,
            );
            let r = ratio(s.ok_per_sec, nginx.ok_per_sec);
            out.fact("  vs HTTP ceiling (nginx)", format!("{} of {:.0}/s", pct(r), nginx.ok_per_sec), r);
            if let Some(st) = storage {
                let r = ratio(s.ok_per_sec, st);
                out.fact("  vs storage ceiling", format!("{} of {st:.0}/s", pct(r)), r);
            }
            if ramp.steps.last().is_some_and(|l| ctx.step_passes(l)) {
                out.fact("  note", "every step passed: the sustainable rate may be higher", None);
            }
        }
        None => out.fact("sustainable rate", "none: the first step already missed the objective", Some(0.0)),
    }
    if let Some(p) = &ramp.probe {
        let r = ratio(p.ok_per_sec, nginx.ok_per_sec);
        out.fact(
            "closed-loop maximum",
            format!("{:.0}/s, p99 {} ({} of nginx's {:.0}/s)", p.ok_per_sec, ms(p.p99_ms), pct(r), nginx.ok_per_sec),
            Some(p.ok_per_sec),
        );
    }
}

/// `read`: GET /v1/balances/daily/{date} with a warm cache, at increasing rates; then the
/// HTTP ceiling.
pub async fn read(ctx: &Ctx) -> anyhow::Result<Outcome> {
    let duration = ctx.run_for(10);
    let request = ctx.read_request();
    let mut out = Outcome::default();
    let (groups, sample, ramp) = with_sut(ctx, "read", async |sut: &mut Sut| {
        let base = sut.start(Role::Serve).await?;
        let merchants = setup_merchants(ctx, sut, &base, &base).await?;
        let groups = ctx.groups(&merchants);
        let per_merchant = ctx.seed_entries.max(1);
        for m in &merchants {
            for _ in 0..per_merchant {
                sut.post_entry(&base, &m.token, &ctx.entry_body()).await?;
            }
        }
        let written = vec![per_merchant; merchants.len()];
        sut.wait_applied(&base, merchants.len() as u64 + written.iter().sum::<u64>(), ctx.catch_up_timeout).await?;
        // Warm the cache: the first read of each merchant's day misses and stores it.
        let mut sample = String::new();
        for (i, m) in merchants.iter().enumerate() {
            for _ in 0..2 {
                let (status, body) = sut.balance(&base, &m.token, &ctx.date).await?;
                if status != 200 {
                    anyhow::bail!("warming the cache: HTTP {status} {body}");
                }
                if i == 0 {
                    sample = body;
                }
            }
        }
        let before = sut.scrape(&base).await?;
        let found = run_ramp(ctx, &base, &request, &groups, duration, async |_: &RunResult| Ok(())).await?;
        server_cpu(ctx, &mut out, sut, &base, Some(&request), &groups, duration).await?;
        let after = sut.scrape(&base).await?;
        let hits = after.total("cashflow_report_cache_hits_total") - before.total("cashflow_report_cache_hits_total");
        let misses =
            after.total("cashflow_report_cache_misses_total") - before.total("cashflow_report_cache_misses_total");
        let hit_ratio = ratio(hits, hits + misses);
        out.fact(
            "cache hits during the runs",
            format!("{} ({hits:.0} hits, {misses:.0} misses)", pct(hit_ratio)),
            hit_ratio,
        );
        out.checks.extend(check_exact(ctx, sut, &base, &merchants, &written).await?);
        if let Some((rss, peak)) = sut.rss(Role::Serve) {
            out.fact("server RSS (now / peak)", format!("{rss:.0} MiB / {peak:.0} MiB"), Some(peak));
        }
        Ok((groups, sample, found))
    })
    .await?;

    ramp_rows(ctx, &mut out, &ramp);
    let sustainable_rate = ramp.sustainable.as_ref().and_then(|r| r.target_rate);
    let nginx = http_ceiling(ctx, &mut out, &request, &groups, &sample, sustainable_rate, duration).await?;
    summarize_ramp(ctx, &mut out, &ramp, &nginx, None);
    tracing_cost(ctx, &mut out, "read", &request, duration).await?;
    out.detail("probe", &ramp.probe);
    out.detail("steps", &ramp.steps);
    Ok(out)
}

/// `--otel-sampling`: the closed-loop rate of `label`'s request untraced and then with traces
/// exported at each sampling ratio, each on a fresh `serve` set up the same way (for `read`,
/// entries recorded and the cache warmed first), so the ratios compare like with like; with
/// the server's CPU per request, which a busy machine disturbs less than the rate.
async fn tracing_cost(
    ctx: &Ctx,
    out: &mut Outcome,
    label: &str,
    request: &Request,
    duration: Duration,
) -> anyhow::Result<()> {
    let Some(ratios) = &ctx.otel_sampling else { return Ok(()) };
    let sink = crate::otlp_sink::Sink::start().await?;
    let mut untraced = None;
    for sampling in std::iter::once(None).chain(ratios.iter().copied().map(Some)) {
        let run = traced_run(ctx, label, request, ctx.connections, sampling, &sink.endpoint, duration).await?;
        if run.failed > 0 {
            out.checks.push(Check::new(
                "traced runs without errors",
                false,
                format!("{} failed at sampling {sampling:?}", run.failed),
            ));
        }
        let cpu = run.cpu_us.map_or_else(|| "-".into(), |us| format!("{us:.1} µs"));
        match sampling {
            None => {
                out.fact(
                    "untraced closed loop (beside the traced runs)",
                    format!("{:.0}/s, server CPU {cpu} per request", run.ok_per_sec),
                    None,
                );
                untraced = Some(run.ok_per_sec);
            }
            Some(arg) => {
                let r = untraced.and_then(|u| ratio(run.ok_per_sec, u));
                let target = if arg >= 1.0 { "85%" } else { "97%" };
                out.fact(
                    &format!("traced, sampling {arg}"),
                    format!(
                        "{:.0}/s, {} of untraced (target >= {target}), server CPU {cpu} per request",
                        run.ok_per_sec,
                        pct(r)
                    ),
                    r,
                );
            }
        }
    }
    let (requests, bytes) = sink.received();
    out.fact("spans exported to the sink", format!("{requests} OTLP requests, {} KiB", bytes / 1024), None);
    Ok(())
}

/// One closed-loop run of the tracing cost (and of `compare`).
#[derive(Debug, Clone, Serialize)]
pub struct TracedRun {
    pub label: String,
    /// `None`: untraced (no exporter).
    pub sampling: Option<f64>,
    pub ok_per_sec: f64,
    pub failed: u64,
    /// The server's CPU (user + system) per successful request, from `/proc`.
    pub cpu_us: Option<f64>,
}

/// A closed loop of `label`'s `request` for `duration` on a fresh `serve` (for `read`, entries
/// recorded and the cache warmed first), exporting to `endpoint` at `sampling` unless `None`.
async fn traced_run(
    ctx: &Ctx,
    label: &str,
    request: &Request,
    connections: usize,
    sampling: Option<f64>,
    endpoint: &str,
    duration: Duration,
) -> anyhow::Result<TracedRun> {
    closed_loop(ctx, &ctx.bin, label, request, connections, sampling.map(|s| (s, endpoint)), duration).await
}

/// [`traced_run`] on the `cashflow` binary `bin`, untraced unless `traced` names a sampling
/// ratio and an OTLP endpoint.
pub async fn closed_loop(
    ctx: &Ctx,
    bin: &std::path::Path,
    label: &str,
    request: &Request,
    connections: usize,
    traced: Option<(f64, &str)>,
    duration: Duration,
) -> anyhow::Result<TracedRun> {
    let (sampling, endpoint) = (traced.map(|(s, _)| s), traced.map_or("", |(_, e)| e));
    with_sut_of(ctx, bin, label, async |sut: &mut Sut| {
        if let Some(arg) = sampling {
            sut.set_env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint);
            sut.set_env("OTEL_TRACES_SAMPLER", "parentbased_traceidratio");
            sut.set_env("OTEL_TRACES_SAMPLER_ARG", &arg.to_string());
        }
        let base = sut.start(Role::Serve).await?;
        let merchants = setup_merchants(ctx, sut, &base, &base).await?;
        if label == "read" {
            for m in &merchants {
                sut.post_entry(&base, &m.token, &ctx.entry_body()).await?;
            }
            sut.wait_applied(&base, 2 * merchants.len() as u64, ctx.catch_up_timeout).await?;
            for m in &merchants {
                sut.balance(&base, &m.token, &ctx.date).await?;
            }
        }
        let groups: Vec<Group> = oha::layout(ctx.merchants, connections, ctx.hot_share)
            .into_iter()
            .zip(&merchants)
            .enumerate()
            .map(|(merchant, ((connections, share), m))| Group { merchant, token: m.token.clone(), connections, share })
            .collect();
        let pid = sut.pid(Role::Serve);
        let before = pid.and_then(cpu_seconds);
        let run = ctx.oha.run(&base, request, Load { rate: None, stop: Stop::After(duration) }, &groups).await?;
        let cpu = before.zip(pid.and_then(cpu_seconds)).map(|(a, b)| b - a);
        Ok(TracedRun {
            label: label.to_owned(),
            sampling,
            ok_per_sec: run.ok_per_sec,
            failed: run.failures(),
            cpu_us: cpu.filter(|_| run.ok > 0).map(|c| c / run.ok as f64 * 1e6),
        })
    })
    .await
}

/// The closed loops that `tracing` and `compare` alternate: `write` and `read`, each at its
/// scenario's connections.
pub fn alternated_requests(ctx: &Ctx) -> [(&'static str, Request, usize); 2] {
    [
        ("write", ctx.write_request(), ctx.defaults.write_connections),
        ("read", ctx.read_request(), ctx.defaults.connections),
    ]
}

/// `items` in the order of round `round`: each round starts one item later than the last, so
/// that over the rounds every item runs first, in the middle and last alike (an item always
/// run at the same place in the sequence, after the 100 % run say, carried that place's bias).
pub fn in_turn<T>(items: &[T], round: usize) -> impl Iterator<Item = &T> {
    items.iter().cycle().skip(round % items.len().max(1)).take(items.len())
}

/// Prints one closed loop of round `round` (`what`: what ran) and, if any of its requests
/// failed, records the failed `check` with `failure`'s message.
pub fn report_round(
    out: &mut Outcome,
    round: usize,
    what: &str,
    run: &TracedRun,
    check: &'static str,
    failure: impl FnOnce() -> String,
) {
    println!(
        "round {} {what}: {:.0}/s, {} µs CPU per request",
        round + 1,
        run.ok_per_sec,
        run.cpu_us.map_or_else(|| "-".into(), |us| format!("{us:.1}"))
    );
    if run.failed > 0 {
        out.checks.push(Check::new(check, false, failure()));
    }
}

/// `tracing`: the cost of exporting traces alone, without the ramps of `write` and `read`:
/// closed loops of each, untraced and at each `--otel-sampling` ratio (default 1 and 0.01),
/// each on a fresh `serve`, in rounds (`--otel-rounds`) that alternate the modes so a machine
/// growing busier weighs on all of them alike. Reports each mode's median rate, its share of
/// the untraced median, and its median server CPU per request.
pub async fn tracing(ctx: &Ctx, rounds: usize) -> anyhow::Result<Outcome> {
    let duration = ctx.run_for(10);
    let ratios = ctx.otel_sampling.clone().unwrap_or_else(|| vec![1.0, 0.01]);
    let modes: Vec<Option<f64>> = std::iter::once(None).chain(ratios.iter().copied().map(Some)).collect();
    let sink = crate::otlp_sink::Sink::start().await?;
    let requests = alternated_requests(ctx);
    let mut out = Outcome::default();
    let mut runs = Vec::new();
    for round in 0..rounds.max(1) {
        for (label, request, connections) in &requests {
            for sampling in in_turn(&modes, round) {
                let run = traced_run(ctx, label, request, *connections, *sampling, &sink.endpoint, duration).await?;
                let mode = sampling.map_or_else(|| "off".into(), |s| s.to_string());
                report_round(
                    &mut out,
                    round,
                    &format!("{label} sampling {mode}"),
                    &run,
                    "traced runs without errors",
                    || format!("{label}: {} failed at sampling {sampling:?}", run.failed),
                );
                runs.push(run);
            }
        }
    }
    let median = |mut xs: Vec<f64>| {
        xs.sort_by(f64::total_cmp);
        (!xs.is_empty()).then(|| xs[xs.len() / 2])
    };
    for (label, _, _) in &requests {
        let of = |sampling: Option<f64>| runs.iter().filter(move |r| r.label == *label && r.sampling == sampling);
        let untraced = median(of(None).map(|r| r.ok_per_sec).collect());
        for sampling in &modes {
            let rate = median(of(*sampling).map(|r| r.ok_per_sec).collect());
            let cpu = median(of(*sampling).filter_map(|r| r.cpu_us).collect());
            let share = rate.zip(untraced).and_then(|(r, u)| ratio(r, u));
            let (name, target) = match sampling {
                None => (format!("{label} untraced"), String::new()),
                Some(s) => {
                    (format!("{label} sampling {s}"), format!(" (target >= {})", if *s >= 1.0 { "85%" } else { "97%" }))
                }
            };
            out.fact(
                &name,
                format!(
                    "{:.0}/s median, {} of untraced{target}; server CPU {} per request",
                    rate.unwrap_or_default(),
                    pct(share),
                    cpu.map_or_else(|| "-".into(), |us| format!("{us:.1} µs"))
                ),
                share,
            );
            if let Some(cpu) = cpu {
                out.figures.insert(format!("{name} cpu_us"), cpu);
            }
        }
    }
    // The floor under the 100 % target, in the same run (see `span_floor`): what the crates
    // that export spans charge for three of them, against what a traced read may add.
    let floor = crate::span_floor::measure(&sink.endpoint, if ctx.smoke { 20_000 } else { 200_000 }).await?;
    let read_untraced =
        median(runs.iter().filter(|r| r.label == "read" && r.sampling.is_none()).map(|r| r.ok_per_sec).collect());
    // A closed loop bound by the machine's CPU (both cores busy here) keeps 85 % of its rate if
    // a read adds at most (1/0.85 - 1) of the CPU an untraced read takes the machine.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let budget = read_untraced.map(|rate| (1.0 / 0.85 - 1.0) * cpus as f64 / rate * 1e6);
    out.fact(
        "span floor: three bare spans exported",
        format!("{:.2} µs of CPU per request ({} requests, no HTTP, no handler)", floor.bare_us, floor.requests),
        Some(floor.bare_us),
    );
    out.fact(
        "span floor: a cached read's three spans, as served",
        format!("{:.2} µs of CPU per request (its fields, with the logs beside the exporter)", floor.served_us),
        Some(floor.served_us),
    );
    if let Some(budget) = budget {
        out.fact(
            "what a traced read may add for 85 % of the untraced rate",
            format!("{budget:.2} µs of CPU (CPU-bound closed loop, {cpus} cores)"),
            Some(budget),
        );
    }
    let (exports, bytes) = sink.received();
    out.fact("spans exported to the sink", format!("{exports} OTLP requests, {} KiB", bytes / 1024), None);
    out.detail("runs", &runs);
    out.detail("span_floor", floor);
    Ok(out)
}

/// One sample of the time series `fresh` records.
#[derive(Debug, Clone, Serialize)]
struct Sample {
    t_s: f64,
    applied: f64,
    outbox_backlog: Option<f64>,
    queue_depth: Option<f64>,
    rss_mib: Option<f64>,
}

/// `fresh`: writes at a fixed rate; how fast consolidation applies them, and how stale the
/// reports get (the lag histogram), then the exactness check.
pub async fn fresh(ctx: &Ctx) -> anyhow::Result<Outcome> {
    let duration = ctx.run_for(60);
    let rate = ctx.fresh_rate;
    let request = ctx.write_request();
    let mut out = Outcome::default();
    let load = with_sut(ctx, "fresh", async |sut: &mut Sut| {
        let base = sut.start(Role::Serve).await?;
        let merchants = setup_merchants(ctx, sut, &base, &base).await?;
        let groups = ctx.groups(&merchants);
        let before = sut.scrape(&base).await?;
        let applied0 = before.total("cashflow_events_applied_total");
        let cpu_before = sut.pid(Role::Serve).and_then(cpu_seconds);
        let start = Instant::now();
        let task = {
            let (oha, base, request, groups) = (ctx.oha.clone(), base.clone(), request.clone(), groups.clone());
            tokio::spawn(async move {
                oha.run(&base, &request, Load { rate: Some(rate), stop: Stop::After(duration) }, &groups).await
            })
        };
        let mut series = Vec::new();
        let sample = |scrape: &crate::prom::Scrape, t: f64| Sample {
            t_s: t,
            applied: scrape.total("cashflow_events_applied_total") - applied0,
            outbox_backlog: scrape.get("cashflow_outbox_backlog_events"),
            queue_depth: scrape.get("cashflow_queue_messages"),
            rss_mib: sut.rss(Role::Serve).map(|(now, _)| now),
        };
        while !task.is_finished() {
            tokio::time::sleep(Duration::from_millis(500)).await;
            series.push(sample(&sut.scrape(&base).await?, start.elapsed().as_secs_f64()));
        }
        let load = task.await.context("the oha task")??;
        let load_secs = start.elapsed().as_secs_f64();
        let at_end = sample(&sut.scrape(&base).await?, load_secs);
        let written: Vec<u64> = (0..merchants.len()).map(|i| load.ok_of(i)).collect();
        let total: u64 = written.iter().sum();
        let catch_up = sut.wait_applied(&base, merchants.len() as u64 + total, ctx.catch_up_timeout).await?;
        // Every write with its relay and consolidation, to the last one applied: what the lag
        // bought or cost in CPU at this rate (the lingers trade one for the other).
        let cpu = cpu_before.zip(sut.pid(Role::Serve).and_then(cpu_seconds)).map(|(a, b)| b - a);
        let after = sut.scrape(&base).await?;
        series.push(at_end.clone());

        let lag = after
            .buckets("cashflow_consolidation_lag_seconds")
            .since(&before.buckets("cashflow_consolidation_lag_seconds"));
        let q = |x: f64| lag.quantile(x).map_or_else(|| "-".into(), |q| q.ms());
        out.fact("offered rate", format!("{rate:.0}/s for {:.0} s", duration.as_secs_f64()), Some(rate));
        out.fact(
            "written (201)",
            format!("{total} ({:.0}/s), p99 {}, {} failed", load.ok_per_sec, ms(load.p99_ms), load.failures()),
            Some(load.ok_per_sec),
        );
        let applied_rate = at_end.applied / load_secs;
        let r = ratio(at_end.applied, total as f64);
        out.fact(
            "applied while writing",
            format!("{:.0}/s ({} of the writes applied by the end of the load)", applied_rate, pct(r)),
            Some(applied_rate),
        );
        out.fact(
            "consolidation lag (recorded → applied)",
            format!(
                "p50 {} · p99 {} · max ≤ {} ({:.0} events)",
                q(0.5),
                q(0.99),
                lag.max_bound().map_or("-".into(), |q| q.ms()),
                lag.count()
            ),
            lag.quantile(0.99).map(|q| q.seconds() * 1000.0),
        );
        if let Some(p50) = lag.quantile(0.5) {
            out.figures.insert("lag_p50_ms".into(), p50.seconds() * 1000.0);
        }
        cpu_fact(&mut out, "server CPU per write (consolidation included)", cpu, total);
        out.fact(
            "caught up after the load ended",
            format!("{:.2} s", catch_up.as_secs_f64()),
            Some(catch_up.as_secs_f64()),
        );
        let peak = |f: fn(&Sample) -> Option<f64>| {
            series.iter().filter_map(f).fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))))
        };
        out.fact(
            "peak outbox backlog / queue depth",
            format!(
                "{} / {}",
                peak(|s| s.outbox_backlog).map_or("-".into(), |v| format!("{v:.0}")),
                peak(|s| s.queue_depth).map_or("-".into(), |v| format!("{v:.0}"))
            ),
            None,
        );
        if let Some((rss, peak)) = sut.rss(Role::Serve) {
            out.fact("server RSS (now / peak)", format!("{rss:.0} MiB / {peak:.0} MiB"), Some(peak));
        }
        out.checks.extend(check_exact(ctx, sut, &base, &merchants, &written).await?);
        out.checks.push(Check::new(
            "writes succeeded",
            load.failures() == 0,
            format!("{} failed of {}", load.failures(), load.ok + load.failures()),
        ));
        out.detail("series", &series);
        out.detail("lag_histogram", &lag);
        Ok(load)
    })
    .await?;
    out.rows.push(Row::run("cashflow writes at a fixed rate", &load, None));
    out.detail("load", &load);
    Ok(out)
}

/// `backlog`: the ledger runs alone (`cashflow ledger`, consolidation not running) and takes
/// N entries as fast as it can; once the relay has queued them all, `cashflow consolidator`
/// starts on the same backend and the harness times it to apply the whole backlog.
pub async fn backlog(ctx: &Ctx) -> anyhow::Result<Outcome> {
    let request = ctx.write_request();
    let mut out = Outcome::default();
    let written = with_sut(ctx, "backlog", async |sut: &mut Sut| {
        let ledger = sut.start(Role::Ledger).await?;
        let merchants = sut.merchants(ctx.merchants.max(1), &ledger).await?;
        let groups = ctx.groups(&merchants);
        let n = ctx.backlog_entries;
        let burst = ctx.oha.run(&ledger, &request, Load { rate: None, stop: Stop::Requests(n) }, &groups).await?;
        out.rows.push(Row::run(format!("cashflow ledger: {n} entries, closed loop"), &burst, None));
        let written: Vec<u64> = (0..merchants.len()).map(|i| burst.ok_of(i)).collect();
        let expected = merchants.len() as u64 + written.iter().sum::<u64>();

        // The relay queues every event (merchants too) before consolidation starts.
        let start = Instant::now();
        loop {
            let published = sut.scrape(&ledger).await?.total("cashflow_events_published_total");
            if published >= expected as f64 {
                break;
            }
            if start.elapsed() > ctx.catch_up_timeout {
                anyhow::bail!("the relay published {published} of {expected} events");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let queued_after = start.elapsed();

        let started = Instant::now();
        let consolidator = sut.start(Role::Consolidator).await?;
        let ready = started.elapsed();
        sut.wait_applied(&consolidator, expected, ctx.catch_up_timeout).await?;
        let drained = started.elapsed();
        let rate = expected as f64 / drained.as_secs_f64();
        out.fact(
            "backlog",
            format!(
                "{expected} events ({} entries + {} merchants)",
                expected - merchants.len() as u64,
                merchants.len()
            ),
            Some(expected as f64),
        );
        out.fact(
            "write burst",
            format!(
                "{:.0}/s, p99 {}, {} failed; all queued {:.2} s after the burst",
                burst.ok_per_sec,
                ms(burst.p99_ms),
                burst.failures(),
                queued_after.as_secs_f64()
            ),
            Some(burst.ok_per_sec),
        );
        out.fact(
            "drained by the consolidator",
            format!(
                "{:.2} s from its start ({:.2} s to ready) → {rate:.0} events/s",
                drained.as_secs_f64(),
                ready.as_secs_f64()
            ),
            Some(rate),
        );
        out.figures.insert("drain_seconds".into(), drained.as_secs_f64());
        out.checks.extend(check_exact(ctx, sut, &consolidator, &merchants, &written).await?);
        out.checks.push(Check::new(
            "writes succeeded",
            burst.failures() == 0,
            format!("{} failed of {}", burst.failures(), burst.ok + burst.failures()),
        ));
        if let Some((_, peak)) = sut.rss(Role::Consolidator) {
            out.fact("consolidator peak RSS", format!("{peak:.0} MiB"), Some(peak));
        }
        out.detail("burst", &burst);
        Ok(written)
    })
    .await?;

    let (target, hold) = ctx.storage_target("cstorage").await?;
    let ceiling = storage::consolidation_ceiling(&target, &written, &ctx.date, CONSUMER_BATCH).await;
    hold.release().await;
    let ceiling = ceiling?;
    let drain_rate = out.figures.get("drained by the consolidator").copied().unwrap_or(0.0);
    let r = ratio(drain_rate, ceiling.events_per_sec);
    out.fact(
        "storage ceiling (ConsolidationStore::apply)",
        format!(
            "{:.0} events/s in batches of {}; the drain ran at {} of it",
            ceiling.events_per_sec,
            ceiling.batch,
            pct(r)
        ),
        Some(ceiling.events_per_sec),
    );
    out.detail("consolidation_storage_ceiling", &ceiling);
    Ok(out)
}

/// Checks that the scenario helpers see what they need, before anything starts.
pub fn validate(ctx: &Ctx) -> anyhow::Result<()> {
    if !ctx.bin.is_file() {
        return Err(anyhow!(
            "{} not found: build it with `cargo build --release -p cashflow` (or pass --cashflow-bin)",
            ctx.bin.display()
        ));
    }
    if ctx.connections < ctx.merchants.max(1) {
        return Err(anyhow!("--connections must be at least --merchants (one connection per merchant group)"));
    }
    Ok(())
}
