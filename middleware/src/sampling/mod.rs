//! Sampling: head rules decided when a span starts, and tail sampling decided when a trace's
//! local root ends (with the `sampling` feature).
//!
//! - [`RuleSampler`] is a head sampler for the OpenTelemetry SDK
//!   ([`ShouldSample`](opentelemetry_sdk::trace::ShouldSample)). Rules match what is known when
//!   a span starts (route, method, captured request headers, `gen_ai.request.model`, baggage
//!   entries, span name and kind); each says `always`, `never` or a ratio; the first match wins;
//!   otherwise a sampled (or unsampled) parent is followed, and a new trace gets the default
//!   ratio. Ratios are decided by the trace id, so every service of a trace agrees.
//! - [`TailSampler`] is a [`SpanProcessor`](opentelemetry_sdk::trace::SpanProcessor) that wraps
//!   the exporting processor. It buffers a trace's finished spans until its local root span
//!   ends, waits [`decision_wait`](TailConfig::decision_wait) for late children, then keeps or
//!   drops the whole trace by its [`Policy`]s: errors, slow requests, slow first chunks, stalled
//!   streams, attribute values, client aborts, keywords in the prompt (looked for while the
//!   request body is read, see [`Policy::Prompt`]), a ratio; a fallback ratio and a rate limit
//!   on kept traces. The reason a trace was kept is recorded on its root span
//!   ([`semconv::sampling::REASON`](crate::semconv::sampling::REASON)). Memory is bounded by
//!   caps on buffered traces and spans; [`TailSampler::stats`] counts every decision.
//!
//! Both are configured from Rust ([`RuleSampler::builder`], [`TailConfig`]) or deserialized
//! with serde, e.g. from the gateway's TOML:
//!
//! ```toml
//! [sampling]
//! default_ratio = 1.0            # record everything: the tail sampler decides
//! [[sampling.rules]]
//! match = { route = "/healthz" }
//! sample = "never"
//! [[sampling.rules]]
//! name = "experiment"
//! match = { model = "gpt-4o-experimental" }
//! sample = "always"
//!
//! [tail]
//! decision_wait_ms = 2000
//! max_traces = 10000
//! max_spans = 200000
//! policies = [
//!   { error = true },
//!   { duration_ms = 5000 },
//!   { ttft_ms = 2000 },
//!   { attribute = { key = "gen_ai.response.finish_reasons", value = "content_filter" } },
//!   { aborted = true },
//! ]
//! fallback_ratio = 0.01
//! max_kept_per_second = 100
//! ```
//!
//! # Head and tail together
//!
//! The tail sampler only sees spans the head sampler sampled: a span the head drops is never
//! recorded, and its children follow it. To let the tail keep every slow or failed trace,
//! sample everything at the head (`default_ratio = 1.0`, the default) and use head rules only
//! for what is never interesting (`never` for health checks) or always is (`always` for an
//! experiment, which names the rule on the span as `llmtrace.sampling.rule` for a tail
//! [`Policy::Attribute`] to match). A head ratio below 1 caps what the tail can keep.
//!
//! The tail sampler decides on the spans of *this process*. With several replicas, or several
//! services in one trace, send spans to an OpenTelemetry Collector tier that routes by trace
//! id (the `loadbalancing` exporter) to collectors running the `tail_sampling` processor. The
//! long form, covering configuration, the policies, the memory bounds and that scaling story,
//! is `docs/sampling.md` in the repository.

mod pattern;
mod policy;
mod rules;
mod tail;

pub use policy::{AttributeMatch, Policy, PromptMatch};
pub use rules::{HeadConfig, Match, Rule, RuleSampler, RuleSamplerBuilder, Sample};
pub use tail::{Boost, TailConfig, TailSampler, TailSamplerBuilder, TailStats, TailStatsHandle};

use opentelemetry::trace::TraceId;
use std::fmt;

