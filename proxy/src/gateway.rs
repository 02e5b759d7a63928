//! The gateway: one pingora `ProxyHttp` whose phases read top to bottom like a request's life.
//!
//! Per request: an inbound SERVER span continuing the caller's W3C context (or, as
//! `[propagation]` says for callers outside the trust boundary, a new trace); for LLM API
//! calls, a GenAI CLIENT span under it (the core's [`GenAiSpan`]) whose context goes upstream
//! in `traceparent`, so a traced provider nests under it. The response streams through
//! untouched — but for the one change the configuration asks for: a usage chunk the gateway
//! requested itself is taken out again — while the core observes it. Both spans end when the
//! response is fully sent, the client goes away, or the exchange fails; then one JSON access
//! log line is written.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use llmtrace::driver::{
    BatchSpan, BusinessContext, GenAiRecorder, GenAiSpan, InboundRequest, InboundSpan, Incoming,
    RequestHeaderCapture, VectorDbSpan,
};
use llmtrace::genai::{
    BatchCall, BatchIndex, End, Endpoint, Exchange, Provider, RequestInfo, Summary,
    UsageChunkFilter, request_with_usage_read,
};
use llmtrace::limits::{self, bounded};
use llmtrace::propagation;
use llmtrace::semconv;
use llmtrace::slo::{Outcome, SloEngine};
use llmtrace::vectordb::VectorDbCall;
use opentelemetry::baggage::{Baggage, BaggageExt};
use opentelemetry::global::BoxedTracer;
use opentelemetry::trace::TraceContextExt;
use opentelemetry::{Context, KeyValue};
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::FailToProxy;

use crate::access_log::{AccessLogLine, millis};
use crate::admin::AdminState;
use crate::body::{Ended, RequestBody, TooLarge};
use crate::canary::{self, Assignment};
use crate::config::{Config, IpNetwork, ProviderKind, RouteConfig, UpstreamConfig};
use crate::metrics::InFlight;
use crate::reply::{ErrorShape, GatewayReply};
use crate::resolve::{self, UpstreamAddr};
use crate::shadow::{self, Shadows};
use crate::tools::ToolCalls;
use crate::upstream::Upstream;
use crate::vectordb::VectorDbs;

/// The response header that tells the client the trace id of its request.
pub const TRACE_ID_HEADER: &str = "x-llmtrace-trace-id";
/// The request id header: forwarded when the client sent one, generated otherwise.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// [`REQUEST_ID_HEADER`] as a parsed name, for lookups: a `&str` name is parsed and checked
/// again on every `get`.
static REQUEST_ID_NAME: http::HeaderName = http::HeaderName::from_static(REQUEST_ID_HEADER);
/// Largest usage-chunk candidate held back while deciding whether to remove it.
const MAX_HELD_EVENT: usize = 64 * 1024;

/// The largest request body read before its head goes upstream: pingora's retry buffer,
/// which replays it to the upstream, keeps 64 KiB.
const PREREAD_MAX: usize = 64 * 1024;

/// Span attributes and events of the gateway's own measurements (in the core's
/// [`semconv`], with every other name).
pub use llmtrace::semconv::gateway as names;

/// The error type of an upstream whose host name did not resolve (`upstream_unresolved`).
const UNRESOLVED: &str = "upstream_unresolved";

/// An upstream as the gateway uses it.
#[derive(Debug, Clone)]
struct Target {
    name: String,
    upstream: Upstream,
    config: UpstreamConfig,
    /// The upstream's `Host` header, made once.
    host: http::HeaderValue,
    /// The credentials header the gateway sends instead of the client's, made once.
    credentials: Option<(&'static str, http::HeaderValue)>,
    /// Where the upstream is: its address, a host name's refreshed off the request path.
    addr: Arc<UpstreamAddr>,
}

/// What a request is, besides an LLM API call.
enum Calls {
    None,
    /// An OpenAI Batch or Files API call.
    Batch(BatchCall),
    /// A request to a vector database upstream, and the call it is when recognised.
    VectorDb(Option<VectorDbCall>),
}

impl Calls {
    /// The route template of a recognised call.
    fn route(&self) -> Option<&'static str> {
        match self {
            Calls::None | Calls::VectorDb(None) => None,
            Calls::Batch(call) => Some(call.operation.route()),
            Calls::VectorDb(Some(call)) => Some(call.route()),
        }
    }
}

/// Batches and files whose maker's span the gateway remembers (about 200 bytes each).
const BATCH_INDEX_ENTRIES: usize = 10_000;

/// The pingora proxy.
pub struct Gateway {
    config: Arc<Config>,
    targets: Vec<Target>,
    tracer: BoxedTracer,
    recorder: Arc<GenAiRecorder>,
    state: AdminState,
    /// Request headers recorded on the SERVER span at its start (for sampling rules).
    capture: Option<RequestHeaderCapture>,
    /// `propagation.trusted_networks`, parsed.
    trusted: Vec<IpNetwork>,
    /// `telemetry.attributes`, when it maps anything.
    business: Option<BusinessContext>,
    /// Which span made each batch and file, for the later calls about them.
    batches: Arc<BatchIndex>,
    /// The routes' shadow traffic.
    shadows: Shadows,
    /// Tool calls asked for and not yet answered, for the `execute_tool` spans.
    tools: ToolCalls,
    /// Vector database calls (what they share: Chroma's collection names).
    vector_dbs: VectorDbs,
    /// Requests get SERVER spans; `false` with tracing off (see [`Gateway::without_spans`]).
    spans: bool,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field(
                "upstreams",
                &self.targets.iter().map(|t| &t.name).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// A gateway for a validated `config`, recording spans with `tracer`, GenAI spans and
    /// metrics with `recorder`, and its own counters in `state`.
    pub fn new(
        config: Arc<Config>,
        tracer: BoxedTracer,
        recorder: Arc<GenAiRecorder>,
        state: AdminState,
    ) -> Self {
        let targets = config
            .upstreams
            .iter()
            .map(|u| {
                let upstream = Upstream::parse(&u.url).expect("validated configuration");
                let addr = Arc::new(UpstreamAddr::new(&upstream.host, upstream.port));
                if let Err(unresolved) = addr.get() {
                    eprintln!(
                        "llmtrace-proxy: upstream {:?}: {unresolved}; its requests fail with 502 \
                         until it does (looked up again every {} s)",
                        u.name,
                        resolve::REFRESH.as_secs()
                    );
                }
                Target {
                    addr,
                    name: u.name.clone(),
                    host: http::HeaderValue::from_str(&upstream.authority())
                        .expect("a parsed URL's authority is a header value"),
                    credentials: credentials(u),
                    upstream,
                    config: u.clone(),
                }
            })
            .collect::<Vec<Target>>();
        resolve::spawn_refresher(
            targets
                .iter()
                .filter(|t| t.addr.is_name())
                .map(|t| Arc::downgrade(&t.addr))
                .collect(),
            resolve::REFRESH,
        );
        let names: Vec<http::HeaderName> = config
            .telemetry
            .capture_request_headers
            .iter()
            .filter_map(|n| http::HeaderName::from_bytes(n.as_bytes()).ok())
            .collect();
        let capture = (!names.is_empty()).then(|| RequestHeaderCapture::new(&names));
        let trusted = config
            .propagation
            .networks()
            .expect("validated configuration");
        let attributes = &config.telemetry.attributes;
        let business =
            (!attributes.is_empty()).then(|| attributes.build().expect("validated configuration"));
        Self {
            capture,
            trusted,
            business,
            batches: Arc::new(BatchIndex::new(BATCH_INDEX_ENTRIES)),
            shadows: Shadows::none(),
            tools: ToolCalls::default(),
            vector_dbs: VectorDbs::default(),
            config,
            targets,
            tracer,
            recorder,
            state,
            spans: true,
        }
    }

    /// This gateway starting no SERVER spans (tracing off): each request's context is the
    /// one its client sent (as `[propagation]` admits it), passed upstream unchanged. Give
    /// it a recorder made `with_spans(false)` too.
    pub fn without_spans(mut self) -> Self {
        self.spans = false;
        self
    }

    /// This gateway with the routes' shadow traffic.
    pub fn with_shadows(mut self, shadows: Shadows) -> Self {
        self.shadows = shadows;
        self
    }
}

/// One request's state across the phases, in the few parts each phase reads.
#[derive(Default)]
pub struct RequestCtx {
    /// The client's request id (or ours) and the provider's.
    ids: RequestIds,
    /// The inbound SERVER span and what the client was answered.
    inbound: Inbound,
    /// The GenAI exchange, for LLM API calls.
    llm: LlmExchange,
    /// The span of an OpenAI Batch or Files API call (boxed, as the vector database span:
    /// most requests have neither, and the context is held for as long as a stream lasts).
    batch: Option<Box<BatchSpan>>,
    /// The span of a vector database call.
    vector_db: Option<Box<VectorDbSpan>>,
    /// Which upstream each attempt goes to, and whether another is allowed.
    attempts: Attempts,
    /// The request body: counted, copied (bounded) to read the model, and held back when
    /// the gateway may splice usage into it.
    body: RequestBody,
    /// When things happened, for the gateway's own latency.
    timing: Timing,
    /// Counts the request in flight until the context is dropped.
    in_flight: Option<InFlight>,
    /// The canary cohort, on a route that splits.
    cohort: Option<Assignment>,
    /// The index of the request's route.
    route_index: usize,
    /// A mirrored request, until its body is read.
    shadow: Option<shadow::Plan>,
    /// Where the primary's ending goes, once the shadow was sent.
    shadow_primary: Option<tokio::sync::oneshot::Sender<shadow::Primary>>,
}

/// The request ids a request carries.
#[derive(Default)]
struct RequestIds {
    /// The client's `x-request-id` (bounded), or one the gateway made.
    request_id: String,
    /// The provider's own `x-request-id` (bounded), when it sent one.
    upstream_request_id: Option<String>,
}

/// The inbound side: the SERVER span and the answer.
#[derive(Default)]
struct Inbound {
    span: Option<InboundSpan>,
    /// The response head was recorded on the SERVER span.
    head: bool,
    /// The status sent (or to be sent) to the client; 0 before any.
    status: u16,
    /// The route template (`/v1/chat/completions`), for LLM API calls.
    route: Option<&'static str>,
}

/// The LLM exchange: its span, what the gateway learned of the request, and the usage splice.
#[derive(Default)]
struct LlmExchange {
    span: Option<GenAiSpan>,
    endpoint: Option<Endpoint>,
    /// The request body was read by the core (a retry replays it: once is enough).
    request_parsed: bool,
    prompt_hash: Option<u64>,
    /// Set when the gateway asked upstream for usage: the usage chunk is removed again.
    usage_filter: Option<UsageChunkFilter>,
    /// `llmtrace.usage.injection`: whether usage was spliced in (and removed), or why not.
    usage_injection: Option<&'static str>,
    /// Set when the exchange ends (boxed: empty for as long as a stream lasts).
    summary: Option<Box<Summary>>,
}

impl LlmExchange {
    /// Usage was spliced into the request: each attempt's answer has its usage chunk removed.
    fn usage_spliced(&self) -> bool {
        self.usage_injection == Some("added")
    }
}

/// Attempts across a route's upstream and its fallbacks. Pure: the gateway asks, pingora does.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Attempts {
    /// The target of the current attempt.
    target: Option<usize>,
    /// Targets of the route, in the order attempts use them.
    candidates: Vec<usize>,
    max_attempts: u32,
    retry_on: Vec<u16>,
    /// 0 for the first attempt.
    attempt: u32,
    /// A retry of a reused connection the upstream had closed (it never saw the request).
    stale_retried: bool,
    /// Set when an answer was turned into a retry.
    retry_status: Option<u16>,
    /// The current attempt's upstream answered (its response head arrived).
    answered: bool,
}

