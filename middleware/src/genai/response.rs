//! Reading LLM responses: streamed events and whole JSON bodies, per wire format.
//!
//! Streamed events take a fast path: most chunks of a stream are plain content deltas, and
//! for those we only need to know *that* they carry content (and how much), which a few
//! `memmem` searches for JSON keys answer without parsing. The JSON is parsed in full only
//! for the rare events that carry facts: the first chunk (id, model), finish reasons, usage,
//! errors, refusals, and every event when content capture is on.
//!
//! The key searches rely on one property of JSON: the bytes `"key"` followed by optional
//! white space and `:` can only be an object key, because a quote inside a string value is
//! always escaped. When a search is not conclusive the event is parsed in full.

use std::sync::LazyLock;

use memchr::memmem::Finder;
use serde_json::Value;

use super::endpoint::ApiFormat;
use super::sse::SseEvent;
use crate::limits::{MAX_CHOICES, MAX_MESSAGE_BYTES, MAX_NAME_BYTES, bounded};

/// Token counts as the provider reported them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Usage {
    /// Input (prompt) tokens.
    pub input: Option<i64>,
    /// Output (completion) tokens.
    pub output: Option<i64>,
    /// Input tokens read from the provider's prompt cache.
    pub cache_read: Option<i64>,
    /// Input tokens written to the provider's prompt cache.
    pub cache_creation: Option<i64>,
    /// Output tokens spent on reasoning.
    pub reasoning: Option<i64>,
}

impl Usage {
    fn is_empty(&self) -> bool {
        *self == Usage::default()
    }
}

/// What the observed response said, accumulated event by event.
#[derive(Debug, Default)]
pub(crate) struct ResponseState {
    pub id: Option<String>,
    pub model: Option<String>,
    /// `(choice index, reason)`, kept sorted by index.
    pub finish_reasons: Vec<(u32, String)>,
    pub usage: Usage,
    pub usage_reported: bool,
    /// Content-bearing events.
    pub chunks: u64,
    /// All events.
    pub events: u64,
    /// Bytes of output text seen (for the optional estimate).
    pub content_bytes: u64,
    /// The stream's final event arrived.
    pub complete: bool,
    /// `(error.type, message)` from an error body or event.
    pub error: Option<(String, String)>,
    pub guardrail: Option<&'static str>,
    pub parse_error: Option<String>,
    /// Output text per choice, when content capture is on (capped by the caller).
    pub output_text: Vec<(u32, String)>,
    pub capture: bool,
    pub capture_cap: usize,
    pub capture_truncated: bool,
    /// Anthropic's `input_tokens` leaves out cached tokens; the conventions' input count
    /// includes them.
    pub input_excludes_cache: bool,
}

/// Whether an event carried output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventKind {
    Content,
    Other,
}

static TEXT: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"text\""));

static CONTENT: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"content\""));
static TOOL_CALLS: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"tool_calls\""));
static FINISH_REASON: LazyLock<Finder<'static>> =
    LazyLock::new(|| Finder::new(b"\"finish_reason\""));
static USAGE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"usage\""));

/// An event's type: its `event:` field, or else the `type` member of its data (servers that
/// send no `event:` lines). `parsed` keeps the parsed data alive for the returned borrow.
fn event_type<'e>(event: &SseEvent<'e>, parsed: &'e mut Option<Value>) -> Option<&'e str> {
    if let Some(kind) = event.event {
        return Some(kind);
    }
    *parsed = serde_json::from_str::<Value>(event.data).ok();
    parsed.as_ref()?.get("type")?.as_str()
}

/// The position and value of the first `"key":` at or after `from`.
fn key_at<'d>(data: &'d [u8], from: usize, finder: &Finder<'_>) -> Option<(usize, &'d [u8])> {
    let mut from = from;
    while let Some(found) = finder.find(&data[from..]) {
        let at = from + found;
        let after_key = at + finder.needle().len();
        if let Some(value) = skip_ws(&data[after_key..]).strip_prefix(b":") {
            return Some((at, skip_ws(value)));
        }
        from = after_key;
    }
    None
}

/// The value of `"key":`, looked for after `at` first (where providers put it), then before.
fn key_after_or_before<'d>(data: &'d [u8], at: usize, finder: &Finder<'_>) -> Option<&'d [u8]> {
    key_at(data, at, finder)
        .or_else(|| key_at(&data[..at], 0, finder))
        .map(|(_, value)| value)
}

