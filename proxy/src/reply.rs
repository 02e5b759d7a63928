//! Answers the gateway writes itself, in the error shape the client's SDK parses.
//!
//! When the gateway answers instead of the provider (no route, bad client key, body too
//! large, ambiguous path, upstream unreachable, timeout, TLS failure), the client's SDK still
//! expects its provider's error JSON: the OpenAI SDKs read `{"error":{"message","type",
//! "param","code"}}`, the Anthropic SDKs `{"type":"error","error":{"type","message"}}`. The
//! message says what happened and carries the request id, so "Error code: 502" never stands
//! alone in a user's log.

use bytes::Bytes;
use llmtrace::genai::{ApiFormat, Endpoint};

/// Whose error shape a reply takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorShape {
    /// `{"error":{"message","type","param","code"}}` (OpenAI, Azure OpenAI and compatible
    /// servers).
    OpenAi,
    /// `{"type":"error","error":{"type","message"}}` (Anthropic).
    Anthropic,
}

impl ErrorShape {
    /// The shape for a request to `path`: Anthropic's on the Messages API, OpenAI's elsewhere.
    pub fn for_path(path: &str) -> ErrorShape {
        match Endpoint::detect(path, None) {
            Some(e) if e.format == ApiFormat::AnthropicMessages => ErrorShape::Anthropic,
            _ if path.starts_with("/v1/messages") => ErrorShape::Anthropic,
            _ => ErrorShape::OpenAi,
        }
    }
}

/// An answer from the gateway itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayReply {
    /// The HTTP status.
    pub status: u16,
    /// A stable, machine-readable reason (`no_route`, `upstream_unreachable`, ...), also the
    /// span's `llmtrace.gateway.refused` or `error.type`.
    pub code: &'static str,
    /// What happened, for a person.
    pub message: String,
}

impl GatewayReply {
    /// A reply with `status`, `code` and `message`.
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        GatewayReply {
            status,
            code,
            message: message.into(),
        }
    }

    /// The JSON body in `shape`, the request id appended to the message.
    ///
    /// ```
    /// use llmtrace_proxy::reply::{ErrorShape, GatewayReply};
    ///
    /// let reply = GatewayReply::new(502, "upstream_unreachable", "upstream \"openai\": connection refused");
    /// let body: serde_json::Value = serde_json::from_slice(&reply.body(ErrorShape::OpenAi, "req_1")).unwrap();
    /// assert_eq!(body["error"]["code"], "upstream_unreachable");
    /// assert_eq!(body["error"]["type"], "server_error");
    /// assert!(body["error"]["message"].as_str().unwrap().ends_with("(request id req_1)"));
    /// ```
    pub fn body(&self, shape: ErrorShape, request_id: &str) -> Bytes {
        let message = format!("{} (request id {request_id})", self.message);
        let value = match shape {
            ErrorShape::OpenAi => serde_json::json!({
                "error": {
                    "message": message,
                    "type": openai_type(self.status),
                    "param": null,
                    "code": self.code,
                }
            }),
            ErrorShape::Anthropic => serde_json::json!({
                "type": "error",
                "error": {"type": anthropic_type(self.status), "message": message},
            }),
        };
        Bytes::from(value.to_string())
    }
}

fn openai_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        400..=499 => "invalid_request_error",
        _ => "server_error",
    }
}

fn anthropic_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        400..=499 => "invalid_request_error",
        504 => "timeout_error",
        529 => "overloaded_error",
        _ => "api_error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(bytes: Bytes) -> serde_json::Value {
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn the_shape_follows_the_api() {
        assert_eq!(ErrorShape::for_path("/v1/messages"), ErrorShape::Anthropic);
        assert_eq!(
            ErrorShape::for_path("/v1/messages/count_tokens"),
            ErrorShape::Anthropic
        );
        assert_eq!(
            ErrorShape::for_path("/v1/chat/completions"),
            ErrorShape::OpenAi
        );
        assert_eq!(ErrorShape::for_path("/nope"), ErrorShape::OpenAi);
    }

    #[test]
    fn bodies_parse_as_the_sdks_expect() {
        let reply = GatewayReply::new(404, "no_route", "no route matches POST /x");
        let openai = json(reply.body(ErrorShape::OpenAi, "req_9"));
        assert_eq!(openai["error"]["type"], "invalid_request_error");
        assert_eq!(openai["error"]["code"], "no_route");
        assert_eq!(openai["error"]["param"], serde_json::Value::Null);
        assert_eq!(
            openai["error"]["message"],
            "no route matches POST /x (request id req_9)"
        );
        let anthropic = json(reply.body(ErrorShape::Anthropic, "req_9"));
        assert_eq!(anthropic["type"], "error");
        assert_eq!(anthropic["error"]["type"], "not_found_error");
        assert_eq!(
            anthropic["error"]["message"],
            "no route matches POST /x (request id req_9)"
        );
        let timeout = GatewayReply::new(504, "upstream_timeout", "slow");
        assert_eq!(
            json(timeout.body(ErrorShape::Anthropic, "r"))["error"]["type"],
            "timeout_error"
        );
        assert_eq!(
            json(timeout.body(ErrorShape::OpenAi, "r"))["error"]["type"],
            "server_error"
        );
    }
}
