//! One HTTP exchange's span, from the request head to the end of the response body.
//!
//! [`ExchangeSpan`] is shared by the layers and the drivers. It owns the span's
//! [`Context`] and guarantees the span ends exactly once: through [`ExchangeSpan::end`], or,
//! when the owner is dropped first (the response future or body was dropped before the end),
//! as aborted.

use std::borrow::Cow;
use std::sync::Arc;

use http::{HeaderMap, StatusCode};
use opentelemetry::global::BoxedSpan;
use opentelemetry::trace::{Span as _, Status, TraceContextExt};
use opentelemetry::{Context, KeyValue};

use super::attrs::HeaderCapture;
use super::classify::{ResponseStatus, StatusClass, StatusClassifier};
use crate::genai::End;
use crate::{propagation, semconv};

/// `parent` with `span` as its span. When `parent` held no trace, the span starts a new one
/// whose id our SDK drew at random: the context says so, so that `inject` sets the
/// Level 2 random flag.
pub(crate) fn child_context(parent: &Context, span: BoxedSpan) -> Context {
    let new_trace = !parent.span().span_context().is_valid();
    let trace_id = span.span_context().trace_id();
    let cx = parent.with_span(span);
    if new_trace {
        cx.with_value(propagation::RandomTraceId(trace_id))
    } else {
        cx
    }
}

/// Which side of the exchange the span describes; decides which statuses are errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    /// We received the request: 5xx is an error, 4xx is the caller's problem.
    Server,
    /// We sent the request: 4xx and 5xx are both errors.
    Client,
}

/// A live span for one exchange. See the module docs.
#[derive(Debug)]
pub(crate) struct ExchangeSpan {
    /// `None` once the span has ended.
    cx: Option<Context>,
    side: Side,
    grpc: bool,
    recording: bool,
    /// The span in `cx` is this exchange's own, to end; `false` for an untraced exchange,
    /// whose context is its parent's.
    owned: bool,
    status: Option<StatusCode>,
    grpc_status: Option<i32>,
    body_bytes: u64,
    response_headers: Option<Arc<HeaderCapture>>,
    /// An error the body revealed that the HTTP status does not show (an in-stream error
    /// event, a truncated stream, a provider error body).
    body_error: Option<(String, String)>,
    /// The user's status rule; `None`: the side's default.
    status_classifier: Option<StatusClassifier>,
}

impl ExchangeSpan {
    pub(crate) fn new(
        cx: Context,
        side: Side,
        grpc: bool,
        response_headers: Option<Arc<HeaderCapture>>,
    ) -> Self {
        let recording = cx.span().is_recording();
        Self {
            cx: Some(cx),
            side,
            grpc,
            recording,
            owned: true,
            status: None,
            grpc_status: None,
            body_bytes: 0,
            response_headers,
            body_error: None,
            status_classifier: None,
        }
    }

    /// An exchange without a span of its own: `parent` is its context (what goes upstream is
    /// the parent's trace context, unchanged), nothing is recorded on it and it is never ended.
    pub(crate) fn untraced(parent: Context, side: Side, grpc: bool) -> Self {
        Self {
            cx: Some(parent),
            side,
            grpc,
            recording: false,
            owned: false,
            status: None,
            grpc_status: None,
            body_bytes: 0,
            response_headers: None,
            body_error: None,
            status_classifier: None,
        }
    }

    /// Classifies the response status with `classifier` instead of the side's default rule.
    pub(crate) fn with_status_classifier(mut self, classifier: Option<StatusClassifier>) -> Self {
        self.set_status_classifier(classifier);
        self
    }

    /// Classifies the response status with `classifier` instead of the side's default rule.
    pub(crate) fn set_status_classifier(&mut self, classifier: Option<StatusClassifier>) {
        self.status_classifier = classifier;
    }

    /// The exchange's own span records (never for an untraced one).
    pub(crate) fn recording(&self) -> bool {
        self.recording && self.cx.is_some()
    }

    /// The span's context, until it ends.
    pub(crate) fn context(&self) -> Option<&Context> {
        self.cx.as_ref()
    }

    /// Records the response head: status, a trailers-only `grpc-status`, captured headers.
    pub(crate) fn on_response_head(&mut self, status: StatusCode, headers: &HeaderMap) {
        self.status = Some(status);
        if self.grpc {
            self.record_grpc_status(headers);
        }
        let Some(cx) = self.cx.as_ref().filter(|_| self.recording) else {
            return;
        };
        let span = cx.span();
        span.set_attribute(KeyValue::new(
            semconv::http::RESPONSE_STATUS_CODE,
            i64::from(status.as_u16()),
        ));
        if let Some(capture) = &self.response_headers {
            span.set_attributes(capture.attributes(headers));
        }
    }

