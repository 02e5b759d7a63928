//! Canary routes: a route's traffic split across upstreams by weight, sticky by a key, each
//! request's cohort on its spans (`llmtrace.cohort`), in the baggage sent upstream and on the
//! GenAI metrics; and `/api/cohorts`, each cohort compared with the control.
//!
//! ```toml
//! [[routes]]
//! path_prefix = "/v1/chat/completions"
//! upstream = "openai"                  # used when the split is removed; must exist
//! [routes.split]
//! key = "header:x-user-id"             # or "baggage:user.id", or "random"
//! cohorts = [
//!   { name = "stable", upstream = "openai", weight = 90 },   # the first is the control
//!   { name = "canary", upstream = "vllm", weight = 10 },
//! ]
//! ```

use std::time::Duration;

use http::HeaderMap;
use opentelemetry::Context;
use opentelemetry::baggage::BaggageExt;
use serde::Deserialize;

use llmtrace::slo::{Cohort, CohortOutcome, CohortSummary, Comparison, bucket, compare, pick};

use crate::config::{ConfigError, RouteConfig};

/// The attribute, baggage entry and metric label that carry a request's cohort.
pub const COHORT: &str = "llmtrace.cohort";
/// Bytes of a key (header value, baggage value) hashed at most.
const MAX_KEY_BYTES: usize = 1024;

/// `[routes.split]`: the cohorts of a canary route and what keeps a client in one.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SplitConfig {
    /// What a client is known by: `header:<name>`, `baggage:<key>`, or `random` (no
    /// stickiness). A request without the key is assigned at random.
    pub key: String,
    /// The cohorts, the first one the control the others are compared with.
    pub cohorts: Vec<CohortConfig>,
}

/// One cohort of a split.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CohortConfig {
    /// Its name: `llmtrace.cohort` on spans, baggage and metrics (`[A-Za-z0-9_.-]`, ≤ 64).
    pub name: String,
    /// The upstream its requests go to (the route's fallbacks still follow it).
    pub upstream: String,
    /// Its share of the traffic, relative to the others' (at least one non-zero).
    pub weight: u32,
}

/// Where the key comes from.
#[derive(Debug, Clone, PartialEq)]
enum KeySource {
    Header(http::HeaderName),
    Baggage(String),
    Random,
}

impl SplitConfig {
    /// Checks the split of `routes[index]` against the upstream names.
    pub fn validate(&self, index: usize, upstreams: &[&str]) -> Result<(), ConfigError> {
        let field = |name: &str| format!("routes[{index}].split.{name}");
        self.source().map_err(|message| ConfigError {
            field: field("key"),
            message,
        })?;
        if self.cohorts.len() < 2 {
            return Err(ConfigError {
                field: field("cohorts"),
                message: "a split needs at least two cohorts (the first is the control)".into(),
            });
        }
        if self.cohorts.iter().all(|c| c.weight == 0) {
            return Err(ConfigError {
                field: field("cohorts"),
                message: "every weight is 0".into(),
            });
        }
        let mut names = std::collections::HashSet::new();
        for (i, cohort) in self.cohorts.iter().enumerate() {
            let at = |what: &str| field(&format!("cohorts[{i}].{what}"));
            let name_ok = !cohort.name.is_empty()
                && cohort.name.len() <= 64
                && cohort
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
            if !name_ok || !names.insert(cohort.name.as_str()) {
                return Err(ConfigError {
                    field: at("name"),
                    message: format!(
                        "{:?}: a unique name of 1 to 64 characters of A-Z a-z 0-9 _ . -",
                        cohort.name
                    ),
                });
            }
            if !upstreams.contains(&cohort.upstream.as_str()) {
                return Err(ConfigError {
                    field: at("upstream"),
                    message: format!("no upstream is named {:?}", cohort.upstream),
                });
            }
        }
        Ok(())
    }

    fn source(&self) -> Result<KeySource, String> {
        if self.key == "random" {
            return Ok(KeySource::Random);
        }
        if let Some(name) = self.key.strip_prefix("header:") {
            return http::HeaderName::from_bytes(name.as_bytes())
                .map(KeySource::Header)
                .map_err(|_| format!("{name:?} is not a header name"));
        }
        if let Some(key) = self.key.strip_prefix("baggage:").filter(|k| !k.is_empty()) {
            return Ok(KeySource::Baggage(key.to_owned()));
        }
        Err(format!(
            "{:?}: expected header:<name>, baggage:<key> or random",
            self.key
        ))
    }
}

/// One canary route at run time.
#[derive(Debug)]
struct Split {
    /// The route, for `/api/cohorts` and the hash's salt.
    route: String,
    source: KeySource,
    weights: Vec<u32>,
    /// Target index of each cohort's upstream.
    targets: Vec<usize>,
    cohorts: Vec<Cohort>,
}