impl Attempts {
    fn new(candidates: Vec<usize>, max_attempts: u32, retry_on: Vec<u16>) -> Self {
        Attempts {
            target: candidates.first().copied(),
            candidates,
            max_attempts,
            retry_on,
            ..Attempts::default()
        }
    }

    /// The target of this attempt: the i-th candidate, wrapping around.
    fn select(&mut self) -> usize {
        let index = match self.candidates.len() {
            0 => self.target.unwrap_or(0),
            n => self.candidates[self.attempt as usize % n],
        };
        self.target = Some(index);
        index
    }

    /// Another attempt is allowed: attempts remain and the body can be replayed.
    fn may_retry(&self, replay_truncated: bool) -> bool {
        self.attempt + 1 < self.max_attempts && !replay_truncated
    }

    /// An answer with `status` becomes a retry (nothing of it reaches the client).
    fn retries(&self, status: u16, replay_truncated: bool) -> bool {
        self.retry_on.contains(&status) && self.may_retry(replay_truncated)
    }

    /// The next attempt goes to the next candidate.
    fn advance(&mut self) {
        self.attempt += 1;
        self.answered = false;
    }
}

/// When things happened to one request.
#[derive(Default)]
struct Timing {
    received: Option<Instant>,
    peer_selected: Option<Instant>,
    upstream_sent: Option<Instant>,
    total_deadline: Option<Instant>,
    chunk_arrived: Option<Instant>,
    chunk_latency: ChunkLatency,
}

/// The gateway's own time per response chunk.
#[derive(Default, Debug, Clone, Copy)]
struct ChunkLatency {
    max: Duration,
    sum: Duration,
    count: u32,
}

#[async_trait]
impl ProxyHttp for Gateway {
    /// Boxed: pingora keeps the context inside the request's future, which is moved (copied)
    /// as it is polled and spawned; a 3 KiB context inline made each move cost ~9k
    /// instructions per request more than bare pingora's (callgrind, `instructions.sh`).
    type CTX = Box<RequestCtx>;

    fn new_ctx(&self) -> Box<RequestCtx> {
        Box::default()
    }

