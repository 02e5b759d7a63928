//! The mock over a real loopback connection (hyper-util's client): exact wire formats of every
//! endpoint and fault, and the timing of each body frame.

use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use llmtrace_mock::{MockConfig, MockServer, REFUSAL, generated_text};
use serde_json::{Value, json};

/// How far a measured time may be from the scheduled one (loopback, a busy 2-core machine).
const TOLERANCE: Duration = Duration::from_millis(10);

// === harness ===

fn client(http2: bool) -> Client<HttpConnector, Full<Bytes>> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .http2_only(http2)
        .build(connector)
}

/// A response read frame by frame, each frame stamped with its arrival since the request left.
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    frames: Vec<(Duration, Bytes)>,
    /// The body failed (connection cut) after the frames.
    error: Option<String>,
}

impl Reply {
    fn text(&self) -> String {
        self.frames
            .iter()
            .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
            .collect()
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.text()).expect("a JSON body")
    }

    /// The SSE events, one per frame (asserted), with their arrival times.
    fn events(&self) -> Vec<Event> {
        self.frames
            .iter()
            .map(|(at, bytes)| {
                let text = std::str::from_utf8(bytes).expect("UTF-8 frame");
                assert!(
                    text.ends_with("\n\n"),
                    "a frame is one whole event: {text:?}"
                );
                assert_eq!(
                    text.matches("\n\n").count(),
                    1,
                    "one event per frame: {text:?}"
                );
                let mut event = Event {
                    at: *at,
                    name: None,
                    data: String::new(),
                };
                for line in text.trim_end().lines() {
                    if let Some(name) = line.strip_prefix("event: ") {
                        event.name = Some(name.to_owned());
                    } else if let Some(data) = line.strip_prefix("data: ") {
                        event.data = data.to_owned();
                    } else {
                        panic!("unexpected SSE line {line:?}");
                    }
                }
                event
            })
            .collect()
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("header {name} missing"))
            .to_str()
            .unwrap()
    }
}

#[derive(Debug)]
struct Event {
    at: Duration,
    name: Option<String>,
    data: String,
}

impl Event {
    fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("{e}: {:?}", self.data))
    }
}

async fn send(
    server: &MockServer,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Reply {
    send_with(&client(false), server, path, headers, body).await
}

async fn send_with(
    client: &Client<HttpConnector, Full<Bytes>>,
    server: &MockServer,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Reply {
    let method = if body.is_some() { "POST" } else { "GET" };
    let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
    send_bytes(client, server, method, path, headers, body).await
}

/// Any method, any body bytes (`content-type: application/json` all the same).
async fn send_raw(
    server: &MockServer,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Reply {
    send_bytes(&client(false), server, method, path, headers, body.into()).await
}

async fn send_bytes(
    client: &Client<HttpConnector, Full<Bytes>>,
    server: &MockServer,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Reply {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("{}{path}", server.url()))
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let started = Instant::now();
    let response = client
        .request(req.body(Full::new(body)).unwrap())
        .await
        .expect("response");
    let (parts, mut body) = response.into_parts();
    let mut frames = Vec::new();
    let mut error = None;
    loop {
        match body.frame().await {
            None => break,
            Some(Ok(frame)) => {
                // (HTTP/2 ends a stream with an empty DATA frame.)
                if let Some(data) = frame.into_data().ok().filter(|d| !d.is_empty()) {
                    frames.push((started.elapsed(), data));
                }
            }
            Some(Err(e)) => {
                error = Some(e.to_string());
                break;
            }
        }
    }
    Reply {
        status: parts.status,
        headers: parts.headers,
        frames,
        error,
    }
}

async fn server() -> MockServer {
    MockServer::start(MockConfig::default())
        .await
        .expect("mock starts")
}

fn chat(stream: bool) -> Value {
    json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Say hello to the world"}
        ],
        "stream": stream,
    })
}

/// A time counted from the request: never early, at most `TOLERANCE` late.
fn near(measured: Duration, expected: Duration, what: &str) -> Result<(), String> {
    if measured + Duration::from_millis(1) >= expected && measured <= expected + TOLERANCE {
        Ok(())
    } else {
        Err(format!(
            "{what}: measured {measured:?}, expected {expected:?} (tolerance {TOLERANCE:?})"
        ))
    }
}

/// A time between two arrivals: a late first arrival shortens it, so `TOLERANCE` either way.
fn gap(measured: Duration, expected: Duration, what: &str) -> Result<(), String> {
    if measured + TOLERANCE >= expected && measured <= expected + TOLERANCE {
        Ok(())
    } else {
        Err(format!(
            "{what}: measured {measured:?}, expected {expected:?} (tolerance ±{TOLERANCE:?})"
        ))
    }
}

/// Sends a request until `timing` accepts the reply, 3 times at most, and returns the reply.
///
/// A busy machine (CI runs tests on 2 cores) can delay one run's frames; a wrong schedule
/// fails every run.
async fn timed(
    client: &Client<HttpConnector, Full<Bytes>>,
    server: &MockServer,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
    timing: impl Fn(&Reply) -> Result<(), String>,
) -> Reply {
    let mut failures = Vec::new();
    for _ in 0..3 {
        let reply = send_with(client, server, path, headers, body.clone()).await;
        match timing(&reply) {
            Ok(()) => return reply,
            Err(e) => failures.push(e),
        }
    }
    panic!("timing off in 3 runs:\n{}", failures.join("\n"));
}

const FAST: [(&str, &str); 2] = [("x-mock-ttft-ms", "0"), ("x-mock-gap-ms", "0")];

fn fast(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    FAST.iter().chain(extra).copied().collect()
}

// === chat completions ===

