//! The dependency map's edges and the overview's bins, from spans with known services,
//! parents, durations and errors; the pages over them.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use opentelemetry::KeyValue;
use opentelemetry::trace::{SpanKind, Status};
use opentelemetry_sdk::trace::SpanData;

use super::*;
use crate::store::tests::span;
use crate::store::{StoreConfig, TraceStore, ui};

fn base() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

fn at(ms: u64) -> SystemTime {
    base() + Duration::from_millis(ms)
}

fn insert(store: &TraceStore, service: &str, span: SpanData) {
    store.insert(span, Arc::from(service));
}

fn failed(mut span: SpanData) -> SpanData {
    span.status = Status::error("boom");
    span
}

/// 20 gateway traces calling an untraced upstream (CLIENT spans of 10, 20, … 200 ms, every
/// fifth failing), and 4 traces of `app` → gateway → a traced `vllm`.
fn sample_store() -> TraceStore {
    let store = TraceStore::new(StoreConfig::default());
    for i in 1..=20u64 {
        let t = u128::from(i);
        let start = (i - 1) * 1000;
        insert(
            &store,
            "gateway",
            span(t, 1, 0, SpanKind::Server, at(start), 250, vec![]),
        );
        let client = span(
            t,
            2,
            1,
            SpanKind::Client,
            at(start + 1),
            i * 10,
            vec![
                KeyValue::new("server.address", "api.openai.com"),
                KeyValue::new("server.port", 443),
                KeyValue::new("gen_ai.provider.name", "openai"),
            ],
        );
        insert(
            &store,
            "gateway",
            if i % 5 == 0 { failed(client) } else { client },
        );
    }
    for i in 1..=4u64 {
        let t = 100 + u128::from(i);
        let start = 30_000 + i * 1000;
        insert(
            &store,
            "app",
            span(t, 1, 0, SpanKind::Client, at(start), 100 + i, vec![]),
        );
        insert(
            &store,
            "gateway",
            span(t, 2, 1, SpanKind::Server, at(start + 1), 90, vec![]),
        );
        let client = span(
            t,
            3,
            2,
            SpanKind::Client,
            at(start + 2),
            80 + i,
            vec![KeyValue::new("server.address", "vllm.local")],
        );
        insert(&store, "gateway", client);
        let server = span(t, 4, 3, SpanKind::Server, at(start + 3), 70, vec![]);
        insert(&store, "vllm", if i == 4 { failed(server) } else { server });
    }
    store
}

fn all(store: &TraceStore) -> (Vec<Vec<StoredSpan>>, Range) {
    let range = Range {
        since: Some(base()),
        until: at(100_000),
    };
    (range.traces(store), range)
}

fn edge<'a>(deps: &'a Dependencies, parent: &str, child: &str) -> &'a Edge {
    deps.edges
        .iter()
        .find(|e| e.parent == parent && e.child == child)
        .unwrap_or_else(|| panic!("no edge {parent} -> {child} in {:?}", deps.edges))
}

#[test]
fn edges_join_services_by_parent_and_name_untraced_peers() {
    let store = sample_store();
    let (traces, range) = all(&store);
    let deps = dependencies(&traces, &range);
    assert_eq!(deps.edges.len(), 3, "{:?}", deps.edges);
    assert_eq!(deps.window_seconds, 100.0);

    let peer = edge(&deps, "gateway", "api.openai.com:443");
    assert_eq!(peer.call_count, 20);
    assert_eq!(peer.error_count, 4);
    assert_eq!(peer.error_share, 0.2);
    assert_eq!(peer.rate_per_second, 0.2);
    // Nearest rank of 10, 20, … 200 ms: the 10th and the 19th.
    assert_eq!(peer.p50_ms, 100.0);
    assert_eq!(peer.p95_ms, 190.0);

    // Under a CLIENT parent the call lasts as long as the caller saw it.
    let app = edge(&deps, "app", "gateway");
    assert_eq!((app.call_count, app.error_count), (4, 0));
    assert_eq!((app.p50_ms, app.p95_ms), (102.0, 104.0));
    let vllm = edge(&deps, "gateway", "vllm");
    assert_eq!((vllm.call_count, vllm.error_count), (4, 1));
    assert_eq!(vllm.error_share, 0.25);
    assert_eq!((vllm.p50_ms, vllm.p95_ms), (82.0, 84.0));

    let kinds: Vec<(&str, NodeKind)> = deps
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), n.kind))
        .collect();
    assert_eq!(
        kinds,
        [
            ("api.openai.com:443", NodeKind::Peer),
            ("app", NodeKind::Service),
            ("gateway", NodeKind::Service),
            ("vllm", NodeKind::Service),
        ]
    );
    assert_eq!(deps.ranks(), [2, 0, 1, 2]);
}

