use http::Method;
use opentelemetry::Value;

use super::request::{GraphQlQuery, graphql_query};
use super::*;

const CHROMA: &str = "/api/v2/tenants/default_tenant/databases/default_database/collections";

fn detect(method: Method, path: &str) -> VectorDbCall {
    VectorDbCall::detect(&method, path).unwrap_or_else(|| panic!("{method} {path}"))
}

fn with_body(method: Method, path: &str, body: &str) -> VectorDbCall {
    let mut call = detect(method, path);
    assert!(call.wants_request_body(), "{path}");
    call.observe_request_body(Some(body.as_bytes()));
    call
}

fn answer(call: &VectorDbCall, status: u16, body: &str) -> VectorDbReport {
    let mut observer = call.response_observer();
    observer.on_response_head(status);
    // In two pieces, as a stream would bring it.
    let (a, b) = body.split_at(body.len() / 2);
    observer.on_response_data(a.as_bytes());
    observer.on_response_data(b.as_bytes());
    observer.finish()
}

fn attribute(attributes: &[KeyValue], key: &str) -> Option<Value> {
    attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.clone())
}

#[test]
fn chroma_query_names_top_k_and_counts_nested_ids() {
    let call = with_body(
        Method::POST,
        &format!("{CHROMA}/7c1d/query"),
        r#"{"query_embeddings":[[0.1,0.2]],"n_results":3,"include":["documents"]}"#,
    );
    assert_eq!(call.system(), VectorDbSystem::Chroma);
    assert_eq!(call.span_name(), "query 7c1d");
    assert_eq!(call.top_k(), Some(3));
    let attributes = call.attributes();
    assert_eq!(
        attribute(&attributes, db::SYSTEM_NAME),
        Some(Value::from("chroma"))
    );
    assert_eq!(
        attribute(&attributes, db::NAMESPACE),
        Some(Value::from("default_tenant|default_database"))
    );
    assert_eq!(attribute(&attributes, db::TOP_K), Some(Value::I64(3)));
    let report = answer(
        &call,
        200,
        r#"{"ids":[["a","b","c"]],"documents":[["x","y","z"]],"distances":[[0.1,0.2,0.3]]}"#,
    );
    assert_eq!(report.returned_rows, Some(3));
    let attributes = report.attributes();
    assert_eq!(
        attribute(&attributes, db::RESPONSE_STATUS_CODE),
        Some(Value::from("200"))
    );
    assert_eq!(
        attribute(&attributes, db::RESPONSE_RETURNED_ROWS),
        Some(Value::I64(3))
    );
}

