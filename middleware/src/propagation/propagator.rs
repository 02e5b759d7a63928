//! [`W3cPropagator`] and the `HeaderMap` adapters for OpenTelemetry's propagation traits.

use std::sync::OnceLock;

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::Context;
use opentelemetry::propagation::text_map_propagator::FieldIter;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};

use super::{Outgoing, extract_values};

/// W3C Trace Context (Level 2) and W3C Baggage as one OpenTelemetry `TextMapPropagator`, with
/// the same rules as [`extract`](super::extract) and [`inject`](super::inject).
///
/// ```
/// use llmtrace::propagation::W3cPropagator;
///
/// opentelemetry::global::set_text_map_propagator(W3cPropagator::default());
/// ```
///
/// Through the generic traits it sees only what the carrier shows: all values of a header when
/// the [`Extractor`] implements `get_all` (as [`HeaderExtractor`] does), a single value
/// otherwise (then duplicate `traceparent` headers cannot be noticed). An [`Injector`] can only
/// set headers, so stale ones are not removed; prefer [`inject`](super::inject) on a `HeaderMap`.
///
/// Its [`fields`](TextMapPropagator::fields) are `traceparent`, `tracestate` and `baggage`.
#[derive(Clone, Copy, Debug, Default)]
pub struct W3cPropagator {
    _private: (),
}

impl W3cPropagator {
    /// Creates the propagator.
    pub fn new() -> Self {
        W3cPropagator::default()
    }
}

fn fields() -> &'static [String; 3] {
    static FIELDS: OnceLock<[String; 3]> = OnceLock::new();
    FIELDS.get_or_init(|| {
        [
            "traceparent".to_owned(),
            "tracestate".to_owned(),
            "baggage".to_owned(),
        ]
    })
}

impl TextMapPropagator for W3cPropagator {
    fn inject_context(&self, cx: &Context, injector: &mut dyn Injector) {
        let outgoing = Outgoing::from_context(cx);
        let headers = [
            ("traceparent", outgoing.traceparent.map(|tp| tp.to_string())),
            ("tracestate", outgoing.tracestate),
            ("baggage", outgoing.baggage),
        ];
        for (name, value) in headers {
            if let Some(value) = value {
                injector.set(name, value);
            }
        }
    }

    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        let all = |name| extractor.get_all(name).unwrap_or_default();
        let (traceparent, tracestate, baggage) =
            (all("traceparent"), all("tracestate"), all("baggage"));
        extract_values::<std::convert::Infallible>(
            cx,
            traceparent.into_iter().map(Ok),
            tracestate.into_iter().map(Ok),
            baggage.iter().map(|v| v.as_bytes()),
        )
    }

    fn fields(&self) -> FieldIter<'_> {
        FieldIter::new(fields())
    }
}

/// Reads an [`http::HeaderMap`] as an OpenTelemetry [`Extractor`], all values included.
///
/// A header value that is not visible ASCII reads as `"\0"`, which no parser accepts, so it is
/// refused rather than silently skipped.
///
/// ```
/// use llmtrace::propagation::{HeaderExtractor, W3cPropagator};
/// use opentelemetry::propagation::TextMapPropagator;
/// use opentelemetry::trace::TraceContextExt;
///
/// let mut headers = http::HeaderMap::new();
/// headers.append("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap());
/// headers.append("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b8-01".parse().unwrap());
/// let cx = W3cPropagator::new().extract(&HeaderExtractor(&headers));
/// assert!(!cx.span().span_context().is_valid()); // two traceparents: a new trace
/// ```
#[derive(Clone, Copy, Debug)]
pub struct HeaderExtractor<'a>(pub &'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.to_str().unwrap_or("\0"))
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }

    fn get_all(&self, key: &str) -> Option<Vec<&str>> {
        let values: Vec<&str> = self
            .0
            .get_all(key)
            .iter()
            .map(|v| v.to_str().unwrap_or("\0"))
            .collect();
        (!values.is_empty()).then_some(values)
    }
}

/// Writes into an [`http::HeaderMap`] as an OpenTelemetry [`Injector`]; each `set` replaces
/// every earlier value of that header. Names or values that HTTP does not allow are skipped.
///
/// ```
/// use llmtrace::propagation::{HeaderInjector, W3cPropagator};
/// use opentelemetry::propagation::TextMapPropagator;
/// use opentelemetry::Context;
///
/// let mut headers = http::HeaderMap::new();
/// W3cPropagator::new().inject_context(&Context::new(), &mut HeaderInjector(&mut headers));
/// assert!(headers.is_empty()); // nothing to propagate
/// ```
#[derive(Debug)]
pub struct HeaderInjector<'a>(pub &'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::try_from(value),
        ) {
            self.0.insert(name, value);
        }
    }

    fn reserve(&mut self, additional: usize) {
        self.0.reserve(additional);
    }
}
