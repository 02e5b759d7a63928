//! A mock LLM upstream that speaks the OpenAI and Anthropic APIs closely enough for their
//! official SDKs, with timing and faults controlled per request.
//!
//! It is the upstream of llmtrace's tests, benches, load harness and the gateway's demo. One
//! running mock serves every scenario: a request picks its timing and faults with `x-mock-*`
//! headers (the SDKs send them with `extra_headers`), falling back to the [`MockConfig`].
//!
//! # Endpoints
//!
//! | endpoint | answers |
//! |---|---|
//! | `POST /v1/chat/completions` (also Azure's `/openai/deployments/{name}/chat/completions`) | `chat.completion`, or a stream of `chat.completion.chunk`s; `n`, tools, refusals, `stream_options.include_usage` |
//! | `POST /v1/completions` (and the Azure form) | `text_completion`, streaming or not |
//! | `POST /v1/embeddings` (and the Azure form) | float or `encoding_format: "base64"` vectors (deterministic unit vectors) |
//! | `POST /v1/responses` | a `response` object, or the typed event stream (`response.created` … `response.completed`) |
//! | `GET /v1/models`, `GET /v1/models/{id}` | OpenAI's list; Anthropic's when `anthropic-version` is sent |
//! | `POST /v1/messages` | an Anthropic `message`, or its event stream (`message_start` … `message_stop`) |
//! | `POST /v1/messages/count_tokens` | `{"input_tokens": N}` |
//! | `POST /v1/files` | `multipart/form-data` with `file` and `purpose`: a `file` object (`file-…`, `status: "processed"`), kept in memory; `purpose: "batch"` files are checked line by line |
//! | `GET /v1/files`, `GET /v1/files/{id}`, `DELETE /v1/files/{id}` | the `list` (`purpose`, `order`, `after`, `limit`), a `file`, `{"id", "object": "file", "deleted": true}` |
//! | `GET /v1/files/{id}/content` | the file's bytes (`application/octet-stream`) |
//! | `POST /v1/batches` | a `batch` (`batch_…`, `status: "validating"`) over an uploaded `batch` file, for `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings` or `/v1/responses` |
//! | `GET /v1/batches`, `GET /v1/batches/{id}`, `POST /v1/batches/{id}/cancel` | the `list` (newest first, `limit`, `after`), a `batch`, the batch `cancelling` |
//! | `GET /__mock/requests` | what the mock received (below); `?request_id=ID`: only the requests whose `x-request-id` is `ID` |
//! | `DELETE /__mock/requests` | forgets the received requests: `{"cleared": N}` |
//!
//! Anything else is a 404 in the provider's error shape. A body that is empty, whitespace,
//! not JSON or not a JSON object, or that lacks a required field (`model`; `messages` for chat
//! and Anthropic; `input` for embeddings and responses; `prompt` for completions; Anthropic's
//! `max_tokens`) is a 400 in the provider's shape: OpenAI
//! `{"error": {"message", "type": "invalid_request_error", "param", "code"}}`, Anthropic
//! `{"type": "error", "error": {"type": "invalid_request_error", "message"}, "request_id"}`.
//!
//! # Files and batches
//!
//! Files live in the mock's memory: at most 1000 and 64 MiB in all (batch outputs included);
//! an upload past that is a 413 (bytes) or 400 (count). A `batch` upload must be UTF-8 JSONL,
//! every non-empty line an object with a unique `custom_id`, `"method": "POST"`, a `url` and
//! a `body` object, at most 50,000 lines; otherwise a 400 whose message names the line
//! (`Line 3: ...`). A batch's lines are answered when it is created, by the same code as the
//! endpoint's non-streamed answers (`stream` is dropped; `x-mock-tokens`, `x-mock-usage`, the
//! token-count headers and the `tools`, `refusal`, `content-filter` faults of the create request
//! apply; no delays). Its status then follows the clock: `validating`, `in_progress` and
//! `finalizing` a third of `x-mock-batch-ms` (default 300) each, then `completed` with its
//! `output_file_id` (the 2xx answers) and `error_file_id` (the others, such as a body without
//! `messages`), `request_counts` and `usage`. Each output line is
//! `{"id": "batch_req_…", "custom_id", "response": {"status_code", "request_id", "body"}, "error": null}`,
//! the body byte for byte what the endpoint answers. A line whose `url` is not the batch's
//! `endpoint` makes the batch `failed` after `validating`, with `errors.data` naming the line.
//! Cancelling (while `validating` or `in_progress`) makes it `cancelling`, then `cancelled` a
//! third of its time later, without output; other statuses cannot be cancelled (400). Unknown
//! ids are 404s; errors are OpenAI's `{"error": {"message", "type": "invalid_request_error",
//! "param", "code": null}}`. Status faults (`x-mock-fault: 429`, …) answer these requests as
//! any other. Every request is kept like the others (an upload with its multipart body).
//!
//! # What it received
//!
//! The mock keeps the latest [`MockConfig::keep_requests`] requests (default 64), as they
//! arrived, for [`Mock::received_requests`] in process and `GET /__mock/requests` out of it
//! (a proxy's tests check that the upstream got exactly the client's bytes):
//!
//! ```json
//! {"requests": [
//!   {"method": "POST", "path": "/v1/chat/completions?x=1",
//!    "headers": [["host", "127.0.0.1:8090"], ["content-type", "application/json"], ...],
//!    "body_base64": "eyJtb2RlbCI6...", "body_len": 71}
//! ]}
//! ```
//!
//! Oldest first; `path` is the path and query as received; `headers` are all of them, in the
//! order received (the values of a repeated name together), values as lossy UTF-8. Requests to
//! `/__mock/requests` are neither counted nor kept.
//!
//! # What it generates
//!
//! Output token `i` is the text `tok{i}` (with a leading space after the first), so 4 tokens
//! read `tok0 tok1 tok2 tok3` ([`generated_text`]). Each token is one streamed event, written as
//! one body frame when it is due: the first at the TTFT, the others a gap apart. Prompt tokens
//! are the words of the prompt (messages, system/instructions, inputs). `max_tokens` (and
//! `max_completion_tokens`, `max_output_tokens`) below the configured count cut the answer with
//! finish reason `length` / `max_tokens` / status `incomplete`.
//!
//! A request gets a tool call when it declares tools and either its `tool_choice` demands one
//! or its last user message says "tool" or names a tool; the arguments give every property of
//! the tool's schema a mock value (`{"location":"mock"}`). After a tool result, it answers in text.
//!
//! # Controls
//!
//! | header | default ([`MockConfig`]) | meaning |
//! |---|---|---|
//! | `x-mock-ttft-ms` | 50 | time to the first token |
//! | `x-mock-gap-ms` | 20 | time between tokens |
//! | `x-mock-tokens` | 16 | output tokens per choice |
//! | `x-mock-usage` | `auto` | `always`, `never`, `auto` ([`UsageMode`]) |
//! | `x-mock-fault` | none | comma-separated [`Fault`]s: `cut`, `truncate`, `error-event`, `429`, `500` (any 400–599), `garbage`, `stall`, `tools`, `content-filter`, `refusal`, `none` |
//! | `x-mock-stall-ms` | 1000 | length of the `stall` pause |
//! | `x-mock-cached-tokens` | 0 | prompt tokens reported as cache reads |
//! | `x-mock-cache-creation-tokens` | 0 | prompt tokens reported as cache writes (Anthropic) |
//! | `x-mock-reasoning-tokens` | 0 | reasoning tokens reported (OpenAI) |
//! | `x-mock-batch-ms` | 300 | on `POST /v1/batches`: time from `validating` to `completed` |
//! | `x-mock-seed` | none | a number: ids (`chatcmpl-…`, `msg_01…`, `x-request-id`, …) and the `obfuscation` padding follow from it, `created` is fixed (2025-01-01), so the same request with the same seed gets the same bytes |
//!
//! An invalid value is a 400 that says what is wrong.
//!
//! # Example
//!
//! ```
//! use llmtrace_mock::{MockConfig, MockServer};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let server = MockServer::start(MockConfig::default()).await?;
//! // Point an SDK at `server.openai_base_url()` ("http://127.0.0.1:PORT/v1") or, for
//! // Anthropic's, at `server.url()`. Here, a raw HTTP/1.1 request:
//! let body = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Hi there"}]}"#;
//! let mut tcp = tokio::net::TcpStream::connect(server.addr()).await?;
//! tcp.write_all(format!(
//!     "POST /v1/chat/completions HTTP/1.1\r\nhost: mock\r\nconnection: close\r\n\
//!      content-type: application/json\r\nx-mock-tokens: 3\r\nx-mock-ttft-ms: 0\r\n\
//!      content-length: {}\r\n\r\n{body}",
//!     body.len()
//! ).as_bytes()).await?;
//! let mut answer = String::new();
//! tcp.read_to_string(&mut answer).await?;
//! assert!(answer.starts_with("HTTP/1.1 200 OK"));
//! assert!(answer.contains(r#""content":"tok0 tok1 tok2""#));
//! assert_eq!(server.requests_received(), 1);
//! # Ok(())
//! # }
//! ```
#![deny(unsafe_code)]
#![warn(missing_docs)]
// Handlers return a ready error `Response` from their validation helpers; it is the cold path.
#![allow(clippy::result_large_err)]