    /// The request head arrived: route it, check the client, continue the caller's trace.
    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut Box<RequestCtx>,
    ) -> Result<bool> {
        ctx.timing.received = Some(Instant::now());
        ctx.in_flight = Some(self.state.metrics.start());
        if self.state.draining() {
            // Shutting down: serve this request, then close the connection.
            session.set_keepalive(None);
        }
        let req = session.req_header();
        ctx.ids.request_id = req
            .headers
            .get(&REQUEST_ID_NAME)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 200 && v.is_ascii())
            .map_or_else(new_request_id, str::to_owned);
        let limit = self.config.server.max_request_body_bytes;
        // Only configured upstreams, only through a route, only for a path every upstream
        // reads the way the gateway does (see `path`).
        let (target_index, route) = match self.admit(req, limit) {
            Ok(admitted) => admitted,
            Err(refusal) => return self.refuse(session, ctx, refusal).await,
        };
        let target_index = self.plan_attempts(ctx, route, target_index, &req.headers);
        let target = &self.targets[target_index];

        let calls = self.detect_calls(target, ctx, session.req_header());
        let route_name = ctx
            .llm
            .endpoint
            .as_ref()
            .map(Endpoint::route)
            .or_else(|| calls.route());
        let cohort = ctx.cohort.map(|c| self.state.canary.name(c));
        let server = self.start_server_span(session, route_name, cohort);
        let server_cx = server.context().cloned().unwrap_or_default();
        self.start_call_span(calls, target, session, &server_cx, ctx);
        if let Some(endpoint) = ctx.llm.endpoint.clone() {
            // The model is in the body, which arrives after the request head has gone
            // upstream: the GenAI span starts now and is named once the body is read.
            let exchange = Exchange::new(
                self.recorder.config().clone(),
                endpoint.clone(),
                RequestInfo::from_endpoint(&endpoint),
                Instant::now(),
            );
            // pingora's request head is an `http::request::Parts`: borrowed, not cloned.
            ctx.llm.span = Some(GenAiSpan::start(
                &self.recorder,
                exchange,
                session.req_header().as_ref(),
                &server_cx,
            ));
            ctx.shadow = self.shadows.plan(ctx.route_index, &ctx.ids.request_id);
            if let (Some(_), Some(span)) = (&ctx.shadow, ctx.llm.span.as_mut()) {
                span.keep_output(shadow::OUTPUT_CAP);
            }
            let hold =
                self.config.telemetry.inject_stream_usage && endpoint.format.accepts_stream_usage();
            ctx.body = RequestBody::new(limit, self.recorder.max_request_bytes(), hold)
                .with_expected_len(content_length(session.req_header()));
        }
        ctx.inbound.route = route_name;
        ctx.inbound.span = Some(server);
        self.preread_body(session, ctx).await?;
        Ok(false)
    }

    /// Where to send it: the routed upstream, nowhere else.
    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut Box<RequestCtx>,
    ) -> Result<Box<HttpPeer>> {
        let index = ctx.attempts.select();
        let addr = match self.targets[index].addr.get() {
            Ok(addr) => addr,
            Err(unresolved) => return Err(self.unresolved(session, ctx, unresolved)),
        };
        let now = Instant::now();
        ctx.timing.peer_selected.get_or_insert(now);
        let target = &self.targets[index];
        if let Some(total) = target.config.total_timeout_ms {
            let received = ctx.timing.received.unwrap_or(now);
            ctx.timing.total_deadline = Some(received + Duration::from_millis(total));
        }
        let upstream = &target.upstream;
        let mut peer = HttpPeer::new(addr, upstream.tls, upstream.host.clone());
        peer.options.connection_timeout =
            Some(Duration::from_millis(target.config.connect_timeout_ms));
        let read_ms = target
            .config
            .first_byte_timeout_ms
            .map_or(target.config.idle_timeout_ms, |ttfb| {
                ttfb.min(target.config.idle_timeout_ms)
            });
        peer.options.read_timeout = Some(Duration::from_millis(read_ms));
        peer.options.idle_timeout = Some(Duration::from_secs(60));
        Ok(Box::new(peer))
    }

    /// The request head going upstream: our context, the request id, the upstream's host and
    /// credentials.
    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Box<RequestCtx>,
    ) -> Result<()> {
        let target = &self.targets[ctx.attempts.target.unwrap_or(0)];
        // A retry replays the body from the start.
        ctx.body.restart();
        ctx.llm.usage_filter = None;
        ctx.attempts.retry_status = None;
        let upstream = &target.upstream;
        upstream_request.insert_header(http::header::HOST, target.host.clone())?;
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
        if let Some((name, value)) = &target.credentials {
            for name in ["authorization", "x-api-key", "api-key", "x-chroma-token"] {
                upstream_request.remove_header(name);
            }
            upstream_request.insert_header(*name, value.clone())?;
        }
        if let Some(ready) = ctx.body.ready() {
            // Read before the head: its length is known, spliced or not (a header that says it
            // already is left alone: pingora's insert costs ~1.3k instructions).
            if content_length(upstream_request) != Some(ready.len()) {
                upstream_request.insert_header(http::header::CONTENT_LENGTH, ready.len())?;
            }
            if ctx.llm.usage_spliced() {
                ctx.llm.usage_filter = Some(UsageChunkFilter::new(MAX_HELD_EVENT));
            }
        } else if ctx.body.holding() {
            // The body may get usage spliced in: its length is not known yet (pingora sends
            // it chunked).
            upstream_request.remove_header(&http::header::CONTENT_LENGTH);
        }
        if ctx.body.may_hold() {
            // An answer the gateway may have to edit, or read, must come uncompressed.
            upstream_request.insert_header(http::header::ACCEPT_ENCODING, "identity")?;
        }
        upstream_request.insert_header(REQUEST_ID_HEADER, ctx.ids.request_id.as_str())?;
        // The GenAI span's own id goes upstream, so a traced provider nests under it.
        let cx = ctx
            .llm
            .span
            .as_ref()
            .and_then(GenAiSpan::context)
            .or(ctx.batch.as_deref().and_then(BatchSpan::context))
            .or(ctx.vector_db.as_deref().and_then(VectorDbSpan::context))
            .or(ctx.inbound.span.as_ref().and_then(InboundSpan::context));
        if let Some(cx) = cx {
            let cohort = ctx.cohort.map(|c| self.state.canary.name(c));
            self.inject_context(cx, cohort, upstream_request)?;
            let sc = cx.span().span_context().clone();
            let header = ctx
                .llm
                .endpoint
                .as_ref()
                .and_then(|e| e.provider.client_request_id_header());
            if let Some(header) =
                header.filter(|h| sc.is_valid() && !upstream_request.headers.contains_key(*h))
            {
                // The trace id where the provider keeps the caller's own request id (when the
                // client sent none): the provider-side request is found from the trace.
                let trace_id = propagation::hex_trace_id(sc.trace_id());
                upstream_request.insert_header(header, trace_id.as_str())?;
            }
        }
        ctx.timing.upstream_sent = Some(Instant::now());
        Ok(())
    }

    /// Request body chunks, however the client's body is split into reads: counted against
    /// the limit and passed on as they come, with a bounded copy kept to read the model — or,
    /// for a request that may get usage spliced in, held until the end (bounded too).
    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Box<RequestCtx>,
    ) -> Result<()> {
        if ctx.body.ready().is_some() {
            // Read in `request_filter`: pingora replays the client's bytes from its retry
            // buffer; what goes upstream is the body prepared then.
            *body = Some(if end_of_stream {
                ctx.body.send_ready().unwrap_or_default()
            } else {
                Bytes::new()
            });
            self.mirror(session, body.as_ref(), end_of_stream, ctx);
            return Ok(());
        }
        let ended = match ctx.body.on_chunk(body, end_of_stream) {
            Ok(Some(ended)) => ended,
            Ok(None) => return Ok(()),
            Err(TooLarge { limit }) => {
                // Nothing of a held body went upstream; a streamed one is cut off there.
                return Err(Error::explain(
                    ErrorType::HTTPStatus(413),
                    too_large(limit).message,
                ));
            }
        };
        self.body_ended(ctx, ended, body);
        self.mirror(session, body.as_ref(), end_of_stream, ctx);
        Ok(())
    }

    /// The upstream's response head, before anything reaches the client: a status the route
    /// retries on becomes a retry while attempts remain.
    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Box<RequestCtx>,
    ) -> Result<()> {
        let status = upstream_response.status.as_u16();
        if ctx
            .attempts
            .retries(status, session.as_ref().retry_buffer_truncated())
        {
            ctx.attempts.retry_status = Some(status);
            let mut error = Error::explain(
                ErrorType::HTTPStatus(status),
                "upstream answered with a retryable status",
            );
            error.set_retry(true);
            return Err(error);
        }
        Ok(())
    }

    /// Each chunk as read from the upstream: the start of the gateway's time for it.
    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        _body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Box<RequestCtx>,
    ) -> Result<Option<Duration>> {
        ctx.timing.chunk_arrived = Some(Instant::now());
        Ok(None)
    }

    /// Connecting failed: another attempt when the route allows one (nothing was sent).
    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Box<RequestCtx>,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let retry = self.may_retry(session, ctx);
        e.set_retry(retry);
        if retry {
            self.note_retry(ctx, &error_type(&e));
        }
        e
    }

    /// Proxying failed before or while the response came: retried only while nothing has
    /// reached the client — a status the route retries on, or a kept-alive connection the
    /// upstream had already closed (it never saw the request).
    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Box<RequestCtx>,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("upstream {peer}"));
        let replayable = ctx.inbound.status == 0 && !session.as_ref().retry_buffer_truncated();
        if let Some(status) = ctx.attempts.retry_status.take() {
            let retry = replayable && self.may_retry(session, ctx);
            e.set_retry(retry);
            if retry {
                self.note_retry(ctx, &status.to_string());
            }
        } else {
            e.retry.decide_reuse(client_reused);
            let stale = e.retry() && replayable && !ctx.attempts.stale_retried;
            e.set_retry(stale);
            if stale {
                // Same upstream again, not counted as an attempt.
                ctx.attempts.stale_retried = true;
            }
        }
        e
    }

    /// The response head going to the client: tell it the trace and request ids.
    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Box<RequestCtx>,
    ) -> Result<()> {
        ctx.inbound.status = upstream_response.status.as_u16();
        // No attempt follows: the body prepared for them need not last as long as the stream.
        ctx.body.release_ready();
        if let Some(genai) = ctx.llm.span.as_mut() {
            genai.on_response_head(upstream_response.status, &upstream_response.headers);
        }
        if let Some(batch) = ctx.batch.as_mut() {
            batch.on_response_head(upstream_response.status, &upstream_response.headers);
        }
        if let Some(call) = ctx.vector_db.as_mut() {
            call.on_response_head(upstream_response.status, &upstream_response.headers);
        }
        // Which upstream answered, after how many attempts, goes on the GenAI span when it
        // ends (`gateway_time`), not held as attributes while the answer streams.
        ctx.attempts.answered = true;
        if ctx.llm.usage_filter.is_some() {
            if !is_event_stream(&upstream_response.headers) {
                // An error answer, not a stream: there is no usage chunk to take out.
                ctx.llm.usage_filter = None;
            } else if is_encoded(&upstream_response.headers) {
                // Asked for identity, got compressed bytes: they pass untouched, usage chunk
                // included, and the span says so.
                ctx.llm.usage_filter = None;
                ctx.llm.usage_injection = Some("added:not_removed:compressed");
            } else {
                // The body changes length: it goes out chunked.
                upstream_response.remove_header(&http::header::CONTENT_LENGTH);
            }
        }
        if let Some(server) = ctx.inbound.span.as_mut() {
            server.on_response_head(upstream_response.status, &upstream_response.headers);
            ctx.inbound.head = true;
        }
        if let Some(trace_id) = trace_id_of(&ctx.inbound) {
            upstream_response.insert_header(TRACE_ID_HEADER, trace_id.as_str())?;
        }
        // The provider's own request id (the one its support asks for) reaches the client
        // untouched and is recorded; ours is returned only when the provider sent none.
        match upstream_response
            .headers
            .get(&REQUEST_ID_NAME)
            .and_then(|v| v.to_str().ok())
        {
            Some(upstream_id) => {
                let upstream_id = bounded(upstream_id, limits::MAX_NAME_BYTES).into_owned();
                ctx.ids.upstream_request_id = Some(upstream_id.clone());
                if let Some(cx) = ctx.inbound.span.as_ref().and_then(InboundSpan::context) {
                    cx.span()
                        .set_attribute(KeyValue::new(names::UPSTREAM_REQUEST_ID, upstream_id));
                }
            }
            None => {
                upstream_response.insert_header(REQUEST_ID_HEADER, ctx.ids.request_id.as_str())?;
            }
        }
        Ok(())
    }

    /// Each response body chunk: the core observes it as the provider sent it, and it goes on
    /// at once, unchanged (bar a usage chunk the gateway asked for itself).
    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Box<RequestCtx>,
    ) -> Result<Option<Duration>> {
        // The time the chunk arrived (read by `upstream_response_body_filter` for this same
        // chunk, just before): the deadline and the chunk's timing use it rather than clock
        // reads of their own; the only one here is the gateway's time on the chunk.
        let now = ctx.timing.chunk_arrived.unwrap_or_else(Instant::now);
        if let Some(deadline) = ctx.timing.total_deadline {
            if now > deadline && !end_of_stream {
                return Err(Error::explain(
                    ErrorType::ReadTimedout,
                    "the exchange ran past the upstream's total_timeout_ms",
                ));
            }
        }
        if let Some(genai) = ctx.llm.span.as_mut() {
            if let Some(chunk) = body.as_ref() {
                genai.on_response_data_at(chunk, now);
            }
            if let Some(filter) = ctx.llm.usage_filter.as_mut() {
                let chunk = body.take().unwrap_or_default();
                *body = Some(filter.filter(chunk, end_of_stream));
            }
        }
        if let (Some(batch), Some(chunk)) = (ctx.batch.as_mut(), body.as_ref()) {
            batch.on_response_data(chunk);
        }
        if let (Some(call), Some(chunk)) = (ctx.vector_db.as_mut(), body.as_ref()) {
            call.on_response_data(chunk);
        }
        if let (Some(server), Some(chunk)) = (ctx.inbound.span.as_mut(), body.as_ref()) {
            server.on_data(chunk.len());
        }
        if let Some(arrived) = ctx.timing.chunk_arrived.take() {
            let spent = arrived.elapsed();
            let latency = &mut ctx.timing.chunk_latency;
            latency.max = latency.max.max(spent);
            latency.sum += spent;
            latency.count += 1;
        }
        if end_of_stream {
            self.finish_genai(ctx, &End::Complete);
            if let Some(mut batch) = ctx.batch.take() {
                batch.finish(End::Complete);
            }
            if let Some(mut call) = ctx.vector_db.take() {
                call.finish(End::Complete);
            }
        }
        Ok(None)
    }

    /// Proxying failed before the provider's answer reached the client: the client gets an
    /// answer in its SDK's error shape that says what went wrong (not pingora's empty 502).
    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Box<RequestCtx>,
    ) -> FailToProxy {
        let upstream = ctx.attempts.target.map(|i| &self.targets[i]);
        let limit = self.config.server.max_request_body_bytes;
        let Some(reply) = failure_reply(e, upstream, limit) else {
            // The client is gone: nobody to answer.
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        };
        if session.response_written().is_none() {
            ctx.inbound.status = reply.status;
            let shape = ErrorShape::for_path(session.req_header().uri.path());
            let trace_id = trace_id_of(&ctx.inbound);
            let body = reply.body(shape, &ctx.ids.request_id);
            let trace_id = trace_id.as_ref().map(|id| id.as_str());
            let written = match reply_header(reply.status, &ctx.ids.request_id, trace_id) {
                Ok(mut header) => {
                    let _ = header.insert_header(http::header::CONTENT_LENGTH, body.len());
                    session.write_error_response(header, body).await
                }
                Err(e) => Err(e),
            };
            // A client that is gone by now gets nothing; the span still ends in `logging`.
            if written.is_ok() {
                drain_briefly(session).await;
            }
        }
        FailToProxy {
            error_code: reply.status,
            can_reuse_downstream: false,
        }
    }

    /// The request is over, one way or another: end the spans, write the access log line.
    async fn logging(
        &self,
        session: &mut Session,
        error: Option<&Error>,
        ctx: &mut Box<RequestCtx>,
    ) {
        let end = end_of(error);
        if let Some(mut batch) = ctx.batch.take() {
            batch.finish(end.clone());
        }
        if let Some(mut call) = ctx.vector_db.take() {
            call.finish(end.clone());
        }
        self.finish_genai(ctx, &end);
        tell_shadow(ctx, &end);
        let status = session
            .response_written()
            .map_or(ctx.inbound.status, |r| r.status.as_u16());
        let aborted = matches!(end, End::Aborted);
        let ids = end_server_span(
            session,
            &mut ctx.inbound,
            &ctx.ids.request_id,
            status,
            end.clone(),
        );
        let (trace_id, span_id) = ids.as_ref().map_or(("", ""), |(trace, span)| {
            (trace.as_str(), span.as_ref().map_or("", |s| s.as_str()))
        });
        let error_type = match end {
            End::Aborted => Some(semconv::llmtrace::ABORTED_ERROR_TYPE.to_owned()),
            End::Failed { error_type, .. } => Some(error_type.into_owned()),
            End::Complete if status >= 500 => Some(status.to_string()),
            End::Complete => ctx.llm.summary.as_ref().and_then(|s| s.error_type.clone()),
        };
        let upstream = ctx.attempts.target.map(|i| self.targets[i].name.as_str());
        self.state.metrics.record(
            ctx.inbound.route.unwrap_or(""),
            upstream.unwrap_or(""),
            status,
            error_type.as_deref(),
        );
        self.record_outcome(ctx, status, error_type.as_deref(), aborted);
        if self.config.telemetry.access_log {
            let none = Summary::default();
            let summary = ctx.llm.summary.as_deref().unwrap_or(&none);
            let req = session.req_header();
            let timing = &ctx.timing;
            let prompt_hash_hex = ctx.llm.prompt_hash.map(hex16);
            AccessLogLine {
                trace_id,
                span_id,
                request_id: &ctx.ids.request_id,
                upstream_request_id: ctx.ids.upstream_request_id.as_deref(),
                method: bounded(req.method.as_str(), limits::MAX_NAME_BYTES),
                path: bounded(req.uri.path(), limits::MAX_URL_BYTES),
                route: ctx.inbound.route,
                upstream,
                status,
                duration_ms: timing.received.map(|t| millis(t.elapsed())),
                gateway_ms: timing
                    .received
                    .zip(timing.peer_selected)
                    .map(|(received, selected)| millis(selected.duration_since(received))),
                gateway_chunk_max_ms: (timing.chunk_latency.count > 0)
                    .then(|| millis(timing.chunk_latency.max)),
                attempts: ctx.attempts.attempt + 1,
                error_type: error_type.as_deref(),
                prompt_hash: prompt_hash_hex
                    .as_ref()
                    .and_then(|hex| std::str::from_utf8(hex).ok()),
                client_aborted: error.is_some_and(is_downstream),
                ..AccessLogLine::default()
            }
            .with_summary(summary)
            .write();
        }
    }
}

