//! The admin listener (`server.admin` / `--admin`, loopback by default): Prometheus
//! `/metrics`, `/healthz` (the process serves) and `/readyz` (it takes traffic: 503 once a
//! SIGTERM started draining, so load balancers stop sending before the listener closes),
//! and with the trace store on, the viewer: `/` → `/ui` (trace list), `/ui/traces/{id}`
//! (waterfall), `/api/traces[/{id}]` (Jaeger-shaped JSON), see [`llmtrace::store::ui`];
//! `/api/slo`: the service level objectives' windows, burn rates, alerts and budgets;
//! `/api/cohorts`: the canary routes' cohorts compared with their controls;
//! `POST /api/evaluations`: evaluations attached to existing traces (below).
//! And the shutdown sequence that goes with it ([`DrainOnTerm`]).
//!
//! ## `POST /api/evaluations`
//!
//! Attaches what an evaluator concluded to a trace the gateway recorded, as the GenAI
//! conventions' evaluation result ([`llmtrace::eval`]): a span `evaluation {name}` in that trace,
//! child of and linked to the evaluated span, with the `gen_ai.evaluation.*` attributes and the
//! `gen_ai.evaluation.result` event, counted in `llmtrace.gen_ai.evaluation.results` by name and
//! label. The body is one JSON object, or an array of at most 100:
//!
//! ```json
//! {"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7",
//!  "name": "relevance", "score": 0.85, "label": "relevant", "explanation": "...",
//!  "response_id": "chatcmpl-123"}
//! ```
//!
//! `trace_id` (the `x-llmtrace-trace-id` response header) and `name` are required. Answers
//! `202 {"recorded": [{"trace_id", "span_id", "sampled"}]}` with the evaluation spans' ids;
//! `400 {"error", "field"}` naming the field at fault (`body` for a body that is not JSON or
//! not an object or array; `[2].score` in an array), with nothing recorded; `413` for a body
//! over 64 KiB; `405` for another method.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};

use llmtrace::eval::{Evaluation, EvaluationRecorder};
use llmtrace::slo::{AnomalyDetector, SloEngine};
use llmtrace::store::TraceStore;

use crate::canary::Canary;
use crate::metrics::{PrometheusReader, ProxyMetrics};

/// What the admin endpoints and the shutdown sequence share with the gateway.
#[derive(Debug, Clone)]
pub struct AdminState {
    /// The gateway's counters (in-flight requests among them).
    pub metrics: ProxyMetrics,
    /// Renders every instrument for `/metrics`.
    pub prometheus: PrometheusReader,
    draining: Arc<AtomicBool>,
    /// The traces the viewer shows, when the store is on.
    pub store: Option<TraceStore>,
    /// The service level objectives every request is counted against.
    pub slo: Option<Arc<SloEngine>>,
    /// TTFT control charts per route and model.
    pub anomalies: Option<Arc<AnomalyDetector>>,
    /// The canary routes' cohorts.
    pub canary: Arc<Canary>,
    /// Records what `POST /api/evaluations` receives (404 without it).
    pub evaluations: Option<Arc<EvaluationRecorder<opentelemetry_sdk::trace::SdkTracer>>>,
}

impl AdminState {
    /// State for a gateway whose instruments are `metrics`, read through `prometheus`.
    pub fn new(metrics: ProxyMetrics, prometheus: PrometheusReader) -> Self {
        Self {
            metrics,
            prometheus,
            draining: Arc::new(AtomicBool::new(false)),
            store: None,
            slo: None,
            anomalies: None,
            canary: Arc::default(),
            evaluations: None,
        }
    }

    /// This state with `POST /api/evaluations` recording with `recorder`.
    pub fn with_evaluations(
        mut self,
        recorder: EvaluationRecorder<opentelemetry_sdk::trace::SdkTracer>,
    ) -> Self {
        self.evaluations = Some(Arc::new(recorder));
        self
    }

    /// This state with the canary routes of `canary` (answered on `/api/cohorts`).
    pub fn with_canary(mut self, canary: Canary) -> Self {
        self.canary = Arc::new(canary);
        self
    }

