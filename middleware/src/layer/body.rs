//! [`TracedBody`]: a response body that ends its span when the body ends.

use std::fmt;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll, ready};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::driver::span::ExchangeSpan;
use crate::genai::End;

pin_project! {
    /// A response body that passes every frame through unchanged and at once, and ends the
    /// exchange's span when the body ends.
    ///
    /// The span ends exactly once, on whichever comes first:
    /// - the last frame: the inner body returned `None`, or reports
    ///   [`is_end_stream`](Body::is_end_stream) after a frame;
    /// - an error from the inner body (the span records `error.type` and the message);
    /// - the body being dropped before its end, which is how a client that disconnects
    ///   mid-stream shows up: the span is marked `llmtrace.aborted = true` with an error
    ///   status.
    ///
    /// A body that is already complete when the response head is produced (empty, or a
    /// `HEAD` answer) ends the span at once, since nothing more will be polled.
    ///
    /// While the inner body is polled, the span's context is the current OpenTelemetry
    /// context, so spans started by a streaming producer nest under it.
    pub struct TracedBody<B> {
        #[pin]
        inner: B,
        span: Option<ExchangeSpan>,
    }
}

impl<B> TracedBody<B> {
    pub(crate) fn new(inner: B, mut span: Option<ExchangeSpan>) -> Self
    where
        B: Body,
    {
        if inner.is_end_stream() {
            if let Some(mut span) = span.take() {
                span.end(End::Complete);
            }
        }
        Self { inner, span }
    }

    /// A body with no span attached (for requests that are not traced).
    pub(crate) fn untraced(inner: B) -> Self {
        Self { inner, span: None }
    }

    /// The wrapped body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }
}

impl<B: fmt::Debug> fmt::Debug for TracedBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TracedBody")
            .field("inner", &self.inner)
            .field("traced", &self.span.is_some())
            .finish()
    }
}

impl<B> Body for TracedBody<B>
where
    B: Body,
    B::Error: fmt::Display,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let Some(span) = this.span.as_mut() else {
            return this.inner.poll_frame(cx);
        };
        let result = {
            let _guard = span.context().map(|c| c.clone().attach());
            ready!(this.inner.as_mut().poll_frame(cx))
        };
        match &result {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    span.on_data(bytes::Buf::remaining(data));
                } else if let Some(trailers) = frame.trailers_ref() {
                    span.on_trailers(trailers);
                }
                if this.inner.is_end_stream() {
                    span.end(End::Complete);
                    *this.span = None;
                }
            }
            Some(Err(error)) => {
                span.end(End::Failed {
                    error_type: crate::driver::attrs::error_type_name::<B::Error>(),
                    message: error.to_string(),
                });
                *this.span = None;
            }
            None => {
                span.end(End::Complete);
                *this.span = None;
            }
        }
        Poll::Ready(result)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