/// What follows `"key":` for the first occurrence of the key, white space skipped.
/// `None` when the key is absent.
fn value_after<'d>(data: &'d [u8], finder: &Finder<'_>) -> Option<&'d [u8]> {
    let mut from = 0;
    while let Some(at) = finder.find(&data[from..]) {
        let after_key = from + at + finder.needle().len();
        let rest = skip_ws(&data[after_key..]);
        if let Some(value) = rest.strip_prefix(b":") {
            return Some(skip_ws(value));
        }
        from = after_key;
    }
    None
}

fn skip_ws(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t' | b'\n' | b'\r', rest @ ..] = s {
        s = rest;
    }
    s
}

/// The length of the JSON string starting at `s[0] == '"'`, in raw bytes between the quotes.
fn string_len(s: &[u8]) -> Option<usize> {
    let body = s.strip_prefix(b"\"")?;
    let mut from = 0;
    loop {
        let at = memchr::memchr(b'"', &body[from..])? + from;
        let backslashes = body[..at].iter().rev().take_while(|b| **b == b'\\').count();
        if backslashes % 2 == 0 {
            return Some(at);
        }
        from = at + 1;
    }
}

fn is_null(value: Option<&[u8]>) -> bool {
    value.is_none_or(|v| v.starts_with(b"null"))
}

impl ResponseState {
    /// Usage as the conventions count it: input tokens include cached ones.
    pub(crate) fn usage(&self) -> Usage {
        let mut usage = self.usage;
        if self.input_excludes_cache {
            if let Some(input) = usage.input {
                usage.input =
                    Some(input + usage.cache_read.unwrap_or(0) + usage.cache_creation.unwrap_or(0));
            }
        }
        usage
    }

    /// Observes one server-sent event.
    pub(crate) fn on_event(&mut self, format: ApiFormat, event: &SseEvent<'_>) -> EventKind {
        self.events += 1;
        match format {
            ApiFormat::OpenAiChat | ApiFormat::OpenAiCompletions => self.openai_chunk(event.data),
            ApiFormat::OpenAiResponses => self.responses_event(event),
            ApiFormat::AnthropicMessages => self.anthropic_event(event),
            ApiFormat::OpenAiEmbeddings => EventKind::Other,
        }
    }

    // === OpenAI Chat Completions and Completions ===

    fn openai_chunk(&mut self, data: &str) -> EventKind {
        let data = data.trim();
        if data == "[DONE]" {
            self.complete = true;
            return EventKind::Other;
        }
        // Fast path, for the plain deltas that make up almost all of a stream: a non-empty
        // `content` (chat) or `text` (completions) string, or a `tool_calls` fragment, with
        // no finish reason and no usage. Providers put `finish_reason` and `usage` after the
        // delta, so each key is searched from where the previous one was found: about one
        // pass over the chunk. A key missing from that tail is looked for in the head too,
        // so an unusual order costs time, never correctness. Anything else (the first chunk,
        // finish and usage chunks, errors, refusals, chunks without content) is parsed in full.
        if !self.capture && self.id.is_some() {
            let bytes = data.as_bytes();
            let output = [&*CONTENT, &*TEXT, &*TOOL_CALLS]
                .iter()
                .find_map(|key| key_at(bytes, 0, key));
            if let Some((at, value)) = output {
                let text_len = string_len(value);
                let carries_output = match text_len {
                    Some(len) => len > 0,
                    None => value.starts_with(b"["), // tool_calls
                };
                if carries_output
                    && is_null(key_after_or_before(bytes, at, &FINISH_REASON))
                    && is_null(key_after_or_before(bytes, at, &USAGE))
                {
                    self.content_bytes += text_len.unwrap_or(0) as u64;
                    return EventKind::Content;
                }
            }
        }
        match self.parse_event(data) {
            Some(value) => self.openai_value(&value, true),
            None => EventKind::Other,
        }
    }

