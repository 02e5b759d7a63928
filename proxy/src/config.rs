//! The gateway's configuration file (TOML). The doc comments on these types are the user
//! documentation of each field.
//!
//! ```toml
//! [server]
//! listen = "0.0.0.0:8080"
//!
//! [[upstreams]]
//! name = "openai"
//! url = "https://api.openai.com"
//! provider = "openai"
//! api_key = "${OPENAI_API_KEY}"
//!
//! [[upstreams]]
//! name = "anthropic"
//! url = "https://api.anthropic.com"
//! provider = "anthropic"
//! api_key = "${ANTHROPIC_API_KEY}"
//!
//! [[routes]]
//! path_prefix = "/v1/messages"
//! upstream = "anthropic"
//!
//! [[routes]]
//! path_prefix = "/"
//! upstream = "openai"
//! ```
//!
//! # The trust boundary: `[propagation]`
//!
//! What the gateway makes of the W3C context clients send, and what of it goes upstream (see
//! [`PropagationConfig`]). The defaults keep what a gateway inside a traced system wants:
//! callers' traces are continued, and no baggage leaves for the providers. A gateway that
//! internet clients reach should not let them pick its trace ids or sampling:
//!
//! ```toml
//! [propagation]
//! incoming = "link"                          # new trace, linked to the client's
//! trusted_networks = ["10.0.0.0/8", "fd00::/8"]  # our own services are continued
//! forward_baggage = true                     # to a traced upstream of ours ...
//! baggage_allow = ["tenant"]                 # ... and only this key
//! ```
//!
//! `${NAME}` anywhere in a string is replaced by the environment variable `NAME` when the file
//! is loaded (`$${` writes a literal `${`); an unset variable is an error that names it.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::str::FromStr;

use serde::Deserialize;

use llmtrace::driver::{BusinessContextConfig, Incoming};
use llmtrace::genai::{ModelPrice, PriceTable, Provider};
use llmtrace::sampling::{HeadConfig, TailConfig};
use llmtrace::slo::{Objective, ObjectiveConfig, SloEngine};
use llmtrace::vectordb::VectorDbSystem;

use crate::canary::SplitConfig;
use crate::shadow::ShadowConfig;
use crate::upstream::Upstream;

/// The whole file.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Listener and limits.
    #[serde(default)]
    pub server: ServerConfig,
    /// How requests are observed and spans exported.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// Where requests may go. The gateway forwards only to these.
    #[serde(default)]
    pub upstreams: Vec<UpstreamConfig>,
    /// Which upstream serves which request: the first route that matches wins.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Head sampling rules ([`llmtrace::sampling::HeadConfig`]): decided when a request's
    /// spans start. Without this section, `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG`
    /// are honoured; without either, every trace is recorded.
    pub sampling: Option<HeadConfig>,
    /// Tail sampling ([`llmtrace::sampling::TailConfig`]): whole traces kept or dropped when
    /// their root span ends, by what happened (errors, slow, TTFT, stalls, attributes,
    /// aborts), with a fallback ratio. Off without this section.
    pub tail: Option<TailConfig>,
    /// The trust boundary: which callers' trace context is continued, and what baggage goes
    /// upstream.
    #[serde(default)]
    pub propagation: PropagationConfig,
    /// Token prices, for the cost of each exchange (`gen_ai.usage.cost`, the cost metric,
    /// the access log).
    #[serde(default)]
    pub pricing: PricingConfig,
    /// Service level objectives (`[[slo]]`, see [`llmtrace::slo::ObjectiveConfig`]),
    /// computed from every request, sampled or not, and exported as `llmtrace_slo_*` metrics
    /// and on `/api/slo`. Without any, two defaults apply (availability 99.5 %; first token
    /// within 2 s for 95 % of streamed exchanges); `slo = []` turns them off.
    pub slo: Option<Vec<ObjectiveConfig>>,
}

/// `[pricing]`: what each exchange cost, from its usage and the model's prices (USD per
/// million tokens). The bundled table covers the main OpenAI and Anthropic models as of
/// [`llmtrace::genai::BUNDLED_PRICES_AS_OF`]; prices change and negotiated prices differ, so a file and the
/// configuration can add models or replace bundled ones:
///
/// ```toml
/// [pricing]
/// file = "/etc/llmtrace/prices.toml"     # same shape as [pricing.models], optional
/// [pricing.models."my-azure-deployment"]
/// input = 2.5                            # USD per million input tokens
/// output = 10.0                          # ... output tokens
/// cache_read = 1.25                      # cached input read (default: input)
/// cache_write = 3.125                    # input written to the cache (default: input)
/// ```
///
/// Later sources win for the same model: bundled, then the file, then `[pricing.models]`. A
/// model with no price gets no cost, and its span says so (`llmtrace.cost.missing =
/// "unknown_model"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PricingConfig {
    /// Record costs at all (default true).
    pub enabled: bool,
    /// Start from the bundled prices (default true).
    pub bundled: bool,
    /// A TOML file of prices: `[models."<model>"]` tables like `[pricing.models]`'s.
    pub file: Option<String>,
    /// Prices by model name, USD per million tokens.
    pub models: BTreeMap<String, ModelPrice>,
}

impl Default for PricingConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            bundled: true,
            file: None,
            models: BTreeMap::new(),
        }
    }
}

/// A prices file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PricesFile {
    #[serde(default)]
    models: BTreeMap<String, ModelPrice>,
}

impl PricingConfig {
    /// The price table, `None` when costs are off. Reads the file, and checks every price.
    pub fn table(&self) -> Result<Option<PriceTable>, ConfigError> {
        if !self.enabled {
            return Ok(None);
        }
        let mut table = if self.bundled {
            PriceTable::bundled()
        } else {
            PriceTable::empty()
        };
        if let Some(path) = &self.file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| error("pricing.file", format!("{path}: {e}")))?;
            let file: PricesFile =
                toml::from_str(&text).map_err(|e| error("pricing.file", format!("{path}: {e}")))?;
            insert_prices(&mut table, &file.models, "pricing.file")?;
        }
        insert_prices(&mut table, &self.models, "pricing.models")?;
        Ok(Some(table))
    }
}

