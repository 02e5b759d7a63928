//! OpenAI Batch and Files API calls: which call a request is, what its answer says (the
//! batch's status, files and counts; a downloaded batch output's requests and tokens), and
//! [`BatchIndex`], which lets the later calls about a batch find the span that created it.
//!
//! A batch lives for hours, across many HTTP calls: the input file's upload, the batch's
//! creation, status polls, perhaps a cancel, the output file's download. Each call gets its own
//! span in its own trace; the index links each to the span of the call that made the file or
//! the batch it is about, so the whole story is reachable from any of its parts.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};

use opentelemetry::KeyValue;
use opentelemetry::trace::SpanContext;
use serde::Deserialize;
use serde_json::Value;

use crate::limits::{MAX_NAME_BYTES, bounded};
use crate::semconv::{batch as names, gen_ai};

/// Longest id accepted in a path (`batch_…`, `file-…`); a longer segment is not a batch call.
const MAX_ID_BYTES: usize = 128;
/// Answers (batch and file objects, lists, errors) are read up to this size.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;
/// A line of a downloaded batch output longer than this is counted, not read.
const MAX_LINE_BYTES: usize = 4 * 1024 * 1024;

/// One call of the OpenAI Batch or Files API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOperation {
    /// `POST /v1/batches`
    CreateBatch,
    /// `GET /v1/batches/{batch_id}`
    RetrieveBatch,
    /// `POST /v1/batches/{batch_id}/cancel`
    CancelBatch,
    /// `GET /v1/batches`
    ListBatches,
    /// `POST /v1/files`
    UploadFile,
    /// `GET /v1/files/{file_id}`
    RetrieveFile,
    /// `GET /v1/files/{file_id}/content`
    DownloadFile,
    /// `DELETE /v1/files/{file_id}`
    DeleteFile,
    /// `GET /v1/files`
    ListFiles,
}

impl BatchOperation {
    /// The operation's name, the span's name and `llmtrace.batch.operation`.
    pub fn as_str(self) -> &'static str {
        match self {
            BatchOperation::CreateBatch => "batch.create",
            BatchOperation::RetrieveBatch => "batch.retrieve",
            BatchOperation::CancelBatch => "batch.cancel",
            BatchOperation::ListBatches => "batch.list",
            BatchOperation::UploadFile => "file.upload",
            BatchOperation::RetrieveFile => "file.retrieve",
            BatchOperation::DownloadFile => "file.content",
            BatchOperation::DeleteFile => "file.delete",
            BatchOperation::ListFiles => "file.list",
        }
    }

    /// The route template (`/v1/batches/{batch_id}`), never the path with its id.
    pub fn route(self) -> &'static str {
        match self {
            BatchOperation::CreateBatch | BatchOperation::ListBatches => "/v1/batches",
            BatchOperation::RetrieveBatch => "/v1/batches/{batch_id}",
            BatchOperation::CancelBatch => "/v1/batches/{batch_id}/cancel",
            BatchOperation::UploadFile | BatchOperation::ListFiles => "/v1/files",
            BatchOperation::RetrieveFile | BatchOperation::DeleteFile => "/v1/files/{file_id}",
            BatchOperation::DownloadFile => "/v1/files/{file_id}/content",
        }
    }

    fn is_batch(self) -> bool {
        matches!(
            self,
            BatchOperation::CreateBatch
                | BatchOperation::RetrieveBatch
                | BatchOperation::CancelBatch
                | BatchOperation::ListBatches
        )
    }
}

/// A request recognised as a Batch or Files API call, with the id its path names.
///
/// ```
/// use llmtrace::genai::{BatchCall, BatchOperation};
///
/// let call = BatchCall::detect(&http::Method::GET, "/v1/batches/batch_abc123").unwrap();
/// assert_eq!(call.operation, BatchOperation::RetrieveBatch);
/// assert_eq!(call.id.as_deref(), Some("batch_abc123"));
/// assert_eq!(call.operation.route(), "/v1/batches/{batch_id}");
///
/// // Azure OpenAI's form, with its query.
/// let call = BatchCall::detect(&http::Method::GET, "/openai/files/file-1/content?api-version=2024-10-21").unwrap();
/// assert_eq!(call.operation, BatchOperation::DownloadFile);
///
/// assert!(BatchCall::detect(&http::Method::GET, "/v1/models").is_none());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchCall {
    /// Which call.
    pub operation: BatchOperation,
    /// The batch or file id the path names.
    pub id: Option<String>,
}

