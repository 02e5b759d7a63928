//! # llmtrace
//!
//! OpenTelemetry distributed tracing for LLM traffic.
//!
//! - [`propagation`]: W3C Trace Context (Level 2) and W3C Baggage over `http::HeaderMap`,
//!   exact to the specification, also as an OpenTelemetry `TextMapPropagator`.
//! - [`ServerLayer`] and [`ClientLayer`]: tower layers for axum, hyper and tonic whose spans
//!   live until the response body ends, so streamed responses are measured whole and a
//!   client that disconnects mid-stream leaves a closed span marked as aborted.
//! - [`sampling`] (feature `sampling`): head-sampling rules for the OpenTelemetry SDK
//!   (`RuleSampler`) and a tail-sampling span processor (`TailSampler`) that keeps whole traces
//!   by what happened in them: errors, slow or stalled streams, client aborts, attributes.
//! - [`store`] (feature `store`): a bounded in-memory trace store fed by a span processor, and
//!   the embedded viewer over it (HTML pages, a Jaeger-shaped JSON API).
//! - [`eval`]: evaluations (scores, labels, explanations) attached to an existing trace as
//!   the GenAI conventions' evaluation result, and counted.
//! - [`vectordb`] and [`VectorDbLayer`]: database spans for calls to
//!   Chroma, Qdrant and Weaviate (operation, collection, top-k, returned rows).
//! - Feature `bound-metrics`: the GenAI metrics recorded through bound instruments (one
//!   attribute-set lookup per exchange instead of one per record, and per stream chunk); it
//!   turns on opentelemetry_sdk 0.33's experimental bound instruments, so the meter must come
//!   from that SDK.
//!
//! ```
//! use axum::{Router, routing::post};
//! use llmtrace::ServerLayer;
//!
//! let app: Router = Router::new()
//!     .route("/v1/chat/completions", post(|| async { "..." }))
//!     .layer(ServerLayer::new());
//! ```
#![deny(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod driver;
pub mod eval;
pub mod genai;
pub mod layer;
pub mod limits;
pub mod propagation;
#[cfg(feature = "sampling")]
#[cfg_attr(docsrs, doc(cfg(feature = "sampling")))]
pub mod sampling;
pub mod semconv;
#[cfg(feature = "slo")]
#[cfg_attr(docsrs, doc(cfg(feature = "slo")))]
pub mod slo;
#[cfg(feature = "store")]
#[cfg_attr(docsrs, doc(cfg(feature = "store")))]
pub mod store;
pub mod vectordb;

pub use layer::{ClientLayer, GenAiLayer, ServerLayer, TracedBody, VectorDbLayer};
