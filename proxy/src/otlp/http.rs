//! OTLP/HTTP with protobuf bodies: the same encoded batches as the gRPC exporter, each sent
//! as one `POST` (`Content-Type: application/x-protobuf`) to the traces URL.
//!
//! Throttled answers and gateway failures (429, 502, 503, 504) and connection failures are
//! retried until the timeout is spent, after the server's `Retry-After` (seconds) when it sends
//! one, else with exponential backoff (100 ms doubling, with jitter). A partial success
//! (spans the collector rejected) and the message of an error body are written to stderr,
//! shortened, at most once a minute; header values never are.

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};

use super::{BatchEncoder, FIRST_BACKOFF, OtlpSettings, jitter_permille};

/// The longest piece of a collector's answer written to the log.
const MAX_LOGGED: usize = 256;
/// The most of an answer's body read.
const MAX_BODY: usize = 4096;
const LOG_INTERVAL: Duration = Duration::from_secs(60);

/// An OTLP/HTTP (protobuf) span exporter that encodes `SpanData` directly.
pub struct HttpExporter {
    client: reqwest::Client,
    url: reqwest::Url,
    headers: HeaderMap,
    timeout: Duration,
    runtime: tokio::runtime::Handle,
    batches: BatchEncoder,
    last_log: Mutex<Option<Instant>>,
}

impl fmt::Debug for HttpExporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpExporter")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Why one attempt failed, and whether another may follow.
struct Failure {
    message: String,
    retry: bool,
    retry_after: Option<Duration>,
}

impl HttpExporter {
    /// An exporter for `settings` (`endpoint` is the full traces URL), sending on `runtime`.
    /// Fails on an endpoint that is not a URL or a header that cannot be an HTTP header.
    pub fn new(
        settings: &OtlpSettings,
        runtime: tokio::runtime::Handle,
    ) -> Result<Self, Box<dyn std::error::Error>> {
        let url = reqwest::Url::parse(&settings.endpoint)
            .map_err(|e| format!("OTLP endpoint {:?}: {e}", settings.endpoint))?;
        let mut headers = HeaderMap::new();
        for (key, value) in &settings.headers {
            let name = HeaderName::from_bytes(key.as_bytes())
                .map_err(|_| format!("OTLP header name {key:?} is not a valid HTTP header"))?;
            let mut value = HeaderValue::from_str(value)
                .map_err(|_| format!("OTLP header {key:?} has a value HTTP cannot carry"))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-protobuf"),
        );
        crate::telemetry::install_crypto_provider();
        let client = reqwest::Client::builder()
            .user_agent(concat!("llmtrace-proxy/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            client,
            url,
            headers,
            timeout: settings.timeout,
            runtime,
            batches: BatchEncoder::default(),
            last_log: Mutex::new(None),
        })
    }

    /// One export: attempts until one succeeds, fails for good or the timeout is spent.
    async fn send(&self, body: Bytes) -> Result<(), String> {
        let deadline = Instant::now() + self.timeout;
        let mut backoff = FIRST_BACKOFF;
        let mut attempt: u32 = 0;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let failure = match self.attempt(body.clone(), remaining).await {
                Ok(()) => return Ok(()),
                Err(failure) => failure,
            };
            attempt += 1;
            let jitter = backoff.mul_f64(f64::from(jitter_permille(attempt)) / 4000.0);
            let wait = failure.retry_after.unwrap_or(backoff + jitter);
            if !failure.retry || Instant::now() + wait >= deadline {
                return Err(failure.message);
            }
            tokio::time::sleep(wait).await;
            backoff = backoff.saturating_mul(2);
        }
    }

    async fn attempt(&self, body: Bytes, timeout: Duration) -> Result<(), Failure> {
        let response = self
            .client
            .post(self.url.clone())
            .headers(self.headers.clone())
            .timeout(timeout)
            .body(body)
            .send()
            .await
            .map_err(|e| Failure {
                // Without the URL: it may carry credentials.
                message: e.without_url().to_string(),
                retry: true,
                retry_after: None,
            })?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let protobuf = response
            .headers()
            .get(CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/x-protobuf"));
        let answer = read_bounded(response).await;
        if status.is_success() {
            if let Some((rejected, message)) = partial_success(&answer) {
                self.log(&format!(
                    "the collector rejected {rejected} spans: {}",
                    shorten(&message)
                ));
            }
            return Ok(());
        }
        let retry = retryable(status);
        if !retry {
            self.log(&format!(
                "OTLP/HTTP export failed: HTTP {status}: {}",
                error_message(&answer, protobuf)
            ));
        }
        // The body may echo what was sent: only the status is reported beyond the log.
        Err(Failure {
            message: format!("HTTP {status}"),
            retry,
            retry_after,
        })
    }

    /// Writes `line` to stderr unless a line was written less than a minute ago.
    fn log(&self, line: &str) {
        let mut last = self.last_log.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_none_or(|at| at.elapsed() >= LOG_INTERVAL) {
            *last = Some(Instant::now());
            eprintln!("llmtrace-proxy: {line}");
        }
    }
}

