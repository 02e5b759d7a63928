//! Evaluations on the admin listener (`POST /api/evaluations`): an evaluation posted after its
//! trace ended is exported in that trace, under and linked to the evaluated GenAI span, with
//! the conventions' attributes and event, and counted on `/metrics`; bad input gets 400 naming
//! the field, a large body 413. With tail sampling, an evaluation that arrives before the
//! decision keeps its trace through an attribute policy on its label.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use llmtrace_mock::{MockConfig, MockServer};
use llmtrace_test_support::{READY_TIMEOUT, reserve_port, wait_until_ready};
use serde_json::Value;
use support::TomlGateway;

const CONFIG: &str = "[server]\nlisten = \"${LISTEN}\"\nadmin = \"${ADMIN}\"\n\
                      [telemetry]\naccess_log = false\n\
                      [[upstreams]]\nname = \"mock\"\nurl = \"${MOCK_URL}\"\n\
                      [[routes]]\nupstream = \"mock\"\n";

const TAIL: &str = "[tail]\ndecision_wait_ms = 1500\nfallback_ratio = 0.0\npolicies = [ \
                    { attribute = { key = \"gen_ai.evaluation.score.label\", value = \"hallucination\" } } ]\n";

async fn call(method: &str, url: String, body: Vec<u8>) -> (u16, http::HeaderMap, String) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<bytes::Bytes>>();
    let request = http::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(Full::from(body))
        .unwrap();
    let response = client.request(request).await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8(body.to_vec()).unwrap())
}

/// A gateway with its admin listener, from `CONFIG` followed by `extra`.
async fn gateway(mock: &MockServer, extra: &str, name: &str) -> (TomlGateway, SocketAddr) {
    let admin_port = reserve_port();
    let admin = admin_port.addr();
    let vars = [("MOCK_URL", mock.url()), ("ADMIN", admin.to_string())];
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let gateway = TomlGateway::start_with(&format!("{CONFIG}{extra}"), &vars, name).await;
    wait_until_ready(admin, READY_TIMEOUT).await.unwrap();
    drop(admin_port);
    (gateway, admin)
}

/// A plain chat through the gateway; its trace id.
async fn chat(proxy: SocketAddr) -> String {
    let body = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
    let url = format!("http://{proxy}/v1/chat/completions");
    let (status, headers, _) = call("POST", url, body.into()).await;
    assert_eq!(status, 200);
    headers["x-llmtrace-trace-id"].to_str().unwrap().to_owned()
}