#[tokio::test]
async fn chat_stream_wire_format_and_timing() {
    let server = server().await;
    let headers = [
        ("x-mock-ttft-ms", "60"),
        ("x-mock-gap-ms", "25"),
        ("x-mock-tokens", "6"),
    ];
    // Timing: first token at the TTFT, then one every gap, each in its own frame.
    let reply = timed(
        &client(false),
        &server,
        "/v1/chat/completions",
        &headers,
        Some(chat(true)),
        |reply| {
            let events = reply.events();
            near(
                events[1].at,
                Duration::from_millis(60),
                "time to first token",
            )?;
            for pair in events[1..7].windows(2) {
                gap(
                    pair[1].at - pair[0].at,
                    Duration::from_millis(25),
                    "gap between tokens",
                )?;
            }
            gap(
                events[8].at - events[6].at,
                Duration::ZERO,
                "the end follows the last token at once",
            )
        },
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type"),
        "text/event-stream; charset=utf-8"
    );
    assert_eq!(reply.header("cache-control"), "no-cache");
    assert!(reply.header("x-request-id").starts_with("req_"));
    assert!(reply.error.is_none());

    let events = reply.events();
    assert!(
        events.iter().all(|e| e.name.is_none()),
        "chat streams have no event: lines"
    );
    let (done, chunks) = events.split_last().unwrap();
    assert_eq!(done.data, "[DONE]");
    let chunks: Vec<(Duration, Value)> = chunks.iter().map(|e| (e.at, e.json())).collect();
    let id = chunks[0].1["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("chatcmpl-"));
    for (_, c) in &chunks {
        assert_eq!(c["id"], id.as_str());
        assert_eq!(c["object"], "chat.completion.chunk");
        assert!(c["created"].as_u64().unwrap() > 1_700_000_000);
        assert_eq!(c["model"], "gpt-4o-mini");
        assert!(c["system_fingerprint"].as_str().unwrap().starts_with("fp_"));
        assert!(
            c.get("usage").is_none(),
            "no usage key without include_usage: {c}"
        );
        assert_eq!(c["choices"].as_array().unwrap().len(), 1);
    }
    // Role first, then one token per chunk, then the finish reason.
    assert_eq!(
        chunks[0].1["choices"][0]["delta"],
        json!({"role": "assistant", "content": "", "refusal": null})
    );
    let tokens: Vec<&str> = chunks[1..7]
        .iter()
        .map(|(_, c)| c["choices"][0]["delta"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(
        tokens,
        ["tok0", " tok1", " tok2", " tok3", " tok4", " tok5"]
    );
    assert_eq!(tokens.concat(), generated_text(6));
    assert!(
        chunks[1..7]
            .iter()
            .all(|(_, c)| c["choices"][0]["finish_reason"].is_null())
    );
    let last = &chunks[7].1["choices"][0];
    assert_eq!(last["delta"], json!({}));
    assert_eq!(last["finish_reason"], "stop");
    assert_eq!(chunks.len(), 8);
}

#[tokio::test]
async fn chat_stream_include_usage_sends_exactly_one_usage_chunk() {
    let server = server().await;
    let mut body = chat(true);
    body["stream_options"] = json!({"include_usage": true});
    let headers = fast(&[
        ("x-mock-tokens", "5"),
        ("x-mock-cached-tokens", "2"),
        ("x-mock-reasoning-tokens", "3"),
    ]);
    let reply = send(&server, "/v1/chat/completions", &headers, Some(body)).await;
    let events = reply.events();
    assert_eq!(events.last().unwrap().data, "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(Event::json).collect();
    let with_usage: Vec<&Value> = chunks.iter().filter(|c| !c["usage"].is_null()).collect();
    assert_eq!(with_usage.len(), 1, "exactly one usage chunk");
    assert!(
        chunks.iter().all(|c| c.get("usage").is_some()),
        "every chunk carries usage (null)"
    );
    let usage_chunk = chunks.last().unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(
        usage_chunk["usage"],
        json!({
            "prompt_tokens": 8,
            "completion_tokens": 8,
            "total_tokens": 16,
            "prompt_tokens_details": {"cached_tokens": 2, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 3, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
        })
    );
    assert_eq!(
        chunks[chunks.len() - 2]["choices"][0]["finish_reason"],
        "stop"
    );
}

#[tokio::test]
async fn usage_modes() {
    let server = server().await;
    let usage_chunks = |reply: &Reply| {
        reply
            .events()
            .iter()
            .filter(|e| e.data != "[DONE]" && e.json()["choices"] == json!([]))
            .count()
    };
    let always = send(
        &server,
        "/v1/chat/completions",
        &fast(&[("x-mock-usage", "always")]),
        Some(chat(true)),
    )
    .await;
    assert_eq!(usage_chunks(&always), 1);
    let mut asked = chat(true);
    asked["stream_options"] = json!({"include_usage": true});
    let never = send(
        &server,
        "/v1/chat/completions",
        &fast(&[("x-mock-usage", "never")]),
        Some(asked),
    )
    .await;
    assert_eq!(usage_chunks(&never), 0);
    let full = send(
        &server,
        "/v1/chat/completions",
        &fast(&[("x-mock-usage", "never")]),
        Some(chat(false)),
    )
    .await;
    assert!(full.json().get("usage").is_none());
}

#[tokio::test]
async fn chat_n2_interleaves_choices() {
    let server = server().await;
    let mut body = chat(true);
    body["n"] = json!(2);
    let reply = send(
        &server,
        "/v1/chat/completions",
        &fast(&[("x-mock-tokens", "3")]),
        Some(body),
    )
    .await;
    let events = reply.events();
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(Event::json).collect();
    let indexes: Vec<u64> = chunks
        .iter()
        .map(|c| c["choices"][0]["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indexes, [0, 1, 0, 1, 0, 1, 0, 1, 0, 1]);
    for i in 0..2 {
        let text: String = chunks
            .iter()
            .filter(|c| c["choices"][0]["index"] == i)
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(text, "tok0 tok1 tok2");
    }
}

#[tokio::test]
async fn chat_non_streaming() {
    let server = server().await;
    let headers = [
        ("x-mock-ttft-ms", "30"),
        ("x-mock-gap-ms", "10"),
        ("x-mock-tokens", "4"),
    ];
    let reply = timed(
        &client(false),
        &server,
        "/v1/chat/completions",
        &headers,
        Some(chat(false)),
        |reply| {
            near(
                reply.frames[0].0,
                Duration::from_millis(30 + 3 * 10),
                "whole answer when the last token is due",
            )
        },
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), "application/json");
    assert_eq!(reply.frames.len(), 1, "a JSON answer is written whole");
    let body = reply.json();
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "gpt-4o-mini");
    assert_eq!(
        body["choices"],
        json!([{
            "index": 0,
            "message": {"role": "assistant", "content": "tok0 tok1 tok2 tok3", "refusal": null, "annotations": []},
            "logprobs": null,
            "finish_reason": "stop"
        }])
    );
    assert_eq!(body["usage"]["prompt_tokens"], 8);
    assert_eq!(body["usage"]["completion_tokens"], 4);
    assert_eq!(body["usage"]["total_tokens"], 12);
}

#[tokio::test]
async fn max_tokens_finishes_with_length() {
    let server = server().await;
    let mut body = chat(true);
    body["max_completion_tokens"] = json!(3);
    body["stream_options"] = json!({"include_usage": true});
    let reply = send(&server, "/v1/chat/completions", &fast(&[]), Some(body)).await;
    let events = reply.events();
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(Event::json).collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "tok0 tok1 tok2");
    assert_eq!(
        chunks[chunks.len() - 2]["choices"][0]["finish_reason"],
        "length"
    );
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], 3);

    let mut body = chat(false);
    body["max_tokens"] = json!(2);
    let reply = send(&server, "/v1/chat/completions", &fast(&[]), Some(body)).await;
    assert_eq!(reply.json()["choices"][0]["finish_reason"], "length");
}

fn weather_tools() -> Value {
    json!([{
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}, "required": ["city"]}
        }
    }])
}

