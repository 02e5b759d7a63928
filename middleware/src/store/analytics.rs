//! Aggregates over the stored traces, for the viewer's map and overview pages and their JSON
//! (no HTML here).
//!
//! - [`dependencies`]: the services (exported spans) and the peers they call (inferred from
//!   CLIENT spans) as nodes, the calls between them as edges with their count, rate, error
//!   share and latency percentiles; [`Dependencies::ranks`] lays the nodes out in columns.
//! - [`overview`]: the GenAI CLIENT spans per model and per time bin: TTFT and duration
//!   percentiles, output tokens per second, error rate, cost, request count.
//!
//! Both read what [`TraceStore::spans_between`] returns (at most [`MAX_LIMIT`] traces, the
//! most recently seen)
//! and bound what they build: names are cut to [`MAX_NAME`] bytes, latency samples per edge
//! or per bin to [`MAX_SAMPLES`] (a reservoir keeps them uniform), edges to [`MAX_EDGES`]
//! (the least called are summed into [`Dependencies::other_calls`]) and models to
//! [`MAX_MODELS`] (the rest are one `other` series): service names, peer addresses and models
//! are what clients and upstreams sent.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{SpanId, SpanKind};
use serde::Serialize;

use super::query::params;
use super::{MAX_LIMIT, StoredSpan, TraceStore, as_f64, as_i64, parse_duration};
use crate::semconv;

/// Node names, peer names and models are cut to this many bytes.
pub const MAX_NAME: usize = 128;
/// Edges kept by [`dependencies`], the most called first.
pub const MAX_EDGES: usize = 200;
/// Latency samples kept per edge or per (model, bin); more are sampled uniformly.
pub const MAX_SAMPLES: usize = 10_000;
/// Models the [`overview`] shows, the most frequent first; the rest are one series.
pub const MAX_MODELS: usize = 8;
/// Time bins of the [`overview`].
pub const BINS: usize = 30;
/// The series of the models beyond [`MAX_MODELS`].
pub const OTHER_MODEL: &str = "other";
/// The model of a GenAI span that names none.
pub const NO_MODEL: &str = "(none)";

/// The time range an aggregate covers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Range {
    /// Spans that started before this are left out (`None`: since the oldest stored).
    pub since: Option<SystemTime>,
    /// Spans that started after this are left out.
    pub until: SystemTime,
}

impl Range {
    /// From a query string: `lookback` as milliseconds (Jaeger's `lookback=900000`) or a
    /// duration (`15m`, `1h`), `endTs` in milliseconds since the epoch (default `now`).
    pub fn parse(query: &str, now: SystemTime) -> Self {
        let mut until = now;
        let mut lookback = None;
        for (name, value) in params(query) {
            match name.as_str() {
                "lookback" => lookback = parse_lookback(&value),
                "endTs" => {
                    if let Ok(ms) = value.trim().parse::<u64>() {
                        until = SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
                    }
                }
                _ => {}
            }
        }
        Self {
            since: lookback.and_then(|d| until.checked_sub(d)),
            until,
        }
    }

    /// The spans of each trace of `store` that started in the range (the [`MAX_LIMIT`] most
    /// recently seen traces).
    pub fn traces(&self, store: &TraceStore) -> Vec<Vec<StoredSpan>> {
        store.spans_between(self.since, Some(self.until), MAX_LIMIT)
    }

    fn contains(&self, t: SystemTime) -> bool {
        self.since.is_none_or(|s| t >= s) && t <= self.until
    }
}

/// A lookback: digits alone are milliseconds (Jaeger), else [`parse_duration`] (`15m`).
pub fn parse_lookback(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().ok().map(Duration::from_millis);
    }
    parse_duration(text)
}

// === dependencies ===

/// What a node of the map is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    /// A service that exported spans (its `service.name`).
    Service,
    /// A peer known only from CLIENT spans (`server.address[:port]`, the provider or
    /// `peer.service`): an upstream that exports nothing here.
    Peer,
}

/// One node of the map.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Node {
    /// Its name.
    pub name: String,
    /// Service or peer.
    pub kind: NodeKind,
}