async fn post(admin: SocketAddr, body: impl Into<Vec<u8>>) -> (u16, Value) {
    let url = format!("http://{admin}/api/evaluations");
    let (status, _, text) = call("POST", url, body.into()).await;
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// The exported spans of `trace` once `done` holds for them (10 s at most).
async fn spans_of(
    gateway: &TomlGateway,
    trace: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    for _ in 0..200 {
        let spans: Vec<Value> = gateway
            .spans(Duration::from_millis(50))
            .await
            .into_iter()
            .filter(|s| s["trace_id"] == trace)
            .collect();
        if done(&spans) {
            return spans;
        }
    }
    panic!("the spans of {trace} never came");
}

fn named<'a>(spans: &'a [Value], prefix: &str) -> Option<&'a Value> {
    spans
        .iter()
        .find(|s| s["name"].as_str().unwrap().starts_with(prefix))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evaluation_posted_after_its_trace_ended_is_exported_linked_and_counted() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let (gateway, admin) = gateway(&mock, "", "evaluations").await;
    let trace = chat(gateway.listen).await;
    // The trace ended: its server span and its GenAI span were exported.
    let spans = spans_of(&gateway, &trace, |s| {
        named(s, "POST").is_some() && named(s, "chat").is_some()
    })
    .await;
    let genai = named(&spans, "chat").unwrap()["span_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let evaluation = serde_json::json!({
        "trace_id": trace, "span_id": genai, "name": "faithfulness", "score": 0.2,
        "label": "hallucination", "explanation": "cites a policy that does not exist",
    });
    let (status, answer) = post(admin, evaluation.to_string()).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["recorded"][0]["trace_id"], trace.as_str());
    let recorded = answer["recorded"][0]["span_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let spans = spans_of(&gateway, &trace, |s| named(s, "evaluation").is_some()).await;
    let span = named(&spans, "evaluation").unwrap();
    assert_eq!(span["name"], "evaluation faithfulness");
    assert_eq!(span["span_id"], recorded.as_str());
    assert_eq!(span["kind"], "internal");
    assert_eq!(span["parent_span_id"], genai.as_str());
    assert_eq!(span["links"][0]["trace_id"], trace.as_str());
    assert_eq!(span["links"][0]["span_id"], genai.as_str());
    let event = &span["events"][0];
    assert_eq!(event["name"], "gen_ai.evaluation.result");
    for attributes in [&span["attributes"], &event["attributes"]] {
        assert_eq!(attributes["gen_ai.evaluation.name"], "faithfulness");
        assert_eq!(attributes["gen_ai.evaluation.score.value"], 0.2);
        assert_eq!(attributes["gen_ai.evaluation.score.label"], "hallucination");
        assert_eq!(
            attributes["gen_ai.evaluation.explanation"],
            "cites a policy that does not exist"
        );
    }

    let (_, _, metrics) = call("GET", format!("http://{admin}/metrics"), Vec::new()).await;
    assert!(
        metrics.lines().any(|l| {
            l.starts_with("llmtrace_gen_ai_evaluation_results_total{")
                && l.contains(r#"gen_ai_evaluation_name="faithfulness""#)
                && l.contains(r#"gen_ai_evaluation_score_label="hallucination""#)
                && l.ends_with(" 1")
        }),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "llmtrace_gen_ai_evaluation_score_count{gen_ai_evaluation_name=\"faithfulness\"} 1"
        ),
        "{metrics}"
    );

    for (body, field) in [
        ("{\"trace_id\":".to_owned(), "body"),
        (format!(r#"{{"trace_id":"{trace}","score":1}}"#), "name"),
        (r#"{"trace_id":"xyz","name":"n"}"#.to_owned(), "trace_id"),
        (
            format!(r#"{{"trace_id":"{trace}","name":"n","span_id":"0"}}"#),
            "span_id",
        ),
        (
            format!(r#"{{"trace_id":"{trace}","name":"n","score":"NaN"}}"#),
            "score",
        ),
        // Not a finite number: JSON has no spelling for one.
        (
            format!(r#"{{"trace_id":"{trace}","name":"n","score":1e999}}"#),
            "body",
        ),
    ] {
        let (status, answer) = post(admin, body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["field"], field, "{body}: {answer}");
    }
    let (status, _, _) = call("GET", format!("http://{admin}/api/evaluations"), Vec::new()).await;
    assert_eq!(status, 405);
    let (status, answer) = post(admin, vec![b' '; 70 * 1024]).await;
    assert_eq!(status, 413, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evaluation_that_arrives_before_the_tail_decision_keeps_its_trace() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let (gateway, admin) = gateway(&mock, TAIL, "evaluations-tail").await;
    let flagged = chat(gateway.listen).await;
    let unflagged = chat(gateway.listen).await;
    // No span id: the evaluation is of the trace as a whole.
    let body = serde_json::json!([
        { "trace_id": flagged, "name": "faithfulness", "label": "hallucination" },
        { "trace_id": unflagged, "name": "faithfulness", "label": "faithful" },
    ]);
    let (status, answer) = post(admin, body.to_string()).await;
    assert_eq!(status, 202, "{answer}");

    let kept = spans_of(&gateway, &flagged, |s| s.len() >= 3).await;
    let reasons: Vec<&Value> = kept
        .iter()
        .map(|s| &s["attributes"]["llmtrace.sampling.reason"])
        .filter(|r| r.is_string())
        .collect();
    assert!(
        !reasons.is_empty()
            && reasons
                .iter()
                .all(|r| *r == "attribute:gen_ai.evaluation.score.label"),
        "{kept:#?}"
    );
    assert!(named(&kept, "chat").is_some() && named(&kept, "evaluation").is_some());
    // The other trace's decision is due by now: nothing of it was kept.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let all = gateway.spans(Duration::from_millis(50)).await;
    assert!(
        all.iter().all(|s| s["trace_id"] != unflagged.as_str()),
        "{all:#?}"
    );
}
