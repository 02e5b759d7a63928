//! The sans-IO exchange: content capture, token events, guardrails, oversized events.

use std::sync::Arc;
use std::time::{Duration, Instant};

use llmtrace::genai::{
    ContentKind, End, Endpoint, Exchange, GenAiConfig, RequestInfo, TokenEvents,
};
use opentelemetry::Value;

fn exchange(config: GenAiConfig, path: &str, request: &str, t0: Instant) -> Exchange {
    let endpoint = Endpoint::detect(path, None).unwrap();
    let request = RequestInfo::parse(&endpoint, request.as_bytes(), config.capture_content);
    let mut exchange = Exchange::new(Arc::new(config), endpoint, request, t0);
    let mut head = http::HeaderMap::new();
    head.insert("content-type", "text/event-stream".parse().unwrap());
    exchange.on_response_head(200, &head, t0);
    exchange
}

fn get<'a>(report: &'a llmtrace::genai::Report, key: &str) -> Option<&'a Value> {
    report
        .attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

fn chunk(text: &str) -> Vec<u8> {
    format!("data: {{\"id\":\"c\",\"model\":\"m\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":{}}},\"finish_reason\":null}}]}}\n\n", serde_json::to_string(text).unwrap()).into_bytes()
}

const DONE: &[u8] = b"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";
const CHAT: &str = r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"My card is 4111-1111-1111-1111"}]}"#;

#[test]
fn content_is_not_captured_unless_asked() {
    let t0 = Instant::now();
    let mut ex = exchange(GenAiConfig::default(), "/v1/chat/completions", CHAT, t0);
    ex.on_response_data(&chunk("Sure."), t0);
    ex.on_response_data(DONE, t0);
    let report = ex.finish(End::Complete, t0);
    let all = format!("{:?}", report.attributes);
    assert!(!all.contains("4111") && !all.contains("Sure."), "{all}");
    assert!(get(&report, "gen_ai.input.messages").is_none());
}

#[test]
fn captured_content_follows_the_conventions_shape_and_goes_through_the_redactor() {
    let t0 = Instant::now();
    let config = GenAiConfig {
        capture_content: true,
        redactor: Some(Arc::new(|kind, text: String| match kind {
            ContentKind::InputMessages => Some(text.replace("4111-1111-1111-1111", "[CARD]")),
            _ => Some(text),
        })),
        ..GenAiConfig::default()
    };
    let mut ex = exchange(config, "/v1/chat/completions", CHAT, t0);
    for piece in ["Hello", ", ", "wörld 🙂"] {
        ex.on_response_data(&chunk(piece), t0);
    }
    ex.on_response_data(DONE, t0);
    let report = ex.finish(End::Complete, t0);
    let input = get(&report, "gen_ai.input.messages").unwrap().as_str();
    let input: serde_json::Value = serde_json::from_str(&input).unwrap();
    assert_eq!(input[0]["role"], "system");
    assert_eq!(input[1]["parts"][0]["content"], "My card is [CARD]");
    let output = get(&report, "gen_ai.output.messages").unwrap().as_str();
    let output: serde_json::Value = serde_json::from_str(&output).unwrap();
    assert_eq!(output[0]["role"], "assistant");
    assert_eq!(output[0]["parts"][0]["content"], "Hello, wörld 🙂");
    assert_eq!(output[0]["finish_reason"], "stop");
}

#[test]
fn captured_content_is_capped_on_a_character_boundary() {
    let t0 = Instant::now();
    let config = GenAiConfig {
        capture_content: true,
        content_cap: 10,
        ..GenAiConfig::default()
    };
    let mut ex = exchange(config, "/v1/chat/completions", CHAT, t0);
    ex.on_response_data(&chunk("ééééééééééééééééééé"), t0);
    ex.on_response_data(DONE, t0);
    let report = ex.finish(End::Complete, t0);
    for key in ["gen_ai.input.messages", "gen_ai.output.messages"] {
        let value = get(&report, key).unwrap().as_str();
        assert!(value.len() <= 10, "{key}: {value}");
    }
    assert_eq!(
        get(&report, "llmtrace.content.truncated"),
        Some(&Value::Bool(true))
    );
}

