//! The trace viewer on the admin listener: a streamed and a plain chat through the gateway to
//! the mock provider, then the JSON API, the trace list and the streamed trace's waterfall
//! read back over HTTP: both traces listed, spans nested, the first-token marker where the
//! span's TTFT puts it, and client-controlled values (a model name, a captured header)
//! rendered inert.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use llmtrace::store::{StoreConfig, TraceStore};
use llmtrace_mock::{MockConfig, MockServer};
use llmtrace_proxy::Telemetry;
use llmtrace_test_support::{READY_TIMEOUT, reserve_port, wait_until_ready};
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde_json::Value;

const EVIL_MODEL: &str = "gpt-4o<script>alert(1)</script>";
const EVIL_HEADER: &str = "<script>alert(2)</script><img src=x onerror=alert(3)>";

async fn call(
    method: &str,
    url: String,
    headers: &[(&str, &str)],
    body: String,
) -> (u16, http::HeaderMap, String) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<bytes::Bytes>>();
    let mut request = http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = client
        .request(request.body(Full::from(body)).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8(body.to_vec()).unwrap())
}

async fn get(admin: SocketAddr, path: &str) -> (u16, http::HeaderMap, String) {
    call("GET", format!("http://{admin}{path}"), &[], String::new()).await
}

async fn chat(proxy: SocketAddr, model: &str, stream: bool) {
    let body = format!(
        r#"{{"model":{},"stream":{stream},"messages":[{{"role":"user","content":"hi"}}]}}"#,
        serde_json::to_string(model).unwrap()
    );
    let headers = [
        ("content-type", "application/json"),
        ("x-mock-ttft-ms", "150"),
        ("x-mock-gap-ms", "15"),
        ("x-mock-tokens", "6"),
        ("x-evil", EVIL_HEADER),
    ];
    let url = format!("http://{proxy}/v1/chat/completions");
    let (status, _, _) = call("POST", url, &headers, body).await;
    assert_eq!(status, 200);
}

/// The API's traces once both chats' spans are in the store (5 s at most).
async fn both_traces(admin: SocketAddr) -> Vec<Value> {
    for _ in 0..500 {
        let (_, _, body) = get(admin, "/api/traces").await;
        let json: Value = serde_json::from_str(&body).unwrap();
        let traces = json["data"].as_array().unwrap().clone();
        if traces.len() == 2
            && traces
                .iter()
                .all(|t| t["spans"].as_array().unwrap().len() == 2)
        {
            return traces;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the two traces did not reach the store");
}

fn tag<'a>(span: &'a Value, key: &str) -> Option<&'a Value> {
    span["tags"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["key"] == key)
        .map(|t| &t["value"])
}

