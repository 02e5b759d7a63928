//! Tower layers: [`ServerLayer`] for inbound requests, [`ClientLayer`] for outbound ones.
//!
//! Both create one span per exchange that lives until the response *body* ends, so a
//! streamed answer is measured whole, and both end that span exactly once on every path:
//! body end, body error, service error, or an early drop of the response future or body.

mod body;
mod client;
mod future;
mod genai;
mod server;

pub use crate::driver::attrs::ALWAYS_REDACTED;
pub use body::TracedBody;
pub use client::{ClientLayer, ClientService};
pub use future::ResponseFuture;
pub use genai::{GenAiBody, GenAiLayer, GenAiService, RequestBody};
pub use server::{ServerLayer, ServerService};

// The adapter-neutral drivers live in `crate::driver`; these names stay here for code written
// against earlier releases.
#[doc(hidden)]
pub use crate::driver::{
    GenAiRecorder, GenAiSpan, InboundRequest, InboundSpan, RequestHeaderCapture,
};

use opentelemetry::InstrumentationScope;
use opentelemetry::global::{self, BoxedTracer};
use opentelemetry::trace::Tracer;

/// The instrumentation scope of the spans our layers create.
pub(crate) fn scope() -> InstrumentationScope {
    InstrumentationScope::builder("llmtrace")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build()
}

fn default_tracer() -> BoxedTracer {
    global::tracer_with_scope(scope())
}

fn boxed_tracer<T>(tracer: T) -> BoxedTracer
where
    T: Tracer + Send + Sync + 'static,
    T::Span: Send + Sync + 'static,
{
    BoxedTracer::new(Box::new(tracer))
}
