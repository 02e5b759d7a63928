//! Opt-in content capture in the semantic conventions' message shape.
//!
//! `gen_ai.input.messages` and `gen_ai.output.messages` are JSON arrays of
//! `{"role": ..., "parts": [{"type": "text", "content": ...}], "finish_reason": ...}`;
//! `gen_ai.system_instructions` is a JSON array of parts.

use serde_json::{Value, json};

use super::endpoint::ApiFormat;
use super::response::ToolArguments;
use super::{anthropic, openai};

/// `(system instructions, input messages)` as JSON strings; each provider module reads its
/// request shape.
pub(crate) fn input_messages(format: ApiFormat, body: &Value) -> (Option<String>, Option<String>) {
    let (system, messages) = match format {
        ApiFormat::OpenAiChat
        | ApiFormat::OpenAiCompletions
        | ApiFormat::OpenAiEmbeddings
        | ApiFormat::OpenAiResponses => openai::input_messages(format, body),
        ApiFormat::AnthropicMessages => anthropic::input_messages(format, body),
    };
    (
        system
            .filter(|s| !s.as_array().is_some_and(Vec::is_empty))
            .map(|s| s.to_string()),
        messages.map(|m| Value::Array(m).to_string()),
    )
}

/// The output messages, one per choice: its text, then a `tool_call` part for each tool call
/// it asked for (in the order the stream numbered them).
pub(crate) fn output_messages(
    texts: &[(u32, String)],
    tool_calls: &[ToolArguments],
    finish_reasons: &[(u32, String)],
) -> Option<String> {
    if texts.is_empty() && tool_calls.is_empty() {
        return None;
    }
    // Choices in the order their text came, then those that only call tools.
    let mut choices: Vec<u32> = texts.iter().map(|(index, _)| *index).collect();
    for call in tool_calls {
        if !choices.contains(&call.choice) {
            choices.push(call.choice);
        }
    }
    let messages: Vec<Value> = choices
        .into_iter()
        .map(|index| {
            let reason = finish_reasons
                .iter()
                .find(|(i, _)| *i == index)
                .map(|(_, r)| r.as_str());
            let text = texts.iter().find(|(i, _)| *i == index);
            let mut parts: Vec<Value> = text
                .map(|(_, text)| json!({"type": "text", "content": text}))
                .into_iter()
                .collect();
            let mut calls: Vec<&ToolArguments> =
                tool_calls.iter().filter(|c| c.choice == index).collect();
            calls.sort_by_key(|call| call.slot);
            parts.extend(calls.into_iter().map(tool_call_part));
            json!({"role": "assistant", "parts": parts, "finish_reason": reason})
        })
        .collect();
    Some(Value::Array(messages).to_string())
}

/// A `tool_call` part: the arguments as JSON when they parse (they are a JSON text), else as
/// the string they are (cut at the cap, or not JSON to begin with).
fn tool_call_part(call: &ToolArguments) -> Value {
    let mut part = json!({"type": "tool_call", "id": null, "name": call.name});
    if !call.id.is_empty() {
        part["id"] = Value::String(call.id.clone());
    }
    if !call.arguments.is_empty() {
        part["arguments"] = serde_json::from_str::<Value>(&call.arguments)
            .unwrap_or_else(|_| Value::String(call.arguments.clone()));
    }
    part
}

/// A provider message (`role`, `content`) as a semconv message.
pub(super) fn message(m: &Value) -> Value {
    let role = m.get("role").and_then(Value::as_str).unwrap_or("user");
    let parts = m.get("content").map(parts_of).unwrap_or_else(|| json!([]));
    json!({"role": role, "parts": parts})
}

/// A string, or an array of provider content parts, as semconv parts.
pub(super) fn parts_of(content: &Value) -> Value {
    match content {
        Value::String(text) => json!([{"type": "text", "content": text}]),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|part| match part {
                    Value::String(text) => json!({"type": "text", "content": text}),
                    _ => match part.get("text").and_then(Value::as_str) {
                        Some(text) => json!({"type": "text", "content": text}),
                        None => json!({
                            "type": part.get("type").and_then(Value::as_str).unwrap_or("unknown")
                        }),
                    },
                })
                .collect(),
        ),
        other => json!([{"type": "text", "content": other.to_string()}]),
    }
}
