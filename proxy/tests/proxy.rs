//! The gateway end to end: a client, llmtrace-proxy (pingora) and the mock provider on
//! loopback, spans exported to memory.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use llmtrace_mock::{MockConfig, MockServer};
use llmtrace_proxy::Config;
use llmtrace_test_support::*;
use opentelemetry::Value;
use opentelemetry::trace::SpanKind;
use std::sync::Arc;
use support::{assert_forwarded, start_gateway};
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
    meters: Option<opentelemetry_sdk::metrics::SdkMeterProvider>,
) -> (MockServer, SocketAddr) {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let mut telemetry = llmtrace_proxy::Telemetry::with_tracer_provider(rec.provider.clone());
    if let Some(meters) = meters {
        telemetry.meter_provider = meters;
    }
    let url = mock.url();
    let (listen, _state) = start_gateway(&telemetry, &url, edit).await;
    (mock, listen)
}

const STREAMED_CHAT: &str =
    r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;

const CHAT_WITH_USAGE: &str = r#"{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#;

/// The GenAI (CLIENT) span among `spans`.
fn genai_span(spans: &[opentelemetry_sdk::trace::SpanData]) -> &opentelemetry_sdk::trace::SpanData {
    spans
        .iter()
        .find(|s| s.span_kind == SpanKind::Client)
        .expect("a GenAI CLIENT span")
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
        .header(
            "traceparent",
            format!("00-{caller_trace}-b7ad6b7169203331-01"),
        )
        .header("x-mock-ttft-ms", "150")
        .header("x-mock-gap-ms", "20")
        .header("x-mock-tokens", "10")
        .header("x-request-id", "client-req-1")
        .body(Full::from(CHAT_WITH_USAGE))
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
    let genai = genai_span(&spans);
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
    assert_forwarded(CHAT_WITH_USAGE.as_bytes(), &upstream.body, false);
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
        Some(provider_request_id.clone())
    );
    // The provider's request id is on the GenAI span too, and OpenAI got the trace id in
    // `X-Client-Request-Id`: either finds the other side.
    assert_eq!(
        attr_str(genai, "llmtrace.provider.request_id"),
        Some(provider_request_id)
    );
    assert_eq!(upstream.headers["x-client-request-id"], caller_trace);
    for span in &spans {
        assert!(!format!("{:?}", span.attributes).contains("sk-live-secret"));
    }

    // A client's own `X-Client-Request-Id` goes upstream untouched.
    let (status, _, _) = post(
        proxy,
        "/v1/chat/completions",
        &[
            ("x-client-request-id", "client-chosen-7"),
            ("x-mock-tokens", "2"),
        ],
        CHAT_WITH_USAGE,
    )
    .await;
    assert_eq!(status, 200);
    let received = mock.received_requests();
    assert_eq!(
        received.last().unwrap().headers["x-client-request-id"],
        "client-chosen-7"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_mid_stream_leaves_aborted_spans() {
    let rec = Recorder::new();
    let (mock, proxy) = start(&rec).await;
    let body = r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let mut socket = tokio::net::TcpStream::connect(proxy).await.unwrap();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-mock-tokens: 500\r\nx-mock-ttft-ms: 1\r\nx-mock-gap-ms: 10\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while support::content_tokens(&String::from_utf8_lossy(&seen)) < 3 {
        let n = socket.read(&mut buf).await.unwrap();
        assert!(n > 0);
        seen.extend_from_slice(&buf[..n]);
    }
    drop(socket);
    assert_forwarded(body.as_bytes(), &mock.received_requests()[0].body, true);
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
    let genai = genai_span(&spans);
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
    // Exactly the usage member was added; every other byte is the client's.
    assert_forwarded(
        br#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
        &upstream.last().unwrap().body,
        true,
    );
    let spans = rec.wait_for(2).await;
    let genai = genai_span(&spans);
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
    assert_forwarded(chat.as_bytes(), &received[0].body, false);
    // Each refusal has its SERVER span with the status and the reason; they end in pingora's
    // last phase, a moment after the client has the answer.
    let spans = rec
        .wait_until(|spans| {
            spans
                .iter()
                .filter(|s| attr(s, "llmtrace.gateway.refused").is_some())
                .count()
                >= 3
        })
        .await;
    let mut refused: Vec<(i64, String)> = spans
        .iter()
        .filter_map(|s| {
            Some((
                attr_i64(s, "http.response.status_code")?,
                attr_str(s, "llmtrace.gateway.refused")?,
            ))
        })
        .collect();
    refused.sort();
    assert_eq!(
        refused,
        [
            (401, "invalid_api_key".to_owned()),
            (404, "no_route".to_owned()),
            (413, "request_too_large".to_owned())
        ]
    );
    for span in spans {
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
    let (mock, proxy) = start(&rec).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<bytes::Bytes>>();
    let request = http::Request::post(format!("http://{proxy}/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("x-mock-tokens", "4")
        .body(Full::from(STREAMED_CHAT))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), http::Version::HTTP_2);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(body.ends_with(b"data: [DONE]\n\n"));
    assert_forwarded(
        STREAMED_CHAT.as_bytes(),
        &mock.received_requests()[0].body,
        true,
    );
    let spans = rec.wait_for(2).await;
    let server = spans
        .iter()
        .find(|s| s.span_kind == SpanKind::Server)
        .unwrap();
    assert_eq!(
        attr_str(server, "network.protocol.version").as_deref(),
        Some("2")
    );
    let genai = genai_span(&spans);
    assert_eq!(attr_i64(genai, "gen_ai.usage.output_tokens"), Some(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn genai_metrics_are_recorded_for_every_request() {
    use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
    use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};

    let rec = Recorder::with_sampler(opentelemetry_sdk::trace::Sampler::AlwaysOff);
    let exporter = InMemoryMetricExporter::default();
    let meters = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter.clone()).build())
        .build();
    let (mock, proxy) = start_full(&rec, |_| {}, Some(meters.clone())).await;
    let body = r#"{"model":"gpt-4o","stream":true,"messages":[]}"#;
    for fault in ["", "", "429"] {
        let headers: Vec<(&str, &str)> = if fault.is_empty() {
            vec![("x-mock-tokens", "3")]
        } else {
            vec![("x-mock-fault", fault)]
        };
        post(proxy, "/v1/chat/completions", &headers, body).await;
    }
    // Nothing is sampled, and the requests still reach the upstream as sent (plus usage).
    let received = mock.received_requests();
    assert_eq!(received.len(), 3);
    for upstream in &received {
        assert_forwarded(body.as_bytes(), &upstream.body, true);
    }
    // The durations are recorded in pingora's last phase, a moment after the client has the
    // answer: export (cumulative totals) until all three are in, or the deadline.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let durations = loop {
        exporter.reset();
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
        if durations >= 3 || std::time::Instant::now() > deadline {
            break durations;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(durations, 3, "one duration per request, none sampled");
    assert!(rec.spans().is_empty());
}

/// A config with the mock as `primary`'s fallback: `primary_url` answers first.
fn with_fallback(primary_url: String, mock_url: String) -> impl FnOnce(&mut Config) {
    move |config: &mut Config| {
        let mut fallback = config.upstreams[0].clone();
        fallback.name = "mock".into();
        fallback.url = mock_url;
        config.upstreams[0].url = primary_url;
        config.upstreams[0].name = "primary".into();
        config.upstreams.push(fallback);
        config.routes[0].upstream = "primary".into();
        config.routes[0].fallbacks = vec!["mock".into()];
    }
}

/// An upstream that answers every request with `status` and closes.
async fn failing_upstream(status: u16) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            let hits = counted.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let mut seen = Vec::new();
                // Read the whole request (head + body) before answering.
                while let Ok(n) = tcp.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&seen);
                    if text.contains("\r\n\r\n") && text.ends_with('}')
                        || text.ends_with("0\r\n\r\n")
                    {
                        break;
                    }
                }
                hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let body = r#"{"error":{"message":"overloaded","type":"server_error"}}"#;
                let answer = format!(
                    "HTTP/1.1 {status} Oops\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tcp.write_all(answer.as_bytes()).await;
            });
        }
    });
    (addr, hits)
}

