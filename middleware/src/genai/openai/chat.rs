//! Chat Completions and (legacy) Completions: streamed chunks and whole bodies.

use std::sync::LazyLock;

use std::borrow::Cow;
use std::marker::PhantomData;

use memchr::memmem::Finder;
use serde::Deserialize;
use serde_json::Value;

use super::super::json;
use super::super::response::{EventKind, ResponseState, Usage};
use super::super::view::{self, Loose, Present};
use super::error_of;

static CONTENT: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"content\""));
static TEXT: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"text\""));
static TOOL_CALLS: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"tool_calls\""));
static FINISH_REASON: LazyLock<Finder<'static>> =
    LazyLock::new(|| Finder::new(b"\"finish_reason\""));
static USAGE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"usage\""));
static NAME: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"name\""));

impl ResponseState {
    pub(super) fn openai_chunk(&mut self, data: &str) -> EventKind {
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
                .find_map(|key| json::key_at(bytes, 0, key));
            if let Some((at, value)) = output {
                let text_len = json::string_len(value);
                // A tool call's first fragment names it (`"name"`; a name inside the
                // arguments is escaped): parsed in full, for its id and name.
                let carries_output = match text_len {
                    Some(len) => len > 0,
                    None => value.starts_with(b"[") && NAME.find(bytes).is_none(),
                };
                if carries_output
                    && json::is_null(json::key_after_or_before(bytes, at, &FINISH_REASON))
                    && json::is_null(json::key_after_or_before(bytes, at, &USAGE))
                {
                    self.content_bytes += text_len.unwrap_or(0) as u64;
                    return EventKind::Content;
                }
            }
        }
        if let Some(kind) = self.openai_bytes(data.as_bytes(), true) {
            return kind;
        }
        match self.parse_event(data) {
            Some(value) => self.openai_value(&value, true),
            None => EventKind::Other,
        }
    }

    /// A chat/completions chunk (`streamed`) or whole response body.
    pub(super) fn openai_value(&mut self, value: &Value, streamed: bool) -> EventKind {
        if let Some(error) = value.get("error").filter(|e| !e.is_null()) {
            self.set_error(error_of(error));
            return EventKind::Other;
        }
        // vLLM and some other servers: `{"object": "error", "message": ..., "type": ...}`.
        if value.get("object").and_then(Value::as_str) == Some("error") {
            self.set_error(error_of(value));
            return EventKind::Other;
        }
        match view::of::<ChatView<'_>>(value) {
            Some(chat) => self.openai_view(&chat, streamed),
            None => EventKind::Other,
        }
    }

    /// A chat/completions chunk or body read straight from its bytes, without building a
    /// `Value`: `None` when it is an error (or not an object), which `openai_value` reads.
    pub(super) fn openai_bytes(&mut self, bytes: &[u8], streamed: bool) -> Option<EventKind> {
        let chat = view::read::<ChatView<'_>>(bytes).ok()??;
        if chat.error.get().is_some() || chat.object.str() == Some("error") {
            return None;
        }
        Some(self.openai_view(&chat, streamed))
    }

    /// What a chat/completions chunk or body that is not an error says.
    fn openai_view(&mut self, chat: &ChatView<'_>, streamed: bool) -> EventKind {
        self.take_first_id_model(chat.id.str(), chat.model.str());
        if let Some(usage) = chat.usage.get() {
            self.set_usage(usage.counts());
        }
        let mut kind = EventKind::Other;
        for choice in chat.choices.get().into_iter().flatten() {
            let index = choice.index.value().unwrap_or(0) as u32;
            let part = if streamed {
                choice.delta.get()
            } else {
                choice.message.get()
            };
            let text = part
                .and_then(|p| p.content.str())
                .or_else(|| choice.text.str());
            if let Some(text) = text.filter(|t| !t.is_empty()) {
                kind = EventKind::Content;
                self.content_bytes += text.len() as u64;
                self.capture_text(index, text);
            }
            if let Some(refusal) = part.and_then(|p| p.refusal.str()).filter(|r| !r.is_empty()) {
                kind = EventKind::Content;
                self.guardrail = Some("refusal");
                self.capture_text(index, refusal);
            }
            if let Some(calls) = part.and_then(|p| p.tool_calls.get()) {
                if !calls.is_empty() {
                    kind = EventKind::Content;
                }
                self.chat_tool_calls(index, calls);
            }
            if let Some(reason) = choice.finish_reason.str() {
                if reason == "content_filter" {
                    self.guardrail = Some("content_filter");
                }
                self.set_finish_reason(index, reason);
            }
        }
        kind
    }
}