#[test]
fn token_events_follow_the_chosen_policy_and_cap() {
    let t0 = Instant::now();
    for (policy, cap, expected) in [
        (TokenEvents::Off, 1000, 0),
        (TokenEvents::FirstN(3), 1000, 3),
        (TokenEvents::EveryNth(4), 1000, 5),
        (TokenEvents::All, 1000, 20),
        (TokenEvents::All, 7, 7),
    ] {
        let config = GenAiConfig {
            token_events: policy,
            max_token_events: cap,
            ..GenAiConfig::default()
        };
        let mut ex = exchange(config, "/v1/chat/completions", CHAT, t0);
        for i in 0..20u64 {
            ex.on_response_data(&chunk("x"), t0 + Duration::from_millis(10 * i));
        }
        ex.on_response_data(DONE, t0 + Duration::from_millis(200));
        let report = ex.finish(End::Complete, t0 + Duration::from_millis(201));
        let n = report
            .events
            .iter()
            .filter(|e| e.name == "token.streamed")
            .count();
        assert_eq!(n, expected, "{policy:?} cap {cap}");
    }
}

#[test]
fn stalls_and_gaps_come_from_the_chunk_times() {
    let t0 = Instant::now();
    let config = GenAiConfig {
        stall_threshold: Duration::from_millis(500),
        ..GenAiConfig::default()
    };
    let mut ex = exchange(config, "/v1/chat/completions", CHAT, t0);
    let times = [100u64, 120, 140, 900, 920, 2000];
    for ms in times {
        ex.on_response_data(&chunk("x"), t0 + Duration::from_millis(ms));
    }
    ex.on_response_data(DONE, t0 + Duration::from_millis(2001));
    let report = ex.finish(End::Complete, t0 + Duration::from_millis(2002));
    assert_eq!(get(&report, "llmtrace.stream.stalls"), Some(&Value::I64(2)));
    assert_eq!(
        get(&report, "gen_ai.response.time_to_first_chunk"),
        Some(&Value::F64(0.1))
    );
    assert_eq!(
        get(&report, "llmtrace.stream.gap.max"),
        Some(&Value::F64(1.08))
    );
    assert_eq!(
        report
            .metrics
            .chunk_gaps
            .iter()
            .map(|(_, n)| n)
            .sum::<u32>(),
        5
    );
}

#[test]
fn the_chunk_timeline_and_stall_events_say_when_chunks_came() {
    let t0 = Instant::now();
    let config = GenAiConfig {
        stall_threshold: Duration::from_millis(500),
        ..GenAiConfig::default()
    };
    let mut ex = exchange(config, "/v1/chat/completions", CHAT, t0);
    for ms in [100u64, 120, 140, 900, 920, 2000] {
        ex.on_response_data(&chunk("x"), t0 + Duration::from_millis(ms));
    }
    ex.on_response_data(DONE, t0 + Duration::from_millis(2001));
    let report = ex.finish(End::Complete, t0 + Duration::from_millis(2002));
    assert_eq!(
        get(&report, "llmtrace.stream.chunk_offsets_ms"),
        Some(&Value::Array(opentelemetry::Array::I64(vec![
            100, 120, 140, 900, 920, 2000
        ])))
    );
    assert_eq!(
        get(&report, "llmtrace.stream.chunk_stride"),
        Some(&Value::I64(1))
    );
    let stalls: Vec<_> = report
        .events
        .iter()
        .filter(|e| e.name == "llmtrace.stream.stall")
        .collect();
    assert_eq!(stalls.len(), 2);
    let first = &stalls[0];
    // Each at its gap's start: 140 ms and 920 ms.
    assert_eq!(
        stalls[1].time.duration_since(first.time).unwrap(),
        Duration::from_millis(780)
    );
    assert_eq!(
        first.attributes[0].value,
        Value::F64(0.76),
        "{:?}",
        first.attributes
    );
    assert_eq!(stalls[1].attributes[0].value, Value::F64(1.08));

    // Off: no series, stalls still become events.
    let config = GenAiConfig {
        stall_threshold: Duration::from_millis(500),
        chunk_timeline: 0,
        ..GenAiConfig::default()
    };
    let mut ex = exchange(config, "/v1/chat/completions", CHAT, t0);
    for ms in [100u64, 900] {
        ex.on_response_data(&chunk("x"), t0 + Duration::from_millis(ms));
    }
    let report = ex.finish(End::Complete, t0 + Duration::from_millis(901));
    assert!(get(&report, "llmtrace.stream.chunk_offsets_ms").is_none());
    assert_eq!(
        report
            .events
            .iter()
            .filter(|e| e.name == "llmtrace.stream.stall")
            .count(),
        1
    );
}