impl Gateway {
    /// Ends the GenAI span (once): its summary for the access log, and the tool calls its
    /// answer asked for, for the `execute_tool` span of the request that answers them.
    fn finish_genai(&self, ctx: &mut RequestCtx, end: &End) {
        let Some(mut genai) = ctx.llm.span.take() else {
            return;
        };
        let asked_by = genai.context().map(|cx| cx.span().span_context().clone());
        let targets = &self.targets;
        let Some(summary) = genai.finish_with(end.clone(), |_| gateway_time(ctx, targets)) else {
            return;
        };
        if let (Some(asked_by), End::Complete) = (&asked_by, end) {
            let (calls, arguments) = (&summary.tool_calls, &summary.tool_arguments);
            self.tools
                .asked(calls, arguments, asked_by, SystemTime::now());
        }
        ctx.llm.summary = Some(Box::new(summary));
    }

    /// Counts the request, sampled or not, against the objectives, the TTFT charts and its
    /// canary cohort.
    fn record_outcome(
        &self,
        ctx: &RequestCtx,
        status: u16,
        error_type: Option<&str>,
        aborted: bool,
    ) {
        if let Some(slo) = &self.state.slo {
            record_slo(slo, ctx, status, error_type, aborted);
        }
        if aborted {
            return;
        }
        let summary = ctx.llm.summary.as_deref();
        if let (Some(anomalies), Some(summary)) = (&self.state.anomalies, summary) {
            if let Some(ttft) = summary.time_to_first_chunk {
                let model = summary.request_model.as_deref().unwrap_or("");
                let route = ctx.inbound.route.unwrap_or("");
                anomalies.observe(route, model, ttft, std::time::SystemTime::now());
            }
        }
        if let Some(cohort) = ctx.cohort {
            let failed = Outcome {
                status,
                error_type,
                ..Outcome::default()
            }
            .failed();
            self.state.canary.record(
                cohort,
                &canary::outcome(
                    summary.and_then(|s| s.time_to_first_chunk),
                    failed,
                    summary.and_then(|s| Some(s.input_tokens.unwrap_or(0) + s.output_tokens?)),
                    summary.and_then(|s| s.cost),
                ),
            );
        }
    }
}

/// Counts the request against the service level objectives, sampled or not.
fn record_slo(
    slo: &SloEngine,
    ctx: &RequestCtx,
    status: u16,
    error_type: Option<&str>,
    aborted: bool,
) {
    let summary = ctx.llm.summary.as_deref();
    let outcome = Outcome {
        route: ctx.inbound.route,
        model: summary.and_then(|s| s.request_model.as_deref()),
        cohort: None,
        status,
        error_type,
        aborted,
        streamed: summary.is_some_and(|s| s.streamed),
        ttft: summary.and_then(|s| s.time_to_first_chunk),
        duration: ctx.timing.received.map(|t| t.elapsed()).unwrap_or_default(),
        output_tokens_per_second: summary.and_then(|s| s.output_tokens_per_second),
    };
    slo.record(&outcome, std::time::SystemTime::now());
}

