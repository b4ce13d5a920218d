//! `faults`: writes and report reads keep flowing while, in turn, the consolidator is
//! SIGKILLed, the queue is down and the cache is down; every failed request is counted, the
//! backlog each fault leaves is measured with the rate it is caught up at, and at the end every
//! merchant's report must hold exactly the entries that got a 201: nothing lost, nothing
//! counted twice.
//!
//! The deployment is the split one, so that a fault hits one part only:
//! - `cashflow ledger` takes the writes (and issues the tokens);
//! - `cashflow consolidator` consumes the queue: the process that is SIGKILLed;
//! - `cashflow consolidator --no-consumer` serves the reports the load reads, so reads have
//!   somewhere to go while the consumer is dead (what a second instance behind the API front
//!   does in production);
//! - the queue: on Postgres + SQS it is the run's own moto, frozen with SIGSTOP (requests hang,
//!   nothing is lost: what an SQS outage looks like from the client). The embedded queue is a
//!   table in the ledger's database and cannot fail on its own, so there the relay (`ledger
//!   --no-relay` + `cashflow relay`, the only writer into the queue) is SIGKILLed instead;
//! - the cache: on production the run's own Redis is SIGKILLed and restarted empty. The
//!   embedded cache lives inside the process: it has no failure of its own, and that phase
//!   runs without a fault;
//! - the database: on production the run's own Postgres database refuses connections and every
//!   session on it is terminated (a crash-restart as its clients see it), so the ledger answers
//!   503 and the consumer's apply fails mid-batch; the consumer must hand its batch back at once
//!   and converge right after the database returns, not a visibility timeout later. Embedded,
//!   the consolidation store is locked for writing by another connection for the phase, so
//!   every apply fails on it while the ledger and the reports carry on. 503 is the one failure
//!   this phase allows (a database is down); anything else, or a lost entry, fails the run.
//!
//! Eight phases of equal length (15 s by default: 120 s in all): steady, consolidator down,
//! recovery, queue down, recovery, cache down, recovery, database down. Each phase is its own pair of oha runs (writes
//! and reads at fixed rates, latency-corrected), so each fault gets its own error counts and
//! latencies; between phases the fault is injected or repaired. A sampler reads, every 0.5 s,
//! the ledger's count of 201s (`/metrics`) and what the reports show (the sum of the
//! merchants' `entry_count`): their difference is the backlog, acknowledged but not yet
//! visible, whatever part of the pipeline it waits in.

use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use tokio::sync::watch;

use crate::oha::{Group, Load, Request, RunResult, Stop};
use crate::prom::Scrape;
use crate::report::{Check, Outcome, Row};
use crate::scenarios::{check_exact, with_sut, Ctx};
use crate::sut::{Role, Sut};

/// The visibility timeout the faults run with on the embedded queue: a message a killed
/// consumer had received comes back after this long (the default is 30 s, as SQS's; seconds suit
/// a consumer whose batches take milliseconds). On SQS (moto) the default stays.
const VISIBILITY_TIMEOUT_SECS: &str = "5";

/// What is broken during a phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Fault {
    None,
    Consolidator,
    Queue,
    Cache,
    Database,
}

const PHASES: [(&str, Fault); 8] = [
    ("steady", Fault::None),
    ("consolidator killed", Fault::Consolidator),
    ("recovery", Fault::None),
    ("queue down", Fault::Queue),
    ("recovery", Fault::None),
    ("cache down", Fault::Cache),
    ("recovery", Fault::None),
    ("database down", Fault::Database),
];

/// What a phase holds while its fault lasts: the embedded database outage is a write lock,
/// which lives as long as the connection that took it.
#[derive(Default)]
struct Held {
    sqlite_lock: Option<sqlx::SqliteConnection>,
}