fn insert_prices(
    table: &mut PriceTable,
    models: &BTreeMap<String, ModelPrice>,
    field: &str,
) -> Result<(), ConfigError> {
    for (model, price) in models {
        price
            .check()
            .map_err(|message| error(format!("{field}.{model:?}"), message))?;
        table.insert(model.clone(), *price);
    }
    Ok(())
}

/// `[propagation]`: the gateway's trust boundary.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct PropagationConfig {
    /// What the gateway makes of a client's `traceparent` and `tracestate`:
    ///
    /// - `"trust"` (default): continue the client's trace. The SERVER span is a child of the
    ///   client's span and the client's sampled flag counts (with parent-based sampling).
    ///   Right for a gateway whose clients are your own traced services, and what the gateway
    ///   did before this option existed.
    /// - `"link"`: start a new trace; its root, the SERVER span, carries a span link to the
    ///   client's context. The client can neither force sampling nor put the gateway's spans
    ///   (and the upstream's) into another trace, and the relation is still one click away.
    ///   Use it, with `trusted_networks`, on a gateway that internet clients reach.
    /// - `"ignore"`: start a new trace and record nothing of the client's.
    ///
    /// The caller's `baggage` is read in every mode (head rules may match it); what of it goes
    /// upstream is `forward_baggage`'s business.
    #[serde(deserialize_with = "incoming_mode")]
    pub incoming: Incoming,
    /// Peers whose trace context is continued whatever `incoming` says, as CIDR blocks
    /// (`"10.0.0.0/8"`, `"::1/128"`; a bare address is one host). The peer is the TCP peer
    /// of the connection, never a header a client can write: behind a load balancer, that is
    /// the balancer.
    pub trusted_networks: Vec<String>,
    /// Send the request's baggage upstream (default `false`). The upstreams of an LLM
    /// gateway are mostly third parties that read no baggage, while baggage tends to hold
    /// who the user is (`user.id`, `session.id`, a tenant): forwarding it by default would
    /// hand that to every provider. Turn it on for traced upstreams of your own, ideally with
    /// `baggage_allow`. The gateway's own spans and rules see the baggage either way, and the
    /// trace context (`traceparent`, `tracestate`) always goes.
    pub forward_baggage: bool,
    /// With `forward_baggage`, only these baggage keys go upstream (exact, case-sensitive
    /// names); empty (default) forwards all of them.
    pub baggage_allow: Vec<String>,
}

fn incoming_mode<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Incoming, D::Error> {
    let name = String::deserialize(de)?;
    name.parse().map_err(serde::de::Error::custom)
}

impl PropagationConfig {
    /// The `trusted_networks`, parsed; the first that does not parse is the error.
    pub fn networks(&self) -> Result<Vec<IpNetwork>, ConfigError> {
        self.trusted_networks
            .iter()
            .enumerate()
            .map(|(i, text)| {
                text.parse()
                    .map_err(|e| error(format!("propagation.trusted_networks[{i}]"), e))
            })
            .collect()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.networks()?;
        if !self.forward_baggage && !self.baggage_allow.is_empty() {
            return Err(error(
                "propagation.baggage_allow",
                "has no effect unless forward_baggage = true",
            ));
        }
        if let Some((i, key)) = self
            .baggage_allow
            .iter()
            .enumerate()
            .find(|(_, key)| key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(error(
                format!("propagation.baggage_allow[{i}]"),
                format!("{key:?} is not a baggage key"),
            ));
        }
        Ok(())
    }
}

/// A block of IP addresses in CIDR notation: `10.0.0.0/8`, `fd00::/8`, or one address.
///
/// ```
/// use llmtrace_proxy::config::IpNetwork;
///
/// let net: IpNetwork = "10.0.0.0/8".parse().unwrap();
/// assert!(net.contains("10.1.2.3".parse().unwrap()));
/// assert!(!net.contains("11.0.0.1".parse().unwrap()));
/// // An IPv4 peer on a dual-stack listener shows as an IPv4-mapped IPv6 address.
/// assert!(net.contains("::ffff:10.0.0.1".parse().unwrap()));
/// assert!("10.0.0.0/33".parse::<IpNetwork>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNetwork {
    addr: IpAddr,
    prefix: u8,
}

impl IpNetwork {
    /// Whether `ip` is in the block. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) count as
    /// their IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_eq(u32::from(net).into(), u32::from(ip).into(), 32, self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(u128::from(net), u128::from(ip), 128, self.prefix)
            }
            // A v4-mapped peer against an IPv6 block: compare as written.
            (IpAddr::V6(net), IpAddr::V4(_)) => match ip {
                IpAddr::V6(ip) => prefix_eq(u128::from(net), u128::from(ip), 128, self.prefix),
                IpAddr::V4(_) => false,
            },
            (IpAddr::V4(_), IpAddr::V6(_)) => false,
        }
    }
}

/// Whether the first `prefix` of the `bits` low bits of `a` and `b` agree.
fn prefix_eq(a: u128, b: u128, bits: u8, prefix: u8) -> bool {
    let shift = u32::from(bits - prefix);
    prefix == 0 || (a >> shift) == (b >> shift)
}

