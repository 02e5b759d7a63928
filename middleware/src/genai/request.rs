//! What an LLM request body says: model, stream flag, sampling parameters, tools, content.

use serde_json::Value;

use super::endpoint::{ApiFormat, Endpoint};
use super::{anthropic, openai};
use crate::limits::{MAX_NAME_BYTES, MAX_STOP_SEQUENCES, bounded};

/// The parts of a request body the span records.
///
/// The strings are the client's, so they are bounded: `model`, each stop sequence and
/// `encoding_format` to [`MAX_NAME_BYTES`] (cut with a marker, see
/// [`bounded`](crate::limits::bounded)), and at most [`MAX_STOP_SEQUENCES`] stop sequences.
/// [`Exchange`](super::Exchange) applies the same bounds to values set by hand.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct RequestInfo {
    /// `model` (for Azure, the deployment when the body names no model), at most
    /// [`MAX_NAME_BYTES`].
    pub model: Option<String>,
    /// `stream: true`.
    pub stream: bool,
    /// `stream_options.include_usage: true` (OpenAI).
    pub include_usage: bool,
    /// `max_tokens`, `max_completion_tokens` or `max_output_tokens`.
    pub max_tokens: Option<i64>,
    /// `temperature`.
    pub temperature: Option<f64>,
    /// `top_p`.
    pub top_p: Option<f64>,
    /// `top_k` (Anthropic).
    pub top_k: Option<f64>,
    /// `stop` / `stop_sequences`: the first [`MAX_STOP_SEQUENCES`], each at most
    /// [`MAX_NAME_BYTES`].
    pub stop_sequences: Vec<String>,
    /// `seed`.
    pub seed: Option<i64>,
    /// `n`, when present.
    pub choice_count: Option<i64>,
    /// `frequency_penalty`.
    pub frequency_penalty: Option<f64>,
    /// `presence_penalty`.
    pub presence_penalty: Option<f64>,
    /// Number of `tools` offered.
    pub tool_count: Option<i64>,
    /// `encoding_format` (embeddings), at most [`MAX_NAME_BYTES`].
    pub encoding_format: Option<String>,
    /// Why the body could not be read, when it could not.
    pub parse_error: Option<String>,
    /// The parsed body, kept only when content capture is on.
    pub(crate) body: Option<Value>,
}