/// The trace's (SERVER, GenAI CLIENT) spans; asserts the CLIENT is the SERVER's child.
fn server_and_client(trace: &Value) -> (&Value, &Value) {
    let spans = trace["spans"].as_array().unwrap();
    let kind = |k: &str| {
        spans
            .iter()
            .find(|s| tag(s, "span.kind").is_some_and(|v| v == k))
            .unwrap_or_else(|| panic!("no {k} span"))
    };
    let (server, client) = (kind("server"), kind("client"));
    assert_eq!(client["references"][0]["refType"], "CHILD_OF");
    assert_eq!(client["references"][0]["spanID"], server["spanID"]);
    assert_eq!(client["traceID"], trace["traceID"]);
    (server, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_viewer_shows_streamed_and_plain_chats() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let store = TraceStore::new(StoreConfig::default());
    let provider = SdkTracerProvider::builder()
        .with_span_processor(store.processor())
        .build();
    let telemetry = Telemetry::with_tracer_provider(provider.clone()).with_store(store);
    let admin_port = reserve_port();
    let admin = admin_port.addr();
    let (proxy, _state) = support::start_gateway(&telemetry, &mock.url(), |config| {
        config.server.admin = Some(admin.to_string());
        config.telemetry.access_log = false;
        config.telemetry.capture_request_headers = vec!["x-evil".to_owned()];
    })
    .await;
    wait_until_ready(admin, READY_TIMEOUT).await.unwrap();
    drop(admin_port);

    chat(proxy, "gpt-4o", true).await;
    chat(proxy, EVIL_MODEL, false).await;
    let traces = both_traces(admin).await;

    // The API: both traces, each a SERVER span with the GenAI span under it.
    let streamed = traces
        .iter()
        .find(|t| {
            t["spans"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["operationName"] == "chat gpt-4o")
        })
        .expect("the streamed chat's trace");
    let plain = traces
        .iter()
        .find(|t| t["traceID"] != streamed["traceID"])
        .unwrap();
    let (_, genai) = server_and_client(streamed);
    let (plain_server, _) = server_and_client(plain);
    // Captured headers are string arrays: Jaeger tags hold their JSON text.
    let header = tag(plain_server, "http.request.header.x-evil").unwrap();
    assert_eq!(
        header.as_str().unwrap(),
        serde_json::json!([EVIL_HEADER]).to_string()
    );
    let ttft = tag(genai, "gen_ai.response.time_to_first_chunk")
        .unwrap()
        .as_f64()
        .unwrap();
    let duration = genai["duration"].as_f64().unwrap() / 1e6;
    assert!(
        ttft >= 0.15 && ttft < duration,
        "ttft {ttft} s of {duration} s"
    );
    let streamed_id = streamed["traceID"].as_str().unwrap();
    let plain_id = plain["traceID"].as_str().unwrap();

    let (status, _, one) = get(admin, &format!("/api/traces/{streamed_id}")).await;
    assert_eq!(status, 200);
    let one: Value = serde_json::from_str(&one).unwrap();
    assert_eq!(one["data"][0]["traceID"], streamed_id);
    let (_, _, bounded) = get(admin, "/api/traces?limit=99999999").await;
    assert!(bounded.contains("\"limit\":1000"), "{bounded}");

    // `/` leads to the list, which shows both traces with the model escaped.
    let (status, headers, _) = get(admin, "/").await;
    assert_eq!(status, 303);
    assert_eq!(headers["location"], "/ui");
    let (status, headers, list) = get(admin, "/ui?sort=ttft").await;
    assert_eq!(status, 200);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(list.contains(&format!("data-trace-id=\"{streamed_id}\"")));
    assert!(list.contains(&format!("data-trace-id=\"{plain_id}\"")));
    assert_inert(&list);
    assert!(list.contains("gpt-4o&lt;script&gt;alert(1)&lt;/script&gt;"));

    // The streamed trace's waterfall: the GenAI row under the SERVER row, the first-token
    // marker at TTFT / duration of the bar.
    let (status, _, page) = get(admin, &format!("/ui/traces/{streamed_id}")).await;
    assert_eq!(status, 200);
    let server_row = page
        .find("class=\"row kind-server")
        .expect("the SERVER row");
    let genai_row = page
        .find("class=\"row kind-client genai")
        .expect("the GenAI row");
    assert!(server_row < genai_row);
    assert!(
        page[genai_row..].contains("style=\"padding-left:1em\""),
        "nested one level"
    );
    let marker = page
        .split("data-first-token=\"")
        .nth(1)
        .expect("a first-token marker");
    let percent: f64 = marker[..marker.find('"').unwrap()].parse().unwrap();
    let expected = ttft / duration * 100.0;
    assert!(
        (percent - expected).abs() <= 2.0,
        "marker at {percent} %, TTFT/duration is {expected} %"
    );
    assert!(page.contains(&format!("left:{percent:.3}%")));
    assert!(page.contains(&format!("data-copy=\"{streamed_id}\"")));

    // The plain trace's page: the captured header is shown, inert.
    let (_, _, page) = get(admin, &format!("/ui/traces/{plain_id}")).await;
    assert_inert(&page);
    assert!(page.contains("&lt;img src=x onerror=alert(3)&gt;"));
    let (status, _, _) = get(admin, &format!("/ui/traces/{}", "f".repeat(32))).await;
    assert_eq!(status, 404);

    // The map: the gateway called the mock upstream twice; the overview: both models, the
    // hostile one escaped.
    let (status, _, deps) = get(admin, "/api/dependencies?lookback=3600000").await;
    assert_eq!(status, 200);
    let deps: Value = serde_json::from_str(&deps).unwrap();
    let upstream = deps["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["callCount"] == 2)
        .unwrap_or_else(|| panic!("no edge with both calls in {deps}"));
    let peer = deps["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == upstream["child"])
        .unwrap();
    assert_eq!(peer["kind"], "peer", "{deps}");
    let (status, _, map) = get(admin, "/ui/map").await;
    assert_eq!(status, 200);
    assert!(map.contains("data-calls=\"2\""), "{map}");
    let (status, _, overview) = get(admin, "/ui/overview?lookback=1h").await;
    assert_eq!(status, 200);
    assert_inert(&overview);
    assert!(overview.contains("data-model=\"gpt-4o\""), "{overview}");
    assert!(overview.contains("gpt-4o&lt;script&gt;alert(1)&lt;/script&gt;"));
    let (_, _, metrics) = get(admin, "/metrics").await;
    let held = metrics
        .lines()
        .find(|l| {
            l.starts_with("llmtrace_store_traces ") || l.starts_with("llmtrace_store_traces{")
        })
        .unwrap_or_else(|| panic!("no store gauge in {metrics}"));
    assert!(held.ends_with(" 2"), "{held}");
    let _ = provider.shutdown();
}

/// No markup from a span survives: the page's only script is the viewer's own.
#[track_caller]
fn assert_inert(page: &str) {
    assert!(!page.contains("<script>alert"), "{page}");
    assert!(!page.contains("<img src=x"), "{page}");
    assert_eq!(page.matches("<script").count(), 1);
}

/// Behind the tail sampler the store holds what is exported: the kept trace, with the reason
/// it was kept, and not the dropped one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_holds_what_the_tail_sampler_exports_with_its_reason() {
    use llmtrace_proxy::telemetry::{Export, Sampling};
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let listen_port = reserve_port();
    let admin_port = reserve_port();
    let (listen, admin) = (listen_port.addr(), admin_port.addr());
    let text = format!(
        "[server]\nlisten = \"{listen}\"\nadmin = \"{admin}\"\n[telemetry]\naccess_log = false\n\
         [[upstreams]]\nname = \"mock\"\nurl = \"{}\"\n[[routes]]\nupstream = \"mock\"\n\
         [tail]\ndecision_wait_ms = 0\npolicies = [ {{ error = true }} ]\n",
        mock.url()
    );
    let config = llmtrace_proxy::Config::parse(&text, |_| None).unwrap();
    let dir = std::env::temp_dir().join(format!("llmtrace-viewer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let spans_file = dir.join("spans.jsonl");
    let _ = std::fs::remove_file(&spans_file);
    let store = llmtrace_proxy::telemetry::trace_store(&config.telemetry).expect("on by default");
    let sampling = Sampling {
        head: None,
        tail: config.tail.clone(),
    };
    let telemetry = Telemetry::new_with_store(
        &Export::File(spans_file.clone()),
        &sampling,
        Some(store.clone()),
    )
    .unwrap();
    let built = llmtrace_proxy::build_server(std::sync::Arc::new(config), &telemetry).unwrap();
    std::thread::spawn(move || built.server.run_forever());
    wait_until_ready(listen, READY_TIMEOUT).await.unwrap();
    wait_until_ready(admin, READY_TIMEOUT).await.unwrap();
    drop((listen_port, admin_port));

    let url = format!("http://{listen}/v1/chat/completions");
    let body = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
    let (ok, _, _) = call(
        "POST",
        url.clone(),
        &[("content-type", "application/json")],
        body.into(),
    )
    .await;
    assert_eq!(ok, 200);
    let faulty = [
        ("content-type", "application/json"),
        ("x-mock-fault", "500"),
    ];
    let (failed, _, _) = call("POST", url, &faulty, body.into()).await;
    assert_eq!(failed, 500);
    for _ in 0..300 {
        let kept = store.list(&llmtrace::store::Query::default());
        if kept.first().is_some_and(|t| t.spans == 2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Give a wrongly kept trace time to show up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    telemetry.tracer_provider.force_flush().unwrap();
    let kept = store.list(&llmtrace::store::Query::default());
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(kept[0].error);
    assert_eq!(kept[0].sampling_reason.as_deref(), Some("error"));
    let exported = std::fs::read_to_string(&spans_file).unwrap();
    let trace_id = kept[0].trace_id.to_string();
    assert_eq!(exported.lines().count(), 2, "{exported}");
    assert!(exported.lines().all(|l| l.contains(&trace_id)));
    let (_, _, list) = get(admin, "/ui").await;
    assert!(list.contains(">error</td></tr>"), "the reason is shown");
    telemetry.shutdown();
}

/// A streamed answer that stalls: the GenAI span carries when each chunk came (the core's
/// chunk timeline) and the stall as an event, and the trace page draws both, with the
/// gateway's share of the request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_stream_shows_its_chunks_and_the_stall_on_the_timeline() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let store = TraceStore::new(StoreConfig::default());
    let provider = SdkTracerProvider::builder()
        .with_span_processor(store.processor())
        .build();
    let telemetry = Telemetry::with_tracer_provider(provider.clone()).with_store(store.clone());
    let admin_port = reserve_port();
    let admin = admin_port.addr();
    let (proxy, _state) = support::start_gateway(&telemetry, &mock.url(), |config| {
        config.server.admin = Some(admin.to_string());
        config.telemetry.access_log = false;
    })
    .await;
    wait_until_ready(admin, READY_TIMEOUT).await.unwrap();
    drop(admin_port);

    let body = r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let headers = [
        ("content-type", "application/json"),
        ("x-mock-ttft-ms", "100"),
        ("x-mock-gap-ms", "10"),
        ("x-mock-tokens", "20"),
        ("x-mock-fault", "stall"),
        ("x-mock-stall-ms", "1200"),
    ];
    let url = format!("http://{proxy}/v1/chat/completions");
    let (status, _, answer) = call("POST", url, &headers, body.into()).await;
    assert_eq!(status, 200);
    assert_eq!(support::content_tokens(&answer), 20, "{answer}");
    assert!(answer.ends_with("data: [DONE]\n\n"));

    let mut trace = None;
    for _ in 0..500 {
        let (_, _, body) = get(admin, "/api/traces").await;
        let json: Value = serde_json::from_str(&body).unwrap();
        if let Some(t) = json["data"].as_array().unwrap().first() {
            if t["spans"].as_array().unwrap().len() == 2 {
                trace = Some(t.clone());
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let trace = trace.expect("the trace reached the store");
    let (_, genai) = server_and_client(&trace);
    // Every content chunk, at its offset from the request: 20 of them, one gap of ~1.2 s.
    let offsets: Vec<i64> = serde_json::from_str(
        tag(genai, "llmtrace.stream.chunk_offsets_ms")
            .and_then(Value::as_str)
            .expect("the chunk timeline"),
    )
    .unwrap();
    assert_eq!(offsets.len(), 20, "{offsets:?}");
    assert_eq!(tag(genai, "llmtrace.stream.chunk_stride").unwrap(), 1);
    assert!(offsets.windows(2).all(|w| w[0] <= w[1]), "{offsets:?}");
    assert!(offsets[0] >= 100, "{offsets:?}");
    let gaps: Vec<i64> = offsets.windows(2).map(|w| w[1] - w[0]).collect();
    let longest = *gaps.iter().max().unwrap();
    assert!((1150..1500).contains(&longest), "{gaps:?}");
    assert_eq!(gaps.iter().filter(|g| **g > 1000).count(), 1, "{gaps:?}");
    let stalls: Vec<&Value> = genai["logs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["fields"][0]["value"] == "llmtrace.stream.stall")
        .collect();
    assert_eq!(stalls.len(), 1, "{:#}", genai["logs"]);
    assert_eq!(tag(genai, "llmtrace.stream.stalls").unwrap(), 1);

    // The page: the exchange's timeline with 20 ticks, the stall band and the gateway share.
    let id = trace["traceID"].as_str().unwrap();
    let (status, _, page) = get(admin, &format!("/ui/traces/{id}")).await;
    assert_eq!(status, 200);
    let timeline = &page[page.find("class=\"llm-timelines\"").expect("a timeline")..];
    let ticks = timeline.split("class=\"chunks\" d=\"").nth(1).unwrap();
    assert_eq!(ticks[..ticks.find('"').unwrap()].matches('M').count(), 20);
    assert_eq!(timeline.matches("class=\"stall\"").count(), 1);
    let share = timeline
        .split("data-gateway-share=\"")
        .nth(1)
        .expect("the gateway's share");
    let share: f64 = share[..share.find('"').unwrap()].parse().unwrap();
    assert!((0.0..50.0).contains(&share), "gateway share {share} %");
    let _ = provider.shutdown();
}