/// How the exchange ended, from pingora's error (if any): the client going away is an abort.
fn end_of(error: Option<&Error>) -> End {
    match error {
        None => End::Complete,
        Some(e) if is_downstream(e) => End::Aborted,
        Some(e) => End::Failed {
            error_type: error_type(e).into(),
            message: e.to_string(),
        },
    }
}

fn is_downstream(e: &Error) -> bool {
    e.esource() == &ErrorSource::Downstream
}

/// Tells the shadow request, if one was sent, how the primary ended.
fn tell_shadow(ctx: &mut RequestCtx, end: &End) {
    if let Some(shadow) = ctx.shadow_primary.take() {
        let ended = match end {
            End::Complete => "complete",
            End::Aborted => "aborted",
            End::Failed { .. } => "failed",
        };
        // The shadow may be gone (timed out): nothing to tell it then.
        let _ = shadow.send(shadow::Primary {
            ended,
            summary: ctx.llm.summary.as_deref().cloned(),
        });
    }
}

/// The SERVER span's trace id, when it has a valid one (with tracing off: the client's).
fn trace_id_of(inbound: &Inbound) -> Option<propagation::Hex<32>> {
    let cx = inbound.span.as_ref().and_then(InboundSpan::context)?;
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid()
        .then(|| propagation::hex_trace_id(sc.trace_id()))
}

/// Ends the SERVER span (recording the status when no response head was recorded on it);
/// returns its trace and span ids for the access log (empty without a span).
fn end_server_span(
    session: &Session,
    inbound: &mut Inbound,
    request_id: &str,
    status: u16,
    end: End,
) -> Option<SpanIds> {
    let mut server = inbound.span.take()?;
    if server.wants_request_details() {
        server.record_request_details(
            &inbound_request(session, inbound.route),
            Some(KeyValue::new(
                "http.request.header.x-request-id",
                request_id.to_owned(),
            )),
        );
    }
    // Tracing off, the context is the client's (or none): its trace id is still the one to
    // look for, but the span id is the client's, not a SERVER span's.
    let ids = server.context().and_then(|cx| {
        let span = cx.span();
        let sc = span.span_context();
        sc.is_valid().then(|| {
            let span_id = (!sc.is_remote()).then(|| propagation::hex_span_id(sc.span_id()));
            (propagation::hex_trace_id(sc.trace_id()), span_id)
        })
    });
    if !inbound.head && status > 0 {
        if let Ok(status) = http::StatusCode::from_u16(status) {
            server.on_response_head(status, &http::HeaderMap::new());
        }
    }
    server.end(end);
    ids
}

impl Gateway {
    /// Where a request may go (its target and route), or why the gateway answers it itself.
    fn admit(
        &self,
        req: &RequestHeader,
        limit: usize,
    ) -> std::result::Result<(usize, &RouteConfig), GatewayReply> {
        let path = req.uri.path();
        if let Some(why) = crate::path::ambiguity(path) {
            return Err(GatewayReply::new(
                400,
                "ambiguous_path",
                format!(
                    "the request path contains {why}, which upstreams may read differently; \
                     send the path in normal form"
                ),
            ));
        }
        let route = self.config.route(path, request_host(req)).ok_or_else(|| {
            GatewayReply::new(
                404,
                "no_route",
                format!(
                    "no route of the gateway matches {} {}",
                    req.method,
                    clip(path, 256)
                ),
            )
        })?;
        if !route.client_keys.is_empty() && !client_key_ok(&req.headers, &route.client_keys) {
            return Err(GatewayReply::new(
                401,
                "invalid_api_key",
                "missing or unknown client key (send it as `Authorization: Bearer <key>`, \
                 `x-api-key` or `api-key`)",
            ));
        }
        let declared = req
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(too_large(limit));
        }
        let target = self
            .targets
            .iter()
            .position(|t| t.name == route.upstream)
            .expect("validated configuration");
        Ok((target, route))
    }

    /// Answers the request from the gateway itself (ambiguous path, no route, bad key, too
    /// large). It still gets its SERVER span, ended in `logging` with the status and the
    /// reason, so refusals show up in traces too.
    async fn refuse(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        refusal: GatewayReply,
    ) -> Result<bool> {
        let server = self.start_server_span(session, None, None);
        if let Some(cx) = server.context() {
            cx.span()
                .set_attribute(KeyValue::new(names::REFUSED, refusal.code));
        }
        ctx.inbound.span = Some(server);
        ctx.inbound.status = refusal.status;
        let shape = ErrorShape::for_path(session.req_header().uri.path());
        let header = reply_header(refusal.status, &ctx.ids.request_id, None)?;
        let body = refusal.body(shape, &ctx.ids.request_id);
        session
            .write_response_header(Box::new(header), false)
            .await?;
        session.write_response_body(Some(body), true).await?;
        drain_briefly(session).await;
        Ok(true)
    }

    /// Another attempt is allowed: the route has attempts left and pingora can replay the
    /// request body (it keeps the first 64 KiB).
    /// Reads a small body that may get usage spliced in before the request head goes
    /// upstream, so the head carries its final `Content-Length` and the body goes in one
    /// write, not re-chunked. Only a body with a `Content-Length` that fits pingora's retry
    /// buffer (which replays it to the upstream) and the copy cap, and no `Expect:
    /// 100-continue` (its client waits for the upstream's go-ahead); others stream as before.
    async fn preread_body(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<()> {
        if !ctx.body.may_hold() || ctx.llm.span.is_none() {
            return Ok(());
        }
        let headers = &session.req_header().headers;
        let length = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
        let cap = PREREAD_MAX.min(self.recorder.max_request_bytes());
        let Some(length) = length.filter(|len| *len <= cap) else {
            return Ok(());
        };
        if headers.contains_key(http::header::EXPECT)
            || headers.contains_key(http::header::TRANSFER_ENCODING)
        {
            return Ok(());
        }
        session.enable_retry_buffering();
        let mut read = bytes::BytesMut::with_capacity(length);
        while let Some(chunk) = session.read_request_body().await? {
            read.extend_from_slice(&chunk);
        }
        // pingora keeps no buffer for an empty body, and needs none: it sends the end.
        if !read.is_empty() && session.get_retry_buffer().is_none() {
            // Not replayable after all (pingora dropped its copy): nothing can be re-sent.
            return Error::e_explain(
                ErrorType::InternalError,
                "request body read ahead but not kept for the upstream",
            );
        }
        let mut chunk = Some(read.freeze());
        match ctx.body.on_chunk(&mut chunk, true) {
            Ok(Some(ended)) => self.body_ended(ctx, ended, &mut chunk),
            Ok(None) => {}
            Err(TooLarge { limit }) => {
                return Error::e_explain(ErrorType::HTTPStatus(413), too_large(limit).message);
            }
        }
        ctx.body.set_ready(chunk.unwrap_or_default());
        Ok(())
    }

    /// The request body ended (in the body filter, or read ahead in `request_filter`): the
    /// core reads it once, and a body that may get usage spliced in is rewritten (or left
    /// as is) into `body`, with the span told which and why.
    fn body_ended(&self, ctx: &mut RequestCtx, ended: Ended, body: &mut Option<Bytes>) {
        if let Some(call) = ctx.vector_db.as_mut() {
            call.on_request_body(ended.copy.as_deref());
        }
        let (Some(genai), Some(endpoint)) = (ctx.llm.span.as_mut(), ctx.llm.endpoint.as_ref())
        else {
            return;
        };

        let cap = self.recorder.max_request_bytes();
        if !ctx.llm.request_parsed {
            // A retry replays the same body: read it once.
            ctx.llm.request_parsed = true;
            let mut info = match ended.copy.as_deref() {
                Some(copy) => {
                    // For the access log only: a pass over the whole body (~30k
                    // instructions for 100 KB) that nothing else reads.
                    if self.config.telemetry.access_log {
                        ctx.llm.prompt_hash = Some(prompt_hash(copy));
                    }
                    RequestInfo::parse_with(endpoint, copy, self.recorder.config())
                }
                None => RequestInfo::body_not_read(endpoint, cap),
            };
            let results = info.tool_results.clone();
            // Only with content capture: what the results say, for the `execute_tool` spans.
            let contents = std::mem::take(&mut info.tool_result_content);
            genai.set_request(info);
            if !results.is_empty() {
                // The time since the answer that asked for these calls was the tools' run.
                let parent = ctx.inbound.span.as_ref().and_then(InboundSpan::context);
                let arrived = SystemTime::now()
                    - ctx.timing.received.map(|t| t.elapsed()).unwrap_or_default();
                if let Some(parent) = parent {
                    let tracer = &self.tracer;
                    self.tools
                        .answered(tracer, &results, &contents, parent, arrived);
                }
            }
        }
        if !ctx.body.may_hold() {
            return;
        }
        // This request could have had usage spliced in: say whether it was, and why not.
        let outcome = match (ended.held, ended.copy) {
            (true, Some(original)) => {
                match request_with_usage_read(endpoint, &original, genai.exchange().request()) {
                    Ok(rewritten) => {
                        ctx.llm.usage_filter = Some(UsageChunkFilter::new(MAX_HELD_EVENT));
                        *body = Some(Bytes::from(rewritten));
                        "added"
                    }
                    Err(skip) => {
                        *body = Some(original);
                        skip.outcome()
                    }
                }
            }
            // Released at the cap: it went through untouched.
            _ => "skipped:too_large",
        };
        ctx.llm.usage_injection = Some(outcome);
    }

    /// The chosen upstream's host name did not resolve: the error pingora answers with (a
    /// `502` saying so, see `failure_reply`), retried on the next candidate when the route
    /// allows another attempt.
    fn unresolved(
        &self,
        session: &Session,
        ctx: &mut RequestCtx,
        unresolved: resolve::Unresolved,
    ) -> Box<Error> {
        let mut e = Error::explain(ErrorType::Custom(UNRESOLVED), unresolved.to_string());
        e.esource = ErrorSource::Upstream;
        let retry = self.may_retry(session, ctx);
        e.set_retry(retry);
        if retry {
            self.note_retry(ctx, UNRESOLVED);
        }
        e
    }

    fn may_retry(&self, session: &Session, ctx: &RequestCtx) -> bool {
        ctx.attempts
            .may_retry(session.as_ref().retry_buffer_truncated())
    }

    /// Counts and records a failed attempt; the next one goes to the next candidate.
    fn note_retry(&self, ctx: &mut RequestCtx, reason: &str) {
        let upstream = ctx
            .attempts
            .target
            .map_or("", |i| self.targets[i].name.as_str());
        self.state.metrics.retry(upstream, reason);
        if let Some(cx) = ctx.llm.span.as_ref().and_then(GenAiSpan::context) {
            cx.span().add_event(
                names::RETRY_EVENT,
                vec![
                    KeyValue::new(names::UPSTREAM_NAME, upstream.to_owned()),
                    KeyValue::new(names::RETRY_REASON, reason.to_owned()),
                    KeyValue::new(
                        names::UPSTREAM_ATTEMPTS,
                        i64::from(ctx.attempts.attempt + 1),
                    ),
                ],
            );
        }
        ctx.attempts.advance();
    }

    /// The SERVER span, continuing, linking or ignoring the client's trace context as
    /// `[propagation]` says for this peer.
    fn start_server_span(
        &self,
        session: &Session,
        route: Option<&str>,
        cohort: Option<&str>,
    ) -> InboundSpan {
        let req = session.req_header();
        let peer = session.client_addr().and_then(|a| a.as_inet()).copied();
        let (parent, link) = self.incoming(peer).extract(&req.headers);
        let mut business = self
            .business
            .as_ref()
            .and_then(|b| b.extract(&req.headers, &parent));
        if let Some(cohort) = cohort {
            // On both spans from their start (head rules can match it) and on the metrics.
            let with = business.as_deref().cloned().unwrap_or_default().with(
                canary::COHORT,
                cohort.to_owned(),
                true,
            );
            business = Some(Arc::new(with));
        }
        let request = InboundRequest {
            business: business.as_ref(),
            ..inbound_request(session, route)
        };
        if !self.spans {
            return InboundSpan::untraced(&request, &parent);
        }
        // The request's details (and its id) are recorded when the span ends, from the
        // request head pingora still holds then: a stream open for minutes does not hold them
        // as attributes meanwhile (`end_server_span`).
        InboundSpan::start_without_details(
            &self.tracer,
            &request,
            &parent,
            link,
            self.capture.as_ref(),
        )
    }
}

