//! Vector database calls over HTTP: Chroma, Qdrant and Weaviate, sans-IO.
//!
//! [`VectorDbCall::detect`] recognises a request from its method and path; the request body
//! (read up to a cap by the adapter) adds what only it says, through
//! [`VectorDbCall::observe_request_body`]: the top-k of a search, the collection a Chroma
//! `create` or a Weaviate object names, the class and `limit` of a Weaviate GraphQL `Get`.
//! A [`ResponseObserver`] fed the answer's status and bytes, as they stream by, reports the
//! returned count ([`VectorDbReport`]). The tower adapter is
//! [`VectorDbLayer`](crate::layer::VectorDbLayer).
//!
//! Spans follow the OpenTelemetry database conventions: named
//! `{db.operation.name} {db.collection.name}` (`query docs`, `search points`, `get Article`),
//! kind CLIENT, with the attributes of [`semconv::db`](crate::semconv::db):
//! `db.system.name` (`chroma`, `qdrant`, `weaviate`: none of them is a registered value yet,
//! so the lower-case product name), `db.operation.name`, `db.collection.name`, `db.namespace`
//! (Chroma's `tenant|database`), `llmtrace.db.top_k`, `db.operation.batch.size` (batch APIs),
//! and at the end `db.response.status_code` (the HTTP status, a string) and
//! `db.response.returned_rows`.
//!
//! | system | request | `db.operation.name` | top-k from | returned rows |
//! |---|---|---|---|---|
//! | Chroma | `POST …/collections/{id}/query` | `query` | `n_results` | `ids` (lists per query, summed) |
//! | Chroma | `POST …/collections/{id}/get` | `get` | `limit` | `ids` |
//! | Chroma | `POST …/collections/{id}/add`, `upsert`, `update`, `delete`; `GET …/count` | the same word | | |
//! | Chroma | `POST …/collections`, `GET`/`DELETE …/collections/{name}` | `create_collection`, `get_collection`, `delete_collection` | | |
//! | Qdrant | `POST /collections/{name}/points/search`, `/recommend` | `search`, `recommend` | `limit` | `result` |
//! | Qdrant | `POST …/points/query`, `/scroll` | `query`, `scroll` | `limit` | `result.points` |
//! | Qdrant | `POST …/points/search/batch`, `/query/batch` | `search_batch`, `query_batch` | largest `limit` | summed |
//! | Qdrant | `PUT …/points`; `POST …/points`, `GET …/points/{id}`; `POST …/points/delete`, `/count` | `upsert`; `retrieve`; `delete`, `count` | | `result` |
//! | Weaviate | `POST /v1/graphql` with a `Get` (or `Aggregate`) query | `get` (`aggregate`) | the class's `limit:` | `data.Get.<Class>` |
//! | Weaviate | `POST /v1/objects`, `POST /v1/batch/objects`, `GET /v1/objects/{class}/{id}` | `create`, `batch_create`, `get_object` | | 1 |
//!
//! Chroma's HTTP API names a collection by its id in most paths. The layer remembers the
//! id → name pairs that collection create and get answers show ([`CollectionNames`], bounded)
//! and names the collection by its name when it knows it, else by the id from the path.
//!
//! Everything is bounded: names are cut at [`MAX_NAME_BYTES`], request bodies are read up to
//! [`MAX_REQUEST_BYTES`] and answers up to [`MAX_RESPONSE_BYTES`]; bad JSON is reported in
//! `llmtrace.db.request.parse_error` / `llmtrace.db.response.parse_error`, never a panic.
//! Vectors, documents, payloads and query text are never recorded.

use std::collections::HashMap;
use std::sync::Mutex;

use opentelemetry::KeyValue;

use crate::limits::{MAX_NAME_BYTES, bounded};
use crate::semconv::db;

mod paths;
mod request;
mod response;

pub use response::{ResponseObserver, VectorDbReport};

/// Request bodies up to this size are read for the top-k and collection name; larger ones
/// pass through unread (`llmtrace.db.request.parse_error = too_large`).
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;

/// Answers up to this size are read for the returned count; of larger ones only the status
/// is recorded (`llmtrace.db.response.parse_error = too_large`).
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// Collection id → name pairs kept by default by [`CollectionNames`].
pub const DEFAULT_MAX_COLLECTION_NAMES: usize = 1024;

/// The vector database a call goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VectorDbSystem {
    /// [Chroma](https://www.trychroma.com/), HTTP API v2 (and v1).
    Chroma,
    /// [Qdrant](https://qdrant.tech/), REST API.
    Qdrant,
    /// [Weaviate](https://weaviate.io/), REST and GraphQL API.
    Weaviate,
}