/// Calls from one node to another.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Edge {
    /// The caller.
    pub parent: String,
    /// The called.
    pub child: String,
    /// Calls seen.
    pub call_count: u64,
    /// Calls that failed ([`StoredSpan::is_error`] of the CLIENT span or of the child).
    pub error_count: u64,
    /// `error_count / call_count`.
    pub error_share: f64,
    /// Calls per second over the range.
    pub rate_per_second: f64,
    /// Median latency, milliseconds.
    pub p50_ms: f64,
    /// 95th percentile latency, milliseconds.
    pub p95_ms: f64,
}

/// The dependency map: nodes, edges, and what was left out.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Dependencies {
    /// The nodes of the kept edges, by name.
    pub nodes: Vec<Node>,
    /// The edges, the most called first (at most [`MAX_EDGES`]).
    pub edges: Vec<Edge>,
    /// Edges beyond [`MAX_EDGES`].
    pub other_edges: usize,
    /// Their calls.
    pub other_calls: u64,
    /// Seconds the rates are over: the lookback, else from the earliest span start to the
    /// latest span end (at least 1).
    pub window_seconds: f64,
    /// Traces read.
    pub traces: usize,
}

#[derive(Default)]
struct EdgeAcc {
    calls: u64,
    errors: u64,
    samples: Reservoir,
}

/// The dependency map of `traces` (each trace's spans; spans outside `range` are left out).
///
/// An edge A→B is counted for each span of service B whose parent, in the same trace, is a
/// span of another service A; its latency is the parent's duration when the parent is a
/// CLIENT span (the call as the caller saw it), else the child's. A CLIENT span with no
/// child of another service is a call to a peer, named by `server.address` (with
/// `:server.port` when set), else `gen_ai.provider.name`, else `peer.service`; one naming
/// none is not counted.
pub fn dependencies(traces: &[Vec<StoredSpan>], range: &Range) -> Dependencies {
    let mut edges: HashMap<(String, String), EdgeAcc> = HashMap::new();
    let mut services: HashSet<String> = HashSet::new();
    let (mut first, mut last) = (None::<SystemTime>, None::<SystemTime>);
    for trace in traces {
        let spans: Vec<&StoredSpan> = trace
            .iter()
            .filter(|s| range.contains(s.data.start_time))
            .collect();
        for span in &spans {
            services.insert(cut(&span.service));
            let (start, end) = (span.data.start_time, span.data.end_time);
            first = Some(first.map_or(start, |f| f.min(start)));
            last = Some(last.map_or(end, |l| l.max(end)));
        }
        trace_edges(&spans, &mut edges);
    }
    let window_seconds = match (range.since, first, last) {
        (Some(since), _, _) => range.until.duration_since(since).unwrap_or_default(),
        (None, Some(first), Some(last)) => last.duration_since(first).unwrap_or_default(),
        _ => Duration::ZERO,
    }
    .as_secs_f64()
    .max(1.0);
    finish(edges, &services, window_seconds, traces.len())
}

/// Counts the calls of one trace's `spans` into `edges`.
fn trace_edges(spans: &[&StoredSpan], edges: &mut HashMap<(String, String), EdgeAcc>) {
    let by_id: HashMap<SpanId, &StoredSpan> = spans
        .iter()
        .map(|s| (s.data.span_context.span_id(), *s))
        .collect();
    let mut called: HashSet<SpanId> = HashSet::new();
    for child in spans {
        let parent_id = child.data.parent_span_id;
        let Some(parent) = by_id.get(&parent_id) else {
            continue;
        };
        if parent.service == child.service || parent_id == child.data.span_context.span_id() {
            continue;
        }
        called.insert(parent_id);
        let client = parent.data.span_kind == SpanKind::Client;
        let measured = if client { parent } else { child };
        let error = child.is_error() || (client && parent.is_error());
        let key = (cut(&parent.service), cut(&child.service));
        edges
            .entry(key)
            .or_default()
            .add(measured.duration(), error);
    }
    for span in spans {
        let id = span.data.span_context.span_id();
        if span.data.span_kind != SpanKind::Client || called.contains(&id) {
            continue;
        }
        if let Some(peer) = peer_name(span) {
            edges
                .entry((cut(&span.service), peer))
                .or_default()
                .add(span.duration(), span.is_error());
        }
    }
}

/// The peer a CLIENT span called: `server.address[:port]`, else the provider, else
/// `peer.service`.
pub fn peer_name(span: &StoredSpan) -> Option<String> {
    if let Some(address) = span.attribute(semconv::http::SERVER_ADDRESS) {
        let address = address.as_str();
        return Some(match as_i64(span.attribute(semconv::http::SERVER_PORT)) {
            Some(port) => cut(&format!("{address}:{port}")),
            None => cut(&address),
        });
    }
    [semconv::gen_ai::PROVIDER_NAME, "peer.service"]
        .iter()
        .find_map(|key| span.attribute(key))
        .map(|v| cut(&v.as_str()))
}

