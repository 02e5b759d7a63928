//! What an objective measures and which exchanges it counts, from configuration.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use super::Outcome;

/// The longest period an objective's budget is counted over, in days.
pub const MAX_PERIOD_DAYS: u32 = 90;
/// Names become metric label values: at most this many bytes of `[A-Za-z0-9_.-]`.
pub const MAX_NAME_BYTES: usize = 64;

/// What makes an exchange good.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Indicator {
    /// It did not fail ([`Outcome::failed`]).
    Availability,
    /// Its first token came within the threshold (exchanges with a first token).
    Ttft(Duration),
    /// Its answer ended within the threshold (exchanges that did not fail).
    Duration(Duration),
    /// It generated at least this many output tokens per second (exchanges with a rate).
    TokensPerSecond(f64),
}

/// `[[slo]]` in the gateway: one objective, deserialisable.
///
/// ```toml
/// [[slo]]
/// name = "chat-ttft"
/// objective = "ttft"          # availability | ttft | duration | tokens_per_second
/// threshold_ms = 1500         # ttft and duration
/// # min_tokens_per_second = 20  # tokens_per_second
/// target = 0.95
/// route = "/v1/chat/completions"   # optional scope: route, model, cohort
/// period_days = 30
/// ```
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ObjectiveConfig {
    /// The objective's name (a metric label): defaults to the objective and its scope.
    #[serde(default)]
    pub name: Option<String>,
    /// `availability`, `ttft`, `duration` or `tokens_per_second`.
    pub objective: String,
    /// The share of good exchanges aimed for, in `(0, 1)`: `0.995` is 99.5 %.
    pub target: f64,
    /// For `ttft` and `duration`: the most a good exchange takes, in ms.
    #[serde(default)]
    pub threshold_ms: Option<u64>,
    /// For `tokens_per_second`: the least a good exchange generates.
    #[serde(default)]
    pub min_tokens_per_second: Option<f64>,
    /// Count only exchanges of this route (`http.route`).
    #[serde(default)]
    pub route: Option<String>,
    /// Count only exchanges asking for this model.
    #[serde(default)]
    pub model: Option<String>,
    /// Count only exchanges of this canary cohort.
    #[serde(default)]
    pub cohort: Option<String>,
    /// For `ttft`: count only streamed exchanges (default true).
    #[serde(default)]
    pub streamed_only: Option<bool>,
    /// The budget's period in days (default 30, at most 90).
    #[serde(default)]
    pub period_days: Option<u32>,
}

impl ObjectiveConfig {
    fn new(objective: &str, target: f64) -> Self {
        Self {
            name: None,
            objective: objective.to_owned(),
            target,
            threshold_ms: None,
            min_tokens_per_second: None,
            route: None,
            model: None,
            cohort: None,
            streamed_only: None,
            period_days: None,
        }
    }

    /// Non-failed exchanges over all, aiming at `target`.
    pub fn availability(target: f64) -> Self {
        Self::new("availability", target)
    }

    /// Streamed exchanges whose first token came within `threshold`, aiming at `target`.
    pub fn ttft(threshold: Duration, target: f64) -> Self {
        Self {
            threshold_ms: Some(u64::try_from(threshold.as_millis()).unwrap_or(u64::MAX)),
            ..Self::new("ttft", target)
        }
    }

    /// Checks the configuration and builds the objective; the error names the field.
    pub fn build(&self) -> Result<Objective, SloError> {
        if !(self.target > 0.0 && self.target < 1.0) {
            return Err(SloError::new(
                "target",
                "must be between 0 and 1, exclusive (0.995 is 99.5 %)",
            ));
        }
        let threshold = |what: &str| match self.threshold_ms {
            Some(ms) if ms > 0 => Ok(Duration::from_millis(ms)),
            _ => Err(SloError::new(
                "threshold_ms",
                format!("{what} needs threshold_ms > 0"),
            )),
        };
        let indicator = match self.objective.as_str() {
            "availability" => Indicator::Availability,
            "ttft" => Indicator::Ttft(threshold("ttft")?),
            "duration" => Indicator::Duration(threshold("duration")?),
            "tokens_per_second" => match self.min_tokens_per_second {
                Some(rate) if rate.is_finite() && rate > 0.0 => Indicator::TokensPerSecond(rate),
                _ => {
                    return Err(SloError::new(
                        "min_tokens_per_second",
                        "tokens_per_second needs min_tokens_per_second > 0",
                    ));
                }
            },
            other => {
                return Err(SloError::new(
                    "objective",
                    format!(
                        "{other:?} is not one of availability, ttft, duration, tokens_per_second"
                    ),
                ));
            }
        };
        let period_days = self.period_days.unwrap_or(30);
        if !(1..=MAX_PERIOD_DAYS).contains(&period_days) {
            return Err(SloError::new(
                "period_days",
                format!("must be 1 to {MAX_PERIOD_DAYS}"),
            ));
        }
        let name = match &self.name {
            Some(name) => name.clone(),
            None => self.default_name(),
        };
        if name.is_empty()
            || name.len() > MAX_NAME_BYTES
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        {
            return Err(SloError::new(
                "name",
                format!("{name:?}: 1 to {MAX_NAME_BYTES} characters of A-Z a-z 0-9 _ . -"),
            ));
        }
        Ok(Objective {
            name,
            indicator,
            target: self.target,
            route: self.route.clone(),
            model: self.model.clone(),
            cohort: self.cohort.clone(),
            streamed_only: self.streamed_only.unwrap_or(true),
            period_days,
        })
    }

