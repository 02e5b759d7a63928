//! The keyword tail policy through the gateway: a prompt is scanned while its body is read,
//! the trace is kept or dropped by what it contained, and nothing of the prompt is recorded.

mod support;

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use llmtrace_mock::{MockConfig, MockServer};
use support::TomlGateway;

async fn post(listen: std::net::SocketAddr, path: &str, request_id: &str, body: &str) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<bytes::Bytes>>();
    let request = http::Request::post(format!("http://{listen}{path}"))
        .header("content-type", "application/json")
        .header("x-request-id", request_id)
        .header("anthropic-version", "2023-06-01")
        .body(Full::from(body.to_owned()))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), 200, "{request_id}");
    response.into_body().collect().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_keyword_keeps_the_trace_and_nothing_of_the_prompt_is_recorded() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    // Nothing is kept but what a prompt policy matches: no fallback, no other policy.
    let text = r#"
[server]
listen = "${LISTEN}"
admin = "off"
[[upstreams]]
name = "mock"
url = "${MOCK_URL}"
[[routes]]
upstream = "mock"
[tail]
decision_wait_ms = 50
policies = [
  { prompt = { keywords = ["refund", "lawsuit"] }, name = "legal" },
  { prompt = { regex = '\b\d{3}-\d{2}-\d{4}\b' }, name = "ssn" },
]
fallback_ratio = 0.0
"#;
    let gateway = TomlGateway::start(text, &mock.url(), "prompt-watch").await;
    let listen = gateway.listen;

    let requests = [
        // The keyword spelled with JSON escapes, in upper case, after other text.
        (
            "/v1/chat/completions",
            "kept-chat",
            r#"{"model":"gpt-4o","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"zebra-marker: I want a R\u0045FUND\nfor order 7"}]}"#,
        ),
        // An Anthropic text block matching the regex.
        (
            "/v1/messages",
            "kept-anthropic",
            r#"{"model":"claude-sonnet-4-5","max_tokens":32,"messages":[{"role":"user","content":[{"type":"text","text":"zebra-marker: my number is 123-45-6789"}]}]}"#,
        ),
        // No keyword in the prompt (only in the model name, which is not prompt text).
        (
            "/v1/chat/completions",
            "dropped",
            r#"{"model":"refund-gpt","messages":[{"role":"user","content":"zebra-marker: hello there"}]}"#,
        ),
    ];
    for (path, id, body) in requests {
        post(listen, path, id, body).await;
    }
    // Every request reached the upstream byte for byte, kept or not.
    let received = mock.received_requests();
    assert_eq!(received.len(), requests.len());
    for (upstream, (_, _, body)) in received.iter().zip(requests) {
        assert_eq!(upstream.body, body.as_bytes());
    }
    let spans = gateway.spans(Duration::from_millis(300)).await;
    let ids: std::collections::BTreeSet<&str> = spans
        .iter()
        .filter_map(|s| s["attributes"]["http.request.header.x-request-id"].as_str())
        .collect();
    assert_eq!(
        ids.into_iter().collect::<Vec<_>>(),
        ["kept-anthropic", "kept-chat"],
        "{spans:#?}"
    );
    assert_eq!(spans.len(), 4, "SERVER and GenAI span of each kept trace");
    let mut matched: Vec<String> = spans
        .iter()
        .filter_map(|s| s["attributes"].get("llmtrace.prompt.matched"))
        .map(|v| v.to_string())
        .collect();
    matched.sort();
    assert_eq!(matched, [r#"["legal"]"#, r#"["ssn"]"#], "{spans:#?}");
    let mut reasons: Vec<&str> = spans
        .iter()
        .filter_map(|s| s["attributes"]["llmtrace.sampling.reason"].as_str())
        .collect();
    reasons.sort();
    assert_eq!(reasons, ["legal", "ssn"]);
    // Nothing of any prompt is in what was exported.
    let exported = serde_json::to_string(&spans).unwrap();
    for secret in ["zebra", "order 7", "REFUND", "123-45-6789", "Be brief"] {
        assert!(!exported.contains(secret), "{secret} in {exported}");
    }
}
