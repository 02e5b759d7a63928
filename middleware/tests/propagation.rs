//! Table-driven tests of `llmtrace::propagation`: one row per rule of W3C Trace Context
//! Level 2 and W3C Baggage, and one row per case of the W3C trace-context test suite
//! (`test/test.py`), replayed through an OpenTelemetry SDK span as a traced service would.

use http::{HeaderMap, HeaderName, HeaderValue};
use llmtrace::propagation::{
    ParseTraceParentError as TpErr, ParseTraceStateError as TsErr, RandomTraceId, TraceParent,
    TraceState, W3cPropagator, decode_baggage, encode_baggage, extract, extract_with_context,
    inject,
};
use opentelemetry::baggage::{Baggage, BaggageExt};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, Tracer, TracerProvider,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::SdkTracerProvider;

const TRACE_ID: &str = "12345678901234567890123456789012";
const PARENT_ID: &str = "1234567890123456";
const TP01: &str = "00-12345678901234567890123456789012-1234567890123456-01";
const TP00: &str = "00-12345678901234567890123456789012-1234567890123456-00";

/// Request headers as sent, in order: (name, value).
type Sent<'a> = Vec<(&'a str, &'a str)>;
/// A baggage entry: (key, value, metadata).
type BaggageEntry<'a> = (&'a str, &'a str, &'a str);

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

// === traceparent parsing ===

#[test]
fn traceparent_parse_table() {
    use TpErr::*;
    let tid = TRACE_ID;
    let pid = PARENT_ID;
    // (rule, input, Ok(formatted as version 00) or Err(reason))
    let rows: Vec<(&str, String, Result<&str, TpErr>)> = vec![
        ("valid version 00", TP01.into(), Ok(TP01)),
        ("flags 00", TP00.into(), Ok(TP00)),
        (
            "random flag 02",
            format!("00-{tid}-{pid}-02"),
            Ok("00-12345678901234567890123456789012-1234567890123456-02"),
        ),
        (
            "sampled+random 03",
            format!("00-{tid}-{pid}-03"),
            Ok("00-12345678901234567890123456789012-1234567890123456-03"),
        ),
        (
            "unknown flag bits are dropped when formatting",
            format!("00-{tid}-{pid}-ff"),
            Ok("00-12345678901234567890123456789012-1234567890123456-03"),
        ),
        (
            "unknown flag bit alone",
            format!("00-{tid}-{pid}-04"),
            Ok(TP00),
        ),
        ("leading space", format!(" {TP01}"), Ok(TP01)),
        ("leading tab", format!("\t{TP01}"), Ok(TP01)),
        ("trailing space", format!("{TP01} "), Ok(TP01)),
        ("trailing tab", format!("{TP01}\t"), Ok(TP01)),
        ("OWS both sides", format!("\t {TP01} \t"), Ok(TP01)),
        (
            "other white space is not OWS",
            format!("\u{0b}{TP01}"),
            Err(Version),
        ),
        ("empty", String::new(), Err(Length(0))),
        ("only OWS", "  \t ".into(), Err(Length(0))),
        (
            "version 00 with a trailing dot",
            format!("{TP01}."),
            Err(Length(56)),
        ),
        (
            "version 00 with trailing fields",
            format!("{TP01}-what-the-future-will-be-like"),
            Err(Length(84)),
        ),
        (
            "version 00 with a trailing dash",
            format!("{TP01}-"),
            Err(Length(56)),
        ),
        ("future version cc", format!("cc-{tid}-{pid}-01"), Ok(TP01)),
        (
            "future version with more fields",
            format!("cc-{tid}-{pid}-01-what-the-future-will-be-like"),
            Ok(TP01),
        ),
        (
            "future version with a trailing dash",
            format!("cc-{tid}-{pid}-01-"),
            Ok(TP01),
        ),
        (
            "future version, flags not followed by a dash",
            format!("cc-{tid}-{pid}-01.what-the-future-will-be-like"),
            Err(Delimiter),
        ),
        ("future version fe", format!("fe-{tid}-{pid}-01"), Ok(TP01)),
        (
            "future version too short",
            format!("cc-{tid}-{pid}-0"),
            Err(Length(54)),
        ),
        (
            "future version with an invalid trace id",
            format!("cc-{}-{pid}-01", "0".repeat(32)),
            Err(ZeroTraceId),
        ),
        (
            "version ff is forbidden",
            format!("ff-{tid}-{pid}-01"),
            Err(Version),
        ),
        (
            "version with an illegal first char",
            format!(".0-{tid}-{pid}-01"),
            Err(Version),
        ),
        (
            "version with an illegal second char",
            format!("0.-{tid}-{pid}-01"),
            Err(Version),
        ),
        (
            "upper-case version",
            format!("0A-{tid}-{pid}-01"),
            Err(Version),
        ),
        (
            "version of 3 digits",
            format!("000-{tid}-{pid}-01"),
            Err(Delimiter),
        ),
        (
            "version of 4 digits",
            format!("0000-{tid}-{pid}-01"),
            Err(Delimiter),
        ),
        (
            "version of 1 digit",
            format!("0-{tid}-{pid}-01"),
            Err(Length(54)),
        ),
        (
            "all-zero trace id",
            format!("00-{}-{pid}-01", "0".repeat(32)),
            Err(ZeroTraceId),
        ),
        (
            "trace id with an illegal first char",
            format!("00-.2345678901234567890123456789012-{pid}-01"),
            Err(TraceId),
        ),
        (
            "trace id with an illegal last char",
            format!("00-1234567890123456789012345678901.-{pid}-01"),
            Err(TraceId),
        ),
        (
            "upper-case trace id",
            format!("00-ABCDEF78901234567890123456789012-{pid}-01"),
            Err(TraceId),
        ),
        (
            "signed trace id",
            format!("00-+2345678901234567890123456789012-{pid}-01"),
            Err(TraceId),
        ),
        (
            "trace id of 33 digits",
            format!("00-{tid}3-{pid}-01"),
            Err(Delimiter),
        ),
        (
            "trace id of 31 digits",
            format!("00-1234567890123456789012345678901-{pid}-01"),
            Err(Length(54)),
        ),
        (
            "all-zero parent id",
            format!("00-{tid}-0000000000000000-01"),
            Err(ZeroParentId),
        ),
        (
            "parent id with an illegal first char",
            format!("00-{tid}-.234567890123456-01"),
            Err(ParentId),
        ),
        (
            "parent id with an illegal last char",
            format!("00-{tid}-123456789012345.-01"),
            Err(ParentId),
        ),
        (
            "upper-case parent id",
            format!("00-{tid}-ABCDEF7890123456-01"),
            Err(ParentId),
        ),
        (
            "parent id of 17 digits",
            format!("00-{tid}-12345678901234567-01"),
            Err(Delimiter),
        ),
        (
            "parent id of 15 digits",
            format!("00-{tid}-123456789012345-01"),
            Err(Length(54)),
        ),
        (
            "flags with an illegal first char",
            format!("00-{tid}-{pid}-.0"),
            Err(Flags),
        ),
        (
            "flags with an illegal second char",
            format!("00-{tid}-{pid}-0."),
            Err(Flags),
        ),
        ("upper-case flags", format!("00-{tid}-{pid}-0A"), Err(Flags)),
        (
            "flags of 3 digits",
            format!("00-{tid}-{pid}-001"),
            Err(Length(56)),
        ),
        (
            "flags of 1 digit",
            format!("00-{tid}-{pid}-1"),
            Err(Length(54)),
        ),
        (
            "two values combined with a comma",
            format!("{TP01},{TP01}"),
            Err(Length(111)),
        ),
        (
            "future version combined with a comma",
            format!("cc-{tid}-{pid}-01,{TP01}"),
            Err(Delimiter),
        ),
        (
            "wrong delimiter",
            format!("00_{tid}-{pid}-01"),
            Err(Delimiter),
        ),
        ("non-ASCII", format!("00-{tid}-{pid}-0\u{e9}"), Err(Flags)),
    ];
    for (rule, input, expected) in rows {
        let parsed = TraceParent::parse(&input);
        match expected {
            Ok(formatted) => {
                let tp = parsed.unwrap_or_else(|e| panic!("{rule}: {input:?} refused: {e}"));
                assert_eq!(tp.to_string(), formatted, "{rule}");
                assert_eq!(
                    tp.trace_id,
                    opentelemetry::trace::TraceId::from_hex(tid).unwrap(),
                    "{rule}"
                );
                assert_eq!(tp.parent_id, SpanId::from_hex(pid).unwrap(), "{rule}");
            }
            Err(reason) => assert_eq!(parsed, Err(reason), "{rule}: {input:?}"),
        }
    }
}