    /// This state with the objectives of `slo` (answered on `/api/slo`) and the TTFT charts
    /// of `anomalies`.
    pub fn with_slo(
        mut self,
        slo: Option<Arc<SloEngine>>,
        anomalies: Option<Arc<AnomalyDetector>>,
    ) -> Self {
        self.slo = slo;
        self.anomalies = anomalies;
        self
    }

    /// This state with the viewer over `store`.
    pub fn with_store(mut self, store: Option<TraceStore>) -> Self {
        self.store = store;
        self
    }

    /// True once shutdown began: `/readyz` answers 503.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Starts draining (what SIGTERM does).
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }
}

/// The admin HTTP app.
#[derive(Debug, Clone)]
pub struct AdminApp {
    state: AdminState,
}

impl AdminApp {
    /// The app over `state`.
    pub fn new(state: AdminState) -> Self {
        Self { state }
    }

    /// The answer to `method path`: status, content type and body.
    pub fn answer(&self, method: &http::Method, path: &str) -> (StatusCode, &'static str, String) {
        const TEXT: &str = "text/plain; charset=utf-8";
        if method != http::Method::GET && method != http::Method::HEAD {
            return (StatusCode::METHOD_NOT_ALLOWED, TEXT, "GET only\n".into());
        }
        match path {
            "/metrics" => (
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                self.state.prometheus.render(),
            ),
            "/healthz" => (StatusCode::OK, TEXT, "ok\n".into()),
            "/readyz" if self.state.draining() => (
                StatusCode::SERVICE_UNAVAILABLE,
                TEXT,
                format!(
                    "draining: {} requests in flight\n",
                    self.state.metrics.in_flight()
                ),
            ),
            "/readyz" => (StatusCode::OK, TEXT, "ready\n".into()),
            "/api/cohorts" => (StatusCode::OK, "application/json", self.state.canary.json()),
            "/api/slo" => (
                StatusCode::OK,
                "application/json",
                slo_json(self.state.slo.as_deref(), SystemTime::now()),
            ),
            _ => (
                StatusCode::NOT_FOUND,
                TEXT,
                "not found: /metrics, /healthz, /readyz, /ui, /api/traces, /api/slo, /api/cohorts, \
                 /api/evaluations\n"
                    .into(),
            ),
        }
    }

    /// The viewer's answer (`/`, `/ui…`, `/api/…`), or `None` for the other endpoints.
    pub fn viewer(
        &self,
        method: &http::Method,
        path: &str,
        query: Option<&str>,
    ) -> Option<Response<String>> {
        if method != http::Method::GET && method != http::Method::HEAD
            || path == "/api/slo"
            || path == "/api/cohorts"
            || path == EVALUATIONS_PATH
        {
            return None;
        }
        match &self.state.store {
            Some(store) if path == "/ui/slo" => Some(llmtrace::store::ui::page(
                store,
                "objectives",
                &crate::pages::slo_page(self.state.slo.as_deref(), SystemTime::now()),
            )),
            Some(store) if path == "/ui/cohorts" => Some(llmtrace::store::ui::page(
                store,
                "cohorts",
                &crate::pages::cohorts_page(&self.state.canary),
            )),
            Some(store) => llmtrace::store::ui::handle(store, path, query),
            None if path == "/" || path.starts_with("/ui") || path.starts_with("/api/") => {
                let mut off = Response::new(
                    "the trace store is off ([telemetry] store_traces = 0)\n".to_owned(),
                );
                *off.status_mut() = StatusCode::NOT_FOUND;
                Some(off)
            }
            None => None,
        }
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        if session.req_header().uri.path() == EVALUATIONS_PATH {
            return self.evaluations_response(session).await;
        }
        let req = session.req_header();
        if let Some(page) = self.viewer(&req.method, req.uri.path(), req.uri.query()) {
            let (mut parts, body) = page.into_parts();
            parts
                .headers
                .insert(http::header::CONTENT_LENGTH, body.len().into());
            return Response::from_parts(parts, body.into_bytes());
        }
        let (status, content_type, body) = self.answer(&req.method, req.uri.path());
        Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, content_type)
            .header(http::header::CONTENT_LENGTH, body.len())
            .body(body.into_bytes())
            .unwrap_or_default()
    }
}

// === impl AdminApp: evaluations ===

/// Where evaluations are posted.
pub const EVALUATIONS_PATH: &str = "/api/evaluations";

