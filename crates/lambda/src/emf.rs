//! The key metrics of a function as CloudWatch Embedded Metric Format (EMF): one JSON line per
//! invocation on stdout, which CloudWatch Logs turns into metrics without an API call (no
//! `PutMetricData` from a frozen environment, no VPC endpoint for monitoring), and which the
//! template's alarms and dashboard read.
//!
//! The workers record their metrics through the `metrics` facade, as they do in a process,
//! where Prometheus renders them. On Lambda, [`install`] sets a recorder that keeps only the
//! series listed in [`SERIES`] and hands them out per invocation ([`Recorder::take`]), so the
//! counts in a line are exactly what that invocation did: `consumer` its events applied,
//! duplicate, rejected and poison and each applied event's consolidation lag, `outbox-sweep`
//! what it published and the age of the oldest outbox row it found. Every line also carries
//! `HandlerDuration`: the handler's own time, from the event to its answer, which is what a
//! function costs apart from the runtime API around it (`scripts/lambda-figures.sh` reads it).
//!
//! The line's namespace is [`NAMESPACE`] with one dimension set, `Stage` (from
//! `CASHFLOW_STAGE`, `local` without), so an alarm names a metric without knowing function
//! names; `Function`, the Lambda request id and the X-Ray trace id ride along as properties
//! (searchable in Logs Insights, not dimensions: they would make a metric per request).
//! Lag values are sent as EMF value arrays, at most [`MAX_VALUES`] per line (EMF's limit),
//! so CloudWatch keeps their distribution and alarms can use p99 and the maximum.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use metrics::{Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, SharedString};
use serde_json::{json, Map, Value};

/// The CloudWatch namespace of every metric.
pub const NAMESPACE: &str = "cashflow";

/// Values per metric in one EMF line (CloudWatch's limit).
pub const MAX_VALUES: usize = 100;

/// How a series of ours is sent: its EMF name and unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Series {
    /// The `metrics` name recorded by the shared code.
    pub source: &'static str,
    /// The CloudWatch metric name.
    pub name: &'static str,
    pub unit: &'static str,
}

/// The series a function sends; anything else recorded is dropped.
pub const SERIES: &[Series] = &[
    Series { source: "cashflow_events_applied_total", name: "EventsApplied", unit: "Count" },
    Series { source: "cashflow_events_duplicate_total", name: "EventsDuplicate", unit: "Count" },
    Series { source: "cashflow_events_rejected_total", name: "EventsRejected", unit: "Count" },
    Series { source: "cashflow_events_poison_total", name: "EventsPoison", unit: "Count" },
    Series { source: "cashflow_consolidation_lag_seconds", name: "ConsolidationLagSeconds", unit: "Seconds" },
    Series { source: "cashflow_events_published_total", name: "EventsPublished", unit: "Count" },
    Series { source: "cashflow_outbox_oldest_age_seconds", name: "OutboxOldestAgeSeconds", unit: "Seconds" },
];

/// The handler's own time, on every line.
pub const HANDLER_DURATION: &str = "HandlerDuration";

/// One series' values since the last [`Recorder::take`].
#[derive(Default)]
struct Slot {
    /// Registered by this process's code (a counter it never touches is not sent as zeros).
    used: std::sync::atomic::AtomicBool,
    /// Counter increments (summed).
    count: AtomicU64,
    /// Histogram values, and gauge values (the last one is kept).
    values: Mutex<Vec<f64>>,
}

impl CounterFn for Slot {
    fn increment(&self, value: u64) {
        self.count.fetch_add(value, Ordering::Relaxed);
    }

    fn absolute(&self, value: u64) {
        self.count.store(value, Ordering::Relaxed);
    }
}

impl HistogramFn for Slot {
    fn record(&self, value: f64) {
        if let Ok(mut values) = self.values.lock() {
            values.push(value);
        }
    }
}

impl GaugeFn for Slot {
    fn increment(&self, value: f64) {
        if let Ok(mut values) = self.values.lock() {
            let last = values.pop().unwrap_or(0.0);
            values.push(last + value);
        }
    }

    fn decrement(&self, value: f64) {
        GaugeFn::increment(self, -value);
    }

    fn set(&self, value: f64) {
        if let Ok(mut values) = self.values.lock() {
            values.clear();
            values.push(value);
        }
    }
}

/// What one invocation recorded, by EMF name.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Recorded {
    pub counts: BTreeMap<&'static str, u64>,
    pub values: BTreeMap<&'static str, Vec<f64>>,
}

