//! [`InboundSpan`]: the SERVER span of an inbound request, for any server.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use http::header::{self, HeaderName};
use opentelemetry::Context;
use opentelemetry::KeyValue;
use opentelemetry::global::BoxedTracer;
use opentelemetry::trace::{Link, Span as _, SpanBuilder, SpanKind, Tracer};

use super::attrs::{self, HeaderCapture, Recent};
use super::business::BusinessAttributes;
use super::span::{self, ExchangeSpan, Side};
use crate::genai::End;
use crate::limits::{MAX_URL_BYTES, MAX_USER_AGENT_BYTES, bounded};
use crate::{propagation, semconv};

/// What a server makes of the trace context (`traceparent`, `tracestate`) a caller sends: the
/// trust boundary of a service at the edge.
///
/// A caller that is continued chooses the trace id and the sampled flag: it can force
/// sampling, or attach the server's spans to somebody else's trace. Behind the edge that is
/// what distributed tracing is for; at the edge, [`Link`](Incoming::Link) keeps the
/// relationship without handing over the trace.
///
/// Only the trace context is concerned. The caller's `baggage` is kept in every mode (head
/// rules and attribute mappings may read it); what goes on to the next hop is the sender's
/// decision (the gateway's `forward_baggage`).
///
/// ```
/// use llmtrace::driver::Incoming;
///
/// let mut headers = http::HeaderMap::new();
/// headers.insert("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap());
/// headers.insert("baggage", "tenant=acme".parse().unwrap());
///
/// let (parent, link) = Incoming::Link.extract(&headers);
/// use opentelemetry::baggage::BaggageExt;
/// use opentelemetry::trace::TraceContextExt;
/// assert!(!parent.span().span_context().is_valid()); // a new trace
/// assert_eq!(parent.baggage().get("tenant").unwrap().as_str(), "acme");
/// assert_eq!(link.unwrap().span_context.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
///
/// assert_eq!("ignore".parse::<Incoming>(), Ok(Incoming::Ignore));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Incoming {
    /// Continue the caller's trace: the SERVER span is a child of the caller's span (the
    /// default, and the behaviour of every service behind the edge).
    #[default]
    Trust,
    /// Start a new trace whose root (the SERVER span) carries a span link to the caller's
    /// context, when it sent a valid one. The caller's sampled flag decides nothing.
    Link,
    /// Start a new trace and keep nothing of the caller's trace context.
    Ignore,
}

impl Incoming {
    /// The names, as written in configuration.
    pub const NAMES: [&'static str; 3] = ["trust", "link", "ignore"];

    /// The parent of a request's SERVER span, and the link it carries, under this mode.
    ///
    /// `Trust` is [`propagation::extract`]; `Link` and `Ignore` keep only the `baggage` of
    /// the caller, and `Link` makes [`propagation::link_from_headers`].
    pub fn extract(self, headers: &http::HeaderMap) -> (Context, Option<Link>) {
        match self {
            Incoming::Trust => (propagation::extract(headers), None),
            Incoming::Link => (
                propagation::extract_baggage(headers),
                propagation::link_from_headers(headers),
            ),
            Incoming::Ignore => (propagation::extract_baggage(headers), None),
        }
    }

    /// The name, as written in configuration.
    pub fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

impl fmt::Display for Incoming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Incoming {
    type Err = String;

    /// `trust`, `link` or `ignore`; the error names the accepted values.
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "trust" => Ok(Incoming::Trust),
            "link" => Ok(Incoming::Link),
            "ignore" => Ok(Incoming::Ignore),
            other => Err(format!(
                "unknown mode {other:?}: expected trust, link or ignore"
            )),
        }
    }
}

/// What an inbound request's SERVER span records, from any server: the tower layer builds it
/// from an `http::Request`, another adapter (the gateway's pingora phases) from its own
/// request head.
#[derive(Debug, Clone, Copy)]
pub struct InboundRequest<'a> {
    /// The method.
    pub method: &'a http::Method,
    /// The request target.
    pub uri: &'a http::Uri,
    /// The HTTP version.
    pub version: http::Version,
    /// The request headers.
    pub headers: &'a http::HeaderMap,
    /// The route template (`/v1/chat/completions`, `/users/{id}`), never the raw path.
    pub route: Option<&'a str>,
    /// The peer's address.
    pub peer: Option<std::net::SocketAddr>,
    /// The request's business context ([`BusinessContext::extract`]): its attributes go on
    /// the span at start (head rules can match them), and the span's context carries it to
    /// the GenAI spans started under it.
    ///
    /// [`BusinessContext::extract`]: super::BusinessContext::extract
    pub business: Option<&'a Arc<BusinessAttributes>>,
}

