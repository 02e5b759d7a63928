//! The server layer: a SERVER span per inbound request, ended when the response body ends.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use http::header::{self, HeaderName};
use http::{Request, Response};
use opentelemetry::global::BoxedTracer;
use opentelemetry::trace::{Span as _, SpanBuilder, SpanKind, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};
use tower_layer::Layer;
use tower_service::Service;

use super::attrs::{self, HeaderCapture};
use super::body::TracedBody;
use super::future::ResponseFuture;
use super::span::{ExchangeSpan, Side};
use super::{boxed_tracer, default_tracer};
use crate::limits::{MAX_URL_BYTES, MAX_USER_AGENT_BYTES, bounded};
use crate::propagation;
use crate::semconv;

/// A [`Layer`] that traces inbound HTTP and gRPC requests.
///
/// For each request it extracts the caller's W3C trace context (`traceparent`, `tracestate`,
/// `baggage`), starts a SERVER span that is a child of it, and keeps that span's context
/// current while the inner service runs, so spans created by the handler (with the
/// OpenTelemetry API or with `tracing` through `tracing-opentelemetry`) nest under it. The span
/// ends when the response body ends, fails, or is dropped early (see [`TracedBody`]).
///
/// The span is named `{METHOD} {route}` with the route template (axum's `MatchedPath`, with
/// the `axum` feature), or `{METHOD}` alone when there is no route: never the raw path, which
/// would make one span name per id. gRPC requests are named `{package.Service}/{Method}` and
/// carry the `rpc.*` attributes; a non-OK `grpc-status`, in the headers or the trailers, marks
/// the span as an error, as does an HTTP 5xx.
///
/// Inside the handler, [`opentelemetry::Context::current()`] is the server span's context;
/// capture it before spawning tasks that should nest under the request.
///
/// # Example
///
/// ```
/// use axum::{Router, routing::get};
/// use llmtrace::ServerLayer;
///
/// let app: Router = Router::new()
///     .route("/v1/models/{id}", get(|| async { "ok" }))
///     .route("/healthz", get(|| async { "ok" }))
///     // `Router::layer` runs after routing, so the route template is known.
///     .layer(ServerLayer::new().skip_paths(["/healthz"]).traceresponse(true));
/// ```
#[derive(Clone)]
pub struct ServerLayer {
    config: Arc<ServerConfig>,
}

#[derive(Clone)]
struct ServerConfig {
    tracer: Arc<BoxedTracer>,
    skip_paths: Vec<String>,
    request_headers: Vec<HeaderName>,
    response_headers: Vec<HeaderName>,
    redacted: Vec<HeaderName>,
    request_capture: Option<HeaderCapture>,
    response_capture: Option<Arc<HeaderCapture>>,
    traceresponse: bool,
}

impl fmt::Debug for ServerLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerLayer")
            .field("skip_paths", &self.config.skip_paths)
            .field("request_headers", &self.config.request_headers)
            .field("response_headers", &self.config.response_headers)
            .field("redacted", &self.config.redacted)
            .field("traceresponse", &self.config.traceresponse)
            .finish_non_exhaustive()
    }
}

impl Default for ServerLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerLayer {
    /// A layer that uses the global tracer provider's `llmtrace` tracer.
    ///
    /// The tracer is taken from the global provider when the layer is built: install the
    /// provider first (`opentelemetry::global::set_tracer_provider`).
    pub fn new() -> Self {
        Self {
            config: Arc::new(ServerConfig {
                tracer: Arc::new(default_tracer()),
                skip_paths: Vec::new(),
                request_headers: Vec::new(),
                response_headers: Vec::new(),
                redacted: Vec::new(),
                request_capture: None,
                response_capture: None,
                traceresponse: false,
            }),
        }
    }

    /// Uses `tracer` instead of the global one.
    pub fn with_tracer<T>(mut self, tracer: T) -> Self
    where
        T: Tracer + Send + Sync + 'static,
        T::Span: Send + Sync + 'static,
    {
        Arc::make_mut(&mut self.config).tracer = Arc::new(boxed_tracer(tracer));
        self
    }

