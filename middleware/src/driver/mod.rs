//! The adapter-neutral drivers: what both the tower layers ([`crate::layer`]) and the gateway
//! (from its pingora phases) drive, so one request is recorded by the same code whichever
//! adapter carries it.
//!
//! - [`InboundSpan`] (with [`InboundRequest`], a borrowed view of the request head, and
//!   [`RequestHeaderCapture`]): the SERVER span of an inbound request: name, HTTP attributes,
//!   the status rules, abort and failure. [`ServerLayer`](crate::ServerLayer) records the same.
//! - [`GenAiSpan`] (with the [`GenAiRecorder`] exchanges share): one LLM API exchange, its span
//!   and its [`Exchange`](crate::genai::Exchange) observer, ended with a report, metrics and a
//!   summary. [`GenAiLayer`](crate::GenAiLayer) drives it from a tower body.
//!
//! Each ends exactly once: through its `end`/`finish` with an [`End`](crate::genai::End), or,
//! when dropped first, as aborted.

pub(crate) mod attrs;
mod classify;
mod genai;
mod inbound;
pub(crate) mod span;

pub(crate) use classify::{ErrorClassifier, StatusClassifier};
pub use classify::{ErrorRef, ResponseStatus, StatusClass, known_error_type};
pub use genai::{GenAiRecorder, GenAiSpan};
pub(crate) use inbound::start_server_span;
pub use inbound::{InboundRequest, InboundSpan, RequestHeaderCapture};
