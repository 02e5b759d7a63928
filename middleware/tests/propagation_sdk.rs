//! The OpenTelemetry SDK (0.33) between `extract` and `inject`: child spans created under an
//! extracted context keep the received tracestate and flags when injected again.

use http::{HeaderMap, HeaderValue};
use llmtrace::propagation::{RandomTraceId, TraceParent, extract, inject};
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceId, Tracer,
    TracerProvider,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{
    InMemorySpanExporter, Sampler, SamplingDecision, SamplingResult, SdkTracerProvider,
    ShouldSample,
};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

fn provider(sampler: impl ShouldSample + 'static) -> (SdkTracerProvider, InMemorySpanExporter) {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_sampler(sampler)
        .with_simple_exporter(exporter.clone())
        .build();
    (provider, exporter)
}

fn incoming(flags: &str, tracestate: Option<&str>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        "traceparent",
        HeaderValue::from_str(&format!("00-{TRACE_ID}-{PARENT_ID}-{flags}")).unwrap(),
    );
    if let Some(tracestate) = tracestate {
        headers.insert("tracestate", HeaderValue::from_str(tracestate).unwrap());
    }
    headers
}

/// A SERVER span under the extracted context, a CLIENT span under it, then inject: what a
/// service with the server and client layers sends to the next hop.
fn hop(provider: &SdkTracerProvider, cx: &Context) -> (HeaderMap, SpanContext, SpanContext) {
    let tracer = provider.tracer("propagation-sdk");
    let server = tracer
        .span_builder("server")
        .with_kind(SpanKind::Server)
        .start_with_context(&tracer, cx);
    let server_sc = server.span_context().clone();
    let cx = cx.with_span(server);
    let client = tracer
        .span_builder("client")
        .with_kind(SpanKind::Client)
        .start_with_context(&tracer, &cx);
    let client_sc = client.span_context().clone();
    let cx = cx.with_span(client);
    let mut out = HeaderMap::new();
    inject(&cx, &mut out);
    // Both spans end (and are exported) when their contexts drop here.
    (out, server_sc, client_sc)
}

fn traceparent(out: &HeaderMap) -> TraceParent {
    TraceParent::parse(out["traceparent"].to_str().unwrap()).unwrap()
}

#[test]
fn sampled_children_keep_tracestate_and_flags() {
    let (provider, exporter) = provider(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)));
    let long_tenant = format!("{}@{}=x", "t".repeat(241), "v".repeat(14));
    let received = format!("congo=t61rcWkgMzE,{long_tenant},rojo=00f067aa0ba902b7");
    let cx = extract(&incoming("03", Some(&received)));
    let (out, server_sc, client_sc) = hop(&provider, &cx);

    // The SDK copies the parent's flags (random included) and TraceState into children.
    assert_eq!(server_sc.trace_flags(), TraceFlags::new(0x03));
    assert_eq!(client_sc.trace_flags(), TraceFlags::new(0x03));
    assert_eq!(
        client_sc.trace_state().header(),
        "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
    );

    // What goes out: same trace, the client span as parent, flags and tracestate as received.
    let tp = traceparent(&out);
    assert_eq!(tp.trace_id, TraceId::from_hex(TRACE_ID).unwrap());
    assert_eq!(tp.parent_id, client_sc.span_id());
    assert_eq!(tp.flags, 0x03);
    assert_eq!(out["tracestate"], received.as_str());

    // Exported: the server span under the remote caller, the client span under the server's.
    let spans = exporter.get_finished_spans().unwrap();
    let server = spans.iter().find(|s| s.name == "server").unwrap();
    assert_eq!(server.parent_span_id, SpanId::from_hex(PARENT_ID).unwrap());
    assert!(server.parent_span_is_remote);
    let client = spans.iter().find(|s| s.name == "client").unwrap();
    assert_eq!(client.parent_span_id, server_sc.span_id());
    assert!(!client.parent_span_is_remote);
}

#[test]
fn the_server_span_is_a_child_of_the_remote_parent() {
    let (provider, exporter) = provider(Sampler::AlwaysOn);
    let cx = extract(&incoming("01", Some("foo=1")));
    let tracer = provider.tracer("propagation-sdk");
    let mut server = tracer.start_with_context("server", &cx);
    server.end();
    let spans = exporter.get_finished_spans().unwrap();
    assert_eq!(spans.len(), 1);
    assert_eq!(
        spans[0].parent_span_id,
        SpanId::from_hex(PARENT_ID).unwrap()
    );
    assert!(spans[0].parent_span_is_remote);
    assert_eq!(spans[0].span_context.trace_state().header(), "foo=1");
}

