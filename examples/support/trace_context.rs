//! The service-under-test protocol of the W3C Trace Context test suite.
//!
//! On `POST /test` the service receives a JSON array of `{"url": ..., "arguments": ...}` and,
//! for each entry in order, POSTs `arguments` as JSON to `url` through [`ClientLayer`], so the
//! context received through [`ServerLayer`] travels on with a new parent id on every hop.

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use llmtrace::{ClientLayer, ServerLayer};
use serde::Deserialize;
use tower::{ServiceBuilder, ServiceExt};

use crate::chain::ChainTracer;

#[derive(Deserialize)]
struct Case {
    url: String,
    #[serde(default)]
    arguments: serde_json::Value,
}

type Traced = llmtrace::layer::ClientService<Client<HttpConnector, Body>>;

/// The `/test` router, traced with `tracer`.
pub fn router<T: ChainTracer>(tracer: T) -> Router {
    let client = ServiceBuilder::new()
        .layer(ClientLayer::new().with_tracer(tracer.clone()))
        .service(Client::builder(TokioExecutor::new()).build_http::<Body>());
    Router::new()
        .route("/test", post(run_cases))
        .with_state(client)
        .layer(ServerLayer::new().with_tracer(tracer))
}

async fn run_cases(State(client): State<Traced>, body: String) -> StatusCode {
    let Ok(cases) = serde_json::from_str::<Vec<Case>>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    for case in cases {
        let request = http::Request::post(&case.url)
            .header("content-type", "application/json")
            .body(Body::from(case.arguments.to_string()));
        let Ok(request) = request else {
            return StatusCode::BAD_REQUEST;
        };
        match client.clone().oneshot(request).await {
            Ok(response) => {
                let _ = response.into_body().collect().await;
            }
            Err(error) => eprintln!("POST {} failed: {error}", case.url),
        }
    }
    StatusCode::OK
}
