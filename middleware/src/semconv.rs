//! Attribute, event and span names, in one place.
//!
//! Names defined by the OpenTelemetry semantic conventions (stable HTTP conventions, RPC
//! conventions) are spelled exactly as the specification spells them. Measurements the
//! specification does not name live under the `llmtrace.` prefix.

/// Stable HTTP semantic conventions (client and server spans).
pub mod http {
    /// HTTP request method, normalised to the well-known set or `_OTHER`.
    pub const REQUEST_METHOD: &str = "http.request.method";
    /// The original method when [`REQUEST_METHOD`] is `_OTHER`.
    pub const REQUEST_METHOD_ORIGINAL: &str = "http.request.method_original";
    /// Response status code (int).
    pub const RESPONSE_STATUS_CODE: &str = "http.response.status_code";
    /// The matched route template, e.g. `/v1/users/{id}`.
    pub const ROUTE: &str = "http.route";
    /// Size of the response body in bytes, counted as it streamed through.
    pub const RESPONSE_BODY_SIZE: &str = "http.response.body.size";
    /// Prefix for captured request headers: `http.request.header.<lowercase name>`.
    pub const REQUEST_HEADER_PREFIX: &str = "http.request.header.";
    /// Prefix for captured response headers: `http.response.header.<lowercase name>`.
    pub const RESPONSE_HEADER_PREFIX: &str = "http.response.header.";
    /// Path component of the URL.
    pub const URL_PATH: &str = "url.path";
    /// Scheme component of the URL.
    pub const URL_SCHEME: &str = "url.scheme";
    /// Full URL of a client request, with credentials removed.
    pub const URL_FULL: &str = "url.full";
    /// Logical server host name (`Host` / `:authority`).
    pub const SERVER_ADDRESS: &str = "server.address";
    /// Logical server port.
    pub const SERVER_PORT: &str = "server.port";
    /// Address of the client that sent the request (first hop of `Forwarded`/`X-Forwarded-For`, else the peer).
    pub const CLIENT_ADDRESS: &str = "client.address";
    /// Peer address of the socket.
    pub const NETWORK_PEER_ADDRESS: &str = "network.peer.address";
    /// Peer port of the socket.
    pub const NETWORK_PEER_PORT: &str = "network.peer.port";
    /// `1.0`, `1.1`, `2` or `3`.
    pub const NETWORK_PROTOCOL_VERSION: &str = "network.protocol.version";
    /// The `User-Agent` header.
    pub const USER_AGENT_ORIGINAL: &str = "user_agent.original";
    /// Describes the class of error the operation ended with.
    pub const ERROR_TYPE: &str = "error.type";
}

/// RPC semantic conventions for gRPC.
pub mod rpc {
    /// Always `grpc` here.
    pub const SYSTEM: &str = "rpc.system";
    /// Full service name, e.g. `helloworld.Greeter`.
    pub const SERVICE: &str = "rpc.service";
    /// Method name, e.g. `SayHello`.
    pub const METHOD: &str = "rpc.method";
    /// Numeric gRPC status code (int).
    pub const GRPC_STATUS_CODE: &str = "rpc.grpc.status_code";
}

