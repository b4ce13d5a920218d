//! `cashflow reconcile` and the consolidator's scheduled reconciliation: the consolidated
//! days compared with the ledger's totals over gRPC, drifting days printed and, with
//! `--repair`, rebuilt (`cashflow_consolidation::reconcile`).

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use chrono::Utc;
use clap::Args;
use tokio::sync::watch;

use cashflow_consolidation::reconcile::{Reconciler, Report, Scope};
use cashflow_domain::{BusinessDate, MerchantId};

use crate::backends::BackendArgs;
use crate::grpc::LedgerGrpcArgs;

/// Options of `reconcile`.
#[derive(Debug, Clone, Args)]
pub struct ReconcileArgs {
    /// Only this merchant (default: every merchant consolidation knows).
    #[arg(long)]
    pub merchant: Option<String>,

    /// First business date (default: the first there can be, 1970-01-01).
    #[arg(long, requires = "to")]
    pub from: Option<String>,

    /// Last business date (default: tomorrow, UTC, so every time zone's today is in).
    #[arg(long, requires = "from")]
    pub to: Option<String>,

    /// Rebuild each drifting day from the ledger's entries.
    #[arg(long)]
    pub repair: bool,

    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub ledger: LedgerGrpcArgs,

    #[command(flatten)]
    pub backends: BackendArgs,
}

/// Options of the consolidator's scheduled reconciliation.
#[derive(Debug, Clone, Args)]
pub struct ScheduleArgs {
    /// Reconcile (and repair) the recent days of every merchant this often, in seconds; only
    /// when `--ledger-grpc-url` is set. 0: never.
    #[arg(long, env = "CASHFLOW_RECONCILE_EVERY", default_value_t = 300)]
    pub reconcile_every: u64,

    /// How many business days back each scheduled run looks (today included).
    #[arg(long, env = "CASHFLOW_RECONCILE_DAYS", default_value_t = 3)]
    pub reconcile_days: u32,
}

fn tomorrow() -> BusinessDate {
    let now = Utc::now().date_naive();
    BusinessDate::from_naive(now.succ_opt().unwrap_or(now))
        .unwrap_or_else(|| BusinessDate::of(Utc::now(), Default::default()))
}

fn date(text: &str, field: &str) -> anyhow::Result<BusinessDate> {
    BusinessDate::parse(text).with_context(|| format!("--{field}"))
}

/// `cashflow reconcile`: exit status 0 when nothing drifts (or everything was repaired).
pub async fn run(args: ReconcileArgs) -> anyhow::Result<()> {
    let Some(client) = args.ledger.client()? else {
        bail!("reconcile needs the ledger's gRPC service: --ledger-grpc-url");
    };
    let (from, to) = match (&args.from, &args.to) {
        (Some(from), Some(to)) => (date(from, "from")?, date(to, "to")?),
        _ => (date("1970-01-01", "from")?, tomorrow()),
    };
    if to < from {
        bail!("--to is before --from");
    }
    let merchants = args.merchant.as_deref().map(MerchantId::parse).transpose().context("--merchant")?.map(|m| vec![m]);
    let reconciler =
        Reconciler::new(args.backends.consolidation().await?, args.backends.cache().await?, Arc::new(client));
    let bar = (!args.json && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} merchants {elapsed}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let progress = |done: u64, total: u64| {
        if let Some(bar) = &bar {
            bar.set_length(total);
            bar.set_position(done);
        }
    };
    let scope = Scope { merchants, from, to, repair: args.repair };
    let report = reconciler.run(&scope, &progress).await?;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", table(&report));
    }
    if report.drifts() {
        let left = report.findings.iter().filter(|f| f.repaired != Some(true)).count();
        bail!("{left} consolidated day(s) drift from the ledger");
    }
    Ok(())
}

/// The drifting days, one line each: expected (ledger) against found (consolidated).
pub fn table(report: &Report) -> String {
    use std::fmt::Write;
    let mut out = format!(
        "{} merchant(s), {} day(s) checked, {} drifting\n",
        report.merchants,
        report.days_checked,
        report.findings.len()
    );
    if report.findings.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "{:<36}  {:<10}  {:>20}  {:>20}  {:>13}  repaired",
        "merchant", "date", "credits exp/found", "debits exp/found", "count e/f"
    );
    for f in &report.findings {
        let d = &f.drift;
        let _ = writeln!(
            out,
            "{:<36}  {:<10}  {:>20}  {:>20}  {:>13}  {}",
            d.merchant.to_string(),
            d.date.to_string(),
            format!("{}/{}", d.expected.total_credits.minor(), d.found.total_credits.minor()),
            format!("{}/{}", d.expected.total_debits.minor(), d.found.total_debits.minor()),
            format!("{}/{}", d.expected.entry_count, d.found.entry_count),
            match f.repaired {
                None => "-",
                Some(true) => "yes",
                Some(false) => "moved, next run",
            }
        );
    }
    out
}

/// Reconciles and repairs the last `days` business days of every merchant every `every`,
/// until `shutdown` turns true. A failed run is logged and retried at the next tick.
pub async fn schedule(reconciler: Reconciler, every: Duration, days: u32, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return,
            _ = tokio::time::sleep(every) => {}
        }
        let to = tomorrow();
        let from = (0..days).try_fold(to, |d, _| d.pred()).unwrap_or(to);
        let scope = Scope { merchants: None, from, to, repair: true };
        match reconciler.run(&scope, &|_, _| {}).await {
            Ok(report) => tracing::info!(
                merchants = report.merchants,
                days = report.days_checked,
                drifting = report.findings.len(),
                "scheduled reconciliation done"
            ),
            Err(e) => tracing::warn!(error = %e, "scheduled reconciliation failed; retrying at the next run"),
        }
    }
}