impl FromStr for IpNetwork {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not a network (such as 10.0.0.0/8 or fd00::/8)"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?}: the prefix length must be 0 to {max}"))?,
        };
        Ok(IpNetwork { addr, prefix })
    }
}

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the gateway listens on (default `127.0.0.1:8080`).
    pub listen: String,
    /// Admin listener for `/metrics`, `/healthz`, `/readyz`: an address, or `"off"`. The
    /// binary listens on `127.0.0.1:9464` when this is not set; keep it on loopback or a
    /// private network.
    pub admin: Option<String>,
    /// Request bodies larger than this are refused with 413 (default 32 MiB).
    pub max_request_body_bytes: usize,
    /// Worker threads serving requests (default: one per CPU).
    pub threads: Option<usize>,
    /// On SIGTERM, in-flight streams get this long to finish (default 30 s); the wait ends
    /// as soon as none is left. Give the orchestrator's kill timeout a few seconds more
    /// (Kubernetes' `terminationGracePeriodSeconds` defaults to 30).
    pub shutdown_grace_seconds: u64,
    /// A PEM file of the CAs that upstream TLS certificates are checked against, in place of
    /// the system's roots (a private PKI, a self-signed test upstream). Default: the system's.
    pub upstream_ca_file: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".to_owned(),
            admin: None,
            max_request_body_bytes: 32 * 1024 * 1024,
            threads: None,
            shutdown_grace_seconds: 30,
            upstream_ca_file: None,
        }
    }
}

/// `[telemetry]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// OTLP endpoint; the standard `OTEL_EXPORTER_OTLP_ENDPOINT` wins when set. With neither,
    /// spans are written as JSON lines to stdout or `spans_file`.
    pub otlp_endpoint: Option<String>,
    /// `grpc` or `http/protobuf` (default); `OTEL_EXPORTER_OTLP_PROTOCOL` wins when set.
    pub otlp_protocol: Option<String>,
    /// Where JSON-line spans go when no OTLP endpoint is set (default stdout).
    pub spans_file: Option<String>,
    /// Record prompt and completion content on spans (default false).
    pub capture_content: bool,
    /// For streamed OpenAI chat/completions requests that did not ask for usage, ask
    /// upstream and remove the usage chunk from the client's stream (default true).
    pub inject_stream_usage: bool,
    /// One JSON access-log line per request on stderr (default true).
    pub access_log: bool,
    /// Request headers recorded on the SERVER span when it starts, as
    /// `http.request.header.<name>`, so sampling rules can match them (a user tier, a
    /// tenant). Credentials are always `[REDACTED]`.
    pub capture_request_headers: Vec<String>,
    /// Distinct model names kept as metric label values (default 100): clients choose model
    /// names, so later new ones are counted under `_OTHER` instead of making new series. Span
    /// attributes keep every name (cut at 256 bytes).
    pub max_model_labels: usize,
    /// Business context: request headers and baggage entries recorded as span attributes
    /// (on the SERVER and GenAI spans, from their start, so head rules can match them), each
    /// value capped; `session.id` also becomes `gen_ai.conversation.id`; the keys listed in
    /// `metric_dimensions` also label the GenAI metrics, each with a cap on distinct values.
    /// Credential headers are refused. See [`BusinessContextConfig`].
    ///
    /// ```toml
    /// [telemetry.attributes]
    /// headers = { "x-user-id" = "user.id", "x-session-id" = "session.id" }
    /// baggage = { "experiment" = "llmtrace.experiment" }
    /// metric_dimensions = ["llmtrace.experiment"]
    /// ```
    pub attributes: BusinessContextConfig,
    /// Traces the viewer's in-memory store keeps (`/ui` and `/api/traces` on the admin
    /// listener; default 1 000); the oldest goes first. 0 turns the store off.
    pub store_traces: usize,
    /// Bytes the store's spans may hold (default 64 MiB), counted by what each span holds;
    /// the oldest trace goes first. 0 turns the store off.
    pub store_bytes: usize,
    /// Points of each stream's chunk timeline on its GenAI span
    /// (`llmtrace.stream.chunk_offsets_ms`: when chunks arrived, evenly thinned to this many
    /// and the last; default 256, at most 4096; 0 records none). The viewer draws them.
    pub chunk_timeline: u16,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            otlp_protocol: None,
            spans_file: None,
            capture_content: false,
            inject_stream_usage: true,
            access_log: true,
            capture_request_headers: Vec::new(),
            max_model_labels: llmtrace::limits::DEFAULT_MAX_MODEL_LABELS,
            attributes: BusinessContextConfig::default(),
            store_traces: 1000,
            store_bytes: 64 * 1024 * 1024,
            chunk_timeline: 256,
        }
    }
}

/// The kind of provider an upstream is, which decides how credentials are sent. Named by a
/// known [`Provider`]'s `gen_ai.provider.name` (`openai`, `anthropic`, `azure.ai.openai`),
/// `azure` for short, or `openai-compatible`; without regard to case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum ProviderKind {
    /// OpenAI: `Authorization: Bearer`.
    Openai,
    /// Anthropic: `x-api-key`.
    Anthropic,
    /// Azure OpenAI: `api-key`.
    Azure,
    /// vLLM, Ollama, LiteLLM, ...: `Authorization: Bearer`.
    OpenaiCompatible,
    /// A Chroma server (HTTP API v1 and v2): database spans, not GenAI ones;
    /// `Authorization: Bearer`.
    Chroma,
    /// A Qdrant server (REST API): database spans; `api-key`.
    Qdrant,
    /// A Weaviate server (REST and GraphQL): database spans; `Authorization: Bearer`.
    Weaviate,
}

impl ProviderKind {
    /// The configuration's own names, beside the providers' names.
    const AZURE: &'static str = "azure";
    const OPENAI_COMPATIBLE: &'static str = "openai-compatible";

    /// The provider the kind stands for; `None` for `openai-compatible`, whose provider is
    /// told per request (or named by `provider_name`).
    pub fn provider(self) -> Option<Provider> {
        match self {
            ProviderKind::Openai => Some(Provider::OpenAi),
            ProviderKind::Anthropic => Some(Provider::Anthropic),
            ProviderKind::Azure => Some(Provider::AzureOpenAi),
            ProviderKind::OpenaiCompatible
            | ProviderKind::Chroma
            | ProviderKind::Qdrant
            | ProviderKind::Weaviate => None,
        }
    }

