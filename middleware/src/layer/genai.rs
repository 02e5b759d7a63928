//! [`GenAiLayer`]: GenAI spans and metrics for calls to, or services of, LLM APIs.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use opentelemetry::Context;
use opentelemetry::global::BoxedTracer;
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::body::{BodyObserver, ObservedBody};
use super::default_tracer;
use crate::driver::span::Side;
use crate::driver::{BusinessContext, ErrorClassifier, ErrorRef, GenAiRecorder, GenAiSpan};
use crate::genai::{End, Endpoint, Exchange, GenAiConfig, GenAiMetrics, Provider, RequestInfo};
use crate::propagation;

/// Request bodies up to this size are read before the request is sent, to learn the model.
const DEFAULT_MAX_REQUEST_BYTES: usize = 8 * 1024 * 1024;

/// A [`Layer`] that records a GenAI span (`chat gpt-4o`), its events and the GenAI metrics
/// for every LLM API exchange, streamed or not, measured until the response body ends.
///
/// - [`GenAiLayer::client`] wraps an HTTP client that calls a provider (OpenAI, Anthropic,
///   Azure OpenAI, vLLM, Ollama, ...): CLIENT spans, the span's context injected as
///   `traceparent`, `gen_ai.client.*` metrics.
/// - [`GenAiLayer::server`] wraps a service that *serves* an OpenAI- or Anthropic-compatible
///   API: SERVER spans continuing the caller's trace, `gen_ai.server.*` metrics.
///
/// The request body (up to 8 MiB; larger ones stream through unread) is read before the
/// request goes on, so the span starts knowing the model, stream flag and parameters. The
/// response body passes through frame by frame, unchanged and at once, while the
/// [`Exchange`] observes it. Requests that are not LLM API calls (model listings, health
/// checks) pass through untraced.
///
/// ```
/// use llmtrace::layer::GenAiLayer;
/// use tower::ServiceBuilder;
///
/// # fn wrap<S>(client: S) {
/// let traced = ServiceBuilder::new()
///     .layer(GenAiLayer::client().with_meter(&opentelemetry::global::meter("llmtrace")))
///     .service(client);
/// # let _ = traced;
/// # }
/// ```
#[derive(Clone)]
pub struct GenAiLayer {
    shared: Arc<GenAiRecorder>,
}

impl fmt::Debug for GenAiLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GenAiLayer")
            .field("side", &self.shared.side)
            .field("config", &self.shared.config)
            .field("metrics", &self.shared.metrics.is_some())
            .field("provider", &self.shared.provider)
            .finish_non_exhaustive()
    }
}

impl GenAiLayer {
    /// For clients of LLM APIs.
    pub fn client() -> Self {
        Self::new(Side::Client, "client")
    }

    /// For services that serve an LLM API.
    pub fn server() -> Self {
        Self::new(Side::Server, "server")
    }

    /// For a gateway between clients and providers: CLIENT spans toward the provider, like
    /// [`client`](Self::client), with `llmtrace.measured_at = gateway`.
    pub fn gateway() -> Self {
        Self::new(Side::Client, "gateway")
    }

    /// The shared state, for adapters that drive [`GenAiSpan`] themselves (the gateway's
    /// pingora phases) instead of wrapping a tower service.
    pub fn into_recorder(self) -> Arc<GenAiRecorder> {
        self.shared
    }

    fn new(side: Side, measured_at: &'static str) -> Self {
        Self {
            shared: Arc::new(GenAiRecorder {
                side,
                tracer: default_tracer(),
                config: Arc::new(GenAiConfig {
                    measured_at,
                    ..GenAiConfig::default()
                }),
                metrics: None,
                max_model_labels: None,
                provider: None,
                max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
                errors: ErrorClassifier::default(),
                business: None,
                spans: true,
            }),
        }
    }

    fn update(mut self, f: impl FnOnce(&mut GenAiRecorder)) -> Self {
        let shared = Arc::get_mut(&mut self.shared).expect("configure the layer before cloning it");
        f(shared);
        self
    }

    fn set_tracer(self, tracer: BoxedTracer) -> Self {
        self.update(|s| s.tracer = tracer)
    }

    fn set_errors(self, errors: ErrorClassifier) -> Self {
        self.update(|s| s.errors = errors)
    }