#[test]
fn content_filter_and_refusals_raise_a_guardrail_event() {
    let t0 = Instant::now();
    let mut ex = exchange(GenAiConfig::default(), "/v1/chat/completions", CHAT, t0);
    ex.on_response_data(&chunk("I"), t0);
    ex.on_response_data(b"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"content_filter\"}]}\n\ndata: [DONE]\n\n", t0);
    let report = ex.finish(End::Complete, t0);
    assert_eq!(
        get(&report, "llmtrace.guardrail"),
        Some(&Value::String("content_filter".into()))
    );
    assert!(
        report
            .events
            .iter()
            .any(|e| e.name == "guardrail.triggered")
    );
}

#[test]
fn a_ten_megabyte_line_is_skipped_and_the_stream_goes_on() {
    let t0 = Instant::now();
    let mut ex = exchange(GenAiConfig::default(), "/v1/chat/completions", CHAT, t0);
    ex.on_response_data(&chunk("before"), t0);
    let mut huge = b"data: {\"choices\":[{\"delta\":{\"content\":\"".to_vec();
    huge.resize(10 * 1024 * 1024, b'a');
    for piece in huge.chunks(64 * 1024) {
        ex.on_response_data(piece, t0);
    }
    ex.on_response_data(b"\"}}]}\n\n", t0);
    ex.on_response_data(&chunk("after"), t0);
    ex.on_response_data(DONE, t0);
    let report = ex.finish(End::Complete, t0);
    assert_eq!(
        get(&report, "llmtrace.stream.oversized_events"),
        Some(&Value::I64(1))
    );
    assert_eq!(get(&report, "llmtrace.stream.chunks"), Some(&Value::I64(2)));
    assert_eq!(
        get(&report, "llmtrace.stream.complete"),
        Some(&Value::Bool(true))
    );
}

#[test]
fn truncated_json_in_an_event_is_reported_not_fatal() {
    let t0 = Instant::now();
    let mut ex = exchange(GenAiConfig::default(), "/v1/chat/completions", CHAT, t0);
    ex.on_response_data(
        b"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"finish_reason\":\"sto\n\n",
        t0,
    );
    ex.on_response_data(&chunk("ok"), t0);
    ex.on_response_data(DONE, t0);
    let report = ex.finish(End::Complete, t0);
    assert!(
        get(&report, "llmtrace.parse_error")
            .unwrap()
            .as_str()
            .contains("not JSON")
    );
    assert_eq!(
        get(&report, "llmtrace.stream.complete"),
        Some(&Value::Bool(true))
    );
}

#[test]
fn estimated_usage_is_marked_as_such() {
    let t0 = Instant::now();
    let config = GenAiConfig {
        estimate_usage: true,
        ..GenAiConfig::default()
    };
    let mut ex = exchange(config, "/v1/chat/completions", CHAT, t0);
    ex.on_response_data(&chunk("twelve bytes"), t0);
    ex.on_response_data(DONE, t0);
    let report = ex.finish(End::Complete, t0);
    assert_eq!(
        get(&report, "llmtrace.usage.source"),
        Some(&Value::String("estimated".into()))
    );
    assert_eq!(
        get(&report, "gen_ai.usage.output_tokens"),
        Some(&Value::I64(3))
    );
}