/// The request head as the SERVER span reads it (without business context).
fn inbound_request<'a>(session: &'a Session, route: Option<&'a str>) -> InboundRequest<'a> {
    let req = session.req_header();
    InboundRequest {
        method: &req.method,
        uri: &req.uri,
        version: if session.is_http2() {
            http::Version::HTTP_2
        } else {
            http::Version::HTTP_11
        },
        headers: &req.headers,
        route,
        peer: session.client_addr().and_then(|a| a.as_inet()).copied(),
        business: None,
    }
}

impl Gateway {
    /// Copies what goes upstream for a mirrored request, and sends the mirror once the body
    /// is whole (off the request path: the client never waits for it).
    fn mirror(
        &self,
        session: &Session,
        body: Option<&Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) {
        let Some(plan) = ctx.shadow.as_mut() else {
            return;
        };
        if !body.is_none_or(|b| self.shadows.on_body(plan, b)) {
            ctx.shadow = None;
            return;
        }
        if !end_of_stream {
            return;
        }
        let (Some(plan), Some(endpoint), Some(cx)) = (
            ctx.shadow.take(),
            ctx.llm.endpoint.clone(),
            ctx.llm.span.as_ref().and_then(GenAiSpan::context),
        ) else {
            return;
        };
        let launch = shadow::Launch {
            head: session.req_header().as_ref(),
            endpoint,
            primary: cx.span().span_context().clone(),
        };
        ctx.shadow_primary = self.shadows.launch(plan, launch);
    }

    /// The request's attempts: its cohort's upstream on a canary route (else the route's),
    /// then the fallbacks. Returns the first attempt's target.
    fn plan_attempts(
        &self,
        ctx: &mut RequestCtx,
        route: &RouteConfig,
        target_index: usize,
        headers: &http::HeaderMap,
    ) -> usize {
        let route_index = self
            .config
            .routes
            .iter()
            .position(|r| std::ptr::eq(r, route))
            .unwrap_or(0);
        ctx.route_index = route_index;
        ctx.cohort = self
            .state
            .canary
            .assign(route_index, headers, &ctx.ids.request_id);
        let target_index = ctx.cohort.map_or(target_index, |c| c.target);
        let candidates = std::iter::once(target_index)
            .chain(
                route
                    .fallbacks
                    .iter()
                    .filter_map(|name| self.targets.iter().position(|t| &t.name == name)),
            )
            .collect();
        ctx.attempts = Attempts::new(candidates, route.max_attempts(), route.retry_on.clone());
        target_index
    }

    /// What a request is besides an LLM call (sets `ctx.llm.endpoint` for those): a Batch or
    /// Files API call, for an upstream that serves those APIs (OpenAI, Azure OpenAI,
    /// OpenAI-compatible), or a vector database call, for a vector database upstream.
    fn detect_calls(&self, target: &Target, ctx: &mut RequestCtx, req: &RequestHeader) -> Calls {
        let system = target.config.provider.vector_db();
        if system.is_some() {
            return Calls::VectorDb(VectorDbs::detect(system, req));
        }
        ctx.llm.endpoint = Endpoint::detect(
            req.uri.path_and_query().map_or("/", |pq| pq.as_str()),
            Some(&target.upstream.host),
        )
        .map(|mut endpoint| {
            endpoint.provider = provider_of(&target.config, &endpoint);
            endpoint
        });
        if ctx.llm.endpoint.is_some() || target.config.provider == ProviderKind::Anthropic {
            return Calls::None;
        }
        BatchCall::detect(&req.method, req.uri.path()).map_or(Calls::None, Calls::Batch)
    }

    /// Starts the CLIENT span of a Batch, Files or vector database call under the SERVER
    /// span, and sets how much of the request body to copy for it (none by default).
    fn start_call_span(
        &self,
        calls: Calls,
        target: &Target,
        session: &Session,
        server_cx: &Context,
        ctx: &mut RequestCtx,
    ) {
        let limit = self.config.server.max_request_body_bytes;
        ctx.body = RequestBody::new(limit, 0, false);
        match calls {
            Calls::None | Calls::VectorDb(None) => {}
            Calls::Batch(call) => {
                ctx.batch = Some(Box::new(
                    self.start_batch_span(call, target, session, server_cx),
                ));
            }
            Calls::VectorDb(Some(call)) => {
                ctx.body = RequestBody::new(limit, VectorDbs::body_cap(&call), false);
                let req = session.req_header();
                let span =
                    self.vector_dbs
                        .start(&self.tracer, call, req, &target.upstream, server_cx);
                ctx.vector_db = Some(Box::new(span));
            }
        }
    }

    /// The CLIENT span of a Batch or Files API call, under the SERVER span.
    fn start_batch_span(
        &self,
        call: BatchCall,
        target: &Target,
        session: &Session,
        server_cx: &Context,
    ) -> BatchSpan {
        let provider = target
            .config
            .provider_name
            .clone()
            .map(Provider::named)
            .or_else(|| target.config.provider.provider())
            .unwrap_or(Provider::OpenAi);
        BatchSpan::start(
            &self.tracer,
            call,
            &provider,
            session.req_header().as_ref(),
            server_cx,
            &self.batches,
        )
    }

    /// `propagation.incoming`, or `Trust` for a peer in `trusted_networks`.
    fn incoming(&self, peer: Option<std::net::SocketAddr>) -> Incoming {
        let mode = self.config.propagation.incoming;
        let trusted = || peer.is_some_and(|p| self.trusted.iter().any(|n| n.contains(p.ip())));
        if mode != Incoming::Trust && trusted() {
            Incoming::Trust
        } else {
            mode
        }
    }

