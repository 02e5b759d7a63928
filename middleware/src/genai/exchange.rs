//! [`Exchange`]: one LLM request/response, observed without doing any I/O.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use opentelemetry::{Array, KeyValue, StringValue, Value};

use super::cost::PriceTable;
use super::endpoint::{Endpoint, Provider};
use super::gaps::GapStats;
use super::prompt::PromptWatch;
use super::request::RequestInfo;
use super::response::{EventKind, ResponseState, Usage, bounded_error};
use super::sse::SseDecoder;
use super::timeline::ChunkTimeline;
use super::tool_content::ToolContent;
use crate::driver::BusinessAttributes;
use crate::limits::MAX_CHOICES;
use crate::semconv::{self, exception, gen_ai, llmtrace};

/// Which kinds of prompt and completion content may be recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContentKind {
    /// `gen_ai.input.messages`
    InputMessages,
    /// `gen_ai.system_instructions`
    SystemInstructions,
    /// `gen_ai.output.messages`
    OutputMessages,
    /// `gen_ai.tool.call.arguments`: one tool call's arguments (the gateway's
    /// `execute_tool` span; on the GenAI span they are part of the output messages).
    ToolCallArguments,
    /// `gen_ai.tool.call.result`: one tool call's result, as a later request carries it.
    ToolCallResult,
}

/// A hook that sees captured content (as the JSON string about to be recorded) and returns
/// what to record instead, or `None` to record nothing.
pub type Redactor = Arc<dyn Fn(ContentKind, String) -> Option<String> + Send + Sync>;

/// Which chunks get a `token.streamed` span event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TokenEvents {
    /// None (the default).
    #[default]
    Off,
    /// The first `n` content chunks.
    FirstN(u32),
    /// Every `n`th content chunk.
    EveryNth(u32),
    /// Every content chunk, up to [`GenAiConfig::max_token_events`].
    All,
}

/// How GenAI exchanges are observed. Shared by the tower layer and the proxy.
#[derive(Clone)]
pub struct GenAiConfig {
    /// Record prompt and completion content (`gen_ai.input.messages`, ...). Off by default:
    /// content may be personal data; turn it on only where that is allowed.
    pub capture_content: bool,
    /// Cap on each captured content attribute, in bytes (default 16 KiB).
    pub content_cap: usize,
    /// Applied to captured content before it is recorded.
    pub redactor: Option<Redactor>,
    /// `token.streamed` events (default off).
    pub token_events: TokenEvents,
    /// Cap on `token.streamed` events per span (default 1000).
    pub max_token_events: u32,
    /// A gap between content chunks longer than this is a stall (default 1 s).
    pub stall_threshold: Duration,
    /// Points of each stream's chunk timeline (`llmtrace.stream.chunk_offsets_ms`, see
    /// [`ChunkTimeline`]; default 256, at most 4096; 0 records none): when chunks arrived,
    /// for the viewer's ticks. Stalls become `llmtrace.stream.stall` events either way.
    pub chunk_timeline: u16,
    /// A single server-sent event larger than this is skipped by the observer (the bytes
    /// still flow; default 1 MiB).
    pub max_event_bytes: usize,
    /// Non-streamed response bodies larger than this are not parsed (default 8 MiB).
    pub max_json_body_bytes: usize,
    /// When the provider reports no usage, estimate output tokens from the streamed text
    /// (about 4 bytes a token) and mark `llmtrace.usage.source = estimated`. Off by default.
    pub estimate_usage: bool,
    /// `llmtrace.measured_at`: `client`, `gateway` or `server`.
    pub measured_at: &'static str,
    /// Prices for `gen_ai.usage.cost` and the cost metric; `None` (default): no cost.
    pub prices: Option<Arc<PriceTable>>,
    /// Keywords and regular expressions looked for in each request's prompt while its body
    /// is read; the span records which matched (`llmtrace.prompt.matched`), for a tail
    /// policy to keep the trace, and nothing of the prompt. Default none. With tail
    /// sampling, take it from the configuration:
    /// `TailConfig::prompt_watch` (feature `sampling`).
    pub prompt_watch: Option<PromptWatch>,
}

impl Default for GenAiConfig {
    fn default() -> Self {
        Self {
            capture_content: false,
            content_cap: 16 * 1024,
            redactor: None,
            token_events: TokenEvents::Off,
            max_token_events: 1000,
            stall_threshold: Duration::from_secs(1),
            chunk_timeline: 256,
            max_event_bytes: 1024 * 1024,
            max_json_body_bytes: 8 * 1024 * 1024,
            estimate_usage: false,
            measured_at: "client",
            prices: None,
            prompt_watch: None,
        }
    }
}

impl fmt::Debug for GenAiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GenAiConfig")
            .field("capture_content", &self.capture_content)
            .field("content_cap", &self.content_cap)
            .field("redactor", &self.redactor.is_some())
            .field("token_events", &self.token_events)
            .field("stall_threshold", &self.stall_threshold)
            .field("chunk_timeline", &self.chunk_timeline)
            .field("max_event_bytes", &self.max_event_bytes)
            .field("max_json_body_bytes", &self.max_json_body_bytes)
            .field("estimate_usage", &self.estimate_usage)
            .field("measured_at", &self.measured_at)
            .field("prices", &self.prices)
            .field("prompt_watch", &self.prompt_watch)
            .finish()
    }
}

