//! An LLM gateway built only from llmtrace's tower layers: axum in front, a hyper client
//! behind, `ServerLayer` on the inbound request and `GenAiLayer` on the call to the
//! provider. Streams pass through chunk by chunk; each request gives a SERVER span with a
//! `chat {model}` CLIENT span under it (TTFT, gaps, usage, finish reasons).
//!
//! ```sh
//! cargo run --example mock_upstream &                                # a provider stand-in on :8090
//! cargo run --example gateway -- 127.0.0.1:8080 http://127.0.0.1:8090
//! curl -N localhost:8080/v1/chat/completions -H 'content-type: application/json' \
//!   -d '{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}'
//! ```

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use llmtrace::layer::{GenAiService, RequestBody};
use llmtrace::{GenAiLayer, ServerLayer};
use tower::{ServiceBuilder, ServiceExt};

type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    RequestBody<Body>,
>;

#[derive(Clone)]
struct Gateway {
    client: GenAiService<Client>,
    upstream: Uri,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:8080".into());
    let upstream: Uri = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:8090".into())
        .parse()?;
    let provider = llmtrace_examples::telemetry::init("gateway");

    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_nodelay(true);
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(connector);
    let client = ServiceBuilder::new()
        .layer(GenAiLayer::client().with_meter(&opentelemetry::global::meter("gateway")))
        .service(http);
    let app = axum::Router::new()
        .fallback(forward)
        .with_state(Gateway {
            client,
            upstream: upstream.clone(),
        })
        .layer(ServerLayer::new());

    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("gateway on http://{listen} → {upstream}");
    axum::serve(llmtrace_examples::chain::nodelay(listener), app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    provider.shutdown()?;
    Ok(())
}

/// Sends the request on to the one configured upstream, same path and query.
async fn forward(State(gateway): State<Gateway>, mut request: Request) -> Response {
    let path = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let Ok(uri) = format!(
        "{}{}",
        gateway.upstream.to_string().trim_end_matches('/'),
        path
    )
    .parse::<Uri>() else {
        return (StatusCode::BAD_REQUEST, "bad path").into_response();
    };
    *request.uri_mut() = uri;
    request.headers_mut().remove(http::header::HOST);
    match gateway.client.oneshot(request).await {
        Ok(response) => response.map(Body::new),
        Err(error) => (StatusCode::BAD_GATEWAY, format!("upstream: {error}")).into_response(),
    }
}
