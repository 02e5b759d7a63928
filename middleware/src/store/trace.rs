//! One stored trace: its spans, the summary the list is sorted and filtered by, and the honest
//! byte count the store's cap is enforced with.

use std::mem::size_of;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{Event, Link, SpanId, SpanKind, Status, TraceId};
use opentelemetry::{Array, KeyValue, Value};
use opentelemetry_sdk::trace::SpanData;

use crate::semconv;

/// `gen_ai.usage.cost`: the cost of a GenAI exchange in USD (double), when the price of its
/// model is known.
pub const USAGE_COST: &str = "gen_ai.usage.cost";
/// Attribute names that say who made a request (business context, `enduser.id`).
const USER_KEYS: [&str; 2] = ["user.id", "enduser.id"];
/// Attribute names that say which session or conversation a request belongs to.
const SESSION_KEYS: [&str; 2] = ["session.id", semconv::gen_ai::CONVERSATION_ID];
/// Summary strings are cut to this many bytes (span attributes are already capped).
const MAX_SUMMARY_TEXT: usize = 256;

/// A finished span as the store keeps it: the exported data and the service that made it.
#[derive(Debug, Clone)]
pub struct StoredSpan {
    /// The span, shared with every reader.
    pub data: Arc<SpanData>,
    /// `service.name` of the tracer provider that exported it.
    pub service: Arc<str>,
}

impl StoredSpan {
    /// The span's duration (zero when its clock went backwards).
    pub fn duration(&self) -> Duration {
        self.data
            .end_time
            .duration_since(self.data.start_time)
            .unwrap_or_default()
    }

    /// The attribute `key`, when set.
    pub fn attribute(&self, key: &str) -> Option<&Value> {
        find(&self.data.attributes, key)
    }

    /// True when the span failed: an error status or an `error.type`.
    pub fn is_error(&self) -> bool {
        matches!(self.data.status, Status::Error { .. })
            || self.attribute(semconv::http::ERROR_TYPE).is_some()
    }

    /// True for the GenAI exchange span of an LLM call (a CLIENT span with
    /// `gen_ai.operation.name`).
    pub fn is_genai_client(&self) -> bool {
        self.data.span_kind == SpanKind::Client
            && self.attribute(semconv::gen_ai::OPERATION_NAME).is_some()
    }

    /// The share of the span's duration at which its first token arrived, in `[0, 1]`:
    /// `gen_ai.response.time_to_first_chunk` over the duration, else the first-token event's
    /// offset.
    pub fn first_token_fraction(&self) -> Option<f64> {
        let duration = self.duration().as_secs_f64();
        if duration <= 0.0 {
            return None;
        }
        let ttft = as_f64(self.attribute(semconv::gen_ai::RESPONSE_TIME_TO_FIRST_CHUNK)).or_else(
            || {
                let event = self
                    .data
                    .events
                    .iter()
                    .find(|e| e.name == semconv::llmtrace::EVENT_FIRST_TOKEN)?;
                let offset = event.timestamp.duration_since(self.data.start_time).ok()?;
                Some(offset.as_secs_f64())
            },
        )?;
        Some((ttft / duration).clamp(0.0, 1.0))
    }
}

/// What the trace list shows, filters and sorts by; updated as each span arrives.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The trace.
    pub trace_id: TraceId,
    /// The name of its local root span (the earliest span until the root arrives).
    pub name: String,
    /// The root span's service.
    pub service: Arc<str>,
    /// The earliest span start.
    pub start: SystemTime,
    /// The latest span end.
    pub end: SystemTime,
    /// Spans stored.
    pub spans: usize,
    /// A span failed.
    pub error: bool,
    /// `gen_ai.request.model` (else `gen_ai.response.model`) of the first GenAI span.
    pub model: Option<String>,
    /// `http.route` of a SERVER span.
    pub route: Option<String>,
    /// `http.response.status_code` of the root span.
    pub status_code: Option<i64>,
    /// `user.id` or `enduser.id`.
    pub user: Option<String>,
    /// `session.id` or `gen_ai.conversation.id`.
    pub session: Option<String>,
    /// The smallest `gen_ai.response.time_to_first_chunk`, seconds.
    pub ttft: Option<f64>,
    /// Input plus output tokens of the trace's GenAI CLIENT spans.
    pub tokens: Option<i64>,
    /// The sum of `gen_ai.usage.cost` (USD) of its GenAI CLIENT spans.
    pub cost: Option<f64>,
    /// Why the tail sampler kept it (`llmtrace.sampling.reason`).
    pub sampling_reason: Option<String>,
    has_root: bool,
}

