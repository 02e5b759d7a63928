//! Span export for the gateway: OTLP when configured, else one JSON object per line.
//!
//! The standard variables decide: `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) turns OTLP on; `OTEL_EXPORTER_OTLP_PROTOCOL` picks
//! `grpc` or `http/protobuf` (the default, as the specification says);
//! `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` are read
//! by the SDK. With no endpoint, the embedded default writes each finished span as a JSON line
//! to stdout (or a file), so a newcomer sees traces without a collector.
//!
//! `OTEL_SDK_DISABLED=true` turns tracing off: no span is recorded or exported (metrics and
//! the access log stay).
//!
//! Export runs on its own thread behind a bounded queue ([`ExportQueue`]): a slow or dead
//! collector costs dropped spans, counted on `/metrics`, never a slow or failed request.
//!
//! With a [`TraceStore`] (`[telemetry] store_traces`), every exported span is also filed in
//! it for the viewer: next to the export queue, behind the tail sampler when there is one, so
//! the store holds what is exported, whatever the exporter does with it.

use std::fmt;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{SpanKind, Status};
use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter as _;
use opentelemetry_sdk::metrics::{SdkMeterProvider, Temporality};
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter, SpanProcessor};

use llmtrace::sampling::{HeadConfig, TailConfig, TailStatsHandle};
use llmtrace::store::{Tee, TraceStore};

use crate::export_queue::{ExportQueue, ExportStats, QueueConfig};
use crate::metrics::{MetricsPush, PrometheusReader};

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
    /// No spans at all (`OTEL_SDK_DISABLED=true`).
    Disabled,
}

impl Export {
    /// What the environment asks for: OTLP when an endpoint is set, else JSON lines on stdout.
    pub fn from_env() -> Export {
        if std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return Export::Disabled;
        }
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

/// Everything the gateway records with: spans, metrics, and the counters of both pipelines.
#[derive(Debug, Clone)]
pub struct Telemetry {
    /// Spans.
    pub tracer_provider: SdkTracerProvider,
    /// Metrics: read by `/metrics` through `prometheus`, and pushed over OTLP when configured.
    pub meter_provider: SdkMeterProvider,
    /// Pushes the metrics over OTLP, when configured with cumulative temporality.
    pub metrics_push: Option<MetricsPush>,
    /// The pull reader behind `/metrics`.
    pub prometheus: PrometheusReader,
    /// The span export queue's counters (none when spans are not exported through one).
    pub export_stats: Option<Arc<ExportStats>>,
    /// The tail sampler's counters, when tail sampling is on.
    pub tail_stats: Option<TailStatsHandle>,
    /// The traces the viewer shows (`/ui`, `/api/traces`), when the store is on.
    pub store: Option<TraceStore>,
    /// Tracing is off (`OTEL_SDK_DISABLED=true`): the gateway starts no spans at all, its
    /// tracer is the API's no-op one, and the client's trace context passes upstream as it came.
    pub tracing_off: bool,
}

/// How traces are sampled: head rules (when spans start) and tail policies (when a trace's
/// root ends). The default records and exports everything.
#[derive(Debug, Clone, Default)]
pub struct Sampling {
    /// Head rules; `None`: record every trace.
    pub head: Option<HeadConfig>,
    /// Tail policies; `None`: export every recorded trace.
    pub tail: Option<TailConfig>,
}

impl Telemetry {
    /// Spans through `tracer_provider` (tests, the demo), metrics readable on `/metrics` only.
    pub fn with_tracer_provider(tracer_provider: SdkTracerProvider) -> Self {
        let prometheus = PrometheusReader::default();
        let meter_provider = SdkMeterProvider::builder()
            .with_reader(prometheus.clone())
            .build();
        Self {
            tracer_provider,
            meter_provider,
            metrics_push: None,
            prometheus,
            export_stats: None,
            tail_stats: None,
            store: None,
            tracing_off: false,
        }
    }

    /// These telemetry with `store` shown on the admin listener; the caller feeds it (add
    /// `store.processor()` to the tracer provider).
    pub fn with_store(mut self, store: TraceStore) -> Self {
        self.store = Some(store);
        self
    }

