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

pub use config::Config;
pub use gateway::Gateway;
pub use upstream::Upstream;

use std::sync::Arc;

use llmtrace::GenAiLayer;
use llmtrace::genai::GenAiConfig;
use opentelemetry::global::BoxedTracer;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use pingora::prelude::*;

/// A pingora server with the gateway for `config`, tracing with `provider`. Call
/// `run_forever()` on it (on its own thread in tests).
///
/// With `meter`, the GenAI metrics (`gen_ai.client.*`) are recorded for every request.
pub fn build_server(
    config: Arc<config::Config>,
    provider: &SdkTracerProvider,
    meter: Option<&opentelemetry::metrics::Meter>,
) -> std::result::Result<Server, Box<dyn std::error::Error>> {
    let conf = pingora::server::configuration::ServerConf {
        // In-flight streams get this long after SIGTERM (pingora's own default is 300 s).
        grace_period_seconds: Some(config.server.shutdown_grace_seconds),
        graceful_shutdown_timeout_seconds: Some(5),
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let tracer = BoxedTracer::new(Box::new(provider.tracer("llmtrace-proxy")));
    let mut layer = GenAiLayer::gateway()
        .with_tracer(provider.tracer("llmtrace-proxy"))
        .with_config(GenAiConfig {
            capture_content: config.telemetry.capture_content,
            ..GenAiConfig::default()
        });
    if let Some(meter) = meter {
        layer = layer.with_meter(meter);
    }
    let recorder = layer.into_recorder();
    let listen = config.server.listen.clone();
    let gateway = Gateway::new(config, tracer, recorder);
    let mut service = http_proxy_service(&server.configuration, gateway);
    // Clients may speak HTTP/1.1 or HTTP/2 (prior knowledge, h2c) on the same port.
    let mut options = pingora::apps::HttpServerOptions::default();
    options.h2c = true;
    if let Some(proxy) = service.app_logic_mut() {
        proxy.server_options = Some(options);
    }
    service.add_tcp(&listen);
    server.add_service(service);
    Ok(server)
}