/// One sample of the pipeline.
#[derive(Debug, Clone, Serialize)]
struct Sample {
    t_s: f64,
    /// Entries the ledger acknowledged (201) so far.
    written: f64,
    /// Entries the reports show.
    visible: f64,
    /// `cashflow_outbox_backlog_events` on the ledger.
    outbox: Option<f64>,
    ledger_rss_mib: Option<f64>,
}

impl Sample {
    fn backlog(&self) -> f64 {
        (self.written - self.visible).max(0.0)
    }
}

/// One phase's loads.
#[derive(Debug, Clone, Serialize)]
struct Phase {
    name: &'static str,
    fault: Fault,
    /// What the fault was, concretely, on this backend.
    what: String,
    start_s: f64,
    end_s: f64,
    writes: RunResult,
    reads: RunResult,
}

/// The sampler: a task of its own (the scenario needs `&mut Sut` to kill and restart), with
/// its own client, reading the ledger's `/metrics` and the replica's reports.
#[derive(Clone)]
struct Sampler {
    ledger: String,
    reports: String,
    tokens: Vec<String>,
    date: String,
    ledger_pid: Option<u32>,
    http: reqwest::Client,
}

impl Sampler {
    async fn sample(&self, t_s: f64) -> Option<Sample> {
        let text = self.http.get(format!("{}/metrics", self.ledger)).send().await.ok()?.text().await.ok()?;
        let scrape = Scrape::parse(&text);
        let written =
            scrape.total_where("cashflow_http_requests_total", &[("route", "/v1/entries"), ("status", "201")]);
        Some(Sample {
            t_s,
            written,
            visible: self.visible().await?,
            outbox: scrape.get("cashflow_outbox_backlog_events"),
            ledger_rss_mib: self.ledger_pid.and_then(crate::procs::rss_mib).map(|(now, _)| now),
        })
    }

    /// The entries the reports show: the sum of the merchants' `entry_count`.
    async fn visible(&self) -> Option<f64> {
        let mut visible = 0.0;
        for token in &self.tokens {
            let r = self
                .http
                .get(format!("{}/v1/balances/daily/{}", self.reports, self.date))
                .bearer_auth(token)
                .send()
                .await
                .ok()?;
            let day: serde_json::Value = r.json().await.ok()?;
            visible += day.get("entry_count").and_then(serde_json::Value::as_f64)?;
        }
        Some(visible)
    }

