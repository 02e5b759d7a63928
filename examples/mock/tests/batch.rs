//! The Files and Batch APIs over HTTP: upload, create, poll until completed, download the
//! output and error files; validation errors in OpenAI's shape; cancel; 404s; bounds.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use llmtrace_mock::{MockConfig, MockServer, generated_text};
use serde_json::{Value, json};

struct Reply {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    /// Asserts OpenAI's error shape and returns the error object.
    fn error(&self, status: u16) -> Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
        let body = self.json();
        let error = body["error"].clone();
        assert_eq!(error["type"], "invalid_request_error", "{body}");
        assert!(error["message"].is_string(), "{body}");
        for key in ["param", "code"] {
            assert!(error.get(key).is_some(), "{key} missing: {body}");
        }
        error
    }
}

async fn call(
    server: &MockServer,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    content_type: &str,
    body: impl Into<Bytes>,
) -> Reply {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = Request::builder()
        .method(method)
        .uri(format!("{}{path}", server.url()))
        .header("content-type", content_type);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let response = client
        .request(req.body(Full::new(body.into())).unwrap())
        .await
        .expect("response");
    let (parts, body) = response.into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.expect("body").to_bytes(),
    }
}

async fn get(server: &MockServer, path: &str) -> Reply {
    call(server, "GET", path, &[], "application/json", "").await
}

async fn post(server: &MockServer, path: &str, headers: &[(&str, &str)], body: Value) -> Reply {
    call(
        server,
        "POST",
        path,
        headers,
        "application/json",
        body.to_string(),
    )
    .await
}

/// A `multipart/form-data` upload as the SDKs send it (`purpose`, then `file`).
async fn upload(server: &MockServer, purpose: Option<&str>, content: Option<&[u8]>) -> Reply {
    upload_with(server, &[], purpose, content).await
}

async fn upload_with(
    server: &MockServer,
    headers: &[(&str, &str)],
    purpose: Option<&str>,
    content: Option<&[u8]>,
) -> Reply {
    let boundary = "e4a1cd0b5b6f4e6c9bd1f0a7c3b2a9d8";
    let mut body = Vec::new();
    if let Some(p) = purpose {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\n{p}\r\n"
            )
            .as_bytes(),
        );
    }
    if let Some(c) = content {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; \
                 filename=\"requests.jsonl\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(c);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    call(
        server,
        "POST",
        "/v1/files",
        headers,
        &format!("multipart/form-data; boundary={boundary}"),
        body,
    )
    .await
}

fn line(custom_id: &str, body: Value) -> String {
    json!({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body})
        .to_string()
}

fn chat_line(custom_id: &str, text: &str) -> String {
    line(
        custom_id,
        json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}),
    )
}

async fn server() -> MockServer {
    MockServer::start(MockConfig::default())
        .await
        .expect("mock starts")
}

