//! Canary routes across two gateway processes (the real binary, twice): a user lands in the
//! same cohort in both, the cohort reaches the upstream in baggage and the spans and metrics
//! as `llmtrace.cohort`, and `/api/cohorts` names the slower cohort.

mod support;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use llmtrace_mock::{MockConfig, MockServer};
use llmtrace_test_support::reserve_port;
use serde_json::Value;

type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<bytes::Bytes>,
>;

fn client() -> Client {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<bytes::Bytes>>()
}

async fn get(client: &Client, url: String) -> Option<(u16, String)> {
    let response = client
        .request(http::Request::get(url).body(Full::default()).unwrap())
        .await
        .ok()?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.ok()?.to_bytes();
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

/// One `llmtrace-proxy --config` process; killed on drop.
struct Gateway {
    child: Child,
    listen: SocketAddr,
    admin: SocketAddr,
    spans: std::path::PathBuf,
}

impl Gateway {
    async fn start(name: &str, stable: &str, canary: &str) -> Gateway {
        let listen_port = reserve_port();
        let admin_port = reserve_port();
        let (listen, admin) = (listen_port.addr(), admin_port.addr());
        let dir =
            std::env::temp_dir().join(format!("llmtrace-canary-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let spans = dir.join("spans.jsonl");
        let _ = std::fs::remove_file(&spans);
        let config = dir.join("gateway.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"{listen}\"\nadmin = \"{admin}\"\n\
                 [telemetry]\naccess_log = false\nspans_file = \"{}\"\n\
                 [[upstreams]]\nname = \"stable\"\nurl = \"{stable}\"\n\
                 [[upstreams]]\nname = \"canary\"\nurl = \"{canary}\"\n\
                 [[routes]]\npath_prefix = \"/v1/chat/completions\"\nupstream = \"stable\"\n\
                 [routes.split]\nkey = \"header:x-user-id\"\ncohorts = [\n\
                 {{ name = \"stable\", upstream = \"stable\", weight = 50 }},\n\
                 {{ name = \"canary\", upstream = \"canary\", weight = 50 }},\n]\n",
                spans.display()
            ),
        )
        .unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_llmtrace-proxy"));
        command
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (name, _) in std::env::vars() {
            if name.starts_with("OTEL_") || name.starts_with("LLMTRACE_") {
                command.env_remove(name);
            }
        }
        let gateway = Gateway {
            child: command.spawn().unwrap(),
            listen,
            admin,
            spans,
        };
        let client = client();
        for _ in 0..500 {
            if get(&client, format!("http://{admin}/readyz"))
                .await
                .is_some_and(|(s, _)| s == 200)
            {
                drop((listen_port, admin_port));
                return gateway;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("gateway {name} did not become ready");
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = self.spans.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

const CHAT: &str =
    r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;

async fn chat(client: &Client, gateway: &Gateway, user: &str) -> String {
    let request = http::Request::post(format!("http://{}/v1/chat/completions", gateway.listen))
        .header("content-type", "application/json")
        .header("x-user-id", user)
        .body(Full::from(CHAT))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_keeps_their_cohort_across_gateways_and_the_slower_cohort_is_named() {
    let mock = |ttft: u64| MockConfig {
        ttft: Duration::from_millis(ttft),
        gap: Duration::from_millis(2),
        tokens: 3,
        ..MockConfig::default()
    };
    let stable = MockServer::start(mock(20)).await.unwrap();
    let canary = MockServer::start(mock(120)).await.unwrap();
    let a = Gateway::start("a", &stable.url(), &canary.url()).await;
    let b = Gateway::start("b", &stable.url(), &canary.url()).await;
    let client = client();

    // 40 users, each once through each gateway.
    for i in 0..40 {
        let user = format!("user-{i}");
        for gateway in [&a, &b] {
            let answer = chat(&client, gateway, &user).await;
            assert!(answer.ends_with("data: [DONE]\n\n"), "{answer}");
        }
    }

    // What each upstream received: both requests of a user at the same one, with the
    // cohort in baggage, and the client's request otherwise untouched.
    let mut per_cohort = [0; 2];
    for (index, (name, upstream)) in [("stable", &stable), ("canary", &canary)]
        .into_iter()
        .enumerate()
    {
        let received = upstream.received_requests();
        let mut users: Vec<String> = Vec::new();
        for request in &received {
            // The client's body, with only the usage request spliced in.
            support::assert_forwarded(CHAT.as_bytes(), &request.body, true);
            let baggage = request.headers["baggage"].to_str().unwrap();
            assert!(
                baggage.contains(&format!("llmtrace.cohort={name}")),
                "{baggage}"
            );
            users.push(request.headers["x-user-id"].to_str().unwrap().to_owned());
        }
        users.sort();
        let pairs = users.len() / 2;
        for pair in users.chunks(2) {
            assert_eq!(pair.len(), 2, "{name}: {users:?}");
            assert_eq!(
                pair[0], pair[1],
                "{name}: a user split across cohorts: {users:?}"
            );
        }
        per_cohort[index] = pairs;
    }
    assert_eq!(per_cohort[0] + per_cohort[1], 40);
    assert!(
        per_cohort.iter().all(|n| (10..=30).contains(n)),
        "{per_cohort:?}"
    );

    // Spans and metrics carry the cohort (the export queue writes the file in batches).
    let cohorts = |spans: &[Value], kind: &str| {
        spans
            .iter()
            .filter(|s| s["kind"] == kind)
            .filter_map(|s| s["attributes"]["llmtrace.cohort"].as_str())
            .count()
    };
    let mut spans: Vec<Value> = Vec::new();
    for _ in 0..250 {
        spans = std::fs::read_to_string(&a.spans)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if cohorts(&spans, "client") == 40 && cohorts(&spans, "server") == 40 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(cohorts(&spans, "server"), 40, "{:#?}", spans.first());
    assert_eq!(cohorts(&spans, "client"), 40);
    let (_, metrics) = get(&client, format!("http://{}/metrics", a.admin))
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("gen_ai_client_operation_duration")
                && l.contains("llmtrace_cohort=\"canary\"")),
        "{metrics}"
    );

    // The verdict: canary (120 ms to first token) slower than stable (20 ms).
    let (status, body) = get(&client, format!("http://{}/api/cohorts", a.admin))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let json: Value = serde_json::from_str(&body).unwrap();
    let route = &json["routes"][0];
    assert_eq!(route["route"], "/v1/chat/completions");
    assert_eq!(route["control"]["name"], "stable");
    assert_eq!(route["control"]["requests"], per_cohort[0]);
    let compared = &route["cohorts"][0];
    assert_eq!(compared["name"], "canary");
    assert_eq!(compared["requests"], per_cohort[1]);
    assert_eq!(compared["ttft_test"]["significant"], true, "{json:#}");
    assert_eq!(compared["ttft_test"]["worse"], true);
    let verdict = compared["verdict"].as_str().unwrap();
    assert!(
        verdict.starts_with("canary slower than stable (TTFT"),
        "{verdict}"
    );
    assert_eq!(compared["error_test"]["significant"], false);
    assert!(compared["ttft_p50_ms"].as_f64().unwrap() >= 120.0);
    // The viewer's page says the same.
    let (_, page) = get(&client, format!("http://{}/ui/cohorts", a.admin))
        .await
        .unwrap();
    assert!(page.contains("<tr data-cohort=\"canary\">"), "{page}");
    assert!(page.contains(&format!("<td class=\"verdict\">{verdict}</td>")));
    assert!(route["control"]["ttft_p50_ms"].as_f64().unwrap() < 120.0);
}
