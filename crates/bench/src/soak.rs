//! `soak` (issue 17): writes at a fixed rate for a long time (default 10 minutes), optionally
//! with reads beside them, sampling after every window what would show a leak or a slow
//! degradation: the resident memory of the system under test, the window's p99, and the bytes
//! on disk per entry. It fails when RSS or p99 trends upward by the rule of [`crate::trend`].
//!
//! The load is one oha run per window, back to back (a few milliseconds apart), so each
//! window's p99 is oha's own, latency-corrected, over exactly that window's requests; the
//! samples are taken between windows.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use crate::oha::{Load, RunResult, Stop};
use crate::report::{Check, Outcome, Table};
use crate::scenarios::{check_exact, with_sut, Ctx, SoakPlan};
use crate::sut::{Role, Sut};
use crate::trend::{self, Tolerance};

/// RSS may grow by at most 10 % of its level after the warm-up over the run (and always by 8 MiB).
pub const RSS_TOLERANCE: Tolerance = Tolerance { relative: 0.10, absolute: 8.0 };
/// p99 may grow by at most half its level over the run (and always by 2 ms).
pub const P99_TOLERANCE: Tolerance = Tolerance { relative: 0.5, absolute: 2.0 };
/// The warm-up: this share of the run (at least one window) is left out of the trends.
const WARMUP_SHARE: f64 = 0.1;

impl SoakPlan {
    /// The first [`WARMUP_SHARE`] of the run, and always the whole first window (whose sample
    /// is taken a little after `window_s`).
    fn warmup_s(&self) -> f64 {
        (self.duration_s as f64 * WARMUP_SHARE).max(self.window_s as f64) + self.window_s as f64 / 2.0
    }
}

/// One sample, taken at the end of a window.
#[derive(Debug, Clone, Serialize)]
struct Sample {
    /// Seconds since the load started.
    t_s: f64,
    /// Writes that got a 201, since the start.
    entries: u64,
    /// The window's writes: delivered rate, p99 and failures.
    write_ok_per_sec: f64,
    write_p99_ms: Option<f64>,
    write_failures: u64,
    /// The window's reads, if any.
    read_p99_ms: Option<f64>,
    read_failures: u64,
    /// Resident memory of every process of the system under test, summed.
    rss_mib: Option<f64>,
    /// The data's bytes on disk: the SQLite files of the data directory (WAL included), or the
    /// run's Postgres tables with their indexes and TOAST.
    bytes_on_disk: Option<u64>,
}

impl Sample {
    fn bytes_per_entry(&self) -> Option<f64> {
        self.bytes_on_disk.filter(|_| self.entries > 0).map(|b| b as f64 / self.entries as f64)
    }
}

/// Where the data is, for its size.
enum Storage {
    Dir(std::path::PathBuf),
    Postgres(sqlx::PgPool),
}

impl Storage {
    async fn open(sut: &Sut) -> anyhow::Result<Self> {
        match sut.backend.database() {
            Some(db) => Ok(Storage::Postgres(
                sqlx::postgres::PgPoolOptions::new()
                    .max_connections(1)
                    .connect(&db.url)
                    .await
                    .context("connecting to the run's database for its size")?,
            )),
            None => Ok(Storage::Dir(sut.data_path().to_path_buf())),
        }
    }

    async fn bytes(&self) -> Option<u64> {
        match self {
            Storage::Dir(dir) => dir_bytes(dir),
            Storage::Postgres(pool) => sqlx::query_scalar::<_, i64>(
                "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relkind IN ('r', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')",
            )
            .fetch_one(pool)
            .await
            .ok()
            .and_then(|b| u64::try_from(b).ok()),
        }
    }
}

/// Bytes allocated on disk by the files of `dir` (the processes' logs left out).
fn dir_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "log") {
            continue;
        }
        if let Ok(meta) = entry.metadata() {
            total += if meta.is_dir() { dir_bytes(&path).unwrap_or(0) } else { meta.blocks() * 512 };
        }
    }
    Some(total)
}

