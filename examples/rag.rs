//! Retrieval-augmented generation, traced end to end: one trace per question.
//!
//! An axum service behind `ServerLayer` answers `POST /ask {"question": "..."}`:
//!
//! 1. it embeds the question through the gateway (`POST {LLMTRACE_GATEWAY}/v1/embeddings`,
//!    the `GenAiLayer` client: an `embeddings text-embedding-3-small` CLIENT span);
//! 2. it queries Chroma for the 3 nearest documents (`VectorDbLayer`: a `query {collection}`
//!    CLIENT span with `db.system.name = chroma`, `llmtrace.db.top_k = 3`,
//!    `db.response.returned_rows`);
//! 3. it asks the model with those documents in the prompt (`POST {LLMTRACE_GATEWAY}/v1/chat/completions`:
//!    a `chat gpt-4o-mini` CLIENT span)
//!
//! and answers `{"answer", "documents", "trace_id"}`. The three CLIENT spans are children of
//! the `POST /ask` SERVER span, and each injects its own `traceparent`: the gateway's spans
//! (and Chroma's, when it traces) continue the same trace.
//!
//! At startup it creates the collection (`get_or_create`) and upserts a few documents with
//! their embeddings (from the gateway too), in a trace of its own (`seed`).
//!
//! ```sh
//! chroma run --path /tmp/chroma --port 8000                       # pip install chromadb
//! cargo run --example mock_upstream                               # an OpenAI stand-in on :8090
//! cargo run -p llmtrace-proxy -- --listen 127.0.0.1:8080 --upstream http://127.0.0.1:8090
//! LLMTRACE_GATEWAY=http://127.0.0.1:8080 CHROMA_URL=http://127.0.0.1:8000 \
//!     cargo run --example rag -- 127.0.0.1:3001
//! curl -s localhost:3001/ask -H content-type:application/json -d '{"question":"What is W3C trace context?"}'
//! ```
//!
//! Spans go to stdout, or over OTLP with `OTEL_EXPORTER_OTLP_ENDPOINT` (and
//! `OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf` for OTLP/HTTP), flushed on Ctrl-C or SIGTERM.
//! The service also serves the trace viewer over its own spans at `/ui` (README shows the
//! waterfall of one question). `RAG_COLLECTION` names the collection (default `llmtrace-rag`).
//! The first line printed is
//! `listening on http://HOST:PORT`. `tests/e2e/test_rag.py` runs it against a real Chroma.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use llmtrace::layer::{GenAiService, RequestBody, VectorDbService};
use llmtrace::{GenAiLayer, ServerLayer, VectorDbLayer};
use opentelemetry::Context;
use opentelemetry::trace::{FutureExt, TraceContextExt, Tracer, TracerProvider as _};
use serde_json::{Value, json};
use tower::ServiceExt;

/// Errors of the example.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A hyper client with `TCP_NODELAY`, as the layers want it.
type Http = Client<HttpConnector, RequestBody<Body>>;

/// The embedding model asked of the gateway (the mock answers any), and its vector size.
const EMBEDDING_MODEL: &str = "text-embedding-3-small";
const DIMENSIONS: usize = 64;
/// The chat model.
const CHAT_MODEL: &str = "gpt-4o-mini";
/// Documents retrieved per question.
const TOP_K: usize = 3;
/// Chroma's default tenant and database.
const DATABASE: &str = "/api/v2/tenants/default_tenant/databases/default_database/collections";

/// What the collection holds.
const DOCUMENTS: [&str; 6] = [
    "W3C Trace Context carries the trace id and parent span id in the traceparent header.",
    "A span ends when the response body ends, so a streamed answer is measured whole.",
    "The gateway continues the caller's trace and starts a CLIENT span toward the provider.",
    "Chroma stores embeddings with their documents and answers nearest-neighbour queries.",
    "Tail sampling keeps whole traces by what happened in them: errors, slow streams.",
    "Semantic conventions name attributes such as db.system.name and gen_ai.operation.name.",
];

/// The service's clients and where they go.
struct Rag {
    llm: GenAiService<Http>,
    chroma: VectorDbService<Http>,
    gateway: String,
    chroma_url: String,
    /// The collection's id (Chroma's paths take it, not the name).
    collection_id: String,
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // Every finished span is also kept for the viewer at /ui on the same port.
    let store = llmtrace::store::TraceStore::new(llmtrace::store::StoreConfig::default());
    let provider = llmtrace_examples::telemetry::init_with_store("rag", &store);
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3001".into());
    let env = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
    let gateway = env("LLMTRACE_GATEWAY", "http://127.0.0.1:8080");
    let chroma_url = env("CHROMA_URL", "http://127.0.0.1:8000");
    let collection = env("RAG_COLLECTION", "llmtrace-rag");

    let http = http_client();
    let mut rag = Rag {
        llm: tower::ServiceBuilder::new()
            .layer(GenAiLayer::client().with_tracer_provider(&provider))
            .service(http.clone()),
        chroma: tower::ServiceBuilder::new()
            .layer(VectorDbLayer::new().with_tracer_provider(&provider))
            .service(http),
        gateway: gateway.trim_end_matches('/').to_owned(),
        chroma_url: chroma_url.trim_end_matches('/').to_owned(),
        collection_id: String::new(),
    };
    let seed = Context::current_with_span(provider.tracer("rag").start("seed"));
    rag.collection_id = seed_collection(&rag, &collection)
        .with_context(seed.clone())
        .await?;
    seed.span().end();

