//! The store's bounds, queries, JSON shape and escaping.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    Event, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};

use super::query::micros;
use super::*;

/// A span of trace `trace` (its `n`th), `ms` long from `start`, with `attributes`.
pub(crate) fn span(
    trace: u128,
    n: u64,
    parent: u64,
    kind: SpanKind,
    start: SystemTime,
    ms: u64,
    attributes: Vec<KeyValue>,
) -> SpanData {
    SpanData {
        span_context: SpanContext::new(
            TraceId::from(trace),
            SpanId::from(n),
            TraceFlags::SAMPLED,
            false,
            TraceState::NONE,
        ),
        parent_span_id: if parent == 0 {
            SpanId::INVALID
        } else {
            SpanId::from(parent)
        },
        parent_span_is_remote: false,
        span_kind: kind,
        name: format!("span {n}").into(),
        start_time: start,
        end_time: start + Duration::from_millis(ms),
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: Status::Unset,
        instrumentation_scope: InstrumentationScope::builder("test").build(),
    }
}

/// A gateway-like trace: a SERVER span and a GenAI CLIENT span under it.
pub(crate) fn exchange(
    trace: u128,
    start: SystemTime,
    model: &str,
    ms: u64,
    ttft: f64,
) -> [SpanData; 2] {
    let mut genai = span(
        trace,
        2,
        1,
        SpanKind::Client,
        start + Duration::from_millis(1),
        ms - 2,
        vec![
            KeyValue::new("gen_ai.operation.name", "chat"),
            KeyValue::new("gen_ai.request.model", model.to_owned()),
            KeyValue::new("gen_ai.response.time_to_first_chunk", ttft),
            KeyValue::new("gen_ai.usage.input_tokens", 10),
            KeyValue::new("gen_ai.usage.output_tokens", (trace % 100) as i64),
            KeyValue::new(USAGE_COST, trace as f64 * 1e-6),
        ],
    );
    genai.name = format!("chat {model}").into();
    genai.events.events.push(Event::new(
        "llmtrace.first_token",
        start + Duration::from_secs_f64(0.001 + ttft),
        vec![],
        0,
    ));
    let mut server = span(
        trace,
        1,
        0,
        SpanKind::Server,
        start,
        ms,
        vec![
            KeyValue::new("http.route", "/v1/chat/completions"),
            KeyValue::new("http.response.status_code", 200),
            KeyValue::new("user.id", format!("user-{}", trace % 3)),
        ],
    );
    server.name = "POST /v1/chat/completions".into();
    [genai, server]
}

fn service() -> Arc<str> {
    Arc::from("llmtrace-proxy")
}

fn fill(store: &TraceStore, traces: u128, start: SystemTime) {
    for t in 1..=traces {
        let at = start + Duration::from_millis(t as u64);
        for s in exchange(t, at, "gpt-4o", 100 + (t as u64 % 50), 0.02) {
            store.insert(s, service());
        }
    }
}

#[test]
fn a_trace_is_summarised_from_its_spans() {
    let store = TraceStore::new(StoreConfig::default());
    let now = SystemTime::now();
    for s in exchange(7, now, "gpt-4o", 300, 0.12) {
        store.insert(s, service());
    }
    let trace = store.get(TraceId::from(7u128)).expect("stored");
    let s = &trace.summary;
    assert_eq!(
        s.name, "POST /v1/chat/completions",
        "the root names the trace"
    );
    assert_eq!(s.spans, 2);
    assert_eq!(s.duration(), Duration::from_millis(300));
    assert_eq!(s.model.as_deref(), Some("gpt-4o"));
    assert_eq!(s.route.as_deref(), Some("/v1/chat/completions"));
    assert_eq!(s.status_code, Some(200));
    assert_eq!(s.user.as_deref(), Some("user-1"));
    assert_eq!(s.ttft, Some(0.12));
    assert_eq!(s.tokens, Some(17));
    assert_eq!(s.cost, Some(7e-6));
    assert!(!s.error);
    let genai = trace.spans.iter().find(|s| s.is_genai_client()).unwrap();
    let fraction = genai.first_token_fraction().unwrap();
    assert!((fraction - 0.12 / 0.298).abs() < 1e-9, "{fraction}");
}