async fn create(server: &MockServer, file_id: &str, headers: &[(&str, &str)]) -> Value {
    let r = post(
        server,
        "/v1/batches",
        headers,
        json!({
            "input_file_id": file_id,
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
            "metadata": {"job": "nightly"},
        }),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()
}

async fn poll_until(server: &MockServer, id: &str, done: &[&str]) -> (Value, Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    loop {
        let batch = get(server, &format!("/v1/batches/{id}")).await.json();
        let status = batch["status"].as_str().unwrap().to_owned();
        if seen.last() != Some(&status) {
            seen.push(status.clone());
        }
        if done.contains(&status.as_str()) {
            return (batch, seen);
        }
        assert!(Instant::now() < deadline, "still {status}: {batch}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn jsonl(bytes: &[u8]) -> Vec<Value> {
    std::str::from_utf8(bytes)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn batch_lifecycle_with_output_and_error_files() {
    let server = server().await;
    let input = [
        chat_line("req-1", "hello there"),
        line("req-2", json!({"model": "gpt-4o-mini"})),
        chat_line("req-3", "one two three four"),
    ]
    .join("\n")
        + "\n";

    let file = upload(&server, Some("batch"), Some(input.as_bytes())).await;
    assert_eq!(file.status, 200);
    let file = file.json();
    let file_id = file["id"].as_str().unwrap().to_owned();
    assert!(file_id.starts_with("file-"), "{file}");
    assert_eq!(file["object"], "file");
    assert_eq!(file["bytes"], input.len());
    assert_eq!(file["filename"], "requests.jsonl");
    assert_eq!(file["purpose"], "batch");
    assert_eq!(file["status"], "processed");
    assert!(file["created_at"].as_u64().unwrap() > 1_700_000_000);

    let batch = create(
        &server,
        &file_id,
        &[("x-mock-batch-ms", "300"), ("x-mock-tokens", "4")],
    )
    .await;
    let id = batch["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("batch_"), "{batch}");
    assert_eq!(batch["object"], "batch");
    assert_eq!(batch["status"], "validating");
    assert_eq!(batch["endpoint"], "/v1/chat/completions");
    assert_eq!(batch["input_file_id"], file_id.as_str());
    assert_eq!(batch["completion_window"], "24h");
    assert_eq!(batch["metadata"], json!({"job": "nightly"}));
    assert_eq!(
        batch["request_counts"],
        json!({"total": 3, "completed": 0, "failed": 0})
    );
    assert_eq!(batch["output_file_id"], Value::Null);
    assert_eq!(batch["errors"], Value::Null);
    assert_eq!(
        batch["expires_at"].as_u64().unwrap(),
        batch["created_at"].as_u64().unwrap() + 86_400
    );

    let (done, seen) = poll_until(&server, &id, &["completed", "failed"]).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(
        seen.first().map(String::as_str),
        Some("validating"),
        "{seen:?}"
    );
    assert!(seen.iter().any(|s| s == "in_progress"), "{seen:?}");
    assert!(seen.iter().any(|s| s == "finalizing"), "{seen:?}");
    assert_eq!(
        done["request_counts"],
        json!({"total": 3, "completed": 2, "failed": 1})
    );
    assert_eq!(done["model"], "gpt-4o-mini");
    for key in ["in_progress_at", "finalizing_at", "completed_at"] {
        assert!(done[key].is_u64(), "{key}: {done}");
    }
    assert_eq!(done["cancelled_at"], Value::Null);
    // "hello there" (2) + "one two three four" (4) prompt words; 4 tokens each.
    assert_eq!(done["usage"]["input_tokens"], 6);
    assert_eq!(done["usage"]["output_tokens"], 8);
    assert_eq!(done["usage"]["total_tokens"], 14);

    let output_id = done["output_file_id"].as_str().unwrap();
    let output_file = get(&server, &format!("/v1/files/{output_id}")).await.json();
    assert_eq!(output_file["purpose"], "batch_output");
    let content = get(&server, &format!("/v1/files/{output_id}/content")).await;
    assert_eq!(content.status, 200);
    assert_eq!(content.headers["content-type"], "application/octet-stream");
    assert_eq!(output_file["bytes"], content.body.len());
    let lines = jsonl(&content.body);
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["custom_id"], "req-1");
    assert_eq!(lines[1]["custom_id"], "req-3");
    for l in &lines {
        assert!(l["id"].as_str().unwrap().starts_with("batch_req_"), "{l}");
        assert_eq!(l["error"], Value::Null);
        assert_eq!(l["response"]["status_code"], 200);
        assert!(
            l["response"]["request_id"]
                .as_str()
                .unwrap()
                .starts_with("req_")
        );
        let body = &l["response"]["body"];
        assert_eq!(body["object"], "chat.completion");
        assert_eq!(body["model"], "gpt-4o-mini");
        assert_eq!(body["choices"][0]["message"]["content"], generated_text(4));
        assert_eq!(body["usage"]["completion_tokens"], 4);
    }
    assert_eq!(lines[1]["response"]["body"]["usage"]["prompt_tokens"], 4);
    // The body keeps the sync endpoint's key order.
    assert!(
        std::str::from_utf8(&content.body)
            .unwrap()
            .contains(r#""body":{"id":"chatcmpl-"#)
    );

    let error_id = done["error_file_id"].as_str().unwrap();
    let errors = jsonl(
        &get(&server, &format!("/v1/files/{error_id}/content"))
            .await
            .body,
    );
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0]["custom_id"], "req-2");
    assert_eq!(errors[0]["response"]["status_code"], 400);
    assert_eq!(
        errors[0]["response"]["body"]["error"]["message"],
        "Missing required parameter: 'messages'."
    );

    // The list shows the input and both outputs, newest first.
    let files = get(&server, "/v1/files").await.json();
    assert_eq!(files["object"], "list");
    let ids: Vec<&str> = files["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3);
    assert_eq!(ids[2], file_id);
    assert_eq!(files["first_id"], ids[0]);
    assert_eq!(files["last_id"], ids[2]);
    assert_eq!(files["has_more"], false);
    let batch_files = get(&server, "/v1/files?purpose=batch").await.json();
    assert_eq!(batch_files["data"].as_array().unwrap().len(), 1);

    // Delete, then 404.
    let deleted = call(
        &server,
        "DELETE",
        &format!("/v1/files/{file_id}"),
        &[],
        "application/json",
        "",
    )
    .await;
    assert_eq!(
        deleted.json(),
        json!({"id": file_id, "object": "file", "deleted": true})
    );
    let gone = get(&server, &format!("/v1/files/{file_id}"))
        .await
        .error(404);
    assert!(gone["message"].as_str().unwrap().contains(&file_id));

    // Every request was recorded as received, the upload's body as sent.
    let received = server.received_requests();
    let upload_req = received
        .iter()
        .find(|r| r.method == "POST" && r.uri.path() == "/v1/files")
        .expect("the upload was kept");
    assert!(
        String::from_utf8_lossy(&upload_req.body).contains(&input),
        "the upload body is kept whole"
    );
    assert!(received.iter().any(|r| r.uri.path() == "/v1/batches"));
    assert!(
        received
            .iter()
            .any(|r| r.uri.path() == format!("/v1/batches/{id}"))
    );
}

#[tokio::test]
async fn list_batches_pages_newest_first() {
    let server = server().await;
    let input = chat_line("only", "hi");
    let file_id = upload(&server, Some("batch"), Some(input.as_bytes()))
        .await
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(
            create(&server, &file_id, &[]).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let page = get(&server, "/v1/batches?limit=2").await.json();
    assert_eq!(page["object"], "list");
    assert_eq!(page["has_more"], true);
    assert_eq!(page["first_id"], ids[2].as_str());
    assert_eq!(page["last_id"], ids[1].as_str());
    let after = page["last_id"].as_str().unwrap();
    let next = get(&server, &format!("/v1/batches?limit=2&after={after}"))
        .await
        .json();
    assert_eq!(next["has_more"], false);
    assert_eq!(next["data"].as_array().unwrap().len(), 1);
    assert_eq!(next["data"][0]["id"], ids[0].as_str());
    get(&server, "/v1/batches?limit=0").await.error(400);
}

#[tokio::test]
async fn cancel_goes_through_cancelling_to_cancelled() {
    let server = server().await;
    let input = chat_line("a", "hi");
    let file_id = upload(&server, Some("batch"), Some(input.as_bytes()))
        .await
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let batch = create(&server, &file_id, &[("x-mock-batch-ms", "3000")]).await;
    let id = batch["id"].as_str().unwrap();
    let cancelling = post(
        &server,
        &format!("/v1/batches/{id}/cancel"),
        &[],
        json!(null),
    )
    .await;
    assert_eq!(cancelling.status, 200);
    let cancelling = cancelling.json();
    assert_eq!(cancelling["status"], "cancelling");
    assert!(cancelling["cancelling_at"].is_u64());
    let (done, _) = poll_until(&server, id, &["cancelled", "completed"]).await;
    assert_eq!(done["status"], "cancelled");
    assert!(done["cancelled_at"].is_u64());
    assert_eq!(done["output_file_id"], Value::Null);
    assert_eq!(done["completed_at"], Value::Null);
    let again = post(
        &server,
        &format!("/v1/batches/{id}/cancel"),
        &[],
        json!(null),
    )
    .await;
    assert!(
        again.error(400)["message"]
            .as_str()
            .unwrap()
            .contains("cancelled")
    );

    // A completed batch cannot be cancelled either.
    let quick = create(&server, &file_id, &[("x-mock-batch-ms", "0")]).await;
    let quick_id = quick["id"].as_str().unwrap();
    let (done, _) = poll_until(&server, quick_id, &["completed"]).await;
    assert!(done["output_file_id"].is_string());
    post(
        &server,
        &format!("/v1/batches/{quick_id}/cancel"),
        &[],
        json!(null),
    )
    .await
    .error(400);
}

#[tokio::test]
async fn lines_for_another_endpoint_fail_the_batch() {
    let server = server().await;
    let input = [
        chat_line("a", "hi"),
        json!({"custom_id": "b", "method": "POST", "url": "/v1/embeddings", "body": {"model": "m", "input": "x"}})
            .to_string(),
    ]
    .join("\n");
    let file_id = upload(&server, Some("batch"), Some(input.as_bytes()))
        .await
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let batch = create(&server, &file_id, &[("x-mock-batch-ms", "30")]).await;
    let (done, _) = poll_until(
        &server,
        batch["id"].as_str().unwrap(),
        &["failed", "completed"],
    )
    .await;
    assert_eq!(done["status"], "failed");
    assert!(done["failed_at"].is_u64());
    assert_eq!(done["errors"]["object"], "list");
    assert_eq!(done["errors"]["data"][0]["line"], 2);
    assert_eq!(done["errors"]["data"][0]["param"], "url");
}

#[tokio::test]
async fn embeddings_and_responses_batches() {
    let server = server().await;
    for (endpoint, body, object) in [
        (
            "/v1/embeddings",
            json!({"model": "text-embedding-3-small", "input": "a b"}),
            "list",
        ),
        (
            "/v1/responses",
            json!({"model": "gpt-4o", "input": "a b c", "stream": true}),
            "response",
        ),
        (
            "/v1/completions",
            json!({"model": "gpt-3.5-turbo-instruct", "prompt": "a"}),
            "text_completion",
        ),
    ] {
        let input =
            json!({"custom_id": "x", "method": "POST", "url": endpoint, "body": body}).to_string();
        let file_id = upload(&server, Some("batch"), Some(input.as_bytes()))
            .await
            .json()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let r = post(
            &server,
            "/v1/batches",
            &[("x-mock-batch-ms", "0")],
            json!({"input_file_id": file_id, "endpoint": endpoint, "completion_window": "24h"}),
        )
        .await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let (done, _) = poll_until(&server, r.json()["id"].as_str().unwrap(), &["completed"]).await;
        assert_eq!(done["request_counts"]["completed"], 1, "{done}");
        assert_eq!(done["metadata"], Value::Null);
        let out = get(
            &server,
            &format!(
                "/v1/files/{}/content",
                done["output_file_id"].as_str().unwrap()
            ),
        )
        .await;
        let lines = jsonl(&out.body);
        assert_eq!(lines[0]["response"]["body"]["object"], object, "{endpoint}");
        assert!(
            done["usage"]["input_tokens"].as_u64().unwrap() > 0,
            "{endpoint}: {done}"
        );
    }
}

#[tokio::test]
async fn validation_errors_have_openai_shape() {
    let server = server().await;
    // Uploads.
    let e = upload(&server, None, Some(b"x")).await.error(400);
    assert_eq!(e["param"], "purpose");
    let e = upload(&server, Some("batch"), None).await.error(400);
    assert_eq!(e["param"], "file");
    let e = upload(&server, Some("homework"), Some(b"x"))
        .await
        .error(400);
    assert!(e["message"].as_str().unwrap().contains("homework"), "{e}");
    let bad = format!(
        "{}\n{{\"custom_id\":\"b\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\"}}",
        chat_line("a", "hi")
    );
    let e = upload(&server, Some("batch"), Some(bad.as_bytes()))
        .await
        .error(400);
    assert!(e["message"].as_str().unwrap().starts_with("Line 2:"), "{e}");
    let e = upload(&server, Some("batch"), Some(b"not json"))
        .await
        .error(400);
    assert!(e["message"].as_str().unwrap().starts_with("Line 1:"), "{e}");
    call(&server, "POST", "/v1/files", &[], "application/json", "{}")
        .await
        .error(400);
    // Any purpose but batch takes any bytes.
    assert_eq!(
        upload(&server, Some("user_data"), Some(b"\x00\x01"))
            .await
            .status,
        200
    );

    // Batches.
    let data_file = upload(&server, Some("user_data"), Some(b"hello"))
        .await
        .json();
    let batch_file = upload(&server, Some("batch"), Some(chat_line("a", "b").as_bytes()))
        .await
        .json();
    let good = json!({"input_file_id": batch_file["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"});
    let with = |key: &str, value: Value| {
        let mut body = good.clone();
        if value.is_null() {
            body.as_object_mut().unwrap().remove(key);
        } else {
            body[key] = value;
        }
        body
    };
    for (body, status, param) in [
        (with("input_file_id", Value::Null), 400, "input_file_id"),
        (with("endpoint", Value::Null), 400, "endpoint"),
        (
            with("completion_window", Value::Null),
            400,
            "completion_window",
        ),
        (with("endpoint", json!("/v1/images")), 400, "endpoint"),
        (
            with("completion_window", json!("1h")),
            400,
            "completion_window",
        ),
        (with("metadata", json!({"a": 1})), 400, "metadata"),
        (
            with("input_file_id", data_file["id"].clone()),
            400,
            "input_file_id",
        ),
        (with("input_file_id", json!("file-nope")), 404, "id"),
    ] {
        let e = post(&server, "/v1/batches", &[], body.clone())
            .await
            .error(status);
        assert_eq!(e["param"], param, "{body}: {e}");
    }
    post(
        &server,
        "/v1/batches",
        &[("x-mock-batch-ms", "soon")],
        good.clone(),
    )
    .await
    .error(400);
    call(&server, "POST", "/v1/batches", &[], "application/json", "")
        .await
        .error(400);
    // A status fault answers the request itself.
    assert_eq!(
        post(&server, "/v1/batches", &[("x-mock-fault", "429")], good)
            .await
            .status,
        429
    );
}

#[tokio::test]
async fn unknown_ids_are_404s() {
    let server = server().await;
    for (method, path) in [
        ("GET", "/v1/batches/batch_nope"),
        ("POST", "/v1/batches/batch_nope/cancel"),
        ("GET", "/v1/files/file-nope"),
        ("GET", "/v1/files/file-nope/content"),
        ("DELETE", "/v1/files/file-nope"),
    ] {
        let r = call(&server, method, path, &[], "application/json", "").await;
        let e = r.error(404);
        assert!(
            e["message"].as_str().unwrap().contains("nope"),
            "{path}: {e}"
        );
        assert_eq!(e["code"], Value::Null);
    }
}

#[tokio::test]
async fn uploads_are_bounded() {
    let server = server().await;
    // Over the store's 64 MiB: refused as too large, by its declared length.
    let big = vec![b'a'; 66 << 20];
    let r = upload(&server, Some("user_data"), Some(&big)).await;
    let e = r.error(413);
    assert!(e["message"].as_str().unwrap().contains("at most"), "{e}");
    // Two halves fit alone, not together.
    let half = vec![b'a'; 40 << 20];
    assert_eq!(
        upload(&server, Some("user_data"), Some(&half)).await.status,
        200
    );
    let e = upload(&server, Some("user_data"), Some(&half))
        .await
        .error(413);
    assert!(
        e["message"].as_str().unwrap().contains("bytes of files"),
        "{e}"
    );
}

#[tokio::test]
async fn a_repeated_seed_still_gets_fresh_ids() {
    let server = server().await;
    let input = chat_line("a", "hi");
    let seeded = [("x-mock-seed", "42")];
    let a = upload_with(&server, &seeded, Some("batch"), Some(input.as_bytes()))
        .await
        .json();
    let b = upload_with(&server, &seeded, Some("batch"), Some(input.as_bytes()))
        .await
        .json();
    assert_ne!(a["id"], b["id"]);
    assert_eq!(
        a["created_at"], 1_735_689_600u64,
        "seeded: fixed created_at"
    );
    let file_id = a["id"].as_str().unwrap();
    let x = create(&server, file_id, &[("x-mock-seed", "5")]).await;
    let y = create(&server, file_id, &[("x-mock-seed", "5")]).await;
    assert_ne!(x["id"], y["id"]);
    let (x, _) = poll_until(&server, x["id"].as_str().unwrap(), &["completed"]).await;
    let (y, _) = poll_until(&server, y["id"].as_str().unwrap(), &["completed"]).await;
    assert_ne!(x["output_file_id"], y["output_file_id"]);
}
