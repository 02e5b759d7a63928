use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    Link, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{Array, InstrumentationScope, KeyValue, StringValue, Value};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use proptest::prelude::*;
use prost::Message;

use super::encode::export_request;
use super::{OtlpSettings, parse_headers};

fn context(trace: u128, span: u64, remote: bool, state: &str) -> SpanContext {
    SpanContext::new(
        TraceId::from(trace),
        SpanId::from(span),
        TraceFlags::SAMPLED,
        remote,
        state.parse::<TraceState>().unwrap_or_default(),
    )
}

pub(super) fn span(
    name: &str,
    scope: &InstrumentationScope,
    attributes: Vec<KeyValue>,
) -> SpanData {
    let start = SystemTime::UNIX_EPOCH + Duration::from_nanos(1_764_633_600_123_456_789);
    SpanData {
        span_context: context(
            0x0af7_6519_16cd_43dd_8448_eb21_1c80_319c,
            0xb7ad_6b71_6920_3331,
            false,
            "vendor=a",
        ),
        parent_span_id: SpanId::from(0x00f0_67aa_0ba9_02b7),
        parent_span_is_remote: true,
        span_kind: SpanKind::Client,
        name: Cow::Owned(name.to_owned()),
        start_time: start,
        end_time: start + Duration::from_millis(1234),
        attributes,
        dropped_attributes_count: 2,
        events: {
            let mut events = SpanEvents::default();
            events.events.push(opentelemetry::trace::Event::new(
                "gen_ai.content.prompt",
                start + Duration::from_millis(5),
                vec![KeyValue::new("llmtrace.stream.stall.duration", 1.5)],
                1,
            ));
            events.dropped_count = 3;
            events
        },
        links: {
            let mut links = SpanLinks::default();
            links.links.push(Link::new(
                context(7, 9, true, ""),
                vec![KeyValue::new("llmtrace.link.kind", "tool_call")],
                4,
            ));
            links.dropped_count = 5;
            links
        },
        status: Status::error("upstream failed"),
        instrumentation_scope: scope.clone(),
    }
}

pub(super) fn resource() -> Resource {
    Resource::builder_empty()
        .with_service_name("llmtrace-proxy")
        .with_attribute(KeyValue::new("deployment.environment.name", "test"))
        .with_schema_url(
            Vec::<KeyValue>::new(),
            "https://opentelemetry.io/schemas/1.36.0",
        )
        .build()
}

/// What the SDK's exporter would send for `batch`, decoded.
pub(super) fn sdk_request(batch: &[SpanData], resource: &Resource) -> ExportTraceServiceRequest {
    let resource = ResourceAttributesWithSchema::from(resource);
    ExportTraceServiceRequest {
        resource_spans: group_spans_by_resource_and_scope(batch.to_vec(), &resource),
    }
}

fn ours(batch: &[SpanData], resource: &Resource) -> ExportTraceServiceRequest {
    let mut bytes = Vec::new();
    export_request(batch, resource, &mut bytes);
    ExportTraceServiceRequest::decode(bytes.as_slice()).expect("our bytes decode as OTLP")
}

