//! The trace store with the store full (1 000 gateway traces: a SERVER span and a streamed
//! GenAI CLIENT span with the attributes and events the gateway records).
//!
//! - `store/list_page_100`: `/ui` as the viewer opens it (the newest 100 traces).
//! - `store/list_page_1000`: `/ui?limit=1000`, every trace.
//! - `store/list_sorted_ttft_errors`: a filtered, TTFT-sorted page.
//! - `store/query_sort_duration`: `TraceStore::list` alone, sorted by duration, limit 1 000.
//! - `store/api_traces_100`: `/api/traces?limit=100`, Jaeger-shaped JSON.
//! - `store/trace_page`: one trace's waterfall page.
//! - `store/map_page`: `/ui/map`, the dependency map of every stored trace.
//! - `store/api_dependencies`: `/api/dependencies`, the same edges as JSON.
//! - `store/overview_page`: `/ui/overview`, the per-model charts over every stored trace.
//! - `store/insert`: filing one span into the full store (evicting the oldest trace).
//!
//! ```sh
//! cargo bench --bench store
//! ```

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use llmtrace::store::{StoreConfig, TraceStore, ui};
use opentelemetry::trace::{
    Event, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue, StringValue, Value};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};

fn span(trace: u128, id: u64, parent: u64, kind: SpanKind, name: &str) -> SpanData {
    SpanData {
        span_context: SpanContext::new(
            TraceId::from(trace),
            SpanId::from(id),
            TraceFlags::SAMPLED,
            false,
            TraceState::NONE,
        ),
        parent_span_id: SpanId::from(parent),
        parent_span_is_remote: false,
        span_kind: kind,
        name: name.to_owned().into(),
        start_time: SystemTime::UNIX_EPOCH,
        end_time: SystemTime::UNIX_EPOCH,
        attributes: Vec::new(),
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: Status::Unset,
        instrumentation_scope: InstrumentationScope::builder("llmtrace-proxy").build(),
    }
}

/// The two spans of gateway trace `t`, started at `start`.
fn exchange(t: u128, start: SystemTime) -> [SpanData; 2] {
    let ms = 200 + (t as u64 * 37) % 2000;
    let ttft = 0.05 + (t % 97) as f64 / 100.0;
    let model = ["gpt-4o", "gpt-4o-mini", "claude-sonnet-4-6"][(t % 3) as usize];
    let mut genai = span(t, 2, 1, SpanKind::Client, &format!("chat {model}"));
    genai.start_time = start + Duration::from_micros(300);
    genai.end_time = start + Duration::from_millis(ms);
    let s = |k: &'static str, v: &str| KeyValue::new(k, v.to_owned());
    genai.attributes = vec![
        s("gen_ai.operation.name", "chat"),
        s("gen_ai.provider.name", "openai"),
        s("gen_ai.request.model", model),
        KeyValue::new("gen_ai.request.stream", true),
        KeyValue::new("gen_ai.request.max_tokens", 512),
        KeyValue::new("gen_ai.request.temperature", 0.7),
        s("gen_ai.response.id", &format!("chatcmpl-{t:024x}")),
        s("gen_ai.response.model", &format!("{model}-2024-08-06")),
        KeyValue::new(
            "gen_ai.response.finish_reasons",
            Value::Array(vec![StringValue::from("stop")].into()),
        ),
        KeyValue::new("gen_ai.response.time_to_first_chunk", ttft),
        KeyValue::new("gen_ai.usage.input_tokens", 120 + (t % 50) as i64),
        KeyValue::new("gen_ai.usage.output_tokens", 300 + (t % 200) as i64),
        KeyValue::new("gen_ai.usage.cost", (t % 1000) as f64 * 1e-6),
        s("server.address", "api.openai.com"),
        KeyValue::new("server.port", 443),
        KeyValue::new("http.response.status_code", 200),
        s("llmtrace.measured_at", "gateway"),
        KeyValue::new("llmtrace.stream.chunks", 120),
        KeyValue::new("llmtrace.stream.events", 124),
        KeyValue::new("llmtrace.stream.complete", true),
        KeyValue::new("llmtrace.stream.gap.mean", 0.012),
        KeyValue::new("llmtrace.stream.gap.p50", 0.011),
        KeyValue::new("llmtrace.stream.gap.p99", 0.045),
        KeyValue::new("llmtrace.stream.gap.max", 0.09),
        KeyValue::new("llmtrace.stream.stalls", 0),
        KeyValue::new("llmtrace.usage.output_tokens_per_second", 41.5),
        s("llmtrace.usage.source", "reported"),
        s("llmtrace.usage.injection", "added"),
        s("llmtrace.upstream.name", "openai"),
        KeyValue::new("llmtrace.gateway.request_us", 85),
        s("llmtrace.provider.request_id", &format!("req_{t:030x}")),
    ];
    genai.events.events.push(Event::new(
        "llmtrace.first_token",
        start + Duration::from_secs_f64(ttft),
        vec![],
        0,
    ));
    let mut server = span(t, 1, 0, SpanKind::Server, "POST /v1/chat/completions");
    server.start_time = start;
    server.end_time = start + Duration::from_millis(ms + 1);
    server.attributes = vec![
        s("http.request.method", "POST"),
        s("http.route", "/v1/chat/completions"),
        s("url.path", "/v1/chat/completions"),
        s("url.scheme", "http"),
        KeyValue::new(
            "http.response.status_code",
            if t % 20 == 0 { 500 } else { 200 },
        ),
        s("network.protocol.version", "1.1"),
        s("client.address", "10.0.0.7"),
        s("user_agent.original", "OpenAI/Python 1.52.0"),
        s("user.id", &format!("user-{}", t % 40)),
        s("session.id", &format!("session-{}", t % 200)),
        KeyValue::new("http.response.body.size", 18_000),
    ];
    if t % 20 == 0 {
        server.status = Status::error("upstream 500");
    }
    [genai, server]
}

