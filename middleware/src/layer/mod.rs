//! Tower layers: [`ServerLayer`] for inbound requests, [`ClientLayer`] for outbound ones,
//! [`GenAiLayer`] for LLM API calls and [`VectorDbLayer`] for vector database calls.
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

/// The builder methods all three layers share, written once: `with_tracer`,
/// `with_tracer_provider` and `with_error_classifier`. The layer provides
/// `set_tracer(self, BoxedTracer) -> Self` and `set_errors(self, ErrorClassifier) -> Self`;
/// `$new` is how its doc examples make one (`new`, `client`).
macro_rules! tracer_and_error_builders {
    ($layer:ident, $new:literal) => {
        impl $layer {
            /// Uses `tracer` instead of the global one. Prefer
            /// [`with_tracer_provider`](Self::with_tracer_provider), which keeps the `llmtrace`
            /// instrumentation scope: a tracer made by the caller carries the caller's.
            pub fn with_tracer<T>(self, tracer: T) -> Self
            where
                T: opentelemetry::trace::Tracer + Send + Sync + 'static,
                T::Span: Send + Sync + 'static,
            {
                self.set_tracer(super::boxed_tracer(tracer))
            }

            /// Uses `provider`'s tracer for the `llmtrace` instrumentation scope (name and
            /// version) instead of the global provider's.
            ///
            /// ```
            /// let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
            #[doc = concat!("let layer = llmtrace::layer::", stringify!($layer), "::", $new, "()")]
            ///     .with_tracer_provider(&provider);
            /// # let _ = layer;
            /// ```
            pub fn with_tracer_provider<P>(self, provider: &P) -> Self
            where
                P: opentelemetry::trace::TracerProvider,
                P::Tracer: Send + Sync + 'static,
                <P::Tracer as opentelemetry::trace::Tracer>::Span: Send + Sync + 'static,
            {
                self.set_tracer(super::scoped_tracer(provider))
            }

            /// Names transport errors (of the inner service and of the response body) in
            /// `error.type`. When it returns `None`, the built-in names apply
            /// ([`known_error_type`](crate::layer::known_error_type): I/O error kinds,
            /// `timeout`, else `_OTHER`). Return a small, fixed set of names: they are labels.
            ///
            /// ```
            /// use std::borrow::Cow;
            /// use llmtrace::layer::ErrorRef;
            ///
            #[doc = concat!("let layer = llmtrace::layer::", stringify!($layer), "::", $new, "()")]
            ///     .with_error_classifier(|e: &ErrorRef<'_>| {
            ///         e.to_string().contains("quota").then_some(Cow::Borrowed("quota_exceeded"))
            ///     });
            /// # let _ = layer;
            /// ```
            pub fn with_error_classifier<F>(self, classify: F) -> Self
            where
                F: Fn(&crate::layer::ErrorRef<'_>) -> Option<std::borrow::Cow<'static, str>>
                    + Send
                    + Sync
                    + 'static,
            {
                self.set_errors(crate::driver::ErrorClassifier::new(classify))
            }
        }
    };
}

/// `with_status_classifier` for the server and client layers; `$default` is the side's
/// default rule on [`ResponseStatus`]. The layer provides
/// `set_status_classifier(self, StatusClassifier) -> Self`.
macro_rules! status_classifier_builder {
    ($layer:ident, $default:ident, $example:literal) => {
        impl $layer {
            #[doc = concat!(
                "Decides which responses are errors, instead of the default rule ([`ResponseStatus::",
                stringify!($default),
                "`](crate::layer::ResponseStatus::",
                stringify!($default),
                ")). A gRPC call's `grpc-status` is in [`ResponseStatus::grpc`](crate::layer::ResponseStatus::grpc)."
            )]
            ///
            /// ```
            /// use llmtrace::layer::{ResponseStatus, StatusClass};
            ///
            #[doc = concat!("// ", $example)]
            #[doc = concat!("let layer = llmtrace::", stringify!($layer), "::new()")]
            ///     .with_status_classifier(|s: &ResponseStatus| match s.http.as_u16() {
            ///         429 => StatusClass::Ok,
            #[doc = concat!("        _ => s.", stringify!($default), "(),")]
            ///     });
            /// # let _ = layer;
            /// ```
            pub fn with_status_classifier<F>(self, classify: F) -> Self
            where
                F: Fn(&crate::layer::ResponseStatus) -> crate::layer::StatusClass
                    + Send
                    + Sync
                    + 'static,
            {
                self.set_status_classifier(crate::driver::StatusClassifier::new(classify))
            }
        }
    };
}

/// The [`Layer`](tower_layer::Layer) impl, the service type and its
/// [`Service`](tower_service::Service) impl of the server and client layers, which differ
/// only in how a call starts its span: `$config::call(&self, inner, req)`.
macro_rules! traced_service {
    ($layer:ident, $service:ident, $config:ident) => {
        impl<S> tower_layer::Layer<S> for $layer {
            type Service = $service<S>;

            fn layer(&self, inner: S) -> Self::Service {
                $service {
                    inner,
                    config: self.config.clone(),
                }
            }
        }

        #[doc = concat!("The [`Service`](tower_service::Service) made by [`", stringify!($layer), "`].")]
        #[derive(Clone, Debug)]
        pub struct $service<S> {
            inner: S,
            config: std::sync::Arc<$config>,
        }

        impl<S, ReqBody, ResBody> tower_service::Service<http::Request<ReqBody>> for $service<S>
        where
            S: tower_service::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
            S::Error: std::fmt::Display + 'static,
            ResBody: http_body::Body,
            ResBody::Error: std::fmt::Display + 'static,
        {
            type Response = http::Response<super::TracedBody<ResBody>>;
            type Error = S::Error;
            type Future = super::ResponseFuture<S::Future>;

            /// Ready when the inner service is.
            fn poll_ready(
                &mut self,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<Result<(), Self::Error>> {
                self.inner.poll_ready(cx)
            }

            fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
                self.config.call(&mut self.inner, req)
            }
        }
    };
}

mod body;
mod client;
mod future;
mod genai;
mod server;
mod vectordb;

pub use crate::driver::attrs::ALWAYS_REDACTED;
pub use crate::driver::{ErrorRef, ResponseStatus, StatusClass, known_error_type};
pub use body::{BodyObserver, ObservedBody, SpanObserver, TracedBody};
pub use client::{ClientLayer, ClientService};
pub use future::ResponseFuture;
pub use genai::{GenAiBody, GenAiLayer, GenAiObserver, GenAiService, RequestBody};
pub use server::{ServerLayer, ServerService};
pub use vectordb::{VectorDbBody, VectorDbLayer, VectorDbObserver, VectorDbService};

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