fn opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.decimals$}"))
}

/// `soak`: see the module documentation.
pub async fn soak(ctx: &Ctx, plan: &SoakPlan) -> anyhow::Result<Outcome> {
    let write = ctx.write_request();
    let read = ctx.read_request();
    let window = Duration::from_secs(plan.window_s.max(1));
    let windows = (plan.duration_s / plan.window_s.max(1)).max(1);
    let mut out = Outcome::default();
    out.detail("plan", plan);
    with_sut(ctx, "soak", async |sut: &mut Sut| {
        let base = sut.start(Role::Serve).await?;
        let merchants = crate::scenarios::setup_merchants(ctx, sut, &base, &base).await?;
        let groups = ctx.groups(&merchants);
        let storage = Storage::open(sut).await?;
        let mut written = vec![0u64; merchants.len()];
        let mut series: Vec<Sample> = Vec::new();
        let mut windows_run: Vec<(RunResult, Option<RunResult>)> = Vec::new();
        let start = Instant::now();
        for _ in 0..windows {
            let writes = ctx.oha.run(&base, &write, Load { rate: Some(plan.rate), stop: Stop::After(window) }, &groups);
            let reads = async {
                if plan.read_rate > 0.0 {
                    let load = Load { rate: Some(plan.read_rate), stop: Stop::After(window) };
                    ctx.oha.run(&base, &read, load, &groups).await.map(Some)
                } else {
                    Ok(None)
                }
            };
            let (w, r) = tokio::join!(writes, reads);
            let (w, r) = (w?, r?);
            for g in &w.groups {
                written[g.merchant] += g.ok;
            }
            let rss = sut.pids().into_iter().map(|pid| crate::procs::rss_mib(pid).map(|(now, _)| now)).sum();
            series.push(Sample {
                t_s: start.elapsed().as_secs_f64(),
                entries: written.iter().sum(),
                write_ok_per_sec: w.ok_per_sec,
                write_p99_ms: w.p99_ms,
                write_failures: w.failures(),
                read_p99_ms: r.as_ref().and_then(|r| r.p99_ms),
                read_failures: r.as_ref().map_or(0, RunResult::failures),
                rss_mib: rss,
                bytes_on_disk: storage.bytes().await,
            });
            windows_run.push((w, r));
        }
        let load_s = start.elapsed().as_secs_f64();
        let total: u64 = written.iter().sum();
        let catch_up = sut.wait_applied(&base, merchants.len() as u64 + total, ctx.catch_up_timeout).await?;

        // The table: one line per window.
        let mut table = Table {
            header: [
                "t s",
                "entries",
                "writes/s",
                "write p99 ms",
                "read p99 ms",
                "failed",
                "RSS MiB",
                "MiB on disk",
                "B/entry",
            ]
            .map(String::from)
            .to_vec(),
            rows: Vec::new(),
        };
        for s in &series {
            table.rows.push(vec![
                format!("{:.0}", s.t_s),
                s.entries.to_string(),
                format!("{:.0}", s.write_ok_per_sec),
                opt(s.write_p99_ms, 2),
                opt(s.read_p99_ms, 2),
                (s.write_failures + s.read_failures).to_string(),
                opt(s.rss_mib, 1),
                opt(s.bytes_on_disk.map(|b| b as f64 / (1024.0 * 1024.0)), 1),
                opt(s.bytes_per_entry(), 0),
            ]);
        }
        out.tables.push(table);

        // The verdicts.
        let warmup = plan.warmup_s();
        let run_s = load_s.max(1.0);
        let points = |f: fn(&Sample) -> Option<f64>| -> Vec<(f64, f64)> {
            series.iter().filter_map(|s| f(s).map(|v| (s.t_s, v))).collect()
        };
        // A smoke run (seconds, a debug build, tiny rates) exercises the sampling and the rule
        // but says nothing about drift: its trends are reported, not judged.
        let judged = !ctx.smoke;
        let mut judge = |name: &str, unit: &str, samples: Vec<(f64, f64)>, tolerance: Tolerance| match trend::judge(
            &samples, warmup, run_s, tolerance,
        ) {
            Some(t) if !judged => {
                let verdict = if t.rising { "rising (not judged in a smoke run)" } else { "flat" };
                out.fact(&format!("{name} trend"), format!("{verdict}: {}", t.describe(unit)), None);
                out.detail(&format!("{name} trend"), &t);
            }
            Some(t) => {
                out.fact(&format!("{name} trend"), t.describe(unit), Some(t.projected_growth));
                out.checks.push(Check::new(
                    format!("{name} does not trend upward"),
                    !t.rising,
                    format!("{name}: {}", t.describe(unit)),
                ));
                out.detail(&format!("{name} trend"), &t);
            }
            None => out.checks.push(Check::new(
                format!("{name} does not trend upward"),
                !judged,
                format!(
                    "fewer than {} samples after the warm-up of {warmup:.0} s: run longer or sample more often",
                    trend::MIN_SAMPLES
                ),
            )),
        };
        judge("RSS", "MiB", points(|s| s.rss_mib), RSS_TOLERANCE);
        judge("write p99", "ms", points(|s| s.write_p99_ms), P99_TOLERANCE);
        if plan.read_rate > 0.0 {
            judge("read p99", "ms", points(|s| s.read_p99_ms), P99_TOLERANCE);
        }

        out.fact(
            "offered",
            format!(
                "{:.0} writes/s{} for {load_s:.0} s in {windows} windows of {} s (warm-up {warmup:.0} s)",
                plan.rate,
                if plan.read_rate > 0.0 { format!(" and {:.0} reads/s", plan.read_rate) } else { String::new() },
                plan.window_s
            ),
            Some(plan.rate),
        );
        let failed: u64 = series.iter().map(|s| s.write_failures + s.read_failures).sum();
        out.fact(
            "written (201)",
            format!(
                "{total} ({:.0}/s), {failed} failed; consolidation caught up {:.2} s after the load",
                total as f64 / load_s,
                catch_up.as_secs_f64()
            ),
            Some(total as f64),
        );
        let p99s: Vec<f64> = series.iter().filter_map(|s| s.write_p99_ms).collect();
        if let (Some(lo), Some(hi)) = (p99s.iter().copied().reduce(f64::min), p99s.iter().copied().reduce(f64::max)) {
            out.fact("write p99 per window", format!("{lo:.2} to {hi:.2} ms"), Some(hi));
        }
        let rss: Vec<f64> = series.iter().filter_map(|s| s.rss_mib).collect();
        if let (Some(first), Some(last), Some(peak)) = (rss.first(), rss.last(), rss.iter().copied().reduce(f64::max)) {
            out.fact(
                "RSS (first / last / peak window)",
                format!("{first:.1} / {last:.1} / {peak:.1} MiB"),
                Some(*last),
            );
        }
        if let (Some(first), Some(last)) = (series.first(), series.last()) {
            if let Some(per) = last.bytes_per_entry() {
                out.fact(
                    "bytes on disk per entry (at the end)",
                    format!(
                        "{per:.0} B ({:.1} MiB for {} entries)",
                        last.bytes_on_disk.unwrap_or(0) as f64 / 1048576.0,
                        last.entries
                    ),
                    Some(per),
                );
            }
            // The growth per entry, without the fixed cost of empty databases.
            if let (Some(b0), Some(b1)) = (first.bytes_on_disk, last.bytes_on_disk) {
                if last.entries > first.entries {
                    let marginal = (b1 as f64 - b0 as f64) / (last.entries - first.entries) as f64;
                    out.fact("  growth per entry (first to last window)", format!("{marginal:.0} B"), Some(marginal));
                }
            }
        }
        out.checks.push(Check::new("no failed request", failed == 0, format!("{failed} failed")));
        out.checks.extend(check_exact(ctx, sut, &base, &merchants, &written).await?);
        out.detail("series", &series);
        out.detail("windows", &windows_run);
        Ok(())
    })
    .await?;
    Ok(out)
}