/// The largest `POST /api/evaluations` body read; larger ones get 413.
pub const MAX_EVALUATIONS_BODY: usize = 64 * 1024;

/// Bytes of a too large body read and thrown away, so that the 413 reaches a client still
/// sending rather than a reset connection; past them the connection is just closed.
const MAX_DRAINED_BODY: usize = 1024 * 1024;

impl AdminApp {
    /// The answer to a `POST /api/evaluations` whose body is `body`: status and JSON.
    pub fn post_evaluations(&self, body: &[u8]) -> (StatusCode, String) {
        let error = |field: &str, message: &str| {
            let field = if field.is_empty() { "body" } else { field };
            let text =
                serde_json::json!({ "error": format!("{field}: {message}"), "field": field });
            (StatusCode::BAD_REQUEST, text.to_string())
        };
        let Some(recorder) = &self.state.evaluations else {
            let text = serde_json::json!({ "error": "evaluations are not recorded here" });
            return (StatusCode::NOT_FOUND, text.to_string());
        };
        let value: serde_json::Value = match serde_json::from_slice(body) {
            Ok(value) => value,
            Err(e) => return error("body", &format!("invalid JSON: {e}")),
        };
        let evaluations = match Evaluation::list_from_json(&value) {
            Ok(evaluations) => evaluations,
            Err(e) => return error(e.field(), e.message()),
        };
        let recorded: Vec<serde_json::Value> = evaluations
            .iter()
            .map(|evaluation| {
                let span = recorder.record(evaluation);
                serde_json::json!({
                    "trace_id": span.trace_id().to_string(),
                    "span_id": span.span_id().to_string(),
                    "sampled": span.is_sampled(),
                })
            })
            .collect();
        let text = serde_json::json!({ "recorded": recorded });
        (StatusCode::ACCEPTED, text.to_string())
    }

    /// `/api/evaluations`, any method: reads a POST's body (capped) and records it.
    async fn evaluations_response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let (status, body) = if session.req_header().method != http::Method::POST {
            let text = serde_json::json!({ "error": "POST only" });
            (StatusCode::METHOD_NOT_ALLOWED, text.to_string())
        } else {
            match read_capped_body(session).await {
                Ok(body) => self.post_evaluations(&body),
                Err(status) => {
                    // What is left of the body is not read: the connection cannot be reused.
                    session.set_keepalive(None);
                    let error = if status == StatusCode::PAYLOAD_TOO_LARGE {
                        format!("body: at most {MAX_EVALUATIONS_BODY} bytes")
                    } else {
                        "body: could not be read".to_owned()
                    };
                    let text = serde_json::json!({ "error": error, "field": "body" });
                    (status, text.to_string())
                }
            }
        };
        Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::CONTENT_LENGTH, body.len())
            .header(http::header::ALLOW, "POST")
            .body(body.into_bytes())
            .unwrap_or_default()
    }
}

/// The request body, when it is at most [`MAX_EVALUATIONS_BODY`] bytes; otherwise 413 once
/// the rest was drained (up to [`MAX_DRAINED_BODY`]), or 400 when it could not be read.
async fn read_capped_body(session: &mut ServerSession) -> Result<Vec<u8>, StatusCode> {
    let declared = session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_DRAINED_BODY) {
        return Err(StatusCode::PAYLOAD_TOO_LARGE);
    }
    let mut body = Vec::new();
    let mut seen = 0usize;
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                seen += chunk.len();
                if seen <= MAX_EVALUATIONS_BODY {
                    body.extend_from_slice(&chunk);
                } else if seen > MAX_DRAINED_BODY {
                    return Err(StatusCode::PAYLOAD_TOO_LARGE);
                }
            }
            Ok(None) => break,
            Err(_) => return Err(StatusCode::BAD_REQUEST),
        }
    }
    if seen > MAX_EVALUATIONS_BODY {
        return Err(StatusCode::PAYLOAD_TOO_LARGE);
    }
    Ok(body)
}

