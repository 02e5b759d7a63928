//! OpenAI's Files and Batch APIs: files uploaded as `multipart/form-data` and kept in memory
//! (bounded), batches that run their lines through the mock's own non-streaming endpoints and
//! go `validating` → `in_progress` → `finalizing` → `completed` in a short time.
//!
//! A batch's lines are answered when it is created (with no delay: `x-mock-ttft-ms` and
//! `x-mock-gap-ms` do not apply, `x-mock-tokens`, `x-mock-usage`, the token-count headers and
//! the content faults `tools`, `refusal`, `content-filter` do); its status is then a function
//! of the time since: a third of `x-mock-batch-ms` (default [`DEFAULT_BATCH_TIME`]) in each of
//! `validating`, `in_progress` and `finalizing`. Its output and error files appear when it
//! completes.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::response::Response;
use http::{StatusCode, header};
use serde_json::{Map, Value};
use tokio::time::Instant;

use crate::config::{Controls, Fault};
use crate::ids;
use crate::json::{J, obj};
use crate::respond::{self, Provider};
use crate::server::{MockRequest, Shared};

const P: Provider = Provider::OpenAi;

/// How long a batch takes from `validating` to `completed` unless `x-mock-batch-ms` says.
pub(crate) const DEFAULT_BATCH_TIME: Duration = Duration::from_millis(300);
/// The longest `x-mock-batch-ms` (a day, the only completion window).
const MAX_BATCH_MS: u64 = 24 * 3600 * 1000;

/// Limits of the in-memory store.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// Files kept (uploads and batch outputs).
    pub files: usize,
    /// Bytes kept over all files (batch outputs included from the batch's creation).
    pub bytes: usize,
    /// Batches kept.
    pub batches: usize,
    /// Lines of one batch input file (OpenAI's limit).
    pub lines: usize,
}

pub(crate) const LIMITS: Limits = Limits {
    files: 1000,
    bytes: 64 << 20,
    batches: 1000,
    lines: 50_000,
};

const PURPOSES: &[&str] = &[
    "assistants",
    "batch",
    "fine-tune",
    "vision",
    "user_data",
    "evals",
];
const ENDPOINTS: &[&str] = &[
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/completions",
    "/v1/responses",
];

// === the store ===

struct File {
    id: String,
    bytes: Arc<Vec<u8>>,
    created_at: u64,
    filename: String,
    purpose: String,
}

impl File {
    fn object(&self) -> J {
        obj! {
            "id" => &self.id,
            "object" => "file",
            "bytes" => self.bytes.len(),
            "created_at" => self.created_at,
            "expires_at" => J::Null,
            "filename" => &self.filename,
            "purpose" => &self.purpose,
            "status" => "processed",
            "status_details" => J::Null,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Status {
    Validating,
    InProgress,
    Finalizing,
    Completed,
    Failed,
    Cancelling,
    Cancelled,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Validating => "validating",
            Status::InProgress => "in_progress",
            Status::Finalizing => "finalizing",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Cancelling => "cancelling",
            Status::Cancelled => "cancelled",
        }
    }
}

#[derive(Clone, Copy, Default)]
struct Usage {
    input: u64,
    cached: u64,
    output: u64,
    reasoning: u64,
}

struct Batch {
    id: String,
    endpoint: String,
    model: Option<String>,
    input_file_id: String,
    metadata: Option<Value>,
    created_at: u64,
    /// When it was created, and how long it takes.
    started: Instant,
    took: Duration,
    total: u64,
    completed: u64,
    failed: u64,
    usage: Usage,
    /// Line errors found when validating: the batch fails.
    errors: Vec<J>,
    /// The output and error files, until the batch completes (their bytes are reserved).
    pending: Vec<(String, Vec<u8>)>,
    output_file_id: Option<String>,
    error_file_id: Option<String>,
    /// Cancel requested at this time.
    cancelling: Option<(Instant, u64)>,
    /// Terminal status once reached (completed, failed, cancelled).
    done: Option<Status>,
}

impl Batch {
    fn phase(&self) -> Duration {
        self.took / 3
    }

    /// The status at `now`, without side effects.
    fn status_at(&self, now: Instant) -> Status {
        if let Some(done) = self.done {
            return done;
        }
        if let Some((at, _)) = self.cancelling {
            return if now >= at + self.phase() {
                Status::Cancelled
            } else {
                Status::Cancelling
            };
        }
        let elapsed = now.saturating_duration_since(self.started);
        let phase = self.phase();
        if elapsed < phase {
            Status::Validating
        } else if !self.errors.is_empty() {
            Status::Failed
        } else if elapsed < phase * 2 {
            Status::InProgress
        } else if elapsed < self.took {
            Status::Finalizing
        } else {
            Status::Completed
        }
    }

