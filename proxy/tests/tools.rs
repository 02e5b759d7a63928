//! Tool calls inferred by the gateway: an answer asks for a tool call, a later request carries
//! its result; the time between becomes an `execute_tool` span in the second request's trace,
//! linked to the GenAI span that asked. (The official SDKs' agent loops: tests/sdk.)

mod support;

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use llmtrace_mock::{MockConfig, MockServer};
use serde_json::{Value, json};

async fn post(listen: std::net::SocketAddr, body: &Value) -> (String, Value) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<bytes::Bytes>>();
    let request = http::Request::post(format!("http://{listen}/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("x-mock-ttft-ms", "1")
        .body(Full::from(body.to_string()))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let trace = response.headers()["x-llmtrace-trace-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (trace, serde_json::from_slice(&body).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_result_closes_an_execute_tool_span_linked_to_the_call() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let text = "[server]\nlisten = \"${LISTEN}\"\n[telemetry]\naccess_log = false\n\
                [[upstreams]]\nname = \"mock\"\nurl = \"${MOCK_URL}\"\nprovider = \"openai\"\n\
                [[routes]]\nupstream = \"mock\"\n";
    let gateway = support::TomlGateway::start(text, &mock.url(), "tools").await;
    let tool = json!({"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}});
    let mut messages =
        vec![json!({"role": "user", "content": "weather in Paris? use get_weather"})];
    let (asking_trace, answer) = post(
        gateway.listen,
        &json!({"model": "gpt-4o", "messages": messages, "tools": [tool]}),
    )
    .await;
    let message = answer["choices"][0]["message"].clone();
    let call_id = message["tool_calls"][0]["id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(300)).await;
    messages.push(message);
    messages.push(json!({"role": "tool", "tool_call_id": call_id, "content": "21 C"}));
    let (answer_trace, answer) = post(
        gateway.listen,
        &json!({"model": "gpt-4o", "messages": messages, "tools": [tool]}),
    )
    .await;
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");

    let spans = gateway.spans(Duration::from_millis(200)).await;
    let tools: Vec<&Value> = spans
        .iter()
        .filter(|s| s["attributes"]["gen_ai.operation.name"] == "execute_tool")
        .collect();
    assert_eq!(tools.len(), 1, "{spans:#?}");
    let span = tools[0];
    assert_eq!(span["name"], "execute_tool get_weather");
    assert_eq!(span["kind"], "internal");
    assert_eq!(span["attributes"]["gen_ai.tool.call.id"], call_id.as_str());
    assert_eq!(span["attributes"]["llmtrace.inferred"], "gateway");
    assert_eq!(span["trace_id"], answer_trace.as_str());
    let server = spans
        .iter()
        .find(|s| s["trace_id"] == answer_trace.as_str() && s["kind"] == "server")
        .unwrap();
    assert_eq!(span["parent_span_id"], server["span_id"]);
    let asking = spans
        .iter()
        .find(|s| s["trace_id"] == asking_trace.as_str() && s["kind"] == "client")
        .unwrap();
    assert_eq!(span["links"][0]["span_id"], asking["span_id"]);
    assert_eq!(span["links"][0]["trace_id"], asking_trace.as_str());
    let nanos = |key: &str| span[key].as_u64().unwrap();
    let seconds = (nanos("end_unix_nano") - nanos("start_unix_nano")) as f64 / 1e9;
    assert!((0.3..0.32).contains(&seconds), "{seconds}");
}