    /// Samples every 0.5 s until `stop` turns true.
    async fn run(self, started: Instant, mut stop: watch::Receiver<bool>) -> Vec<Sample> {
        let mut series = Vec::new();
        loop {
            if let Some(s) = self.sample(started.elapsed().as_secs_f64()).await {
                series.push(s);
            }
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return series,
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }
}

/// Breaks or repairs one part. Returns what the fault is on this backend.
async fn set_fault(
    sut: &mut Sut,
    fault: Fault,
    broken: bool,
    relay_process: bool,
    held: &mut Held,
) -> anyhow::Result<String> {
    match fault {
        Fault::None => Ok("-".into()),
        Fault::Consolidator => {
            if broken {
                sut.kill(Role::Consolidator).await;
            } else {
                sut.start(Role::Consolidator).await?;
            }
            Ok("the consuming consolidator SIGKILLed, restarted at the end of the phase".into())
        }
        Fault::Queue if relay_process => {
            if broken {
                sut.kill(Role::Relay).await;
            } else {
                sut.start(Role::Relay).await?;
            }
            Ok("embedded queue: the relay (the only writer into the queue) SIGKILLed, restarted after".into())
        }
        Fault::Queue => {
            let moto = sut.backend.moto.as_ref().context("no SQS emulator to stop")?;
            moto.signal(if broken { "STOP" } else { "CONT" }).await?;
            Ok("the SQS emulator (moto) frozen with SIGSTOP, resumed with SIGCONT".into())
        }
        Fault::Cache => match sut.backend.redis.as_mut() {
            Some(redis) => {
                if broken {
                    redis.kill().await;
                } else {
                    redis.restart().await?;
                }
                Ok("Redis SIGKILLed, restarted empty at the end of the phase".into())
            }
            None => Ok("none: the embedded cache is inside the process and cannot fail on its own".into()),
        },
        Fault::Database => match sut.backend.database() {
            Some(database) => {
                database.refuse_connections(broken).await?;
                Ok("the run's Postgres database refused connections, every session on it terminated".into())
            }
            None => {
                use sqlx::{ConnectOptions, Connection};
                if broken {
                    let path = sut.data_path().join("consolidation.db");
                    let mut lock = sqlx::sqlite::SqliteConnectOptions::new()
                        .filename(&path)
                        .busy_timeout(Duration::from_secs(30))
                        .connect()
                        .await
                        .with_context(|| format!("opening {}", path.display()))?;
                    sqlx::query("BEGIN IMMEDIATE")
                        .execute(&mut lock)
                        .await
                        .context("locking the consolidation store")?;
                    held.sqlite_lock = Some(lock);
                } else if let Some(mut lock) = held.sqlite_lock.take() {
                    sqlx::query("ROLLBACK").execute(&mut lock).await.context("unlocking the consolidation store")?;
                    let _ = lock.close().await;
                }
                Ok("the consolidation store (consolidation.db) locked for writing by another connection".into())
            }
        },
    }
}

/// Requests that failed, less the 503s of a phase whose database was down (the one answer an
/// outage of the database is allowed).
fn failures_beyond_the_fault(fault: Fault, r: &RunResult) -> u64 {
    let allowed = if fault == Fault::Database { r.other_statuses.get("503").copied().unwrap_or(0) } else { 0 };
    r.failures().saturating_sub(allowed)
}

/// When the backlog a fault left is gone: the first sample after `from_s` at or under
/// `threshold`, with the peak backlog before it.
fn catch_up(series: &[Sample], start_s: f64, from_s: f64, threshold: f64) -> (f64, Option<&Sample>) {
    let peak = series.iter().filter(|s| s.t_s >= start_s).take_while(|s| s.t_s <= from_s || s.backlog() > threshold);
    let peak = peak.map(Sample::backlog).fold(0.0, f64::max);
    let done = series.iter().find(|s| s.t_s >= from_s && s.backlog() <= threshold);
    (peak, done)
}

fn latency(r: &RunResult) -> String {
    let ms = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{v:.1}"));
    format!("p50 {} · p99 {} · max {} ms", ms(r.p50_ms), ms(r.p99_ms), ms(r.max_ms))
}

fn error_pct(r: &RunResult) -> f64 {
    let total = r.ok + r.failures();
    if total == 0 {
        0.0
    } else {
        100.0 * r.failures() as f64 / total as f64
    }
}

/// `faults`: see the module documentation.
pub async fn faults(ctx: &Ctx) -> anyhow::Result<Outcome> {
    let phase_len = ctx.run_for(15);
    let (write_rate, read_rate) = (ctx.faults_rate, ctx.read_rate);
    let write = Request {
        method: "POST",
        path: "/v1/entries".into(),
        body: Some(ctx.entry_body()),
        expect: 201,
        new_connections: false,
    };
    let read = Request {
        method: "GET",
        path: format!("/v1/balances/daily/{}", ctx.date),
        body: None,
        expect: 200,
        new_connections: false,
    };
    let mut out = Outcome::default();
    with_sut(ctx, "faults", async |sut: &mut Sut| {
        // A separate relay process only where the queue cannot be stopped by itself.
        let relay_process = sut.backend.moto.is_none();
        if relay_process {
            // Not on moto: one receive round there can take longer than a few seconds with a
            // backlog, and its first messages would come back before the round ended.
            sut.set_env("CASHFLOW_QUEUE_VISIBILITY_TIMEOUT_SECS", VISIBILITY_TIMEOUT_SECS);
        }
        let ledger = if relay_process {
            let ledger = sut.start_with(Role::Ledger, &["--no-relay"]).await?;
            sut.start(Role::Relay).await?;
            ledger
        } else {
            sut.start(Role::Ledger).await?
        };
        let consumer = sut.start(Role::Consolidator).await?;
        let reports = sut.start(Role::Reports).await?;
        let merchants = sut.merchants(ctx.merchants.max(1), &ledger).await?;
        sut.wait_applied(&consumer, merchants.len() as u64, ctx.catch_up_timeout).await?;
        let write_groups = ctx.groups(&merchants);
        // Reads are few: a handful of connections per merchant is plenty, and lets a read
        // that waits out a dead cache not hold up the next.
        let read_groups: Vec<Group> = write_groups.iter().map(|g| Group { connections: 4, ..g.clone() }).collect();

        let started = Instant::now();
        let (stop_tx, stop_rx) = watch::channel(false);
        let sampler = Sampler {
            ledger: ledger.clone(),
            reports: reports.clone(),
            tokens: merchants.iter().map(|m| m.token.clone()).collect(),
            date: ctx.date.clone(),
            ledger_pid: sut.pid(Role::Ledger),
            http: reqwest::Client::builder().timeout(Duration::from_secs(5)).build().context("HTTP client")?,
        };
        let sampling = tokio::spawn(sampler.clone().run(started, stop_rx));

        let mut phases = Vec::new();
        let mut written = vec![0u64; merchants.len()];
        let mut result = Ok(());
        let mut held = Held::default();
        for (name, fault) in PHASES {
            let start_s = started.elapsed().as_secs_f64();
            let what = match set_fault(sut, fault, true, relay_process, &mut held).await {
                Ok(w) => w,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            let load = |rate| Load { rate: Some(rate), stop: Stop::After(phase_len) };
            let (w, r) = tokio::join!(
                ctx.oha.run(&ledger, &write, load(write_rate), &write_groups),
                ctx.oha.run(&reports, &read, load(read_rate), &read_groups),
            );
            let repaired = set_fault(sut, fault, false, relay_process, &mut held).await;
            let (w, r) = match (w, r, repaired) {
                (Ok(w), Ok(r), Ok(_)) => (w, r),
                (w, r, repaired) => {
                    result = Err(w.err().or(r.err()).or(repaired.err()).unwrap_or_else(|| anyhow::anyhow!("phase")));
                    break;
                }
            };
            for g in &w.groups {
                written[g.merchant] += g.ok;
            }
            phases.push(Phase {
                name,
                fault,
                what,
                start_s,
                end_s: started.elapsed().as_secs_f64(),
                writes: w,
                reads: r,
            });
        }
        if result.is_err() {
            let _ = stop_tx.send(true);
            return result;
        }
        let load_end_s = started.elapsed().as_secs_f64();
        let total: u64 = written.iter().sum();
        // Every acknowledged entry must become visible in the reports.
        let deadline = Instant::now() + ctx.catch_up_timeout;
        let visible_at_end = loop {
            let visible = sampler.visible().await.unwrap_or(0.0) as u64;
            if visible >= total || Instant::now() > deadline {
                break visible;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let drained_s = started.elapsed().as_secs_f64() - load_end_s;
        // One more sample after the end, so the last phase's catch-up is on record.
        tokio::time::sleep(Duration::from_millis(600)).await;
        let _ = stop_tx.send(true);
        let series = sampling.await.unwrap_or_default();

        // The table: each phase's writes and reads.
        for p in &phases {
            out.rows.push(Row::run(format!("{}: writes", p.name), &p.writes, None));
            out.rows.push(Row::run(format!("{}: reads", p.name), &p.reads, None));
        }
        out.fact(
            "load",
            format!(
                "{write_rate:.0} writes/s and {read_rate:.0} reads/s, {} phases of {:.0} s",
                PHASES.len(),
                phase_len.as_secs_f64()
            ),
            None,
        );
        let threshold = (write_rate * 0.25).max(10.0);
        for p in &phases {
            let mut text = format!(
                "writes {:.2}% errors ({} of {}), {}; reads {:.2}% errors ({} of {}), {}",
                error_pct(&p.writes),
                p.writes.failures(),
                p.writes.ok + p.writes.failures(),
                latency(&p.writes),
                error_pct(&p.reads),
                p.reads.failures(),
                p.reads.ok + p.reads.failures(),
                latency(&p.reads),
            );
            if p.fault != Fault::None {
                let (peak, done) = catch_up(&series, p.start_s, p.end_s, threshold);
                let at_end = series.iter().rev().find(|s| s.t_s <= p.end_s);
                match (done, at_end) {
                    (Some(done), Some(at_end)) => {
                        let secs = (done.t_s - p.end_s).max(0.0);
                        let rate = if secs > 0.0 { (done.visible - at_end.visible) / secs } else { 0.0 };
                        text.push_str(&format!(
                            "; backlog peak {peak:.0} entries, caught up {secs:.1} s after the repair \
                             (applied {rate:.0}/s meanwhile, new writes included)"
                        ));
                        out.figures.insert(format!("{}: catch-up seconds", p.name), secs);
                        out.figures.insert(format!("{}: peak backlog", p.name), peak);
                    }
                    _ if peak <= threshold => text.push_str("; no backlog"),
                    _ => text.push_str(&format!("; backlog peak {peak:.0} entries, not caught up while sampling")),
                }
                text.push_str(&format!(" — {}", p.what));
            }
            out.fact(&format!("{} ({:.0}–{:.0} s)", p.name, p.start_s, p.end_s), text, None);
        }
        let errors =
            |f: fn(&Phase) -> &RunResult| phases.iter().map(|p| failures_beyond_the_fault(p.fault, f(p))).sum::<u64>();
        let unavailable = |f: fn(&Phase) -> &RunResult| {
            phases.iter().map(|p| f(p).failures().saturating_sub(failures_beyond_the_fault(p.fault, f(p)))).sum::<u64>()
        };
        let sent = |f: fn(&Phase) -> &RunResult| phases.iter().map(|p| f(p).ok + f(p).failures()).sum::<u64>();
        let (write_errors, read_errors) = (errors(|p| &p.writes), errors(|p| &p.reads));
        let (write_503, read_503) = (unavailable(|p| &p.writes), unavailable(|p| &p.reads));
        out.fact(
            "writes through all faults",
            format!(
                "{} sent, {write_errors} failed, {write_503} answered 503 while the database was down",
                sent(|p| &p.writes)
            ),
            Some(write_errors as f64),
        );
        out.fact(
            "reads through all faults",
            format!(
                "{} sent, {read_errors} failed, {read_503} answered 503 while the database was down",
                sent(|p| &p.reads)
            ),
            Some(read_errors as f64),
        );
        out.fact(
            "everything visible after the load",
            format!("{visible_at_end} of {total} entries, {drained_s:.1} s after the last phase"),
            Some(drained_s),
        );
        if let Some(peak) = series.iter().filter_map(|s| s.ledger_rss_mib).reduce(f64::max) {
            out.fact("ledger RSS peak", format!("{peak:.0} MiB"), Some(peak));
        }
        out.checks.push(Check::new(
            "writes: no errors through the faults (503 only while the database is down)",
            write_errors == 0,
            format!("{write_errors} failed of {}", sent(|p| &p.writes)),
        ));
        out.checks.push(Check::new(
            "reads: no errors through the faults (503 only while the database is down)",
            read_errors == 0,
            format!("{read_errors} failed of {}", sent(|p| &p.reads)),
        ));
        out.checks.extend(check_exact(ctx, sut, &reports, &merchants, &written).await?);
        out.detail("phases", &phases);
        out.detail("series", &series);
        out.detail("catch_up_threshold_entries", threshold);
        Ok(())
    })
    .await?;
    Ok(out)
}
