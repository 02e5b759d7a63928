//! Feeds arbitrary bytes to the `traceparent`, `tracestate` and `baggage` parsers, and through
//! an extract / inject round trip, checking that nothing panics and that whatever is accepted
//! formats to something that parses back to the same thing.
#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use llmtrace::propagation::{
    TraceParent, TraceState, decode_baggage, encode_baggage, extract, inject,
};

const NAMES: [HeaderName; 3] = [
    llmtrace::propagation::TRACEPARENT,
    llmtrace::propagation::TRACESTATE,
    llmtrace::propagation::BAGGAGE,
];

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);

    // traceparent: one value.
    if let Ok(tp) = TraceParent::parse(&text) {
        let formatted = tp.to_string();
        assert_eq!(formatted.len(), 55);
        let again = TraceParent::parse(&formatted).expect("formatted traceparent parses");
        assert_eq!(again.to_string(), formatted);
        assert_eq!(
            (again.trace_id, again.parent_id),
            (tp.trace_id, tp.parent_id)
        );
    }

    // tracestate: the input's lines are the header values.
    if let Ok(ts) = TraceState::parse_values(text.split('\n')) {
        assert!(ts.len() <= TraceState::MAX_MEMBERS);
        let formatted = ts.to_string();
        assert_eq!(
            TraceState::parse(&formatted).expect("formatted tracestate parses"),
            ts
        );
        assert!(TraceState::from_otel(&ts.to_otel()).len() <= ts.len());
    }

    // baggage: the input's lines, as raw bytes, are the header values.
    let baggage = decode_baggage(data.split(|&b| b == b'\n'));
    assert!(baggage.len() <= 64);
    if let Some(header) = encode_baggage(&baggage) {
        assert!(header.len() <= 8192);
        assert!(HeaderValue::from_str(&header).is_ok());
        assert_eq!(decode_baggage([header.as_bytes()]).len(), baggage.len());
    }

    // extract / inject: each line goes to the header its first byte picks.
    let mut headers = HeaderMap::new();
    for line in data.split(|&b| b == b'\n') {
        if let Some((&selector, value)) = line.split_first() {
            if let Ok(value) = HeaderValue::from_bytes(value) {
                headers.append(NAMES[usize::from(selector) % 3].clone(), value);
            }
        }
    }
    let mut once = HeaderMap::new();
    inject(&extract(&headers), &mut once);
    let mut twice = HeaderMap::new();
    inject(&extract(&once), &mut twice);
    assert_eq!(once, twice, "inject(extract(x)) is a fixed point");
});
