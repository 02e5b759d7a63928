//! The gateway's own OTLP span exporters: batches encoded straight from the SDK's `SpanData`
//! into protobuf bytes ([`encode::export_request`]) and sent as they are, with tonic over gRPC
//! ([`GrpcExporter`]) or as an HTTP `POST` ([`HttpExporter`]), without the SDK exporter's
//! intermediate tree of `opentelemetry_proto` structs.
//!
//! It reads the same settings as the SDK's exporter: the endpoint from
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, else `OTEL_EXPORTER_OTLP_ENDPOINT`, else
//! `http://localhost:4317` (for OTLP/HTTP see [`OtlpSettings::http_from_env`]); headers from `OTEL_EXPORTER_OTLP_HEADERS` and
//! `OTEL_EXPORTER_OTLP_TRACES_HEADERS` (`key=value,…`, values percent-decoded, the second
//! winning); the timeout from `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`, else
//! `OTEL_EXPORTER_OTLP_TIMEOUT` (milliseconds, default 10 000). Transient failures
//! (`UNAVAILABLE`, `RESOURCE_EXHAUSTED`, `ABORTED`, `DEADLINE_EXCEEDED`, `CANCELLED`) are retried
//! with exponential backoff (100 ms doubling, with jitter) until the timeout is spent. A
//! configuration it does not cover (an `https` endpoint, compression) is left to the SDK's
//! exporter: [`OtlpSettings::from_env`] says so by returning `None`. OTLP/HTTP's retries are
//! described in its module.

pub mod encode;
mod http;
#[cfg(test)]
mod http_tests;

pub use http::HttpExporter;

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ::http::uri::PathAndQuery;
use bytes::{Buf, BufMut, Bytes};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::Channel;
use tonic::{Code, Status};

/// The OTLP trace service's export method.
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
const DEFAULT_ENDPOINT: &str = "http://localhost:4317";
const DEFAULT_HTTP_ENDPOINT: &str = "http://localhost:4318/v1/traces";
/// Appended to `OTEL_EXPORTER_OTLP_ENDPOINT` for OTLP/HTTP.
const HTTP_TRACES_PATH: &str = "v1/traces";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// Where and how to send, read from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpSettings {
    /// gRPC: `http://host:port`; HTTP: the full traces URL (`http://host:port/v1/traces`).
    pub endpoint: String,
    /// Request metadata or headers (`OTEL_EXPORTER_OTLP_*HEADERS`).
    pub headers: Vec<(String, String)>,
    /// Per export call, retries included.
    pub timeout: Duration,
}

impl OtlpSettings {
    /// The OTLP/gRPC settings `env` describes, or `None` when they need what only the SDK's
    /// exporter does (TLS, compression).
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Option<Self> {
        Self::read(&env, DEFAULT_ENDPOINT, str::to_owned)
    }

    /// The OTLP/HTTP (protobuf) settings `env` describes, or `None` when they need what only
    /// the SDK's exporter does (TLS, compression). As the OTLP specification has it,
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is the traces URL as it stands, while
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` is a base URL that `v1/traces` is appended to; the default
    /// is `http://localhost:4318/v1/traces`.
    pub fn http_from_env(env: impl Fn(&str) -> Option<String>) -> Option<Self> {
        Self::read(&env, DEFAULT_HTTP_ENDPOINT, |base| {
            format!("{}/{HTTP_TRACES_PATH}", base.trim_end_matches('/'))
        })
    }

    /// The settings, the generic endpoint turned into the traces one by `traces`.
    fn read(
        env: &impl Fn(&str) -> Option<String>,
        default: &str,
        traces: impl Fn(&str) -> String,
    ) -> Option<Self> {
        let non_empty = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let endpoint = non_empty("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .map(|v| v.trim().to_owned())
            .or_else(|| non_empty("OTEL_EXPORTER_OTLP_ENDPOINT").map(|v| traces(v.trim())))
            .unwrap_or_else(|| default.to_owned());
        let compressed = [
            "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
            "OTEL_EXPORTER_OTLP_COMPRESSION",
        ]
        .iter()
        .any(|name| non_empty(name).is_some_and(|v| v.trim() != "none"));
        if !endpoint.starts_with("http://") || compressed {
            return None;
        }
        let mut headers: Vec<(String, String)> = Vec::new();
        for name in [
            "OTEL_EXPORTER_OTLP_HEADERS",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        ] {
            for (key, value) in non_empty(name)
                .as_deref()
                .map(parse_headers)
                .unwrap_or_default()
            {
                headers.retain(|(known, _)| *known != key);
                headers.push((key, value));
            }
        }
        let timeout = non_empty("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")
            .or_else(|| non_empty("OTEL_EXPORTER_OTLP_TIMEOUT"))
            .and_then(|ms| ms.trim().parse::<u64>().ok())
            .map_or(DEFAULT_TIMEOUT, Duration::from_millis);
        Some(Self {
            endpoint,
            headers,
            timeout,
        })
    }
}

/// `key=value,key2=value2`, keys lower-cased, values percent-decoded; malformed pairs are
/// skipped.
fn parse_headers(text: &str) -> Vec<(String, String)> {
    text.split(',')
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            let key = key.trim().to_ascii_lowercase();
            let value = percent_encoding::percent_decode_str(value.trim())
                .decode_utf8()
                .ok()?
                .into_owned();
            (!key.is_empty()).then_some((key, value))
        })
        .collect()
}