/// Every canary route of a configuration, by route index.
#[derive(Debug, Default)]
pub struct Canary {
    splits: Vec<Option<Split>>,
}

/// The cohort a request was put in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assignment {
    route: usize,
    cohort: usize,
    /// The target (upstream index) the request goes to first.
    pub target: usize,
}

impl Canary {
    /// The splits of `routes`; `target_of` gives an upstream's index (validated before).
    pub fn new(routes: &[RouteConfig], target_of: impl Fn(&str) -> Option<usize>) -> Self {
        let splits = routes
            .iter()
            .map(|route| {
                let split = route.split.as_ref()?;
                Some(Split {
                    route: match &route.host {
                        Some(host) => format!("{host}{}", route.path_prefix),
                        None => route.path_prefix.clone(),
                    },
                    source: split.source().ok()?,
                    weights: split.cohorts.iter().map(|c| c.weight).collect(),
                    targets: split
                        .cohorts
                        .iter()
                        .map(|c| target_of(&c.upstream))
                        .collect::<Option<_>>()?,
                    cohorts: split.cohorts.iter().map(|c| Cohort::new(&c.name)).collect(),
                })
            })
            .collect();
        Self { splits }
    }

    /// True when no route splits.
    pub fn is_empty(&self) -> bool {
        self.splits.iter().all(Option::is_none)
    }

    /// The cohort of a request to `routes[route]` with `headers` (a key in the `baggage`
    /// header is read from it); `random` is any per-request value (the request id) for
    /// requests without a key.
    pub fn assign(&self, route: usize, headers: &HeaderMap, random: &str) -> Option<Assignment> {
        let split = self.splits.get(route)?.as_ref()?;
        let baggage;
        let key: Option<&[u8]> = match &split.source {
            KeySource::Header(name) => headers.get(name).map(|v| v.as_bytes()),
            KeySource::Baggage(key) => {
                let cx: Context = llmtrace::propagation::extract(headers);
                baggage = cx
                    .baggage()
                    .get(key.as_str())
                    .map(|v| v.as_str().to_owned());
                baggage.as_deref().map(str::as_bytes)
            }
            KeySource::Random => None,
        };
        let key = key.filter(|k| !k.is_empty()).unwrap_or(random.as_bytes());
        let key = &key[..key.len().min(MAX_KEY_BYTES)];
        let cohort = pick(&split.weights, bucket(&split.route, key));
        Some(Assignment {
            route,
            cohort,
            target: split.targets[cohort],
        })
    }

    /// The cohort's name.
    pub fn name(&self, assignment: Assignment) -> &str {
        self.splits[assignment.route]
            .as_ref()
            .map_or("", |s| s.cohorts[assignment.cohort].name())
    }

    /// Counts one exchange of `assignment`'s cohort.
    pub fn record(&self, assignment: Assignment, outcome: &CohortOutcome) {
        if let Some(split) = &self.splits[assignment.route] {
            split.cohorts[assignment.cohort].record(outcome);
        }
    }

    /// `/api/cohorts`: per canary route, the control and each cohort compared with it.
    pub fn json(&self) -> String {
        let routes: Vec<serde_json::Value> = self
            .splits
            .iter()
            .flatten()
            .map(|split| {
                let (control, comparisons) = compare(&split.cohorts);
                serde_json::json!({
                    "route": split.route,
                    "control": control.as_ref().map(summary_json),
                    "cohorts": comparisons.iter().map(comparison_json).collect::<Vec<_>>(),
                })
            })
            .collect();
        serde_json::json!({ "routes": routes }).to_string()
    }
}

fn summary_json(s: &CohortSummary) -> serde_json::Value {
    serde_json::json!({
        "name": s.name,
        "requests": s.requests,
        "errors": s.errors,
        "error_rate": s.error_rate,
        "ttft_p50_ms": s.ttft_p50_ms,
        "ttft_p95_ms": s.ttft_p95_ms,
        "ttft_samples": s.ttft_samples,
        "tokens": s.tokens,
        "cost_usd": s.cost,
    })
}

fn comparison_json(c: &Comparison) -> serde_json::Value {
    let test = |t: &llmtrace::slo::Test| {
        serde_json::json!({
            "p_value": t.p_value,
            "significant": t.significant,
            "worse": t.worse,
            "more_requests_needed": t.more_requests_needed,
        })
    };
    let mut value = summary_json(&c.cohort);
    value["ttft_test"] = test(&c.ttft);
    value["error_test"] = test(&c.errors);
    value["verdict"] = c.verdict.clone().into();
    value
}

/// A cohort's outcome from what the gateway saw.
pub fn outcome(
    ttft: Option<Duration>,
    failed: bool,
    tokens: Option<i64>,
    cost: Option<f64>,
) -> CohortOutcome {
    CohortOutcome {
        ttft,
        failed,
        tokens,
        cost,
    }
}
