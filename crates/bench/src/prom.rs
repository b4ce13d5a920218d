//! Reading `/metrics` (Prometheus text format): counters, gauges and histogram quantiles.

use std::collections::BTreeMap;

/// One scrape: every sample, keyed by metric name, then by its label set as written.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    samples: BTreeMap<String, Vec<(String, f64)>>,
}

impl Scrape {
    /// Parses the text format; comments and malformed lines are skipped.
    pub fn parse(text: &str) -> Self {
        let mut samples: BTreeMap<String, Vec<(String, f64)>> = BTreeMap::new();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else { continue };
            let Ok(value) = value.parse::<f64>() else { continue };
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            samples.entry(name.to_owned()).or_default().push((labels.to_owned(), value));
        }
        Self { samples }
    }

    /// The sum of a metric over all its label sets; 0 when absent (a counter that was never
    /// incremented is not exported yet).
    pub fn total(&self, name: &str) -> f64 {
        self.samples.get(name).map_or(0.0, |s| s.iter().map(|(_, v)| v).sum())
    }

    /// The sum of a metric over the label sets that have every `name="value"` pair given.
    pub fn total_where(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        self.samples.get(name).map_or(0.0, |s| {
            s.iter()
                .filter(|(set, _)| wanted.iter().all(|w| set.split(',').any(|l| l.trim() == w)))
                .map(|(_, v)| v)
                .sum()
        })
    }

    /// A metric's value, if it is exported.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.samples.get(name).map(|s| s.iter().map(|(_, v)| v).sum())
    }

    /// A histogram's cumulative buckets `(le, count)`, sorted by bound (`+Inf` last).
    pub fn buckets(&self, name: &str) -> Histogram {
        let mut buckets: Vec<(f64, f64)> = self
            .samples
            .get(&format!("{name}_bucket"))
            .into_iter()
            .flatten()
            .filter_map(|(labels, count)| {
                let le = labels.split(',').find_map(|l| l.trim().strip_prefix("le="))?.trim_matches('"');
                let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
                Some((le, *count))
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        Histogram { buckets }
    }
}

/// Cumulative histogram buckets.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Histogram {
    pub buckets: Vec<(f64, f64)>,
}

impl Histogram {
    /// What was observed between two scrapes.
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        let before = |le: f64| earlier.buckets.iter().find(|(b, _)| *b == le).map_or(0.0, |(_, c)| *c);
        Histogram { buckets: self.buckets.iter().map(|(le, c)| (*le, (c - before(*le)).max(0.0))).collect() }
    }

    /// Number of observations.
    pub fn count(&self) -> f64 {
        self.buckets.last().map_or(0.0, |(_, c)| *c)
    }

    /// The q-quantile the way Prometheus's `histogram_quantile` estimates it: linear within
    /// the bucket it falls in. In the `+Inf` bucket it is only known to exceed the last finite
    /// bound: `Quantile::Above(bound)`.
    pub fn quantile(&self, q: f64) -> Option<Quantile> {
        let total = self.count();
        if total <= 0.0 {
            return None;
        }
        let rank = q * total;
        let mut lower = 0.0;
        let mut below = 0.0;
        for &(le, count) in &self.buckets {
            if count >= rank {
                if le.is_infinite() {
                    return Some(Quantile::Above(lower));
                }
                let in_bucket = count - below;
                let fraction = if in_bucket > 0.0 { (rank - below) / in_bucket } else { 1.0 };
                return Some(Quantile::Within(lower + (le - lower) * fraction));
            }
            if le.is_finite() {
                lower = le;
            }
            below = count;
        }
        Some(Quantile::Above(lower))
    }

    /// The smallest bucket bound that holds every observation (an upper bound of the max).
    pub fn max_bound(&self) -> Option<Quantile> {
        let total = self.count();
        if total <= 0.0 {
            return None;
        }
        let mut last_finite = 0.0;
        for &(le, count) in &self.buckets {
            if count >= total {
                return Some(if le.is_infinite() { Quantile::Above(last_finite) } else { Quantile::Within(le) });
            }
            if le.is_finite() {
                last_finite = le;
            }
        }
        Some(Quantile::Above(last_finite))
    }
}

