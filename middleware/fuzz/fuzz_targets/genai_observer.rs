//! Feeds arbitrary response bytes (streamed and whole) to the GenAI observer for every wire
//! format, cut into chunks at fuzzer-chosen points: nothing may panic, and the observations
//! (all attributes but timings) must not depend on where the chunks were cut.
//!
//! Input layout: byte 0 = format (mod 5); byte 1 = 1 for an event stream, else a JSON body;
//! byte 2 = HTTP status class; byte 3 = number of cut points (mod 8); then 2 bytes per cut
//! point; the rest is the response body. The request body is fixed per format.
#![no_main]

use std::sync::Arc;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use llmtrace::genai::{End, Endpoint, Exchange, GenAiConfig, RequestInfo};

const FORMATS: [(&str, &[u8]); 5] = [
    ("/v1/chat/completions", br#"{"model":"m","stream":true,"n":2}"#),
    ("/v1/completions", br#"{"model":"m","stream":true}"#),
    ("/v1/embeddings", br#"{"model":"m","input":"x"}"#),
    ("/v1/responses", br#"{"model":"m","stream":true}"#),
    ("/v1/messages", br#"{"model":"m","stream":true,"max_tokens":5}"#),
];

const TIMING: &[&str] = &[
    "llmtrace.response.time_to_first_byte",
    "gen_ai.response.time_to_first_chunk",
    "llmtrace.stream.gap.mean",
    "llmtrace.stream.gap.p50",
    "llmtrace.stream.gap.p99",
    "llmtrace.stream.gap.max",
    "llmtrace.usage.output_tokens_per_second",
];

fn observe(format: usize, streamed: bool, status: u16, capture: bool, chunks: &[&[u8]]) -> Vec<String> {
    let (path, request) = FORMATS[format];
    let endpoint = Endpoint::detect(path, None).unwrap();
    let request = RequestInfo::parse(&endpoint, request, capture);
    let config = GenAiConfig { capture_content: capture, content_cap: 64, ..GenAiConfig::default() };
    let now = Instant::now();
    let mut exchange = Exchange::new(Arc::new(config), endpoint, request, now);
    let mut head = http::HeaderMap::new();
    let content_type = if streamed { "text/event-stream" } else { "application/json" };
    head.insert("content-type", http::HeaderValue::from_static(content_type));
    exchange.on_response_head(status, &head, now);
    for chunk in chunks {
        exchange.on_response_data(chunk, now);
    }
    let report = exchange.finish(End::Complete, now);
    report
        .attributes
        .iter()
        .filter(|kv| !TIMING.contains(&kv.key.as_str()))
        .map(|kv| format!("{}={:?}", kv.key, kv.value))
        .collect()
}

fuzz_target!(|input: &[u8]| {
    if input.len() < 4 {
        return;
    }
    let format = input[0] as usize % FORMATS.len();
    let streamed = input[1] == 1;
    let status = [200, 200, 400, 429, 500][input[2] as usize % 5];
    let cuts = (input[3] % 8) as usize;
    let header = 4 + 2 * cuts;
    if input.len() < header {
        return;
    }
    let body = &input[header..];
    let mut points: Vec<usize> = (0..cuts)
        .map(|i| u16::from_le_bytes([input[4 + 2 * i], input[5 + 2 * i]]) as usize % (body.len() + 1))
        .collect();
    points.sort_unstable();
    let mut chunks = Vec::new();
    let mut from = 0;
    for at in points {
        chunks.push(&body[from..at]);
        from = at;
    }
    chunks.push(&body[from..]);
    for capture in [false, true] {
        let whole = observe(format, streamed, status, capture, &[body]);
        let split = observe(format, streamed, status, capture, &chunks);
        assert_eq!(whole, split, "observations depend on chunking");
    }
});
