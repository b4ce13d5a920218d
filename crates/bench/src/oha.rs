//! The load generator is oha (<https://github.com/hatoo/oha>), driven as a subprocess: one
//! oha process per token group (oha sends one header set per run), all started together, their
//! `--output-format json` reports parsed and combined.
//!
//! With a rate (`-q`) every run uses `--latency-correction`, so a stalled server cannot hide
//! its queueing delay (coordinated omission): latency counts from when a request was due.
//! Runs by duration use `-w` (wait for requests in flight at the deadline) so that every
//! request the server may have committed is counted, which the exactness checks rely on.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

/// One oha process's share of the load: one merchant's token.
#[derive(Debug, Clone, Serialize)]
pub struct Group {
    /// Index of the merchant (0 is the hot one).
    pub merchant: usize,
    /// The merchant's bearer token.
    #[serde(skip)]
    pub token: String,
    /// Connections of this process.
    pub connections: usize,
    /// Fraction of the total rate (or request count) this process sends.
    pub share: f64,
}

/// Splits `connections` and the load over `merchants` groups: merchant 0 is hot and takes
/// `hot_share` of both; the others split the rest evenly. Every group has at least one
/// connection.
pub fn layout(merchants: usize, connections: usize, hot_share: f64) -> Vec<(usize, f64)> {
    let merchants = merchants.max(1);
    if merchants == 1 {
        return vec![(connections.max(1), 1.0)];
    }
    let hot_share = hot_share.clamp(0.0, 1.0);
    let cold_share = (1.0 - hot_share) / (merchants - 1) as f64;
    let hot_conns = ((connections as f64 * hot_share).round() as usize).clamp(1, connections.max(1));
    let rest = connections.saturating_sub(hot_conns);
    let cold = merchants - 1;
    let mut out = vec![(hot_conns, hot_share)];
    for i in 0..cold {
        let conns = rest / cold + usize::from(i < rest % cold);
        out.push((conns.max(1), cold_share));
    }
    out
}

/// What each request is.
#[derive(Debug, Clone, Serialize)]
pub struct Request {
    pub method: &'static str,
    pub path: String,
    pub body: Option<String>,
    /// The status a success has (201 for a write, 200 for a read).
    pub expect: u16,
    /// A new connection (and TLS handshake) per request: the connection-setup cost.
    pub new_connections: bool,
}

/// When a run ends.
#[derive(Debug, Clone, Copy, Serialize)]
pub enum Stop {
    After(Duration),
    Requests(u64),
}

/// How hard to push.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Load {
    /// Total requests per second over all groups; `None` = as fast as the connections go.
    pub rate: Option<f64>,
    pub stop: Stop,
}

/// The fields of oha's JSON report the harness uses (the whole report is kept as well).
#[derive(Debug, Deserialize)]
struct OhaReport {
    summary: OhaSummary,
    #[serde(rename = "latencyPercentiles", default)]
    latency_percentiles: BTreeMap<String, Option<f64>>,
    #[serde(rename = "statusCodeDistribution", default)]
    status_code_distribution: BTreeMap<String, u64>,
    #[serde(rename = "errorDistribution", default)]
    error_distribution: BTreeMap<String, u64>,
}

#[derive(Debug, Deserialize)]
struct OhaSummary {
    /// Wall time of the run, in seconds.
    total: f64,
    /// Slowest request, in seconds (absent/null without requests).
    slowest: Option<f64>,
}

/// One group's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct GroupResult {
    pub merchant: usize,
    pub connections: usize,
    pub target_rate: Option<f64>,
    /// Responses with the expected status.
    pub ok: u64,
    pub seconds: f64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

/// A run over all groups, combined.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub target_rate: Option<f64>,
    /// Wall time (the longest group).
    pub seconds: f64,
    /// Responses with the expected status.
    pub ok: u64,
    /// Successful responses per second (the sum of each group's rate).
    pub ok_per_sec: f64,
    /// Responses with any other status.
    pub other_statuses: BTreeMap<String, u64>,
    /// Requests that got no response (connection errors, timeouts...).
    pub errors: BTreeMap<String, u64>,
    /// Latency percentiles: the worst group's (an upper bound of the combined percentile;
    /// the groups hit the same server, so they differ little).
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub groups: Vec<GroupResult>,
    /// oha's own reports, as printed.
    pub raw: Vec<serde_json::Value>,
}

