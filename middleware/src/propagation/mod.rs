//! W3C Trace Context (Level 2) and W3C Baggage over [`http::HeaderMap`], exact to the
//! specifications.
//!
//! [`extract`] reads `traceparent`, `tracestate` and `baggage` from incoming request headers into
//! an OpenTelemetry [`Context`]; [`inject`] writes the current span's context and the baggage into
//! outgoing request headers. [`W3cPropagator`] does the same through OpenTelemetry's
//! [`TextMapPropagator`](opentelemetry::propagation::TextMapPropagator) interface, for code that
//! uses the global propagator.
//!
//! ```
//! use http::HeaderMap;
//! use llmtrace::propagation::{extract, inject};
//! use opentelemetry::trace::TraceContextExt;
//!
//! let mut incoming = HeaderMap::new();
//! incoming.insert("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap());
//! incoming.insert("tracestate", "congo=t61rcWkgMzE".parse().unwrap());
//!
//! let cx = extract(&incoming);
//! assert!(cx.span().span_context().is_remote());
//!
//! // (a server would start its span under `cx` here)
//! let mut outgoing = HeaderMap::new();
//! inject(&cx, &mut outgoing);
//! assert_eq!(outgoing["traceparent"], "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
//! assert_eq!(outgoing["tracestate"], "congo=t61rcWkgMzE");
//! ```
//!
//! # What extraction does with each header
//!
//! - **`traceparent`**: exactly one header value, parsed by [`TraceParent::parse`] (lowercase hex,
//!   exact lengths, no all-zero ids, version `ff` refused, higher versions parsed as far as
//!   version `00` goes). Two values, or two combined with a comma, are refused. A refused
//!   `traceparent` sets no span context — the caller starts a new trace — and the `tracestate`
//!   is then ignored. Otherwise the context gets a *remote* span context whose flags keep
//!   `sampled` (`0x01`) and `random` (`0x02`) and drop every other bit.
//! - **`tracestate`**: all header values, joined in order, parsed by
//!   [`TraceState::parse_values`] with the rules of the current editor's draft (see
//!   [`TraceState`]). An invalid list (a bad member, more than 32 members) is dropped whole;
//!   `traceparent` is still used. A repeated key is not an error: keeping keys unique is the
//!   sender's job, and the list is passed on as received.
//! - **`baggage`**: all header values, decoded by [`decode_baggage`]; a malformed member is
//!   dropped alone. Baggage does not depend on `traceparent` being valid. When at least one
//!   member is decoded, the baggage replaces the parent context's.
//!
//! # Carrying `tracestate` unchanged
//!
//! A received `tracestate` must reach the next hop unmodified and in order. OpenTelemetry 0.33's
//! `TraceState`, which spans carry, keeps the order (and repeated keys) but validates keys by an
//! older grammar than the current draft: it refuses valid keys with two `@`, with 14 or more
//! characters after the `@`, or with `_`, `-`, `*` or `/` right after it, and one such member
//! makes `TraceState::from_key_value` refuse the whole list. (It is also more lenient elsewhere
//! — empty values, values ending with a space — which matters only for what we *send*.)
//!
//! So [`extract`] stores two things: the span context's OpenTelemetry `TraceState`, holding
//! every member OpenTelemetry accepts ([`TraceState::to_otel`]), and, as a private context
//! value, the validated [`TraceState`] exactly as received together with the trace id it belongs
//! to and the OpenTelemetry `TraceState` derived from it. [`inject`] sends the received text when
//! the span being propagated is in the same trace *and* its OpenTelemetry `TraceState` is still
//! the derived one (the SDK copies the parent's into every child; a sampler that changes it
//! makes the span's own state win). In every other case it sends the span's OpenTelemetry
//! `TraceState`, filtered to the members the specification allows ([`TraceState::from_otel`]).
//!
//! # Trace flags and the Level 2 `random` flag
//!
//! [`inject`] always writes version `00` and only the flags it understands. The `random` flag
//! (`0x02`) is set when any of these holds:
//! - the span context's flags have it (the OpenTelemetry SDK 0.33 copies the parent's flags into
//!   sampled and record-only children, so a received `random` flag survives there);
//! - the span is in the trace received by [`extract`] and the received `traceparent` had it
//!   (this also covers children the SDK *drops*, which it creates with flags `00`, losing
//!   `random`);
//! - the context holds [`RandomTraceId`] naming the span's trace: the marker a layer inserts
//!   when it starts a new trace with a randomly generated trace id.
//!
//! # `HeaderMap` functions versus the `TextMapPropagator`
//!
//! [`extract`] sees every value of a header, so it refuses duplicate `traceparent` headers and
//! joins several `tracestate` and `baggage` headers. [`W3cPropagator`] reads headers through the
//! generic [`Extractor`](opentelemetry::propagation::Extractor), which yields all values only if
//! the extractor implements `get_all` ([`HeaderExtractor`] does; a `HashMap` holds one value per
//! key). Likewise [`inject`] removes stale `traceparent`, `tracestate` and `baggage` headers,
//! while an [`Injector`](opentelemetry::propagation::Injector) can only set values.

