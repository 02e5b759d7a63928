//! Sampling that reacts: the tail sampler keeps more of a route's or model's traces while one
//! of its objectives burns its budget fast, or its TTFT chart signals slower first tokens.

use std::sync::Arc;
use std::time::SystemTime;

use opentelemetry::Value;
use opentelemetry::trace::SpanKind;
use opentelemetry_sdk::trace::SpanData;

use super::{AnomalyDetector, Outcome, SloEngine};
use crate::sampling::Boost;
use crate::semconv::{self, sampling as names};

/// The cohort attribute a canary route sets on its spans.
pub const COHORT: &str = "llmtrace.cohort";

/// A [`Boost`] for the tail sampler from an [`SloEngine`] (reason `slo_burn` while an
/// objective covering the trace's route, model and cohort holds its page alert) and an
/// [`AnomalyDetector`] (reason `anomaly` while the chart of its route and model signals).
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use llmtrace::sampling::TailSampler;
/// use llmtrace::slo::{AnomalyDetector, SamplingBoost, SloEngine};
/// # use opentelemetry_sdk::trace::InMemorySpanExporter;
/// # let exporting = opentelemetry_sdk::trace::SimpleSpanProcessor::new(InMemorySpanExporter::default());
///
/// let engine = Arc::new(SloEngine::new(SloEngine::defaults()));
/// let anomalies = Arc::new(AnomalyDetector::new(Duration::from_secs(10), Duration::from_secs(60)));
/// let sampler = TailSampler::builder(exporting).fallback_ratio(0.01).build();
/// sampler
///     .stats_handle()
///     .set_boost(Arc::new(SamplingBoost::new(Some(engine), Some(anomalies))));
/// ```
#[derive(Debug)]
pub struct SamplingBoost {
    engine: Option<Arc<SloEngine>>,
    anomalies: Option<Arc<AnomalyDetector>>,
}

impl SamplingBoost {
    /// Asks from `engine` and `anomalies` (either may be absent).
    pub fn new(engine: Option<Arc<SloEngine>>, anomalies: Option<Arc<AnomalyDetector>>) -> Self {
        Self { engine, anomalies }
    }
}

fn text<'a>(spans: &'a [SpanData], key: &str, kind: Option<SpanKind>) -> Option<&'a str> {
    spans
        .iter()
        .filter(|s| kind.as_ref().is_none_or(|k| s.span_kind == *k))
        .flat_map(|s| s.attributes.iter())
        .find(|kv| kv.key.as_str() == key)
        .and_then(|kv| match &kv.value {
            Value::String(s) => Some(s.as_str()),
            _ => None,
        })
}

impl Boost for SamplingBoost {
    fn reason(&self, spans: &[SpanData]) -> Option<&'static str> {
        let route = text(spans, semconv::http::ROUTE, Some(SpanKind::Server));
        let model = text(spans, semconv::gen_ai::REQUEST_MODEL, None);
        let now = SystemTime::now();
        if let Some(engine) = &self.engine {
            let scope = Outcome {
                route,
                model,
                cohort: text(spans, COHORT, None),
                ..Outcome::default()
            };
            if engine.burning(&scope, now).is_some() {
                return Some(names::REASON_SLO_BURN);
            }
        }
        let anomalies = self.anomalies.as_ref()?;
        anomalies
            .firing(route.unwrap_or(""), model?, now)
            .then_some(names::REASON_ANOMALY)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use opentelemetry::trace::{SpanContext, SpanId, Status, TraceFlags, TraceId, TraceState};
    use opentelemetry::{Context, KeyValue};
    use opentelemetry_sdk::error::OTelSdkResult;
    use opentelemetry_sdk::trace::{Span, SpanEvents, SpanLinks, SpanProcessor};

    use super::*;
    use crate::sampling::TailSampler;
    use crate::slo::ObjectiveConfig;

    #[derive(Debug, Default, Clone)]
    struct Collect(Arc<Mutex<Vec<SpanData>>>);