    /// Seconds since creation of a point in the batch's life, on top of `created_at`.
    fn at(&self, offset: Duration) -> u64 {
        self.created_at + offset.as_secs()
    }

    fn object(&self, now: Instant) -> J {
        let status = self.status_at(now);
        let phase = self.phase();
        let cancelled = matches!(status, Status::Cancelling | Status::Cancelled);
        let reached = |s: Status| -> bool {
            use Status::*;
            let order = |s: Status| match s {
                Validating => 0,
                InProgress => 1,
                Finalizing => 2,
                Completed => 3,
                _ => 9,
            };
            !cancelled && status != Failed && order(status) >= order(s) && order(status) < 9
        };
        let time = |yes: bool, offset: Duration| if yes { J::U(self.at(offset)) } else { J::Null };
        let (completed, failed) = match status {
            Status::Completed | Status::Finalizing => (self.completed, self.failed),
            Status::InProgress => {
                // Progress in proportion to the time spent in progress.
                let done = now
                    .saturating_duration_since(self.started + phase)
                    .as_secs_f64()
                    / phase.as_secs_f64().max(1e-9);
                let part = |n: u64| ((n as f64) * done.clamp(0.0, 1.0)) as u64;
                (part(self.completed), part(self.failed))
            }
            _ => (0, 0),
        };
        let u = if status == Status::Completed {
            self.usage
        } else {
            Usage::default()
        };
        let errors = if self.errors.is_empty() {
            J::Null
        } else {
            obj! { "object" => "list", "data" => self.errors.clone() }
        };
        let completed_state = status == Status::Completed;
        obj! {
            "id" => &self.id,
            "object" => "batch",
            "endpoint" => &self.endpoint,
            "model" => self.model.as_deref(),
            "errors" => errors,
            "input_file_id" => &self.input_file_id,
            "completion_window" => "24h",
            "status" => status.as_str(),
            "output_file_id" => if completed_state { J::from(self.output_file_id.as_deref()) } else { J::Null },
            "error_file_id" => if completed_state { J::from(self.error_file_id.as_deref()) } else { J::Null },
            "created_at" => self.created_at,
            "in_progress_at" => time(reached(Status::InProgress), phase),
            "expires_at" => self.created_at + 24 * 3600,
            "finalizing_at" => time(reached(Status::Finalizing), phase * 2),
            "completed_at" => time(reached(Status::Completed), self.took),
            "failed_at" => time(status == Status::Failed, phase),
            "expired_at" => J::Null,
            "cancelling_at" => self.cancelling.map(|(_, s)| s),
            "cancelled_at" => if status == Status::Cancelled { self.cancelling.map(|(_, s)| s + phase.as_secs()) } else { None },
            "request_counts" => obj! { "total" => self.total, "completed" => completed, "failed" => failed },
            "usage" => obj! {
                "input_tokens" => u.input,
                "input_tokens_details" => obj! { "cached_tokens" => u.cached },
                "output_tokens" => u.output,
                "output_tokens_details" => obj! { "reasoning_tokens" => u.reasoning },
                "total_tokens" => u.input + u.output,
            },
            "metadata" => self.metadata.clone(),
        }
    }
}

struct Inner {
    /// Oldest first.
    files: Vec<File>,
    /// Oldest first.
    batches: Vec<Batch>,
    /// Bytes of the files plus the pending batch outputs.
    bytes: usize,
}

impl Inner {
    /// A new id from `draw` that no file, pending output or batch has (a repeated
    /// `x-mock-seed` draws the same ids again).
    fn fresh_id(&self, mut draw: impl FnMut() -> String) -> String {
        loop {
            let id = draw();
            let taken = self.files.iter().any(|f| f.id == id)
                || self
                    .batches
                    .iter()
                    .any(|b| b.id == id || b.pending.iter().any(|(p, _)| *p == id));
            if !taken {
                return id;
            }
        }
    }
}

/// The files and batches of one mock.
pub(crate) struct Store {
    limits: Limits,
    inner: Mutex<Inner>,
}

impl Store {
    pub(crate) fn new(limits: Limits) -> Self {
        Store {
            limits,
            inner: Mutex::new(Inner {
                files: Vec::new(),
                batches: Vec::new(),
                bytes: 0,
            }),
        }
    }