mod baggage;
mod links;
mod propagator;
mod traceparent;
mod tracestate;

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::Context;
use opentelemetry::baggage::BaggageExt;
use opentelemetry::trace::{SpanContext, TraceContextExt, TraceFlags, TraceId};

pub use self::baggage::{MAX_BAGGAGE_BYTES, MAX_BAGGAGE_MEMBERS, decode_baggage, encode_baggage};
pub use self::links::{
    DEFAULT_MAX_LINKS, LINK_INDEX, LINKS_DROPPED, LINKS_INVALID, LINKS_TRACE_IDS, LinkCollector,
    link_from_carrier, link_from_context, link_from_headers,
};
pub use self::propagator::{HeaderExtractor, HeaderInjector, W3cPropagator};
pub use self::traceparent::{
    FLAG_RANDOM, FLAG_SAMPLED, Hex, KNOWN_FLAGS, ParseTraceParentError, TraceParent, hex_span_id,
    hex_trace_id,
};
pub use self::tracestate::{ParseTraceStateError, TraceState};

/// The `traceparent` header name.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// The `tracestate` header name.
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
/// The `baggage` header name.
pub const BAGGAGE: HeaderName = HeaderName::from_static("baggage");

/// Marks the trace with this id as one whose trace id was generated randomly, so that
/// [`inject`] sets the Level 2 `random` flag (`0x02`) on the `traceparent` of its spans.
///
/// The OpenTelemetry SDK's default id generator draws trace ids at random but never sets the
/// flag itself. A server layer that starts a brand-new trace inserts this marker, naming the
/// new trace, into the context it runs the request in. It only applies to spans of that trace,
/// so it can never leak into a trace received by [`extract`] (whose own flag applies).
///
/// ```
/// use llmtrace::propagation::{RandomTraceId, inject};
/// use opentelemetry::Context;
/// use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
///
/// let trace_id = TraceId::from(0x4bf92f3577b34da6a3ce929d0e0e4736);
/// let sc = SpanContext::new(
///     trace_id,
///     SpanId::from(0x00f067aa0ba902b7),
///     TraceFlags::SAMPLED,
///     false,
///     TraceState::default(),
/// );
/// let cx = Context::new().with_remote_span_context(sc).with_value(RandomTraceId(trace_id));
/// let mut headers = http::HeaderMap::new();
/// inject(&cx, &mut headers);
/// assert_eq!(headers["traceparent"], "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RandomTraceId(pub TraceId);

/// What [`extract`] received, kept in the context so [`inject`] can send it on unchanged.
#[derive(Debug)]
struct ReceivedTraceContext {
    trace_id: TraceId,
    random: bool,
    /// The validated header as received (empty when absent or invalid).
    trace_state: TraceState,
    /// What `trace_state` became as OpenTelemetry's `TraceState` on the remote span context.
    otel_trace_state: opentelemetry::trace::TraceState,
}

/// Extracts the remote context carried by `traceparent`, `tracestate` and `baggage`, on top of
/// an empty context. See the [module documentation](self) for the rules.
pub fn extract(headers: &HeaderMap) -> Context {
    extract_with_context(&Context::new(), headers)
}

/// Like [`extract`], on top of `parent`: the remote span context and the baggage, when present
/// and valid, replace the parent's; everything else in `parent` is kept.
pub fn extract_with_context(parent: &Context, headers: &HeaderMap) -> Context {
    // Most requests carry none of the three: one walk over a short head's names says so for
    // less than the three hashed lookups (~0.4k instructions a request).
    // Without them, the parent is the answer (what `extract_values` returns for no values).
    if headers.keys_len() <= SHORT_HEAD && !headers.keys().any(is_context_header) {
        return parent.clone();
    }
    extract_values(
        parent,
        headers.get_all(TRACEPARENT).iter().map(HeaderValue::to_str),
        headers.get_all(TRACESTATE).iter().map(HeaderValue::to_str),
        headers.get_all(BAGGAGE).iter().map(HeaderValue::as_bytes),
    )
}

