//! Span links from carriers: one span that serves many traces (a batch, a fan-in) links to each
//! of them instead of picking one as its parent. The public items are re-exported from
//! [`propagation`](super), where their documentation is.

use std::collections::HashSet;

use http::{HeaderMap, HeaderValue};
use opentelemetry::propagation::Extractor;
use opentelemetry::trace::{Link, SpanBuilder, TraceContextExt, TraceId};
use opentelemetry::{Array, Context, KeyValue, StringValue, Value};

use super::{TRACEPARENT, TRACESTATE, extract_values};
// The names live with the others in `semconv`; re-exported from `propagation` next to the
// collector that records them.
pub use crate::semconv::llmtrace::{LINK_INDEX, LINKS_DROPPED, LINKS_INVALID, LINKS_TRACE_IDS};

/// How many links a [`LinkCollector`] keeps unless told otherwise: the OpenTelemetry SDK's
/// default span limit for links.
pub const DEFAULT_MAX_LINKS: usize = 128;

/// The link to the remote context in `traceparent` and `tracestate` of `headers`, or `None`
/// when `traceparent` is missing, invalid or repeated.
///
/// Both headers are read by the same parser and rules as [`extract`](super::extract)
/// (`baggage` is not read). The link's span context holds the `tracestate` as OpenTelemetry's
/// `TraceState`, which refuses some keys the current W3C draft allows: those members are left
/// out of the link. An invalid `tracestate` is dropped whole and the link still made.
///
/// ```
/// use llmtrace::propagation::link_from_headers;
///
/// let mut headers = http::HeaderMap::new();
/// headers.insert("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap());
/// headers.insert("tracestate", "congo=t61rcWkgMzE".parse().unwrap());
/// let link = link_from_headers(&headers).unwrap();
/// assert_eq!(link.span_context.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
/// assert_eq!(link.span_context.trace_state().header(), "congo=t61rcWkgMzE");
/// assert!(link.span_context.is_remote());
///
/// headers.insert("traceparent", "00-00000000000000000000000000000000-00f067aa0ba902b7-01".parse().unwrap());
/// assert!(link_from_headers(&headers).is_none());
/// ```
pub fn link_from_headers(headers: &HeaderMap) -> Option<Link> {
    let cx = extract_values(
        &Context::new(),
        headers.get_all(TRACEPARENT).iter().map(HeaderValue::to_str),
        headers.get_all(TRACESTATE).iter().map(HeaderValue::to_str),
        std::iter::empty(),
    );
    link_from_context(&cx)
}

/// The link to the remote context that `carrier` holds under `traceparent` and `tracestate`
/// (message attributes, queue metadata, a `HashMap`), or `None` when it holds none or an
/// invalid one. All values of a key are seen only when the carrier implements
/// [`Extractor::get_all`].
///
/// ```
/// use std::collections::HashMap;
/// use llmtrace::propagation::link_from_carrier;
///
/// let attributes = HashMap::from([(
///     "traceparent".to_owned(),
///     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
/// )]);
/// let link = link_from_carrier(&attributes).unwrap();
/// assert!(link.span_context.is_sampled());
/// assert!(link_from_carrier(&HashMap::<String, String>::new()).is_none());
/// ```
pub fn link_from_carrier(carrier: &dyn Extractor) -> Option<Link> {
    let all = |name| carrier.get_all(name).unwrap_or_default();
    let (traceparent, tracestate) = (all("traceparent"), all("tracestate"));
    let cx = extract_values::<std::convert::Infallible>(
        &Context::new(),
        traceparent.into_iter().map(Ok),
        tracestate.into_iter().map(Ok),
        std::iter::empty(),
    );
    link_from_context(&cx)
}

/// The link to the span context of `cx`'s span, or `None` when it is not valid (an empty
/// context, a context [`extract`](super::extract) found nothing in).
pub fn link_from_context(cx: &Context) -> Option<Link> {
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| Link::with_context(sc.clone()))
}

// === impl LinkCollector ===