/// How the response ended, as the transport saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The body reached its end.
    Complete,
    /// The transport failed (connection reset, timeout, body error).
    Failed {
        /// `error.type`
        error_type: Cow<'static, str>,
        /// What happened.
        message: String,
    },
    /// The body was dropped before its end: the client went away.
    Aborted,
}

/// A span event produced by the observer.
#[derive(Debug, Clone)]
pub struct SpanEventRecord {
    /// Event name.
    pub name: &'static str,
    /// When it happened.
    pub time: SystemTime,
    /// Its attributes.
    pub attributes: Vec<KeyValue>,
}

/// Everything an exchange concluded, to record on its span and metrics.
#[derive(Debug, Clone)]
pub struct Report {
    /// Attributes to set on the span when it ends.
    pub attributes: Vec<KeyValue>,
    /// Span events with their own timestamps (first token, guardrail, exception, chunks).
    pub events: Vec<SpanEventRecord>,
    /// `(error.type, message)` when the exchange failed in a way the HTTP status does not
    /// show (in-stream error, truncated stream, provider error body).
    pub error: Option<(String, String)>,
    /// Values for the GenAI metrics.
    pub metrics: MetricValues,
    /// The few facts an access log wants.
    pub summary: Summary,
}

/// The few facts of an exchange an access log line wants.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Summary {
    /// The model asked for.
    pub request_model: Option<String>,
    /// The model that answered.
    pub response_model: Option<String>,
    /// Whether the request asked for a stream.
    pub stream: bool,
    /// Input tokens (reported or estimated).
    pub input_tokens: Option<i64>,
    /// Output tokens (reported or estimated).
    pub output_tokens: Option<i64>,
    /// Request to first content chunk.
    pub time_to_first_chunk: Option<Duration>,
    /// Finish reasons, one per choice.
    pub finish_reasons: Vec<String>,
    /// `error.type`, when the exchange failed.
    pub error_type: Option<String>,
    /// What the exchange cost in USD, when prices are configured and know the model.
    pub cost: Option<f64>,
    /// Whether the answer came as a stream (server-sent events).
    pub streamed: bool,
    /// Request to end of response.
    pub duration: Duration,
    /// Output tokens per second of generation (`llmtrace.usage.output_tokens_per_second`).
    pub output_tokens_per_second: Option<f64>,
    /// What the output was, for comparing two answers: only after
    /// [`Exchange::keep_output`].
    pub output: Option<OutputDigest>,
    /// Tool calls the answer asked for, `(id, name)`: at most 32, each at most 128 bytes.
    pub tool_calls: Vec<(String, String)>,
    /// With content capture on only (else empty): the arguments of those tool calls, by id,
    /// together within [`content_cap`](GenAiConfig::content_cap), after the redactor
    /// (as [`ContentKind::ToolCallArguments`]).
    pub tool_arguments: Vec<ToolContent>,
}

/// A fingerprint of an answer's text, for telling whether two answers are the same without
/// keeping either.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputDigest {
    /// Bytes of output text.
    pub bytes: u64,
    /// FNV-1a of the kept text, choices in index order (each preceded by its index).
    pub hash: u64,
    /// More text came than was kept: the hash covers only the start.
    pub truncated: bool,
}

/// The numbers behind the GenAI metrics of one exchange.
#[derive(Debug, Clone, Default)]
pub struct MetricValues {
    /// Attributes every metric of this exchange carries.
    pub attributes: Vec<KeyValue>,
    /// Request to end of response.
    pub duration: Duration,
    /// Request to first content chunk (streams only).
    pub time_to_first_chunk: Option<Duration>,
    /// Gaps between content chunks, as `(value, count)` buckets.
    pub chunk_gaps: Vec<(Duration, u32)>,
    /// Reported (or estimated) input tokens.
    pub input_tokens: Option<i64>,
    /// Reported (or estimated) output tokens.
    pub output_tokens: Option<i64>,
    /// Mean time per output token after the first (server metric).
    pub time_per_output_token: Option<Duration>,
    /// Whether this was a streamed response.
    pub streamed: bool,
    /// What the exchange cost in USD, when known.
    pub cost: Option<f64>,
}