    /// What `export` asks for: the span pipeline behind a counted queue, and a meter
    /// provider read by `/metrics` and, with OTLP, exported next to the spans (every 60 s, or
    /// `OTEL_METRIC_EXPORT_INTERVAL`).
    pub fn new(export: &Export, sampling: &Sampling) -> Result<Self, Box<dyn std::error::Error>> {
        Self::new_with_store(export, sampling, None)
    }

    /// [`Telemetry::new`], with every exported span also filed in `store` (when given).
    pub fn new_with_store(
        export: &Export,
        sampling: &Sampling,
        store: Option<TraceStore>,
    ) -> Result<Self, Box<dyn std::error::Error>> {
        install_crypto_provider();
        let (tracer_provider, stats, tail_stats) =
            tracer_provider_with_store(export, sampling, store.as_ref())?;
        let prometheus = PrometheusReader::default();
        let mut meters = SdkMeterProvider::builder()
            .with_resource(resource())
            .with_reader(prometheus.clone());
        let mut metrics_push = None;
        if let Export::Otlp { protocol } = export {
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
            // Cumulative, as `/metrics` is: one aggregation serves both (see `MetricsPush`).
            if exporter.temporality() == Temporality::Cumulative {
                metrics_push = Some(MetricsPush::start(
                    prometheus.clone(),
                    exporter,
                    crate::metrics::export_interval(),
                )?);
            } else {
                meters = meters.with_periodic_exporter(exporter);
            }
        }
        Ok(Self {
            tracer_provider,
            meter_provider: meters.build(),
            metrics_push,
            prometheus,
            export_stats: stats,
            tail_stats,
            // Nothing is recorded when tracing is off: no store to show.
            store: store.filter(|_| *export != Export::Disabled),
            tracing_off: *export == Export::Disabled,
        })
    }

    /// Flushes and stops both pipelines; errors are reported on stderr, and so is what
    /// became of the spans over the process's life ([`ExportStats::summary`]): a span lost
    /// anywhere (queue full, export failed) is counted there even when no one read
    /// `/metrics`.
    pub fn shutdown(&self) {
        if let Err(error) = self.tracer_provider.shutdown() {
            eprintln!("llmtrace-proxy: flushing spans at shutdown: {error}");
        }
        if let Some(stats) = &self.export_stats {
            eprintln!("llmtrace-proxy: {}", stats.summary());
        }
        if let Some(push) = &self.metrics_push {
            push.shutdown();
        }
        if let Err(error) = self.meter_provider.shutdown() {
            eprintln!("llmtrace-proxy: flushing metrics at shutdown: {error}");
        }
    }
}

fn resource() -> Resource {
    Resource::builder()
        .with_service_name(
            std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "llmtrace-proxy".to_owned()),
        )
        .build()
}

/// A tracer provider, the counters of its export queue (none when nothing is exported) and
/// of its tail sampler (when on).
pub type SpanPipeline = (
    SdkTracerProvider,
    Option<Arc<ExportStats>>,
    Option<TailStatsHandle>,
);

/// Builds the tracer provider for `export`: `sampling`'s head rules, then its tail sampler
/// (when configured) in front of a bounded, counted export queue.
pub fn tracer_provider(
    export: &Export,
    sampling: &Sampling,
) -> Result<SpanPipeline, Box<dyn std::error::Error>> {
    tracer_provider_with_store(export, sampling, None)
}

