//! What tool calls carried, kept only with content capture: the arguments an answer gave a
//! call ([`Summary::tool_arguments`](super::Summary::tool_arguments)) and the result a later
//! request sent back ([`RequestInfo::tool_result_content`](super::RequestInfo::tool_result_content)).
//!
//! Both are the provider's or the client's text, so both are bounded: at most
//! [`MAX_TOOL_CALLS`] calls, and all the contents of one answer (or of one request) together
//! at most the capture cap ([`GenAiConfig::content_cap`]); what is cut says so. With capture off
//! nothing here runs and nothing is kept.

use serde_json::Value;

use super::endpoint::ApiFormat;
use super::exchange::{ContentKind, GenAiConfig};
use super::response::{MAX_TOOL_CALLS, tool_text};

/// The arguments or the result of one tool call, as text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ToolContent {
    /// The tool call's id (the provider's), at most 128 bytes.
    pub id: String,
    /// The arguments as the answer wrote them (a JSON text, kept as written), or the result as
    /// the request carried it (a string as is, anything else as compact JSON); after the
    /// [`redactor`](GenAiConfig::redactor).
    pub content: String,
    /// The content was cut at the capture cap.
    pub truncated: bool,
}

impl ToolContent {
    /// A call's content as given (for adapters and tests; the core builds its own within
    /// its bounds).
    pub fn new(id: impl Into<String>, content: impl Into<String>, truncated: bool) -> Self {
        ToolContent {
            id: id.into(),
            content: content.into(),
            truncated,
        }
    }

    /// `content` through the configuration's redactor as `kind`; `None` when it says to
    /// record nothing.
    pub(crate) fn redacted(
        id: String,
        content: String,
        truncated: bool,
        kind: ContentKind,
        config: &GenAiConfig,
    ) -> Option<ToolContent> {
        let content = match &config.redactor {
            Some(redact) => redact(kind, content)?,
            None => content,
        };
        Some(ToolContent {
            id,
            content,
            truncated,
        })
    }
}

/// `text` cut to `room` bytes at a character boundary; whether it was cut.
pub(crate) fn cut_to(text: &str, room: usize) -> (&str, bool) {
    if text.len() <= room {
        return (text, false);
    }
    let mut end = room;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (&text[..end], true)
}

/// The results a request body (parsed, as capture keeps it) carries for tool calls: OpenAI chat
/// `role: "tool"` messages' `content`, Responses `function_call_output` items' `output`,
/// Anthropic `tool_result` blocks' `content`. At most [`MAX_TOOL_CALLS`], together at most
/// `config.content_cap` bytes.
pub(crate) fn tool_results(
    format: ApiFormat,
    body: &Value,
    config: &GenAiConfig,
) -> Vec<ToolContent> {
    let mut found: Vec<(&str, &Value)> = Vec::new();
    let items = |key: &str| {
        body.get(key)
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
    };
    match format {
        ApiFormat::OpenAiResponses => {
            for item in items("input") {
                if text(item, "type") == "function_call_output" {
                    found.extend(item.get("output").map(|o| (text(item, "call_id"), o)));
                }
            }
        }
        ApiFormat::AnthropicMessages => {
            for message in items("messages") {
                let blocks = message.get("content").and_then(Value::as_array);
                for block in blocks.into_iter().flatten() {
                    if text(block, "type") == "tool_result" {
                        let content = block.get("content").unwrap_or(&Value::Null);
                        found.push((text(block, "tool_use_id"), content));
                    }
                }
            }
        }
        _ => {
            for message in items("messages") {
                if let Some(id) = message.get("tool_call_id").and_then(Value::as_str) {
                    found.push((id, message.get("content").unwrap_or(&Value::Null)));
                }
            }
        }
    }
    found.retain(|(id, _)| !id.is_empty());
    found.truncate(MAX_TOOL_CALLS);
    bounded_results(found, config)
}

/// The string member `key` of `value`, or "".
fn text<'v>(value: &'v Value, key: &str) -> &'v str {
    value.get(key).and_then(Value::as_str).unwrap_or("")
}