impl BatchCall {
    /// The call `method` and `path` (with or without its query) make, under `/v1` (OpenAI and
    /// compatible servers) or `/openai` (Azure OpenAI); `None` for anything else, including an
    /// id that is not 1 to 128 letters, digits, `-`, `_` or `.`.
    pub fn detect(method: &http::Method, path: &str) -> Option<BatchCall> {
        use BatchOperation as Op;
        let path = path.split_once('?').map_or(path, |(path, _)| path);
        let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
        let at = segments
            .iter()
            .rposition(|s| *s == "batches" || *s == "files")?;
        if at == 0 || !matches!(segments[at - 1], "v1" | "openai") {
            return None;
        }
        let batches = segments[at] == "batches";
        let rest = &segments[at + 1..];
        let method = method.as_str();
        let (operation, id) = match (batches, method, rest) {
            (true, "POST", []) => (Op::CreateBatch, None),
            (true, "GET", []) => (Op::ListBatches, None),
            (true, "GET", [id]) => (Op::RetrieveBatch, Some(*id)),
            (true, "POST", [id, "cancel"]) => (Op::CancelBatch, Some(*id)),
            (false, "POST", []) => (Op::UploadFile, None),
            (false, "GET", []) => (Op::ListFiles, None),
            (false, "GET", [id]) => (Op::RetrieveFile, Some(*id)),
            (false, "DELETE", [id]) => (Op::DeleteFile, Some(*id)),
            (false, "GET", [id, "content"]) => (Op::DownloadFile, Some(*id)),
            _ => return None,
        };
        if let Some(id) = id {
            let valid = !id.is_empty()
                && id.len() <= MAX_ID_BYTES
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
            if !valid {
                return None;
            }
        }
        Some(BatchCall {
            operation,
            id: id.map(str::to_owned),
        })
    }

    /// The attributes the call's span starts with: the operation, and the id the path names
    /// (`llmtrace.batch.id` or `llmtrace.file.id`).
    pub fn start_attributes(&self) -> Vec<KeyValue> {
        let mut a = vec![KeyValue::new(
            names::BATCH_OPERATION,
            self.operation.as_str(),
        )];
        if let Some(id) = &self.id {
            let key = if self.operation.is_batch() {
                names::BATCH_ID
            } else {
                names::FILE_ID
            };
            a.push(KeyValue::new(key, id.clone()));
        }
        a
    }
}

/// What the answers of one Batch or Files API call said, read as they pass: the JSON object
/// of most calls (bounded), or, for a file's content, each line of a batch output (one line
/// in memory at a time).
#[derive(Debug)]
pub struct BatchObserver {
    call: BatchCall,
    status: u16,
    answer: Vec<u8>,
    answer_overflow: bool,
    output: Option<OutputLines>,
}

/// What [`BatchObserver::finish`] found.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct BatchReport {
    /// The span attributes.
    pub attributes: Vec<KeyValue>,
    /// The batch the answer is about (`batch_…`).
    pub batch_id: Option<String>,
    /// The file the answer is about (an uploaded or retrieved file).
    pub file_id: Option<String>,
    /// The batch's files: input, output and error file ids, when the answer names them.
    pub batch_files: Vec<String>,
}

impl BatchObserver {
    /// Starts observing `call`.
    pub fn new(call: BatchCall) -> Self {
        Self {
            call,
            status: 0,
            answer: Vec::new(),
            answer_overflow: false,
            output: None,
        }
    }

    /// The call observed.
    pub fn call(&self) -> &BatchCall {
        &self.call
    }

    /// The answer's head arrived. A successful file download is read line by line as a batch
    /// output; every other answer is kept (up to 1 MiB) to be read at the end.
    pub fn on_response_head(&mut self, status: u16) {
        self.status = status;
        self.answer.clear();
        self.answer_overflow = false;
        self.output = (self.call.operation == BatchOperation::DownloadFile
            && (200..300).contains(&status))
        .then(OutputLines::default);
    }

