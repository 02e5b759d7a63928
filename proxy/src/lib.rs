//! llmtrace-proxy: an LLM API gateway on pingora that traces every request with llmtrace.
//!
//! The gateway drives the same sans-IO core as the tower layers (`llmtrace::genai`) from its
//! pingora phases; it holds no LLM-format logic of its own.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod gateway;
pub mod telemetry;
pub mod upstream;
pub mod waterfall;

pub use gateway::{Gateway, GatewayConfig, Timeouts};
pub use upstream::Upstream;