    /// The store, with every batch brought up to `now`: a batch that has completed publishes
    /// its files, one that has been cancelled or has failed releases what it reserved.
    fn lock(&self, now: Instant) -> MutexGuard<'_, Inner> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let Inner {
            files,
            batches,
            bytes,
        } = &mut *inner;
        for batch in batches.iter_mut().filter(|b| b.done.is_none()) {
            let status = batch.status_at(now);
            match status {
                Status::Completed => {
                    for (id, content) in std::mem::take(&mut batch.pending) {
                        let purpose = "batch_output";
                        let filename = if Some(&id) == batch.output_file_id.as_ref() {
                            format!("{}_output.jsonl", batch.id)
                        } else {
                            format!("{}_error.jsonl", batch.id)
                        };
                        files.push(File {
                            id,
                            bytes: Arc::new(content),
                            created_at: batch.at(batch.took),
                            filename,
                            purpose: purpose.to_owned(),
                        });
                    }
                    batch.done = Some(status);
                }
                Status::Failed | Status::Cancelled => {
                    for (_, content) in batch.pending.drain(..) {
                        *bytes -= content.len();
                    }
                    batch.done = Some(status);
                }
                _ => {}
            }
        }
        inner
    }

    /// Room for `n` more bytes and one more file, or why not.
    fn room(&self, inner: &Inner, n: usize, files: usize) -> Result<(), String> {
        if inner.files.len() + files > self.limits.files {
            return Err(format!(
                "The mock keeps at most {} files; delete some first.",
                self.limits.files
            ));
        }
        if inner.bytes + n > self.limits.bytes {
            return Err(format!(
                "The mock keeps at most {} bytes of files ({} in use); this needs {n} more.",
                self.limits.bytes, inner.bytes
            ));
        }
        Ok(())
    }
}

// === errors ===

/// `{"error": {"message", "type": "invalid_request_error", "param", "code": null}}`.
fn fail(status: u16, message: &str, param: Option<&str>) -> Response {
    let body = obj! {
        "error" => obj! {
            "message" => message,
            "type" => "invalid_request_error",
            "param" => param,
            "code" => J::Null,
        },
    };
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    respond::json(P, code, &body, Duration::ZERO)
}

fn no_file(id: &str) -> Response {
    fail(404, &format!("No such File object: {id}"), Some("id"))
}

fn no_batch(id: &str) -> Response {
    fail(404, &format!("No batch found with id '{id}'."), Some("id"))
}

fn ok(body: &J) -> Response {
    respond::json(P, StatusCode::OK, body, Duration::ZERO)
}

fn query(req: &MockRequest, key: &str) -> Option<String> {
    req.uri.query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then(|| v.to_owned())
    })
}

fn limit_param(req: &MockRequest, default: usize, max: usize) -> Result<usize, Response> {
    match query(req, "limit") {
        None => Ok(default),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(fail(
                400,
                &format!("Invalid 'limit': expected an integer between 1 and {max}, got '{v}'."),
                Some("limit"),
            )),
        },
    }
}

/// One page of `items` (already in the list's order) after the `after` id.
fn page<'a, T>(
    items: Vec<&'a T>,
    id: impl Fn(&T) -> &str,
    after: Option<&str>,
    limit: usize,
) -> (Vec<&'a T>, bool) {
    let start = after
        .and_then(|a| items.iter().position(|t| id(t) == a).map(|i| i + 1))
        .unwrap_or(0);
    let rest = &items[start.min(items.len())..];
    let has_more = rest.len() > limit;
    (rest.iter().take(limit).copied().collect(), has_more)
}

fn list(data: Vec<J>, first: Option<&str>, last: Option<&str>, has_more: bool) -> J {
    obj! {
        "object" => "list",
        "data" => data,
        "first_id" => first,
        "last_id" => last,
        "has_more" => has_more,
    }
}

// === multipart ===

struct Part {
    name: String,
    filename: Option<String>,
    content: Vec<u8>,
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    let first = *needle.first()?;
    let mut i = from;
    while i + needle.len() <= hay.len() {
        let at = i + hay[i..hay.len() - needle.len() + 1]
            .iter()
            .position(|&b| b == first)?;
        if &hay[at..at + needle.len()] == needle {
            return Some(at);
        }
        i = at + 1;
    }
    None
}

/// A parameter of a header value (`boundary=…`, `name="…"`), unquoted.
fn param(value: &str, key: &str) -> Option<String> {
    value.split(';').skip(1).find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(key)
            .then(|| v.trim().trim_matches('"').to_owned())
    })
}

