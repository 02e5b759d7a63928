//! [`VectorDbLayer`]: database spans for HTTP calls to Chroma, Qdrant and Weaviate.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use bytes::{Buf, Bytes};
use http::{Request, Response};
use http_body::Body;
use opentelemetry::Context;
use opentelemetry::global::BoxedTracer;
use tower_layer::Layer;
use tower_service::Service;

use super::body::{BodyObserver, ObservedBody};
use super::default_tracer;
use super::genai::{RequestBody, in_context, read_prefix};
use crate::driver::{ErrorClassifier, ErrorRef, StatusClassifier, VectorDbSpan};
use crate::genai::End;
use crate::propagation;
use crate::vectordb::{CollectionNames, MAX_REQUEST_BYTES, VectorDbCall};

/// A [`Layer`] for an HTTP client of a vector database: a CLIENT span per Chroma, Qdrant or
/// Weaviate call (see [`vectordb`](crate::vectordb) for what is recognised and recorded),
/// named `{db.operation.name} {db.collection.name}` (`query docs`).
///
/// For a recognised request the layer reads the request body when the operation's body says
/// something the path does not (up to 1 MiB; larger ones stream through unread), starts the
/// span as a child of the request's [`opentelemetry::Context`] extension or else of the
/// current context, and injects the span's context (`traceparent`, `tracestate`,
/// `baggage`). The response passes through frame by frame, at once; a copy of at most 4 MiB
/// is kept to count the returned rows when the body ends, which is when the span ends (with
/// `db.response.status_code`, `db.response.returned_rows`). 4xx and 5xx answers are errors
/// (`error.type` is the status code), as are Weaviate answers with GraphQL `errors`
/// (`graphql_error`). Any other request (health checks, unknown routes) passes through
/// untouched, without a span.
///
/// ```
/// use llmtrace::VectorDbLayer;
/// use tower::ServiceBuilder;
///
/// # fn wrap<S>(client: S) {
/// let traced = ServiceBuilder::new().layer(VectorDbLayer::new()).service(client);
/// # let _ = traced;
/// # }
/// ```
#[derive(Clone)]
pub struct VectorDbLayer {
    shared: Arc<Shared>,
}

#[derive(Clone)]
struct Shared {
    tracer: Arc<BoxedTracer>,
    errors: ErrorClassifier,
    status_classifier: Option<StatusClassifier>,
    names: Arc<CollectionNames>,
    max_request_bytes: usize,
}

impl fmt::Debug for VectorDbLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VectorDbLayer")
            .field("errors", &self.shared.errors)
            .field(
                "status_classifier",
                &self.shared.status_classifier.is_some(),
            )
            .field("max_request_bytes", &self.shared.max_request_bytes)
            .finish_non_exhaustive()
    }
}

impl Default for VectorDbLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl VectorDbLayer {
    /// A layer that uses the global tracer provider's `llmtrace` tracer (taken when the layer
    /// is built).
    pub fn new() -> Self {
        Self {
            shared: Arc::new(Shared {
                tracer: Arc::new(default_tracer()),
                errors: ErrorClassifier::default(),
                status_classifier: None,
                names: Arc::new(CollectionNames::default()),
                max_request_bytes: MAX_REQUEST_BYTES,
            }),
        }
    }

    /// Request bodies larger than this stream through without being read (default 1 MiB).
    pub fn with_max_request_bytes(self, max: usize) -> Self {
        self.update(|s| s.max_request_bytes = max)
    }

    fn update(mut self, f: impl FnOnce(&mut Shared)) -> Self {
        f(Arc::make_mut(&mut self.shared));
        self
    }

    fn set_tracer(self, tracer: BoxedTracer) -> Self {
        self.update(|s| s.tracer = Arc::new(tracer))
    }

    fn set_errors(self, errors: ErrorClassifier) -> Self {
        self.update(|s| s.errors = errors)
    }

    fn set_status_classifier(self, classifier: StatusClassifier) -> Self {
        self.update(|s| s.status_classifier = Some(classifier))
    }
}