    /// A chat/completions chunk (`streamed`) or whole response body.
    fn openai_value(&mut self, value: &Value, streamed: bool) -> EventKind {
        if let Some(error) = value.get("error").filter(|e| !e.is_null()) {
            self.set_error(openai_error(error));
            return EventKind::Other;
        }
        // vLLM and some other servers: `{"object": "error", "message": ..., "type": ...}`.
        if value.get("object").and_then(Value::as_str) == Some("error") {
            self.set_error(openai_error(value));
            return EventKind::Other;
        }
        self.take_id_model(value);
        if let Some(usage) = value.get("usage").filter(|u| u.is_object()) {
            self.set_usage(openai_usage(usage));
        }
        let mut kind = EventKind::Other;
        for choice in value
            .get("choices")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let index = choice.get("index").and_then(Value::as_u64).unwrap_or(0) as u32;
            let part = if streamed {
                choice.get("delta")
            } else {
                choice.get("message")
            };
            let text = part
                .and_then(|p| p.get("content"))
                .and_then(Value::as_str)
                .or_else(|| choice.get("text").and_then(Value::as_str));
            if let Some(text) = text.filter(|t| !t.is_empty()) {
                kind = EventKind::Content;
                self.content_bytes += text.len() as u64;
                self.capture_text(index, text);
            }
            if let Some(refusal) = part
                .and_then(|p| p.get("refusal"))
                .and_then(Value::as_str)
                .filter(|r| !r.is_empty())
            {
                kind = EventKind::Content;
                self.guardrail = Some("refusal");
                self.capture_text(index, refusal);
            }
            if let Some(calls) = part
                .and_then(|p| p.get("tool_calls"))
                .and_then(Value::as_array)
            {
                if !calls.is_empty() {
                    kind = EventKind::Content;
                    for call in calls {
                        if let Some(args) = call
                            .get("function")
                            .and_then(|f| f.get("arguments"))
                            .and_then(Value::as_str)
                        {
                            self.capture_text(index, args);
                        }
                    }
                }
            }
            if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
                if reason == "content_filter" {
                    self.guardrail = Some("content_filter");
                }
                self.set_finish_reason(index, reason);
            }
        }
        kind
    }

    /// Parses an event's JSON; what is not JSON is noted on the span, never fatal.
    fn parse_event(&mut self, data: &str) -> Option<Value> {
        match serde_json::from_str::<Value>(data) {
            Ok(value) => Some(value),
            Err(error) => {
                self.note_parse_error(format!("stream event is not JSON: {error}"));
                None
            }
        }
    }

    // === OpenAI Responses API ===

    fn responses_event(&mut self, event: &SseEvent<'_>) -> EventKind {
        let mut parsed = None;
        let Some(kind) = event_type(event, &mut parsed) else {
            return EventKind::Other;
        };
        match kind {
            "response.output_text.delta"
            | "response.refusal.delta"
            | "response.function_call_arguments.delta" => {
                if kind == "response.refusal.delta" {
                    self.guardrail = Some("refusal");
                }
                let bytes = event.data.as_bytes();
                let delta = value_after(bytes, &DELTA_KEY)
                    .and_then(string_len)
                    .unwrap_or(0);
                self.content_bytes += delta as u64;
                if self.capture {
                    if let Ok(value) = serde_json::from_str::<Value>(event.data) {
                        let index = value
                            .get("output_index")
                            .and_then(Value::as_u64)
                            .unwrap_or(0);
                        if let Some(text) = value.get("delta").and_then(Value::as_str) {
                            self.capture_text(index as u32, text);
                        }
                    }
                }
                EventKind::Content
            }
            "response.created"
            | "response.in_progress"
            | "response.completed"
            | "response.incomplete"
            | "response.failed"
            | "error" => {
                let Some(value) = self.parse_event(event.data) else {
                    return EventKind::Other;
                };
                if kind == "error" {
                    let error = value.get("error").unwrap_or(&value);
                    self.set_error(openai_error(error));
                    return EventKind::Other;
                }
                if let Some(response) = value.get("response") {
                    self.responses_object(response);
                }
                if matches!(
                    kind,
                    "response.completed" | "response.incomplete" | "response.failed"
                ) {
                    self.complete = true;
                }
                EventKind::Other
            }
            _ => EventKind::Other,
        }
    }

    /// A Responses API `response` object (streamed lifecycle event or whole body).
    fn responses_object(&mut self, response: &Value) {
        self.take_id_model(response);
        if let Some(usage) = response.get("usage").filter(|u| u.is_object()) {
            self.set_usage(Usage {
                input: usage.get("input_tokens").and_then(Value::as_i64),
                output: usage.get("output_tokens").and_then(Value::as_i64),
                cache_read: usage
                    .pointer("/input_tokens_details/cached_tokens")
                    .and_then(Value::as_i64),
                cache_creation: None,
                reasoning: usage
                    .pointer("/output_tokens_details/reasoning_tokens")
                    .and_then(Value::as_i64),
            });
        }
        match response.get("status").and_then(Value::as_str) {
            Some("completed") => self.set_finish_reason(0, "stop"),
            Some("incomplete") => {
                let reason = response
                    .pointer("/incomplete_details/reason")
                    .and_then(Value::as_str)
                    .unwrap_or("incomplete");
                if reason == "content_filter" {
                    self.guardrail = Some("content_filter");
                }
                self.set_finish_reason(0, reason);
            }
            Some("failed") => {
                self.set_finish_reason(0, "error");
                if let Some(error) = response.get("error").filter(|e| !e.is_null()) {
                    self.set_error(openai_error(error));
                }
            }
            _ => {}
        }
        if self.capture && response.get("status").and_then(Value::as_str) != Some("in_progress") {
            for (index, item) in response
                .get("output")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                for part in item
                    .get("content")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(text) = part.get("text").and_then(Value::as_str) {
                        if !self.output_text.iter().any(|(i, _)| *i == index as u32) {
                            self.capture_text(index as u32, text);
                        }
                    }
                }
            }
        }
    }

    // === Anthropic Messages ===

    fn anthropic_event(&mut self, event: &SseEvent<'_>) -> EventKind {
        let mut parsed = None;
        let Some(kind) = event_type(event, &mut parsed) else {
            return EventKind::Other;
        };
        match kind {
            "content_block_delta" => {
                let bytes = event.data.as_bytes();
                let len = [&*TEXT, &*PARTIAL_JSON, &*THINKING]
                    .iter()
                    .find_map(|f| value_after(bytes, f).and_then(string_len))
                    .unwrap_or(0);
                self.content_bytes += len as u64;
                if self.capture {
                    if let Ok(value) = serde_json::from_str::<Value>(event.data) {
                        let index = value.get("index").and_then(Value::as_u64).unwrap_or(0);
                        let delta = value.get("delta");
                        if let Some(text) = delta
                            .and_then(|d| d.get("text").or_else(|| d.get("partial_json")))
                            .and_then(Value::as_str)
                        {
                            self.capture_text(index as u32, text);
                        }
                    }
                }
                if len > 0 {
                    EventKind::Content
                } else {
                    EventKind::Other
                }
            }
            "message_start" | "message_delta" | "error" => {
                let Some(value) = self.parse_event(event.data) else {
                    return EventKind::Other;
                };
                match kind {
                    "message_start" => {
                        if let Some(message) = value.get("message") {
                            self.anthropic_message(message, true);
                        }
                    }
                    "message_delta" => {
                        if let Some(reason) =
                            value.pointer("/delta/stop_reason").and_then(Value::as_str)
                        {
                            self.set_finish_reason(0, reason);
                        }
                        if let Some(usage) = value.get("usage").filter(|u| u.is_object()) {
                            self.merge_anthropic_usage(usage);
                        }
                    }
                    _ => self.set_error(anthropic_error(&value)),
                }
                EventKind::Other
            }
            "message_stop" => {
                self.complete = true;
                EventKind::Other
            }
            _ => EventKind::Other,
        }
    }

    /// An Anthropic `message` object (from `message_start`, or a whole body). At
    /// `message_start` the output count is a placeholder: the final one comes with
    /// `message_delta`.
    fn anthropic_message(&mut self, message: &Value, at_start: bool) {
        self.take_id_model(message);
        if let Some(usage) = message.get("usage").filter(|u| u.is_object()) {
            if at_start {
                let mut usage = usage.clone();
                if let Some(object) = usage.as_object_mut() {
                    object.remove("output_tokens");
                }
                self.merge_anthropic_usage(&usage);
            } else {
                self.merge_anthropic_usage(usage);
            }
        }
        if let Some(reason) = message.get("stop_reason").and_then(Value::as_str) {
            self.set_finish_reason(0, reason);
        }
        if self.capture {
            for block in message
                .get("content")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(text) = block.get("text").and_then(Value::as_str) {
                    self.capture_text(0, text);
                }
            }
        }
    }

    /// Anthropic reports usage in parts: input at `message_start`, cumulative output at
    /// `message_delta`. A field present later replaces the earlier value.
    fn merge_anthropic_usage(&mut self, usage: &Value) {
        let get = |k: &str| usage.get(k).and_then(Value::as_i64);
        let new = Usage {
            input: get("input_tokens"),
            output: get("output_tokens"),
            cache_read: get("cache_read_input_tokens"),
            cache_creation: get("cache_creation_input_tokens"),
            reasoning: None,
        };
        let old = self.usage;
        self.input_excludes_cache = true;
        self.set_usage(Usage {
            input: new.input.or(old.input),
            output: new.output.or(old.output),
            cache_read: new.cache_read.or(old.cache_read),
            cache_creation: new.cache_creation.or(old.cache_creation),
            reasoning: old.reasoning,
        });
    }

    // === Whole (non-streamed) bodies ===

    /// Observes a complete JSON response body (non-streamed, or an error body).
    pub(crate) fn on_json_body(&mut self, format: ApiFormat, status: u16, body: &[u8]) {
        let value: Value = match serde_json::from_slice(body) {
            Ok(value) => value,
            Err(error) => {
                if status >= 400 {
                    self.set_error((
                        status.to_string(),
                        String::from_utf8_lossy(&body[..body.len().min(256)]).into_owned(),
                    ));
                } else if !body.is_empty() {
                    self.note_parse_error(format!("response body is not JSON: {error}"));
                }
                return;
            }
        };
        if status >= 400 || value.get("error").is_some_and(|e| !e.is_null()) {
            let error = match format {
                ApiFormat::AnthropicMessages => anthropic_error(&value),
                _ => value
                    .get("error")
                    .map(openai_error)
                    .unwrap_or_else(|| (status.to_string(), String::new())),
            };
            self.set_error(error);
            return;
        }
        match format {
            ApiFormat::OpenAiChat | ApiFormat::OpenAiCompletions => {
                self.openai_value(&value, false);
            }
            ApiFormat::OpenAiEmbeddings => {
                self.take_id_model(&value);
                if let Some(usage) = value.get("usage").filter(|u| u.is_object()) {
                    self.set_usage(openai_usage(usage));
                }
            }
            ApiFormat::OpenAiResponses => self.responses_object(&value),
            ApiFormat::AnthropicMessages => self.anthropic_message(&value, false),
        }
    }

    // === shared ===

    /// Takes the first non-empty id and model (Azure's first chunk, carrying prompt filter
    /// results, has empty ones).
    fn take_id_model(&mut self, value: &Value) {
        let non_empty = |key: &str| {
            value
                .get(key)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(|s| bounded(s, MAX_NAME_BYTES).into_owned())
        };
        if self.id.is_none() {
            self.id = non_empty("id");
        }
        if self.model.is_none() {
            self.model = non_empty("model");
        }
    }

    fn set_usage(&mut self, usage: Usage) {
        if !usage.is_empty() {
            self.usage = usage;
            self.usage_reported = true;
        }
    }

    /// Records a choice's finish reason; choices beyond [`MAX_CHOICES`] distinct indexes are
    /// not tracked (the indexes come from the stream, the count from the client's `n`).
    fn set_finish_reason(&mut self, index: u32, reason: &str) {
        let reason = bounded(reason, MAX_NAME_BYTES);
        match self
            .finish_reasons
            .binary_search_by_key(&index, |(i, _)| *i)
        {
            Ok(at) => {
                if self.finish_reasons[at].1 != reason {
                    self.finish_reasons[at].1 = reason.into_owned();
                }
            }
            Err(_) if self.finish_reasons.len() >= MAX_CHOICES => {}
            Err(at) => self.finish_reasons.insert(at, (index, reason.into_owned())),
        }
    }

    fn set_error(&mut self, (error_type, message): (String, String)) {
        if self.error.is_none() {
            self.error = Some(bounded_error(error_type, message));
        }
    }

    pub(crate) fn note_parse_error(&mut self, message: String) {
        if self.parse_error.is_none() {
            self.parse_error = Some(message);
        }
    }

    fn capture_text(&mut self, index: u32, text: &str) {
        if !self.capture {
            return;
        }
        let used: usize = self.output_text.iter().map(|(_, t)| t.len()).sum();
        let room = self.capture_cap.saturating_sub(used);
        if room == 0 {
            self.capture_truncated = true;
            return;
        }
        let mut take = text.len().min(room);
        while !text.is_char_boundary(take) {
            take -= 1;
        }
        if take < text.len() {
            self.capture_truncated = true;
        }
        let full = self.output_text.len() >= MAX_CHOICES;
        match self.output_text.iter_mut().find(|(i, _)| *i == index) {
            Some((_, buffer)) => buffer.push_str(&text[..take]),
            // Choices beyond MAX_CHOICES distinct indexes are not captured.
            None if full => self.capture_truncated = true,
            None => self.output_text.push((index, text[..take].to_owned())),
        }
    }
}