/// A quantile estimated from buckets, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub enum Quantile {
    Within(f64),
    Above(f64),
}

impl Quantile {
    /// For tables: milliseconds, with `>` when only a lower bound is known.
    pub fn ms(self) -> String {
        match self {
            Quantile::Within(s) => format!("{:.1} ms", s * 1000.0),
            Quantile::Above(s) => format!("> {:.0} ms", s * 1000.0),
        }
    }

    /// Seconds (the lower bound for `Above`).
    pub fn seconds(self) -> f64 {
        match self {
            Quantile::Within(s) | Quantile::Above(s) => s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"
# TYPE cashflow_events_applied_total counter
cashflow_events_applied_total 120

cashflow_http_requests_total{method="POST",route="/v1/entries",status="201"} 7
cashflow_http_requests_total{method="GET",route="/v1/balances/daily/{date}",status="200"} 3
cashflow_consolidation_lag_seconds_bucket{le="0.01"} 10
cashflow_consolidation_lag_seconds_bucket{le="0.1"} 90
cashflow_consolidation_lag_seconds_bucket{le="1"} 100
cashflow_consolidation_lag_seconds_bucket{le="+Inf"} 100
cashflow_consolidation_lag_seconds_sum 3.2
cashflow_consolidation_lag_seconds_count 100
"#;

    fn close(q: Option<Quantile>, want: f64) -> bool {
        matches!(q, Some(Quantile::Within(v)) if (v - want).abs() < 1e-9)
    }

    #[test]
    fn counters_are_summed_over_label_sets_and_absent_ones_are_zero() {
        let scrape = Scrape::parse(TEXT);
        assert_eq!(scrape.total("cashflow_events_applied_total"), 120.0);
        assert_eq!(scrape.total("cashflow_http_requests_total"), 10.0);
        assert_eq!(scrape.total("cashflow_queue_messages"), 0.0);
        assert_eq!(scrape.get("cashflow_queue_messages"), None);
    }

    #[test]
    fn a_total_can_be_restricted_to_label_values() {
        let scrape = Scrape::parse(TEXT);
        let created = [("route", "/v1/entries"), ("status", "201")];
        assert_eq!(scrape.total_where("cashflow_http_requests_total", &created), 7.0);
        assert_eq!(scrape.total_where("cashflow_http_requests_total", &[("status", "200")]), 3.0);
        assert_eq!(scrape.total_where("cashflow_http_requests_total", &[("status", "500")]), 0.0);
    }

    #[test]
    fn quantiles_interpolate_within_the_bucket_like_prometheus() {
        let h = Scrape::parse(TEXT).buckets("cashflow_consolidation_lag_seconds");
        assert_eq!(h.count(), 100.0);
        // rank 50 falls in (0.01, 0.1] holding ranks 10..90: halfway.
        assert!(close(h.quantile(0.5), 0.055));
        // rank 99 in (0.1, 1] holding 90..100: 90% of the way.
        assert!(close(h.quantile(0.99), 0.91));
        assert_eq!(h.max_bound(), Some(Quantile::Within(1.0)));
    }

    #[test]
    fn a_delta_between_scrapes_counts_only_the_new_observations() {
        let before = Histogram { buckets: vec![(0.01, 5.0), (0.1, 5.0), (f64::INFINITY, 5.0)] };
        let after = Histogram { buckets: vec![(0.01, 5.0), (0.1, 15.0), (f64::INFINITY, 16.0)] };
        let delta = after.since(&before);
        assert_eq!(delta.count(), 11.0);
        assert!(close(delta.quantile(0.5), 0.01 + 0.09 * 5.5 / 10.0));
        assert_eq!(delta.quantile(1.0), Some(Quantile::Above(0.1)));
        assert_eq!(Histogram::default().quantile(0.5), None);
    }
}
