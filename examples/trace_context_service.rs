//! The service under test for the W3C Trace Context test suite.
//!
//! On `POST /test` it receives a JSON array of `{"url": ..., "arguments": ...}` and, for each
//! entry in order, POSTs `arguments` as JSON to `url` through `ClientLayer`, so the context it
//! received (through `ServerLayer`) is propagated with a new parent id on every hop.
//!
//! ```sh
//! cargo run --example trace_context_service -- 7778
//! # then, in the test suite's `test/` folder (its harness listens on 7777):
//! SERVICE_ENDPOINT=http://127.0.0.1:7778/test STRICT_LEVEL=2 python test.py
//! ```

use opentelemetry::trace::TracerProvider as _;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = std::env::args()
        .nth(1)
        .ok_or("usage: trace_context_service PORT")?
        .parse()?;
    // No exporter: the suite checks the headers we send, not our spans.
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let app = llmtrace_examples::trace_context::router(provider.tracer("trace-context-service"));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("trace-context service on http://127.0.0.1:{port}/test");
    axum::serve(listener, app).await?;
    Ok(())
}