mod anthropic;
mod batch;
mod config;
mod ids;
mod inspect;
mod json;
mod openai;
mod plan;
mod respond;
mod server;
mod timeline;

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::serve::ListenerExt as _;
use bytes::Bytes;
use http::{HeaderMap, Method, Uri};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use config::{Fault, MockConfig, UsageMode, parse_faults};
pub use plan::{REFUSAL, generated_text, token_pieces};

use server::Shared;

/// The names of the control headers (all lowercase).
pub mod headers {
    /// Time to first token, in milliseconds.
    pub const TTFT_MS: &str = "x-mock-ttft-ms";
    /// Time between tokens, in milliseconds.
    pub const GAP_MS: &str = "x-mock-gap-ms";
    /// Output tokens per choice.
    pub const TOKENS: &str = "x-mock-tokens";
    /// `always`, `never` or `auto`.
    pub const USAGE: &str = "x-mock-usage";
    /// Comma-separated faults, see [`Fault`](crate::Fault).
    pub const FAULT: &str = "x-mock-fault";
    /// Length of the `stall` fault's pause, in milliseconds.
    pub const STALL_MS: &str = "x-mock-stall-ms";
    /// Prompt tokens reported as read from the cache.
    pub const CACHED_TOKENS: &str = "x-mock-cached-tokens";
    /// Prompt tokens reported as written to the cache (Anthropic).
    pub const CACHE_CREATION_TOKENS: &str = "x-mock-cache-creation-tokens";
    /// Reasoning tokens reported (OpenAI).
    pub const REASONING_TOKENS: &str = "x-mock-reasoning-tokens";
    /// A number that makes ids and timestamps deterministic: the same request with the same
    /// seed gets the same response bytes.
    pub const SEED: &str = "x-mock-seed";
    /// On `POST /v1/batches`: milliseconds from `validating` to `completed` (default 300), a
    /// third in each of `validating`, `in_progress` and `finalizing`.
    pub const BATCH_MS: &str = "x-mock-batch-ms";
}