/// GenAI semantic conventions (semconv v1.41, "Development" status).
pub mod gen_ai {
    /// `chat`, `text_completion`, `embeddings`, ...
    pub const OPERATION_NAME: &str = "gen_ai.operation.name";
    /// `openai`, `anthropic`, `azure.ai.openai`, ...
    pub const PROVIDER_NAME: &str = "gen_ai.provider.name";
    /// The model the request asked for.
    pub const REQUEST_MODEL: &str = "gen_ai.request.model";
    /// Whether the request asked for a streamed response.
    pub const REQUEST_STREAM: &str = "gen_ai.request.stream";
    /// `max_tokens` / `max_completion_tokens` / `max_output_tokens`.
    pub const REQUEST_MAX_TOKENS: &str = "gen_ai.request.max_tokens";
    /// Sampling temperature.
    pub const REQUEST_TEMPERATURE: &str = "gen_ai.request.temperature";
    /// Nucleus sampling.
    pub const REQUEST_TOP_P: &str = "gen_ai.request.top_p";
    /// Top-k sampling.
    pub const REQUEST_TOP_K: &str = "gen_ai.request.top_k";
    /// Stop sequences (string array).
    pub const REQUEST_STOP_SEQUENCES: &str = "gen_ai.request.stop_sequences";
    /// Frequency penalty.
    pub const REQUEST_FREQUENCY_PENALTY: &str = "gen_ai.request.frequency_penalty";
    /// Presence penalty.
    pub const REQUEST_PRESENCE_PENALTY: &str = "gen_ai.request.presence_penalty";
    /// Seed.
    pub const REQUEST_SEED: &str = "gen_ai.request.seed";
    /// Number of choices asked for, when not 1.
    pub const REQUEST_CHOICE_COUNT: &str = "gen_ai.request.choice.count";
    /// Encoding formats asked for (embeddings).
    pub const REQUEST_ENCODING_FORMATS: &str = "gen_ai.request.encoding_formats";
    /// The provider's id of the response.
    pub const RESPONSE_ID: &str = "gen_ai.response.id";
    /// The model that answered.
    pub const RESPONSE_MODEL: &str = "gen_ai.response.model";
    /// One finish reason per choice (string array).
    pub const RESPONSE_FINISH_REASONS: &str = "gen_ai.response.finish_reasons";
    /// Seconds from the request to the first content-bearing chunk (double).
    pub const RESPONSE_TIME_TO_FIRST_CHUNK: &str = "gen_ai.response.time_to_first_chunk";
    /// The tool an `execute_tool` span ran.
    pub const TOOL_NAME: &str = "gen_ai.tool.name";
    /// The id of the tool call (the provider's).
    pub const TOOL_CALL_ID: &str = "gen_ai.tool.call.id";
    /// `function`, `extension` or `datastore`.
    pub const TOOL_TYPE: &str = "gen_ai.tool.type";
    /// Input (prompt) tokens.
    pub const USAGE_INPUT_TOKENS: &str = "gen_ai.usage.input_tokens";
    /// Output (completion) tokens.
    pub const USAGE_OUTPUT_TOKENS: &str = "gen_ai.usage.output_tokens";
    /// Input tokens served from the provider's cache.
    pub const USAGE_CACHE_READ_INPUT_TOKENS: &str = "gen_ai.usage.cache_read.input_tokens";
    /// Input tokens written to the provider's cache.
    pub const USAGE_CACHE_CREATION_INPUT_TOKENS: &str = "gen_ai.usage.cache_creation.input_tokens";
    /// Output tokens spent on reasoning.
    pub const USAGE_REASONING_OUTPUT_TOKENS: &str = "gen_ai.usage.reasoning.output_tokens";
    /// Conversation id, when the caller supplies one.
    pub const CONVERSATION_ID: &str = "gen_ai.conversation.id";
    /// Opt-in content: the request's messages, as JSON.
    pub const INPUT_MESSAGES: &str = "gen_ai.input.messages";
    /// Opt-in content: the response's messages, as JSON.
    pub const OUTPUT_MESSAGES: &str = "gen_ai.output.messages";
    /// Opt-in content: the system prompt, as JSON.
    pub const SYSTEM_INSTRUCTIONS: &str = "gen_ai.system_instructions";
    /// Opt-in content on an `execute_tool` span: the arguments the model gave the call (the
    /// conventions' type is `any`; recorded as the JSON text, as they allow).
    pub const TOOL_CALL_ARGUMENTS: &str = "gen_ai.tool.call.arguments";
    /// Opt-in content on an `execute_tool` span: what the tool returned, as sent back to the
    /// model (type `any`; recorded as text).
    pub const TOOL_CALL_RESULT: &str = "gen_ai.tool.call.result";
    /// `input` or `output`, on `gen_ai.client.token.usage`.
    pub const TOKEN_TYPE: &str = "gen_ai.token.type";

