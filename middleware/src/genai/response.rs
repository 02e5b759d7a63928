//! Reading LLM responses: what a response said ([`ResponseState`]), and the dispatch of
//! streamed events and whole JSON bodies to the provider modules ([`openai`](super::openai),
//! [`anthropic`](super::anthropic)), which read their wire formats and record through the
//! setters here.
//!
//! Streamed events take a fast path: most chunks of a stream are plain content deltas, and
//! for those we only need to know *that* they carry content (and how much). Anthropic's and
//! the Responses API's deltas are recognised by a few `memmem` searches for JSON keys
//! ([`json::key_at`](super::json::key_at)); an OpenAI chat chunk, once the first has given
//! the id and model, by a strict one-pass reader that builds nothing and refuses all but
//! the shapes of a plain delta (`plain_chunk` in [`openai`](super::openai)), so that what it
//! answers is what the full read would. The JSON is read in full for the events that carry
//! facts: the first chunk (id, model), finish reasons, usage, errors, refusals, a tool
//! call's first fragment, and every event when content capture is on.
//!
//! The chunks of one OpenAI chat stream are nearly identical: the same id, object, created,
//! model and fingerprint, then the choice and its delta, and only the content differs (and
//! what follows it: OpenAI's random `obfuscation`). So when the strict reader accepts a
//! chunk whose content string it reached having counted nothing, the state keeps the chunk's
//! *head*, its bytes up to and including the opening quote of that string, with what the
//! reader knew there (which members of the choice and the delta it had seen) in a
//! [`ChatTemplate`]. A later chunk that starts with the same bytes (one `memcmp`) is read
//! from its content string on: the string's unescaped length, then the rest of the delta,
//! of the choice, of the `choices` array and of the top-level object, by the same rules and
//! the same code as the strict reader from that point. Identical bytes leave the reader in
//! the identical state, so the answer is the strict reader's, at the cost of the tail only;
//! where the tail is refused the chunk goes to the full read, as it would have. A chunk that
//! does not start with the head (a changed `created`, a finish chunk) takes the strict
//! reader, and teaches the template its own head if it has one.
//!
//! The tail, what follows the content string, is as repetitive: OpenAI's is
//! `"},"logprobs":null,"finish_reason":null}],"usage":null,"obfuscation":"…"}`, only the
//! obfuscation's random contents changing. A tail the reader accepted having counted nothing
//! in it is kept too, with the contents of the last string value it skipped unread cut out.
//! A later tail equal to it but for those contents, which the same checked string skip steps
//! over, leaves the reader where the kept one left it (the contents of a string it skips do
//! not change its state), so the chunk says its content and nothing else; any other tail is
//! read as before, and may teach the template.

use serde_json::Value;

use super::endpoint::ApiFormat;
use super::sse::SseEvent;
use super::{anthropic, openai};
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
    /// Tool calls the answer asked for, `(id, name)`, at most [`MAX_TOOL_CALLS`].
    pub tool_calls: Vec<(String, String)>,
    /// Their arguments, only when content capture is on (empty, never allocated, when off),
    /// at most [`MAX_TOOL_CALLS`]; with the output text, within `capture_cap`.
    pub tool_arguments: Vec<ToolArguments>,
    /// The head of the last plain OpenAI chat chunk, for the fast path's template.
    pub(super) chat_template: ChatTemplate,
}

/// The head of a plain OpenAI chat chunk, which the chunks after it in a stream repeat: its
/// bytes up to and including the opening quote of the delta's `content` string, and what
/// the fast path's reader knows there (the `Once` bits of the choice and of the delta). A
/// chunk that starts with these bytes is read from its content on (`openai::chat`'s
/// `templated_chunk`). Empty until a chunk teaches it; at most [`MAX_TEMPLATE_HEAD`] bytes.
///
/// With the head, the *tail* of a chunk read from it: the bytes after its content string,
/// which OpenAI repeats too but for the random `obfuscation` string. A chunk of the head
/// whose tail is the same, but for the contents of one string the reader skips unread, is
/// answered from its content string alone. The tail belongs to the head: a new head
/// forgets it.
#[derive(Default, Clone)]
pub(super) struct ChatTemplate {
    pub(super) head: Vec<u8>,
    /// The choice's `Once` bits at the head.
    pub(super) choice: u8,
    /// The delta's `Once` bits at the head (`content`'s among them).
    pub(super) delta: u8,
    /// Where the top-level `choices` array starts in `head`: the bytes before it are
    /// top-level members that count nothing, so a chunk that starts with them but not with
    /// the whole head (a finish or usage chunk) is read from there on.
    pub(super) choices: usize,
    /// The tail after the content string of a chunk of this head that the reader accepted
    /// counting nothing in it, the contents of the string at `gap` cut out; empty until a
    /// chunk teaches it (a tail is never empty: it closes the objects), at most
    /// [`MAX_TEMPLATE_TAIL`] bytes.
    pub(super) tail: Vec<u8>,
    /// Where the cut string's contents were in `tail` (the byte after its opening quote;
    /// `tail[gap]` is its closing quote), or `None`: the tail is matched whole.
    pub(super) gap: Option<usize>,
}

