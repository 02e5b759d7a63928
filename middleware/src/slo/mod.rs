//! Service level objectives computed from every exchange, sampled or not: error budgets and
//! burn rates for the multi-window, multi-burn-rate alerts of the SRE workbook.
//!
//! An [`Objective`] says which exchanges count (a route, a model, a cohort) and what a good
//! one is: not failed (availability), a first token within a threshold (TTFT), an answer
//! within a threshold (duration), or generation at least as fast as a threshold (tokens per
//! second). An [`SloEngine`] is told each exchange's [`Outcome`] and keeps, per objective,
//! good/total counts in one-minute buckets over the last 6 hours and one-hour buckets over
//! the objective's period (30 days by default): 17 KiB for 30 days, whatever the
//! traffic. From them, [`SloEngine::status`] gives for each objective:
//!
//! - good and total counts over 5 min, 30 min, 1 h and 6 h, and the burn rate of each: the
//!   share of bad events over the share the objective allows (`1 - target`); 1 spends the
//!   budget exactly over the period;
//! - the page alert (burn rate ≥ 14.4 over both 1 h and 5 min: 2 % of a 30-day budget in an
//!   hour) and the ticket alert (≥ 6 over both 6 h and 30 min: 5 % in six hours), each only
//!   with at least [`MIN_BAD_EVENTS`] bad events in its short window;
//! - the error budget remaining over the period: `1 - bad / ((1 - target) × total)`.
//!
//! All methods take the time as an argument; [`SloEngine::register_metrics`] exports the
//! same on a meter (`llmtrace.slo.*`; Prometheus `llmtrace_slo_*`), counts as well as
//! ratios, so that several gateways' burn rates add up in PromQL.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use llmtrace::slo::{ObjectiveConfig, Outcome, SloEngine};
//!
//! let engine = SloEngine::new(vec![ObjectiveConfig::availability(0.995).build().unwrap()]);
//! let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
//! for i in 0..100 {
//!     let failed = i % 10 == 0; // 10 % fail: 20x what 99.5 % allows
//!     engine.record(&Outcome { status: if failed { 502 } else { 200 }, ..Outcome::default() }, t0);
//! }
//! let status = &engine.status(t0)[0];
//! assert_eq!(status.windows[0].total, 100);
//! assert!((status.windows[0].burn_rate.unwrap() - 20.0).abs() < 1e-9);
//! assert!(status.page);
//! ```

mod anomaly;
#[cfg(feature = "sampling")]
mod boost;
mod cohort;
mod config;
pub mod metrics;
mod window;

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use anomaly::{
    AnomalyDetector, BASELINE_WEIGHT, ControlChart, MAX_CHARTS, MIN_SUBGROUP, Rule, Signal, WARM_UP,
};
#[cfg(feature = "sampling")]
#[cfg_attr(docsrs, doc(cfg(feature = "sampling")))]
pub use boost::{COHORT, SamplingBoost};
pub use cohort::{
    ALPHA, BUCKETS, Cohort, CohortOutcome, CohortSummary, Comparison, MAX_SAMPLES, POWER, Test,
    bucket, compare, pick,
};
pub use config::{Indicator, Objective, ObjectiveConfig, SloError};
pub use window::Counts;
use window::Ring;

/// The windows burn rates are computed over, with their names as exported.
pub const WINDOWS: [(&str, u64); 4] = [("5m", 300), ("30m", 1800), ("1h", 3600), ("6h", 21_600)];
/// Burn rate over 1 h and 5 min that pages (2 % of a 30-day budget in one hour).
pub const PAGE_BURN_RATE: f64 = 14.4;
/// Burn rate over 6 h and 30 min that opens a ticket (5 % of a 30-day budget in six hours).
pub const TICKET_BURN_RATE: f64 = 6.0;
/// Bad events an alert's short window (5 min for the page, 30 min for the ticket) must hold:
/// on a quiet route, one or two failures are a huge burn rate but no reason to page.
pub const MIN_BAD_EVENTS: u64 = 5;