#[test]
fn the_lookback_narrows_the_window_and_the_calls() {
    let store = sample_store();
    let now = at(20_000);
    let range = Range::parse("lookback=10s", now);
    assert_eq!(range.since, Some(at(10_000)));
    assert_eq!(
        Range::parse("lookback=10000", now),
        range,
        "Jaeger's milliseconds"
    );
    assert_eq!(
        Range::parse("endTs=1700000020000&lookback=10s", SystemTime::now()),
        range
    );
    assert_eq!(Range::parse("", now).since, None);
    let deps = dependencies(&range.traces(&store), &range);
    assert_eq!(deps.window_seconds, 10.0);
    let peer = edge(&deps, "gateway", "api.openai.com:443");
    // Traces 11 to 20 started at 10 s to 19 s.
    assert_eq!(peer.call_count, 10);
    assert_eq!(peer.rate_per_second, 1.0);
    assert_eq!(deps.edges.len(), 1);
}

#[test]
fn peers_are_named_by_address_then_provider_then_peer_service() {
    let store = TraceStore::new(StoreConfig::default());
    for (t, attributes) in [
        (1u128, vec![KeyValue::new("server.address", "h")]),
        (2, vec![KeyValue::new("gen_ai.provider.name", "anthropic")]),
        (3, vec![KeyValue::new("peer.service", "billing")]),
        (4, vec![]),
    ] {
        insert(
            &store,
            "svc",
            span(t, 1, 0, SpanKind::Client, at(0), 5, attributes),
        );
    }
    let (traces, range) = all(&store);
    let deps = dependencies(&traces, &range);
    let mut children: Vec<&str> = deps.edges.iter().map(|e| e.child.as_str()).collect();
    children.sort();
    assert_eq!(children, ["anthropic", "billing", "h"]);
}

#[test]
fn edges_and_names_are_bounded() {
    let store = TraceStore::new(StoreConfig::default());
    let long = "x".repeat(1000);
    for t in 1..=250u128 {
        let address = format!("{t:03}{long}");
        let attributes = vec![KeyValue::new("server.address", address)];
        let calls = if t <= 5 { 3 } else { 1 };
        for n in 0..calls {
            insert(
                &store,
                "svc",
                span(t, 1 + n, 0, SpanKind::Client, at(0), 5, attributes.clone()),
            );
        }
    }
    let (traces, range) = all(&store);
    let deps = dependencies(&traces, &range);
    assert_eq!(deps.edges.len(), MAX_EDGES);
    assert_eq!(deps.edges[0].call_count, 3);
    assert_eq!(deps.other_edges, 50);
    assert_eq!(deps.other_calls, 50);
    assert_eq!(deps.nodes.len(), MAX_EDGES + 1);
    assert!(deps.nodes.iter().all(|n| n.name.len() <= MAX_NAME));
}

#[test]
fn ranks_stop_on_cycles() {
    let node = |name: &str| Node {
        name: name.into(),
        kind: NodeKind::Service,
    };
    let link = |parent: &str, child: &str| Edge {
        parent: parent.into(),
        child: child.into(),
        call_count: 1,
        error_count: 0,
        error_share: 0.0,
        rate_per_second: 1.0,
        p50_ms: 1.0,
        p95_ms: 1.0,
    };
    let deps = Dependencies {
        nodes: vec![node("a"), node("b"), node("c")],
        edges: vec![link("a", "b"), link("b", "a"), link("b", "c")],
        ..Dependencies::default()
    };
    let ranks = deps.ranks();
    assert!(ranks.iter().all(|r| *r < 3), "{ranks:?}");
    let chain = Dependencies {
        edges: vec![link("a", "b"), link("b", "c")],
        ..deps
    };
    assert_eq!(chain.ranks(), [0, 1, 2]);
}

#[test]
fn the_dependencies_json_is_a_superset_of_jaegers() {
    let store = sample_store();
    let query = Some("endTs=1700000100000&lookback=100000");
    let answer = ui::handle(&store, "/api/dependencies", query).expect("route");
    let json: serde_json::Value = serde_json::from_str(answer.body()).expect("json");
    let data = json["data"].as_array().expect("data");
    assert_eq!(data.len(), 3);
    let peer = data
        .iter()
        .find(|e| e["child"] == "api.openai.com:443")
        .expect("peer edge");
    assert_eq!(peer["parent"], "gateway");
    assert_eq!(peer["callCount"], 20);
    assert_eq!(peer["errorShare"], 0.2);
    assert_eq!(peer["p95Ms"], 190.0);
    assert_eq!(peer["ratePerSecond"], 0.2);
    assert_eq!(json["windowSeconds"], 100.0);
    assert_eq!(json["nodes"].as_array().expect("nodes").len(), 4);
}