/// The parts of a `multipart/form-data` body.
fn multipart(body: &[u8], boundary: &str) -> Result<Vec<Part>, String> {
    let delimiter = format!("--{boundary}").into_bytes();
    let mut at = find(body, &delimiter, 0).ok_or("no multipart boundary in the body")?;
    let mut parts = Vec::new();
    loop {
        at += delimiter.len();
        if body[at..].starts_with(b"--") {
            return Ok(parts);
        }
        let head_start = at
            + body[at..]
                .iter()
                .position(|&b| b == b'\n')
                .ok_or("cut part")?
            + 1;
        let head_end = find(body, b"\r\n\r\n", head_start).ok_or("a part without headers")?;
        let head = String::from_utf8_lossy(&body[head_start..head_end]);
        let content_start = head_end + 4;
        let mut end_marker = b"\r\n".to_vec();
        end_marker.extend_from_slice(&delimiter);
        let end = find(body, &end_marker, content_start).ok_or("a part without its end")?;
        let disposition = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case("content-disposition")
                    .then(|| v.trim().to_owned())
            })
            .ok_or("a part without content-disposition")?;
        parts.push(Part {
            name: param(&disposition, "name").unwrap_or_default(),
            filename: param(&disposition, "filename"),
            content: body[content_start..end].to_vec(),
        });
        at = end + 2;
    }
}

// === files ===

/// A batch input line.
#[derive(Debug)]
struct Line {
    custom_id: String,
    url: String,
    body: Map<String, Value>,
}

/// The lines of a batch input file, or a message naming the first bad one.
fn batch_lines(content: &[u8], max: usize) -> Result<Vec<Line>, String> {
    let text = std::str::from_utf8(content)
        .map_err(|_| "The batch input file must be UTF-8 encoded JSONL.".to_owned())?;
    let mut lines = Vec::new();
    let mut seen = HashSet::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(line)
            .map_err(|e| format!("Line {n}: the line is not valid JSON ({e})."))?;
        let Value::Object(mut o) = value else {
            return Err(format!("Line {n}: the line must be a JSON object."));
        };
        let custom_id = match o.get("custom_id") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => {
                return Err(format!(
                    "Line {n}: missing or invalid 'custom_id' (a non-empty string)."
                ));
            }
        };
        if !seen.insert(custom_id.clone()) {
            return Err(format!(
                "Line {n}: duplicate custom_id '{custom_id}'; each must be unique."
            ));
        }
        if o.get("method").and_then(Value::as_str) != Some("POST") {
            return Err(format!("Line {n}: 'method' must be \"POST\"."));
        }
        let url = match o.get("url") {
            Some(Value::String(s)) => s.clone(),
            _ => {
                return Err(format!(
                    "Line {n}: missing or invalid 'url' (a string such as \"/v1/chat/completions\")."
                ));
            }
        };
        let body = match o.remove("body") {
            Some(Value::Object(b)) => b,
            _ => {
                return Err(format!(
                    "Line {n}: missing or invalid 'body' (a JSON object)."
                ));
            }
        };
        lines.push(Line {
            custom_id,
            url,
            body,
        });
        if lines.len() > max {
            return Err(format!(
                "The batch input file has more than {max} requests."
            ));
        }
    }
    if lines.is_empty() {
        return Err("The batch input file is empty: it needs at least one request line.".into());
    }
    Ok(lines)
}