/// A request the mock received, as it arrived.
#[derive(Clone, Debug)]
pub struct ReceivedRequest {
    /// The method.
    pub method: Method,
    /// The path and query.
    pub uri: Uri,
    /// All headers (`traceparent` included, when a tracing client sent one).
    pub headers: HeaderMap,
    /// The raw body.
    pub body: Bytes,
}

impl ReceivedRequest {
    /// The body as JSON, if it is.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// A mock: its configuration and what it has received. Cheap to clone; clones share the counts.
///
/// Use [`MockServer`] to run one on a free port, or [`Mock::router`] to mount it in a server
/// of your own.
#[derive(Clone)]
pub struct Mock {
    shared: Arc<Shared>,
}

impl Mock {
    /// A mock with this configuration.
    pub fn new(config: MockConfig) -> Self {
        Mock {
            shared: Arc::new(Shared::new(config)),
        }
    }

    /// Its configuration.
    pub fn config(&self) -> &MockConfig {
        &self.shared.config
    }

    /// The axum router serving every endpoint; requests through it are counted by this mock.
    pub fn router(&self) -> Router {
        server::router(self.shared.clone())
    }

    /// How many requests have arrived (any path, any outcome).
    pub fn requests_received(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }

    /// The latest requests, oldest first (at most [`MockConfig::keep_requests`]).
    pub fn received_requests(&self) -> Vec<ReceivedRequest> {
        self.shared.received()
    }

