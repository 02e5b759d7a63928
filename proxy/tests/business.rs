//! Business context at the gateway (`[telemetry.attributes]`): request headers and baggage
//! become span attributes from the start (head rules match them), capped; the session is the
//! GenAI span's conversation; an OpenAI Responses body's conversation is recorded; opted-in
//! metric dimensions keep a cap on distinct values. Client, gateway and mock provider on
//! loopback, spans written to a file, metrics read from the Prometheus registry.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use llmtrace_mock::{MockConfig, MockServer};
use llmtrace_proxy::Config;
use serde_json::Value;
use support::TomlGateway;

const CONFIG: &str = r#"
[server]
listen = "${LISTEN}"
admin = "off"
[telemetry]
access_log = false
[telemetry.attributes]
headers = { "X-User-Id" = "user.id", "x-session-id" = "session.id", "x-user-tier" = "user.tier" }
baggage = { "experiment" = "llmtrace.experiment", "user" = "user.id" }
metric_dimensions = ["llmtrace.experiment"]
max_value_bytes = 32
max_dimension_values = 2
[[upstreams]]
name = "mock"
url = "${MOCK_URL}"
[[routes]]
upstream = "mock"
[sampling]
default_ratio = 1.0
[[sampling.rules]]
name = "free tier"
match = { attributes = { "user.tier" = "free" } }
sample = "never"
"#;

/// One request: its id, headers, path and body.
type Call<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str, &'a str);

const CHAT: &str = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;