impl RunResult {
    /// Requests that did not succeed.
    pub fn failures(&self) -> u64 {
        self.other_statuses.values().sum::<u64>() + self.errors.values().sum::<u64>()
    }

    /// Successful responses of one merchant.
    pub fn ok_of(&self, merchant: usize) -> u64 {
        self.groups.iter().filter(|g| g.merchant == merchant).map(|g| g.ok).sum()
    }
}

/// The oha binary.
#[derive(Debug, Clone)]
pub struct Oha {
    pub path: PathBuf,
    pub version: String,
}

impl Oha {
    /// Finds oha and checks that it runs.
    pub async fn locate(name: &Path) -> anyhow::Result<Self> {
        let path = crate::procs::find_tool(name, "install it with `cargo install oha --locked`, or pass --oha PATH")?;
        let out = tokio::process::Command::new(&path)
            .arg("--version")
            .output()
            .await
            .with_context(|| format!("running {} --version", path.display()))?;
        if !out.status.success() {
            bail!("{} --version failed: {}", path.display(), String::from_utf8_lossy(&out.stderr));
        }
        Ok(Self { path, version: String::from_utf8_lossy(&out.stdout).trim().to_owned() })
    }

    /// Runs one oha process per group, all at once, against `base` + the request path.
    pub async fn run(&self, base: &str, request: &Request, load: Load, groups: &[Group]) -> anyhow::Result<RunResult> {
        let mut children = Vec::new();
        let counts = match load.stop {
            Stop::Requests(n) => split_count(n, groups),
            Stop::After(_) => vec![0; groups.len()],
        };
        for (group, count) in groups.iter().zip(counts) {
            if matches!(load.stop, Stop::Requests(_)) && count == 0 {
                continue;
            }
            let mut cmd = tokio::process::Command::new(&self.path);
            cmd.arg(format!("{base}{}", request.path))
                .args(["--no-tui", "--output-format", "json", "-m", request.method])
                .args(["-c", &group.connections.to_string()])
                .args(["-H", &format!("Authorization: Bearer {}", group.token)]);
            if base.starts_with("https://") {
                // The run's self-signed certificate; verifying it is the client's cost.
                cmd.arg("--insecure");
            }
            if request.new_connections {
                cmd.arg("--disable-keepalive");
            }
            if let Some(body) = &request.body {
                cmd.args(["-H", "Content-Type: application/json", "-d", body]);
            }
            if let Some(rate) = load.rate {
                cmd.args(["-q", &format!("{:.3}", rate * group.share), "--latency-correction"]);
            }
            match load.stop {
                Stop::After(d) => cmd.args(["-z", &format!("{}ms", d.as_millis()), "-w"]),
                Stop::Requests(_) => cmd.args(["-n", &count.to_string()]),
            };
            cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).kill_on_drop(true);
            let child = cmd.spawn().with_context(|| format!("starting {}", self.path.display()))?;
            children.push((group, child));
        }
        let mut groups_out = Vec::new();
        let mut raw = Vec::new();
        let mut reports = Vec::new();
        for (group, child) in children {
            let out = child.wait_with_output().await.context("waiting for oha")?;
            if !out.status.success() {
                bail!("oha failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
            }
            let value: serde_json::Value = serde_json::from_slice(&out.stdout)
                .with_context(|| format!("oha printed no JSON: {}", String::from_utf8_lossy(&out.stdout)))?;
            let report: OhaReport = serde_json::from_value(value.clone()).context("reading oha's JSON report")?;
            reports.push((group, report));
            raw.push(value);
        }
        let mut result = RunResult {
            target_rate: load.rate,
            seconds: 0.0,
            ok: 0,
            ok_per_sec: 0.0,
            other_statuses: BTreeMap::new(),
            errors: BTreeMap::new(),
            p50_ms: None,
            p95_ms: None,
            p99_ms: None,
            max_ms: None,
            groups: Vec::new(),
            raw,
        };
        let expect = request.expect.to_string();
        for (group, report) in reports {
            let ok = report.status_code_distribution.get(&expect).copied().unwrap_or(0);
            for (status, n) in report.status_code_distribution.iter().filter(|(s, _)| **s != expect) {
                *result.other_statuses.entry(status.clone()).or_default() += n;
            }
            for (error, n) in &report.error_distribution {
                *result.errors.entry(error.clone()).or_default() += n;
            }
            let pct = |key: &str| report.latency_percentiles.get(key).copied().flatten().map(|s| s * 1000.0);
            let g = GroupResult {
                merchant: group.merchant,
                connections: group.connections,
                target_rate: load.rate.map(|r| r * group.share),
                ok,
                seconds: report.summary.total,
                p50_ms: pct("p50"),
                p95_ms: pct("p95"),
                p99_ms: pct("p99"),
                max_ms: report.summary.slowest.map(|s| s * 1000.0),
            };
            result.ok += ok;
            if g.seconds > 0.0 {
                result.ok_per_sec += ok as f64 / g.seconds;
            }
            result.seconds = result.seconds.max(g.seconds);
            result.p50_ms = max_opt(result.p50_ms, g.p50_ms);
            result.p95_ms = max_opt(result.p95_ms, g.p95_ms);
            result.p99_ms = max_opt(result.p99_ms, g.p99_ms);
            result.max_ms = max_opt(result.max_ms, g.max_ms);
            groups_out.push(g);
        }
        result.groups = groups_out;
        Ok(result)
    }
}