impl Summary {
    fn new(span: &StoredSpan) -> Self {
        let data = &span.data;
        Self {
            trace_id: data.span_context.trace_id(),
            name: String::new(),
            service: span.service.clone(),
            start: data.start_time,
            end: data.end_time,
            spans: 0,
            error: false,
            model: None,
            route: None,
            status_code: None,
            user: None,
            session: None,
            ttft: None,
            tokens: None,
            cost: None,
            sampling_reason: None,
            has_root: false,
        }
    }

    /// The trace's duration: latest end minus earliest start.
    pub fn duration(&self) -> Duration {
        self.end.duration_since(self.start).unwrap_or_default()
    }

    /// Folds one more span in.
    fn add(&mut self, span: &StoredSpan) {
        let data = &span.data;
        let is_root = data.parent_span_id == SpanId::INVALID || data.parent_span_is_remote;
        if (is_root && (!self.has_root || data.start_time < self.start))
            || (!self.has_root && (self.spans == 0 || data.start_time < self.start))
        {
            self.name = cut(&data.name);
            self.service = span.service.clone();
            self.has_root |= is_root;
            if is_root {
                self.status_code = as_i64(span.attribute(semconv::http::RESPONSE_STATUS_CODE))
                    .or(self.status_code);
            }
        }
        self.spans += 1;
        self.start = self.start.min(data.start_time);
        self.end = self.end.max(data.end_time);
        self.error |= span.is_error();
        self.add_attributes(span);
    }

    fn add_attributes(&mut self, span: &StoredSpan) {
        use semconv::gen_ai as g;
        let text = |key: &str| span.attribute(key).map(|v| cut(&v.as_str()));
        if span.data.span_kind == SpanKind::Server && self.route.is_none() {
            self.route = text(semconv::http::ROUTE);
        }
        if self.user.is_none() {
            self.user = USER_KEYS.iter().find_map(|k| text(k));
        }
        if self.session.is_none() {
            self.session = SESSION_KEYS.iter().find_map(|k| text(k));
        }
        if self.sampling_reason.is_none() {
            self.sampling_reason = text(semconv::sampling::REASON);
        }
        if span.attribute(g::OPERATION_NAME).is_none() {
            return;
        }
        if self.model.is_none() {
            self.model = text(g::REQUEST_MODEL).or_else(|| text(g::RESPONSE_MODEL));
        }
        if let Some(ttft) = as_f64(span.attribute(g::RESPONSE_TIME_TO_FIRST_CHUNK)) {
            self.ttft = Some(self.ttft.map_or(ttft, |t| t.min(ttft)));
        }
        if !span.is_genai_client() {
            return;
        }
        for key in [g::USAGE_INPUT_TOKENS, g::USAGE_OUTPUT_TOKENS] {
            if let Some(n) = as_i64(span.attribute(key)) {
                self.tokens = Some(self.tokens.unwrap_or(0).saturating_add(n));
            }
        }
        if let Some(cost) = as_f64(span.attribute(USAGE_COST)) {
            self.cost = Some(self.cost.unwrap_or(0.0) + cost);
        }
    }

    /// Heap bytes held by the summary's strings.
    fn heap_bytes(&self) -> usize {
        let opt = |s: &Option<String>| s.as_ref().map_or(0, String::capacity);
        self.name.capacity()
            + opt(&self.model)
            + opt(&self.route)
            + opt(&self.user)
            + opt(&self.session)
            + opt(&self.sampling_reason)
    }
}

/// A trace in the store: its spans in arrival order and their summary.
#[derive(Debug)]
pub(crate) struct StoredTrace {
    pub(crate) spans: Vec<StoredSpan>,
    pub(crate) summary: Summary,
    /// Bytes of the spans alone; [`StoredTrace::bytes`] adds the rest.
    span_bytes: usize,
}

impl StoredTrace {
    pub(crate) fn new(first: &StoredSpan) -> Self {
        Self {
            spans: Vec::new(),
            summary: Summary::new(first),
            span_bytes: 0,
        }
    }

