//! Anthropic Messages (`/v1/messages`): streamed events, whole bodies, errors, and the
//! request's system prompt and messages.
//!
//! The entry points are the ones every provider module has: [`on_event`], [`on_body`],
//! and [`input_messages`].

use std::sync::LazyLock;

use memchr::memmem::Finder;
use serde_json::Value;

use super::content::{message, parts_of};
use super::endpoint::ApiFormat;
use super::json;
use super::response::{EventKind, ResponseState, Usage, error_fields, event_type, part_texts};
use super::sse::SseEvent;

static TEXT: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"text\""));
static PARTIAL_JSON: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"partial_json\""));
static THINKING: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"thinking\""));

/// Observes one server-sent event of a Messages stream.
pub(super) fn on_event(
    state: &mut ResponseState,
    _format: ApiFormat,
    event: &SseEvent<'_>,
) -> EventKind {
    state.anthropic_event(event)
}

/// Observes a whole JSON response body; `failed` when the status or the body says it is an
/// error.
pub(super) fn on_body(
    state: &mut ResponseState,
    _format: ApiFormat,
    _status: u16,
    failed: bool,
    value: &Value,
) {
    if failed {
        state.set_error(error_of(value));
    } else {
        state.anthropic_message(value, false);
    }
}

/// `(system instructions, input messages)` of a request body, in the conventions' shape.
pub(super) fn input_messages(
    _format: ApiFormat,
    body: &Value,
) -> (Option<Value>, Option<Vec<Value>>) {
    (
        body.get("system").map(parts_of),
        body.get("messages")
            .and_then(Value::as_array)
            .map(|messages| messages.iter().map(message).collect()),
    )
}

/// `(error.type, message)` of an Anthropic error body or event.
fn error_of(value: &Value) -> (String, String) {
    error_fields(value.get("error").unwrap_or(value), &["type"])
}

impl ResponseState {
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
                    .find_map(|f| json::value_after(bytes, f).and_then(json::string_len))
                    .unwrap_or(0);
                self.content_bytes += len as u64;
                if self.capture {
                    if let Ok(value) = serde_json::from_str::<Value>(event.data) {
                        self.capture_anthropic_delta(&value);
                    }
                }
                if len > 0 {
                    EventKind::Content
                } else {
                    EventKind::Other
                }
            }
            "content_block_start" => {
                // A `tool_use` block names its tool and id here; its input streams after.
                if let Some(value) = self.parse_event(event.data) {
                    if let Some(block) = value.get("content_block") {
                        self.note_tool_use(block);
                        let index = value.get("index").and_then(Value::as_u64).unwrap_or(0);
                        self.capture_tool_use(index as u32, block, false);
                    }
                }
                EventKind::Other
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
                    _ => self.set_error(error_of(&value)),
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
        for (index, block) in message
            .get("content")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            self.note_tool_use(block);
            self.capture_tool_use(index as u32, block, true);
        }
        if self.capture {
            for text in part_texts(message.get("content")) {
                self.capture_text(0, text);
            }
        }
    }

    /// A content block that is a `tool_use`: its id and tool name.
    fn note_tool_use(&mut self, block: &Value) {
        if block.get("type").and_then(Value::as_str) == Some("tool_use") {
            let text = |k: &str| block.get(k).and_then(Value::as_str).unwrap_or("");
            self.note_tool_call(text("id"), text("name"));
        }
    }

    /// With capture on: a `content_block_delta`'s text (output text of the one choice, 0, as a
    /// whole message's is) or `partial_json` (the arguments of the `tool_use` block it names).
    fn capture_anthropic_delta(&mut self, value: &Value) {
        let index = value.get("index").and_then(Value::as_u64).unwrap_or(0) as u32;
        let Some(delta) = value.get("delta") else {
            return;
        };
        if let Some(text) = delta.get("text").and_then(Value::as_str) {
            self.capture_text(0, text);
        } else if let Some(json) = delta.get("partial_json").and_then(Value::as_str) {
            self.capture_tool_arguments(0, index, json);
        }
    }

    /// With capture on: a `tool_use` block at `index` (its id and name), and, in a whole
    /// message (`whole`), its `input` object as JSON text. A streamed block starts with an
    /// empty `input`; its JSON comes in deltas.
    fn capture_tool_use(&mut self, index: u32, block: &Value, whole: bool) {
        if !self.capture || block.get("type").and_then(Value::as_str) != Some("tool_use") {
            return;
        }
        let text = |k: &str| block.get(k).and_then(Value::as_str).unwrap_or("");
        self.capture_tool_call(0, index, text("id"), text("name"));
        if let Some(input) = block.get("input").filter(|_| whole) {
            if self.tool_arguments_missing(0, index) {
                self.capture_tool_arguments(0, index, &input.to_string());
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
}