impl RequestInfo {
    /// Reads a request body. Never fails: what cannot be read is left out and
    /// [`parse_error`](Self::parse_error) says why; the request itself is forwarded untouched.
    ///
    /// ```
    /// use llmtrace::genai::{Endpoint, RequestInfo};
    ///
    /// let endpoint = Endpoint::detect("/v1/chat/completions", None).unwrap();
    /// let body = br#"{"model":"gpt-4o","stream":true,"max_tokens":64,"messages":[]}"#;
    /// let info = RequestInfo::parse(&endpoint, body, false);
    /// assert_eq!(info.model.as_deref(), Some("gpt-4o"));
    /// assert!(info.stream);
    /// assert_eq!(info.max_tokens, Some(64));
    /// ```
    pub fn parse(endpoint: &Endpoint, body: &[u8], keep_body: bool) -> RequestInfo {
        let mut info = RequestInfo {
            model: endpoint
                .deployment
                .as_deref()
                .map(|name| bounded(name, MAX_NAME_BYTES).into_owned()),
            ..RequestInfo::default()
        };
        let value: Value = match serde_json::from_slice(body) {
            Ok(value) => value,
            Err(error) => {
                info.parse_error = Some(if body.is_empty() {
                    "request body is empty".to_owned()
                } else {
                    format!("request body is not JSON: {error}")
                });
                return info;
            }
        };
        let Some(object) = value.as_object() else {
            info.parse_error = Some("request body is not a JSON object".to_owned());
            return info;
        };
        if let Some(model) = object.get("model").and_then(Value::as_str) {
            info.model = Some(bounded(model, MAX_NAME_BYTES).into_owned());
        }
        info.stream = object
            .get("stream")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        info.include_usage = object
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        info.max_tokens = ["max_tokens", "max_completion_tokens", "max_output_tokens"]
            .iter()
            .find_map(|k| object.get(*k).and_then(Value::as_i64));
        let number = |key: &str| object.get(key).and_then(Value::as_f64);
        info.temperature = number("temperature");
        info.top_p = number("top_p");
        info.top_k = number("top_k");
        info.frequency_penalty = number("frequency_penalty");
        info.presence_penalty = number("presence_penalty");
        info.seed = object.get("seed").and_then(Value::as_i64);
        info.choice_count = object.get("n").and_then(Value::as_i64);
        info.tool_count = object
            .get("tools")
            .and_then(Value::as_array)
            .map(|tools| tools.len() as i64);
        info.encoding_format = object
            .get("encoding_format")
            .and_then(Value::as_str)
            .map(|format| bounded(format, MAX_NAME_BYTES).into_owned());
        let stop_key = match endpoint.format {
            ApiFormat::OpenAiChat
            | ApiFormat::OpenAiCompletions
            | ApiFormat::OpenAiEmbeddings
            | ApiFormat::OpenAiResponses => openai::STOP_KEY,
            ApiFormat::AnthropicMessages => anthropic::STOP_KEY,
        };
        let stop_value = object.get(stop_key);
        let stop = |s: &str| bounded(s, MAX_NAME_BYTES).into_owned();
        info.stop_sequences = match stop_value {
            Some(Value::String(s)) => vec![stop(s)],
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|v| v.as_str().map(stop))
                .take(MAX_STOP_SEQUENCES)
                .collect(),
            _ => Vec::new(),
        };
        if keep_body {
            info.body = Some(value);
        }
        info
    }

    /// What is known of a request whose body was not read because it is larger than `cap`
    /// bytes: what the endpoint says (the Azure deployment as the model), and a
    /// [`parse_error`](Self::parse_error) saying why the rest is missing. The tower layers and
    /// the gateway use it, so the message is the same in both.
    ///
    /// ```
    /// use llmtrace::genai::{Endpoint, RequestInfo};
    ///
    /// let endpoint = Endpoint::detect("/v1/chat/completions", None).unwrap();
    /// let info = RequestInfo::body_not_read(&endpoint, 1024);
    /// assert_eq!(
    ///     info.parse_error.as_deref(),
    ///     Some("request body over 1024 bytes was not read")
    /// );
    /// ```
    pub fn body_not_read(endpoint: &Endpoint, cap: usize) -> RequestInfo {
        RequestInfo {
            parse_error: Some(format!("request body over {cap} bytes was not read")),
            ..RequestInfo::parse(endpoint, b"", false)
        }
    }

    /// Applies the bounds [`parse`](Self::parse) applies, to values set by hand.
    pub(crate) fn bound_strings(&mut self) {
        let bound = |value: &mut String| {
            if value.len() > MAX_NAME_BYTES {
                *value = bounded(value, MAX_NAME_BYTES).into_owned();
            }
        };
        self.model.iter_mut().for_each(bound);
        self.encoding_format.iter_mut().for_each(bound);
        self.stop_sequences.truncate(MAX_STOP_SEQUENCES);
        self.stop_sequences.iter_mut().for_each(bound);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unread_body_keeps_what_the_endpoint_says_and_says_why() {
        let endpoint =
            Endpoint::detect("/openai/deployments/gpt-4o-mini/chat/completions", None).unwrap();
        let info = RequestInfo::body_not_read(&endpoint, 65536);
        assert_eq!(
            info.parse_error.as_deref(),
            Some("request body over 65536 bytes was not read")
        );
        assert_eq!(info.model, endpoint.deployment);
        assert!(info.body.is_none());
        // The same as the two call sites built it by hand.
        let mut by_hand = RequestInfo::parse(&endpoint, b"", false);
        by_hand.parse_error = Some("request body over 65536 bytes was not read".to_owned());
        assert_eq!(info, by_hand);
    }
}