/// An `(error.type, message)` pair within [`MAX_NAME_BYTES`] and [`MAX_MESSAGE_BYTES`]: both
/// may come from an error body that echoes the request.
pub(crate) fn bounded_error(error_type: String, message: String) -> (String, String) {
    let bound = |value: String, max| match bounded(&value, max) {
        std::borrow::Cow::Borrowed(_) => value,
        std::borrow::Cow::Owned(cut) => cut,
    };
    (
        bound(error_type, MAX_NAME_BYTES),
        bound(message, MAX_MESSAGE_BYTES),
    )
}

static DELTA_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"delta\""));
static PARTIAL_JSON: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"partial_json\""));
static THINKING: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"thinking\""));

fn openai_usage(usage: &Value) -> Usage {
    let get = |k: &str| usage.get(k).and_then(Value::as_i64);
    Usage {
        input: get("prompt_tokens"),
        output: get("completion_tokens"),
        cache_read: usage
            .pointer("/prompt_tokens_details/cached_tokens")
            .and_then(Value::as_i64),
        cache_creation: None,
        reasoning: usage
            .pointer("/completion_tokens_details/reasoning_tokens")
            .and_then(Value::as_i64),
    }
}

/// `(error.type, message)` of an OpenAI error object: its `code` when that is a string
/// (`rate_limit_exceeded`), else its `type`.
fn openai_error(error: &Value) -> (String, String) {
    let kind = error
        .get("code")
        .and_then(Value::as_str)
        .or_else(|| error.get("type").and_then(Value::as_str))
        .unwrap_or("_OTHER");
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or_default();
    (kind.to_owned(), message.to_owned())
}

