//! The server layer against real axum servers on loopback sockets.

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::{get, post};
use bytes::Bytes;
use http::{HeaderName, Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use llmtrace::ServerLayer;
use llmtrace_test_support::*;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer};
use opentelemetry_sdk::trace::Sampler;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;

const PARENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN: &str = "00f067aa0ba902b7";

fn client() -> Client<hyper_util::client::legacy::connect::HttpConnector, Body> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Ten chunks, `gap` apart.
fn ten_chunks(gap: Duration) -> Body {
    let stream = futures::stream::unfold(0u32, move |i| async move {
        if i == 10 {
            return None;
        }
        tokio::time::sleep(gap).await;
        Some((
            Ok::<_, Infallible>(Bytes::from(format!("data: chunk {i}\n\n"))),
            i + 1,
        ))
    });
    Body::from_stream(stream)
}

#[tokio::test]
async fn span_is_named_by_route_and_parented_by_traceparent() {
    let rec = Recorder::new();
    let app = Router::new()
        .route("/v1/models/{id}", get(|| async { "model" }))
        .layer(ServerLayer::new().with_tracer(rec.tracer()));
    let addr = serve(app).await;

    let req = Request::get(format!("http://{addr}/v1/models/gpt-4o?x=1"))
        .header("traceparent", format!("00-{PARENT_TRACE}-{PARENT_SPAN}-01"))
        .header("user-agent", "test-agent/1.0")
        .body(Body::empty())
        .unwrap();
    let res = client().request(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    res.into_body().collect().await.unwrap();

    let spans = rec.wait_for(1).await;
    let s = span(&spans, "GET /v1/models/{id}");
    assert_eq!(s.span_kind, SpanKind::Server);
    assert_eq!(s.span_context.trace_id().to_string(), PARENT_TRACE);
    assert_eq!(s.parent_span_id.to_string(), PARENT_SPAN);
    assert!(s.parent_span_is_remote);
    assert!(s.span_context.is_sampled());
    assert_eq!(attr_str(s, "http.request.method").as_deref(), Some("GET"));
    assert_eq!(
        attr_str(s, "http.route").as_deref(),
        Some("/v1/models/{id}")
    );
    assert_eq!(
        attr_str(s, "url.path").as_deref(),
        Some("/v1/models/gpt-4o")
    );
    assert_eq!(attr_str(s, "url.scheme").as_deref(), Some("http"));
    assert_eq!(attr_str(s, "server.address").as_deref(), Some("127.0.0.1"));
    assert_eq!(attr_i64(s, "server.port"), Some(i64::from(addr.port())));
    assert_eq!(
        attr_str(s, "network.protocol.version").as_deref(),
        Some("1.1")
    );
    assert_eq!(
        attr_str(s, "user_agent.original").as_deref(),
        Some("test-agent/1.0")
    );
    assert_eq!(attr_str(s, "client.address").as_deref(), Some("127.0.0.1"));
    assert_eq!(attr_i64(s, "http.response.status_code"), Some(200));
    assert_eq!(attr_i64(s, "http.response.body.size"), Some(5));
    assert_eq!(s.status, Status::Unset);
    rec.assert_each_ended_once();
}

#[tokio::test]
async fn no_route_means_method_only_never_the_raw_path() {
    let rec = Recorder::new();
    let app = Router::new()
        .route("/known", get(|| async { "ok" }))
        .layer(ServerLayer::new().with_tracer(rec.tracer()));
    let res = app
        .oneshot(Request::get("/unknown/12345").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    res.into_body().collect().await.unwrap();
    let spans = rec.spans();
    assert_eq!(names(&spans), ["GET"]);
    // 4xx is the caller's problem on the server side.
    assert_eq!(spans[0].status, Status::Unset);
    assert!(attr(&spans[0], "error.type").is_none());
    // A request without traceparent starts a new trace.
    assert_eq!(
        spans[0].parent_span_id,
        opentelemetry::trace::SpanId::INVALID
    );
}

#[tokio::test]
async fn streamed_body_keeps_the_span_open_until_the_last_chunk() {
    let rec = Recorder::new();
    let app = Router::new()
        .route(
            "/stream",
            get(|| async { ten_chunks(Duration::from_millis(50)) }),
        )
        .layer(ServerLayer::new().with_tracer(rec.tracer()));
    let addr = serve(app).await;

    let started = std::time::Instant::now();
    let res = client()
        .request(
            Request::get(format!("http://{addr}/stream"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    // The head arrives at once; the body takes 10 × 50 ms.
    let mut body = res.into_body();
    let mut chunks = 0;
    while let Some(frame) = body.frame().await {
        if frame.unwrap().is_data() {
            chunks += 1;
        }
    }
    let elapsed = started.elapsed();
    assert_eq!(chunks, 10);

    let spans = rec.wait_for(1).await;
    let s = span(&spans, "GET /stream");
    let d = duration(s);
    assert!(d >= Duration::from_millis(500), "span lasted {d:?}");
    assert!(
        d <= elapsed + Duration::from_millis(50),
        "span {d:?} outlived the client's {elapsed:?}"
    );
    assert_eq!(s.status, Status::Unset);
    assert!(attr(s, "llmtrace.aborted").is_none());
    assert_eq!(attr_i64(s, "http.response.body.size"), Some(10 * 15));
    rec.assert_each_ended_once();
}

#[tokio::test]
async fn client_disconnect_mid_stream_closes_the_span_as_aborted() {
    let rec = Recorder::new();
    let app = Router::new()
        .route(
            "/stream",
            get(|| async { ten_chunks(Duration::from_millis(50)) }),
        )
        .layer(ServerLayer::new().with_tracer(rec.tracer()));
    let addr = serve(app).await;

    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    socket
        .write_all(b"GET /stream HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    // Read until the first chunk is there, then hang up.
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&seen).contains("chunk 0") {
        let n = socket.read(&mut buf).await.unwrap();
        assert!(n > 0, "server closed early");
        seen.extend_from_slice(&buf[..n]);
    }
    drop(socket);

    let spans = rec.wait_for(1).await;
    let s = span(&spans, "GET /stream");
    assert!(is_error(s), "status {:?}", s.status);
    assert_eq!(
        attr(s, "llmtrace.aborted"),
        Some(&opentelemetry::Value::Bool(true))
    );
    assert_eq!(attr_str(s, "error.type").as_deref(), Some("aborted"));
    assert_eq!(attr_i64(s, "http.response.status_code"), Some(200));
    assert!(
        duration(s) < Duration::from_millis(500),
        "the span should end when the client leaves"
    );
    // Give the server time to notice anything else; the span must not end again.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(rec.spans().len(), 1);
    rec.assert_each_ended_once();
}

#[tokio::test]
async fn dropping_the_response_future_before_the_head_is_an_abort() {
    let rec = Recorder::new();
    let svc = ServerLayer::new()
        .with_tracer(rec.tracer())
        .layer_service(tower::service_fn(|_req: Request<Body>| async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            Ok::<_, Infallible>(http::Response::new(Body::empty()))
        }));
    let fut = svc.oneshot(Request::get("/slow").body(Body::empty()).unwrap());
    let _ = tokio::time::timeout(Duration::from_millis(20), fut).await;
    let spans = rec.spans();
    assert_eq!(spans.len(), 1);
    assert!(is_error(&spans[0]));
    assert!(attr(&spans[0], "http.response.status_code").is_none());
    assert_eq!(
        attr_str(&spans[0], "error.type").as_deref(),
        Some("aborted")
    );
    rec.assert_each_ended_once();
}

trait LayerExt {
    fn layer_service<S>(self, svc: S) -> llmtrace::layer::ServerService<S>;
}
impl LayerExt for ServerLayer {
    fn layer_service<S>(self, svc: S) -> llmtrace::layer::ServerService<S> {
        tower::Layer::layer(&self, svc)
    }
}

#[tokio::test]
async fn server_errors_and_body_errors_mark_the_span() {
    let rec = Recorder::new();
    let app = Router::new()
        .route(
            "/boom",
            get(|| async { (StatusCode::BAD_GATEWAY, "upstream down") }),
        )
        .route(
            "/broken",
            get(|| async {
                let stream = futures::stream::iter(vec![
                    Ok(Bytes::from_static(b"partial")),
                    Err(std::io::Error::other("producer failed")),
                ]);
                Body::from_stream(stream)
            }),
        )
        .layer(ServerLayer::new().with_tracer(rec.tracer()));

    let res = app
        .clone()
        .oneshot(Request::get("/boom").body(Body::empty()).unwrap())
        .await
        .unwrap();
    res.into_body().collect().await.unwrap();
    let res = app
        .oneshot(Request::get("/broken").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert!(res.into_body().collect().await.is_err());

    let spans = rec.spans();
    let boom = span(&spans, "GET /boom");
    assert!(is_error(boom));
    assert_eq!(attr_str(boom, "error.type").as_deref(), Some("502"));
    let broken = span(&spans, "GET /broken");
    assert!(is_error(broken));
    let Status::Error { description } = &broken.status else {
        unreachable!()
    };
    assert!(description.contains("producer failed"), "{description}");
    // An `io::Error` of kind `Other` wrapping a message: nothing a bounded label can say.
    assert_eq!(attr_str(broken, "error.type").as_deref(), Some("_OTHER"));
    assert!(attr(broken, "llmtrace.aborted").is_none());
    rec.assert_each_ended_once();
}

#[tokio::test]
async fn handler_spans_nest_under_the_server_span_via_the_otel_api() {
    let rec = Recorder::new();
    let tracer = rec.sdk_tracer();
    let app = Router::new()
        .route(
            "/work",
            post(move || {
                let tracer = tracer.clone();
                async move {
                    // Created after an await point: the context must be attached on every poll.
                    tokio::task::yield_now().await;
                    let span = tracer.start("handler work");
                    let _cx = opentelemetry::Context::current_with_span(span);
                    "done"
                }
            }),
        )
        .layer(ServerLayer::new().with_tracer(rec.tracer()));
    let res = app
        .oneshot(Request::post("/work").body(Body::empty()).unwrap())
        .await
        .unwrap();
    res.into_body().collect().await.unwrap();

    let spans = rec.spans();
    let server = span(&spans, "POST /work");
    let child = span(&spans, "handler work");
    assert_eq!(child.parent_span_id, server.span_context.span_id());
    assert_eq!(
        child.span_context.trace_id(),
        server.span_context.trace_id()
    );
}

#[tokio::test(flavor = "current_thread")]
async fn handler_spans_nest_under_the_server_span_via_tracing() {
    use tracing::Instrument;
    use tracing_subscriber::layer::SubscriberExt;

    let rec = Recorder::new();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(rec.sdk_tracer()));
    let _default = tracing::subscriber::set_default(subscriber);

    let app = Router::new()
        .route(
            "/work",
            post(|| async {
                async {
                    tokio::task::yield_now().await;
                    tracing::info!("inside");
                }
                .instrument(tracing::info_span!("db.query"))
                .await;
                "done"
            }),
        )
        .layer(ServerLayer::new().with_tracer(rec.tracer()));
    let res = app
        .oneshot(Request::post("/work").body(Body::empty()).unwrap())
        .await
        .unwrap();
    res.into_body().collect().await.unwrap();

    let spans = rec.spans();
    let server = span(&spans, "POST /work");
    let child = span(&spans, "db.query");
    assert_eq!(child.parent_span_id, server.span_context.span_id());
    assert_eq!(
        child.span_context.trace_id(),
        server.span_context.trace_id()
    );
}

#[tokio::test]
async fn skipped_paths_create_no_span() {
    let rec = Recorder::new();
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/work", get(|| async { "ok" }))
        .layer(
            ServerLayer::new()
                .with_tracer(rec.tracer())
                .skip_paths(["/healthz"]),
        );
    for path in ["/healthz", "/work", "/healthz"] {
        let res = app
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        res.into_body().collect().await.unwrap();
    }
    assert_eq!(names(&rec.spans()), ["GET /work"]);
}

#[tokio::test]
async fn captured_headers_never_leak_credentials() {
    let rec = Recorder::new();
    let app = Router::new()
        .route(
            "/v1/chat/completions",
            post(|| async {
                (
                    [("x-ratelimit-remaining", "99"), ("set-cookie", "s=secret")],
                    "ok",
                )
            }),
        )
        .layer(
            ServerLayer::new()
                .with_tracer(rec.tracer())
                .capture_request_headers([
                    HeaderName::from_static("authorization"),
                    HeaderName::from_static("x-api-key"),
                    HeaderName::from_static("x-tenant"),
                    HeaderName::from_static("x-internal-token"),
                ])
                .capture_response_headers([
                    HeaderName::from_static("x-ratelimit-remaining"),
                    HeaderName::from_static("set-cookie"),
                ])
                .redact_headers([HeaderName::from_static("x-internal-token")]),
        );
    let res = app
        .oneshot(
            Request::post("/v1/chat/completions")
                .header("authorization", "Bearer sk-live-123")
                .header("x-api-key", "sk-ant-456")
                .header("x-tenant", "acme")
                .header("x-internal-token", "tok-789")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    res.into_body().collect().await.unwrap();
    let spans = rec.spans();
    let s = &spans[0];
    let everything = format!("{:?}", s.attributes);
    for secret in ["sk-live-123", "sk-ant-456", "tok-789", "s=secret"] {
        assert!(
            !everything.contains(secret),
            "{secret} leaked: {everything}"
        );
    }
    assert!(everything.contains("acme"));
    assert!(attr(s, "http.request.header.authorization").is_some());
    assert!(attr(s, "http.response.header.x-ratelimit-remaining").is_some());
}

#[tokio::test]
async fn traceresponse_names_the_server_span() {
    let rec = Recorder::new();
    let app = Router::new().route("/x", get(|| async { "ok" })).layer(
        ServerLayer::new()
            .with_tracer(rec.tracer())
            .traceresponse(true),
    );
    let res = app
        .oneshot(
            Request::get("/x")
                .header("traceparent", format!("00-{PARENT_TRACE}-{PARENT_SPAN}-01"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let header = res.headers()["traceresponse"].to_str().unwrap().to_owned();
    res.into_body().collect().await.unwrap();
    let spans = rec.spans();
    let sc = &spans[0].span_context;
    assert_eq!(header, format!("00-{}-{}-01", sc.trace_id(), sc.span_id()));
    assert_eq!(sc.trace_id().to_string(), PARENT_TRACE);
}

#[tokio::test]
async fn unsampled_requests_still_propagate_and_export_nothing() {
    let rec = Recorder::with_sampler(Sampler::AlwaysOff);
    let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
    let seen2 = seen.clone();
    let app = Router::new()
        .route(
            "/x",
            get(move || {
                let seen = seen2.clone();
                async move {
                    let cx = opentelemetry::Context::current();
                    *seen.lock().unwrap() = Some(cx.span().span_context().clone());
                    "ok"
                }
            }),
        )
        .layer(ServerLayer::new().with_tracer(rec.tracer()));
    let res = app
        .oneshot(Request::get("/x").body(Body::empty()).unwrap())
        .await
        .unwrap();
    res.into_body().collect().await.unwrap();
    assert!(rec.spans().is_empty());
    let sc = seen.lock().unwrap().clone().unwrap();
    assert!(
        sc.is_valid(),
        "the handler still sees a valid (unsampled) span context"
    );
    assert!(!sc.is_sampled());
    rec.assert_each_ended_once();
}

#[tokio::test]
async fn a_panicking_handler_ends_the_span_once_as_a_panic() {
    let rec = Recorder::new();
    let svc = ServerLayer::new()
        .with_tracer(rec.tracer())
        .layer_service(tower::service_fn(|_req: Request<Body>| async {
            tokio::task::yield_now().await;
            if true {
                panic!("handler bug");
            }
            Ok::<_, Infallible>(http::Response::new(Body::empty()))
        }));
    let joined = tokio::spawn(svc.oneshot(Request::get("/p").body(Body::empty()).unwrap())).await;
    assert!(joined.unwrap_err().is_panic());
    let spans = rec.spans();
    assert_eq!(spans.len(), 1);
    assert!(is_error(&spans[0]));
    assert_eq!(attr_str(&spans[0], "error.type").as_deref(), Some("panic"));
    rec.assert_each_ended_once();
}

/// Level 2: a trace we start has a random trace id, so what we send on carries the random
/// flag; a received trace keeps the caller's flags.
#[tokio::test]
async fn random_flag_is_set_on_new_traces_and_kept_on_received_ones() {
    use llmtrace::ClientLayer;
    use std::sync::{Arc, Mutex};

    let rec = Recorder::new();
    let sent = Arc::new(Mutex::new(Vec::<String>::new()));
    let sent2 = sent.clone();
    let upstream = tower::service_fn(move |req: Request<Body>| {
        sent2
            .lock()
            .unwrap()
            .push(req.headers()["traceparent"].to_str().unwrap().to_owned());
        async { Ok::<_, Infallible>(http::Response::new(Body::empty())) }
    });
    let client = tower::ServiceBuilder::new()
        .layer(ClientLayer::new().with_tracer(rec.tracer()))
        .service(upstream);
    let app = Router::new()
        .route(
            "/hop",
            get(move || {
                let client = client.clone();
                async move {
                    let res = client
                        .oneshot(Request::get("http://next/").body(Body::empty()).unwrap())
                        .await
                        .unwrap();
                    res.into_body().collect().await.unwrap();
                    "ok"
                }
            }),
        )
        .layer(ServerLayer::new().with_tracer(rec.tracer()));

    for traceparent in [
        None,
        Some(format!("00-{PARENT_TRACE}-{PARENT_SPAN}-01")),
        Some(format!("00-{PARENT_TRACE}-{PARENT_SPAN}-03")),
    ] {
        let mut req = Request::get("/hop");
        if let Some(tp) = &traceparent {
            req = req.header("traceparent", tp);
        }
        let res = app
            .clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        res.into_body().collect().await.unwrap();
    }
    let sent = sent.lock().unwrap();
    assert!(
        sent[0].ends_with("-03"),
        "new trace: sampled + random, got {}",
        sent[0]
    );
    assert!(!sent[0].contains(PARENT_TRACE));
    assert!(
        sent[1].starts_with(&format!("00-{PARENT_TRACE}-")) && sent[1].ends_with("-01"),
        "{}",
        sent[1]
    );
    assert!(sent[2].ends_with("-03"), "{}", sent[2]);
    // A new parent id on every hop.
    assert!(!sent[1].contains(PARENT_SPAN) && !sent[2].contains(PARENT_SPAN));
}

#[tokio::test]
async fn client_strings_on_the_span_are_bounded() {
    use llmtrace::limits::{
        MAX_ADDRESS_BYTES, MAX_HEADER_VALUE_BYTES, MAX_HEADER_VALUES, MAX_URL_BYTES,
        MAX_USER_AGENT_BYTES, TRUNCATED_MARKER,
    };

    let rec = Recorder::new();
    let app = Router::new()
        .route("/{*rest}", get(|| async { "ok" }))
        .layer(
            ServerLayer::new()
                .with_tracer(rec.tracer())
                .capture_request_headers([HeaderName::from_static("x-tenant")]),
        );
    let long = "a".repeat(10_000);
    let mut req = Request::get(format!("/{long}"))
        .header("host", format!("{long}.example.com"))
        .header("user-agent", &long)
        .header("x-forwarded-for", format!("{long}, 10.0.0.1"));
    for _ in 0..100 {
        req = req.header("x-tenant", &long);
    }
    let res = app.oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
    res.into_body().collect().await.unwrap();
    let spans = rec.spans();
    let s = &spans[0];
    for (key, max) in [
        ("url.path", MAX_URL_BYTES),
        ("user_agent.original", MAX_USER_AGENT_BYTES),
        ("server.address", MAX_ADDRESS_BYTES),
        ("client.address", MAX_ADDRESS_BYTES),
    ] {
        let value = attr_str(s, key).unwrap_or_else(|| panic!("{key} missing"));
        assert!(value.len() <= max, "{key}: {} bytes", value.len());
        assert!(value.ends_with(TRUNCATED_MARKER), "{key}");
    }
    let Some(opentelemetry::Value::Array(opentelemetry::Array::String(tenants))) =
        attr(s, "http.request.header.x-tenant")
    else {
        panic!("x-tenant not captured");
    };
    assert_eq!(tenants.len(), MAX_HEADER_VALUES);
    assert!(
        tenants
            .iter()
            .all(|t| t.as_str().len() <= MAX_HEADER_VALUE_BYTES)
    );
}

#[test]
fn a_route_given_by_hand_is_bounded_in_the_name_too() {
    use llmtrace::layer::{InboundRequest, InboundSpan};
    use llmtrace::limits::{MAX_NAME_BYTES, MAX_URL_BYTES};

    let rec = Recorder::new();
    let tracer = opentelemetry::global::BoxedTracer::new(Box::new(rec.sdk_tracer()));
    let route = format!("/{}", "r".repeat(10_000));
    let method = http::Method::from_bytes("M".repeat(1000).as_bytes()).unwrap();
    let uri = http::Uri::from_static("/x");
    let headers = http::HeaderMap::new();
    let request = InboundRequest {
        method: &method,
        uri: &uri,
        version: http::Version::HTTP_11,
        headers: &headers,
        route: Some(&route),
        peer: None,
        business: None,
    };
    let span = InboundSpan::start(&tracer, &request, &opentelemetry::Context::new(), None);
    span.end(llmtrace::genai::End::Complete);
    let spans = rec.spans();
    let s = &spans[0];
    assert!(attr_str(s, "http.route").unwrap().len() <= MAX_URL_BYTES);
    assert!(
        s.name.len() <= "_OTHER ".len() + MAX_URL_BYTES,
        "{}",
        s.name.len()
    );
    assert!(attr_str(s, "http.request.method_original").unwrap().len() <= MAX_NAME_BYTES);
}

#[test]
fn details_recorded_at_the_end_make_the_same_span_as_details_recorded_at_the_start() {
    use llmtrace::layer::{InboundRequest, InboundSpan};

    let rec = Recorder::new();
    let tracer = opentelemetry::global::BoxedTracer::new(Box::new(rec.sdk_tracer()));
    let method = http::Method::POST;
    let uri = http::Uri::from_static("http://gw.example:8443/v1/chat/completions?x=1");
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::USER_AGENT,
        "OpenAI/Python 2.8.1".parse().unwrap(),
    );
    headers.insert("x-forwarded-for", "203.0.113.9".parse().unwrap());
    let request = InboundRequest {
        method: &method,
        uri: &uri,
        version: http::Version::HTTP_2,
        headers: &headers,
        route: Some("/v1/chat/completions"),
        peer: Some("192.0.2.7:50123".parse().unwrap()),
        business: None,
    };
    let parent = opentelemetry::Context::new();
    let mut at_start = InboundSpan::start(&tracer, &request, &parent, None);
    at_start.on_response_head(StatusCode::OK, &http::HeaderMap::new());
    at_start.end(llmtrace::genai::End::Complete);
    assert!(!at_start_wants(&request, &parent));
    let mut later = InboundSpan::start_without_details(&tracer, &request, &parent, None, None);
    later.on_response_head(StatusCode::OK, &http::HeaderMap::new());
    assert!(later.wants_request_details());
    let extra = opentelemetry::KeyValue::new("http.request.header.x-request-id", "req-1");
    later.record_request_details(&request, Some(extra.clone()));
    assert!(!later.wants_request_details());
    // A second call records nothing more.
    later.record_request_details(&request, Some(extra));
    later.end(llmtrace::genai::End::Complete);

    let spans = rec.spans();
    assert_eq!(spans.len(), 2);
    let sorted = |s: &opentelemetry_sdk::trace::SpanData| {
        let mut attributes: Vec<(String, String)> = s
            .attributes
            .iter()
            .map(|kv| (kv.key.to_string(), kv.value.to_string()))
            .collect();
        attributes.sort();
        attributes
    };
    let mut expected = sorted(&spans[0]);
    expected.push((
        "http.request.header.x-request-id".to_owned(),
        "req-1".to_owned(),
    ));
    expected.sort();
    assert_eq!(sorted(&spans[1]), expected);
    assert!(expected.len() > 12, "{expected:?}");
    for key in [
        "url.path",
        "server.address",
        "user_agent.original",
        "network.peer.address",
        "client.address",
        "network.protocol.version",
    ] {
        assert!(attr_str(&spans[1], key).is_some(), "{key} missing");
    }
    assert_eq!(spans[0].name, spans[1].name);
    assert_eq!(spans[0].status, spans[1].status);

    // An untraced request wants nothing recorded.
    let untraced = InboundSpan::untraced(&request, &parent);
    assert!(!untraced.wants_request_details());

    // Without the details recorded, the span still ends, without them.
    let forgotten = InboundSpan::start_without_details(&tracer, &request, &parent, None, None);
    forgotten.end(llmtrace::genai::End::Complete);
    let spans = rec.spans();
    assert_eq!(spans.len(), 3);
    assert!(attr_str(&spans[2], "url.path").is_none());
    assert!(attr_str(&spans[2], "http.route").is_some());
}

/// A span started with its details never wants them again.
fn at_start_wants(
    request: &llmtrace::layer::InboundRequest<'_>,
    parent: &opentelemetry::Context,
) -> bool {
    let rec = Recorder::new();
    let tracer = opentelemetry::global::BoxedTracer::new(Box::new(rec.sdk_tracer()));
    let span = llmtrace::layer::InboundSpan::start(&tracer, request, parent, None);
    assert!(span.context().unwrap().span().is_recording());
    let wants = span.wants_request_details();
    span.end(llmtrace::genai::End::Complete);
    wants
}

/// A hyper- or tonic-style service: no axum router, so no `MatchedPath`.
fn plain_service(
    status: StatusCode,
) -> impl tower::Service<
    Request<Body>,
    Response = http::Response<Body>,
    Error = Infallible,
    Future: Send,
> + Clone {
    tower::service_fn(move |_req: Request<Body>| async move {
        Ok::<_, Infallible>(
            http::Response::builder()
                .status(status)
                .body(Body::from("body"))
                .unwrap(),
        )
    })
}

#[tokio::test]
async fn a_route_extractor_names_spans_of_services_without_axum_routing() {
    let rec = Recorder::new();
    let layer =
        ServerLayer::new()
            .with_tracer(rec.tracer())
            .with_route(|parts: &http::request::Parts| {
                parts
                    .uri
                    .path()
                    .starts_with("/users/")
                    .then_some(std::borrow::Cow::Borrowed("/users/{id}"))
            });
    let svc = layer.layer_service(plain_service(StatusCode::OK));
    for path in ["/users/42", "/other"] {
        let res = svc
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        res.into_body().collect().await.unwrap();
    }
    let spans = rec.spans();
    assert_eq!(names(&spans), ["GET /users/{id}", "GET"]);
    assert_eq!(
        attr_str(&spans[0], "http.route").as_deref(),
        Some("/users/{id}")
    );
    assert!(attr(&spans[1], "http.route").is_none());
    rec.assert_each_ended_once();
}

#[tokio::test]
async fn matched_path_still_names_the_route_when_the_extractor_does_not() {
    let rec = Recorder::new();
    let app = Router::new()
        .route("/v1/models/{id}", get(|| async { "model" }))
        .layer(
            ServerLayer::new()
                .with_tracer(rec.tracer())
                .with_route(|_: &http::request::Parts| None),
        );
    let res = app
        .oneshot(Request::get("/v1/models/x").body(Body::empty()).unwrap())
        .await
        .unwrap();
    res.into_body().collect().await.unwrap();
    let spans = rec.spans();
    assert_eq!(names(&spans), ["GET /v1/models/{id}"]);
    rec.assert_each_ended_once();
}

#[tokio::test]
async fn a_status_classifier_decides_which_responses_are_errors() {
    use llmtrace::layer::{ResponseStatus, StatusClass};
    let rec = Recorder::new();
    let layer = ServerLayer::new()
        .with_tracer(rec.tracer())
        .with_status_classifier(|s: &ResponseStatus| match s.http.as_u16() {
            503 => StatusClass::Ok,
            429 => StatusClass::Error("rate_limited".into()),
            _ => s.server_default(),
        });
    for status in [503, 429, 500, 404] {
        let svc = layer
            .clone()
            .layer_service(plain_service(StatusCode::from_u16(status).unwrap()));
        let res = svc
            .oneshot(Request::get("/x").body(Body::empty()).unwrap())
            .await
            .unwrap();
        res.into_body().collect().await.unwrap();
    }
    let spans = rec.spans();
    assert_eq!(spans.len(), 4);
    let outcome: Vec<_> = spans
        .iter()
        .map(|s| (is_error(s), attr_str(s, "error.type")))
        .collect();
    assert_eq!(
        outcome,
        [
            (false, None),
            (true, Some("rate_limited".to_owned())),
            (true, Some("500".to_owned())),
            (false, None),
        ]
    );
    rec.assert_each_ended_once();
}

#[tokio::test]
async fn with_tracer_provider_keeps_the_llmtrace_scope() {
    let rec = Recorder::new();
    let svc = ServerLayer::new()
        .with_tracer_provider(&rec.provider)
        .layer_service(plain_service(StatusCode::OK));
    let res = svc
        .oneshot(Request::get("/x").body(Body::empty()).unwrap())
        .await
        .unwrap();
    res.into_body().collect().await.unwrap();
    let spans = rec.spans();
    assert_eq!(spans.len(), 1);
    let scope = &spans[0].instrumentation_scope;
    assert_eq!(scope.name(), "llmtrace");
    assert_eq!(scope.version(), Some(env!("CARGO_PKG_VERSION")));
}

#[tokio::test]
async fn errors_are_named_by_known_types_or_the_users_classifier() {
    use llmtrace::layer::ErrorRef;
    #[derive(Debug)]
    struct Quota;
    impl std::fmt::Display for Quota {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("quota exceeded")
        }
    }
    impl std::error::Error for Quota {}

    let rec = Recorder::new();
    let failing = |error: fn() -> tower::BoxError| {
        tower::service_fn(move |_req: Request<Body>| async move {
            Err::<http::Response<Body>, _>(error())
        })
    };
    let layer = ServerLayer::new()
        .with_tracer(rec.tracer())
        .with_error_classifier(|e: &ErrorRef<'_>| {
            e.downcast_ref::<Quota>()
                .map(|_| std::borrow::Cow::Borrowed("quota"))
        });
    let errors: [fn() -> tower::BoxError; 3] = [
        || Box::new(Quota),
        || Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
        || "something odd".into(),
    ];
    for error in errors {
        let svc = layer.clone().layer_service(failing(error));
        let req = Request::get("/x").body(Body::empty()).unwrap();
        assert!(svc.oneshot(req).await.is_err());
    }
    let spans = rec.spans();
    let types: Vec<_> = spans.iter().map(|s| attr_str(s, "error.type")).collect();
    assert_eq!(
        types,
        [
            Some("quota".to_owned()),
            Some("connection_reset".to_owned()),
            Some("_OTHER".to_owned()),
        ]
    );
    assert!(spans.iter().all(is_error));
    rec.assert_each_ended_once();
}

#[tokio::test]
async fn a_body_error_is_named_by_its_io_kind() {
    let rec = Recorder::new();
    let app = Router::new()
        .route(
            "/reset",
            get(|| async {
                let stream = futures::stream::iter(vec![
                    Ok(Bytes::from_static(b"partial")),
                    Err(std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
                ]);
                Body::from_stream(stream)
            }),
        )
        .layer(ServerLayer::new().with_tracer(rec.tracer()));
    let res = app
        .oneshot(Request::get("/reset").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert!(res.into_body().collect().await.is_err());
    let spans = rec.spans();
    assert_eq!(spans.len(), 1);
    assert!(is_error(&spans[0]));
    assert_eq!(
        attr_str(&spans[0], "error.type").as_deref(),
        Some("connection_reset")
    );
    rec.assert_each_ended_once();
}

/// A handler that answers with the trace id and the `tenant` baggage it runs under.
async fn context_seen() -> String {
    use opentelemetry::baggage::BaggageExt;
    let cx = opentelemetry::Context::current();
    let tenant = cx.baggage().get("tenant").map(|v| v.to_string());
    format!(
        "{} {}",
        cx.span().span_context().trace_id(),
        tenant.unwrap_or_default()
    )
}

#[tokio::test]
async fn at_the_edge_the_callers_trace_is_linked_or_ignored_unless_trusted() {
    use llmtrace::driver::Incoming;
    use opentelemetry::trace::SpanId;

    // (mode, a trusted caller, continued, linked)
    for (mode, trusted, continued, linked) in [
        (Incoming::Trust, false, true, false),
        (Incoming::Link, false, false, true),
        (Incoming::Ignore, false, false, false),
        (Incoming::Link, true, true, false),
        (Incoming::Ignore, true, true, false),
    ] {
        let case = format!("{mode} trusted={trusted}");
        let rec = Recorder::new();
        let app = Router::new().route("/chat", post(context_seen)).layer(
            ServerLayer::new()
                .with_tracer(rec.tracer())
                .with_incoming(mode)
                .trust_when(|parts: &http::request::Parts| {
                    parts.headers.contains_key("x-internal-caller")
                }),
        );
        let mut req = Request::post("/chat")
            .header("traceparent", format!("00-{PARENT_TRACE}-{PARENT_SPAN}-01"))
            .header("tracestate", "caller=1")
            .header("baggage", "tenant=acme");
        if trusted {
            req = req.header("x-internal-caller", "1");
        }
        let res = app.oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
        let seen = res.into_body().collect().await.unwrap().to_bytes();
        let seen = String::from_utf8(seen.to_vec()).unwrap();

        let spans = rec.wait_for(1).await;
        let s = &spans[0];
        let trace_id = s.span_context.trace_id().to_string();
        // The handler runs in the server span's trace, with the caller's baggage in every mode.
        assert_eq!(seen, format!("{trace_id} acme"), "{case}");
        if continued {
            assert_eq!(trace_id, PARENT_TRACE, "{case}");
            assert_eq!(s.parent_span_id.to_string(), PARENT_SPAN, "{case}");
        } else {
            assert_ne!(trace_id, PARENT_TRACE, "{case}");
            assert_eq!(s.parent_span_id, SpanId::INVALID, "{case}");
        }
        let links: Vec<String> = s
            .links
            .iter()
            .map(|l| format!("{}-{}", l.span_context.trace_id(), l.span_context.span_id()))
            .collect();
        let expected: Vec<String> = if linked {
            vec![format!("{PARENT_TRACE}-{PARENT_SPAN}")]
        } else {
            Vec::new()
        };
        assert_eq!(links, expected, "{case}");
        rec.assert_each_ended_once();
    }
}

#[tokio::test]
async fn a_spoofed_sampled_flag_starts_no_recording_at_the_edge_but_a_loopback_peer_is_trusted() {
    use llmtrace::driver::Incoming;

    // Recorded only when a caller's sampled flag says so.
    let rec = Recorder::with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOff)));
    let layer = |loopback_trusted: bool| {
        ServerLayer::new()
            .with_tracer(rec.tracer())
            .with_incoming(Incoming::Link)
            .trust_when(move |parts: &http::request::Parts| {
                loopback_trusted
                    && parts
                        .extensions
                        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                        .is_some_and(|c| c.0.ip().is_loopback())
            })
    };
    for loopback_trusted in [false, true] {
        let app = Router::new()
            .route("/chat", post(context_seen))
            .layer(layer(loopback_trusted));
        let addr = serve(app).await;
        let req = Request::post(format!("http://{addr}/chat"))
            .header("traceparent", format!("00-{PARENT_TRACE}-{PARENT_SPAN}-01"))
            .body(Body::empty())
            .unwrap();
        let res = client().request(req).await.unwrap();
        let seen = res.into_body().collect().await.unwrap().to_bytes();
        let seen = String::from_utf8(seen.to_vec()).unwrap();
        assert_eq!(seen.starts_with(PARENT_TRACE), loopback_trusted, "{seen}");
    }
    let spans = rec.wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        rec.spans().len(),
        1,
        "only the trusted peer's request was recorded"
    );
    assert_eq!(spans[0].span_context.trace_id().to_string(), PARENT_TRACE);
}
