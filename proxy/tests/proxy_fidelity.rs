//! What the upstream receives through llmtrace-proxy, however the client sends it, and what
//! hostile input costs.
//!
//! Every test here looks where the bytes land: the mock provider records each request it
//! receives (method, path, headers, body), and each request carries its own `x-request-id`
//! so the test finds exactly the upstream request its client sent. The one change the gateway
//! may make is splicing `"stream_options":{"include_usage":true}` into a streamed OpenAI chat
//! body that did not ask for usage ([`assert_forwarded`] allows exactly that).

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use llmtrace_mock::{MockConfig, MockServer, ReceivedRequest};
use llmtrace_proxy::Config;
use llmtrace_test_support::*;
use opentelemetry::trace::SpanKind;
use support::{assert_forwarded, start_gateway};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The mock (keeping `keep` requests) and a gateway in front of it exporting to `rec`.
async fn start(
    rec: &Recorder,
    keep: usize,
    edit: impl FnOnce(&mut Config),
) -> (MockServer, SocketAddr) {
    let mock = MockServer::start(MockConfig {
        keep_requests: keep,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let telemetry = llmtrace_proxy::Telemetry::with_tracer_provider(rec.provider.clone());
    let (proxy, _) = start_gateway(&telemetry, &mock.url(), edit).await;
    (mock, proxy)
}

/// The one request the mock received with this `x-request-id`.
async fn received(mock: &MockServer, request_id: &str) -> ReceivedRequest {
    for _ in 0..200 {
        let found: Vec<_> = mock
            .received_requests()
            .into_iter()
            .filter(|r| {
                r.headers
                    .get("x-request-id")
                    .is_some_and(|v| v == request_id)
            })
            .collect();
        match found.len() {
            0 => tokio::time::sleep(Duration::from_millis(10)).await,
            1 => return found.into_iter().next().unwrap(),
            n => panic!("{request_id}: the upstream received {n} requests"),
        }
    }
    panic!("{request_id}: the upstream received nothing")
}

/// A small deterministic generator for split sizes and pauses.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// How a raw HTTP/1.1 client frames and splits a body.
#[derive(Debug, Clone, Copy)]
enum Framing {
    Length,
    Chunked,
    ExpectContinue,
}

#[derive(Debug, Clone, Copy)]
enum Split {
    /// One write for head and body.
    Whole,
    /// One byte per write.
    Bytes,
    /// Writes of 1..=max bytes, with short pauses.
    Random(usize),
}

/// Sends one request over a fresh connection as `framing` and `split` say; returns the status
/// and the raw answer.
async fn send_raw(
    proxy: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    framing: Framing,
    split: Split,
    seed: u64,
) -> (u16, String) {
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nhost: gateway\r\nconnection: close\r\ncontent-type: application/json\r\n"
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    let mut payload = Vec::new();
    match framing {
        Framing::Length | Framing::ExpectContinue => {
            head.push_str(&format!("content-length: {}\r\n", body.len()));
            if matches!(framing, Framing::ExpectContinue) {
                head.push_str("expect: 100-continue\r\n");
            }
            payload.extend_from_slice(body);
        }
        Framing::Chunked => {
            head.push_str("transfer-encoding: chunked\r\n");
            let mut rng = Rng(seed | 1);
            let mut rest = body;
            while !rest.is_empty() {
                let n = (1 + rng.below(3000)).min(rest.len());
                payload.extend_from_slice(format!("{n:x}\r\n").as_bytes());
                payload.extend_from_slice(&rest[..n]);
                payload.extend_from_slice(b"\r\n");
                rest = &rest[n..];
            }
            payload.extend_from_slice(b"0\r\n\r\n");
        }
    }
    head.push_str("\r\n");
    let mut tcp = tokio::net::TcpStream::connect(proxy).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let mut answer = Vec::new();
    if matches!(framing, Framing::ExpectContinue) {
        tcp.write_all(head.as_bytes()).await.unwrap();
        // As curl does: wait a moment for `100 Continue`, then send the body anyway.
        let mut buf = [0u8; 1024];
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(1000), tcp.read(&mut buf)).await
        {
            let interim = String::from_utf8_lossy(&buf[..n]).into_owned();
            if !interim.starts_with("HTTP/1.1 100") {
                answer.extend_from_slice(&buf[..n]);
            }
        }
        write_split(&mut tcp, &payload, split, seed).await;
    } else {
        let mut all = head.into_bytes();
        all.extend_from_slice(&payload);
        write_split(&mut tcp, &all, split, seed).await;
    }
    tcp.read_to_end(&mut answer).await.unwrap();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

async fn write_split(tcp: &mut tokio::net::TcpStream, bytes: &[u8], split: Split, seed: u64) {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut rest = bytes;
    let mut writes = 0usize;
    while !rest.is_empty() {
        let n = match split {
            Split::Whole => rest.len(),
            Split::Bytes => 1,
            Split::Random(max) => 1 + rng.below(max),
        }
        .min(rest.len());
        tcp.write_all(&rest[..n]).await.unwrap();
        rest = &rest[n..];
        writes += 1;
        if matches!(split, Split::Random(_)) && rng.below(8) == 0 {
            tokio::time::sleep(Duration::from_millis(rng.below(3) as u64)).await;
        } else if writes % 64 == 0 {
            tokio::task::yield_now().await;
        }
    }
}

/// A chat request whose user message is `size` bytes of text.
fn chat(model: &str, stream: Option<&str>, size: usize) -> Vec<u8> {
    let text: String = "lorem ipsum dolor sit amet "
        .chars()
        .cycle()
        .take(size)
        .collect();
    let stream = stream.map_or(String::new(), |s| format!(", {s}"));
    format!(
        r#"{{ "model" : "{model}"{stream}, "messages":[{{"role":"user","content":"{text}"}}],
  "temperature": 0.70, "seed": 123456789012345678901234567890, "max_tokens":4}}"#
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_body_reaches_the_upstream_byte_for_byte_however_it_is_split() {
    let rec = Recorder::new();
    let (mock, proxy) = start(&rec, 512, |_| {}).await;
    let mock_headers = [
        ("x-mock-tokens", "3"),
        ("x-mock-ttft-ms", "0"),
        ("x-mock-gap-ms", "0"),
    ];
    let embeddings = {
        let input: String = "many words ".chars().cycle().take(100_000).collect();
        format!(
            r#"{{"input":"{input}","model":"text-embedding-3-small","encoding_format":"float"}}"#
        )
        .into_bytes()
    };
    let messages = {
        let text: String = "claude words ".chars().cycle().take(20_000).collect();
        format!(r#"{{"model":"claude-sonnet-4-5","max_tokens":4,"stream":true,"messages":[{{"role":"user","content":"{text}"}}]}}"#)
            .into_bytes()
    };
    // (path, body, the gateway may splice usage in)
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("/v1/chat/completions", chat("gpt-4o", None, 1_000), false),
        ("/v1/chat/completions", chat("gpt-4o", None, 100_000), false),
        (
            "/v1/chat/completions",
            chat("gpt-4o", Some(r#""stream":true"#), 100_000),
            true,
        ),
        // Read before the head goes upstream (up to pingora's 64 KiB retry buffer).
        (
            "/v1/chat/completions",
            chat("gpt-4o", Some(r#""stream":true"#), 1_000),
            true,
        ),
        (
            "/v1/chat/completions",
            chat("gpt-4o", Some(r#""stream":true"#), 60_000),
            true,
        ),
        (
            "/v1/chat/completions",
            chat(
                "gpt-4o",
                Some(r#""stream" : true ,"stream_options":{"include_usage":true}"#),
                5_000,
            ),
            false,
        ),
        ("/v1/embeddings", embeddings, false),
        ("/v1/messages", messages, false),
    ];
    let mut seed = 7u64;
    let mut checked = 0;
    for (path, body, splice) in &cases {
        for framing in [Framing::Length, Framing::Chunked, Framing::ExpectContinue] {
            for split in [Split::Whole, Split::Random(700), Split::Bytes] {
                // One byte per write only for the small bodies: it is the slowest client.
                if matches!(split, Split::Bytes) && body.len() > 6_000 {
                    continue;
                }
                seed += 1;
                let id = format!("fidelity-{seed}");
                let mut headers = mock_headers.to_vec();
                headers.push(("x-request-id", &id));
                let (status, answer) =
                    send_raw(proxy, path, &headers, body, framing, split, seed).await;
                assert_eq!(status, 200, "{path} {framing:?} {split:?}: {answer}");
                let upstream = received(&mock, &id).await;
                assert_eq!(upstream.uri.path(), *path);
                assert_forwarded(body, &upstream.body, *splice);
                if matches!(framing, Framing::Length)
                    && path.contains("chat")
                    && body.len() < 65_000
                {
                    // A chat body read ahead goes upstream with its (new) length, not chunked.
                    let length = upstream.headers.get("content-length");
                    assert_eq!(
                        length.and_then(|v| v.to_str().ok()?.parse::<usize>().ok()),
                        Some(upstream.body.len()),
                        "{path} {framing:?} {split:?}"
                    );
                    assert!(upstream.headers.get("transfer-encoding").is_none());
                }
                if *splice {
                    assert!(!answer.contains(r#""choices":[]"#), "usage chunk leaked");
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 40, "{checked} cases");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_bodies_in_many_data_frames_reach_the_upstream_whole() {
    let rec = Recorder::new();
    let (mock, proxy) = start(&rec, 64, |_| {}).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http();
    for (i, (body, splice)) in [
        (chat("gpt-4o", Some(r#""stream":true"#), 300_000), true),
        (chat("gpt-4o", None, 300_000), false),
        (chat("gpt-4o", Some(r#""stream":true"#), 5 << 20), true),
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("h2-{i}");
        let (tx, rx) =
            tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, std::io::Error>>(4);
        let frames = body.clone();
        tokio::spawn(async move {
            let mut rng = Rng(99 + i as u64);
            let mut rest = &frames[..];
            while !rest.is_empty() {
                let n = (1 + rng.below(20_000)).min(rest.len());
                let chunk = Bytes::copy_from_slice(&rest[..n]);
                rest = &rest[n..];
                if tx.send(Ok(http_body::Frame::data(chunk))).await.is_err() {
                    return;
                }
            }
        });
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        let request = http::Request::post(format!("http://{proxy}/v1/chat/completions"))
            .header("content-type", "application/json")
            .header("x-request-id", &id)
            .header("x-mock-tokens", "2")
            .header("x-mock-ttft-ms", "0")
            .body(StreamBody::new(stream).boxed())
            .unwrap();
        let response = client.request(request).await.unwrap();
        assert_eq!(response.status(), 200, "{id}");
        assert_eq!(response.version(), http::Version::HTTP_2);
        let answer = response.into_body().collect().await.unwrap().to_bytes();
        assert!(!answer.is_empty());
        let upstream = received(&mock, &id).await;
        assert_forwarded(&body, &upstream.body, splice);
    }
}

/// Bodies the provider refuses (empty, not JSON, cut short) reach it as sent, read ahead or
/// not, and its error reaches the client: the gateway neither answers for it nor hangs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_and_broken_chat_bodies_reach_the_upstream_and_its_error_reaches_the_client() {
    let rec = Recorder::new();
    let (mock, proxy) = start(&rec, 64, |_| {}).await;
    let bodies: [&[u8]; 4] = [
        b"",
        b"{",
        b"not json",
        br#"{"model":"gpt-4o","stream":true"#,
    ];
    let mut seed = 900u64;
    for body in bodies {
        for framing in [Framing::Length, Framing::Chunked] {
            seed += 1;
            let id = format!("broken-{seed}");
            let (status, answer) = send_raw(
                proxy,
                "/v1/chat/completions",
                &[("x-request-id", &id)],
                body,
                framing,
                Split::Whole,
                seed,
            )
            .await;
            assert_eq!(status, 400, "{body:?} {framing:?}: {answer}");
            assert!(answer.contains("invalid_request_error"), "{answer}");
            let upstream = received(&mock, &id).await;
            assert_eq!(upstream.body.as_ref(), body, "{framing:?}");
            if matches!(framing, Framing::Length) {
                assert_eq!(
                    upstream.headers.get("content-length").map(|v| v.as_bytes()),
                    Some(body.len().to_string().as_bytes())
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_body_too_large_to_rewrite_goes_through_untouched_and_the_span_says_why() {
    let rec = Recorder::new();
    let (mock, proxy) = start(&rec, 8, |_| {}).await;
    // Over the 8 MiB the gateway holds for the usage splice, under the 32 MiB limit.
    let body = chat("gpt-4o", Some(r#""stream":true"#), 9 << 20);
    let id = "too-large-to-rewrite";
    let (status, answer) = send_raw(
        proxy,
        "/v1/chat/completions",
        &[
            ("x-request-id", id),
            ("x-mock-tokens", "2"),
            ("x-mock-ttft-ms", "0"),
        ],
        &body,
        Framing::Chunked,
        Split::Random(60_000),
        3,
    )
    .await;
    assert_eq!(status, 200, "{}", &answer[..answer.len().min(500)]);
    assert_forwarded(&body, &received(&mock, id).await.body, false);
    let spans = rec.wait_for(2).await;
    let genai = spans
        .iter()
        .find(|s| s.span_kind == SpanKind::Client)
        .unwrap();
    assert_eq!(
        attr_str(genai, "llmtrace.usage.injection").as_deref(),
        Some("skipped:too_large")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_body_limit_holds_for_chunked_and_http2_bodies() {
    let rec = Recorder::new();
    let (mock, proxy) = start(&rec, 64, |config| {
        config.server.max_request_body_bytes = 50_000;
    })
    .await;
    for (path, stream) in [
        ("/v1/chat/completions", Some(r#""stream":true"#)),
        ("/v1/chat/completions", None),
        ("/v1/embeddings", None),
    ] {
        let body = chat("gpt-4o", stream, 80_000);
        let id = format!("limit-{path}-{}", stream.is_some());
        let (status, answer) = send_raw(
            proxy,
            path,
            &[("x-request-id", &id), ("x-mock-ttft-ms", "0")],
            &body,
            Framing::Chunked,
            Split::Random(5_000),
            11,
        )
        .await;
        assert_eq!(status, 413, "{path}: {answer}");
        let json = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
        assert!(json.contains(r#""code":"request_too_large""#), "{answer}");
        assert!(json.contains("50000 bytes"), "{answer}");
        // Whatever reached the upstream is not a whole request it answered.
        assert!(
            mock.received_requests().iter().all(|r| r
                .headers
                .get("x-request-id")
                .is_none_or(|v| v != id.as_str())),
            "{path}: the upstream received a whole request over the limit"
        );
    }
    // HTTP/2: DATA frames with no content-length.
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let body = chat("gpt-4o", Some(r#""stream":true"#), 80_000);
    let frames: Vec<Result<http_body::Frame<Bytes>, std::io::Error>> = body
        .chunks(7_000)
        .map(|c| Ok(http_body::Frame::data(Bytes::copy_from_slice(c))))
        .collect();
    let request = http::Request::post(format!("http://{proxy}/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("x-request-id", "limit-h2")
        .body(StreamBody::new(futures::stream::iter(frames)).boxed())
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), 413);
    let answer = response.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&answer).contains("request_too_large"));
    assert!(mock.received_requests().iter().all(|r| {
        r.headers
            .get("x-request-id")
            .is_none_or(|v| v != "limit-h2")
    }));

    let spans = rec.wait_for(8).await;
    let servers: Vec<_> = spans
        .iter()
        .filter(|s| s.span_kind == SpanKind::Server)
        .collect();
    assert_eq!(servers.len(), 4);
    for server in servers {
        assert_eq!(attr_i64(server, "http.response.status_code"), Some(413));
        assert_eq!(
            attr_str(server, "error.type").as_deref(),
            Some("request_too_large"),
            "{:?}",
            server.attributes
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn percent_encoded_and_dotted_paths_are_refused_before_routing() {
    let rec = Recorder::new();
    let (mock, proxy) = start(&rec, 64, |config| {
        // A keyed chat route and a keyless catch-all: the tricks must not reach chat
        // through the catch-all.
        let mut keyed = config.routes[0].clone();
        keyed.path_prefix = "/v1/chat/".into();
        keyed.client_keys = vec!["team-key".into()];
        config.routes.insert(0, keyed);
    })
    .await;
    let body = chat("gpt-4o", None, 100);
    for path in [
        "/v1/chat/%63ompletions",
        "/v1/%63hat/completions",
        "/v1/x/../chat/completions",
        "/v1//chat/completions",
        "/v1/chat%2Fcompletions",
    ] {
        let (status, answer) =
            send_raw(proxy, path, &[], &body, Framing::Length, Split::Whole, 1).await;
        assert_eq!(status, 400, "{path}: {answer}");
        assert!(answer.contains(r#""code":"ambiguous_path""#), "{answer}");
    }
    assert_eq!(mock.requests_received(), 0);
    // The keyed route takes every key form the SDKs send.
    for key in [
        ("authorization", "Bearer team-key"),
        ("authorization", "bearer team-key"),
        ("authorization", "BEARER  team-key "),
        ("api-key", "team-key"),
        ("x-api-key", "team-key"),
    ] {
        let (status, answer) = send_raw(
            proxy,
            "/v1/chat/completions",
            &[key, ("x-mock-ttft-ms", "0")],
            &body,
            Framing::Length,
            Split::Whole,
            1,
        )
        .await;
        assert_eq!(status, 200, "{key:?}: {answer}");
    }
    let (status, answer) = send_raw(
        proxy,
        "/v1/chat/completions",
        &[("authorization", "Basic team-key")],
        &body,
        Framing::Length,
        Split::Whole,
        1,
    )
    .await;
    assert_eq!(status, 401, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_errors_come_in_the_shape_the_client_sdk_parses() {
    let rec = Recorder::new();
    let telemetry = llmtrace_proxy::Telemetry::with_tracer_provider(rec.provider.clone());
    // Nothing listens there; held for the whole test, so nothing can start to.
    let closed = reserve_port();
    let (proxy, _) = start_gateway(&telemetry, &format!("http://{}", closed.addr()), |_| {}).await;
    let chat_body = chat("gpt-4o", None, 100);
    let (status, answer) = send_raw(
        proxy,
        "/v1/chat/completions",
        &[("x-request-id", "unreachable-1")],
        &chat_body,
        Framing::Length,
        Split::Whole,
        1,
    )
    .await;
    assert_eq!(status, 502, "{answer}");
    assert!(
        !answer.to_ascii_lowercase().contains("server: pingora"),
        "{answer}"
    );
    let (head, json) = answer.split_once("\r\n\r\n").unwrap();
    assert!(
        head.to_ascii_lowercase()
            .contains("x-request-id: unreachable-1"),
        "{head}"
    );
    let json: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(json["error"]["code"], "upstream_unreachable");
    let message = json["error"]["message"].as_str().unwrap();
    assert!(message.contains("unreachable-1"), "{message}");
    assert!(message.contains("could not be reached"), "{message}");

    let messages = br#"{"model":"claude-sonnet-4-5","max_tokens":4,"messages":[{"role":"user","content":"hi"}]}"#;
    let (status, answer) = send_raw(
        proxy,
        "/v1/messages",
        &[("x-request-id", "unreachable-2")],
        messages,
        Framing::Length,
        Split::Whole,
        1,
    )
    .await;
    assert_eq!(status, 502);
    let json: serde_json::Value =
        serde_json::from_str(answer.split_once("\r\n\r\n").unwrap().1).unwrap();
    assert_eq!(json["type"], "error");
    assert_eq!(json["error"]["type"], "api_error");
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unreachable-2")
    );

    let spans = rec.wait_for(4).await;
    let genai = spans
        .iter()
        .find(|s| s.span_kind == SpanKind::Client)
        .unwrap();
    assert!(is_error(genai));
}

/// An upstream that records each request and answers every one with `answer`, then closes.
async fn scripted_upstream(answer: Vec<u8>) -> (SocketAddr, Arc<std::sync::Mutex<Vec<Vec<u8>>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let answer = answer.clone();
            let log = log.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = vec![0u8; 65536];
                loop {
                    let Ok(n) = tcp.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&buf[..n]);
                    if request.ends_with(b"0\r\n\r\n") || request.ends_with(b"}") {
                        break;
                    }
                }
                log.lock().unwrap().push(request);
                for part in answer.split_inclusive(|b| *b == b'\n') {
                    if tcp.write_all(part).await.is_err() {
                        return;
                    }
                }
                let _ = tcp.shutdown().await;
            });
        }
    });
    (addr, seen)
}

fn sse_answer(content_type: &str, extra: &str, events: &[&str]) -> Vec<u8> {
    let mut answer = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\n{extra}connection: close\r\n\r\n"
    );
    for event in events {
        answer.push_str(&format!("data: {event}\n\n"));
    }
    answer.into_bytes()
}

const CHUNK: &str = r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}],"usage":null}"#;
const LAST: &str = r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}"#;
const USAGE: &str = r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_usage_chunk_is_removed_whatever_the_media_type_case_and_compressed_answers_pass_untouched()
 {
    let rec = Recorder::new();
    let telemetry = llmtrace_proxy::Telemetry::with_tracer_provider(rec.provider.clone());
    let body = chat("gpt-4o", Some(r#""stream":true"#), 50);
    for (content_type, encoding, removed) in [
        ("Text/Event-Stream; charset=utf-8", "", true),
        ("TEXT/EVENT-STREAM", "", true),
        ("text/event-stream", "content-encoding: identity\r\n", true),
        ("text/event-stream", "content-encoding: br\r\n", false),
    ] {
        let (upstream, seen) = scripted_upstream(sse_answer(
            content_type,
            encoding,
            &[CHUNK, LAST, USAGE, "[DONE]"],
        ))
        .await;
        let (proxy, _) = start_gateway(&telemetry, &format!("http://{upstream}"), |_| {}).await;
        let (status, answer) = send_raw(
            proxy,
            "/v1/chat/completions",
            &[("accept-encoding", "gzip, br")],
            &body,
            Framing::Length,
            Split::Whole,
            1,
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(
            !answer.contains(r#""choices":[]"#),
            removed,
            "{content_type} {encoding}: {answer}"
        );
        let request = String::from_utf8(seen.lock().unwrap().pop().unwrap()).unwrap();
        assert!(
            request
                .to_ascii_lowercase()
                .contains("accept-encoding: identity\r\n"),
            "the gateway must ask for an answer it can edit: {request}"
        );
    }
    let spans = rec.wait_for(8).await;
    let outcomes: Vec<_> = spans
        .iter()
        .filter(|s| s.span_kind == SpanKind::Client)
        .filter_map(|s| attr_str(s, "llmtrace.usage.injection"))
        .collect();
    assert!(
        outcomes.contains(&"added:not_removed:compressed".to_owned()),
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes.iter().filter(|o| *o == "added").count(),
        3,
        "{outcomes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_n_with_a_cut_stream_costs_nothing() {
    let rec = Recorder::new();
    let telemetry = llmtrace_proxy::Telemetry::with_tracer_provider(rec.provider.clone());
    // Two chunks, then the connection closes without a final event.
    let (upstream, _) =
        scripted_upstream(sse_answer("text/event-stream", "", &[CHUNK, CHUNK])).await;
    let (proxy, _) = start_gateway(&telemetry, &format!("http://{upstream}"), |_| {}).await;
    let body = br#"{"model":"gpt-4o","stream":true,"n":2000000000,"messages":[{"role":"user","content":"hi"}]}"#;
    let started = Instant::now();
    let (status, _) = send_raw(
        proxy,
        "/v1/chat/completions",
        &[],
        body,
        Framing::Length,
        Split::Whole,
        1,
    )
    .await;
    assert_eq!(status, 200);
    let spans = rec.wait_for(2).await;
    // Walking 2e9 choices took minutes (and memory); bounded work ends in milliseconds. The
    // bound here is loose so a busy machine cannot fail it.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let genai = spans
        .iter()
        .find(|s| s.span_kind == SpanKind::Client)
        .unwrap();
    assert_eq!(
        attr_str(genai, "error.type").as_deref(),
        Some("stream_truncated")
    );
}

/// Resident memory of this process, in bytes.
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_distinct_model_names_keep_metrics_small_and_memory_flat() {
    // Spans are made and dropped (no exporter): this test is about the metrics.
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let telemetry = llmtrace_proxy::Telemetry::with_tracer_provider(provider);
    let mock = MockServer::start(MockConfig {
        keep_requests: 0,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let admin_port = reserve_port();
    let admin = admin_port.addr();
    let (proxy, _) = start_gateway(&telemetry, &mock.url(), |config| {
        config.server.admin = Some(admin.to_string());
        config.telemetry.access_log = false;
    })
    .await;
    wait_until_ready(admin, READY_TIMEOUT)
        .await
        .expect("the admin listener");
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let next = Arc::new(AtomicUsize::new(0));
    let run = |until: usize| {
        let client = client.clone();
        let next = next.clone();
        async move {
            let workers = (0..16).map(|_| {
                let client = client.clone();
                let next = next.clone();
                tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= until {
                            return;
                        }
                        let model = format!("{i:08}-{}", "m".repeat(1024));
                        let body = format!(r#"{{"model":"{model}","input":"hello"}}"#);
                        let request = http::Request::post(format!("http://{proxy}/v1/embeddings"))
                            .header("content-type", "application/json")
                            .body(Full::from(body))
                            .unwrap();
                        let response = client.request(request).await.unwrap();
                        assert_eq!(response.status(), 200);
                        response.into_body().collect().await.unwrap();
                    }
                })
            });
            for worker in workers.collect::<Vec<_>>() {
                worker.await.unwrap();
            }
        }
    };
    run(2_000).await;
    let warm = rss();
    run(10_000).await;
    let after = rss();
    let response = client
        .request(
            http::Request::get(format!("http://{admin}/metrics"))
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    let metrics = response.into_body().collect().await.unwrap().to_bytes();
    assert!(
        metrics.len() < 1 << 20,
        "/metrics is {} bytes",
        metrics.len()
    );
    let text = String::from_utf8_lossy(&metrics);
    assert!(
        text.contains("_OTHER"),
        "model labels past the cap become _OTHER"
    );
    let grown = after.saturating_sub(warm);
    eprintln!(
        "/metrics {} bytes after 10 000 distinct models; RSS {} KiB after 2 000 requests, +{} KiB after 8 000 more",
        metrics.len(),
        warm / 1024,
        grown / 1024
    );
    assert!(
        grown < 24 << 20,
        "RSS grew {} KiB over 8 000 requests",
        grown / 1024
    );
}

mod random_bodies {
    //! Random JSON requests, sent in random writes: the upstream gets the client's bytes, or
    //! those bytes plus exactly the usage member.

    use std::sync::OnceLock;

    use proptest::prelude::*;

    use super::*;

    /// One mock and one gateway for every case (no spans kept: the property is about bytes).
    fn gateway() -> &'static (tokio::runtime::Runtime, MockServer, SocketAddr) {
        static GATEWAY: OnceLock<(tokio::runtime::Runtime, MockServer, SocketAddr)> =
            OnceLock::new();
        GATEWAY.get_or_init(|| {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            let (mock, proxy) = runtime.block_on(async {
                let mock = MockServer::start(MockConfig {
                    keep_requests: 256,
                    ..MockConfig::default()
                })
                .await
                .unwrap();
                let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
                let telemetry = llmtrace_proxy::Telemetry::with_tracer_provider(provider);
                let (proxy, _) = start_gateway(&telemetry, &mock.url(), |config| {
                    config.telemetry.access_log = false;
                })
                .await;
                (mock, proxy)
            });
            (runtime, mock, proxy)
        })
    }

    fn ws() -> impl Strategy<Value = &'static str> {
        prop_oneof![Just(""), Just(""), Just(" "), Just("\n  "), Just("\t")]
    }

    fn string() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            "[a-zA-Z0-9 ]{0,12}",
            Just("\\\"".to_owned()),
            Just("\\\\".to_owned()),
            Just("\\n".to_owned()),
            Just("\\u00e9".to_owned()),
            Just("\\ud83d\\ude00".to_owned()),
            Just("{\\\"stream\\\":true}".to_owned()),
            "[é€😀中]{1,3}",
        ];
        prop::collection::vec(piece, 0..6).prop_map(|p| format!("\"{}\"", p.concat()))
    }

    fn number() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            "-?[1-9][0-9]{20,40}",
            "-?[0-9]\\.[0-9]{1,6}[eE][+-]?[0-9]{1,3}",
            Just("1.0".to_owned()),
            Just("0".to_owned()),
        ]
    }

    fn value() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just("null".to_owned()),
            Just("true".to_owned()),
            Just("false".to_owned()),
            number(),
            string(),
        ];
        leaf.prop_recursive(4, 32, 5, |inner| {
            prop_oneof![
                (prop::collection::vec((ws(), inner.clone()), 0..5)).prop_map(|items| {
                    let items: Vec<_> = items.into_iter().map(|(w, v)| format!("{w}{v}")).collect();
                    format!("[{}]", items.join(","))
                }),
                (prop::collection::vec((string(), ws(), inner), 0..5)).prop_map(|members| {
                    let members: Vec<_> = members
                        .into_iter()
                        .map(|(k, w, v)| format!("{k}{w}:{w}{v}"))
                        .collect();
                    format!("{{{}}}", members.join(","))
                }),
            ]
        })
    }

    /// A chat request: model and messages, random extra members (duplicates included), and
    /// maybe `stream` and `stream_options` in their forms.
    fn request() -> impl Strategy<Value = (String, bool)> {
        let stream = prop_oneof![
            Just(("", false)),
            Just((r#""stream":true"#, true)),
            Just((r#""stream" : true , "stream_options" : { }"#, true)),
            Just((
                r#""stream":true,"stream_options":{"include_usage":false}"#,
                true
            )),
            Just((
                r#""stream":true,"stream_options":{"include_usage":true}"#,
                false
            )),
            Just((r#""stream":false"#, false)),
        ];
        (
            prop::collection::vec((string(), ws(), value()), 0..4),
            stream,
            string(),
            ws(),
            any::<bool>(),
        )
            .prop_map(|(extra, (stream, splice), content, w, stream_first)| {
                let mut members: Vec<String> = extra
                    .into_iter()
                    .map(|(k, w, v)| format!("{k}{w}:{v}"))
                    .collect();
                members.push(r#""model":"gpt-4o""#.to_owned());
                members.push(format!(
                    r#""messages":[{w}{{"role":"user","content":{content}}}]"#
                ));
                if !stream.is_empty() {
                    let at = if stream_first { 0 } else { members.len() };
                    members.insert(at, stream.to_owned());
                }
                (
                    format!("{w}{{{w}{}{w}}}{w}", members.join(&format!(",{w}"))),
                    splice,
                )
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn random_json_in_random_writes_reaches_the_upstream_exactly(
            (body, splice) in request(),
            seed in any::<u64>(),
            max in 1usize..2_000,
            chunked in any::<bool>(),
            embeddings in any::<bool>(),
        ) {
            let (runtime, mock, proxy) = gateway();
            let path = if embeddings { "/v1/embeddings" } else { "/v1/chat/completions" };
            static CASE: AtomicUsize = AtomicUsize::new(0);
            let id = format!("prop-{}", CASE.fetch_add(1, Ordering::Relaxed));
            runtime.block_on(async {
                let framing = if chunked { Framing::Chunked } else { Framing::Length };
                let (status, answer) = send_raw(
                    *proxy,
                    path,
                    &[("x-request-id", &id), ("x-mock-ttft-ms", "0"), ("x-mock-tokens", "1")],
                    body.as_bytes(),
                    framing,
                    Split::Random(max),
                    seed,
                )
                .await;
                // The mock answers what it accepts, or the provider's 400; either way the
                // gateway forwarded the request.
                assert!(status == 200 || status == 400, "{status}: {answer}");
                let upstream = received(mock, &id).await;
                assert_forwarded(body.as_bytes(), &upstream.body, splice && !embeddings);
            });
        }
    }
}
