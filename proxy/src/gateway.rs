//! The gateway: one pingora `ProxyHttp` whose phases read top to bottom like a request's life.
//!
//! Per request: an inbound SERVER span continuing the caller's W3C context; for LLM API
//! calls, a GenAI CLIENT span under it (the core's [`GenAiSpan`]) whose context goes upstream
//! in `traceparent`, so a traced provider nests under it. The response streams through
//! untouched while the core observes it; both spans end when the response is fully sent, the
//! client goes away, or the exchange fails.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use llmtrace::genai::{End, Endpoint, Exchange, RequestInfo};
use llmtrace::layer::{GenAiRecorder, GenAiSpan};
use llmtrace::propagation;
use llmtrace::semconv;
use opentelemetry::global::BoxedTracer;
use opentelemetry::trace::{Span as _, SpanBuilder, SpanKind, Status, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};
use pingora::http::ResponseHeader;
use pingora::prelude::*;

use crate::upstream::Upstream;

/// The response header that tells the client the trace id of its request.
pub const TRACE_ID_HEADER: &str = "x-llmtrace-trace-id";
/// The request id header: forwarded when the client sent one, generated otherwise.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Timeouts toward the upstream.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// TCP (and TLS) connect.
    pub connect: Duration,
    /// Longest wait for any read from the upstream: time to first byte and the idle gap
    /// between chunks.
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(10),
            idle: Duration::from_secs(300),
        }
    }
}

/// The gateway's configuration for one upstream.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Where requests go.
    pub upstream: Upstream,
    /// Timeouts toward it.
    pub timeouts: Timeouts,
}

/// The pingora proxy.
pub struct Gateway {
    config: GatewayConfig,
    tracer: BoxedTracer,
    recorder: Arc<GenAiRecorder>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// A gateway that records spans with `tracer` and GenAI spans and metrics with `recorder`.
    pub fn new(config: GatewayConfig, tracer: BoxedTracer, recorder: Arc<GenAiRecorder>) -> Self {
        Self {
            config,
            tracer,
            recorder,
        }
    }
}