/// An OTLP/gRPC span exporter that encodes `SpanData` directly (see the module docs).
pub struct GrpcExporter {
    client: tonic::client::Grpc<Channel>,
    metadata: MetadataMap,
    timeout: Duration,
    runtime: tokio::runtime::Handle,
    batches: BatchEncoder,
}

impl fmt::Debug for GrpcExporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcExporter")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl GrpcExporter {
    /// An exporter for `settings`; its connection is made lazily on `runtime` (tonic's
    /// channel needs a tokio runtime). Fails on an endpoint that is not a URI or a header that
    /// cannot be gRPC metadata.
    pub fn new(
        settings: &OtlpSettings,
        runtime: tokio::runtime::Handle,
    ) -> Result<Self, Box<dyn std::error::Error>> {
        let endpoint = tonic::transport::Endpoint::from_shared(settings.endpoint.clone())?
            .timeout(settings.timeout)
            .user_agent(concat!("llmtrace-proxy/", env!("CARGO_PKG_VERSION")))?;
        let channel = {
            let _guard = runtime.enter();
            endpoint.connect_lazy()
        };
        let mut metadata = MetadataMap::new();
        for (key, value) in &settings.headers {
            let key = MetadataKey::from_bytes(key.as_bytes())
                .map_err(|_| format!("OTLP header name {key:?} is not valid gRPC metadata"))?;
            let value = MetadataValue::try_from(value.as_str()).map_err(|_| {
                format!("OTLP header {key:?} has a value gRPC metadata cannot carry")
            })?;
            metadata.insert(key, value);
        }
        Ok(Self {
            client: tonic::client::Grpc::new(channel),
            metadata,
            timeout: settings.timeout,
            runtime,
            batches: BatchEncoder::default(),
        })
    }

    /// One export call, retried while the failure is transient and time remains.
    async fn send(&self, body: Bytes) -> Result<(), Status> {
        let deadline = Instant::now() + self.timeout;
        let mut backoff = FIRST_BACKOFF;
        let mut attempt: u32 = 0;
        loop {
            let mut client = self.client.clone();
            let mut request = tonic::Request::new(body.clone());
            *request.metadata_mut() = self.metadata.clone();
            let result = async {
                client
                    .ready()
                    .await
                    .map_err(|e| Status::unavailable(format!("connecting: {e}")))?;
                client
                    .unary(request, PathAndQuery::from_static(EXPORT_PATH), RawCodec)
                    .await
            }
            .await;
            let status = match result {
                Ok(_) => return Ok(()),
                Err(status) => status,
            };
            attempt += 1;
            // Jitter: up to a quarter of the backoff, from the attempt and the clock.
            let jitter = backoff.mul_f64(f64::from(jitter_permille(attempt)) / 4000.0);
            let wait = backoff + jitter;
            if !transient(status.code()) || Instant::now() + wait >= deadline {
                return Err(status);
            }
            tokio::time::sleep(wait).await;
            backoff = backoff.saturating_mul(2);
        }
    }
}

fn transient(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::DeadlineExceeded
            | Code::Cancelled
    )
}

/// 0..1000, varying with the attempt and the clock.
fn jitter_permille(attempt: u32) -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    nanos.wrapping_mul(2_654_435_761).wrapping_add(attempt) % 1000
}

impl SpanExporter for GrpcExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        if batch.is_empty() {
            return Ok(());
        }
        let body = self.batches.encode(&batch);
        drop(batch);
        // The export thread is not a runtime thread: the call runs on the exporter's runtime.
        self.runtime.block_on(self.send(body)).map_err(|status| {
            // The message may echo credentials back: only the code is reported.
            OTelSdkError::InternalFailure(format!("OTLP/gRPC export failed: {:?}", status.code()))
        })
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.batches.resource = resource.clone();
    }
}

/// Encodes batches of one resource, each into a buffer of its own handed over as `Bytes`
/// without a copy, sized from the bytes per span of the batch before.
#[derive(Debug)]
struct BatchEncoder {
    resource: Resource,
    bytes_per_span: AtomicUsize,
}

impl Default for BatchEncoder {
    fn default() -> Self {
        Self {
            resource: Resource::builder_empty().build(),
            bytes_per_span: AtomicUsize::new(1024),
        }
    }
}

impl BatchEncoder {
    /// The `ExportTraceServiceRequest` bytes for `batch` (not empty).
    fn encode(&self, batch: &[SpanData]) -> Bytes {
        let per_span = self.bytes_per_span.load(Ordering::Relaxed);
        // An eighth more than the last batch's rate, so that most batches fit at once.
        let mut buffer = Vec::with_capacity((per_span + per_span / 8) * batch.len() + 256);
        encode::export_request(batch, &self.resource, &mut buffer);
        self.bytes_per_span
            .store(buffer.len() / batch.len().max(1), Ordering::Relaxed);
        Bytes::from(buffer)
    }
}

/// A codec that sends the request bytes as they are and reads nothing of the answer (an
/// `ExportTraceServiceResponse`; its partial-success counts are not looked at).
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = ();
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = ();
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<()>, Status> {
        let n = src.remaining();
        src.advance(n);
        Ok(Some(()))
    }
}

#[cfg(test)]
mod tests;
