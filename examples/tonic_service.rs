//! A tonic gRPC service traced by `ServerLayer` (spans named `package.Service/Method` with the
//! `rpc.*` attributes), called once by a client traced by `ClientLayer`.
//!
//! ```sh
//! cargo run --example tonic_service               # serve on 127.0.0.1:50051 and call it once
//! cargo run --example tonic_service -- serve      # only serve
//! ```

use llmtrace::{ClientLayer, ServerLayer};
use llmtrace_examples::proto::CompleteRequest;
use llmtrace_examples::proto::completions_client::CompletionsClient;
use tower::ServiceBuilder;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let provider = llmtrace_examples::telemetry::init("tonic-service");
    let addr = "127.0.0.1:50051".parse()?;
    let serve_only = std::env::args().nth(1).as_deref() == Some("serve");

    let server = tonic::transport::Server::builder()
        .layer(ServerLayer::new())
        .add_service(llmtrace_examples::completion::server())
        .serve_with_shutdown(addr, async {
            let _ = tokio::signal::ctrl_c().await;
        });
    if serve_only {
        println!("serving gRPC on {addr}");
        server.await?;
    } else {
        let server = tokio::spawn(server);
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
            .connect()
            .await?;
        let traced = ServiceBuilder::new()
            .layer(ClientLayer::new())
            .service(channel);
        let mut client = CompletionsClient::with_origin(traced, format!("http://{addr}").parse()?);
        let reply = client
            .complete(CompleteRequest {
                model: "demo-1".into(),
                prompt: "hello".into(),
                max_tokens: 0,
            })
            .await?
            .into_inner();
        println!("reply: {} (trace {})", reply.text, reply.trace_id);
        server.abort();
    }
    provider.shutdown()?;
    Ok(())
}