impl EdgeAcc {
    fn add(&mut self, latency: Duration, error: bool) {
        self.calls += 1;
        self.errors += u64::from(error);
        self.samples.add(latency.as_nanos() as f64 / 1e6);
    }
}

/// Keeps the [`MAX_EDGES`] most called edges, sums the rest, and names their nodes.
fn finish(
    edges: HashMap<(String, String), EdgeAcc>,
    services: &HashSet<String>,
    window_seconds: f64,
    traces: usize,
) -> Dependencies {
    let mut all: Vec<((String, String), EdgeAcc)> = edges.into_iter().collect();
    all.sort_by(|a, b| b.1.calls.cmp(&a.1.calls).then_with(|| a.0.cmp(&b.0)));
    let rest = all.split_off(all.len().min(MAX_EDGES));
    let mut deps = Dependencies {
        other_edges: rest.len(),
        other_calls: rest.iter().map(|(_, e)| e.calls).sum(),
        window_seconds,
        traces,
        ..Dependencies::default()
    };
    let mut names: Vec<String> = Vec::new();
    for ((parent, child), acc) in all {
        let mut samples = acc.samples.values;
        samples.sort_by(f64::total_cmp);
        names.push(parent.clone());
        names.push(child.clone());
        deps.edges.push(Edge {
            parent,
            child,
            call_count: acc.calls,
            error_count: acc.errors,
            error_share: acc.errors as f64 / acc.calls as f64,
            rate_per_second: acc.calls as f64 / window_seconds,
            p50_ms: percentile(&samples, 0.5).unwrap_or(0.0),
            p95_ms: percentile(&samples, 0.95).unwrap_or(0.0),
        });
    }
    names.sort();
    names.dedup();
    deps.nodes = names
        .into_iter()
        .map(|name| Node {
            kind: if services.contains(&name) {
                NodeKind::Service
            } else {
                NodeKind::Peer
            },
            name,
        })
        .collect();
    deps
}

impl Dependencies {
    /// Each node's column, in [`nodes`](Dependencies::nodes)' order: the longest path to it
    /// from a node nothing calls. Cycles cannot loop: ranks stop growing at the node count,
    /// and the passes stop after as many passes as nodes.
    pub fn ranks(&self) -> Vec<usize> {
        let index: HashMap<&str, usize> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.as_str(), i))
            .collect();
        let links: Vec<(usize, usize)> = self
            .edges
            .iter()
            .filter_map(|e| {
                Some((
                    *index.get(e.parent.as_str())?,
                    *index.get(e.child.as_str())?,
                ))
            })
            .filter(|(a, b)| a != b)
            .collect();
        let n = self.nodes.len();
        let mut rank = vec![0; n];
        for _ in 0..n {
            let mut changed = false;
            for &(a, b) in &links {
                if rank[b] < rank[a] + 1 && rank[a] + 1 < n {
                    rank[b] = rank[a] + 1;
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        rank
    }

    /// `{"data":[{"parent","child","callCount",…}],…}`: Jaeger's `/api/dependencies` answer,
    /// with each edge's `errorCount`, `errorShare`, `ratePerSecond`, `p50Ms`, `p95Ms`, and
    /// beside `data` the nodes, the window and what was left out.
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "data": self.edges,
            "total": self.edges.len(),
            "limit": 0,
            "offset": 0,
            "errors": null,
            "nodes": self.nodes,
            "windowSeconds": self.window_seconds,
            "traces": self.traces,
            "otherEdges": self.other_edges,
            "otherCalls": self.other_calls,
        })
        .to_string()
    }
}

// === overview ===