/// Gathers the links of one batch span from the carriers of its messages, keeping at most a
/// maximum and counting the rest.
///
/// Use links when one span serves many traces (a batch job, a fan-in): the span starts a trace
/// of its own and links to each request's context instead of picking one as its parent. Each
/// link made from a carrier ([`add_headers`](Self::add_headers),
/// [`add_carrier`](Self::add_carrier)) gets [`LINK_INDEX`], the carrier's position in the
/// batch, and carries the carrier's `tracestate` (see [`link_from_headers`]).
/// [`apply`](Self::apply) also sets [`LINKS_TRACE_IDS`] on the span: the distinct trace ids
/// of the links, in order (see [Backends that drop links](#backends-that-drop-links)).
///
/// ```
/// use http::HeaderMap;
/// use llmtrace::propagation::LinkCollector;
/// use opentelemetry::Context;
/// use opentelemetry::trace::{SpanKind, Tracer, TracerProvider};
///
/// // Two queued requests, each from its own trace.
/// let mut queue = Vec::new();
/// for trace_id in ["4bf92f3577b34da6a3ce929d0e0e4736", "0af7651916cd43dd8448eb211c80319c"] {
///     let mut headers = HeaderMap::new();
///     let tp = format!("00-{trace_id}-00f067aa0ba902b7-01");
///     headers.insert("traceparent", tp.parse().unwrap());
///     queue.push(headers);
/// }
///
/// let mut links = LinkCollector::new();
/// for headers in &queue {
///     links.add_headers(headers);
/// }
/// assert_eq!(links.len(), 2);
///
/// // The batch span starts a trace of its own (an empty parent context) and links to both.
/// let tracer = opentelemetry::global::tracer_provider().tracer("worker");
/// let builder = tracer.span_builder("process requests").with_kind(SpanKind::Consumer);
/// let _span = tracer.build_with_context(links.apply(builder), &Context::new());
/// ```
///
/// # Limits
///
/// A span's links are set when it starts (samplers see them), and the OpenTelemetry SDK keeps
/// at most 128 per span by default (`OTEL_SPAN_LINK_COUNT_LIMIT`), dropping the rest with only
/// a count in OTLP's `dropped_links_count`. A collector keeps at most its own maximum
/// ([`DEFAULT_MAX_LINKS`], also 128, unless set with [`with_max`](Self::with_max)) and does
/// not parse carriers beyond it. [`apply`](Self::apply) records how many it dropped in
/// [`LINKS_DROPPED`] and how many carriers held no valid context in [`LINKS_INVALID`], so a
/// backend that ignores the OTLP count still shows that the batch served more traces than its
/// links name. A batch that must reach every request trace past the limit splits into spans of
/// at most the limit each, or records its own trace id on each request's result.
///
/// # Backends that drop links
///
/// Not every backend keeps what OTLP sends as span links. Arize Phoenix (checked with 20.26)
/// reads no links on OTLP ingest, stores none and shows none in its UI, GraphQL or REST API;
/// several other LLM observability backends do the same. There a batch span would look
/// unrelated to the requests it served. So [`apply`](Self::apply) also records the links'
/// distinct trace ids, in link order, as the string-array span attribute [`LINKS_TRACE_IDS`]
/// (`["4bf92f35…", …]`): an ordinary attribute such backends keep and show (and most can
/// filter spans on), so a request's trace id finds its batch. It holds at most as many ids as the collector's
/// maximum (128 × 32 characters by default), and the links stay the relation for backends
/// that read them.
#[derive(Clone, Debug)]
pub struct LinkCollector {
    links: Vec<Link>,
    max: usize,
    offered: usize,
    dropped: usize,
    invalid: usize,
}

impl Default for LinkCollector {
    fn default() -> Self {
        Self::new()
    }
}

impl LinkCollector {
    /// Keeps at most [`DEFAULT_MAX_LINKS`] links.
    pub fn new() -> Self {
        Self::with_max(DEFAULT_MAX_LINKS)
    }

    /// Keeps at most `max` links. Set it no higher than the SDK's link limit, which otherwise
    /// drops the surplus with no attribute saying so.
    pub fn with_max(max: usize) -> Self {
        LinkCollector {
            links: Vec::new(),
            max,
            offered: 0,
            dropped: 0,
            invalid: 0,
        }
    }

    /// Adds the link `headers` carry; returns whether one was kept. A carrier past the maximum
    /// is counted as dropped without being parsed.
    pub fn add_headers(&mut self, headers: &HeaderMap) -> bool {
        self.add_with(|| link_from_headers(headers))
    }