    /// Reads business context (user, session, experiment, ...) from each request's headers
    /// and baggage, for a layer that serves an LLM API ([`server`](Self::server)): span
    /// attributes from the start, the session as `gen_ai.conversation.id`, opted-in metric
    /// dimensions. Without it, the business context of the parent context is used: a client
    /// layer inside a service behind a [`ServerLayer`](crate::ServerLayer) with
    /// [`business_context`](crate::ServerLayer::business_context) gets the inbound request's.
    ///
    /// ```
    /// use llmtrace::GenAiLayer;
    /// use llmtrace::driver::BusinessContext;
    ///
    /// let business = BusinessContext::builder()
    ///     .header("x-user-id", "user.id")
    ///     .build()
    ///     .unwrap();
    /// let layer = GenAiLayer::server().business_context(business);
    /// # let _ = layer;
    /// ```
    pub fn business_context(self, business: BusinessContext) -> Self {
        self.update(|s| s.business = Some(business))
    }

    /// Records the GenAI metrics on instruments from `meter`.
    pub fn with_meter(self, meter: &opentelemetry::metrics::Meter) -> Self {
        let metrics = GenAiMetrics::new(meter);
        self.update(|s| {
            s.metrics = Some(match s.max_model_labels {
                Some(max) => metrics.with_max_model_labels(max),
                None => metrics,
            })
        })
    }

    /// Keeps at most `max` distinct model names as metric label values (default
    /// [`DEFAULT_MAX_MODEL_LABELS`](crate::limits::DEFAULT_MAX_MODEL_LABELS)); later new names
    /// are recorded as `_OTHER`. See [`GenAiMetrics::with_max_model_labels`]. Applies to the
    /// instruments of [`with_meter`](Self::with_meter) or [`with_metrics`](Self::with_metrics),
    /// before or after this call (instruments given later keep their own setting only when
    /// this was not called).
    pub fn with_max_model_labels(self, max: usize) -> Self {
        self.update(|s| {
            s.max_model_labels = Some(max);
            s.metrics = s.metrics.take().map(|m| m.with_max_model_labels(max));
        })
    }

    /// Starts no spans (`false`): the exchanges are still observed and measured (metrics,
    /// summaries), but none gets a span or an id of its own; its context is its parent's,
    /// so what a caller injects from it is the parent's trace context, unchanged. For
    /// tracing turned off; on by default.
    ///
    /// ```
    /// let layer = llmtrace::GenAiLayer::client().with_spans(false);
    /// ```
    pub fn with_spans(self, spans: bool) -> Self {
        self.update(|s| s.spans = spans)
    }

    /// Records the GenAI metrics on these (shared) instruments.
    pub fn with_metrics(self, metrics: GenAiMetrics) -> Self {
        self.update(|s| {
            s.metrics = Some(match s.max_model_labels {
                Some(max) => metrics.with_max_model_labels(max),
                None => metrics,
            })
        })
    }

    /// How exchanges are observed (content capture, token events, stall threshold, ...).
    /// `measured_at` is set by the layer's side.
    pub fn with_config(self, mut config: GenAiConfig) -> Self {
        self.update(|s| {
            config.measured_at = s.config.measured_at;
            s.config = Arc::new(config);
        })
    }

    /// Records what each exchange cost (`gen_ai.usage.cost` in USD, the
    /// `llmtrace.gen_ai.cost` counter) from its usage and `prices`
    /// ([`PriceTable::bundled`](crate::genai::PriceTable::bundled), or your own).
    ///
    /// ```
    /// use llmtrace::GenAiLayer;
    /// use llmtrace::genai::PriceTable;
    ///
    /// let layer = GenAiLayer::client().with_prices(PriceTable::bundled());
    /// # let _ = layer;
    /// ```
    pub fn with_prices(self, prices: crate::genai::PriceTable) -> Self {
        self.update(|s| Arc::make_mut(&mut s.config).prices = Some(Arc::new(prices)))
    }

    /// Names the provider (`gen_ai.provider.name`), e.g. `vllm` or `ollama` for an
    /// OpenAI-compatible server; by default it is told from the path and host.
    pub fn with_provider_name(self, name: impl Into<String>) -> Self {
        let name = name.into();
        self.update(|s| {
            s.provider = Some(Provider::named(name));
        })
    }

    /// Request bodies larger than this stream through without being read (default 8 MiB).
    pub fn with_max_request_bytes(self, max: usize) -> Self {
        self.update(|s| s.max_request_bytes = max)
    }
}

tracer_and_error_builders!(GenAiLayer, "client");

