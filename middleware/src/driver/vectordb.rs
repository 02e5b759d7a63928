//! [`VectorDbSpan`]: the CLIENT span of one Chroma, Qdrant or Weaviate call, from its request
//! head to the end of its answer.

use std::sync::Arc;

use opentelemetry::global::BoxedTracer;
use opentelemetry::trace::{SpanBuilder, SpanKind, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};

use super::attrs;
use super::business::BusinessAttributes;
use super::classify::StatusClassifier;
use super::span::{self, ExchangeSpan, Side};
use crate::genai::End;
use crate::semconv;
use crate::vectordb::{CollectionNames, ResponseObserver, VectorDbCall};

/// One vector database call in flight: its span and the [`ResponseObserver`] counting the
/// answer's rows. It ends exactly once, on [`finish`](Self::finish) or, when dropped first, as
/// aborted.
///
/// An adapter that has the request body before the call goes out (the tower layer reads it
/// first) passes it to [`VectorDbCall::observe_request_body`] before [`start`](Self::start);
/// one that sees the body only after the request head has gone (the gateway streams it)
/// passes it later to [`on_request_body`](Self::on_request_body), which renames the span and
/// adds what the body said.
///
/// ```
/// use std::sync::Arc;
/// use llmtrace::driver::VectorDbSpan;
/// use llmtrace::genai::End;
/// use llmtrace::vectordb::{CollectionNames, VectorDbCall};
///
/// let names = Arc::new(CollectionNames::default());
/// let tracer = opentelemetry::global::tracer("doc");
/// let (parts, _) = http::Request::post("/collections/docs/points/search").body(()).unwrap().into_parts();
/// let call = VectorDbCall::detect(&parts.method, parts.uri.path()).unwrap();
/// let mut span = VectorDbSpan::start(&tracer, call, &parts, &opentelemetry::Context::new(), &names);
/// span.on_request_body(Some(br#"{"vector":[0.1,0.2],"limit":3}"#));
/// span.on_response_head(http::StatusCode::OK, &http::HeaderMap::new());
/// span.on_response_data(br#"{"result":[{"id":1,"score":0.9}],"status":"ok","time":0.001}"#);
/// span.finish(End::Complete);
/// ```
#[derive(Debug)]
pub struct VectorDbSpan {
    span: ExchangeSpan,
    call: VectorDbCall,
    response: ResponseObserver,
    names: Arc<CollectionNames>,
    body_seen: bool,
    done: bool,
}

impl VectorDbSpan {
    /// Starts the span for `call`, a child of `parent` (with its business context), with the
    /// HTTP client attributes of `parts` (method, server address, the URL with secret query
    /// values redacted).
    /// A Chroma collection given by id is named by its name when `names` knows it.
    pub fn start(
        tracer: &BoxedTracer,
        mut call: VectorDbCall,
        parts: &http::request::Parts,
        parent: &Context,
        names: &Arc<CollectionNames>,
    ) -> Self {
        call.resolve_collection(names);
        let mut attributes = call.attributes();
        attrs::push_method(&mut attributes, &parts.method);
        attrs::push_server_address(&mut attributes, &parts.uri, &parts.headers);
        if let Some(url) = attrs::redacted_url(&parts.uri) {
            attributes.push(KeyValue::new(semconv::http::URL_FULL, url));
        }
        if let Some(business) = BusinessAttributes::of(parent) {
            attributes.extend_from_slice(business.attributes());
        }
        let builder = SpanBuilder::from_name(call.span_name())
            .with_kind(SpanKind::Client)
            .with_attributes(attributes);
        let cx = span::child_context(parent, tracer.build_with_context(builder, parent));
        Self {
            span: ExchangeSpan::new(cx, Side::Client, false, None),
            response: call.response_observer(),
            call,
            names: names.clone(),
            body_seen: false,
            done: false,
        }
    }

    /// Decides which statuses are failures (default: 4xx and 5xx).
    pub(crate) fn with_status_classifier(mut self, classifier: Option<StatusClassifier>) -> Self {
        self.span.set_status_classifier(classifier);
        self
    }

    /// The span's context, until it ends: inject it into the request going to the database.
    pub fn context(&self) -> Option<&Context> {
        self.span.context()
    }

    /// The call as recognised (and as the body refined it).
    pub fn call(&self) -> &VectorDbCall {
        &self.call
    }

    /// The request body, read after the span started: `Some(bytes)` when it was read whole,
    /// `None` when it was too large to read. What it says (top-k, a collection the path did
    /// not name, a batch's size) is added to the span, and the span is renamed when the
    /// collection changed. Does nothing for a call whose body says nothing
    /// ([`VectorDbCall::wants_request_body`]), or for a body seen before (a retry replays it).
    pub fn on_request_body(&mut self, body: Option<&[u8]>) {
        if !self.call.wants_request_body() || std::mem::replace(&mut self.body_seen, true) {
            return;
        }
        let before = self.call.span_name();
        self.call.observe_request_body(body);
        self.call.resolve_collection(&self.names);
        if let Some(cx) = self.span.context() {
            let span = cx.span();
            span.set_attributes(self.call.attributes());
            let name = self.call.span_name();
            if name != before {
                span.update_name(name);
            }
        }
    }

    /// The answer's head arrived.
    pub fn on_response_head(&mut self, status: http::StatusCode, headers: &http::HeaderMap) {
        self.span.on_response_head(status, headers);
        self.response.on_response_head(status.as_u16());
    }

    /// A chunk of the answer's body, as it passes (a bounded copy is kept to count rows).
    pub fn on_response_data(&mut self, data: &[u8]) {
        self.span.on_data(data.len());
        self.response.on_response_data(data);
    }

    /// Ends the span: records the status and returned rows, remembers a Chroma collection's
    /// id and name, and fails a Weaviate answer that carries GraphQL `errors`. Later calls do
    /// nothing.
    pub fn finish(&mut self, end: End) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let response = std::mem::replace(&mut self.response, self.call.response_observer());
        let report = response.finish();
        if let Some(cx) = self.span.context() {
            cx.span().set_attributes(report.attributes());
        }
        if let Some((id, name)) = &report.collection {
            self.names.remember(id, name);
        }
        if let Some(error_type) = report.error_type {
            let message = "the answer reports errors".to_owned();
            self.span.fail_on_complete(error_type.to_owned(), message);
        }
        self.span.end(end);
    }
}

impl Drop for VectorDbSpan {
    fn drop(&mut self) {
        // While unwinding, `ExchangeSpan`'s own drop ends the span as a panic.
        if !std::thread::panicking() {
            self.finish(End::Aborted);
        }
    }
}
