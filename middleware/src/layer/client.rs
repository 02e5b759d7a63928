//! The client layer: a CLIENT span per outbound request, with the context injected.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use http::Request;
use opentelemetry::global::BoxedTracer;
use opentelemetry::trace::{Span as _, SpanBuilder, SpanKind, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};
use tower_service::Service;

use super::body::SpanObserver;
use super::default_tracer;
use super::future::ResponseFuture;
use crate::driver::span::{ExchangeSpan, Side};
use crate::driver::{ErrorClassifier, StatusClassifier, attrs};
use crate::propagation;
use crate::semconv;

/// A [`Layer`](tower_layer::Layer) that traces outbound HTTP and gRPC requests.
///
/// For each request it starts a CLIENT span, a child of the request's
/// [`opentelemetry::Context`] extension when there is one, else of
/// [`Context::current()`](opentelemetry::Context::current), and injects that span's context
/// as `traceparent`, `tracestate` and `baggage`: every outbound hop gets a fresh parent id.
/// The span ends when the response body ends, fails or is dropped (see [`TracedBody`](super::TracedBody));
/// 4xx and 5xx responses and non-OK gRPC statuses are errors (see
/// [`with_status_classifier`](Self::with_status_classifier)).
///
/// Spans are named `{METHOD}` (`{package.Service}/{Method}` for gRPC). `url.full` drops
/// userinfo and the values of credential-bearing query parameters.
///
/// # Example
///
/// ```
/// use llmtrace::ClientLayer;
/// use tower::ServiceBuilder;
///
/// # fn wrap<S>(client: S) {
/// let traced = ServiceBuilder::new().layer(ClientLayer::new()).service(client);
/// # let _ = traced;
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct ClientLayer {
    config: Arc<ClientConfig>,
}

#[derive(Clone)]
struct ClientConfig {
    tracer: Arc<BoxedTracer>,
    status_classifier: Option<StatusClassifier>,
    errors: ErrorClassifier,
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("status_classifier", &self.status_classifier.is_some())
            .field("errors", &self.errors)
            .finish_non_exhaustive()
    }
}

impl Default for ClientLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl ClientLayer {
    /// A layer that uses the global tracer provider's `llmtrace` tracer (taken when the layer
    /// is built).
    pub fn new() -> Self {
        Self {
            config: Arc::new(ClientConfig {
                tracer: Arc::new(default_tracer()),
                status_classifier: None,
                errors: ErrorClassifier::default(),
            }),
        }
    }

    fn update(mut self, f: impl FnOnce(&mut ClientConfig)) -> Self {
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
}

tracer_and_error_builders!(ClientLayer, "new");
status_classifier_builder!(
    ClientLayer,
    client_default,
    "A 429 is retried by the caller: not an error of this call."
);

traced_service!(ClientLayer, ClientService, ClientConfig);

impl ClientConfig {
    /// One call through [`ClientService`]: the span starts under the request's (or the
    /// current) context, is injected, and the response future carries it on.
    fn call<S, B>(&self, inner: &mut S, mut req: Request<B>) -> ResponseFuture<S::Future>
    where
        S: Service<Request<B>>,
    {
        let parent = req
            .extensions()
            .get::<Context>()
            .cloned()
            .unwrap_or_else(Context::current);
        let grpc = attrs::is_grpc(req.headers());
        let config = self;
        let span = start_client_span(&config.tracer, &req, grpc, &parent);
        let cx = parent.with_span(span);
        propagation::inject(&cx, req.headers_mut());
        let future = {
            let _guard = cx.clone().attach();
            inner.call(req)
        };
        let span = ExchangeSpan::new(cx, Side::Client, grpc, None)
            .with_status_classifier(config.status_classifier.clone());
        ResponseFuture::traced(
            future,
            SpanObserver::new(span, config.errors.clone()),
            false,
        )
    }
}

fn start_client_span<B>(
    tracer: &BoxedTracer,
    req: &Request<B>,
    grpc: bool,
    parent: &Context,
) -> opentelemetry::global::BoxedSpan {
    let uri = req.uri();
    let mut attributes = Vec::with_capacity(8);
    let method = attrs::push_method(&mut attributes, req.method());
    attrs::push_server_address(&mut attributes, uri, req.headers());
    let name: Cow<'static, str> = if grpc {
        attrs::push_grpc(&mut attributes, uri.path()).map_or(Cow::Borrowed(method), Cow::Owned)
    } else {
        Cow::Borrowed(method)
    };
    if let Some(url) = attrs::redacted_url(uri) {
        attributes.push(KeyValue::new(semconv::http::URL_FULL, url));
    }
    let builder = SpanBuilder::from_name(name)
        .with_kind(SpanKind::Client)
        .with_attributes(attributes);
    let mut span = tracer.build_with_context(builder, parent);
    if span.is_recording() {
        if let Some(version) = attrs::protocol_version(req.version()) {
            span.set_attribute(KeyValue::new(
                semconv::http::NETWORK_PROTOCOL_VERSION,
                version,
            ));
        }
    }
    span
}
