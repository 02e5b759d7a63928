//! `VectorDbLayer` over fake Chroma, Qdrant and Weaviate services: span names and database
//! attributes, the answer streamed through untouched, context injected, other requests
//! untraced.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use llmtrace::VectorDbLayer;
use llmtrace::layer::RequestBody;
use llmtrace_test_support::*;
use opentelemetry::trace::SpanKind;
use tower::{ServiceBuilder, ServiceExt};

type Seen = Arc<Mutex<Vec<(http::HeaderMap, Bytes)>>>;

/// A database stand-in: answers every request with `status` and `answer`, in three pieces;
/// records what it got.
fn database(
    status: StatusCode,
    answer: &'static str,
    seen: Seen,
) -> impl tower::Service<
    Request<RequestBody<Body>>,
    Response = Response<Body>,
    Error = Infallible,
    Future: Send,
> + Clone
+ Send {
    tower::service_fn(move |req: Request<RequestBody<Body>>| {
        let seen = seen.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            seen.lock().unwrap().push((parts.headers, body));
            let bytes = answer.as_bytes();
            let third = bytes.len() / 3;
            let pieces: Vec<Result<Bytes, Infallible>> = [
                &bytes[..third],
                &bytes[third..2 * third],
                &bytes[2 * third..],
            ]
            .into_iter()
            .map(|p| Ok(Bytes::copy_from_slice(p)))
            .collect();
            Ok(Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Body::from_stream(futures::stream::iter(pieces)))
                .unwrap())
        }
    })
}

fn request(method: Method, uri: &str, body: &'static str) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::from(body))
        .unwrap()
}

const CHROMA: &str =
    "http://chroma.local:8000/api/v2/tenants/default_tenant/databases/default_database/collections";

#[tokio::test]
async fn chroma_create_then_query_names_the_collection_and_counts_rows() {
    let rec = Recorder::new();
    let layer = VectorDbLayer::new().with_tracer(rec.tracer());
    let seen = Seen::default();
    let create = ServiceBuilder::new().layer(layer.clone()).service(database(
        StatusCode::OK,
        r#"{"id":"5f2a","name":"docs","metadata":null}"#,
        seen.clone(),
    ));
    let response = create
        .oneshot(request(
            Method::POST,
            CHROMA,
            r#"{"name":"docs","get_or_create":true}"#,
        ))
        .await
        .unwrap();
    response.into_body().collect().await.unwrap();

    let answer = r#"{"ids":[["a","b","c"]],"documents":[["x","y","z"]]}"#;
    let query =
        ServiceBuilder::new()
            .layer(layer)
            .service(database(StatusCode::OK, answer, seen.clone()));
    let body = r#"{"query_embeddings":[[0.1,0.2]],"n_results":3,"include":["documents"]}"#;
    let response = query
        .oneshot(request(Method::POST, &format!("{CHROMA}/5f2a/query"), body))
        .await
        .unwrap();
    let got = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        got.as_ref(),
        answer.as_bytes(),
        "the answer passes through unchanged"
    );

    let spans = rec.spans();
    assert_eq!(names(&spans), ["create_collection docs", "query docs"]);
    let s = span(&spans, "query docs");
    assert_eq!(s.span_kind, SpanKind::Client);
    assert!(!is_error(s));
    assert_eq!(attr_str(s, "db.system.name").as_deref(), Some("chroma"));
    assert_eq!(attr_str(s, "db.operation.name").as_deref(), Some("query"));
    assert_eq!(attr_str(s, "db.collection.name").as_deref(), Some("docs"));
    assert_eq!(
        attr_str(s, "db.namespace").as_deref(),
        Some("default_tenant|default_database")
    );
    assert_eq!(attr_i64(s, "llmtrace.db.top_k"), Some(3));
    assert_eq!(attr_i64(s, "db.response.returned_rows"), Some(3));
    assert_eq!(
        attr_str(s, "db.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(
        attr_str(s, "server.address").as_deref(),
        Some("chroma.local")
    );

    // The database got the body unchanged and our span as the parent.
    let seen = seen.lock().unwrap();
    let (headers, sent) = &seen[1];
    assert_eq!(sent.as_ref(), body.as_bytes());
    let tp = headers["traceparent"].to_str().unwrap();
    assert!(tp.contains(&s.span_context.span_id().to_string()));
    assert!(!format!("{:?}", s.attributes).contains("0.1"), "no vectors");
    rec.assert_each_ended_once();
}