/// Bytes of a chunk's head a [`ChatTemplate`] keeps, at most (OpenAI's are about 230).
pub(super) const MAX_TEMPLATE_HEAD: usize = 1024;

/// Bytes of a chunk's tail a [`ChatTemplate`] keeps, at most (OpenAI's are about 70 without
/// the obfuscation's contents).
pub(super) const MAX_TEMPLATE_TAIL: usize = 256;

/// Only a cache, which changes no fact of the response: left out of the state's `Debug`, so
/// that a state read with the template prints as one read without.
impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChatTemplate")
    }
}

/// The arguments of one tool call as the answer gave them, kept only with content capture.
#[derive(Debug, Default)]
pub(crate) struct ToolArguments {
    /// The choice whose message asks for the call (OpenAI chat); 0 in the other formats.
    pub choice: u32,
    /// Where the stream names the call: the tool call's `index` (OpenAI chat), the output item
    /// (Responses) or the content block (Anthropic). Later fragments name the call only so.
    pub slot: u32,
    /// The call's id, once a fragment said it (at most [`MAX_TOOL_TEXT`] bytes).
    pub id: String,
    /// The tool's name, once a fragment said it (at most [`MAX_TOOL_TEXT`] bytes).
    pub name: String,
    /// The arguments' JSON text, fragments appended in order.
    pub arguments: String,
    /// Some of the arguments did not fit the capture cap.
    pub truncated: bool,
}

/// Tool calls of one answer kept (ids to match results, names for spans).
pub const MAX_TOOL_CALLS: usize = 32;
/// Bytes of a tool call's id or name kept.
pub const MAX_TOOL_TEXT: usize = 128;

/// `text` cut to [`MAX_TOOL_TEXT`] bytes at a character boundary.
pub(crate) fn tool_text(text: &str) -> String {
    let mut end = text.len().min(MAX_TOOL_TEXT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// Whether an event carried output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventKind {
    Content,
    Other,
}

/// An event's type: its `event:` field, or else the `type` member of its data (servers that
/// send no `event:` lines). `parsed` keeps the parsed data alive for the returned borrow.
pub(super) fn event_type<'e>(
    event: &SseEvent<'e>,
    parsed: &'e mut Option<Value>,
) -> Option<&'e str> {
    if let Some(kind) = event.event {
        return Some(kind);
    }
    *parsed = serde_json::from_str::<Value>(event.data).ok();
    parsed.as_ref()?.get("type")?.as_str()
}

/// The `text` of each part in an array of content parts (`None` or a non-array: none).
pub(super) fn part_texts(parts: Option<&Value>) -> impl Iterator<Item = &str> {
    parts
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|part| part.get("text").and_then(Value::as_str))
}

/// `(error.type, message)` of a provider's error object: the first of `kind_keys` that holds
/// a string (else `_OTHER`), and its `message`.
pub(super) fn error_fields(error: &Value, kind_keys: &[&str]) -> (String, String) {
    let kind = kind_keys
        .iter()
        .find_map(|key| error.get(*key).and_then(Value::as_str))
        .unwrap_or("_OTHER");
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or_default();
    (kind.to_owned(), message.to_owned())
}

impl ResponseState {
    /// The answer asks for tool call `id` of `name` (empty when the event did not say).
    pub(super) fn note_tool_call(&mut self, id: &str, name: &str) {
        if id.is_empty() || self.tool_calls.len() >= MAX_TOOL_CALLS {
            return;
        }
        if self.tool_calls.iter().any(|(known, _)| known == id) {
            return;
        }
        self.tool_calls.push((tool_text(id), tool_text(name)));
    }

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

    // === dispatch: one arm per provider ===

    /// Observes one server-sent event.
    pub(crate) fn on_event(&mut self, format: ApiFormat, event: &SseEvent<'_>) -> EventKind {
        self.events += 1;
        match format {
            ApiFormat::OpenAiChat
            | ApiFormat::OpenAiCompletions
            | ApiFormat::OpenAiEmbeddings
            | ApiFormat::OpenAiResponses => openai::on_event(self, format, event),
            ApiFormat::AnthropicMessages => anthropic::on_event(self, format, event),
        }
    }

    /// Observes a complete JSON response body (non-streamed, or an error body).
    pub(crate) fn on_json_body(&mut self, format: ApiFormat, status: u16, body: &[u8]) {
        // The common case, a successful chat answer, is read without building a `Value`.
        if openai::on_body_bytes(self, format, status, body) {
            return;
        }
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
        let failed = status >= 400 || value.get("error").is_some_and(|e| !e.is_null());
        match format {
            ApiFormat::OpenAiChat
            | ApiFormat::OpenAiCompletions
            | ApiFormat::OpenAiEmbeddings
            | ApiFormat::OpenAiResponses => openai::on_body(self, format, status, failed, &value),
            ApiFormat::AnthropicMessages => {
                anthropic::on_body(self, format, status, failed, &value)
            }
        }
    }

