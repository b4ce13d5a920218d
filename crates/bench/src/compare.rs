//! `compare`: this build against another (`--baseline PATH`), on the same machine in the same
//! run.
//!
//! Why: a 10-second closed loop on a shared VM moves by 5-10 % from one run to the next, and
//! the machine itself changes between sessions (BENCHMARKS.md, session 28), so a change of a
//! few percent cannot be read off two runs made apart, nor off the ramps of `write` and
//! `read`, which follow their own noisy probe. Here the two builds alternate: each round runs
//! a `write` and a `read` closed loop on each build, every loop on a fresh `serve` set up the
//! same way, and each round starts with the build the last one ended with, so that neither
//! build always runs first. The medians of the rounds, rate and server CPU per request, are
//! reported for each build with the change from the baseline. Like `tracing`, it is not in
//! `all` and checks only that no request failed: whether a change is an improvement is the
//! reader's call, with the spread of the rounds in view.

use std::path::Path;

use serde::Serialize;

use crate::report::{Check, Outcome};
use crate::scenarios::{alternated_requests, closed_loop, in_turn, report_round, Ctx, TracedRun};

/// One closed loop of one build.
#[derive(Debug, Clone, Serialize)]
struct Run {
    round: usize,
    /// `baseline` or `current`.
    build: &'static str,
    #[serde(flatten)]
    run: TracedRun,
}

/// Runs `rounds` rounds of `write` and `read` closed loops on `baseline` and on this build
/// (`ctx.bin`), alternated.
pub async fn compare(ctx: &Ctx, baseline: &Path, rounds: usize) -> anyhow::Result<Outcome> {
    let duration = ctx.run_for(10);
    let builds = [("baseline", baseline), ("current", ctx.bin.as_path())];
    let requests = alternated_requests(ctx);
    let mut out = Outcome::default();
    let mut runs = Vec::new();
    for round in 0..rounds.max(1) {
        for (label, request, connections) in &requests {
            for &(build, bin) in in_turn(&builds, round) {
                let run = closed_loop(ctx, bin, label, request, *connections, None, duration).await?;
                report_round(&mut out, round, &format!("{label} {build}"), &run, "runs without errors", || {
                    format!("{label} on the {build} build: {} failed", run.failed)
                });
                runs.push(Run { round: round + 1, build, run });
            }
        }
    }
    if out.checks.is_empty() {
        out.checks.push(Check::new("runs without errors", true, format!("{} closed loops", runs.len())));
    }
    for (label, _, connections) in &requests {
        let of = |build: &'static str| runs.iter().filter(move |r| r.run.label == *label && r.build == build);
        let figures = |build: &'static str| {
            let mut rates: Vec<f64> = of(build).map(|r| r.run.ok_per_sec).collect();
            let mut cpus: Vec<f64> = of(build).filter_map(|r| r.run.cpu_us).collect();
            let spread = |xs: &[f64]| {
                let (lo, hi) = xs.iter().fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
                (lo <= hi).then_some((lo, hi))
            };
            let (rate_spread, cpu_spread) = (spread(&rates), spread(&cpus));
            let rate = (!rates.is_empty()).then(|| crate::trend::median(&mut rates));
            let cpu = (!cpus.is_empty()).then(|| crate::trend::median(&mut cpus));
            (rate, rate_spread, cpu, cpu_spread)
        };
        let (base_rate, _, base_cpu, _) = figures("baseline");
        for build in ["baseline", "current"] {
            let (rate, rate_spread, cpu, cpu_spread) = figures(build);
            let change = |now: Option<f64>, then: Option<f64>| {
                now.zip(then).filter(|(_, t)| *t > 0.0).map(|(n, t)| format!(" ({:+.1}%)", (n / t - 1.0) * 100.0))
            };
            let (rate_change, cpu_change) = if build == "current" {
                (change(rate, base_rate).unwrap_or_default(), change(cpu, base_cpu).unwrap_or_default())
            } else {
                (String::new(), String::new())
            };
            let range = |s: Option<(f64, f64)>, digits: usize| {
                s.map_or_else(String::new, |(lo, hi)| format!(", rounds {lo:.digits$}–{hi:.digits$}"))
            };
            let name = format!("{label} {build}");
            out.fact(
                &name,
                format!(
                    "{:.0}/s{rate_change}{}; server CPU {}{cpu_change}{} per request ({connections} connections)",
                    rate.unwrap_or_default(),
                    range(rate_spread, 0),
                    cpu.map_or_else(|| "-".into(), |us| format!("{us:.1} µs")),
                    range(cpu_spread, 1),
                ),
                rate,
            );
            if let Some(cpu) = cpu {
                out.figures.insert(format!("{name} cpu_us"), cpu);
            }
        }
    }
    out.detail("baseline", baseline.display().to_string());
    out.detail("runs", &runs);
    Ok(out)
}