    let app = Router::new()
        .route("/ask", post(ask))
        .layer(ServerLayer::new().with_tracer_provider(&provider))
        .with_state(Arc::new(rag))
        .merge(llmtrace::store::ui::router(store));
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    provider.shutdown()?;
    Ok(())
}

fn http_client() -> Http {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector)
}

/// Ctrl-C, or SIGTERM on Unix (how scripts stop it): either flushes the spans.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// Creates the collection (or finds it) and upserts [`DOCUMENTS`] with their embeddings;
/// returns the collection's id.
async fn seed_collection(rag: &Rag, name: &str) -> Result<String, BoxError> {
    let url = format!("{}{DATABASE}", rag.chroma_url);
    let created = post_json(
        &rag.chroma,
        &url,
        json!({"name": name, "get_or_create": true}),
    )
    .await?;
    let id = created["id"]
        .as_str()
        .ok_or_else(|| format!("no collection id in {created}"))?
        .to_owned();
    let embeddings = embed(rag, json!(DOCUMENTS)).await?;
    let ids: Vec<String> = (0..DOCUMENTS.len()).map(|i| format!("doc-{i}")).collect();
    let body = json!({"ids": ids, "embeddings": embeddings, "documents": DOCUMENTS});
    post_json(&rag.chroma, &format!("{url}/{id}/upsert"), body).await?;
    Ok(id)
}

/// `POST /ask`: embed, retrieve, generate.
async fn ask(
    State(rag): State<Arc<Rag>>,
    Json(request): Json<Value>,
) -> Result<Json<Value>, (StatusCode, String)> {
    let trace_id = Context::current().span().span_context().trace_id();
    let question = request["question"].as_str().ok_or((
        StatusCode::BAD_REQUEST,
        "expected {\"question\": \"...\"}".into(),
    ))?;
    let failed = |e: BoxError| (StatusCode::BAD_GATEWAY, e.to_string());
    let vector = embed(&rag, json!(question)).await.map_err(failed)?;
    let documents = retrieve(&rag, vector.into_iter().next())
        .await
        .map_err(failed)?;
    let answer = generate(&rag, question, &documents).await.map_err(failed)?;
    Ok(Json(json!({
        "answer": answer,
        "documents": documents,
        "trace_id": trace_id.to_string(),
    })))
}

/// The embeddings of `input` (a string or a list of them), through the gateway.
async fn embed(rag: &Rag, input: Value) -> Result<Vec<Value>, BoxError> {
    let body = json!({"model": EMBEDDING_MODEL, "input": input, "dimensions": DIMENSIONS});
    let url = format!("{}/v1/embeddings", rag.gateway);
    let answer = post_json(&rag.llm, &url, body).await?;
    let data = answer["data"]
        .as_array()
        .ok_or_else(|| format!("no embeddings in {answer}"))?;
    Ok(data.iter().map(|d| d["embedding"].clone()).collect())
}

/// The [`TOP_K`] documents nearest to `vector`.
async fn retrieve(rag: &Rag, vector: Option<Value>) -> Result<Vec<String>, BoxError> {
    let vector = vector.ok_or("no embedding for the question")?;
    let url = format!("{}{DATABASE}/{}/query", rag.chroma_url, rag.collection_id);
    let body = json!({"query_embeddings": [vector], "n_results": TOP_K, "include": ["documents"]});
    let answer = post_json(&rag.chroma, &url, body).await?;
    let documents = answer["documents"][0]
        .as_array()
        .ok_or_else(|| format!("no documents in {answer}"))?;
    Ok(documents
        .iter()
        .filter_map(|d| d.as_str().map(str::to_owned))
        .collect())
}

/// The model's answer to `question` given `documents`.
async fn generate(rag: &Rag, question: &str, documents: &[String]) -> Result<String, BoxError> {
    let context: String = documents.iter().map(|d| format!("- {d}\n")).collect();
    let body = json!({
        "model": CHAT_MODEL,
        "messages": [
            {"role": "system", "content": format!("Answer from these documents only:\n{context}")},
            {"role": "user", "content": question},
        ],
    });
    let url = format!("{}/v1/chat/completions", rag.gateway);
    let answer = post_json(&rag.llm, &url, body).await?;
    Ok(answer["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

/// POSTs `body` as JSON through `client` (a traced hyper client) and reads a JSON answer;
/// a status other than 2xx is an error.
async fn post_json<S, B>(client: &S, url: &str, body: Value) -> Result<Value, BoxError>
where
    S: tower::Service<Request<Body>, Response = http::Response<B>> + Clone,
    S::Error: Into<BoxError>,
    B: http_body::Body,
    B::Error: Into<BoxError>,
{
    let request = Request::builder()
        .method(Method::POST)
        .uri(url)
        .header("content-type", "application/json")
        .header("authorization", "Bearer sk-rag-example")
        .body(Body::from(body.to_string()))?;
    let response = client
        .clone()
        .oneshot(request)
        .await
        .map_err(|e| -> BoxError { e.into() })?;
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| -> BoxError { e.into() })?
        .to_bytes();
    if !status.is_success() {
        return Err(format!("{url}: {status}: {}", String::from_utf8_lossy(&bytes)).into());
    }
    Ok(serde_json::from_slice(&bytes)?)
}