/// The recorder of a function: keeps [`SERIES`] until taken.
#[derive(Clone)]
pub struct Recorder {
    slots: Arc<BTreeMap<&'static str, (Series, Arc<Slot>)>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self { slots: Arc::new(SERIES.iter().map(|s| (s.source, (*s, Arc::new(Slot::default())))).collect()) }
    }
}

impl Recorder {
    fn slot(&self, key: &Key) -> Option<Arc<Slot>> {
        let (_, slot) = self.slots.get(key.name())?;
        slot.used.store(true, Ordering::Relaxed);
        Some(slot.clone())
    }

    /// What was recorded since the last call (counters that stayed at zero included, so a line
    /// names every counter its function has used so far, and a quiet period reads 0, not
    /// missing), and starts again from nothing.
    pub fn take(&self) -> Recorded {
        let mut recorded = Recorded::default();
        for (series, slot) in self.slots.values() {
            let count = slot.count.swap(0, Ordering::Relaxed);
            let values = slot.values.lock().map(|mut v| std::mem::take(&mut *v)).unwrap_or_default();
            if series.unit == "Count" {
                if slot.used.load(Ordering::Relaxed) {
                    recorded.counts.insert(series.name, count);
                }
            } else if !values.is_empty() {
                recorded.values.insert(series.name, values);
            }
        }
        recorded
    }
}

impl metrics::Recorder for Recorder {
    fn describe_counter(&self, _: KeyName, _: Option<metrics::Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<metrics::Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<metrics::Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.slot(key).map_or_else(Counter::noop, Counter::from_arc)
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        self.slot(key).map_or_else(Gauge::noop, Gauge::from_arc)
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        self.slot(key).map_or_else(Histogram::noop, Histogram::from_arc)
    }
}

static RECORDER: OnceLock<Recorder> = OnceLock::new();

/// Installs the function's recorder as the process's (once; later calls return the same one).
pub fn install() -> &'static Recorder {
    RECORDER.get_or_init(|| {
        let recorder = Recorder::default();
        // Fails only if another recorder was set first (a test's): then nothing is sent.
        let _ = metrics::set_global_recorder(recorder.clone());
        recorder
    })
}

/// Who an EMF line is about.
#[derive(Debug, Clone, Default)]
pub struct Invocation {
    /// `AWS_LAMBDA_FUNCTION_NAME`'s short name (`consumer`, `ledger-api`, …).
    pub function: String,
    pub stage: String,
    pub request_id: String,
    pub xray_trace_id: Option<String>,
}

/// The EMF lines of one invocation: its counts and the handler's time in the first, the value
/// arrays split [`MAX_VALUES`] at a time over as many lines as they need.
pub fn lines(invocation: &Invocation, recorded: &Recorded, handler: Duration, timestamp_ms: i64) -> Vec<String> {
    let mut lines = Vec::new();
    let mut first = true;
    let mut chunks: Vec<(&str, Vec<&[f64]>)> =
        recorded.values.iter().map(|(name, values)| (*name, values.chunks(MAX_VALUES).collect())).collect();
    loop {
        let mut metrics: Vec<(&str, &str, Value)> = Vec::new();
        if first {
            metrics.push((HANDLER_DURATION, "Milliseconds", json!(handler.as_secs_f64() * 1000.0)));
            for (name, count) in &recorded.counts {
                metrics.push((name, "Count", json!(count)));
            }
        }
        for (name, chunks) in &mut chunks {
            if !chunks.is_empty() {
                let chunk = chunks.remove(0);
                let unit = SERIES.iter().find(|s| s.name == *name).map_or("None", |s| s.unit);
                let value = match chunk {
                    [one] => json!(one),
                    many => json!(many),
                };
                metrics.push((name, unit, value));
            }
        }
        if metrics.is_empty() {
            return lines;
        }
        first = false;
        let definitions: Vec<Value> =
            metrics.iter().map(|(name, unit, _)| json!({"Name": name, "Unit": unit})).collect();
        let mut line = Map::new();
        line.insert(
            "_aws".into(),
            json!({
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{ "Namespace": NAMESPACE, "Dimensions": [["Stage"]], "Metrics": definitions }],
            }),
        );
        line.insert("Stage".into(), json!(invocation.stage));
        line.insert("Function".into(), json!(invocation.function));
        line.insert("requestId".into(), json!(invocation.request_id));
        if let Some(trace) = &invocation.xray_trace_id {
            line.insert("xrayTraceId".into(), json!(trace));
        }
        for (name, _, value) in metrics {
            line.insert(name.into(), value);
        }
        lines.push(Value::Object(line).to_string());
    }
}
