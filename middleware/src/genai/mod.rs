//! The sans-IO GenAI core: LLM request and response formats, an incremental SSE decoder, and
//! the per-exchange observer. Free of tower, hyper and pingora types beyond `http` and `bytes`,
//! so the tower layers and the gateway drive the same code.
//!
//! - [`Endpoint`] recognises the API (provider, operation, wire format) from the path.
//! - [`RequestInfo`] reads the request body once.
//! - [`Exchange`] observes the response head, every body chunk and the end, and produces a
//!   [`Report`]: span attributes and events, an error when the stream says so, and the values
//!   of the GenAI metrics ([`GenAiMetrics`]).

mod content;
mod endpoint;
mod exchange;
mod gaps;
mod json;
mod metrics;
mod request;
mod response;
pub mod sse;
mod usage;

pub use endpoint::{ApiFormat, Endpoint, Provider, UnknownProvider};
pub use exchange::{
    ContentKind, End, Exchange, GenAiConfig, MetricValues, Redactor, Report, SpanEventRecord,
    Summary, TokenEvents,
};
pub use gaps::GapStats;
pub use metrics::GenAiMetrics;
pub use request::RequestInfo;
pub use response::Usage;
pub use usage::{UsageChunkFilter, UsageSkip, request_with_usage};