    impl SpanProcessor for Collect {
        fn on_start(&self, _: &mut Span, _: &Context) {}
        fn on_end(&self, span: SpanData) {
            self.0.lock().unwrap().push(span);
        }
        fn force_flush(&self) -> OTelSdkResult {
            Ok(())
        }
        fn shutdown_with_timeout(&self, _: Duration) -> OTelSdkResult {
            Ok(())
        }
    }

    /// A root SERVER span of `route` whose trace asked `model`.
    fn root(trace: u128, route: &str, model: &str) -> SpanData {
        let start = SystemTime::now();
        SpanData {
            span_context: SpanContext::new(
                TraceId::from(trace),
                SpanId::from(1),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Server,
            name: "POST".into(),
            start_time: start,
            end_time: start,
            attributes: vec![
                KeyValue::new("http.route", route.to_owned()),
                KeyValue::new("gen_ai.request.model", model.to_owned()),
            ],
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: Default::default(),
        }
    }

    fn reason(span: &SpanData) -> Option<String> {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == names::REASON)
            .map(|kv| kv.value.as_str().into_owned())
    }

    #[test]
    fn more_is_kept_while_a_covering_objective_burns() {
        let mut scoped = ObjectiveConfig::availability(0.99);
        scoped.route = Some("/hot".into());
        let engine = Arc::new(SloEngine::new(vec![scoped.build().unwrap()]));
        let out = Collect::default();
        let sampler = TailSampler::builder(out.clone())
            .decision_wait(Duration::ZERO)
            .build();
        assert!(
            sampler
                .stats_handle()
                .set_boost(Arc::new(SamplingBoost::new(Some(engine.clone()), None)))
        );
        // Every request to /hot fails: the page alert holds.
        let failed = Outcome {
            route: Some("/hot"),
            status: 503,
            ..Outcome::default()
        };
        for _ in 0..100 {
            engine.record(&failed, SystemTime::now());
        }
        sampler.on_end(root(2, "/hot", "gpt-4o"));
        sampler.on_end(root(3, "/cold", "gpt-4o"));
        let kept = out.0.lock().unwrap().clone();
        assert_eq!(
            kept.len(),
            1,
            "only the burning route's trace, nothing else"
        );
        assert_eq!(kept[0].span_context.trace_id(), TraceId::from(2));
        assert_eq!(reason(&kept[0]).as_deref(), Some("slo_burn"));
    }

    #[test]
    fn a_ttft_anomaly_keeps_its_route_and_model() {
        let anomalies = Arc::new(AnomalyDetector::new(
            Duration::from_secs(1),
            Duration::from_secs(600),
        ));
        let boost = SamplingBoost::new(None, Some(anomalies.clone()));
        // Whole seconds, so that each second's ten calls make one chart point.
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(now - 120);
        // 60 one-second points of steady TTFT, then one slow second closed by a later call.
        for i in 0..600u64 {
            let at = t0 + Duration::from_millis(i * 100);
            let ttft = Duration::from_millis(400 + (i * 37) % 200);
            anomalies.observe("/v1/chat", "gpt-4o", ttft, at);
        }
        let mut signals = Vec::new();
        for i in 600..610u64 {
            let at = t0 + Duration::from_millis(i * 100);
            signals.extend(anomalies.observe("/v1/chat", "gpt-4o", Duration::from_secs(4), at));
        }
        assert!(
            signals.iter().all(|s| !s.upward),
            "steady until then: {signals:?}"
        );
        let signal = anomalies.observe(
            "/v1/chat",
            "gpt-4o",
            Duration::from_millis(500),
            t0 + Duration::from_secs(62),
        );
        assert!(signal.is_some_and(|s| s.upward), "{signal:?}");
        assert_eq!(
            boost.reason(&[root(1, "/v1/chat", "gpt-4o")]),
            Some("anomaly")
        );
        assert_eq!(boost.reason(&[root(2, "/v1/chat", "gpt-4o-mini")]), None);
    }
}
