//! Latency distributions: HdrHistograms in microseconds, their percentiles and CDF points, and
//! the "added over the baseline" arithmetic of the report.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// The largest latency a histogram holds (longer values are clamped to it): 10 minutes.
const MAX_MICROS: u64 = 600_000_000;

/// A latency distribution with 3 significant digits, 1 µs to 10 min.
#[derive(Clone)]
pub struct Latencies {
    histogram: Histogram<u64>,
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies {
            histogram: Histogram::new_with_bounds(1, MAX_MICROS, 3)
                .expect("static histogram bounds are valid"),
        }
    }
}

impl std::fmt::Debug for Latencies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Latencies")
            .field("count", &self.count())
            .finish()
    }
}

impl Latencies {
    /// Records one value (clamped to 1 µs .. 10 min).
    pub fn record(&mut self, value: Duration) {
        let micros = (value.as_micros() as u64).clamp(1, MAX_MICROS);
        self.histogram
            .record(micros)
            .expect("value is clamped into the histogram's range");
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Latencies) {
        self.histogram
            .add(&other.histogram)
            .expect("histograms with the same bounds add up");
    }

    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// The value at `quantile` (0.0 ..= 1.0) in milliseconds; `None` when empty.
    pub fn quantile_ms(&self, quantile: f64) -> Option<f64> {
        (self.count() > 0).then(|| self.histogram.value_at_quantile(quantile) as f64 / 1000.0)
    }

    /// The largest value in milliseconds; `None` when empty.
    pub fn max_ms(&self) -> Option<f64> {
        (self.count() > 0).then(|| self.histogram.max() as f64 / 1000.0)
    }

    /// The usual summary: p50, p90, p99, p99.9, max.
    pub fn summary(&self) -> Summary {
        Summary {
            count: self.count(),
            p50_ms: self.quantile_ms(0.50),
            p90_ms: self.quantile_ms(0.90),
            p99_ms: self.quantile_ms(0.99),
            p999_ms: self.quantile_ms(0.999),
            max_ms: self.max_ms(),
        }
    }

    /// Points `(milliseconds, cumulative fraction)` of the CDF, one per distinct recorded
    /// bucket, ascending; the last fraction is 1.0.
    pub fn cdf_points(&self) -> Vec<(f64, f64)> {
        let total = self.count() as f64;
        if total == 0.0 {
            return Vec::new();
        }
        let mut seen = 0u64;
        self.histogram
            .iter_recorded()
            .map(|v| {
                seen += v.count_at_value();
                (
                    self.histogram.highest_equivalent(v.value_iterated_to()) as f64 / 1000.0,
                    seen as f64 / total,
                )
            })
            .collect()
    }
}

/// Percentiles of one distribution, in milliseconds (`None` when nothing was recorded).
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq)]
pub struct Summary {
    /// Number of values.
    pub count: u64,
    /// Median.
    pub p50_ms: Option<f64>,
    /// 90th percentile.
    pub p90_ms: Option<f64>,
    /// 99th percentile.
    pub p99_ms: Option<f64>,
    /// 99.9th percentile.
    pub p999_ms: Option<f64>,
    /// Largest value.
    pub max_ms: Option<f64>,
}

/// `target - baseline` when both are known: the latency a hop adds, comparing the same
/// percentile of two runs (not a percentile of per-request differences, which an open-loop
/// run cannot pair up).
pub fn added(target: Option<f64>, baseline: Option<f64>) -> Option<f64> {
    Some(target? - baseline?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn percentiles_of_a_uniform_distribution() {
        let mut l = Latencies::default();
        for i in 1..=1000 {
            l.record(ms(i));
        }
        let s = l.summary();
        assert_eq!(s.count, 1000);
        let near = |got: Option<f64>, want: f64| {
            let got = got.unwrap();
            assert!((got - want).abs() <= want * 0.002, "{got} vs {want}");
        };
        near(s.p50_ms, 500.0);
        near(s.p90_ms, 900.0);
        near(s.p99_ms, 990.0);
        near(s.max_ms, 1000.0);
    }

    #[test]
    fn empty_has_no_percentiles_and_clamps_extremes() {
        let mut l = Latencies::default();
        assert_eq!(l.summary().p99_ms, None);
        assert!(l.cdf_points().is_empty());
        l.record(Duration::ZERO);
        l.record(Duration::from_secs(3600));
        assert_eq!(l.count(), 2);
        assert!(l.max_ms().unwrap() <= 600_000.0 * 1.001);
    }

    #[test]
    fn cdf_steps() {
        let mut a = Latencies::default();
        for v in [1, 1, 3, 4] {
            a.record(ms(v));
        }
        let cdf = a.cdf_points();
        assert_eq!(cdf.len(), 3);
        assert_eq!(cdf[0].1, 0.5);
        assert_eq!(cdf[2].1, 1.0);
        assert!(cdf.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1));
        assert!((cdf[2].0 - 4.0).abs() < 0.01);
    }

    #[test]
    fn added_needs_both() {
        assert_eq!(added(Some(5.5), Some(5.0)), Some(0.5));
        assert_eq!(added(None, Some(5.0)), None);
        assert_eq!(added(Some(1.0), None), None);
    }
}