impl ResponseState {
    /// The tool calls of a choice's message or delta: each id and name, and with capture on
    /// the arguments. A stream sends the id and name in a call's first fragment only; the
    /// fragments after name the call by its `index` (a whole message's calls have none: their
    /// position stands in).
    fn chat_tool_calls(&mut self, choice: u32, calls: &[ToolCallView<'_>]) {
        for (position, call) in calls.iter().enumerate() {
            let function = call.function.get();
            let name = function.and_then(|f| f.name.str()).unwrap_or("");
            if let Some(id) = call.id.str() {
                self.note_tool_call(id, name);
            }
            if self.capture {
                let slot = call.index.value().unwrap_or(position as u64) as u32;
                self.capture_tool_call(choice, slot, call.id.str().unwrap_or(""), name);
                if let Some(arguments) = function.and_then(|f| f.arguments.str()) {
                    self.capture_tool_arguments(choice, slot, arguments);
                }
            }
        }
    }
}

/// The members of a chat/completions body or chunk the span reads (see [`view`]).
#[derive(Deserialize)]
#[serde(bound(deserialize = "'de: 'a"))]
struct ChatView<'a> {
    #[serde(default, borrow)]
    id: Loose<Cow<'a, str>>,
    #[serde(default, borrow)]
    model: Loose<Cow<'a, str>>,
    #[serde(default, borrow)]
    object: Loose<Cow<'a, str>>,
    #[serde(default)]
    error: Loose<Present>,
    #[serde(default, borrow)]
    usage: Loose<UsageView<'a>>,
    #[serde(default, borrow)]
    choices: Loose<Vec<ChoiceView<'a>>>,
}

#[derive(Deserialize)]
#[serde(bound(deserialize = "'de: 'a"))]
struct ChoiceView<'a> {
    #[serde(default)]
    index: Loose<u64>,
    #[serde(default, borrow)]
    message: Loose<PartView<'a>>,
    #[serde(default, borrow)]
    delta: Loose<PartView<'a>>,
    #[serde(default, borrow)]
    text: Loose<Cow<'a, str>>,
    #[serde(default, borrow)]
    finish_reason: Loose<Cow<'a, str>>,
}

/// A choice's `message` (a body) or `delta` (a chunk).
#[derive(Deserialize)]
#[serde(bound(deserialize = "'de: 'a"))]
struct PartView<'a> {
    #[serde(default, borrow)]
    content: Loose<Cow<'a, str>>,
    #[serde(default, borrow)]
    refusal: Loose<Cow<'a, str>>,
    #[serde(default, borrow)]
    tool_calls: Loose<Vec<ToolCallView<'a>>>,
}

#[derive(Deserialize)]
#[serde(bound(deserialize = "'de: 'a"))]
struct ToolCallView<'a> {
    #[serde(default)]
    index: Loose<u64>,
    #[serde(default, borrow)]
    id: Loose<Cow<'a, str>>,
    #[serde(default, borrow)]
    function: Loose<FunctionView<'a>>,
}

#[derive(Deserialize)]
#[serde(bound(deserialize = "'de: 'a"))]
struct FunctionView<'a> {
    #[serde(default, borrow)]
    name: Loose<Cow<'a, str>>,
    #[serde(default, borrow)]
    arguments: Loose<Cow<'a, str>>,
}