fn retryable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 502 | 503 | 504)
}

/// The first [`MAX_BODY`] bytes of the answer's body (nothing on a read error).
async fn read_bounded(mut response: reqwest::Response) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() < MAX_BODY {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let take = chunk.len().min(MAX_BODY - body.len());
                body.extend_from_slice(&chunk[..take]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    body
}

/// An `ExportTraceServiceResponse`'s `partial_success` (1): `rejected_spans` (1) and
/// `error_message` (2), when it reports rejected spans or a message.
pub(super) fn partial_success(body: &[u8]) -> Option<(i64, String)> {
    let Some(Field::Bytes(partial)) = field(body, 1) else {
        return None;
    };
    let rejected = match field(partial, 1) {
        Some(Field::Varint(n)) => n as i64,
        _ => 0,
    };
    let message = match field(partial, 2) {
        Some(Field::Bytes(text)) => String::from_utf8_lossy(text).into_owned(),
        _ => String::new(),
    };
    (rejected != 0 || !message.is_empty()).then_some((rejected, message))
}

/// An error body's message: a `google.rpc.Status`'s `message` (2) when the body is a
/// protobuf one, else the body as text; shortened either way.
pub(super) fn error_message(body: &[u8], protobuf: bool) -> String {
    match field(body, 2) {
        Some(Field::Bytes(text)) if protobuf && std::str::from_utf8(text).is_ok() => {
            shorten(&String::from_utf8_lossy(text))
        }
        _ => shorten(&String::from_utf8_lossy(body)),
    }
}

/// At most [`MAX_LOGGED`] characters, control characters replaced.
fn shorten(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(MAX_LOGGED)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().nth(MAX_LOGGED).is_some() {
        out.push('…');
    }
    out
}

enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

/// The last occurrence of field `number` in the protobuf message `message`, or `None` when
/// absent or the message does not parse.
fn field(mut message: &[u8], number: u64) -> Option<Field<'_>> {
    let mut found = None;
    while !message.is_empty() {
        let key = read_varint(&mut message)?;
        let value = match key & 7 {
            0 => Field::Varint(read_varint(&mut message)?),
            1 => Field::Bytes(take(&mut message, 8)?),
            2 => {
                let len = usize::try_from(read_varint(&mut message)?).ok()?;
                Field::Bytes(take(&mut message, len)?)
            }
            5 => Field::Bytes(take(&mut message, 4)?),
            _ => return None,
        };
        if key >> 3 == number {
            found = Some(value);
        }
    }
    found
}

fn take<'a>(message: &mut &'a [u8], len: usize) -> Option<&'a [u8]> {
    if message.len() < len {
        return None;
    }
    let (head, rest) = message.split_at(len);
    *message = rest;
    Some(head)
}

fn read_varint(message: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = message.split_first()?;
        *message = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Some(value);
        }
    }
    None
}

impl SpanExporter for HttpExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        if batch.is_empty() {
            return Ok(());
        }
        let body = self.batches.encode(&batch);
        drop(batch);
        // The export thread is not a runtime thread: the call runs on the exporter's runtime.
        self.runtime.block_on(self.send(body)).map_err(|message| {
            OTelSdkError::InternalFailure(format!("OTLP/HTTP export: {message}"))
        })
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.batches.resource = resource.clone();
    }
}
