//! What every function does around its handler, once per invocation: time it, write the
//! invocation's EMF line ([`crate::emf`]) and export its spans, all before the answer goes
//! back, because Lambda may freeze the environment right after it.
//!
//! Log lines need nothing here: the runtime serves each invocation inside its
//! `Lambda runtime invoke` span (`requestId`, `xrayTraceId`), and the JSON log format
//! (`CASHFLOW_LOG_FORMAT=json`, the functions' default) writes the spans of a line with it, so
//! every line a handler logs carries the request id and the X-Ray trace id.

use std::future::Future;
use std::io::Write;
use std::time::Instant;

use lambda_runtime::Context;

use crate::emf;

/// Runs `handler` as the invocation `context` of the function `function` (its short name:
/// `consumer`, `ledger-api`, …) and returns its answer, after writing the metrics line and
/// flushing the spans.
pub async fn serve<T>(function: &str, context: &Context, handler: impl Future<Output = T>) -> T {
    let recorder = emf::install();
    let started = Instant::now();
    let answer = handler.await;
    let took = started.elapsed();
    let invocation = emf::Invocation {
        function: function.to_owned(),
        stage: stage(),
        request_id: context.request_id.clone(),
        xray_trace_id: context.xray_trace_id.clone(),
    };
    write(emf::lines(&invocation, &recorder.take(), took, now_ms()));
    cashflow::telemetry::flush_async().await;
    answer
}

/// Writes `lines` to stdout, where Lambda collects them with the logs. A closed stdout loses
/// the metrics, never the answer.
fn write(lines: Vec<String>) {
    let mut stdout = std::io::stdout().lock();
    for line in lines {
        let _ = writeln!(stdout, "{line}");
    }
    let _ = stdout.flush();
}

/// `CASHFLOW_STAGE` (the template sets it), or `local`.
pub fn stage() -> String {
    std::env::var("CASHFLOW_STAGE").ok().filter(|s| !s.is_empty()).unwrap_or_else(|| "local".into())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