/// `POST /v1/files`: `multipart/form-data` with `file` and `purpose`.
pub(crate) async fn upload(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let limit = shared.batches.limits.bytes;
    let too_big = || {
        fail(
            413,
            &format!("The file is too large: the mock keeps at most {limit} bytes of files."),
            Some("file"),
        )
    };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit + (1 << 20)) {
        shared.record(&parts, &bytes::Bytes::new());
        return too_big();
    }
    let bytes = match axum::body::to_bytes(body, limit + (1 << 20)).await {
        Ok(b) => b,
        Err(_) => {
            shared.record(&parts, &bytes::Bytes::new());
            return too_big();
        }
    };
    shared.record(&parts, &bytes);
    let controls = match Controls::new(&shared.config, &parts.headers) {
        Ok(c) => c,
        Err(m) => return respond::invalid(P, &m, None),
    };
    if let Some(status) = controls.status_fault() {
        return respond::error(P, status, None, None);
    }
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let boundary = match param(content_type, "boundary") {
        Some(b)
            if content_type.trim_start().starts_with("multipart/form-data") && !b.is_empty() =>
        {
            b
        }
        _ => {
            return fail(
                400,
                "Invalid request: the body must be multipart/form-data with a 'file' and a 'purpose'.",
                None,
            );
        }
    };
    let form = match multipart(&bytes, &boundary) {
        Ok(f) => f,
        Err(e) => {
            return fail(
                400,
                &format!("Could not parse the multipart form: {e}."),
                None,
            );
        }
    };
    let Some(purpose) = form.iter().find(|p| p.name == "purpose") else {
        return fail(
            400,
            "Missing required parameter: 'purpose'.",
            Some("purpose"),
        );
    };
    let purpose = String::from_utf8_lossy(&purpose.content).trim().to_owned();
    if !PURPOSES.contains(&purpose.as_str()) {
        return fail(
            400,
            &format!(
                "Invalid value for 'purpose': '{purpose}'. Supported values are: {}.",
                PURPOSES
                    .iter()
                    .map(|p| format!("'{p}'"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Some("purpose"),
        );
    }
    let Some(file) = form.into_iter().find(|p| p.name == "file") else {
        return fail(400, "Missing required parameter: 'file'.", Some("file"));
    };
    if purpose == "batch" {
        if let Err(message) = batch_lines(&file.content, shared.batches.limits.lines) {
            return fail(400, &message, Some("file"));
        }
    }
    let mut file = File {
        id: String::new(),
        created_at: ids::unix_now(),
        filename: file.filename.unwrap_or_else(|| "upload".to_owned()),
        purpose,
        bytes: Arc::new(file.content),
    };
    let store = &shared.batches;
    let mut inner = store.lock(Instant::now());
    if let Err(message) = store.room(&inner, file.bytes.len(), 1) {
        let status = if inner.files.len() >= store.limits.files {
            400
        } else {
            413
        };
        return fail(status, &message, Some("file"));
    }
    inner.bytes += file.bytes.len();
    file.id = inner.fresh_id(|| ids::base62("file-", 22));
    let body = file.object();
    inner.files.push(file);
    drop(inner);
    ok(&body)
}

/// `GET /v1/files`: `purpose`, `limit` (default 10000), `order` (`desc`), `after`.
pub(crate) async fn list_files(State(shared): State<Arc<Shared>>, req: MockRequest) -> Response {
    if let Some(r) = req.early_fault(P) {
        return r;
    }
    let limit = match limit_param(&req, 10_000, 10_000) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let purpose = query(&req, "purpose");
    let order = query(&req, "order").unwrap_or_else(|| "desc".into());
    if order != "asc" && order != "desc" {
        return fail(
            400,
            &format!("Invalid value for 'order': '{order}'. Supported values are: 'asc', 'desc'."),
            Some("order"),
        );
    }
    let inner = shared.batches.lock(Instant::now());
    let mut files: Vec<&File> = inner
        .files
        .iter()
        .filter(|f| purpose.as_deref().is_none_or(|p| p == f.purpose))
        .collect();
    if order == "desc" {
        files.reverse();
    }
    let (data, has_more) = page(files, |f| &f.id, query(&req, "after").as_deref(), limit);
    let body = list(
        data.iter().map(|f| f.object()).collect(),
        data.first().map(|f| f.id.as_str()),
        data.last().map(|f| f.id.as_str()),
        has_more,
    );
    ok(&body)
}

/// `GET /v1/files/{id}`.
pub(crate) async fn get_file(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    req: MockRequest,
) -> Response {
    if let Some(r) = req.early_fault(P) {
        return r;
    }
    let inner = shared.batches.lock(Instant::now());
    match inner.files.iter().find(|f| f.id == id) {
        Some(f) => ok(&f.object()),
        None => no_file(&id),
    }
}

/// `GET /v1/files/{id}/content`: the bytes as uploaded or generated.
pub(crate) async fn file_content(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    req: MockRequest,
) -> Response {
    if let Some(r) = req.early_fault(P) {
        return r;
    }
    let content = {
        let inner = shared.batches.lock(Instant::now());
        match inner.files.iter().find(|f| f.id == id) {
            Some(f) => f.bytes.clone(),
            None => return no_file(&id),
        }
    };
    let mut response = respond::json(P, StatusCode::OK, &J::Null, Duration::ZERO);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/octet-stream"),
    );
    *response.body_mut() = Body::from(content.as_ref().clone());
    response
}

/// `DELETE /v1/files/{id}`: `{"id", "object": "file", "deleted": true}`.
pub(crate) async fn delete_file(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    req: MockRequest,
) -> Response {
    if let Some(r) = req.early_fault(P) {
        return r;
    }
    let mut inner = shared.batches.lock(Instant::now());
    let Some(i) = inner.files.iter().position(|f| f.id == id) else {
        return no_file(&id);
    };
    let file = inner.files.remove(i);
    inner.bytes -= file.bytes.len();
    ok(&obj! { "id" => &id, "object" => "file", "deleted" => true })
}

// === batches ===

/// The usage of one answer body (chat/completions/embeddings or Responses API names).
fn usage_of(body: &Value) -> Usage {
    let Some(u) = body.get("usage") else {
        return Usage::default();
    };
    let n = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| {
                let mut v = u;
                for part in k.split('.') {
                    v = v.get(part)?;
                }
                v.as_u64()
            })
            .unwrap_or(0)
    };
    Usage {
        input: n(&["prompt_tokens", "input_tokens"]),
        cached: n(&[
            "prompt_tokens_details.cached_tokens",
            "input_tokens_details.cached_tokens",
        ]),
        output: n(&["completion_tokens", "output_tokens"]),
        reasoning: n(&[
            "completion_tokens_details.reasoning_tokens",
            "output_tokens_details.reasoning_tokens",
        ]),
    }
}

