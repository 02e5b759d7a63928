//! Three services, one trace: axum → `ClientLayer` → axum → `ClientLayer` → tonic.
//!
//! Starts all three on loopback, sends one request to the front and prints the reply; the
//! five spans (front SERVER, front CLIENT, middle SERVER, middle CLIENT, backend SERVER) share
//! one trace id.
//!
//! ```sh
//! cargo run --example chain
//! ```

use opentelemetry::trace::TracerProvider as _;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let provider = llmtrace_examples::telemetry::init("chain");
    let chain = llmtrace_examples::chain::start(provider.tracer("llmtrace")).await;
    println!(
        "front {} → middle {} → backend {}",
        chain.front, chain.middle, chain.backend
    );

    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<axum::body::Body>();
    let response = client
        .request(
            http::Request::post(format!("http://{}/chat", chain.front))
                .body(axum::body::Body::from("why is the sky blue?"))?,
        )
        .await?;
    let status = response.status();
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await?
        .to_bytes();
    println!("{status}: {}", String::from_utf8_lossy(&body));
    provider.shutdown()?;
    Ok(())
}
