//! Whether a series sampled over a soak trends upward: the rule `soak` fails a run by.
//!
//! A leak or a slow degradation shows as a steady rise over minutes; a shared machine adds
//! noise on top, mostly as single windows far off the rest (another process compiling, a
//! checkpoint). The rule:
//!
//! 1. The samples taken before the warm-up ends are left out (caches, pools and the page cache
//!    fill up first, which is growth that stops).
//! 2. A least-squares line `y = a + b·t` is fitted through the rest.
//! 3. Samples far off that line are dropped and the line is fitted again: those whose residual
//!    exceeds [`OUTLIER_MADS`] robust standard deviations (1.4826 × the median absolute
//!    deviation of the residuals), at most a quarter of the samples, the worst first. One noisy
//!    window is therefore never what fails a run, and a steady rise, which the line fits, is
//!    never explained away.
//! 4. The projected growth over the whole run is `b × run length`. The series trends upward
//!    when that exceeds both `relative × level` and `absolute`, where the level is the fitted
//!    value at the end of the warm-up: the absolute floor keeps a small series (a p99 of 1 ms)
//!    from failing on a change nobody would notice.

use serde::Serialize;

/// Residuals beyond this many robust standard deviations are outliers.
pub const OUTLIER_MADS: f64 = 3.0;
/// The scale that makes a median absolute deviation estimate a normal standard deviation.
const MAD_TO_SIGMA: f64 = 1.4826;
/// At most this share of the samples is dropped as outliers.
const MAX_OUTLIER_SHARE: f64 = 0.25;
/// Fewer samples than this after the warm-up say nothing about a trend.
pub const MIN_SAMPLES: usize = 3;

/// How much a series may grow over a run.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Tolerance {
    /// A share of the level at the end of the warm-up (0.1 = 10 %).
    pub relative: f64,
    /// In the series' own unit; growth under it always passes.
    pub absolute: f64,
}

/// What the rule found.
#[derive(Debug, Clone, Serialize)]
pub struct Trend {
    /// Samples fitted (after the warm-up, outliers dropped).
    pub fitted: usize,
    /// Samples dropped as outliers.
    pub outliers: usize,
    /// Units per second.
    pub slope_per_s: f64,
    /// The fitted value at the end of the warm-up.
    pub level: f64,
    /// `slope × run length`.
    pub projected_growth: f64,
    /// The growth allowed: `max(relative × level, absolute)`.
    pub allowed: f64,
    pub rising: bool,
}

impl Trend {
    /// One line for the summary.
    pub fn describe(&self, unit: &str) -> String {
        format!(
            "{:+.2} {unit} over the run (slope {:+.4} {unit}/s from a level of {:.2} {unit}; allowed {:.2} {unit}; \
             {} samples fitted, {} outliers dropped)",
            self.projected_growth, self.slope_per_s, self.level, self.allowed, self.fitted, self.outliers
        )
    }
}

/// Judges `samples` (`(seconds since the start, value)`) by the rule of this module. `None`
/// when fewer than [`MIN_SAMPLES`] samples follow the warm-up.
pub fn judge(samples: &[(f64, f64)], warmup_s: f64, run_s: f64, tolerance: Tolerance) -> Option<Trend> {
    let mut kept: Vec<(f64, f64)> =
        samples.iter().copied().filter(|(t, y)| *t >= warmup_s && t.is_finite() && y.is_finite()).collect();
    if kept.len() < MIN_SAMPLES {
        return None;
    }
    let all = kept.len();
    let (a, b) = least_squares(&kept)?;
    let residual = |(t, y): &(f64, f64)| (y - (a + b * t)).abs();
    let mut residuals: Vec<f64> = kept.iter().map(residual).collect();
    let sigma = MAD_TO_SIGMA * median_abs_deviation(&mut residuals);
    let max_drop = (all as f64 * MAX_OUTLIER_SHARE).floor() as usize;
    let mut outliers: Vec<usize> = (0..all).filter(|i| residual(&kept[*i]) > OUTLIER_MADS * sigma).collect();
    outliers.sort_by(|i, j| residual(&kept[*j]).total_cmp(&residual(&kept[*i])));
    outliers.truncate(max_drop);
    outliers.sort_unstable();
    for i in outliers.iter().rev() {
        kept.remove(*i);
    }
    let (a, b) = least_squares(&kept)?;
    let level = a + b * warmup_s;
    let projected_growth = b * run_s;
    let allowed = (tolerance.relative * level.abs()).max(tolerance.absolute);
    Some(Trend {
        fitted: kept.len(),
        outliers: outliers.len(),
        slope_per_s: b,
        level,
        projected_growth,
        allowed,
        rising: projected_growth > allowed,
    })
}