/// What one exchange did, as an objective judges it.
#[derive(Debug, Clone, Default)]
pub struct Outcome<'a> {
    /// The route template (`http.route`), when one matched.
    pub route: Option<&'a str>,
    /// The model asked for.
    pub model: Option<&'a str>,
    /// The canary cohort, when the route splits traffic.
    pub cohort: Option<&'a str>,
    /// The status the client got (0 when none was sent).
    pub status: u16,
    /// `error.type` when the exchange failed (an upstream error, a broken stream, a timeout).
    pub error_type: Option<&'a str>,
    /// The client went away before the answer ended: not counted by any objective.
    pub aborted: bool,
    /// The answer was streamed.
    pub streamed: bool,
    /// Request to first content chunk.
    pub ttft: Option<Duration>,
    /// Request to end of the answer.
    pub duration: Duration,
    /// Output tokens per second of generation.
    pub output_tokens_per_second: Option<f64>,
}

impl Outcome<'_> {
    /// Failed on the server's side: no answer, a 5xx, a 429 (the provider refused to serve),
    /// or an `error.type` on an answer that began well (a stream that broke, an error event).
    /// Other 4xx answers are the client's own mistakes and count as served, whatever error
    /// the body names.
    pub fn failed(&self) -> bool {
        match self.status {
            0 | 429 | 500.. => true,
            400..=499 => false,
            _ => self.error_type.is_some(),
        }
    }
}

/// One window of one objective, as [`SloEngine::status`] reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowStatus {
    /// `5m`, `30m`, `1h` or `6h`.
    pub window: &'static str,
    /// Events that met the objective.
    pub good: u64,
    /// Events counted.
    pub total: u64,
    /// Bad share over allowed share; `None` without events.
    pub burn_rate: Option<f64>,
}

/// One objective's state at a moment.
#[derive(Debug, Clone, PartialEq)]
pub struct SloStatus {
    /// The objective's name.
    pub name: String,
    /// What it measures, for people (`TTFT ≤ 2000 ms, streamed`).
    pub description: String,
    /// Its target share of good events.
    pub target: f64,
    /// The burn-rate windows, in [`WINDOWS`] order.
    pub windows: Vec<WindowStatus>,
    /// Good and total over the period.
    pub period: Counts,
    /// The period, in days.
    pub period_days: u32,
    /// `1 - bad / allowed bad` over the period (negative once overspent; 1 without events).
    pub budget_remaining: f64,
    /// Burn rate ≥ [`PAGE_BURN_RATE`] over both 1 h and 5 min, with at least
    /// [`MIN_BAD_EVENTS`] bad events in the 5 min.
    pub page: bool,
    /// Burn rate ≥ [`TICKET_BURN_RATE`] over both 6 h and 30 min, with at least
    /// [`MIN_BAD_EVENTS`] bad events in the 30 min.
    pub ticket: bool,
    /// Good and total since the engine started (monotonic, for `rate()` in PromQL).
    pub cumulative: Counts,
}

struct Tracked {
    objective: Objective,
    recent: Mutex<(Ring, Ring)>,
    good: AtomicU64,
    total: AtomicU64,
    /// The page alert as last computed: `(unix second + 1) << 1 | page`; 0 before any.
    page_cache: AtomicU64,
}

/// The objectives and their counts; shared by every request (`Sync`).
pub struct SloEngine {
    tracked: Vec<Tracked>,
}

