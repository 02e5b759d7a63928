//! A batch worker: one span that serves 100 request traces, linked to each of them.
//!
//! 100 producers each handle a request of their own trace and queue a message whose headers
//! carry the `traceparent` and `tracestate` of their PRODUCER span (the queue is a `Vec`
//! here). The worker takes the 100 messages as one batch, starts a CONSUMER span
//! `process requests` in a trace of its own, linked to the 100 producer spans through
//! [`LinkCollector`], and answers the whole batch with one chat completion from the mock
//! provider: the `chat gpt-4o-mini` CLIENT span of `GenAiLayer` is the batch span's child.
//! Each request's result records the batch trace id, so a request leads to its batch and the
//! batch's links lead back to every request. The batch span also lists the 100 request trace
//! ids in `llmtrace.links.trace_ids`, for backends that drop links (Arize Phoenix).
//!
//! It prints `batch trace <id> linked to 100 request traces` and the batch trace's waterfall.
//! With `OTEL_EXPORTER_OTLP_ENDPOINT` set it also exports every span (the 100 producer spans,
//! the batch span, the chat span) over OTLP/gRPC, or OTLP/HTTP with
//! `OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf`, and flushes before exiting:
//!
//! ```sh
//! cargo run --example batch_worker
//! OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4317 cargo run --example batch_worker
//! OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:6006 \
//!     cargo run --example batch_worker    # Phoenix: the project from OTEL_RESOURCE_ATTRIBUTES
//! ```
//!
//! `tests/batch_worker.rs` runs the same functions against an in-memory exporter;
//! `tests/e2e/test_batch_links.py` runs this example against Phoenix over OTLP/HTTP.

use std::time::Duration;

