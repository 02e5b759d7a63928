//! The client layer: CLIENT spans, injected context, ends at body end / error / drop.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::BodyExt;
use llmtrace::ClientLayer;
use llmtrace_test_support::*;
use opentelemetry::Context;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer};
use tower::{Service, ServiceBuilder, ServiceExt};

type SeenHeaders = Arc<Mutex<Vec<HeaderMap>>>;

/// A fake upstream that records the headers it was sent.
fn upstream(
    status: StatusCode,
    chunks: usize,
) -> (
    impl Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future: Send> + Clone,
    SeenHeaders,
) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let svc = tower::service_fn(move |req: Request<Body>| {
        seen2.lock().unwrap().push(req.headers().clone());
        async move {
            let stream = futures::stream::unfold(0, move |i| async move {
                (i < chunks).then(|| (Ok::<_, std::io::Error>(Bytes::from_static(b"chunk")), i + 1))
            });
            Ok(Response::builder()
                .status(status)
                .body(Body::from_stream(stream))
                .unwrap())
        }
    });
    (svc, seen)
}

#[tokio::test]
async fn client_span_is_a_child_of_the_current_context_and_is_injected() {
    let rec = Recorder::new();
    let (svc, seen) = upstream(StatusCode::OK, 3);
    let client = ServiceBuilder::new()
        .layer(ClientLayer::new().with_tracer(rec.tracer()))
        .service(svc);

    let parent = rec.sdk_tracer().start("caller");
    let parent_cx = Context::current_with_span(parent);
    let parent_id = parent_cx.span().span_context().span_id();
    let response = {
        let _guard = parent_cx.clone().attach();
        client
            .clone()
            .oneshot(
                Request::post(
                    "https://user:pw@api.example.com/v1/chat/completions?api-key=s3cret&v=1",
                )
                .body(Body::empty())
                .unwrap(),
            )
            .await
            .unwrap()
    };
    assert_eq!(
        response.into_body().collect().await.unwrap().to_bytes(),
        "chunkchunkchunk"
    );
    parent_cx.span().end();

    let spans = rec.spans();
    let s = span(&spans, "POST");
    assert_eq!(s.span_kind, SpanKind::Client);
    assert_eq!(s.parent_span_id, parent_id);
    assert_eq!(
        attr_str(s, "server.address").as_deref(),
        Some("api.example.com")
    );
    assert_eq!(attr_i64(s, "server.port"), Some(443));
    assert_eq!(
        attr_str(s, "url.full").as_deref(),
        Some("https://api.example.com/v1/chat/completions?api-key=REDACTED&v=1")
    );
    assert_eq!(attr_i64(s, "http.response.body.size"), Some(15));

    let headers = seen.lock().unwrap();
    let traceparent = headers[0]["traceparent"].to_str().unwrap();
    assert_eq!(
        traceparent,
        format!(
            "00-{}-{}-01",
            s.span_context.trace_id(),
            s.span_context.span_id()
        ),
        "the upstream sees the CLIENT span as its parent"
    );
    rec.assert_each_ended_once();
}

#[tokio::test]
async fn every_hop_gets_a_new_parent_id() {
    let rec = Recorder::new();
    let (svc, seen) = upstream(StatusCode::OK, 0);
    let client = ServiceBuilder::new()
        .layer(ClientLayer::new().with_tracer(rec.tracer()))
        .service(svc);
    let cx = Context::current_with_span(rec.sdk_tracer().start("caller"));
    let _guard = cx.clone().attach();
    for _ in 0..3 {
        let res = client
            .clone()
            .oneshot(Request::get("http://up/x").body(Body::empty()).unwrap())
            .await
            .unwrap();
        res.into_body().collect().await.unwrap();
    }
    let headers = seen.lock().unwrap();
    let parents: std::collections::HashSet<_> = headers
        .iter()
        .map(|h| h["traceparent"].to_str().unwrap()[36..52].to_owned())
        .collect();
    assert_eq!(parents.len(), 3, "{headers:?}");
    let trace_ids: std::collections::HashSet<_> = headers
        .iter()
        .map(|h| h["traceparent"].to_str().unwrap()[3..35].to_owned())
        .collect();
    assert_eq!(trace_ids.len(), 1);
}

