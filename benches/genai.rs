//! Cost of observing LLM streams, beside a bare `memchr` line scan of the same bytes.
//!
//! Two long recorded streams (2 000 content chunks each, in the providers' wire formats) are
//! fed to an [`Exchange`] event by event, as they arrive from the network, and the same
//! bytes are scanned for line ends with `memchr` — the least any SSE reader must do. The
//! ratio of the two is the observation overhead per byte.
//!
//! ```sh
//! cargo bench --bench genai
//! ```

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use llmtrace::genai::{End, Endpoint, Exchange, GenAiConfig, RequestInfo};

const CHUNKS: usize = 2000;

fn openai_stream() -> Vec<Vec<u8>> {
    let head = r#"{"id":"chatcmpl-CiT4r0a8Qe2LkV7mZpXw1bNfY3uJd","object":"chat.completion.chunk","created":1767225600,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_0aa8d3e20b","choices":[{"index":0,"delta":{"#;
    let mut events = vec![format!("data: {head}\"role\":\"assistant\",\"content\":\"\",\"refusal\":null}},\"logprobs\":null,\"finish_reason\":null}}],\"usage\":null}}\n\n").into_bytes()];
    for i in 0..CHUNKS {
        events.push(format!("data: {head}\"content\":\" tok{i}\"}},\"logprobs\":null,\"finish_reason\":null}}],\"usage\":null,\"obfuscation\":\"q8Rk2\"}}\n\n").into_bytes());
    }
    events.push(
        format!(
            "data: {head}}},\"logprobs\":null,\"finish_reason\":\"stop\"}}],\"usage\":null}}\n\n"
        )
        .into_bytes(),
    );
    events.push(b"data: {\"id\":\"chatcmpl-CiT4r0a8Qe2LkV7mZpXw1bNfY3uJd\",\"object\":\"chat.completion.chunk\",\"created\":1767225600,\"model\":\"gpt-4o-mini-2024-07-18\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":2000,\"total_tokens\":2012}}\n\n".to_vec());
    events.push(b"data: [DONE]\n\n".to_vec());
    events
}

fn anthropic_stream() -> Vec<Vec<u8>> {
    let mut events = vec![
        b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01XFDUDYJgAACzvnptvVoYEL\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-sonnet-4-5-20250929\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n".to_vec(),
        b"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n".to_vec(),
    ];
    for i in 0..CHUNKS {
        events.push(format!("event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\" tok{i}\"}}}}\n\n").into_bytes());
    }
    events.push(
        b"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n"
            .to_vec(),
    );
    events.push(b"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":2000}}\n\n".to_vec());
    events.push(b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n".to_vec());
    events
}

fn observe(path: &str, request: &[u8], events: &[Vec<u8>]) {
    let endpoint = Endpoint::detect(path, None).unwrap();
    let request = RequestInfo::parse(&endpoint, request, false);
    let now = Instant::now();
    let mut exchange = Exchange::new(Arc::new(GenAiConfig::default()), endpoint, request, now);
    let mut head = http::HeaderMap::new();
    head.insert(
        "content-type",
        http::HeaderValue::from_static("text/event-stream"),
    );
    exchange.on_response_head(200, &head, now);
    for event in events {
        exchange.on_response_data(event, now);
    }
    black_box(exchange.finish(End::Complete, now));
}

fn line_scan(events: &[Vec<u8>]) -> usize {
    events
        .iter()
        .map(|e| memchr::memchr_iter(b'\n', e).count())
        .sum()
}

fn streams(c: &mut Criterion) {
    let cases = [
        (
            "openai_chat",
            "/v1/chat/completions",
            &br#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}"#[..],
            openai_stream(),
        ),
        (
            "anthropic_messages",
            "/v1/messages",
            &br#"{"model":"claude-sonnet-4-5","stream":true,"max_tokens":4096,"messages":[{"role":"user","content":"hi"}]}"#[..],
            anthropic_stream(),
        ),
    ];
    for (name, path, request, events) in &cases {
        let bytes: usize = events.iter().map(Vec::len).sum();
        let mut group = c.benchmark_group(format!("stream/{name}"));
        group.throughput(Throughput::Bytes(bytes as u64));
        group.bench_function("memchr_line_scan", |b| {
            b.iter(|| black_box(line_scan(black_box(events))))
        });
        group.bench_function("observe", |b| {
            b.iter(|| observe(path, request, black_box(events)))
        });
        group.finish();
    }
}

criterion_group!(benches, streams);
criterion_main!(benches);