/// One LLM exchange, observed incrementally: the request as parsed, then the response head,
/// every response body chunk as it passes, and the end. It holds O(1) memory per stream
/// (the SSE decoder's current event, fixed-size gap statistics, and — only when content
/// capture is on — capped text).
///
/// All methods take the time as an argument, so the same object serves a tower body, a
/// pingora phase or a test with synthetic clocks.
///
/// ```
/// use std::time::{Duration, Instant};
/// use llmtrace::genai::{End, Endpoint, Exchange, GenAiConfig, RequestInfo};
///
/// let endpoint = Endpoint::detect("/v1/chat/completions", None).unwrap();
/// let request = RequestInfo::parse(&endpoint, br#"{"model":"gpt-4o","stream":true}"#, false);
/// let t0 = Instant::now();
/// let mut exchange = Exchange::new(Default::default(), endpoint, request, t0);
/// assert_eq!(exchange.span_name(), "chat gpt-4o");
///
/// let mut head = http::HeaderMap::new();
/// head.insert("content-type", "text/event-stream".parse().unwrap());
/// exchange.on_response_head(200, &head, t0 + Duration::from_millis(90));
/// exchange.on_response_data(
///     b"data: {\"id\":\"c1\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n",
///     t0 + Duration::from_millis(120),
/// );
/// exchange.on_response_data(
///     b"data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n",
///     t0 + Duration::from_millis(150),
/// );
/// let report = exchange.finish(End::Complete, t0 + Duration::from_millis(151));
/// assert!(report.error.is_none());
/// assert_eq!(report.metrics.time_to_first_chunk, Some(Duration::from_millis(120)));
/// ```
pub struct Exchange {
    config: Arc<GenAiConfig>,
    endpoint: Endpoint,
    request: RequestInfo,
    start: Instant,
    start_wall: SystemTime,
    status: Option<u16>,
    /// The provider's own request id, from the response head (bounded).
    provider_request_id: Option<String>,
    streaming: bool,
    first_byte: Option<Instant>,
    first_chunk: Option<Instant>,
    last_chunk: Option<Instant>,
    sse: Option<SseDecoder>,
    body: Vec<u8>,
    body_overflow: bool,
    state: ResponseState,
    gaps: GapStats,
    timeline: ChunkTimeline,
    token_events: Vec<(Instant, u64)>,
    guardrail_at: Option<Instant>,
    business: Option<Arc<BusinessAttributes>>,
    keep_output: bool,
}

impl fmt::Debug for Exchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Exchange")
            .field("endpoint", &self.endpoint)
            .field("model", &self.request.model)
            .field("status", &self.status)
            .field("provider_request_id", &self.provider_request_id)
            .field("streaming", &self.streaming)
            .field("chunks", &self.state.chunks)
            .finish_non_exhaustive()
    }
}

impl Exchange {
    /// Starts observing; `now` is when the request was sent (client side) or received
    /// (server side).
    pub fn new(
        config: Arc<GenAiConfig>,
        endpoint: Endpoint,
        request: RequestInfo,
        now: Instant,
    ) -> Self {
        let mut request = request;
        request.bound_strings();
        let timeline = ChunkTimeline::new(config.chunk_timeline);
        let state = ResponseState {
            capture: config.capture_content,
            capture_cap: config.content_cap,
            ..ResponseState::default()
        };
        Self {
            config,
            endpoint,
            request,
            start: now,
            start_wall: SystemTime::now(),
            status: None,
            provider_request_id: None,
            streaming: false,
            first_byte: None,
            first_chunk: None,
            last_chunk: None,
            sse: None,
            body: Vec::new(),
            body_overflow: false,
            state,
            gaps: GapStats::default(),
            timeline,
            token_events: Vec::new(),
            guardrail_at: None,
            business: None,
            keep_output: false,
        }
    }

    /// The request's business context (user, session, experiment, ...; see
    /// [`BusinessContext`](crate::driver::BusinessContext)): its attributes go on the span
    /// from the start, a session id becomes `gen_ai.conversation.id`, and the opted-in
    /// dimensions go on every metric of the exchange.
    pub fn set_business(&mut self, business: Arc<BusinessAttributes>) {
        self.business = Some(business);
    }

    /// Keeps up to `cap` bytes of the answer's text (not recorded on the span unless content
    /// capture is on) so that the summary carries an [`OutputDigest`]: for comparing this
    /// answer with another (shadow traffic). Call before the response.
    pub fn keep_output(&mut self, cap: usize) {
        self.keep_output = true;
        if !self.state.capture {
            self.state.capture = true;
            self.state.capture_cap = cap;
        }
    }

    /// The recognised endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The parsed request.
    pub fn request(&self) -> &RequestInfo {
        &self.request
    }

    /// Sets the request once its body has been read, for adapters that must start the span
    /// before the body arrives (a proxy sends the request head upstream first).
    pub fn set_request(&mut self, request: RequestInfo) {
        self.state.capture = self.config.capture_content;
        self.request = request;
        self.request.bound_strings();
    }

    /// `{gen_ai.operation.name} {gen_ai.request.model}`, or the operation alone.
    pub fn span_name(&self) -> String {
        let operation = self.endpoint.format.operation();
        match &self.request.model {
            // Two pieces: `format!`'s machinery costs more than the copy itself here.
            Some(model) => {
                let mut name = String::with_capacity(operation.len() + 1 + model.len());
                name.push_str(operation);
                name.push(' ');
                name.push_str(model);
                name
            }
            None => operation.to_owned(),
        }
    }

