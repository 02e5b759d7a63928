//! Service level objectives in the gateway: every request counted against `[[slo]]`, read
//! back from `/api/slo` and `/metrics` on the admin listener, with what the clients got.

mod support;

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use llmtrace::slo::ObjectiveConfig;
use llmtrace_mock::{MockConfig, MockServer};
use llmtrace_proxy::Telemetry;
use llmtrace_test_support::{READY_TIMEOUT, reserve_port, wait_until_ready};
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde_json::Value;

type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<bytes::Bytes>,
>;

fn client() -> Client {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<bytes::Bytes>>()
}

async fn chat(client: &Client, url: &str, body: &str, mock: &[(&str, &str)]) -> (u16, String) {
    let mut request = http::Request::post(url).header("content-type", "application/json");
    for (name, value) in mock {
        request = request.header(*name, *value);
    }
    let response = client
        .request(request.body(Full::from(body.to_owned())).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn get(client: &Client, url: String) -> String {
    let response = client
        .request(http::Request::get(url).body(Full::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

/// The value of the Prometheus sample `name{…}` whose labels include all of `labels`.
fn sample(metrics: &str, name: &str, labels: &[&str]) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| labels.iter().all(|label| l.contains(label)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

const STREAMED: &str =
    r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
const PLAIN: &str = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_counts_against_the_objectives() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let store = llmtrace::store::TraceStore::new(llmtrace::store::StoreConfig::default());
    let provider = SdkTracerProvider::builder()
        .with_span_processor(store.processor())
        .build();
    let telemetry = Telemetry::with_tracer_provider(provider.clone()).with_store(store);
    let admin_port = reserve_port();
    let admin = admin_port.addr();
    let (proxy, _state) = support::start_gateway(&telemetry, &mock.url(), |config| {
        config.server.admin = Some(admin.to_string());
        config.telemetry.access_log = false;
        config.slo = Some(vec![
            ObjectiveConfig::availability(0.99),
            ObjectiveConfig::ttft(Duration::from_millis(150), 0.9),
        ]);
    })
    .await;
    wait_until_ready(admin, READY_TIMEOUT).await.unwrap();
    drop(admin_port);
    let client = client();
    let url = format!("http://{proxy}/v1/chat/completions");

    // A client that leaves mid-stream is counted by no objective.
    let response = client
        .request(
            http::Request::post(&url)
                .header("content-type", "application/json")
                .header("x-mock-ttft-ms", "20")
                .header("x-mock-gap-ms", "50")
                .header("x-mock-tokens", "40")
                .body(Full::from(STREAMED))
                .unwrap(),
        )
        .await
        .unwrap();
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert!(!first.data_ref().unwrap().is_empty());
    drop(body);
    tokio::time::sleep(Duration::from_millis(400)).await;

    let fast = [
        ("x-mock-ttft-ms", "20"),
        ("x-mock-gap-ms", "1"),
        ("x-mock-tokens", "3"),
    ];
    let slow = [
        ("x-mock-ttft-ms", "300"),
        ("x-mock-gap-ms", "1"),
        ("x-mock-tokens", "3"),
    ];
    for _ in 0..20 {
        let (status, answer) = chat(&client, &url, STREAMED, &fast).await;
        assert_eq!(status, 200);
        assert!(answer.ends_with("data: [DONE]\n\n"), "{answer}");
    }
    for _ in 0..3 {
        assert_eq!(chat(&client, &url, STREAMED, &slow).await.0, 200);
    }
    for _ in 0..5 {
        let (status, answer) = chat(&client, &url, PLAIN, &[("x-mock-fault", "500")]).await;
        assert_eq!(status, 500);
        assert!(answer.contains("\"error\""), "{answer}");
    }
    // The client's own mistake: the provider's 400 is served, not failed.
    let (status, answer) = chat(&client, &url, "{\"model\":", &[]).await;
    assert_eq!(status, 400, "{answer}");

    // Each exchange is counted when the gateway ends it, which is after the client has read
    // the last byte: wait (bounded) for the last one rather than race it.
    let slo_url = format!("http://{admin}/api/slo");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let slo: Value = loop {
        let slo: Value = serde_json::from_str(&get(&client, slo_url.clone()).await).unwrap();
        if slo["objectives"][0]["since_start"]["total"] == 29
            || std::time::Instant::now() > deadline
        {
            break slo;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let objectives = slo["objectives"].as_array().unwrap();
    let availability = &objectives[0];
    assert_eq!(availability["name"], "availability");
    // 20 + 3 + 5 + 1 counted, the 5 500s bad.
    assert_eq!(availability["since_start"]["total"], 29, "{slo:#}");
    assert_eq!(availability["since_start"]["good"], 24);
    assert_eq!(availability["windows"]["5m"]["total"], 29);
    let burn = availability["windows"]["1h"]["burn_rate"].as_f64().unwrap();
    assert!((burn - 5.0 / 29.0 / 0.01).abs() < 1e-9, "{burn}");
    assert_eq!(availability["alerts"]["page"], true);
    let budget = availability["error_budget_remaining"].as_f64().unwrap();
    assert!((budget - (1.0 - 5.0 / (0.01 * 29.0))).abs() < 1e-9);
    // TTFT: the 23 streamed answers that came, 3 of them slow.
    let ttft = &objectives[1];
    assert_eq!(ttft["name"], "ttft");
    assert_eq!(ttft["since_start"]["total"], 23, "{slo:#}");
    assert_eq!(ttft["since_start"]["good"], 20);
    // 3 of 23 slow is 13 % of a 10 % allowance: a burn rate of 1.3, no alert.
    assert_eq!(ttft["alerts"]["page"], false);

    // The same on /metrics, counts beside ratios so replicas add up.
    let metrics = get(&client, format!("http://{admin}/metrics")).await;
    let availability = "slo=\"availability\"";
    assert_eq!(
        sample(&metrics, "llmtrace_slo_events_total", &[availability]),
        Some(29.0)
    );
    assert_eq!(
        sample(&metrics, "llmtrace_slo_good_events_total", &[availability]),
        Some(24.0)
    );
    assert_eq!(
        sample(
            &metrics,
            "llmtrace_slo_window_events",
            &[availability, "window=\"30m\""]
        ),
        Some(29.0)
    );
    assert_eq!(
        sample(
            &metrics,
            "llmtrace_slo_alert",
            &[availability, "severity=\"page\""]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&metrics, "llmtrace_slo_target", &["slo=\"ttft\""]),
        Some(0.9)
    );
    // The viewer's page, linked from every page's header.
    let page = get(&client, format!("http://{admin}/ui/slo")).await;
    assert!(
        page.contains("<tr data-slo=\"availability\" class=\"error\">"),
        "{page}"
    );
    assert!(page.contains("<b class=\"error\">page</b>"));
    assert!(page.contains("24 / 29"), "the 5 min window's good / total");
    let list = get(&client, format!("http://{admin}/ui")).await;
    assert!(list.contains("<a href=\"/ui/slo\">objectives</a>"));
    let rate = sample(
        &metrics,
        "llmtrace_slo_burn_rate",
        &[availability, "window=\"5m\""],
    );
    assert!((rate.unwrap() - 5.0 / 29.0 / 0.01).abs() < 1e-6, "{rate:?}");
    let _ = provider.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_slo_sections_the_defaults_apply_and_bad_ones_are_refused() {
    let text =
        "[[upstreams]]\nname = \"u\"\nurl = \"http://127.0.0.1:9\"\n[[routes]]\nupstream = \"u\"\n";
    let config = llmtrace_proxy::Config::parse(text, |_| None).unwrap();
    let names: Vec<String> = config
        .objectives()
        .unwrap()
        .iter()
        .map(|o| o.name().to_owned())
        .collect();
    assert_eq!(names, ["availability", "ttft"]);
    let off = llmtrace_proxy::Config::parse(&format!("slo = []\n{text}"), |_| None).unwrap();
    assert!(off.objectives().unwrap().is_empty());
    for (slo, field) in [
        (
            "[[slo]]\nobjective = \"ttft\"\ntarget = 0.9\n",
            "slo[0].threshold_ms",
        ),
        (
            "[[slo]]\nobjective = \"availability\"\ntarget = 99.5\n",
            "slo[0].target",
        ),
        (
            "[[slo]]\nobjective = \"availability\"\ntarget = 0.99\n[[slo]]\nobjective = \"availability\"\ntarget = 0.9\n",
            "slo[1].name",
        ),
    ] {
        let err = llmtrace_proxy::Config::parse(&format!("{text}{slo}"), |_| None).unwrap_err();
        assert_eq!(err.field, field, "{err}");
    }
}

/// Tail sampling that reacts: with no policy and no fallback nothing is kept, until failures
/// burn the availability budget; then the successful requests' traces are kept too, with the
/// reason on their root.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tail_sampler_keeps_more_while_the_budget_burns() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let text = "[server]\nlisten = \"${LISTEN}\"\n[telemetry]\naccess_log = false\n\
                [[upstreams]]\nname = \"mock\"\nurl = \"${MOCK_URL}\"\n\
                [[routes]]\nupstream = \"mock\"\n\
                [tail]\ndecision_wait_ms = 0\nfallback_ratio = 0.0\n";
    let gateway = support::TomlGateway::start(text, &mock.url(), "slo-boost").await;
    let client = client();
    let url = format!("http://{}/v1/chat/completions", gateway.listen);
    let fast = [("x-mock-ttft-ms", "5"), ("x-mock-tokens", "2")];
    assert_eq!(chat(&client, &url, PLAIN, &fast).await.0, 200);
    assert!(
        gateway.spans(Duration::from_millis(200)).await.is_empty(),
        "no policy, no fallback, no burn: nothing kept"
    );
    for _ in 0..30 {
        assert_eq!(
            chat(&client, &url, PLAIN, &[("x-mock-fault", "500")])
                .await
                .0,
            500
        );
    }
    // The alert is read at most once a second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for _ in 0..3 {
        assert_eq!(chat(&client, &url, PLAIN, &fast).await.0, 200);
    }
    let spans = gateway.spans(Duration::from_millis(300)).await;
    let roots: Vec<&Value> = spans
        .iter()
        .filter(|s| s["attributes"]["llmtrace.sampling.reason"].is_string())
        .collect();
    // Failures that came after the alert rose are kept too; every kept trace says why.
    assert!(
        roots
            .iter()
            .all(|s| s["attributes"]["llmtrace.sampling.reason"] == "slo_burn"),
        "{spans:#?}"
    );
    let ok = roots
        .iter()
        .filter(|s| s["attributes"]["http.response.status_code"] == 200)
        .count();
    assert_eq!(
        ok, 3,
        "the three successes after the burn began: {spans:#?}"
    );
}
