//! Chat Completions and (legacy) Completions: streamed chunks and whole bodies.

use std::sync::LazyLock;

use memchr::memmem::Finder;
use serde_json::Value;

use super::super::json;
use super::super::response::{EventKind, ResponseState};
use super::{CHAT_USAGE, error_of, usage_of};

static CONTENT: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"content\""));
static TEXT: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"text\""));
static TOOL_CALLS: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"tool_calls\""));
static FINISH_REASON: LazyLock<Finder<'static>> =
    LazyLock::new(|| Finder::new(b"\"finish_reason\""));
static USAGE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"usage\""));

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
                let carries_output = match text_len {
                    Some(len) => len > 0,
                    None => value.starts_with(b"["), // tool_calls
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
        self.take_id_model(value);
        if let Some(usage) = value.get("usage").filter(|u| u.is_object()) {
            self.set_usage(usage_of(usage, &CHAT_USAGE));
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
}
