//! llmtrace: OpenTelemetry distributed tracing for LLM traffic.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod propagation;