/// `(error.type, message)` of an Anthropic error body or event.
fn anthropic_error(value: &Value) -> (String, String) {
    let error = value.get("error").unwrap_or(value);
    let kind = error
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("_OTHER");
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or_default();
    (kind.to_owned(), message.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value<'d>(data: &'d [u8], finder: &Finder<'_>) -> Option<&'d [u8]> {
        key_after_or_before(data, 0, finder)
    }

    #[test]
    fn key_values_are_found_with_or_without_spaces() {
        let compact = br#"{"a":1,"finish_reason":null,"content":"hi"}"#;
        assert!(is_null(value(compact, &FINISH_REASON)));
        assert_eq!(value(compact, &CONTENT).and_then(string_len), Some(2));
        let spaced = br#"{"finish_reason" : "stop", "content": "h\"i\\"}"#;
        assert!(!is_null(value(spaced, &FINISH_REASON)));
        assert_eq!(value(spaced, &CONTENT).and_then(string_len), Some(6));
        assert_eq!(value(spaced, &TEXT), None);
    }

    #[test]
    fn keys_before_the_content_are_found_too() {
        let data = br#"{"usage":{"prompt_tokens":1},"content":"x","finish_reason":null}"#;
        let (at, _) = key_at(data, 0, &CONTENT).unwrap();
        assert!(!is_null(key_after_or_before(data, at, &USAGE)));
        assert!(is_null(key_after_or_before(data, at, &FINISH_REASON)));
    }

    #[test]
    fn a_key_inside_a_string_value_is_not_a_key() {
        // The text mentions "finish_reason": but escaped, so it is not a key.
        let data = br#"{"content":"say \"finish_reason\": stop","finish_reason":null}"#;
        assert!(is_null(value(data, &FINISH_REASON)));
        // A string value equal to a key name is not a key either.
        let data = br#"{"type":"content","content":"x"}"#;
        assert_eq!(value(data, &CONTENT).and_then(string_len), Some(1));
    }
}