#[test]
fn traceparent_keeps_the_received_version_and_flags() {
    let tp: TraceParent = format!("cc-{TRACE_ID}-{PARENT_ID}-ff-x").parse().unwrap();
    assert_eq!(tp.version, 0xcc);
    assert_eq!(tp.flags, 0xff);
    assert!(tp.is_sampled() && tp.is_random());
    assert_eq!(tp.trace_flags(), TraceFlags::new(0x03));
}

#[test]
fn parse_errors_are_std_errors_with_messages() {
    let errors: Vec<Box<dyn std::error::Error>> = vec![
        Box::new(TraceParent::parse("x").unwrap_err()),
        Box::new(TraceState::parse("foo").unwrap_err()),
    ];
    for e in errors {
        assert!(!e.to_string().is_empty());
    }
}

// === tracestate parsing ===

fn all_key_chars() -> String {
    let mut key: String = ('a'..='z').collect();
    key.push_str("0123456789_-*/");
    key
}

fn all_value_chars() -> String {
    (0x20u8..=0x7e)
        .filter(|b| *b != b',' && *b != b'=')
        .map(char::from)
        .collect()
}

fn bar_members(range: std::ops::RangeInclusive<usize>) -> String {
    range
        .map(|i| format!("bar{i:02}={i:02}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[test]
fn tracestate_parse_table() {
    enum Kind {
        MissingEquals,
        Key,
        Value,
        TooMany,
    }
    use Kind::*;
    let key = all_key_chars();
    let value = all_value_chars();
    let with_vendor = format!("{key}@a-z0-9_-*/");
    // (rule, header values, Ok(formatted) or Err(kind))
    let rows: Vec<(&str, Vec<String>, Result<String, Kind>)> = vec![
        (
            "two members",
            vec!["foo=1,bar=2".into()],
            Ok("foo=1,bar=2".into()),
        ),
        (
            "headers are joined in order",
            vec![
                "foo=1,bar=2".into(),
                "rojo=1,congo=2".into(),
                "baz=3".into(),
            ],
            Ok("foo=1,bar=2,rojo=1,congo=2,baz=3".into()),
        ),
        ("empty header", vec!["".into()], Ok("".into())),
        (
            "empty header after a member",
            vec!["foo=1".into(), "".into()],
            Ok("foo=1".into()),
        ),
        (
            "empty header before a member",
            vec!["".into(), "foo=1".into()],
            Ok("foo=1".into()),
        ),
        (
            "empty members",
            vec![",foo=1,, ,\t,bar=2,".into()],
            Ok("foo=1,bar=2".into()),
        ),
        (
            "OWS around commas",
            vec!["foo=1 \t , \t bar=2, \t baz=3".into()],
            Ok("foo=1,bar=2,baz=3".into()),
        ),
        (
            "tabs and spaces around commas",
            vec!["foo=1\t \t,\t \tbar=2,\t \tbaz=3".into()],
            Ok("foo=1,bar=2,baz=3".into()),
        ),
        ("leading space", vec![" foo=1".into()], Ok("foo=1".into())),
        ("leading tab", vec!["\tfoo=1".into()], Ok("foo=1".into())),
        ("trailing space", vec!["foo=1 ".into()], Ok("foo=1".into())),
        ("trailing tab", vec!["foo=1\t".into()], Ok("foo=1".into())),
        (
            "OWS both sides",
            vec!["\t foo=1 \t".into()],
            Ok("foo=1".into()),
        ),
        (
            "all allowed characters",
            vec![format!("{key}={value}")],
            Ok(format!("{key}={value}")),
        ),
        (
            "all allowed characters, multi-tenant key",
            vec![format!("{with_vendor}={value}")],
            Ok(format!("{with_vendor}={value}")),
        ),
        (
            "value with inner and leading spaces",
            vec!["foo= a b".into()],
            Ok("foo= a b".into()),
        ),
        (
            "multi-tenant key with a digit-first tenant",
            vec!["0t@v=1".into()],
            Ok("0t@v=1".into()),
        ),
        (
            "32 members",
            vec![
                bar_members(1..=10),
                bar_members(11..=20),
                bar_members(21..=30),
                bar_members(31..=32),
            ],
            Ok(bar_members(1..=32)),
        ),
        (
            "33 members",
            vec![
                bar_members(1..=10),
                bar_members(11..=20),
                bar_members(21..=30),
                bar_members(31..=33),
            ],
            Err(TooMany),
        ),
        (
            "33 members with empty ones between",
            vec![format!("{},,{}", bar_members(1..=16), bar_members(17..=33))],
            Err(TooMany),
        ),
        (
            "key of 256 characters",
            vec!["foo=1".into(), format!("{}=1", "z".repeat(256))],
            Ok(format!("foo=1,{}=1", "z".repeat(256))),
        ),
        (
            "key of 257 characters",
            vec!["foo=1".into(), format!("{}=1", "z".repeat(257))],
            Err(Key),
        ),
        (
            "tenant of 241 and system of 14 characters",
            vec![
                "foo=1".into(),
                format!("{}@{}=1", "t".repeat(241), "v".repeat(14)),
            ],
            Ok(format!("foo=1,{}@{}=1", "t".repeat(241), "v".repeat(14))),
        ),
        (
            "242 characters before @ (over the old tenant limit)",
            vec!["foo=1".into(), format!("{}@v=1", "t".repeat(242))],
            Ok(format!("foo=1,{}@v=1", "t".repeat(242))),
        ),
        (
            "15 characters after @ (over the old system limit)",
            vec!["foo=1".into(), format!("t@{}=1", "v".repeat(15))],
            Ok(format!("foo=1,t@{}=1", "v".repeat(15))),
        ),
        (
            "key of 257 characters with an @",
            vec![format!("t@{}=1", "v".repeat(255))],
            Err(Key),
        ),
        (
            "value of 256 characters",
            vec![format!("foo={}", "v".repeat(256))],
            Ok(format!("foo={}", "v".repeat(256))),
        ),
        (
            "value of 257 characters",
            vec![format!("foo={}", "v".repeat(257))],
            Err(Value),
        ),
        (
            "duplicate key, same value, kept",
            vec!["foo=1,foo=1".into()],
            Ok("foo=1,foo=1".into()),
        ),
        (
            "duplicate key, other value, kept",
            vec!["foo=1,foo=2".into()],
            Ok("foo=1,foo=2".into()),
        ),
        (
            "duplicate key across headers, kept",
            vec!["foo=1".into(), "foo=1".into()],
            Ok("foo=1,foo=1".into()),
        ),
        (
            "duplicate key across headers, other value, kept",
            vec!["foo=1".into(), "foo=2".into()],
            Ok("foo=1,foo=2".into()),
        ),
        ("space before =", vec!["foo =1".into()], Err(Key)),
        ("upper-case key", vec!["FOO=1".into()], Err(Key)),
        ("dot in key", vec!["foo.bar=1".into()], Err(Key)),
        (
            "digit-first key",
            vec!["1foo=1".into()],
            Ok("1foo=1".into()),
        ),
        ("empty key", vec!["=1".into()], Err(Key)),
        (
            "key ending with @",
            vec!["foo@=1,bar=2".into()],
            Ok("foo@=1,bar=2".into()),
        ),
        ("key starting with @", vec!["@foo=1,bar=2".into()], Err(Key)),
        (
            "two @ in a row",
            vec!["foo@@bar=1,bar=2".into()],
            Ok("foo@@bar=1,bar=2".into()),
        ),
        (
            "two @",
            vec!["foo@bar@baz=1,bar=2".into()],
            Ok("foo@bar@baz=1,bar=2".into()),
        ),
        (
            "digit after @",
            vec!["foo@1bar=1".into()],
            Ok("foo@1bar=1".into()),
        ),
        ("= in value", vec!["foo=bar=baz".into()], Err(Value)),
        ("empty value", vec!["foo=,bar=3".into()], Err(Value)),
        ("tab inside value", vec!["foo=a\tb".into()], Err(Value)),
        ("non-ASCII value", vec!["foo=\u{e9}".into()], Err(Value)),
        (
            "member without =",
            vec!["foo=1,bar".into()],
            Err(MissingEquals),
        ),
        (
            "invalid member after valid ones",
            vec!["foo=1,bar=2".into(), "BAZ=3".into()],
            Err(Key),
        ),
    ];
    for (rule, values, expected) in rows {
        let parsed = TraceState::parse_values(values.iter().map(String::as_str));
        match (parsed, expected) {
            (Ok(ts), Ok(formatted)) => assert_eq!(ts.to_string(), formatted, "{rule}"),
            (Err(TsErr::MissingEquals(_)), Err(MissingEquals))
            | (Err(TsErr::InvalidKey(_)), Err(Key))
            | (Err(TsErr::InvalidValue(_)), Err(Value))
            | (Err(TsErr::TooManyMembers), Err(TooMany)) => {}
            (parsed, _) => panic!("{rule}: {values:?} gave {parsed:?}"),
        }
    }
}

#[test]
fn tracestate_lookup_and_order() {
    let ts = TraceState::parse("b=2,a=1,c=3").unwrap();
    assert_eq!(ts.get("a"), Some("1"));
    assert_eq!(ts.get("z"), None);
    assert_eq!(ts.len(), 3);
    assert_eq!(
        ts.iter().map(|(k, _)| k).collect::<Vec<_>>(),
        ["b", "a", "c"]
    );
    assert!(TraceState::new().is_empty());
    assert!(TraceState::is_valid_key("t@v") && !TraceState::is_valid_key("T"));
    assert!(TraceState::is_valid_value(" x") && !TraceState::is_valid_value("x "));
}

#[test]
fn tracestate_from_otel_keeps_only_what_may_be_sent() {
    // OpenTelemetry accepts an empty value and a value ending with a space; the spec does not.
    let otel = opentelemetry::trace::TraceState::from_key_value([
        ("ok", "1"),
        ("empty", ""),
        ("1digit", "2"),
        ("space", "x "),
        ("last", "3"),
    ])
    .unwrap();
    assert_eq!(
        TraceState::from_otel(&otel).to_string(),
        "ok=1,1digit=2,last=3"
    );
}

// === the W3C test suite, one row per case, through an SDK span ===
//
// The rows follow the suite's current revision (w3c/trace-context commit acab820, 41 tests):
// repeated tracestate keys are passed on, and keys with `@` anywhere after the first character
// are valid.

/// What the harness expects from the traceparent the service sends on.
#[derive(Debug)]
enum Expect {
    /// The received trace continues; the tracestate sent on, if any, is this exact text.
    Continue(Option<String>),
    /// A new trace was started (the received traceparent was refused); no tracestate.
    NewTrace,
}

/// One service hop: extract, a SERVER span, a CLIENT child span, inject.
fn service_hop(incoming: &HeaderMap) -> HeaderMap {
    let provider = SdkTracerProvider::builder().build();
    let tracer = provider.tracer("conformance");
    let cx = extract(incoming);
    let server = tracer.start_with_context("server", &cx);
    let cx = cx.with_span(server);
    let client = tracer.start_with_context("client", &cx);
    let cx = cx.with_span(client);
    let mut outgoing = HeaderMap::new();
    inject(&cx, &mut outgoing);
    outgoing
}

fn check_hop(case: &str, sent: &[(&str, &str)], expect: &Expect) {
    let outgoing = service_hop(&headers(sent));
    let values: Vec<_> = outgoing.get_all("traceparent").iter().collect();
    assert_eq!(values.len(), 1, "{case}: one traceparent");
    let tp = TraceParent::parse(values[0].to_str().unwrap()).unwrap();
    assert_eq!(
        tp.to_string(),
        values[0].to_str().unwrap(),
        "{case}: canonical"
    );
    let tracestate = outgoing
        .get("tracestate")
        .map(|v| v.to_str().unwrap().to_owned());
    match expect {
        Expect::Continue(expected_state) => {
            assert_eq!(tp.trace_id.to_string(), TRACE_ID, "{case}: same trace");
            assert_ne!(tp.parent_id.to_string(), PARENT_ID, "{case}: new parent id");
            assert_eq!(&tracestate, expected_state, "{case}: tracestate");
        }
        Expect::NewTrace => {
            for (_, value) in sent {
                assert!(
                    !value.contains(&tp.trace_id.to_string()),
                    "{case}: new trace id"
                );
            }
            assert_ne!(tp.trace_id, TraceId::INVALID, "{case}");
            assert_eq!(tracestate, None, "{case}: tracestate dropped");
        }
    }
}

#[test]
fn w3c_test_suite_cases() {
    use Expect::*;
    let tid = TRACE_ID;
    let pid = PARENT_ID;
    let state = |s: &str| Continue(Some(s.to_owned()));
    let key = all_key_chars();
    let value = all_value_chars();
    let with_vendor = format!("{key}@a-z0-9_-*/");
    let long_tenant = format!("{}@{}=1", "t".repeat(241), "v".repeat(14));
    let z256 = format!("{}=1", "z".repeat(256));
    let z257 = format!("{}=1", "z".repeat(257));
    let t242 = format!("{}@v=1", "t".repeat(242));
    let v15 = format!("t@{}=1", "v".repeat(15));
    let kv_all = format!("{key}={value}");
    let kv_all_vendor = format!("{with_vendor}={value}");
    let b = [
        bar_members(1..=10),
        bar_members(11..=20),
        bar_members(21..=30),
        bar_members(31..=32),
        bar_members(31..=33),
    ];
    let cc = |rest: &str| format!("cc-{tid}-{pid}-01{rest}");
    let (cc0, cc1, cc2) = (
        cc(""),
        cc("-what-the-future-will-be-like"),
        cc(".what-the-future-will-be-like"),
    );
    let v00 = |rest: &str| format!("{TP01}{rest}");
    let (v00a, v00b) = (v00("."), v00("-what-the-future-will-be-like"));
    let tp = |version: &str, trace: &str, parent: &str, flags: &str| {
        format!("{version}-{trace}-{parent}-{flags}")
    };
    let ff = tp("ff", tid, pid, "01");
    let ver_dot1 = tp(".0", tid, pid, "01");
    let ver_dot2 = tp("0.", tid, pid, "01");
    let ver3 = tp("000", tid, pid, "01");
    let ver4 = tp("0000", tid, pid, "01");
    let ver1 = tp("0", tid, pid, "01");
    let zero_trace = tp("00", &"0".repeat(32), pid, "01");
    let trace_dot1 = tp("00", ".2345678901234567890123456789012", pid, "01");
    let trace_dot2 = tp("00", "1234567890123456789012345678901.", pid, "01");
    let trace33 = tp("00", "123456789012345678901234567890123", pid, "01");
    let trace31 = tp("00", "1234567890123456789012345678901", pid, "01");
    let zero_parent = tp("00", tid, "0000000000000000", "01");
    let parent_dot1 = tp("00", tid, ".234567890123456", "01");
    let parent_dot2 = tp("00", tid, "123456789012345.", "01");
    let parent17 = tp("00", tid, "12345678901234567", "01");
    let parent15 = tp("00", tid, "123456789012345", "01");
    let flags_dot1 = tp("00", tid, pid, ".0");
    let flags_dot2 = tp("00", tid, pid, "0.");
    let flags3 = tp("00", tid, pid, "001");
    let flags1 = tp("00", tid, pid, "1");
    let ows = [
        format!(" {TP01}"),
        format!("\t{TP01}"),
        format!("{TP01} "),
        format!("{TP01}\t"),
        format!("\t {TP01} \t"),
    ];
    let other_trace = "00-12345678901234567890123456789011-1234567890123456-01";

    #[rustfmt::skip]
    let rows: Vec<(&str, Sent, Expect)> = vec![
        ("test_both_traceparent_and_tracestate_missing", vec![], NewTrace),
        ("test_traceparent_included_tracestate_missing", vec![("traceparent", TP01)], Continue(None)),
        ("test_traceparent_duplicated", vec![("traceparent", other_trace), ("traceparent", TP01)], NewTrace),
        ("test_traceparent_header_name/trace-parent", vec![("trace-parent", TP01)], NewTrace),
        ("test_traceparent_header_name/trace.parent", vec![("trace.parent", TP01)], NewTrace),
        ("test_traceparent_header_name_valid_casing/TraceParent", vec![("TraceParent", TP01)], Continue(None)),
        ("test_traceparent_header_name_valid_casing/TrAcEpArEnT", vec![("TrAcEpArEnT", TP01)], Continue(None)),
        ("test_traceparent_header_name_valid_casing/TRACEPARENT", vec![("TRACEPARENT", TP01)], Continue(None)),
        ("test_traceparent_version_0x00/trailing dot", vec![("traceparent", &v00a)], NewTrace),
        ("test_traceparent_version_0x00/trailing fields", vec![("traceparent", &v00b)], NewTrace),
        ("test_traceparent_version_0xcc/plain", vec![("traceparent", &cc0)], Continue(None)),
        ("test_traceparent_version_0xcc/more fields", vec![("traceparent", &cc1)], Continue(None)),
        ("test_traceparent_version_0xcc/dot after flags", vec![("traceparent", &cc2)], NewTrace),
        ("test_traceparent_version_0xff", vec![("traceparent", &ff)], NewTrace),
        ("test_traceparent_version_illegal_characters/.0", vec![("traceparent", &ver_dot1)], NewTrace),
        ("test_traceparent_version_illegal_characters/0.", vec![("traceparent", &ver_dot2)], NewTrace),
        ("test_traceparent_version_too_long/000", vec![("traceparent", &ver3)], NewTrace),
        ("test_traceparent_version_too_long/0000", vec![("traceparent", &ver4)], NewTrace),
        ("test_traceparent_version_too_short", vec![("traceparent", &ver1)], NewTrace),
        ("test_traceparent_trace_id_all_zero", vec![("traceparent", &zero_trace)], NewTrace),
        ("test_traceparent_trace_id_illegal_characters/first", vec![("traceparent", &trace_dot1)], NewTrace),
        ("test_traceparent_trace_id_illegal_characters/last", vec![("traceparent", &trace_dot2)], NewTrace),
        ("test_traceparent_trace_id_too_long", vec![("traceparent", &trace33)], NewTrace),
        ("test_traceparent_trace_id_too_short", vec![("traceparent", &trace31)], NewTrace),
        ("test_traceparent_parent_id_all_zero", vec![("traceparent", &zero_parent)], NewTrace),
        ("test_traceparent_parent_id_illegal_characters/first", vec![("traceparent", &parent_dot1)], NewTrace),
        ("test_traceparent_parent_id_illegal_characters/last", vec![("traceparent", &parent_dot2)], NewTrace),
        ("test_traceparent_parent_id_too_long", vec![("traceparent", &parent17)], NewTrace),
        ("test_traceparent_parent_id_too_short", vec![("traceparent", &parent15)], NewTrace),
        ("test_traceparent_trace_flags_illegal_characters/.0", vec![("traceparent", &flags_dot1)], NewTrace),
        ("test_traceparent_trace_flags_illegal_characters/0.", vec![("traceparent", &flags_dot2)], NewTrace),
        ("test_traceparent_trace_flags_too_long", vec![("traceparent", &flags3)], NewTrace),
        ("test_traceparent_trace_flags_too_short", vec![("traceparent", &flags1)], NewTrace),
        ("test_traceparent_ows_handling/space before", vec![("traceparent", &ows[0])], Continue(None)),
        ("test_traceparent_ows_handling/tab before", vec![("traceparent", &ows[1])], Continue(None)),
        ("test_traceparent_ows_handling/space after", vec![("traceparent", &ows[2])], Continue(None)),
        ("test_traceparent_ows_handling/tab after", vec![("traceparent", &ows[3])], Continue(None)),
        ("test_traceparent_ows_handling/both", vec![("traceparent", &ows[4])], Continue(None)),
        ("test_tracestate_included_traceparent_missing/1", vec![("tracestate", "foo=1")], NewTrace),
        ("test_tracestate_included_traceparent_missing/2", vec![("tracestate", "foo=1,bar=2")], NewTrace),
        ("test_tracestate_included_traceparent_included", vec![("traceparent", TP00), ("tracestate", "foo=1,bar=2")], state("foo=1,bar=2")),
        ("test_tracestate_header_name/trace-state", vec![("traceparent", TP00), ("trace-state", "foo=1")], Continue(None)),
        ("test_tracestate_header_name/trace.state", vec![("traceparent", TP00), ("trace.state", "foo=1")], Continue(None)),
        ("test_tracestate_header_name_valid_casing/TraceState", vec![("traceparent", TP00), ("TraceState", "foo=1")], state("foo=1")),
        ("test_tracestate_header_name_valid_casing/TrAcEsTaTe", vec![("traceparent", TP00), ("TrAcEsTaTe", "foo=1")], state("foo=1")),
        ("test_tracestate_header_name_valid_casing/TRACESTATE", vec![("traceparent", TP00), ("TRACESTATE", "foo=1")], state("foo=1")),
        ("test_tracestate_empty_header/alone", vec![("traceparent", TP00), ("tracestate", "")], Continue(None)),
        ("test_tracestate_empty_header/after", vec![("traceparent", TP00), ("tracestate", "foo=1"), ("tracestate", "")], state("foo=1")),
        ("test_tracestate_empty_header/before", vec![("traceparent", TP00), ("tracestate", ""), ("tracestate", "foo=1")], state("foo=1")),
        ("test_tracestate_multiple_headers_different_keys", vec![("traceparent", TP00), ("tracestate", "foo=1,bar=2"), ("tracestate", "rojo=1,congo=2"), ("tracestate", "baz=3")], state("foo=1,bar=2,rojo=1,congo=2,baz=3")),
        ("test_tracestate_duplicated_keys/1", vec![("traceparent", TP00), ("tracestate", "foo=1,foo=1")], state("foo=1,foo=1")),
        ("test_tracestate_duplicated_keys/2", vec![("traceparent", TP00), ("tracestate", "foo=1,foo=2")], state("foo=1,foo=2")),
        ("test_tracestate_duplicated_keys/3", vec![("traceparent", TP00), ("tracestate", "foo=1"), ("tracestate", "foo=1")], state("foo=1,foo=1")),
        ("test_tracestate_duplicated_keys/4", vec![("traceparent", TP00), ("tracestate", "foo=1"), ("tracestate", "foo=2")], state("foo=1,foo=2")),
        ("test_tracestate_all_allowed_characters/simple key", vec![("traceparent", TP00), ("tracestate", &kv_all)], state(&kv_all)),
        ("test_tracestate_all_allowed_characters/multi-tenant key", vec![("traceparent", TP00), ("tracestate", &kv_all_vendor)], state(&kv_all_vendor)),
        ("test_tracestate_ows_handling/1", vec![("traceparent", TP00), ("tracestate", "foo=1 \t , \t bar=2, \t baz=3")], state("foo=1,bar=2,baz=3")),
        ("test_tracestate_ows_handling/2", vec![("traceparent", TP00), ("tracestate", "foo=1\t \t,\t \tbar=2,\t \tbaz=3")], state("foo=1,bar=2,baz=3")),
        ("test_tracestate_ows_handling/3", vec![("traceparent", TP00), ("tracestate", " foo=1")], state("foo=1")),
        ("test_tracestate_ows_handling/4", vec![("traceparent", TP00), ("tracestate", "\tfoo=1")], state("foo=1")),
        ("test_tracestate_ows_handling/5", vec![("traceparent", TP00), ("tracestate", "foo=1 ")], state("foo=1")),
        ("test_tracestate_ows_handling/6", vec![("traceparent", TP00), ("tracestate", "foo=1\t")], state("foo=1")),
        ("test_tracestate_ows_handling/7", vec![("traceparent", TP00), ("tracestate", "\t foo=1 \t")], state("foo=1")),
        ("test_tracestate_key_illegal_characters/space", vec![("traceparent", TP00), ("tracestate", "foo =1")], Continue(None)),
        ("test_tracestate_key_illegal_characters/upper", vec![("traceparent", TP00), ("tracestate", "FOO=1")], Continue(None)),
        ("test_tracestate_key_illegal_characters/dot", vec![("traceparent", TP00), ("tracestate", "foo.bar=1")], Continue(None)),
        ("test_tracestate_key_illegal_vendor_format/1", vec![("traceparent", TP00), ("tracestate", "foo@=1,bar=2")], state("foo@=1,bar=2")),
        ("test_tracestate_key_illegal_vendor_format/2", vec![("traceparent", TP00), ("tracestate", "@foo=1,bar=2")], Continue(None)),
        ("test_tracestate_key_illegal_vendor_format/3", vec![("traceparent", TP00), ("tracestate", "foo@@bar=1,bar=2")], state("foo@@bar=1,bar=2")),
        ("test_tracestate_key_illegal_vendor_format/4", vec![("traceparent", TP00), ("tracestate", "foo@bar@baz=1,bar=2")], state("foo@bar@baz=1,bar=2")),
        ("test_tracestate_member_count_limit/32", vec![("traceparent", TP00), ("tracestate", &b[0]), ("tracestate", &b[1]), ("tracestate", &b[2]), ("tracestate", &b[3])], state(&bar_members(1..=32))),
        ("test_tracestate_member_count_limit/33", vec![("traceparent", TP00), ("tracestate", &b[0]), ("tracestate", &b[1]), ("tracestate", &b[2]), ("tracestate", &b[4])], Continue(None)),
        ("test_tracestate_key_length_limit/256", vec![("traceparent", TP00), ("tracestate", "foo=1"), ("tracestate", &z256)], state(&format!("foo=1,{z256}"))),
        ("test_tracestate_key_length_limit/257", vec![("traceparent", TP00), ("tracestate", "foo=1"), ("tracestate", &z257)], Continue(None)),
        ("test_tracestate_key_length_limit/241@14", vec![("traceparent", TP00), ("tracestate", "foo=1"), ("tracestate", &long_tenant)], state(&format!("foo=1,{long_tenant}"))),
        ("test_tracestate_key_length_limit/242@1", vec![("traceparent", TP00), ("tracestate", "foo=1"), ("tracestate", &t242)], state(&format!("foo=1,{t242}"))),
        ("test_tracestate_key_length_limit/1@15", vec![("traceparent", TP00), ("tracestate", "foo=1"), ("tracestate", &v15)], state(&format!("foo=1,{v15}"))),
        ("test_tracestate_value_illegal_characters/=", vec![("traceparent", TP00), ("tracestate", "foo=bar=baz")], Continue(None)),
        ("test_tracestate_value_illegal_characters/empty", vec![("traceparent", TP00), ("tracestate", "foo=,bar=3")], Continue(None)),
    ];
    for (case, sent, expect) in &rows {
        check_hop(case, sent, expect);
    }
}

/// AdvancedTest: the service calls back several times under one incoming request.
fn callbacks(sent: &[(&str, &str)], count: usize) -> Vec<TraceParent> {
    let provider = SdkTracerProvider::builder().build();
    let tracer = provider.tracer("conformance");
    let cx = extract(&headers(sent));
    let cx = cx.with_span(tracer.start_with_context("server", &cx));
    (0..count)
        .map(|_| {
            let cx = cx.with_span(tracer.start_with_context("client", &cx));
            let mut outgoing = HeaderMap::new();
            inject(&cx, &mut outgoing);
            TraceParent::parse(outgoing["traceparent"].to_str().unwrap()).unwrap()
        })
        .collect()
}

#[test]
fn w3c_test_suite_advanced_cases() {
    use std::collections::HashSet;
    let zero = "00-00000000000000000000000000000000-1234567890123456-01";
    let rows: Vec<(&str, Sent, Option<&str>)> = vec![
        (
            "test_multiple_requests_with_valid_traceparent",
            vec![("traceparent", TP01)],
            Some(TRACE_ID),
        ),
        ("test_multiple_requests_without_traceparent", vec![], None),
        (
            "test_multiple_requests_with_illegal_traceparent",
            vec![("traceparent", zero)],
            None,
        ),
    ];
    for (case, sent, same_trace) in rows {
        let tps = callbacks(&sent, 3);
        let traces: HashSet<_> = tps.iter().map(|tp| tp.trace_id).collect();
        let parents: HashSet<_> = tps.iter().map(|tp| tp.parent_id).collect();
        assert_eq!(traces.len(), 1, "{case}: one trace");
        assert_eq!(parents.len(), 3, "{case}: a parent id per callback");
        let trace = traces.into_iter().next().unwrap().to_string();
        match same_trace {
            Some(expected) => assert_eq!(trace, expected, "{case}"),
            None => assert_ne!(trace, "0".repeat(32), "{case}"),
        }
    }
}

// === extract / inject rules ===

#[test]
fn extract_sets_a_remote_span_context() {
    let cx = extract(&headers(&[("traceparent", TP01), ("tracestate", "foo=1")]));
    let span = cx.span();
    let sc = span.span_context();
    assert!(sc.is_valid() && sc.is_remote() && sc.is_sampled());
    assert_eq!(sc.trace_id(), TraceId::from_hex(TRACE_ID).unwrap());
    assert_eq!(sc.span_id(), SpanId::from_hex(PARENT_ID).unwrap());
    assert_eq!(sc.trace_state().header(), "foo=1");
}

#[test]
fn extract_keeps_only_known_flags() {
    let cx = extract(&headers(&[(
        "traceparent",
        &format!("00-{TRACE_ID}-{PARENT_ID}-ff"),
    )]));
    assert_eq!(
        cx.span().span_context().trace_flags(),
        TraceFlags::new(0x03)
    );
}

#[test]
fn invalid_traceparent_leaves_the_parent_span_and_ignores_tracestate() {
    let parent_sc = SpanContext::new(
        TraceId::from(7),
        SpanId::from(8),
        TraceFlags::SAMPLED,
        false,
        Default::default(),
    );
    let parent = Context::new().with_remote_span_context(parent_sc.clone());
    let cx = extract_with_context(
        &parent,
        &headers(&[("traceparent", "00-bad"), ("tracestate", "foo=1")]),
    );
    assert_eq!(cx.span().span_context(), &parent_sc);
    let mut out = HeaderMap::new();
    inject(&cx, &mut out);
    assert!(out.get("tracestate").is_none());
}

#[test]
fn baggage_is_independent_of_traceparent() {
    for sent in [
        vec![("baggage", "k=v")],
        vec![("traceparent", "garbage"), ("baggage", "k=v")],
        vec![("traceparent", TP01), ("baggage", "k=v")],
    ] {
        let cx = extract(&headers(&sent));
        assert_eq!(cx.baggage().get("k").unwrap().as_str(), "v", "{sent:?}");
    }
}

#[test]
fn extract_with_context_keeps_the_parents_other_values() {
    #[derive(Debug, PartialEq)]
    struct Mine(u8);
    let parent = Context::new()
        .with_value(Mine(1))
        .with_baggage([KeyValue::new("old", "1")]);
    let cx = extract_with_context(&parent, &headers(&[("traceparent", TP01)]));
    assert_eq!(cx.get::<Mine>(), Some(&Mine(1)));
    assert_eq!(cx.baggage().get("old").unwrap().as_str(), "1");
    // Baggage received replaces the parent's.
    let cx = extract_with_context(&parent, &headers(&[("baggage", "new=2")]));
    assert!(cx.baggage().get("old").is_none());
    assert_eq!(cx.baggage().get("new").unwrap().as_str(), "2");
}

#[test]
fn non_ascii_header_values() {
    let mut map = headers(&[("traceparent", TP01)]);
    map.append("tracestate", HeaderValue::from_bytes(b"foo=\xe9").unwrap());
    map.append("baggage", HeaderValue::from_bytes(b"a=\xe9,b=1").unwrap());
    let cx = extract(&map);
    assert!(cx.span().span_context().is_valid());
    assert!(cx.span().span_context().trace_state().header().is_empty());
    assert_eq!(cx.baggage().len(), 1);
    assert_eq!(cx.baggage().get("b").unwrap().as_str(), "1");

    let mut map = HeaderMap::new();
    map.append(
        "traceparent",
        HeaderValue::from_bytes(format!("{TP01}\u{e9}").as_bytes()).unwrap(),
    );
    assert!(!extract(&map).span().span_context().is_valid());
}

fn injected(cx: &Context) -> HeaderMap {
    let mut out = HeaderMap::new();
    inject(cx, &mut out);
    out
}

fn span_context(trace: u128, span: u64, flags: u8, state: &str) -> SpanContext {
    SpanContext::new(
        TraceId::from(trace),
        SpanId::from(span),
        TraceFlags::new(flags),
        false,
        state.parse().unwrap(),
    )
}

#[test]
fn inject_table() {
    let trace = 0x4bf92f3577b34da6a3ce929d0e0e4736;
    let span = 0x00f067aa0ba902b7;
    let tp = |flags: &str| format!("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-{flags}");
    let base = Context::new();
    // (rule, context, traceparent, tracestate)
    let rows: Vec<(&str, Context, Option<String>, Option<&str>)> = vec![
        ("no span: nothing", base.clone(), None, None),
        (
            "sampled",
            base.with_remote_span_context(span_context(trace, span, 1, "")),
            Some(tp("01")),
            None,
        ),
        (
            "not sampled",
            base.with_remote_span_context(span_context(trace, span, 0, "")),
            Some(tp("00")),
            None,
        ),
        (
            "random flag in the span context",
            base.with_remote_span_context(span_context(trace, span, 2, "")),
            Some(tp("02")),
            None,
        ),
        (
            "unknown bits dropped",
            base.with_remote_span_context(span_context(trace, span, 0xfd, "")),
            Some(tp("01")),
            None,
        ),
        (
            "RandomTraceId marker naming the span's trace",
            base.with_remote_span_context(span_context(trace, span, 1, ""))
                .with_value(RandomTraceId(TraceId::from(trace))),
            Some(tp("03")),
            None,
        ),
        (
            "RandomTraceId marker naming another trace",
            base.with_remote_span_context(span_context(trace, span, 1, ""))
                .with_value(RandomTraceId(TraceId::from(trace + 1))),
            Some(tp("01")),
            None,
        ),
        (
            "span's tracestate",
            base.with_remote_span_context(span_context(trace, span, 1, "b=1,a=2")),
            Some(tp("01")),
            Some("b=1,a=2"),
        ),
        (
            "invalid span context: nothing",
            base.with_remote_span_context(span_context(0, span, 1, "a=1")),
            None,
            None,
        ),
    ];
    for (rule, cx, traceparent, tracestate) in rows {
        let out = injected(&cx);
        assert_eq!(
            out.get("traceparent")
                .map(|v| v.to_str().unwrap().to_owned()),
            traceparent,
            "{rule}"
        );
        assert_eq!(
            out.get("tracestate").map(|v| v.to_str().unwrap()),
            tracestate,
            "{rule}"
        );
        assert!(out.get("baggage").is_none(), "{rule}");
    }
}

#[test]
fn inject_removes_stale_headers() {
    let stale = || {
        headers(&[
            ("traceparent", TP01),
            ("traceparent", TP00),
            ("tracestate", "stale=1"),
            ("baggage", "stale=1"),
        ])
    };
    let mut out = stale();
    inject(&Context::new(), &mut out);
    assert!(out.is_empty(), "{out:?}");

    let mut out = stale();
    let cx = Context::new().with_remote_span_context(span_context(5, 6, 1, ""));
    inject(&cx, &mut out);
    assert_eq!(out.get_all("traceparent").iter().count(), 1);
    assert!(out.get("tracestate").is_none() && out.get("baggage").is_none());
}

#[test]
fn received_random_flag_applies_only_to_its_own_trace() {
    let cx = extract(&headers(&[(
        "traceparent",
        &format!("00-{TRACE_ID}-{PARENT_ID}-02"),
    )]));
    // A span in the received trace whose flags lost the bit still sends it.
    let same_trace = cx.with_remote_span_context(SpanContext::new(
        TraceId::from_hex(TRACE_ID).unwrap(),
        SpanId::from(9),
        TraceFlags::default(),
        false,
        Default::default(),
    ));
    assert!(
        injected(&same_trace)["traceparent"]
            .to_str()
            .unwrap()
            .ends_with("-02")
    );
    // A span in another trace does not, unless that trace carries the marker.
    let other_trace = cx.with_remote_span_context(span_context(5, 9, 1, ""));
    assert!(
        injected(&other_trace)["traceparent"]
            .to_str()
            .unwrap()
            .ends_with("-01")
    );
    let marked = other_trace.with_value(RandomTraceId(TraceId::from(5)));
    assert!(
        injected(&marked)["traceparent"]
            .to_str()
            .unwrap()
            .ends_with("-03")
    );
    // A marker for another trace does not apply to the received one, whose own flag decides.
    let cx =
        extract(&headers(&[("traceparent", TP01)])).with_value(RandomTraceId(TraceId::from(5)));
    assert!(
        injected(&cx)["traceparent"]
            .to_str()
            .unwrap()
            .ends_with("-01")
    );
}

#[test]
fn received_tracestate_is_sent_only_while_the_span_keeps_it() {
    let long_tenant = format!("{}@{}=1", "t".repeat(241), "v".repeat(14));
    let received = format!("foo=1,{long_tenant},bar=2");
    let cx = extract(&headers(&[
        ("traceparent", TP01),
        ("tracestate", &received),
    ]));
    // OpenTelemetry's TraceState cannot hold the 14-character system id...
    assert_eq!(
        cx.span().span_context().trace_state().header(),
        "foo=1,bar=2"
    );
    // ...but the header is sent on exactly.
    assert_eq!(injected(&cx)["tracestate"], received.as_str());

    // A child whose TraceState was changed (e.g. by a sampler) sends its own.
    let changed = cx
        .span()
        .span_context()
        .trace_state()
        .insert("mine", "x")
        .unwrap();
    let child = cx.with_remote_span_context(SpanContext::new(
        TraceId::from_hex(TRACE_ID).unwrap(),
        SpanId::from(9),
        TraceFlags::SAMPLED,
        false,
        changed,
    ));
    assert_eq!(injected(&child)["tracestate"], "mine=x,foo=1,bar=2");

    // A span of another trace never sends the received header.
    let other = cx.with_remote_span_context(span_context(5, 9, 1, ""));
    assert!(injected(&other).get("tracestate").is_none());
}

// === baggage ===

fn decoded(values: &[&[u8]]) -> Vec<(String, String, String)> {
    let baggage = decode_baggage(values.iter().copied());
    let mut entries: Vec<_> = baggage
        .iter()
        .map(|(k, (v, m))| (k.to_string(), v.to_string(), m.as_str().to_owned()))
        .collect();
    entries.sort();
    entries
}

#[test]
fn baggage_decode_table() {
    type Row<'a> = (&'a str, Vec<&'a [u8]>, Vec<(&'a str, &'a str, &'a str)>);
    let rows: Vec<Row> = vec![
        (
            "two members",
            vec![b"key1=val1,key2=val2"],
            vec![("key1", "val1", ""), ("key2", "val2", "")],
        ),
        (
            "OWS around keys, values and commas",
            vec![b"key1 =   val1,  key2 =val2   "],
            vec![("key1", "val1", ""), ("key2", "val2", "")],
        ),
        ("tabs are OWS", vec![b"\tk\t=\tv\t"], vec![("k", "v", "")]),
        (
            "several headers",
            vec![b"userId=alice", b"serverNode=DF%2028,isProduction=false"],
            vec![
                ("isProduction", "false", ""),
                ("serverNode", "DF 28", ""),
                ("userId", "alice", ""),
            ],
        ),
        (
            "percent-decoded UTF-8",
            vec![b"k=%E2%9C%93%20ok"],
            vec![("k", "\u{2713} ok", "")],
        ),
        (
            "encoded percent",
            vec![b"k=100%25"],
            vec![("k", "100%", "")],
        ),
        (
            "invalid UTF-8 becomes U+FFFD",
            vec![b"k=%FF,j=a%C3"],
            vec![("j", "a\u{fffd}", ""), ("k", "\u{fffd}", "")],
        ),
        (
            "stray percent is kept",
            vec![b"k=%zz"],
            vec![("k", "%zz", "")],
        ),
        (
            "= inside a value",
            vec![b"k=a=b=="],
            vec![("k", "a=b==", "")],
        ),
        ("empty value", vec![b"k="], vec![("k", "", "")]),
        (
            "properties",
            vec![b"k=v;p1;p2=x"],
            vec![("k", "v", "p1;p2=x")],
        ),
        (
            "OWS around properties",
            vec![b"k=v ; p1 ;\tp2 = x "],
            vec![("k", "v", "p1;p2=x")],
        ),
        (
            "property value kept encoded",
            vec![b"k=v;p=a%20b"],
            vec![("k", "v", "p=a%20b")],
        ),
        (
            "token characters in keys",
            vec![b"!#$%&'*+-.^_`|~09azAZ=1"],
            vec![("!#$%&'*+-.^_`|~09azAZ", "1", "")],
        ),
        (
            "key with a space: dropped alone",
            vec![b"bad key=1,ok=2"],
            vec![("ok", "2", "")],
        ),
        (
            "key with a separator: dropped alone",
            vec![b"a/b=1,a@b=1,a:b=1,ok=2"],
            vec![("ok", "2", "")],
        ),
        (
            "empty key: dropped",
            vec![b"=1,ok=2"],
            vec![("ok", "2", "")],
        ),
        ("no =: dropped", vec![b"k,ok=2"], vec![("ok", "2", "")]),
        (
            "space inside a value: dropped",
            vec![b"k=a b,ok=2"],
            vec![("ok", "2", "")],
        ),
        (
            "quote in a value: dropped",
            vec![b"k=a\"b,ok=2"],
            vec![("ok", "2", "")],
        ),
        (
            "backslash in a value: dropped",
            vec![b"k=a\\b,ok=2"],
            vec![("ok", "2", "")],
        ),
        (
            "raw non-ASCII in a value: dropped",
            vec![b"k=\xc3\xa9,ok=2"],
            vec![("ok", "2", "")],
        ),
        (
            "control character: dropped",
            vec![b"k=a\x01b,ok=2"],
            vec![("ok", "2", "")],
        ),
        (
            "empty property: dropped",
            vec![b"k=v;,ok=2"],
            vec![("ok", "2", "")],
        ),
        (
            "invalid property key: dropped",
            vec![b"k=v;bad prop,ok=2"],
            vec![("ok", "2", "")],
        ),
        (
            "invalid property value: dropped",
            vec![b"k=v;p=a b,ok=2"],
            vec![("ok", "2", "")],
        ),
        (
            "empty members are skipped",
            vec![b",, ,k=v,"],
            vec![("k", "v", "")],
        ),
        ("empty header", vec![b""], vec![]),
        (
            "a repeated key keeps the last value",
            vec![b"k=1", b"k=2"],
            vec![("k", "2", "")],
        ),
    ];
    for (rule, values, expected) in rows {
        let expected: Vec<_> = expected
            .into_iter()
            .map(|(k, v, m)| (k.to_owned(), v.to_owned(), m.to_owned()))
            .collect();
        assert_eq!(decoded(&values), expected, "{rule}");
    }
}

#[test]
fn baggage_decode_limits() {
    // 65 members: the first 64 are kept.
    let many: String = (0..65)
        .map(|i| format!("k{i:02}=v"))
        .collect::<Vec<_>>()
        .join(",");
    let entries = decoded(&[many.as_bytes()]);
    assert_eq!(entries.len(), 64);
    assert!(entries.iter().all(|(k, _, _)| k != "k64"));

    // Over 8192 bytes: what fits is kept, in order.
    let big = format!("big={}", "x".repeat(8000));
    let header = format!("a=1,{big},b={},c=3", "y".repeat(300));
    let entries = decoded(&[header.as_bytes()]);
    let keys: Vec<_> = entries.iter().map(|(k, _, _)| k.as_str()).collect();
    assert_eq!(keys, ["a", "big", "c"]);

    // Exactly 8192 bytes fit.
    let exact = format!("k={}", "x".repeat(8190));
    assert_eq!(decoded(&[exact.as_bytes()]).len(), 1);
    let over = format!("k={}", "x".repeat(8191));
    assert_eq!(decoded(&[over.as_bytes()]).len(), 0);
}

#[test]
fn baggage_encode_table() {
    let rows: Vec<(&str, Vec<BaggageEntry>, Option<&str>)> = vec![
        ("empty baggage: no header", vec![], None),
        (
            "sorted by key",
            vec![("b", "2", ""), ("a", "1", "")],
            Some("a=1,b=2"),
        ),
        (
            "space, comma, semicolon, quote, backslash, percent encoded",
            vec![("k", " ,;\"\\%", "")],
            Some("k=%20%2C%3B%22%5C%25"),
        ),
        (
            "= and other baggage-octets kept",
            vec![("k", "a=b!#$&'()*+-./:<>?@[]^_`{|}~", "")],
            Some("k=a=b!#$&'()*+-./:<>?@[]^_`{|}~"),
        ),
        (
            "non-ASCII encoded as UTF-8",
            vec![("k", "\u{e9}\u{2713}", "")],
            Some("k=%C3%A9%E2%9C%93"),
        ),
        (
            "control characters encoded",
            vec![("k", "\t\n\u{7f}", "")],
            Some("k=%09%0A%7F"),
        ),
        ("empty value", vec![("k", "", "")], Some("k=")),
        (
            "metadata as properties",
            vec![("k", "v", "p1;p2=x")],
            Some("k=v;p1;p2=x"),
        ),
        (
            "metadata OWS removed",
            vec![("k", "v", " p1 ; p2 = x ")],
            Some("k=v;p1;p2=x"),
        ),
        (
            "metadata property values made valid",
            vec![("k", "v", "p=a b")],
            Some("k=v;p=a%20b"),
        ),
        (
            "invalid metadata properties skipped",
            vec![("k", "v", "bad key;;ok")],
            Some("k=v;ok"),
        ),
    ];
    for (rule, entries, expected) in rows {
        let mut baggage = Baggage::new();
        for (k, v, m) in entries {
            baggage.insert_with_metadata(k.to_owned(), v.to_owned(), m);
        }
        assert_eq!(encode_baggage(&baggage).as_deref(), expected, "{rule}");
    }
}

#[test]
fn baggage_encode_limits() {
    // Values that triple in size when encoded: only what fits in 8192 bytes is sent.
    let mut baggage = Baggage::new();
    for k in ["a", "b", "c"] {
        baggage.insert(k, " ".repeat(2000));
    }
    let header = encode_baggage(&baggage).unwrap();
    assert!(header.len() <= 8192, "{}", header.len());
    assert_eq!(header.split(',').count(), 1);
    assert!(header.starts_with("a="));

    // A member too big alone is skipped, smaller ones still go.
    let mut baggage = Baggage::new();
    baggage.insert("a", "x");
    baggage.insert("b", "%".repeat(3000));
    baggage.insert("c", "y");
    assert_eq!(encode_baggage(&baggage).unwrap(), "a=x,c=y");

    // 64 members at most (OpenTelemetry's Baggage holds 64 already; check the count).
    let baggage: Baggage = (0..64)
        .map(|i| KeyValue::new(format!("k{i:02}"), "v"))
        .collect();
    assert_eq!(encode_baggage(&baggage).unwrap().split(',').count(), 64);
}

#[test]
fn baggage_round_trips_through_inject_and_extract() {
    let mut baggage = Baggage::new();
    baggage.insert_with_metadata("user", "Zo\u{eb} \"x\",y;z", "p1;p2=v");
    baggage.insert("n", "1");
    let cx = Context::new().with_baggage(baggage);
    let out = injected(&cx);
    assert_eq!(
        out["baggage"],
        "n=1,user=Zo%C3%AB%20%22x%22%2Cy%3Bz;p1;p2=v"
    );
    let back = extract(&out);
    assert_eq!(
        back.baggage()
            .get_with_metadata("user")
            .map(|(v, m)| (v.as_str(), m.as_str())),
        Some(("Zo\u{eb} \"x\",y;z", "p1;p2=v"))
    );
}

// === W3cPropagator ===

#[test]
fn propagator_fields() {
    let propagator = W3cPropagator::new();
    let fields: Vec<_> = propagator.fields().collect();
    assert_eq!(fields, ["traceparent", "tracestate", "baggage"]);
}

#[test]
fn propagator_matches_the_headermap_functions() {
    use llmtrace::propagation::{HeaderExtractor, HeaderInjector};
    let propagator = W3cPropagator::new();
    let long_tenant = format!("{}@{}=1", "t".repeat(241), "v".repeat(14));
    let incoming = headers(&[
        ("traceparent", &format!("00-{TRACE_ID}-{PARENT_ID}-03")),
        ("tracestate", "a=1"),
        ("tracestate", &long_tenant),
        ("baggage", "k=v%20w;p"),
        ("baggage", "j=2"),
    ]);
    let via_trait = propagator.extract_with_context(&Context::new(), &HeaderExtractor(&incoming));
    let via_fn = extract(&incoming);
    let mut a = HeaderMap::new();
    propagator.inject_context(&via_trait, &mut HeaderInjector(&mut a));
    let b = injected(&via_fn);
    assert_eq!(a, b);
    assert_eq!(a["tracestate"], format!("a=1,{long_tenant}").as_str());
    assert_eq!(a["baggage"], "j=2,k=v%20w;p");
    assert!(a["traceparent"].to_str().unwrap().ends_with("-03"));
}

#[test]
fn propagator_over_a_single_value_extractor() {
    use std::collections::HashMap;
    let mut carrier = HashMap::new();
    carrier.insert("traceparent".to_owned(), TP01.to_owned());
    carrier.insert("tracestate".to_owned(), "foo=1".to_owned());
    carrier.insert("baggage".to_owned(), "k=v".to_owned());
    let cx = W3cPropagator::new().extract(&carrier);
    assert_eq!(
        cx.span().span_context().trace_id(),
        TraceId::from_hex(TRACE_ID).unwrap()
    );
    let mut out: HashMap<String, String> = HashMap::new();
    W3cPropagator::new().inject_context(&cx, &mut out);
    assert_eq!(out["traceparent"], TP01);
    assert_eq!(out["tracestate"], "foo=1");
    assert_eq!(out["baggage"], "k=v");
}

#[test]
fn propagator_as_the_global_one() {
    use llmtrace::propagation::HeaderExtractor;
    opentelemetry::global::set_text_map_propagator(W3cPropagator::default());
    let incoming = headers(&[("traceparent", TP01)]);
    let cx = opentelemetry::global::get_text_map_propagator(|p| {
        p.extract_with_context(&Context::new(), &HeaderExtractor(&incoming))
    });
    assert!(cx.span().span_context().is_remote());
}
