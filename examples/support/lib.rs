//! Code shared by the examples, the end-to-end tests and the benches of llmtrace.

pub mod chain;
pub mod completion;
pub mod telemetry;
pub mod trace_context;

pub mod proto {
    //! The demo completion service (`proto/llmtrace/demo/v1/completion.proto`).
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("llmtrace.demo.v1");
}
