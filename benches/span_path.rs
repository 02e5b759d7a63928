//! Where the microseconds of one traced gateway request go, step by step (issue 12).
//!
//! The gateway's per-request span work, driven through the same `llmtrace::driver` calls its
//! pingora phases make, for a non-streamed OpenAI chat request (60-byte prompt):
//! - `request_info`: reading the request body (`RequestInfo::parse`);
//! - `inbound_span`: the SERVER span, started from the borrowed request head and ended;
//! - `genai_span`: the GenAI span: start, request info, response head, the JSON body, end;
//! - `both_spans`: what one request costs the gateway in spans, without export;
//! - `both_spans_tracing_off`: the same with tracing off (`OTEL_SDK_DISABLED=true` in the
//!   gateway: an `AlwaysOff` sampler): spans do not record, but the core still reads the
//!   exchange for the metrics and the access log;
//! - `otlp_encode`: turning those two finished spans into an OTLP/gRPC request's bytes (what
//!   the export thread does per request, off the request path) as the SDK's exporter does
//!   (`opentelemetry_proto` structs, then prost), and `otlp_encode_direct` as the gateway's
//!   own exporter does (`llmtrace_proxy::otlp::encode`, straight from `SpanData`).
//!
//! - `stream/*`: a streamed chat of 300 content chunks through the GenAI span, with the chunk
//!   timeline at its default 256 points and off (`chunk_timeline = 0`): the span path
//!   (`genai_span_*`) and the OTLP encoding of the finished span (`otlp_encode_*`).
//!
//! Spans end in a processor that drops them, so export I/O is not measured.
//!
//! ```sh
//! cargo bench --bench span_path
//! ```

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use llmtrace::GenAiLayer;
use llmtrace::driver::{BusinessContext, GenAiRecorder, GenAiSpan, InboundRequest, InboundSpan};
use llmtrace::genai::{End, Endpoint, Exchange, GenAiConfig, RequestInfo};
use opentelemetry::global::BoxedTracer;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{Context, InstrumentationScope};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData, SpanProcessor};
use prost::Message as _;

const REQUEST: &[u8] =
    br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello in one word."}]}"#;
const RESPONSE: &[u8] = br#"{"id":"chatcmpl-abc123","object":"chat.completion","created":1733000000,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":"Hello!"},"finish_reason":"stop"}],"usage":{"prompt_tokens":13,"completion_tokens":2,"total_tokens":15}}"#;

/// Drops every span at its end: the span path without export.
#[derive(Debug)]
struct DropProcessor;

impl SpanProcessor for DropProcessor {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &Context) {}
    fn on_end(&self, span: SpanData) {
        black_box(span);
    }
    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }
    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

struct Setup {
    tracer: BoxedTracer,
    recorder: Arc<GenAiRecorder>,
    parts: http::request::Parts,
    endpoint: Endpoint,
}

fn setup(provider: &SdkTracerProvider) -> Setup {
    let (parts, ()) = http::Request::post("/v1/chat/completions")
        .header(http::header::HOST, "127.0.0.1:8080")
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::AUTHORIZATION, "Bearer sk-bench")
        .header(http::header::USER_AGENT, "OpenAI/Python 1.60.0")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .header("x-user-id", "user-4711")
        .header("x-session-id", "session-0815")
        .header("baggage", "experiment=B")
        .body(())
        .unwrap()
        .into_parts();
    let scope = InstrumentationScope::builder("llmtrace-proxy").build();
    Setup {
        tracer: BoxedTracer::new(Box::new(provider.tracer_with_scope(scope))),
        recorder: GenAiLayer::gateway()
            .with_tracer_provider(provider)
            .into_recorder(),
        endpoint: Endpoint::detect("/v1/chat/completions", Some("api.openai.com")).unwrap(),
        parts,
    }
}

fn inbound(s: &Setup, parent: &Context) -> InboundSpan {
    inbound_with(s, parent, None)
}

