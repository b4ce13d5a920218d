//! The report's chart, drawn on the server as SVG: no chart library, no script, and it prints.
//! Credits and debits of each day are bars side by side; the closing balance is a line over
//! them. The same numbers are in the table under it, for screen readers and for copying.
//!
//! Amounts stay integer minor units; they become `f64` only as pixel positions.

use chrono::NaiveDate;
use maud::{html, Markup};

/// One day of the report, in minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportDay {
    pub date: NaiveDate,
    pub opening: i64,
    pub credits: i64,
    pub debits: i64,
    pub closing: i64,
    pub entry_count: u64,
}

/// What the chart says in words (its `title` and `desc`) and how it writes an amount.
pub struct ChartText<'a> {
    pub title: &'a str,
    pub desc: String,
    pub amount: &'a dyn Fn(i64) -> String,
    pub date: &'a dyn Fn(NaiveDate) -> String,
}

const WIDTH: f64 = 480.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 8.0;
const RIGHT: f64 = 8.0;
const TOP: f64 = 24.0;
const BOTTOM: f64 = 28.0;

/// The vertical scale: from the lowest to the highest value shown, zero always included.
struct Scale {
    lo: f64,
    hi: f64,
}

impl Scale {
    fn of(days: &[ReportDay]) -> Self {
        let values = days.iter().flat_map(|d| [d.credits, d.debits, d.closing]);
        let lo = values.clone().min().unwrap_or(0).min(0);
        let hi = values.max().unwrap_or(0).max(0);
        // An empty period still gets a scale (a flat line on zero).
        let hi = if hi == lo { lo.saturating_add(1) } else { hi };
        Self { lo: lo as f64, hi: hi as f64 }
    }

    fn y(&self, value: i64) -> f64 {
        TOP + (self.hi - value as f64) / (self.hi - self.lo) * (HEIGHT - TOP - BOTTOM)
    }
}

fn px(value: f64) -> String {
    format!("{value:.1}")
}

/// The chart of `days` (oldest first).
pub fn chart(days: &[ReportDay], text: &ChartText) -> Markup {
    let scale = Scale::of(days);
    let slot = (WIDTH - LEFT - RIGHT) / days.len().max(1) as f64;
    let bar = (slot * 0.38).max(0.5);
    let zero = scale.y(0);
    let x = |i: usize| LEFT + slot * i as f64;
    let line: Vec<String> =
        days.iter().enumerate().map(|(i, d)| format!("{},{}", px(x(i) + slot / 2.0), px(scale.y(d.closing)))).collect();
    // At most five date labels whatever the length of the period, so they never overlap.
    let every = days.len().div_ceil(5).max(1);
    html! {
        svg.chart viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } role="img" aria-labelledby="chart-title chart-desc"
            xmlns="http://www.w3.org/2000/svg" {
            title #chart-title { (text.title) }
            desc #chart-desc { (text.desc) }
            text.axis x=(px(LEFT)) y="15" { ((text.amount)(scale.hi as i64)) }
            line.zero x1=(px(LEFT)) x2=(px(WIDTH - RIGHT)) y1=(px(zero)) y2=(px(zero)) {}
            @for (i, d) in days.iter().enumerate() {
                g data-date=(d.date) {
                    rect.bar-credit x=(px(x(i) + slot * 0.1)) width=(px(bar))
                        y=(px(scale.y(d.credits))) height=(px(zero - scale.y(d.credits))) {}
                    rect.bar-debit x=(px(x(i) + slot * 0.1 + bar)) width=(px(bar))
                        y=(px(scale.y(d.debits))) height=(px(zero - scale.y(d.debits))) {}
                }
                @if i % every == 0 {
                    text.axis x=(px(x(i) + slot / 2.0)) y=(px(HEIGHT - 8.0)) text-anchor="middle" { ((text.date)(d.date)) }
                }
            }
            polyline.closing-line points=(line.join(" ")) {}
            @for (i, d) in days.iter().enumerate() {
                circle.closing-dot cx=(px(x(i) + slot / 2.0)) cy=(px(scale.y(d.closing))) r="3" {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(n: u32, credits: i64, debits: i64, closing: i64) -> ReportDay {
        let date = NaiveDate::from_ymd_opt(2026, 12, n).unwrap_or_default();
        ReportDay { date, opening: closing - credits + debits, credits, debits, closing, entry_count: 1 }
    }

    fn render(days: &[ReportDay]) -> String {
        let amount = |m: i64| m.to_string();
        let date = |d: NaiveDate| d.format("%d").to_string();
        let text = ChartText { title: "T", desc: "D".into(), amount: &amount, date: &date };
        chart(days, &text).into_string()
    }

    #[test]
    fn the_chart_is_an_image_with_a_title_and_a_description() {
        let svg = render(&[day(1, 100, 40, 60)]);
        assert!(svg.contains(r#"role="img""#) && svg.contains(r#"aria-labelledby="chart-title chart-desc""#));
        assert!(
            svg.contains(r#"<title id="chart-title">T</title>"#) && svg.contains(r#"<desc id="chart-desc">D</desc>"#)
        );
        assert!(!svg.contains("style="), "no inline style: the CSP refuses it");
    }

    #[test]
    fn each_day_has_a_credit_and_a_debit_bar_and_a_point_of_the_closing_line() {
        let svg = render(&[day(1, 100, 40, 60), day(2, 0, 30, 30), day(3, 50, 0, 80)]);
        assert_eq!(svg.matches("bar-credit").count(), 3);
        assert_eq!(svg.matches("bar-debit").count(), 3);
        assert_eq!(svg.matches("closing-dot").count(), 3);
        let points = svg.split(r#"points=""#).nth(1).and_then(|p| p.split('"').next()).unwrap_or_default();
        assert_eq!(points.split(' ').count(), 3, "{points}");
    }

    #[test]
    fn taller_bars_are_larger_amounts_and_a_negative_balance_is_below_zero() {
        let scale = Scale::of(&[day(1, 100, 40, -20)]);
        assert!(scale.y(100) < scale.y(40), "higher on the page");
        assert!(scale.y(-20) > scale.y(0), "under the zero line");
        assert!((scale.y(100) - TOP).abs() < 1e-9 && (scale.y(-20) - (HEIGHT - BOTTOM)).abs() < 1e-9);
    }

    #[test]
    fn an_empty_period_still_draws() {
        let svg = render(&[day(1, 0, 0, 0)]);
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
    }
}
