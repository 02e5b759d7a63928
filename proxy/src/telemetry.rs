//! Span export for the gateway: OTLP when configured, else one JSON object per line.
//!
//! The standard variables decide: `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) turns OTLP on; `OTEL_EXPORTER_OTLP_PROTOCOL` picks
//! `grpc` or `http/protobuf` (the default, as the specification says);
//! `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` are read
//! by the SDK. With no endpoint, the embedded default writes each finished span as a JSON line
//! to stdout (or a file), so a newcomer sees traces without a collector.
//!
//! Export runs on the SDK's `BatchSpanProcessor` thread with a bounded queue: a slow or dead
//! collector costs dropped spans, never a slow or failed request.

use std::fmt;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{SpanKind, Status};
use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider, SpanData, SpanExporter,
};

/// Where spans go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Export {
    /// OTLP over gRPC or HTTP/protobuf, configured by the standard environment variables.
    Otlp {
        /// `grpc` or `http/protobuf`.
        protocol: String,
    },
    /// JSON lines to stdout.
    Stdout,
    /// JSON lines appended to a file.
    File(std::path::PathBuf),
}

impl Export {
    /// What the environment asks for: OTLP when an endpoint is set, else JSON lines on stdout.
    pub fn from_env() -> Export {
        let endpoint = [
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ]
        .iter()
        .any(|k| std::env::var(k).is_ok_and(|v| !v.trim().is_empty()));
        if endpoint {
            let protocol = std::env::var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL"))
                .unwrap_or_else(|_| "http/protobuf".to_owned());
            Export::Otlp { protocol }
        } else {
            Export::Stdout
        }
    }
}

/// Builds the tracer provider for `export`, with a bounded batch queue.
pub fn tracer_provider(export: &Export) -> Result<SdkTracerProvider, Box<dyn std::error::Error>> {
    let resource = Resource::builder()
        .with_service_name(
            std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "llmtrace-proxy".to_owned()),
        )
        .build();
    let batch = BatchConfigBuilder::default()
        .with_max_queue_size(8192)
        .with_max_export_batch_size(512)
        .build();
    let builder = SdkTracerProvider::builder().with_resource(resource);
    let provider = match export {
        Export::Otlp { protocol } => {
            let exporter = match protocol.as_str() {
                "grpc" => {
                    // tonic's channel runs its connection on a tokio runtime: give it one of its
                    // own, alive for the process, apart from pingora's and the request path.
                    let _guard = export_runtime()?.enter();
                    opentelemetry_otlp::SpanExporter::builder()
                        .with_tonic()
                        .build()?
                }
                "http/protobuf" | "http" => opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .build()?,
                other => {
                    return Err(format!(
                        "OTEL_EXPORTER_OTLP_PROTOCOL={other}: expected grpc or http/protobuf"
                    )
                    .into());
                }
            };
            builder.with_span_processor(
                BatchSpanProcessor::builder(exporter)
                    .with_batch_config(batch)
                    .build(),
            )
        }
        Export::Stdout => builder.with_span_processor(
            BatchSpanProcessor::builder(JsonLines::stdout())
                .with_batch_config(batch)
                .build(),
        ),
        Export::File(path) => builder.with_span_processor(
            BatchSpanProcessor::builder(JsonLines::file(path)?)
                .with_batch_config(batch)
                .build(),
        ),
    };
    Ok(provider.build())
}

/// The meter provider for `export`: GenAI metrics go over OTLP next to the spans (every
/// 60 s, or `OTEL_METRIC_EXPORT_INTERVAL`). With the JSON-lines default there is no metrics
/// backend, and `None` is returned.
pub fn meter_provider(
    export: &Export,
) -> Result<Option<opentelemetry_sdk::metrics::SdkMeterProvider>, Box<dyn std::error::Error>> {
    let Export::Otlp { protocol } = export else {
        return Ok(None);
    };
    let exporter = match protocol.as_str() {
        "grpc" => {
            let _guard = export_runtime()?.enter();
            opentelemetry_otlp::MetricExporter::builder()
                .with_tonic()
                .build()?
        }
        _ => opentelemetry_otlp::MetricExporter::builder()
            .with_http()
            .build()?,
    };
    let resource = Resource::builder()
        .with_service_name(
            std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "llmtrace-proxy".to_owned()),
        )
        .build();
    Ok(Some(
        opentelemetry_sdk::metrics::SdkMeterProvider::builder()
            .with_resource(resource)
            .with_periodic_exporter(exporter)
            .build(),
    ))
}

