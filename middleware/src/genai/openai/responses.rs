//! The Responses API (`/v1/responses`): lifecycle and delta events, and whole bodies.

use std::sync::LazyLock;

use memchr::memmem::Finder;
use serde_json::Value;

use super::super::json;
use super::super::response::{EventKind, ResponseState, event_type, part_texts};
use super::super::sse::SseEvent;
use super::{RESPONSES_USAGE, error_of, usage_of};

static DELTA_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"delta\""));

impl ResponseState {
    pub(super) fn responses_event(&mut self, event: &SseEvent<'_>) -> EventKind {
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
                let delta = json::value_after(bytes, &DELTA_KEY)
                    .and_then(json::string_len)
                    .unwrap_or(0);
                self.content_bytes += delta as u64;
                if self.capture {
                    if let Ok(value) = serde_json::from_str::<Value>(event.data) {
                        let index = output_index(&value);
                        if let Some(text) = value.get("delta").and_then(Value::as_str) {
                            if kind == "response.function_call_arguments.delta" {
                                self.capture_tool_arguments(0, index, text);
                            } else {
                                self.capture_text(index, text);
                            }
                        }
                    }
                }
                EventKind::Content
            }
            // With capture on only: a function call's id and name, and its whole arguments
            // when no delta gave them.
            "response.output_item.added"
            | "response.output_item.done"
            | "response.function_call_arguments.done"
                if self.capture =>
            {
                if let Some(value) = self.parse_event(event.data) {
                    let index = output_index(&value);
                    match value.get("item") {
                        Some(item) => self.responses_tool_call(index, item),
                        None => self.responses_tool_call(index, &value),
                    }
                }
                EventKind::Other
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
                    self.set_error(error_of(error));
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
    pub(super) fn responses_object(&mut self, response: &Value) {
        self.take_id_model(response);
        for (index, item) in response
            .get("output")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
            .filter(|(_, item)| item.get("type").and_then(Value::as_str) == Some("function_call"))
        {
            let text = |k: &str| item.get(k).and_then(Value::as_str).unwrap_or("");
            self.note_tool_call(text("call_id"), text("name"));
            self.responses_tool_call(index as u32, item);
        }
        if let Some(usage) = response.get("usage").filter(|u| u.is_object()) {
            self.set_usage(usage_of(usage, &RESPONSES_USAGE));
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
                    self.set_error(error_of(error));
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
                for text in part_texts(item.get("content")) {
                    if !self.output_text.iter().any(|(i, _)| *i == index as u32) {
                        self.capture_text(index as u32, text);
                    }
                }
            }
        }
    }
}

impl ResponseState {
    /// With capture on: a `function_call` output item at `index` (or a
    /// `function_call_arguments.done` event): its call id and name, and its arguments unless
    /// its deltas already gave them.
    fn responses_tool_call(&mut self, index: u32, item: &Value) {
        if !self.capture {
            return;
        }
        let kind = item.get("type").and_then(Value::as_str);
        if !matches!(
            kind,
            Some("function_call" | "response.function_call_arguments.done")
        ) {
            return;
        }
        let text = |k: &str| item.get(k).and_then(Value::as_str).unwrap_or("");
        self.capture_tool_call(0, index, text("call_id"), text("name"));
        if self.tool_arguments_missing(0, index) {
            self.capture_tool_arguments(0, index, text("arguments"));
        }
    }
}

/// The `output_index` an event is about (0 when it does not say).
fn output_index(value: &Value) -> u32 {
    value
        .get("output_index")
        .and_then(Value::as_u64)
        .unwrap_or(0) as u32
}