#[test]
fn the_oldest_traces_go_first_when_over_the_count() {
    let store = TraceStore::new(StoreConfig {
        max_traces: 10,
        ..StoreConfig::default()
    });
    fill(&store, 25, SystemTime::now());
    let stats = store.stats();
    assert_eq!(stats.traces, 10);
    assert_eq!(stats.spans, 20);
    assert_eq!(stats.evicted_traces, 15);
    assert!(store.get(TraceId::from(15u128)).is_none());
    assert!(store.get(TraceId::from(16u128)).is_some());
    assert_eq!(stats.bytes, store.recount_bytes());
}

#[test]
fn a_hundred_thousand_traces_stay_under_the_byte_cap() {
    // The default byte cap; a count cap that never binds.
    let config = StoreConfig {
        max_traces: 1_000_000,
        ..StoreConfig::default()
    };
    let store = TraceStore::new(config);
    let start = SystemTime::now();
    let mut peak = 0;
    for t in 1..=100_000u128 {
        let at = start + Duration::from_micros(t as u64);
        for s in exchange(t, at, "gpt-4o-mini-2024-07-18", 120, 0.03) {
            store.insert(s, service());
        }
        peak = peak.max(store.stats().bytes);
    }
    let stats = store.stats();
    assert!(peak <= config.max_bytes, "{peak} > {}", config.max_bytes);
    assert_eq!(
        stats.bytes,
        store.recount_bytes(),
        "the running count drifts"
    );
    assert!(stats.traces > 1000, "{stats:?}: the cap binds by bytes");
    assert_eq!(stats.evicted_traces as usize + stats.traces, 100_000);
    // The newest survive.
    assert!(store.get(TraceId::from(100_000u128)).is_some());
    assert!(store.get(TraceId::from(1u128)).is_none());
}

#[test]
fn the_byte_count_covers_attributes_events_and_links() {
    let now = SystemTime::now();
    let bare = span(1, 1, 0, SpanKind::Internal, now, 1, vec![]);
    let mut full = bare.clone();
    full.attributes.push(KeyValue::new("k", "v".repeat(10_000)));
    let base = span_bytes(&bare);
    assert!(span_bytes(&full) >= base + 10_001);
    let mut with_event = bare.clone();
    with_event.events.events.push(Event::new(
        "e",
        now,
        vec![KeyValue::new("big", "x".repeat(5000))],
        0,
    ));
    assert!(span_bytes(&with_event) >= base + 5000);
    let mut with_link = bare.clone();
    with_link.links.links.push(opentelemetry::trace::Link::new(
        bare.span_context.clone(),
        vec![KeyValue::new("l", "y".repeat(3000))],
        0,
    ));
    assert!(span_bytes(&with_link) >= base + 3000);
}

#[test]
fn a_trace_larger_than_the_cap_is_refused_and_counted() {
    let store = TraceStore::new(StoreConfig {
        max_bytes: 8 * 1024,
        ..StoreConfig::default()
    });
    let now = SystemTime::now();
    let big = span(
        1,
        1,
        0,
        SpanKind::Internal,
        now,
        1,
        vec![KeyValue::new("k", "v".repeat(20_000))],
    );
    store.insert(big, service());
    assert_eq!(store.stats().traces, 0);
    assert_eq!(store.stats().oversized_spans, 1);
    // Only the (empty) map's buckets are left.
    assert!(store.stats().bytes < 2048, "{:?}", store.stats());
    assert_eq!(store.stats().bytes, store.recount_bytes());
}

