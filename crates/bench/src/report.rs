//! What a scenario produces: a table for people, a JSON file for the record (every raw oha
//! report included), and checks that decide the exit status.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

use crate::oha::RunResult;
use crate::storage::LedgerCeiling;

/// One line of the table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub label: String,
    pub target_per_sec: Option<f64>,
    pub ok: u64,
    pub ok_per_sec: f64,
    pub failures: u64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// For ramp steps: whether the step met the objective.
    pub passed: Option<bool>,
}

impl Row {
    pub fn run(label: impl Into<String>, r: &RunResult, passed: Option<bool>) -> Self {
        Self {
            label: label.into(),
            target_per_sec: r.target_rate,
            ok: r.ok,
            ok_per_sec: r.ok_per_sec,
            failures: r.failures(),
            p50_ms: r.p50_ms,
            p95_ms: r.p95_ms,
            p99_ms: r.p99_ms,
            max_ms: r.max_ms,
            passed,
        }
    }

    pub fn storage(label: impl Into<String>, s: &LedgerCeiling) -> Self {
        Self {
            label: label.into(),
            target_per_sec: None,
            ok: s.ok,
            ok_per_sec: s.ok_per_sec,
            failures: s.failures,
            p50_ms: s.p50_ms,
            p95_ms: s.p95_ms,
            p99_ms: s.p99_ms,
            max_ms: s.max_ms,
            passed: None,
        }
    }
}

/// A pass/fail fact: any failed check makes the harness exit non-zero.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

impl Check {
    pub fn new(name: impl Into<String>, passed: bool, detail: impl Into<String>) -> Self {
        Self { name: name.into(), passed, detail: detail.into() }
    }
}

/// A scenario's outcome.
#[derive(Debug, Default, Serialize)]
pub struct Outcome {
    pub rows: Vec<Row>,
    /// Headline figures, in order, as printed (`name`, value with its unit).
    pub summary: Vec<(String, String)>,
    /// The same figures as numbers, for tools.
    pub figures: BTreeMap<String, f64>,
    pub checks: Vec<Check>,
    /// Everything else: raw oha reports, time series, settings.
    pub details: BTreeMap<String, serde_json::Value>,
    /// Free-form tables printed after the runs (`soak`'s time series); the data is in `details`.
    #[serde(skip)]
    pub tables: Vec<Table>,
}

/// A table of text cells, printed right-aligned under its header.
#[derive(Debug, Default)]
pub struct Table {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    fn render(&self) -> String {
        let columns = self.header.len();
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                std::iter::once(&self.header)
                    .chain(&self.rows)
                    .filter_map(|r| r.get(c))
                    .map(|cell| cell.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: &[String]| {
            let padded: Vec<String> =
                cells.iter().zip(&widths).map(|(cell, w)| format!("{cell:>w$}", w = *w)).collect();
            format!("{}\n", padded.join("  "))
        };
        let mut out = line(&self.header);
        for row in &self.rows {
            out.push_str(&line(row));
        }
        out
    }
}

impl Outcome {
    pub fn fact(&mut self, name: &str, text: impl Into<String>, value: Option<f64>) {
        self.summary.push((name.to_owned(), text.into()));
        if let Some(v) = value {
            self.figures.insert(name.to_owned(), v);
        }
    }

    pub fn detail(&mut self, name: &str, value: impl Serialize) {
        self.details.insert(name.to_owned(), serde_json::to_value(value).unwrap_or(serde_json::Value::Null));
    }

    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.passed)
    }
}

/// The machine, as BENCHMARKS.md describes it.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub memory_gib: f64,
    pub kernel: String,
    /// `/proc/loadavg` when the run started (it lags: it includes the previous minutes).
    pub load_average: String,
    /// Share of CPU time busy during the second before the run: anything else running on the
    /// machine skews the figures.
    pub busy_before: Option<f64>,
}

/// `(busy, total)` jiffies of all CPUs, from `/proc/stat`.
fn cpu_times() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat.lines().next()?.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3)? + fields.get(4).unwrap_or(&0);
    Some((total - idle, total))
}

/// CPU utilisation over the next second.
pub async fn busy_for_a_second() -> Option<f64> {
    let (b0, t0) = cpu_times()?;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let (b1, t1) = cpu_times()?;
    (t1 > t0).then(|| (b1 - b0) as f64 / (t1 - t0) as f64)
}

impl Machine {
    pub async fn describe() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kib = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        Self {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model: cpuinfo
                .lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
                .unwrap_or_default(),
            memory_gib: (mem_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned(),
            load_average: std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "),
            busy_before: busy_for_a_second().await,
        }
    }
}

/// What was measured: the code and the tools.
#[derive(Debug, Clone, Serialize)]
pub struct Provenance {
    pub git_commit: String,
    pub git_dirty: bool,
    pub cashflow_bin: PathBuf,
    pub cashflow_bin_modified: Option<String>,
    /// A source file of the service (`crates/*/src`, migrations, manifests) is newer than the
    /// binary: the figures may not be those of the code in the tree.
    pub cashflow_bin_stale: bool,
    pub oha: String,
    pub nginx: String,
}