/// Answers one line with the mock's own endpoint, at once and never streamed.
async fn run_line(create: &MockRequest, endpoint: &str, line: &Line) -> (u16, String, Vec<u8>) {
    let mut controls = create.controls.clone();
    controls.ttft = Duration::ZERO;
    controls.gap = Duration::ZERO;
    controls.stall = Duration::ZERO;
    // Content faults shape the answers; transport faults belong to the create request.
    controls
        .faults
        .retain(|f| matches!(f, Fault::Tools | Fault::Refusal | Fault::ContentFilter));
    let mut body = line.body.clone();
    body.remove("stream");
    body.remove("stream_options");
    let req = MockRequest {
        started: Instant::now(),
        method: http::Method::POST,
        uri: endpoint
            .parse()
            .unwrap_or_else(|_| http::Uri::from_static("/")),
        headers: http::HeaderMap::new(),
        body: Value::Object(body),
        controls,
    };
    let response = match endpoint {
        "/v1/chat/completions" => crate::openai::chat(req, None).await,
        "/v1/completions" => crate::openai::completions(req, None).await,
        "/v1/embeddings" => crate::openai::embeddings(req, None).await,
        _ => crate::openai::responses(req).await,
    };
    let status = response.status().as_u16();
    let request_id = response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map_or_else(|| ids::hex("req_", 32), str::to_owned);
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .map(|b| b.to_vec())
        .unwrap_or_else(|_| b"null".to_vec());
    (status, request_id, bytes)
}

/// `{"id": "batch_req_…", "custom_id", "response": {"status_code", "request_id", "body"}, "error": null}`,
/// with the answer's bytes as the body.
fn output_line(out: &mut Vec<u8>, custom_id: &str, status: u16, request_id: &str, body: &[u8]) {
    let string = |s: &str| serde_json::to_string(s).expect("strings serialize");
    out.extend_from_slice(
        format!(
            r#"{{"id":{},"custom_id":{},"response":{{"status_code":{status},"request_id":{},"body":"#,
            string(&ids::hex("batch_req_", 32)),
            string(custom_id),
            string(request_id),
        )
        .as_bytes(),
    );
    out.extend_from_slice(body);
    out.extend_from_slice(b"},\"error\":null}\n");
}