#[tokio::test]
async fn chat_tool_calls_stream() {
    let server = server().await;
    let mut body = chat(true);
    body["messages"] =
        json!([{"role": "user", "content": "What is the weather in Paris? Use the tool."}]);
    body["tools"] = weather_tools();
    let reply = send(&server, "/v1/chat/completions", &fast(&[]), Some(body)).await;
    let events = reply.events();
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(Event::json).collect();
    let first = &chunks[0]["choices"][0]["delta"];
    assert_eq!(first["role"], "assistant");
    assert!(first["content"].is_null());
    let call = &first["tool_calls"][0];
    assert_eq!(call["index"], 0);
    assert!(call["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(call["type"], "function");
    assert_eq!(
        call["function"],
        json!({"name": "get_weather", "arguments": ""})
    );
    let fragments: Vec<&str> = chunks[1..chunks.len() - 1]
        .iter()
        .map(|c| {
            let tc = &c["choices"][0]["delta"]["tool_calls"][0];
            assert_eq!(tc["index"], 0);
            assert!(
                tc.get("id").is_none(),
                "only the first fragment names the call"
            );
            tc["function"]["arguments"].as_str().unwrap()
        })
        .collect();
    assert!(fragments.len() > 1, "arguments arrive in fragments");
    let arguments: Value = serde_json::from_str(&fragments.concat()).unwrap();
    assert_eq!(arguments, json!({"city": "mock", "days": 1}));
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "tool_calls"
    );

    // Not asked for: text. After a tool result: text.
    let mut body = chat(false);
    body["tools"] = weather_tools();
    let reply = send(
        &server,
        "/v1/chat/completions",
        &fast(&[]),
        Some(body.clone()),
    )
    .await;
    assert_eq!(reply.json()["choices"][0]["finish_reason"], "stop");
    // Forced by the header, non-streaming.
    let reply = send(
        &server,
        "/v1/chat/completions",
        &fast(&[("x-mock-fault", "tools")]),
        Some(body),
    )
    .await;
    let choice = &reply.json()["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert!(choice["message"]["content"].is_null());
    assert_eq!(
        choice["message"]["tool_calls"][0]["function"]["name"],
        "get_weather"
    );
    assert_eq!(
        choice["message"]["tool_calls"][0]["function"]["arguments"],
        r#"{"city":"mock","days":1}"#
    );
}

#[tokio::test]
async fn content_filter_and_refusal() {
    let server = server().await;
    let reply = send(
        &server,
        "/v1/chat/completions",
        &fast(&[("x-mock-fault", "content-filter"), ("x-mock-tokens", "6")]),
        Some(chat(true)),
    )
    .await;
    let events = reply.events();
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(Event::json).collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "tok0 tok1 tok2");
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "content_filter"
    );

    let reply = send(
        &server,
        "/v1/chat/completions",
        &fast(&[("x-mock-fault", "refusal")]),
        Some(chat(true)),
    )
    .await;
    let events = reply.events();
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(Event::json).collect();
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": null, "refusal": ""})
    );
    let refusal: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["refusal"].as_str())
        .collect();
    assert_eq!(refusal, REFUSAL);
    assert!(chunks.iter().all(|c| {
        c["choices"][0]["delta"]
            .get("content")
            .is_none_or(Value::is_null)
    }));

    let reply = send(
        &server,
        "/v1/chat/completions",
        &fast(&[("x-mock-fault", "refusal")]),
        Some(chat(false)),
    )
    .await;
    let message = &reply.json()["choices"][0]["message"];
    assert!(message["content"].is_null());
    assert_eq!(message["refusal"], REFUSAL);
}

#[tokio::test]
async fn azure_path_uses_the_deployment_and_sends_prompt_filter_results() {
    let server = server().await;
    let mut body = chat(true);
    body.as_object_mut().unwrap().remove("model");
    let path = "/openai/deployments/my-gpt4o/chat/completions?api-version=2024-10-21";
    let reply = send(&server, path, &fast(&[("x-mock-tokens", "2")]), Some(body)).await;
    let events = reply.events();
    let first = events[0].json();
    assert_eq!(first["choices"], json!([]));
    assert!(first["prompt_filter_results"][0]["content_filter_results"].is_object());
    let second = events[1].json();
    assert_eq!(second["model"], "my-gpt4o");
    assert_eq!(events.last().unwrap().data, "[DONE]");
}