    /// Metric instrument names.
    pub mod metrics {
        /// Histogram, seconds.
        pub const CLIENT_OPERATION_DURATION: &str = "gen_ai.client.operation.duration";
        /// Histogram, `{token}`.
        pub const CLIENT_TOKEN_USAGE: &str = "gen_ai.client.token.usage";
        /// Histogram, seconds; streams only.
        pub const CLIENT_TIME_TO_FIRST_CHUNK: &str = "gen_ai.client.operation.time_to_first_chunk";
        /// Histogram, seconds; each chunk after the first.
        pub const CLIENT_TIME_PER_OUTPUT_CHUNK: &str =
            "gen_ai.client.operation.time_per_output_chunk";
        /// Histogram, seconds.
        pub const SERVER_REQUEST_DURATION: &str = "gen_ai.server.request.duration";
        /// Histogram, seconds.
        pub const SERVER_TIME_TO_FIRST_TOKEN: &str = "gen_ai.server.time_to_first_token";
        /// Histogram, seconds.
        pub const SERVER_TIME_PER_OUTPUT_TOKEN: &str = "gen_ai.server.time_per_output_token";
    }
}

/// Names of our own, under `llmtrace.`.
pub mod llmtrace {
    /// `true` when the response body was dropped before its end: the client went away
    /// (server side) or the caller stopped reading (client side).
    pub const ABORTED: &str = "llmtrace.aborted";
    /// The `error.type` value used for an aborted exchange.
    pub const ABORTED_ERROR_TYPE: &str = "aborted";
    /// The `error.type` value used when the inner service or body panicked.
    pub const PANIC_ERROR_TYPE: &str = "panic";
    /// The `error.type` of a stream that ended before its final event.
    pub const TRUNCATED_ERROR_TYPE: &str = "stream_truncated";

