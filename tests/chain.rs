//! Three hops, one trace: axum → ClientLayer → axum → ClientLayer → tonic.

use axum::body::Body;
use http_body_util::BodyExt;
use llmtrace_test_support::*;
use opentelemetry::trace::{SpanKind, TraceId};

#[tokio::test]
async fn three_services_form_one_trace_with_correct_parents() {
    let rec = Recorder::new();
    let chain = llmtrace_examples::chain::start(rec.tracer()).await;

    let caller_trace = "0af7651916cd43dd8448eb211c80319c";
    let caller_span = "b7ad6b7169203331";
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Body>();
    let response = client
        .request(
            http::Request::post(format!("http://{}/chat", chain.front))
                .header("traceparent", format!("00-{caller_trace}-{caller_span}-01"))
                .header("tracestate", "vendor=opaque")
                .body(Body::from("hello"))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "echo from demo-1: hello");

    let spans = rec.wait_for(5).await;
    assert_eq!(spans.len(), 5, "{:?}", names(&spans));
    let front = span(&spans, "POST /chat");
    let front_client = spans
        .iter()
        .find(|s| s.name == "POST" && s.span_kind == SpanKind::Client)
        .expect("front's client span");
    let middle = span(&spans, "POST /v1/complete");
    let middle_client = spans
        .iter()
        .find(|s| {
            s.name == "llmtrace.demo.v1.Completions/Complete" && s.span_kind == SpanKind::Client
        })
        .expect("middle's gRPC client span");
    let backend = spans
        .iter()
        .find(|s| {
            s.name == "llmtrace.demo.v1.Completions/Complete" && s.span_kind == SpanKind::Server
        })
        .expect("backend's gRPC server span");

    let trace = TraceId::from_hex(caller_trace).unwrap();
    for s in &spans {
        assert_eq!(
            s.span_context.trace_id(),
            trace,
            "{} left the trace",
            s.name
        );
        assert_eq!(
            s.span_context.trace_state().header(),
            "vendor=opaque",
            "{} lost tracestate",
            s.name
        );
    }
    assert_eq!(front.span_kind, SpanKind::Server);
    assert_eq!(front.parent_span_id.to_string(), caller_span);
    assert_eq!(front_client.parent_span_id, front.span_context.span_id());
    assert_eq!(middle.parent_span_id, front_client.span_context.span_id());
    assert!(middle.parent_span_is_remote);
    assert_eq!(middle_client.parent_span_id, middle.span_context.span_id());
    assert_eq!(backend.parent_span_id, middle_client.span_context.span_id());
    assert!(backend.parent_span_is_remote);

    // Every span is contained in its parent's time.
    for (parent, child) in [
        (front, front_client),
        (front_client, middle),
        (middle, middle_client),
        (middle_client, backend),
    ] {
        assert!(
            child.start_time >= parent.start_time,
            "{} starts before {}",
            child.name,
            parent.name
        );
        assert!(
            child.end_time <= parent.end_time,
            "{} ends after {}",
            child.name,
            parent.name
        );
    }
    assert_eq!(attr_str(backend, "rpc.system").as_deref(), Some("grpc"));
    assert_eq!(
        attr_str(backend, "rpc.service").as_deref(),
        Some("llmtrace.demo.v1.Completions")
    );
    assert_eq!(attr_str(backend, "rpc.method").as_deref(), Some("Complete"));
    assert_eq!(attr_i64(backend, "rpc.grpc.status_code"), Some(0));
    assert_eq!(attr_i64(middle_client, "rpc.grpc.status_code"), Some(0));
    assert_eq!(
        attr_str(middle_client, "server.address").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        attr_str(front_client, "url.full"),
        Some(format!("http://{}/v1/complete", chain.middle))
    );
    rec.assert_each_ended_once();
}