/// Request headers an [`InboundSpan`] records as `http.request.header.<name>` when it starts,
/// so head samplers can match them. Credentials (`authorization`, `x-api-key`, ...) are
/// always `[REDACTED]`.
///
/// ```
/// use llmtrace::driver::RequestHeaderCapture;
///
/// let capture = RequestHeaderCapture::new(&[http::HeaderName::from_static("x-user-tier")]);
/// # let _ = capture;
/// ```
#[derive(Debug, Clone)]
pub struct RequestHeaderCapture(HeaderCapture);

impl RequestHeaderCapture {
    /// Captures `names`.
    pub fn new(names: &[HeaderName]) -> Self {
        Self(HeaderCapture::new(
            semconv::http::REQUEST_HEADER_PREFIX,
            names,
            &[],
        ))
    }
}

/// A SERVER span for an inbound request, for servers that are not tower services.
///
/// It records what [`ServerLayer`](crate::ServerLayer)'s span records, by the same code: the name
/// (`{METHOD} {route}`), the HTTP attributes, the status rules (5xx is an error, 4xx is the
/// caller's), and abort and failure. It ends exactly once: by [`InboundSpan::end`], or as
/// aborted when dropped.
///
/// ```
/// use llmtrace::genai::End;
/// use llmtrace::driver::{InboundRequest, InboundSpan};
///
/// let (method, uri, headers) = (http::Method::POST, http::Uri::from_static("/v1/chat/completions"), http::HeaderMap::new());
/// let request = InboundRequest {
///     method: &method,
///     uri: &uri,
///     version: http::Version::HTTP_11,
///     headers: &headers,
///     route: Some("/v1/chat/completions"),
///     peer: None,
///     business: None,
/// };
/// let tracer = opentelemetry::global::tracer("doc");
/// let parent = llmtrace::propagation::extract(&headers);
/// let mut span = InboundSpan::start(&tracer, &request, &parent, None);
/// // ... proxy the request; `span.context()` is the parent of what happens meanwhile ...
/// span.on_response_head(http::StatusCode::OK, &http::HeaderMap::new());
/// span.on_data(42);
/// span.end(End::Complete);
/// ```
#[derive(Debug)]
pub struct InboundSpan {
    span: ExchangeSpan,
    /// Started [`without the request's details`](InboundSpan::start_without_details), which
    /// are still to be recorded.
    details_pending: bool,
}

impl InboundSpan {
    /// Starts the span as a child of `parent` (the caller's extracted context; a new trace
    /// when it holds none), with the `capture`d request headers among its start attributes.
    pub fn start(
        tracer: &BoxedTracer,
        request: &InboundRequest<'_>,
        parent: &Context,
        capture: Option<&RequestHeaderCapture>,
    ) -> Self {
        Self::start_linked(tracer, request, parent, None, capture)
    }

    /// [`start`](Self::start) with a span link, for a caller whose context is linked rather
    /// than continued (see [`Incoming::extract`]).
    pub fn start_linked(
        tracer: &BoxedTracer,
        request: &InboundRequest<'_>,
        parent: &Context,
        link: Option<Link>,
        capture: Option<&RequestHeaderCapture>,
    ) -> Self {
        Self::started(tracer, request, parent, link, capture, Details::AtStart)
    }

    /// [`start_linked`](Self::start_linked) without the request's details (`url.path`,
    /// `server.address`, `user_agent.original`, the peer's and client's addresses, the
    /// protocol version), which [`record_request_details`](Self::record_request_details)
    /// adds later, before the span ends.
    ///
    /// For a server that still holds the request head when the exchange ends (a proxy): a
    /// streamed answer can stay open for minutes, and the details, which no sampler sees
    /// (they are recorded only once the span is known to record), would be held as
    /// attributes all that time. Starting without them halves the span's attribute storage
    /// while it is open (8 slots instead of 16). The exported span is the same: only the
    /// order of its attributes differs.
    ///
    /// A span whose details were never recorded (the owner forgot, or dropped it first) ends
    /// without them.
    ///
    /// ```
    /// use llmtrace::genai::End;
    /// use llmtrace::driver::{InboundRequest, InboundSpan};
    ///
    /// let (method, uri, headers) = (http::Method::POST, http::Uri::from_static("/v1/chat/completions"), http::HeaderMap::new());
    /// let request = InboundRequest {
    ///     method: &method, uri: &uri, version: http::Version::HTTP_11, headers: &headers,
    ///     route: Some("/v1/chat/completions"), peer: None, business: None,
    /// };
    /// let tracer = opentelemetry::global::tracer("doc");
    /// let parent = llmtrace::propagation::extract(&headers);
    /// let mut span = InboundSpan::start_without_details(&tracer, &request, &parent, None, None);
    /// // ... the answer streams ...
    /// span.record_request_details(&request, None);
    /// span.end(End::Complete);
    /// ```
    pub fn start_without_details(
        tracer: &BoxedTracer,
        request: &InboundRequest<'_>,
        parent: &Context,
        link: Option<Link>,
        capture: Option<&RequestHeaderCapture>,
    ) -> Self {
        Self::started(tracer, request, parent, link, capture, Details::Later)
    }

