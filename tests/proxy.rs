//! The gateway end to end: a client, llmtrace-proxy (pingora) and the mock provider on
//! loopback, spans exported to memory.

#[path = "../middleware/tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use llmtrace_mock::{MockConfig, MockServer};
use llmtrace_proxy::Config;
use opentelemetry::Value;
use opentelemetry::trace::SpanKind;
use std::sync::Arc;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn start(rec: &Recorder) -> (MockServer, SocketAddr) {
    start_with(rec, |_| {}).await
}

async fn start_with(rec: &Recorder, edit: impl FnOnce(&mut Config)) -> (MockServer, SocketAddr) {
    start_full(rec, edit, None).await
}

async fn start_full(
    rec: &Recorder,
    edit: impl FnOnce(&mut Config),
    meter: Option<&opentelemetry::metrics::Meter>,
) -> (MockServer, SocketAddr) {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut config = Config::single(&listen.to_string(), &mock.url(), None).unwrap();
    edit(&mut config);
    config.validate().unwrap();
    let server = llmtrace_proxy::build_server(Arc::new(config), &rec.provider, meter).unwrap();
    std::thread::spawn(move || server.run_forever());
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(listen).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (mock, listen)
}

fn f64_attr(span: &opentelemetry_sdk::trace::SpanData, key: &str) -> f64 {
    match attr(span, key) {
        Some(Value::F64(v)) => *v,
        other => panic!("{key}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_chat_through_the_proxy_forms_one_trace() {
    let rec = Recorder::new();
    let (mock, proxy) = start(&rec).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<bytes::Bytes>>();
    let caller_trace = "0af7651916cd43dd8448eb211c80319c";
    let request = http::Request::post(format!("http://{proxy}/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("authorization", "Bearer sk-live-secret")
        .header("traceparent", format!("00-{caller_trace}-b7ad6b7169203331-01"))
        .header("x-mock-ttft-ms", "150")
        .header("x-mock-gap-ms", "20")
        .header("x-mock-tokens", "10")
        .header("x-request-id", "client-req-1")
        .body(Full::from(r#"{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-llmtrace-trace-id"], caller_trace);
    // The provider's request id reaches the client untouched.
    let provider_request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_ne!(provider_request_id, "client-req-1");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&body);
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert_eq!(
        text.matches("\"content\":\"tok").count() + text.matches("\"content\":\" tok").count(),
        10
    );

    let spans = rec.wait_for(2).await;
    let server = spans
        .iter()
        .find(|s| s.span_kind == SpanKind::Server)
        .expect("server span");
    let genai = spans
        .iter()
        .find(|s| s.span_kind == SpanKind::Client)
        .expect("genai span");
    assert_eq!(server.name, "POST /v1/chat/completions");
    assert_eq!(genai.name, "chat gpt-4o");
    assert_eq!(server.span_context.trace_id().to_string(), caller_trace);
    assert_eq!(server.parent_span_id.to_string(), "b7ad6b7169203331");
    assert_eq!(genai.parent_span_id, server.span_context.span_id());
    assert_eq!(
        attr_str(genai, "llmtrace.measured_at").as_deref(),
        Some("gateway")
    );
    assert_eq!(attr_i64(genai, "gen_ai.usage.output_tokens"), Some(10));
    let ttft = f64_attr(genai, "gen_ai.response.time_to_first_chunk");
    assert!((ttft - 0.150).abs() < 0.030, "ttft {ttft}");
    assert!(genai.end_time <= server.end_time);

    // Upstream got the GenAI span as parent, and the request id.
    let received = mock.received_requests();
    let upstream = received.last().unwrap();
    let traceparent = upstream.headers["traceparent"].to_str().unwrap();
    assert_eq!(
        traceparent,
        format!("00-{caller_trace}-{}-01", genai.span_context.span_id())
    );
    assert_eq!(upstream.headers["x-request-id"], "client-req-1");
    assert_eq!(
        attr_str(server, "http.request.header.x-request-id").as_deref(),
        Some("client-req-1")
    );
    assert_eq!(
        attr_str(server, "llmtrace.upstream.request_id"),
        Some(provider_request_id)
    );
    for span in &spans {
        assert!(!format!("{:?}", span.attributes).contains("sk-live-secret"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_mid_stream_leaves_aborted_spans() {
    let rec = Recorder::new();
    let (_mock, proxy) = start(&rec).await;
    let body = r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let mut socket = tokio::net::TcpStream::connect(proxy).await.unwrap();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-mock-tokens: 500\r\nx-mock-ttft-ms: 1\r\nx-mock-gap-ms: 10\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while String::from_utf8_lossy(&seen).matches("tok").count() < 3 {
        let n = socket.read(&mut buf).await.unwrap();
        assert!(n > 0);
        seen.extend_from_slice(&buf[..n]);
    }
    drop(socket);
    let spans = rec.wait_for(2).await;
    assert_eq!(spans.len(), 2, "{:?}", names(&spans));
    for span in &spans {
        assert!(is_error(span), "{}: {:?}", span.name, span.status);
        assert_eq!(
            attr(span, "llmtrace.aborted"),
            Some(&Value::Bool(true)),
            "{}",
            span.name
        );
    }
    let genai = spans
        .iter()
        .find(|s| s.span_kind == SpanKind::Client)
        .unwrap();
    assert_eq!(
        attr(genai, "llmtrace.stream.complete"),
        Some(&Value::Bool(false))
    );
}

fn client() -> hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<bytes::Bytes>,
> {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

async fn post(
    proxy: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (http::StatusCode, http::HeaderMap, String) {
    let mut request = http::Request::post(format!("http://{proxy}{path}"))
        .header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = client()
        .request(request.body(Full::from(body.to_owned())).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_is_asked_for_upstream_and_its_chunk_never_reaches_the_client() {
    let rec = Recorder::new();
    let (mock, proxy) = start(&rec).await;
    let (status, headers, body) = post(
        proxy,
        "/v1/chat/completions",
        &[
            ("x-mock-tokens", "5"),
            ("x-mock-ttft-ms", "5"),
            ("x-mock-gap-ms", "2"),
        ],
        r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(status, 200);
    assert!(headers.get("content-length").is_none());
    assert!(
        !body.contains("\"choices\":[]"),
        "usage chunk leaked: {body}"
    );
    assert!(!body.contains("prompt_tokens"), "{body}");
    assert!(
        !body.contains("\"usage\":null"),
        "the null usage members leaked: {body}"
    );
    assert!(body.ends_with("data: [DONE]\n\n"));
    let upstream = mock.received_requests();
    let sent: serde_json::Value = serde_json::from_slice(&upstream.last().unwrap().body).unwrap();
    assert_eq!(sent["stream_options"]["include_usage"], true);
    let spans = rec.wait_for(2).await;
    let genai = spans
        .iter()
        .find(|s| s.span_kind == SpanKind::Client)
        .unwrap();
    assert_eq!(
        attr_str(genai, "llmtrace.usage.source").as_deref(),
        Some("reported")
    );
    assert_eq!(attr_i64(genai, "gen_ai.usage.output_tokens"), Some(5));

    // A client that asked for usage gets it, untouched.
    let (_, _, body) = post(
        proxy,
        "/v1/chat/completions",
        &[
            ("x-mock-tokens", "5"),
            ("x-mock-ttft-ms", "5"),
            ("x-mock-gap-ms", "2"),
        ],
        r#"{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"messages":[]}"#,
    )
    .await;
    assert!(body.contains("\"choices\":[]"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_configured_routes_and_keys_pass_and_upstream_credentials_replace_the_clients() {
    let rec = Recorder::new();
    let (mock, proxy) = start_with(&rec, |config| {
        config.routes[0].path_prefix = "/v1/".into();
        config.routes[0].client_keys = vec!["client-key-1".into()];
        config.upstreams[0].api_key = Some("sk-upstream-secret".into());
        config.server.max_request_body_bytes = 1024;
    })
    .await;
    let chat = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
    let (status, _, body) = post(
        proxy,
        "/admin/secrets",
        &[("authorization", "Bearer client-key-1")],
        chat,
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let (status, _, body) = post(
        proxy,
        "/v1/chat/completions",
        &[("authorization", "Bearer wrong")],
        chat,
    )
    .await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("invalid_api_key"));
    let big = format!(
        r#"{{"model":"gpt-4o","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(2000)
    );
    let (status, _, body) = post(
        proxy,
        "/v1/chat/completions",
        &[("authorization", "Bearer client-key-1")],
        &big,
    )
    .await;
    assert_eq!(status, 413, "{body}");
    let (status, _, _) = post(
        proxy,
        "/v1/chat/completions",
        &[("authorization", "Bearer client-key-1")],
        chat,
    )
    .await;
    assert_eq!(status, 200);
    let received = mock.received_requests();
    assert_eq!(
        received.len(),
        1,
        "refused requests never reach the upstream"
    );
    assert_eq!(
        received[0].headers["authorization"],
        "Bearer sk-upstream-secret"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    for span in rec.spans() {
        let text = format!("{:?}", span.attributes);
        assert!(
            !text.contains("sk-upstream-secret") && !text.contains("client-key-1"),
            "{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_clients_are_served_on_the_same_port() {
    let rec = Recorder::new();
    let (_mock, proxy) = start(&rec).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<bytes::Bytes>>();
    let request = http::Request::post(format!("http://{proxy}/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("x-mock-tokens", "4")
        .body(Full::from(
            r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
        ))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), http::Version::HTTP_2);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(body.ends_with(b"data: [DONE]\n\n"));
    let spans = rec.wait_for(2).await;
    let server = spans
        .iter()
        .find(|s| s.span_kind == SpanKind::Server)
        .unwrap();
    assert_eq!(
        attr_str(server, "network.protocol.version").as_deref(),
        Some("2")
    );
    let genai = spans
        .iter()
        .find(|s| s.span_kind == SpanKind::Client)
        .unwrap();
    assert_eq!(attr_i64(genai, "gen_ai.usage.output_tokens"), Some(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn genai_metrics_are_recorded_for_every_request() {
    use opentelemetry::metrics::MeterProvider as _;
    use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
    use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};

    let rec = Recorder::with_sampler(opentelemetry_sdk::trace::Sampler::AlwaysOff);
    let exporter = InMemoryMetricExporter::default();
    let meters = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter.clone()).build())
        .build();
    let meter = meters.meter("test");
    let (_mock, proxy) = start_full(&rec, |_| {}, Some(&meter)).await;
    for fault in ["", "", "429"] {
        let headers: Vec<(&str, &str)> = if fault.is_empty() {
            vec![("x-mock-tokens", "3")]
        } else {
            vec![("x-mock-fault", fault)]
        };
        post(
            proxy,
            "/v1/chat/completions",
            &headers,
            r#"{"model":"gpt-4o","stream":true,"messages":[]}"#,
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    meters.force_flush().unwrap();
    let mut durations = 0;
    for rm in exporter.get_finished_metrics().unwrap() {
        for sm in rm.scope_metrics() {
            for metric in sm.metrics() {
                if metric.name() == "gen_ai.client.operation.duration" {
                    if let AggregatedMetrics::F64(MetricData::Histogram(h)) = metric.data() {
                        durations += h.data_points().map(|p| p.count()).sum::<u64>();
                    }
                }
            }
        }
    }
    assert_eq!(durations, 3, "one duration per request, none sampled");
    assert!(rec.spans().is_empty());
}
