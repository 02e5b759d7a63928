//! The layers on tonic servers and channels.

use std::net::SocketAddr;
use std::time::Duration;

use llmtrace::{ClientLayer, ServerLayer};
use llmtrace_examples::proto::CompleteRequest;
use llmtrace_examples::proto::completions_client::CompletionsClient;
use llmtrace_test_support::*;
use opentelemetry::trace::SpanKind;
use tower::ServiceBuilder;

async fn start(
    rec: &Recorder,
) -> (
    SocketAddr,
    CompletionsClient<llmtrace::layer::ClientService<tonic::transport::Channel>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let layer = ServerLayer::new().with_tracer(rec.tracer());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .layer(layer)
            .add_service(llmtrace_examples::completion::server())
            .serve_with_incoming(incoming)
            .await
            .unwrap();
    });
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy();
    let traced = ServiceBuilder::new()
        .layer(ClientLayer::new().with_tracer(rec.tracer()))
        .service(channel);
    let client = CompletionsClient::with_origin(traced, format!("http://{addr}").parse().unwrap());
    (addr, client)
}

fn by_kind(
    spans: &[opentelemetry_sdk::trace::SpanData],
    kind: SpanKind,
) -> &opentelemetry_sdk::trace::SpanData {
    spans
        .iter()
        .find(|s| s.span_kind == kind)
        .unwrap_or_else(|| panic!("no {kind:?} span in {:?}", names(spans)))
}

#[tokio::test]
async fn unary_error_status_in_trailers_only_response_marks_both_spans() {
    let rec = Recorder::new();
    let (_addr, mut client) = start(&rec).await;
    let status = client
        .complete(CompleteRequest {
            model: String::new(),
            prompt: "x".into(),
            max_tokens: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);

    let spans = rec.wait_for(2).await;
    for kind in [SpanKind::Server, SpanKind::Client] {
        let s = by_kind(&spans, kind.clone());
        assert_eq!(s.name, "llmtrace.demo.v1.Completions/Complete");
        assert_eq!(attr_i64(s, "rpc.grpc.status_code"), Some(3), "{kind:?}");
        assert_eq!(
            attr_str(s, "error.type").as_deref(),
            Some("INVALID_ARGUMENT")
        );
        assert!(is_error(s), "{kind:?} {:?}", s.status);
        // gRPC errors travel with HTTP 200.
        assert_eq!(attr_i64(s, "http.response.status_code"), Some(200));
    }
    rec.assert_each_ended_once();
}

#[tokio::test]
async fn server_streaming_span_lasts_until_the_trailers() {
    let rec = Recorder::new();
    let (_addr, mut client) = start(&rec).await;
    let mut stream = client
        .stream_complete(CompleteRequest {
            model: "m".into(),
            prompt: "x".into(),
            max_tokens: 20,
        })
        .await
        .unwrap()
        .into_inner();
    let mut n = 0;
    while let Some(chunk) = stream.message().await.unwrap() {
        assert!(chunk.token.starts_with("tok"));
        n += 1;
    }
    assert_eq!(n, 20);
    let spans = rec.wait_for(2).await;
    for kind in [SpanKind::Server, SpanKind::Client] {
        let s = by_kind(&spans, kind.clone());
        assert_eq!(s.name, "llmtrace.demo.v1.Completions/StreamComplete");
        assert_eq!(
            attr_i64(s, "rpc.grpc.status_code"),
            Some(0),
            "{kind:?}: status from the trailers"
        );
        assert!(!is_error(s));
        // 20 tokens, 10 ms apart.
        assert!(
            duration(s) >= Duration::from_millis(200),
            "{kind:?} lasted {:?}",
            duration(s)
        );
    }
    let server = by_kind(&spans, SpanKind::Server);
    let client_span = by_kind(&spans, SpanKind::Client);
    assert_eq!(server.parent_span_id, client_span.span_context.span_id());
    rec.assert_each_ended_once();
}

#[tokio::test]
async fn cancelled_server_stream_is_aborted_on_both_sides() {
    let rec = Recorder::new();
    let (_addr, mut client) = start(&rec).await;
    let mut stream = client
        .stream_complete(CompleteRequest {
            model: "m".into(),
            prompt: "x".into(),
            max_tokens: 1000,
        })
        .await
        .unwrap()
        .into_inner();
    stream.message().await.unwrap().unwrap();
    drop(stream);
    let spans = rec.wait_for(2).await;
    assert_eq!(spans.len(), 2, "{:?}", names(&spans));
    for s in &spans {
        assert_eq!(
            attr(s, "llmtrace.aborted"),
            Some(&opentelemetry::Value::Bool(true)),
            "{:?}",
            s.span_kind
        );
        assert!(is_error(s));
        assert!(duration(s) < Duration::from_secs(5));
    }
    rec.assert_each_ended_once();
}
