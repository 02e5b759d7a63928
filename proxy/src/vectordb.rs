//! Vector database upstreams: an upstream with `provider = "chroma"`, `"qdrant"` or
//! `"weaviate"` gets, for each call the core recognises ([`llmtrace::vectordb`]), a database
//! CLIENT span under the SERVER span instead of a GenAI one:
//! `{db.operation.name} {db.collection.name}` with `db.system.name`, the collection, top-k,
//! returned rows and status, and its context goes to the database in `traceparent`.
//!
//! The span starts with the request head (named by the path), learns what the body says
//! when the body has passed (the body streams through untouched; a copy of at most
//! [`MAX_REQUEST_BYTES`] is kept when the operation's
//! body says something the path does not), and ends with the answer's last byte. Requests the
//! core does not recognise (health checks, other systems' paths) get the SERVER span only.
//!
//! ```toml
//! [[upstreams]]
//! name = "vectors"
//! url = "http://127.0.0.1:6333"
//! provider = "qdrant"
//! api_key = "${QDRANT_API_KEY}"   # sent as `api-key`
//!
//! [[routes]]
//! path_prefix = "/collections"
//! upstream = "vectors"
//! ```

use std::sync::Arc;

use llmtrace::driver::VectorDbSpan;
use llmtrace::vectordb::{CollectionNames, MAX_REQUEST_BYTES, VectorDbCall, VectorDbSystem};
use opentelemetry::Context;
use opentelemetry::global::BoxedTracer;
use pingora::http::RequestHeader;

use crate::upstream::Upstream;

/// The gateway's vector database calls: the Chroma collection names their answers showed,
/// shared by every request.
#[derive(Debug, Default)]
pub(crate) struct VectorDbs {
    names: Arc<CollectionNames>,
}

impl VectorDbs {
    /// The call a request to an upstream of `system` is, when the core recognises it as one
    /// of that system's calls.
    pub(crate) fn detect(
        system: Option<VectorDbSystem>,
        req: &RequestHeader,
    ) -> Option<VectorDbCall> {
        let system = system?;
        let path = req.uri.path_and_query().map_or("/", |pq| pq.as_str());
        VectorDbCall::detect(&req.method, path).filter(|call| call.system() == system)
    }

    /// How much of the request body to copy for `call`: what the core reads, or nothing.
    pub(crate) fn body_cap(call: &VectorDbCall) -> usize {
        if call.wants_request_body() {
            MAX_REQUEST_BYTES
        } else {
            0
        }
    }

    /// Starts the call's span under `parent`. Its HTTP attributes name the upstream the call
    /// goes to (`server.address`, `server.port`, `url.full`, its secret query values redacted), not the
    /// gateway the client addressed.
    pub(crate) fn start(
        &self,
        tracer: &BoxedTracer,
        call: VectorDbCall,
        req: &RequestHeader,
        upstream: &Upstream,
        parent: &Context,
    ) -> VectorDbSpan {
        let scheme = if upstream.tls { "https" } else { "http" };
        let path = req.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let uri = format!(
            "{scheme}://{}{}{path}",
            upstream.authority(),
            upstream.base_path
        );
        let mut request = http::Request::new(());
        *request.method_mut() = req.method.clone();
        // The path was parsed once already; with the upstream's authority it still parses.
        if let Ok(uri) = uri.parse() {
            *request.uri_mut() = uri;
        }
        let (parts, ()) = request.into_parts();
        VectorDbSpan::start(tracer, call, &parts, parent, &self.names)
    }
}