/// `usage` of Chat Completions and Completions.
#[derive(Deserialize)]
#[serde(bound(deserialize = "'de: 'a"))]
struct UsageView<'a> {
    #[serde(default)]
    prompt_tokens: Loose<i64>,
    #[serde(default)]
    completion_tokens: Loose<i64>,
    #[serde(default, borrow)]
    prompt_tokens_details: Loose<CountView<'a>>,
    #[serde(default, borrow)]
    completion_tokens_details: Loose<CountView<'a>>,
}

/// `prompt_tokens_details` / `completion_tokens_details`.
#[derive(Deserialize)]
#[serde(bound(deserialize = "'de: 'a"))]
struct CountView<'a> {
    #[serde(default)]
    cached_tokens: Loose<i64>,
    #[serde(default)]
    reasoning_tokens: Loose<i64>,
    #[serde(skip)]
    _borrow: PhantomData<&'a ()>,
}

view::lenient_object!(
    ChoiceView,
    PartView,
    ToolCallView,
    FunctionView,
    UsageView,
    CountView
);

impl UsageView<'_> {
    /// The counts, as `usage_of` with `CHAT_USAGE` reads them from a `Value`.
    fn counts(&self) -> Usage {
        Usage {
            input: self.prompt_tokens.value(),
            output: self.completion_tokens.value(),
            cache_read: self
                .prompt_tokens_details
                .get()
                .and_then(|d| d.cached_tokens.value()),
            cache_creation: None,
            reasoning: self
                .completion_tokens_details
                .get()
                .and_then(|d| d.reasoning_tokens.value()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reading a body from its bytes (the view) and from a `Value` leaves the same state,
    /// whatever the members' types, repeats or nesting.
    #[test]
    fn bytes_and_value_read_the_same() {
        let bodies: &[&str] = &[
            r#"{"id":"c1","model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"Hello","refusal":null},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":4},"completion_tokens_details":{"reasoning_tokens":1}}}"#,
            r#"{"id":"","model":"m","choices":[{"index":1,"message":{"content":null,"tool_calls":[{"id":"t","function":{"name":"f","arguments":"{\"a\":1}"}},7]},"finish_reason":"tool_calls"}]}"#,
            r#"{"id":5,"model":["x"],"choices":{"index":0},"usage":[1]}"#,
            r#"{"choices":[3,"x",{"index":-1,"text":"legacy","finish_reason":"length"}],"usage":{"prompt_tokens":1.5,"completion_tokens":"2"}}"#,
            r#"{"choices":[{"message":{"content":"a","refusal":"no"},"finish_reason":"content_filter"}]}"#,
            r#"{"id":"a","id":"b","usage":{"prompt_tokens":1},"usage":{"prompt_tokens":2}}"#,
            r#"{"choices":[{"delta":{"content":"streamed only"}}]}"#,
        ];
        for capture in [false, true] {
            for body in bodies {
                let fresh = || ResponseState {
                    capture,
                    capture_cap: 1 << 16,
                    ..ResponseState::default()
                };
                let mut from_bytes = fresh();
                let kind_bytes = from_bytes.openai_bytes(body.as_bytes(), false);
                let mut from_value = fresh();
                let value: Value = serde_json::from_str(body).unwrap();
                let kind_value = from_value.openai_value(&value, false);
                assert_eq!(kind_bytes, Some(kind_value), "{body}");
                assert_eq!(
                    format!("{from_bytes:?}"),
                    format!("{from_value:?}"),
                    "{body}"
                );
            }
        }
    }

    /// Error bodies are left to the `Value` path, which reads their message.
    #[test]
    fn errors_are_left_to_the_value_path() {
        let mut state = ResponseState::default();
        for body in [
            r#"{"error":{"message":"m","type":"invalid_request_error"}}"#,
            r#"{"object":"error","message":"bad","type":"BadRequestError"}"#,
            r#"[1]"#,
        ] {
            assert_eq!(state.openai_bytes(body.as_bytes(), false), None, "{body}");
        }
        assert!(
            state
                .openai_bytes(br#"{"error":null,"id":"x"}"#, false)
                .is_some()
        );
    }
}