    /// Writes `cx` as `traceparent`, `tracestate` and `baggage` into the upstream request
    /// (replacing the client's), with only the baggage `[propagation]` lets go.
    fn inject_context(
        &self,
        cx: &Context,
        cohort: Option<&str>,
        upstream_request: &mut RequestHeader,
    ) -> Result<()> {
        let mut cx = self.outgoing_baggage(cx);
        if let Some(cohort) = cohort {
            // The cohort goes upstream whatever `[propagation]` lets through.
            let mut baggage: Baggage = cx
                .baggage()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            baggage.insert(canary::COHORT, cohort.to_owned());
            cx = Cow::Owned(cx.with_baggage(baggage));
        }
        let mut result = Ok(());
        propagation::inject_each(&cx, |name, value| match value {
            Some(value) => {
                if result.is_ok() {
                    // pingora parses a name into a `HeaderName` on every insert, and copies a
                    // `HeaderName`'s text first: a static name skips the copy.
                    result = match static_name(&name) {
                        Some(name) => upstream_request.insert_header(name, value),
                        None => upstream_request.insert_header(name, value),
                    };
                }
            }
            // The client's own value of a header with nothing to send goes (looked up first:
            // pingora's removal costs more than the lookup, and the header is rarely there).
            None => {
                if upstream_request.headers.contains_key(&name) {
                    upstream_request.remove_header(&name);
                }
            }
        });
        result
    }

    /// `cx` with only the baggage `forward_baggage` and `baggage_allow` let go upstream.
    fn outgoing_baggage<'a>(&self, cx: &'a Context) -> Cow<'a, Context> {
        let propagation = &self.config.propagation;
        let baggage = cx.baggage();
        if baggage.is_empty()
            || (propagation.forward_baggage && propagation.baggage_allow.is_empty())
        {
            return Cow::Borrowed(cx);
        }
        let kept: Baggage = baggage
            .iter()
            .filter(|(key, _)| {
                propagation.forward_baggage
                    && propagation.baggage_allow.iter().any(|k| k == key.as_str())
            })
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        Cow::Owned(cx.with_baggage(kept))
    }
}

/// The gateway's own share of the latency, next to the provider's, for the GenAI span: added
/// with the span's end (one call into the span, not one per attribute).
fn gateway_time(ctx: &RequestCtx, targets: &[Target]) -> Vec<KeyValue> {
    let mut attributes = Vec::with_capacity(7);
    if let (true, Some(target)) = (ctx.attempts.answered, ctx.attempts.target) {
        attributes.push(KeyValue::new(
            names::UPSTREAM_NAME,
            targets[target].name.clone(),
        ));
        attributes.push(KeyValue::new(
            names::UPSTREAM_ATTEMPTS,
            i64::from(ctx.attempts.attempt + 1),
        ));
    }
    if let Some(outcome) = &ctx.llm.usage_injection {
        attributes.push(KeyValue::new(semconv::llmtrace::USAGE_INJECTION, *outcome));
    }
    let micros = |d: Duration| i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
    if let (Some(received), Some(selected)) = (ctx.timing.received, ctx.timing.peer_selected) {
        attributes.push(KeyValue::new(
            names::GATEWAY_REQUEST_US,
            micros(selected.duration_since(received)),
        ));
        if let Some(sent) = ctx.timing.upstream_sent {
            attributes.push(KeyValue::new(
                names::UPSTREAM_CONNECT_US,
                micros(sent.saturating_duration_since(selected)),
            ));
        }
    }
    let latency = ctx.timing.chunk_latency;
    if latency.count > 0 {
        attributes.push(KeyValue::new(
            names::GATEWAY_CHUNK_MAX_US,
            micros(latency.max),
        ));
        attributes.push(KeyValue::new(
            names::GATEWAY_CHUNK_MEAN_US,
            micros(latency.sum / latency.count),
        ));
    }
    attributes
}

/// The head of an answer from the gateway itself: JSON, the request id (under OpenAI's and
/// Anthropic's header names) and, when known, the trace id.
/// The `Content-Length` a request head declares, when it declares one that parses.
fn content_length(req: &RequestHeader) -> Option<usize> {
    req.headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse().ok())
}

fn reply_header(status: u16, request_id: &str, trace_id: Option<&str>) -> Result<ResponseHeader> {
    let mut header = ResponseHeader::build(status, Some(5))?;
    header.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    header.insert_header(REQUEST_ID_HEADER, request_id)?;
    header.insert_header("request-id", request_id)?;
    if let Some(trace_id) = trace_id {
        header.insert_header(TRACE_ID_HEADER, trace_id)?;
    }
    Ok(header)
}

fn too_large(limit: usize) -> GatewayReply {
    GatewayReply::new(
        413,
        "request_too_large",
        format!("request body over the gateway's limit of {limit} bytes"),
    )
}

/// `Content-Type: text/event-stream`, in any case, with or without parameters.
fn is_event_stream(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(llmtrace::genai::sse::is_event_stream)
}

/// A `Content-Encoding` other than `identity`.
fn is_encoded(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(http::header::CONTENT_ENCODING)
        .iter()
        .any(|v| {
            !v.to_str()
                .is_ok_and(|v| v.trim().eq_ignore_ascii_case("identity"))
        })
}

/// After answering early (a refusal, a body over the limit), reads and discards what the
/// client is still sending, for at most 1 s and 64 MiB, before the connection closes:
/// closing a socket with unread bytes resets it, and a reset can destroy the answer in the
/// client's receive buffer before the client reads it.
async fn drain_briefly(session: &mut Session) {
    const MAX_TIME: Duration = Duration::from_secs(1);
    const MAX_BYTES: usize = 64 << 20;
    let deadline = tokio::time::Instant::now() + MAX_TIME;
    let mut drained = 0usize;
    while drained <= MAX_BYTES && !session.is_body_done() {
        match tokio::time::timeout_at(deadline, session.read_request_body()).await {
            Ok(Ok(Some(chunk))) => drained += chunk.len(),
            _ => break,
        }
    }
}

/// The request's host: the URI's authority (HTTP/2, absolute form) or the `Host` header.
fn request_host(req: &RequestHeader) -> Option<&str> {
    llmtrace::driver::request_host(&req.uri, &req.headers)
}

/// At most `max` bytes of `text` (cut at a character boundary), for messages.
fn clip(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// A client key from `Authorization: Bearer <key>` (any case of `Bearer`), `x-api-key`
/// (Anthropic SDKs) or `api-key` (Azure SDKs), compared in constant time.
fn client_key_ok(headers: &http::HeaderMap, keys: &[String]) -> bool {
    let bearer = headers
        .get_all(http::header::AUTHORIZATION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    let plain = ["x-api-key", "api-key"]
        .into_iter()
        .flat_map(|name| headers.get_all(name).iter())
        .filter_map(|v| v.to_str().ok())
        .map(str::trim);
    bearer.chain(plain).any(|given| {
        keys.iter()
            .any(|k| constant_time_eq(k.as_bytes(), given.as_bytes()))
    })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn provider_of(upstream: &UpstreamConfig, endpoint: &Endpoint) -> Provider {
    match &upstream.provider_name {
        Some(name) => Provider::named(name.clone()),
        None => upstream
            .provider
            .provider()
            .unwrap_or_else(|| endpoint.provider.clone()),
    }
}

/// The propagation headers' names as static text (see `inject_context`).
fn static_name(name: &http::HeaderName) -> Option<&'static str> {
    match name.as_str() {
        "traceparent" => Some("traceparent"),
        "tracestate" => Some("tracestate"),
        "baggage" => Some("baggage"),
        _ => None,
    }
}

/// A hash of the request body for the access log: requests can be correlated, the prompt is
/// never written.
fn prompt_hash(body: &[u8]) -> u64 {
    // XXH3-64, seed 0: stable across runs, platforms and versions; not a secret. twox-hash
    // picks AVX2 at run time where the CPU has it (less than half the instructions of the
    // SSE2 code a portable build gets otherwise: 32k against 71k for a 100 KB body).
    twox_hash::XxHash3_64::oneshot(body)
}

/// A 64-bit hash in 16 lower-case hex digits, as `{:016x}` writes it, without the formatting
/// machinery.
fn hex16(hash: u64) -> [u8; 16] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 16];
    for (i, digit) in out.iter_mut().enumerate() {
        *digit = HEX[((hash >> ((15 - i) * 4)) & 0xf) as usize];
    }
    out
}

