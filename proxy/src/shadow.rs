//! Shadow traffic: a share of a route's LLM requests mirrored to a second upstream, off the
//! request path. The client never waits for it; the shadow's GenAI span is the root of a
//! trace of its own, linked to the primary's GenAI span, and records how its answer drifted
//! from the primary's (length, finish reasons, and whether the texts are equal).
//!
//! ```toml
//! [[routes]]
//! upstream = "openai"
//! [routes.shadow]
//! upstream = "candidate"       # must exist; its own api_key is sent, never the client's
//! share = 0.1                  # of the route's LLM requests (by request id), default 1
//! max_body_bytes = 1048576     # larger requests are not mirrored
//! max_in_flight = 32           # more at once are skipped, not queued
//! timeout_ms = 120000          # the shadow exchange is cut after this
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use opentelemetry::trace::{SpanContext, TraceContextExt};
use opentelemetry::{Context, KeyValue, Value};
use serde::Deserialize;
use tokio::sync::oneshot;

use llmtrace::driver::{GenAiRecorder, GenAiSpan};
use llmtrace::genai::{End, Endpoint, Exchange, RequestInfo, Summary};
use llmtrace::propagation;
use llmtrace::slo::bucket;

use crate::config::{ConfigError, UpstreamConfig};
use crate::upstream::Upstream;

/// Bytes of each answer's text kept to tell whether the two are equal.
pub const OUTPUT_CAP: usize = 256 * 1024;

/// Attribute and metric names of shadow traffic.
pub mod names {
    /// On the shadow's GenAI span: true.
    pub const SHADOW: &str = "llmtrace.shadow";
    /// The shadow upstream's configured name.
    pub const UPSTREAM: &str = "llmtrace.shadow.upstream";
    /// How the primary exchange ended: `complete`, `failed`, `aborted`, `unknown` (it did not
    /// end within the shadow's timeout).
    pub const PRIMARY: &str = "llmtrace.shadow.primary";
    /// Output bytes of the primary's answer (int).
    pub const PRIMARY_OUTPUT_BYTES: &str = "llmtrace.shadow.primary.output_bytes";
    /// Output bytes of the shadow's answer (int).
    pub const OUTPUT_BYTES: &str = "llmtrace.shadow.output_bytes";
    /// Shadow output bytes over the primary's (double).
    pub const LENGTH_RATIO: &str = "llmtrace.shadow.length_ratio";
    /// The primary's finish reasons (string array).
    pub const PRIMARY_FINISH_REASONS: &str = "llmtrace.shadow.primary.finish_reasons";
    /// Both answers ended for the same reasons (bool).
    pub const FINISH_REASON_MATCH: &str = "llmtrace.shadow.finish_reason.match";
    /// Both answers complete and their texts equal (bool; absent when a text was longer than
    /// what is kept to compare, or an exchange did not complete).
    pub const OUTPUT_EQUAL: &str = "llmtrace.shadow.output.equal";
    /// Counter: shadow requests by `outcome` (`equal`, `different`, `compared_in_part`,
    /// `not_compared`, `failed`, `skipped_busy`, `skipped_body`).
    pub const REQUESTS: &str = "llmtrace.proxy.shadow.requests";
}

/// `[routes.shadow]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ShadowConfig {
    /// The upstream mirrored requests go to.
    pub upstream: String,
    /// Share of the route's LLM requests mirrored, 0 to 1 (default 1).
    #[serde(default = "one")]
    pub share: f64,
    /// Requests with larger bodies are not mirrored (default 1 MiB).
    #[serde(default = "default_body")]
    pub max_body_bytes: usize,
    /// Shadow exchanges at once; more are skipped (default 32).
    #[serde(default = "default_in_flight")]
    pub max_in_flight: usize,
    /// The shadow exchange is cut after this (default 120 000 ms).
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
}

fn one() -> f64 {
    1.0
}
fn default_body() -> usize {
    1024 * 1024
}
fn default_in_flight() -> usize {
    32
}
fn default_timeout() -> u64 {
    120_000
}

impl ShadowConfig {
    /// Checks `routes[index].shadow` against the upstream names.
    pub fn validate(&self, index: usize, upstreams: &[&str]) -> Result<(), ConfigError> {
        let field = |name: &str| format!("routes[{index}].shadow.{name}");
        let fail = |name: &str, message: String| {
            Err(ConfigError {
                field: field(name),
                message,
            })
        };
        if !upstreams.contains(&self.upstream.as_str()) {
            return fail(
                "upstream",
                format!("no upstream is named {:?}", self.upstream),
            );
        }
        if !(0.0..=1.0).contains(&self.share) {
            return fail("share", "must be between 0 and 1".into());
        }
        if self.max_in_flight == 0 || self.max_body_bytes == 0 || self.timeout_ms == 0 {
            return fail(
                "max_in_flight",
                "max_in_flight, max_body_bytes and timeout_ms must be at least 1".into(),
            );
        }
        Ok(())
    }
}