    fn started(
        tracer: &BoxedTracer,
        request: &InboundRequest<'_>,
        parent: &Context,
        link: Option<Link>,
        capture: Option<&RequestHeaderCapture>,
        details: Details,
    ) -> Self {
        let capture = capture.map(|c| &c.0);
        let (cx, grpc) = start_span(tracer, capture, request, parent, link, details);
        Self {
            span: ExchangeSpan::new(cx, Side::Server, grpc, None),
            details_pending: details == Details::Later,
        }
    }

    /// Whether [`record_request_details`](Self::record_request_details) would record: the
    /// span was started without them, has not had them yet, and records. A caller can skip
    /// building what it would pass otherwise.
    pub fn wants_request_details(&self) -> bool {
        self.details_pending && self.span.recording()
    }

    /// Records the request's details on a span started
    /// [`without them`](Self::start_without_details), with `extra` attributes beside them;
    /// `request` is the one the span started with. Only the first call records, and only on
    /// a span that records.
    pub fn record_request_details(
        &mut self,
        request: &InboundRequest<'_>,
        extra: Option<KeyValue>,
    ) {
        if !self.wants_request_details() {
            return;
        }
        self.details_pending = false;
        let mut details = recorded_attributes(request, usize::from(extra.is_some()));
        details.extend(extra);
        self.span.set_attributes(details);
    }

    /// A request traced by nobody (tracing off): no span starts and no id is made, and
    /// [`context`](Self::context) is `parent` (with the request's business context), so the
    /// caller's trace context goes on unchanged to whatever is injected from it.
    ///
    /// ```
    /// use llmtrace::driver::{InboundRequest, InboundSpan};
    /// use opentelemetry::trace::TraceContextExt;
    ///
    /// let (method, uri, headers) = (http::Method::GET, http::Uri::from_static("/"), http::HeaderMap::new());
    /// let request = InboundRequest {
    ///     method: &method, uri: &uri, version: http::Version::HTTP_11, headers: &headers,
    ///     route: None, peer: None, business: None,
    /// };
    /// let span = InboundSpan::untraced(&request, &opentelemetry::Context::new());
    /// assert!(!span.context().unwrap().span().span_context().is_valid());
    /// ```
    pub fn untraced(request: &InboundRequest<'_>, parent: &Context) -> Self {
        let cx = match request.business {
            Some(business) => business.attach(parent),
            None => parent.clone(),
        };
        let grpc = attrs::is_grpc(request.headers);
        Self {
            span: ExchangeSpan::untraced(cx, Side::Server, grpc),
            details_pending: false,
        }
    }

    /// The span's context (with the caller's baggage), until the span ends.
    pub fn context(&self) -> Option<&Context> {
        self.span.context()
    }

    /// The response head went out.
    pub fn on_response_head(&mut self, status: http::StatusCode, headers: &http::HeaderMap) {
        self.span.on_response_head(status, headers);
    }

    /// `len` bytes of response body went out.
    pub fn on_data(&mut self, len: usize) {
        self.span.on_data(len);
    }

    /// Ends the span: complete (the status decides), failed, or aborted by the client.
    pub fn end(mut self, end: End) {
        self.span.end(end);
    }
}

/// Starts the SERVER span for `req` under `parent`, with `link` when given; returns its
/// context (marked as a trace we started when the caller sent none) and whether it is a gRPC
/// call.
pub(crate) fn start_server_span(
    tracer: &BoxedTracer,
    request_capture: Option<&HeaderCapture>,
    req: &InboundRequest<'_>,
    parent: &Context,
    link: Option<Link>,
) -> (Context, bool) {
    start_span(tracer, request_capture, req, parent, link, Details::AtStart)
}