fn max_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// Splits a request count by the groups' shares, exactly (the remainder goes to group 0).
fn split_count(n: u64, groups: &[Group]) -> Vec<u64> {
    let mut counts: Vec<u64> = groups.iter().map(|g| (n as f64 * g.share).floor() as u64).collect();
    let assigned: u64 = counts.iter().sum();
    if let Some(first) = counts.first_mut() {
        *first += n.saturating_sub(assigned);
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hot_merchant_takes_its_share_and_the_rest_split_evenly() {
        let l = layout(4, 32, 0.5);
        assert_eq!(l.iter().map(|(c, _)| c).sum::<usize>(), 32);
        assert_eq!(l[0], (16, 0.5));
        assert!(l[1..].iter().all(|(c, s)| (5..=6).contains(c) && (*s - 0.5 / 3.0).abs() < 1e-12));
        assert_eq!(layout(1, 8, 0.5), vec![(8, 1.0)]);
        assert!(layout(3, 2, 0.5).iter().all(|(c, _)| *c >= 1));
    }

    #[test]
    fn request_counts_add_up_exactly() {
        let groups: Vec<Group> = layout(3, 8, 0.5)
            .into_iter()
            .enumerate()
            .map(|(merchant, (connections, share))| Group { merchant, token: String::new(), connections, share })
            .collect();
        let counts = split_count(1001, &groups);
        assert_eq!(counts.iter().sum::<u64>(), 1001);
        assert_eq!(counts[1], 250);
    }

    #[test]
    fn oha_reports_are_read_by_their_real_field_names() {
        let json = r#"{"summary":{"successRate":1.0,"total":2.0,"slowest":0.02,"fastest":0.001,"average":0.004,
            "requestsPerSec":100.0,"totalData":1000,"sizePerRequest":10,"sizePerSec":500.0},
            "latencyPercentiles":{"p50":0.003,"p95":0.008,"p99":0.012,"p99.9":null},
            "statusCodeDistribution":{"201":199,"503":1},"errorDistribution":{}}"#;
        let report: OhaReport = serde_json::from_str(json).unwrap();
        assert_eq!(report.summary.total, 2.0);
        assert_eq!(report.latency_percentiles["p99"], Some(0.012));
        assert_eq!(report.latency_percentiles["p99.9"], None);
        assert_eq!(report.status_code_distribution["201"], 199);
    }
}