    /// Records `attributes` on a recording span (nothing on an untraced or ended one).
    pub(crate) fn set_attributes(&self, attributes: Vec<KeyValue>) {
        if let Some(cx) = self.cx.as_ref().filter(|_| self.recording) {
            cx.span().set_attributes(attributes);
        }
    }

    /// Marks the exchange as failed when it completes: `error_type` wins over the status.
    pub(crate) fn fail_on_complete(&mut self, error_type: String, message: String) {
        self.body_error = Some((error_type, message));
    }

    /// Counts streamed response bytes.
    pub(crate) fn on_data(&mut self, len: usize) {
        self.body_bytes += len as u64;
    }

    /// Records `grpc-status` from the trailers.
    pub(crate) fn on_trailers(&mut self, trailers: &HeaderMap) {
        if self.grpc {
            self.record_grpc_status(trailers);
        }
    }

    fn record_grpc_status(&mut self, headers: &HeaderMap) {
        if let Some(code) = headers
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<i32>().ok())
        {
            self.grpc_status = Some(code);
        }
    }

    /// Ends the span. Later calls (and the drop) do nothing.
    pub(crate) fn end(&mut self, end: End) {
        self.end_with(end, Vec::new());
    }

    /// [`end`](Self::end), recording `attributes` (on a recording span) before the end's own.
    /// They go to the span with the end's attributes in one call: each call locks the span
    /// and walks the SDK's dynamic calls once more.
    pub(crate) fn end_with(&mut self, end: End, mut attributes: Vec<KeyValue>) {
        let Some(cx) = self.cx.take() else {
            return;
        };
        let span = cx.span();
        if !self.recording {
            if self.owned {
                span.end();
            }
            return;
        }
        attributes.reserve(3);
        if self.status.is_some() {
            attributes.push(KeyValue::new(
                semconv::http::RESPONSE_BODY_SIZE,
                self.body_bytes as i64,
            ));
        }
        if let Some(code) = self.grpc_status {
            attributes.push(KeyValue::new(
                semconv::rpc::GRPC_STATUS_CODE,
                i64::from(code),
            ));
        }
        let status = match end {
            End::Complete => match self.body_error.take() {
                Some((error_type, message)) => {
                    attributes.push(KeyValue::new(semconv::http::ERROR_TYPE, error_type));
                    Status::error(message)
                }
                None => self.status_from_response(&mut attributes),
            },
            End::Failed {
                error_type,
                message,
            } => {
                attributes.push(KeyValue::new(semconv::http::ERROR_TYPE, error_type));
                Status::error(message)
            }
            End::Aborted => {
                attributes.push(KeyValue::new(semconv::llmtrace::ABORTED, true));
                attributes.push(KeyValue::new(
                    semconv::http::ERROR_TYPE,
                    semconv::llmtrace::ABORTED_ERROR_TYPE,
                ));
                let message = match (self.side, self.status.is_some()) {
                    (Side::Server, true) => "client disconnected before the response body ended",
                    (Side::Server, false) => "client disconnected before the response started",
                    (Side::Client, true) => "response body dropped before its end",
                    (Side::Client, false) => "request cancelled before the response arrived",
                };
                Status::error(message)
            }
        };
        if !attributes.is_empty() {
            span.set_attributes(attributes);
        }
        // `Unset` never replaces a status (the SDK keeps the highest): no call needed.
        if status != Status::Unset {
            span.set_status(status);
        }
        span.end();
    }

    fn status_from_response(&self, attributes: &mut Vec<KeyValue>) -> Status {
        let Some(http) = self.status else {
            return Status::Unset;
        };
        let status = ResponseStatus {
            http,
            is_grpc: self.grpc,
            grpc: self.grpc_status.filter(|_| self.grpc),
        };
        let class = match (&self.status_classifier, self.side) {
            (Some(classifier), _) => classifier.classify(&status),
            (None, Side::Server) => status.server_default(),
            (None, Side::Client) => status.client_default(),
        };
        let StatusClass::Error(error_type) = class else {
            return Status::Unset;
        };
        attributes.push(KeyValue::new(
            semconv::http::ERROR_TYPE,
            crate::limits::bounded(&error_type, crate::limits::MAX_NAME_BYTES).into_owned(),
        ));
        match status.grpc {
            Some(code) if code != 0 => Status::error(format!(
                "gRPC status {}",
                super::attrs::grpc_code_name(code)
            )),
            // Per the HTTP conventions the description is left empty when the status code
            // already says it all.
            _ => Status::error(""),
        }
    }
}

impl Drop for ExchangeSpan {
    fn drop(&mut self) {
        if self.cx.is_none() {
            return;
        }
        // Dropped while unwinding: the inner service or body panicked while we held the span.
        let end = if std::thread::panicking() {
            End::Failed {
                error_type: Cow::Borrowed(semconv::llmtrace::PANIC_ERROR_TYPE),
                message: "panicked while handling the request".to_owned(),
            }
        } else {
            End::Aborted
        };
        self.end(end);
    }
}
