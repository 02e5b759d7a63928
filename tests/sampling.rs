//! Head and tail sampling end to end: an axum gateway (`ServerLayer` + a `GenAiLayer` client)
//! in front of the mock provider, a mixed workload (errors, slow, fast, aborted, tagged users),
//! a `RuleSampler` at the head and a `TailSampler` with a 1 % fallback.
//!
//! Checked: every error, slow, aborted and tagged trace is kept whole (server span, GenAI
//! span, and a child that ends after the root); a fast trace is kept exactly when its trace id
//! falls in the 1 % (the same test the head sampler uses); the GenAI metrics count every
//! request whatever was sampled.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::routing::post;
use futures::StreamExt;
use http::{HeaderName, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use llmtrace::layer::{GenAiService, RequestBody};
use llmtrace::sampling::{
    Match, Policy, RuleSampler, Sample, TailSampler, TailStatsHandle, sampled_by_ratio,
};
use llmtrace::{GenAiLayer, ServerLayer};
use llmtrace_examples::chain::{http_client, nodelay};
use llmtrace_mock::{MockConfig, MockServer};
use opentelemetry::trace::{Span as _, SpanId, TraceId, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, Value};
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{
    InMemorySpanExporter, SdkTracer, SdkTracerProvider, SimpleSpanProcessor, SpanData,
};
use tower::{ServiceBuilder, ServiceExt};

type Exporting = SimpleSpanProcessor<InMemorySpanExporter>;
type Upstream = GenAiService<Client<HttpConnector, RequestBody<Body>>>;

#[derive(Clone)]
struct App {
    upstream: Upstream,
    mock_url: String,
    tracer: SdkTracer,
    /// Children started while the request runs and ended by the test after its root ended.
    late: Arc<Mutex<Vec<opentelemetry_sdk::trace::Span>>>,
}

/// The gateway's handler: forwards to the mock through the GenAI client layer.
async fn chat(State(app): State<App>, req: Request<Body>) -> Response<Body> {
    let late = app
        .tracer
        .start_with_context("late child", &Context::current());
    app.late.lock().unwrap().push(late);
    let (parts, body) = req.into_parts();
    let mut upstream = Request::post(format!("{}/v1/chat/completions", app.mock_url));
    for (name, value) in &parts.headers {
        if name.as_str().starts_with("x-mock-") || name == http::header::CONTENT_TYPE {
            upstream = upstream.header(name, value);
        }
    }
    match app
        .upstream
        .clone()
        .oneshot(upstream.body(body).unwrap())
        .await
    {
        Ok(response) => {
            let (parts, body) = response.into_parts();
            Response::from_parts(parts, Body::new(body))
        }
        Err(_) => Response::builder()
            .status(StatusCode::BAD_GATEWAY)
            .body(Body::empty())
            .unwrap(),
    }
}

struct Gateway {
    addr: std::net::SocketAddr,
    spans: InMemorySpanExporter,
    traces: SdkTracerProvider,
    metrics: InMemoryMetricExporter,
    meters: SdkMeterProvider,
    late: Arc<Mutex<Vec<opentelemetry_sdk::trace::Span>>>,
    _mock: MockServer,
}

impl Gateway {
    /// The gateway with `head` sampling and, when given, `tail` over the exporting processor.
    async fn start(
        head: RuleSampler,
        tail: Option<fn(Exporting) -> TailSampler<Exporting>>,
    ) -> (Self, Option<TailStatsHandle>) {
        let mock = MockServer::start(MockConfig::default()).await.unwrap();
        let spans = InMemorySpanExporter::default();
        let exporting = SimpleSpanProcessor::new(spans.clone());
        let builder = SdkTracerProvider::builder().with_sampler(head);
        let (traces, stats) = match tail {
            Some(make) => {
                let tail = make(exporting);
                let stats = tail.stats_handle();
                (builder.with_span_processor(tail).build(), Some(stats))
            }
            None => (builder.with_span_processor(exporting).build(), None),
        };
        let metrics = InMemoryMetricExporter::default();
        let meters = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(metrics.clone()).build())
            .build();
        let tracer = traces.tracer("llmtrace");
        let upstream = ServiceBuilder::new()
            .layer(
                GenAiLayer::gateway()
                    .with_tracer(tracer.clone())
                    .with_meter(&opentelemetry::metrics::MeterProvider::meter(
                        &meters, "llmtrace",
                    )),
            )
            .service(
                Client::builder(hyper_util::rt::TokioExecutor::new()).build({
                    let mut c = HttpConnector::new();
                    c.set_nodelay(true);
                    c
                }),
            );
        let late = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .with_state(App {
                upstream,
                mock_url: mock.url(),
                tracer: tracer.clone(),
                late: late.clone(),
            })
            .layer(
                ServerLayer::new()
                    .with_tracer(tracer)
                    .capture_request_headers([HeaderName::from_static("x-user-tier")])
                    .traceresponse(true),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(nodelay(listener), app).await });
        (
            Self {
                addr,
                spans,
                traces,
                metrics,
                meters,
                late,
                _mock: mock,
            },
            stats,
        )
    }

    /// Ends the children that outlive their requests.
    fn end_late_children(&self) -> usize {
        let mut late = self.late.lock().unwrap();
        let n = late.len();
        for mut span in late.drain(..) {
            span.end();
        }
        n
    }

    /// Exported spans by trace.
    fn traces(&self) -> HashMap<TraceId, Vec<SpanData>> {
        let mut by_trace: HashMap<TraceId, Vec<SpanData>> = HashMap::new();
        for span in self.spans.get_finished_spans().unwrap() {
            by_trace
                .entry(span.span_context.trace_id())
                .or_default()
                .push(span);
        }
        by_trace
    }

    /// `gen_ai.client.operation.duration` data points: one per request.
    fn genai_durations(&self) -> u64 {
        self.meters.force_flush().unwrap();
        let mut count = 0;
        for rm in self.metrics.get_finished_metrics().unwrap() {
            for sm in rm.scope_metrics() {
                for metric in sm.metrics() {
                    if metric.name() == "gen_ai.client.operation.duration" {
                        if let AggregatedMetrics::F64(MetricData::Histogram(h)) = metric.data() {
                            count = count.max(h.data_points().map(|p| p.count()).sum::<u64>());
                        }
                    }
                }
            }
        }
        count
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    Fast,
    Error,
    Slow,
    Aborted,
    TierHeader,
    VipBaggage,
}