impl<S> Layer<S> for GenAiLayer {
    type Service = GenAiService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GenAiService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The [`Service`] made by [`GenAiLayer`].
#[derive(Clone, Debug)]
pub struct GenAiService<S> {
    inner: S,
    shared: Arc<GenAiRecorder>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for GenAiService<S>
where
    S: Service<Request<RequestBody<ReqBody>>, Response = Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: fmt::Display + Send + 'static,
    ReqBody: Body<Data = Bytes> + Send + Unpin + 'static,
    ReqBody::Error: fmt::Display + Send,
    // Implied by `S: 'static` (the response type is the service's); said for the boxed future.
    ResBody: Body<Data = Bytes> + 'static,
    ResBody::Error: fmt::Display + 'static,
{
    type Response = Response<GenAiBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    /// Ready when the inner service is.
    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        // The inner service was made ready for this call; keep that one, leave a clone.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = self.shared.clone();
        let Some(endpoint) = detect_endpoint(&req, &shared) else {
            let future = inner.call(req.map(RequestBody::untouched));
            return Box::pin(async move { Ok(future.await?.map(ObservedBody::unobserved)) });
        };
        let parent = match shared.side {
            Side::Client => req
                .extensions()
                .get::<Context>()
                .cloned()
                .unwrap_or_else(Context::current),
            Side::Server => propagation::extract(req.headers()),
        };
        Box::pin(traced_call(inner, shared, endpoint, parent, req))
    }
}

/// The LLM API endpoint `req` calls (with the configured provider), or `None` when it is not
/// one (model listings, health checks).
fn detect_endpoint<B>(req: &Request<B>, shared: &GenAiRecorder) -> Option<Endpoint> {
    let host = crate::driver::request_host(req.uri(), req.headers());
    let path = req
        .uri()
        .path_and_query()
        .map_or(req.uri().path(), |pq| pq.as_str());
    let mut endpoint = Endpoint::detect(path, host)?;
    if let Some(provider) = &shared.provider {
        endpoint.provider = provider.clone();
    }
    Some(endpoint)
}

/// One traced exchange: reads the request body's start, starts the span, calls `inner` with
/// the span's context current (and injected, on the client side), and hands the span to the
/// response body, or ends it with the service's error.
async fn traced_call<S, ReqBody, ResBody>(
    mut inner: S,
    shared: Arc<GenAiRecorder>,
    endpoint: Endpoint,
    parent: Context,
    req: Request<ReqBody>,
) -> Result<Response<GenAiBody<ResBody>>, S::Error>
where
    S: Service<Request<RequestBody<ReqBody>>, Response = Response<ResBody>>,
    S::Error: fmt::Display + 'static,
    ReqBody: Body<Data = Bytes> + Unpin,
    ResBody: Body<Data = Bytes>,
{
    let (mut parts, body) = req.into_parts();
    let (body, complete) = read_prefix(body, shared.max_request_bytes).await;
    let request = request_info(&shared, &endpoint, complete.as_deref());
    let exchange = Exchange::new(shared.config.clone(), endpoint, request, Instant::now());
    let span = GenAiSpan::start(&shared, exchange, &parts, &parent);
    let cx = span.context().cloned().unwrap_or_default();
    if shared.side == Side::Client {
        propagation::inject(&cx, &mut parts.headers);
    }
    let future = {
        let _guard = cx.clone().attach();
        inner.call(Request::from_parts(parts, body))
    };
    let mut observer = GenAiObserver {
        span: Box::new(span),
        errors: shared.errors.clone(),
    };
    match in_context(&cx, future).await {
        Ok(response) => {
            let (parts, body) = response.into_parts();
            observer.span.on_response_head(parts.status, &parts.headers);
            Ok(Response::from_parts(
                parts,
                ObservedBody::new(body, observer),
            ))
        }
        Err(error) => {
            observer.on_error(ErrorRef::new(&error));
            Err(error)
        }
    }
}

/// What the exchange learns from the request body: all of it, or that it was too large.
fn request_info(shared: &GenAiRecorder, endpoint: &Endpoint, body: Option<&[u8]>) -> RequestInfo {
    match body {
        Some(bytes) => RequestInfo::parse_with(endpoint, bytes, &shared.config),
        None => RequestInfo::body_not_read(endpoint, shared.max_request_bytes),
    }
}

/// Polls `future` with `cx` current, so the inner service's spans nest under ours.
pub(super) async fn in_context<F: Future>(cx: &Context, future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(|task| {
        let _guard = cx.clone().attach();
        future.as_mut().poll(task)
    })
    .await
}

/// Reads up to `max` bytes of `body`. Returns a body that replays what was read followed by
/// the rest, and the whole body when it fit.
pub(super) async fn read_prefix<B>(mut body: B, max: usize) -> (RequestBody<B>, Option<Bytes>)
where
    B: Body<Data = Bytes> + Unpin,
{
    let mut buffer = BytesMut::new();
    let mut trailers = None;
    loop {
        if body.is_end_stream() {
            break;
        }
        let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        match frame {
            None => break,
            Some(Ok(frame)) => match frame.into_data() {
                Ok(mut data) => {
                    let data = data.copy_to_bytes(data.remaining());
                    buffer.extend_from_slice(&data);
                    if buffer.len() > max {
                        let prefix = buffer.freeze();
                        return (RequestBody::prefixed(prefix, body, None), None);
                    }
                }
                Err(frame) => {
                    trailers = frame.into_trailers().ok();
                    break;
                }
            },
            Some(Err(error)) => {
                // Let the inner service see the failure when it reads the body.
                let prefix = buffer.freeze();
                return (RequestBody::failed(prefix, body, error), None);
            }
        }
    }
    let bytes = buffer.freeze();
    (
        RequestBody::read(bytes.clone(), body, trailers),
        Some(bytes),
    )
}

pin_project! {
    /// The request body [`GenAiService`] sends on: what it read first, then the rest of the
    /// original body (untouched when nothing was read).
    pub struct RequestBody<B>
    where
        B: Body,
    {
        prefix: Option<Bytes>,
        trailers: Option<http::HeaderMap>,
        error: Option<B::Error>,
        finished: bool,
        #[pin]
        rest: B,
    }
}

impl<B: Body> RequestBody<B> {
    pub(super) fn untouched(rest: B) -> Self {
        Self {
            prefix: None,
            trailers: None,
            error: None,
            finished: false,
            rest,
        }
    }