    /// Adds the link `carrier` holds; returns whether one was kept. See [`add_headers`](Self::add_headers).
    pub fn add_carrier(&mut self, carrier: &dyn Extractor) -> bool {
        self.add_with(|| link_from_carrier(carrier))
    }

    /// Adds a link made elsewhere, as it is (no [`LINK_INDEX`]); returns whether it was kept.
    /// It counts as one carrier offered: an invalid link as invalid, one past the maximum as
    /// dropped.
    pub fn push(&mut self, link: Link) -> bool {
        self.offered += 1;
        if !link.span_context.is_valid() {
            self.invalid += 1;
            false
        } else if self.links.len() >= self.max {
            self.dropped += 1;
            false
        } else {
            self.links.push(link);
            true
        }
    }

    fn add_with(&mut self, link: impl FnOnce() -> Option<Link>) -> bool {
        let index = self.offered;
        self.offered += 1;
        if self.links.len() >= self.max {
            // Not parsed: a carrier past the maximum counts as dropped, valid or not.
            self.dropped += 1;
            return false;
        }
        let Some(mut link) = link() else {
            self.invalid += 1;
            return false;
        };
        let index = i64::try_from(index).unwrap_or(i64::MAX);
        link.attributes.push(KeyValue::new(LINK_INDEX, index));
        self.links.push(link);
        true
    }

    /// How many links are kept.
    pub fn len(&self) -> usize {
        self.links.len()
    }

    /// Whether no link is kept.
    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    /// How many carriers were offered past the maximum.
    pub fn dropped(&self) -> usize {
        self.dropped
    }

    /// How many carriers held no valid context.
    pub fn invalid(&self) -> usize {
        self.invalid
    }

    /// The links kept, in the order their carriers were offered.
    pub fn links(&self) -> &[Link] {
        &self.links
    }

    /// The distinct trace ids of the links kept, in the order of their first link: at most
    /// the collector's maximum.
    pub fn trace_ids(&self) -> Vec<TraceId> {
        let mut seen = HashSet::with_capacity(self.links.len());
        self.links
            .iter()
            .map(|link| link.span_context.trace_id())
            .filter(|id| seen.insert(*id))
            .collect()
    }

    /// [`LINKS_TRACE_IDS`] when any link is kept, then [`LINKS_DROPPED`] and
    /// [`LINKS_INVALID`], each when non-zero.
    pub fn attributes(&self) -> Vec<KeyValue> {
        let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        let mut attributes = Vec::new();
        if !self.links.is_empty() {
            let ids: Vec<StringValue> = self
                .trace_ids()
                .iter()
                .map(|id| id.to_string().into())
                .collect();
            attributes.push(KeyValue::new(
                LINKS_TRACE_IDS,
                Value::Array(Array::String(ids)),
            ));
        }
        if self.dropped > 0 {
            attributes.push(KeyValue::new(LINKS_DROPPED, count(self.dropped)));
        }
        if self.invalid > 0 {
            attributes.push(KeyValue::new(LINKS_INVALID, count(self.invalid)));
        }
        attributes
    }

    /// The links kept.
    pub fn into_links(self) -> Vec<Link> {
        self.links
    }