impl Provenance {
    pub async fn collect(root: &Path, bin: &Path, oha: &str, nginx: &str) -> Self {
        let git = |args: &'static [&'static str]| async move {
            tokio::process::Command::new("git")
                .current_dir(root)
                .args(args)
                .output()
                .await
                .ok()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                .unwrap_or_default()
        };
        let commit = git(&["rev-parse", "--short", "HEAD"]).await;
        let dirty = !git(&["status", "--porcelain", "--untracked-files=no"]).await.is_empty();
        let bin_time = std::fs::metadata(bin).and_then(|m| m.modified()).ok();
        let stale = match (bin_time, newest_source(&root.join("crates"))) {
            (Some(bin), Some(src)) => src > bin,
            _ => false,
        };
        let modified = bin_time
            .map(|t| chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        Self {
            git_commit: commit,
            git_dirty: dirty,
            cashflow_bin: bin.to_path_buf(),
            cashflow_bin_modified: modified,
            cashflow_bin_stale: stale,
            oha: oha.to_owned(),
            nginx: nginx.to_owned(),
        }
    }
}

/// The newest modification time among the service's sources (this harness excluded).
fn newest_source(crates: &Path) -> Option<std::time::SystemTime> {
    fn walk(dir: &Path, newest: &mut Option<std::time::SystemTime>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, newest);
            } else if let Ok(t) = entry.metadata().and_then(|m| m.modified()) {
                *newest = Some(newest.map_or(t, |n| n.max(t)));
            }
        }
    }
    let mut newest = None;
    for krate in std::fs::read_dir(crates).ok()?.flatten().map(|e| e.path()) {
        if krate.file_name().is_some_and(|n| n == "bench") {
            continue;
        }
        for part in ["src", "migrations"] {
            walk(&krate.join(part), &mut newest);
        }
        if let Ok(t) = std::fs::metadata(krate.join("Cargo.toml")).and_then(|m| m.modified()) {
            newest = Some(newest.map_or(t, |n: std::time::SystemTime| n.max(t)));
        }
    }
    newest
}

/// The file written for each scenario run.
#[derive(Debug, Serialize)]
pub struct ResultFile<'a> {
    pub scenario: &'a str,
    pub backend: &'a str,
    pub smoke: bool,
    pub started_at: String,
    pub finished_at: String,
    pub passed: bool,
    pub machine: &'a Machine,
    pub provenance: &'a Provenance,
    pub settings: serde_json::Value,
    #[serde(flatten)]
    pub outcome: &'a Outcome,
}

/// Writes `<dir>/<timestamp>-<scenario>-<backend>[-smoke].json`.
pub fn write(dir: &Path, stamp: &str, file: &ResultFile<'_>) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let suffix = if file.smoke { "-smoke" } else { "" };
    let path = dir.join(format!("{stamp}-{}-{}{suffix}.json", file.scenario, file.backend));
    let json = serde_json::to_string_pretty(file).context("serializing the results")?;
    std::fs::write(&path, json).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

fn num(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.decimals$}"))
}

/// The table and the summary, as printed.
pub fn render(title: &str, outcome: &Outcome) -> String {
    let mut out = format!("\n== {title} ==\n");
    if !outcome.rows.is_empty() {
        let width = outcome.rows.iter().map(|r| r.label.len()).max().unwrap_or(3).max(3);
        out.push_str(&format!(
            "{:<width$}  {:>9}  {:>9}  {:>8}  {:>6}  {:>7}  {:>7}  {:>7}  {:>7}\n",
            "run", "target/s", "ok/s", "ok", "fail", "p50 ms", "p95 ms", "p99 ms", "max ms"
        ));
        for r in &outcome.rows {
            let mark = match r.passed {
                Some(true) => "  ok",
                Some(false) => "  over",
                None => "",
            };
            out.push_str(&format!(
                "{:<width$}  {:>9}  {:>9.0}  {:>8}  {:>6}  {:>7}  {:>7}  {:>7}  {:>7}{mark}\n",
                r.label,
                num(r.target_per_sec, 0),
                r.ok_per_sec,
                r.ok,
                r.failures,
                num(r.p50_ms, 2),
                num(r.p95_ms, 2),
                num(r.p99_ms, 2),
                num(r.max_ms, 1),
            ));
        }
    }
    for table in &outcome.tables {
        out.push('\n');
        out.push_str(&table.render());
    }
    if !outcome.summary.is_empty() {
        out.push('\n');
        let width = outcome.summary.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (k, v) in &outcome.summary {
            out.push_str(&format!("{k:<width$}  {v}\n"));
        }
    }
    let failed: Vec<&Check> = outcome.checks.iter().filter(|c| !c.passed).collect();
    out.push_str(&format!("\nchecks: {} passed, {} failed\n", outcome.checks.len() - failed.len(), failed.len()));
    for c in failed {
        out.push_str(&format!("  FAILED {}: {}\n", c.name, c.detail));
    }
    out
}