/// A GenAI CLIENT span of `model`: `ms` long from `start`, with `ttft` seconds and `output`
/// tokens.
fn genai(t: u128, start: SystemTime, model: &str, ms: u64, ttft: f64, output: i64) -> SpanData {
    span(
        t,
        2,
        1,
        SpanKind::Client,
        start,
        ms,
        vec![
            KeyValue::new("gen_ai.operation.name", "chat"),
            KeyValue::new("gen_ai.request.model", model.to_owned()),
            KeyValue::new("gen_ai.response.time_to_first_chunk", ttft),
            KeyValue::new("gen_ai.usage.input_tokens", 10),
            KeyValue::new("gen_ai.usage.output_tokens", output),
            KeyValue::new("gen_ai.usage.cost", 0.25),
        ],
    )
}

#[test]
fn the_overview_bins_calls_per_model() {
    let store = TraceStore::new(StoreConfig::default());
    // gpt: three calls in bin 0 (0.1, 0.2, 0.3 s TTFT; 1, 2, 4 s long), one failing; one in bin 5.
    for (t, ms, ttft) in [(1u128, 1000, 0.1), (2, 2000, 0.2), (3, 4000, 0.3)] {
        let call = genai(t, at(100 * t as u64), "gpt", ms, ttft, 100);
        insert(&store, "gw", if t == 2 { failed(call) } else { call });
    }
    let mut fast = genai(4, at(5_500), "gpt", 500, 0.05, 100);
    fast.attributes.push(KeyValue::new(
        "llmtrace.usage.output_tokens_per_second",
        999.0,
    ));
    insert(&store, "gw", fast);
    insert(&store, "gw", genai(5, at(29_000), "claude", 1000, 0.5, 10));
    // Not GenAI: left out.
    insert(
        &store,
        "gw",
        span(6, 1, 0, SpanKind::Server, at(0), 9000, vec![]),
    );
    let range = Range {
        since: Some(base()),
        until: at(30_000),
    };
    let o = overview(&range.traces(&store), &range);
    assert_eq!((o.requests, o.bin_ms), (5, 1000));
    assert_eq!(o.start_ms, 1_700_000_000_000);
    let models: Vec<&str> = o.models.iter().map(|s| s.model.as_str()).collect();
    assert_eq!(models, ["gpt", "claude"]);
    let gpt = &o.models[0];
    assert_eq!(gpt.bins.len(), BINS);
    let b0 = &gpt.bins[0];
    assert_eq!((b0.requests, b0.errors), (3, 1));
    assert_eq!(b0.error_rate, Some(1.0 / 3.0));
    assert_eq!((b0.ttft_p50, b0.ttft_p95), (Some(0.2), Some(0.3)));
    assert_eq!((b0.duration_p50, b0.duration_p95), (Some(2.0), Some(4.0)));
    // 100 tokens over 1, 2 and 4 s.
    assert_eq!(b0.tokens_per_second, Some(50.0));
    assert_eq!(
        (b0.input_tokens, b0.output_tokens, b0.cost),
        (30, 300, 0.75)
    );
    assert_eq!(
        gpt.bins[5].tokens_per_second,
        Some(999.0),
        "the attribute wins"
    );
    assert_eq!(gpt.bins[1], Stats::default());
    assert_eq!(gpt.total.requests, 4);
    assert_eq!(gpt.total.ttft_p95, Some(0.3));
    assert_eq!(o.models[1].bins[29].requests, 1);
    assert_eq!(o.models[1].total.tokens_per_second, Some(10.0));
}

