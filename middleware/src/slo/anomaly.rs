//! Control charts on time to first token: a Shewhart chart with the Western Electric rules
//! over a moving baseline, one per route and model (bounded), for sampling that keeps more
//! while TTFT shifts.
//!
//! A chart point is not one exchange: at a hundred requests a second, even the rules' in-control
//! false-alarm rate (about 1 point in 55 here) would fire every second. The
//! [`AnomalyDetector`] charts the mean `ln(TTFT)` of each route and model over a fixed
//! interval (10 s by default, at least 5 exchanges), so a chart sees at most 6 points a
//! minute whatever the traffic, and only a shift upwards (slower first tokens) raises its
//! alarm.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// Points before a chart judges anything: its baseline is their exact mean and variance.
pub const WARM_UP: u32 = 30;
/// Weight of each new point in the moving baseline (an EWMA of mean and variance: about
/// the last 50 points).
pub const BASELINE_WEIGHT: f64 = 0.02;
/// Charts kept (route × model); later keys share one.
pub const MAX_CHARTS: usize = 64;
/// Bytes of a route or model name kept in a chart's key.
const MAX_KEY_BYTES: usize = 64;

/// A rule fired on a point: which, and on which side of the centre line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signal {
    /// The rule.
    pub rule: Rule,
    /// Above the centre line: slower than the baseline.
    pub upward: bool,
}

/// Which Western Electric rule fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// One point beyond 3σ.
    Beyond3Sigma,
    /// Two of three successive points beyond 2σ, on the same side.
    TwoOfThreeBeyond2Sigma,
    /// Four of five successive points beyond 1σ, on the same side.
    FourOfFiveBeyond1Sigma,
    /// Eight successive points on the same side of the centre line.
    EightOnOneSide,
}

/// One chart: the baseline of `ln(ttft)` and the last eight standardised points.
///
/// TTFT is skewed (a long right tail); its logarithm is close enough to normal for the
/// rules' false-alarm rates to hold. A point is judged against the baseline before it, then
/// joins the baseline, so a lasting shift is absorbed after some tens of points and the
/// chart clears by itself.
///
/// ```
/// use std::time::Duration;
/// use llmtrace::slo::{ControlChart, Rule};
///
/// let mut chart = ControlChart::default();
/// for i in 0..200 {
///     // 400–600 ms, steady.
///     assert_eq!(chart.observe(Duration::from_millis(400 + (i * 37) % 200)), None);
/// }
/// let signal = chart.observe(Duration::from_secs(5)).unwrap();
/// assert_eq!(signal.rule, Rule::Beyond3Sigma);
/// assert!(signal.upward);
/// ```
#[derive(Debug, Clone, Default)]
pub struct ControlChart {
    n: u32,
    mean: f64,
    /// Sum of squared deviations during warm-up, the variance after it.
    var: f64,
    recent: [f32; 8],
    filled: usize,
}

impl ControlChart {
    /// Judges one TTFT against the baseline, then adds it to the baseline; returns the first
    /// rule that fires.
    pub fn observe(&mut self, ttft: Duration) -> Option<Signal> {
        self.observe_log(log_ms(ttft))
    }

    /// The same for a value already on the chart's scale (`ln` of milliseconds, or the mean
    /// of several).
    pub fn observe_log(&mut self, x: f64) -> Option<Signal> {
        if !x.is_finite() {
            return None;
        }
        if self.n < WARM_UP {
            // Welford: exact mean and squared deviations.
            self.n += 1;
            let delta = x - self.mean;
            self.mean += delta / f64::from(self.n);
            self.var += delta * (x - self.mean);
            if self.n == WARM_UP {
                self.var /= f64::from(WARM_UP - 1);
            }
            return None;
        }
        let sd = self.var.sqrt().max(1e-6);
        let z = ((x - self.mean) / sd) as f32;
        self.recent.rotate_right(1);
        self.recent[0] = z;
        self.filled = (self.filled + 1).min(8);
        let delta = x - self.mean;
        self.mean += BASELINE_WEIGHT * delta;
        self.var = (1.0 - BASELINE_WEIGHT) * (self.var + BASELINE_WEIGHT * delta * delta);
        self.rule()
    }