    /// A chunk of the answer's body.
    pub fn on_response_data(&mut self, data: &[u8]) {
        if let Some(output) = &mut self.output {
            output.push(data);
        } else if !self.answer_overflow {
            if self.answer.len() + data.len() > MAX_ANSWER_BYTES {
                self.answer_overflow = true;
                self.answer = Vec::new();
            } else {
                self.answer.extend_from_slice(data);
            }
        }
    }

    /// The answer ended: what it said.
    pub fn finish(&mut self) -> BatchReport {
        let mut report = BatchReport::default();
        if let Some(mut output) = self.output.take() {
            output.finish(&mut report.attributes);
            return report;
        }
        if (200..300).contains(&self.status) && !self.answer_overflow {
            if let Ok(answer) = serde_json::from_slice::<Value>(&self.answer) {
                read_answer(&answer, &mut report);
            }
        }
        self.answer = Vec::new();
        report
    }
}

/// Reads a batch object, a file object or a list into `report`.
fn read_answer(answer: &Value, report: &mut BatchReport) {
    let text = |key: &str| {
        answer
            .get(key)
            .and_then(Value::as_str)
            .map(|s| bounded(s, MAX_NAME_BYTES).into_owned())
    };
    let a = &mut report.attributes;
    match answer.get("object").and_then(Value::as_str) {
        Some("batch") => {
            report.batch_id = text("id");
            for (key, name) in [
                ("id", names::BATCH_ID),
                ("status", names::BATCH_STATUS),
                ("endpoint", names::BATCH_ENDPOINT),
                ("completion_window", names::BATCH_COMPLETION_WINDOW),
                ("input_file_id", names::BATCH_INPUT_FILE_ID),
                ("output_file_id", names::BATCH_OUTPUT_FILE_ID),
                ("error_file_id", names::BATCH_ERROR_FILE_ID),
            ] {
                if let Some(value) = text(key) {
                    if key.ends_with("file_id") {
                        report.batch_files.push(value.clone());
                    }
                    a.push(KeyValue::new(name, value));
                }
            }
            let counts = answer.get("request_counts");
            for (key, name) in [
                ("total", names::BATCH_REQUESTS_TOTAL),
                ("completed", names::BATCH_REQUESTS_COMPLETED),
                ("failed", names::BATCH_REQUESTS_FAILED),
            ] {
                if let Some(n) = counts.and_then(|c| c.get(key)).and_then(Value::as_i64) {
                    a.push(KeyValue::new(name, n));
                }
            }
        }
        Some("file") => {
            report.file_id = text("id");
            for (key, name) in [("id", names::FILE_ID), ("purpose", names::FILE_PURPOSE)] {
                if let Some(value) = text(key) {
                    a.push(KeyValue::new(name, value));
                }
            }
            if let Some(bytes) = answer.get("bytes").and_then(Value::as_i64) {
                a.push(KeyValue::new(names::FILE_BYTES, bytes));
            }
        }
        Some("list") => {
            if let Some(data) = answer.get("data").and_then(Value::as_array) {
                a.push(KeyValue::new(names::BATCH_LIST_COUNT, data.len() as i64));
            }
        }
        _ => {}
    }
}

/// A downloaded batch output, read one line at a time: requests, failures, tokens.
#[derive(Debug, Default)]
struct OutputLines {
    line: Vec<u8>,
    oversized: bool,
    /// Lines that are a request's result (a `response`, or an `error`).
    requests: i64,
    failed: i64,
    unreadable: i64,
    input_tokens: i64,
    output_tokens: i64,
    any_usage: bool,
}

/// One line of a batch output file.
#[derive(Deserialize)]
struct OutputLine {
    #[serde(default)]
    response: Option<OutputResponse>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct OutputResponse {
    #[serde(default)]
    status_code: Option<i64>,
    #[serde(default)]
    body: Option<OutputBody>,
}

#[derive(Deserialize)]
struct OutputBody {
    #[serde(default)]
    usage: Option<OutputUsage>,
}

/// Chat Completions, Completions and Embeddings name their counts `prompt_tokens` /
/// `completion_tokens`; Responses `input_tokens` / `output_tokens`.
#[derive(Deserialize)]
struct OutputUsage {
    #[serde(default)]
    prompt_tokens: Option<i64>,
    #[serde(default)]
    completion_tokens: Option<i64>,
    #[serde(default)]
    input_tokens: Option<i64>,
    #[serde(default)]
    output_tokens: Option<i64>,
}

impl OutputLines {
    fn push(&mut self, mut data: &[u8]) {
        while let Some(end) = memchr::memchr(b'\n', data) {
            self.extend(&data[..end]);
            self.line_ended();
            data = &data[end + 1..];
        }
        self.extend(data);
    }

