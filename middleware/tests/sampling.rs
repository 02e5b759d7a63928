//! Sampling through the SDK and the layers: the head sampler sees what the layers start their
//! spans with, and the tail sampler's memory stays within its caps with 100 000 traces in
//! flight.
#![cfg(feature = "sampling")]

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderName, Request, Response};
use http_body_util::{BodyExt, Full};
use llmtrace::layer::{GenAiLayer, ServerLayer};
use llmtrace::sampling::{Match, Policy, RuleSampler, Sample, TailSampler, sampled_by_ratio};
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    InMemorySpanExporter, SdkTracerProvider, Span, SpanData, SpanEvents, SpanLinks, SpanProcessor,
};
use tower::{ServiceBuilder, ServiceExt, service_fn};

fn provider(sampler: RuleSampler) -> (SdkTracerProvider, InMemorySpanExporter) {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_sampler(sampler)
        .with_simple_exporter(exporter.clone())
        .build();
    (provider, exporter)
}

async fn ok(_req: Request<Full<Bytes>>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from_static(b"ok"))))
}

#[tokio::test]
async fn head_rules_see_captured_headers_method_and_baggage() {
    let sampler = RuleSampler::builder()
        .named_rule(
            "enterprise",
            Match::new()
                .header("x-user-tier", "enterprise")
                .method("POST"),
            Sample::Always,
        )
        .named_rule(
            "exp",
            Match::new().baggage("experiment", "*"),
            Sample::Always,
        )
        .default_ratio(0.0)
        .build();
    let (provider, exporter) = provider(sampler);
    let service = ServiceBuilder::new()
        .layer(
            ServerLayer::new()
                .with_tracer(provider.tracer("test"))
                .capture_request_headers([HeaderName::from_static("x-user-tier")]),
        )
        .service(service_fn(ok));
    type Headers = &'static [(&'static str, &'static str)];
    let cases: [(&str, Headers, Option<&str>); 5] = [
        ("POST", &[("x-user-tier", "enterprise")], Some("enterprise")),
        ("GET", &[("x-user-tier", "enterprise")], None),
        ("POST", &[("x-user-tier", "free")], None),
        (
            "POST",
            &[("baggage", "experiment=b,user_id=u1")],
            Some("exp"),
        ),
        ("POST", &[], None),
    ];
    for (method, headers, expected) in cases {
        exporter.reset();
        let mut request = Request::builder()
            .method(method)
            .uri("/v1/chat/completions");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = service
            .clone()
            .oneshot(request.body(Full::new(Bytes::new())).unwrap())
            .await
            .unwrap();
        response.into_body().collect().await.unwrap();
        let spans = exporter.get_finished_spans().unwrap();
        match expected {
            Some(rule) => {
                assert_eq!(spans.len(), 1, "{method} {headers:?}");
                let recorded = spans[0]
                    .attributes
                    .iter()
                    .find(|kv| kv.key.as_str() == "llmtrace.sampling.rule")
                    .map(|kv| kv.value.as_str().into_owned());
                assert_eq!(recorded.as_deref(), Some(rule));
            }
            None => assert!(spans.is_empty(), "{method} {headers:?} was sampled"),
        }
    }
}

#[tokio::test]
async fn head_rules_see_the_genai_model() {
    let sampler = RuleSampler::builder()
        .rule(Match::new().model("gpt-4o-experimental*"), Sample::Always)
        .default_ratio(0.0)
        .build();
    let (provider, exporter) = provider(sampler);
    let upstream = service_fn(|_req: Request<_>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
            br#"{"id":"x","object":"chat.completion","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}]}"#,
        ))))
    });
    let service = ServiceBuilder::new()
        .layer(GenAiLayer::server().with_tracer(provider.tracer("test")))
        .service(upstream);
    for (model, sampled) in [("gpt-4o-experimental-2", true), ("gpt-4o", false)] {
        exporter.reset();
        let body = format!(r#"{{"model":"{model}","messages":[]}}"#);
        let request = Request::post("/v1/chat/completions")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let response = service.clone().oneshot(request).await.unwrap();
        response.into_body().collect().await.unwrap();
        let spans = exporter.get_finished_spans().unwrap();
        assert_eq!(spans.len(), usize::from(sampled), "{model}");
    }
}

/// Collects what the tail sampler forwards, by trace.
#[derive(Debug, Default, Clone)]
struct Collect(Arc<Mutex<HashMap<TraceId, Vec<SpanData>>>>);