#[test]
fn a_batch_decodes_to_what_the_sdk_exporter_sends() {
    let gateway = InstrumentationScope::builder("llmtrace")
        .with_version("0.1.0")
        .with_attributes([KeyValue::new("scope.kind", "gateway")])
        .with_schema_url("https://opentelemetry.io/schemas/1.36.0")
        .build();
    let other = InstrumentationScope::builder("other").build();
    let long = "x".repeat(20_000); // a three-byte length prefix, nested three deep
    let attributes = vec![
        KeyValue::new("gen_ai.request.model", "gpt-4o-mini"),
        KeyValue::new("gen_ai.usage.input_tokens", 1234_i64),
        KeyValue::new("negative", -7_i64),
        KeyValue::new("gen_ai.request.temperature", 0.25),
        KeyValue::new("llmtrace.aborted", true),
        KeyValue::new("false", false),
        KeyValue::new("empty", ""),
        KeyValue::new("unicode", "é – ✓ 😀"),
        KeyValue::new("gen_ai.input.messages", long),
        KeyValue::new(
            "llmtrace.stream.chunk_offsets_ms",
            Value::Array(Array::I64(vec![0, 12, 250, 100_000])),
        ),
        KeyValue::new(
            "gen_ai.response.finish_reasons",
            Value::Array(Array::String(vec![
                StringValue::from("stop"),
                StringValue::from(""),
            ])),
        ),
        KeyValue::new("floats", Value::Array(Array::F64(vec![0.5, -1.0]))),
        KeyValue::new("bools", Value::Array(Array::Bool(vec![true, false]))),
        KeyValue::new("empty_array", Value::Array(Array::I64(vec![]))),
    ];
    let mut second = span("chat gpt-4o-mini", &other, vec![]);
    second.parent_span_id = SpanId::INVALID;
    second.parent_span_is_remote = false;
    second.status = Status::Ok;
    second.span_kind = SpanKind::Server;
    second.events = SpanEvents::default();
    second.links = SpanLinks::default();
    let mut third = span("unset status", &gateway, vec![KeyValue::new("k", "v")]);
    third.status = Status::Unset;
    third.span_kind = SpanKind::Internal;
    let batch = vec![
        span("POST /v1/chat/completions", &gateway, attributes),
        second,
        third,
    ];
    let resource = resource();
    assert_eq!(ours(&batch, &resource), sdk_request(&batch, &resource));
}

#[test]
fn an_empty_resource_and_a_lone_span() {
    let scope = InstrumentationScope::builder("llmtrace").build();
    let batch = vec![span("s", &scope, vec![])];
    let resource = Resource::builder_empty().build();
    assert_eq!(ours(&batch, &resource), sdk_request(&batch, &resource));
}

fn any_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::I64),
        // NaN is not equal to itself: compared separately by the bytes test below.
        (-1e12f64..1e12).prop_map(Value::F64),
        ".{0,300}".prop_map(Value::from),
        prop::collection::vec(any::<i64>(), 0..40).prop_map(|v| Value::Array(Array::I64(v))),
        prop::collection::vec(".{0,20}", 0..10).prop_map(|v| Value::Array(Array::String(
            v.into_iter().map(StringValue::from).collect()
        ))),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn any_attributes_decode_to_what_the_sdk_sends(
        attributes in prop::collection::vec(("[a-z._]{1,40}", any_value()), 0..30),
        name in ".{0,200}",
    ) {
        let scope = InstrumentationScope::builder("llmtrace").with_version("1").build();
        let attributes = attributes.into_iter().map(|(k, v)| KeyValue::new(k, v)).collect();
        let batch = vec![span(&name, &scope, attributes)];
        let resource = resource();
        prop_assert_eq!(ours(&batch, &resource), sdk_request(&batch, &resource));
    }
}

#[test]
fn settings_come_from_the_sdk_variables() {
    let env = |vars: &'static [(&'static str, &'static str)]| {
        move |name: &str| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    };
    let default = OtlpSettings::from_env(env(&[])).unwrap();
    assert_eq!(default.endpoint, "http://localhost:4317");
    assert_eq!(default.timeout, Duration::from_secs(10));
    assert!(default.headers.is_empty());

    let set = OtlpSettings::from_env(env(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", " http://traces:4317 "),
        (
            "OTEL_EXPORTER_OTLP_HEADERS",
            "Authorization=Bearer%20abc, x-tenant=a",
        ),
        ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "x-tenant=b,broken"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
    ]))
    .unwrap();
    assert_eq!(set.endpoint, "http://traces:4317");
    assert_eq!(set.timeout, Duration::from_millis(2500));
    assert_eq!(
        set.headers,
        [
            ("authorization".to_owned(), "Bearer abc".to_owned()),
            ("x-tenant".to_owned(), "b".to_owned())
        ]
    );
    // What the SDK's exporter is left to: TLS and compression.
    assert!(
        OtlpSettings::from_env(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://x:4317")])).is_none()
    );
    assert!(OtlpSettings::from_env(env(&[("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")])).is_none());
    assert!(OtlpSettings::from_env(env(&[("OTEL_EXPORTER_OTLP_COMPRESSION", "none")])).is_some());
    assert_eq!(
        parse_headers("a=1,=2,b"),
        [("a".to_owned(), "1".to_owned())]
    );
}

