//! OpenTelemetry setup for the examples.

use opentelemetry::global;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};

/// Installs a global tracer provider and the W3C propagator.
///
/// Spans go over OTLP/gRPC when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (e.g. to a local
/// Jaeger, Tempo or Collector at `http://localhost:4317`), else to stdout. Call
/// `shutdown()` on the returned provider before exiting so batched spans are flushed.
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

fn builder(service_name: &'static str) -> opentelemetry_sdk::trace::TracerProviderBuilder {
    let resource = Resource::builder().with_service_name(service_name).build();
    let builder = SdkTracerProvider::builder().with_resource(resource);
    if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some() {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()
            .expect("OTLP exporter");
        builder.with_batch_exporter(exporter)
    } else {
        builder
    }
}

fn install(provider: SdkTracerProvider) -> SdkTracerProvider {
    global::set_tracer_provider(provider.clone());
    global::set_text_map_propagator(llmtrace::propagation::W3cPropagator::default());
    provider
}