/// The SERVER span with the business context `business` reads from the request.
fn inbound_with(s: &Setup, parent: &Context, business: Option<&BusinessContext>) -> InboundSpan {
    let business = business.and_then(|b| b.extract(&s.parts.headers, parent));
    let request = InboundRequest {
        method: &s.parts.method,
        uri: &s.parts.uri,
        version: s.parts.version,
        headers: &s.parts.headers,
        route: Some("/v1/chat/completions"),
        peer: Some(([127, 0, 0, 1], 50_000).into()),
        business: business.as_ref(),
    };
    InboundSpan::start(&s.tracer, &request, parent, None)
}

fn genai(s: &Setup, parent: &Context) {
    let exchange = Exchange::new(
        s.recorder.config().clone(),
        s.endpoint.clone(),
        RequestInfo::parse(&s.endpoint, b"", false),
        Instant::now(),
    );
    let mut span = GenAiSpan::start(&s.recorder, exchange, &s.parts, parent);
    span.set_request(RequestInfo::parse(&s.endpoint, REQUEST, false));
    let mut head = http::HeaderMap::new();
    head.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    span.on_response_head(http::StatusCode::OK, &head);
    span.on_response_data(RESPONSE);
    black_box(span.finish(End::Complete));
}

fn span_path(c: &mut Criterion) {
    let provider = SdkTracerProvider::builder()
        .with_span_processor(DropProcessor)
        .build();
    let s = setup(&provider);
    let parent = llmtrace::propagation::extract(&s.parts.headers);
    let mut group = c.benchmark_group("span_path");
    group.bench_function("request_info", |b| {
        b.iter(|| black_box(RequestInfo::parse(&s.endpoint, black_box(REQUEST), false)))
    });
    group.bench_function("inbound_span", |b| {
        b.iter(|| {
            let mut span = inbound(&s, &parent);
            span.on_response_head(http::StatusCode::OK, &http::HeaderMap::new());
            span.end(End::Complete);
        })
    });
    group.bench_function("genai_span", |b| b.iter(|| genai(&s, &parent)));
    group.bench_function("both_spans", |b| b.iter(|| both(&s, &parent)));
    // `[telemetry.attributes]` with three mappings, one a metric dimension: the attributes
    // go on both spans.
    let business = BusinessContext::builder()
        .header("x-user-id", "user.id")
        .header("x-session-id", "session.id")
        .baggage("experiment", "llmtrace.experiment")
        .metric_dimension("llmtrace.experiment")
        .build()
        .unwrap();
    group.bench_function("both_spans_business_context", |b| {
        b.iter(|| both_with(&s, &parent, Some(&business)))
    });
    let off = SdkTracerProvider::builder()
        .with_sampler(opentelemetry_sdk::trace::Sampler::AlwaysOff)
        .with_span_processor(DropProcessor)
        .build();
    let s_off = setup(&off);
    group.bench_function("both_spans_tracing_off", |b| {
        b.iter(|| both(&s_off, &parent))
    });
    group.finish();
}

/// One request's SERVER and GenAI spans.
fn both(s: &Setup, parent: &Context) {
    both_with(s, parent, None)
}

fn both_with(s: &Setup, parent: &Context, business: Option<&BusinessContext>) {
    let mut server = inbound_with(s, parent, business);
    let cx = server.context().cloned().unwrap_or_default();
    genai(s, &cx);
    server.on_response_head(http::StatusCode::OK, &http::HeaderMap::new());
    server.end(End::Complete);
}

fn otlp_encode(c: &mut Criterion) {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let s = setup(&provider);
    let parent = llmtrace::propagation::extract(&s.parts.headers);
    let mut server = inbound(&s, &parent);
    let cx = server.context().cloned().unwrap_or_default();
    genai(&s, &cx);
    server.on_response_head(http::StatusCode::OK, &http::HeaderMap::new());
    server.end(End::Complete);
    let spans = exporter.get_finished_spans().unwrap();
    assert_eq!(spans.len(), 2, "a SERVER and a GenAI span");
    let resource = ResourceAttributesWithSchema::from(
        &Resource::builder_empty()
            .with_service_name("llmtrace-proxy")
            .build(),
    );
    c.bench_function("span_path/otlp_encode", |b| {
        b.iter(|| {
            // The SDK's exporter clones the batch too (it keeps it for retries).
            let request = ExportTraceServiceRequest {
                resource_spans: group_spans_by_resource_and_scope(spans.clone(), &resource),
            };
            black_box(request.encode_to_vec())
        })
    });
    let sdk_resource = Resource::builder_empty()
        .with_service_name("llmtrace-proxy")
        .build();
    let mut buffer = Vec::new();
    c.bench_function("span_path/otlp_encode_direct", |b| {
        b.iter(|| {
            buffer.clear();
            llmtrace_proxy::otlp::encode::export_request(&spans, &sdk_resource, &mut buffer);
            black_box(buffer.len())
        })
    });
}

