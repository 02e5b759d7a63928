//! The adapter-neutral drivers: what both the tower layers ([`crate::layer`]) and the gateway
//! (from its pingora phases) drive, so one request is recorded by the same code whichever
//! adapter carries it.
//!
//! - [`InboundSpan`] (with [`InboundRequest`], a borrowed view of the request head, and
//!   [`RequestHeaderCapture`]): the SERVER span of an inbound request: name, HTTP attributes,
//!   the status rules, abort and failure. [`ServerLayer`](crate::ServerLayer) records the same.
//! - [`GenAiSpan`] (with the [`GenAiRecorder`] exchanges share): one LLM API exchange, its span
//!   and its [`Exchange`](crate::genai::Exchange) observer, ended with a report, metrics and a
//!   summary. [`GenAiLayer`](crate::GenAiLayer) drives it from a tower body.
//! - [`BatchSpan`] and [`VectorDbSpan`]: the CLIENT span of an OpenAI Batch or Files API call,
//!   and of a Chroma, Qdrant or Weaviate call ([`VectorDbLayer`](crate::VectorDbLayer) drives
//!   the latter from a tower body).
//!
//! Each ends exactly once: through its `end`/`finish` with an [`End`](crate::genai::End), or,
//! when dropped first, as aborted.

pub(crate) mod attrs;
mod batch;
mod business;
mod classify;
mod genai;
mod inbound;
pub(crate) mod span;
mod vectordb;

pub use batch::BatchSpan;
pub use business::{
    BusinessAttributes, BusinessContext, BusinessContextBuilder, BusinessContextConfig,
    BusinessContextError, DEFAULT_MAX_DIMENSION_VALUES, DEFAULT_MAX_VALUE_BYTES,
};
pub(crate) use classify::{ErrorClassifier, StatusClassifier};
pub use classify::{ErrorRef, ResponseStatus, StatusClass, known_error_type};
pub use genai::{GenAiRecorder, GenAiSpan};
pub(crate) use inbound::start_server_span;
pub use inbound::{InboundRequest, InboundSpan, Incoming, RequestHeaderCapture};
pub use vectordb::VectorDbSpan;

/// The host a request is addressed to: the URI's authority (HTTP/2 `:authority`, absolute-form
/// requests), or else the `Host` header (with its port, if it names one). The one rule the
/// layers and the gateway use to tell the provider and pick a route.
///
/// ```
/// let mut headers = http::HeaderMap::new();
/// headers.insert(http::header::HOST, "api.openai.com".parse().unwrap());
/// let uri: http::Uri = "/v1/chat/completions".parse().unwrap();
/// assert_eq!(llmtrace::driver::request_host(&uri, &headers), Some("api.openai.com"));
/// let uri: http::Uri = "https://example.com/v1/models".parse().unwrap();
/// assert_eq!(llmtrace::driver::request_host(&uri, &headers), Some("example.com"));
/// ```
pub fn request_host<'a>(uri: &'a http::Uri, headers: &'a http::HeaderMap) -> Option<&'a str> {
    uri.host().or_else(|| {
        headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
    })
}