    fn extend(&mut self, part: &[u8]) {
        if self.oversized {
            return;
        }
        if self.line.len() + part.len() > MAX_LINE_BYTES {
            self.oversized = true;
            self.line = Vec::new();
        } else {
            self.line.extend_from_slice(part);
        }
    }

    fn line_ended(&mut self) {
        let line = std::mem::take(&mut self.line);
        if std::mem::take(&mut self.oversized) {
            self.unreadable += 1;
            return;
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        let Ok(parsed) = serde_json::from_slice::<OutputLine>(&line) else {
            self.unreadable += 1;
            return;
        };
        let errored = parsed.error.as_ref().is_some_and(|e| !e.is_null());
        // Another file's line (a batch input, a fine-tuning example): not a request's result.
        if parsed.response.is_none() && !errored {
            return;
        }
        self.requests += 1;
        let status = parsed.response.as_ref().and_then(|r| r.status_code);
        if errored || status.is_none_or(|s| !(200..300).contains(&s)) {
            self.failed += 1;
        }
        if let Some(usage) = parsed.response.and_then(|r| r.body).and_then(|b| b.usage) {
            self.any_usage = true;
            let sum = |a: Option<i64>, b: Option<i64>| a.or(b).unwrap_or(0).max(0);
            self.input_tokens = self
                .input_tokens
                .saturating_add(sum(usage.prompt_tokens, usage.input_tokens));
            self.output_tokens = self
                .output_tokens
                .saturating_add(sum(usage.completion_tokens, usage.output_tokens));
        }
    }

    fn finish(&mut self, a: &mut Vec<KeyValue>) {
        if !self.line.is_empty() || self.oversized {
            self.line_ended();
        }
        // Only a file with results is a batch output; its unreadable lines count as requests.
        if self.requests == 0 {
            return;
        }
        let requests = self.requests + self.unreadable;
        a.push(KeyValue::new(names::BATCH_OUTPUT_REQUESTS, requests));
        a.push(KeyValue::new(names::BATCH_OUTPUT_FAILED, self.failed));
        if self.unreadable > 0 {
            a.push(KeyValue::new(
                names::BATCH_OUTPUT_UNREADABLE,
                self.unreadable,
            ));
        }
        if self.any_usage {
            a.push(KeyValue::new(gen_ai::USAGE_INPUT_TOKENS, self.input_tokens));
            a.push(KeyValue::new(
                gen_ai::USAGE_OUTPUT_TOKENS,
                self.output_tokens,
            ));
        }
    }
}

/// Which span made each batch and file, for the calls that come later: bounded, the oldest
/// entries forgotten first. Shared by all requests of a gateway (or a layer).
///
/// ```
/// use llmtrace::genai::BatchIndex;
/// use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
///
/// let index = BatchIndex::new(1000);
/// let created = SpanContext::new(
///     TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
///     SpanId::from_hex("00f067aa0ba902b7").unwrap(),
///     TraceFlags::SAMPLED,
///     false,
///     TraceState::default(),
/// );
/// index.remember("batch_1", &created, "batch");
/// assert_eq!(index.find("batch_1"), Some((created, "batch")));
/// assert_eq!(index.find("batch_2"), None);
/// ```
#[derive(Debug)]
pub struct BatchIndex {
    max: usize,
    entries: Mutex<Entries>,
}

#[derive(Debug, Default)]
struct Entries {
    spans: HashMap<String, (SpanContext, &'static str)>,
    order: VecDeque<String>,
}

impl BatchIndex {
    /// Remembers at most `max` ids (at least 1).
    pub fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            entries: Mutex::default(),
        }
    }

