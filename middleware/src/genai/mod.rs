//! The sans-IO GenAI core: LLM request and response formats, an incremental SSE decoder, and
//! the per-exchange observer. Free of tower, hyper and pingora types beyond `http` and `bytes`,
//! so the tower layers and the gateway drive the same code.
//!
//! - [`Endpoint`] recognises the API (provider, operation, wire format) from the path.
//! - [`RequestInfo`] reads the request body once.
//! - [`Exchange`] observes the response head, every body chunk and the end, and produces a
//!   [`Report`]: span attributes and events, an error when the stream says so, and the values
//!   of the GenAI metrics ([`GenAiMetrics`]).
//!
//! # Layout
//!
//! What is the same for every provider sits at this level; what a provider's wire format
//! says sits in its own folder, and the code here reaches it through a `match` on
//! [`ApiFormat`] with one arm per provider.
//!
//! ```text
//! genai/
//! ├── mod.rs        this map, and the public re-exports
//! ├── endpoint.rs   ApiFormat, Provider, Endpoint: which API a path is for
//! ├── request.rs    RequestInfo: the request fields every format shares (dispatch: stop key)
//! ├── prompt.rs     PromptWatch: keywords and regexes looked for in the prompt (dispatch: members)
//! ├── response.rs   Usage, ResponseState and its setters (dispatch: events, whole bodies)
//! ├── content.rs    the conventions' message shape (dispatch: input messages)
//! ├── tool_content.rs  ToolContent: tool calls' arguments and results, with capture only
//! ├── exchange.rs   Exchange: one observed exchange, its Report and metric values
//! ├── json.rs       JSON validator, member scanner and key search, without parsing
//! ├── sse.rs        incremental SSE decoder (LineFramer, SseDecoder)
//! ├── gaps.rs       gaps between stream chunks (GapStats)
//! ├── metrics.rs    GenAiMetrics instruments
//! ├── openai/       OpenAI and compatible servers
//! │   ├── mod.rs        entry points, usage and error objects, input messages
//! │   ├── chat.rs       Chat Completions and Completions chunks and bodies
//! │   ├── responses.rs  Responses API events and bodies
//! │   └── usage.rs      request_with_usage, UsageChunkFilter: reported usage for streams
//! └── anthropic/
//!     └── mod.rs        Messages events and bodies, errors, input messages
//! ```
//!
//! Every provider module has the same entry points, which the dispatch calls:
//!
//! - `on_event(state, format, event) -> EventKind`: one server-sent event;
//! - `on_body(state, format, status, failed, value)`: a whole JSON response body;
//! - `input_messages(format, body)`: the system instructions and input messages, for
//!   content capture;
//!
//! A request body is read once for every provider, by the view in `request.rs`: a new
//! provider whose request names a member differently (its stop sequences, say) adds that
//! member to `RequestView` and one arm to its `apply`.
//!
//! They record what they read through the setters of `ResponseState` (`set_usage`,
//! `set_finish_reason`, `set_error`, `capture_text`, ...), which apply the bounds.
//!
//! To add a provider (Gemini, Bedrock, ...): add its wire formats to [`ApiFormat`] (and
//! their operation and route, and their detection in [`Endpoint::detect`]), write a folder
//! beside `openai/` with the four entry points, and add one arm for it to each dispatch:
//! `ResponseState::on_event` and `on_json_body` (response.rs), `input_messages`
//! (content.rs), the stop key (request.rs) and the prompt members (prompt.rs). The compiler
//! lists any arm left out.

mod anthropic;
mod batch;
mod content;
mod cost;
mod endpoint;
mod exchange;
mod gaps;
mod json;
pub(crate) mod metrics;
mod openai;
mod prompt;
mod request;
mod response;
pub mod sse;
mod timeline;
mod tool_content;
mod view;

pub use batch::{BatchCall, BatchIndex, BatchObserver, BatchOperation, BatchReport};
pub use cost::{BUNDLED_PRICES_AS_OF, ModelPrice, PriceTable};
pub use endpoint::{ApiFormat, Endpoint, Provider, UnknownProvider};
pub use exchange::{
    ContentKind, End, Exchange, GenAiConfig, MetricValues, OutputDigest, Redactor, Report,
    SpanEventRecord, Summary, TokenEvents,
};
pub use gaps::GapStats;
pub use metrics::GenAiMetrics;
pub use openai::{UsageChunkFilter, UsageSkip, request_with_usage, request_with_usage_read};
pub use prompt::{DEFAULT_MAX_SCAN_BYTES, PromptWatch, PromptWatchBuilder, PromptWatchError};
pub use request::RequestInfo;
pub use response::Usage;
pub use timeline::{ChunkTimeline, MAX_POINTS as MAX_TIMELINE_POINTS, MAX_STALLS};
pub use tool_content::ToolContent;