    /// The vector database the kind stands for: its requests get database spans
    /// (`llmtrace::vectordb`) instead of GenAI ones.
    pub fn vector_db(self) -> Option<VectorDbSystem> {
        match self {
            ProviderKind::Chroma => Some(VectorDbSystem::Chroma),
            ProviderKind::Qdrant => Some(VectorDbSystem::Qdrant),
            ProviderKind::Weaviate => Some(VectorDbSystem::Weaviate),
            _ => None,
        }
    }

    /// `gen_ai.provider.name`, when the kind names one.
    pub fn provider_name(self) -> Option<&'static str> {
        self.provider()?.known_name()
    }
}

impl FromStr for ProviderKind {
    type Err = String;

    /// A kind by name, without regard to case; the error lists the accepted names.
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        if name.eq_ignore_ascii_case(Self::AZURE) {
            return Ok(ProviderKind::Azure);
        }
        if name.eq_ignore_ascii_case(Self::OPENAI_COMPATIBLE) {
            return Ok(ProviderKind::OpenaiCompatible);
        }
        let vector_dbs = [
            ProviderKind::Chroma,
            ProviderKind::Qdrant,
            ProviderKind::Weaviate,
        ];
        if let Some(kind) = vector_dbs.into_iter().find(|kind| {
            kind.vector_db()
                .is_some_and(|db| name.eq_ignore_ascii_case(db.as_str()))
        }) {
            return Ok(kind);
        }
        match name.parse::<Provider>() {
            Ok(Provider::OpenAi) => Ok(ProviderKind::Openai),
            Ok(Provider::Anthropic) => Ok(ProviderKind::Anthropic),
            Ok(Provider::AzureOpenAi) => Ok(ProviderKind::Azure),
            Ok(other) => Err(format!("provider `{other}` has no credential kind")),
            Err(unknown) => Err(format!(
                "{unknown}, {}, {} (LLM APIs) or chroma, qdrant, weaviate (vector databases)",
                Self::AZURE,
                Self::OPENAI_COMPATIBLE
            )),
        }
    }
}

impl TryFrom<String> for ProviderKind {
    type Error = String;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        name.parse()
    }
}

/// `[[upstreams]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Name routes refer to.
    pub name: String,
    /// Base URL, `http://` or `https://`.
    pub url: String,
    /// `openai` (default), `anthropic`, `azure` or `openai-compatible`; or a vector
    /// database: `chroma`, `qdrant`, `weaviate`.
    #[serde(default = "default_kind")]
    pub provider: ProviderKind,
    /// `gen_ai.provider.name` for an `openai-compatible` upstream (e.g. `vllm`).
    pub provider_name: Option<String>,
    /// The upstream's API key, injected as the provider expects; use `${ENV}`. The client's
    /// own credentials are then removed.
    pub api_key: Option<String>,
    /// Connect timeout in ms (default 10 000).
    #[serde(default = "default_connect_ms")]
    pub connect_timeout_ms: u64,
    /// Longest silence from the upstream in ms (default 300 000): the wait for the response
    /// head, and every gap between chunks after it. It is pingora's per-read timeout, so one
    /// value covers both (pingora 0.9 has no separate time-to-first-byte timeout); set
    /// `first_byte_timeout_ms` lower to bound the wait for the head more tightly, at the
    /// price of also bounding the gaps by it.
    #[serde(default = "default_idle_ms")]
    pub idle_timeout_ms: u64,
    /// Longest wait for the response head in ms. When lower than `idle_timeout_ms` it
    /// replaces it as the read timeout (see there). Default: unset.
    #[serde(default)]
    pub first_byte_timeout_ms: Option<u64>,
    /// Longest whole exchange in ms, from the request's arrival to the response's last byte
    /// (default unset: no limit). It is checked as each chunk arrives, so a silent upstream
    /// is cut by the read timeout, a chatty one at the first chunk past the deadline; the
    /// client's stream then ends early and the spans say `error.type = timeout`.
    #[serde(default)]
    pub total_timeout_ms: Option<u64>,
}

fn default_kind() -> ProviderKind {
    ProviderKind::Openai
}
fn default_connect_ms() -> u64 {
    10_000
}
fn default_idle_ms() -> u64 {
    300_000
}

/// `[[routes]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Requests whose path starts with this (default `/`: everything).
    #[serde(default = "default_prefix")]
    pub path_prefix: String,
    /// Only requests for this `Host` (without port), when set.
    pub host: Option<String>,
    /// The upstream's name.
    pub upstream: String,
    /// Client keys accepted on this route (`Authorization: Bearer KEY` or `x-api-key`); when
    /// set, other requests get 401. Use `${ENV}`.
    #[serde(default)]
    pub client_keys: Vec<String>,
    /// Upstreams tried, in order, when the previous attempt failed before its first response
    /// byte (connect error, or a status in `retry_on`). Never after a response started: a
    /// client never sees two streams spliced.
    #[serde(default)]
    pub fallbacks: Vec<String>,
    /// Extra attempts after the first (default: one per fallback, so 0 without fallbacks).
    /// Attempt `i` goes to the `i`-th of `[upstream, fallbacks...]`, wrapping around, so
    /// `retries = 2` with no fallbacks tries the same upstream three times. Attempts are
    /// immediate (no backoff); a request whose body is over 64 KiB is not retried (pingora
    /// keeps 64 KiB to replay).
    pub retries: Option<u32>,
    /// Response statuses that count as a failed attempt (default 429, 500, 502, 503, 504).
    #[serde(default = "default_retry_on")]
    pub retry_on: Vec<u16>,
    /// A canary split: the route's traffic across upstreams by weight, sticky by a key, each
    /// request's cohort on its spans, baggage and metrics (see [`crate::canary`]).
    #[serde(default)]
    pub split: Option<SplitConfig>,
    /// Shadow traffic: a share of the route's LLM requests mirrored to another upstream, off
    /// the request path (see [`crate::shadow`]).
    #[serde(default)]
    pub shadow: Option<ShadowConfig>,
}