    /// `id` (a batch or a file) was made, or first seen, by the span `span`, the span of a
    /// `kind` call (`"batch"` or `"file"`: what a link to it is labelled). An id already known
    /// keeps its first span.
    pub fn remember(&self, id: &str, span: &SpanContext, kind: &'static str) {
        if !span.is_valid() {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.spans.contains_key(id) {
            return;
        }
        while entries.order.len() >= self.max {
            if let Some(oldest) = entries.order.pop_front() {
                entries.spans.remove(&oldest);
            }
        }
        entries.order.push_back(id.to_owned());
        entries.spans.insert(id.to_owned(), (span.clone(), kind));
    }

    /// The span that made `id` and its kind, when it is remembered.
    pub fn find(&self, id: &str) -> Option<(SpanContext, &'static str)> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.spans.get(id).cloned()
    }

    /// How many ids are remembered.
    pub fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .order
            .len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    fn observe(call: BatchCall, status: u16, body: &[u8], split: usize) -> BatchReport {
        let mut observer = BatchObserver::new(call);
        observer.on_response_head(status);
        for chunk in body.chunks(split.max(1)) {
            observer.on_response_data(chunk);
        }
        observer.finish()
    }

    fn attribute(report: &BatchReport, key: &str) -> Option<String> {
        report
            .attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.to_string())
    }

    #[test]
    fn calls_are_recognised_with_templates_and_ids_checked() {
        let cases = [
            (
                Method::POST,
                "/v1/batches",
                Some(BatchOperation::CreateBatch),
            ),
            (
                Method::GET,
                "/v1/batches?limit=2",
                Some(BatchOperation::ListBatches),
            ),
            (
                Method::POST,
                "/v1/batches/batch_1/cancel",
                Some(BatchOperation::CancelBatch),
            ),
            (Method::POST, "/v1/files", Some(BatchOperation::UploadFile)),
            (Method::GET, "/v1/files/", Some(BatchOperation::ListFiles)),
            (
                Method::DELETE,
                "/v1/files/file-1",
                Some(BatchOperation::DeleteFile),
            ),
            (
                Method::GET,
                "/base/v1/files/file-1/content",
                Some(BatchOperation::DownloadFile),
            ),
            (Method::PUT, "/v1/batches", None),
            (Method::GET, "/v1/batches/a/b", None),
            (Method::GET, "/batches/batch_1", None),
            (Method::GET, "/v1/batches/batch%2F1", None),
            (Method::GET, "/v1/chat/completions", None),
        ];
        for (method, path, want) in cases {
            let got = BatchCall::detect(&method, path).map(|c| c.operation);
            assert_eq!(got, want, "{method} {path}");
        }
        let long = format!("/v1/batches/{}", "b".repeat(129));
        assert_eq!(BatchCall::detect(&Method::GET, &long), None);
        let call = BatchCall::detect(&Method::GET, "/v1/files/file-9").unwrap();
        let attributes = call.start_attributes();
        let keys: Vec<&str> = attributes.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(keys, [names::BATCH_OPERATION, names::FILE_ID]);
    }

    #[test]
    fn a_batch_object_names_its_status_files_and_counts() {
        let call = BatchCall::detect(&Method::GET, "/v1/batches/batch_1").unwrap();
        let body = br#"{"id":"batch_1","object":"batch","endpoint":"/v1/chat/completions",
            "status":"completed","completion_window":"24h","input_file_id":"file-in",
            "output_file_id":"file-out","error_file_id":null,
            "request_counts":{"total":3,"completed":2,"failed":1}}"#;
        for split in [1, 7, body.len()] {
            let report = observe(call.clone(), 200, body, split);
            assert_eq!(report.batch_id.as_deref(), Some("batch_1"));
            assert_eq!(report.batch_files, ["file-in", "file-out"]);
            assert_eq!(
                attribute(&report, names::BATCH_STATUS).as_deref(),
                Some("completed")
            );
            assert_eq!(
                attribute(&report, names::BATCH_REQUESTS_FAILED).as_deref(),
                Some("1")
            );
            assert_eq!(attribute(&report, names::BATCH_ERROR_FILE_ID), None);
        }
        // An error answer, a non-JSON body and an oversized one record nothing.
        for (status, body) in [
            (404, &br#"{"error":{"message":"No batch found"}}"#[..]),
            (200, b"not json"),
            (200, &vec![b' '; MAX_ANSWER_BYTES + 1][..]),
        ] {
            assert_eq!(
                observe(call.clone(), status, body, 4096),
                BatchReport::default()
            );
        }
    }