/// One route's shadow at run time.
#[derive(Debug)]
struct RouteShadow {
    config: ShadowConfig,
    upstream: Upstream,
    upstream_config: UpstreamConfig,
    credentials: Option<(&'static str, http::HeaderValue)>,
}

/// Counts of shadow requests by outcome.
#[derive(Debug, Default)]
pub struct ShadowStats {
    counts: [AtomicUsize; 7],
}

/// Outcomes, in [`ShadowStats`] order.
const OUTCOMES: [&str; 7] = [
    "equal",
    "different",
    "compared_in_part",
    "not_compared",
    "failed",
    "skipped_busy",
    "skipped_body",
];

impl ShadowStats {
    fn add(&self, outcome: &str) {
        if let Some(i) = OUTCOMES.iter().position(|o| *o == outcome) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `(outcome, count)` pairs.
    pub fn snapshot(&self) -> Vec<(&'static str, usize)> {
        OUTCOMES
            .iter()
            .zip(&self.counts)
            .map(|(o, c)| (*o, c.load(Ordering::Relaxed)))
            .collect()
    }
}

/// The shadows of every route, by route index.
pub struct Shadows {
    routes: Vec<Option<RouteShadow>>,
    client: Option<reqwest::Client>,
    /// Records shadow exchanges: spans, no metrics (they are not client traffic).
    recorder: Option<Arc<GenAiRecorder>>,
    in_flight: Arc<AtomicUsize>,
    stats: Arc<ShadowStats>,
}

impl std::fmt::Debug for Shadows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shadows")
            .field("routes", &self.routes)
            .field("in_flight", &self.in_flight)
            .finish_non_exhaustive()
    }
}

/// What the gateway holds for a mirrored request until its body is read.
#[derive(Debug)]
pub struct Plan {
    route: usize,
    body: BytesMut,
}

/// What the primary exchange ended with, sent to its shadow.
#[derive(Debug, Clone)]
pub struct Primary {
    /// `complete`, `failed` or `aborted`.
    pub ended: &'static str,
    /// Its summary, when it was an LLM exchange.
    pub summary: Option<Summary>,
}

/// The mirrored request, ready to go.
pub struct Launch<'a> {
    /// The request head as the client sent it.
    pub head: &'a http::request::Parts,
    /// The recognised LLM endpoint.
    pub endpoint: Endpoint,
    /// The primary GenAI span, linked from the shadow's.
    pub primary: SpanContext,
}

impl Shadows {
    /// The shadows of `routes`; `upstream_of` gives an upstream's configuration by name;
    /// `recorder` records the shadow spans (without metrics); `ca_file` adds a CA for TLS.
    pub fn new(
        routes: &[crate::config::RouteConfig],
        upstream_of: impl Fn(&str) -> Option<UpstreamConfig>,
        recorder: Arc<GenAiRecorder>,
        ca_file: Option<&str>,
    ) -> Result<Self, Box<dyn std::error::Error>> {
        let routes: Vec<Option<RouteShadow>> = routes
            .iter()
            .map(|route| {
                let config = route.shadow.clone()?;
                let upstream_config = upstream_of(&config.upstream)?;
                Some(RouteShadow {
                    upstream: Upstream::parse(&upstream_config.url).ok()?,
                    credentials: crate::gateway::credentials(&upstream_config),
                    upstream_config,
                    config,
                })
            })
            .collect();
        let client = if routes.iter().any(Option::is_some) {
            // reqwest is built without a crypto provider of its own: ring, as pingora.
            crate::telemetry::install_crypto_provider();
            let mut builder = reqwest::Client::builder()
                .no_proxy()
                .pool_idle_timeout(Duration::from_secs(60));
            if let Some(path) = ca_file {
                for cert in reqwest::Certificate::from_pem_bundle(&std::fs::read(path)?)? {
                    builder = builder.add_root_certificate(cert);
                }
            }
            Some(builder.build()?)
        } else {
            None
        };
        Ok(Self {
            routes,
            client,
            recorder: Some(recorder),
            in_flight: Arc::default(),
            stats: Arc::default(),
        })
    }

