//! The access log: one JSON line per request on stderr (stdout carries the spans by default).

use std::borrow::Cow;
use std::io::Write as _;
use std::time::Duration;

use llmtrace::genai::Summary;
use serde::Serialize;

/// One request, as the access log records it. Every value a client controls is bounded
/// before it gets here (request id, path, method, model names).
#[derive(Debug, Default, Serialize)]
pub struct AccessLogLine<'a> {
    /// The SERVER span's trace id (empty when tracing is off).
    pub trace_id: &'a str,
    /// The SERVER span's id.
    pub span_id: &'a str,
    /// The client's `x-request-id`, or the gateway's.
    pub request_id: &'a str,
    /// The provider's `x-request-id`.
    pub upstream_request_id: Option<&'a str>,
    /// The request method.
    pub method: Cow<'a, str>,
    /// The request path (no query: it may hold secrets).
    pub path: Cow<'a, str>,
    /// The route template of an LLM API call.
    pub route: Option<&'a str>,
    /// The upstream that answered (or was tried last).
    pub upstream: Option<&'a str>,
    /// `gen_ai.request.model`.
    pub model: Option<&'a str>,
    /// `gen_ai.response.model`.
    pub response_model: Option<&'a str>,
    /// The request asked for a stream.
    pub stream: bool,
    /// The status sent to the client (0: none).
    pub status: u16,
    /// `gen_ai.usage.input_tokens`.
    pub input_tokens: Option<i64>,
    /// `gen_ai.usage.output_tokens`.
    pub output_tokens: Option<i64>,
    /// `gen_ai.usage.cost`: what the exchange cost in USD, when the model has a price.
    pub cost_usd: Option<f64>,
    /// Time to the first content chunk.
    pub ttft_ms: Option<f64>,
    /// Head received → last byte sent.
    pub duration_ms: Option<f64>,
    /// The gateway's own time before the upstream was chosen.
    pub gateway_ms: Option<f64>,
    /// The gateway's longest time on one response chunk.
    pub gateway_chunk_max_ms: Option<f64>,
    /// Upstream attempts (retries and fallbacks included).
    pub attempts: u32,
    /// The first choice's finish reason.
    pub finish_reason: Option<&'a str>,
    /// `error.type`, when the request failed.
    pub error_type: Option<&'a str>,
    /// A hash of the request body (never the body itself).
    pub prompt_hash: Option<&'a str>,
    /// The client went away before the end.
    pub client_aborted: bool,
}

impl<'a> AccessLogLine<'a> {
    /// Copies what the core's summary of the exchange says.
    pub fn with_summary(mut self, summary: &'a Summary) -> Self {
        self.model = summary.request_model.as_deref();
        self.response_model = summary.response_model.as_deref();
        self.stream = summary.stream;
        self.input_tokens = summary.input_tokens;
        self.output_tokens = summary.output_tokens;
        self.cost_usd = summary.cost;
        self.ttft_ms = summary.time_to_first_chunk.map(millis);
        self.finish_reason = summary.finish_reasons.first().map(String::as_str);
        self
    }

    /// Writes the line to stderr in one write: `eprintln!` of a JSON value writes each token
    /// separately to the unbuffered stderr (~85 syscalls a request, measured by the load
    /// harness).
    pub fn write(&self) {
        let Ok(mut text) = serde_json::to_vec(self) else {
            return;
        };
        text.push(b'\n');
        let _ = std::io::stderr().lock().write_all(&text);
    }
}

/// A duration in milliseconds, as the log writes them.
pub fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_one_json_object_with_every_field() {
        let mut summary = Summary::default();
        summary.request_model = Some("gpt-4o".into());
        summary.finish_reasons = vec!["stop".into()];
        summary.input_tokens = Some(3);
        summary.cost = Some(0.25);
        summary.time_to_first_chunk = Some(Duration::from_millis(12));
        let line = AccessLogLine {
            request_id: "req_1",
            path: "/v1/chat/completions".into(),
            status: 200,
            attempts: 1,
            ..AccessLogLine::default()
        }
        .with_summary(&summary);
        let value = serde_json::to_value(&line).unwrap();
        assert_eq!(value["model"], "gpt-4o");
        assert_eq!(value["finish_reason"], "stop");
        assert_eq!(value["ttft_ms"], 12.0);
        assert_eq!(value["cost_usd"], 0.25);
        assert_eq!(value["upstream_request_id"], serde_json::Value::Null);
        assert_eq!(value.as_object().unwrap().len(), 24);
    }
}