    /// Forgets the kept requests (as `DELETE /__mock/requests`); returns how many there were.
    pub fn clear_received_requests(&self) -> usize {
        self.shared.clear_received()
    }

    /// Serves on `listener` (HTTP/1.1 and cleartext HTTP/2 with prior knowledge, `TCP_NODELAY`
    /// on every accepted socket) until the future is dropped.
    pub async fn serve(self, listener: TcpListener) -> io::Result<()> {
        axum::serve(listener.tap_io(set_nodelay), self.router()).await
    }
}

fn set_nodelay(tcp: &mut tokio::net::TcpStream) {
    // Without it, small SSE frames wait for delayed ACKs and the timing is no longer ours.
    let _ = tcp.set_nodelay(true);
}

/// The router of a new [`Mock`] (use [`Mock::router`] to keep a handle on the counts).
pub fn router(config: MockConfig) -> Router {
    Mock::new(config).router()
}

/// Serves a new [`Mock`] on `listener`; see [`Mock::serve`].
pub async fn serve(listener: TcpListener, config: MockConfig) -> io::Result<()> {
    Mock::new(config).serve(listener).await
}

/// A mock serving on `127.0.0.1` on a port of its own, in a task of the current runtime.
///
/// Dropping it stops accepting connections; streams in flight finish on their own.
pub struct MockServer {
    addr: SocketAddr,
    mock: Mock,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<io::Result<()>>>,
}

impl MockServer {
    /// Binds `127.0.0.1:0` and starts serving. Needs a Tokio runtime (with the time driver).
    pub async fn start(config: MockConfig) -> io::Result<MockServer> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let mock = Mock::new(config);
        let (shutdown, stop) = oneshot::channel::<()>();
        let app = mock.router();
        let task = tokio::spawn(async move {
            axum::serve(listener.tap_io(set_nodelay), app)
                .with_graceful_shutdown(async {
                    let _ = stop.await;
                })
                .await
        });
        Ok(MockServer {
            addr,
            mock,
            shutdown: Some(shutdown),
            task: Some(task),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`: the base URL for Anthropic's SDK (which appends `/v1/...`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:PORT/v1`: the base URL for OpenAI's SDK.
    pub fn openai_base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The mock behind it (counts, received requests, configuration).
    pub fn mock(&self) -> &Mock {
        &self.mock
    }

    /// How many requests have arrived.
    pub fn requests_received(&self) -> u64 {
        self.mock.requests_received()
    }

    /// The latest requests, oldest first.
    pub fn received_requests(&self) -> Vec<ReceivedRequest> {
        self.mock.received_requests()
    }

    /// Stops accepting, lets the streams in flight finish, and waits for them.
    pub async fn shutdown(mut self) -> io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(task) => task.await.map_err(io::Error::other)?,
            None => Ok(()),
        }
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
