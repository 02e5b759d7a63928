//! OpenTelemetry setup for the examples.

use opentelemetry::global;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};

/// Installs a global tracer provider and the W3C propagator.
///
/// Spans go over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (see [`otlp_exporter`]), else
/// to stdout. Call `shutdown()` on the returned provider before exiting so batched spans are
/// flushed.
pub fn init(service_name: &'static str) -> SdkTracerProvider {
    let provider = builder(service_name)
        .with_simple_exporter(opentelemetry_stdout::SpanExporter::default())
        .build();
    install(provider)
}

/// Like [`init`], but keeps finished spans in memory (to print a waterfall) instead of
/// printing them; still exports over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
pub fn init_in_memory(service_name: &'static str) -> (SdkTracerProvider, InMemorySpanExporter) {
    let memory = InMemorySpanExporter::default();
    let provider = builder(service_name)
        .with_simple_exporter(memory.clone())
        .build();
    (install(provider), memory)
}

/// Like [`init`], and every finished span is also kept in `store` for its viewer
/// (`llmtrace::store::ui::router`).
pub fn init_with_store(
    service_name: &'static str,
    store: &llmtrace::store::TraceStore,
) -> SdkTracerProvider {
    let provider = builder(service_name)
        .with_simple_exporter(opentelemetry_stdout::SpanExporter::default())
        .with_span_processor(store.processor())
        .build();
    install(provider)
}

fn builder(service_name: &'static str) -> opentelemetry_sdk::trace::TracerProviderBuilder {
    let resource = Resource::builder().with_service_name(service_name).build();
    let builder = SdkTracerProvider::builder().with_resource(resource);
    if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some() {
        builder.with_batch_exporter(otlp_exporter())
    } else {
        builder
    }
}

/// The OTLP span exporter the standard variables ask for: gRPC to `OTEL_EXPORTER_OTLP_ENDPOINT`
/// (e.g. a local Jaeger, Tempo or Collector at `http://localhost:4317`) unless
/// `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` or `OTEL_EXPORTER_OTLP_PROTOCOL` says `http/protobuf`;
/// then HTTP to the endpoint as a base URL (`/v1/traces` appended, port 4318 by convention).
/// gRPC stays the default here, unlike the specification's, so `…:4317` keeps working.
///
/// # Panics
///
/// On another protocol, or when the exporter cannot be built (it needs a tokio runtime for
/// gRPC): these are examples.
pub fn otlp_exporter() -> opentelemetry_otlp::SpanExporter {
    let protocol = [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ]
    .into_iter()
    .find_map(|name| std::env::var(name).ok())
    .unwrap_or_else(|| "grpc".to_owned());
    // The workspace's reqwest has rustls without a provider (the gateway installs ring).
    llmtrace_proxy::telemetry::install_crypto_provider();
    let builder = opentelemetry_otlp::SpanExporter::builder();
    match protocol.as_str() {
        "grpc" => builder.with_tonic().build(),
        "http/protobuf" => builder.with_http().build(),
        other => panic!("OTEL_EXPORTER_OTLP_PROTOCOL={other}: expected grpc or http/protobuf"),
    }
    .expect("OTLP exporter")
}

fn install(provider: SdkTracerProvider) -> SdkTracerProvider {
    global::set_tracer_provider(provider.clone());
    global::set_text_map_propagator(llmtrace::propagation::W3cPropagator::default());
    provider
}
