//! The trace-context service protocol end to end, over loopback: a harness sends the service
//! the header cases of `tests/data/trace_context_cases.json` and checks the `traceparent` and
//! `tracestate` the service sends on (through `ServerLayer` → handler → `ClientLayer`).
//!
//! The cases follow the current revision of the official W3C suite (`w3c/trace-context` commit
//! `acab820`, 41 tests, strict level 2): a repeated tracestate key is passed on as received, and a
//! key may hold `@` anywhere after its first character. The suite itself is run against
//! `examples/trace_context_service.rs` by hand (see the README); this test keeps the same path
//! covered in CI.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::routing::post;
use http::HeaderMap;
use llmtrace_test_support::*;
use opentelemetry_sdk::trace::Sampler;
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    name: String,
    headers: Vec<(String, String)>,
    expect: Expect,
}

#[derive(Deserialize)]
struct Expect {
    /// `continued` (the received trace id) or `restarted` (a new one).
    trace: String,
    flags: String,
    tracestate: Option<String>,
}

const RECEIVED_TRACE: &str = "12345678901234567890123456789012";
const RECEIVED_PARENT: &str = "1234567890123456";

#[tokio::test]
async fn every_case_propagates_as_the_specification_says() {
    let cases: Vec<Case> =
        serde_json::from_str(include_str!("data/trace_context_cases.json")).unwrap();
    // What a default SDK does: follow the parent's decision, sample new traces.
    let rec = Recorder::with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)));
    let service = serve(llmtrace_examples::trace_context::router(rec.tracer())).await;

    let received: Arc<Mutex<Vec<(String, HeaderMap)>>> = Arc::default();
    let sink = received.clone();
    let harness = serve(Router::new().route(
        "/callback/{id}",
        post(move |Path(id): Path<String>, headers: HeaderMap| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push((id, headers));
                "ok"
            }
        }),
    ))
    .await;

    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Body>();
    let mut failures = Vec::new();
    for case in &cases {
        received.lock().unwrap().clear();
        let body = serde_json::json!([
            {"url": format!("http://{harness}/callback/0"), "arguments": []},
            {"url": format!("http://{harness}/callback/1"), "arguments": []},
        ]);
        let mut request = http::Request::post(format!("http://{service}/test"));
        for (name, value) in &case.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let response = client
            .request(request.body(Body::from(body.to_string())).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{}", case.name);

        let calls = received.lock().unwrap().clone();
        assert_eq!(calls.len(), 2, "{}", case.name);
        if let Err(why) = check(&case.expect, &calls) {
            failures.push(format!("{}: {why}", case.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

fn check(expect: &Expect, calls: &[(String, HeaderMap)]) -> Result<(), String> {
    let mut parents = Vec::new();
    let mut traces = Vec::new();
    for (_, headers) in calls {
        let values: Vec<_> = headers.get_all("traceparent").iter().collect();
        if values.len() != 1 {
            return Err(format!("{} traceparent headers", values.len()));
        }
        let tp = values[0].to_str().unwrap();
        let parts: Vec<_> = tp.split('-').collect();
        if parts.len() != 4 || parts[0] != "00" || parts[1].len() != 32 || parts[2].len() != 16 {
            return Err(format!("malformed traceparent {tp}"));
        }
        if parts[3] != expect.flags {
            return Err(format!("flags {} instead of {}", parts[3], expect.flags));
        }
        if parts[2] == RECEIVED_PARENT {
            return Err("the received parent id was sent on instead of a new one".into());
        }
        traces.push(parts[1].to_owned());
        parents.push(parts[2].to_owned());
        let tracestate: Vec<_> = headers
            .get_all("tracestate")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        match (&expect.tracestate, tracestate.as_slice()) {
            (None, []) => {}
            (Some(want), [got]) if got == want => {}
            (want, got) => return Err(format!("tracestate {got:?} instead of {want:?}")),
        }
    }
    if traces[0] != traces[1] {
        return Err("the two hops are in different traces".into());
    }
    if parents[0] == parents[1] {
        return Err("both hops got the same parent id".into());
    }
    match (expect.trace.as_str(), traces[0] == RECEIVED_TRACE) {
        ("continued", true) | ("restarted", false) => Ok(()),
        (want, _) => Err(format!("trace {} is not {want}", traces[0])),
    }
}