    /// The attributes known when the request starts, for span creation (and samplers).
    pub fn start_attributes(&self) -> Vec<KeyValue> {
        let r = &self.request;
        // Room for what a span adds before its end (the server's address and the method,
        // the request's parameters once the body is read, the response status), not for
        // the end's report: a span streaming for minutes holds this vector all along, and a
        // slot costs 56 bytes.
        let mut a = self.identity_attributes(12);
        // Required if and only if the request streams.
        if r.stream {
            a.push(KeyValue::new(gen_ai::REQUEST_STREAM, true));
        }
        if let Some(v) = r.max_tokens {
            a.push(KeyValue::new(gen_ai::REQUEST_MAX_TOKENS, v));
        }
        for (key, value) in [
            (gen_ai::REQUEST_TEMPERATURE, r.temperature),
            (gen_ai::REQUEST_TOP_P, r.top_p),
            (gen_ai::REQUEST_TOP_K, r.top_k),
            (gen_ai::REQUEST_FREQUENCY_PENALTY, r.frequency_penalty),
            (gen_ai::REQUEST_PRESENCE_PENALTY, r.presence_penalty),
        ] {
            if let Some(v) = value {
                a.push(KeyValue::new(key, v));
            }
        }
        if !r.stop_sequences.is_empty() {
            a.push(KeyValue::new(
                gen_ai::REQUEST_STOP_SEQUENCES,
                string_array(&r.stop_sequences),
            ));
        }
        if let Some(v) = r.seed {
            a.push(KeyValue::new(gen_ai::REQUEST_SEED, v));
        }
        if let Some(n) = r.choice_count.filter(|n| *n != 1) {
            a.push(KeyValue::new(gen_ai::REQUEST_CHOICE_COUNT, n));
        }
        if let Some(n) = r.tool_count {
            a.push(KeyValue::new(llmtrace::REQUEST_TOOL_COUNT, n));
        }
        if !r.prompt_matched.is_empty() {
            let ids = Array::String(r.prompt_matched.clone());
            a.push(KeyValue::new(llmtrace::PROMPT_MATCHED, Value::Array(ids)));
        }
        if let Some(format) = &r.encoding_format {
            a.push(KeyValue::new(
                gen_ai::REQUEST_ENCODING_FORMATS,
                string_array(std::slice::from_ref(format)),
            ));
        }
        self.push_conversation(&mut a);
        a
    }

    /// The business attributes and the conversation: the caller's session when it names one,
    /// else the conversation the body names (OpenAI Responses `conversation`), which is also
    /// kept under its own key when the two differ; and `previous_response_id`.
    fn push_conversation(&self, a: &mut Vec<KeyValue>) {
        let r = &self.request;
        let session = self.business.as_deref().and_then(|b| {
            a.extend_from_slice(b.attributes());
            b.conversation_id()
        });
        match (session, &r.conversation_id) {
            (Some(session), body) => {
                a.push(KeyValue::new(gen_ai::CONVERSATION_ID, session.to_owned()));
                if let Some(body) = body.as_deref().filter(|body| *body != session) {
                    a.push(KeyValue::new(
                        llmtrace::REQUEST_CONVERSATION,
                        body.to_owned(),
                    ));
                }
            }
            (None, Some(body)) => a.push(KeyValue::new(gen_ai::CONVERSATION_ID, body.clone())),
            (None, None) => {}
        }
        if let Some(previous) = &r.previous_response_id {
            a.push(KeyValue::new(
                llmtrace::REQUEST_PREVIOUS_RESPONSE_ID,
                previous.clone(),
            ));
        }
    }

    /// What the span and every metric of the exchange start with: operation, provider and
    /// the model asked for.
    fn identity_attributes(&self, capacity: usize) -> Vec<KeyValue> {
        let mut a = Vec::with_capacity(capacity);
        a.push(KeyValue::new(
            gen_ai::OPERATION_NAME,
            self.endpoint.format.operation(),
        ));
        // A known provider's name (and a configured one's) is static: no copy.
        let provider: Value = match &self.endpoint.provider {
            Provider::Other(Cow::Borrowed(name)) => (*name).into(),
            Provider::Other(name) => name.to_string().into(),
            known => known.known_name().unwrap_or_default().into(),
        };
        a.push(KeyValue::new(gen_ai::PROVIDER_NAME, provider));
        if let Some(model) = &self.request.model {
            a.push(KeyValue::new(gen_ai::REQUEST_MODEL, model.clone()));
        }
        a
    }

    /// The response head arrived.
    pub fn on_response_head(&mut self, status: u16, headers: &http::HeaderMap, _now: Instant) {
        self.status = Some(status);
        self.provider_request_id = headers
            .get(self.endpoint.provider.request_id_name())
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(|v| crate::limits::bounded(v, crate::limits::MAX_NAME_BYTES).into_owned());
        let content_type = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        self.streaming = super::sse::is_event_stream(content_type);
        if self.streaming {
            self.sse = Some(SseDecoder::new(self.config.max_event_bytes));
        }
    }

    /// A chunk of the response body passed through (unchanged: the caller forwards it).
    pub fn on_response_data(&mut self, data: &[u8], now: Instant) {
        if data.is_empty() {
            return;
        }
        self.first_byte.get_or_insert(now);
        let Some(sse) = self.sse.as_mut() else {
            if !self.body_overflow {
                if self.body.len() + data.len() > self.config.max_json_body_bytes {
                    self.body_overflow = true;
                    self.body = Vec::new();
                } else {
                    self.body.extend_from_slice(data);
                }
            }
            return;
        };
        let format = self.endpoint.format;
        let state = &mut self.state;
        let mut content_events = 0u32;
        let guardrail_before = state.guardrail;
        sse.feed(data, |event| {
            if state.on_event(format, &event) == EventKind::Content {
                state.chunks += 1;
                content_events += 1;
            }
        });
        if state.guardrail.is_some() && guardrail_before.is_none() {
            self.guardrail_at = Some(now);
        }
        for _ in 0..content_events {
            self.on_content_chunk(now);
        }
    }