    /// Number of tools the request offered (int).
    pub const REQUEST_TOOL_COUNT: &str = "llmtrace.request.tool_count";
    /// The conversation an OpenAI Responses request names in its body, when the caller's
    /// session id (which wins as `gen_ai.conversation.id`) is another.
    pub const REQUEST_CONVERSATION: &str = "llmtrace.request.conversation";
    /// The response an OpenAI Responses request continues (`previous_response_id`).
    pub const REQUEST_PREVIOUS_RESPONSE_ID: &str = "llmtrace.request.previous_response_id";
    /// The ids of the prompt matchers (`genai::PromptWatch`) the request's prompt matched
    /// (string array; absent when none did). The prompt itself is not recorded.
    pub const PROMPT_MATCHED: &str = "llmtrace.prompt.matched";
    /// Seconds from the request to the first response body byte (double).
    pub const TIME_TO_FIRST_BYTE: &str = "llmtrace.response.time_to_first_byte";
    /// The provider's own id of the request, from its response head (OpenAI's and
    /// OpenAI-compatible servers' `x-request-id`, Anthropic's `request-id`): what the
    /// provider's support asks for, and how a provider-side request is found from a trace.
    pub const PROVIDER_REQUEST_ID: &str = "llmtrace.provider.request_id";
    /// Where the timings were measured: `client`, `gateway` or `server`.
    pub const MEASURED_AT: &str = "llmtrace.measured_at";
    /// Content-bearing events in the stream (int).
    pub const STREAM_CHUNKS: &str = "llmtrace.stream.chunks";
    /// All server-sent events in the stream (int).
    pub const STREAM_EVENTS: &str = "llmtrace.stream.events";
    /// Whether the stream's final event (`[DONE]`, `message_stop`, ...) arrived (bool).
    pub const STREAM_COMPLETE: &str = "llmtrace.stream.complete";
    /// Mean gap between content chunks, seconds (double).
    pub const GAP_MEAN: &str = "llmtrace.stream.gap.mean";
    /// Median gap between content chunks, seconds (double, estimated: see `genai::GapStats`).
    pub const GAP_P50: &str = "llmtrace.stream.gap.p50";
    /// 99th percentile gap between content chunks, seconds (double, estimated).
    pub const GAP_P99: &str = "llmtrace.stream.gap.p99";
    /// Longest gap between content chunks, seconds (double, exact).
    pub const GAP_MAX: &str = "llmtrace.stream.gap.max";
    /// Gaps longer than the configured stall threshold (int).
    pub const STALLS: &str = "llmtrace.stream.stalls";
    /// When the stream's content chunks arrived, in ms after the request (int array): chunks
    /// `0, s, 2s, …` and the last, `s` being [`CHUNK_STRIDE`]; capped (see
    /// `genai::ChunkTimeline`).
    pub const CHUNK_OFFSETS_MS: &str = "llmtrace.stream.chunk_offsets_ms";
    /// Every how many chunks [`CHUNK_OFFSETS_MS`] keeps one (int, a power of two).
    pub const CHUNK_STRIDE: &str = "llmtrace.stream.chunk_stride";
    /// Event at the start of a stall (a gap between chunks over the stall threshold); the
    /// first 16 of a stream.
    pub const EVENT_STALL: &str = "llmtrace.stream.stall";
    /// How long the stall lasted, seconds (double), on [`EVENT_STALL`].
    pub const STALL_DURATION: &str = "llmtrace.stream.stall.duration";
    /// Output tokens per second after the first token (double).
    pub const OUTPUT_TOKENS_PER_SECOND: &str = "llmtrace.usage.output_tokens_per_second";
    /// `reported`, `estimated` or `missing`.
    pub const USAGE_SOURCE: &str = "llmtrace.usage.source";
    /// What the gateway did to ask an OpenAI stream for its usage: `added`, or
    /// `skipped:<reason>` with a reason from `genai::UsageSkip::reason` (`skipped:not_streamed`,
    /// `skipped:already_asked`, ...).
    pub const USAGE_INJECTION: &str = "llmtrace.usage.injection";
    /// `content_filter` or `refusal`, when the provider reports one.
    pub const GUARDRAIL: &str = "llmtrace.guardrail";
    /// Server-sent events skipped because they exceeded the size cap (int).
    pub const OVERSIZED_EVENTS: &str = "llmtrace.stream.oversized_events";
    /// What the observer could not parse (request or response), for diagnosis.
    pub const PARSE_ERROR: &str = "llmtrace.parse_error";
    /// Whether captured content was cut at the configured cap (bool).
    pub const CONTENT_TRUNCATED: &str = "llmtrace.content.truncated";

    /// Event at the first content-bearing chunk.
    pub const EVENT_FIRST_TOKEN: &str = "llmtrace.first_token";
    /// Event when the provider reports content filtering or a refusal.
    pub const EVENT_GUARDRAIL: &str = "guardrail.triggered";
    /// Optional event per streamed chunk.
    pub const EVENT_TOKEN_STREAMED: &str = "token.streamed";
    /// Index of a streamed chunk (int), on `token.streamed`.
    pub const CHUNK_INDEX: &str = "llmtrace.chunk.index";

    /// Who inferred a span that no code of the traced service made (string): `gateway` for
    /// the `execute_tool` spans the gateway infers between two exchanges.
    pub const INFERRED: &str = "llmtrace.inferred";
    /// Link attribute (string): what a link stands for (`tool_call`: the GenAI span that
    /// asked for the tool call; `shadow_of`: the primary of a shadow exchange).
    pub const LINK_KIND: &str = "llmtrace.link.kind";

    // --- span links (`propagation::LinkCollector`) ---

