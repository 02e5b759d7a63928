//! [`BatchSpan`]: the CLIENT span of one OpenAI Batch or Files API call, linked to the span
//! that made the batch or file it is about.

use std::sync::Arc;

use opentelemetry::global::BoxedTracer;
use opentelemetry::trace::{Link, SpanBuilder, SpanKind, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};

use super::attrs;
use super::business::BusinessAttributes;
use super::span::{self, ExchangeSpan, Side};
use crate::genai::{BatchCall, BatchIndex, BatchObserver, BatchReport, End, Provider};
use crate::semconv::{self, batch as names};

/// One Batch or Files API call in flight: its span and the [`BatchObserver`] reading the
/// answer. It ends exactly once, on [`finish`](Self::finish) or, when dropped first, as
/// aborted.
///
/// The span of a call about a known batch or file (a status poll, the output's download)
/// starts with a link to the span that made it; a batch's creation links to its input
/// file's upload when the answer names it. The [`BatchIndex`] remembers who made what.
///
/// ```
/// use std::sync::Arc;
/// use llmtrace::driver::BatchSpan;
/// use llmtrace::genai::{BatchCall, BatchIndex, End, Provider};
///
/// let index = Arc::new(BatchIndex::new(10_000));
/// let tracer = opentelemetry::global::tracer("doc");
/// let (parts, _) = http::Request::post("/v1/batches").body(()).unwrap().into_parts();
/// let call = BatchCall::detect(&parts.method, parts.uri.path()).unwrap();
/// let mut span = BatchSpan::start(&tracer, call, &Provider::OpenAi, &parts, &opentelemetry::Context::new(), &index);
/// span.on_response_head(http::StatusCode::OK, &http::HeaderMap::new());
/// span.on_response_data(br#"{"id":"batch_1","object":"batch","status":"validating","input_file_id":"file-1"}"#);
/// span.finish(End::Complete);
/// ```
#[derive(Debug)]
pub struct BatchSpan {
    span: ExchangeSpan,
    observer: BatchObserver,
    index: Arc<BatchIndex>,
    done: bool,
}

impl BatchSpan {
    /// Starts the span for `call` to `provider`, a child of `parent` (with its business
    /// context), linked to the span that made the batch or file the path names when `index`
    /// remembers it.
    pub fn start(
        tracer: &BoxedTracer,
        call: BatchCall,
        provider: &Provider,
        parts: &http::request::Parts,
        parent: &Context,
        index: &Arc<BatchIndex>,
    ) -> Self {
        let mut attributes = call.start_attributes();
        attributes.push(KeyValue::new(
            semconv::gen_ai::PROVIDER_NAME,
            provider.as_str().to_owned(),
        ));
        attrs::push_server_address(&mut attributes, &parts.uri, &parts.headers);
        attrs::push_method(&mut attributes, &parts.method);
        if let Some(business) = BusinessAttributes::of(parent) {
            attributes.extend_from_slice(business.attributes());
        }
        let mut builder = SpanBuilder::from_name(call.operation.as_str())
            .with_kind(SpanKind::Client)
            .with_attributes(attributes);
        if let Some(link) = call.id.as_deref().and_then(|id| made_by(index, id)) {
            builder = builder.with_links(vec![link]);
        }
        let cx = span::child_context(parent, tracer.build_with_context(builder, parent));
        Self {
            span: ExchangeSpan::new(cx, Side::Client, false, None),
            observer: BatchObserver::new(call),
            index: index.clone(),
            done: false,
        }
    }

    /// The span's context, until it ends: inject it into the upstream request.
    pub fn context(&self) -> Option<&Context> {
        self.span.context()
    }

    /// The answer's head arrived.
    pub fn on_response_head(&mut self, status: http::StatusCode, headers: &http::HeaderMap) {
        self.span.on_response_head(status, headers);
        self.observer.on_response_head(status.as_u16());
    }

    /// A chunk of the answer's body, as it passes.
    pub fn on_response_data(&mut self, data: &[u8]) {
        self.span.on_data(data.len());
        self.observer.on_response_data(data);
    }

    /// Ends the span: records what the answer said and remembers which batch and files this
    /// call made. Later calls do nothing.
    pub fn finish(&mut self, end: End) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let report = self.observer.finish();
        if let Some(cx) = self.span.context() {
            let span = cx.span();
            let made_here = span.span_context().clone();
            self.remember(&report, &made_here);
            if span.is_recording() {
                if let Some(link) = self.input_file_link(&report) {
                    span.add_link(link.span_context, link.attributes);
                }
                span.set_attributes(report.attributes);
            }
        }
        self.span.end(end);
    }

    /// The batch and files an answer names, each remembered with the span that made it: this
    /// one for what it created or first saw; a batch's own files go with the batch's span.
    fn remember(&self, report: &BatchReport, here: &opentelemetry::trace::SpanContext) {
        let index = &self.index;
        if let Some(batch) = &report.batch_id {
            index.remember(batch, here, "batch");
            let batch_span = index
                .find(batch)
                .map_or_else(|| here.clone(), |(span, _)| span);
            // The input file keeps its upload's span; the outputs belong to the batch.
            let outputs = report.attributes.iter().filter(|kv| {
                let key = kv.key.as_str();
                key == names::BATCH_OUTPUT_FILE_ID || key == names::BATCH_ERROR_FILE_ID
            });
            for file in outputs {
                index.remember(&file.value.as_str(), &batch_span, "batch");
            }
        }
        if let Some(file) = &report.file_id {
            index.remember(file, here, "file");
        }
    }

    /// A batch's creation links to its input file's upload, once the answer names the file.
    fn input_file_link(&self, report: &BatchReport) -> Option<Link> {
        if self.observer.call().operation != crate::genai::BatchOperation::CreateBatch {
            return None;
        }
        let input = report
            .attributes
            .iter()
            .find(|kv| kv.key.as_str() == names::BATCH_INPUT_FILE_ID)?;
        made_by(&self.index, &input.value.as_str())
    }
}

/// A link to the span that made `id`, when the index remembers it, labelled with what that
/// span's call made: `batch` (a batch's creation, which its output files belong to) or `file`
/// (an upload).
fn made_by(index: &BatchIndex, id: &str) -> Option<Link> {
    let (made, kind) = index.find(id)?;
    Some(Link::new(
        made,
        vec![KeyValue::new(names::LINK_KIND, kind)],
        0,
    ))
}

impl Drop for BatchSpan {
    fn drop(&mut self) {
        self.finish(End::Aborted);
    }
}
