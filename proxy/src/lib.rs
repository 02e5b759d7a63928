//! llmtrace-proxy: an LLM API gateway on pingora that traces every request with llmtrace.
//!
//! The gateway drives the same sans-IO core as the tower layers (`llmtrace::genai`) from its
//! pingora phases; it holds no LLM-format logic of its own.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod access_log;
pub mod admin;
pub mod body;
pub mod canary;
pub mod config;
pub mod export_queue;
pub mod gateway;
pub mod metrics;
pub mod otlp;
pub mod pages;
pub mod path;
pub mod reply;
pub mod resolve;
pub mod shadow;
pub mod telemetry;
pub mod tools;
pub mod upstream;
pub mod vectordb;
pub mod waterfall;

pub use config::Config;
pub use gateway::Gateway;
pub use telemetry::Telemetry;
pub use upstream::Upstream;

use std::sync::Arc;
use std::time::Duration;

use canary::Canary;
use llmtrace::GenAiLayer;
use llmtrace::eval::{EvaluationMetrics, EvaluationRecorder};
use llmtrace::genai::GenAiConfig;
use llmtrace::slo::{AnomalyDetector, SamplingBoost, SloEngine};
use opentelemetry::global::BoxedTracer;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::trace::noop::NoopTracer;
use pingora::prelude::*;
use pingora::protocols::l4::stream::L4BufferSettings;
use shadow::Shadows;

use crate::admin::{AdminApp, AdminState, DrainOnTerm};
use crate::metrics::ProxyMetrics;

/// A built gateway: the pingora server (gateway and admin listeners) and the state the admin
/// endpoints and the shutdown sequence read.
pub struct ProxyServer {
    /// The pingora server. `run_forever()` it on a thread in tests; the binary calls
    /// [`ProxyServer::run`].
    pub server: Server,
    /// In-flight requests, readiness, metrics.
    pub state: AdminState,
    grace: Duration,
}

impl std::fmt::Debug for ProxyServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyServer")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl ProxyServer {
    /// Serves until a signal: SIGTERM drains in-flight requests for at most the grace period
    /// (and no longer than they need), SIGINT stops at once ([`DrainOnTerm`]). Returns when
    /// the server has stopped; flush the telemetry then.
    pub fn run(self) {
        let signals = DrainOnTerm::new(self.state.clone(), self.grace);
        self.server.run(pingora::server::RunArgs {
            shutdown_signal: Box::new(signals),
        });
    }
}

/// The service level objectives of `config` (or the defaults) and the TTFT control charts,
/// exported on `meter`, and the tail sampler's boost from both.
fn reactive(
    config: &config::Config,
    meter: &opentelemetry::metrics::Meter,
    telemetry: &Telemetry,
) -> std::result::Result<(Arc<SloEngine>, Arc<AnomalyDetector>), Box<dyn std::error::Error>> {
    let engine = Arc::new(SloEngine::new(config.objectives()?));
    engine.register_metrics(meter);
    let anomalies = Arc::new(AnomalyDetector::new(
        Duration::from_secs(10),
        Duration::from_secs(60),
    ));
    anomalies.register_metrics(meter);
    if let Some(tail) = &telemetry.tail_stats {
        tail.register_metrics(meter);
        // Keep more while an objective burns or first tokens slow down (`[tail] boost_ratio`).
        tail.set_boost(Arc::new(SamplingBoost::new(
            Some(engine.clone()),
            Some(anomalies.clone()),
        )));
    }
    Ok((engine, anomalies))
}

/// The routes' shadow traffic, recorded by a GenAI recorder of its own: spans, no metrics
/// (shadow exchanges are not client traffic).
fn shadows(
    config: &config::Config,
    provider: &opentelemetry_sdk::trace::SdkTracerProvider,
) -> std::result::Result<Shadows, Box<dyn std::error::Error>> {
    if config.routes.iter().all(|r| r.shadow.is_none()) {
        return Ok(Shadows::none());
    }
    let recorder = GenAiLayer::gateway()
        .with_tracer(provider.tracer("llmtrace-proxy"))
        .with_config(genai_config(config)?)
        .into_recorder();
    Shadows::new(
        &config.routes,
        |name| config.upstreams.iter().find(|u| u.name == name).cloned(),
        recorder,
        config.server.upstream_ca_file.as_deref(),
    )
}

/// `llmtrace.proxy.shadow.requests` by `outcome`.
fn register_shadow_metrics(meter: &opentelemetry::metrics::Meter, stats: Arc<shadow::ShadowStats>) {
    meter
        .u64_observable_counter(shadow::names::REQUESTS)
        .with_description("Shadow requests by outcome")
        .with_callback(move |observer| {
            for (outcome, count) in stats.snapshot() {
                observer.observe(
                    count as u64,
                    &[opentelemetry::KeyValue::new("outcome", outcome)],
                );
            }
        })
        .build();
}

/// What records `POST /api/evaluations` on the admin listener: spans and metrics.
fn evaluations(
    provider: &opentelemetry_sdk::trace::SdkTracerProvider,
    meter: &opentelemetry::metrics::Meter,
) -> EvaluationRecorder<opentelemetry_sdk::trace::SdkTracer> {
    EvaluationRecorder::new(provider.tracer("llmtrace-proxy"))
        .with_metrics(EvaluationMetrics::new(meter))
}