/// `found` (at most [`MAX_TOOL_CALLS`], each with an id) as text, within the cap together.
fn bounded_results(found: Vec<(&str, &Value)>, config: &GenAiConfig) -> Vec<ToolContent> {
    let mut room = config.content_cap;
    let mut results = Vec::new();
    for (id, content) in found {
        let serialized;
        let whole = match content {
            Value::String(text) => text.as_str(),
            Value::Null => "",
            other => {
                serialized = other.to_string();
                serialized.as_str()
            }
        };
        let (kept, truncated) = cut_to(whole, room);
        room -= kept.len();
        results.extend(ToolContent::redacted(
            tool_text(id),
            kept.to_owned(),
            truncated,
            ContentKind::ToolCallResult,
            config,
        ));
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;

    fn results(format: ApiFormat, body: &str, cap: usize) -> Vec<ToolContent> {
        let config = GenAiConfig {
            capture_content: true,
            content_cap: cap,
            ..GenAiConfig::default()
        };
        tool_results(format, &serde_json::from_str(body).unwrap(), &config)
    }

    fn content(id: &str, content: &str, truncated: bool) -> ToolContent {
        ToolContent {
            id: id.to_owned(),
            content: content.to_owned(),
            truncated,
        }
    }

    #[test]
    fn results_are_read_from_every_format() {
        let chat = r#"{"messages":[{"role":"user","content":"hi"},
            {"role":"assistant","tool_calls":[{"id":"c1","function":{"name":"f","arguments":"{}"}}]},
            {"role":"tool","tool_call_id":"c1","content":"21 C"},
            {"role":"tool","tool_call_id":"c2","content":[{"type":"text","text":"x"}]},
            {"role":"tool","content":"no id"}]}"#;
        assert_eq!(
            results(ApiFormat::OpenAiChat, chat, 1024),
            [
                content("c1", "21 C", false),
                content("c2", r#"[{"text":"x","type":"text"}]"#, false)
            ]
        );
        let responses = r#"{"input":[{"type":"function_call","call_id":"c1","arguments":"{}"},
            {"type":"function_call_output","call_id":"c1","output":"{\"t\":21}"}]}"#;
        assert_eq!(
            results(ApiFormat::OpenAiResponses, responses, 1024),
            [content("c1", r#"{"t":21}"#, false)]
        );
        let anthropic = r#"{"messages":[{"role":"user","content":[
            {"type":"tool_result","tool_use_id":"t1","content":"21 C"},
            {"type":"tool_result","tool_use_id":"t2","is_error":true},
            {"type":"text","text":"thanks"}]}]}"#;
        assert_eq!(
            results(ApiFormat::AnthropicMessages, anthropic, 1024),
            [content("t1", "21 C", false), content("t2", "", false)]
        );
    }

    /// All the results of a request share the cap; each is cut on a character boundary, and
    /// once the room is gone the rest are kept empty, marked cut.
    #[test]
    fn results_share_the_cap() {
        let body = r#"{"messages":[{"role":"tool","tool_call_id":"a","content":"12345"},
            {"role":"tool","tool_call_id":"b","content":"éé"},
            {"role":"tool","tool_call_id":"c","content":"zz"},
            {"role":"tool","tool_call_id":"d","content":"y"}]}"#;
        assert_eq!(
            results(ApiFormat::OpenAiChat, body, 8),
            [
                content("a", "12345", false),
                content("b", "é", true),
                content("c", "z", true),
                content("d", "", true)
            ]
        );
        let many: Vec<String> = (0..100)
            .map(|i| format!(r#"{{"role":"tool","tool_call_id":"{i}","content":"x"}}"#))
            .collect();
        let body = format!(r#"{{"messages":[{}]}}"#, many.join(","));
        assert_eq!(
            results(ApiFormat::OpenAiChat, &body, 1024).len(),
            MAX_TOOL_CALLS
        );
    }
}