impl VectorDbSystem {
    /// The `db.system.name` value: the lower-case product name.
    pub fn as_str(self) -> &'static str {
        match self {
            VectorDbSystem::Chroma => "chroma",
            VectorDbSystem::Qdrant => "qdrant",
            VectorDbSystem::Weaviate => "weaviate",
        }
    }
}

/// A Chroma route template under `$prefix` (the v1 or v2 collections path).
macro_rules! chroma_route {
    ($prefix:literal, $call:expr) => {
        match $call.operation {
            "create_collection" | "list_collections" => $prefix,
            "get_collection" | "delete_collection" | "update_collection" => {
                concat!($prefix, "/{collection_id}")
            }
            "count" => concat!($prefix, "/{collection_id}/count"),
            "query" => concat!($prefix, "/{collection_id}/query"),
            "get" => concat!($prefix, "/{collection_id}/get"),
            "add" => concat!($prefix, "/{collection_id}/add"),
            "upsert" => concat!($prefix, "/{collection_id}/upsert"),
            "update" => concat!($prefix, "/{collection_id}/update"),
            _ => concat!($prefix, "/{collection_id}/delete"),
        }
    };
}

/// One recognised vector database request: what its method, path and (bounded) body say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VectorDbCall {
    system: VectorDbSystem,
    operation: &'static str,
    collection: Option<String>,
    namespace: Option<String>,
    top_k: Option<i64>,
    batch_size: Option<i64>,
    request_error: Option<&'static str>,
    ask: request::Ask,
    answer: response::Answer,
}

impl VectorDbCall {
    /// The call `method` and `path` (query string allowed) make, or `None` when they are not
    /// a vector database request this module knows (a health check, an unknown route).
    ///
    /// ```
    /// use llmtrace::vectordb::{VectorDbCall, VectorDbSystem};
    ///
    /// let call = VectorDbCall::detect(
    ///     &http::Method::POST,
    ///     "/api/v2/tenants/default_tenant/databases/default_database/collections/0b4f/query",
    /// )
    /// .unwrap();
    /// assert_eq!(call.system(), VectorDbSystem::Chroma);
    /// assert_eq!(call.span_name(), "query 0b4f");
    /// assert!(VectorDbCall::detect(&http::Method::GET, "/api/v2/heartbeat").is_none());
    /// ```
    pub fn detect(method: &http::Method, path: &str) -> Option<VectorDbCall> {
        let path = path.split(['?', '#']).next().unwrap_or_default();
        paths::chroma(method, path)
            .or_else(|| paths::qdrant(method, path))
            .or_else(|| paths::weaviate(method, path))
    }

    fn new(
        system: VectorDbSystem,
        operation: &'static str,
        collection: Option<&str>,
        ask: request::Ask,
        answer: response::Answer,
    ) -> Self {
        Self {
            system,
            operation,
            collection: collection.map(name),
            namespace: None,
            top_k: None,
            batch_size: None,
            request_error: None,
            ask,
            answer,
        }
    }

    /// The database.
    pub fn system(&self) -> VectorDbSystem {
        self.system
    }

