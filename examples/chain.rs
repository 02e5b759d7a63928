//! Three services, one trace: axum → `ClientLayer` → axum → `ClientLayer` → tonic.
//!
//! Starts all three on loopback, sends two requests to the front (one answered, one the
//! backend refuses) and prints each reply and a waterfall of each trace: five spans (front
//! SERVER, front CLIENT, middle SERVER, middle CLIENT, backend SERVER) under one trace id.
//!
//! ```sh
//! cargo run --example chain
//! OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4317 cargo run --example chain   # also export
//! ```

use axum::body::Body;
use http_body_util::BodyExt;
use opentelemetry::trace::TracerProvider as _;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (provider, spans) = llmtrace_examples::telemetry::init_in_memory("chain");
    let chain = llmtrace_examples::chain::start(provider.tracer("llmtrace")).await;
    println!(
        "front {} → middle {} → backend {}\n",
        chain.front, chain.middle, chain.backend
    );

    let client = llmtrace_examples::chain::http_client();
    for prompt in ["why is the sky blue?", ""] {
        let request =
            http::Request::post(format!("http://{}/chat", chain.front)).body(Body::from(prompt))?;
        let response = client.request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        println!(
            "POST /chat {prompt:?} → {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }

    // The spans end when the response bodies end; give the last ones a moment.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    provider.force_flush()?;
    println!(
        "\n{}",
        llmtrace_proxy::waterfall::render(&spans.get_finished_spans()?)
    );
    provider.shutdown()?;
    Ok(())
}