/// The intercept and slope of the least-squares line; `None` if every `t` is the same.
fn least_squares(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    let n = points.len() as f64;
    let mean_t = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let stt: f64 = points.iter().map(|(t, _)| (t - mean_t).powi(2)).sum();
    if stt <= 0.0 {
        return None;
    }
    let sty: f64 = points.iter().map(|(t, y)| (t - mean_t) * (y - mean_y)).sum();
    let b = sty / stt;
    Some((mean_y - b * mean_t, b))
}

/// The median absolute deviation from the median (reorders `values`).
fn median_abs_deviation(values: &mut [f64]) -> f64 {
    let m = median(values);
    let mut deviations: Vec<f64> = values.iter().map(|v| (v - m).abs()).collect();
    median(&mut deviations)
}

pub(crate) fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSS: Tolerance = Tolerance { relative: 0.1, absolute: 8.0 };
    const P99: Tolerance = Tolerance { relative: 0.5, absolute: 2.0 };

    /// A 10-minute run sampled every 10 s, warm-up 60 s.
    fn series(f: impl Fn(usize, f64) -> f64) -> Vec<(f64, f64)> {
        (1..=60).map(|i| (i as f64 * 10.0, f(i, i as f64 * 10.0))).collect()
    }

    /// Deterministic noise in [-1, 1): a fixed linear congruential sequence.
    fn noise(i: usize) -> f64 {
        let x = (i as u64).wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((x >> 33) as f64 / (1u64 << 31) as f64) - 1.0
    }

    #[test]
    fn a_flat_series_does_not_trend() {
        let trend = judge(&series(|_, _| 93.0), 60.0, 600.0, RSS).unwrap();
        assert!(!trend.rising, "{trend:?}");
        assert!(trend.projected_growth.abs() < 1e-9);
        assert_eq!(trend.fitted, 55);
    }

    #[test]
    fn a_noisy_flat_series_does_not_trend() {
        // RSS wandering ±3 MiB around 93 MiB, and p99 wandering ±40 % around 2 ms.
        let rss = judge(&series(|i, _| 93.0 + 3.0 * noise(i)), 60.0, 600.0, RSS).unwrap();
        assert!(!rss.rising, "{rss:?}");
        let p99 = judge(&series(|i, _| 2.0 * (1.0 + 0.4 * noise(i))), 60.0, 600.0, P99).unwrap();
        assert!(!p99.rising, "{p99:?}");
    }

    #[test]
    fn one_noisy_window_at_the_end_does_not_fail_a_flat_run() {
        // The worst place for a spike: the last window pulls a plain least-squares slope most.
        let samples = series(|i, _| if i == 60 { 80.0 } else { 2.0 + 0.2 * noise(i) });
        let plain = least_squares(&samples[5..]).unwrap().1 * 600.0;
        assert!(plain > P99.absolute, "the spike alone would fail a plain fit ({plain})");
        let trend = judge(&samples, 60.0, 600.0, P99).unwrap();
        assert!(!trend.rising, "{trend:?}");
        assert!(trend.outliers >= 1);
    }

    #[test]
    fn a_steady_rise_fails() {
        // A leak of 1 MiB a minute: 10 MiB over the run on a level of ~94 MiB.
        let leak = judge(&series(|_, t| 93.0 + t / 60.0), 60.0, 600.0, RSS).unwrap();
        assert!(leak.rising, "{leak:?}");
        assert!((leak.slope_per_s - 1.0 / 60.0).abs() < 1e-9);
        // p99 creeping from 2 ms to 6 ms, with noise and one spike on top.
        let creep = judge(
            &series(|i, t| if i == 30 { 50.0 } else { 2.0 + 4.0 * t / 600.0 + 0.3 * noise(i) }),
            60.0,
            600.0,
            P99,
        )
        .unwrap();
        assert!(creep.rising, "{creep:?}");
    }

    #[test]
    fn growth_under_the_absolute_floor_passes() {
        // 1 ms → 1.8 ms is +80 %, but under the 2 ms floor.
        let trend = judge(&series(|_, t| 1.0 + 0.8 * t / 600.0), 60.0, 600.0, P99).unwrap();
        assert!(!trend.rising, "{trend:?}");
    }

    #[test]
    fn too_few_samples_after_the_warm_up_say_nothing() {
        assert!(judge(&[(10.0, 1.0), (20.0, 1.0), (30.0, 9.0)], 15.0, 30.0, P99).is_none());
        assert!(judge(&[(10.0, 1.0), (20.0, 2.0), (30.0, 3.0)], 10.0, 30.0, P99).is_some());
    }
}