    /// Link attribute (int): the carrier's position among all carriers offered to a
    /// `LinkCollector`, counting from 0 (invalid ones included), so a link leads back to the
    /// message it came from.
    pub const LINK_INDEX: &str = "llmtrace.link.index";
    /// Span attribute (int): how many valid links a `LinkCollector` dropped beyond its
    /// maximum. Set only when it dropped any.
    pub const LINKS_DROPPED: &str = "llmtrace.links.dropped";
    /// Span attribute (int): how many carriers offered to a `LinkCollector` held no valid
    /// `traceparent`. Set only when there were any.
    pub const LINKS_INVALID: &str = "llmtrace.links.invalid";
    /// Span attribute (string array): the distinct trace ids (32 lowercase hex digits) of the
    /// span's links, in link order, at most the `LinkCollector`'s maximum. Backends that drop
    /// OTLP span links on ingest (Arize Phoenix, several LLM observability backends) still show
    /// which traces the span served. Set only when there are links.
    pub const LINKS_TRACE_IDS: &str = "llmtrace.links.trace_ids";
}

/// Exception event names (semantic conventions).
pub mod exception {
    /// The event name.
    pub const EVENT: &str = "exception";
    /// The exception's type.
    pub const TYPE: &str = "exception.type";
    /// The exception's message.
    pub const MESSAGE: &str = "exception.message";
}

/// The gateway's own measurements and decisions (llmtrace-proxy), next to the provider's.
pub mod gateway {
    /// Time from the request head's arrival to the upstream being chosen: the gateway's own
    /// work before anything goes upstream (routing, checks, span start), in µs.
    pub const GATEWAY_REQUEST_US: &str = "llmtrace.gateway.request_us";
    /// Time to get a connection to the upstream and write the request head (pool hit, or
    /// connect and TLS), in µs. Upstream side, not the gateway's own work.
    pub const UPSTREAM_CONNECT_US: &str = "llmtrace.upstream.connect_us";
    /// Per response chunk: time from reading it from the upstream to handing it to the
    /// client connection, the largest over the stream, in µs.
    pub const GATEWAY_CHUNK_MAX_US: &str = "llmtrace.gateway.chunk_latency.max_us";
    /// The same, averaged over the stream's chunks, in µs.
    pub const GATEWAY_CHUNK_MEAN_US: &str = "llmtrace.gateway.chunk_latency.mean_us";
    /// The configured upstream that answered (or failed last).
    pub const UPSTREAM_NAME: &str = "llmtrace.upstream.name";
    /// Attempts made (1 when the first one answered).
    pub const UPSTREAM_ATTEMPTS: &str = "llmtrace.upstream.attempts";
    /// Why the gateway answered a request itself: `no_route`, `invalid_api_key`,
    /// `request_too_large`.
    pub const REFUSED: &str = "llmtrace.gateway.refused";
    /// The provider's own request id (its `x-request-id`).
    pub const UPSTREAM_REQUEST_ID: &str = "llmtrace.upstream.request_id";
    /// Event: an attempt failed before its first byte and the request is tried again.
    pub const RETRY_EVENT: &str = "llmtrace.upstream.retry";
    /// On the retry event: why (`429`, `503`, `connection_refused`, ...).
    pub const RETRY_REASON: &str = "llmtrace.retry.reason";
}

/// Value written in place of a captured header that carries a secret.
pub const REDACTED: &str = "[REDACTED]";

/// Metric instrument names of the in-memory trace store (`store::TraceStore::register_metrics`).
pub mod store {
    /// Counter, `{span}`: spans the store let go, by [`REASON`]: `queue_full` (its queue was
    /// full when the span ended) or `oversized` (its trace alone would exceed half the byte cap).
    pub const SPANS_DROPPED: &str = "llmtrace.store.spans.dropped";
    /// Counter, `{trace}`: traces evicted to stay within the caps.
    pub const TRACES_EVICTED: &str = "llmtrace.store.traces.evicted";
    /// Gauge, `{trace}`: traces held.
    pub const TRACES: &str = "llmtrace.store.traces";
    /// Gauge, `By`: bytes held.
    pub const BYTES: &str = "llmtrace.store.bytes";
    /// Attribute on [`SPANS_DROPPED`].
    pub const REASON: &str = "llmtrace.store.reason";
}

