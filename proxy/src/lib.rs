//! llmtrace-proxy: an LLM API gateway on pingora that traces every request with llmtrace.
//!
//! The gateway drives the same sans-IO core as the tower layers (`llmtrace::genai`) from its
//! pingora phases; it holds no LLM-format logic of its own.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
pub mod gateway;
pub mod telemetry;
pub mod upstream;
pub mod waterfall;

pub use gateway::{Gateway, GatewayConfig, Timeouts};
pub use upstream::Upstream;

use llmtrace::GenAiLayer;
use opentelemetry::global::BoxedTracer;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use pingora::prelude::*;

/// A pingora server with the gateway listening on `listen`, forwarding to `upstream`, and
/// tracing with `provider`. Call `run_forever()` on it (on its own thread in tests).
///
/// `provider_name` sets `gen_ai.provider.name` for OpenAI-compatible upstreams.
pub fn build_server(
    listen: &str,
    upstream: Upstream,
    provider_name: Option<String>,
    provider: &SdkTracerProvider,
) -> std::result::Result<Server, Box<dyn std::error::Error>> {
    let mut server = Server::new(None)?;
    server.bootstrap();
    let tracer = BoxedTracer::new(Box::new(provider.tracer("llmtrace-proxy")));
    let mut layer = GenAiLayer::gateway().with_tracer(provider.tracer("llmtrace-proxy"));
    if let Some(name) = provider_name {
        layer = layer.with_provider_name(name);
    }
    let config = GatewayConfig {
        upstream,
        timeouts: Timeouts::default(),
    };
    let gateway = Gateway::new(config, tracer, layer.into_recorder());
    let mut service = http_proxy_service(&server.configuration, gateway);
    service.add_tcp(listen);
    server.add_service(service);
    Ok(server)
}
