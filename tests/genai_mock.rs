//! `GenAiLayer` over a real hyper client against the mock provider on loopback, with known
//! delays: the span's timings must be within a few milliseconds of the truth.

use std::time::Duration;

use axum::body::Body;
use http_body_util::BodyExt;
use llmtrace::GenAiLayer;
use llmtrace::layer::{GenAiService, RequestBody};
use llmtrace_mock::{MockConfig, MockServer};
use llmtrace_test_support::*;
use opentelemetry::Value;
use tower::{ServiceBuilder, ServiceExt};

type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    RequestBody<Body>,
>;

fn client(rec: &Recorder) -> GenAiService<Client> {
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_nodelay(true);
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(connector);
    ServiceBuilder::new()
        .layer(GenAiLayer::client().with_tracer(rec.tracer()))
        .service(http)
}

fn f64_attr(span: &opentelemetry_sdk::trace::SpanData, key: &str) -> f64 {
    match attr(span, key) {
        Some(Value::F64(v)) => *v,
        other => panic!("{key}: {other:?}"),
    }
}

async fn call(
    client: &GenAiService<Client>,
    url: String,
    headers: &[(&str, &str)],
    body: &str,
) -> (http::StatusCode, bytes::Bytes) {
    let mut request = http::Request::post(url).header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = client
        .clone()
        .oneshot(request.body(Body::from(body.to_owned())).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn openai_stream_timings_match_the_providers_delays() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let rec = Recorder::new();
    let client = client(&rec);
    // Warm the connection so TTFT is the provider's, not the TCP handshake's.
    call(
        &client,
        format!("{}/v1/chat/completions", mock.url()),
        &[("x-mock-ttft-ms", "0"), ("x-mock-tokens", "1")],
        r#"{"model":"gpt-4o","messages":[]}"#,
    )
    .await;
    rec.spans();

    let (status, body) = call(
        &client,
        format!("{}/v1/chat/completions", mock.url()),
        &[("x-mock-ttft-ms", "150"), ("x-mock-gap-ms", "30"), ("x-mock-tokens", "12")],
        r#"{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"count to twelve"}]}"#,
    )
    .await;
    assert_eq!(status, 200);
    assert!(body.ends_with(b"data: [DONE]\n\n"));

    let spans = rec.spans();
    let s = spans
        .iter()
        .find(|s| attr(s, "gen_ai.request.stream").is_some())
        .unwrap();
    assert_eq!(s.name, "chat gpt-4o");
    let ttft = f64_attr(s, "gen_ai.response.time_to_first_chunk");
    assert!((ttft - 0.150).abs() < 0.015, "ttft {ttft}");
    let p50 = f64_attr(s, "llmtrace.stream.gap.p50");
    assert!((p50 - 0.030).abs() < 0.008, "gap p50 {p50}");
    let mean = f64_attr(s, "llmtrace.stream.gap.mean");
    assert!((mean - 0.030).abs() < 0.008, "gap mean {mean}");
    assert_eq!(attr_i64(s, "gen_ai.usage.output_tokens"), Some(12));
    assert_eq!(attr_i64(s, "llmtrace.stream.chunks"), Some(12));
    assert_eq!(
        attr_str(s, "llmtrace.usage.source").as_deref(),
        Some("reported")
    );
    assert_eq!(
        attr(s, "llmtrace.stream.complete"),
        Some(&Value::Bool(true))
    );
    assert!(duration(s) >= Duration::from_millis(150 + 11 * 30));

    // The provider saw our GenAI span as its parent.
    let received = mock.received_requests();
    let traceparent = received.last().unwrap().headers["traceparent"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        traceparent.contains(&s.span_context.span_id().to_string()),
        "{traceparent}"
    );
    rec.assert_each_ended_once();
}

#[tokio::test]
async fn anthropic_stream_usage_and_timing() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let rec = Recorder::new();
    let client = client(&rec);
    let (status, _) = call(
        &client,
        format!("{}/v1/messages", mock.url()),
        &[("x-mock-ttft-ms", "80"), ("x-mock-gap-ms", "10"), ("x-mock-tokens", "8"), ("anthropic-version", "2023-06-01")],
        r#"{"model":"claude-sonnet-4-6","stream":true,"max_tokens":64,"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(status, 200);
    let s = &rec.spans()[0];
    assert_eq!(s.name, "chat claude-sonnet-4-6");
    assert_eq!(
        attr_str(s, "gen_ai.provider.name").as_deref(),
        Some("anthropic")
    );
    assert_eq!(attr_i64(s, "gen_ai.usage.output_tokens"), Some(8));
    assert!(attr_i64(s, "gen_ai.usage.input_tokens").unwrap() > 0);
    assert!(format!("{:?}", attr(s, "gen_ai.response.finish_reasons")).contains("end_turn"));
    let ttft = f64_attr(s, "gen_ai.response.time_to_first_chunk");
    assert!(ttft > 0.060 && ttft < 0.120, "ttft {ttft}");
}

#[tokio::test]
async fn faults_show_up_as_errors_on_the_span() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let rec = Recorder::new();
    let client = client(&rec);
    let stream = r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    for (fault, expected_error) in [
        ("429", "rate_limit_exceeded"),
        ("truncate", "stream_truncated"),
        ("error-event", ""),
    ] {
        call(
            &client,
            format!("{}/v1/chat/completions", mock.url()),
            &[
                ("x-mock-fault", fault),
                ("x-mock-ttft-ms", "1"),
                ("x-mock-gap-ms", "1"),
            ],
            stream,
        )
        .await;
        let spans = rec.spans();
        let s = spans.last().unwrap();
        assert!(is_error(s), "{fault}: {:?}", s.status);
        let error_type = attr_str(s, "error.type").unwrap_or_default();
        assert!(
            error_type.contains(expected_error),
            "{fault}: error.type {error_type}"
        );
    }
    rec.assert_each_ended_once();
}