#[test]
fn a_truncated_stream_reports_at_most_max_choices_whatever_n_says() {
    use llmtrace::limits::MAX_CHOICES;

    let t0 = Instant::now();
    let request = r#"{"model":"m","stream":true,"n":2000000000,"messages":[]}"#;
    let mut ex = exchange(GenAiConfig::default(), "/v1/chat/completions", request, t0);
    ex.on_response_data(&chunk("partial"), t0);
    // No final event: the stream was cut.
    let report = ex.finish(End::Complete, t0);
    let reasons = get(&report, "gen_ai.response.finish_reasons").unwrap();
    let Value::Array(opentelemetry::Array::String(reasons)) = reasons else {
        panic!("{reasons:?}");
    };
    assert_eq!(reasons.len(), MAX_CHOICES);
    assert!(reasons.iter().all(|r| r.as_str() == "error"));
    assert_eq!(report.summary.finish_reasons.len(), MAX_CHOICES);
    // `n` itself is only data.
    let n = ex.start_attributes();
    assert!(
        n.iter()
            .any(|kv| kv.key.as_str() == "gen_ai.request.choice.count"
                && kv.value == Value::I64(2_000_000_000))
    );
}

#[test]
fn a_stream_naming_many_choices_keeps_at_most_max_choices() {
    use llmtrace::limits::MAX_CHOICES;

    let t0 = Instant::now();
    let config = GenAiConfig {
        capture_content: true,
        ..GenAiConfig::default()
    };
    let mut ex = exchange(config, "/v1/chat/completions", CHAT, t0);
    for index in 0..10 * MAX_CHOICES {
        let event = format!(
            "data: {{\"choices\":[{{\"index\":{index},\"delta\":{{\"content\":\"x\"}},\"finish_reason\":\"stop\"}}]}}\n\n"
        );
        ex.on_response_data(event.as_bytes(), t0);
    }
    ex.on_response_data(b"data: [DONE]\n\n", t0);
    let report = ex.finish(End::Complete, t0);
    assert_eq!(report.summary.finish_reasons.len(), MAX_CHOICES);
    let output = get(&report, "gen_ai.output.messages").unwrap().as_str();
    let output: serde_json::Value = serde_json::from_str(&output).unwrap();
    assert_eq!(output.as_array().unwrap().len(), MAX_CHOICES);
    assert_eq!(
        get(&report, "llmtrace.content.truncated"),
        Some(&Value::Bool(true))
    );
}