// === completions, embeddings, models ===

#[tokio::test]
async fn completions_stream_and_whole() {
    let server = server().await;
    let body = json!({"model": "gpt-3.5-turbo-instruct", "prompt": "Once upon a time", "stream": true, "stream_options": {"include_usage": true}});
    let reply = send(
        &server,
        "/v1/completions",
        &fast(&[("x-mock-tokens", "3")]),
        Some(body),
    )
    .await;
    let events = reply.events();
    assert_eq!(events.last().unwrap().data, "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(Event::json).collect();
    assert!(chunks.iter().all(
        |c| c["object"] == "text_completion" && c["id"].as_str().unwrap().starts_with("cmpl-")
    ));
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["text"].as_str())
        .collect();
    assert_eq!(text, "tok0 tok1 tok2");
    assert_eq!(chunks[3]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[4]["choices"], json!([]));
    assert_eq!(
        chunks[4]["usage"],
        json!({"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7})
    );
    assert_eq!(chunks.iter().filter(|c| !c["usage"].is_null()).count(), 1);

    let body =
        json!({"model": "gpt-3.5-turbo-instruct", "prompt": "Once upon a time", "max_tokens": 2});
    let reply = send(&server, "/v1/completions", &fast(&[]), Some(body)).await;
    let body = reply.json();
    assert_eq!(body["choices"][0]["text"], "tok0 tok1");
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert_eq!(body["usage"]["completion_tokens"], 2);
}

#[tokio::test]
async fn embeddings_float_and_base64_agree() {
    let server = server().await;
    let body = json!({"model": "text-embedding-3-small", "input": ["hello world", "bye"], "dimensions": 8});
    let floats = send(&server, "/v1/embeddings", &fast(&[]), Some(body.clone()))
        .await
        .json();
    assert_eq!(floats["object"], "list");
    assert_eq!(
        floats["usage"],
        json!({"prompt_tokens": 3, "total_tokens": 3})
    );
    assert_eq!(floats["data"][1]["index"], 1);
    assert_eq!(floats["data"][1]["object"], "embedding");
    let mut b64 = body;
    b64["encoding_format"] = json!("base64");
    let encoded = send(&server, "/v1/embeddings", &fast(&[]), Some(b64))
        .await
        .json();
    for i in 0..2 {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded["data"][i]["embedding"].as_str().unwrap())
            .unwrap();
        let decoded: Vec<f32> = bytes
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let direct: Vec<f32> = floats["data"][i]["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(decoded, direct);
    }
    let default_dims = send(
        &server,
        "/v1/embeddings",
        &fast(&[]),
        Some(json!({"model": "text-embedding-3-small", "input": "x"})),
    )
    .await
    .json();
    assert_eq!(
        default_dims["data"][0]["embedding"]
            .as_array()
            .unwrap()
            .len(),
        1536
    );
}

#[tokio::test]
async fn models_and_unknown_paths() {
    let server = server().await;
    let list = send(&server, "/v1/models", &[], None).await.json();
    assert_eq!(list["object"], "list");
    assert!(
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == "gpt-4o")
    );
    let anthropic = send(
        &server,
        "/v1/models",
        &[("anthropic-version", "2023-06-01")],
        None,
    )
    .await
    .json();
    assert_eq!(anthropic["has_more"], false);
    assert_eq!(anthropic["data"][0]["type"], "model");
    let one = send(&server, "/v1/models/gpt-4o", &[], None).await.json();
    assert_eq!(
        one,
        json!({"id": "gpt-4o", "object": "model", "created": 1_715_367_049u64, "owned_by": "system"})
    );
    let missing = send(&server, "/v1/nope", &[], Some(json!({}))).await;
    assert_eq!(missing.status, 404);
    assert_eq!(
        missing.json()["error"]["message"],
        "Invalid URL (POST /v1/nope)"
    );
}

// === Responses API ===

#[tokio::test]
async fn responses_stream_events() {
    let server = server().await;
    let body = json!({"model": "gpt-4.1", "instructions": "Be brief.", "input": "Tell me a story", "stream": true});
    let headers = [
        ("x-mock-ttft-ms", "40"),
        ("x-mock-gap-ms", "15"),
        ("x-mock-tokens", "3"),
    ];
    let reply = timed(
        &client(false),
        &server,
        "/v1/responses",
        &headers,
        Some(body),
        |reply| {
            let events = reply.events();
            near(
                events[0].at,
                Duration::ZERO,
                "response.created goes out at once",
            )?;
            near(
                events[4].at,
                Duration::from_millis(40),
                "first delta at the TTFT",
            )?;
            gap(
                events[6].at - events[5].at,
                Duration::from_millis(15),
                "gap",
            )
        },
    )
    .await;
    let events = reply.events();
    let names: Vec<&str> = events.iter().map(|e| e.name.as_deref().unwrap()).collect();
    assert_eq!(
        names,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    for (i, e) in events.iter().enumerate() {
        let data = e.json();
        assert_eq!(
            data["type"],
            e.name.as_deref().unwrap(),
            "event: line matches data.type"
        );
        assert_eq!(data["sequence_number"], i as u64);
    }
    let deltas: String = events[4..7]
        .iter()
        .map(|e| e.json()["delta"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(deltas, "tok0 tok1 tok2");
    assert_eq!(events[7].json()["text"], "tok0 tok1 tok2");
    let done = events[10].json();
    let response = &done["response"];
    assert_eq!(response["status"], "completed");
    assert!(response["id"].as_str().unwrap().starts_with("resp_"));
    assert_eq!(
        response["output"][0]["content"][0]["text"],
        "tok0 tok1 tok2"
    );
    assert_eq!(
        response["usage"],
        json!({"input_tokens": 6, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 3, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 9})
    );
}

#[tokio::test]
async fn responses_whole_incomplete_and_tools() {
    let server = server().await;
    let body = json!({"model": "gpt-4.1", "input": [{"role": "user", "content": [{"type": "input_text", "text": "Hi you"}]}], "max_output_tokens": 2});
    let reply = send(&server, "/v1/responses", &fast(&[]), Some(body))
        .await
        .json();
    assert_eq!(reply["object"], "response");
    assert_eq!(reply["status"], "incomplete");
    assert_eq!(
        reply["incomplete_details"],
        json!({"reason": "max_output_tokens"})
    );
    assert_eq!(reply["output"][0]["content"][0]["text"], "tok0 tok1");
    assert_eq!(reply["usage"]["input_tokens"], 2);

    let tools = json!([{"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}]);
    let body = json!({"model": "gpt-4.1", "input": "call the lookup tool", "tools": tools, "stream": true});
    let events = send(&server, "/v1/responses", &fast(&[]), Some(body))
        .await
        .events();
    let names: Vec<&str> = events.iter().map(|e| e.name.as_deref().unwrap()).collect();
    assert_eq!(names[2], "response.output_item.added");
    assert_eq!(events[2].json()["item"]["type"], "function_call");
    let args: String = events
        .iter()
        .filter(|e| e.name.as_deref() == Some("response.function_call_arguments.delta"))
        .map(|e| e.json()["delta"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(args, r#"{"q":"mock"}"#);
    let last = events.last().unwrap().json();
    assert_eq!(last["response"]["output"][0]["name"], "lookup");
    assert_eq!(last["response"]["output"][0]["arguments"], args.as_str());
}

// === Anthropic ===

fn claude(stream: bool) -> Value {
    json!({
        "model": "claude-sonnet-4-6",
        "max_tokens": 1024,
        "system": "Be kind.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello Claude there"}]}],
        "stream": stream,
    })
}

#[tokio::test]
async fn anthropic_stream_events_and_timing() {
    let server = server().await;
    let headers = [
        ("x-mock-ttft-ms", "50"),
        ("x-mock-gap-ms", "20"),
        ("x-mock-tokens", "4"),
        ("x-mock-cached-tokens", "2"),
    ];
    let reply = timed(
        &client(false),
        &server,
        "/v1/messages",
        &headers,
        Some(claude(true)),
        |reply| {
            let events = reply.events();
            near(
                events[0].at,
                Duration::ZERO,
                "message_start goes out at once",
            )?;
            near(
                events[3].at,
                Duration::from_millis(50),
                "first text delta at the TTFT",
            )?;
            for pair in events[3..7].windows(2) {
                gap(pair[1].at - pair[0].at, Duration::from_millis(20), "gap")?;
            }
            Ok(())
        },
    )
    .await;
    assert_eq!(
        reply.header("content-type"),
        "text/event-stream; charset=utf-8"
    );
    assert!(reply.header("request-id").starts_with("req_"));
    let events = reply.events();
    let names: Vec<&str> = events.iter().map(|e| e.name.as_deref().unwrap()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    for e in &events {
        assert_eq!(e.json()["type"], e.name.as_deref().unwrap());
    }
    let start = events[0].json();
    assert!(
        start["message"]["id"]
            .as_str()
            .unwrap()
            .starts_with("msg_01")
    );
    assert_eq!(
        start["message"]["usage"]["input_tokens"], 3,
        "5 prompt words less 2 read from cache"
    );
    assert_eq!(start["message"]["usage"]["cache_read_input_tokens"], 2);
    assert_eq!(start["message"]["usage"]["cache_creation_input_tokens"], 0);
    let text: String = events[3..7]
        .iter()
        .map(|e| e.json()["delta"]["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(text, "tok0 tok1 tok2 tok3");
    let delta = events[8].json();
    assert_eq!(
        delta["delta"],
        json!({"stop_reason": "end_turn", "stop_sequence": null})
    );
    assert_eq!(delta["usage"]["output_tokens"], 4);
}

#[tokio::test]
async fn anthropic_whole_max_tokens_tools_and_validation() {
    let server = server().await;
    let mut body = claude(false);
    body["max_tokens"] = json!(3);
    let reply = send(&server, "/v1/messages", &fast(&[]), Some(body))
        .await
        .json();
    assert_eq!(reply["type"], "message");
    assert_eq!(reply["role"], "assistant");
    assert_eq!(
        reply["content"],
        json!([{"type": "text", "text": "tok0 tok1 tok2"}])
    );
    assert_eq!(reply["stop_reason"], "max_tokens");
    assert_eq!(
        reply["usage"],
        json!({"input_tokens": 5, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 3, "service_tier": "standard"})
    );

    let mut body = claude(true);
    body["tools"] = json!([{"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]);
    body["tool_choice"] = json!({"type": "any"});
    let events = send(&server, "/v1/messages", &fast(&[]), Some(body))
        .await
        .events();
    let block = events
        .iter()
        .find(|e| e.name.as_deref() == Some("content_block_start"))
        .unwrap()
        .json();
    assert_eq!(block["content_block"]["type"], "tool_use");
    assert!(
        block["content_block"]["id"]
            .as_str()
            .unwrap()
            .starts_with("toolu_")
    );
    let json_text: String = events
        .iter()
        .filter(|e| e.name.as_deref() == Some("content_block_delta"))
        .map(|e| {
            e.json()["delta"]["partial_json"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(json_text, r#"{"city":"mock"}"#);
    let delta = events
        .iter()
        .find(|e| e.name.as_deref() == Some("message_delta"))
        .unwrap()
        .json();
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");

    let mut body = claude(false);
    body.as_object_mut().unwrap().remove("max_tokens");
    let reply = send(&server, "/v1/messages", &[], Some(body)).await;
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.json()["error"],
        json!({"type": "invalid_request_error", "message": "max_tokens: Field required"})
    );

    let count = send(
        &server,
        "/v1/messages/count_tokens",
        &[],
        Some(claude(false)),
    )
    .await
    .json();
    assert_eq!(count, json!({"input_tokens": 5}));
}

#[tokio::test]
async fn malformed_requests_are_400s_in_the_providers_shape() {
    const PARSE_OPENAI: &str = "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)";
    const PARSE_ANTHROPIC: &str = "There was an error parsing the body of your request";
    const NOT_OBJECT: &str = "The request body must be a JSON object.";
    const NO_MODEL: &str = "you must provide a model parameter";
    const EMBEDDINGS_INPUT: &str = "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.";
    let server = server().await;
    let without = |body: &Value, key: &str| {
        let mut body = body.clone();
        body.as_object_mut()
            .unwrap()
            .remove(key)
            .expect("the key is there");
        body.to_string()
    };
    let chat_ok = chat(false);
    let completions_ok = json!({"model": "gpt-3.5-turbo-instruct", "prompt": "Say hi"});
    let embeddings_ok = json!({"model": "text-embedding-3-small", "input": "hello"});
    let responses_ok = json!({"model": "gpt-4o", "input": "hello"});
    let claude_ok = claude(false);
    let openai_paths = [
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/responses",
    ];
    // (path, body, message, OpenAI's `param`)
    let mut cases: Vec<(&str, String, String, Option<&str>)> = Vec::new();
    let mut case = |path, body: &str, message: &str, param| {
        cases.push((path, body.to_owned(), message.to_owned(), param));
    };
    for path in openai_paths {
        case(path, "", NO_MODEL, None);
        case(path, " \r\n\t ", NO_MODEL, None);
        case(path, r#"{"model": "gpt-4o", "#, PARSE_OPENAI, None);
        case(path, "hello", PARSE_OPENAI, None);
        case(path, "[1, 2]", NOT_OBJECT, None);
        case(path, r#""text""#, NOT_OBJECT, None);
        case(path, "42", NOT_OBJECT, None);
    }
    let [chat_path, completions_path, embeddings_path, responses_path] = openai_paths;
    case(chat_path, &without(&chat_ok, "model"), NO_MODEL, None);
    case(
        completions_path,
        &without(&completions_ok, "model"),
        NO_MODEL,
        None,
    );
    case(
        embeddings_path,
        &without(&embeddings_ok, "model"),
        NO_MODEL,
        None,
    );
    case(
        responses_path,
        &without(&responses_ok, "model"),
        NO_MODEL,
        None,
    );
    let missing = |name: &str| format!("Missing required parameter: '{name}'.");
    case(
        chat_path,
        &without(&chat_ok, "messages"),
        &missing("messages"),
        Some("messages"),
    );
    case(
        completions_path,
        &without(&completions_ok, "prompt"),
        &missing("prompt"),
        Some("prompt"),
    );
    case(
        embeddings_path,
        &without(&embeddings_ok, "input"),
        EMBEDDINGS_INPUT,
        Some("input"),
    );
    case(
        responses_path,
        &without(&responses_ok, "input"),
        &missing("input"),
        Some("input"),
    );
    for path in ["/v1/messages", "/v1/messages/count_tokens"] {
        case(path, "", NOT_OBJECT, None);
        case(path, "\n\n", NOT_OBJECT, None);
        case(path, "{\"model\"", PARSE_ANTHROPIC, None);
        case(path, "null", NOT_OBJECT, None);
        case(path, "[]", NOT_OBJECT, None);
        case(
            path,
            &without(&claude_ok, "model"),
            "model: Field required",
            None,
        );
        case(
            path,
            &without(&claude_ok, "messages"),
            "messages: Field required",
            None,
        );
    }
    case(
        "/v1/messages",
        &without(&claude_ok, "max_tokens"),
        "max_tokens: Field required",
        None,
    );

    let mut failures = Vec::new();
    for (path, body, message, param) in &cases {
        let reply = send_raw(&server, "POST", path, &[], body.clone()).await;
        let got: Value = serde_json::from_str(&reply.text()).unwrap_or(Value::Null);
        let ok = if path.starts_with("/v1/messages") {
            // Anthropic's HTTP errors also name the request.
            let mut shape = got.clone();
            let id = shape.as_object_mut().and_then(|o| o.remove("request_id"));
            id.as_ref()
                .and_then(Value::as_str)
                .is_some_and(|id| id.starts_with("req_"))
                && shape
                    == json!({"type": "error", "error": {"type": "invalid_request_error", "message": message}})
        } else {
            got == json!({"error": {"message": message, "type": "invalid_request_error", "param": param, "code": null}})
        };
        if reply.status != 400 || reply.header("content-type") != "application/json" || !ok {
            failures.push(format!("POST {path} {body:?}: {} {got}", reply.status));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Counted like any request.
    assert_eq!(server.requests_received(), cases.len() as u64);
}

// === faults ===

#[tokio::test]
async fn status_faults_are_shaped_per_provider() {
    let server = server().await;
    let reply = send(
        &server,
        "/v1/chat/completions",
        &[("x-mock-fault", "429")],
        Some(chat(true)),
    )
    .await;
    assert_eq!(reply.status, 429);
    assert_eq!(reply.header("retry-after"), "1");
    assert_eq!(reply.header("content-type"), "application/json");
    let error = &reply.json()["error"];
    assert_eq!(error["type"], "requests");
    assert_eq!(error["code"], "rate_limit_exceeded");
    assert!(error["param"].is_null());

    let reply = send(
        &server,
        "/v1/messages",
        &[("x-mock-fault", "429")],
        Some(claude(true)),
    )
    .await;
    assert_eq!(reply.status, 429);
    assert_eq!(reply.header("retry-after"), "1");
    let body = reply.json();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert!(body["request_id"].as_str().unwrap().starts_with("req_"));

    let reply = send(
        &server,
        "/v1/chat/completions",
        &[("x-mock-fault", "500")],
        Some(chat(false)),
    )
    .await;
    assert_eq!(reply.status, 500);
    assert_eq!(reply.json()["error"]["type"], "server_error");
    let reply = send(
        &server,
        "/v1/messages",
        &[("x-mock-fault", "529")],
        Some(claude(false)),
    )
    .await;
    assert_eq!(reply.status, 529);
    assert_eq!(reply.json()["error"]["type"], "overloaded_error");
}

#[tokio::test]
async fn garbage_is_neither_sse_nor_json() {
    let server = server().await;
    let reply = send(
        &server,
        "/v1/chat/completions",
        &[("x-mock-fault", "garbage")],
        Some(chat(true)),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type"),
        "text/event-stream; charset=utf-8"
    );
    let text = reply.text();
    assert!(
        !text.contains("data:") && serde_json::from_str::<Value>(&text).is_err(),
        "{text}"
    );
}

#[tokio::test]
async fn cut_closes_the_connection_mid_stream() {
    let server = server().await;
    let mut body = chat(true);
    body["stream_options"] = json!({"include_usage": true});
    let reply = send(
        &server,
        "/v1/chat/completions",
        &fast(&[("x-mock-fault", "cut")]),
        Some(body),
    )
    .await;
    assert!(reply.error.is_some(), "the body fails");
    let events = reply.events();
    assert_eq!(events.len(), 1 + 8, "role chunk and half of the 16 tokens");
    assert!(
        events
            .iter()
            .all(|e| e.data != "[DONE]" && e.json()["choices"][0]["finish_reason"].is_null())
    );

    let events = send(
        &server,
        "/v1/messages",
        &fast(&[("x-mock-fault", "cut"), ("x-mock-tokens", "4")]),
        Some(claude(true)),
    )
    .await;
    assert!(events.error.is_some());
    assert_eq!(
        events.events().last().unwrap().name.as_deref(),
        Some("content_block_delta")
    );

    // Non-streaming: half a JSON document.
    let reply = send(
        &server,
        "/v1/chat/completions",
        &fast(&[("x-mock-fault", "cut")]),
        Some(chat(false)),
    )
    .await;
    assert!(reply.error.is_some());
    assert!(serde_json::from_str::<Value>(&reply.text()).is_err());
}

#[tokio::test]
async fn truncate_ends_cleanly_without_the_end() {
    let server = server().await;
    let reply = send(
        &server,
        "/v1/chat/completions",
        &fast(&[("x-mock-fault", "truncate"), ("x-mock-tokens", "4")]),
        Some(chat(true)),
    )
    .await;
    assert!(reply.error.is_none());
    let events = reply.events();
    assert_eq!(events.len(), 3, "role chunk, tok0, tok1");
    assert!(events.iter().all(|e| e.data != "[DONE]"));
}

#[tokio::test]
async fn error_events() {
    let server = server().await;
    let reply = send(
        &server,
        "/v1/chat/completions",
        &fast(&[("x-mock-fault", "error-event"), ("x-mock-tokens", "4")]),
        Some(chat(true)),
    )
    .await;
    assert!(reply.error.is_none());
    let events = reply.events();
    assert_eq!(events.len(), 4);
    let error = events[3].json();
    assert_eq!(error["error"]["type"], "server_error");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("error")
    );

    let events = send(
        &server,
        "/v1/messages",
        &fast(&[("x-mock-fault", "error-event"), ("x-mock-tokens", "4")]),
        Some(claude(true)),
    )
    .await
    .events();
    let last = events.last().unwrap();
    assert_eq!(last.name.as_deref(), Some("error"));
    assert_eq!(
        last.json(),
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    );

    let events = send(
        &server,
        "/v1/responses",
        &fast(&[("x-mock-fault", "error-event")]),
        Some(json!({"model": "m", "input": "x", "stream": true})),
    )
    .await
    .events();
    let last = events.last().unwrap();
    assert_eq!(last.name.as_deref(), Some("error"));
    assert_eq!(last.json()["code"], "server_error");

    // Non-streaming requests get the status error instead.
    let reply = send(
        &server,
        "/v1/messages",
        &fast(&[("x-mock-fault", "error-event")]),
        Some(claude(false)),
    )
    .await;
    assert_eq!(reply.status, 529);
}

#[tokio::test]
async fn stall_pauses_halfway() {
    let server = server().await;
    let headers = [
        ("x-mock-fault", "stall"),
        ("x-mock-stall-ms", "150"),
        ("x-mock-ttft-ms", "0"),
        ("x-mock-gap-ms", "10"),
        ("x-mock-tokens", "4"),
    ];
    // role, tok0, tok1, [stall], tok2, tok3, finish, [DONE]
    let reply = timed(
        &client(false),
        &server,
        "/v1/chat/completions",
        &headers,
        Some(chat(true)),
        |reply| {
            let events = reply.events();
            gap(
                events[3].at - events[2].at,
                Duration::from_millis(150 + 10),
                "the stall",
            )?;
            gap(
                events[4].at - events[3].at,
                Duration::from_millis(10),
                "gap after the stall",
            )
        },
    )
    .await;
    let events = reply.events();
    assert_eq!(events[2].json()["choices"][0]["delta"]["content"], " tok1");
    assert_eq!(events[3].json()["choices"][0]["delta"]["content"], " tok2");
    assert_eq!(events.last().unwrap().data, "[DONE]");
}

#[tokio::test]
async fn bad_control_header_is_a_400_that_explains() {
    let server = server().await;
    let reply = send(
        &server,
        "/v1/chat/completions",
        &[("x-mock-fault", "explode")],
        Some(chat(false)),
    )
    .await;
    assert_eq!(reply.status, 400);
    let message = reply.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("x-mock-fault") && message.contains("explode"),
        "{message}"
    );
}

// === the server ===

#[tokio::test]
async fn counts_and_keeps_requests() {
    let server = server().await;
    assert_eq!(server.requests_received(), 0);
    send(
        &server,
        "/v1/chat/completions",
        &[(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )],
        Some(chat(false)),
    )
    .await;
    send(&server, "/v1/models", &[], None).await;
    send(&server, "/nowhere", &[], None).await;
    assert_eq!(server.requests_received(), 3);
    let received = server.received_requests();
    assert_eq!(received.len(), 3);
    assert_eq!(received[0].uri.path(), "/v1/chat/completions");
    assert_eq!(
        received[0].headers["traceparent"],
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    );
    assert_eq!(received[0].json().unwrap()["model"], "gpt-4o-mini");
    assert_eq!(received[2].method, "GET");
}

#[tokio::test]
async fn received_requests_endpoint() {
    let server = server().await;
    let b64 = base64::engine::general_purpose::STANDARD;
    // Not JSON, not UTF-8: kept as received all the same.
    let body: &[u8] = b"{\"model\": \xff}";
    send_raw(
        &server,
        "POST",
        "/v1/chat/completions?api-version=1&x=%20",
        &[("x-request-id", "req-a"), ("x-dup", "1"), ("x-dup", "2")],
        body,
    )
    .await;
    send(&server, "/v1/models", &[("x-request-id", "req-b")], None).await;
    send(
        &server,
        "/v1/chat/completions",
        &[("x-request-id", "req-a")],
        Some(chat(false)),
    )
    .await;
    assert_eq!(server.requests_received(), 3);

    let all = send(&server, "/__mock/requests", &[], None).await;
    assert_eq!(all.status, 200);
    assert_eq!(all.header("content-type"), "application/json");
    let all = all.json();
    let requests = all["requests"].as_array().unwrap();
    assert_eq!(all.as_object().unwrap().len(), 1);
    assert_eq!(requests.len(), 3);
    let first = &requests[0];
    let mut keys: Vec<&str> = first
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["body_base64", "body_len", "headers", "method", "path"]
    );
    assert_eq!(first["method"], "POST");
    assert_eq!(first["path"], "/v1/chat/completions?api-version=1&x=%20");
    assert_eq!(first["body_len"], body.len());
    assert_eq!(
        b64.decode(first["body_base64"].as_str().unwrap()).unwrap(),
        body
    );
    let headers: Vec<(String, String)> = serde_json::from_value(first["headers"].clone()).unwrap();
    let names: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "content-type",
            "x-request-id",
            "x-dup",
            "x-dup",
            "host",
            "content-length"
        ],
        "{headers:?}"
    );
    assert_eq!(headers[2].1, "1");
    assert_eq!(headers[3].1, "2");
    assert_eq!(headers[5].1, body.len().to_string());
    assert_eq!(requests[1]["method"], "GET");
    assert_eq!(requests[1]["body_len"], 0);
    assert_eq!(requests[1]["body_base64"], "");
    let third = b64
        .decode(requests[2]["body_base64"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&third).unwrap(),
        chat(false)
    );

    // By x-request-id, oldest first; an id nobody sent finds nothing.
    let a = send(&server, "/__mock/requests?request_id=req-a", &[], None)
        .await
        .json();
    let paths: Vec<&str> = a["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "/v1/chat/completions?api-version=1&x=%20",
            "/v1/chat/completions"
        ]
    );
    let none = send(&server, "/__mock/requests?request_id=req%2Dc", &[], None)
        .await
        .json();
    assert_eq!(none, json!({"requests": []}));

    // Neither counted nor kept itself.
    assert_eq!(server.requests_received(), 3);
    assert_eq!(server.received_requests().len(), 3);

    let cleared = send_raw(&server, "DELETE", "/__mock/requests", &[], "").await;
    assert_eq!(cleared.status, 200);
    assert_eq!(cleared.json(), json!({"cleared": 3}));
    assert!(server.received_requests().is_empty());
    assert_eq!(
        send(&server, "/__mock/requests", &[], None).await.json(),
        json!({"requests": []})
    );
    assert_eq!(server.requests_received(), 3);
    assert_eq!(
        send_raw(&server, "POST", "/__mock/requests", &[], "")
            .await
            .status,
        405
    );
}

#[tokio::test]
async fn keeps_only_the_latest_requests() {
    let server = MockServer::start(MockConfig {
        keep_requests: 2,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    for id in ["1", "2", "3"] {
        send(&server, "/v1/models", &[("x-request-id", id)], None).await;
    }
    let kept = send(&server, "/__mock/requests", &[], None).await.json();
    let ids: Vec<String> = kept["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let headers: Vec<(String, String)> =
                serde_json::from_value(r["headers"].clone()).unwrap();
            headers
                .into_iter()
                .find(|(n, _)| n == "x-request-id")
                .unwrap()
                .1
        })
        .collect();
    assert_eq!(ids, ["2", "3"]);
    assert_eq!(server.requests_received(), 3);
}

#[tokio::test]
async fn serves_http2_with_the_same_timing() {
    let server = server().await;
    let headers = [
        ("x-mock-ttft-ms", "30"),
        ("x-mock-gap-ms", "20"),
        ("x-mock-tokens", "3"),
    ];
    let client = client(true);
    // Open the connection first: the HTTP/2 handshake is not the mock's TTFT.
    assert_eq!(
        send_with(&client, &server, "/v1/models", &[], None)
            .await
            .status,
        200
    );
    let reply = timed(
        &client,
        &server,
        "/v1/chat/completions",
        &headers,
        Some(chat(true)),
        |reply| {
            let events = reply.events();
            near(events[1].at, Duration::from_millis(30), "TTFT over HTTP/2")?;
            gap(
                events[2].at - events[1].at,
                Duration::from_millis(20),
                "gap over HTTP/2",
            )
        },
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.events().last().unwrap().data, "[DONE]");
}

#[tokio::test]
async fn shutdown_stops_accepting() {
    let server = server().await;
    let addr = server.addr();
    server.shutdown().await.unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
