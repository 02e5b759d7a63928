//! Property tests of `llmtrace::propagation`: round trips for generated valid headers, no
//! panics on arbitrary input, and baggage values of any UTF-8 surviving encode and decode.

use http::{HeaderMap, HeaderValue};
use llmtrace::propagation::{
    TraceParent, TraceState, decode_baggage, encode_baggage, extract, inject,
};
use opentelemetry::Context;
use opentelemetry::baggage::{Baggage, BaggageExt};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId};
use proptest::prelude::*;

fn trace_id() -> impl Strategy<Value = u128> {
    any::<u128>().prop_filter("non-zero", |id| *id != 0)
}

fn span_id() -> impl Strategy<Value = u64> {
    any::<u64>().prop_filter("non-zero", |id| *id != 0)
}

/// A valid tracestate key, simple or multi-tenant, up to the maximum lengths.
fn tracestate_key() -> impl Strategy<Value = String> {
    prop_oneof![
        r"[a-z][a-z0-9_\-*/]{0,255}",
        r"[a-z0-9][a-z0-9_\-*/]{0,240}@[a-z][a-z0-9_\-*/]{0,13}",
    ]
}

fn tracestate_value() -> impl Strategy<Value = String> {
    r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
}

/// Up to 32 members with distinct keys, in generated order.
fn tracestate_members() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec((tracestate_key(), tracestate_value()), 0..=32).prop_map(|members| {
        let mut seen = std::collections::HashSet::new();
        members
            .into_iter()
            .filter(|(k, _)| seen.insert(k.clone()))
            .collect()
    })
}

fn ows() -> impl Strategy<Value = String> {
    r"[ \t]{0,3}"
}

/// An RFC 7230 token.
fn token() -> impl Strategy<Value = String> {
    r"[!#$%&'*+\-.^_`|~0-9a-zA-Z]{1,20}"
}

