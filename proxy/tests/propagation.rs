//! The gateway's trust boundary (`[propagation]`): which clients' trace context is continued,
//! linked or ignored, and which baggage goes upstream. Client, gateway and mock provider on
//! loopback, spans exported to memory.

mod support;

use std::net::SocketAddr;

use http_body_util::{BodyExt, Full};
use llmtrace::driver::Incoming;
use llmtrace_mock::{MockConfig, MockServer, ReceivedRequest};
use llmtrace_proxy::Config;
use llmtrace_test_support::*;
use opentelemetry::trace::{SpanId, SpanKind};
use opentelemetry_sdk::trace::{Sampler, SpanData};
use support::start_gateway;

const CALLER_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CALLER_SPAN: &str = "b7ad6b7169203331";
const BODY: &str = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;

/// A gateway configured by `edit` in front of a mock provider, exporting to `rec`.
async fn gateway(rec: &Recorder, edit: impl FnOnce(&mut Config)) -> (MockServer, SocketAddr) {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let telemetry = llmtrace_proxy::Telemetry::with_tracer_provider(rec.provider.clone());
    let (listen, _state) = start_gateway(&telemetry, &mock.url(), |config| {
        config.telemetry.access_log = false;
        edit(config);
    })
    .await;
    (mock, listen)
}

/// One chat request carrying the caller's context (sampled flag `flags`) and baggage; returns
/// the trace id the gateway answered with and what the upstream received.
async fn call(
    mock: &MockServer,
    proxy: SocketAddr,
    flags: &str,
) -> (Option<String>, ReceivedRequest) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<bytes::Bytes>>();
    let request = http::Request::post(format!("http://{proxy}/v1/chat/completions"))
        .header("content-type", "application/json")
        .header(
            "traceparent",
            format!("00-{CALLER_TRACE}-{CALLER_SPAN}-{flags}"),
        )
        .header("tracestate", "caller=secret1")
        .header("baggage", "tenant=acme,user.id=u-42")
        .header("x-mock-tokens", "2")
        .body(Full::from(BODY))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let trace_id = response
        .headers()
        .get("x-llmtrace-trace-id")
        .map(|v| v.to_str().unwrap().to_owned());
    response.into_body().collect().await.unwrap();
    let upstream = mock.received_requests().pop().expect("the upstream got it");
    (trace_id, upstream)
}

fn server_span(spans: &[SpanData]) -> &SpanData {
    spans
        .iter()
        .find(|s| s.span_kind == SpanKind::Server)
        .expect("a SERVER span")
}

fn genai_span(spans: &[SpanData]) -> &SpanData {
    spans
        .iter()
        .find(|s| s.span_kind == SpanKind::Client)
        .expect("a GenAI CLIENT span")
}

fn header<'a>(upstream: &'a ReceivedRequest, name: &str) -> Option<&'a str> {
    upstream.headers.get(name).map(|v| v.to_str().unwrap())
}

fn incoming(mode: Incoming, trusted: &[&str]) -> impl FnOnce(&mut Config) {
    let trusted: Vec<String> = trusted.iter().map(|s| s.to_string()).collect();
    move |config: &mut Config| {
        config.propagation.incoming = mode;
        config.propagation.trusted_networks = trusted;
    }
}

/// The caller's trace is continued: the SERVER span's parent is the caller's span, and the
/// upstream's `traceparent` is in the caller's trace.
#[track_caller]
fn assert_continued(spans: &[SpanData], trace_id: Option<String>, upstream: &ReceivedRequest) {
    let (server, genai) = (server_span(spans), genai_span(spans));
    assert_eq!(server.span_context.trace_id().to_string(), CALLER_TRACE);
    assert_eq!(server.parent_span_id.to_string(), CALLER_SPAN);
    assert!(server.links.links.is_empty());
    assert_eq!(trace_id.as_deref(), Some(CALLER_TRACE));
    assert_eq!(
        header(upstream, "traceparent"),
        Some(format!("00-{CALLER_TRACE}-{}-01", genai.span_context.span_id()).as_str())
    );
    assert_eq!(header(upstream, "tracestate"), Some("caller=secret1"));
}

