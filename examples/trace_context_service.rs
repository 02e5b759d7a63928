//! The service under test for the W3C Trace Context test suite.
//!
//! On `POST /test` it receives a JSON array of `{"url": ..., "arguments": ...}` and, for each
//! entry in order, POSTs `arguments` as JSON to `url` through `ClientLayer`, so the context it
//! received (through `ServerLayer`) is propagated with a new parent id on every hop.
//!
//! ```sh
//! cargo run --example trace_context_service -- 7777
//! # then, in the test suite's folder:
//! STRICT_LEVEL=2 SPEC_LEVEL=2 python test.py http://127.0.0.1:7777/test
//! ```

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

#[derive(Deserialize)]
struct Case {
    url: String,
    arguments: serde_json::Value,
}

type Traced = llmtrace::layer::ClientService<Client<HttpConnector, Body>>;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = std::env::args()
        .nth(1)
        .ok_or("usage: trace_context_service PORT")?
        .parse()?;
    // No exporter needed: the suite checks the headers we send, not our spans.
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    opentelemetry::global::set_tracer_provider(provider);

    let client = ServiceBuilder::new()
        .layer(ClientLayer::new())
        .service(Client::builder(TokioExecutor::new()).build_http::<Body>());
    let app = Router::new()
        .route("/test", post(run_cases))
        .with_state(client)
        .layer(ServerLayer::new());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("trace-context service on http://127.0.0.1:{port}/test");
    axum::serve(listener, app).await?;
    Ok(())
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