/// A small tokio runtime for the OTLP/gRPC exporter's connection.
fn export_runtime() -> std::io::Result<&'static tokio::runtime::Runtime> {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    if let Some(runtime) = RUNTIME.get() {
        return Ok(runtime);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("llmtrace-otlp")
        .enable_all()
        .build()?;
    Ok(RUNTIME.get_or_init(|| runtime))
}

/// A span exporter that writes one JSON object per finished span and line.
#[derive(Clone)]
pub struct JsonLines {
    out: Arc<Mutex<Box<dyn Write + Send>>>,
}

impl fmt::Debug for JsonLines {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JsonLines")
    }
}

impl JsonLines {
    /// To stdout.
    pub fn stdout() -> Self {
        Self::to_writer(Box::new(std::io::stdout()))
    }

    /// Appended to `path`.
    pub fn file(path: &std::path::Path) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Self::to_writer(Box::new(file)))
    }

    /// To any writer.
    pub fn to_writer(out: Box<dyn Write + Send>) -> Self {
        Self {
            out: Arc::new(Mutex::new(out)),
        }
    }
}

impl SpanExporter for JsonLines {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let mut text = String::new();
        for span in &batch {
            text.push_str(&span_json(span).to_string());
            text.push('\n');
        }
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        // A failing stdout or disk must not take the gateway down: the batch is dropped.
        let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
        Ok(())
    }
}

/// One span as JSON.
pub fn span_json(span: &SpanData) -> serde_json::Value {
    let nanos = |t: SystemTime| {
        t.duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    };
    let parent = span.parent_span_id;
    serde_json::json!({
        "trace_id": span.span_context.trace_id().to_string(),
        "span_id": span.span_context.span_id().to_string(),
        "parent_span_id": (parent != opentelemetry::trace::SpanId::INVALID).then(|| parent.to_string()),
        "name": span.name,
        "kind": match span.span_kind {
            SpanKind::Server => "server",
            SpanKind::Client => "client",
            SpanKind::Producer => "producer",
            SpanKind::Consumer => "consumer",
            SpanKind::Internal => "internal",
        },
        "start_unix_nano": nanos(span.start_time),
        "end_unix_nano": nanos(span.end_time),
        "duration_ms": span.end_time.duration_since(span.start_time).map_or(0.0, |d| d.as_secs_f64() * 1000.0),
        "status": match &span.status {
            Status::Unset => serde_json::json!("unset"),
            Status::Ok => serde_json::json!("ok"),
            Status::Error { description } => serde_json::json!({"error": description}),
        },
        "attributes": attributes_json(&span.attributes),
        "events": span.events.iter().map(|e| serde_json::json!({
            "name": e.name,
            "time_unix_nano": nanos(e.timestamp),
            "attributes": attributes_json(&e.attributes),
        })).collect::<Vec<_>>(),
    })
}

fn attributes_json(attributes: &[KeyValue]) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    for kv in attributes {
        map.insert(kv.key.as_str().to_owned(), value_json(&kv.value));
    }
    serde_json::Value::Object(map)
}

fn value_json(value: &Value) -> serde_json::Value {
    match value {
        Value::Bool(b) => (*b).into(),
        Value::I64(i) => (*i).into(),
        Value::F64(f) => {
            serde_json::Number::from_f64(*f).map_or(serde_json::Value::Null, Into::into)
        }
        Value::String(s) => s.as_str().into(),
        Value::Array(opentelemetry::Array::String(items)) => items
            .iter()
            .map(|s| serde_json::Value::from(s.as_str()))
            .collect(),
        Value::Array(opentelemetry::Array::I64(items)) => items.iter().copied().collect(),
        Value::Array(opentelemetry::Array::Bool(items)) => items.iter().copied().collect(),
        Value::Array(array) => serde_json::Value::String(format!("{array}")),
        other => serde_json::Value::String(other.to_string()),
    }
}
