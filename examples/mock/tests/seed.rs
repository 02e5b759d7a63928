//! `x-mock-seed`: the same request with the same seed gets the same bytes (ids, `created`,
//! obfuscation padding, `x-request-id`); without it, every answer has fresh ids.

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use llmtrace_mock::{MockConfig, MockServer};
use serde_json::{Value, json};

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

async fn send(server: &MockServer, path: &str, headers: &[(&str, &str)], body: Value) -> Reply {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut req = Request::post(format!("{}{path}", server.url()))
        .header("content-type", "application/json")
        .header("x-mock-ttft-ms", "0")
        .header("x-mock-gap-ms", "0");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let response = client
        .request(req.body(Full::new(Bytes::from(body.to_string()))).unwrap())
        .await
        .expect("response");
    let (parts, body) = response.into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.expect("whole body").to_bytes(),
    }
}

fn request_id(reply: &Reply) -> String {
    let name = if reply.headers.contains_key("request-id") {
        "request-id"
    } else {
        "x-request-id"
    };
    reply.headers[name].to_str().unwrap().to_owned()
}

fn cases() -> Vec<(&'static str, &'static str, Value)> {
    let messages = json!([{"role": "user", "content": "Say hello"}]);
    vec![
        (
            "",
            "/v1/chat/completions",
            json!({"model": "gpt-4o", "messages": messages, "stream": true, "stream_options": {"include_usage": true}}),
        ),
        (
            "",
            "/v1/chat/completions",
            json!({"model": "gpt-4o", "messages": messages}),
        ),
        (
            "tools",
            "/v1/chat/completions",
            json!({"model": "gpt-4o", "messages": messages, "stream": true}),
        ),
        (
            "",
            "/v1/completions",
            json!({"model": "gpt-3.5-turbo-instruct", "prompt": "Once", "stream": true}),
        ),
        (
            "",
            "/v1/responses",
            json!({"model": "gpt-4.1", "input": "Tell me", "stream": true}),
        ),
        (
            "",
            "/v1/embeddings",
            json!({"model": "text-embedding-3-small", "input": "x", "dimensions": 4}),
        ),
        (
            "",
            "/v1/messages",
            json!({"model": "claude-sonnet-4-6", "max_tokens": 64, "messages": messages, "stream": true}),
        ),
        (
            "429",
            "/v1/messages",
            json!({"model": "claude-sonnet-4-6", "max_tokens": 64, "messages": messages}),
        ),
        (
            "429",
            "/v1/chat/completions",
            json!({"model": "gpt-4o", "messages": messages}),
        ),
    ]
}

#[tokio::test]
async fn same_seed_same_bytes_other_seed_other_ids() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    for (fault, path, body) in cases() {
        let with = |seed: &'static str| {
            let mut h = vec![("x-mock-seed", seed)];
            if !fault.is_empty() {
                h.push(("x-mock-fault", fault));
            }
            h
        };
        let a = send(&server, path, &with("42"), body.clone()).await;
        let b = send(&server, path, &with("42"), body.clone()).await;
        let c = send(&server, path, &with("43"), body.clone()).await;
        let what = format!("{path} {fault}");
        assert_eq!(a.status, b.status, "{what}");
        assert_eq!(a.body, b.body, "{what}");
        assert_eq!(request_id(&a), request_id(&b), "{what}");
        assert_ne!(request_id(&a), request_id(&c), "{what}");
        if fault.is_empty() && path != "/v1/embeddings" {
            // Answers carry a generated id, which follows the seed.
            assert_ne!(a.body, c.body, "{what}");
        }
        let text = String::from_utf8(a.body.to_vec()).unwrap();
        if path != "/v1/messages" && fault.is_empty() && path != "/v1/embeddings" {
            assert!(
                text.contains("1735689600"),
                "{what}: created is fixed: {text}"
            );
        }
    }
}

#[tokio::test]
async fn without_a_seed_ids_and_padding_are_fresh() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let body =
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "stream": true});
    let a = send(&server, "/v1/chat/completions", &[], body.clone()).await;
    let b = send(&server, "/v1/chat/completions", &[], body).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_ne!(a.body, b.body);
    assert_ne!(request_id(&a), request_id(&b));
    let text = String::from_utf8(a.body.to_vec()).unwrap();
    assert!(!text.contains("1735689600"), "{text}");
}

#[tokio::test]
async fn a_seed_that_is_not_a_number_is_a_400() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let reply = send(
        &server,
        "/v1/chat/completions",
        &[("x-mock-seed", "soon")],
        json!({"model": "gpt-4o", "messages": []}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let text = String::from_utf8(reply.body.to_vec()).unwrap();
    assert!(text.contains("x-mock-seed"), "{text}");
}