/// Batches of small and large spans, few and many: the guessed widths of the length prefixes
/// (two bytes a span, more for the outer messages as the batch grows) are too wide, right
/// and too narrow in turn.
#[test]
fn length_prefix_guesses_right_and_wrong_decode_alike() {
    let scope = InstrumentationScope::builder("llmtrace").build();
    let small = || {
        let mut s = span("s", &scope, vec![]);
        s.events = SpanEvents::default();
        s.links = SpanLinks::default();
        s
    };
    let resource = resource();
    for n in [1, 2, 20, 200] {
        let batch: Vec<SpanData> = (0..n).map(|_| small()).collect();
        assert_eq!(
            ours(&batch, &resource),
            sdk_request(&batch, &resource),
            "{n}"
        );
        let big = vec![KeyValue::new("big", "y".repeat(3000))];
        let batch: Vec<SpanData> = (0..n).map(|_| span("b", &scope, big.clone())).collect();
        assert_eq!(
            ours(&batch, &resource),
            sdk_request(&batch, &resource),
            "{n}"
        );
    }
}

/// String attributes around the one-byte-length fast path's edge (a whole `KeyValue` of 127
/// bytes and more), and an empty key, which it leaves to the general path.
#[test]
fn string_attributes_at_the_short_path_edge() {
    let scope = InstrumentationScope::builder("llmtrace").build();
    let resource = resource();
    let mut attributes = vec![KeyValue::new("", "no key")];
    for key_len in [1, 40, 100, 127] {
        for text_len in (0..130).step_by(3).chain(115..=125) {
            attributes.push(KeyValue::new("k".repeat(key_len), "t".repeat(text_len)));
        }
    }
    let batch = vec![span("s", &scope, attributes)];
    assert_eq!(ours(&batch, &resource), sdk_request(&batch, &resource));
}

/// The bytes the SDK's exporter would send for `batch` (prost's encoding) and ours.
fn both_bytes(batch: &[SpanData], resource: &Resource) -> (Vec<u8>, Vec<u8>) {
    let mut ours = Vec::new();
    export_request(batch, resource, &mut ours);
    (ours, sdk_request(batch, resource).encode_to_vec())
}

/// Keys at the encoder's edges: empty (left out of the `KeyValue`), short, around 128 bytes
/// (a two-byte length), long; ASCII and not.
fn hostile_key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        ".{0,12}",
        "[a-z._]{120,135}",
        "[é✓😀a]{30,70}",
        ".{200,400}",
    ]
}

/// Integers around the varint widths the encoder writes differently (one byte, two, more)
/// and at the extremes.
fn small_and_large_i64() -> impl Strategy<Value = i64> {
    prop_oneof![
        any::<i64>(),
        0_i64..200,
        16_300_i64..16_500,
        prop::sample::select(vec![i64::MIN, i64::MAX, -1, 127, 128, 16_383, 16_384]),
    ]
}

