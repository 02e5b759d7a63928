//! `/__mock/requests`: what the mock received, for tests in another process (a proxy's tests
//! check that the upstream got the client's bytes). Neither counted nor kept itself.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use base64::Engine as _;
use http::{StatusCode, Uri, header};
use serde_json::{Value, json};

use crate::ReceivedRequest;
use crate::server::Shared;

/// The path of the inspection endpoint.
pub(crate) const PATH: &str = "/__mock/requests";

/// `GET /__mock/requests[?request_id=ID]`: the kept requests, oldest first, as
/// `{"requests": [{"method", "path", "headers": [[name, value], ...], "body_base64", "body_len"}]}`;
/// with `request_id`, only those whose `x-request-id` header is `ID`.
pub(crate) async fn list(State(shared): State<Arc<Shared>>, uri: Uri) -> Response {
    let wanted = uri.query().and_then(|q| query_param(q, "request_id"));
    let kept = shared.received();
    let requests: Vec<Value> = kept
        .iter()
        .filter(|r| match &wanted {
            None => true,
            Some(id) => r
                .headers
                .get_all("x-request-id")
                .iter()
                .any(|v| v.as_bytes() == id.as_bytes()),
        })
        .map(describe)
        .collect();
    let body = serde_json::to_vec(&json!({ "requests": requests })).expect("JSON values serialize");
    json_response(body)
}

/// `DELETE /__mock/requests`: forgets the kept requests; answers `{"cleared": N}`.
pub(crate) async fn clear(State(shared): State<Arc<Shared>>) -> Response {
    let cleared = shared.clear_received();
    json_response(json!({ "cleared": cleared }).to_string().into_bytes())
}

fn json_response(body: Vec<u8>) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .expect("static headers are valid")
}

fn describe(r: &ReceivedRequest) -> Value {
    let headers: Vec<Value> = r
        .headers
        .iter()
        .map(|(name, value)| {
            json!([
                name.as_str(),
                String::from_utf8_lossy(value.as_bytes()).into_owned()
            ])
        })
        .collect();
    json!({
        "method": r.method.as_str(),
        "path": r.uri.path_and_query().map_or_else(|| r.uri.path().to_owned(), |pq| pq.as_str().to_owned()),
        "headers": headers,
        "body_base64": base64::engine::general_purpose::STANDARD.encode(&r.body),
        "body_len": r.body.len(),
    })
}

/// The first value of `name` in a URL query (`a=1&b=2`), percent-decoded (`+` is a space).
fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(key) == name).then(|| decode(value))
    })
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_decoded() {
        assert_eq!(
            query_param("a=1&request_id=req%2F1+x", "request_id").as_deref(),
            Some("req/1 x")
        );
        assert_eq!(query_param("request_id", "request_id").as_deref(), Some(""));
        assert_eq!(query_param("other=1", "request_id"), None);
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz%41"), "%zzA");
    }
}