#[test]
fn queries_filter_sort_and_limit() {
    let store = TraceStore::new(StoreConfig::default());
    let now = SystemTime::now();
    fill(&store, 40, now - Duration::from_secs(60));
    let mut failed = exchange(99, now, "claude-sonnet-4-6", 900, 0.5);
    failed[0].status = Status::error("upstream 500");
    failed[1]
        .attributes
        .push(KeyValue::new("session.id", "s-1"));
    for s in failed {
        store.insert(s, service());
    }
    let ids = |q: &str| -> Vec<u128> {
        store
            .list(&Query::parse(q, now))
            .iter()
            .map(|s| u128::from_be_bytes(s.trace_id.to_bytes()))
            .collect()
    };
    assert_eq!(ids("error=1"), vec![99]);
    assert_eq!(ids("model=CLAUDE"), vec![99]);
    assert_eq!(ids("session=s-1"), vec![99]);
    assert_eq!(ids("min_duration=500ms"), vec![99]);
    assert_eq!(ids("lookback=10s"), vec![99]);
    assert_eq!(ids("limit=3"), vec![99, 40, 39], "newest first");
    assert_eq!(ids("sort=start&order=asc&limit=2"), vec![1, 2]);
    assert_eq!(ids("sort=duration&limit=1"), vec![99]);
    assert_eq!(ids("sort=cost&limit=2"), vec![99, 40]);
    assert_eq!(ids("sort=tokens&order=asc&limit=1"), vec![1]);
    assert_eq!(ids("user=user-2&limit=2"), vec![38, 35]);
    assert_eq!(ids("route=chat").len(), 41);
    assert_eq!(ids("service=llmtrace-proxy&limit=1000").len(), 41);
    assert_eq!(ids("service=other").len(), 0);
    assert_eq!(
        ids("operation=POST%20%2Fv1%2Fchat%2Fcompletions&limit=1"),
        vec![99]
    );
    assert_eq!(Query::parse("limit=100000", now).limit, MAX_LIMIT);
    assert_eq!(Query::parse("limit=0", now).limit, 1);
    let long = "m".repeat(10_000);
    assert_eq!(
        Query::parse(&format!("model={long}"), now)
            .model
            .unwrap()
            .len(),
        MAX_FILTER_BYTES
    );
}

#[test]
fn durations_parse_in_every_unit() {
    assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
    assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
    assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
    assert_eq!(parse_duration("100"), Some(Duration::from_micros(100)));
    assert_eq!(parse_duration("100us"), Some(Duration::from_micros(100)));
    assert_eq!(parse_duration("x"), None);
    assert_eq!(parse_duration("5 parsecs"), None);
}