async fn post(
    proxy: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> u16 {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<bytes::Bytes>>();
    let mut request = http::Request::post(format!("http://{proxy}{path}"))
        .header("content-type", "application/json")
        .header("x-mock-tokens", "2");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = client
        .request(request.body(Full::from(body.to_owned())).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    response.into_body().collect().await.unwrap();
    status
}

/// The exported spans of the request with `x-request-id: id`, by kind (`SERVER`, `CLIENT`).
fn spans_of<'a>(spans: &'a [Value], id: &str) -> BTreeMap<String, &'a Value> {
    let server = spans
        .iter()
        .find(|s| s["attributes"]["http.request.header.x-request-id"] == id);
    let Some(server) = server else {
        return BTreeMap::new();
    };
    let trace = server["trace_id"].as_str().unwrap();
    spans
        .iter()
        .filter(|s| s["trace_id"] == trace)
        .map(|s| (s["kind"].as_str().unwrap().to_ascii_uppercase(), s))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_and_baggage_become_attributes_rules_and_capped_dimensions() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let gateway = TomlGateway::start(CONFIG, &mock.url(), "business").await;
    let listen = gateway.listen;
    let prometheus = gateway.telemetry.prometheus.clone();

    let long_user = "u".repeat(100);
    let requests: [Call<'_>; 6] = [
        (
            "pro",
            vec![
                ("x-user-id", &long_user),
                ("x-session-id", "s-1"),
                ("x-user-tier", "pro"),
                ("baggage", "experiment=A,user=ignored-header-wins"),
            ],
            "/v1/chat/completions",
            CHAT,
        ),
        (
            "free",
            vec![("x-user-tier", "free"), ("baggage", "experiment=A")],
            "/v1/chat/completions",
            CHAT,
        ),
        (
            "baggage-only",
            vec![("baggage", "experiment=B,user=u-from-baggage")],
            "/v1/chat/completions",
            CHAT,
        ),
        (
            "third-experiment",
            vec![("baggage", "experiment=C")],
            "/v1/chat/completions",
            CHAT,
        ),
        (
            "responses",
            vec![],
            "/v1/responses",
            r#"{"model":"gpt-4o","input":"hi","conversation":{"id":"conv_123"},"previous_response_id":"resp_9"}"#,
        ),
        (
            "responses-with-session",
            vec![("x-session-id", "s-2")],
            "/v1/responses",
            r#"{"model":"gpt-4o","input":"hi","conversation":"conv_456"}"#,
        ),
    ];
    for (id, headers, path, body) in &requests {
        let mut headers = headers.clone();
        headers.push(("x-request-id", id));
        assert_eq!(post(listen, path, &headers, body).await, 200, "{id}");
    }

    // The upstream received every body as sent (no business attribute changes a byte) and
    // no baggage (forward_baggage is off by default); the mapped headers pass as sent.
    let received = mock.received_requests();
    assert_eq!(received.len(), requests.len());
    for (upstream, (_, headers, _, body)) in received.iter().zip(&requests) {
        assert_eq!(upstream.body, body.as_bytes());
        assert!(upstream.headers.get("baggage").is_none());
        for (name, value) in headers.iter().filter(|(n, _)| n.starts_with("x-")) {
            assert_eq!(upstream.headers.get(*name).unwrap(), value);
        }
    }

    let spans = gateway.spans(Duration::from_millis(200)).await;

    // Headers on both spans from their start, capped; the header wins over baggage for the
    // same attribute; the session is the GenAI span's conversation.
    let pro = spans_of(&spans, "pro");
    assert_eq!(pro.len(), 2, "{pro:#?}");
    for span in pro.values() {
        let a = &span["attributes"];
        let user = a["user.id"].as_str().unwrap();
        // Cut to 32 bytes, the marker included.
        assert!(user.starts_with(&"u".repeat(16)), "{user}");
        assert!(user.len() <= 32 && user.ends_with("[truncated]"), "{user}");
        assert_eq!(a["session.id"], "s-1");
        assert_eq!(a["user.tier"], "pro");
        assert_eq!(a["llmtrace.experiment"], "A");
    }
    assert_eq!(pro["CLIENT"]["attributes"]["gen_ai.conversation.id"], "s-1");

    // A head rule on a business attribute dropped the whole "free" trace.
    assert!(spans_of(&spans, "free").is_empty(), "{spans:#?}");

    // Baggage fills what no header gave.
    let baggage = spans_of(&spans, "baggage-only");
    assert_eq!(baggage["SERVER"]["attributes"]["user.id"], "u-from-baggage");
    assert_eq!(baggage["CLIENT"]["attributes"]["llmtrace.experiment"], "B");
    assert!(baggage["CLIENT"]["attributes"]["gen_ai.conversation.id"].is_null());

    // The Responses body's conversation and previous response; a session wins as the
    // conversation and the body's is kept beside it.
    let responses = &spans_of(&spans, "responses")["CLIENT"]["attributes"];
    assert_eq!(responses["gen_ai.conversation.id"], "conv_123");
    assert_eq!(responses["llmtrace.request.previous_response_id"], "resp_9");
    let both = &spans_of(&spans, "responses-with-session")["CLIENT"]["attributes"];
    assert_eq!(both["gen_ai.conversation.id"], "s-2");
    assert_eq!(both["llmtrace.request.conversation"], "conv_456");

    // Metric dimension: the first two experiments by name, the third as _OTHER; every
    // request counted, sampled or not.
    let metrics = prometheus.render();
    let durations: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("gen_ai_client_operation_duration_seconds_count"))
        .collect();
    let count = |label: &str| -> u64 {
        durations
            .iter()
            .filter(|l| l.contains(label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    assert_eq!(count(r#"llmtrace_experiment="A""#), 2, "{metrics}");
    assert_eq!(count(r#"llmtrace_experiment="B""#), 1, "{metrics}");
    assert_eq!(count(r#"llmtrace_experiment="_OTHER""#), 1, "{metrics}");
    assert_eq!(count(r#"llmtrace_experiment="C""#), 0, "{metrics}");
    assert_eq!(count(""), requests.len() as u64, "{metrics}");
    // Only the opted-in dimension: user ids never label a metric.
    assert!(!metrics.contains("user_id"), "{metrics}");
}

#[test]
fn a_credential_header_or_a_span_owned_key_is_refused_at_load() {
    for (mapping, expected) in [
        (r#""authorization" = "user.id""#, "credentials"),
        (r#""x-api-key" = "user.id""#, "credentials"),
        (r#""x-user" = "http.route""#, "set themselves"),
    ] {
        let text = format!(
            "[[upstreams]]\nname = \"m\"\nurl = \"http://127.0.0.1:1\"\n[[routes]]\nupstream = \"m\"\n[telemetry.attributes]\nheaders = {{ {mapping} }}\n"
        );
        let error = Config::parse(&text, |_| None)
            .and_then(|c| c.validate().map(|_| c))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("telemetry.attributes") && error.contains(expected),
            "{mapping}: {error}"
        );
    }
}