/// Whether a trace falls within `ratio` (0.0 to 1.0), decided by its trace id alone.
///
/// This is the OpenTelemetry SDK's `TraceIdRatioBased` test (the low 64 bits of the trace id,
/// shifted right once, against `ratio × 2⁶³`), so [`RuleSampler`], the tail sampler's ratios
/// and other services using the SDK's ratio sampler agree on the same trace: a trace kept at
/// 1 % is also kept at 10 %.
///
/// ```
/// use llmtrace::sampling::sampled_by_ratio;
/// use opentelemetry::trace::TraceId;
///
/// let id = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
/// assert!(sampled_by_ratio(id, 1.0));
/// assert!(!sampled_by_ratio(id, 0.0));
/// // Monotonic: what a lower ratio keeps, a higher ratio keeps too.
/// assert!(!sampled_by_ratio(id, 0.2) || sampled_by_ratio(id, 0.5));
/// ```
pub fn sampled_by_ratio(trace_id: TraceId, ratio: f64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    if ratio.is_nan() || ratio <= 0.0 {
        return false;
    }
    let upper_bound = (ratio * (1u64 << 63) as f64) as u64;
    let bytes = trace_id.to_bytes();
    let low = u64::from_be_bytes([
        bytes[8], bytes[9], bytes[10], bytes[11], bytes[12], bytes[13], bytes[14], bytes[15],
    ]);
    (low >> 1) < upper_bound
}

/// A span without a parent, or whose parent is in another process: the root of what this
/// process saw of a trace.
pub(crate) fn is_local_root(span: &opentelemetry_sdk::trace::SpanData) -> bool {
    span.parent_span_id == opentelemetry::trace::SpanId::INVALID || span.parent_span_is_remote
}

/// A sampling configuration that cannot work: a ratio outside 0 to 1, an empty policy, ...
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError(String);

impl ConfigError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Checks a ratio: finite and within 0 to 1.
pub(crate) fn check_ratio(what: &str, ratio: f64) -> Result<f64, ConfigError> {
    if ratio.is_finite() && (0.0..=1.0).contains(&ratio) {
        Ok(ratio)
    } else {
        Err(ConfigError::new(format!(
            "{what} must be between 0 and 1, got {ratio}"
        )))
    }
}

/// Serde helpers for durations written as whole milliseconds (`decision_wait_ms = 2000`).
pub(crate) mod millis {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_agrees_with_the_sdk() {
        use opentelemetry::trace::SpanKind;
        use opentelemetry_sdk::trace::{Sampler, SamplingDecision, ShouldSample};
        for ratio in [0.0, 0.01, 0.1, 0.5, 0.99, 1.0] {
            let sdk = Sampler::TraceIdRatioBased(ratio);
            for i in 0..2000u128 {
                let id = TraceId::from(i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835));
                let theirs = sdk
                    .should_sample(None, id, "x", &SpanKind::Internal, &[], &[])
                    .decision
                    == SamplingDecision::RecordAndSample;
                assert_eq!(sampled_by_ratio(id, ratio), theirs, "{ratio} {id}");
            }
        }
    }

    /// The shape the gateway embeds: `[sampling]` and `[tail]` tables.
    #[test]
    fn gateway_toml() {
        #[derive(serde::Deserialize)]
        struct Gateway {
            sampling: HeadConfig,
            tail: TailConfig,
        }
        let config: Gateway = toml::from_str(
            r#"
            [sampling]
            default_ratio = 0.01
            [[sampling.rules]]
            match = { model = "gpt-4o-experimental" }
            sample = "always"
            [tail]
            decision_wait_ms = 2000
            max_traces = 10000
            max_spans = 200000
            policies = [ { error = true }, { duration_ms = 5000 }, { ttft_ms = 2000 }, { attribute = { key = "gen_ai.response.finish_reasons", value = "content_filter" } }, { aborted = true } ]
            fallback_ratio = 0.01
            max_kept_per_second = 100
            "#,
        )
        .unwrap();
        let head = config.sampling.build().unwrap();
        assert_eq!(head.config().rules[0].sample, Sample::Always);
        assert_eq!(
            config.tail.policies[3],
            Policy::attribute("gen_ai.response.finish_reasons", "content_filter")
        );
        assert_eq!(config.tail.max_spans, 200_000);
    }

    #[test]
    fn ratios_are_checked() {
        assert!(check_ratio("r", 0.5).is_ok());
        assert!(check_ratio("r", -0.1).is_err());
        assert!(check_ratio("r", 1.5).is_err());
        assert!(check_ratio("r", f64::NAN).is_err());
    }
}