#[test]
fn a_model_without_a_price_has_an_unknown_cost_not_zero() {
    let store = TraceStore::new(StoreConfig::default());
    let unpriced = |t: u128, model: &str| {
        let mut call = genai(t, at(t as u64 * 10), model, 100, 0.01, 5);
        call.attributes
            .retain(|kv| kv.key.as_str() != "gen_ai.usage.cost");
        call.attributes
            .push(KeyValue::new("llmtrace.cost.missing", "no_price"));
        call
    };
    insert(&store, "gw", unpriced(1, "new-model"));
    insert(&store, "gw", unpriced(2, "new-model"));
    insert(&store, "gw", genai(3, at(30), "gpt", 100, 0.01, 5));
    insert(&store, "gw", unpriced(4, "gpt"));
    let (traces, range) = all(&store);
    let o = overview(&traces, &range);
    let total = |model: &str| {
        o.models
            .iter()
            .find(|s| s.model == model)
            .map(|s| s.total.clone())
            .expect(model)
    };
    assert_eq!(
        (total("new-model").cost, total("new-model").cost_missing),
        (0.0, 2)
    );
    assert_eq!((total("gpt").cost, total("gpt").cost_missing), (0.25, 1));
    let page = ui::handle(&store, "/ui/overview", None).expect("route");
    let body = page.body();
    let row = |model: &str| {
        let at = body
            .find(&format!("<tr data-model=\"{model}\">"))
            .expect(model);
        body[at..at + body[at..].find("</tr>").expect("row end")].to_owned()
    };
    assert!(
        row("new-model").contains(">unknown</td>"),
        "{}",
        row("new-model")
    );
    assert!(row("gpt").contains("(1 without a price)"), "{}", row("gpt"));
}

#[test]
fn models_beyond_the_cap_are_one_series() {
    let store = TraceStore::new(StoreConfig::default());
    let mut t = 0u128;
    for m in 0..12u64 {
        // Model m0 is called 12 times, m11 once.
        for _ in 0..(12 - m) {
            t += 1;
            insert(
                &store,
                "gw",
                genai(t, at(t as u64), &format!("m{m:02}"), 100, 0.01, 1),
            );
        }
    }
    let (traces, range) = all(&store);
    let o = overview(&traces, &range);
    assert_eq!(o.models.len(), MAX_MODELS + 1);
    assert_eq!(o.models[0].model, "m00");
    assert_eq!(o.models[MAX_MODELS].model, OTHER_MODEL);
    // m08 to m11: 4 + 3 + 2 + 1 calls.
    assert_eq!(o.models[MAX_MODELS].total.requests, 10);
}

#[test]
fn percentiles_are_nearest_rank() {
    assert_eq!(percentile(&[], 0.5), None);
    assert_eq!(percentile(&[7.0], 0.95), Some(7.0));
    let values: Vec<f64> = (1..=100).map(f64::from).collect();
    assert_eq!(percentile(&values, 0.5), Some(50.0));
    assert_eq!(percentile(&values, 0.95), Some(95.0));
    let mut reservoir = Reservoir::default();
    (0..3 * MAX_SAMPLES).for_each(|i| reservoir.add(i as f64));
    assert_eq!(reservoir.values.len(), MAX_SAMPLES);
    assert!(
        reservoir
            .values
            .iter()
            .any(|v| *v >= 2.0 * MAX_SAMPLES as f64)
    );
}

#[test]
fn the_pages_render_escape_and_handle_an_empty_store() {
    let empty = TraceStore::new(StoreConfig::default());
    for path in ["/ui/map", "/ui/overview"] {
        let page = ui::handle(&empty, path, None).expect("route");
        assert_eq!(page.status(), 200);
        assert!(page.body().contains("No "), "{path}: {}", page.body());
        assert!(
            page.body().contains("href=\"/ui/map\""),
            "{path} links the map"
        );
    }
    let json = ui::handle(&empty, "/api/dependencies", None).expect("route");
    assert!(json.body().starts_with("{\"data\":[]"), "{}", json.body());
    let json = ui::handle(&empty, "/api/overview", None).expect("route");
    assert!(json.body().contains("\"models\":[]"), "{}", json.body());

    let store = sample_store();
    let hostile = "<script>alert(1)</script>";
    let t = 999u128;
    insert(
        &store,
        hostile,
        span(t, 1, 0, SpanKind::Client, at(50_000), 5, vec![]),
    );
    insert(
        &store,
        "gateway",
        span(t, 5, 1, SpanKind::Server, at(50_001), 3, vec![]),
    );
    insert(
        &store,
        "gateway",
        genai(t, at(50_002), hostile, 100, 0.01, 5),
    );
    for path in ["/ui/map", "/ui/overview"] {
        let body = ui::handle(&store, path, None).expect("route").into_body();
        assert!(!body.contains("<script>alert"), "{path} escapes");
        assert!(
            body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{path}"
        );
        assert!(body.contains("<svg"), "{path} draws");
    }
    let map = ui::handle(&store, "/ui/map", None)
        .expect("route")
        .into_body();
    assert!(map.contains("data-child=\"api.openai.com:443\" data-calls=\"20\""));
    assert!(
        map.contains("class=\"edge failing\""),
        "20% errors is error-heavy"
    );
    let overview = ui::handle(&store, "/ui/overview", None)
        .expect("route")
        .into_body();
    assert!(overview.contains("<g class=\"series\" data-model=\"&lt;script&gt;"));
}
