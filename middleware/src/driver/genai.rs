//! [`GenAiSpan`]: one GenAI exchange's span and its [`Exchange`] observer, and the
//! [`GenAiRecorder`] that exchanges share.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use opentelemetry::Context;
use opentelemetry::global::BoxedTracer;
use opentelemetry::trace::{SpanBuilder, SpanKind, TraceContextExt, Tracer};

use super::attrs;
use super::business::{BusinessAttributes, BusinessContext};
use super::span::{self, ExchangeSpan, Side};
use crate::genai::{
    End, Exchange, GenAiConfig, GenAiMetrics, Provider, Report, RequestInfo, Summary,
};

/// What a [`GenAiLayer`] (or the gateway) shares across exchanges: side, tracer, observer
/// configuration, metric instruments. Made by the layer's builder; see
/// [`GenAiLayer::into_recorder`].
///
/// [`GenAiLayer`]: crate::GenAiLayer
/// [`GenAiLayer::into_recorder`]: crate::GenAiLayer::into_recorder
pub struct GenAiRecorder {
    pub(crate) side: Side,
    pub(crate) tracer: BoxedTracer,
    pub(crate) config: Arc<GenAiConfig>,
    pub(crate) metrics: Option<GenAiMetrics>,
    /// Applied to the instruments [`GenAiLayer::with_meter`](crate::GenAiLayer::with_meter) builds.
    pub(crate) max_model_labels: Option<usize>,
    pub(crate) provider: Option<Provider>,
    pub(crate) max_request_bytes: usize,
    /// Names the errors that end exchanges.
    pub(crate) errors: super::ErrorClassifier,
    /// Reads business context from the exchange's own request (a server of an LLM API);
    /// otherwise it comes from the parent context.
    pub(crate) business: Option<BusinessContext>,
    /// Exchanges get spans of their own ([`GenAiLayer::with_spans`](crate::GenAiLayer::with_spans)).
    pub(crate) spans: bool,
}

impl fmt::Debug for GenAiRecorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GenAiRecorder")
            .field("side", &self.side)
            .field("config", &self.config)
            .field("metrics", &self.metrics.is_some())
            .field("provider", &self.provider)
            .finish_non_exhaustive()
    }
}

impl GenAiRecorder {
    /// The observer configuration.
    pub fn config(&self) -> &Arc<GenAiConfig> {
        &self.config
    }

    /// The configured provider name override, if any.
    pub fn provider(&self) -> Option<&Provider> {
        self.provider.as_ref()
    }

    /// Request bodies up to this size are read before sending.
    pub fn max_request_bytes(&self) -> usize {
        self.max_request_bytes
    }
}

// === impl GenAiSpan ===

/// One GenAI exchange in flight: its span and its [`Exchange`] observer. It ends exactly
/// once: on [`finish`](Self::finish) or, when dropped first, as aborted.
/// [`GenAiLayer`](crate::GenAiLayer) drives it from a tower body; the gateway drives it from
/// its pingora phases.
pub struct GenAiSpan {
    span: ExchangeSpan,
    exchange: Exchange,
    shared: Arc<GenAiRecorder>,
    done: bool,
}

