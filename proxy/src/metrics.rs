//! The gateway's metrics: its own instruments, and a Prometheus view of every instrument.
//!
//! There is one source of truth, the OpenTelemetry meter provider. The GenAI histograms of
//! the core (`gen_ai.client.*`) and the gateway's counters ([`ProxyMetrics`]) are recorded
//! there once; a pull reader ([`PrometheusReader`]) renders them in the Prometheus text format
//! for the admin listener's `/metrics`, and, when OTLP is configured, a periodic reader sends
//! the same instruments to the collector.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use llmtrace::limits;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Meter};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{InstrumentKind, ManualReader, Pipeline, Temporality};

use crate::export_queue::ExportStats;

/// A pull reader the meter provider and the admin endpoint share: the provider registers it,
/// `/metrics` collects through it.
#[derive(Debug, Clone, Default)]
pub struct PrometheusReader {
    reader: Arc<ManualReader>,
}

impl MetricReader for PrometheusReader {
    fn register_pipeline(&self, pipeline: Weak<Pipeline>) {
        self.reader.register_pipeline(pipeline);
    }
    fn collect(&self, rm: &mut ResourceMetrics) -> OTelSdkResult {
        self.reader.collect(rm)
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.reader.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.reader.shutdown_with_timeout(timeout)
    }
    fn temporality(&self, _kind: InstrumentKind) -> Temporality {
        // Prometheus counters and histograms are cumulative.
        Temporality::Cumulative
    }
}

impl PrometheusReader {
    /// Every instrument in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut metrics = ResourceMetrics::default();
        if self.reader.collect(&mut metrics).is_err() {
            return String::new();
        }
        render(&metrics)
    }
}

/// Pushes what a [`PrometheusReader`] holds to an OTLP exporter, every `interval` and once
/// more at shutdown, from a thread of its own.
///
/// The meter provider then has one pipeline, not two: with a periodic reader of its own
/// beside the Prometheus one, every measurement is aggregated twice (the SDK hashes the
/// attribute set once per pipeline on every record), which was the single largest cost of
/// the metrics per request. Both readers want cumulative sums, so one aggregation serves
/// both; an exporter that asks for delta temporality gets a periodic reader of its own (see
/// [`crate::Telemetry::new`]).
#[derive(Debug, Clone)]
pub struct MetricsPush {
    inner: Arc<PushInner>,
}

#[derive(Debug)]
struct PushInner {
    signals: Mutex<Option<std::sync::mpsc::Sender<PushSignal>>>,
    /// Disconnected when the thread has ended.
    exited: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
}

/// How long [`MetricsPush::shutdown`] waits for the last export (a hanging collector must
/// not hold the gateway's exit longer).
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug)]
enum PushSignal {
    /// Export now; answer when done.
    Flush(std::sync::mpsc::Sender<OTelSdkResult>),
}

impl MetricsPush {
    /// Starts the pushing thread.
    pub fn start<E: PushMetricExporter>(
        reader: PrometheusReader,
        exporter: E,
        interval: Duration,
    ) -> std::io::Result<Self> {
        let (signals, received) = std::sync::mpsc::channel::<PushSignal>();
        let (exiting, exited) = std::sync::mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("llmtrace-metrics".to_owned())
            .spawn(move || {
                push_loop(&reader, &exporter, interval, &received);
                drop(exiting);
            })?;
        Ok(Self {
            inner: Arc::new(PushInner {
                signals: Mutex::new(Some(signals)),
                exited: Mutex::new(Some(exited)),
            }),
        })
    }