proptest! {
    #[test]
    fn traceparent_format_parse_round_trip(trace in trace_id(), span in span_id(), flags in 0u8..=3) {
        let text = format!("00-{:032x}-{:016x}-{:02x}", trace, span, flags);
        let tp = TraceParent::parse(&text).unwrap();
        prop_assert_eq!(tp.to_string(), text);
        prop_assert_eq!(tp, TraceParent::new(TraceId::from(trace), SpanId::from(span), flags));
    }

    #[test]
    fn traceparent_of_any_version_and_flags_normalizes(
        version in 0u8..=0xfe, trace in trace_id(), span in span_id(), flags: u8,
        before in ows(), after in ows(), future in r"(-[ -~]{0,20})?",
    ) {
        let suffix = if version == 0 { String::new() } else { future };
        let text = format!("{before}{version:02x}-{trace:032x}-{span:016x}-{flags:02x}{suffix}{after}");
        let tp = TraceParent::parse(&text).unwrap();
        prop_assert_eq!(tp.version, version);
        prop_assert_eq!(tp.flags, flags);
        let normalized = format!("00-{trace:032x}-{span:016x}-{:02x}", flags & 3);
        prop_assert_eq!(tp.to_string(), normalized.clone());
        prop_assert_eq!(TraceParent::parse(&normalized).unwrap().to_string(), normalized);
    }

    #[test]
    fn traceparent_parse_never_panics(s in any::<String>()) {
        let _ = TraceParent::parse(&s);
    }

    #[test]
    fn traceparent_parse_never_panics_near_the_format(s in r"[0-9a-fA-F\-. \t,é]{50,60}") {
        if let Ok(tp) = TraceParent::parse(&s) {
            prop_assert!(TraceParent::parse(&tp.to_string()).is_ok());
        }
    }

    #[test]
    fn tracestate_format_parse_round_trip(members in tracestate_members()) {
        let text = members.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
        let ts = TraceState::parse(&text).unwrap();
        prop_assert_eq!(ts.to_string(), text.clone());
        prop_assert_eq!(ts.len(), members.len());
        prop_assert_eq!(TraceState::from_members(members).unwrap(), ts);
    }

    #[test]
    fn tracestate_split_over_headers_with_ows_parses_the_same(
        members in tracestate_members(),
        layout in prop::collection::vec((ows(), ows(), any::<bool>(), any::<bool>()), 32),
    ) {
        // Spread the members over several header values, with OWS and empty members.
        let mut values = vec![String::new()];
        for ((k, v), (pre, post, new_header, empty)) in members.iter().zip(&layout) {
            if *new_header {
                values.push(String::new());
            }
            let current = values.last_mut().unwrap();
            if !current.is_empty() {
                current.push(',');
            }
            if *empty {
                current.push_str(" ,");
            }
            current.push_str(&format!("{pre}{k}={v}{post}"));
        }
        let ts = TraceState::parse_values(values.iter().map(String::as_str)).unwrap();
        let canonical = members.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
        prop_assert_eq!(ts.to_string(), canonical);
    }

    #[test]
    fn tracestate_parse_never_panics_and_is_idempotent(s in any::<String>()) {
        if let Ok(ts) = TraceState::parse(&s) {
            prop_assert_eq!(TraceState::parse(&ts.to_string()).unwrap(), ts);
        }
    }

    #[test]
    fn tracestate_parse_of_near_valid_input(s in r"[a-z0-9@=, \t_\-*/A-Z.]{0,80}") {
        if let Ok(ts) = TraceState::parse(&s) {
            prop_assert_eq!(TraceState::parse(&ts.to_string()).unwrap(), ts);
        }
    }

    #[test]
    fn baggage_values_of_any_utf8_round_trip(
        entries in prop::collection::btree_map(token(), any::<String>(), 0..8),
    ) {
        let mut baggage = Baggage::new();
        for (k, v) in &entries {
            baggage.insert(k.clone(), v.clone());
        }
        let header = encode_baggage(&baggage);
        prop_assert_eq!(header.is_none(), entries.is_empty());
        let header = header.unwrap_or_default();
        prop_assert!(header.len() <= 8192);
        prop_assert!(HeaderValue::from_str(&header).is_ok());
        let back = decode_baggage([header.as_bytes()]);
        // Everything that fit in the header comes back unchanged.
        for (k, (v, _)) in back.iter() {
            prop_assert_eq!(Some(v.as_str()), entries.get(k.as_str()).map(String::as_str));
        }
        let encoded_sizes: usize = entries.iter().map(|(k, v)| {
            k.len() + 1 + percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC).to_string().len()
        }).sum::<usize>() + entries.len();
        if encoded_sizes <= 8192 {
            prop_assert_eq!(back.len(), entries.len());
        }
    }

    #[test]
    fn baggage_with_properties_round_trips(
        key in token(), value in any::<String>(),
        properties in prop::collection::vec((token(), proptest::option::of(r"[!#-+\--:<-\[\]-~]{0,10}")), 0..4),
    ) {
        let metadata = properties.iter().map(|(k, v)| match v {
            Some(v) => format!("{k}={v}"),
            None => k.clone(),
        }).collect::<Vec<_>>().join(";");
        let mut baggage = Baggage::new();
        baggage.insert_with_metadata(key.clone(), value.clone(), metadata.as_str());
        let header = encode_baggage(&baggage).unwrap();
        let back = decode_baggage([header.as_bytes()]);
        let (v, m) = back.get_with_metadata(&key).unwrap();
        prop_assert_eq!(v.as_str(), value);
        prop_assert_eq!(m.as_str(), metadata);
    }

    #[test]
    fn baggage_decode_never_panics(values in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 0..4)) {
        let baggage = decode_baggage(values.iter().map(Vec::as_slice));
        prop_assert!(baggage.len() <= 64);
        // Whatever was decoded can be sent again, validly.
        if let Some(header) = encode_baggage(&baggage) {
            prop_assert!(header.len() <= 8192);
            prop_assert_eq!(decode_baggage([header.as_bytes()]).len(), baggage.len());
        }
    }

    #[test]
    fn inject_extract_round_trip(
        trace in trace_id(), span in span_id(), flags in 0u8..=3, members in tracestate_members(),
        baggage in prop::collection::btree_map(token(), any::<String>(), 0..4),
    ) {
        let state = TraceState::from_members(members).unwrap();
        let sc = SpanContext::new(TraceId::from(trace), SpanId::from(span), TraceFlags::new(flags), false, state.to_otel());
        let cx = Context::new()
            .with_remote_span_context(sc)
            .with_baggage(baggage.iter().map(|(k, v)| opentelemetry::KeyValue::new(k.clone(), v.clone())));
        let mut headers = HeaderMap::new();
        inject(&cx, &mut headers);
        let back = extract(&headers);
        let back_span = back.span();
        let back_sc = back_span.span_context();
        prop_assert_eq!(back_sc.trace_id(), TraceId::from(trace));
        prop_assert_eq!(back_sc.span_id(), SpanId::from(span));
        prop_assert_eq!(back_sc.trace_flags(), TraceFlags::new(flags));
        prop_assert_eq!(back_sc.trace_state(), &state.to_otel());
        // Extracted and injected again: the exact same headers.
        let mut again = HeaderMap::new();
        inject(&back, &mut again);
        prop_assert_eq!(again, headers);
        for (k, v) in &baggage {
            prop_assert_eq!(back.baggage().get(k.as_str()).map(|v| v.as_str()), Some(v.as_str()));
        }
    }
}
