//! A local OTLP/gRPC collector that counts what it receives and discards it: the "tracing
//! on" proxy exports every span here, so the export path is exercised for real (serialize,
//! batch, send over loopback) without a collector's own cost landing on the target.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use serde::{Deserialize, Serialize};

/// What the sink has received so far.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SinkCounts {
    /// Spans received.
    pub spans: u64,
    /// Trace export calls (batches).
    pub span_batches: u64,
    /// Metric export calls.
    pub metric_batches: u64,
}

#[derive(Default)]
struct Counters {
    spans: AtomicU64,
    span_batches: AtomicU64,
    metric_batches: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> SinkCounts {
        SinkCounts {
            spans: self.spans.load(Ordering::Relaxed),
            span_batches: self.span_batches.load(Ordering::Relaxed),
            metric_batches: self.metric_batches.load(Ordering::Relaxed),
        }
    }
}

#[derive(Clone)]
struct Sink(Arc<Counters>);

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans: usize = request
            .get_ref()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.0.spans.fetch_add(spans as u64, Ordering::Relaxed);
        self.0.span_batches.fetch_add(1, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

#[tonic::async_trait]
impl MetricsService for Sink {
    async fn export(
        &self,
        _request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.0.metric_batches.fetch_add(1, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportMetricsServiceResponse {
            partial_success: None,
        }))
    }
}

/// Puts the calling thread, and so the threads it starts, in the idle scheduling class
/// (`SCHED_IDLE`): the sink runs only when nothing else on its core wants to.
///
/// The sink stands for a collector, which in production runs on another machine; here it
/// shares a core with the load generator and the mocks. Decoding a batch of 512 spans is a
/// burst of work on that core, and the generator then read the tracing gateway's answers
/// late: measured (`llmtrace-load run --max-rate-only --targets pingora,proxy-tracing`), the
/// tracing gateway's core was 79–82 % busy at "max rate" with the sink at normal priority
/// and 87–88 % with it idle, the max rate 13.2k against 14.1–14.3k req/s, with the
/// gateway's CPU per request unchanged. Only the tracing target exports, so the burst slowed only its
/// measurement. A sink starved for long would make the gateway drop spans; the gateways'
/// own span counts in the report say whether any were lost.
pub fn idle_priority() -> Result<(), String> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler on the calling thread (pid 0) with a valid parameter.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } == 0 {
        Ok(())
    } else {
        Err(format!(
            "the sink's idle priority (SCHED_IDLE): {}",
            std::io::Error::last_os_error()
        ))
    }
}

/// Serves OTLP/gRPC on `addr` until killed, writing the counts as JSON to `counts_file`
/// every 200 ms (written to a temporary file and renamed, so readers never see half of it).
pub async fn serve(addr: SocketAddr, counts_file: PathBuf) -> Result<(), String> {
    let counters = Arc::new(Counters::default());
    let writer = counters.clone();
    tokio::spawn(async move {
        let tmp = counts_file.with_extension("tmp");
        let mut last = None;
        loop {
            let now = writer.snapshot();
            if last != Some(now) {
                let text = serde_json::to_string(&now).unwrap_or_default();
                if std::fs::write(&tmp, text).is_ok() {
                    let _ = std::fs::rename(&tmp, &counts_file);
                }
                last = Some(now);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let sink = Sink(counters);
    tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(sink.clone()))
        .add_service(MetricsServiceServer::new(sink))
        .serve(addr)
        .await
        .map_err(|e| format!("OTLP sink on {addr}: {e}"))
}

/// Reads the counts a sink wrote (zero when it has not written yet).
pub fn read_counts(counts_file: &std::path::Path) -> SinkCounts {
    std::fs::read_to_string(counts_file)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default()
}
