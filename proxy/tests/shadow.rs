//! Shadow traffic: a route mirrors its LLM requests to a second (slow) upstream. The client's
//! answer does not wait for it; the shadow's span is the root of its own trace, linked to the
//! primary GenAI span; the drift between the answers is recorded; the shadow upstream gets the
//! request with its own key, never the client's.

mod support;

use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use llmtrace_mock::{MockConfig, MockServer};
use serde_json::Value;

const CHAT: &str =
    r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;

async fn chat(listen: std::net::SocketAddr, extra: &[(&str, &str)]) -> (String, Duration) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<bytes::Bytes>>();
    let mut request = http::Request::post(format!("http://{listen}/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("authorization", "Bearer sk-client-secret");
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    let started = Instant::now();
    let response = client
        .request(request.body(Full::from(CHAT)).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (String::from_utf8(body.to_vec()).unwrap(), started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_shadow_neither_delays_the_client_nor_hides_its_drift() {
    let primary = MockServer::start(MockConfig {
        ttft: Duration::from_millis(20),
        gap: Duration::from_millis(2),
        tokens: 5,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let shadow = MockServer::start(MockConfig {
        ttft: Duration::from_millis(800),
        gap: Duration::from_millis(2),
        tokens: 7,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let text = "[server]\nlisten = \"${LISTEN}\"\n[telemetry]\naccess_log = false\n\
                [[upstreams]]\nname = \"primary\"\nurl = \"${PRIMARY}\"\n\
                [[upstreams]]\nname = \"candidate\"\nurl = \"${SHADOW}\"\napi_key = \"sk-shadow\"\n\
                [[routes]]\nupstream = \"primary\"\n\
                [routes.shadow]\nupstream = \"candidate\"\nshare = 1.0\n";
    let gateway = support::TomlGateway::start_with(
        text,
        &[("PRIMARY", &primary.url()), ("SHADOW", &shadow.url())],
        "shadow",
    )
    .await;

    // The shadow answers 800 ms in; the client has its whole answer long before.
    let (answer, took) = chat(gateway.listen, &[]).await;
    assert!(answer.ends_with("data: [DONE]\n\n"), "{answer}");
    assert_eq!(
        support::content_tokens(&answer),
        5,
        "the primary's answer: {answer}"
    );
    assert!(
        took < Duration::from_millis(800),
        "the client waited for the shadow (first token due at 800 ms): {took:?}"
    );
    // The same answer from both (the header wins over each mock's default).
    let (_, _) = chat(gateway.listen, &[("x-mock-tokens", "4")]).await;

    let mut spans = Vec::new();
    for _ in 0..100 {
        spans = gateway.spans(Duration::from_millis(50)).await;
        if spans
            .iter()
            .filter(|s| s["attributes"]["llmtrace.shadow"] == true)
            .count()
            == 2
        {
            break;
        }
    }
    let shadows: Vec<&Value> = spans
        .iter()
        .filter(|s| s["attributes"]["llmtrace.shadow"] == true)
        .collect();
    assert_eq!(shadows.len(), 2, "{spans:#?}");
    for shadow_span in &shadows {
        // A root of its own trace, linked to the primary GenAI span.
        assert!(shadow_span["parent_span_id"].is_null());
        let link = &shadow_span["links"][0];
        let primary_span = spans
            .iter()
            .find(|s| s["span_id"] == link["span_id"])
            .expect("the linked primary span");
        assert_eq!(primary_span["trace_id"], link["trace_id"]);
        assert_ne!(primary_span["trace_id"], shadow_span["trace_id"]);
        assert_eq!(primary_span["kind"], "client");
        assert!(primary_span["attributes"]["llmtrace.shadow"].is_null());
        assert_eq!(
            shadow_span["attributes"]["llmtrace.shadow.upstream"],
            "candidate"
        );
        assert_eq!(
            shadow_span["attributes"]["llmtrace.shadow.primary"],
            "complete"
        );
        assert_eq!(
            shadow_span["attributes"]["llmtrace.shadow.finish_reason.match"],
            true
        );
        let ttft = shadow_span["attributes"]["gen_ai.response.time_to_first_chunk"]
            .as_f64()
            .unwrap();
        assert!(ttft >= 0.8, "{ttft}");
    }
    let equal: Vec<bool> = shadows
        .iter()
        .map(|s| {
            s["attributes"]["llmtrace.shadow.output.equal"]
                .as_bool()
                .unwrap()
        })
        .collect();
    assert_eq!(equal.iter().filter(|e| **e).count(), 1, "{shadows:#?}");
    let different = shadows
        .iter()
        .find(|s| s["attributes"]["llmtrace.shadow.output.equal"] == false)
        .unwrap();
    let ratio = different["attributes"]["llmtrace.shadow.length_ratio"]
        .as_f64()
        .unwrap();
    assert!(ratio > 1.3, "7 tokens against 5: {ratio}");

    // Both upstreams got the client's body; only the primary its key.
    let (to_primary, to_shadow) = (primary.received_requests(), shadow.received_requests());
    assert_eq!((to_primary.len(), to_shadow.len()), (2, 2));
    for (p, s) in to_primary.iter().zip(&to_shadow) {
        assert_eq!(p.body, s.body);
        support::assert_forwarded(CHAT.as_bytes(), &s.body, true);
        assert_eq!(p.headers["authorization"], "Bearer sk-client-secret");
        assert_eq!(s.headers["authorization"], "Bearer sk-shadow");
    }
    // Counted by outcome.
    let metrics = gateway.telemetry.prometheus.render();
    for outcome in ["equal", "different"] {
        let line = metrics
            .lines()
            .find(|l| {
                l.starts_with("llmtrace_proxy_shadow_requests_total{")
                    && l.contains(&format!("outcome=\"{outcome}\""))
            })
            .unwrap_or_else(|| panic!("{metrics}"));
        assert!(line.ends_with(" 1"), "{line}");
    }
}