    fn rule(&self) -> Option<Signal> {
        let r = &self.recent[..self.filled];
        let count = |k: usize, beyond: f32, sign: f32| {
            r.iter().take(k).filter(|z| **z * sign > beyond).count()
        };
        let signal = |rule, sign: f32| {
            Some(Signal {
                rule,
                upward: sign > 0.0,
            })
        };
        if r[0].abs() > 3.0 {
            return signal(Rule::Beyond3Sigma, r[0]);
        }
        for sign in [1.0, -1.0] {
            // The newest point takes part: a run is flagged when it completes.
            let newest = |beyond: f32| r[0] * sign > beyond;
            if r.len() >= 3 && newest(2.0) && count(3, 2.0, sign) >= 2 {
                return signal(Rule::TwoOfThreeBeyond2Sigma, sign);
            }
            if r.len() >= 5 && newest(1.0) && count(5, 1.0, sign) >= 4 {
                return signal(Rule::FourOfFiveBeyond1Sigma, sign);
            }
            if r.len() >= 8 && count(8, 0.0, sign) == 8 {
                return signal(Rule::EightOnOneSide, sign);
            }
        }
        None
    }
}

/// `ln` of a duration in milliseconds (1 µs at least).
fn log_ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).max(0.001).ln()
}

/// The exchanges of one interval, becoming one chart point.
#[derive(Debug, Clone, Default)]
struct Subgroup {
    interval: u64,
    sum: f64,
    n: u32,
}

#[derive(Debug, Default)]
struct Charted {
    chart: ControlChart,
    open: Subgroup,
    fired: Option<SystemTime>,
}

/// Charts keyed by route and model.
type Charts = HashMap<(String, String), Charted>;

/// Control charts of TTFT per route and model (at most [`MAX_CHARTS`]), each fed the mean
/// `ln(TTFT)` of an interval, and when each last fired upwards; `Sync`.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use llmtrace::slo::AnomalyDetector;
///
/// let detector = AnomalyDetector::new(Duration::from_secs(10), Duration::from_secs(60));
/// let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
/// // 10 minutes at 2 requests a second, first tokens at 400–600 ms.
/// for i in 0..1200u64 {
///     let at = t0 + Duration::from_millis(i * 500);
///     let ttft = Duration::from_millis(400 + (i * 37) % 200);
///     detector.observe("/v1/chat/completions", "gpt-4o", ttft, at);
/// }
/// // Then first tokens take 3 s for 20 seconds.
/// for i in 1200..1240u64 {
///     let at = t0 + Duration::from_millis(i * 500);
///     detector.observe("/v1/chat/completions", "gpt-4o", Duration::from_secs(3), at);
/// }
/// assert!(detector.firing("/v1/chat/completions", "gpt-4o", t0 + Duration::from_secs(620)));
/// ```
#[derive(Debug)]
pub struct AnomalyDetector {
    interval: u64,
    hold: Duration,
    charts: Mutex<Charts>,
    signals: AtomicU64,
}

/// Exchanges an interval needs to become a chart point.
pub const MIN_SUBGROUP: u32 = 5;

impl AnomalyDetector {
    /// A detector charting one point per `interval` (whole seconds, at least 1; 10 s is a
    /// good start) whose alarm holds for `hold` after the last upward signal (60 s).
    pub fn new(interval: Duration, hold: Duration) -> Self {
        Self {
            interval: interval.as_secs().max(1),
            hold,
            charts: Mutex::new(HashMap::new()),
            signals: AtomicU64::new(0),
        }
    }