/// `POST /v1/batches`: `input_file_id`, `endpoint`, `completion_window` (`24h`), `metadata`.
pub(crate) async fn create_batch(State(shared): State<Arc<Shared>>, req: MockRequest) -> Response {
    if let Some(r) = req.early_fault(P) {
        return r;
    }
    let took = match req.headers.get(crate::headers::BATCH_MS) {
        None => DEFAULT_BATCH_TIME,
        Some(v) => match v.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()) {
            Some(ms) if ms <= MAX_BATCH_MS => Duration::from_millis(ms),
            _ => {
                return respond::invalid(
                    P,
                    &format!(
                        "{}: expected a whole number of milliseconds up to {MAX_BATCH_MS}, got {v:?}",
                        crate::headers::BATCH_MS
                    ),
                    None,
                );
            }
        },
    };
    let body = match req.object(P) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let text = |key: &str| body.get(key).and_then(Value::as_str);
    let Some(input_file_id) = text("input_file_id") else {
        return fail(
            400,
            "Missing required parameter: 'input_file_id'.",
            Some("input_file_id"),
        );
    };
    let Some(endpoint) = text("endpoint") else {
        return fail(
            400,
            "Missing required parameter: 'endpoint'.",
            Some("endpoint"),
        );
    };
    if !ENDPOINTS.contains(&endpoint) {
        return fail(
            400,
            &format!(
                "Invalid value: '{endpoint}'. Supported values are: {}.",
                ENDPOINTS
                    .iter()
                    .map(|p| format!("'{p}'"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Some("endpoint"),
        );
    }
    let Some(window) = text("completion_window") else {
        return fail(
            400,
            "Missing required parameter: 'completion_window'.",
            Some("completion_window"),
        );
    };
    if window != "24h" {
        return fail(
            400,
            &format!("Invalid value: '{window}'. Supported values are: '24h'."),
            Some("completion_window"),
        );
    }
    let metadata = match body.get("metadata") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) if m.len() <= 16 && m.values().all(Value::is_string) => {
            Some(Value::Object(m.clone()))
        }
        Some(_) => {
            return fail(
                400,
                "Invalid 'metadata': expected an object of at most 16 string values.",
                Some("metadata"),
            );
        }
    };
    let content = {
        let inner = shared.batches.lock(Instant::now());
        match inner.files.iter().find(|f| f.id == input_file_id) {
            None => return no_file(input_file_id),
            Some(f) if f.purpose != "batch" => {
                return fail(
                    400,
                    &format!(
                        "File {input_file_id} has purpose '{}'; a batch input file must have purpose 'batch'.",
                        f.purpose
                    ),
                    Some("input_file_id"),
                );
            }
            Some(f) => f.bytes.clone(),
        }
    };
    let lines = match batch_lines(&content, shared.batches.limits.lines) {
        Ok(l) => l,
        Err(m) => return fail(400, &m, Some("input_file_id")),
    };
    // Lines for another endpoint fail the batch when it is validated, as OpenAI's do.
    let errors: Vec<J> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.url != endpoint)
        .map(|(i, l)| {
            obj! {
                "code" => "invalid_url",
                "message" => format!(
                    "The URL provided for this request does not match the batch endpoint: '{}' is not '{endpoint}'.",
                    l.url
                ),
                "param" => "url",
                "line" => i + 1,
            }
        })
        .collect();
    let (mut output, mut error_out) = (Vec::new(), Vec::new());
    let (mut completed, mut failed, mut usage) = (0u64, 0u64, Usage::default());
    if errors.is_empty() {
        for line in &lines {
            let (status, request_id, answer) = run_line(&req, endpoint, line).await;
            let ok = (200..300).contains(&status);
            let out = if ok { &mut output } else { &mut error_out };
            output_line(out, &line.custom_id, status, &request_id, &answer);
            if ok {
                completed += 1;
                if let Ok(v) = serde_json::from_slice::<Value>(&answer) {
                    let u = usage_of(&v);
                    usage.input += u.input;
                    usage.cached += u.cached;
                    usage.output += u.output;
                    usage.reasoning += u.reasoning;
                }
            } else {
                failed += 1;
            }
        }
    }
    let model = lines
        .iter()
        .find_map(|l| l.body.get("model").and_then(Value::as_str))
        .map(str::to_owned);
    let mut pending = Vec::new();
    for content in [output, error_out] {
        if !content.is_empty() {
            pending.push((String::new(), content));
        }
    }
    let mut batch = Batch {
        id: String::new(),
        endpoint: endpoint.to_owned(),
        model,
        input_file_id: input_file_id.to_owned(),
        metadata,
        created_at: ids::unix_now(),
        started: Instant::now(),
        took,
        total: lines.len() as u64,
        completed,
        failed,
        usage,
        errors,
        pending,
        output_file_id: None,
        error_file_id: None,
        cancelling: None,
        done: None,
    };
    let store = &shared.batches;
    let mut inner = store.lock(Instant::now());
    if inner.batches.len() >= store.limits.batches {
        return fail(
            400,
            &format!("The mock keeps at most {} batches.", store.limits.batches),
            None,
        );
    }
    let reserved: usize = batch.pending.iter().map(|(_, c)| c.len()).sum();
    if let Err(message) = store.room(&inner, reserved, batch.pending.len()) {
        return fail(
            400,
            &format!("The batch's output cannot be kept: {message}"),
            None,
        );
    }
    inner.bytes += reserved;
    // Ids drawn here, unique in the store even when a seed repeats them.
    batch.id = inner.fresh_id(|| ids::hex("batch_", 32));
    // The output file (when some lines succeeded), then the error file (when some failed).
    let kinds = [(completed > 0, true), (failed > 0, false)]
        .into_iter()
        .filter_map(|(any, output)| any.then_some(output));
    for ((id, _), output) in batch.pending.iter_mut().zip(kinds) {
        *id = inner.fresh_id(|| ids::base62("file-", 22));
        if output {
            batch.output_file_id = Some(id.clone());
        } else {
            batch.error_file_id = Some(id.clone());
        }
    }
    let body = batch.object(batch.started);
    inner.batches.push(batch);
    drop(inner);
    ok(&body)
}

/// `GET /v1/batches/{id}`.
pub(crate) async fn get_batch(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    req: MockRequest,
) -> Response {
    if let Some(r) = req.early_fault(P) {
        return r;
    }
    let now = Instant::now();
    let inner = shared.batches.lock(now);
    match inner.batches.iter().find(|b| b.id == id) {
        Some(b) => ok(&b.object(now)),
        None => no_batch(&id),
    }
}