    fn on_content_chunk(&mut self, now: Instant) {
        if self.first_chunk.is_none() {
            self.first_chunk = Some(now);
        }
        if let Some(last) = self.last_chunk {
            let gap = now.saturating_duration_since(last);
            let stall = gap > self.config.stall_threshold;
            self.gaps.record(gap, stall);
            if stall {
                self.timeline
                    .record_stall(last.saturating_duration_since(self.start), gap);
            }
        }
        self.timeline
            .record(now.saturating_duration_since(self.start));
        self.last_chunk = Some(now);
        let index = self.state.chunks;
        let wanted = match self.config.token_events {
            TokenEvents::Off => false,
            TokenEvents::FirstN(n) => index <= u64::from(n),
            TokenEvents::EveryNth(n) => n > 0 && index % u64::from(n) == 0,
            TokenEvents::All => true,
        };
        if wanted && self.token_events.len() < self.config.max_token_events as usize {
            self.token_events.push((now, index));
        }
    }

    fn wall(&self, at: Instant) -> SystemTime {
        self.start_wall + at.saturating_duration_since(self.start)
    }

    /// The response ended: concludes what the exchange recorded. Call once.
    pub fn finish(&mut self, end: End, now: Instant) -> Report {
        self.finish_for(end, now, true)
    }

    /// [`finish`](Self::finish); without `for_span` (the span does not record, or there is
    /// none) the report's span attributes and events are left empty, never built.
    pub(crate) fn finish_for(&mut self, end: End, now: Instant, for_span: bool) -> Report {
        let status = self.status.unwrap_or(0);
        self.conclude_body(status);
        self.settle_error(&end, status);
        let totals = self.totals(now);
        let metrics = self.metric_values(&totals, now);
        let (attributes, events) = match for_span {
            true => (
                self.end_attributes(&totals),
                self.end_events(totals.streamed, now),
            ),
            false => (Vec::new(), Vec::new()),
        };
        Report {
            attributes,
            events,
            error: self.state.error.clone(),
            summary: Summary {
                duration: metrics.duration,
                ..self.summary(&totals)
            },
            metrics,
        }
    }

    /// Ends the SSE decoder, or reads the buffered (non-streamed) body.
    fn conclude_body(&mut self, status: u16) {
        if let Some(sse) = self.sse.as_mut() {
            sse.finish();
        } else if self.status.is_some() {
            if self.body_overflow {
                self.state.note_parse_error(format!(
                    "response body over {} bytes was not parsed",
                    self.config.max_json_body_bytes
                ));
            } else {
                let body = std::mem::take(&mut self.body);
                self.state.on_json_body(self.endpoint.format, status, &body);
            }
        }
    }

    /// The end rules. A stream that ended before its final event: every choice without a
    /// finish reason gets `error`, and the exchange is an error unless something better
    /// explains it. The exchange's error is then the first of: what the response said, the
    /// truncation, the transport's failure, the HTTP status.
    fn settle_error(&mut self, end: &End, status: u16) {
        let streamed = self.sse.is_some();
        let state = &mut self.state;
        if streamed && !state.complete && status < 400 {
            finish_unfinished_choices(&mut state.finish_reasons, self.request.choice_count);
            // A failure the caller names (a timeout, a connection error) says more than
            // "truncated"; an abort is the client's doing, not the stream's.
            if state.error.is_none() && *end == End::Complete {
                state.error = Some((
                    llmtrace::TRUNCATED_ERROR_TYPE.to_owned(),
                    "the stream ended before its final event".to_owned(),
                ));
            }
        }
        if let End::Failed {
            error_type,
            message,
        } = end
        {
            if state.error.is_none() {
                state.error = Some(bounded_error(error_type.to_string(), message.clone()));
            }
        }
        if state.error.is_none() && status >= 400 {
            state.error = Some((status.to_string(), format!("HTTP {status}")));
        }
    }

    /// The numbers the attributes, the metrics and the summary share.
    fn totals(&self, now: Instant) -> Totals {
        let state = &self.state;
        let streamed = self.sse.is_some();
        let mut usage = state.usage();
        let usage_source = if state.usage_reported {
            "reported"
        } else if self.config.estimate_usage && state.content_bytes > 0 {
            usage.output = Some(state.content_bytes.div_ceil(4) as i64);
            "estimated"
        } else {
            "missing"
        };
        // Generation speed: output tokens over the time from the first to the last chunk
        // (streams), or over the whole exchange.
        let generation_time = match (self.first_chunk, self.last_chunk) {
            (Some(first), Some(last)) if last > first => Some(last - first),
            _ => Some(now.saturating_duration_since(self.start)).filter(|_| !streamed),
        };
        let (mut output_tokens_per_second, mut time_per_output_token) = (None, None);
        if let (Some(output), Some(time)) = (usage.output.filter(|n| *n > 0), generation_time) {
            if !time.is_zero() {
                output_tokens_per_second = Some(output as f64 / time.as_secs_f64());
            }
            if output > 1 && streamed {
                let gaps = u32::try_from(output - 1).unwrap_or(u32::MAX);
                time_per_output_token = Some(time / gaps);
            }
        }
        Totals {
            streamed,
            usage,
            usage_source,
            time_to_first_chunk: self
                .first_chunk
                .filter(|_| streamed)
                .map(|t| t.saturating_duration_since(self.start)),
            output_tokens_per_second,
            time_per_output_token,
            cost: self.cost(&usage),
        }
    }