#[tokio::test]
async fn context_in_request_extensions_wins_over_the_current_one() {
    let rec = Recorder::new();
    let (svc, _) = upstream(StatusCode::OK, 0);
    let client = ServiceBuilder::new()
        .layer(ClientLayer::new().with_tracer(rec.tracer()))
        .service(svc);
    let explicit = Context::current_with_span(rec.sdk_tracer().start("explicit"));
    let explicit_id = explicit.span().span_context().span_id();
    let mut req = Request::get("http://up/x").body(Body::empty()).unwrap();
    req.extensions_mut().insert(explicit.clone());
    let res = client.oneshot(req).await.unwrap();
    res.into_body().collect().await.unwrap();
    let spans = rec.spans();
    assert_eq!(span(&spans, "GET").parent_span_id, explicit_id);
}

#[tokio::test]
async fn client_side_4xx_is_an_error() {
    let rec = Recorder::new();
    let (svc, _) = upstream(StatusCode::TOO_MANY_REQUESTS, 1);
    let client = ServiceBuilder::new()
        .layer(ClientLayer::new().with_tracer(rec.tracer()))
        .service(svc);
    let res = client
        .oneshot(Request::get("http://up/x").body(Body::empty()).unwrap())
        .await
        .unwrap();
    res.into_body().collect().await.unwrap();
    let spans = rec.spans();
    assert!(is_error(&spans[0]));
    assert_eq!(attr_str(&spans[0], "error.type").as_deref(), Some("429"));
}