tracer_and_error_builders!(VectorDbLayer, "new");
status_classifier_builder!(
    VectorDbLayer,
    client_default,
    "A 404 of a lookup by id is an answer, not a failure."
);

impl<S> Layer<S> for VectorDbLayer {
    type Service = VectorDbService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        VectorDbService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The [`Service`] made by [`VectorDbLayer`].
#[derive(Clone)]
pub struct VectorDbService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: fmt::Debug> fmt::Debug for VectorDbService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VectorDbService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for VectorDbService<S>
where
    S: Service<Request<RequestBody<ReqBody>>, Response = Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: fmt::Display + Send + 'static,
    ReqBody: Body<Data = Bytes> + Send + Unpin + 'static,
    ReqBody::Error: fmt::Display + Send,
    ResBody: Body<Data = Bytes> + 'static,
    ResBody::Error: fmt::Display + 'static,
{
    type Response = Response<VectorDbBody<ResBody>>;
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
        let path = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
        let Some(call) = VectorDbCall::detect(req.method(), path) else {
            let future = inner.call(req.map(RequestBody::untouched));
            return Box::pin(async move { Ok(future.await?.map(ObservedBody::unobserved)) });
        };
        let parent = req
            .extensions()
            .get::<Context>()
            .cloned()
            .unwrap_or_else(Context::current);
        Box::pin(traced_call(inner, self.shared.clone(), call, parent, req))
    }
}

/// One traced call: reads what the body says (when it says something), starts the span,
/// calls `inner` with the span's context current and injected, and hands the span to the
/// response body, or ends it with the service's error.
async fn traced_call<S, ReqBody, ResBody>(
    mut inner: S,
    shared: Arc<Shared>,
    mut call: VectorDbCall,
    parent: Context,
    req: Request<ReqBody>,
) -> Result<Response<VectorDbBody<ResBody>>, S::Error>
where
    S: Service<Request<RequestBody<ReqBody>>, Response = Response<ResBody>>,
    S::Error: fmt::Display + 'static,
    ReqBody: Body<Data = Bytes> + Unpin,
    ResBody: Body<Data = Bytes>,
{
    let (mut parts, body) = req.into_parts();
    let body = if call.wants_request_body() {
        let (body, complete) = read_prefix(body, shared.max_request_bytes).await;
        call.observe_request_body(complete.as_deref());
        body
    } else {
        RequestBody::untouched(body)
    };
    let span = VectorDbSpan::start(&shared.tracer, call, &parts, &parent, &shared.names)
        .with_status_classifier(shared.status_classifier.clone());
    let cx = span.context().cloned().unwrap_or_else(|| parent.clone());
    propagation::inject(&cx, &mut parts.headers);
    let future = {
        let _guard = cx.clone().attach();
        inner.call(Request::from_parts(parts, body))
    };
    let mut observer = VectorDbObserver {
        span,
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

// === impl VectorDbObserver ===

/// The observer of [`VectorDbBody`]: keeps a bounded copy of the answer for the returned
/// count and ends the call's span when the body ends (with the database attributes), fails,
/// or is dropped early (`llmtrace.aborted`).
pub struct VectorDbObserver {
    span: VectorDbSpan,
    errors: ErrorClassifier,
}

impl fmt::Debug for VectorDbObserver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VectorDbObserver")
            .field("span", &self.span)
            .finish_non_exhaustive()
    }
}

impl BodyObserver for VectorDbObserver {
    fn context(&self) -> Option<&Context> {
        self.span.context()
    }

    fn on_data(&mut self, data: &dyn Buf) {
        let chunk = data.chunk();
        if chunk.len() == data.remaining() {
            self.span.on_response_data(chunk);
            return;
        }
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
        let end = self.errors.end(&error);
        self.span.finish(end);
    }

    // Dropped early, `VectorDbSpan`'s own drop ends the span as aborted.
}

/// The response body of [`VectorDbService`]: every frame passes through unchanged and at
/// once; [`VectorDbObserver`] sees it on the way.
pub type VectorDbBody<B> = ObservedBody<B, VectorDbObserver>;