    #[test]
    fn a_file_object_and_a_list() {
        let upload = BatchCall::detect(&Method::POST, "/v1/files").unwrap();
        let report = observe(
            upload,
            200,
            br#"{"id":"file-1","object":"file","bytes":120,"purpose":"batch","filename":"secret-name.jsonl"}"#,
            5,
        );
        assert_eq!(report.file_id.as_deref(), Some("file-1"));
        assert_eq!(
            attribute(&report, names::FILE_BYTES).as_deref(),
            Some("120")
        );
        assert!(
            !format!("{report:?}").contains("secret-name"),
            "file names are not recorded"
        );
        let list = BatchCall::detect(&Method::GET, "/v1/batches").unwrap();
        let report = observe(
            list,
            200,
            br#"{"object":"list","data":[{},{}],"has_more":false}"#,
            3,
        );
        assert_eq!(
            attribute(&report, names::BATCH_LIST_COUNT).as_deref(),
            Some("2")
        );
    }

    #[test]
    fn a_batch_output_is_counted_line_by_line_in_any_split() {
        let call = BatchCall::detect(&Method::GET, "/v1/files/file-out/content").unwrap();
        let ok = |id: &str, p: i64, c: i64| {
            format!(
                r#"{{"id":"r","custom_id":"{id}","response":{{"status_code":200,"body":{{"usage":{{"prompt_tokens":{p},"completion_tokens":{c}}}}}}},"error":null}}"#
            )
        };
        let body = format!(
            "{}\n{}\n{}\n\nnot json\n{}",
            ok("a", 10, 2),
            ok("b", 5, 3),
            r#"{"custom_id":"c","response":{"status_code":400,"body":{"error":{}}},"error":null}"#,
            r#"{"custom_id":"d","response":{"status_code":200,"body":{"usage":{"input_tokens":1,"output_tokens":1}}},"error":null}"#,
        );
        for split in [1, 3, 64, body.len()] {
            let report = observe(call.clone(), 200, body.as_bytes(), split);
            assert_eq!(
                attribute(&report, names::BATCH_OUTPUT_REQUESTS).as_deref(),
                Some("5")
            );
            assert_eq!(
                attribute(&report, names::BATCH_OUTPUT_FAILED).as_deref(),
                Some("1")
            );
            assert_eq!(
                attribute(&report, names::BATCH_OUTPUT_UNREADABLE).as_deref(),
                Some("1")
            );
            assert_eq!(
                attribute(&report, gen_ai::USAGE_INPUT_TOKENS).as_deref(),
                Some("16")
            );
            assert_eq!(
                attribute(&report, gen_ai::USAGE_OUTPUT_TOKENS).as_deref(),
                Some("6")
            );
        }
        // Another kind of file (a batch input, fine-tuning data) records nothing.
        let input =
            br#"{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {}}
{"messages": [{"role": "user", "content": "hi"}]}
not json
"#;
        assert_eq!(observe(call.clone(), 200, input, 7), BatchReport::default());
        // A line past the cap is counted as unreadable, and memory stays at the cap.
        let mut huge = vec![b'x'; MAX_LINE_BYTES + 10];
        huge.push(b'\n');
        huge.extend_from_slice(ok("e", 1, 1).as_bytes());
        let report = observe(call, 200, &huge, 1 << 20);
        assert_eq!(
            attribute(&report, names::BATCH_OUTPUT_REQUESTS).as_deref(),
            Some("2")
        );
        assert_eq!(
            attribute(&report, names::BATCH_OUTPUT_UNREADABLE).as_deref(),
            Some("1")
        );
    }

    #[test]
    fn the_index_is_bounded_and_keeps_first_makers() {
        use opentelemetry::trace::{SpanId, TraceFlags, TraceId, TraceState};
        let span = |n: u8| {
            SpanContext::new(
                TraceId::from_bytes([n; 16]),
                SpanId::from_bytes([n; 8]),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            )
        };
        let index = BatchIndex::new(2);
        index.remember("a", &span(1), "file");
        index.remember("a", &span(2), "batch");
        assert_eq!(index.find("a"), Some((span(1), "file")));
        index.remember("b", &span(3), "file");
        index.remember("c", &span(4), "batch");
        assert_eq!(index.len(), 2);
        assert_eq!(index.find("a"), None, "the oldest is forgotten");
        assert_eq!(index.find("c"), Some((span(4), "batch")));
        index.remember("d", &SpanContext::empty_context(), "file");
        assert_eq!(index.find("d"), None);
    }
}