use axum::body::Body;
use http::HeaderMap;
use http_body_util::BodyExt;
use llmtrace::GenAiLayer;
use llmtrace::layer::{GenAiService, RequestBody};
use llmtrace::propagation::{LinkCollector, extract, inject};
use llmtrace_mock::{MockConfig, MockServer};
use opentelemetry::trace::{
    SpanKind, Status, TraceContextExt, TraceId, Tracer, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use tower::ServiceExt;

/// How many requests the worker takes as one batch.
pub const BATCH_SIZE: usize = 100;

/// The model the batch is sent to.
pub const MODEL: &str = "gpt-4o-mini";

/// Errors of the example.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The hyper client under `GenAiLayer`.
pub type Client = GenAiService<
    hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        RequestBody<Body>,
    >,
>;

/// One queued request: the producer's trace context in `headers`, and what it asks.
#[derive(Clone, Debug)]
pub struct Message {
    /// `traceparent` and `tracestate` of the producer's span.
    pub headers: HeaderMap,
    /// The request's prompt.
    pub prompt: String,
}

/// What the worker hands back for one request.
#[derive(Clone, Debug)]
pub struct RequestResult {
    /// The request's position in the batch (also the `llmtrace.link.index` of its link).
    pub index: usize,
    /// The trace of the batch that served it: recorded back on the request's result.
    pub batch_trace_id: TraceId,
    /// The model's answer to the batch.
    pub answer: String,
}

/// The batch as the worker saw it.
#[derive(Clone, Debug)]
pub struct BatchOutcome {
    /// The batch span's trace (a trace of its own, not any producer's).
    pub trace_id: TraceId,
    /// How many request traces the batch span links to.
    pub links: usize,
    /// One result per message, in queue order.
    pub results: Vec<RequestResult>,
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let (provider, spans) = llmtrace_examples::telemetry::init_in_memory("batch_worker");
    let tracer = provider.tracer("batch_worker");
    let mock = MockServer::start(fast_mock()).await?;

    let queue = enqueue(&tracer, BATCH_SIZE);
    let client = genai_client(GenAiLayer::client().with_tracer_provider(&provider));
    let outcome = process_batch(&tracer, &client, &mock.url(), &queue).await?;

    println!(
        "batch trace {} linked to {} request traces",
        outcome.trace_id, outcome.links
    );
    for (message, result) in queue.iter().zip(&outcome.results).take(3) {
        let producer = extract(&message.headers);
        println!(
            "request {} (trace {}) → served by batch trace {}: {:?}",
            result.index,
            producer.span().span_context().trace_id(),
            result.batch_trace_id,
            result.answer
        );
    }

    provider.force_flush()?;
    let batch_trace: Vec<_> = spans
        .get_finished_spans()?
        .into_iter()
        .filter(|s| s.span_context.trace_id() == outcome.trace_id)
        .collect();
    println!("\n{}", llmtrace_proxy::waterfall::render(&batch_trace));
    provider.shutdown()?;
    mock.shutdown().await?;
    Ok(())
}

/// A mock provider that answers quickly: 8 tokens, 1 ms apart.
pub fn fast_mock() -> MockConfig {
    MockConfig {
        ttft: Duration::from_millis(5),
        gap: Duration::from_millis(1),
        tokens: 8,
        ..MockConfig::default()
    }
}

/// A hyper client (`TCP_NODELAY` on) under `layer`.
pub fn genai_client(layer: GenAiLayer) -> Client {
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_nodelay(true);
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(connector);
    tower::ServiceBuilder::new().layer(layer).service(http)
}

/// `n` producers, each serving an incoming request of its own trace (with a `tracestate`
/// entry `app=req-{i}`), each queueing one message from a PRODUCER span `send requests`.
pub fn enqueue<T>(tracer: &T, n: usize) -> Vec<Message>
where
    T: Tracer<Span: Send + Sync + 'static>,
{
    (0..n)
        .map(|i| {
            let incoming = incoming_request(i);
            let parent = extract(&incoming);
            let builder = tracer
                .span_builder("send requests")
                .with_kind(SpanKind::Producer)
                .with_attributes([
                    KeyValue::new("messaging.operation.type", "send"),
                    KeyValue::new("messaging.destination.name", "requests"),
                ]);
            let span = tracer.build_with_context(builder, &parent);
            let cx = parent.with_span(span);
            let mut headers = HeaderMap::new();
            inject(&cx, &mut headers);
            cx.span().end();
            Message {
                headers,
                prompt: format!("summarise document {i}"),
            }
        })
        .collect()
}

/// The headers of the request producer `i` serves: a trace of its own.
fn incoming_request(i: usize) -> HeaderMap {
    let trace_id = 0x5eed_0000_0000_0000_0000_0000_0000_0000_u128 + i as u128 + 1;
    let mut headers = HeaderMap::new();
    let traceparent = format!("00-{trace_id:032x}-{:016x}-01", 0xc0ffee_u64 + i as u64);
    headers.insert("traceparent", traceparent.parse().expect("ascii"));
    headers.insert("tracestate", format!("app=req-{i}").parse().expect("ascii"));
    headers
}

/// Serves `batch` with one chat completion under a CONSUMER span `process requests` that
/// starts a new trace and links to the trace of every message (at most 128; more are counted
/// in `llmtrace.links.dropped`).
pub async fn process_batch<T>(
    tracer: &T,
    client: &Client,
    base_url: &str,
    batch: &[Message],
) -> Result<BatchOutcome, BoxError>
where
    T: Tracer<Span: Send + Sync + 'static>,
{
    let mut links = LinkCollector::new();
    for message in batch {
        links.add_headers(&message.headers);
    }
    let linked = links.len();
    let builder = tracer
        .span_builder("process requests")
        .with_kind(SpanKind::Consumer)
        .with_attributes([
            KeyValue::new("messaging.operation.type", "process"),
            KeyValue::new("messaging.destination.name", "requests"),
            KeyValue::new("messaging.batch.message_count", batch.len() as i64),
        ]);
    // An empty parent: the batch belongs to none of the request traces.
    let span = tracer.build_with_context(links.apply(builder), &Context::new());
    let cx = Context::new().with_span(span);
    let trace_id = cx.span().span_context().trace_id();

    let answer = complete(client, base_url, batch, &cx).await;
    if let Err(e) = &answer {
        cx.span().set_status(Status::error(e.to_string()));
    }
    cx.span().end();
    let answer = answer?;
    let results = (0..batch.len())
        .map(|index| RequestResult {
            index,
            batch_trace_id: trace_id,
            answer: answer.clone(),
        })
        .collect();
    Ok(BatchOutcome {
        trace_id,
        links: linked,
        results,
    })
}

/// One chat completion for the whole batch, its GenAI span a child of the span in `cx`.
async fn complete(
    client: &Client,
    base_url: &str,
    batch: &[Message],
    cx: &Context,
) -> Result<String, BoxError> {
    let prompt: String = batch
        .iter()
        .enumerate()
        .map(|(i, m)| format!("{i}: {}\n", m.prompt))
        .collect();
    let body = serde_json::json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": prompt}],
    });
    let mut request = http::Request::post(format!("{base_url}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))?;
    // The layer starts its span under the context in the request's extensions.
    request.extensions_mut().insert(cx.clone());
    let response = client.clone().oneshot(request).await?;
    let status = response.status();
    let bytes = response.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        return Err(format!("provider answered {status}").into());
    }
    let json: serde_json::Value = serde_json::from_slice(&bytes)?;
    Ok(json["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned())
}
