//! [`ObservedBody`]: a response body that passes every frame through unchanged and tells a
//! [`BodyObserver`] what went by and how the body ended.
//!
//! One body type serves every layer: [`TracedBody`] (the server and client layers, observed by
//! a [`SpanObserver`]) and [`GenAiBody`](super::GenAiBody) (the GenAI layer, observed by a
//! [`GenAiObserver`](super::GenAiObserver)) are this body with their observer.
//!
//! The observer is called, while the inner body is polled:
//! - [`on_data`](BodyObserver::on_data) for each data frame, and
//!   [`on_trailers`](BodyObserver::on_trailers) for the trailers;
//! - then exactly one of [`on_eos`](BodyObserver::on_eos) (the inner body returned `None`, or
//!   reports [`is_end_stream`](Body::is_end_stream) after a frame, or was already complete
//!   when wrapped), [`on_error`](BodyObserver::on_error) (the inner body failed) or
//!   [`on_drop`](BodyObserver::on_drop) (the body was dropped before its end: a client that
//!   disconnects mid-stream). Each consumes the observer, so nothing can follow.

use std::fmt;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll, ready};

use bytes::Buf;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use opentelemetry::Context;
use pin_project_lite::pin_project;

use crate::driver::span::ExchangeSpan;
use crate::driver::{ErrorClassifier, ErrorRef};
use crate::genai::End;

/// What an [`ObservedBody`] reports to.
///
/// While the inner body is polled (with [`context`](Self::context) current), the body calls
/// [`on_data`](Self::on_data) for each data frame and [`on_trailers`](Self::on_trailers) for
/// the trailers; then exactly one of [`on_eos`](Self::on_eos) (the inner body returned
/// `None`, or reports [`is_end_stream`](Body::is_end_stream) after a frame, or was already
/// complete when wrapped), [`on_error`](Self::on_error) (the inner body failed) or
/// [`on_drop`](Self::on_drop) (the body was dropped before its end: a client that disconnects
/// mid-stream). Each of those consumes the observer, so nothing can follow.
///
/// ```
/// use llmtrace::layer::{BodyObserver, ErrorRef, ObservedBody};
///
/// /// Counts the bytes of a response.
/// struct Count(u64);
///
/// impl BodyObserver for Count {
///     fn on_data(&mut self, data: &dyn bytes::Buf) {
///         self.0 += data.remaining() as u64;
///     }
///     fn on_eos(self) {
///         println!("{} bytes", self.0);
///     }
///     fn on_error(self, error: ErrorRef<'_>) {
///         println!("failed after {} bytes: {error}", self.0);
///     }
/// }
///
/// let body = ObservedBody::new(http_body_util::Full::new(bytes::Bytes::from("hi")), Count(0));
/// # let _ = body;
/// ```
pub trait BodyObserver: Sized {
    /// The context made current while the inner body is polled, so that spans a streaming
    /// producer starts nest under ours. `None` (the default): the caller's.
    fn context(&self) -> Option<&Context> {
        None
    }

    /// A data frame passed through.
    fn on_data(&mut self, data: &dyn Buf) {
        let _ = data;
    }

    /// The trailers passed through.
    fn on_trailers(&mut self, trailers: &HeaderMap) {
        let _ = trailers;
    }

    /// The body ended.
    fn on_eos(self);