    /// One exchange's TTFT at `now`. When it closes the previous interval of its chart, that
    /// interval's point is judged; returns the signal, if one fired.
    pub fn observe(
        &self,
        route: &str,
        model: &str,
        ttft: Duration,
        now: SystemTime,
    ) -> Option<Signal> {
        let interval = now
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            / self.interval;
        let mut charts = self.charts.lock().unwrap_or_else(|e| e.into_inner());
        let key = Self::key(&charts, route, model);
        let charted = charts.entry(key).or_default();
        let mut signal = None;
        if interval > charted.open.interval {
            let closed = std::mem::replace(
                &mut charted.open,
                Subgroup {
                    interval,
                    ..Subgroup::default()
                },
            );
            if closed.n >= MIN_SUBGROUP {
                signal = charted.chart.observe_log(closed.sum / f64::from(closed.n));
            }
        }
        // A late exchange (an earlier interval) counts in the open one.
        charted.open.sum += log_ms(ttft);
        charted.open.n += 1;
        if let Some(s) = signal.filter(|s| s.upward) {
            charted.fired = Some(now);
            self.signals.fetch_add(1, Ordering::Relaxed);
            return Some(s);
        }
        signal
    }

    /// Whether the chart of `route` and `model` signalled slower first tokens within the
    /// hold before `now`.
    pub fn firing(&self, route: &str, model: &str, now: SystemTime) -> bool {
        let charts = self.charts.lock().unwrap_or_else(|e| e.into_inner());
        let key = Self::key(&charts, route, model);
        charts
            .get(&key)
            .and_then(|c| c.fired)
            .is_some_and(|fired| now.duration_since(fired).unwrap_or_default() <= self.hold)
    }

    /// Upward signals since the start.
    pub fn signals(&self) -> u64 {
        self.signals.load(Ordering::Relaxed)
    }

    /// Exports the upward signals as the counter `llmtrace.slo.anomaly.signals` on `meter`.
    pub fn register_metrics(self: &std::sync::Arc<Self>, meter: &opentelemetry::metrics::Meter) {
        let detector = self.clone();
        meter
            .u64_observable_counter("llmtrace.slo.anomaly.signals")
            .with_description("TTFT control-chart signals of slower first tokens")
            .with_callback(move |o| o.observe(detector.signals(), &[]))
            .build();
    }

    /// The chart key: the names cut to [`MAX_KEY_BYTES`], or the shared key once
    /// [`MAX_CHARTS`] exist.
    fn key(charts: &Charts, route: &str, model: &str) -> (String, String) {
        let key = (cut(route), cut(model));
        if charts.len() >= MAX_CHARTS && !charts.contains_key(&key) {
            return (String::new(), crate::limits::OTHER_LABEL.to_owned());
        }
        key
    }
}