#[test]
fn chroma_operations_and_v1_paths() {
    for (method, suffix, op) in [
        (Method::POST, "/c/add", "add"),
        (Method::POST, "/c/upsert", "upsert"),
        (Method::POST, "/c/get", "get"),
        (Method::POST, "/c/delete", "delete"),
        (Method::GET, "/c/count", "count"),
        (Method::GET, "/c", "get_collection"),
        (Method::POST, "", "create_collection"),
    ] {
        assert_eq!(
            detect(method.clone(), &format!("{CHROMA}{suffix}")).operation(),
            op
        );
        let v1 = format!("/api/v1/collections{suffix}");
        assert_eq!(detect(method, &v1).operation(), op);
    }
    let get = with_body(
        Method::POST,
        &format!("{CHROMA}/c/get?x=1"),
        r#"{"limit":5}"#,
    );
    assert_eq!(get.top_k(), Some(5));
    assert_eq!(
        answer(&get, 200, r#"{"ids":["a","b"]}"#).returned_rows,
        Some(2)
    );
    for path in [
        "/api/v2/heartbeat",
        "/api/v2/tenants/t",
        format!("{CHROMA}/c/fork").as_str(),
    ] {
        assert!(
            VectorDbCall::detect(&Method::POST, path).is_none(),
            "{path}"
        );
    }
}

#[test]
fn chroma_collection_names_are_learned_from_create_answers() {
    let create = with_body(
        Method::POST,
        CHROMA,
        r#"{"name":"docs","get_or_create":true}"#,
    );
    assert_eq!(create.span_name(), "create_collection docs");
    let report = answer(
        &create,
        200,
        r#"{"id":"7c1d","name":"docs","metadata":null}"#,
    );
    assert_eq!(report.collection, Some(("7c1d".into(), "docs".into())));
    let names = CollectionNames::new(1);
    let (id, name) = report.collection.unwrap();
    names.remember(&id, &name);
    names.remember("other", "full");
    let mut query = detect(Method::POST, &format!("{CHROMA}/7c1d/query"));
    query.resolve_collection(&names);
    assert_eq!(query.collection(), Some("docs"));
    let mut unknown = detect(Method::POST, &format!("{CHROMA}/other/query"));
    unknown.resolve_collection(&names);
    assert_eq!(unknown.collection(), Some("other"));
}

#[test]
fn qdrant_operations() {
    let search = with_body(
        Method::POST,
        "/collections/my%20points/points/search",
        r#"{"vector":[0.1,0.2],"limit":4,"with_payload":true}"#,
    );
    assert_eq!(search.span_name(), "search my points");
    assert_eq!(search.top_k(), Some(4));
    let report = answer(
        &search,
        200,
        r#"{"result":[{"id":1},{"id":2}],"status":"ok","time":0.1}"#,
    );
    assert_eq!(report.returned_rows, Some(2));

    let query = with_body(
        Method::POST,
        "/collections/c/points/query",
        r#"{"query":[1],"limit":2}"#,
    );
    let report = answer(
        &query,
        200,
        r#"{"result":{"points":[{"id":1}]},"status":"ok"}"#,
    );
    assert_eq!(
        (query.operation(), report.returned_rows),
        ("query", Some(1))
    );

    let batch = with_body(
        Method::POST,
        "/collections/c/points/search/batch",
        r#"{"searches":[{"vector":[1],"limit":2},{"vector":[2],"limit":5}]}"#,
    );
    assert_eq!(
        (batch.operation(), batch.top_k()),
        ("search_batch", Some(5))
    );
    assert_eq!(
        attribute(&batch.attributes(), db::OPERATION_BATCH_SIZE),
        Some(Value::I64(2))
    );
    let report = answer(
        &batch,
        200,
        r#"{"result":[[{"id":1}],[{"id":2},{"id":3}]]}"#,
    );
    assert_eq!(report.returned_rows, Some(3));

    for (method, path, op) in [
        (Method::PUT, "/collections/c/points?wait=true", "upsert"),
        (Method::POST, "/collections/c/points", "retrieve"),
        (Method::POST, "/collections/c/points/scroll", "scroll"),
        (Method::POST, "/collections/c/points/delete", "delete"),
        (Method::GET, "/collections/c/points/42", "retrieve"),
    ] {
        assert_eq!(detect(method, path).operation(), op);
    }
    let one = detect(Method::GET, "/collections/c/points/42");
    assert_eq!(
        answer(&one, 200, r#"{"result":{"id":42}}"#).returned_rows,
        Some(1)
    );
    assert!(VectorDbCall::detect(&Method::GET, "/collections").is_none());
}

#[test]
fn weaviate_graphql_get_reads_class_and_limit_never_the_text() {
    let body = serde_json::json!({
        "query": "{ Get { Article(nearText: {concepts: [\"limit: 99 Get {\"]}, limit: 3) \
                  { title _additional { distance } } } }"
    })
    .to_string();
    let call = with_body(Method::POST, "/v1/graphql", &body);
    assert_eq!(call.span_name(), "get Article");
    assert_eq!(call.top_k(), Some(3));
    let report = answer(
        &call,
        200,
        r#"{"data":{"Get":{"Article":[{"title":"a"},{"title":"b"},{"title":"c"}]}}}"#,
    );
    assert_eq!(report.returned_rows, Some(3));
    let failed = answer(
        &call,
        200,
        r#"{"data":{"Get":{"Article":null}},"errors":[{"message":"x"}]}"#,
    );
    assert_eq!(failed.error_type, Some("graphql_error"));
    assert_eq!(failed.returned_rows, Some(0));
}

#[test]
fn graphql_scanner() {
    assert_eq!(
        graphql_query("query { Aggregate { Doc(where: {limit: 7}) { meta { count } } } }"),
        Some(GraphQlQuery {
            operation: "aggregate",
            class: "Doc",
            limit: None
        })
    );
    assert_eq!(
        graphql_query("# Get { Nope }\n{Get{Doc(limit:10){x}}}"),
        Some(GraphQlQuery {
            operation: "get",
            class: "Doc",
            limit: Some(10)
        })
    );
    assert_eq!(graphql_query("{ Explore { beacon } }"), None);
    assert_eq!(graphql_query("{ Get { "), None);
    assert_eq!(graphql_query("\"unterminated \\"), None);
}

#[test]
fn weaviate_objects() {
    let create = with_body(
        Method::POST,
        "/v1/objects",
        r#"{"class":"Article","properties":{}}"#,
    );
    assert_eq!(create.span_name(), "create Article");
    let batch = with_body(
        Method::POST,
        "/v1/batch/objects",
        r#"{"objects":[{"class":"A"},{"class":"A"}]}"#,
    );
    assert_eq!(batch.span_name(), "batch_create A");
    let mixed = with_body(
        Method::POST,
        "/v1/batch/objects",
        r#"{"objects":[{"class":"A"},{"class":"B"}]}"#,
    );
    assert_eq!(mixed.span_name(), "batch_create");
    let get = detect(Method::GET, "/v1/objects/Article/0d1f");
    assert_eq!(get.span_name(), "get_object Article");
    assert_eq!(answer(&get, 200, "{}").returned_rows, Some(1));
    assert_eq!(answer(&get, 404, "").returned_rows, None);
}

#[test]
fn bad_and_large_bodies_are_reported_not_fatal() {
    let mut call = detect(Method::POST, &format!("{CHROMA}/c/query"));
    call.observe_request_body(Some(&b"{not json"[..]));
    assert_eq!(
        attribute(&call.attributes(), db::REQUEST_PARSE_ERROR),
        Some(Value::from("invalid"))
    );
    call.observe_request_body(None);
    assert_eq!(
        attribute(&call.attributes(), db::REQUEST_PARSE_ERROR),
        Some(Value::from("too_large"))
    );
    assert_eq!(answer(&call, 200, "[1,2").parse_error, Some("invalid"));
    assert_eq!(
        answer(&call, 200, r#"{"ids":"x"}"#).parse_error,
        Some("invalid")
    );
    let errored = answer(&call, 500, "oops");
    assert_eq!(
        (errored.status_code, errored.parse_error),
        (Some(500), None)
    );

    let mut observer = ResponseObserver::new(response::Answer::ChromaNested, 8);
    observer.on_response_head(200);
    observer.on_response_data(b"{\"ids\":[[");
    observer.on_response_data(b"]]}");
    assert_eq!(observer.finish().parse_error, Some("too_large"));
}

#[test]
fn names_are_bounded() {
    let long = "c".repeat(10_000);
    let call = detect(Method::POST, &format!("/collections/{long}/points/search"));
    assert!(call.collection().unwrap().len() <= MAX_NAME_BYTES);
    let names = CollectionNames::default();
    names.remember(&long, &long);
    let name = names.name_of(&long).unwrap();
    assert!(name.len() <= MAX_NAME_BYTES && name.starts_with("ccc"));
}

#[test]
fn every_recognised_call_has_a_route_template_without_its_values() {
    let cases = [
        (
            Method::POST,
            "/api/v2/tenants/t1/databases/d1/collections/abc/query",
            "/api/v2/tenants/{tenant}/databases/{database}/collections/{collection_id}/query",
        ),
        (
            Method::POST,
            "/api/v2/tenants/t1/databases/d1/collections",
            "/api/v2/tenants/{tenant}/databases/{database}/collections",
        ),
        (
            Method::GET,
            "/api/v2/tenants/t1/databases/d1/collections/abc/count",
            "/api/v2/tenants/{tenant}/databases/{database}/collections/{collection_id}/count",
        ),
        (
            Method::POST,
            "/api/v1/collections/abc/upsert",
            "/api/v1/collections/{collection_id}/upsert",
        ),
        (
            Method::DELETE,
            "/api/v1/collections/abc",
            "/api/v1/collections/{collection_id}",
        ),
        (
            Method::POST,
            "/api/v1/collections/abc/delete",
            "/api/v1/collections/{collection_id}/delete",
        ),
        (
            Method::PUT,
            "/collections/docs",
            "/collections/{collection_name}",
        ),
        (
            Method::GET,
            "/collections/docs/points/42",
            "/collections/{collection_name}/points/{id}",
        ),
        (
            Method::POST,
            "/collections/docs/points",
            "/collections/{collection_name}/points",
        ),
        (
            Method::POST,
            "/collections/docs/points/search/batch",
            "/collections/{collection_name}/points/search/batch",
        ),
        (
            Method::POST,
            "/collections/docs/points/delete",
            "/collections/{collection_name}/points/delete",
        ),
        (Method::POST, "/v1/graphql", "/v1/graphql"),
        (Method::POST, "/v1/batch/objects", "/v1/batch/objects"),
        (
            Method::PATCH,
            "/v1/objects/Article/0001",
            "/v1/objects/{className}/{id}",
        ),
    ];
    for (method, path, route) in cases {
        let call = VectorDbCall::detect(&method, path).unwrap_or_else(|| panic!("{path}"));
        assert_eq!(call.route(), route, "{method} {path}");
    }
    // A GraphQL call renamed by its body keeps its route.
    let mut call = VectorDbCall::detect(&Method::POST, "/v1/graphql").unwrap();
    call.observe_request_body(Some(
        br#"{"query":"{ Get { Article(limit: 3) { title } } }"}"#,
    ));
    assert_eq!(call.operation(), "get");
    assert_eq!(call.route(), "/v1/graphql");
}
