//! Recognising Chroma, Qdrant and Weaviate requests from their method and path.

use std::borrow::Cow;

use http::Method;
use percent_encoding::percent_decode_str;

use super::request::Ask;
use super::response::Answer;
use super::{VectorDbCall, VectorDbSystem};

/// A path segment, percent-decoded.
fn segment(raw: &str) -> Cow<'_, str> {
    percent_decode_str(raw).decode_utf8_lossy()
}

/// The segments of `path` after `prefix`, or `None` when it does not start with it.
fn after<'a>(path: &'a str, prefix: &str) -> Option<Vec<&'a str>> {
    let rest = path.strip_prefix(prefix)?;
    if !(rest.is_empty() || rest.starts_with('/')) {
        return None;
    }
    Some(rest.split('/').filter(|s| !s.is_empty()).collect())
}

// === Chroma ===

/// `/api/v2/tenants/{tenant}/databases/{database}/collections[/{collection}[/{op}]]` and
/// `/api/v1/collections[/{collection}[/{op}]]`.
pub(super) fn chroma(method: &Method, path: &str) -> Option<VectorDbCall> {
    if let Some(parts) = after(path, "/api/v2/tenants") {
        let [tenant, "databases", database, "collections", rest @ ..] = parts.as_slice() else {
            return None;
        };
        let mut call = chroma_collections(method, rest)?;
        let namespace = format!("{}|{}", segment(tenant), segment(database));
        call.namespace = Some(super::name(&namespace));
        return Some(call);
    }
    let parts = after(path, "/api/v1/collections")?;
    chroma_collections(method, &parts)
}

/// What follows `…/collections`.
fn chroma_collections(method: &Method, rest: &[&str]) -> Option<VectorDbCall> {
    let new = |op, collection: Option<&str>, ask, answer| {
        Some(VectorDbCall::new(
            VectorDbSystem::Chroma,
            op,
            collection,
            ask,
            answer,
        ))
    };
    match (method, rest) {
        (&Method::POST, []) => new(
            "create_collection",
            None,
            Ask::ChromaCreate,
            Answer::ChromaCollection,
        ),
        (&Method::GET, []) => new("list_collections", None, Ask::Nothing, Answer::Array),
        (&Method::GET, [c]) => new(
            "get_collection",
            Some(&*segment(c)),
            Ask::Nothing,
            Answer::ChromaCollection,
        ),
        (&Method::DELETE, [c]) => new(
            "delete_collection",
            Some(&*segment(c)),
            Ask::Nothing,
            Answer::Nothing,
        ),
        (&Method::PUT, [c]) => new(
            "update_collection",
            Some(&*segment(c)),
            Ask::Nothing,
            Answer::Nothing,
        ),
        (&Method::GET, [c, "count"]) => {
            new("count", Some(&*segment(c)), Ask::Nothing, Answer::Nothing)
        }
        (&Method::POST, [c, op]) => {
            let (op, ask, answer) = match *op {
                "query" => ("query", Ask::ChromaQuery, Answer::ChromaNested),
                "get" => ("get", Ask::ChromaGet, Answer::ChromaFlat),
                "add" => ("add", Ask::Nothing, Answer::Nothing),
                "upsert" => ("upsert", Ask::Nothing, Answer::Nothing),
                "update" => ("update", Ask::Nothing, Answer::Nothing),
                "delete" => ("delete", Ask::Nothing, Answer::Nothing),
                _ => return None,
            };
            new(op, Some(&*segment(c)), ask, answer)
        }
        _ => None,
    }
}

// === Qdrant ===

/// `/collections/{name}[/points[/...]]`.
pub(super) fn qdrant(method: &Method, path: &str) -> Option<VectorDbCall> {
    let parts = after(path, "/collections")?;
    let (op, ask, answer) = match (method, parts.get(1..)?) {
        (&Method::PUT, []) => ("create_collection", Ask::Nothing, Answer::Nothing),
        (&Method::GET, []) => ("get_collection", Ask::Nothing, Answer::Nothing),
        (&Method::DELETE, []) => ("delete_collection", Ask::Nothing, Answer::Nothing),
        (&Method::PUT, ["points"]) => ("upsert", Ask::Nothing, Answer::Nothing),
        (&Method::POST, ["points"]) => ("retrieve", Ask::Nothing, Answer::QdrantList),
        (&Method::GET, ["points", _]) => ("retrieve", Ask::Nothing, Answer::QdrantOne),
        (&Method::POST, ["points", op]) => match *op {
            "search" => ("search", Ask::QdrantLimit, Answer::QdrantList),
            "recommend" => ("recommend", Ask::QdrantLimit, Answer::QdrantList),
            "query" => ("query", Ask::QdrantLimit, Answer::QdrantPoints),
            "scroll" => ("scroll", Ask::QdrantLimit, Answer::QdrantPoints),
            "delete" => ("delete", Ask::Nothing, Answer::Nothing),
            "count" => ("count", Ask::Nothing, Answer::Nothing),
            _ => return None,
        },
        (&Method::POST, ["points", "search", "batch"]) => {
            ("search_batch", Ask::QdrantBatch, Answer::QdrantBatchList)
        }
        (&Method::POST, ["points", "query", "batch"]) => {
            ("query_batch", Ask::QdrantBatch, Answer::QdrantBatchPoints)
        }
        _ => return None,
    };
    let collection = segment(parts.first()?);
    Some(VectorDbCall::new(
        VectorDbSystem::Qdrant,
        op,
        Some(&*collection),
        ask,
        answer,
    ))
}

// === Weaviate ===

/// `/v1/graphql`, `/v1/objects[/{class}/{id}]`, `/v1/batch/objects`.
pub(super) fn weaviate(method: &Method, path: &str) -> Option<VectorDbCall> {
    let new = |op, collection: Option<&str>, ask, answer| {
        Some(VectorDbCall::new(
            VectorDbSystem::Weaviate,
            op,
            collection,
            ask,
            answer,
        ))
    };
    if path.trim_end_matches('/') == "/v1/graphql" && *method == Method::POST {
        return new(
            "graphql",
            None,
            Ask::WeaviateGraphQl,
            Answer::WeaviateGraphQl,
        );
    }
    if path.trim_end_matches('/') == "/v1/batch/objects" && *method == Method::POST {
        return new("batch_create", None, Ask::WeaviateBatch, Answer::Nothing);
    }
    let parts = after(path, "/v1/objects")?;
    match (method, parts.as_slice()) {
        (&Method::POST, []) => new("create", None, Ask::WeaviateObject, Answer::Nothing),
        (&Method::GET, [class, _]) => new(
            "get_object",
            Some(&*segment(class)),
            Ask::Nothing,
            Answer::One,
        ),
        (&Method::PUT, [class, _]) => new(
            "update",
            Some(&*segment(class)),
            Ask::Nothing,
            Answer::Nothing,
        ),
        (&Method::PATCH, [class, _]) => new(
            "patch",
            Some(&*segment(class)),
            Ask::Nothing,
            Answer::Nothing,
        ),
        (&Method::DELETE, [class, _]) => new(
            "delete",
            Some(&*segment(class)),
            Ask::Nothing,
            Answer::Nothing,
        ),
        _ => None,
    }
}