    /// `ttft`, `availability.gpt-4o`, … cut to a label-safe name.
    fn default_name(&self) -> String {
        let mut name = self.objective.clone();
        for scope in [&self.route, &self.model, &self.cohort]
            .into_iter()
            .flatten()
        {
            name.push('.');
            name.extend(scope.chars().map(|c| {
                if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                    c
                } else {
                    '_'
                }
            }));
        }
        let mut end = name.len().min(MAX_NAME_BYTES);
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        name.truncate(end);
        name
    }
}

/// A checked objective: what it measures, which exchanges it counts, its target.
#[derive(Debug, Clone, PartialEq)]
pub struct Objective {
    name: String,
    indicator: Indicator,
    target: f64,
    route: Option<String>,
    model: Option<String>,
    cohort: Option<String>,
    streamed_only: bool,
    period_days: u32,
}

impl Objective {
    /// Its name (a metric label value).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What it measures.
    pub fn indicator(&self) -> Indicator {
        self.indicator
    }

    /// The share of good events aimed for.
    pub fn target(&self) -> f64 {
        self.target
    }

    /// The budget's period in days.
    pub fn period_days(&self) -> u32 {
        self.period_days
    }

    /// `TTFT ≤ 2000 ms (streamed) ≥ 95 %, route /v1/chat/completions`.
    pub fn describe(&self) -> String {
        let what = match self.indicator {
            Indicator::Availability => "not failed".to_owned(),
            Indicator::Ttft(t) => format!(
                "first token ≤ {} ms{}",
                t.as_millis(),
                if self.streamed_only {
                    " (streamed)"
                } else {
                    ""
                }
            ),
            Indicator::Duration(t) => format!("answer ≤ {} ms", t.as_millis()),
            Indicator::TokensPerSecond(r) => format!("≥ {r} output tokens/s"),
        };
        let mut text = format!("{what} for {} %", self.target * 100.0);
        for (label, scope) in [
            ("route", &self.route),
            ("model", &self.model),
            ("cohort", &self.cohort),
        ] {
            if let Some(scope) = scope {
                text.push_str(&format!(", {label} {scope}"));
            }
        }
        text
    }

    /// Whether `outcome` falls under this objective's route, model and cohort.
    pub fn scope_matches(&self, outcome: &Outcome<'_>) -> bool {
        let matches = |want: &Option<String>, have: Option<&str>| {
            want.as_deref().is_none_or(|want| have == Some(want))
        };
        matches(&self.route, outcome.route)
            && matches(&self.model, outcome.model)
            && matches(&self.cohort, outcome.cohort)
    }

    /// `Some(good)` when `outcome` counts for this objective, `None` when it does not.
    pub fn judge(&self, outcome: &Outcome<'_>) -> Option<bool> {
        if outcome.aborted || !self.scope_matches(outcome) {
            return None;
        }
        match self.indicator {
            Indicator::Availability => Some(!outcome.failed()),
            Indicator::Ttft(threshold) => {
                if outcome.failed() || (self.streamed_only && !outcome.streamed) {
                    return None;
                }
                outcome.ttft.map(|ttft| ttft <= threshold)
            }
            Indicator::Duration(threshold) => {
                (!outcome.failed()).then_some(outcome.duration <= threshold)
            }
            Indicator::TokensPerSecond(min) => {
                if outcome.failed() {
                    return None;
                }
                outcome.output_tokens_per_second.map(|rate| rate >= min)
            }
        }
    }
}

/// A configuration an objective cannot be built from: the field and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SloError {
    /// The field at fault.
    pub field: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl SloError {
    fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

impl fmt::Display for SloError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for SloError {}