/// When a recording SERVER span gets the request's details ([`recorded_attributes`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Details {
    AtStart,
    /// The owner records them before the end ([`InboundSpan::record_request_details`]).
    Later,
}

fn start_span(
    tracer: &BoxedTracer,
    request_capture: Option<&HeaderCapture>,
    req: &InboundRequest<'_>,
    parent: &Context,
    link: Option<Link>,
    details: Details,
) -> (Context, bool) {
    let headers = req.headers;
    let grpc = attrs::is_grpc(headers);
    let path = req.uri.path();
    let scheme = req.uri.scheme_str().unwrap_or("http");

    // What a sampler may want to see goes in at creation (method, scheme, route, rpc.*, the
    // captured request headers, which rules match on: a user tier, a tenant); the rest,
    // including the path, which costs an allocation, only when recording.
    let mut attributes = Vec::with_capacity(8);
    let method = attrs::push_method(&mut attributes, req.method);
    attributes.push(KeyValue::new(
        semconv::http::URL_SCHEME,
        if scheme == "https" { "https" } else { "http" },
    ));
    // The route is the caller's to fill: a template, or a path when it has nothing better.
    let route = req.route.map(|route| bounded(route, MAX_URL_BYTES));
    if let Some(route) = &route {
        attributes.push(KeyValue::new(
            semconv::http::ROUTE,
            attrs::recent_text(Recent::Route, route),
        ));
    }
    let name: Cow<'static, str> = match (grpc, route) {
        (true, _) => {
            attrs::push_grpc(&mut attributes, path).map_or(Cow::Borrowed(method), Cow::Owned)
        }
        // Two pieces: `format!`'s machinery costs more than the copy itself here.
        (false, Some(route)) => {
            let mut name = String::with_capacity(method.len() + 1 + route.len());
            name.push_str(method);
            name.push(' ');
            name.push_str(&route);
            Cow::Owned(name)
        }
        (false, None) => Cow::Borrowed(method),
    };
    if let Some(capture) = request_capture {
        attributes.extend(capture.attributes(headers));
    }
    if let Some(business) = req.business {
        attributes.extend_from_slice(business.attributes());
    }
    let mut builder = SpanBuilder::from_name(name)
        .with_kind(SpanKind::Server)
        .with_attributes(attributes);
    if let Some(link) = link {
        builder = builder.with_links(vec![link]);
    }
    let mut span = tracer.build_with_context(builder, parent);
    if details == Details::AtStart && span.is_recording() {
        span.set_attributes(recorded_attributes(req, 0));
    }
    let cx = span::child_context(parent, span);
    match req.business {
        Some(business) => (business.attach(&cx), grpc),
        None => (cx, grpc),
    }
}

/// The attributes only a recording span gets (the request's details), with room for
/// `spare` more.
fn recorded_attributes(req: &InboundRequest<'_>, spare: usize) -> Vec<KeyValue> {
    let headers = req.headers;
    let mut more = Vec::with_capacity(10 + spare);
    more.push(KeyValue::new(
        semconv::http::URL_PATH,
        attrs::recent_text(Recent::Path, &bounded(req.uri.path(), MAX_URL_BYTES)),
    ));
    attrs::push_server_address(&mut more, req.uri, headers);
    if let Some(version) = attrs::protocol_version(req.version) {
        more.push(KeyValue::new(
            semconv::http::NETWORK_PROTOCOL_VERSION,
            version,
        ));
    }
    if let Some(agent) = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
    {
        more.push(KeyValue::new(
            semconv::http::USER_AGENT_ORIGINAL,
            attrs::recent_text(Recent::UserAgent, &bounded(agent, MAX_USER_AGENT_BYTES)),
        ));
    }
    // The peer's address, written once and shared by both attributes that may carry it.
    let peer_ip = req.peer.map(|peer| attrs::recent_ip_text(peer.ip()));
    if let (Some(peer), Some(ip)) = (req.peer, &peer_ip) {
        more.push(KeyValue::new(
            semconv::http::NETWORK_PEER_ADDRESS,
            ip.clone(),
        ));
        more.push(KeyValue::new(
            semconv::http::NETWORK_PEER_PORT,
            i64::from(peer.port()),
        ));
    }
    match attrs::forwarded_client(headers) {
        Some(client) => more.push(KeyValue::new(semconv::http::CLIENT_ADDRESS, client)),
        None => {
            if let Some(ip) = peer_ip {
                more.push(KeyValue::new(semconv::http::CLIENT_ADDRESS, ip));
            }
        }
    }
    more
}