// === Sampling ===
// Names of the `sampling` module (head rules and the tail sampler). Kept as the last section
// of this file.

/// Names the head rules and the tail sampler record (`llmtrace::sampling`).
pub mod sampling {
    /// Why the tail sampler kept a trace, on the trace's local root span (string): one of the
    /// `REASON_*` values below, `attribute:<key>` for an attribute policy, the policies'
    /// reasons joined by `+` for an `all` policy, or the name configured on the policy.
    pub const REASON: &str = "llmtrace.sampling.reason";
    /// The name of the head rule that sampled a span (string), set by `RuleSampler` for
    /// named rules.
    pub const RULE: &str = "llmtrace.sampling.rule";

    /// Reason: a span failed (error status or `error.type`, client aborts aside).
    pub const REASON_ERROR: &str = "error";
    /// Reason: a span lasted longer than the duration threshold.
    pub const REASON_SLOW: &str = "slow";
    /// Reason: `gen_ai.response.time_to_first_chunk` over the threshold.
    pub const REASON_TTFT: &str = "ttft";
    /// Reason: inter-chunk gap p99 or the stall count over the threshold.
    pub const REASON_STALL: &str = "stall";
    /// Reason: the client went away (`llmtrace.aborted`).
    pub const REASON_ABORTED: &str = "aborted";
    /// Reason: a probabilistic policy (by trace id) in the policy list.
    pub const REASON_RATIO: &str = "ratio";
    /// Reason: the prompt matched an unnamed prompt policy's keywords or regex (a named one
    /// gives its name); also that matcher's id in `llmtrace.prompt.matched`.
    pub const REASON_PROMPT: &str = "prompt";
    /// Reason: no policy matched; the fallback ratio kept it.
    pub const REASON_FALLBACK: &str = "fallback";
    /// Reason: no policy matched, but a service level objective covering the trace's route
    /// or model was burning its budget fast (page alert), so more is kept.
    pub const REASON_SLO_BURN: &str = "slo_burn";
    /// Reason: no policy matched, but the TTFT control chart of the trace's route and model
    /// signalled slower first tokens, so more is kept.
    pub const REASON_ANOMALY: &str = "anomaly";

    /// Metric instrument names of the tail sampler (`TailSampler::register_metrics`).
    pub mod metrics {
        /// Counter, `{trace}`: traces decided, by [`DECISION`].
        pub const TRACES: &str = "llmtrace.sampling.traces";
        /// Counter, `{span}`: spans forwarded or dropped, by [`DECISION`].
        pub const SPANS: &str = "llmtrace.sampling.spans";
        /// Counter, `{trace}`: traces decided before their local root ended (memory cap,
        /// orphan timeout, shutdown).
        pub const DECIDED_EARLY: &str = "llmtrace.sampling.decided_early";
        /// Counter, `{trace}`: traces pushed out of the buffer by the trace or span cap (and
        /// decided then).
        pub const EVICTED: &str = "llmtrace.sampling.evicted";
        /// Counter, `{trace}`: traces a policy would have kept that the rate limit dropped.
        pub const RATE_LIMITED: &str = "llmtrace.sampling.rate_limited";
        /// Gauge, `{trace}`: traces buffered, awaiting a decision.
        pub const BUFFERED_TRACES: &str = "llmtrace.sampling.buffered.traces";
        /// Gauge, `{span}`: spans buffered, awaiting their trace's decision.
        pub const BUFFERED_SPANS: &str = "llmtrace.sampling.buffered.spans";
        /// Attribute on [`TRACES`] and [`SPANS`]: `kept` or `dropped`.
        pub const DECISION: &str = "llmtrace.sampling.decision";
    }
}