    /// Requests to these exact paths (health checks, metrics scrapes) pass through untraced.
    pub fn skip_paths<I, S>(mut self, paths: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Arc::make_mut(&mut self.config)
            .skip_paths
            .extend(paths.into_iter().map(Into::into));
        self
    }

    /// Records these request headers as `http.request.header.<name>` (string arrays).
    ///
    /// Credentials (`authorization`, `proxy-authorization`, `cookie`, `x-api-key`, ... see
    /// [`ALWAYS_REDACTED`](crate::layer::ALWAYS_REDACTED)) and headers named in
    /// [`redact_headers`](Self::redact_headers) are recorded as `[REDACTED]`.
    pub fn capture_request_headers<I>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = HeaderName>,
    {
        Arc::make_mut(&mut self.config)
            .request_headers
            .extend(names);
        self.rebuild_captures()
    }

    /// Records these response headers as `http.response.header.<name>`, redacted like
    /// [`capture_request_headers`](Self::capture_request_headers).
    pub fn capture_response_headers<I>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = HeaderName>,
    {
        Arc::make_mut(&mut self.config)
            .response_headers
            .extend(names);
        self.rebuild_captures()
    }

    /// More headers whose values are secret: captured as `[REDACTED]`.
    pub fn redact_headers<I>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = HeaderName>,
    {
        Arc::make_mut(&mut self.config).redacted.extend(names);
        self.rebuild_captures()
    }

    /// Sends a `traceresponse` header (W3C Trace Context Level 2) naming the server span, so
    /// callers can look up the trace of a request they made.
    pub fn traceresponse(mut self, enabled: bool) -> Self {
        Arc::make_mut(&mut self.config).traceresponse = enabled;
        self
    }

    fn rebuild_captures(mut self) -> Self {
        let config = Arc::make_mut(&mut self.config);
        config.request_capture = (!config.request_headers.is_empty()).then(|| {
            HeaderCapture::new(
                semconv::http::REQUEST_HEADER_PREFIX,
                &config.request_headers,
                &config.redacted,
            )
        });
        config.response_capture = (!config.response_headers.is_empty()).then(|| {
            Arc::new(HeaderCapture::new(
                semconv::http::RESPONSE_HEADER_PREFIX,
                &config.response_headers,
                &config.redacted,
            ))
        });
        self
    }
}

impl<S> Layer<S> for ServerLayer {
    type Service = ServerService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ServerService {
            inner,
            config: self.config.clone(),
        }
    }
}

/// The [`Service`] made by [`ServerLayer`].
#[derive(Clone)]
pub struct ServerService<S> {
    inner: S,
    config: Arc<ServerConfig>,
}

impl<S: fmt::Debug> fmt::Debug for ServerService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ServerService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: fmt::Display,
    ResBody: http_body::Body,
    ResBody::Error: fmt::Display,
{
    type Response = Response<TracedBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    /// Ready when the inner service is.
    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let config = &*self.config;
        if config.skip_paths.iter().any(|p| p == req.uri().path()) {
            return ResponseFuture::untraced(self.inner.call(req));
        }
        let parent = propagation::extract(req.headers());
        let inbound = InboundRequest {
            method: req.method(),
            uri: req.uri(),
            version: req.version(),
            headers: req.headers(),
            route: matched_route(&req),
            peer: peer_address(&req),
        };
        let (cx, grpc) = start_server_span(
            &config.tracer,
            config.request_capture.as_ref(),
            &inbound,
            &parent,
        );
        let future = {
            let _guard = cx.clone().attach();
            self.inner.call(req)
        };
        let span = ExchangeSpan::new(cx, Side::Server, grpc, config.response_capture.clone());
        ResponseFuture::traced(future, span, config.traceresponse)
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
}

