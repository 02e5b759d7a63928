//! The binary's shutdown: SIGTERM turns `/readyz` to 503, lets an in-flight stream finish
//! whole, exits as soon as it has (not after the 30 s grace period), and flushes the spans and
//! the access log.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use llmtrace_mock::{MockConfig, MockServer};
use llmtrace_test_support::reserve_port;

fn client() -> hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<bytes::Bytes>,
> {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

async fn get(addr: SocketAddr, path: &str) -> Option<http::StatusCode> {
    let request = http::Request::get(format!("http://{addr}{path}"))
        .body(Full::default())
        .ok()?;
    let response = client().request(request).await.ok()?;
    Some(response.status())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_stream_in_flight_then_exits_and_flushes_spans() {
    let mock = MockServer::start(MockConfig {
        ttft: Duration::ZERO,
        gap: Duration::from_millis(100),
        tokens: 20,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    // The child binds these itself; held until it does, so no other test takes them.
    let listen_port = reserve_port();
    let admin_port = reserve_port();
    let (listen, admin) = (listen_port.addr(), admin_port.addr());
    let dir = std::env::temp_dir().join(format!("llmtrace-shutdown-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let spans_file = dir.join("spans.jsonl");
    let _ = std::fs::remove_file(&spans_file);
    let mut command = Command::new(env!("CARGO_BIN_EXE_llmtrace-proxy"));
    command
        .args(["--listen", &listen.to_string()])
        .args(["--upstream", &mock.url()])
        .args(["--admin", &admin.to_string()])
        .arg("--spans-file")
        .arg(&spans_file)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap());
    for (name, _) in std::env::vars() {
        if name.starts_with("OTEL_") || name.starts_with("LLMTRACE_") {
            command.env_remove(name);
        }
    }
    let mut child = command.spawn().unwrap();
    let mut up = false;
    for _ in 0..500 {
        if get(admin, "/readyz").await == Some(http::StatusCode::OK) {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(up, "the proxy did not become ready");

    let body = r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let request = http::Request::post(format!("http://{listen}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(Full::from(body))
        .unwrap();
    let response = client().request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let stream = tokio::spawn(response.into_body().collect());

    tokio::time::sleep(Duration::from_millis(300)).await;
    let terminated = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut draining = false;
    for _ in 0..50 {
        if get(admin, "/readyz").await == Some(http::StatusCode::SERVICE_UNAVAILABLE) {
            draining = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(draining, "/readyz did not turn 503 after SIGTERM");

    let text = stream.await.unwrap().unwrap().to_bytes();
    let text = String::from_utf8_lossy(&text);
    assert!(text.contains("tok19"), "the stream was cut: {text}");
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");

    let exited = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            terminated.elapsed() < Duration::from_secs(15),
            "still running {:?} after SIGTERM (grace is 30 s; it should end when idle)",
            terminated.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exited.success(), "{exited:?}");

    let spans = std::fs::read_to_string(&spans_file).unwrap();
    let spans: Vec<serde_json::Value> = spans
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let kinds: Vec<&str> = spans.iter().filter_map(|s| s["kind"].as_str()).collect();
    assert!(
        kinds.contains(&"server") && kinds.contains(&"client"),
        "{spans:?}"
    );
    let client = spans.iter().find(|s| s["kind"] == "client").unwrap();
    assert_eq!(client["attributes"]["gen_ai.usage.output_tokens"], 20);

    // The stream's access log line, written by the log's own thread, is on stderr by the time
    // the process has exited; its trace id is the spans'.
    let stderr = std::fs::read_to_string(dir.join("stderr.log")).unwrap();
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .filter(|line: &serde_json::Value| line.get("route").is_some())
        .collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    let line = &lines[0];
    assert_eq!(line["status"], 200, "{line}");
    assert_eq!(line["stream"], true);
    assert_eq!(line["output_tokens"], 20);
    assert_eq!(line["client_aborted"], false);
    assert_eq!(line["trace_id"], client["trace_id"], "{line}");
    // What became of the spans, said once the queue is flushed.
    let spans_said = format!(
        "llmtrace-proxy: spans: {n} queued, {n} exported, 0 dropped (queue full), 0 failed",
        n = spans.len()
    );
    assert!(stderr.contains(&spans_said), "{spans_said} not in {stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