/// `/api/slo`: every objective's windows, burn rates, alerts and budget, as JSON.
fn slo_json(engine: Option<&SloEngine>, now: SystemTime) -> String {
    let objectives: Vec<serde_json::Value> = engine
        .map(|e| e.status(now))
        .unwrap_or_default()
        .iter()
        .map(|s| {
            let windows: serde_json::Map<String, serde_json::Value> = s
                .windows
                .iter()
                .map(|w| {
                    let value = serde_json::json!({
                        "good": w.good, "total": w.total, "burn_rate": w.burn_rate,
                    });
                    (w.window.to_owned(), value)
                })
                .collect();
            serde_json::json!({
                "name": s.name,
                "description": s.description,
                "target": s.target,
                "windows": windows,
                "period_days": s.period_days,
                "period": { "good": s.period.good, "total": s.period.total },
                "error_budget_remaining": s.budget_remaining,
                "alerts": { "page": s.page, "ticket": s.ticket },
                "since_start": { "good": s.cumulative.good, "total": s.cumulative.total },
            })
        })
        .collect();
    serde_json::json!({ "objectives": objectives }).to_string()
}

/// The gateway's shutdown signals, in place of pingora's default handling.
///
/// - SIGTERM: `/readyz` turns 503 at once; requests already in flight (streams included) get up
///   to the grace period to finish, and the wait ends as soon as none is left, not after the
///   full period as pingora's own graceful shutdown does. New requests that still arrive are
///   served meanwhile (load balancers take a moment to notice `/readyz`). Then the listeners
///   close and the process flushes its spans and exits.
/// - SIGINT: stop now (in-flight requests are cut, spans still flushed).
/// - SIGQUIT: pingora's graceful upgrade (hand the listeners to a new process).
#[derive(Debug)]
pub struct DrainOnTerm {
    state: AdminState,
    grace: Duration,
}

impl DrainOnTerm {
    /// Drains `state`'s in-flight requests for at most `grace` after SIGTERM.
    pub fn new(state: AdminState, grace: Duration) -> Self {
        Self { state, grace }
    }