/// How the gateway observes GenAI exchanges, from `[telemetry]`, `[pricing]` and `[tail]`.
fn genai_config(
    config: &config::Config,
) -> std::result::Result<GenAiConfig, Box<dyn std::error::Error>> {
    Ok(GenAiConfig {
        capture_content: config.telemetry.capture_content,
        chunk_timeline: config.telemetry.chunk_timeline,
        prices: config.pricing.table()?.map(Arc::new),
        // The tail's prompt policies look for their keywords while bodies are read.
        prompt_watch: config
            .tail
            .as_ref()
            .map(|t| t.prompt_watch())
            .transpose()?
            .flatten(),
        ..GenAiConfig::default()
    })
}

/// Builds the gateway for `config`, recording with `telemetry`: the proxy listener (HTTP/1.1
/// and h2c on one port) and, when `server.admin` names an address, the admin listener.
pub fn build_server(
    config: Arc<config::Config>,
    telemetry: &Telemetry,
) -> std::result::Result<ProxyServer, Box<dyn std::error::Error>> {
    let grace = Duration::from_secs(config.server.shutdown_grace_seconds);
    let conf = pingora::server::configuration::ServerConf {
        // The drain happens before pingora's shutdown starts (see `DrainOnTerm`); this second
        // is for requests that arrived during its last moments.
        grace_period_seconds: Some(1),
        graceful_shutdown_timeout_seconds: Some(5),
        ca_file: config.server.upstream_ca_file.clone(),
        threads: config.server.threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        }),
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let provider = &telemetry.tracer_provider;
    let meter = telemetry.meter_provider.meter("llmtrace-proxy");
    let (tracer, recorder) = tracers(&config, telemetry, &meter)?;
    let (slo, anomalies) = reactive(&config, &meter, telemetry)?;
    if let Some(store) = &telemetry.store {
        store.register_metrics(&meter);
        store.set_page_links(vec![
            ("objectives".to_owned(), "/ui/slo".to_owned()),
            ("cohorts".to_owned(), "/ui/cohorts".to_owned()),
        ]);
    }
    let state = AdminState::new(
        ProxyMetrics::new(&meter, telemetry.export_stats.clone()),
        telemetry.prometheus.clone(),
    )
    .with_store(telemetry.store.clone())
    .with_slo(Some(slo.clone()), Some(anomalies.clone()))
    .with_canary(Canary::new(&config.routes, |name| {
        config.upstreams.iter().position(|u| u.name == name)
    }))
    .with_evaluations(evaluations(provider, &meter));
    let listen = config.server.listen.clone();
    let admin = config.server.admin.clone().filter(|a| a != "off");
    let shadows = shadows(&config, provider)?;
    register_shadow_metrics(&meter, shadows.stats());
    let mut gateway = Gateway::new(config, tracer, recorder, state.clone()).with_shadows(shadows);
    if telemetry.tracing_off {
        gateway = gateway.without_spans();
    }
    let mut service = http_proxy_service(&server.configuration, gateway);
    // Clients may speak HTTP/1.1 or HTTP/2 (prior knowledge, h2c) on the same port.
    let mut options = pingora::apps::HttpServerOptions::default();
    options.h2c = true;
    if let Some(proxy) = service.app_logic_mut() {
        proxy.server_options = Some(options);
    }
    // A 16 KiB read buffer per client connection instead of pingora's 64 KiB: request bodies
    // stream through it all the same, and an open stream holds less memory.
    service.add_listener(
        pingora::listeners::ListenerConfig::tcp(listen.as_str())
            .l4_buffer(L4BufferSettings::default().read(16 * 1024)),
    );
    server.add_service(service);
    if let Some(admin) = admin {
        let mut service = pingora::services::listening::Service::new(
            "llmtrace-admin".to_owned(),
            AdminApp::new(state.clone()),
        );
        service.add_tcp(&admin);
        server.add_service(service);
    }
    Ok(ProxyServer {
        server,
        state,
        grace,
    })
}

/// The gateway's tracer and GenAI recorder. Tracing off: the API's no-op tracer, as
/// `OTEL_SDK_DISABLED` asks, and a recorder that starts no spans: no ids are made, and the
/// client's `traceparent` goes upstream as it came (an always-off sampler would start a trace
/// of its own there, unsampled, cutting the client's off).
fn tracers(
    config: &config::Config,
    telemetry: &Telemetry,
    meter: &opentelemetry::metrics::Meter,
) -> std::result::Result<
    (BoxedTracer, Arc<llmtrace::driver::GenAiRecorder>),
    Box<dyn std::error::Error>,
> {
    let provider = &telemetry.tracer_provider;
    let (tracer, recorder) = if telemetry.tracing_off {
        let recorder = GenAiLayer::gateway()
            .with_tracer(NoopTracer::new())
            .with_spans(false);
        (BoxedTracer::new(Box::new(NoopTracer::new())), recorder)
    } else {
        let recorder = GenAiLayer::gateway().with_tracer(provider.tracer("llmtrace-proxy"));
        let tracer = BoxedTracer::new(Box::new(provider.tracer("llmtrace-proxy")));
        (tracer, recorder)
    };
    let recorder = recorder
        .with_config(genai_config(config)?)
        .with_meter(meter)
        .with_max_model_labels(config.telemetry.max_model_labels)
        .into_recorder();
    Ok((tracer, recorder))
}