#[test]
fn dropped_children_lose_the_random_flag_in_the_sdk_but_not_on_the_wire() {
    // Not sampled by the caller: ParentBased drops the children, and the SDK gives a dropped
    // span flags 00 (it does not copy the parent's), so the random bit is gone from the span.
    let (provider, _exporter) = provider(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)));
    let cx = extract(&incoming("02", Some("foo=1")));
    let (out, server_sc, client_sc) = hop(&provider, &cx);
    assert_eq!(server_sc.trace_flags(), TraceFlags::default());
    assert_eq!(client_sc.trace_flags(), TraceFlags::default());
    // The SDK keeps the TraceState even for dropped spans.
    assert_eq!(client_sc.trace_state().header(), "foo=1");
    // inject restores the received random flag for the received trace.
    assert_eq!(traceparent(&out).flags, 0x02);
    assert_eq!(out["tracestate"], "foo=1");
}

#[test]
fn record_only_children_keep_the_random_flag() {
    #[derive(Clone, Debug)]
    struct RecordOnly;
    impl ShouldSample for RecordOnly {
        fn should_sample(
            &self,
            parent: Option<&Context>,
            _: TraceId,
            _: &str,
            _: &SpanKind,
            _: &[KeyValue],
            _: &[opentelemetry::trace::Link],
        ) -> SamplingResult {
            SamplingResult {
                decision: SamplingDecision::RecordOnly,
                attributes: Vec::new(),
                trace_state: parent
                    .map(|cx| cx.span().span_context().trace_state().clone())
                    .unwrap_or_default(),
            }
        }
    }
    let (provider, _exporter) = provider(RecordOnly);
    let cx = extract(&incoming("03", None));
    let (out, _, client_sc) = hop(&provider, &cx);
    assert_eq!(client_sc.trace_flags(), TraceFlags::new(0x02));
    assert_eq!(traceparent(&out).flags, 0x02);
}

#[test]
fn unknown_flag_bits_never_leave() {
    let (provider, _exporter) = provider(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)));
    let cx = extract(&incoming("ff", None));
    let (out, _, client_sc) = hop(&provider, &cx);
    assert_eq!(client_sc.trace_flags(), TraceFlags::new(0x03));
    assert_eq!(traceparent(&out).flags, 0x03);
}

#[test]
fn a_sampler_that_changes_tracestate_wins() {
    #[derive(Clone, Debug)]
    struct Stamping;
    impl ShouldSample for Stamping {
        fn should_sample(
            &self,
            parent: Option<&Context>,
            _: TraceId,
            _: &str,
            _: &SpanKind,
            _: &[KeyValue],
            _: &[opentelemetry::trace::Link],
        ) -> SamplingResult {
            let parent_state = parent
                .map(|cx| cx.span().span_context().trace_state().clone())
                .unwrap_or_default();
            SamplingResult {
                decision: SamplingDecision::RecordAndSample,
                attributes: Vec::new(),
                trace_state: parent_state.insert("ours", "1").unwrap(),
            }
        }
    }
    let (provider, _exporter) = provider(Stamping);
    let cx = extract(&incoming("01", Some("foo=1,bar=2")));
    let (out, _, _) = hop(&provider, &cx);
    assert_eq!(out["tracestate"], "ours=1,foo=1,bar=2");
}

#[test]
fn a_new_trace_gets_the_random_flag_from_the_marker() {
    let (provider, _exporter) = provider(Sampler::AlwaysOn);
    // No traceparent: the layer starts a new trace with a random id and marks the context
    // with that trace's id, as the server layer does.
    let tracer = provider.tracer("propagation-sdk");
    let server = tracer
        .span_builder("server")
        .with_kind(SpanKind::Server)
        .start_with_context(&tracer, &extract(&HeaderMap::new()));
    let server_sc = server.span_context().clone();
    let cx = Context::new()
        .with_span(server)
        .with_value(RandomTraceId(server_sc.trace_id()));
    let client = tracer
        .span_builder("client")
        .with_kind(SpanKind::Client)
        .start_with_context(&tracer, &cx);
    let cx = cx.with_span(client);
    let mut out = HeaderMap::new();
    inject(&cx, &mut out);
    let tp = traceparent(&out);
    assert_eq!(tp.trace_id, server_sc.trace_id());
    assert_eq!(tp.flags, 0x03);
    assert!(out.get("tracestate").is_none());

    // Without the marker the SDK's flags alone say nothing about randomness.
    let (out, _, _) = hop(&provider, &extract(&HeaderMap::new()));
    assert_eq!(traceparent(&out).flags, 0x01);
}

#[test]
fn a_traceparent_with_an_empty_tracestate_sends_none() {
    let (provider, _exporter) = provider(Sampler::AlwaysOn);
    let cx = extract(&incoming("01", Some("")));
    let (out, _, _) = hop(&provider, &cx);
    assert!(out.get("tracestate").is_none());
}
