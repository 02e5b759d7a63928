//! Tower layers: [`ServerLayer`] for inbound requests, [`ClientLayer`] for outbound ones.
//!
//! Both create one span per exchange that lives until the response *body* ends, so a
//! streamed answer is measured whole, and both end that span exactly once on every path:
//! body end, body error, service error, or an early drop of the response future or body.
//!
//! Every layer takes its tracer from a provider with `with_tracer_provider` (recommended: the
//! spans carry the `llmtrace` instrumentation scope) or from the global provider, and an
//! error classifier (`with_error_classifier`) that names failures in `error.type`; see
//! [`known_error_type`] for the names it knows by itself. The server and client layers also
//! take a status classifier ([`StatusClass`]); the server layer, a route extractor.

mod body;
mod client;
mod future;
mod genai;
mod server;

pub use crate::driver::attrs::ALWAYS_REDACTED;
pub use crate::driver::{ErrorRef, ResponseStatus, StatusClass, known_error_type};
pub use body::{BodyObserver, ObservedBody, SpanObserver, TracedBody};
pub use client::{ClientLayer, ClientService};
pub use future::ResponseFuture;
pub use genai::{GenAiBody, GenAiLayer, GenAiObserver, GenAiService, RequestBody};
pub use server::{ServerLayer, ServerService};

// The adapter-neutral drivers live in `crate::driver`; these names stay here for code written
// against earlier releases.
#[doc(hidden)]
pub use crate::driver::{
    GenAiRecorder, GenAiSpan, InboundRequest, InboundSpan, RequestHeaderCapture,
};

use opentelemetry::InstrumentationScope;
use opentelemetry::global::{self, BoxedTracer};
use opentelemetry::trace::{Tracer, TracerProvider};

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

/// `provider`'s tracer for our [`scope`], so exported spans name `llmtrace` and its version
/// as their instrumentation scope.
fn scoped_tracer<P>(provider: &P) -> BoxedTracer
where
    P: TracerProvider,
    P::Tracer: Send + Sync + 'static,
    <P::Tracer as Tracer>::Span: Send + Sync + 'static,
{
    boxed_tracer(provider.tracer_with_scope(scope()))
}