/// A new trace was started: the SERVER span is a root, and the upstream's `traceparent` and
/// the client's answer name the new trace; the caller's `tracestate` stays behind.
#[track_caller]
fn assert_new_trace(spans: &[SpanData], trace_id: Option<String>, upstream: &ReceivedRequest) {
    let (server, genai) = (server_span(spans), genai_span(spans));
    let new_trace = server.span_context.trace_id().to_string();
    assert_ne!(new_trace, CALLER_TRACE);
    assert_eq!(server.parent_span_id, SpanId::INVALID);
    assert_eq!(genai.parent_span_id, server.span_context.span_id());
    assert_eq!(trace_id.as_deref(), Some(new_trace.as_str()));
    let traceparent = header(upstream, "traceparent").expect("a traceparent upstream");
    assert!(
        traceparent.starts_with(&format!("00-{new_trace}-{}-", genai.span_context.span_id())),
        "{traceparent}"
    );
    assert_eq!(header(upstream, "tracestate"), None);
    assert_eq!(
        header(upstream, "x-client-request-id"),
        Some(new_trace.as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incoming_trust_continues_the_callers_trace() {
    let rec = Recorder::new();
    let (mock, proxy) = gateway(&rec, |_| {}).await;
    let (trace_id, upstream) = call(&mock, proxy, "01").await;
    let spans = rec.wait_for(2).await;
    assert_continued(&spans, trace_id, &upstream);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incoming_link_starts_a_new_trace_whose_root_links_to_the_callers() {
    let rec = Recorder::new();
    // Loopback is not in the trusted networks: the client is at the edge.
    let (mock, proxy) = gateway(&rec, incoming(Incoming::Link, &["10.0.0.0/8"])).await;
    let (trace_id, upstream) = call(&mock, proxy, "01").await;
    let spans = rec.wait_for(2).await;
    assert_new_trace(&spans, trace_id, &upstream);
    let server = server_span(&spans);
    let [link] = server.links.links.as_slice() else {
        panic!("one link: {:?}", server.links);
    };
    assert_eq!(link.span_context.trace_id().to_string(), CALLER_TRACE);
    assert_eq!(link.span_context.span_id().to_string(), CALLER_SPAN);
    assert_eq!(link.span_context.trace_state().header(), "caller=secret1");
    // Only the root links; the GenAI span is an ordinary child.
    assert!(genai_span(&spans).links.links.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incoming_ignore_starts_a_new_trace_without_a_link() {
    let rec = Recorder::new();
    let (mock, proxy) = gateway(&rec, incoming(Incoming::Ignore, &[])).await;
    let (trace_id, upstream) = call(&mock, proxy, "01").await;
    let spans = rec.wait_for(2).await;
    assert_new_trace(&spans, trace_id, &upstream);
    assert!(server_span(&spans).links.links.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_in_the_trusted_networks_is_continued_in_link_and_ignore_mode() {
    for mode in [Incoming::Link, Incoming::Ignore] {
        let rec = Recorder::new();
        let trusted = ["192.168.0.0/16", "127.0.0.1/32"];
        let (mock, proxy) = gateway(&rec, incoming(mode, &trusted)).await;
        let (trace_id, upstream) = call(&mock, proxy, "01").await;
        let spans = rec.wait_for(2).await;
        assert_continued(&spans, trace_id, &upstream);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoofed_sampled_flag_decides_nothing_for_an_untrusted_client() {
    // Parent-based sampling that starts no trace of its own: only a caller's sampled flag
    // gets a request recorded.
    let sampler = || Sampler::ParentBased(Box::new(Sampler::AlwaysOff));

    let trusting = Recorder::with_sampler(sampler());
    let (mock, proxy) = gateway(&trusting, |_| {}).await;
    let (_, upstream) = call(&mock, proxy, "01").await;
    assert_eq!(trusting.wait_for(2).await.len(), 2);
    assert!(header(&upstream, "traceparent").unwrap().ends_with("-01"));

    let linking = Recorder::with_sampler(sampler());
    let (mock, proxy) = gateway(&linking, incoming(Incoming::Link, &[])).await;
    let (trace_id, upstream) = call(&mock, proxy, "01").await;
    let traceparent = header(&upstream, "traceparent").unwrap();
    // A new trace that the gateway's sampler did not sample, whatever the client said.
    assert!(!traceparent.contains(CALLER_TRACE), "{traceparent}");
    assert!(
        traceparent.ends_with("-00") || traceparent.ends_with("-02"),
        "{traceparent}"
    );
    assert_ne!(trace_id.as_deref(), Some(CALLER_TRACE));
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(linking.spans().is_empty(), "{:?}", names(&linking.spans()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baggage_goes_upstream_only_as_configured() {
    type Case = (&'static str, fn(&mut Config), Option<&'static str>);
    let cases: [Case; 3] = [
        // The default: the gateway's spans see the baggage, the provider does not.
        ("default", |_| {}, None),
        (
            "forward_baggage",
            |c| c.propagation.forward_baggage = true,
            Some("tenant=acme,user.id=u-42"),
        ),
        (
            "baggage_allow",
            |c| {
                c.propagation.forward_baggage = true;
                c.propagation.baggage_allow = vec!["tenant".to_owned(), "region".to_owned()];
            },
            Some("tenant=acme"),
        ),
    ];
    for (case, edit, expected) in cases {
        let rec = Recorder::new();
        let (mock, proxy) = gateway(&rec, edit).await;
        let (_, upstream) = call(&mock, proxy, "01").await;
        let got = header(&upstream, "baggage").map(|b| {
            let mut members: Vec<&str> = b.split(',').map(str::trim).collect();
            members.sort_unstable();
            members.join(",")
        });
        assert_eq!(got.as_deref(), expected, "{case}");
        // The trace context goes whatever happens to the baggage.
        assert!(
            header(&upstream, "traceparent").is_some_and(|tp| tp.contains(CALLER_TRACE)),
            "{case}"
        );
    }
}

#[test]
fn the_propagation_section_is_validated_with_errors_that_name_the_field() {
    let base =
        "[[upstreams]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\n[[routes]]\nupstream = \"a\"\n";
    let parse =
        |section: &str| Config::parse(&format!("{base}[propagation]\n{section}\n"), |_| None);

    let config = parse(
        "incoming = \"link\"\ntrusted_networks = [\"10.0.0.0/8\", \"::1/128\", \"192.0.2.7\"]\n\
         forward_baggage = true\nbaggage_allow = [\"tenant\"]",
    )
    .unwrap();
    assert_eq!(config.propagation.incoming, Incoming::Link);
    assert_eq!(config.propagation.networks().unwrap().len(), 3);
    let defaults = Config::parse(base, |_| None).unwrap().propagation;
    assert_eq!(defaults.incoming, Incoming::Trust);
    assert!(!defaults.forward_baggage);

    for (section, field, says) in [
        (
            "incoming = \"sometimes\"",
            "line",
            "expected trust, link or ignore",
        ),
        (
            "trusted_networks = [\"10.0.0.0/8\", \"10.0.0.0/33\"]",
            "propagation.trusted_networks[1]",
            "prefix length must be 0 to 32",
        ),
        (
            "trusted_networks = [\"10.0.0/8\"]",
            "propagation.trusted_networks[0]",
            "is not a network",
        ),
        (
            "trusted_networks = [\"::1/129\"]",
            "propagation.trusted_networks[0]",
            "0 to 128",
        ),
        (
            "baggage_allow = [\"tenant\"]",
            "propagation.baggage_allow",
            "forward_baggage = true",
        ),
        (
            "forward_baggage = true\nbaggage_allow = [\"a b\"]",
            "propagation.baggage_allow[0]",
            "not a baggage key",
        ),
        ("incomming = \"link\"", "line", "unknown field"),
    ] {
        let err = parse(section).unwrap_err();
        assert!(err.field.starts_with(field), "{section}: {err}");
        assert!(err.message.contains(says), "{section}: {err}");
    }
}

/// Tracing off (`OTEL_SDK_DISABLED=true`): no span is started, no id is made up. A trusted
/// caller's context goes upstream exactly as it came (its trace stays whole: an unsampled
/// trace of the gateway's own would cut it), and the client is told the caller's trace id;
/// without one, nothing is sent upstream and no trace id is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracing_off_passes_the_callers_context_through_and_makes_none_up() {
    let rec = Recorder::new();
    let mut telemetry = llmtrace_proxy::Telemetry::with_tracer_provider(rec.provider.clone());
    telemetry.tracing_off = true;
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let (proxy, _state) = start_gateway(&telemetry, &mock.url(), |config| {
        config.telemetry.access_log = false;
    })
    .await;

    let (trace_id, upstream) = call(&mock, proxy, "01").await;
    assert_eq!(trace_id.as_deref(), Some(CALLER_TRACE));
    assert_eq!(
        header(&upstream, "traceparent"),
        Some(format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01").as_str())
    );
    assert_eq!(header(&upstream, "tracestate"), Some("caller=secret1"));
    // Baggage goes upstream only when `[propagation]` says so, traced or not.
    assert_eq!(header(&upstream, "baggage"), None);
    assert_eq!(
        header(&upstream, "x-client-request-id"),
        Some(CALLER_TRACE),
        "the caller's trace still finds the provider's request"
    );

    // No context from the caller: none is made up.
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<bytes::Bytes>>();
    let request = http::Request::post(format!("http://{proxy}/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("x-mock-tokens", "2")
        .body(Full::from(BODY))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("x-llmtrace-trace-id").is_none());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(body.starts_with(b"{"), "the answer reached the client");
    let upstream = mock.received_requests().pop().expect("the upstream got it");
    for name in [
        "traceparent",
        "tracestate",
        "baggage",
        "x-client-request-id",
    ] {
        assert_eq!(header(&upstream, name), None, "{name} made up upstream");
    }
    assert!(header(&upstream, "x-request-id").is_some());

    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(rec.spans().is_empty(), "no span with tracing off");
}
