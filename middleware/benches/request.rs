//! Cost of reading a request body ([`RequestInfo::parse`]), and of the usage splice
//! ([`request_with_usage`]) a streamed chat request also goes through in the gateway.
//!
//! Three bodies: a short chat request, a ~100 KB prompt (one user message of 17 000 words,
//! as the load harness's `--prompt-words 17000` sends), and the same with `"stream":true`.
//!
//! ```sh
//! cargo bench -p llmtrace --bench request
//! ```

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use llmtrace::genai::{Endpoint, RequestInfo, request_with_usage};

/// A chat request whose one user message is `words` words.
fn chat_request(words: usize, stream: bool) -> Vec<u8> {
    let prompt = vec!["lorem"; words].join(" ");
    let stream = if stream { r#""stream":true,"# } else { "" };
    format!(r#"{{"model":"gpt-4o",{stream}"messages":[{{"role":"user","content":"{prompt}"}}]}}"#)
        .into_bytes()
}

fn requests(c: &mut Criterion) {
    let endpoint = Endpoint::detect("/v1/chat/completions", None).unwrap();
    let short = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"Say hello in ten short words please right now ok"}]}"#.to_vec();
    let cases = [
        ("short", short),
        ("prompt_100k", chat_request(17_000, false)),
        ("prompt_100k_stream", chat_request(17_000, true)),
    ];
    for (name, body) in &cases {
        let mut group = c.benchmark_group(format!("request/{name}"));
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function("parse", |b| {
            b.iter(|| black_box(RequestInfo::parse(&endpoint, black_box(body), false)))
        });
        if name.ends_with("_stream") {
            group.bench_function("with_usage", |b| {
                b.iter(|| black_box(request_with_usage(&endpoint, black_box(body))))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, requests);
criterion_main!(benches);