/// `POST /v1/batches/{id}/cancel`: `cancelling`, then `cancelled` a third of the batch's
/// time later; a batch past `in_progress` cannot be cancelled (400).
pub(crate) async fn cancel_batch(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    req: MockRequest,
) -> Response {
    if let Some(r) = req.early_fault(P) {
        return r;
    }
    let now = Instant::now();
    let mut inner = shared.batches.lock(now);
    let Some(b) = inner.batches.iter_mut().find(|b| b.id == id) else {
        return no_batch(&id);
    };
    match b.status_at(now) {
        Status::Validating | Status::InProgress => {
            b.cancelling = Some((now, ids::unix_now()));
        }
        Status::Cancelling => {}
        other => {
            return fail(
                400,
                &format!("Cannot cancel a batch with status '{}'.", other.as_str()),
                None,
            );
        }
    }
    ok(&b.object(now))
}

/// `GET /v1/batches`: newest first; `limit` (1–100, default 20), `after`.
pub(crate) async fn list_batches(State(shared): State<Arc<Shared>>, req: MockRequest) -> Response {
    if let Some(r) = req.early_fault(P) {
        return r;
    }
    let limit = match limit_param(&req, 20, 100) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let now = Instant::now();
    let inner = shared.batches.lock(now);
    let batches: Vec<&Batch> = inner.batches.iter().rev().collect();
    let (data, has_more) = page(batches, |b| &b.id, query(&req, "after").as_deref(), limit);
    let body = list(
        data.iter().map(|b| b.object(now)).collect(),
        data.first().map(|b| b.id.as_str()),
        data.last().map(|b| b.id.as_str()),
        has_more,
    );
    ok(&body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_parts() {
        let body = b"--XYZ\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n\
--XYZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\n\
Content-Type: application/octet-stream\r\n\r\nline1\r\nline2\n\r\n--XYZ--\r\n";
        let parts = multipart(body, "XYZ").unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].name, "purpose");
        assert_eq!(parts[0].content, b"batch");
        assert_eq!(parts[1].filename.as_deref(), Some("in.jsonl"));
        assert_eq!(parts[1].content, b"line1\r\nline2\n");
        assert_eq!(
            param("multipart/form-data; boundary=\"a b\"", "boundary").as_deref(),
            Some("a b")
        );
        assert!(multipart(b"no boundary here", "XYZ").is_err());
    }

    #[test]
    fn batch_lines_name_the_bad_line() {
        let good = r#"{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{}}"#;
        assert_eq!(
            batch_lines(format!("{good}\n\n").as_bytes(), 10)
                .unwrap()
                .len(),
            1
        );
        let cases = [
            (format!("{good}\nnot json"), "Line 2"),
            (format!("{good}\n{good}"), "duplicate custom_id 'a'"),
            (good.replace("POST", "GET"), "Line 1: 'method'"),
            (good.replace(r#","body":{}"#, ""), "'body'"),
            (good.replace(r#""custom_id":"a","#, ""), "'custom_id'"),
            (String::new(), "empty"),
        ];
        for (input, expected) in cases {
            let err = batch_lines(input.as_bytes(), 10).unwrap_err();
            assert!(err.contains(expected), "{err} lacks {expected}");
        }
        let many = (0..3)
            .map(|i| good.replace("\"a\"", &format!("\"{i}\"")))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            batch_lines(many.as_bytes(), 2)
                .unwrap_err()
                .contains("more than 2")
        );
    }

    #[test]
    fn the_store_is_bounded() {
        let store = Store::new(Limits {
            files: 2,
            bytes: 10,
            batches: 1,
            lines: 10,
        });
        let mut inner = store.lock(Instant::now());
        assert!(store.room(&inner, 10, 1).is_ok());
        assert!(
            store
                .room(&inner, 11, 1)
                .unwrap_err()
                .contains("at most 10 bytes")
        );
        for i in 0..2 {
            inner.files.push(File {
                id: format!("file-{i}"),
                bytes: Arc::new(vec![0; 2]),
                created_at: 0,
                filename: "f".into(),
                purpose: "batch".into(),
            });
            inner.bytes += 2;
        }
        assert!(
            store
                .room(&inner, 1, 1)
                .unwrap_err()
                .contains("at most 2 files")
        );
    }

    #[test]
    fn pages_follow_after() {
        let items = ["a", "b", "c", "d"];
        let refs: Vec<&&str> = items.iter().collect();
        let (p, more) = page(refs.clone(), |s| s, None, 2);
        assert_eq!((p, more), (vec![&"a", &"b"], true));
        let (p, more) = page(refs, |s| s, Some("b"), 2);
        assert_eq!((p, more), (vec![&"c", &"d"], false));
    }
}