/// The gateway's answer for a failed exchange, or `None` when the client is gone.
fn failure_reply(e: &Error, upstream: Option<&Target>, limit: usize) -> Option<GatewayReply> {
    let name = upstream.map_or("", |t| t.name.as_str());
    let reply = match e.etype() {
        ErrorType::HTTPStatus(413) => too_large(limit),
        ErrorType::HTTPStatus(status) => GatewayReply::new(
            *status,
            "upstream_error",
            format!("the upstream {name:?} failed with status {status}"),
        ),
        ErrorType::Custom(UNRESOLVED) => GatewayReply::new(
            502,
            "upstream_unresolved",
            format!(
                "the upstream {name:?}'s host {}",
                e.context
                    .as_ref()
                    .map_or_else(|| "did not resolve".to_owned(), ToString::to_string)
            ),
        ),
        ErrorType::ConnectTimedout => GatewayReply::new(
            504,
            "upstream_connect_timeout",
            format!(
                "the upstream {name:?} did not accept a connection within {} ms",
                upstream.map_or(0, |t| t.config.connect_timeout_ms)
            ),
        ),
        ErrorType::ReadTimedout | ErrorType::WriteTimedout => GatewayReply::new(
            504,
            "upstream_timeout",
            format!("the upstream {name:?} did not answer in time"),
        ),
        ErrorType::TLSHandshakeFailure
        | ErrorType::TLSHandshakeTimedout
        | ErrorType::TLSWantX509Lookup
        | ErrorType::InvalidCert
        | ErrorType::HandshakeError => GatewayReply::new(
            502,
            "upstream_tls_error",
            format!(
                "the TLS handshake with the upstream {name:?} failed ({}); check its \
                 certificate or server.upstream_ca_file",
                e.etype().as_str()
            ),
        ),
        ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed
            if e.esource() == &ErrorSource::Downstream =>
        {
            return None;
        }
        _ if e.esource() == &ErrorSource::Downstream => GatewayReply::new(
            400,
            "bad_request",
            format!("the request could not be read ({})", e.etype().as_str()),
        ),
        _ if e.esource() == &ErrorSource::Upstream || upstream.is_some() => GatewayReply::new(
            502,
            "upstream_unreachable",
            format!(
                "the upstream {name:?} could not be reached or failed mid-exchange ({})",
                e.etype().as_str()
            ),
        ),
        _ => GatewayReply::new(
            500,
            "gateway_error",
            format!("the gateway failed ({})", e.etype().as_str()),
        ),
    };
    Some(reply)
}

fn error_type(error: &Error) -> String {
    match error.etype() {
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
            "timeout".to_owned()
        }
        ErrorType::ConnectRefused => "connection_refused".to_owned(),
        ErrorType::HTTPStatus(413) => "request_too_large".to_owned(),
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
    let n = COUNTER.fetch_add(1, Ordering::Relaxed) as u32;
    request_id_text(now, n)
}

/// `req_`, the time and the count, in fixed-width hex.
fn request_id_text(now: u64, n: u32) -> String {
    // `req_`, then the two numbers in fixed-width hex (by hand: `write!` costs ~0.7k
    // instructions a request).
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut id = *b"req_000000000000000000000000";
    let hex = (u128::from(now) << 32) | u128::from(n);
    for (i, byte) in id[4..].iter_mut().enumerate() {
        *byte = DIGITS[(hex >> (4 * (23 - i)) & 0xf) as usize];
    }
    // Only ASCII was written, so this never falls back (and the check is cheaper than
    // `from_utf8_lossy`'s walk).
    String::from_utf8(id.to_vec()).unwrap_or_default()
}

/// The credentials header a target sends in place of the client's, when it has a key.
pub(crate) fn credentials(upstream: &UpstreamConfig) -> Option<(&'static str, http::HeaderValue)> {
    let key = upstream.api_key.as_ref()?;
    let (name, value) = match upstream.provider {
        ProviderKind::Anthropic => ("x-api-key", key.clone()),
        ProviderKind::Azure | ProviderKind::Qdrant => ("api-key", key.clone()),
        ProviderKind::Openai
        | ProviderKind::OpenaiCompatible
        | ProviderKind::Chroma
        | ProviderKind::Weaviate => ("authorization", format!("Bearer {key}")),
    };
    let mut value = http::HeaderValue::from_str(&value).ok()?;
    value.set_sensitive(true);
    Some((name, value))
}

/// A span's trace and span ids, as hex.
type SpanIds = (propagation::Hex<32>, Option<propagation::Hex<16>>);

#[cfg(test)]
mod tests {
    #[test]
    fn request_ids_are_the_time_and_count_in_fixed_width_hex() {
        for (now, n) in [
            (0, 0),
            (1, 1),
            (u64::MAX, u32::MAX),
            (0x0123_4567_89ab_cdef, 0xfe),
        ] {
            assert_eq!(
                super::request_id_text(now, n),
                format!("req_{now:016x}{n:08x}")
            );
        }
        assert_ne!(super::new_request_id(), super::new_request_id());
    }

    use super::*;

    /// The prompt hash is XXH3-64 (the published test vector for empty input) in 16
    /// lower-case hex digits, leading zeros kept.
    #[test]
    fn propagation_names_have_static_twins() {
        for name in [
            propagation::TRACEPARENT,
            propagation::TRACESTATE,
            propagation::BAGGAGE,
        ] {
            assert_eq!(static_name(&name), Some(name.as_str()));
        }
        assert_eq!(static_name(&http::header::HOST), None);
    }

    #[test]
    fn prompt_hash_is_xxh3_in_sixteen_hex_digits() {
        assert_eq!(prompt_hash(b""), 0x2d06_8005_38d3_94c2);
        // XXH3-64 of a fixed pattern at each of its input classes (1–3, 4–8, 9–16, 17–128,
        // 129–240 bytes, and the striped loop beyond), as the reference implementation
        // computes them: the hash in existing access logs stays the same whatever the crate
        // and the CPU's vector unit.
        let pattern = |n: usize| -> Vec<u8> {
            (0..n)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8)
                .collect()
        };
        for (len, want) in [
            (1, 0xc44b_dff4_074e_ecdb_u64),
            (3, 0x52aa_b5ef_b65b_a70c),
            (16, 0x2f10_4d56_be42_214a),
            (17, 0x3e6d_f1cc_1fb3_5f38),
            (128, 0x6531_3193_ac18_bfce),
            (129, 0x4310_7010_904f_124d),
            (240, 0x8aa7_f1fc_572d_11d6),
            (241, 0xddb1_2824_1a3b_606b),
            (1024, 0x7e5f_60b4_9bfb_2c59),
            (102_400, 0x981a_2843_b32c_c791),
            (1_048_577, 0x85e6_50c8_6842_83b2),
        ] {
            assert_eq!(prompt_hash(&pattern(len)), want, "{len} bytes");
        }
        for hash in [0, 1, 0xabc, u64::MAX, prompt_hash(b"hello world")] {
            assert_eq!(&hex16(hash), format!("{hash:016x}").as_bytes());
        }
    }

    #[test]
    fn attempts_walk_the_candidates_and_stop_at_the_limit() {
        // Route to 0 with fallbacks 1 and 2, three attempts, retry on 429 and 503.
        let mut attempts = Attempts::new(vec![0, 1, 2], 3, vec![429, 503]);
        assert_eq!(attempts.target, Some(0));
        let mut seen = Vec::new();
        loop {
            seen.push(attempts.select());
            if !attempts.retries(503, false) {
                break;
            }
            attempts.advance();
        }
        assert_eq!(seen, [0, 1, 2]);
        assert!(!attempts.may_retry(false));
    }

    #[test]
    fn what_is_retried() {
        let attempts = Attempts::new(vec![4, 7], 2, vec![429, 503]);
        for (status, truncated, retried) in [
            (429, false, true),
            (503, false, true),
            (500, false, false),
            (200, false, false),
            // pingora could not keep the whole body to replay.
            (503, true, false),
        ] {
            assert_eq!(
                attempts.retries(status, truncated),
                retried,
                "{status} {truncated}"
            );
        }
    }

    #[test]
    fn more_attempts_than_candidates_wrap_around() {
        let mut attempts = Attempts::new(vec![5], 3, vec![500]);
        let mut seen = Vec::new();
        for _ in 0..3 {
            seen.push(attempts.select());
            attempts.advance();
        }
        assert_eq!(seen, [5, 5, 5]);
        let mut none = Attempts::default();
        assert_eq!(none.select(), 0);
    }

    #[test]
    fn pingora_errors_end_spans_as_what_happened() {
        assert_eq!(end_of(None), End::Complete);
        let gone = Error::explain(ErrorType::ConnectionClosed, "client left").into_down();
        assert_eq!(end_of(Some(&gone)), End::Aborted);
        let refused = Error::explain(ErrorType::ConnectRefused, "refused").into_up();
        assert!(matches!(
            end_of(Some(&refused)),
            End::Failed { error_type, .. } if error_type == "connection_refused"
        ));
        let too_large = Error::explain(ErrorType::HTTPStatus(413), "over");
        assert!(matches!(
            end_of(Some(&too_large)),
            End::Failed { error_type, .. } if error_type == "request_too_large"
        ));
    }

    #[test]
    fn each_kind_of_upstream_gets_its_key_where_it_reads_it() {
        for (kind, header, value) in [
            ("openai", "authorization", "Bearer k1"),
            ("openai-compatible", "authorization", "Bearer k1"),
            ("anthropic", "x-api-key", "k1"),
            ("azure", "api-key", "k1"),
            ("chroma", "authorization", "Bearer k1"),
            ("qdrant", "api-key", "k1"),
            ("weaviate", "authorization", "Bearer k1"),
        ] {
            let text = format!(
                "[[upstreams]]\nname = \"u\"\nurl = \"http://127.0.0.1:1\"\nprovider = \"{kind}\"\n\
                 api_key = \"k1\"\n[[routes]]\nupstream = \"u\"\n"
            );
            let config = Config::parse(&text, |_| None).unwrap();
            let (name, sent) = credentials(&config.upstreams[0]).unwrap();
            assert_eq!((name, sent.to_str().unwrap()), (header, value), "{kind}");
            assert!(sent.is_sensitive(), "{kind}");
        }
    }
}