/// One request's state across the phases.
#[derive(Default)]
pub struct RequestCtx {
    /// The inbound SERVER span's context.
    server: Option<Context>,
    /// The GenAI exchange, for LLM API calls.
    genai: Option<GenAiSpan>,
    endpoint: Option<Endpoint>,
    /// A copy of the request body, up to the recorder's limit, to read the model.
    request_body: BytesMut,
    request_body_over: bool,
    request_id: String,
    status: u16,
    received: Option<Instant>,
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::default()
    }

    /// The request head arrived: continue the caller's trace, start the spans.
    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        ctx.received = Some(Instant::now());
        let req = session.req_header();
        ctx.request_id = req
            .headers
            .get(REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 200)
            .map_or_else(new_request_id, str::to_owned);
        let parent = propagation::extract(&req.headers);
        let path = req.uri.path().to_owned();
        ctx.endpoint = Endpoint::detect(
            req.uri.path_and_query().map_or(&path[..], |pq| pq.as_str()),
            Some(&self.config.upstream.host),
        );
        let route = ctx.endpoint.as_ref().map(route_template);
        let method = req.method.as_str().to_owned();
        let name = match &route {
            Some(route) => format!("{method} {route}"),
            None => method.clone(),
        };
        let mut attributes = vec![
            KeyValue::new(semconv::http::REQUEST_METHOD, method),
            KeyValue::new(semconv::http::URL_PATH, path),
            KeyValue::new(semconv::http::URL_SCHEME, "http"),
            KeyValue::new("http.request.header.x-request-id", ctx.request_id.clone()),
        ];
        if let Some(route) = route {
            attributes.push(KeyValue::new(semconv::http::ROUTE, route));
        }
        if let Some(agent) = req
            .headers
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
        {
            attributes.push(KeyValue::new(
                semconv::http::USER_AGENT_ORIGINAL,
                agent.to_owned(),
            ));
        }
        if let Some(addr) = session.client_addr().and_then(|a| a.as_inet()) {
            attributes.push(KeyValue::new(
                semconv::http::CLIENT_ADDRESS,
                addr.ip().to_string(),
            ));
        }
        let version = if session.is_http2() { "2" } else { "1.1" };
        attributes.push(KeyValue::new(
            semconv::http::NETWORK_PROTOCOL_VERSION,
            version,
        ));
        let span = self.tracer.build_with_context(
            SpanBuilder::from_name(name)
                .with_kind(SpanKind::Server)
                .with_attributes(attributes),
            &parent,
        );
        let trace_id = span.span_context().trace_id();
        let mut server = parent.with_span(span);
        if !parent.span().span_context().is_valid() {
            server = server.with_value(propagation::RandomTraceId(trace_id));
        }
        if let Some(endpoint) = ctx.endpoint.clone() {
            // The model is read from the body, which arrives after the request head has gone
            // upstream; the GenAI span starts now and is named once the body is read.
            let request = RequestInfo::parse(&endpoint, b"", false);
            let exchange = Exchange::new(
                self.recorder.config().clone(),
                endpoint,
                request,
                Instant::now(),
            );
            let parts = req.as_owned_parts();
            ctx.genai = Some(GenAiSpan::start(&self.recorder, exchange, &parts, &server));
        }
        ctx.server = Some(server);
        Ok(false)
    }

    /// Where to send it: the configured upstream, nowhere else.
    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let upstream = &self.config.upstream;
        let mut peer = HttpPeer::new(
            (upstream.host.as_str(), upstream.port),
            upstream.tls,
            upstream.host.clone(),
        );
        peer.options.connection_timeout = Some(self.config.timeouts.connect);
        peer.options.read_timeout = Some(self.config.timeouts.idle);
        peer.options.idle_timeout = Some(Duration::from_secs(60));
        Ok(Box::new(peer))
    }

    /// The request head going upstream: our context, the request id, the upstream's host.
    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let upstream = &self.config.upstream;
        upstream_request.insert_header(http::header::HOST, upstream.authority())?;
        if !upstream.base_path.is_empty() {
            let path = upstream_request
                .uri
                .path_and_query()
                .map_or("/", |pq| pq.as_str());
            let uri: http::Uri = format!("{}{path}", upstream.base_path)
                .parse()
                .map_err(|e| Error::because(ErrorType::InvalidHTTPHeader, "upstream path", e))?;
            upstream_request.set_uri(uri);
        }
        upstream_request.insert_header(REQUEST_ID_HEADER, ctx.request_id.as_str())?;
        // The GenAI span's own id goes upstream, so a traced provider nests under it.
        let cx = ctx
            .genai
            .as_ref()
            .and_then(GenAiSpan::context)
            .or(ctx.server.as_ref());
        if let Some(cx) = cx {
            let mut headers = http::HeaderMap::new();
            propagation::inject(cx, &mut headers);
            for name in [
                propagation::TRACEPARENT,
                propagation::TRACESTATE,
                propagation::BAGGAGE,
            ] {
                upstream_request.remove_header(&name);
            }
            for (name, value) in headers {
                if let Some(name) = name {
                    upstream_request.insert_header(name, value)?;
                }
            }
        }
        Ok(())
    }

    /// Request body chunks go through as they come; a copy (bounded) is kept to read the model.
    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if ctx.genai.is_none() {
            return Ok(());
        }
        if let Some(chunk) = body {
            if ctx.request_body.len() + chunk.len() > self.recorder.max_request_bytes() {
                ctx.request_body_over = true;
                ctx.request_body = BytesMut::new();
            } else if !ctx.request_body_over {
                ctx.request_body.extend_from_slice(chunk);
            }
        }
        if end_of_stream {
            if let (Some(genai), Some(endpoint)) = (ctx.genai.as_mut(), ctx.endpoint.as_ref()) {
                let mut info = RequestInfo::parse(
                    endpoint,
                    &ctx.request_body,
                    self.recorder.config().capture_content,
                );
                if ctx.request_body_over {
                    info.parse_error = Some(format!(
                        "request body over {} bytes was not read",
                        self.recorder.max_request_bytes()
                    ));
                }
                genai.set_request(info);
            }
            ctx.request_body = BytesMut::new();
        }
        Ok(())
    }

    /// The response head going to the client: tell it the trace and request ids.
    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.status = upstream_response.status.as_u16();
        if let Some(genai) = ctx.genai.as_mut() {
            genai.on_response_head(upstream_response.status, &upstream_response.headers);
        }
        if let Some(cx) = &ctx.server {
            let trace_id = cx.span().span_context().trace_id().to_string();
            upstream_response.insert_header(TRACE_ID_HEADER, trace_id)?;
        }
        upstream_response.insert_header(REQUEST_ID_HEADER, ctx.request_id.as_str())?;
        Ok(())
    }

    /// Each response body chunk, passed on unchanged and at once; the core observes it.
    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        if let Some(genai) = ctx.genai.as_mut() {
            if let Some(chunk) = body {
                genai.on_response_data(chunk);
            }
            if end_of_stream {
                genai.finish(End::Complete);
            }
        }
        Ok(None)
    }

    /// The request is over, one way or another: end the spans.
    async fn logging(&self, session: &mut Session, error: Option<&Error>, ctx: &mut RequestCtx) {
        let aborted = error.is_some_and(|e| e.esource() == &ErrorSource::Downstream);
        if let Some(mut genai) = ctx.genai.take() {
            match error {
                None => genai.finish(End::Complete),
                Some(_) if aborted => genai.finish(End::Aborted),
                Some(e) => genai.finish(End::Failed {
                    error_type: error_type(e).into(),
                    message: e.to_string(),
                }),
            }
        }
        let Some(server) = ctx.server.take() else {
            return;
        };
        let span = server.span();
        let status = session
            .response_written()
            .map_or(ctx.status, |r| r.status.as_u16());
        if status > 0 {
            span.set_attribute(KeyValue::new(
                semconv::http::RESPONSE_STATUS_CODE,
                i64::from(status),
            ));
        }
        if aborted {
            span.set_attribute(KeyValue::new(semconv::llmtrace::ABORTED, true));
            span.set_attribute(KeyValue::new(
                semconv::http::ERROR_TYPE,
                semconv::llmtrace::ABORTED_ERROR_TYPE,
            ));
            span.set_status(Status::error(
                "client disconnected before the response ended",
            ));
        } else if let Some(e) = error {
            span.set_attribute(KeyValue::new(semconv::http::ERROR_TYPE, error_type(e)));
            span.set_status(Status::error(e.to_string()));
        } else if status >= 500 {
            span.set_attribute(KeyValue::new(semconv::http::ERROR_TYPE, status.to_string()));
            span.set_status(Status::error(""));
        }
        span.end();
    }
}

/// The route template of an endpoint (deployment names and other ids left out).
fn route_template(endpoint: &Endpoint) -> String {
    use llmtrace::genai::ApiFormat;
    let operation = match endpoint.format {
        ApiFormat::OpenAiChat => "chat/completions",
        ApiFormat::OpenAiCompletions => "completions",
        ApiFormat::OpenAiEmbeddings => "embeddings",
        ApiFormat::OpenAiResponses => "responses",
        ApiFormat::AnthropicMessages => "messages",
        _ => "unknown",
    };
    if endpoint.deployment.is_some() {
        format!("/openai/deployments/{{deployment}}/{operation}")
    } else {
        format!("/v1/{operation}")
    }
}

fn error_type(error: &Error) -> String {
    match error.etype() {
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
            "timeout".to_owned()
        }
        ErrorType::ConnectRefused => "connection_refused".to_owned(),
        ErrorType::HTTPStatus(code) => code.to_string(),
        other => other.as_str().to_owned(),
    }
}

fn new_request_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("req_{now:016x}{n:08x}")
}
