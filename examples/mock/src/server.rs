//! The shared state, the request extractor every handler uses, and the routes.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{FromRequest, Path, Request};
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::Value;
use tokio::time::Instant;

use crate::config::{Controls, Fault, MockConfig};
use crate::json::J;
use crate::plan::Interrupt;
use crate::respond::{self, Provider};
use crate::timeline::Timeline;
use crate::{ReceivedRequest, anthropic, batch, ids, inspect, openai};

/// Largest request body read (embeddings of long documents stay well below).
const BODY_LIMIT: usize = 64 << 20;

pub(crate) struct Shared {
    pub(crate) config: MockConfig,
    pub(crate) requests: AtomicU64,
    pub(crate) log: Mutex<VecDeque<ReceivedRequest>>,
    /// The uploaded files and the batches (`/v1/files`, `/v1/batches`).
    pub(crate) batches: batch::Store,
}

impl Shared {
    pub(crate) fn new(config: MockConfig) -> Self {
        Shared {
            config,
            requests: AtomicU64::new(0),
            log: Mutex::new(VecDeque::new()),
            batches: batch::Store::new(batch::LIMITS),
        }
    }

    pub(crate) fn record(&self, request: &http::request::Parts, body: &bytes::Bytes) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let keep = self.config.keep_requests;
        if keep == 0 {
            return;
        }
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        while log.len() >= keep {
            log.pop_front();
        }
        log.push_back(ReceivedRequest {
            method: request.method.clone(),
            uri: request.uri.clone(),
            headers: request.headers.clone(),
            body: body.clone(),
        });
    }

    /// The kept requests, oldest first.
    pub(crate) fn received(&self) -> Vec<ReceivedRequest> {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.iter().cloned().collect()
    }

    /// Forgets the kept requests; returns how many there were.
    pub(crate) fn clear_received(&self) -> usize {
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let n = log.len();
        log.clear();
        n
    }
}

/// One request, read whole and counted, with its controls parsed.
pub(crate) struct MockRequest {
    /// When the request arrived: every event's time counts from here.
    pub(crate) started: Instant,
    pub(crate) method: http::Method,
    pub(crate) uri: http::Uri,
    pub(crate) headers: http::HeaderMap,
    /// The JSON body, `Null` when empty.
    pub(crate) body: Value,
    pub(crate) controls: Controls,
}

impl FromRequest<Arc<Shared>> for MockRequest {
    type Rejection = Response;

    async fn from_request(req: Request, state: &Arc<Shared>) -> Result<Self, Response> {
        let started = Instant::now();
        let (parts, body) = req.into_parts();
        let provider = Provider::for_path(parts.uri.path());
        let bytes = axum::body::to_bytes(body, BODY_LIMIT).await.map_err(|e| {
            respond::invalid(provider, &format!("could not read the body: {e}"), None)
        })?;
        state.record(&parts, &bytes);
        let controls = Controls::new(&state.config, &parts.headers)
            .map_err(|m| respond::invalid(provider, &m, None))?;
        let body = if bytes.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).map_err(|_| {
                let message = match provider {
                    Provider::OpenAi => {
                        "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)"
                    }
                    Provider::Anthropic => "There was an error parsing the body of your request",
                };
                respond::invalid(provider, message, None)
            })?
        };
        Ok(MockRequest {
            started,
            method: parts.method,
            uri: parts.uri,
            headers: parts.headers,
            body,
            controls,
        })
    }
}

impl MockRequest {
    /// The faults that answer before anything is generated: status errors and garbage.
    pub(crate) fn early_fault(&self, provider: Provider) -> Option<Response> {
        if let Some(status) = self.controls.status_fault() {
            return Some(respond::error(provider, status, None, None));
        }
        self.controls
            .has(Fault::Garbage)
            .then(|| respond::garbage(provider))
    }