/// Aggregates of the GenAI calls of one model in one time bin (or over the whole range).
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// Calls.
    pub requests: u64,
    /// Failed calls ([`StoredSpan::is_error`]).
    pub errors: u64,
    /// `errors / requests` (`None` without requests).
    pub error_rate: Option<f64>,
    /// Median time to first chunk, seconds (`gen_ai.response.time_to_first_chunk`, else the
    /// first-token event).
    pub ttft_p50: Option<f64>,
    /// 95th percentile time to first chunk, seconds.
    pub ttft_p95: Option<f64>,
    /// Median duration, seconds.
    pub duration_p50: Option<f64>,
    /// 95th percentile duration, seconds.
    pub duration_p95: Option<f64>,
    /// Median output tokens per second (`llmtrace.usage.output_tokens_per_second`, else
    /// output tokens over the duration).
    pub tokens_per_second: Option<f64>,
    /// `gen_ai.usage.input_tokens` summed.
    pub input_tokens: i64,
    /// `gen_ai.usage.output_tokens` summed.
    pub output_tokens: i64,
    /// `gen_ai.usage.cost` summed, USD, over the calls that have one.
    pub cost: f64,
    /// Calls without a cost (the price table has no price for the model, or no usage was
    /// reported: `llmtrace.cost.missing` says which on the span).
    pub cost_missing: u64,
}

/// One model's series.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Series {
    /// The model (`gen_ai.request.model`, else `gen_ai.response.model`), or [`OTHER_MODEL`].
    pub model: String,
    /// One entry per bin.
    pub bins: Vec<Stats>,
    /// Over the whole range.
    pub total: Stats,
}

/// The GenAI calls over time per model.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Overview {
    /// The first bin's start, milliseconds since the epoch.
    pub start_ms: u64,
    /// Each bin's width, milliseconds.
    pub bin_ms: u64,
    /// The series, the most requested model first ([`OTHER_MODEL`] last).
    pub models: Vec<Series>,
    /// GenAI calls read.
    pub requests: u64,
}

/// One GenAI CLIENT span, as the overview needs it.
struct Call {
    start: SystemTime,
    model: String,
    error: bool,
    ttft: Option<f64>,
    duration: f64,
    tokens_per_second: Option<f64>,
    input_tokens: i64,
    output_tokens: i64,
    cost: Option<f64>,
}

impl Call {
    fn of(span: &StoredSpan) -> Self {
        use semconv::gen_ai as g;
        let duration = span.duration().as_secs_f64();
        let output_tokens = as_i64(span.attribute(g::USAGE_OUTPUT_TOKENS)).unwrap_or(0);
        let tokens_per_second = as_f64(span.attribute(semconv::llmtrace::OUTPUT_TOKENS_PER_SECOND))
            .or_else(|| {
                (output_tokens > 0 && duration > 0.0).then(|| output_tokens as f64 / duration)
            });
        let model = [g::REQUEST_MODEL, g::RESPONSE_MODEL]
            .iter()
            .find_map(|k| span.attribute(k))
            .map_or_else(|| NO_MODEL.to_owned(), |v| cut(&v.as_str()));
        Self {
            start: span.data.start_time,
            model,
            error: span.is_error(),
            ttft: span.first_token_fraction().map(|f| f * duration),
            duration,
            tokens_per_second,
            input_tokens: as_i64(span.attribute(g::USAGE_INPUT_TOKENS)).unwrap_or(0),
            output_tokens,
            cost: as_f64(span.attribute(super::USAGE_COST)),
        }
    }
}

/// The GenAI CLIENT spans ([`StoredSpan::is_genai_client`]) of `traces` that started in
/// `range`, per model ([`MAX_MODELS`] at most, the rest as [`OTHER_MODEL`]) and per bin
/// ([`BINS`] of equal width over the range, or from the first call's start to the last's).
pub fn overview(traces: &[Vec<StoredSpan>], range: &Range) -> Overview {
    let calls: Vec<Call> = traces
        .iter()
        .flatten()
        .filter(|s| s.is_genai_client() && range.contains(s.data.start_time))
        .map(Call::of)
        .collect();
    let first = calls.iter().map(|c| c.start).min();
    let start = range.since.or(first).unwrap_or(range.until);
    let end = if range.since.is_some() {
        range.until
    } else {
        calls.iter().map(|c| c.start).max().unwrap_or(start)
    };
    let span_ms = end.duration_since(start).unwrap_or_default().as_millis() as u64;
    // The last call, at the range's very end, is clamped into the last bin.
    let bin_ms = span_ms.div_ceil(BINS as u64).max(1);
    let models = top_models(&calls);
    let mut groups: Vec<Vec<Vec<&Call>>> = vec![vec![Vec::new(); BINS]; models.len()];
    for call in &calls {
        let model = models
            .iter()
            .position(|m| *m == call.model)
            .unwrap_or(models.len().saturating_sub(1));
        let at = call
            .start
            .duration_since(start)
            .unwrap_or_default()
            .as_millis() as u64;
        let bin = ((at / bin_ms) as usize).min(BINS - 1);
        groups[model][bin].push(call);
    }
    Overview {
        start_ms: super::query::micros(start) / 1000,
        bin_ms,
        models: models
            .into_iter()
            .zip(groups)
            .map(|(model, bins)| {
                let all: Vec<&Call> = bins.iter().flatten().copied().collect();
                Series {
                    model,
                    bins: bins.iter().map(|b| stats(b)).collect(),
                    total: stats(&all),
                }
            })
            .collect(),
        requests: calls.len() as u64,
    }
}