/// Spans of OpenAI Batch and Files API calls ([`genai::BatchCall`](crate::genai::BatchCall)).
pub mod batch {
    /// The call: `batch.create`, `batch.retrieve`, `batch.cancel`, `batch.list`,
    /// `file.upload`, `file.retrieve`, `file.content`, `file.delete`, `file.list`.
    pub const BATCH_OPERATION: &str = "llmtrace.batch.operation";
    /// The batch (`batch_…`), from the path or the answer.
    pub const BATCH_ID: &str = "llmtrace.batch.id";
    /// The batch's status in the answer (`validating`, `in_progress`, `completed`, ...).
    pub const BATCH_STATUS: &str = "llmtrace.batch.status";
    /// The endpoint the batch's requests go to (`/v1/chat/completions`).
    pub const BATCH_ENDPOINT: &str = "llmtrace.batch.endpoint";
    /// `24h`.
    pub const BATCH_COMPLETION_WINDOW: &str = "llmtrace.batch.completion_window";
    /// The batch's input file.
    pub const BATCH_INPUT_FILE_ID: &str = "llmtrace.batch.input_file_id";
    /// The batch's output file, once it has one.
    pub const BATCH_OUTPUT_FILE_ID: &str = "llmtrace.batch.output_file_id";
    /// The batch's error file, when some requests failed.
    pub const BATCH_ERROR_FILE_ID: &str = "llmtrace.batch.error_file_id";
    /// `request_counts.total` (int).
    pub const BATCH_REQUESTS_TOTAL: &str = "llmtrace.batch.requests.total";
    /// `request_counts.completed` (int).
    pub const BATCH_REQUESTS_COMPLETED: &str = "llmtrace.batch.requests.completed";
    /// `request_counts.failed` (int).
    pub const BATCH_REQUESTS_FAILED: &str = "llmtrace.batch.requests.failed";
    /// Items in a list answer (int).
    pub const BATCH_LIST_COUNT: &str = "llmtrace.batch.list.count";
    /// The file (`file-…`), from the path or the answer.
    pub const FILE_ID: &str = "llmtrace.file.id";
    /// The file's purpose (`batch`, `batch_output`, ...).
    pub const FILE_PURPOSE: &str = "llmtrace.file.purpose";
    /// The file's size in bytes (int).
    pub const FILE_BYTES: &str = "llmtrace.file.bytes";
    /// Requests in a downloaded batch output (int).
    pub const BATCH_OUTPUT_REQUESTS: &str = "llmtrace.batch.output.requests";
    /// Of those, failed ones: an `error`, or a response status outside 2xx (int).
    pub const BATCH_OUTPUT_FAILED: &str = "llmtrace.batch.output.failed";
    /// Of those, lines that could not be read (not JSON, or over 4 MiB) (int).
    pub const BATCH_OUTPUT_UNREADABLE: &str = "llmtrace.batch.output.unreadable";
    /// On the link from a later call about a batch or file to the span that made it: what
    /// that span's call made, `batch` (a batch's creation; its output files belong to it) or
    /// `file` (an upload).
    pub const LINK_KIND: &str = "llmtrace.batch.link";
}

/// What an exchange cost ([`genai::PriceTable`](crate::genai::PriceTable)).
pub mod cost {
    /// The exchange's cost in USD (double), from its usage and the model's prices.
    pub const USAGE_COST: &str = "gen_ai.usage.cost";
    /// Why an exchange has no cost: `unknown_model` (the price table does not name it),
    /// `no_model`, or `no_usage` (the provider reported no token counts).
    pub const MISSING: &str = "llmtrace.cost.missing";
    /// Counter, USD: the cost of every exchange, by model (and the opted-in business
    /// dimensions).
    pub const METRIC: &str = "llmtrace.gen_ai.cost";
}