    /// Exports what the reader holds now, and waits for the export.
    pub fn force_flush(&self) -> OTelSdkResult {
        let (done, answer) = std::sync::mpsc::channel();
        let sent = self
            .inner
            .signals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .is_some_and(|signals| signals.send(PushSignal::Flush(done)).is_ok());
        if !sent {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        answer
            .recv()
            .map_err(|_| OTelSdkError::InternalFailure("metrics push thread gone".to_owned()))?
    }

    /// Exports once more and shuts the exporter down, waiting at most 5 s for both. Later
    /// calls do nothing.
    pub fn shutdown(&self) {
        // Dropping the sender ends the loop after its last export.
        drop(
            self.inner
                .signals
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        let exited = self
            .inner
            .exited
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(exited) = exited {
            if let Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                exited.recv_timeout(SHUTDOWN_WAIT)
            {
                eprintln!(
                    "llmtrace-proxy: the last metrics export did not end within {SHUTDOWN_WAIT:?}"
                );
            }
        }
    }
}

/// The pushing thread: an export per `interval` or per flush, a last one when the sender
/// is dropped.
fn push_loop<E: PushMetricExporter>(
    reader: &PrometheusReader,
    exporter: &E,
    interval: Duration,
    signals: &std::sync::mpsc::Receiver<PushSignal>,
) {
    use std::sync::mpsc::RecvTimeoutError;
    let export = || {
        let mut metrics = ResourceMetrics::default();
        reader.reader.collect(&mut metrics)?;
        futures::executor::block_on(exporter.export(&metrics))
    };
    let mut next = std::time::Instant::now() + interval;
    loop {
        let wait = next.saturating_duration_since(std::time::Instant::now());
        match signals.recv_timeout(wait) {
            Ok(PushSignal::Flush(done)) => {
                let _ = done.send(export());
            }
            Err(RecvTimeoutError::Timeout) => {
                if let Err(error) = export() {
                    eprintln!("llmtrace-proxy: exporting metrics: {error}");
                }
                next = std::time::Instant::now() + interval;
            }
            Err(RecvTimeoutError::Disconnected) => {
                if let Err(error) = export() {
                    eprintln!("llmtrace-proxy: exporting metrics at shutdown: {error}");
                }
                let _ = exporter.shutdown();
                return;
            }
        }
    }
}

/// `OTEL_METRIC_EXPORT_INTERVAL` (milliseconds), 60 s when unset or invalid, as the SDK's
/// periodic reader reads it.
pub fn export_interval() -> Duration {
    std::env::var("OTEL_METRIC_EXPORT_INTERVAL")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|ms| *ms > 0)
        .map_or(Duration::from_secs(60), Duration::from_millis)
}

/// Renders collected metrics as Prometheus text: dots become underscores, the unit `s`
/// becomes `_seconds`, counters get `_total`, histograms `_bucket`/`_sum`/`_count`.
pub fn render(metrics: &ResourceMetrics) -> String {
    let mut out = String::new();
    for scope in metrics.scope_metrics() {
        for metric in scope.metrics() {
            let mut name = sanitize(metric.name());
            match metric.unit() {
                "s" if !name.ends_with("_seconds") => name.push_str("_seconds"),
                "By" if !name.ends_with("_bytes") => name.push_str("_bytes"),
                _ => {}
            }
            match metric.data() {
                AggregatedMetrics::F64(data) => write_data(&mut out, &name, metric, data),
                AggregatedMetrics::U64(data) => write_data(&mut out, &name, metric, data),
                AggregatedMetrics::I64(data) => write_data(&mut out, &name, metric, data),
            }
        }
    }
    out
}

trait Number: Copy {
    fn text(self) -> String;
}
impl Number for f64 {
    fn text(self) -> String {
        if self.is_infinite() {
            if self > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
        } else {
            self.to_string()
        }
    }
}
impl Number for u64 {
    fn text(self) -> String {
        self.to_string()
    }
}
impl Number for i64 {
    fn text(self) -> String {
        self.to_string()
    }
}

fn write_data<T: Number>(
    out: &mut String,
    name: &str,
    metric: &opentelemetry_sdk::metrics::data::Metric,
    data: &MetricData<T>,
) {
    let help = metric
        .description()
        .replace('\\', r"\\")
        .replace('\n', r"\n");
    match data {
        MetricData::Sum(sum) => {
            let (name, kind) = if sum.is_monotonic() {
                (format!("{name}_total"), "counter")
            } else {
                (name.to_owned(), "gauge")
            };
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for point in sum.data_points() {
                let labels = labels(point.attributes(), None);
                let _ = writeln!(out, "{name}{labels} {}", point.value().text());
            }
        }
        MetricData::Gauge(gauge) => {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for point in gauge.data_points() {
                let labels = labels(point.attributes(), None);
                let _ = writeln!(out, "{name}{labels} {}", point.value().text());
            }
        }
        MetricData::Histogram(histogram) => {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
            for point in histogram.data_points() {
                let mut cumulative = 0u64;
                let bounds: Vec<f64> = point.bounds().collect();
                for (i, count) in point.bucket_counts().enumerate() {
                    cumulative += count;
                    let le = bounds.get(i).copied().unwrap_or(f64::INFINITY).text();
                    let labels = labels(point.attributes(), Some(&le));
                    let _ = writeln!(out, "{name}_bucket{labels} {cumulative}");
                }
                let labels = labels(point.attributes(), None);
                let _ = writeln!(out, "{name}_sum{labels} {}", point.sum().text());
                let _ = writeln!(out, "{name}_count{labels} {}", point.count());
            }
        }
        // Not configured anywhere in the gateway.
        MetricData::ExponentialHistogram(_) => {}
    }
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

fn labels<'a>(attributes: impl Iterator<Item = &'a KeyValue>, le: Option<&str>) -> String {
    let mut parts: Vec<String> = attributes
        .map(|kv| {
            let value = kv
                .value
                .as_str()
                .replace('\\', r"\\")
                .replace('"', "\\\"")
                .replace('\n', r"\n");
            format!("{}=\"{value}\"", sanitize(kv.key.as_str()))
        })
        .collect();
    // The SDK keeps attributes in no fixed order; sorted labels make stable series.
    parts.sort_unstable();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

/// The gateway's own instruments. Names are `llmtrace.proxy.*`; in Prometheus they read
/// `llmtrace_proxy_requests_total`, `llmtrace_proxy_in_flight_requests`, ...
#[derive(Debug, Clone)]
pub struct ProxyMetrics {
    requests: Arc<RequestCounts>,
    errors: Counter<u64>,
    retries: Counter<u64>,
    in_flight: Arc<AtomicI64>,
    /// `error.type` values seen, bounded: some come from upstream error bodies.
    error_types: Arc<Mutex<HashSet<String>>>,
}

impl ProxyMetrics {
    /// Creates the instruments on `meter`; `export` (when spans are exported through an
    /// [`crate::export_queue::ExportQueue`]) adds the span pipeline's counters.
    pub fn new(meter: &Meter, export: Option<Arc<ExportStats>>) -> Self {
        let in_flight = Arc::new(AtomicI64::new(0));
        let gauge = in_flight.clone();
        meter
            .i64_observable_gauge("llmtrace.proxy.in_flight_requests")
            .with_description("Requests being served (head received, response not yet ended)")
            .with_callback(move |observer| observer.observe(gauge.load(Ordering::Relaxed), &[]))
            .build();
        if let Some(stats) = export {
            let spans =
                |name: &'static str, description: &'static str, read: fn(&ExportStats) -> u64| {
                    let stats = stats.clone();
                    meter
                        .u64_observable_counter(name)
                        .with_description(description)
                        .with_callback(move |observer| observer.observe(read(&stats), &[]))
                        .build();
                };
            spans(
                "llmtrace.proxy.spans.exported",
                "Spans the exporter accepted",
                |s| ExportStats::get(&s.exported),
            );
            spans(
                "llmtrace.proxy.spans.dropped",
                "Spans dropped because the export queue was full (slow or dead collector)",
                |s| ExportStats::get(&s.dropped),
            );
            spans(
                "llmtrace.proxy.spans.export_failed",
                "Spans in batches the exporter failed to send",
                |s| ExportStats::get(&s.failed),
            );
            spans(
                "llmtrace.proxy.export.errors",
                "Failed span export calls",
                |s| ExportStats::get(&s.export_errors),
            );
        }
        meter
            .u64_observable_counter("llmtrace.proxy.access_log.dropped")
            .with_description(
                "Access log lines dropped because stderr did not keep up (4 MiB waiting)",
            )
            .with_callback(|observer| observer.observe(crate::access_log::dropped_lines(), &[]))
            .build();
        let requests = Arc::new(RequestCounts::default());
        let counts = requests.clone();
        meter
            .u64_observable_counter("llmtrace.proxy.requests")
            .with_description("Requests served, by route, upstream and status class")
            .with_callback(move |observer| counts.observe(observer))
            .build();
        Self {
            requests,
            errors: meter
                .u64_counter("llmtrace.proxy.errors")
                .with_description(
                    "Requests that failed: 5xx, upstream errors, timeouts, client aborts",
                )
                .build(),
            retries: meter
                .u64_counter("llmtrace.proxy.upstream.retries")
                .with_description("Upstream attempts retried before the first response byte")
                .build(),
            in_flight,
            error_types: Arc::default(),
        }
    }

    /// `error_type` as a label value: cut at [`limits::MAX_LABEL_BYTES`], and `_OTHER` once
    /// [`limits::MAX_ERROR_TYPE_LABELS`] distinct values were seen.
    fn error_label(&self, error_type: &str) -> String {
        let value = limits::bounded(error_type, limits::MAX_LABEL_BYTES).into_owned();
        let mut seen = self
            .error_types
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if seen.contains(&value) || seen.len() < limits::MAX_ERROR_TYPE_LABELS {
            seen.insert(value.clone());
            value
        } else {
            limits::OTHER_LABEL.to_owned()
        }
    }

    /// A request's head arrived. The returned guard counts it in flight until dropped.
    pub fn start(&self) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.in_flight.clone())
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> i64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// A request ended.
    pub fn record(&self, route: &str, upstream: &str, status: u16, error_type: Option<&str>) {
        let class = match status {
            0 => "none",
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.requests.add(route, upstream, class);
        if let Some(error_type) = error_type {
            self.errors.add(
                1,
                &[
                    KeyValue::new("http.route", route.to_owned()),
                    KeyValue::new("llmtrace.upstream", upstream.to_owned()),
                    KeyValue::new("error.type", self.error_label(error_type)),
                ],
            );
        }
    }

    /// An upstream attempt failed before its first byte and the request is tried again.
    pub fn retry(&self, upstream: &str, reason: &str) {
        self.retries.add(
            1,
            &[
                KeyValue::new("llmtrace.upstream", upstream.to_owned()),
                KeyValue::new("llmtrace.retry.reason", reason.to_owned()),
            ],
        );
    }
}

/// The status classes [`ProxyMetrics::record`] counts by.
const STATUS_CLASSES: [&str; 6] = ["none", "1xx", "2xx", "3xx", "4xx", "5xx"];

/// Requests by route, upstream and status class, counted here and reported through an
/// observable counter when metrics are read: a request costs two lookups with a fast hash
/// and an atomic add, where the SDK's counter hashed the whole attribute set with SipHash
/// (in every pipeline) on each `add`. Routes and upstreams are the configuration's, so the
/// series stay bounded.
#[derive(Debug, Default)]
struct RequestCounts {
    series: std::sync::RwLock<FastMap<Box<str>, ByUpstream>>,
}

/// One route's counts: by upstream, then by status class (in [`STATUS_CLASSES`] order).
type ByUpstream = FastMap<Box<str>, [AtomicU64; 6]>;

type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::FixedState>;

impl RequestCounts {
    fn add(&self, route: &str, upstream: &str, class: &str) {
        let Some(class) = STATUS_CLASSES.iter().position(|c| *c == class) else {
            return;
        };
        {
            let series = self.series.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(counts) = series.get(route).and_then(|by| by.get(upstream)) {
                counts[class].fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        let mut series = self.series.write().unwrap_or_else(PoisonError::into_inner);
        series
            .entry(route.into())
            .or_default()
            .entry(upstream.into())
            .or_default()[class]
            .fetch_add(1, Ordering::Relaxed);
    }

    fn observe(&self, observer: &dyn opentelemetry::metrics::AsyncInstrument<u64>) {
        let series = self.series.read().unwrap_or_else(PoisonError::into_inner);
        for (route, by_upstream) in series.iter() {
            for (upstream, counts) in by_upstream {
                for (class, count) in STATUS_CLASSES.iter().zip(counts) {
                    let count = count.load(Ordering::Relaxed);
                    if count > 0 {
                        observer.observe(
                            count,
                            &[
                                KeyValue::new("http.route", route.to_string()),
                                KeyValue::new("llmtrace.upstream", upstream.to_string()),
                                KeyValue::new("http.response.status_class", *class),
                            ],
                        );
                    }
                }
            }
        }
    }
}

/// Counts a request in flight until dropped.
#[derive(Debug)]
pub struct InFlight(Arc<AtomicI64>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::metrics::MeterProvider as _;
    use opentelemetry_sdk::metrics::SdkMeterProvider;

    /// The `llmtrace.proxy.requests` total in an export.
    fn requests_total(metrics: &ResourceMetrics) -> u64 {
        let mut total = 0;
        for scope in metrics.scope_metrics() {
            for metric in scope.metrics() {
                if metric.name() != "llmtrace.proxy.requests" {
                    continue;
                }
                if let AggregatedMetrics::U64(MetricData::Sum(sum)) = metric.data() {
                    total += sum.data_points().map(|p| p.value()).sum::<u64>();
                }
            }
        }
        total
    }

    /// The push exports the one aggregation `/metrics` reads: on its interval, on a flush
    /// and once more at shutdown; cumulative, each request counted once.
    #[test]
    fn the_push_exports_what_metrics_holds_on_interval_flush_and_shutdown() {
        use opentelemetry_sdk::metrics::InMemoryMetricExporter;
        let reader = PrometheusReader::default();
        let provider = SdkMeterProvider::builder()
            .with_reader(reader.clone())
            .build();
        let metrics = ProxyMetrics::new(&provider.meter("t"), None);
        let exporter = InMemoryMetricExporter::default();
        let push = MetricsPush::start(reader.clone(), exporter.clone(), Duration::from_millis(30))
            .unwrap();
        let last_total = || {
            exporter
                .get_finished_metrics()
                .unwrap()
                .last()
                .map(requests_total)
        };
        metrics.record("/v1/chat/completions", "openai", 200, None);
        // On its interval, without a flush.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while last_total() != Some(1) {
            assert!(
                std::time::Instant::now() < deadline,
                "no export on the interval"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        metrics.record("/v1/chat/completions", "openai", 200, None);
        push.force_flush().unwrap();
        assert_eq!(last_total(), Some(2));
        assert!(
            reader
                .render()
                .contains(r#"llmtrace_proxy_requests_total{http_response_status_class="2xx",http_route="/v1/chat/completions",llmtrace_upstream="openai"} 2"#)
        );
        metrics.record("/v1/chat/completions", "openai", 200, None);
        exporter.reset();
        push.shutdown();
        assert_eq!(last_total(), Some(3), "no export at shutdown");
        assert!(push.force_flush().is_err());
        push.shutdown();
    }

    #[test]
    fn error_types_from_upstreams_are_bounded_labels() {
        let reader = PrometheusReader::default();
        let provider = SdkMeterProvider::builder()
            .with_reader(reader.clone())
            .build();
        let metrics = ProxyMetrics::new(&provider.meter("test"), None);
        for i in 0..500 {
            let error_type = format!("provider_error_{i}_{}", "x".repeat(1000));
            metrics.record("/v1/chat/completions", "openai", 502, Some(&error_type));
        }
        let text = reader.render();
        let series = text
            .lines()
            .filter(|l| l.starts_with("llmtrace_proxy_errors_total{"))
            .count();
        assert_eq!(series, limits::MAX_ERROR_TYPE_LABELS + 1, "{text}");
        assert!(text.contains(r#"error_type="_OTHER""#));
        assert!(
            text.lines().all(|l| l.len() < 400),
            "a label value was not cut"
        );
    }

    #[test]
    fn renders_counters_gauges_and_histograms_in_prometheus_text() {
        let reader = PrometheusReader::default();
        let provider = SdkMeterProvider::builder()
            .with_reader(reader.clone())
            .build();
        let meter = provider.meter("t");
        let metrics = ProxyMetrics::new(&meter, Some(Arc::new(ExportStats::default())));
        let guard = metrics.start();
        metrics.record("/v1/chat/completions", "openai", 200, None);
        metrics.record(
            "/v1/chat/completions",
            "openai",
            502,
            Some("connection_refused"),
        );
        let histogram = meter
            .f64_histogram("gen_ai.client.operation.duration")
            .with_unit("s")
            .with_boundaries(vec![0.01, 0.1])
            .build();
        histogram.record(0.05, &[KeyValue::new("gen_ai.request.model", "gpt-4o")]);
        histogram.record(5.0, &[KeyValue::new("gen_ai.request.model", "gpt-4o")]);
        let text = reader.render();
        for want in [
            "# TYPE llmtrace_proxy_requests_total counter",
            r#"llmtrace_proxy_requests_total{http_response_status_class="2xx",http_route="/v1/chat/completions",llmtrace_upstream="openai"} 1"#,
            r#"llmtrace_proxy_errors_total{error_type="connection_refused",http_route="/v1/chat/completions",llmtrace_upstream="openai"} 1"#,
            "llmtrace_proxy_in_flight_requests 1",
            "llmtrace_proxy_spans_dropped_total 0",
            "# TYPE gen_ai_client_operation_duration_seconds histogram",
            r#"gen_ai_client_operation_duration_seconds_bucket{gen_ai_request_model="gpt-4o",le="0.01"} 0"#,
            r#"gen_ai_client_operation_duration_seconds_bucket{gen_ai_request_model="gpt-4o",le="0.1"} 1"#,
            r#"gen_ai_client_operation_duration_seconds_bucket{gen_ai_request_model="gpt-4o",le="+Inf"} 2"#,
            r#"gen_ai_client_operation_duration_seconds_count{gen_ai_request_model="gpt-4o"} 2"#,
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        drop(guard);
        assert!(
            reader
                .render()
                .contains("llmtrace_proxy_in_flight_requests 0")
        );
    }
}