/// Up to this many header names, [`extract_with_context`] looks for the trace context's
/// headers by walking the names rather than by hashed lookups.
const SHORT_HEAD: usize = 16;

/// `traceparent`, `tracestate` or `baggage`.
fn is_context_header(name: &HeaderName) -> bool {
    *name == TRACEPARENT || *name == TRACESTATE || *name == BAGGAGE
}

/// The caller's `baggage` alone, on an empty context: what a server keeps of a request whose
/// trace context it does not continue (see [`Incoming`](crate::driver::Incoming)).
pub(crate) fn extract_baggage(headers: &HeaderMap) -> Context {
    extract_values::<std::convert::Infallible>(
        &Context::new(),
        std::iter::empty(),
        std::iter::empty(),
        headers.get_all(BAGGAGE).iter().map(HeaderValue::as_bytes),
    )
}

/// Injects the context's span as `traceparent` and `tracestate` (when non-empty), and its
/// baggage as `baggage` (when non-empty). Headers of those names that `cx` has nothing for are
/// removed, so stale values from a reused request never leak. See the
/// [module documentation](self) for the rules.
pub fn inject(cx: &Context, headers: &mut HeaderMap) {
    inject_each(cx, |name, value| match value {
        Some(value) => {
            headers.insert(name, value);
        }
        None => {
            headers.remove(name);
        }
    });
}

/// [`inject`] for a header container that is not an [`http::HeaderMap`] (a proxy's own
/// request head): `set(name, Some(value))` for each of `traceparent`, `tracestate` and
/// `baggage` that goes out, `set(name, None)` for each that must not (remove the caller's).
///
/// ```
/// use llmtrace::propagation::{TRACEPARENT, inject_each};
/// use opentelemetry::Context;
///
/// let mut sent = Vec::new();
/// inject_each(&Context::new(), |name, value| sent.push((name, value)));
/// // No span in the context: nothing goes out, and the caller's headers are removed.
/// assert_eq!(sent.len(), 3);
/// assert!(sent.iter().all(|(_, value)| value.is_none()));
/// assert_eq!(sent[0].0, TRACEPARENT);
/// ```
pub fn inject_each(cx: &Context, mut set: impl FnMut(HeaderName, Option<HeaderValue>)) {
    let outgoing = Outgoing::from_context(cx);
    let value = |v: Option<String>| v.and_then(|v| HeaderValue::try_from(v).ok());
    set(
        TRACEPARENT,
        outgoing
            .traceparent
            .and_then(|tp| HeaderValue::from_str(tp.encode().as_str()).ok()),
    );
    set(TRACESTATE, value(outgoing.tracestate));
    set(BAGGAGE, value(outgoing.baggage));
}

/// The shared extraction, over header values from a `HeaderMap` or an `Extractor`.
fn extract_values<'a, E>(
    parent: &Context,
    traceparent: impl Iterator<Item = Result<&'a str, E>>,
    tracestate: impl Iterator<Item = Result<&'a str, E>>,
    baggage: impl Iterator<Item = &'a [u8]>,
) -> Context {
    let mut cx = None;
    if let Ok(tp) = single_traceparent(traceparent) {
        let trace_state = tracestate
            .collect::<Result<Vec<&str>, E>>()
            .ok()
            .and_then(|values| TraceState::parse_values(values).ok())
            .unwrap_or_default();
        let otel_trace_state = trace_state.to_otel();
        let span_context = SpanContext::new(
            tp.trace_id,
            tp.parent_id,
            tp.trace_flags(),
            true,
            otel_trace_state.clone(),
        );
        let remote = parent.with_remote_span_context(span_context);
        // The received context is only needed where the span context cannot carry it: a
        // tracestate member OpenTelemetry refused, or the random flag, which the SDK drops
        // from the children it does not sample. Skipping it otherwise saves two allocations
        // per request.
        let otel_members = (&otel_trace_state).into_iter().count();
        cx = Some(if tp.is_random() || otel_members != trace_state.len() {
            remote.with_value(ReceivedTraceContext {
                trace_id: tp.trace_id,
                random: tp.is_random(),
                trace_state,
                otel_trace_state,
            })
        } else {
            remote
        });
    }
    let baggage = decode_baggage(baggage);
    match (cx, baggage.is_empty()) {
        (Some(cx), true) => cx,
        (Some(cx), false) => cx.with_baggage(baggage),
        (None, true) => parent.clone(),
        (None, false) => parent.with_baggage(baggage),
    }
}