#[tokio::test]
async fn dropping_the_response_body_early_is_an_abort() {
    let rec = Recorder::new();
    let (svc, _) = upstream(StatusCode::OK, 1000);
    let client = ServiceBuilder::new()
        .layer(ClientLayer::new().with_tracer(rec.tracer()))
        .service(svc);
    let res = client
        .oneshot(Request::get("http://up/x").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let mut body = res.into_body();
    body.frame().await.unwrap().unwrap();
    drop(body);
    let spans = rec.spans();
    assert_eq!(spans.len(), 1);
    assert!(is_error(&spans[0]));
    assert_eq!(
        attr(&spans[0], "llmtrace.aborted"),
        Some(&opentelemetry::Value::Bool(true))
    );
    rec.assert_each_ended_once();
}

#[tokio::test]
async fn transport_errors_end_the_span_with_the_error() {
    let rec = Recorder::new();
    let failing = tower::service_fn(|_req: Request<Body>| async {
        tokio::time::sleep(Duration::from_millis(1)).await;
        Err::<Response<Body>, _>(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "connection refused",
        ))
    });
    let client = ServiceBuilder::new()
        .layer(ClientLayer::new().with_tracer(rec.tracer()))
        .service(failing);
    let err = client
        .oneshot(Request::get("http://up/x").body(Body::empty()).unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    let spans = rec.spans();
    let Status::Error { description } = &spans[0].status else {
        panic!("{:?}", spans[0].status)
    };
    assert!(description.contains("connection refused"));
    assert_eq!(
        attr_str(&spans[0], "error.type").as_deref(),
        Some("connection_refused")
    );
    rec.assert_each_ended_once();
}

#[tokio::test]
async fn baggage_and_tracestate_of_the_current_context_are_injected() {
    use opentelemetry::baggage::BaggageExt;

    let rec = Recorder::new();
    let (svc, seen) = upstream(StatusCode::OK, 0);
    let client = ServiceBuilder::new()
        .layer(ClientLayer::new().with_tracer(rec.tracer()))
        .service(svc);
    let mut incoming = HeaderMap::new();
    incoming.insert(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            .parse()
            .unwrap(),
    );
    incoming.insert("tracestate", "vendor=abc,other=x".parse().unwrap());
    incoming.insert("baggage", "user_id=42,tier=gold;p=1".parse().unwrap());
    let cx = llmtrace::propagation::extract(&incoming);
    assert_eq!(cx.baggage().len(), 2);
    let _guard = cx.attach();
    let res = client
        .oneshot(Request::get("http://up/x").body(Body::empty()).unwrap())
        .await
        .unwrap();
    res.into_body().collect().await.unwrap();

    let headers = seen.lock().unwrap();
    assert_eq!(headers[0]["tracestate"], "vendor=abc,other=x");
    let baggage = headers[0]["baggage"].to_str().unwrap();
    let mut members: Vec<_> = baggage.split(',').collect();
    members.sort();
    assert_eq!(members, ["tier=gold;p=1", "user_id=42"]);
    assert!(
        headers[0]["traceparent"]
            .to_str()
            .unwrap()
            .starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-")
    );
}

#[tokio::test]
async fn a_status_classifier_can_say_a_429_is_not_an_error() {
    use llmtrace::layer::{ResponseStatus, StatusClass};
    let rec = Recorder::new();
    let layer = ClientLayer::new()
        .with_tracer(rec.tracer())
        .with_status_classifier(|s: &ResponseStatus| {
            if s.http == StatusCode::TOO_MANY_REQUESTS {
                StatusClass::Ok
            } else {
                s.client_default()
            }
        });
    for status in [StatusCode::TOO_MANY_REQUESTS, StatusCode::NOT_FOUND] {
        let (svc, _) = upstream(status, 1);
        let client = ServiceBuilder::new().layer(layer.clone()).service(svc);
        let response = client
            .oneshot(Request::get("http://up/x").body(Body::empty()).unwrap())
            .await
            .unwrap();
        response.into_body().collect().await.unwrap();
    }
    let spans = rec.spans();
    assert_eq!(spans.len(), 2);
    assert!(!is_error(&spans[0]), "{:?}", spans[0].status);
    assert!(attr(&spans[0], "error.type").is_none());
    assert_eq!(attr_i64(&spans[0], "http.response.status_code"), Some(429));
    assert!(is_error(&spans[1]));
    assert_eq!(attr_str(&spans[1], "error.type").as_deref(), Some("404"));
    rec.assert_each_ended_once();
}

#[tokio::test]
async fn with_tracer_provider_keeps_the_llmtrace_scope() {
    let rec = Recorder::new();
    let (svc, _) = upstream(StatusCode::OK, 1);
    let client = ServiceBuilder::new()
        .layer(ClientLayer::new().with_tracer_provider(&rec.provider))
        .service(svc);
    let response = client
        .oneshot(Request::get("http://up/x").body(Body::empty()).unwrap())
        .await
        .unwrap();
    response.into_body().collect().await.unwrap();
    let spans = rec.spans();
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].instrumentation_scope.name(), "llmtrace");
    assert_eq!(
        spans[0].instrumentation_scope.version(),
        Some(env!("CARGO_PKG_VERSION"))
    );
}

#[tokio::test]
async fn transport_errors_go_through_the_users_classifier_first() {
    use llmtrace::layer::ErrorRef;
    let rec = Recorder::new();
    let failing = tower::service_fn(|req: Request<Body>| async move {
        let kind = if req.uri().path() == "/dns" {
            std::io::ErrorKind::NotFound
        } else {
            std::io::ErrorKind::TimedOut
        };
        Err::<Response<Body>, _>(std::io::Error::new(kind, "failed"))
    });
    let client = ServiceBuilder::new()
        .layer(
            ClientLayer::new()
                .with_tracer(rec.tracer())
                .with_error_classifier(|e: &ErrorRef<'_>| {
                    let io = e.downcast_ref::<std::io::Error>()?;
                    (io.kind() == std::io::ErrorKind::NotFound)
                        .then_some(std::borrow::Cow::Borrowed("dns"))
                }),
        )
        .service(failing);
    for path in ["http://up/dns", "http://up/slow"] {
        let req = Request::get(path).body(Body::empty()).unwrap();
        assert!(client.clone().oneshot(req).await.is_err());
    }
    let spans = rec.spans();
    let types: Vec<_> = spans.iter().map(|s| attr_str(s, "error.type")).collect();
    assert_eq!(types, [Some("dns".to_owned()), Some("timeout".to_owned())]);
    rec.assert_each_ended_once();
}