fn events<'a>(
    span: &'a opentelemetry_sdk::trace::SpanData,
    name: &str,
) -> Vec<&'a opentelemetry::trace::Event> {
    span.events.iter().filter(|e| e.name == name).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retryable_status_falls_back_to_the_next_upstream_before_any_byte_reaches_the_client() {
    let rec = Recorder::new();
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let (failing, hits) = failing_upstream(503).await;
    let telemetry = llmtrace_proxy::Telemetry::with_tracer_provider(rec.provider.clone());
    let (proxy, state) = start_gateway(
        &telemetry,
        &mock.url(),
        with_fallback(format!("http://{failing}"), mock.url()),
    )
    .await;
    let body = r#"{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#;
    let headers = [
        ("x-mock-tokens", "3"),
        ("x-mock-seed", "7"),
        ("x-mock-ttft-ms", "0"),
    ];
    let (status, _, through_proxy) = post(proxy, "/v1/chat/completions", &headers, body).await;
    assert_eq!(status, 200, "{through_proxy}");
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(mock.requests_received(), 1);
    // The replayed body reaches the fallback exactly as the client sent it.
    assert_forwarded(body.as_bytes(), &mock.received_requests()[0].body, false);
    // The client sees exactly the fallback's bytes: nothing of the 503.
    let (_, _, direct) = post(mock.addr(), "/v1/chat/completions", &headers, body).await;
    assert_eq!(through_proxy, direct);

    // SERVER and GenAI CLIENT span of each request; they end in pingora's last phase.
    let spans = rec.wait_for(2).await;
    let genai = genai_span(&spans);
    assert_eq!(
        attr_str(genai, "llmtrace.upstream.name").as_deref(),
        Some("mock")
    );
    assert_eq!(attr_i64(genai, "llmtrace.upstream.attempts"), Some(2));
    let retries = events(genai, "llmtrace.upstream.retry");
    assert_eq!(retries.len(), 1);
    let reason = retries[0]
        .attributes
        .iter()
        .find(|kv| kv.key.as_str() == "llmtrace.retry.reason");
    assert_eq!(
        reason.map(|kv| kv.value.to_string()).as_deref(),
        Some("503")
    );
    assert_eq!(attr_i64(genai, "gen_ai.usage.output_tokens"), Some(3));
    assert!(!is_error(genai));
    let metrics = state.prometheus.render();
    assert!(
        metrics.contains(r#"llmtrace_proxy_upstream_retries_total{llmtrace_retry_reason="503",llmtrace_upstream="primary"} 1"#)
            || metrics.contains(r#"llmtrace_proxy_upstream_retries_total{llmtrace_upstream="primary",llmtrace_retry_reason="503"} 1"#),
        "{metrics}"
    );
}

/// A host under `.invalid` (RFC 6761) never resolves.
const UNRESOLVABLE: &str = "http://no-such-host.invalid:80";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_whose_host_does_not_resolve_answers_502_and_falls_back_when_allowed() {
    let rec = Recorder::new();
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let telemetry = llmtrace_proxy::Telemetry::with_tracer_provider(rec.provider.clone());
    let body = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;

    // Alone on its route: a 502 in the provider's error shape that names the host (before,
    // the name was looked up per request and the failure panicked the request: the client
    // got its connection closed and no answer).
    let (alone, _) = start_gateway(&telemetry, UNRESOLVABLE, |_| {}).await;
    let (status, _, text) = post(alone, "/v1/chat/completions", &[], body).await;
    assert_eq!(status, 502, "{text}");
    let error: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(error["error"]["code"], "upstream_unresolved", "{text}");
    assert_eq!(error["error"]["type"], "server_error");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("\"no-such-host.invalid:80\" did not resolve"),
        "{message}"
    );
    let spans = rec.wait_for(2).await;
    let genai = genai_span(&spans);
    assert!(is_error(genai));
    assert_eq!(
        attr_str(genai, "error.type").as_deref(),
        Some("upstream_unresolved")
    );
    let server = spans
        .iter()
        .find(|s| s.span_kind == SpanKind::Server)
        .unwrap();
    assert_eq!(attr_i64(server, "http.response.status_code"), Some(502));
    assert_eq!(mock.requests_received(), 0);

    // With a fallback: the next candidate answers, and the body reaches it unchanged.
    let (proxy, _) = start_gateway(
        &telemetry,
        &mock.url(),
        with_fallback(UNRESOLVABLE.to_owned(), mock.url()),
    )
    .await;
    let (status, _, text) = post(
        proxy,
        "/v1/chat/completions",
        &[("x-mock-tokens", "2")],
        body,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(mock.requests_received(), 1);
    assert_forwarded(body.as_bytes(), &mock.received_requests()[0].body, false);
    let spans = rec.wait_for(4).await;
    let genai = spans
        .iter()
        .filter(|s| s.span_kind == SpanKind::Client)
        .nth(1)
        .unwrap();
    assert!(!is_error(genai));
    let retries = events(genai, "llmtrace.upstream.retry");
    assert_eq!(retries.len(), 1, "{:?}", genai.events);
    let reason = retries[0]
        .attributes
        .iter()
        .find(|kv| kv.key.as_str() == "llmtrace.retry.reason");
    assert_eq!(
        reason.map(|kv| kv.value.to_string()).as_deref(),
        Some("upstream_unresolved")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_falls_back_and_exhausted_attempts_return_the_last_answer() {
    let rec = Recorder::new();
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let telemetry = llmtrace_proxy::Telemetry::with_tracer_provider(rec.provider.clone());
    // Held (never listening) for the whole test: connections to it are refused.
    let closed = reserve_port();
    let (proxy, _) = start_gateway(
        &telemetry,
        &mock.url(),
        with_fallback(format!("http://{}", closed.addr()), mock.url()),
    )
    .await;
    let body = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
    let (status, _, _) = post(
        proxy,
        "/v1/chat/completions",
        &[("x-mock-tokens", "2")],
        body,
    )
    .await;
    assert_eq!(status, 200);
    // Both attempts used, the mock's 429 is what the client gets: no third try.
    let (status, headers, text) = post(
        proxy,
        "/v1/chat/completions",
        &[("x-mock-fault", "429")],
        body,
    )
    .await;
    assert_eq!(status, 429, "{text}");
    assert!(headers.contains_key("retry-after"));
    assert_eq!(mock.requests_received(), 2);
    for upstream in mock.received_requests() {
        assert_forwarded(body.as_bytes(), &upstream.body, false);
    }

    // SERVER and GenAI CLIENT span of each request; they end in pingora's last phase.
    let spans = rec.wait_for(4).await;
    let clients: Vec<_> = spans
        .iter()
        .filter(|s| s.span_kind == SpanKind::Client)
        .collect();
    assert_eq!(clients.len(), 2);
    for genai in &clients {
        let retries = events(genai, "llmtrace.upstream.retry");
        assert_eq!(retries.len(), 1, "{:?}", genai.events);
        let reason = retries[0]
            .attributes
            .iter()
            .find(|kv| kv.key.as_str() == "llmtrace.retry.reason")
            .unwrap();
        assert_eq!(reason.value.to_string(), "connection_refused");
        assert_eq!(attr_i64(genai, "llmtrace.upstream.attempts"), Some(2));
    }
    // The last answer (the mock's 429) is the one recorded and returned.
    assert!(
        clients
            .iter()
            .any(|s| attr_i64(s, "http.response.status_code") == Some(429) && is_error(s)),
        "{clients:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_started_is_never_retried_and_the_total_timeout_cuts_a_long_one() {
    let rec = Recorder::new();
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let telemetry = llmtrace_proxy::Telemetry::with_tracer_provider(rec.provider.clone());
    let (proxy, _) = start_gateway(&telemetry, &mock.url(), |config| {
        config.routes[0].retries = Some(2);
        config.upstreams[0].total_timeout_ms = Some(400);
    })
    .await;
    let body = r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    // Cut mid-stream: the client already has bytes, so no retry, and its body ends broken.
    let request = http::Request::post(format!("http://{proxy}/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("x-mock-fault", "cut")
        .header("x-mock-ttft-ms", "0")
        .header("x-mock-gap-ms", "1")
        .body(Full::from(body.to_owned()))
        .unwrap();
    let response = client().request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.into_body().collect().await.is_err());
    assert_eq!(mock.requests_received(), 1);
    assert_forwarded(body.as_bytes(), &mock.received_requests()[0].body, true);

    // 30 tokens 50 ms apart (1.5 s) against a 400 ms total: cut, and said so.
    let mut request = http::Request::post(format!("http://{proxy}/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("x-mock-tokens", "30")
        .header("x-mock-gap-ms", "50")
        .header("x-mock-ttft-ms", "0");
    request = request.header("x-request-id", "total-timeout");
    let started = std::time::Instant::now();
    let response = client()
        .request(request.body(Full::from(body.to_owned())).unwrap())
        .await
        .unwrap();
    let received = response.into_body().collect().await;
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_millis(1400), "{elapsed:?}");
    if let Ok(body) = received {
        let text = String::from_utf8_lossy(&body.to_bytes()).into_owned();
        assert!(!text.contains("[DONE]"), "{text}");
    }
    // SERVER and GenAI CLIENT span of each request; they end in pingora's last phase.
    let spans = rec.wait_for(4).await;
    let cut = spans
        .iter()
        .filter(|s| s.span_kind == SpanKind::Client)
        .find(|s| attr_str(s, "error.type").as_deref() == Some("timeout"));
    assert!(
        cut.is_some(),
        "{:#?}",
        spans
            .iter()
            .map(|s| (&s.name, &s.attributes))
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_serves_metrics_health_and_readiness() {
    let rec = Recorder::new();
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let telemetry = llmtrace_proxy::Telemetry::with_tracer_provider(rec.provider.clone());
    let admin_port = reserve_port();
    let admin = admin_port.addr();
    let (proxy, state) = start_gateway(&telemetry, &mock.url(), |config| {
        config.server.admin = Some(admin.to_string());
    })
    .await;
    wait_until_ready(admin, READY_TIMEOUT)
        .await
        .expect("the admin listener");
    let body = r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    post(
        proxy,
        "/v1/chat/completions",
        &[("x-mock-tokens", "2"), ("x-mock-ttft-ms", "0")],
        body,
    )
    .await;
    post(
        proxy,
        "/v1/chat/completions",
        &[("x-mock-fault", "500")],
        body,
    )
    .await;
    for upstream in mock.received_requests() {
        assert_forwarded(body.as_bytes(), &upstream.body, true);
    }
    let get = |path: &'static str| async move {
        let response = client()
            .request(
                http::Request::get(format!("http://{admin}{path}"))
                    .body(Full::default())
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    };
    // The in-flight guard goes when pingora's last phase for the request is over, a moment
    // after the client has the body.
    let mut scrape = get("/metrics").await;
    for _ in 0..100 {
        if scrape.1.contains("llmtrace_proxy_in_flight_requests 0") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        scrape = get("/metrics").await;
    }
    let (status, metrics) = scrape;
    assert_eq!(status, 200);
    for want in [
        "llmtrace_proxy_in_flight_requests 0",
        "# TYPE llmtrace_proxy_requests_total counter",
        "# TYPE llmtrace_proxy_errors_total counter",
        "# TYPE gen_ai_client_operation_duration_seconds histogram",
        "# TYPE gen_ai_client_operation_time_to_first_chunk_seconds histogram",
        "# TYPE gen_ai_client_token_usage histogram",
    ] {
        assert!(metrics.contains(want), "missing {want:?}:\n{metrics}");
    }
    let requests: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("llmtrace_proxy_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(requests, 2, "{metrics}");
    assert!(metrics.contains(r#"error_type="500""#), "{metrics}");
    assert_eq!(get("/healthz").await.0, 200);
    assert_eq!(get("/readyz").await.0, 200);
    state.start_draining();
    let (status, text) = get("/readyz").await;
    assert_eq!(status, 503);
    assert!(text.contains("draining"));
    // Still serving while draining.
    let (status, _, _) = post(
        proxy,
        "/v1/chat/completions",
        &[("x-mock-tokens", "1")],
        body,
    )
    .await;
    assert_eq!(status, 200);
}

/// A TLS endpoint for `127.0.0.1` with a fresh self-signed certificate, forwarding to `to`.
/// Returns its address and the certificate (PEM).
async fn tls_in_front_of(to: SocketAddr) -> (SocketAddr, String) {
    use tokio_rustls::rustls;
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let pem = cert.cert.pem();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.cert.der().clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut plain) = tokio::net::TcpStream::connect(to).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    (addr, pem)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_upstream_is_verified_against_the_configured_ca() {
    let rec = Recorder::new();
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let (tls, pem) = tls_in_front_of(mock.addr()).await;
    let dir = std::env::temp_dir().join(format!("llmtrace-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, pem).unwrap();
    let telemetry = llmtrace_proxy::Telemetry::with_tracer_provider(rec.provider.clone());
    let url = format!("https://{tls}");
    let ca_file = ca.display().to_string();
    let (proxy, _) = start_gateway(&telemetry, &url, |config| {
        config.server.upstream_ca_file = Some(ca_file);
    })
    .await;
    let body = r#"{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#;
    let headers = [
        ("x-mock-tokens", "3"),
        ("x-mock-seed", "3"),
        ("x-mock-ttft-ms", "0"),
    ];
    let (status, _, through_tls) = post(proxy, "/v1/chat/completions", &headers, body).await;
    assert_eq!(status, 200, "{through_tls}");
    // Through TLS, the upstream got the client's bytes (the first request it saw).
    assert_forwarded(body.as_bytes(), &mock.received_requests()[0].body, false);
    let (_, _, direct) = post(mock.addr(), "/v1/chat/completions", &headers, body).await;
    assert_eq!(through_tls, direct);

    // The same upstream checked against the system's roots: refused, and said so.
    let (proxy, _) = start_gateway(&telemetry, &url, |_| {}).await;
    let (status, _, _) = post(proxy, "/v1/chat/completions", &headers, body).await;
    assert_eq!(status, 502);
    // SERVER and GenAI CLIENT span of each request; they end in pingora's last phase.
    let spans = rec.wait_for(4).await;
    let clients: Vec<_> = spans
        .iter()
        .filter(|s| s.span_kind == SpanKind::Client)
        .collect();
    assert_eq!(clients.len(), 2);
    assert!(
        clients
            .iter()
            .any(|s| !is_error(s) && attr_i64(s, "gen_ai.usage.output_tokens") == Some(3))
    );
    let refused = clients.iter().find(|s| is_error(s)).unwrap();
    let error_type = attr_str(refused, "error.type").unwrap_or_default();
    assert!(
        error_type.contains("TLS")
            || error_type.contains("Cert")
            || error_type.contains("Handshake"),
        "{error_type}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_rules_and_tail_policies_from_the_toml_decide_what_is_exported() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let text = r#"
[server]
listen = "${LISTEN}"
admin = "off"
[telemetry]
capture_request_headers = ["x-user-tier"]
[[upstreams]]
name = "mock"
url = "${MOCK_URL}"
[[routes]]
upstream = "mock"
[sampling]
default_ratio = 1.0
[[sampling.rules]]
name = "free tier"
match = { headers = { x-user-tier = "free" } }
sample = "never"
[tail]
decision_wait_ms = 50
policies = [ { error = true }, { attribute = { key = "http.request.header.x-user-tier", value = "enterprise" } } ]
fallback_ratio = 0.0
"#;
    let gateway = support::TomlGateway::start(text, &mock.url(), "sampling").await;
    let listen = gateway.listen;
    let prometheus = gateway.telemetry.prometheus.clone();

    let body = r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let requests = [
        ("pro", "", "ok-pro"),
        ("pro", "429", "error-pro"),
        ("free", "429", "error-free"),
        ("enterprise", "", "ok-enterprise"),
    ];
    for (tier, fault, id) in requests {
        let mut headers = vec![
            ("x-user-tier", tier),
            ("x-mock-tokens", "2"),
            ("x-mock-ttft-ms", "0"),
            ("x-request-id", id),
        ];
        if !fault.is_empty() {
            headers.push(("x-mock-fault", fault));
        }
        post(listen, "/v1/chat/completions", &headers, body).await;
    }
    // Sampled or not, every request reached the upstream as sent (plus the usage member).
    let received = mock.received_requests();
    assert_eq!(received.len(), requests.len());
    for upstream in &received {
        assert_forwarded(body.as_bytes(), &upstream.body, true);
    }
    // Past the decision wait, then everything out of the queue.
    let spans = gateway.spans(Duration::from_millis(300)).await;
    let ids: std::collections::BTreeSet<String> = spans
        .iter()
        .filter_map(|s| s["attributes"]["http.request.header.x-request-id"].as_str())
        .map(str::to_owned)
        .collect();
    // The failed "pro" request and the "enterprise" one are kept whole; the healthy "pro" one
    // is dropped by the tail, the "free" one was never recorded (head rule).
    assert_eq!(
        ids.into_iter().collect::<Vec<_>>(),
        ["error-pro", "ok-enterprise"],
        "{spans:#?}"
    );
    assert_eq!(
        spans.len(),
        4,
        "SERVER and GenAI CLIENT span of each kept trace"
    );
    let reasons: Vec<&str> = spans
        .iter()
        .filter_map(|s| s["attributes"]["llmtrace.sampling.reason"].as_str())
        .collect();
    assert_eq!(
        reasons.len(),
        2,
        "the reason is on each kept trace's root: {spans:#?}"
    );
    assert!(reasons.contains(&"error"), "{reasons:?}");
    // Metrics stay whole: every request is counted, sampled or not.
    let metrics = prometheus.render();
    let count: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("gen_ai_client_operation_duration_seconds_count"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(count, 4, "{metrics}");
    assert!(
        metrics.contains("llmtrace_sampling_traces_total"),
        "{metrics}"
    );
}