#[test]
fn client_strings_reaching_the_span_and_metrics_are_bounded() {
    use llmtrace::limits::{MAX_NAME_BYTES, MAX_STOP_SEQUENCES, TRUNCATED_MARKER};

    let t0 = Instant::now();
    let long = "m".repeat(10_000);
    let stops: Vec<String> = (0..100).map(|i| format!("{i}{long}")).collect();
    let request = serde_json::json!({
        "model": long,
        "stream": true,
        "stop": stops,
        "encoding_format": long,
        "messages": [],
    })
    .to_string();
    let mut ex = exchange(GenAiConfig::default(), "/v1/chat/completions", &request, t0);
    let model = ex.request().model.clone().unwrap();
    assert!(model.len() <= MAX_NAME_BYTES && model.ends_with(TRUNCATED_MARKER));
    assert_eq!(ex.span_name(), format!("chat {model}"));
    let start = ex.start_attributes();
    let find = |key: &str| {
        start
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.clone())
            .unwrap()
    };
    assert_eq!(find("gen_ai.request.model").as_str(), model);
    let Value::Array(opentelemetry::Array::String(stops)) = find("gen_ai.request.stop_sequences")
    else {
        panic!("no stop sequences");
    };
    assert_eq!(stops.len(), MAX_STOP_SEQUENCES);
    assert!(stops.iter().all(|s| s.as_str().len() <= MAX_NAME_BYTES));
    let Value::Array(opentelemetry::Array::String(formats)) =
        find("gen_ai.request.encoding_formats")
    else {
        panic!("no encoding format");
    };
    assert!(formats[0].as_str().len() <= MAX_NAME_BYTES);

    // What the response says about itself is bounded too.
    let event = format!(
        "data: {{\"id\":\"{long}\",\"model\":\"{long}\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"x\"}},\"finish_reason\":\"{long}\"}}]}}\n\n"
    );
    ex.on_response_data(event.as_bytes(), t0);
    let error = format!("data: {{\"error\":{{\"type\":\"{long}\",\"message\":\"{long}\"}}}}\n\n");
    ex.on_response_data(error.as_bytes(), t0);
    let report = ex.finish(End::Complete, t0);
    for key in ["gen_ai.response.id", "gen_ai.response.model", "error.type"] {
        let value = get(&report, key).unwrap_or_else(|| panic!("{key} missing"));
        assert!(value.as_str().len() <= MAX_NAME_BYTES, "{key}");
    }
    let Value::Array(opentelemetry::Array::String(reasons)) =
        get(&report, "gen_ai.response.finish_reasons").unwrap()
    else {
        panic!("no finish reasons");
    };
    assert!(reasons[0].as_str().len() <= MAX_NAME_BYTES);
    let (_, message) = report.error.as_ref().unwrap();
    assert!(message.len() <= llmtrace::limits::MAX_MESSAGE_BYTES);
    for kv in &report.metrics.attributes {
        assert!(kv.value.as_str().len() <= MAX_NAME_BYTES, "{}", kv.key);
    }
}

