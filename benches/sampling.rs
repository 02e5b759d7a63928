//! The cost of sampling.
//!
//! - `tail_sampler`: spans per second through the SDK (a root and two children per trace,
//!   ended in the usual order) into
//!   - `batch`: the plain `BatchSpanProcessor`;
//!   - `tail_immediate`: a `TailSampler` in front of the same batch processor, deciding as soon
//!     as the root ends (`decision_wait = 0`), with error/duration/attribute policies and a
//!     1 % fallback;
//!   - `tail_wait_50ms`: the same with a 50 ms wait for late children, so traces sit in the
//!     buffer and are decided by the background thread.
//!
//!   Both export to an exporter that drops everything, so we measure span handling, not I/O.
//! - `head_sampler`: one `should_sample` call, for a server span with its start attributes
//!   (method, route, a captured header) and a parent context holding baggage:
//!   - `always_on`: the SDK's `AlwaysOn`;
//!   - `parent_based_ratio`: the SDK's `ParentBased(TraceIdRatioBased(0.01))`;
//!   - `rules_first_match` / `rules_no_match`: a `RuleSampler` with five rules (route, header,
//!     baggage, model, span name) where the first rule matches, or none does and the default
//!     ratio decides.
//!
//! ```sh
//! cargo bench --bench sampling
//! ```

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use llmtrace::sampling::{Match, Policy, RuleSampler, Sample, TailSampler};
use opentelemetry::baggage::BaggageExt;
use opentelemetry::trace::{
    Span as _, SpanKind, TraceContextExt, TraceId, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue, StringValue, Value};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchSpanProcessor, Sampler, SdkTracerProvider, ShouldSample, SpanData, SpanExporter,
    SpanProcessor,
};

#[derive(Debug)]
struct DropExporter;

impl SpanExporter for DropExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        black_box(batch);
        Ok(())
    }
}

fn batch() -> BatchSpanProcessor {
    BatchSpanProcessor::builder(DropExporter).build()
}

fn tail(wait: Duration) -> TailSampler<BatchSpanProcessor> {
    TailSampler::builder(batch())
        .policy(Policy::Error)
        .policy(Policy::Duration(Duration::from_secs(5)))
        .policy(Policy::attribute(
            "gen_ai.response.finish_reasons",
            "content_filter",
        ))
        .fallback_ratio(0.01)
        .decision_wait(wait)
        .build()
}

fn provider(processor: impl SpanProcessor + 'static) -> SdkTracerProvider {
    SdkTracerProvider::builder()
        .with_sampler(Sampler::AlwaysOn)
        .with_span_processor(processor)
        .build()
}

/// One trace: a server root with two children, ended children first.
fn trace(tracer: &opentelemetry_sdk::trace::SdkTracer) {
    let root = tracer
        .span_builder("POST /v1/chat/completions")
        .with_kind(SpanKind::Server)
        .with_attributes([
            KeyValue::new("http.request.method", "POST"),
            KeyValue::new("http.route", "/v1/chat/completions"),
        ])
        .start(tracer);
    let cx = Context::new().with_span(root);
    let mut genai = tracer
        .span_builder("chat gpt-4o")
        .with_kind(SpanKind::Client)
        .with_attributes([KeyValue::new("gen_ai.request.model", "gpt-4o")])
        .start_with_context(tracer, &cx);
    genai.set_attribute(KeyValue::new("gen_ai.usage.output_tokens", 42));
    genai.end();
    let mut child = tracer.start_with_context("db", &cx);
    child.end();
    cx.span().end();
}

fn tail_sampler(c: &mut Criterion) {
    let mut group = c.benchmark_group("tail_sampler");
    group.throughput(Throughput::Elements(3));

    let plain = provider(batch());
    let tracer = plain.tracer("bench");
    group.bench_function("batch", |b| b.iter(|| trace(&tracer)));

    let immediate = provider(tail(Duration::ZERO));
    let tracer = immediate.tracer("bench");
    group.bench_function("tail_immediate", |b| b.iter(|| trace(&tracer)));

    let waiting = provider(tail(Duration::from_millis(50)));
    let tracer = waiting.tracer("bench");
    group.bench_function("tail_wait_50ms", |b| b.iter(|| trace(&tracer)));

    group.finish();
    for p in [plain, immediate, waiting] {
        let _ = p.shutdown();
    }
}

fn head_sampler(c: &mut Criterion) {
    let mut group = c.benchmark_group("head_sampler");
    let rules = RuleSampler::builder()
        .rule(Match::new().route("/healthz"), Sample::Never)
        .rule(
            Match::new().header("x-user-tier", "enterprise"),
            Sample::Always,
        )
        .named_rule(
            "vip",
            Match::new().baggage("user_id", "vip-*"),
            Sample::Always,
        )
        .rule(Match::new().model("gpt-4o-experimental*"), Sample::Always)
        .rule(Match::new().span_name("GET /v1/models"), Sample::Ratio(0.1))
        .default_ratio(0.01)
        .build();
    let parent = Context::new().with_baggage([
        KeyValue::new("user_id", "u-1234"),
        KeyValue::new("session_id", "s-5678"),
    ]);
    let attributes = |route: &'static str| {
        [
            KeyValue::new("http.request.method", "POST"),
            KeyValue::new("url.scheme", "http"),
            KeyValue::new("http.route", route),
            KeyValue::new(
                "http.request.header.x-user-tier",
                Value::Array(vec![StringValue::from("free")].into()),
            ),
        ]
    };
    let chat = attributes("/v1/chat/completions");
    let health = attributes("/healthz");
    let trace_id = TraceId::from(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736_u128);
    let run = |sampler: &dyn ShouldSample, attributes: &[KeyValue]| {
        black_box(sampler.should_sample(
            Some(&parent),
            black_box(trace_id),
            "POST /v1/chat/completions",
            &SpanKind::Server,
            attributes,
            &[],
        ))
    };
    let always = Sampler::AlwaysOn;
    group.bench_function("always_on", |b| b.iter(|| run(&always, &chat)));
    let ratio = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(0.01)));
    group.bench_function("parent_based_ratio", |b| b.iter(|| run(&ratio, &chat)));
    group.bench_function("rules_first_match", |b| b.iter(|| run(&rules, &health)));
    group.bench_function("rules_no_match", |b| b.iter(|| run(&rules, &chat)));
    group.finish();
}

criterion_group!(benches, tail_sampler, head_sampler);
criterion_main!(benches);