    /// No shadows at all.
    pub fn none() -> Self {
        Self {
            routes: Vec::new(),
            client: None,
            recorder: None,
            in_flight: Arc::default(),
            stats: Arc::default(),
        }
    }

    /// The counts by outcome.
    pub fn stats(&self) -> Arc<ShadowStats> {
        self.stats.clone()
    }

    /// Whether a request to `routes[route]` with `request_id` is mirrored (by its share).
    pub fn plan(&self, route: usize, request_id: &str) -> Option<Plan> {
        let shadow = self.routes.get(route)?.as_ref()?;
        let share = shadow.config.share;
        let drawn =
            f64::from(bucket("shadow", request_id.as_bytes())) / f64::from(llmtrace::slo::BUCKETS);
        (drawn < share).then(|| Plan {
            route,
            body: BytesMut::new(),
        })
    }

    /// A chunk of the body going upstream; `false` when the plan is off (body too large).
    pub fn on_body(&self, plan: &mut Plan, chunk: &[u8]) -> bool {
        let Some(Some(shadow)) = self.routes.get(plan.route) else {
            return false;
        };
        if plan.body.len() + chunk.len() > shadow.config.max_body_bytes {
            self.stats.add("skipped_body");
            return false;
        }
        plan.body.extend_from_slice(chunk);
        true
    }

    /// Sends the mirrored request in a task of its own; returns where the primary's ending
    /// goes. `None` when too many shadows are in flight (counted).
    pub fn launch(&self, plan: Plan, launch: Launch<'_>) -> Option<oneshot::Sender<Primary>> {
        let shadow = self.routes.get(plan.route)?.as_ref()?;
        let (client, recorder) = (self.client.clone()?, self.recorder.clone()?);
        let in_flight = self.in_flight.fetch_add(1, Ordering::AcqRel);
        if in_flight >= shadow.config.max_in_flight {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            self.stats.add("skipped_busy");
            return None;
        }
        let (sender, receiver) = oneshot::channel();
        let body = plan.body.freeze();
        let mut parts = launch.head.clone();
        parts.headers = outgoing_headers(&launch.head.headers, shadow);
        let request = ShadowRequest {
            url: url(&shadow.upstream, launch.head),
            upstream: shadow.upstream_config.name.clone(),
            deadline: Instant::now() + Duration::from_millis(shadow.config.timeout_ms),
            endpoint: launch.endpoint,
            primary: launch.primary,
            body,
            parts,
        };
        let (stats, counter) = (self.stats.clone(), self.in_flight.clone());
        tokio::spawn(async move {
            let outcome = request.run(&client, &recorder, receiver).await;
            stats.add(outcome);
            counter.fetch_sub(1, Ordering::AcqRel);
        });
        Some(sender)
    }
}

/// The shadow upstream's URL for the client's path and query.
fn url(upstream: &Upstream, head: &http::request::Parts) -> String {
    let scheme = if upstream.tls { "https" } else { "http" };
    let path = head.uri.path_and_query().map_or("/", |pq| pq.as_str());
    format!(
        "{scheme}://{}{}{path}",
        upstream.authority(),
        upstream.base_path
    )
}

/// The client's headers minus hop-by-hop ones, its credentials and its trace context; the
/// shadow upstream's own key when it has one.
fn outgoing_headers(client: &http::HeaderMap, shadow: &RouteShadow) -> http::HeaderMap {
    const DROPPED: [&str; 12] = [
        "host",
        "content-length",
        "connection",
        "transfer-encoding",
        "authorization",
        "x-api-key",
        "api-key",
        "proxy-authorization",
        "cookie",
        "traceparent",
        "tracestate",
        "baggage",
    ];
    let mut headers: http::HeaderMap = client
        .iter()
        .filter(|(name, _)| !DROPPED.contains(&name.as_str()))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    if let Some((name, value)) = &shadow.credentials {
        headers.insert(*name, value.clone());
    }
    headers
}

struct ShadowRequest {
    url: String,
    upstream: String,
    deadline: Instant,
    endpoint: Endpoint,
    primary: SpanContext,
    body: Bytes,
    parts: http::request::Parts,
}