#[test]
fn azure_deployments_and_hand_set_models_are_bounded() {
    use llmtrace::limits::MAX_NAME_BYTES;

    let long = "d".repeat(10_000);
    let endpoint = Endpoint::detect(
        &format!("/openai/deployments/{long}/chat/completions"),
        None,
    )
    .unwrap();
    let info = RequestInfo::parse(&endpoint, br#"{"messages":[]}"#, false);
    assert!(info.model.as_ref().unwrap().len() <= MAX_NAME_BYTES);

    let mut info = RequestInfo::parse(&endpoint, b"", false);
    info.model = Some(long.clone());
    info.stop_sequences = vec![long.clone(); 100];
    let t0 = Instant::now();
    let mut ex = Exchange::new(
        Arc::new(GenAiConfig::default()),
        endpoint.clone(),
        info.clone(),
        t0,
    );
    assert!(ex.span_name().len() <= "chat ".len() + MAX_NAME_BYTES);
    ex.set_request(info);
    assert!(ex.request().model.as_ref().unwrap().len() <= MAX_NAME_BYTES);
    assert!(ex.request().stop_sequences.len() <= llmtrace::limits::MAX_STOP_SEQUENCES);
}

/// The tool calls an answer asks for, by format, streamed and whole.
#[test]
fn tool_calls_are_read_from_every_format() {
    let t0 = Instant::now();
    let summary = |path: &str, content_type: &str, body: &[&[u8]]| {
        let endpoint = Endpoint::detect(path, None).unwrap();
        let request = RequestInfo::parse(&endpoint, br#"{"model":"m","stream":true}"#, false);
        let mut ex = Exchange::new(Arc::new(GenAiConfig::default()), endpoint, request, t0);
        let mut head = http::HeaderMap::new();
        head.insert("content-type", content_type.parse().unwrap());
        ex.on_response_head(200, &head, t0);
        for piece in body {
            ex.on_response_data(piece, t0);
        }
        ex.finish(End::Complete, t0).summary.tool_calls
    };
    let want = vec![("call_abc".to_owned(), "get_weather".to_owned())];
    // Chat, streamed: the id and name in the first fragment, the arguments after (a fragment
    // whose arguments mention "name" must not count as a new call).
    let chat_stream: [&[u8]; 4] = [
        b"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"tool_calls\":[{\"index\":0,\"id\":\"call_abc\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}]},\"finish_reason\":null}]}\n\n",
        b"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"name\\\":\\\"x\\\"}\"}}]},\"finish_reason\":null}]}\n\n",
        b"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
        b"data: [DONE]\n\n",
    ];
    assert_eq!(
        summary("/v1/chat/completions", "text/event-stream", &chat_stream),
        want
    );
    let chat_body = br#"{"id":"c","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_abc","type":"function","function":{"name":"get_weather","arguments":"{}"}}]},"finish_reason":"tool_calls"}]}"#;
    assert_eq!(
        summary("/v1/chat/completions", "application/json", &[chat_body]),
        want
    );
    let responses = br#"{"id":"resp_1","object":"response","status":"completed","output":[{"type":"function_call","id":"fc_1","call_id":"call_abc","name":"get_weather","arguments":"{}"}]}"#;
    assert_eq!(
        summary("/v1/responses", "application/json", &[responses]),
        want
    );
    let anthropic_stream: [&[u8]; 3] = [
        b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"claude\",\"content\":[],\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n",
        b"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"tool_use\",\"id\":\"call_abc\",\"name\":\"get_weather\",\"input\":{}}}\n\n",
        b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    ];
    assert_eq!(
        summary("/v1/messages", "text/event-stream", &anthropic_stream),
        want
    );
    let anthropic_body = br#"{"id":"msg_1","type":"message","content":[{"type":"text","text":"Let me look."},{"type":"tool_use","id":"call_abc","name":"get_weather","input":{"city":"Paris"}}],"stop_reason":"tool_use"}"#;
    assert_eq!(
        summary("/v1/messages", "application/json", &[anthropic_body]),
        want
    );
}

/// The tool results a request carries, by format; prompts around them are skipped.
#[test]
fn tool_results_are_read_from_every_format() {
    let results = |path: &str, body: &str| {
        let endpoint = Endpoint::detect(path, None).unwrap();
        RequestInfo::parse(&endpoint, body.as_bytes(), false).tool_results
    };
    let chat = r#"{"model":"m","messages":[{"role":"user","content":"a \"quoted\" prompt"},
        {"role":"assistant","tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{}"}}]},
        {"role":"tool","tool_call_id":"call_1","content":"21 C"},{"role":"tool","tool_call_id":"call_2","content":[{"type":"text","text":"x"}]}]}"#;
    assert_eq!(results("/v1/chat/completions", chat), ["call_1", "call_2"]);
    let responses = r#"{"model":"m","input":[{"role":"user","content":"hi"},{"type":"function_call","call_id":"call_1","name":"f","arguments":"{}"},{"type":"function_call_output","call_id":"call_1","output":"21 C"}]}"#;
    assert_eq!(results("/v1/responses", responses), ["call_1"]);
    assert!(results("/v1/responses", r#"{"model":"m","input":"just a prompt"}"#).is_empty());
    let anthropic = r#"{"model":"m","max_tokens":9,"messages":[{"role":"user","content":"hi"},
        {"role":"assistant","content":[{"type":"tool_use","id":"toolu_1","name":"f","input":{}}]},
        {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":[{"type":"text","text":"21 C"}]},{"type":"text","text":"thanks"}]}]}"#;
    assert_eq!(results("/v1/messages", anthropic), ["toolu_1"]);
    // Bounded: 32 ids at most, each at most 128 bytes.
    let many: Vec<String> = (0..100)
        .map(|i| {
            format!(
                r#"{{"role":"tool","tool_call_id":"{}{i}","content":"x"}}"#,
                "c".repeat(300)
            )
        })
        .collect();
    let body = format!(r#"{{"model":"m","messages":[{}]}}"#, many.join(","));
    let ids = results("/v1/chat/completions", &body);
    assert_eq!(ids.len(), 32);
    assert!(ids.iter().all(|id| id.len() == 128));
}