/// Every value kind: scalars at their extremes (NaN, negative integers' ten-byte varints),
/// strings around the one-byte-length edge and of 16 KiB and more (three-byte lengths,
/// nested three deep), arrays of each kind, empty and not.
fn hostile_value() -> impl Strategy<Value = Value> {
    let text = prop_oneof![".{0,20}", ".{100,140}"];
    prop_oneof![
        any::<bool>().prop_map(Value::Bool),
        small_and_large_i64().prop_map(Value::I64),
        prop_oneof![
            any::<f64>(),
            Just(f64::NAN),
            Just(-0.0),
            Just(f64::INFINITY)
        ]
        .prop_map(Value::F64),
        text.clone().prop_map(Value::from),
        (16_384usize..17_000, "[a-zé😀]").prop_map(|(n, c)| Value::from(c.repeat(n / c.len()))),
        prop::collection::vec(any::<bool>(), 0..5).prop_map(|v| Value::Array(Array::Bool(v))),
        prop::collection::vec(small_and_large_i64(), 0..20)
            .prop_map(|v| Value::Array(Array::I64(v))),
        prop::collection::vec(any::<f64>(), 0..5).prop_map(|v| Value::Array(Array::F64(v))),
        prop::collection::vec(text, 0..5).prop_map(|v| Value::Array(Array::String(
            v.into_iter().map(StringValue::from).collect()
        ))),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Byte for byte what prost writes for the SDK's exporter, for hostile attribute shapes
    /// on the span, its event and its link, and for the span's own optional fields.
    #[test]
    fn hostile_attributes_encode_to_prosts_bytes(
        attributes in prop::collection::vec((hostile_key(), hostile_value()), 0..12),
        event_attributes in prop::collection::vec((hostile_key(), hostile_value()), 0..3),
        name in prop_oneof![Just(String::new()), ".{0,200}"],
        parent in any::<bool>(),
        trace_state in any::<bool>(),
        at_epoch in any::<bool>(),
    ) {
        let scope = InstrumentationScope::builder("llmtrace")
            .with_attributes([KeyValue::new("", 1_i64)])
            .build();
        let to_kv = |v: Vec<(String, Value)>| -> Vec<KeyValue> {
            v.into_iter().map(|(k, v)| KeyValue::new(k, v)).collect()
        };
        let mut span = span(&name, &scope, to_kv(attributes));
        span.events.events[0].attributes = to_kv(event_attributes.clone());
        span.links.links[0].attributes = to_kv(event_attributes);
        if !parent {
            span.parent_span_id = SpanId::INVALID;
        }
        if !trace_state {
            span.span_context = context(0x0af7_6519_16cd_43dd, 0xb7ad, false, "");
        }
        if at_epoch {
            // Times of zero are left out, as proto3 defaults.
            span.start_time = SystemTime::UNIX_EPOCH;
            span.end_time = SystemTime::UNIX_EPOCH;
        }
        let (ours, prost) = both_bytes(&[span], &resource());
        prop_assert_eq!(ours, prost);
    }
}

/// The fixed batch of the first test, compared as bytes rather than decoded.
#[test]
fn the_batch_is_prosts_bytes() {
    let scope = InstrumentationScope::builder("llmtrace")
        .with_version("1")
        .build();
    let attributes = vec![
        KeyValue::new("", "empty key"),
        KeyValue::new("k".repeat(200), "long key"),
        KeyValue::new("n", -1_i64),
        KeyValue::new("f", f64::NAN),
        KeyValue::new("b", false),
        KeyValue::new("s", "é".repeat(9000)),
        KeyValue::new("a", Value::Array(Array::F64(vec![1.0]))),
    ];
    let mut second = span("second", &scope, vec![]);
    second.start_time = SystemTime::UNIX_EPOCH;
    second.parent_span_id = SpanId::INVALID;
    let batch = vec![span("first", &scope, attributes), second];
    let (ours, prost) = both_bytes(&batch, &resource());
    assert_eq!(ours, prost);
}

/// A scope from a small alphabet, its texts either `'static` (shared by every scope that
/// names them) or owned copies, so that equal scopes come both with the same texts and with
/// equal texts at other addresses.
fn any_scope() -> impl Strategy<Value = InstrumentationScope> {
    let text = || {
        (
            prop::sample::select(vec!["llmtrace", "other", ""]),
            any::<bool>(),
        )
            .prop_map(|(text, owned)| -> Cow<'static, str> {
                if owned {
                    Cow::Owned(text.to_owned())
                } else {
                    Cow::Borrowed(text)
                }
            })
    };
    let attribute = prop::sample::select(vec![("k", 1), ("k", 2), ("j", 1)]);
    (
        text(),
        prop::option::of(text()),
        prop::option::of(text()),
        prop::collection::vec(attribute, 0..3),
    )
        .prop_map(|(name, version, schema_url, attributes)| {
            let mut builder = InstrumentationScope::builder(name);
            if let Some(version) = version {
                builder = builder.with_version(version);
            }
            if let Some(url) = schema_url {
                builder = builder.with_schema_url(url);
            }
            builder
                .with_attributes(attributes.into_iter().map(|(k, v)| KeyValue::new(k, v)))
                .build()
        })
}

proptest! {
    /// The scope comparison's shortcut (same texts, no attributes) answers as `==` does.
    #[test]
    fn scopes_compare_as_their_equality_does(a in any_scope(), b in any_scope()) {
        use super::encode::same_scope;
        prop_assert_eq!(same_scope(&a, &b), a == b);
        prop_assert_eq!(same_scope(&b, &a), b == a);
        prop_assert!(same_scope(&a, &a.clone()));
    }
}