/// The [`MAX_MODELS`] most frequent models (ties by name), then [`OTHER_MODEL`] when there
/// are more.
fn top_models(calls: &[Call]) -> Vec<String> {
    let mut counts: HashMap<&str, u64> = HashMap::new();
    for call in calls {
        *counts.entry(call.model.as_str()).or_default() += 1;
    }
    let mut sorted: Vec<(&str, u64)> = counts.into_iter().collect();
    sorted.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    let more = sorted.len() > MAX_MODELS;
    let mut models: Vec<String> = sorted
        .into_iter()
        .take(MAX_MODELS)
        .map(|(m, _)| m.to_owned())
        .collect();
    if more {
        models.push(OTHER_MODEL.to_owned());
    }
    models
}

fn stats(calls: &[&Call]) -> Stats {
    let sorted = |values: &mut dyn Iterator<Item = f64>| {
        let mut reservoir = Reservoir::default();
        values.for_each(|v| reservoir.add(v));
        let mut values = reservoir.values;
        values.sort_by(f64::total_cmp);
        values
    };
    let ttft = sorted(&mut calls.iter().filter_map(|c| c.ttft));
    let duration = sorted(&mut calls.iter().map(|c| c.duration));
    let tps = sorted(&mut calls.iter().filter_map(|c| c.tokens_per_second));
    let requests = calls.len() as u64;
    let errors = calls.iter().filter(|c| c.error).count() as u64;
    Stats {
        requests,
        errors,
        error_rate: (requests > 0).then(|| errors as f64 / requests as f64),
        ttft_p50: percentile(&ttft, 0.5),
        ttft_p95: percentile(&ttft, 0.95),
        duration_p50: percentile(&duration, 0.5),
        duration_p95: percentile(&duration, 0.95),
        tokens_per_second: percentile(&tps, 0.5),
        input_tokens: calls
            .iter()
            .fold(0i64, |s, c| s.saturating_add(c.input_tokens)),
        output_tokens: calls
            .iter()
            .fold(0i64, |s, c| s.saturating_add(c.output_tokens)),
        cost: calls.iter().filter_map(|c| c.cost).sum(),
        cost_missing: calls.iter().filter(|c| c.cost.is_none()).count() as u64,
    }
}

impl Overview {
    /// The overview as JSON (`/api/overview`): `startMs`, `binMs`, `requests` and `models`,
    /// each `{"model","bins":[stats…],"total":stats}` with stats `requests`, `errors`,
    /// `errorRate`, `ttftP50`, `ttftP95`, `durationP50`, `durationP95` (seconds),
    /// `tokensPerSecond`, `inputTokens`, `outputTokens`, `cost` (USD); `null` where a bin
    /// has no value.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

// === shared ===

/// The nearest-rank `p` percentile of `sorted` (ascending), `None` when empty.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// At most [`MAX_SAMPLES`] values, a uniform sample of those added (Algorithm R with a
/// fixed-seed generator: the same input gives the same sample).
#[derive(Default)]
struct Reservoir {
    values: Vec<f64>,
    seen: u64,
    state: u64,
}

impl Reservoir {
    fn add(&mut self, value: f64) {
        self.seen += 1;
        if self.values.len() < MAX_SAMPLES {
            self.values.push(value);
            return;
        }
        // splitmix64
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let slot = (z % self.seen) as usize;
        if slot < MAX_SAMPLES {
            self.values[slot] = value;
        }
    }
}

/// `text` cut at a character boundary to [`MAX_NAME`] bytes.
fn cut(text: &str) -> String {
    let mut end = text.len().min(MAX_NAME);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

#[cfg(test)]
#[path = "analytics_tests.rs"]
mod tests;