/// Request headers an [`InboundSpan`] records as `http.request.header.<name>` when it starts,
/// so head samplers can match them. Credentials (`authorization`, `x-api-key`, ...) are
/// always `[REDACTED]`.
///
/// ```
/// use llmtrace::layer::RequestHeaderCapture;
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
/// It records what [`ServerLayer`]'s span records, by the same code: the name
/// (`{METHOD} {route}`), the HTTP attributes, the status rules (5xx is an error, 4xx is the
/// caller's), and abort and failure. It ends exactly once: by [`InboundSpan::end`], or as
/// aborted when dropped.
///
/// ```
/// use llmtrace::genai::End;
/// use llmtrace::layer::{InboundRequest, InboundSpan};
///
/// let (method, uri, headers) = (http::Method::POST, http::Uri::from_static("/v1/chat/completions"), http::HeaderMap::new());
/// let request = InboundRequest {
///     method: &method,
///     uri: &uri,
///     version: http::Version::HTTP_11,
///     headers: &headers,
///     route: Some("/v1/chat/completions"),
///     peer: None,
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
        let (cx, grpc) = start_server_span(tracer, capture.map(|c| &c.0), request, parent);
        Self {
            span: ExchangeSpan::new(cx, Side::Server, grpc, None),
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
    pub fn end(mut self, end: crate::genai::End) {
        self.span.end(end);
    }
}

/// Starts the SERVER span for `req` under `parent`; returns its context (marked as a trace
/// we started when the caller sent none) and whether it is a gRPC call.
fn start_server_span(
    tracer: &BoxedTracer,
    request_capture: Option<&HeaderCapture>,
    req: &InboundRequest<'_>,
    parent: &Context,
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
            route.clone().into_owned(),
        ));
    }
    let name: Cow<'static, str> = match (grpc, route) {
        (true, _) => {
            attrs::push_grpc(&mut attributes, path).map_or(Cow::Borrowed(method), Cow::Owned)
        }
        (false, Some(route)) => Cow::Owned(format!("{method} {route}")),
        (false, None) => Cow::Borrowed(method),
    };
    if let Some(capture) = request_capture {
        attributes.extend(capture.attributes(headers));
    }
    let builder = SpanBuilder::from_name(name)
        .with_kind(SpanKind::Server)
        .with_attributes(attributes);
    let mut span = tracer.build_with_context(builder, parent);
    if span.is_recording() {
        span.set_attributes(recorded_attributes(req, scheme));
    }
    let new_trace = !parent.span().span_context().is_valid();
    let trace_id = span.span_context().trace_id();
    let mut cx = parent.with_span(span);
    if new_trace {
        cx = cx.with_value(propagation::RandomTraceId(trace_id));
    }
    (cx, grpc)
}

/// The attributes only a recording span gets.
fn recorded_attributes(req: &InboundRequest<'_>, scheme: &str) -> Vec<KeyValue> {
    let headers = req.headers;
    let mut more = Vec::with_capacity(10);
    more.push(KeyValue::new(
        semconv::http::URL_PATH,
        bounded(req.uri.path(), MAX_URL_BYTES).into_owned(),
    ));
    if let Some((host, port)) = attrs::server_address(req.uri, headers) {
        more.push(KeyValue::new(semconv::http::SERVER_ADDRESS, host));
        if let Some(port) = port.or_else(|| attrs::default_port(scheme)) {
            more.push(KeyValue::new(semconv::http::SERVER_PORT, i64::from(port)));
        }
    }
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
            bounded(agent, MAX_USER_AGENT_BYTES).into_owned(),
        ));
    }
    if let Some(peer) = req.peer {
        more.push(KeyValue::new(
            semconv::http::NETWORK_PEER_ADDRESS,
            peer.ip().to_string(),
        ));
        more.push(KeyValue::new(
            semconv::http::NETWORK_PEER_PORT,
            i64::from(peer.port()),
        ));
    }
    if let Some(client) =
        attrs::forwarded_client(headers).or_else(|| req.peer.map(|p| p.ip().to_string()))
    {
        more.push(KeyValue::new(semconv::http::CLIENT_ADDRESS, client));
    }
    more
}

#[cfg(feature = "axum")]
fn matched_route<B>(req: &Request<B>) -> Option<&str> {
    req.extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str())
}

#[cfg(not(feature = "axum"))]
fn matched_route<B>(_req: &Request<B>) -> Option<&str> {
    None
}

#[cfg(feature = "axum")]
fn peer_address<B>(req: &Request<B>) -> Option<std::net::SocketAddr> {
    req.extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0)
}

#[cfg(not(feature = "axum"))]
fn peer_address<B>(_req: &Request<B>) -> Option<std::net::SocketAddr> {
    None
}