impl fmt::Debug for GenAiSpan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GenAiSpan")
            .field("exchange", &self.exchange)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl GenAiSpan {
    /// Starts the span for `exchange`, a child of `parent`, with the request's method, URI
    /// and headers for the `server.*` attributes. The caller injects [`context`](Self::context)
    /// into the upstream request when it calls a provider.
    ///
    /// The business context ([`BusinessAttributes`]) is the one `parent` carries (the
    /// request's SERVER span put it there), or, when the recorder has a
    /// [`BusinessContext`] of its own, read from `parts` and the parent's baggage.
    pub fn start(
        recorder: &Arc<GenAiRecorder>,
        mut exchange: Exchange,
        parts: &http::request::Parts,
        parent: &Context,
    ) -> GenAiSpan {
        let business = match &recorder.business {
            Some(business) => business.extract(&parts.headers, parent),
            None => BusinessAttributes::of(parent),
        };
        let mut attached = None;
        if let Some(business) = business {
            attached = Some(business.attach(parent));
            exchange.set_business(business);
        }
        let parent = attached.as_ref().unwrap_or(parent);
        let span = match recorder.spans {
            true => ExchangeSpan::new(
                start_span(recorder, &exchange, parts, parent),
                recorder.side,
                false,
                None,
            ),
            false => ExchangeSpan::untraced(parent.clone(), recorder.side, false),
        };
        GenAiSpan {
            span,
            exchange,
            shared: recorder.clone(),
            done: false,
        }
    }

    /// Keeps up to `cap` bytes of the answer's text for the summary's
    /// [`OutputDigest`](crate::genai::OutputDigest) (see [`Exchange::keep_output`]).
    pub fn keep_output(&mut self, cap: usize) {
        self.exchange.keep_output(cap);
    }

    /// The span's context, until it ends.
    pub fn context(&self) -> Option<&Context> {
        self.span.context()
    }

    /// The observer.
    pub fn exchange(&self) -> &Exchange {
        &self.exchange
    }

    /// The request body was read after the span started: renames the span
    /// (`chat gpt-4o`) and records the request attributes.
    ///
    /// Only what the body added or changed is recorded: the span already has the attributes
    /// it started with (operation, provider, business context), and an attribute set twice
    /// is exported twice.
    pub fn set_request(&mut self, request: RequestInfo) {
        let recording = self.span.recording();
        let before = recording.then(|| self.exchange.start_attributes());
        self.exchange.set_request(request);
        if let (Some(cx), Some(before)) = (self.span.context(), before) {
            let span = cx.span();
            span.update_name(self.exchange.span_name());
            let mut added = self.exchange.start_attributes();
            added.retain(|kv| !before.contains(kv));
            span.set_attributes(added);
        }
    }

    /// The response head arrived.
    pub fn on_response_head(&mut self, status: http::StatusCode, headers: &http::HeaderMap) {
        self.span.on_response_head(status, headers);
        self.exchange
            .on_response_head(status.as_u16(), headers, Instant::now());
    }

    /// A response body chunk passed through.
    pub fn on_response_data(&mut self, data: &[u8]) {
        self.on_response_data_at(data, Instant::now());
    }

    /// [`on_response_data`](Self::on_response_data) for a chunk that arrived at `at`, for an
    /// adapter that already read the clock when the chunk came in (a proxy times each chunk
    /// on arrival): the chunk's timing (first chunk, gaps) is then the arrival's, and the
    /// clock is read once per chunk, not twice.
    pub fn on_response_data_at(&mut self, data: &[u8], at: Instant) {
        self.span.on_data(data.len());
        self.exchange.on_response_data(data, at);
    }

    /// Ends the exchange: records the report on the span and the metrics, ends the span, and
    /// returns the summary for an access log. Later calls do nothing and return `None`.
    pub fn finish(&mut self, end: End) -> Option<Summary> {
        self.finish_with(end, |_| Vec::new())
    }

    /// [`finish`](Self::finish), with attributes computed from the summary added to the span
    /// before it ends (a comparison with another exchange, for instance).
    pub fn finish_with(
        &mut self,
        end: End,
        extra: impl FnOnce(&Summary) -> Vec<opentelemetry::KeyValue>,
    ) -> Option<Summary> {
        if std::mem::replace(&mut self.done, true) {
            return None;
        }
        let now = Instant::now();
        let Report {
            attributes,
            events,
            error,
            metrics: values,
            summary,
        } = self
            .exchange
            .finish_for(end.clone(), now, self.span.recording());
        if let Some(metrics) = &self.shared.metrics {
            match self.shared.side {
                Side::Client => metrics.record_client(&values),
                Side::Server => metrics.record_server(&values),
            }
        }
        // The report's attributes and the extra ones go to the span with the end's (one call,
        // see `ExchangeSpan::end_with`), after the events: the attributes keep their order.
        let mut attributes = attributes;
        if let Some(cx) = self.span.context().filter(|_| self.span.recording()) {
            attributes.extend(extra(&summary));
            let span = cx.span();
            for event in events {
                span.add_event_with_timestamp(event.name, event.time, event.attributes);
            }
        }
        // The transport's account wins; a complete body can still carry an error.
        if let (End::Complete, Some((error_type, message))) = (&end, error) {
            self.span.fail_on_complete(error_type, message);
        }
        self.span.end_with(end, attributes);
        Some(summary)
    }
}

impl Drop for GenAiSpan {
    fn drop(&mut self) {
        self.finish(End::Aborted);
    }
}

fn start_span(
    shared: &GenAiRecorder,
    exchange: &Exchange,
    parts: &http::request::Parts,
    parent: &Context,
) -> Context {
    let mut attributes = exchange.start_attributes();
    attrs::push_server_address(&mut attributes, &parts.uri, &parts.headers);
    attrs::push_method(&mut attributes, &parts.method);
    let kind = match shared.side {
        Side::Client => SpanKind::Client,
        Side::Server => SpanKind::Server,
    };
    let builder = SpanBuilder::from_name(exchange.span_name())
        .with_kind(kind)
        .with_attributes(attributes);
    let span = shared.tracer.build_with_context(builder, parent);
    span::child_context(parent, span)
}