fn cut(text: &str) -> String {
    let mut end = text.len().min(MAX_KEY_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    /// SplitMix64 and Box–Muller: reproducible normal noise without a dependency.
    struct Noise(u64);

    impl Noise {
        fn uniform(&mut self) -> f64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
        }

        fn normal(&mut self) -> f64 {
            let (u, v) = (self.uniform().max(1e-300), self.uniform());
            (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
        }

        /// A TTFT whose logarithm is normal: median 500 ms, σ 0.3, shifted by `shift` σ.
        fn ttft(&mut self, shift: f64) -> Duration {
            Duration::from_secs_f64((500f64.ln() + 0.3 * (self.normal() + shift)).exp() / 1000.0)
        }
    }

    /// False alarms per point on in-control noise, over `points` after warm-up: all
    /// signals, and upward ones.
    fn false_alarm_rates(seed: u64, points: usize) -> (f64, f64) {
        let mut noise = Noise(seed);
        let mut chart = ControlChart::default();
        for _ in 0..WARM_UP {
            chart.observe(noise.ttft(0.0));
        }
        let signals: Vec<Signal> = (0..points)
            .filter_map(|_| chart.observe(noise.ttft(0.0)))
            .collect();
        let upward = signals.iter().filter(|s| s.upward).count();
        (
            signals.len() as f64 / points as f64,
            upward as f64 / points as f64,
        )
    }

    #[test]
    fn noise_raises_few_alarms() {
        // Known rate for the four rules with exact parameters: about 1 in 92 points
        // (ARL 91.75); the moving baseline's estimation error adds some.
        let (all, upward) = false_alarm_rates(7, 10_000);
        eprintln!(
            "false alarms on 10 000 points of noise: {:.2} % (upward {:.2} %)",
            all * 100.0,
            upward * 100.0
        );
        assert!((0.005..0.03).contains(&all), "{all}");
        assert!(upward < all && upward > 0.0, "{upward}");
    }
    #[test]
    fn a_two_sigma_shift_is_caught_within_a_few_points() {
        // Theory for the four rules at a 2σ shift: about 3.2 points on average (exact
        // parameters). Measured over 1 000 shifts, each after 200 steady points.
        let mut noise = Noise(11);
        let mut delays = Vec::new();
        for _ in 0..1000 {
            let mut chart = ControlChart::default();
            for _ in 0..200 {
                chart.observe(noise.ttft(0.0));
            }
            let delay = (1..=100)
                .find(|_| chart.observe(noise.ttft(2.0)).is_some_and(|s| s.upward))
                .unwrap_or(101);
            delays.push(delay);
        }
        delays.sort_unstable();
        let mean = delays.iter().sum::<usize>() as f64 / delays.len() as f64;
        let p95 = delays[delays.len() * 95 / 100];
        eprintln!("2σ shift caught after {mean:.2} points on average, p95 {p95}");
        assert!(mean <= 5.0, "mean {mean}");
        assert!(p95 <= 10, "p95 {p95}");
    }

    #[test]
    fn the_detector_charts_intervals_holds_its_alarm_then_clears() {
        let detector = AnomalyDetector::new(Duration::from_secs(10), Duration::from_secs(60));
        let t0 = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut noise = Noise(3);
        let route = "/v1/chat/completions";
        // An hour at 20 requests a second: 360 points, whatever the rate.
        let mut quiet_signals = 0;
        for i in 0..72_000u64 {
            let at = t0 + Duration::from_millis(i * 50);
            quiet_signals += u32::from(
                detector
                    .observe(route, "gpt-4o", noise.ttft(0.0), at)
                    .is_some(),
            );
        }
        eprintln!("signals in an hour of noise: {quiet_signals}");
        assert!(quiet_signals <= 15, "{quiet_signals}");
        let calm = t0 + Duration::from_secs(3600);
        // Then first tokens slow down by 2σ of a single exchange: every interval's mean is far
        // out, and the alarm rises when the first slow interval closes.
        let mut first = None;
        for i in 0..400u64 {
            let at = calm + Duration::from_millis(i * 50);
            if detector
                .observe(route, "gpt-4o", noise.ttft(2.0), at)
                .is_some()
                && first.is_none()
            {
                first = Some(at);
            }
        }
        let first = first.expect("the shift was caught");
        assert_eq!(
            first,
            calm + Duration::from_secs(10),
            "at the first slow interval's close"
        );
        assert!(detector.firing(route, "gpt-4o", calm + Duration::from_secs(20)));
        assert!(!detector.firing(route, "gpt-4o-mini", calm + Duration::from_secs(20)));
        // Back to normal: the alarm holds 60 s after the last upward signal, then clears.
        let mut last = calm;
        for i in 400..4000u64 {
            let at = calm + Duration::from_millis(i * 50);
            if detector
                .observe(route, "gpt-4o", noise.ttft(0.0), at)
                .is_some_and(|s| s.upward)
            {
                last = at;
            }
        }
        let end = calm + Duration::from_millis(4000 * 50);
        assert!(
            last < end - Duration::from_secs(61),
            "cleared well before the end"
        );
        assert!(!detector.firing(route, "gpt-4o", end));
        // Client-chosen model names: at most MAX_CHARTS charts, the rest share one.
        for i in 0..1000 {
            detector.observe("/r", &format!("model-{i}"), Duration::from_millis(500), end);
        }
        assert!(detector.charts.lock().unwrap().len() <= MAX_CHARTS + 1);
    }
}
