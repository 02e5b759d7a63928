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

/// What one agent round trip through the gateway left: every span, the two requests' trace
/// ids, and the tool call the mock asked for (id, arguments as the answer gave them).
struct RoundTrip {
    spans: Vec<Value>,
    asking_trace: String,
    answer_trace: String,
    call_id: String,
    arguments: String,
}

impl RoundTrip {
    /// The `execute_tool` span (there must be one).
    fn tool_span(&self) -> &Value {
        let tools: Vec<&Value> = (self.spans.iter())
            .filter(|s| s["attributes"]["gen_ai.operation.name"] == "execute_tool")
            .collect();
        assert_eq!(tools.len(), 1, "{:#?}", self.spans);
        tools[0]
    }
}

/// A question that makes the mock call `get_weather`, 300 ms of "tool", then the result
/// `21 C` sent back, through a gateway with `[telemetry]` `capture_content` as given.
async fn round_trip(capture_content: bool, name: &str) -> RoundTrip {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let text = format!(
        "[server]\nlisten = \"${{LISTEN}}\"\n[telemetry]\naccess_log = false\n\
         capture_content = {capture_content}\n\
         [[upstreams]]\nname = \"mock\"\nurl = \"${{MOCK_URL}}\"\nprovider = \"openai\"\n\
         [[routes]]\nupstream = \"mock\"\n"
    );
    let gateway = support::TomlGateway::start(&text, &mock.url(), name).await;
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
    let call = &message["tool_calls"][0];
    let call_id = call["id"].as_str().unwrap().to_owned();
    let arguments = call["function"]["arguments"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(300)).await;
    messages.push(message);
    messages.push(json!({"role": "tool", "tool_call_id": call_id, "content": "21 C"}));
    let (answer_trace, answer) = post(
        gateway.listen,
        &json!({"model": "gpt-4o", "messages": messages, "tools": [tool]}),
    )
    .await;
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    RoundTrip {
        spans: gateway.spans(Duration::from_millis(200)).await,
        asking_trace,
        answer_trace,
        call_id,
        arguments,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_result_closes_an_execute_tool_span_linked_to_the_call() {
    let trip = round_trip(false, "tools").await;
    let (spans, span) = (&trip.spans, trip.tool_span());
    assert_eq!(span["name"], "execute_tool get_weather");
    assert_eq!(span["kind"], "internal");
    assert_eq!(
        span["attributes"]["gen_ai.tool.call.id"],
        trip.call_id.as_str()
    );
    assert_eq!(span["attributes"]["llmtrace.inferred"], "gateway");
    assert_eq!(span["trace_id"], trip.answer_trace.as_str());
    let server = spans
        .iter()
        .find(|s| s["trace_id"] == trip.answer_trace.as_str() && s["kind"] == "server")
        .unwrap();
    assert_eq!(span["parent_span_id"], server["span_id"]);
    let asking = spans
        .iter()
        .find(|s| s["trace_id"] == trip.asking_trace.as_str() && s["kind"] == "client")
        .unwrap();
    assert_eq!(span["links"][0]["span_id"], asking["span_id"]);
    assert_eq!(span["links"][0]["trace_id"], trip.asking_trace.as_str());
    let nanos = |key: &str| span[key].as_u64().unwrap();
    let seconds = (nanos("end_unix_nano") - nanos("start_unix_nano")) as f64 / 1e9;
    assert!((0.3..0.32).contains(&seconds), "{seconds}");
    // Without content capture the span names the call and nothing of what it carried.
    let mut keys: Vec<&str> = span["attributes"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "gen_ai.operation.name",
            "gen_ai.tool.call.id",
            "gen_ai.tool.name",
            "gen_ai.tool.type",
            "llmtrace.inferred"
        ]
    );
    let all = serde_json::to_string(spans).unwrap();
    assert!(!all.contains("21 C"), "the result leaked: {all}");
}

/// With content capture on, the span also carries the arguments the answer gave the call and
/// the result the client sent back; the asking span's output messages hold the call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_capture_the_execute_tool_span_carries_arguments_and_result() {
    let trip = round_trip(true, "tools-capture").await;
    let span = trip.tool_span();
    let attributes = &span["attributes"];
    assert_eq!(span["name"], "execute_tool get_weather");
    assert_eq!(attributes["gen_ai.tool.call.id"], trip.call_id.as_str());
    assert_eq!(
        attributes["gen_ai.tool.call.arguments"],
        trip.arguments.as_str()
    );
    let arguments: Value = serde_json::from_str(&trip.arguments).unwrap();
    assert!(arguments["city"].is_string(), "{arguments}");
    assert_eq!(attributes["gen_ai.tool.call.result"], "21 C");
    assert!(attributes.get("llmtrace.content.truncated").is_none());
    let asking = (trip.spans.iter())
        .find(|s| s["trace_id"] == trip.asking_trace.as_str() && s["kind"] == "client")
        .unwrap();
    let output = asking["attributes"]["gen_ai.output.messages"]
        .as_str()
        .unwrap();
    let output: Value = serde_json::from_str(output).unwrap();
    let part = (output[0]["parts"].as_array().unwrap().iter())
        .find(|p| p["type"] == "tool_call")
        .unwrap();
    assert_eq!(
        part,
        &json!({"type": "tool_call", "id": trip.call_id, "name": "get_weather",
            "arguments": arguments})
    );
}
