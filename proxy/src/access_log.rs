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
    /// The SERVER span's trace id (with tracing off, the caller's, or empty); hex, written
    /// without escaping.
    pub trace_id: &'a str,
    /// The SERVER span's id (empty with tracing off); hex.
    pub span_id: &'a str,
    /// The client's `x-request-id`, or the gateway's.
    pub request_id: &'a str,
    /// The provider's `x-request-id`.
    pub upstream_request_id: Option<&'a str>,
    /// The request method.
    pub method: Cow<'a, str>,
    /// The request path (no query: it may hold secrets).
    pub path: Cow<'a, str>,
    /// The route template of an LLM API call (one of the gateway's own, written without
    /// escaping).
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
    /// A hash of the request body (never the body itself), in hex.
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
        let mut text = Vec::with_capacity(640);
        self.encode(&mut text);
        text.push(b'\n');
        let _ = std::io::stderr().lock().write_all(&text);
    }

    /// The line as JSON, the same object `serde_json` makes of it (the test checks), written
    /// field by field: the keys are literals, and values that need no escaping (ids, hex,
    /// most paths and names) are copied as they are. Through serde's map serializer the line
    /// cost ~7k instructions a request, most of it escaping the keys (callgrind).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"trace_id\":");
        raw(out, self.trace_id);
        out.extend_from_slice(b",\"span_id\":");
        raw(out, self.span_id);
        out.extend_from_slice(b",\"request_id\":");
        string(out, self.request_id);
        out.extend_from_slice(b",\"upstream_request_id\":");
        opt_string(out, self.upstream_request_id);
        out.extend_from_slice(b",\"method\":");
        string(out, &self.method);
        out.extend_from_slice(b",\"path\":");
        string(out, &self.path);
        out.extend_from_slice(b",\"route\":");
        opt_raw(out, self.route);
        out.extend_from_slice(b",\"upstream\":");
        opt_string(out, self.upstream);
        out.extend_from_slice(b",\"model\":");
        opt_string(out, self.model);
        out.extend_from_slice(b",\"response_model\":");
        opt_string(out, self.response_model);
        out.extend_from_slice(b",\"stream\":");
        out.extend_from_slice(if self.stream { b"true" } else { b"false" });
        out.extend_from_slice(b",\"status\":");
        number(out, &self.status);
        out.extend_from_slice(b",\"input_tokens\":");
        number(out, &self.input_tokens);
        out.extend_from_slice(b",\"output_tokens\":");
        number(out, &self.output_tokens);
        self.encode_timing(out);
        out.extend_from_slice(b",\"finish_reason\":");
        opt_string(out, self.finish_reason);
        out.extend_from_slice(b",\"error_type\":");
        opt_string(out, self.error_type);
        out.extend_from_slice(b",\"prompt_hash\":");
        opt_raw(out, self.prompt_hash);
        out.extend_from_slice(b",\"client_aborted\":");
        out.extend_from_slice(if self.client_aborted {
            b"true"
        } else {
            b"false"
        });
        out.push(b'}');
    }

    fn encode_timing(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b",\"cost_usd\":");
        number(out, &self.cost_usd);
        out.extend_from_slice(b",\"ttft_ms\":");
        number(out, &self.ttft_ms);
        out.extend_from_slice(b",\"duration_ms\":");
        number(out, &self.duration_ms);
        out.extend_from_slice(b",\"gateway_ms\":");
        number(out, &self.gateway_ms);
        out.extend_from_slice(b",\"gateway_chunk_max_ms\":");
        number(out, &self.gateway_chunk_max_ms);
        out.extend_from_slice(b",\"attempts\":");
        number(out, &self.attempts);
    }
}

/// A JSON string: copied as is when nothing in it needs escaping, else serde_json's escaping.
fn string(out: &mut Vec<u8>, value: &str) {
    let plain = value.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\');
    if plain {
        out.push(b'"');
        out.extend_from_slice(value.as_bytes());
        out.push(b'"');
    } else {
        // Writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, value);
    }
}

/// A string of the gateway's own that never needs escaping (hex ids, route templates),
/// copied without the check.
fn raw(out: &mut Vec<u8>, value: &str) {
    debug_assert!(value.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\'));
    out.push(b'"');
    out.extend_from_slice(value.as_bytes());
    out.push(b'"');
}

fn opt_raw(out: &mut Vec<u8>, value: Option<&str>) {
    match value {
        Some(value) => raw(out, value),
        None => out.extend_from_slice(b"null"),
    }
}

fn opt_string(out: &mut Vec<u8>, value: Option<&str>) {
    match value {
        Some(value) => string(out, value),
        None => out.extend_from_slice(b"null"),
    }
}

/// A number (or `null`), formatted by serde_json as the derived serializer would.
fn number<T: Serialize>(out: &mut Vec<u8>, value: &T) {
    let _ = serde_json::to_writer(&mut *out, value);
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

    /// The hand-written line is the object serde makes of the struct, field for field and in
    /// order, for plain and hostile values alike.
    #[test]
    fn the_written_line_is_what_serde_writes() {
        let mut summary = Summary::default();
        summary.request_model = Some("gpt-4o \"quoted\" \\ \u{1}\u{7f} é".into());
        summary.finish_reasons = vec!["stop\n".into()];
        summary.output_tokens = Some(-1);
        summary.cost = Some(1e-9);
        summary.time_to_first_chunk = Some(Duration::from_nanos(1_234_567));
        let hostile = AccessLogLine {
            trace_id: "0af7651916cd43dd8448eb211c80319c",
            span_id: "b7ad6b7169203331",
            request_id: "req_\"<script>",
            upstream_request_id: Some("up\t1"),
            method: "POST".into(),
            path: "/v1/chat/completions/\u{2028}".into(),
            route: Some("/v1/chat/completions"),
            upstream: Some("openai"),
            status: 502,
            duration_ms: Some(f64::NAN),
            gateway_ms: Some(0.125),
            gateway_chunk_max_ms: Some(f64::INFINITY),
            attempts: 3,
            error_type: Some("timeout"),
            prompt_hash: Some("00ff"),
            client_aborted: true,
            ..AccessLogLine::default()
        }
        .with_summary(&summary);
        for line in [hostile, AccessLogLine::default()] {
            let mut ours = Vec::new();
            line.encode(&mut ours);
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                serde_json::to_string(&line).unwrap()
            );
        }
    }
}
