//! What an LLM request body says: model, stream flag, sampling parameters, tools, content.

use serde_json::Value;

use super::endpoint::{ApiFormat, Endpoint};

/// The parts of a request body the span records.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct RequestInfo {
    /// `model` (for Azure, the deployment when the body names no model).
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
    /// `stop` / `stop_sequences`.
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
    /// `encoding_format` (embeddings).
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
            model: endpoint.deployment.clone(),
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
            info.model = Some(model.to_owned());
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
            .map(str::to_owned);
        let stop = match endpoint.format {
            ApiFormat::AnthropicMessages => object.get("stop_sequences"),
            _ => object.get("stop"),
        };
        info.stop_sequences = match stop {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        };
        if keep_body {
            info.body = Some(value);
        }
        info
    }
}
