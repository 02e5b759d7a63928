//! The demo `Completions` gRPC service: answers and streams tokens.

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use opentelemetry::trace::TraceContextExt;
use tonic::{Request, Response, Status};

use crate::proto::completions_server::{Completions, CompletionsServer};
use crate::proto::{CompleteChunk, CompleteReply, CompleteRequest};

/// Answers with a fixed text; streams `max_tokens` tokens 10 ms apart.
#[derive(Debug, Default, Clone)]
pub struct DemoCompletions;

/// The tonic server for [`DemoCompletions`].
pub fn server() -> CompletionsServer<DemoCompletions> {
    CompletionsServer::new(DemoCompletions)
}

#[tonic::async_trait]
impl Completions for DemoCompletions {
    async fn complete(
        &self,
        request: Request<CompleteRequest>,
    ) -> Result<Response<CompleteReply>, Status> {
        let request = request.into_inner();
        if request.model.is_empty() {
            return Err(Status::invalid_argument("model is required"));
        }
        if request.prompt.is_empty() {
            return Err(Status::invalid_argument("prompt is empty"));
        }
        // The server layer keeps its span's context current while the handler runs.
        let trace_id = opentelemetry::Context::current()
            .span()
            .span_context()
            .trace_id()
            .to_string();
        Ok(Response::new(CompleteReply {
            text: format!("echo from {}: {}", request.model, request.prompt),
            trace_id,
        }))
    }

    type StreamCompleteStream = Pin<Box<dyn Stream<Item = Result<CompleteChunk, Status>> + Send>>;

    async fn stream_complete(
        &self,
        request: Request<CompleteRequest>,
    ) -> Result<Response<Self::StreamCompleteStream>, Status> {
        let tokens = request.into_inner().max_tokens.max(1);
        let stream = futures::stream::unfold(0u32, move |i| async move {
            if i == tokens {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            Some((
                Ok(CompleteChunk {
                    token: format!("tok{i} "),
                }),
                i + 1,
            ))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