/// Installs ring as the process's rustls crypto provider, unless one is installed: the
/// HTTP clients here (the OTLP/HTTP exporter's, the shadow traffic's) are built with rustls
/// but no provider of their own, and would panic without one. Call it before building
/// them; later calls do nothing.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// [`tracer_provider`], with every exported span also filed in `store`: beside the export
/// queue, behind the tail sampler when there is one (the store holds what is exported).
pub fn tracer_provider_with_store(
    export: &Export,
    sampling: &Sampling,
    store: Option<&TraceStore>,
) -> Result<SpanPipeline, Box<dyn std::error::Error>> {
    install_crypto_provider();
    let mut builder = SdkTracerProvider::builder().with_resource(resource());
    if let Some(head) = &sampling.head {
        builder = builder.with_sampler(head.build()?);
    }
    let config = QueueConfig::default();
    let queue = match export {
        Export::Disabled => {
            let provider = builder
                .with_sampler(opentelemetry_sdk::trace::Sampler::AlwaysOff)
                .build();
            return Ok((provider, None, None));
        }
        Export::Otlp { protocol } => otlp_queue(protocol, config)?,
        Export::Stdout => ExportQueue::new(JsonLines::stdout(), config),
        Export::File(path) => ExportQueue::new(JsonLines::file(path)?, config),
    };
    let stats = queue.stats();
    let (provider, tail_stats) = match store {
        Some(store) => behind_tail(builder, Tee(queue, store.processor()), sampling)?,
        None => behind_tail(builder, queue, sampling)?,
    };
    Ok((provider, Some(stats), tail_stats))
}

/// The export queue in front of an OTLP exporter for `protocol`. gRPC and HTTP/protobuf go
/// through the gateway's own exporters ([`crate::otlp`]: spans encoded straight into
/// protobuf) unless the settings need TLS or compression, which the SDK's exporter then
/// handles.
fn otlp_queue(
    protocol: &str,
    config: QueueConfig,
) -> Result<ExportQueue, Box<dyn std::error::Error>> {
    let env = |name: &str| std::env::var(name).ok();
    Ok(match protocol {
        "grpc" => {
            // tonic's channel runs its connection on a tokio runtime: give it one of its
            // own, alive for the process, apart from pingora's and the request path.
            let runtime = export_runtime()?;
            match crate::otlp::OtlpSettings::from_env(env) {
                Some(settings) => ExportQueue::new(
                    crate::otlp::GrpcExporter::new(&settings, runtime.handle().clone())?,
                    config,
                ),
                None => {
                    let _guard = runtime.enter();
                    let exporter = opentelemetry_otlp::SpanExporter::builder()
                        .with_tonic()
                        .build()?;
                    ExportQueue::new(exporter, config)
                }
            }
        }
        "http/protobuf" | "http" => match crate::otlp::OtlpSettings::http_from_env(env) {
            Some(settings) => ExportQueue::new(
                crate::otlp::HttpExporter::new(&settings, export_runtime()?.handle().clone())?,
                config,
            ),
            None => ExportQueue::new(
                opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .build()?,
                config,
            ),
        },
        other => {
            return Err(format!(
                "OTEL_EXPORTER_OTLP_PROTOCOL={other}: expected grpc or http/protobuf"
            )
            .into());
        }
    })
}

/// The provider with `exporting` behind `sampling`'s tail sampler, or alone without one.
fn behind_tail<P: SpanProcessor + 'static>(
    builder: opentelemetry_sdk::trace::TracerProviderBuilder,
    exporting: P,
    sampling: &Sampling,
) -> Result<(SdkTracerProvider, Option<TailStatsHandle>), Box<dyn std::error::Error>> {
    Ok(match &sampling.tail {
        Some(tail) => {
            let sampler = tail.build(exporting)?;
            let tail_stats = sampler.stats_handle();
            (
                builder.with_span_processor(sampler).build(),
                Some(tail_stats),
            )
        }
        None => (builder.with_span_processor(exporting).build(), None),
    })
}

/// The viewer's trace store for `[telemetry]`'s `store_traces` and `store_bytes`, or `None`
/// when either is 0.
pub fn trace_store(config: &crate::config::TelemetryConfig) -> Option<TraceStore> {
    (config.store_traces > 0 && config.store_bytes > 0).then(|| {
        TraceStore::new(llmtrace::store::StoreConfig {
            max_traces: config.store_traces,
            max_bytes: config.store_bytes,
            ..llmtrace::store::StoreConfig::default()
        })
    })
}

/// A small tokio runtime for the OTLP exporters' connections.
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
        "links": span.links.iter().map(|l| serde_json::json!({
            "trace_id": l.span_context.trace_id().to_string(),
            "span_id": l.span_context.span_id().to_string(),
            "attributes": attributes_json(&l.attributes),
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