impl std::fmt::Debug for SloEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SloEngine")
            .field(
                "objectives",
                &self
                    .tracked
                    .iter()
                    .map(|t| &t.objective)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Seconds since the Unix epoch (0 before it).
fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl SloEngine {
    /// An engine for `objectives`.
    pub fn new(objectives: Vec<Objective>) -> Self {
        let tracked = objectives
            .into_iter()
            .map(|objective| {
                let hours = objective.period_days() as usize * 24;
                Tracked {
                    recent: Mutex::new((Ring::new(60, 360), Ring::new(3600, hours))),
                    objective,
                    good: AtomicU64::new(0),
                    total: AtomicU64::new(0),
                    page_cache: AtomicU64::new(0),
                }
            })
            .collect();
        Self { tracked }
    }

    /// The objectives that apply when none are configured: availability 99.5 %, and the
    /// first token within 2 s for 95 % of streamed exchanges.
    pub fn defaults() -> Vec<Objective> {
        let build = |config: ObjectiveConfig| config.build().expect("valid defaults");
        vec![
            build(ObjectiveConfig::availability(0.995)),
            build(ObjectiveConfig::ttft(Duration::from_secs(2), 0.95)),
        ]
    }

    /// The objectives, in order.
    pub fn objectives(&self) -> impl Iterator<Item = &Objective> {
        self.tracked.iter().map(|t| &t.objective)
    }

    /// Counts `outcome`, at `now`, for every objective it concerns. O(objectives).
    pub fn record(&self, outcome: &Outcome<'_>, now: SystemTime) {
        let seconds = unix_seconds(now);
        for tracked in &self.tracked {
            let Some(good) = tracked.objective.judge(outcome) else {
                continue;
            };
            tracked.total.fetch_add(1, Ordering::Relaxed);
            tracked.good.fetch_add(u64::from(good), Ordering::Relaxed);
            let mut rings = tracked.recent.lock().unwrap_or_else(|e| e.into_inner());
            rings.0.record(seconds, good);
            rings.1.record(seconds, good);
        }
    }

    /// Every objective's windows, burn rates, alerts and budget at `now`.
    pub fn status(&self, now: SystemTime) -> Vec<SloStatus> {
        self.tracked.iter().map(|t| t.status(now)).collect()
    }

    /// The first objective in page-alert burn that `outcome`'s route, model and cohort fall
    /// under (for sampling that keeps more while a budget burns). Each objective's alert is
    /// computed at most once a second.
    pub fn burning(&self, outcome: &Outcome<'_>, now: SystemTime) -> Option<&str> {
        let second = unix_seconds(now) + 1;
        self.tracked
            .iter()
            .filter(|t| t.objective.scope_matches(outcome))
            .find(|t| {
                let cached = t.page_cache.load(Ordering::Relaxed);
                if cached >> 1 == second {
                    return cached & 1 == 1;
                }
                let page = t.status(now).page;
                t.page_cache
                    .store(second << 1 | u64::from(page), Ordering::Relaxed);
                page
            })
            .map(|t| t.objective.name())
    }
}

impl Tracked {
    fn status(&self, now: SystemTime) -> SloStatus {
        let seconds = unix_seconds(now);
        let objective = &self.objective;
        let allowed = 1.0 - objective.target();
        let (windows, period) = {
            let rings = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            let windows: Vec<WindowStatus> = WINDOWS
                .iter()
                .map(|(name, length)| {
                    let counts = rings.0.sum(seconds, *length);
                    WindowStatus {
                        window: name,
                        good: counts.good,
                        total: counts.total,
                        burn_rate: (counts.total > 0)
                            .then(|| counts.bad() as f64 / counts.total as f64 / allowed),
                    }
                })
                .collect();
            let period = rings
                .1
                .sum(seconds, u64::from(objective.period_days()) * 86_400);
            (windows, period)
        };
        let over = |i: usize, threshold: f64| windows[i].burn_rate.is_some_and(|b| b >= threshold);
        let enough = |i: usize| windows[i].total - windows[i].good >= MIN_BAD_EVENTS;
        let budget_remaining = if period.total == 0 {
            1.0
        } else {
            1.0 - period.bad() as f64 / (allowed * period.total as f64)
        };
        SloStatus {
            name: objective.name().to_owned(),
            description: objective.describe(),
            target: objective.target(),
            page: over(2, PAGE_BURN_RATE) && over(0, PAGE_BURN_RATE) && enough(0),
            ticket: over(3, TICKET_BURN_RATE) && over(1, TICKET_BURN_RATE) && enough(1),
            windows,
            period,
            period_days: objective.period_days(),
            budget_remaining,
            cumulative: Counts {
                good: self.good.load(Ordering::Relaxed),
                total: self.total.load(Ordering::Relaxed),
            },
        }
    }
}

#[cfg(test)]
mod tests;