impl Kind {
    fn headers(self) -> &'static [(&'static str, &'static str)] {
        const FAST: &[(&str, &str)] = &[
            ("x-mock-ttft-ms", "0"),
            ("x-mock-gap-ms", "0"),
            ("x-mock-tokens", "2"),
        ];
        match self {
            Kind::Fast => FAST,
            Kind::Error => &[("x-mock-fault", "500")],
            Kind::Slow => &[("x-mock-ttft-ms", "1200"), ("x-mock-tokens", "2")],
            Kind::Aborted => &[
                ("x-mock-ttft-ms", "0"),
                ("x-mock-gap-ms", "100"),
                ("x-mock-tokens", "100"),
            ],
            Kind::TierHeader => &[
                ("x-user-tier", "beta"),
                ("x-mock-ttft-ms", "0"),
                ("x-mock-gap-ms", "0"),
                ("x-mock-tokens", "2"),
            ],
            Kind::VipBaggage => &[
                ("baggage", "user_id=vip-7,session_id=s1"),
                ("x-mock-ttft-ms", "0"),
                ("x-mock-gap-ms", "0"),
                ("x-mock-tokens", "2"),
            ],
        }
    }

    /// The reasons a kept trace of this kind may carry.
    fn reasons(self) -> &'static [&'static str] {
        match self {
            Kind::Fast => &["fallback"],
            Kind::Error => &["error"],
            Kind::Slow => &["slow"],
            Kind::Aborted => &["aborted"],
            Kind::TierHeader => &["tier"],
            Kind::VipBaggage => &["vip"],
        }
    }
}

