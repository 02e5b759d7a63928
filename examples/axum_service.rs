//! An axum service traced by `ServerLayer`, with a streamed (SSE) endpoint, and the trace
//! viewer over its own spans (`llmtrace::store`) at `/ui`.
//!
//! ```sh
//! cargo run --example axum_service            # spans printed to stdout; the viewer at /ui
//! curl -N localhost:3000/v1/stream            # watch tokens arrive; the span ends after the last
//! OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4317 cargo run --example axum_service
//! ```

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::routing::get;
use bytes::Bytes;
use llmtrace::ServerLayer;
use llmtrace::store::{StoreConfig, TraceStore};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The last 1 000 traces, kept for the viewer merged into the app below.
    let store = TraceStore::new(StoreConfig::default());
    let provider = llmtrace_examples::telemetry::init_with_store("axum-service", &store);
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3000".into());

    let app = Router::new()
        .route(
            "/v1/models/{id}",
            get(|Path(id): Path<String>| async move { format!("model {id}\n") }),
        )
        .route("/v1/stream", get(stream))
        .route("/healthz", get(|| async { "ok\n" }))
        // `Router::layer` wraps every route after routing, so spans get the route template.
        .layer(
            ServerLayer::new()
                .skip_paths(["/healthz"])
                .traceresponse(true),
        )
        // Merged after the layer: looking at traces makes none.
        .merge(llmtrace::store::ui::router(store));

    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let local = listener.local_addr()?;
    println!("listening on http://{local}, trace viewer on http://{local}/ui");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    provider.shutdown()?;
    Ok(())
}

/// Ten server-sent events, 50 ms apart, the way an LLM streams tokens.
async fn stream() -> ([(&'static str, &'static str); 1], Body) {
    let events = futures::stream::unfold(0u32, |i| async move {
        if i > 10 {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let event = if i == 10 {
            Bytes::from_static(b"data: [DONE]\n\n")
        } else {
            Bytes::from(format!("data: {{\"token\":\"t{i}\"}}\n\n"))
        };
        Some((Ok::<_, Infallible>(event), i + 1))
    });
    (
        [("content-type", "text/event-stream")],
        Body::from_stream(events),
    )
}
