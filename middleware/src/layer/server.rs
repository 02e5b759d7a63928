//! The server layer: a SERVER span per inbound request, ended when the response body ends.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use http::Request;
use http::header::HeaderName;
use http::request::Parts;
use opentelemetry::global::BoxedTracer;
use tower_service::Service;

use super::body::SpanObserver;
use super::default_tracer;
use super::future::ResponseFuture;
use crate::driver::attrs::HeaderCapture;
use crate::driver::span::{ExchangeSpan, Side};
use crate::driver::{
    BusinessContext, ErrorClassifier, InboundRequest, Incoming, StatusClassifier, start_server_span,
};
use crate::semconv;

/// A [`Layer`](tower_layer::Layer) that traces inbound HTTP and gRPC requests.
///
/// For each request it extracts the caller's W3C trace context (`traceparent`, `tracestate`,
/// `baggage`), starts a SERVER span that is a child of it, and keeps that span's context
/// current while the inner service runs, so spans created by the handler (with the
/// OpenTelemetry API or with `tracing` through `tracing-opentelemetry`) nest under it. The span
/// ends when the response body ends, fails, or is dropped early (see [`TracedBody`](super::TracedBody)).
/// At the edge, where callers are not to choose the trace, see
/// [`with_incoming`](Self::with_incoming).
///
/// The span is named `{METHOD} {route}` with the route template (from
/// [`with_route`](Self::with_route), else axum's `MatchedPath` with the `axum` feature), or
/// `{METHOD}` alone when there is no route: never the raw path, which would make one span
/// name per id. gRPC requests are named `{package.Service}/{Method}` and carry the `rpc.*`
/// attributes; a non-OK `grpc-status`, in the headers or the trailers, marks the span as an
/// error, as does an HTTP 5xx (see [`with_status_classifier`](Self::with_status_classifier)).
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
#[derive(Clone, Debug)]
pub struct ServerLayer {
    config: Arc<ServerConfig>,
}

type RouteFn = dyn Fn(&Parts) -> Option<Cow<'static, str>> + Send + Sync;
type TrustedFn = dyn Fn(&Parts) -> bool + Send + Sync;

#[derive(Clone)]
struct ServerConfig {
    tracer: Arc<BoxedTracer>,
    route: Option<Arc<RouteFn>>,
    status_classifier: Option<StatusClassifier>,
    errors: ErrorClassifier,
    skip_paths: Vec<String>,
    request_headers: Vec<HeaderName>,
    response_headers: Vec<HeaderName>,
    redacted: Vec<HeaderName>,
    request_capture: Option<HeaderCapture>,
    response_capture: Option<Arc<HeaderCapture>>,
    traceresponse: bool,
    incoming: Incoming,
    trusted: Option<Arc<TrustedFn>>,
    business: Option<BusinessContext>,
}

impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfig")
            .field("skip_paths", &self.skip_paths)
            .field("request_headers", &self.request_headers)
            .field("response_headers", &self.response_headers)
            .field("redacted", &self.redacted)
            .field("traceresponse", &self.traceresponse)
            .field("incoming", &self.incoming)
            .field("trusted", &self.trusted.is_some())
            .field("business", &self.business)
            .field("route", &self.route.is_some())
            .field("status_classifier", &self.status_classifier)
            .field("errors", &self.errors)
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
                route: None,
                status_classifier: None,
                errors: ErrorClassifier::default(),
                skip_paths: Vec::new(),
                request_headers: Vec::new(),
                response_headers: Vec::new(),
                redacted: Vec::new(),
                request_capture: None,
                response_capture: None,
                traceresponse: false,
                incoming: Incoming::Trust,
                trusted: None,
                business: None,
            }),
        }
    }

    /// Names the route of a request (`http.route` and the span name `{METHOD} {route}`), for
    /// servers that do not route with axum (hyper, tonic, a hand-written router). Return a
    /// template (`/users/{id}`), never the raw path of an id-bearing URL. When it returns
    /// `None`, axum's `MatchedPath` is used (with the `axum` feature); without this, only
    /// `MatchedPath` is.
    ///
    /// ```
    /// use std::borrow::Cow;
    /// use llmtrace::ServerLayer;
    ///
    /// let layer = ServerLayer::new().with_route(|parts: &http::request::Parts| {
    ///     let path = parts.uri.path();
    ///     if path.starts_with("/v1/models/") {
    ///         Some(Cow::Borrowed("/v1/models/{id}"))
    ///     } else {
    ///         Some(Cow::Owned(path.to_owned())) // a fixed set of paths
    ///     }
    /// });
    /// # let _ = layer;
    /// ```
    pub fn with_route<F>(self, route: F) -> Self
    where
        F: Fn(&Parts) -> Option<Cow<'static, str>> + Send + Sync + 'static,
    {
        self.update(|c| c.route = Some(Arc::new(route)))
    }

    fn update(mut self, f: impl FnOnce(&mut ServerConfig)) -> Self {
        f(Arc::make_mut(&mut self.config));
        self
    }

    fn set_tracer(self, tracer: BoxedTracer) -> Self {
        self.update(|c| c.tracer = Arc::new(tracer))
    }

    fn set_errors(self, errors: ErrorClassifier) -> Self {
        self.update(|c| c.errors = errors)
    }

    fn set_status_classifier(self, classifier: StatusClassifier) -> Self {
        self.update(|c| c.status_classifier = Some(classifier))
    }

    /// Requests to these exact paths (health checks, metrics scrapes) pass through untraced.
    pub fn skip_paths<I, S>(self, paths: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.update(|c| c.skip_paths.extend(paths.into_iter().map(Into::into)))
    }

    /// Records these request headers as `http.request.header.<name>` (string arrays).
    ///
    /// Credentials (`authorization`, `proxy-authorization`, `cookie`, `x-api-key`, ... see
    /// [`ALWAYS_REDACTED`](crate::layer::ALWAYS_REDACTED)) and headers named in
    /// [`redact_headers`](Self::redact_headers) are recorded as `[REDACTED]`.
    pub fn capture_request_headers<I>(self, names: I) -> Self
    where
        I: IntoIterator<Item = HeaderName>,
    {
        self.update(|c| c.request_headers.extend(names))
            .rebuild_captures()
    }

    /// Records these response headers as `http.response.header.<name>`, redacted like
    /// [`capture_request_headers`](Self::capture_request_headers).
    pub fn capture_response_headers<I>(self, names: I) -> Self
    where
        I: IntoIterator<Item = HeaderName>,
    {
        self.update(|c| c.response_headers.extend(names))
            .rebuild_captures()
    }

    /// More headers whose values are secret: captured as `[REDACTED]`.
    pub fn redact_headers<I>(self, names: I) -> Self
    where
        I: IntoIterator<Item = HeaderName>,
    {
        self.update(|c| c.redacted.extend(names)).rebuild_captures()
    }

    /// Sends a `traceresponse` header (W3C Trace Context Level 2) naming the server span, so
    /// callers can look up the trace of a request they made.
    pub fn traceresponse(self, enabled: bool) -> Self {
        self.update(|c| c.traceresponse = enabled)
    }

    /// What the layer makes of a caller's `traceparent` and `tracestate` (default
    /// [`Incoming::Trust`]: continue the caller's trace). A service at the edge, whose callers
    /// could force sampling or join someone else's trace, takes [`Incoming::Link`]: each
    /// request starts a new trace whose SERVER span links to the caller's context. Callers
    /// that [`trust_when`](Self::trust_when) accepts are continued whatever the mode.
    ///
    /// ```
    /// use llmtrace::ServerLayer;
    /// use llmtrace::driver::Incoming;
    ///
    /// let layer = ServerLayer::new()
    ///     .with_incoming(Incoming::Link)
    ///     // Our own services mark their calls; a client cannot, because the edge proxy
    ///     // strips the header.
    ///     .trust_when(|parts: &http::request::Parts| parts.headers.contains_key("x-internal-caller"));
    /// # let _ = layer;
    /// ```
    pub fn with_incoming(self, incoming: Incoming) -> Self {
        self.update(|c| c.incoming = incoming)
    }

    /// Continues the trace of the requests `trusted` accepts whatever
    /// [`with_incoming`](Self::with_incoming) says: callers on a private network (with
    /// axum, the peer is in the request's `ConnectInfo<SocketAddr>` extension), a mutually
    /// authenticated client. It runs only when the mode is not [`Incoming::Trust`].
    pub fn trust_when<F>(self, trusted: F) -> Self
    where
        F: Fn(&Parts) -> bool + Send + Sync + 'static,
    {
        self.update(|c| c.trusted = Some(Arc::new(trusted)))
    }

    /// Reads business context (user, session, tenant, experiment, ...) from each request's
    /// headers and baggage into attributes of the SERVER span, set at start so head rules
    /// match them; the request's context carries them to the GenAI spans made while the
    /// service runs (a [`GenAiLayer`](crate::GenAiLayer) client: `gen_ai.conversation.id`
    /// from the session, the opted-in metric dimensions).
    ///
    /// ```
    /// use llmtrace::ServerLayer;
    /// use llmtrace::driver::BusinessContext;
    ///
    /// let business = BusinessContext::builder()
    ///     .header("x-user-id", "user.id")
    ///     .header("x-session-id", "session.id")
    ///     .baggage("experiment", "llmtrace.experiment")
    ///     .build()
    ///     .unwrap();
    /// let layer = ServerLayer::new().business_context(business);
    /// # let _ = layer;
    /// ```
    pub fn business_context(self, business: BusinessContext) -> Self {
        self.update(|c| c.business = Some(business))
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

tracer_and_error_builders!(ServerLayer, "new");
status_classifier_builder!(
    ServerLayer,
    server_default,
    "Shedding load with 429 is the design working, not an error."
);

traced_service!(ServerLayer, ServerService, ServerConfig);

impl ServerConfig {
    /// One call through [`ServerService`]: the span starts, the inner service runs with its
    /// context current, and the response future carries it on.
    fn call<S, B>(&self, inner: &mut S, req: Request<B>) -> ResponseFuture<S::Future>
    where
        S: Service<Request<B>>,
    {
        let config = self;
        if config.skip_paths.iter().any(|p| p == req.uri().path()) {
            return ResponseFuture::untraced(inner.call(req));
        }
        let (req, named_route) = config.name_route(req);
        let (req, incoming) = config.incoming(req);
        let (parent, link) = incoming.extract(req.headers());
        let business = config
            .business
            .as_ref()
            .and_then(|b| b.extract(req.headers(), &parent));
        let inbound = InboundRequest {
            method: req.method(),
            uri: req.uri(),
            version: req.version(),
            headers: req.headers(),
            route: named_route.as_deref().or_else(|| matched_route(&req)),
            peer: peer_address(&req),
            business: business.as_ref(),
        };
        let (cx, grpc) = start_server_span(
            &config.tracer,
            config.request_capture.as_ref(),
            &inbound,
            &parent,
            link,
        );
        let future = {
            let _guard = cx.clone().attach();
            inner.call(req)
        };
        let span = ExchangeSpan::new(cx, Side::Server, grpc, config.response_capture.clone())
            .with_status_classifier(config.status_classifier.clone());
        let observer = SpanObserver::new(span, config.errors.clone());
        ResponseFuture::traced(future, observer, config.traceresponse)
    }
}

impl ServerConfig {
    /// The route [`ServerLayer::with_route`] names, if one was given and it knows one.
    fn name_route<B>(&self, req: Request<B>) -> (Request<B>, Option<Cow<'static, str>>) {
        let Some(route) = &self.route else {
            return (req, None);
        };
        let (parts, body) = req.into_parts();
        let named = route(&parts);
        (Request::from_parts(parts, body), named)
    }
}

impl ServerConfig {
    /// The [`Incoming`] mode for this request: the configured one, or `Trust` for a caller
    /// [`ServerLayer::trust_when`] accepts.
    fn incoming<B>(&self, req: Request<B>) -> (Request<B>, Incoming) {
        let (Some(trusted), false) = (&self.trusted, self.incoming == Incoming::Trust) else {
            return (req, self.incoming);
        };
        let (parts, body) = req.into_parts();
        let incoming = if trusted(&parts) {
            Incoming::Trust
        } else {
            self.incoming
        };
        (Request::from_parts(parts, body), incoming)
    }
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