    /// The JSON object body, or the provider's 400. OpenAI answers an empty body (the symptom
    /// of a client or proxy that lost it) as one without a model.
    pub(crate) fn object(
        &self,
        provider: Provider,
    ) -> Result<&serde_json::Map<String, Value>, Response> {
        self.body.as_object().ok_or_else(|| {
            let message = match (provider, &self.body) {
                (Provider::OpenAi, Value::Null) => "you must provide a model parameter",
                _ => "The request body must be a JSON object.",
            };
            respond::invalid(provider, message, None)
        })
    }

    /// Sends a non-streaming answer when it is due (`end`), or fails it as `interrupt` says:
    /// `cut` and `truncate` send the first half of the JSON, `error-event` becomes a 500
    /// (OpenAI) or 529 (Anthropic).
    pub(crate) async fn answer(
        &self,
        provider: Provider,
        end: Duration,
        interrupt: Option<Interrupt>,
        body: &J,
    ) -> Response {
        match interrupt {
            None => {
                tokio::time::sleep_until(self.started + end).await;
                respond::json(provider, http::StatusCode::OK, body, end)
            }
            Some(Interrupt::ErrorEvent) => {
                tokio::time::sleep_until(self.started + end / 2).await;
                let status = match provider {
                    Provider::OpenAi => 500,
                    Provider::Anthropic => 529,
                };
                respond::error(provider, status, None, None)
            }
            Some(how) => {
                let bytes = body.to_vec();
                let mut timeline = Timeline::new();
                timeline.raw(end, bytes[..bytes.len() / 2].to_vec());
                if how == Interrupt::Cut {
                    timeline.abort(end);
                }
                respond::json_body(provider, timeline.into_body(self.started), end)
            }
        }
    }
}

async fn not_found(req: MockRequest) -> Response {
    let provider = Provider::for_path(req.uri.path());
    let message = format!("Invalid URL ({} {})", req.method, req.uri.path());
    respond::error(provider, 404, Some(&message), None)
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(
            "/v1/chat/completions",
            post(|r: MockRequest| openai::chat(r, None)),
        )
        .route(
            "/openai/deployments/{deployment}/chat/completions",
            post(|Path(d): Path<String>, r: MockRequest| openai::chat(r, Some(d))),
        )
        .route(
            "/v1/completions",
            post(|r: MockRequest| openai::completions(r, None)),
        )
        .route(
            "/openai/deployments/{deployment}/completions",
            post(|Path(d): Path<String>, r: MockRequest| openai::completions(r, Some(d))),
        )
        .route(
            "/v1/embeddings",
            post(|r: MockRequest| openai::embeddings(r, None)),
        )
        .route(
            "/openai/deployments/{deployment}/embeddings",
            post(|Path(d): Path<String>, r: MockRequest| openai::embeddings(r, Some(d))),
        )
        .route("/v1/responses", post(openai::responses))
        .route("/v1/models", get(openai::list_models))
        .route("/v1/models/{*id}", get(openai::get_model))
        .route("/v1/messages", post(anthropic::messages))
        .route("/v1/messages/count_tokens", post(anthropic::count_tokens))
        .route("/v1/files", post(batch::upload).get(batch::list_files))
        .route(
            "/v1/files/{id}",
            get(batch::get_file).delete(batch::delete_file),
        )
        .route("/v1/files/{id}/content", get(batch::file_content))
        .route(
            "/v1/batches",
            post(batch::create_batch).get(batch::list_batches),
        )
        .route("/v1/batches/{id}", get(batch::get_batch))
        .route("/v1/batches/{id}/cancel", post(batch::cancel_batch))
        // Not a provider path: neither counted nor kept (see `inspect`).
        .route(inspect::PATH, get(inspect::list).delete(inspect::clear))
        .fallback(not_found)
        .with_state(shared)
        .layer(axum::middleware::from_fn(seed_scope))
}

/// `x-mock-seed`: the request's ids and timestamps follow from the seed (see [`ids::seeded`]).
/// A value that is not a number is left to the extractor, which answers 400.
async fn seed_scope(req: Request, next: axum::middleware::Next) -> Response {
    let seed = req
        .headers()
        .get(crate::headers::SEED)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    ids::seeded(seed, next.run(req)).await
}