#[test]
fn the_api_answers_in_jaegers_shape() {
    let store = TraceStore::new(StoreConfig::default());
    let now = SystemTime::now();
    for s in exchange(0xabc, now, "gpt-4o", 200, 0.05) {
        store.insert(s, service());
    }
    let response = ui::handle(&store, "/api/traces", Some("limit=5")).unwrap();
    assert_eq!(response.status(), 200);
    let json: serde_json::Value = serde_json::from_str(response.body()).unwrap();
    let trace = &json["data"][0];
    let id = format!("{:032x}", 0xabc);
    assert_eq!(trace["traceID"], id.as_str());
    assert_eq!(trace["processes"]["p1"]["serviceName"], "llmtrace-proxy");
    let spans = trace["spans"].as_array().unwrap();
    assert_eq!(spans.len(), 2);
    let server = &spans[0];
    let genai = &spans[1];
    assert_eq!(server["operationName"], "POST /v1/chat/completions");
    assert_eq!(server["duration"], 200_000);
    assert_eq!(server["references"].as_array().unwrap().len(), 0);
    assert_eq!(genai["references"][0]["refType"], "CHILD_OF");
    assert_eq!(genai["references"][0]["spanID"], server["spanID"]);
    assert_eq!(genai["startTime"].as_u64().unwrap(), micros(now) + 1000);
    assert_eq!(genai["processID"], "p1");
    let tag = |span: &serde_json::Value, key: &str| {
        span["tags"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["key"] == key)
            .cloned()
            .unwrap_or_else(|| panic!("no tag {key}"))
    };
    assert_eq!(
        tag(genai, "gen_ai.usage.input_tokens"),
        serde_json::json!({"key": "gen_ai.usage.input_tokens", "type": "int64", "value": 10})
    );
    assert_eq!(tag(genai, "gen_ai.request.model")["type"], "string");
    assert_eq!(
        tag(genai, "gen_ai.response.time_to_first_chunk")["type"],
        "float64"
    );
    assert_eq!(tag(genai, "span.kind")["value"], "client");
    assert_eq!(
        genai["logs"][0]["fields"][0]["value"],
        "llmtrace.first_token"
    );
    let one = ui::handle(&store, &format!("/api/traces/{id}"), None).unwrap();
    let one: serde_json::Value = serde_json::from_str(one.body()).unwrap();
    assert_eq!(one["data"][0]["spans"].as_array().unwrap().len(), 2);
    let missing = ui::handle(&store, &format!("/api/traces/{:032x}", 1), None).unwrap();
    assert_eq!(missing.status(), 404);
    assert!(missing.body().contains("\"errors\""));
    let services = ui::handle(&store, "/api/services", None).unwrap();
    assert!(services.body().contains("\"llmtrace-proxy\""));
}

#[test]
fn client_controlled_values_are_inert_in_the_pages() {
    let store = TraceStore::new(StoreConfig::default());
    let now = SystemTime::now();
    let evil = "<script>alert(1)</script>\"'&";
    let mut spans = exchange(5, now, evil, 200, 0.05);
    spans[1]
        .attributes
        .push(KeyValue::new("http.request.header.x-evil", evil));
    spans[1].name = format!("POST {evil}").into();
    for s in spans {
        store.insert(s, service());
    }
    let list = ui::handle(&store, "/ui", Some("model=%3Cscript%3E")).unwrap();
    let trace = ui::handle(&store, &format!("/ui/traces/{:032x}", 5), None).unwrap();
    for page in [list.body(), trace.body()] {
        assert!(!page.contains("<script>alert"), "{page}");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;"));
        assert_eq!(
            page.matches("<script").count(),
            1,
            "only the viewer's own script"
        );
    }
    let csp = list.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("script-src 'self' 'unsafe-inline'")
    );
}