    fn read(prefix: Bytes, rest: B, trailers: Option<http::HeaderMap>) -> Self {
        // The original body is done: only the prefix (and trailers) remain.
        Self {
            prefix: Some(prefix),
            trailers,
            error: None,
            finished: true,
            rest,
        }
    }

    fn prefixed(prefix: Bytes, rest: B, trailers: Option<http::HeaderMap>) -> Self {
        Self {
            prefix: Some(prefix),
            trailers,
            error: None,
            finished: false,
            rest,
        }
    }

    fn failed(prefix: Bytes, rest: B, error: B::Error) -> Self {
        Self {
            prefix: Some(prefix),
            trailers: None,
            error: Some(error),
            finished: true,
            rest,
        }
    }
}

impl<B: Body<Data = Bytes>> Body for RequestBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        if let Some(prefix) = this.prefix.take() {
            if !prefix.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(prefix))));
            }
        }
        if let Some(error) = this.error.take() {
            return Poll::Ready(Some(Err(error)));
        }
        if *this.finished {
            return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
        }
        this.rest.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.as_ref().is_none_or(Bytes::is_empty)
            && self.error.is_none()
            && self.trailers.is_none()
            && (self.finished || self.rest.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let prefix = self.prefix.as_ref().map_or(0, |p| p.len() as u64);
        if self.finished {
            return SizeHint::with_exact(prefix);
        }
        let rest = self.rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + prefix);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + prefix);
        }
        hint
    }
}

impl<B: fmt::Debug + Body> fmt::Debug for RequestBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestBody")
            .field("rest", &self.rest)
            .finish_non_exhaustive()
    }
}

// === impl GenAiObserver ===

/// The observer of [`GenAiBody`]: feeds every chunk to the exchange's
/// [`Exchange`] observer and finishes the GenAI span, its events and metrics when the body
/// ends, fails, or is dropped early (client gone: `llmtrace.aborted`).
#[derive(Debug)]
pub struct GenAiObserver {
    span: Box<GenAiSpan>,
    errors: ErrorClassifier,
}

impl BodyObserver for GenAiObserver {
    fn context(&self) -> Option<&Context> {
        self.span.context()
    }

    fn on_data(&mut self, data: &dyn Buf) {
        let chunk = data.chunk();
        if chunk.len() == data.remaining() {
            self.span.on_response_data(chunk);
            return;
        }
        // Not one contiguous chunk (our bodies carry `Bytes`, which always is): pass the parts.
        let mut parts = [std::io::IoSlice::new(&[]); 64];
        let n = data.chunks_vectored(&mut parts);
        for part in &parts[..n] {
            self.span.on_response_data(part);
        }
    }

    fn on_eos(mut self) {
        self.span.finish(End::Complete);
    }

    fn on_error(mut self, error: ErrorRef<'_>) {
        self.span.finish(self.errors.end(&error));
    }

    // An early drop: `GenAiSpan`'s own drop finishes the exchange as aborted.
}

/// The response body of [`GenAiService`]: every frame passes through unchanged and at once;
/// the exchange's observer sees it on the way (see [`GenAiObserver`] and [`ObservedBody`]).
pub type GenAiBody<B> = ObservedBody<B, GenAiObserver>;