    /// The inner body failed with `error`; the error is passed on unchanged.
    fn on_error(self, error: ErrorRef<'_>);

    /// The body was dropped before its end. By default the observer is dropped.
    fn on_drop(self) {}
}

pin_project! {
    /// A response body that passes every frame through unchanged and at once, and reports
    /// what went by and how it ended to a [`BodyObserver`] (see there for when each callback
    /// fires). [`TracedBody`] and [`GenAiBody`](super::GenAiBody) are this body with their
    /// observers.
    pub struct ObservedBody<B, O>
    where
        O: BodyObserver,
    {
        #[pin]
        inner: B,
        observer: Option<O>,
    }

    impl<B, O> PinnedDrop for ObservedBody<B, O>
    where
        O: BodyObserver,
    {
        fn drop(this: Pin<&mut Self>) {
            if let Some(observer) = this.project().observer.take() {
                observer.on_drop();
            }
        }
    }
}

impl<B, O: BodyObserver> ObservedBody<B, O> {
    /// `inner`, observed by `observer`. A body that is already complete (empty, or a `HEAD`
    /// answer) ends at once, since nothing more will be polled.
    pub fn new(inner: B, observer: O) -> Self
    where
        B: Body,
    {
        let observer = if inner.is_end_stream() {
            observer.on_eos();
            None
        } else {
            Some(observer)
        };
        Self { inner, observer }
    }

    /// `inner` with nobody observing it (a request that is not traced).
    pub fn unobserved(inner: B) -> Self {
        Self {
            inner,
            observer: None,
        }
    }

    /// The wrapped body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }
}

impl<B: fmt::Debug, O: BodyObserver> fmt::Debug for ObservedBody<B, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObservedBody")
            .field("inner", &self.inner)
            .field("observed", &self.observer.is_some())
            .finish()
    }
}

impl<B, O> Body for ObservedBody<B, O>
where
    B: Body,
    B::Error: fmt::Display + 'static,
    O: BodyObserver,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let Some(observer) = this.observer.as_mut() else {
            return this.inner.poll_frame(cx);
        };
        let result = {
            let _guard = observer.context().map(|c| c.clone().attach());
            ready!(this.inner.as_mut().poll_frame(cx))
        };
        let ended = match &result {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    observer.on_data(data);
                } else if let Some(trailers) = frame.trailers_ref() {
                    observer.on_trailers(trailers);
                }
                this.inner.is_end_stream()
            }
            Some(Err(_)) | None => true,
        };
        if ended {
            if let Some(observer) = this.observer.take() {
                match &result {
                    Some(Err(error)) => observer.on_error(ErrorRef::new(error)),
                    _ => observer.on_eos(),
                }
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

// === impl SpanObserver ===

/// The observer of the server and client layers' bodies: counts the body's bytes, reads
/// `grpc-status` from the trailers, and ends the exchange's span on the body's end (the
/// status decides), on an error (`error.type` and the message) or on an early drop (marked
/// `llmtrace.aborted = true`, with an error status).
#[derive(Debug)]
pub struct SpanObserver {
    span: ExchangeSpan,
    errors: ErrorClassifier,
}

impl SpanObserver {
    pub(crate) fn new(span: ExchangeSpan, errors: ErrorClassifier) -> Self {
        Self { span, errors }
    }

    /// Ends the span as failed with `error`.
    pub(crate) fn fail(mut self, error: ErrorRef<'_>) {
        self.span.end(self.errors.end(&error));
    }

    pub(crate) fn span_mut(&mut self) -> &mut ExchangeSpan {
        &mut self.span
    }
}

impl BodyObserver for SpanObserver {
    fn context(&self) -> Option<&Context> {
        self.span.context()
    }

    fn on_data(&mut self, data: &dyn Buf) {
        self.span.on_data(data.remaining());
    }

    fn on_trailers(&mut self, trailers: &HeaderMap) {
        self.span.on_trailers(trailers);
    }

    fn on_eos(mut self) {
        self.span.end(End::Complete);
    }

    fn on_error(self, error: ErrorRef<'_>) {
        self.fail(error);
    }

    // An early drop: `ExchangeSpan`'s own drop ends the span as aborted (or as a panic when
    // unwinding).
}

/// A response body that ends its exchange's span when the body ends: see [`SpanObserver`]
/// and [`ObservedBody`]. While the inner body is polled, the span's context is the current
/// OpenTelemetry context, so spans started by a streaming producer nest under it.
pub type TracedBody<B> = ObservedBody<B, SpanObserver>;