#[test]
fn the_pages_route_and_refuse_what_they_do_not_know() {
    let store = TraceStore::new(StoreConfig::default());
    fill(&store, 3, SystemTime::now());
    let root = ui::handle(&store, "/", None).unwrap();
    assert_eq!(root.status(), 303);
    assert_eq!(root.headers()["location"], "/ui");
    let list = ui::handle(&store, "/ui", Some("sort=ttft&refresh=on")).unwrap();
    assert_eq!(list.status(), 200);
    let body = list.body();
    assert_eq!(body.matches("data-trace-id=").count(), 3);
    assert!(body.contains("http-equiv=\"refresh\""));
    assert!(
        body.contains("order=asc&amp;refresh=on"),
        "the sorted column flips the order"
    );
    assert_eq!(
        ui::handle(&store, "/ui/traces/nothex", None)
            .unwrap()
            .status(),
        404
    );
    let zero = format!("/ui/traces/{}", "0".repeat(32));
    assert_eq!(ui::handle(&store, &zero, None).unwrap().status(), 404);
    assert!(ui::handle(&store, "/metrics", None).is_none());
    let css = ui::handle(&store, "/ui/assets/viewer.css", None).unwrap();
    assert!(
        css.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
}

#[test]
fn the_waterfall_nests_spans_and_marks_the_first_token() {
    let store = TraceStore::new(StoreConfig::default());
    let now = SystemTime::now();
    let [genai, server] = exchange(9, now, "gpt-4o", 1000, 0.25);
    // A child of the GenAI span, as a traced upstream exports it.
    let upstream = span(
        9,
        3,
        2,
        SpanKind::Server,
        now + Duration::from_millis(10),
        900,
        vec![],
    );
    for s in [upstream, genai, server] {
        store.insert(s, service());
    }
    let page = ui::handle(&store, &format!("/ui/traces/{:032x}", 9), None).unwrap();
    let body = page.body();
    let order: Vec<usize> = ["POST /v1/chat/completions", "chat gpt-4o", "span 3"]
        .iter()
        .map(|name| body.find(&format!(">{name}</a>")).expect(name))
        .collect();
    assert!(order[0] < order[1] && order[1] < order[2], "tree order");
    assert!(body.contains("padding-left:2em\"><a href=\"#span-0000000000000003\""));
    // 0.25 s of a 0.998 s span.
    let marker = body.split("data-first-token=\"").nth(1).unwrap();
    let percent: f64 = marker[..marker.find('"').unwrap()].parse().unwrap();
    assert!((percent - 25.050).abs() < 0.01, "{percent}");
    assert!(body.contains("data-copy=\"00000000000000000000000000000009\""));
}

#[test]
fn the_processor_files_spans_off_the_callers_thread() {
    use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
    let store = TraceStore::new(StoreConfig::default());
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_span_processor(store.processor())
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name("svc")
                .build(),
        )
        .build();
    let tracer = provider.tracer("t");
    let mut span = tracer.start("work");
    span.set_attribute(KeyValue::new("llmtrace.sampling.reason", "slow"));
    span.end();
    provider.force_flush().unwrap();
    let list = store.list(&Query::default());
    assert_eq!(list.len(), 1);
    assert_eq!(&*list[0].service, "svc");
    assert_eq!(list[0].sampling_reason.as_deref(), Some("slow"));
    assert_eq!(store.stats().received_spans, 1);
}

#[test]
fn a_full_queue_drops_and_counts() {
    let store = TraceStore::new(StoreConfig {
        queue: 1,
        ..StoreConfig::default()
    });
    // A processor without its thread: nothing drains the queue.
    let processor = StoreProcessor {
        sender: Some(std::sync::mpsc::sync_channel(1).0),
        store: store.clone(),
        service: service(),
    };
    let now = SystemTime::now();
    for n in 1..=3 {
        processor.on_end(span(1, n, 0, SpanKind::Internal, now, 1, vec![]));
    }
    assert_eq!(
        store.stats().dropped_spans,
        3,
        "the receiver is gone: all dropped"
    );
}

#[cfg(feature = "axum")]
#[tokio::test]
async fn the_axum_router_serves_the_viewer() {
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;
    let store = TraceStore::new(StoreConfig::default());
    fill(&store, 2, SystemTime::now());
    let app = axum::Router::new()
        .route("/", axum::routing::get(|| async { "app" }))
        .merge(ui::router(store));
    let get = |path: &str| {
        let app = app.clone();
        let request = http::Request::get(path)
            .body(axum::body::Body::empty())
            .unwrap();
        async move {
            let response = app.oneshot(request).await.unwrap();
            let status = response.status();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8(body.to_vec()).unwrap())
        }
    };
    let (status, body) = get("/ui?sort=duration").await;
    assert_eq!(status, 200);
    assert_eq!(body.matches("data-trace-id=").count(), 2);
    let (status, body) = get(&format!("/api/traces/{:032x}", 2)).await;
    assert_eq!(status, 200);
    assert!(body.starts_with("{\"data\":[{"), "{body}");
    assert_eq!(get("/ui/assets/viewer.js").await.0, 200);
    assert_eq!(get("/").await.1, "app", "the app keeps its root");
}