impl RouteConfig {
    /// Attempts in all: the first and the retries.
    pub fn max_attempts(&self) -> u32 {
        1 + self.retries.unwrap_or(self.fallbacks.len() as u32)
    }
}

fn default_retry_on() -> Vec<u16> {
    vec![429, 500, 502, 503, 504]
}

fn default_prefix() -> String {
    "/".to_owned()
}

/// A configuration error that names the field at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted path of the field, e.g. `upstreams[1].url`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for ConfigError {}

fn error(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.into(),
        message: message.into(),
    }
}

impl Config {
    /// Reads, substitutes `${ENV}` and validates a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| error(path.display().to_string(), format!("cannot read: {e}")))?;
        Config::parse(&text, |name| std::env::var(name).ok())
    }

    /// Parses `text`, looking variables up with `env`.
    ///
    /// ```
    /// use llmtrace_proxy::config::Config;
    ///
    /// let text = "[[upstreams]]\nname = \"a\"\nurl = \"${URL}\"\n[[routes]]\nupstream = \"a\"\n";
    /// let config = Config::parse(text, |_| Some("http://127.0.0.1:8000".into())).unwrap();
    /// assert_eq!(config.upstreams[0].url, "http://127.0.0.1:8000");
    /// let err = Config::parse(text, |_| None).unwrap_err();
    /// assert!(err.to_string().contains("URL"));
    /// ```
    pub fn parse(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let substituted = substitute(text, &env)?;
        let config: Config = toml::from_str(&substituted).map_err(|e| {
            let span = e.span().map(|s| line_of(&substituted, s.start));
            error(
                span.map_or("config".to_owned(), |line| format!("line {line}")),
                e.message().to_owned(),
            )
        })?;
        config.validate()?;
        Ok(config)
    }

    /// A configuration for one upstream and no file: `--upstream URL [--provider KIND]`.
    pub fn single(listen: &str, url: &str, provider: Option<&str>) -> Result<Config, ConfigError> {
        let (kind, provider_name) = match provider {
            // No kind given: the provider is told per request from the path and host
            // (`/v1/messages` is Anthropic, ...), as for an OpenAI-compatible upstream.
            None => (ProviderKind::OpenaiCompatible, None),
            // Any other name is an OpenAI-compatible server's `gen_ai.provider.name`.
            Some(name) => match name.parse() {
                Ok(kind) => (kind, None),
                Err(_) => (ProviderKind::OpenaiCompatible, Some(name.to_owned())),
            },
        };
        let config = Config {
            server: ServerConfig {
                listen: listen.to_owned(),
                ..ServerConfig::default()
            },
            telemetry: TelemetryConfig::default(),
            upstreams: vec![UpstreamConfig {
                name: "default".to_owned(),
                url: url.to_owned(),
                provider: kind,
                provider_name,
                api_key: None,
                connect_timeout_ms: default_connect_ms(),
                idle_timeout_ms: default_idle_ms(),
                first_byte_timeout_ms: None,
                total_timeout_ms: None,
            }],
            sampling: None,
            tail: None,
            propagation: PropagationConfig::default(),
            pricing: PricingConfig::default(),
            slo: None,
            routes: vec![RouteConfig {
                path_prefix: "/".to_owned(),
                host: None,
                upstream: "default".to_owned(),
                client_keys: Vec::new(),
                fallbacks: Vec::new(),
                retries: None,
                retry_on: default_retry_on(),
                split: None,
                shadow: None,
            }],
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: names resolve, URLs parse, addresses parse.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_server()?;
        if self.upstreams.is_empty() {
            return Err(error("upstreams", "at least one upstream is needed"));
        }
        let mut names = HashSet::new();
        for (i, upstream) in self.upstreams.iter().enumerate() {
            if !names.insert(upstream.name.as_str()) {
                return Err(error(
                    format!("upstreams[{i}].name"),
                    format!("{:?} is used twice", upstream.name),
                ));
            }
            upstream.validate(i)?;
        }
        if self.routes.is_empty() {
            return Err(error("routes", "at least one route is needed"));
        }
        for (i, route) in self.routes.iter().enumerate() {
            route.validate(i, &names)?;
        }
        self.propagation.validate()?;
        self.pricing.table()?;
        self.validate_telemetry()
    }

    fn validate_server(&self) -> Result<(), ConfigError> {
        self.server
            .listen
            .parse::<std::net::SocketAddr>()
            .map_err(|e| {
                error(
                    "server.listen",
                    format!("{:?} is not an address: {e}", self.server.listen),
                )
            })?;
        if let Some(admin) = self.server.admin.as_ref().filter(|a| *a != "off") {
            admin
                .parse::<std::net::SocketAddr>()
                .map_err(|e| error("server.admin", format!("{admin:?} is not an address: {e}")))?;
        }
        if self.server.threads == Some(0) {
            return Err(error("server.threads", "must be at least 1"));
        }
        Ok(())
    }

    /// The objectives to compute: the configured ones, or the defaults without `[[slo]]`.
    pub fn objectives(&self) -> Result<Vec<Objective>, ConfigError> {
        let Some(configured) = &self.slo else {
            return Ok(SloEngine::defaults());
        };
        let mut names = HashSet::new();
        configured
            .iter()
            .enumerate()
            .map(|(i, slo)| {
                let objective = slo
                    .build()
                    .map_err(|e| error(format!("slo[{i}].{}", e.field), e.message))?;
                if !names.insert(objective.name().to_owned()) {
                    return Err(error(
                        format!("slo[{i}].name"),
                        format!(
                            "{:?} is used twice; give each objective its own name",
                            objective.name()
                        ),
                    ));
                }
                Ok(objective)
            })
            .collect()
    }

    fn validate_telemetry(&self) -> Result<(), ConfigError> {
        for (i, name) in self.telemetry.capture_request_headers.iter().enumerate() {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(error(
                    format!("telemetry.capture_request_headers[{i}]"),
                    format!("{name:?} is not a header name"),
                ));
            }
        }
        self.telemetry
            .attributes
            .build()
            .map_err(|e| error("telemetry.attributes", e.to_string()))?;
        if let Some(sampling) = &self.sampling {
            sampling
                .build()
                .map_err(|e| error("sampling", e.to_string()))?;
        }
        if let Some(tail) = &self.tail {
            tail.build(NoProcessor)
                .map_err(|e| error("tail", e.to_string()))?;
        }
        if let Some(protocol) = &self.telemetry.otlp_protocol {
            if !matches!(protocol.as_str(), "grpc" | "http/protobuf") {
                return Err(error(
                    "telemetry.otlp_protocol",
                    "must be grpc or http/protobuf",
                ));
            }
        }
        self.objectives()?;
        if self.telemetry.chunk_timeline > llmtrace::genai::MAX_TIMELINE_POINTS {
            return Err(error(
                "telemetry.chunk_timeline",
                format!(
                    "at most {} points (0 turns the timeline off)",
                    llmtrace::genai::MAX_TIMELINE_POINTS
                ),
            ));
        }
        Ok(())
    }

    /// The route for a request, by path and host.
    pub fn route(&self, path: &str, host: Option<&str>) -> Option<&RouteConfig> {
        let host = host.map(host_without_port);
        self.routes.iter().find(|route| {
            path.starts_with(&route.path_prefix)
                && route.host.as_deref().is_none_or(|want| Some(want) == host)
        })
    }

    /// The upstream named `name`.
    pub fn upstream(&self, name: &str) -> Option<&UpstreamConfig> {
        self.upstreams.iter().find(|u| u.name == name)
    }
}