    /// Adds `span` (whose [`span_bytes`] are `bytes`).
    pub(crate) fn push(&mut self, span: StoredSpan, bytes: usize) {
        self.summary.add(&span);
        self.spans.push(span);
        self.span_bytes += bytes;
    }

    /// Everything the trace holds: the spans, the span list and the summary (its entries in
    /// the store's map and queue are counted with them, by their capacity).
    pub(crate) fn bytes(&self) -> usize {
        self.span_bytes
            + self.spans.capacity() * size_of::<StoredSpan>()
            + self.summary.heap_bytes()
    }
}

/// The bytes one span holds: the `SpanData` (in its `Arc`), its name, every attribute key and
/// value (strings and arrays by length, vectors by capacity), events and links with theirs,
/// the status message and the instrumentation scope. Static strings are counted as if owned,
/// so the count errs high, never low.
pub fn span_bytes(span: &SpanData) -> usize {
    let events: usize = span.events.events.iter().map(event_bytes).sum();
    let links: usize = span.links.links.iter().map(link_bytes).sum();
    let status = match &span.status {
        Status::Error { description } => description.len(),
        _ => 0,
    };
    let scope = &span.instrumentation_scope;
    2 * size_of::<usize>() // the Arc's counts
        + size_of::<SpanData>()
        + cow_bytes(&span.name)
        + attributes_bytes(&span.attributes)
        + span.events.events.capacity() * size_of::<Event>()
        + events
        + span.links.links.capacity() * size_of::<Link>()
        + links
        + status
        + scope.name().len()
        + scope.version().map_or(0, str::len)
        + scope.schema_url().map_or(0, str::len)
        + scope.attributes().map(kv_bytes).sum::<usize>()
}

fn event_bytes(event: &Event) -> usize {
    cow_bytes(&event.name) + attributes_bytes(&event.attributes)
}

/// An owned name by its capacity, a static one by its length (hence the `Cow`, not a `&str`).
#[allow(clippy::ptr_arg)]
fn cow_bytes(text: &std::borrow::Cow<'static, str>) -> usize {
    match text {
        std::borrow::Cow::Owned(s) => s.capacity(),
        std::borrow::Cow::Borrowed(s) => s.len(),
    }
}

fn link_bytes(link: &Link) -> usize {
    attributes_bytes(&link.attributes)
}

fn attributes_bytes(attributes: &Vec<KeyValue>) -> usize {
    attributes.capacity() * size_of::<KeyValue>() + attributes.iter().map(kv_bytes).sum::<usize>()
}

fn kv_bytes(kv: &KeyValue) -> usize {
    kv.key.as_str().len() + value_bytes(&kv.value)
}

fn value_bytes(value: &Value) -> usize {
    match value {
        Value::String(s) => s.as_str().len(),
        Value::Array(Array::String(items)) => {
            items.capacity() * size_of::<opentelemetry::StringValue>()
                + items.iter().map(|s| s.as_str().len()).sum::<usize>()
        }
        Value::Array(Array::I64(items)) => items.capacity() * size_of::<i64>(),
        Value::Array(Array::F64(items)) => items.capacity() * size_of::<f64>(),
        Value::Array(Array::Bool(items)) => items.capacity(),
        // Values the SDK may add later: their text form is an upper bound of their size.
        Value::Array(other) => other.to_string().len(),
        _ => 0,
    }
}

/// The attribute `key` among `attributes`.
pub fn find<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

/// A number attribute as `f64` (integers too).
pub fn as_f64(value: Option<&Value>) -> Option<f64> {
    match value? {
        Value::F64(f) if f.is_finite() => Some(*f),
        Value::I64(i) => Some(*i as f64),
        Value::String(s) => s.as_str().parse().ok().filter(|f: &f64| f.is_finite()),
        _ => None,
    }
}

/// An integer attribute.
pub fn as_i64(value: Option<&Value>) -> Option<i64> {
    match value? {
        Value::I64(i) => Some(*i),
        Value::String(s) => s.as_str().parse().ok(),
        _ => None,
    }
}

/// `text`, cut at a character boundary to [`MAX_SUMMARY_TEXT`] bytes.
fn cut(text: &str) -> String {
    let mut end = text.len().min(MAX_SUMMARY_TEXT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}