impl ShadowRequest {
    /// Sends, reads, waits for the primary, compares; returns the outcome counted.
    async fn run(
        mut self,
        client: &reqwest::Client,
        recorder: &Arc<GenAiRecorder>,
        primary: oneshot::Receiver<Primary>,
    ) -> &'static str {
        let request = RequestInfo::parse(&self.endpoint, &self.body, false);
        let exchange = Exchange::new(
            recorder.config().clone(),
            self.endpoint.clone(),
            request.clone(),
            Instant::now(),
        );
        // Its own trace: a root, linked to the primary's GenAI span.
        let mut span = GenAiSpan::start(recorder, exchange, &self.parts, &Context::new());
        span.keep_output(OUTPUT_CAP);
        span.set_request(request);
        if let Some(cx) = span.context() {
            let s = cx.span();
            s.add_link(
                self.primary.clone(),
                vec![KeyValue::new(
                    llmtrace::semconv::llmtrace::LINK_KIND,
                    "shadow_of",
                )],
            );
            s.set_attribute(KeyValue::new(names::SHADOW, true));
            s.set_attribute(KeyValue::new(names::UPSTREAM, self.upstream.clone()));
            propagation::inject_each(cx, |name, value| {
                if let Some(value) = value {
                    self.parts.headers.insert(name, value);
                }
            });
        }
        let end = tokio::time::timeout_at(self.deadline.into(), self.exchange(client, &mut span))
            .await
            .unwrap_or_else(|_| End::Failed {
                error_type: "timeout".into(),
                message: "the shadow exchange passed its timeout".into(),
            });
        let failed = !matches!(end, End::Complete);
        let primary = tokio::time::timeout_at(self.deadline.into(), primary)
            .await
            .ok()
            .and_then(Result::ok);
        let mut outcome = if failed { "failed" } else { "not_compared" };
        span.finish_with(end, |shadow| {
            let (attributes, compared) = drift(shadow, primary.as_ref(), failed);
            if let Some(compared) = compared {
                outcome = compared;
            }
            attributes
        });
        outcome
    }

    /// The request and its answer, fed to the span; how it ended.
    async fn exchange(&self, client: &reqwest::Client, span: &mut GenAiSpan) -> End {
        let sent = client
            .request(self.parts.method.clone(), &self.url)
            .headers(self.parts.headers.clone())
            .body(self.body.clone())
            .send()
            .await;
        let mut response = match sent {
            Ok(response) => response,
            Err(error) => {
                return End::Failed {
                    error_type: if error.is_connect() {
                        "connection_refused".into()
                    } else {
                        "shadow_request".into()
                    },
                    message: error.to_string(),
                };
            }
        };
        span.on_response_head(response.status(), response.headers());
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => span.on_response_data(&chunk),
                Ok(None) => return End::Complete,
                Err(error) => {
                    return End::Failed {
                        error_type: "stream_truncated".into(),
                        message: error.to_string(),
                    };
                }
            }
        }
    }
}

/// The drift attributes, and the outcome when the answers were compared.
fn drift(
    shadow: &Summary,
    primary: Option<&Primary>,
    shadow_failed: bool,
) -> (Vec<KeyValue>, Option<&'static str>) {
    let mut a = Vec::new();
    let Some(primary) = primary else {
        a.push(KeyValue::new(names::PRIMARY, "unknown"));
        return (a, None);
    };
    a.push(KeyValue::new(names::PRIMARY, primary.ended));
    let Some(summary) = &primary.summary else {
        return (a, None);
    };
    let reasons: Vec<opentelemetry::StringValue> = summary
        .finish_reasons
        .iter()
        .map(|r| r.clone().into())
        .collect();
    a.push(KeyValue::new(
        names::PRIMARY_FINISH_REASONS,
        Value::Array(reasons.into()),
    ));
    a.push(KeyValue::new(
        names::FINISH_REASON_MATCH,
        summary.finish_reasons == shadow.finish_reasons,
    ));
    let (Some(ours), Some(theirs)) = (&shadow.output, &summary.output) else {
        return (a, None);
    };
    a.push(KeyValue::new(names::OUTPUT_BYTES, ours.bytes as i64));
    a.push(KeyValue::new(
        names::PRIMARY_OUTPUT_BYTES,
        theirs.bytes as i64,
    ));
    if theirs.bytes > 0 {
        a.push(KeyValue::new(
            names::LENGTH_RATIO,
            ours.bytes as f64 / theirs.bytes as f64,
        ));
    }
    if shadow_failed || primary.ended != "complete" {
        return (a, None);
    }
    if ours.truncated || theirs.truncated {
        let outcome = if ours.hash == theirs.hash {
            "compared_in_part"
        } else {
            "different"
        };
        return (a, Some(outcome));
    }
    let equal = ours.hash == theirs.hash && ours.bytes == theirs.bytes;
    a.push(KeyValue::new(names::OUTPUT_EQUAL, equal));
    (a, Some(if equal { "equal" } else { "different" }))
}