fn single_traceparent<'a, E>(
    mut values: impl Iterator<Item = Result<&'a str, E>>,
) -> Result<TraceParent, ParseTraceParentError> {
    let first = values.next().ok_or(ParseTraceParentError::Length(0))?;
    if values.next().is_some() {
        return Err(ParseTraceParentError::Multiple);
    }
    TraceParent::parse(first.map_err(|_| ParseTraceParentError::NotAscii)?)
}

/// The header values [`inject`] and [`W3cPropagator`] send for a context.
struct Outgoing {
    traceparent: Option<TraceParent>,
    tracestate: Option<String>,
    baggage: Option<String>,
}

impl Outgoing {
    fn from_context(cx: &Context) -> Self {
        let baggage = encode_baggage(cx.baggage());
        let span = cx.span();
        let sc = span.span_context();
        if !sc.is_valid() {
            return Outgoing {
                traceparent: None,
                tracestate: None,
                baggage,
            };
        }
        let received = cx
            .get::<ReceivedTraceContext>()
            .filter(|r| r.trace_id == sc.trace_id());
        let random = sc.trace_flags() & TraceFlags::new(FLAG_RANDOM) != TraceFlags::default()
            || received.is_some_and(|r| r.random)
            || cx
                .get::<RandomTraceId>()
                .is_some_and(|m| m.0 == sc.trace_id());
        let flags =
            (sc.trace_flags().to_u8() & FLAG_SAMPLED) | if random { FLAG_RANDOM } else { 0 };
        let traceparent = TraceParent::new(sc.trace_id(), sc.span_id(), flags);
        let tracestate = match received {
            Some(received) if *sc.trace_state() == received.otel_trace_state => {
                received.trace_state.to_string()
            }
            _ => TraceState::from_otel(sc.trace_state()).to_string(),
        };
        Outgoing {
            traceparent: Some(traceparent),
            tracestate: (!tracestate.is_empty()).then_some(tracestate),
            baggage,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::baggage::BaggageExt;

    /// What `extract_with_context` returned before its shortcut: the three hashed lookups.
    fn by_lookup(parent: &Context, headers: &HeaderMap) -> Context {
        extract_values(
            parent,
            headers.get_all(TRACEPARENT).iter().map(HeaderValue::to_str),
            headers.get_all(TRACESTATE).iter().map(HeaderValue::to_str),
            headers.get_all(BAGGAGE).iter().map(HeaderValue::as_bytes),
        )
    }

    fn head(others: usize, context: &[(&HeaderName, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for i in 0..others {
            let name = HeaderName::from_bytes(format!("x-other-{i}").as_bytes()).unwrap();
            headers.insert(name, HeaderValue::from_static("v"));
        }
        headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("a/b"));
        for (name, value) in context {
            headers.append(*name, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    /// The walk over a short head's names finds the trace context's headers wherever they
    /// are, and a head without them (short or long) keeps the parent: the same contexts as
    /// the lookups give.
    #[test]
    fn the_short_head_walk_extracts_what_the_lookups_extract() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parent_sc = SpanContext::new(
            opentelemetry::trace::TraceId::from(7),
            opentelemetry::trace::SpanId::from(9),
            opentelemetry::trace::TraceFlags::SAMPLED,
            true,
            Default::default(),
        );
        let parents = [
            Context::new(),
            Context::new().with_remote_span_context(parent_sc),
        ];
        let contexts: [&[(&HeaderName, &str)]; 5] = [
            &[],
            &[(&TRACEPARENT, tp)],
            &[(&TRACEPARENT, tp), (&TRACESTATE, "a=1")],
            &[(&BAGGAGE, "k=v")],
            &[(&TRACEPARENT, tp), (&TRACEPARENT, tp)],
        ];
        for parent in &parents {
            for context in contexts {
                for others in [0, 3, SHORT_HEAD, SHORT_HEAD + 5] {
                    let headers = head(others, context);
                    let (got, want) = (
                        extract_with_context(parent, &headers),
                        by_lookup(parent, &headers),
                    );
                    assert_eq!(
                        got.span().span_context(),
                        want.span().span_context(),
                        "{others} others, {context:?}"
                    );
                    let baggage = |cx: &Context| {
                        let mut all: Vec<String> = cx
                            .baggage()
                            .iter()
                            .map(|(k, v)| format!("{k}={}", v.0))
                            .collect();
                        all.sort();
                        all
                    };
                    assert_eq!(baggage(&got), baggage(&want), "{others} others");
                }
            }
        }
    }
}