    /// What `usage` cost with the model that answered (or, when the answer names none, the
    /// one asked for), or why there is no cost.
    fn cost(&self, usage: &Usage) -> Option<Result<f64, &'static str>> {
        let prices = self.config.prices.as_deref()?;
        let model = self
            .state
            .model
            .as_deref()
            .or(self.request.model.as_deref());
        Some(match model {
            None => Err("no_model"),
            Some(model) => match prices.price(model) {
                None => Err("unknown_model"),
                Some(price) => price.cost(usage).ok_or("no_usage"),
            },
        })
    }

    /// The span attributes set at the end.
    fn end_attributes(&self, totals: &Totals) -> Vec<KeyValue> {
        let state = &self.state;
        let mut a = Vec::with_capacity(24);
        if let Some(id) = &state.id {
            a.push(KeyValue::new(gen_ai::RESPONSE_ID, id.clone()));
        }
        if let Some(model) = &state.model {
            a.push(KeyValue::new(gen_ai::RESPONSE_MODEL, model.clone()));
        }
        if !state.finish_reasons.is_empty() {
            a.push(KeyValue::new(
                gen_ai::RESPONSE_FINISH_REASONS,
                string_array(&self.finish_reasons()),
            ));
        }
        push_usage(&mut a, &totals.usage);
        if let Some(id) = &self.provider_request_id {
            a.push(KeyValue::new(llmtrace::PROVIDER_REQUEST_ID, id.clone()));
        }
        a.push(KeyValue::new(llmtrace::USAGE_SOURCE, totals.usage_source));
        match totals.cost {
            Some(Ok(cost)) => a.push(KeyValue::new(semconv::cost::USAGE_COST, cost)),
            Some(Err(missing)) => a.push(KeyValue::new(semconv::cost::MISSING, missing)),
            None => {}
        }
        a.push(KeyValue::new(
            llmtrace::MEASURED_AT,
            self.config.measured_at,
        ));
        if let Some(first_byte) = self.first_byte {
            let ttfb = first_byte.saturating_duration_since(self.start);
            a.push(KeyValue::new(
                llmtrace::TIME_TO_FIRST_BYTE,
                ttfb.as_secs_f64(),
            ));
        }
        if totals.streamed {
            self.push_stream_attributes(&mut a, totals.time_to_first_chunk);
        }
        if let Some(rate) = totals.output_tokens_per_second {
            a.push(KeyValue::new(llmtrace::OUTPUT_TOKENS_PER_SECOND, rate));
        }
        if let Some(guardrail) = state.guardrail {
            a.push(KeyValue::new(llmtrace::GUARDRAIL, guardrail));
        }
        let parse_error = self.request.parse_error.as_ref();
        if let Some(parse_error) = parse_error.or(state.parse_error.as_ref()) {
            a.push(KeyValue::new(llmtrace::PARSE_ERROR, parse_error.clone()));
        }
        a.extend(self.error_type());
        if self.config.capture_content {
            self.push_content(&mut a);
        }
        a
    }

    /// What only a stream has: time to first chunk, counts, gaps and stalls.
    fn push_stream_attributes(&self, a: &mut Vec<KeyValue>, ttfc: Option<Duration>) {
        let state = &self.state;
        if let Some(ttfc) = ttfc {
            a.push(KeyValue::new(
                gen_ai::RESPONSE_TIME_TO_FIRST_CHUNK,
                ttfc.as_secs_f64(),
            ));
        }
        a.push(KeyValue::new(llmtrace::STREAM_CHUNKS, state.chunks as i64));
        a.push(KeyValue::new(llmtrace::STREAM_EVENTS, state.events as i64));
        a.push(KeyValue::new(llmtrace::STREAM_COMPLETE, state.complete));
        if let (Some(mean), Some(max)) = (self.gaps.mean(), self.gaps.max()) {
            a.push(KeyValue::new(llmtrace::GAP_MEAN, mean.as_secs_f64()));
            a.push(KeyValue::new(llmtrace::GAP_MAX, max.as_secs_f64()));
            if let Some(p50) = self.gaps.quantile(0.5) {
                a.push(KeyValue::new(llmtrace::GAP_P50, p50.as_secs_f64()));
            }
            if let Some(p99) = self.gaps.quantile(0.99) {
                a.push(KeyValue::new(llmtrace::GAP_P99, p99.as_secs_f64()));
            }
        }
        a.push(KeyValue::new(llmtrace::STALLS, self.gaps.stalls() as i64));
        let offsets: Vec<i64> = self.timeline.offsets_ms().map(i64::from).collect();
        if !offsets.is_empty() {
            a.push(KeyValue::new(
                llmtrace::CHUNK_OFFSETS_MS,
                Value::Array(Array::I64(offsets)),
            ));
            a.push(KeyValue::new(
                llmtrace::CHUNK_STRIDE,
                i64::try_from(self.timeline.stride()).unwrap_or(i64::MAX),
            ));
        }
        let oversized = self.sse.as_ref().map_or(0, SseDecoder::oversized_events);
        if oversized > 0 {
            a.push(KeyValue::new(llmtrace::OVERSIZED_EVENTS, oversized as i64));
        }
    }

    /// The span events, each at the time it happened: first token, streamed tokens,
    /// guardrail, exception.
    fn end_events(&self, streamed: bool, now: Instant) -> Vec<SpanEventRecord> {
        let event = |name, at, attributes| SpanEventRecord {
            name,
            time: self.wall(at),
            attributes,
        };
        let mut events = Vec::new();
        if let Some(first) = self.first_chunk.filter(|_| streamed) {
            let ttfc = first.saturating_duration_since(self.start).as_secs_f64();
            events.push(event(
                llmtrace::EVENT_FIRST_TOKEN,
                first,
                vec![KeyValue::new(gen_ai::RESPONSE_TIME_TO_FIRST_CHUNK, ttfc)],
            ));
        }
        for (start, length) in self.timeline.stalls() {
            events.push(event(
                llmtrace::EVENT_STALL,
                self.start + *start,
                vec![KeyValue::new(
                    llmtrace::STALL_DURATION,
                    length.as_secs_f64(),
                )],
            ));
        }
        for (at, index) in &self.token_events {
            events.push(event(
                llmtrace::EVENT_TOKEN_STREAMED,
                *at,
                vec![KeyValue::new(llmtrace::CHUNK_INDEX, *index as i64)],
            ));
        }
        if let Some(guardrail) = self.state.guardrail {
            events.push(event(
                llmtrace::EVENT_GUARDRAIL,
                self.guardrail_at.unwrap_or(now),
                vec![KeyValue::new(llmtrace::GUARDRAIL, guardrail)],
            ));
        }
        if let Some((error_type, message)) = &self.state.error {
            events.push(event(
                exception::EVENT,
                now,
                vec![
                    KeyValue::new(exception::TYPE, error_type.clone()),
                    KeyValue::new(exception::MESSAGE, message.clone()),
                ],
            ));
        }
        events
    }

    /// The values of the GenAI metrics, with the attributes they carry.
    fn metric_values(&self, totals: &Totals, now: Instant) -> MetricValues {
        let mut attributes = self.identity_attributes(5);
        if let Some(model) = &self.state.model {
            attributes.push(KeyValue::new(gen_ai::RESPONSE_MODEL, model.clone()));
        }
        attributes.extend(self.error_type());
        if let Some(business) = &self.business {
            attributes.extend_from_slice(business.metric_dimensions());
        }
        MetricValues {
            attributes,
            duration: now.saturating_duration_since(self.start),
            time_to_first_chunk: totals.time_to_first_chunk,
            chunk_gaps: self.gaps.buckets().collect(),
            input_tokens: totals.usage.input,
            output_tokens: totals.usage.output,
            time_per_output_token: totals.time_per_output_token,
            streamed: totals.streamed,
            cost: totals.cost.and_then(Result::ok),
        }
    }

    /// The facts an access log wants.
    fn summary(&self, totals: &Totals) -> Summary {
        Summary {
            request_model: self.request.model.clone(),
            response_model: self.state.model.clone(),
            stream: self.request.stream,
            input_tokens: totals.usage.input,
            output_tokens: totals.usage.output,
            time_to_first_chunk: totals.time_to_first_chunk,
            finish_reasons: self.finish_reasons(),
            error_type: self.state.error.as_ref().map(|(t, _)| t.clone()),
            cost: totals.cost.and_then(Result::ok),
            streamed: totals.streamed,
            duration: Duration::ZERO,
            output_tokens_per_second: totals.output_tokens_per_second,
            output: self.keep_output.then(|| self.output_digest()),
            tool_calls: self.state.tool_calls.clone(),
            tool_arguments: self.tool_arguments(),
        }
    }

    /// [`Summary::tool_arguments`]: nothing unless content capture is on (output kept for a
    /// digest alone is not recorded).
    fn tool_arguments(&self) -> Vec<ToolContent> {
        if !self.config.capture_content {
            return Vec::new();
        }
        let calls = self.state.tool_arguments.iter();
        calls
            // A call cut to nothing is kept: its span says the arguments were cut.
            .filter(|call| !call.id.is_empty() && (!call.arguments.is_empty() || call.truncated))
            .filter_map(|call| {
                ToolContent::redacted(
                    call.id.clone(),
                    call.arguments.clone(),
                    call.truncated,
                    ContentKind::ToolCallArguments,
                    &self.config,
                )
            })
            .collect()
    }

    fn output_digest(&self) -> OutputDigest {
        let mut texts: Vec<&(u32, String)> = self.state.output_text.iter().collect();
        texts.sort_by_key(|(index, _)| *index);
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let mut add = |bytes: &[u8]| {
            for byte in bytes {
                hash ^= u64::from(*byte);
                hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
            }
        };
        for (index, text) in texts {
            add(&index.to_le_bytes());
            add(text.as_bytes());
        }
        // Tool calls are the answer too: two answers calling with other arguments differ.
        let mut calls: Vec<_> = self.state.tool_arguments.iter().collect();
        calls.sort_by_key(|call| (call.choice, call.slot));
        for call in calls {
            add(&call.choice.to_le_bytes());
            add(call.name.as_bytes());
            add(call.arguments.as_bytes());
        }
        OutputDigest {
            bytes: self.state.content_bytes,
            hash,
            truncated: self.state.capture_truncated,
        }
    }

    /// `error.type`, when the exchange failed.
    fn error_type(&self) -> Option<KeyValue> {
        let (error_type, _) = self.state.error.as_ref()?;
        Some(KeyValue::new(
            crate::semconv::http::ERROR_TYPE,
            error_type.clone(),
        ))
    }

    /// The finish reasons in choice order.
    fn finish_reasons(&self) -> Vec<String> {
        let reasons = &self.state.finish_reasons;
        reasons.iter().map(|(_, reason)| reason.clone()).collect()
    }

    fn push_content(&self, a: &mut Vec<KeyValue>) {
        let cap = self.config.content_cap;
        let mut truncated = self.state.capture_truncated;
        let mut record =
            |a: &mut Vec<KeyValue>, kind: ContentKind, key: &'static str, json: String| {
                let mut json = json;
                if json.len() > cap {
                    let mut cut = cap;
                    while !json.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    json.truncate(cut);
                    truncated = true;
                }
                let json = match &self.config.redactor {
                    Some(redact) => redact(kind, json),
                    None => Some(json),
                };
                if let Some(json) = json {
                    a.push(KeyValue::new(key, json));
                }
            };
        if let Some(body) = &self.request.body {
            let (system, messages) = super::content::input_messages(self.endpoint.format, body);
            if let Some(system) = system {
                record(
                    a,
                    ContentKind::SystemInstructions,
                    gen_ai::SYSTEM_INSTRUCTIONS,
                    system,
                );
            }
            if let Some(messages) = messages {
                record(
                    a,
                    ContentKind::InputMessages,
                    gen_ai::INPUT_MESSAGES,
                    messages,
                );
            }
        }
        let output = super::content::output_messages(
            &self.state.output_text,
            &self.state.tool_arguments,
            &self.state.finish_reasons,
        );
        if let Some(output) = output {
            record(
                a,
                ContentKind::OutputMessages,
                gen_ai::OUTPUT_MESSAGES,
                output,
            );
        }
        if truncated {
            a.push(KeyValue::new(llmtrace::CONTENT_TRUNCATED, true));
        }
    }

    /// Usage so far (for tests and adapters that log it).
    pub fn usage(&self) -> Usage {
        self.state.usage()
    }
}

