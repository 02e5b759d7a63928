//! Tool calls' arguments (in answers) and results (in later requests): kept only with content
//! capture, bounded by its cap, in the conventions' shape (`tool_call` parts of
//! `gen_ai.output.messages`; `Summary::tool_arguments` for the gateway's `execute_tool` span).

use std::sync::Arc;
use std::time::Instant;

use llmtrace::genai::{
    ContentKind, End, Endpoint, Exchange, GenAiConfig, Report, RequestInfo, ToolContent,
};
use serde_json::{Value, json};

fn capture(cap: usize) -> GenAiConfig {
    GenAiConfig {
        capture_content: true,
        content_cap: cap,
        ..GenAiConfig::default()
    }
}

/// Runs `body` through an exchange, cut into pieces of `piece` bytes (so events straddle
/// chunk boundaries).
fn run(config: GenAiConfig, path: &str, content_type: &str, body: &str, piece: usize) -> Report {
    let t0 = Instant::now();
    let endpoint = Endpoint::detect(path, None).unwrap();
    let request = RequestInfo::parse(&endpoint, br#"{"model":"m"}"#, config.capture_content);
    let mut exchange = Exchange::new(Arc::new(config), endpoint, request, t0);
    let mut head = http::HeaderMap::new();
    head.insert("content-type", content_type.parse().unwrap());
    exchange.on_response_head(200, &head, t0);
    for chunk in body.as_bytes().chunks(piece) {
        exchange.on_response_data(chunk, t0);
    }
    exchange.finish(End::Complete, t0)
}

fn attribute(report: &Report, key: &str) -> Option<String> {
    let kv = report.attributes.iter().find(|kv| kv.key.as_str() == key)?;
    Some(kv.value.as_str().into_owned())
}

fn output(report: &Report) -> Value {
    serde_json::from_str(&attribute(report, "gen_ai.output.messages").unwrap()).unwrap()
}

fn arguments(report: &Report) -> Vec<(&str, &str, bool)> {
    let arguments = &report.summary.tool_arguments;
    arguments.iter().map(triple).collect()
}

fn triple(a: &ToolContent) -> (&str, &str, bool) {
    (a.id.as_str(), a.content.as_str(), a.truncated)
}

/// `data:` lines of an OpenAI chat stream: one chunk per delta.
fn chat_stream(deltas: &[Value], finish: &str) -> String {
    let mut out = String::new();
    for delta in deltas {
        let chunk = json!({"id": "c", "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": null}]});
        out += &format!("data: {chunk}\n\n");
    }
    let last = json!({"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]});
    out + &format!("data: {last}\n\ndata: [DONE]\n\n")
}

fn fragment(index: u64, id: Option<&str>, name: Option<&str>, arguments: &str) -> Value {
    let mut function = json!({"arguments": arguments});
    let mut call = json!({"index": index});
    if let Some(id) = id {
        call["id"] = json!(id);
        call["type"] = json!("function");
    }
    if let Some(name) = name {
        function["name"] = json!(name);
    }
    call["function"] = function;
    json!({"tool_calls": [call]})
}

/// Two calls streamed at once, their fragments interleaved: later fragments name their call
/// by `index` only, and events straddle chunk boundaries.
#[test]
fn chat_stream_fragments_join_by_index() {
    let deltas = [
        json!({"role": "assistant", "content": "Checking."}),
        fragment(0, Some("call_a"), Some("get_weather"), ""),
        fragment(1, Some("call_b"), Some("get_time"), "{\"tz\""),
        fragment(0, None, None, "{\"city\":"),
        fragment(1, None, None, ":\"CET\"}"),
        fragment(0, None, None, "\"Paris\"}"),
    ];
    let body = chat_stream(&deltas, "tool_calls");
    for piece in [7, 64, body.len()] {
        let report = run(
            capture(1 << 16),
            "/v1/chat/completions",
            "text/event-stream",
            &body,
            piece,
        );
        assert_eq!(
            arguments(&report),
            [
                ("call_a", r#"{"city":"Paris"}"#, false),
                ("call_b", r#"{"tz":"CET"}"#, false)
            ],
            "pieces of {piece}"
        );
        let messages = output(&report);
        assert_eq!(
            messages,
            json!([{"role": "assistant", "finish_reason": "tool_calls", "parts": [
                {"type": "text", "content": "Checking."},
                {"type": "tool_call", "id": "call_a", "name": "get_weather",
                    "arguments": {"city": "Paris"}},
                {"type": "tool_call", "id": "call_b", "name": "get_time",
                    "arguments": {"tz": "CET"}},
            ]}])
        );
        assert_eq!(attribute(&report, "llmtrace.content.truncated"), None);
        // The ids and names are read as before.
        assert_eq!(report.summary.tool_calls.len(), 2);
    }
}

/// A whole chat answer: the arguments string as is; one that is not JSON stays a string.
#[test]
fn chat_body_arguments_and_invalid_json() {
    let body = json!({"id": "c", "object": "chat.completion", "choices": [{"index": 0,
        "message": {"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_a", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
            {"id": "call_b", "type": "function",
                "function": {"name": "lookup", "arguments": "{\"q\": unquoted"}}]},
        "finish_reason": "tool_calls"}]})
    .to_string();
    let report = run(
        capture(1 << 16),
        "/v1/chat/completions",
        "application/json",
        &body,
        body.len(),
    );
    assert_eq!(
        arguments(&report),
        [
            ("call_a", r#"{"city":"Paris"}"#, false),
            ("call_b", r#"{"q": unquoted"#, false)
        ]
    );
    let parts = &output(&report)[0]["parts"];
    assert_eq!(parts.as_array().unwrap().len(), 2, "{parts}");
    assert_eq!(parts[0]["arguments"], json!({"city": "Paris"}));
    assert_eq!(parts[1]["arguments"], json!("{\"q\": unquoted"));
}

/// The arguments share the capture cap with the text: cut on a character boundary, marked on
/// the call and on the span, and a cut JSON text is kept as a string.
#[test]
fn arguments_are_cut_at_the_cap() {
    let deltas = [
        json!({"content": "0123456789"}),
        fragment(0, Some("call_a"), Some("f"), "{\"city\":"),
        fragment(0, None, None, "\"Zürich and more\"}"),
        fragment(1, Some("call_b"), Some("g"), "{}"),
    ];
    let body = chat_stream(&deltas, "tool_calls");
    let report = run(
        capture(21),
        "/v1/chat/completions",
        "text/event-stream",
        &body,
        13,
    );
    // 10 bytes of text, then 11 of arguments: the 11th would be half of `ü`, so the second
    // call gets that last byte.
    assert_eq!(
        arguments(&report),
        [("call_a", r#"{"city":"Z"#, true), ("call_b", "{", true)]
    );
    assert_eq!(
        attribute(&report, "llmtrace.content.truncated").as_deref(),
        Some("true")
    );
    // The output messages attribute is cut at the cap as a whole, as for text.
    let messages = attribute(&report, "gen_ai.output.messages").unwrap();
    assert!(messages.len() <= 21, "{messages}");
}

/// Responses API, streamed: the item names the call, deltas carry the arguments by output
/// index, and the `.done` events and the final response repeat them (kept once).
#[test]
fn responses_stream_and_body() {
    let item = |arguments: &str| {
        json!({"type": "function_call", "id": "fc_1", "call_id": "call_r",
            "name": "get_weather", "arguments": arguments})
    };
    let events = [
        json!({"type": "response.created",
            "response": {"id": "resp_1", "status": "in_progress", "output": []}}),
        json!({"type": "response.output_item.added", "output_index": 0, "item": item("")}),
        json!({"type": "response.function_call_arguments.delta", "output_index": 0,
            "item_id": "fc_1", "delta": "{\"city\""}),
        json!({"type": "response.function_call_arguments.delta", "output_index": 0,
            "item_id": "fc_1", "delta": ":\"Paris\"}"}),
        json!({"type": "response.function_call_arguments.done", "output_index": 0,
            "item_id": "fc_1", "arguments": "{\"city\":\"Paris\"}"}),
        json!({"type": "response.output_item.done", "output_index": 0,
            "item": item("{\"city\":\"Paris\"}")}),
        json!({"type": "response.completed", "response": {"id": "resp_1",
            "status": "completed", "output": [item("{\"city\":\"Paris\"}")]}}),
    ];
    let body: String = events
        .iter()
        .map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap()))
        .collect();
    let want = [("call_r", r#"{"city":"Paris"}"#, false)];
    for piece in [9, body.len()] {
        let report = run(
            capture(1 << 16),
            "/v1/responses",
            "text/event-stream",
            &body,
            piece,
        );
        assert_eq!(arguments(&report), want, "pieces of {piece}");
        let parts = &output(&report)[0]["parts"];
        assert_eq!(
            parts,
            &json!([{"type": "tool_call", "id": "call_r", "name": "get_weather",
                "arguments": {"city": "Paris"}}])
        );
    }
    let whole = json!({"id": "resp_1", "object": "response", "status": "completed",
        "output": [{"type": "message", "content": [{"type": "output_text", "text": "Hi"}]},
            item("{\"city\":\"Rome\"}")]})
    .to_string();
    let report = run(
        capture(1 << 16),
        "/v1/responses",
        "application/json",
        &whole,
        whole.len(),
    );
    assert_eq!(
        arguments(&report),
        [("call_r", r#"{"city":"Rome"}"#, false)]
    );
}

/// Anthropic, streamed: `tool_use` blocks name the call, `input_json_delta`s carry its JSON
/// by block index (two blocks interleaved); whole: the `input` object as JSON text.
#[test]
fn anthropic_stream_and_body() {
    let events = [
        json!({"type": "message_start", "message": {"id": "msg_1", "model": "claude",
            "content": [], "usage": {"input_tokens": 5, "output_tokens": 1}}}),
        json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "text", "text": ""}}),
        json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": "Let me look."}}),
        json!({"type": "content_block_start", "index": 1, "content_block":
            {"type": "tool_use", "id": "toolu_a", "name": "get_weather", "input": {}}}),
        json!({"type": "content_block_start", "index": 2, "content_block":
            {"type": "tool_use", "id": "toolu_b", "name": "get_time", "input": {}}}),
        json!({"type": "content_block_delta", "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": "{\"city\": "}}),
        json!({"type": "content_block_delta", "index": 2,
            "delta": {"type": "input_json_delta", "partial_json": "{}"}}),
        json!({"type": "content_block_delta", "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": "\"Paris\"}"}}),
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"},
            "usage": {"output_tokens": 9}}),
        json!({"type": "message_stop"}),
    ];
    let body: String = events
        .iter()
        .map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap()))
        .collect();
    for piece in [5, body.len()] {
        let report = run(
            capture(1 << 16),
            "/v1/messages",
            "text/event-stream",
            &body,
            piece,
        );
        assert_eq!(
            arguments(&report),
            [
                ("toolu_a", r#"{"city": "Paris"}"#, false),
                ("toolu_b", "{}", false)
            ],
            "pieces of {piece}"
        );
        assert_eq!(
            output(&report),
            json!([{"role": "assistant", "finish_reason": "tool_use", "parts": [
                {"type": "text", "content": "Let me look."},
                {"type": "tool_call", "id": "toolu_a", "name": "get_weather",
                    "arguments": {"city": "Paris"}},
                {"type": "tool_call", "id": "toolu_b", "name": "get_time", "arguments": {}},
            ]}])
        );
    }
    let whole = json!({"id": "msg_1", "type": "message", "stop_reason": "tool_use",
        "content": [{"type": "text", "text": "Let me look."}, {"type": "tool_use",
            "id": "toolu_a", "name": "get_weather", "input": {"city": "Paris"}}]})
    .to_string();
    let report = run(
        capture(1 << 16),
        "/v1/messages",
        "application/json",
        &whole,
        whole.len(),
    );
    assert_eq!(
        arguments(&report),
        [("toolu_a", r#"{"city":"Paris"}"#, false)]
    );
}

/// With capture off nothing of the arguments is kept or recorded; ids and names are.
#[test]
fn capture_off_keeps_no_arguments() {
    let deltas = [
        fragment(0, Some("call_a"), Some("get_weather"), ""),
        fragment(0, None, None, "{\"city\":\"SECRET\"}"),
    ];
    let chat = chat_stream(&deltas, "tool_calls");
    let anthropic = concat!(
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,",
        "\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_a\",\"name\":\"f\",\"input\":{}}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,",
        "\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"SECRET\\\":1}\"}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
    );
    for (path, body) in [
        ("/v1/chat/completions", &chat[..]),
        ("/v1/messages", anthropic),
    ] {
        let report = run(GenAiConfig::default(), path, "text/event-stream", body, 11);
        assert!(report.summary.tool_arguments.is_empty());
        assert_eq!(report.summary.tool_calls.len(), 1, "{path}");
        let all = format!("{:?}", report.attributes);
        assert!(!all.contains("SECRET"), "{all}");
    }
}

/// The redactor sees each call's arguments (and the output messages that hold them).
#[test]
fn the_redactor_sees_tool_arguments() {
    let config = GenAiConfig {
        redactor: Some(Arc::new(|kind, text: String| match kind {
            ContentKind::ToolCallArguments => Some(text.replace("Paris", "[CITY]")),
            ContentKind::OutputMessages => None,
            _ => Some(text),
        })),
        ..capture(1 << 16)
    };
    let body = chat_stream(
        &[fragment(
            0,
            Some("call_a"),
            Some("f"),
            "{\"city\":\"Paris\"}",
        )],
        "tool_calls",
    );
    let report = run(
        config,
        "/v1/chat/completions",
        "text/event-stream",
        &body,
        50,
    );
    assert_eq!(
        arguments(&report),
        [("call_a", r#"{"city":"[CITY]"}"#, false)]
    );
    assert_eq!(attribute(&report, "gen_ai.output.messages"), None);
}

/// The results a later request carries: only with capture on, bounded, redacted.
#[test]
fn tool_results_are_kept_only_with_capture() {
    let endpoint = Endpoint::detect("/v1/chat/completions", None).unwrap();
    let body = br#"{"model":"m","messages":[{"role":"user","content":"hi"},
        {"role":"assistant","tool_calls":[{"id":"call_a","type":"function","function":{"name":"f","arguments":"{}"}}]},
        {"role":"tool","tool_call_id":"call_a","content":"21 C in Paris"}]}"#;
    let off = RequestInfo::parse_with(&endpoint, body, &GenAiConfig::default());
    assert_eq!(off.tool_results, ["call_a"]);
    assert!(off.tool_result_content.is_empty());
    let on = RequestInfo::parse_with(&endpoint, body, &capture(1 << 16));
    let results: Vec<(&str, &str, bool)> = on.tool_result_content.iter().map(triple).collect();
    assert_eq!(results, [("call_a", "21 C in Paris", false)]);
    let small = RequestInfo::parse_with(&endpoint, body, &capture(4));
    assert_eq!(small.tool_result_content[0].content, "21 C");
    assert!(small.tool_result_content[0].truncated);
    let redacting = GenAiConfig {
        redactor: Some(Arc::new(|kind, text: String| {
            (kind == ContentKind::ToolCallResult).then(|| text.replace("Paris", "[CITY]"))
        })),
        ..capture(1 << 16)
    };
    let redacted = RequestInfo::parse_with(&endpoint, body, &redacting);
    assert_eq!(redacted.tool_result_content[0].content, "21 C in [CITY]");
}