    /// `db.operation.name`.
    pub fn operation(&self) -> &'static str {
        self.operation
    }

    /// `db.collection.name`, when the request names one.
    pub fn collection(&self) -> Option<&str> {
        self.collection.as_deref()
    }

    /// `llmtrace.db.top_k`: the most rows the request asked for, when it said.
    pub fn top_k(&self) -> Option<i64> {
        self.top_k
    }

    /// The route template of the call (`http.route`), with the variable segments named as
    /// the database's API reference names them:
    /// `/api/v2/tenants/{tenant}/databases/{database}/collections/{collection_id}/query`,
    /// `/collections/{collection_name}/points/search`, `/v1/objects/{className}/{id}`.
    ///
    /// ```
    /// use llmtrace::vectordb::VectorDbCall;
    ///
    /// let call = VectorDbCall::detect(&http::Method::POST, "/collections/docs/points/search").unwrap();
    /// assert_eq!(call.route(), "/collections/{collection_name}/points/search");
    /// ```
    pub fn route(&self) -> &'static str {
        match self.system {
            VectorDbSystem::Chroma if self.namespace.is_some() => {
                chroma_route!(
                    "/api/v2/tenants/{tenant}/databases/{database}/collections",
                    self
                )
            }
            VectorDbSystem::Chroma => chroma_route!("/api/v1/collections", self),
            VectorDbSystem::Qdrant => qdrant_route(self),
            VectorDbSystem::Weaviate => match self.operation {
                "graphql" | "get" | "aggregate" => "/v1/graphql",
                "batch_create" => "/v1/batch/objects",
                "create" => "/v1/objects",
                _ => "/v1/objects/{className}/{id}",
            },
        }
    }

    /// Whether the request body says something the path does not (the adapter should read
    /// it, up to [`MAX_REQUEST_BYTES`], and pass it to
    /// [`observe_request_body`](Self::observe_request_body)).
    pub fn wants_request_body(&self) -> bool {
        self.ask != request::Ask::Nothing
    }

    /// Learns from the request body: `Some(bytes)` when it was read whole, `None` when it
    /// was too large to read.
    pub fn observe_request_body(&mut self, body: Option<&[u8]>) {
        match body {
            Some(bytes) => request::observe(self, bytes),
            None => self.request_error = Some("too_large"),
        }
    }

    /// Names a Chroma collection given by id with its name, when `names` knows it.
    pub fn resolve_collection(&mut self, names: &CollectionNames) {
        if self.system != VectorDbSystem::Chroma {
            return;
        }
        if let Some(known) = self.collection.as_deref().and_then(|id| names.name_of(id)) {
            self.collection = Some(known);
        }
    }

    /// The span name: `{db.operation.name} {db.collection.name}`, or the operation alone.
    pub fn span_name(&self) -> String {
        match &self.collection {
            Some(collection) => format!("{} {collection}", self.operation),
            None => self.operation.to_owned(),
        }
    }

    /// The attributes known before the answer: system, operation, collection, namespace,
    /// top-k, batch size, and a request body that could not be read.
    pub fn attributes(&self) -> Vec<KeyValue> {
        let mut attributes = vec![
            KeyValue::new(db::SYSTEM_NAME, self.system.as_str()),
            KeyValue::new(db::OPERATION_NAME, self.operation),
        ];
        if let Some(collection) = &self.collection {
            attributes.push(KeyValue::new(db::COLLECTION_NAME, collection.clone()));
        }
        if let Some(namespace) = &self.namespace {
            attributes.push(KeyValue::new(db::NAMESPACE, namespace.clone()));
        }
        if let Some(top_k) = self.top_k {
            attributes.push(KeyValue::new(db::TOP_K, top_k));
        }
        if let Some(size) = self.batch_size {
            attributes.push(KeyValue::new(db::OPERATION_BATCH_SIZE, size));
        }
        if let Some(error) = self.request_error {
            attributes.push(KeyValue::new(db::REQUEST_PARSE_ERROR, error));
        }
        attributes
    }

    /// An observer for this call's answer.
    pub fn response_observer(&self) -> ResponseObserver {
        ResponseObserver::new(self.answer, MAX_RESPONSE_BYTES)
    }
}

/// A Qdrant route template.
fn qdrant_route(call: &VectorDbCall) -> &'static str {
    match call.operation {
        "create_collection" | "get_collection" | "delete_collection" => {
            "/collections/{collection_name}"
        }
        "retrieve" if call.answer == response::Answer::QdrantOne => {
            "/collections/{collection_name}/points/{id}"
        }
        "upsert" | "retrieve" => "/collections/{collection_name}/points",
        "search" => "/collections/{collection_name}/points/search",
        "recommend" => "/collections/{collection_name}/points/recommend",
        "query" => "/collections/{collection_name}/points/query",
        "scroll" => "/collections/{collection_name}/points/scroll",
        "count" => "/collections/{collection_name}/points/count",
        "search_batch" => "/collections/{collection_name}/points/search/batch",
        "query_batch" => "/collections/{collection_name}/points/query/batch",
        _ => "/collections/{collection_name}/points/delete",
    }
}

/// A name from the request, cut to [`MAX_NAME_BYTES`].
fn name(value: &str) -> String {
    bounded(value, MAX_NAME_BYTES).into_owned()
}

/// Chroma collection ids and their names, as create and get answers showed them; at most a
/// fixed number of pairs (later ones are not kept), each name and id cut to
/// [`MAX_NAME_BYTES`]. Shared by the clones of a layer.
#[derive(Debug)]
pub struct CollectionNames {
    names: Mutex<HashMap<String, String>>,
    max: usize,
}

impl Default for CollectionNames {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_COLLECTION_NAMES)
    }
}

impl CollectionNames {
    /// Keeps at most `max` pairs.
    pub fn new(max: usize) -> Self {
        Self {
            names: Mutex::new(HashMap::new()),
            max,
        }
    }

    /// Remembers that collection `id` is called `name` (a known id is updated; a new one is
    /// kept while there is room).
    pub fn remember(&self, id: &str, name: &str) {
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        if names.len() < self.max || names.contains_key(id) {
            names.insert(self::name(id), self::name(name));
        }
    }

    /// The name of collection `id`, when known.
    pub fn name_of(&self, id: &str) -> Option<String> {
        let names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        names.get(&*bounded(id, MAX_NAME_BYTES)).cloned()
    }
}

#[cfg(test)]
mod tests;