impl SpanProcessor for Collect {
    fn on_start(&self, _: &mut Span, _: &Context) {}
    fn on_end(&self, span: SpanData) {
        self.0
            .lock()
            .unwrap()
            .entry(span.span_context.trace_id())
            .or_default()
            .push(span);
    }
    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }
    fn shutdown_with_timeout(&self, _: Duration) -> OTelSdkResult {
        Ok(())
    }
}

fn trace_id(i: u64) -> TraceId {
    // Spread over the id space like random ids, deterministic.
    TraceId::from(u128::from(i + 1).wrapping_mul(0x2545_f491_4f6c_dd1d_9e37_79b9_7f4a_7c15))
}

fn span(trace: u64, id: u64, parent: u64, failed: bool) -> SpanData {
    let start = SystemTime::now();
    SpanData {
        span_context: SpanContext::new(
            trace_id(trace),
            SpanId::from(id),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
        parent_span_id: SpanId::from(parent),
        parent_span_is_remote: false,
        span_kind: SpanKind::Internal,
        name: "s".into(),
        start_time: start,
        end_time: start,
        attributes: vec![KeyValue::new("i", trace as i64)],
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: if failed {
            Status::error("boom")
        } else {
            Status::Unset
        },
        instrumentation_scope: Default::default(),
    }
}

#[test]
fn memory_stays_under_the_caps_with_100_000_traces_in_flight() {
    const TRACES: u64 = 100_000;
    const MAX_TRACES: u64 = 10_000;
    const MAX_SPANS: u64 = 15_000;
    let out = Collect::default();
    let tail = TailSampler::builder(out.clone())
        .policy(Policy::Error)
        .fallback_ratio(0.01)
        .max_traces(MAX_TRACES as usize)
        .max_spans(MAX_SPANS as usize)
        .decision_cache_size(2 * TRACES as usize)
        .decision_wait(Duration::from_secs(3600))
        .build();

    // Every trace: two children end while the root is in flight; every 10th has a failed child.
    for i in 0..TRACES {
        tail.on_end(span(i, 2, 1, false));
        tail.on_end(span(i, 3, 1, i % 10 == 0));
        let s = tail.stats();
        assert!(s.buffered_traces <= MAX_TRACES, "{s:?}");
        assert!(s.buffered_spans <= MAX_SPANS, "{s:?}");
    }
    let s = tail.stats();
    assert_eq!(s.traces_received, TRACES);
    assert_eq!(s.spans_received, 2 * TRACES);
    assert_eq!(s.kept + s.dropped + s.buffered_traces, s.traces_received);
    assert_eq!(
        s.spans_kept + s.spans_dropped + s.buffered_spans,
        s.spans_received
    );
    // What was pushed out was decided early, none silently lost.
    assert_eq!(s.evicted, s.kept + s.dropped);
    assert_eq!(s.decided_early, s.evicted);
    assert!(s.evicted >= TRACES - MAX_TRACES, "{s:?}");

    // The roots end: those of decided traces follow the decision, the others are decided.
    for i in 0..TRACES {
        tail.on_end(span(i, 1, 0, false));
    }
    tail.force_flush().unwrap();
    let s = tail.stats();
    assert_eq!((s.buffered_traces, s.buffered_spans), (0, 0));
    assert_eq!(s.kept + s.dropped, TRACES);
    assert_eq!(s.spans_kept + s.spans_dropped, 3 * TRACES);

    // Every failed trace was kept, whole, with the reason on its root, though most were
    // decided on their children alone; of the others about 1 %, exactly those in the ratio.
    let kept = out.0.lock().unwrap();
    let mut fallback = 0;
    for i in 0..TRACES {
        let id = trace_id(i);
        let should = i % 10 == 0 || sampled_by_ratio(id, 0.01);
        let Some(spans) = kept.get(&id) else {
            assert!(!should, "trace {i} was dropped");
            continue;
        };
        assert!(should, "trace {i} was kept");
        assert_eq!(spans.len(), 3, "trace {i}");
        let ids: HashSet<_> = spans.iter().map(|s| s.span_context.span_id()).collect();
        assert_eq!(ids.len(), 3);
        let root = spans
            .iter()
            .find(|s| s.parent_span_id == SpanId::INVALID)
            .unwrap();
        let reason = root
            .attributes
            .iter()
            .find(|kv| kv.key.as_str() == "llmtrace.sampling.reason")
            .map(|kv| kv.value.as_str().into_owned());
        if i % 10 == 0 {
            assert_eq!(reason.as_deref(), Some("error"));
        } else {
            assert_eq!(reason.as_deref(), Some("fallback"));
            fallback += 1;
        }
    }
    // 1 % of 90 000 is 900 (σ ≈ 30).
    assert!((700..=1100).contains(&fallback), "{fallback}");
    assert_eq!(kept.len() as u64, s.kept);
}
