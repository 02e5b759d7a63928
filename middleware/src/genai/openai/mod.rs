//! OpenAI and OpenAI-compatible servers (vLLM, Ollama, Azure OpenAI, ...): Chat Completions
//! and Completions ([`chat`]), the Responses API ([`responses`]), Embeddings, and the usage
//! splice for streams ([`usage`]).
//!
//! The entry points are the ones every provider module has: [`on_event`], [`on_body`],
//! and [`input_messages`].

mod chat;
mod responses;
mod usage;

use serde_json::{Value, json};

pub use usage::{UsageChunkFilter, UsageSkip, request_with_usage, request_with_usage_read};

use super::content::{message, parts_of};
use super::endpoint::ApiFormat;
use super::response::{EventKind, ResponseState, Usage, error_fields};
use super::sse::SseEvent;

/// Observes one server-sent event of an OpenAI stream.
pub(super) fn on_event(
    state: &mut ResponseState,
    format: ApiFormat,
    event: &SseEvent<'_>,
) -> EventKind {
    match format {
        ApiFormat::OpenAiResponses => state.responses_event(event),
        ApiFormat::OpenAiEmbeddings => EventKind::Other,
        _ => state.openai_chunk(event.data),
    }
}

/// Observes a whole JSON response body; `failed` when the status or the body says it is an
/// error.
pub(super) fn on_body(
    state: &mut ResponseState,
    format: ApiFormat,
    status: u16,
    failed: bool,
    value: &Value,
) {
    if failed {
        state.set_error(
            value
                .get("error")
                .map(error_of)
                .unwrap_or_else(|| (status.to_string(), String::new())),
        );
        return;
    }
    match format {
        ApiFormat::OpenAiResponses => state.responses_object(value),
        ApiFormat::OpenAiEmbeddings => {
            state.take_id_model(value);
            if let Some(usage) = value.get("usage").filter(|u| u.is_object()) {
                state.set_usage(usage_of(usage, &CHAT_USAGE));
            }
        }
        _ => {
            state.openai_value(value, false);
        }
    }
}

/// Reads a whole successful Chat Completions or Completions body straight from its bytes,
/// without building a `Value`; `false` when it needs [`on_body`]: another format, an error
/// status or error body, or a body that is not a JSON object.
pub(super) fn on_body_bytes(
    state: &mut ResponseState,
    format: ApiFormat,
    status: u16,
    body: &[u8],
) -> bool {
    status < 400
        && matches!(format, ApiFormat::OpenAiChat | ApiFormat::OpenAiCompletions)
        && state.openai_bytes(body, false).is_some()
}

/// `(system instructions, input messages)` of a request body, in the conventions' shape.
pub(super) fn input_messages(
    format: ApiFormat,
    body: &Value,
) -> (Option<Value>, Option<Vec<Value>>) {
    let prompt = |p: &Value| vec![json!({"role": "user", "parts": parts_of(p)})];
    match format {
        ApiFormat::OpenAiResponses => (
            body.get("instructions").map(parts_of),
            body.get("input").map(|input| match input {
                Value::Array(items) => items.iter().map(message).collect(),
                other => prompt(other),
            }),
        ),
        ApiFormat::OpenAiCompletions => (None, body.get("prompt").map(prompt)),
        ApiFormat::OpenAiEmbeddings => (None, body.get("input").map(prompt)),
        _ => (
            None,
            body.get("messages")
                .and_then(Value::as_array)
                .map(|messages| messages.iter().map(message).collect()),
        ),
    }
}

/// Where an OpenAI `usage` object keeps each count (JSON pointers): the APIs name them
/// differently.
struct UsageKeys {
    input: &'static str,
    output: &'static str,
    cache_read: &'static str,
    reasoning: &'static str,
}

/// Chat Completions, Completions and Embeddings.
const CHAT_USAGE: UsageKeys = UsageKeys {
    input: "/prompt_tokens",
    output: "/completion_tokens",
    cache_read: "/prompt_tokens_details/cached_tokens",
    reasoning: "/completion_tokens_details/reasoning_tokens",
};

/// The Responses API.
const RESPONSES_USAGE: UsageKeys = UsageKeys {
    input: "/input_tokens",
    output: "/output_tokens",
    cache_read: "/input_tokens_details/cached_tokens",
    reasoning: "/output_tokens_details/reasoning_tokens",
};

/// Token counts of a `usage` object.
fn usage_of(usage: &Value, keys: &UsageKeys) -> Usage {
    let get = |pointer: &str| usage.pointer(pointer).and_then(Value::as_i64);
    Usage {
        input: get(keys.input),
        output: get(keys.output),
        cache_read: get(keys.cache_read),
        cache_creation: None,
        reasoning: get(keys.reasoning),
    }
}

/// `(error.type, message)` of an OpenAI error object: its `code` when that is a string
/// (`rate_limit_exceeded`), else its `type`.
fn error_of(error: &Value) -> (String, String) {
    error_fields(error, &["code", "type"])
}