/// Evaluation results (GenAI semantic conventions, `open-telemetry/semantic-conventions-genai`,
/// `model/gen-ai/events.yaml` and `registry.yaml`, "Development" status), recorded by
/// [`eval`](crate::eval). The conventions name no metric for them: ours are under `llmtrace.`.
pub mod evaluation {
    /// The conventions' event: the result of evaluating GenAI output (quality, accuracy, ...).
    pub const EVENT_RESULT: &str = "gen_ai.evaluation.result";
    /// The name of the evaluation metric used, e.g. `relevance` (required).
    pub const NAME: &str = "gen_ai.evaluation.name";
    /// The score the evaluator returned (double).
    pub const SCORE_VALUE: &str = "gen_ai.evaluation.score.value";
    /// A human-readable interpretation of the score, low cardinality: `relevant`, `pass`, ...
    pub const SCORE_LABEL: &str = "gen_ai.evaluation.score.label";
    /// The evaluator's free-form explanation of the score.
    pub const EXPLANATION: &str = "gen_ai.evaluation.explanation";
    /// The evaluated completion's id (`gen_ai.response.id`), which the conventions recommend
    /// when the evaluated span is not known.
    pub const RESPONSE_ID: &str = super::gen_ai::RESPONSE_ID;

    /// Counter, `{evaluation}`: evaluation results recorded, by [`NAME`] and [`SCORE_LABEL`].
    pub const METRIC_RESULTS: &str = "llmtrace.gen_ai.evaluation.results";
    /// Histogram, no unit: the scores of the evaluation results that have one, by [`NAME`].
    pub const METRIC_SCORE: &str = "llmtrace.gen_ai.evaluation.score";
}

/// Spans of vector database calls ([`vectordb`](crate::vectordb)), after the OpenTelemetry
/// database conventions (`model/db/registry.yaml`, `docs/db/database-spans.md`).
pub mod db {
    /// The database product: `chroma`, `qdrant` or `weaviate`. None of the three is a
    /// registered value of the conventions yet; we use the lower-case product name, as they
    /// ask for systems they do not list.
    pub const SYSTEM_NAME: &str = "db.system.name";
    /// The operation, in the database API's own words (`query`, `search`, `upsert`, `get`).
    pub const OPERATION_NAME: &str = "db.operation.name";
    /// The collection (Chroma collection, Qdrant collection, Weaviate class).
    pub const COLLECTION_NAME: &str = "db.collection.name";
    /// Chroma's `{tenant}|{database}` (components joined by `|`, as the conventions say).
    pub const NAMESPACE: &str = "db.namespace";
    /// The HTTP status code of the database's answer, as a string (`200`, `404`): what the
    /// conventions ask of HTTP-based databases such as Elasticsearch.
    pub const RESPONSE_STATUS_CODE: &str = "db.response.status_code";
    /// Rows (points, objects, records) in the answer (int).
    pub const RESPONSE_RETURNED_ROWS: &str = "db.response.returned_rows";
    /// Operations in a call to a batch API (Qdrant `search/batch`, Weaviate `batch/objects`)
    /// (int).
    pub const OPERATION_BATCH_SIZE: &str = "db.operation.batch.size";
    /// The most rows a search asked for: Chroma `n_results` (or `limit` of `get`), Qdrant
    /// `limit` (or `top`), the GraphQL `limit` of a Weaviate `Get` (int). The conventions have
    /// no attribute for it (their `db.operation.parameter.<key>` is a string keyed by each
    /// API's own parameter name), hence ours.
    pub const TOP_K: &str = "llmtrace.db.top_k";
    /// Why the answer was not read for a returned count: `too_large` (over the cap) or
    /// `invalid` (not the JSON the operation answers).
    pub const RESPONSE_PARSE_ERROR: &str = "llmtrace.db.response.parse_error";
    /// Why the request body was not read: `too_large` (over the cap) or `invalid`.
    pub const REQUEST_PARSE_ERROR: &str = "llmtrace.db.request.parse_error";
}