/// The host of a `Host` header or URI authority: `[::1]:8080` → `::1`, `a.b:80` → `a.b`.
fn host_without_port(authority: &str) -> &str {
    match authority.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => authority.split(':').next().unwrap_or(authority),
    }
}

/// Stands in for the exporting processor when a tail configuration is only checked.
#[derive(Debug)]
struct NoProcessor;

impl opentelemetry_sdk::trace::SpanProcessor for NoProcessor {
    fn on_start(&self, _: &mut opentelemetry_sdk::trace::Span, _: &opentelemetry::Context) {}
    fn on_end(&self, _: opentelemetry_sdk::trace::SpanData) {}
    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        Ok(())
    }
    fn shutdown_with_timeout(
        &self,
        _: std::time::Duration,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        Ok(())
    }
}

/// The head sampling that `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` ask for
/// (`always_on`, `always_off`, `traceidratio`, `parentbased_always_on`,
/// `parentbased_always_off`, `parentbased_traceidratio`); `None` when unset.
///
/// ```
/// use llmtrace_proxy::config::sampler_from_env;
///
/// let env = |name: &str| match name {
///     "OTEL_TRACES_SAMPLER" => Some("parentbased_traceidratio".to_owned()),
///     "OTEL_TRACES_SAMPLER_ARG" => Some("0.25".to_owned()),
///     _ => None,
/// };
/// let head = sampler_from_env(env).unwrap().unwrap();
/// assert_eq!((head.default_ratio, head.parent_based), (0.25, true));
/// ```
pub fn sampler_from_env(
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<HeadConfig>, ConfigError> {
    let Some(name) = env("OTEL_TRACES_SAMPLER").filter(|v| !v.trim().is_empty()) else {
        return Ok(None);
    };
    let ratio = || -> Result<f64, ConfigError> {
        match env("OTEL_TRACES_SAMPLER_ARG") {
            None => Ok(1.0),
            Some(arg) => arg
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|r| (0.0..=1.0).contains(r))
                .ok_or_else(|| {
                    error(
                        "OTEL_TRACES_SAMPLER_ARG",
                        format!("{arg:?} is not a ratio between 0 and 1"),
                    )
                }),
        }
    };
    let (default_ratio, parent_based) = match name.trim() {
        "always_on" => (1.0, false),
        "always_off" => (0.0, false),
        "traceidratio" => (ratio()?, false),
        "parentbased_always_on" => (1.0, true),
        "parentbased_always_off" => (0.0, true),
        "parentbased_traceidratio" => (ratio()?, true),
        other => {
            return Err(error(
                "OTEL_TRACES_SAMPLER",
                format!(
                    "{other:?}: expected always_on, always_off, traceidratio, \
                     parentbased_always_on, parentbased_always_off or parentbased_traceidratio"
                ),
            ));
        }
    };
    Ok(Some(HeadConfig {
        default_ratio,
        parent_based,
        ..HeadConfig::default()
    }))
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Replaces `${NAME}` with the variable's value; `$${` is a literal `${`.
fn substitute(text: &str, env: &impl Fn(&str) -> Option<String>) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        if let Some(after) = rest.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = rest.strip_prefix("${") {
            let end = after.find('}').ok_or_else(|| {
                error(
                    format!("line {}", line_of(text, text.len() - rest.len())),
                    "unclosed ${",
                )
            })?;
            let name = &after[..end];
            let value = env(name).ok_or_else(|| {
                error(
                    format!("line {}", line_of(text, text.len() - rest.len())),
                    format!("environment variable {name} is not set"),
                )
            })?;
            out.push_str(&value);
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

impl UpstreamConfig {
    /// The checks of `upstreams[i]` that need nothing else of the file.
    fn validate(&self, i: usize) -> Result<(), ConfigError> {
        Upstream::parse(&self.url).map_err(|e| error(format!("upstreams[{i}].url"), e.0))?;
        if self.connect_timeout_ms == 0
            || self.idle_timeout_ms == 0
            || self.first_byte_timeout_ms == Some(0)
            || self.total_timeout_ms == Some(0)
        {
            return Err(error(
                format!("upstreams[{i}]"),
                "timeouts must be greater than 0",
            ));
        }
        if self.provider_name.is_some() && self.provider != ProviderKind::OpenaiCompatible {
            return Err(error(
                format!("upstreams[{i}].provider_name"),
                "names the provider of an `openai-compatible` upstream only",
            ));
        }
        if self.api_key.as_deref() == Some("") {
            return Err(error(
                format!("upstreams[{i}].api_key"),
                "is empty (is its variable set?)",
            ));
        }
        // The key goes out as a header value; never echo it in the message.
        if self
            .api_key
            .as_deref()
            .is_some_and(|key| http::HeaderValue::from_str(&format!("Bearer {key}")).is_err())
        {
            return Err(error(
                format!("upstreams[{i}].api_key"),
                "holds characters a header value cannot carry (control characters or non-ASCII)",
            ));
        }
        Ok(())
    }
}

impl RouteConfig {
    /// The checks of `routes[i]`; `upstreams` are the names the file defines.
    fn validate(&self, i: usize, upstreams: &HashSet<&str>) -> Result<(), ConfigError> {
        if !upstreams.contains(self.upstream.as_str()) {
            return Err(error(
                format!("routes[{i}].upstream"),
                format!("no upstream is named {:?}", self.upstream),
            ));
        }
        if !self.path_prefix.starts_with('/') {
            return Err(error(
                format!("routes[{i}].path_prefix"),
                "must start with /",
            ));
        }
        for (j, fallback) in self.fallbacks.iter().enumerate() {
            if !upstreams.contains(fallback.as_str()) {
                return Err(error(
                    format!("routes[{i}].fallbacks[{j}]"),
                    format!("no upstream is named {fallback:?}"),
                ));
            }
        }
        if let Some(status) = self.retry_on.iter().find(|s| !(400..=599).contains(*s)) {
            return Err(error(
                format!("routes[{i}].retry_on"),
                format!("{status} is not an error status (400-599)"),
            ));
        }
        if self.retries.is_some_and(|r| r > 10) {
            return Err(error(format!("routes[{i}].retries"), "at most 10"));
        }
        if self.client_keys.iter().any(String::is_empty) {
            return Err(error(
                format!("routes[{i}].client_keys"),
                "an empty key (is its variable set?)",
            ));
        }
        let names: Vec<&str> = upstreams.iter().copied().collect();
        if let Some(split) = &self.split {
            split.validate(i, &names)?;
        }
        if let Some(shadow) = &self.shadow {
            shadow.validate(i, &names)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_kinds_are_named_by_the_core_provider_table() {
        for (name, kind) in [
            ("openai", ProviderKind::Openai),
            ("OpenAI", ProviderKind::Openai),
            ("anthropic", ProviderKind::Anthropic),
            ("azure.ai.openai", ProviderKind::Azure),
            ("azure", ProviderKind::Azure),
            ("openai-compatible", ProviderKind::OpenaiCompatible),
        ] {
            assert_eq!(name.parse::<ProviderKind>(), Ok(kind), "{name}");
            let config = Config::single("127.0.0.1:0", "http://x", Some(name)).unwrap();
            assert_eq!(config.upstreams[0].provider, kind, "{name}");
            assert_eq!(config.upstreams[0].provider_name, None, "{name}");
        }
        for kind in [
            ProviderKind::Openai,
            ProviderKind::Anthropic,
            ProviderKind::Azure,
        ] {
            let provider = kind.provider().unwrap();
            assert_eq!(kind.provider_name(), Some(provider.as_str()));
            assert_eq!(provider.as_str().parse::<ProviderKind>(), Ok(kind));
        }
        assert_eq!(ProviderKind::OpenaiCompatible.provider(), None);
        assert_eq!(ProviderKind::OpenaiCompatible.provider_name(), None);
        let err = "cohere".parse::<ProviderKind>().unwrap_err();
        assert_eq!(
            err,
            "unknown provider `cohere`: expected one of openai, anthropic, azure.ai.openai, \
             azure, openai-compatible (LLM APIs) or chroma, qdrant, weaviate (vector databases)"
        );
        let text = "[[upstreams]]\nname = \"v\"\nurl = \"http://127.0.0.1:6333\"\n\
                    provider = \"qdrant\"\nprovider_name = \"x\"\n[[routes]]\nupstream = \"v\"\n";
        let err = Config::parse(text, |_| None).unwrap_err();
        assert_eq!(err.field, "upstreams[0].provider_name");
        for (name, db) in [
            ("chroma", VectorDbSystem::Chroma),
            ("Qdrant", VectorDbSystem::Qdrant),
            ("WEAVIATE", VectorDbSystem::Weaviate),
        ] {
            let kind = name.parse::<ProviderKind>().unwrap();
            assert_eq!(kind.vector_db(), Some(db), "{name}");
            assert_eq!(kind.provider(), None, "{name}");
        }
        let config = Config::single("127.0.0.1:0", "http://x", Some("vllm")).unwrap();
        assert_eq!(config.upstreams[0].provider, ProviderKind::OpenaiCompatible);
        assert_eq!(config.upstreams[0].provider_name.as_deref(), Some("vllm"));
        let config = Config::single("127.0.0.1:0", "http://x", None).unwrap();
        assert_eq!(config.upstreams[0].provider, ProviderKind::OpenaiCompatible);
        assert_eq!(config.upstreams[0].provider_name, None);
    }

    fn env(name: &str) -> Option<String> {
        match name {
            "KEY" => Some("sk-1".into()),
            _ => None,
        }
    }

    const GOOD: &str = r#"
[server]
listen = "127.0.0.1:8080"
[[upstreams]]
name = "openai"
url = "https://api.openai.com"
api_key = "${KEY}"
[[upstreams]]
name = "claude"
url = "https://api.anthropic.com"
provider = "anthropic"
[[routes]]
path_prefix = "/v1/messages"
upstream = "claude"
[[routes]]
upstream = "openai"
"#;

    /// `GOOD` with its last route split between `first` (cohort a) and `second` (b).
    fn split(key: &str, first: &str, second: &str) -> String {
        format!(
            "{GOOD}[routes.split]\nkey = \"{key}\"\ncohorts = [{{ name = \"a\", upstream = \"{first}\", \
             weight = 1 }}, {{ name = \"b\", upstream = \"{second}\", weight = 1 }}]\n"
        )
    }

    #[test]
    fn a_good_file_loads_and_routes() {
        assert!(Config::parse(&split("baggage:user.id", "openai", "claude"), env).is_ok());
        let config = Config::parse(GOOD, env).unwrap();
        assert_eq!(config.upstreams[0].api_key.as_deref(), Some("sk-1"));
        assert_eq!(
            config.route("/v1/messages", None).unwrap().upstream,
            "claude"
        );
        assert_eq!(
            config.route("/v1/chat/completions", None).unwrap().upstream,
            "openai"
        );
    }

    #[test]
    fn errors_name_the_field() {
        for (text, field) in [
            (GOOD.replace("${KEY}", "${MISSING}"), "line 7"),
            (
                GOOD.replace("https://api.openai.com", "ftp://x"),
                "upstreams[0].url",
            ),
            (
                GOOD.replace("upstream = \"claude\"", "upstream = \"nope\""),
                "routes[0].upstream",
            ),
            (GOOD.replace("127.0.0.1:8080", "nowhere"), "server.listen"),
            (
                GOOD.replace("provider = \"anthropic\"", "provider = \"cohere\""),
                "line",
            ),
            (format!("{GOOD}\n[server2]\n"), "line"),
            (
                format!("{GOOD}\n[sampling]\ndefault_ratio = 2.0\n"),
                "sampling",
            ),
            (
                format!("{GOOD}\n[tail]\npolicies = [{{ nonsense = 1 }}]\n"),
                "line",
            ),
            (format!("{GOOD}\n[tail]\nmax_traces = 0\n"), "tail"),
            // A prompt policy's regex is compiled when the file is read; ids must differ.
            (
                format!("{GOOD}\n[tail]\npolicies = [{{ prompt = {{ regex = \"(\" }} }}]\n"),
                "line",
            ),
            (
                format!(
                    "{GOOD}\n[tail]\npolicies = [{{ prompt = {{ keywords = [\"a\"] }} }}, \
                     {{ prompt = {{ keywords = [\"b\"] }} }}]\n"
                ),
                "tail",
            ),
            (
                GOOD.replace(
                    "upstream = \"openai\"\n",
                    "upstream = \"openai\"\nfallbacks = [\"gone\"]\n",
                ),
                "routes[1].fallbacks[0]",
            ),
            (
                format!("{GOOD}\n[telemetry]\ncapture_request_headers = [\"bad header\"]\n"),
                "telemetry.capture_request_headers[0]",
            ),
            (
                format!("{GOOD}\n[telemetry]\nchunk_timeline = 5000\n"),
                "telemetry.chunk_timeline",
            ),
            (
                split("header:x-user-id", "openai", "nowhere"),
                "routes[1].split.cohorts[1].upstream",
            ),
            (
                split("cookie:id", "openai", "claude"),
                "routes[1].split.key",
            ),
            (
                split("random", "openai", "claude").replace("\"b\"", "\"a\""),
                "routes[1].split.cohorts[1].name",
            ),
        ] {
            let err = Config::parse(&text, env).unwrap_err();
            assert!(err.field.starts_with(field), "{err} (wanted {field})");
            if field == "line 7" {
                assert!(err.message.contains("MISSING"), "{err}");
            }
        }
    }

    #[test]
    fn networks_match_by_prefix() {
        let net = |text: &str| text.parse::<IpNetwork>().unwrap();
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        for (network, inside, outside) in [
            ("10.0.0.0/8", "10.255.255.255", "11.0.0.0"),
            ("192.168.1.0/24", "192.168.1.7", "192.168.2.7"),
            ("127.0.0.1/32", "127.0.0.1", "127.0.0.2"),
            ("127.0.0.1", "127.0.0.1", "127.0.0.2"),
            ("0.0.0.0/0", "203.0.113.9", "::1"),
            ("10.1.2.3/8", "10.9.9.9", "11.1.2.3"),
            ("fd00::/8", "fd12::1", "fe80::1"),
            ("::1/128", "::1", "::2"),
            ("::/0", "2001:db8::1", "10.0.0.1"),
            ("::ffff:10.0.0.0/104", "::ffff:10.1.1.1", "::ffff:11.1.1.1"),
            ("10.0.0.0/8", "::ffff:10.1.1.1", "::ffff:11.1.1.1"),
        ] {
            assert!(net(network).contains(ip(inside)), "{network} {inside}");
            assert!(!net(network).contains(ip(outside)), "{network} {outside}");
        }
        for bad in [
            "",
            "10.0.0.0/",
            "10.0.0.0/x",
            "10.0.0.0/-1",
            "10/8",
            "::1/200",
            "host/8",
        ] {
            assert!(bad.parse::<IpNetwork>().is_err(), "{bad}");
        }
    }

    #[test]
    fn dollar_escapes() {
        assert_eq!(
            substitute("a $${X} b $ c ${KEY}", &env).unwrap(),
            "a ${X} b $ c sk-1"
        );
    }
}
