//! Three services that form one trace: `front` (axum) → client layer → `middle` (axum) →
//! client layer → `backend` (tonic).
//!
//! ```text
//! POST /chat ─▶ front ──HTTP──▶ middle POST /v1/complete ──gRPC──▶ backend Completions/Complete
//! ```

use std::net::SocketAddr;

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
use opentelemetry::trace::Tracer;
use tower::ServiceBuilder;

use crate::proto::CompleteRequest;
use crate::proto::completions_client::CompletionsClient;

/// A tracer the chain's layers can share.
pub trait ChainTracer: Tracer<Span: Send + Sync + 'static> + Clone + Send + Sync + 'static {}
impl<T> ChainTracer for T where
    T: Tracer<Span: Send + Sync + 'static> + Clone + Send + Sync + 'static
{
}

/// Addresses of the three running services.
#[derive(Debug, Clone, Copy)]
pub struct Chain {
    /// The front axum service (`POST /chat`).
    pub front: SocketAddr,
    /// The middle axum service (`POST /v1/complete`).
    pub middle: SocketAddr,
    /// The tonic backend.
    pub backend: SocketAddr,
}

/// Starts the three services on ephemeral loopback ports.
pub async fn start<T: ChainTracer>(tracer: T) -> Chain {
    let backend = start_backend(tracer.clone()).await;
    let middle = start_middle(tracer.clone(), backend).await;
    let front = start_front(tracer, middle).await;
    Chain {
        front,
        middle,
        backend,
    }
}

/// A listener whose accepted sockets have `TCP_NODELAY` set: without it, small writes can
/// wait for a delayed ACK (~40 ms on Linux).
pub fn nodelay(listener: tokio::net::TcpListener) -> impl axum::serve::Listener<Addr = SocketAddr> {
    use axum::serve::ListenerExt;
    listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    })
}

/// A plain hyper client with `TCP_NODELAY` on its connections.
pub fn http_client() -> Client<HttpConnector, Body> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new()).build(connector)
}

async fn listener() -> (tokio::net::TcpListener, SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

async fn start_backend<T: ChainTracer>(tracer: T) -> SocketAddr {
    let (listener, addr) = listener().await;
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .layer(ServerLayer::new().with_tracer(tracer))
            .add_service(crate::completion::server())
            .serve_with_incoming(incoming)
            .await
            .unwrap();
    });
    addr
}

async fn start_middle<T: ChainTracer>(tracer: T, backend: SocketAddr) -> SocketAddr {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{backend}"))
        .unwrap()
        .connect_lazy();
    let traced = ServiceBuilder::new()
        .layer(ClientLayer::new().with_tracer(tracer.clone()))
        .service(channel);
    let client =
        CompletionsClient::with_origin(traced, format!("http://{backend}").parse().unwrap());
    let app = Router::new()
        .route("/v1/complete", post(middle_complete))
        .with_state(client)
        .layer(ServerLayer::new().with_tracer(tracer));
    let (listener, addr) = listener().await;
    tokio::spawn(async move { axum::serve(nodelay(listener), app).await.unwrap() });
    addr
}

type TracedChannel = llmtrace::layer::ClientService<tonic::transport::Channel>;

async fn middle_complete(
    State(mut client): State<CompletionsClient<TracedChannel>>,
    prompt: String,
) -> Result<String, (StatusCode, String)> {
    let reply = client
        .complete(CompleteRequest {
            model: "demo-1".into(),
            prompt,
            max_tokens: 0,
        })
        .await
        .map_err(|status| (StatusCode::BAD_GATEWAY, status.message().to_owned()))?;
    Ok(reply.into_inner().text)
}

type TracedHttp = llmtrace::layer::ClientService<Client<HttpConnector, Body>>;

async fn start_front<T: ChainTracer>(tracer: T, middle: SocketAddr) -> SocketAddr {
    let client: Client<HttpConnector, Body> = http_client();
    let traced = ServiceBuilder::new()
        .layer(ClientLayer::new().with_tracer(tracer.clone()))
        .service(client);
    let app = Router::new()
        .route("/chat", post(front_chat))
        .with_state((traced, middle))
        .layer(ServerLayer::new().with_tracer(tracer));
    let (listener, addr) = listener().await;
    tokio::spawn(async move { axum::serve(nodelay(listener), app).await.unwrap() });
    addr
}

async fn front_chat(
    State((client, middle)): State<(TracedHttp, SocketAddr)>,
    prompt: String,
) -> Result<String, (StatusCode, String)> {
    use tower::ServiceExt;
    let request = http::Request::post(format!("http://{middle}/v1/complete"))
        .body(Body::from(prompt))
        .unwrap();
    let response = client
        .oneshot(request)
        .await
        .map_err(|e| (StatusCode::BAD_GATEWAY, e.to_string()))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| (StatusCode::BAD_GATEWAY, e.to_string()))?
        .to_bytes();
    let text = String::from_utf8_lossy(&body).into_owned();
    if status.is_success() {
        Ok(text)
    } else {
        Err((StatusCode::BAD_GATEWAY, text))
    }
}