    /// Puts the links on `builder` (after any it has) and adds [`attributes`](Self::attributes)
    /// to its attributes. Start the span from the result: links added after the start are
    /// not seen by samplers.
    pub fn apply(self, mut builder: SpanBuilder) -> SpanBuilder {
        let attributes = self.attributes();
        if !attributes.is_empty() {
            builder
                .attributes
                .get_or_insert_with(Vec::new)
                .extend(attributes);
        }
        if !self.links.is_empty() {
            builder
                .links
                .get_or_insert_with(Vec::new)
                .extend(self.links);
        }
        builder
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use opentelemetry::trace::{SpanContext, SpanId, TraceId, TraceState};

    use super::*;

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    fn headers(traceparent: &str, tracestate: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(TRACEPARENT, traceparent.parse().unwrap());
        if let Some(ts) = tracestate {
            headers.insert(TRACESTATE, ts.parse().unwrap());
        }
        headers
    }

    fn valid(i: u64) -> HeaderMap {
        headers(&format!("00-{TRACE}-{:016x}-01", i + 1), None)
    }

    /// A valid carrier in trace `trace` (non-zero).
    fn in_trace(trace: u128, span: u64) -> HeaderMap {
        headers(&format!("00-{trace:032x}-{span:016x}-01"), None)
    }

    /// `LINKS_TRACE_IDS` holding `ids`.
    fn trace_ids_attribute(ids: &[&str]) -> KeyValue {
        let ids = ids.iter().map(|id| StringValue::from(id.to_string()));
        KeyValue::new(LINKS_TRACE_IDS, Value::Array(Array::String(ids.collect())))
    }

    fn index(link: &Link) -> Option<i64> {
        link.attributes
            .iter()
            .find(|kv| kv.key.as_str() == LINK_INDEX)
            .and_then(|kv| match kv.value {
                opentelemetry::Value::I64(i) => Some(i),
                _ => None,
            })
    }

    #[test]
    fn valid_traceparent_makes_a_remote_link_with_its_tracestate() {
        let h = headers(
            &format!("00-{TRACE}-00f067aa0ba902b7-01"),
            Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"),
        );
        let link = link_from_headers(&h).unwrap();
        let sc = &link.span_context;
        assert_eq!(sc.trace_id().to_string(), TRACE);
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert!(sc.is_remote() && sc.is_sampled());
        assert_eq!(
            sc.trace_state().header(),
            "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
        );
        assert!(link.attributes.is_empty());
    }

    #[test]
    fn invalid_traceparent_makes_no_link() {
        for tp in [
            "",
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(link_from_headers(&headers(tp, None)).is_none(), "{tp:?}");
        }
        assert!(link_from_headers(&HeaderMap::new()).is_none());
        // Only tracestate: nothing to link to.
        let mut h = HeaderMap::new();
        h.insert(TRACESTATE, "congo=t61rcWkgMzE".parse().unwrap());
        assert!(link_from_headers(&h).is_none());
    }

    #[test]
    fn repeated_traceparent_makes_no_link() {
        let mut h = valid(0);
        h.append(TRACEPARENT, valid(1)[TRACEPARENT].clone());
        assert!(link_from_headers(&h).is_none());
    }

    #[test]
    fn invalid_tracestate_is_dropped_and_the_link_kept() {
        let h = headers(&format!("00-{TRACE}-00f067aa0ba902b7-00"), Some("@bad=1"));
        let link = link_from_headers(&h).unwrap();
        assert_eq!(link.span_context.trace_state().header(), "");
        assert!(!link.span_context.is_sampled());
    }

    #[test]
    fn carrier_reads_traceparent_and_tracestate() {
        let carrier = HashMap::from([
            (
                "traceparent".to_owned(),
                format!("00-{TRACE}-00f067aa0ba902b7-01"),
            ),
            ("tracestate".to_owned(), "vendor=opaque".to_owned()),
        ]);
        let link = link_from_carrier(&carrier).unwrap();
        assert_eq!(link.span_context.trace_state().header(), "vendor=opaque");
        let bad = HashMap::from([("traceparent".to_owned(), "00-nope".to_owned())]);
        assert!(link_from_carrier(&bad).is_none());
    }

    #[test]
    fn collector_keeps_the_maximum_and_counts_the_rest() {
        let mut links = LinkCollector::with_max(3);
        for i in 0..5 {
            links.add_headers(&valid(i));
        }
        links.add_headers(&headers("bad", None)); // past the maximum: dropped, not parsed
        assert_eq!(links.len(), 3);
        assert_eq!(links.dropped(), 3);
        assert_eq!(links.invalid(), 0);
        assert_eq!(
            links.attributes(),
            vec![
                trace_ids_attribute(&[TRACE]),
                KeyValue::new(LINKS_DROPPED, 3_i64)
            ]
        );
        let indices: Vec<_> = links.links().iter().map(index).collect();
        assert_eq!(indices, [Some(0), Some(1), Some(2)]);
    }

    #[test]
    fn collector_counts_invalid_carriers_and_indexes_by_position() {
        let mut links = LinkCollector::new();
        assert!(links.add_headers(&valid(0)));
        assert!(!links.add_headers(&headers("00-bad", None)));
        assert!(links.add_carrier(&crate::propagation::HeaderExtractor(&valid(2))));
        assert_eq!(links.len(), 2);
        assert_eq!(links.invalid(), 1);
        assert_eq!(links.dropped(), 0);
        assert_eq!(
            links.attributes(),
            vec![
                trace_ids_attribute(&[TRACE]),
                KeyValue::new(LINKS_INVALID, 1_i64)
            ]
        );
        assert_eq!(index(&links.links()[1]), Some(2));
    }

    #[test]
    fn push_counts_like_a_carrier() {
        let mut links = LinkCollector::with_max(1);
        assert!(!links.push(Link::with_context(SpanContext::empty_context())));
        let sc = link_from_headers(&valid(0)).unwrap().span_context;
        assert!(links.push(Link::with_context(sc.clone())));
        assert!(!links.push(Link::with_context(sc)));
        assert_eq!((links.len(), links.invalid(), links.dropped()), (1, 1, 1));
    }

    #[test]
    fn apply_appends_links_and_attributes() {
        let mut links = LinkCollector::with_max(1);
        links.add_headers(&valid(0));
        links.add_headers(&valid(1));
        let existing = SpanContext::new(
            TraceId::from(1),
            SpanId::from(1),
            Default::default(),
            false,
            TraceState::default(),
        );
        let builder = SpanBuilder::from_name("batch")
            .with_attributes([KeyValue::new("a", 1_i64)])
            .with_links(vec![Link::with_context(existing)]);
        let builder = links.apply(builder);
        assert_eq!(builder.links.as_ref().map(Vec::len), Some(2));
        assert_eq!(
            builder.attributes.unwrap(),
            vec![
                KeyValue::new("a", 1_i64),
                trace_ids_attribute(&[TRACE]),
                KeyValue::new(LINKS_DROPPED, 1_i64)
            ]
        );
    }

    #[test]
    fn trace_ids_are_distinct_and_in_link_order() {
        let mut links = LinkCollector::new();
        for (trace, span) in [(3, 1), (1, 2), (3, 3), (2, 4), (1, 5)] {
            assert!(links.add_headers(&in_trace(trace, span)));
        }
        // A link made elsewhere counts too.
        let pushed = link_from_headers(&in_trace(9, 6)).unwrap();
        assert!(links.push(pushed));
        let hex = |t: u128| format!("{t:032x}");
        let expected = [hex(3), hex(1), hex(2), hex(9)];
        let ids: Vec<String> = links.trace_ids().iter().map(|t| t.to_string()).collect();
        assert_eq!(ids, expected);
        let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
        assert_eq!(links.attributes(), vec![trace_ids_attribute(&expected)]);
    }

    #[test]
    fn trace_ids_are_bounded_by_the_maximum() {
        let mut links = LinkCollector::with_max(4);
        for i in 0..10 {
            links.add_headers(&in_trace(i + 1, i as u64 + 1));
        }
        links.add_headers(&headers("00-bad", None)); // past the maximum: dropped
        let ids: Vec<String> = links.trace_ids().iter().map(|t| t.to_string()).collect();
        assert_eq!(ids.len(), 4);
        assert_eq!(ids[3], format!("{:032x}", 4));
        let attributes = links.attributes();
        assert_eq!(attributes[0].key.as_str(), LINKS_TRACE_IDS);
        match &attributes[0].value {
            Value::Array(Array::String(values)) => assert_eq!(values.len(), 4),
            other => panic!("{LINKS_TRACE_IDS} is not a string array: {other:?}"),
        }
        assert_eq!(attributes[1], KeyValue::new(LINKS_DROPPED, 7_i64));
    }

    #[test]
    fn only_invalid_carriers_give_no_trace_ids() {
        let mut links = LinkCollector::new();
        links.add_headers(&headers("garbage", None));
        assert!(links.trace_ids().is_empty());
        assert_eq!(
            links.attributes(),
            vec![KeyValue::new(LINKS_INVALID, 1_i64)]
        );
    }

    #[test]
    fn empty_collector_adds_no_attributes() {
        let builder = LinkCollector::new().apply(SpanBuilder::from_name("batch"));
        assert!(builder.attributes.is_none());
        assert!(builder.links.is_none());
    }
}
