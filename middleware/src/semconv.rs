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

/// Names of our own, under `llmtrace.`.
pub mod llmtrace {
    /// `true` when the response body was dropped before its end: the client went away
    /// (server side) or the caller stopped reading (client side).
    pub const ABORTED: &str = "llmtrace.aborted";
    /// The `error.type` value used for an aborted exchange.
    pub const ABORTED_ERROR_TYPE: &str = "aborted";
    /// The `error.type` value used when the inner service or body panicked.
    pub const PANIC_ERROR_TYPE: &str = "panic";
}

/// Value written in place of a captured header that carries a secret.
pub const REDACTED: &str = "[REDACTED]";
