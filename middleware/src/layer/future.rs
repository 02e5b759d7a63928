//! The response future shared by the server and client layers.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll, ready};

use http::{HeaderValue, Response};
use opentelemetry::trace::TraceContextExt;
use pin_project_lite::pin_project;

use super::body::{BodyObserver, ObservedBody, SpanObserver, TracedBody};
use crate::driver::ErrorRef;
use crate::propagation::TraceParent;

pin_project! {
    /// Response future of [`ServerService`](super::ServerService) and
    /// [`ClientService`](super::ClientService).
    ///
    /// The span's context is attached while the inner future is polled. When the inner
    /// service answers, the span moves into the response's [`TracedBody`]; when it fails,
    /// the span ends with the error; when this future is dropped first, the span ends as
    /// aborted.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        observer: Option<SpanObserver>,
        traceresponse: bool,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn traced(inner: F, observer: SpanObserver, traceresponse: bool) -> Self {
        Self {
            inner,
            observer: Some(observer),
            traceresponse,
        }
    }

    pub(crate) fn untraced(inner: F) -> Self {
        Self {
            inner,
            observer: None,
            traceresponse: false,
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("traced", &self.observer.is_some())
            .finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: http_body::Body,
    E: fmt::Display + 'static,
{
    type Output = Result<Response<TracedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = {
            let _guard = this
                .observer
                .as_ref()
                .and_then(BodyObserver::context)
                .map(|c| c.clone().attach());
            ready!(this.inner.poll(cx))
        };
        let Some(mut observer) = this.observer.take() else {
            return Poll::Ready(result.map(|res| res.map(ObservedBody::unobserved)));
        };
        match result {
            Ok(response) => {
                let (mut parts, body) = response.into_parts();
                let span = observer.span_mut();
                span.on_response_head(parts.status, &parts.headers);
                if *this.traceresponse {
                    if let Some(value) = span.context().and_then(traceresponse_value) {
                        parts.headers.insert("traceresponse", value);
                    }
                }
                let body = ObservedBody::new(body, observer);
                Poll::Ready(Ok(Response::from_parts(parts, body)))
            }
            Err(error) => {
                observer.fail(ErrorRef::new(&error));
                Poll::Ready(Err(error))
            }
        }
    }
}

/// `traceresponse` (Trace Context Level 2): our span's id, so the caller can find the trace.
fn traceresponse_value(cx: &opentelemetry::Context) -> Option<HeaderValue> {
    let span = cx.span();
    let sc = span.span_context();
    if !sc.is_valid() {
        return None;
    }
    let value = TraceParent::new(sc.trace_id(), sc.span_id(), sc.trace_flags().to_u8());
    HeaderValue::try_from(value.to_string()).ok()
}