/// What [`Exchange::finish`] works out once for the attributes, the metrics and the summary.
struct Totals {
    streamed: bool,
    /// Reported, or estimated when configured.
    usage: Usage,
    /// `llmtrace.usage.source`.
    usage_source: &'static str,
    /// Request to first content chunk (streams only).
    time_to_first_chunk: Option<Duration>,
    output_tokens_per_second: Option<f64>,
    /// Mean time per output token after the first (streams only).
    time_per_output_token: Option<Duration>,
    /// The cost in USD, or why there is none; `None` without prices.
    cost: Option<Result<f64, &'static str>>,
}

/// A stream that ended before its final event: each choice the request asked for (`n`, the
/// client's number, bounded to [`MAX_CHOICES`]) without a finish reason gets `error`.
/// `reasons` is `(choice index, reason)` sorted by index, and stays so.
fn finish_unfinished_choices(reasons: &mut Vec<(u32, String)>, choice_count: Option<i64>) {
    if reasons.is_empty() {
        reasons.push((0, "error".to_owned()));
    }
    let n = choice_count.unwrap_or(1).clamp(1, MAX_CHOICES as i64) as u32;
    for index in 0..n {
        if reasons.len() >= MAX_CHOICES {
            break;
        }
        if let Err(at) = reasons.binary_search_by_key(&index, |(i, _)| *i) {
            reasons.insert(at, (index, "error".to_owned()));
        }
    }
}

fn push_usage(a: &mut Vec<KeyValue>, usage: &Usage) {
    for (key, value) in [
        (gen_ai::USAGE_INPUT_TOKENS, usage.input),
        (gen_ai::USAGE_OUTPUT_TOKENS, usage.output),
        (gen_ai::USAGE_CACHE_READ_INPUT_TOKENS, usage.cache_read),
        (
            gen_ai::USAGE_CACHE_CREATION_INPUT_TOKENS,
            usage.cache_creation,
        ),
        (gen_ai::USAGE_REASONING_OUTPUT_TOKENS, usage.reasoning),
    ] {
        if let Some(v) = value {
            a.push(KeyValue::new(key, v));
        }
    }
}

fn string_array(items: &[String]) -> Value {
    Value::Array(Array::String(
        items.iter().map(|s| StringValue::from(s.clone())).collect(),
    ))
}