    /// The drain itself: readiness off, then wait until nothing is in flight or the grace
    /// period is over. Returns how long it waited.
    pub async fn drain(&self) -> Duration {
        self.state.start_draining();
        let started = tokio::time::Instant::now();
        while self.state.metrics.in_flight() > 0 && started.elapsed() < self.grace {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        started.elapsed()
    }
}

#[async_trait]
impl ShutdownSignalWatch for DrainOnTerm {
    async fn recv(&self) -> ShutdownSignal {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int), Ok(mut quit)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::quit()),
        ) else {
            // Without signal handlers there is nothing to wait for but the process's end.
            std::future::pending::<()>().await;
            unreachable!()
        };
        tokio::select! {
            _ = term.recv() => {
                eprintln!(
                    "llmtrace-proxy: SIGTERM: draining {} in-flight requests (at most {:?})",
                    self.state.metrics.in_flight(),
                    self.grace
                );
                tokio::select! {
                    waited = self.drain() => {
                        eprintln!(
                            "llmtrace-proxy: drained in {:.1} s, {} requests still in flight",
                            waited.as_secs_f64(),
                            self.state.metrics.in_flight()
                        );
                        // The grace period is spent: pingora then only closes the listeners
                        // and stops its runtimes.
                        ShutdownSignal::GracefulTerminate
                    }
                    _ = int.recv() => ShutdownSignal::FastShutdown,
                }
            }
            _ = int.recv() => ShutdownSignal::FastShutdown,
            _ = quit.recv() => ShutdownSignal::GracefulUpgrade,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::metrics::MeterProvider as _;
    use opentelemetry_sdk::metrics::SdkMeterProvider;

    fn state() -> AdminState {
        let reader = PrometheusReader::default();
        let provider = SdkMeterProvider::builder()
            .with_reader(reader.clone())
            .build();
        let metrics = ProxyMetrics::new(&provider.meter("t"), None);
        // The provider must outlive the test's collections.
        std::mem::forget(provider);
        AdminState::new(metrics, reader)
    }

    #[test]
    fn endpoints_answer_and_readiness_follows_draining() {
        let state = state();
        let app = AdminApp::new(state.clone());
        let get = http::Method::GET;
        assert_eq!(app.answer(&get, "/healthz").0, StatusCode::OK);
        assert_eq!(app.answer(&get, "/readyz").0, StatusCode::OK);
        let (status, content_type, body) = app.answer(&get, "/metrics");
        assert_eq!(status, StatusCode::OK);
        assert!(content_type.starts_with("text/plain; version=0.0.4"));
        assert!(
            body.contains("llmtrace_proxy_in_flight_requests 0"),
            "{body}"
        );
        assert_eq!(app.answer(&get, "/nope").0, StatusCode::NOT_FOUND);
        assert_eq!(
            app.answer(&http::Method::POST, "/metrics").0,
            StatusCode::METHOD_NOT_ALLOWED
        );
        state.start_draining();
        let (status, _, body) = app.answer(&get, "/readyz");
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("draining"));
        assert_eq!(app.answer(&get, "/healthz").0, StatusCode::OK);
    }

    #[test]
    fn the_viewer_answers_only_with_a_store() {
        let get = http::Method::GET;
        let off = AdminApp::new(state());
        assert_eq!(off.viewer(&get, "/ui", None).unwrap().status(), 404);
        assert!(off.viewer(&get, "/metrics", None).is_none());
        let store = TraceStore::new(llmtrace::store::StoreConfig::default());
        let on = AdminApp::new(state().with_store(Some(store)));
        assert_eq!(on.viewer(&get, "/", None).unwrap().status(), 303);
        assert_eq!(
            on.viewer(&get, "/ui", Some("limit=5")).unwrap().status(),
            200
        );
        assert!(on.viewer(&get, "/healthz", None).is_none());
        assert!(on.viewer(&http::Method::POST, "/ui", None).is_none());
        assert_eq!(
            on.answer(&http::Method::POST, "/ui").0,
            StatusCode::METHOD_NOT_ALLOWED
        );
    }

    #[test]
    fn evaluations_are_recorded_and_bad_ones_refused_naming_the_field() {
        use llmtrace::eval::{EvaluationMetrics, EvaluationRecorder};
        use opentelemetry::trace::TracerProvider as _;
        use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};

        let post = http::Method::POST;
        let off = AdminApp::new(state());
        assert_eq!(off.post_evaluations(b"{}").0, StatusCode::NOT_FOUND);
        assert!(off.viewer(&post, EVALUATIONS_PATH, None).is_none());

        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let state = state();
        let meter = opentelemetry::global::meter("admin-test");
        let app = AdminApp::new(
            state.with_evaluations(
                EvaluationRecorder::new(provider.tracer("t"))
                    .with_metrics(EvaluationMetrics::new(&meter)),
            ),
        );
        let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
        let one = format!(r#"{{"trace_id":"{trace}","name":"relevance","score":1}}"#);
        let (status, body) = app.post_evaluations(format!("[{one},{one}]").as_bytes());
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
        let recorded = answer["recorded"].as_array().unwrap();
        assert_eq!(recorded.len(), 2);
        assert_eq!(recorded[0]["trace_id"], trace);
        let spans = exporter.get_finished_spans().unwrap();
        assert_eq!(spans.len(), 2);
        assert_eq!(
            recorded[1]["span_id"],
            spans[1].span_context.span_id().to_string()
        );

        for (body, field) in [
            ("{".to_owned(), "body"),
            ("7".to_owned(), "body"),
            (r#"{"trace_id":"nope","name":"n"}"#.to_owned(), "trace_id"),
            (format!(r#"{{"trace_id":"{trace}"}}"#), "name"),
            (format!("[{one},{{}}]"), "[1].trace_id"),
        ] {
            let (status, answer) = app.post_evaluations(body.as_bytes());
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
            let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
            assert_eq!(answer["field"], field, "{body}");
        }
        assert_eq!(exporter.get_finished_spans().unwrap().len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn the_drain_ends_when_nothing_is_in_flight_or_the_grace_is_spent() {
        let state = state();
        let drain = DrainOnTerm::new(state.clone(), Duration::from_secs(30));
        let guard = state.metrics.start();
        let release = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            drop(guard);
        });
        let waited = drain.drain().await;
        assert!(state.draining());
        assert!(
            waited >= Duration::from_secs(2) && waited < Duration::from_secs(3),
            "{waited:?}"
        );
        release.await.unwrap();

        let _stuck = state.metrics.start();
        let waited = DrainOnTerm::new(state.clone(), Duration::from_secs(5))
            .drain()
            .await;
        assert!(waited >= Duration::from_secs(5) && waited < Duration::from_secs(6));
    }
}