/// A streamed chat's GenAI span fed 300 content chunks, then the usage chunk and `[DONE]`.
fn streamed_genai(s: &Setup, recorder: &Arc<GenAiRecorder>, chunks: &[Vec<u8>]) {
    let request =
        br#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Count."}]}"#;
    let exchange = Exchange::new(
        recorder.config().clone(),
        s.endpoint.clone(),
        RequestInfo::parse(&s.endpoint, b"", false),
        Instant::now(),
    );
    let mut span = GenAiSpan::start(recorder, exchange, &s.parts, &Context::new());
    span.set_request(RequestInfo::parse(&s.endpoint, request, false));
    let mut head = http::HeaderMap::new();
    head.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/event-stream"),
    );
    span.on_response_head(http::StatusCode::OK, &head);
    for chunk in chunks {
        span.on_response_data(chunk);
    }
    black_box(span.finish(End::Complete));
}

fn stream_chunks() -> Vec<Vec<u8>> {
    let mut chunks: Vec<Vec<u8>> = (0..300)
        .map(|i| {
            format!(
                "data: {{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1733000000,\
                 \"model\":\"gpt-4o-mini\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\" tok{i}\"}},\
                 \"finish_reason\":null}}]}}\n\n"
            )
            .into_bytes()
        })
        .collect();
    chunks.push(
        br#"data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1733000000,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":300,"total_tokens":309}}

data: [DONE]

"#
        .to_vec(),
    );
    chunks
}

fn stream(c: &mut Criterion) {
    let chunks = stream_chunks();
    let mut group = c.benchmark_group("span_path/stream");
    for (name, points) in [("timeline_256", 256u16), ("timeline_off", 0)] {
        let config = GenAiConfig {
            chunk_timeline: points,
            ..GenAiConfig::default()
        };
        let dropping = SdkTracerProvider::builder()
            .with_span_processor(DropProcessor)
            .build();
        let s = setup(&dropping);
        let recorder = GenAiLayer::gateway()
            .with_tracer_provider(&dropping)
            .with_config(config.clone())
            .into_recorder();
        group.bench_function(format!("genai_span_{name}"), |b| {
            b.iter(|| streamed_genai(&s, &recorder, &chunks))
        });
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let recorder = GenAiLayer::gateway()
            .with_tracer_provider(&provider)
            .with_config(config)
            .into_recorder();
        streamed_genai(&s, &recorder, &chunks);
        let spans = exporter.get_finished_spans().unwrap();
        assert_eq!(spans.len(), 1);
        let resource = ResourceAttributesWithSchema::from(&Resource::builder_empty().build());
        let bytes = ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(spans.clone(), &resource),
        }
        .encode_to_vec()
        .len();
        eprintln!("span_path/stream/{name}: {bytes} bytes of OTLP");
        group.bench_function(format!("otlp_encode_{name}"), |b| {
            b.iter(|| {
                let request = ExportTraceServiceRequest {
                    resource_spans: group_spans_by_resource_and_scope(spans.clone(), &resource),
                };
                black_box(request.encode_to_vec())
            })
        });
        let sdk_resource = Resource::builder_empty()
            .with_service_name("llmtrace-proxy")
            .build();
        let mut buffer = Vec::new();
        group.bench_function(format!("otlp_encode_direct_{name}"), |b| {
            b.iter(|| {
                buffer.clear();
                llmtrace_proxy::otlp::encode::export_request(&spans, &sdk_resource, &mut buffer);
                black_box(buffer.len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, span_path, otlp_encode, stream);
criterion_main!(benches);