#[tokio::test]
async fn qdrant_search_and_weaviate_get() {
    let rec = Recorder::new();
    let layer = VectorDbLayer::new().with_tracer(rec.tracer());
    let qdrant = ServiceBuilder::new().layer(layer.clone()).service(database(
        StatusCode::OK,
        r#"{"result":[{"id":1,"score":0.9},{"id":2,"score":0.8}],"status":"ok","time":0.001}"#,
        Seen::default(),
    ));
    let response = qdrant
        .oneshot(request(
            Method::POST,
            "http://qdrant:6333/collections/points/points/search",
            r#"{"vector":[0.1,0.2],"limit":5}"#,
        ))
        .await
        .unwrap();
    response.into_body().collect().await.unwrap();

    let weaviate = ServiceBuilder::new().layer(layer).service(database(
        StatusCode::OK,
        r#"{"data":{"Get":{"Article":[{"title":"a"}]}}}"#,
        Seen::default(),
    ));
    let response = weaviate
        .oneshot(request(
            Method::POST,
            "http://weaviate:8080/v1/graphql",
            r#"{"query":"{ Get { Article(nearVector: {vector: [0.1]}, limit: 2) { title } } }"}"#,
        ))
        .await
        .unwrap();
    response.into_body().collect().await.unwrap();

    let spans = rec.spans();
    let s = span(&spans, "search points");
    assert_eq!(attr_str(s, "db.system.name").as_deref(), Some("qdrant"));
    assert_eq!(attr_i64(s, "llmtrace.db.top_k"), Some(5));
    assert_eq!(attr_i64(s, "db.response.returned_rows"), Some(2));
    let s = span(&spans, "get Article");
    assert_eq!(attr_str(s, "db.system.name").as_deref(), Some("weaviate"));
    assert_eq!(attr_i64(s, "llmtrace.db.top_k"), Some(2));
    assert_eq!(attr_i64(s, "db.response.returned_rows"), Some(1));
    rec.assert_each_ended_once();
}

#[tokio::test]
async fn errors_early_drops_and_other_requests() {
    let rec = Recorder::new();
    let layer = VectorDbLayer::new().with_tracer(rec.tracer());
    let missing = ServiceBuilder::new().layer(layer.clone()).service(database(
        StatusCode::NOT_FOUND,
        r#"{"status":{"error":"Not found: Collection `nope` doesn't exist!"}}"#,
        Seen::default(),
    ));
    let response = missing
        .oneshot(request(
            Method::POST,
            "http://qdrant:6333/collections/nope/points/query",
            r#"{"query":[0.1],"limit":5}"#,
        ))
        .await
        .unwrap();
    response.into_body().collect().await.unwrap();

    let dropped = ServiceBuilder::new().layer(layer.clone()).service(database(
        StatusCode::OK,
        r#"{"result":{"points":[{"id":1}]}}"#,
        Seen::default(),
    ));
    let response = dropped
        .oneshot(request(
            Method::POST,
            "http://qdrant:6333/collections/c/points/scroll",
            "{}",
        ))
        .await
        .unwrap();
    drop(response);

    let seen = Seen::default();
    let other =
        ServiceBuilder::new()
            .layer(layer)
            .service(database(StatusCode::OK, "{}", seen.clone()));
    let response = other
        .oneshot(request(Method::GET, "http://qdrant:6333/healthz", ""))
        .await
        .unwrap();
    response.into_body().collect().await.unwrap();
    assert!(!seen.lock().unwrap()[0].0.contains_key("traceparent"));

    let spans = rec.spans();
    assert_eq!(spans.len(), 2, "{:?}", names(&spans));
    let s = span(&spans, "query nope");
    assert!(is_error(s));
    assert_eq!(attr_str(s, "error.type").as_deref(), Some("404"));
    assert_eq!(
        attr_str(s, "db.response.status_code").as_deref(),
        Some("404")
    );
    assert_eq!(attr_i64(s, "db.response.returned_rows"), None);
    let s = span(&spans, "scroll c");
    assert!(is_error(s));
    assert_eq!(
        attr(s, "llmtrace.aborted"),
        Some(&opentelemetry::Value::Bool(true))
    );
    rec.assert_each_ended_once();
}