/// Sends one request; returns its trace id (from `traceresponse`).
async fn send(addr: std::net::SocketAddr, kind: Kind) -> TraceId {
    let client = http_client();
    let mut request = Request::post(format!("http://{addr}/v1/chat/completions"))
        .header("content-type", "application/json");
    for (name, value) in kind.headers() {
        request = request.header(*name, *value);
    }
    let body = r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let response = client
        .request(request.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let traceresponse = response.headers()["traceresponse"].to_str().unwrap();
    let trace_id = TraceId::from_hex(traceresponse.split('-').nth(1).unwrap()).unwrap();
    let mut body = response.into_body();
    if kind == Kind::Aborted {
        // Read the first chunk, then go away mid-stream.
        let _ = body.frame().await;
        drop(body);
    } else {
        body.collect().await.unwrap();
    }
    trace_id
}

fn attr<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

fn duration(span: &SpanData) -> Duration {
    span.end_time
        .duration_since(span.start_time)
        .unwrap_or_default()
}

/// The trace has its server root, its GenAI span and the late child, correctly nested, and
/// the root says why it was kept.
fn assert_complete(kind: Kind, spans: &[SpanData]) -> String {
    assert_eq!(spans.len(), 3, "{kind:?}: {:#?}", spans);
    let root = spans
        .iter()
        .find(|s| s.parent_span_id == SpanId::INVALID)
        .unwrap_or_else(|| panic!("{kind:?}: no root"));
    assert_eq!(root.name, "POST /v1/chat/completions");
    let genai = spans.iter().find(|s| s.name == "chat gpt-4o").unwrap();
    let late = spans.iter().find(|s| s.name == "late child").unwrap();
    assert_eq!(genai.parent_span_id, root.span_context.span_id());
    assert_eq!(late.parent_span_id, root.span_context.span_id());
    assert!(
        late.end_time >= root.end_time,
        "{kind:?}: the late child ended late"
    );
    let reason = attr(root, "llmtrace.sampling.reason")
        .unwrap_or_else(|| panic!("{kind:?}: no reason on the root"))
        .as_str()
        .into_owned();
    for other in [genai, late] {
        assert!(attr(other, "llmtrace.sampling.reason").is_none());
    }
    reason
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_workload_keeps_what_matters_and_one_percent_of_the_rest() {
    let head = RuleSampler::builder()
        .rule(Match::new().route("/healthz"), Sample::Never)
        .named_rule(
            "vip",
            Match::new().baggage("user_id", "vip-*"),
            Sample::Always,
        )
        .default_ratio(1.0)
        .build();
    let (gateway, stats) = Gateway::start(
        head,
        Some(|exporting| {
            TailSampler::builder(exporting)
                .policy(Policy::Error)
                .policy(Policy::Duration(Duration::from_secs(1)))
                .policy(Policy::Aborted)
                .policy(Policy::attribute("http.request.header.x-user-tier", "beta").named("tier"))
                .policy(Policy::attribute("llmtrace.sampling.rule", "vip").named("vip"))
                .fallback_ratio(0.01)
                // Long enough that every trace waits for its late child: decided at the flush.
                .decision_wait(Duration::from_secs(600))
                .build()
        }),
    )
    .await;
    let stats = stats.unwrap();

    let mut plan = Vec::new();
    plan.extend(std::iter::repeat_n(Kind::Fast, 1500));
    plan.extend(std::iter::repeat_n(Kind::Error, 30));
    plan.extend(std::iter::repeat_n(Kind::Slow, 10));
    plan.extend(std::iter::repeat_n(Kind::Aborted, 20));
    plan.extend(std::iter::repeat_n(Kind::TierHeader, 30));
    plan.extend(std::iter::repeat_n(Kind::VipBaggage, 30));
    // Interleave the kinds.
    plan.sort_by_key(|k| *k as u8);
    let n = plan.len();
    let mut interleaved = Vec::with_capacity(n);
    let mut by_kind: HashMap<Kind, Vec<Kind>> = HashMap::new();
    for k in plan {
        by_kind.entry(k).or_default().push(k);
    }
    while interleaved.len() < n {
        for list in by_kind.values_mut() {
            if let Some(k) = list.pop() {
                interleaved.push(k);
            }
        }
    }

    let addr = gateway.addr;
    let sent: Vec<(Kind, TraceId)> = futures::stream::iter(interleaved)
        .map(|kind| async move { (kind, send(addr, kind).await) })
        .buffer_unordered(24)
        .collect()
        .await;
    assert_eq!(sent.len(), n);

    // Every root has ended once every server span and GenAI span reached the sampler; aborted
    // ones end when the gateway notices the client left.
    wait_until("every request's spans", || {
        stats.stats().spans_received as usize == 2 * n
    })
    .await;
    assert_eq!(gateway.end_late_children(), n);
    assert_eq!(stats.stats().spans_received as usize, 3 * n);
    assert!(
        gateway.spans.get_finished_spans().unwrap().is_empty(),
        "nothing is exported before its trace is decided"
    );
    gateway.traces.force_flush().unwrap();

    let traces = gateway.traces();
    let mut fast_kept = 0;
    let mut fast_total = 0;
    for (kind, trace_id) in &sent {
        let spans = traces.get(trace_id);
        if *kind != Kind::Fast {
            let spans = spans.unwrap_or_else(|| panic!("{kind:?} trace {trace_id} was dropped"));
            let reason = assert_complete(*kind, spans);
            assert!(
                kind.reasons().contains(&reason.as_str()),
                "{kind:?}: {reason}"
            );
            continue;
        }
        fast_total += 1;
        let in_ratio = sampled_by_ratio(*trace_id, 0.01);
        match spans {
            Some(spans) => {
                fast_kept += 1;
                let reason = assert_complete(*kind, spans);
                let root = spans
                    .iter()
                    .find(|s| s.parent_span_id == SpanId::INVALID)
                    .unwrap();
                // A fast request slowed past the threshold by a loaded machine is rightly kept.
                let legit = (reason == "fallback" && in_ratio)
                    || (reason == "slow" && duration(root) >= Duration::from_secs(1));
                assert!(
                    legit,
                    "fast trace {trace_id} kept as {reason}, in ratio: {in_ratio}"
                );
            }
            None => assert!(!in_ratio, "fast trace {trace_id} in the 1 % was dropped"),
        }
    }
    // About 1 %: 15 expected of 1500 (σ ≈ 3.9); none, or over 45, would be far out.
    assert!(
        (1..=45).contains(&fast_kept),
        "{fast_kept} of {fast_total} fast traces kept"
    );
    assert_eq!(traces.len(), sent.len() - fast_total + fast_kept);

    let s = stats.stats();
    assert_eq!(s.traces_received as usize, n);
    assert_eq!(s.kept + s.dropped, s.traces_received);
    assert_eq!((s.buffered_traces, s.buffered_spans), (0, 0));
    assert_eq!(s.spans_kept + s.spans_dropped, s.spans_received);
    assert_eq!(s.decided_early, 0);

    // The GenAI metrics count every request, kept or not.
    assert_eq!(gateway.genai_durations(), n as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_sampling_at_one_percent_keeps_metrics_whole() {
    let head = RuleSampler::builder().default_ratio(0.01).build();
    let (gateway, _) = Gateway::start(head, None).await;
    let n = 400;
    let addr = gateway.addr;
    let sent: Vec<TraceId> = futures::stream::iter(0..n)
        .map(|_| async move { send(addr, Kind::Fast).await })
        .buffer_unordered(16)
        .collect()
        .await;
    gateway.end_late_children();
    wait_until("the GenAI metrics", || {
        gateway.genai_durations() == n as u64
    })
    .await;

    let traces = gateway.traces();
    for trace_id in &sent {
        let expected = sampled_by_ratio(*trace_id, 0.01);
        assert_eq!(traces.contains_key(trace_id), expected, "{trace_id}");
        if expected {
            assert_eq!(traces[trace_id].len(), 3);
        }
    }
    assert!(traces.len() <= 16, "{} of {n} sampled at 1 %", traces.len());
    assert_eq!(gateway.genai_durations(), n as u64);
}