fn full_store() -> TraceStore {
    let store = TraceStore::new(StoreConfig::default());
    let start = SystemTime::now() - Duration::from_secs(600);
    for t in 1..=StoreConfig::default().max_traces as u128 {
        for s in exchange(t, start + Duration::from_millis(t as u64 * 500)) {
            store.insert(s, Arc::from("llmtrace-proxy"));
        }
    }
    store
}

fn bench(c: &mut Criterion) {
    let store = full_store();
    let stats = store.stats();
    eprintln!(
        "store: {} traces, {} spans, {:.2} MiB",
        stats.traces,
        stats.spans,
        stats.bytes as f64 / 1048576.0
    );
    let mut group = c.benchmark_group("store");
    let page = |path: &'static str, query: Option<&'static str>| {
        let store = store.clone();
        move || black_box(ui::handle(&store, path, query).map(|r| r.into_body().len()))
    };
    group.bench_function("list_page_100", |b| b.iter(page("/ui", None)));
    group.bench_function("list_page_1000", |b| {
        b.iter(page("/ui", Some("limit=1000")))
    });
    group.bench_function("list_sorted_ttft_errors", |b| {
        b.iter(page("/ui", Some("error=1&sort=ttft&order=asc&model=gpt")))
    });
    group.bench_function("query_sort_duration", |b| {
        let query = llmtrace::store::Query::parse("sort=duration&limit=1000", SystemTime::now());
        b.iter(|| black_box(store.list(&query).len()))
    });
    group.bench_function("api_traces_100", |b| {
        b.iter(page("/api/traces", Some("limit=100")))
    });
    let trace_path: &'static str = Box::leak(format!("/ui/traces/{:032x}", 500).into_boxed_str());
    group.bench_function("trace_page", |b| b.iter(page(trace_path, None)));
    group.bench_function("map_page", |b| b.iter(page("/ui/map", None)));
    group.bench_function("api_dependencies", |b| {
        b.iter(page("/api/dependencies", None))
    });
    group.bench_function("overview_page", |b| b.iter(page("/ui/overview", None)));
    let mut next = 1_000_000u128;
    let start = SystemTime::now();
    group.bench_function("insert", |b| {
        b.iter_batched(
            || {
                next += 1;
                exchange(next, start)
            },
            |[genai, _]| store.insert(genai, Arc::from("llmtrace-proxy")),
            criterion::BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