    /// Parses an event's JSON; what is not JSON is noted on the span, never fatal.
    pub(super) fn parse_event(&mut self, data: &str) -> Option<Value> {
        match serde_json::from_str::<Value>(data) {
            Ok(value) => Some(value),
            Err(error) => {
                self.note_parse_error(format!("stream event is not JSON: {error}"));
                None
            }
        }
    }

    // === setters the provider modules record through ===

    /// Takes the first non-empty id and model (Azure's first chunk, carrying prompt filter
    /// results, has empty ones).
    pub(super) fn take_id_model(&mut self, value: &Value) {
        self.take_first_id_model(
            value.get("id").and_then(Value::as_str),
            value.get("model").and_then(Value::as_str),
        );
    }

    /// [`take_id_model`](Self::take_id_model) from members already read.
    pub(super) fn take_first_id_model(&mut self, id: Option<&str>, model: Option<&str>) {
        let non_empty = |s: Option<&str>| {
            s.filter(|s| !s.is_empty())
                .map(|s| bounded(s, MAX_NAME_BYTES).into_owned())
        };
        if self.id.is_none() {
            self.id = non_empty(id);
        }
        if self.model.is_none() {
            self.model = non_empty(model);
        }
    }

    pub(super) fn set_usage(&mut self, usage: Usage) {
        if !usage.is_empty() {
            self.usage = usage;
            self.usage_reported = true;
        }
    }

    /// Records a choice's finish reason; choices beyond [`MAX_CHOICES`] distinct indexes are
    /// not tracked (the indexes come from the stream, the count from the client's `n`).
    pub(super) fn set_finish_reason(&mut self, index: u32, reason: &str) {
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

    pub(super) fn set_error(&mut self, (error_type, message): (String, String)) {
        if self.error.is_none() {
            self.error = Some(bounded_error(error_type, message));
        }
    }

    pub(crate) fn note_parse_error(&mut self, message: String) {
        if self.parse_error.is_none() {
            self.parse_error = Some(message);
        }
    }

    /// Bytes of captured content still allowed: the output text and the tool arguments share
    /// the cap.
    fn capture_room(&self) -> usize {
        let text: usize = self.output_text.iter().map(|(_, t)| t.len()).sum();
        let arguments: usize = self.tool_arguments.iter().map(|c| c.arguments.len()).sum();
        self.capture_cap.saturating_sub(text + arguments)
    }

    pub(super) fn capture_text(&mut self, index: u32, text: &str) {
        if !self.capture {
            return;
        }
        let room = self.capture_room();
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

// === tool call arguments, only with content capture ===

impl ResponseState {
    /// With capture on: the tool call at `slot` of `choice` is `id` of `name` (either may be
    /// empty: the fragment that says it fills it in). Returns where the call is kept, `None`
    /// with capture off or past [`MAX_TOOL_CALLS`].
    pub(super) fn capture_tool_call(
        &mut self,
        choice: u32,
        slot: u32,
        id: &str,
        name: &str,
    ) -> Option<usize> {
        if !self.capture {
            return None;
        }
        let known = self.tool_arguments.iter();
        let at = match known
            .map(|c| (c.choice, c.slot))
            .position(|key| key == (choice, slot))
        {
            Some(at) => at,
            None if self.tool_arguments.len() >= MAX_TOOL_CALLS => {
                self.capture_truncated = true;
                return None;
            }
            None => {
                self.tool_arguments.push(ToolArguments {
                    choice,
                    slot,
                    ..ToolArguments::default()
                });
                self.tool_arguments.len() - 1
            }
        };
        let call = &mut self.tool_arguments[at];
        if call.id.is_empty() && !id.is_empty() {
            call.id = tool_text(id);
        }
        if call.name.is_empty() && !name.is_empty() {
            call.name = tool_text(name);
        }
        Some(at)
    }

    /// With capture on: `fragment` continues the arguments of the call at `slot` of `choice`,
    /// as far as the cap allows (what is cut marks the call and the capture truncated).
    pub(super) fn capture_tool_arguments(&mut self, choice: u32, slot: u32, fragment: &str) {
        if !self.capture || fragment.is_empty() {
            return;
        }
        let room = self.capture_room();
        let Some(at) = self.capture_tool_call(choice, slot, "", "") else {
            return;
        };
        let (kept, cut) = super::tool_content::cut_to(fragment, room);
        let call = &mut self.tool_arguments[at];
        call.arguments.push_str(kept);
        if cut {
            call.truncated = true;
            self.capture_truncated = true;
        }
    }

    /// Whether the call at `slot` of `choice` has no arguments yet (a whole object's arguments
    /// are taken only where its stream did not already give them).
    pub(super) fn tool_arguments_missing(&self, choice: u32, slot: u32) -> bool {
        !self
            .tool_arguments
            .iter()
            .any(|c| (c.choice, c.slot) == (choice, slot) && !c.arguments.is_empty())
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
