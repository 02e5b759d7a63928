//! Per-request cost of the server layer.
//!
//! Four services answer the same request (with a `traceparent`) with the same small body,
//! and the body is read to its end (our span ends there):
//! - `bare`: the service alone;
//! - `llmtrace_sampled` / `llmtrace_unsampled`: behind `ServerLayer`;
//! - `tower_http_tracing_otel`: behind tower-http's `TraceLayer` with `tracing-opentelemetry`,
//!   extracting the parent context the same way, the usual way to get OpenTelemetry spans
//!   from a tower service today.
//!
//! All traced variants share one SDK setup: a `BatchSpanProcessor` on its own thread feeding an
//! exporter that drops everything, so we measure span creation and recording, not I/O.
//!
//! ```sh
//! cargo bench --bench server_layer
//! ```

use std::convert::Infallible;
use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use futures::executor::block_on;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use llmtrace::ServerLayer;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, SpanData, SpanExporter};
use tower::{Layer, Service, ServiceExt};

#[derive(Debug)]
struct DropExporter;

impl SpanExporter for DropExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        black_box(batch);
        Ok(())
    }
}

fn provider(sampler: Sampler) -> SdkTracerProvider {
    SdkTracerProvider::builder()
        .with_sampler(sampler)
        .with_batch_exporter(DropExporter)
        .build()
}

fn request() -> Request<Full<Bytes>> {
    Request::post("http://api.example.com/v1/chat/completions")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .header("user-agent", "bench/1.0")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(b"{\"model\":\"m\"}")))
        .unwrap()
}

async fn handler(_req: Request<Full<Bytes>>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from_static(b"hello"))))
}

fn run<S, B>(svc: &S)
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    block_on(async {
        let response = svc.clone().oneshot(request()).await.unwrap();
        let body = response.into_body().collect().await.unwrap();
        black_box(body);
    });
}

fn server_layer(c: &mut Criterion) {
    let mut group = c.benchmark_group("server_layer");

    let bare = tower::service_fn(handler);
    group.bench_function("bare", |b| b.iter(|| run(&bare)));

    let sampled_provider = provider(Sampler::AlwaysOn);
    let sampled = ServerLayer::new()
        .with_tracer(sampled_provider.tracer("bench"))
        .layer(tower::service_fn(handler));
    group.bench_function("llmtrace_sampled", |b| b.iter(|| run(&sampled)));

    let unsampled_provider = provider(Sampler::AlwaysOff);
    let unsampled = ServerLayer::new()
        .with_tracer(unsampled_provider.tracer("bench"))
        .layer(tower::service_fn(handler));
    group.bench_function("llmtrace_unsampled", |b| b.iter(|| run(&unsampled)));

    // The baseline: tower-http + tracing + tracing-opentelemetry on the same SDK setup.
    let baseline_provider = provider(Sampler::AlwaysOn);
    {
        use tracing_subscriber::layer::SubscriberExt;
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(baseline_provider.tracer("bench")));
        tracing::subscriber::set_global_default(subscriber).unwrap();
    }
    let propagator = llmtrace::propagation::W3cPropagator::default();
    let baseline = tower_http::trace::TraceLayer::new_for_http()
        .make_span_with(move |req: &Request<Full<Bytes>>| {
            use opentelemetry::propagation::TextMapPropagator;
            use tracing_opentelemetry::OpenTelemetrySpanExt;
            let span = tracing::info_span!(
                "request",
                otel.name = "POST /v1/chat/completions",
                otel.kind = "server",
                http.request.method = %req.method(),
                url.path = req.uri().path(),
                http.response.status_code = tracing::field::Empty,
            );
            let parent = propagator.extract(&opentelemetry_http::HeaderExtractor(req.headers()));
            let _ = span.set_parent(parent);
            span
        })
        .on_response(
            |res: &Response<_>, _latency: std::time::Duration, span: &tracing::Span| {
                span.record("http.response.status_code", res.status().as_u16());
            },
        )
        .layer(tower::service_fn(handler));
    group.bench_function("tower_http_tracing_otel", |b| b.iter(|| run(&baseline)));

    group.finish();
    for p in [sampled_provider, unsampled_provider, baseline_provider] {
        let _ = p.shutdown();
    }
}

criterion_group!(benches, server_layer);
criterion_main!(benches);
