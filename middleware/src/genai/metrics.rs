//! The GenAI metric instruments, with the semantic conventions' bucket boundaries, and the
//! bounded label sets that keep client-chosen values from multiplying the series.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use opentelemetry::metrics::{Counter, Histogram, Meter};
use opentelemetry::{Key, KeyValue, Value};

use super::exchange::MetricValues;
use crate::limits::{
    DEFAULT_MAX_MODEL_LABELS, MAX_ERROR_TYPE_LABELS, MAX_LABEL_BYTES, OTHER_LABEL, bounded,
};
use crate::semconv::gen_ai::{REQUEST_MODEL, RESPONSE_MODEL, TOKEN_TYPE, metrics as names};
use crate::semconv::http::ERROR_TYPE;

const DURATION_BUCKETS: [f64; 14] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];
const TOKEN_BUCKETS: [f64; 14] = [
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];
const PER_TOKEN_BUCKETS: [f64; 13] = [
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
];
const SERVER_TTFT_BUCKETS: [f64; 16] = [
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// The GenAI histograms. Build once per meter and share; record every exchange, sampled or
/// not, so the metrics stay whole whatever the trace sampling does.
///
/// Model names come from clients (and upstreams), so they are bounded as label values: the
/// first [`DEFAULT_MAX_MODEL_LABELS`] distinct values of `gen_ai.request.model` and
/// `gen_ai.response.model` (one budget for both) are recorded as they are, and any later new
/// value as `_OTHER`; see [`with_max_model_labels`](Self::with_max_model_labels). `error.type`
/// gets the same treatment with [`MAX_ERROR_TYPE_LABELS`] values. Clones share the sets.
///
/// ```
/// use llmtrace::genai::GenAiMetrics;
///
/// let metrics = GenAiMetrics::new(&opentelemetry::global::meter("llmtrace"))
///     .with_max_model_labels(20);
/// # let _ = metrics;
/// ```
#[derive(Debug, Clone)]
pub struct GenAiMetrics {
    models: Arc<LabelSet>,
    error_types: Arc<LabelSet>,
    client_duration: Histogram<f64>,
    client_token_usage: Histogram<u64>,
    client_time_to_first_chunk: Histogram<f64>,
    client_time_per_output_chunk: Histogram<f64>,
    server_duration: Histogram<f64>,
    server_time_to_first_token: Histogram<f64>,
    server_time_per_output_token: Histogram<f64>,
    cost: Counter<f64>,
    /// Bound handles per attribute set (see [`bound`]).
    #[cfg(feature = "bound-metrics")]
    bound: Arc<bound::Cache>,
}

impl GenAiMetrics {
    /// Creates the instruments on `meter`.
    pub fn new(meter: &Meter) -> Self {
        let seconds = |name: &'static str, description: &'static str, buckets: &[f64]| {
            meter
                .f64_histogram(name)
                .with_unit("s")
                .with_description(description)
                .with_boundaries(buckets.to_vec())
                .build()
        };
        Self {
            models: Arc::new(LabelSet::new(DEFAULT_MAX_MODEL_LABELS)),
            error_types: Arc::new(LabelSet::new(MAX_ERROR_TYPE_LABELS)),
            client_duration: seconds(
                names::CLIENT_OPERATION_DURATION,
                "GenAI operation duration.",
                &DURATION_BUCKETS,
            ),
            client_token_usage: meter
                .u64_histogram(names::CLIENT_TOKEN_USAGE)
                .with_unit("{token}")
                .with_description("Number of input and output tokens used.")
                .with_boundaries(TOKEN_BUCKETS.to_vec())
                .build(),
            client_time_to_first_chunk: seconds(
                names::CLIENT_TIME_TO_FIRST_CHUNK,
                "Time to receive the first chunk of a streamed response.",
                &DURATION_BUCKETS,
            ),
            client_time_per_output_chunk: seconds(
                names::CLIENT_TIME_PER_OUTPUT_CHUNK,
                "Time between consecutive chunks of a streamed response.",
                &DURATION_BUCKETS,
            ),
            server_duration: seconds(
                names::SERVER_REQUEST_DURATION,
                "Generative AI server request duration.",
                &DURATION_BUCKETS,
            ),
            server_time_to_first_token: seconds(
                names::SERVER_TIME_TO_FIRST_TOKEN,
                "Time to generate the first token for successful responses.",
                &SERVER_TTFT_BUCKETS,
            ),
            server_time_per_output_token: seconds(
                names::SERVER_TIME_PER_OUTPUT_TOKEN,
                "Time per output token generated after the first token.",
                &PER_TOKEN_BUCKETS,
            ),
            cost: meter
                .f64_counter(crate::semconv::cost::METRIC)
                .with_unit("{USD}")
                .with_description("What GenAI exchanges cost, in US dollars, from their usage and the model's prices.")
                .build(),
            #[cfg(feature = "bound-metrics")]
            bound: Arc::default(),
        }
    }

    /// Keeps at most `max` distinct model names as label values (default
    /// [`DEFAULT_MAX_MODEL_LABELS`]): the first `max` seen are recorded as they are, any other
    /// as `_OTHER`, so clients naming ever new models cannot create ever new series. The
    /// budget is shared by `gen_ai.request.model` and `gen_ai.response.model`.
    ///
    /// Starts a new, empty set: call it before cloning (clones share the set they were made
    /// with).
    pub fn with_max_model_labels(mut self, max: usize) -> Self {
        self.models = Arc::new(LabelSet::new(max));
        self
    }

    /// The attributes to record: client-derived values bounded in cardinality.
    fn bounded_attributes<'a>(&self, attributes: &'a [KeyValue]) -> Cow<'a, [KeyValue]> {
        let set = |key: &Key| match key.as_str() {
            REQUEST_MODEL | RESPONSE_MODEL => Some(&*self.models),
            ERROR_TYPE => Some(&*self.error_types),
            _ => None,
        };
        let long = |kv: &KeyValue| match &kv.value {
            Value::String(v) => v.as_str().len() > MAX_LABEL_BYTES,
            _ => false,
        };
        let over =
            |kv: &KeyValue| set(&kv.key).is_some_and(|set| !set.admit(&kv.value) || long(kv));
        if !attributes.iter().any(over) {
            return Cow::Borrowed(attributes);
        }
        Cow::Owned(
            attributes
                .iter()
                .map(|kv| match set(&kv.key) {
                    Some(set) if !set.admit(&kv.value) => {
                        KeyValue::new(kv.key.clone(), OTHER_LABEL)
                    }
                    Some(_) if long(kv) => KeyValue::new(
                        kv.key.clone(),
                        bounded(kv.value.as_str().as_ref(), MAX_LABEL_BYTES).into_owned(),
                    ),
                    _ => kv.clone(),
                })
                .collect(),
        )
    }

    /// Records a client-side exchange (we called a provider).
    ///
    /// `time_per_output_chunk` is recorded once per gap between content chunks, replayed at
    /// the end of the stream from the stream's gap histogram (values within 6.25 %).
    pub fn record_client(&self, values: &MetricValues) {
        let attributes = &*self.bounded_attributes(&values.attributes);
        let to = self.target(attributes);
        to.f64(
            &self.client_duration,
            |s| &s.client_duration,
            values.duration.as_secs_f64(),
        );
        self.record_tokens(values, &to);
        self.record_cost(values, &to);
        if values.streamed {
            if let Some(ttfc) = values.time_to_first_chunk {
                to.f64(
                    &self.client_time_to_first_chunk,
                    |s| &s.client_time_to_first_chunk,
                    ttfc.as_secs_f64(),
                );
            }
            for (gap, count) in &values.chunk_gaps {
                for _ in 0..*count {
                    to.f64(
                        &self.client_time_per_output_chunk,
                        |s| &s.client_time_per_output_chunk,
                        gap.as_secs_f64(),
                    );
                }
            }
        }
    }

    /// Records a server-side exchange (we served an LLM API).
    pub fn record_server(&self, values: &MetricValues) {
        let attributes = &*self.bounded_attributes(&values.attributes);
        let to = self.target(attributes);
        to.f64(
            &self.server_duration,
            |s| &s.server_duration,
            values.duration.as_secs_f64(),
        );
        self.record_cost(values, &to);
        let failed = attributes
            .iter()
            .any(|kv| kv.key.as_str() == crate::semconv::http::ERROR_TYPE);
        if failed {
            return;
        }
        if let Some(ttft) = values.time_to_first_chunk {
            to.f64(
                &self.server_time_to_first_token,
                |s| &s.server_time_to_first_token,
                ttft.as_secs_f64(),
            );
        }
        if let Some(tpot) = values.time_per_output_token {
            to.f64(
                &self.server_time_per_output_token,
                |s| &s.server_time_per_output_token,
                tpot.as_secs_f64(),
            );
        }
    }

    /// Where an exchange's values go: its attribute set, and that set's bound handles when
    /// there are (feature `bound-metrics`).
    fn target<'a>(&'a self, attributes: &'a [KeyValue]) -> Target<'a> {
        Target {
            attributes,
            #[cfg(feature = "bound-metrics")]
            series: self.bound.series(attributes),
        }
    }

    /// Adds the exchange's cost, when it has one, by the exchange's attributes (model,
    /// provider, operation, error type and the opted-in business dimensions).
    fn record_cost(&self, values: &MetricValues, to: &Target<'_>) {
        if let Some(cost) = values.cost.filter(|c| c.is_finite() && *c >= 0.0) {
            to.add(&self.cost, cost);
        }
    }

    fn record_tokens(&self, values: &MetricValues, to: &Target<'_>) {
        let counts = [
            ("input", values.input_tokens),
            ("output", values.output_tokens),
        ]
        .map(|(kind, count)| (kind, count.and_then(|c| u64::try_from(c).ok())));
        if counts.iter().all(|(_, count)| count.is_none()) {
            return;
        }
        to.tokens(&self.client_token_usage, counts);
    }
}

/// The attribute set of one exchange's records, and its bound handles when there are.
struct Target<'a> {
    attributes: &'a [KeyValue],
    #[cfg(feature = "bound-metrics")]
    series: Option<Arc<Series>>,
}

/// Picks one instrument's slot of a [`Series`].
type Slot<T> = fn(&Series) -> &OnceLock<T>;

/// One attribute set's bound handles, each bound on its instrument's first record with the
/// set (feature `bound-metrics`; without it the slots hold nothing and are never read).
#[derive(Default)]
#[cfg_attr(not(feature = "bound-metrics"), allow(dead_code))]
struct Series {
    client_duration: OnceLock<BoundF64>,
    client_time_to_first_chunk: OnceLock<BoundF64>,
    client_time_per_output_chunk: OnceLock<BoundF64>,
    server_duration: OnceLock<BoundF64>,
    server_time_to_first_token: OnceLock<BoundF64>,
    server_time_per_output_token: OnceLock<BoundF64>,
    /// `gen_ai.client.token.usage` with `gen_ai.token.type` input and output.
    tokens: [OnceLock<BoundU64>; 2],
    cost: OnceLock<BoundCost>,
}

impl Target<'_> {
    fn f64(&self, histogram: &Histogram<f64>, slot: Slot<BoundF64>, value: f64) {
        #[cfg(feature = "bound-metrics")]
        if let Some(series) = &self.series {
            slot(series)
                .get_or_init(|| histogram.bind(self.attributes))
                .record(value);
            return;
        }
        let _ = slot;
        histogram.record(value, self.attributes);
    }

    fn add(&self, counter: &Counter<f64>, value: f64) {
        #[cfg(feature = "bound-metrics")]
        if let Some(series) = &self.series {
            series
                .cost
                .get_or_init(|| counter.bind(self.attributes))
                .add(value);
            return;
        }
        counter.add(value, self.attributes);
    }

    /// The token counts, each with its `gen_ai.token.type`.
    fn tokens(&self, histogram: &Histogram<u64>, counts: [(&'static str, Option<u64>); 2]) {
        let with_type = |kind: &'static str| {
            let mut attributes = Vec::with_capacity(self.attributes.len() + 1);
            attributes.extend_from_slice(self.attributes);
            attributes.push(KeyValue::new(TOKEN_TYPE, kind));
            attributes
        };
        for (i, (kind, count)) in counts.into_iter().enumerate() {
            let Some(count) = count else { continue };
            #[cfg(feature = "bound-metrics")]
            if let Some(series) = &self.series {
                series.tokens[i]
                    .get_or_init(|| histogram.bind(&with_type(kind)))
                    .record(count);
                continue;
            }
            let _ = i;
            histogram.record(count, &with_type(kind));
        }
    }
}

#[cfg(feature = "bound-metrics")]
type BoundF64 = opentelemetry::metrics::BoundHistogram<f64>;
#[cfg(feature = "bound-metrics")]
type BoundU64 = opentelemetry::metrics::BoundHistogram<u64>;
#[cfg(feature = "bound-metrics")]
type BoundCost = opentelemetry::metrics::BoundCounter<f64>;
#[cfg(not(feature = "bound-metrics"))]
type BoundF64 = ();
#[cfg(not(feature = "bound-metrics"))]
type BoundU64 = ();
#[cfg(not(feature = "bound-metrics"))]
type BoundCost = ();

/// Bound instruments, one [`Series`] per distinct attribute set.
///
/// The SDK looks an attribute set up (SipHash over every key and value) on each unbound
/// record: three to four records per exchange, and one per chunk gap of a stream, which
/// made the metrics the largest per-chunk cost of a streamed answer. Here an exchange
/// costs one lookup with a fast hash in a bounded cache, and each record goes straight to
/// its series. A handle is bound on its instrument's first record with the set, so no
/// instrument reports series it never recorded. Past [`MAX_SERIES`](bound::MAX_SERIES)
/// sets, records go unbound, as before.
#[cfg(feature = "bound-metrics")]
mod bound {
    use std::collections::HashMap;
    use std::sync::{Arc, PoisonError, RwLock};

    use opentelemetry::KeyValue;

    use super::Series;

    /// Attribute sets kept bound; the label bounds keep real traffic far below.
    pub(super) const MAX_SERIES: usize = 2048;

    type Map = HashMap<Vec<KeyValue>, Arc<Series>, foldhash::fast::FixedState>;

    #[derive(Default)]
    pub(super) struct Cache {
        series: RwLock<Map>,
    }

    impl std::fmt::Debug for Cache {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            let len = self.series.read().map_or(0, |m| m.len());
            f.debug_struct("Cache").field("series", &len).finish()
        }
    }

    impl Cache {
        /// The handles of `attributes` (exactly this order: exchanges build their sets the
        /// same way), created on first sight; `None` once the cache is full.
        pub(super) fn series(&self, attributes: &[KeyValue]) -> Option<Arc<Series>> {
            if let Some(series) = self
                .series
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .get(attributes)
            {
                return Some(series.clone());
            }
            let mut map = self.series.write().unwrap_or_else(PoisonError::into_inner);
            if let Some(series) = map.get(attributes) {
                return Some(series.clone());
            }
            if map.len() >= MAX_SERIES {
                return None;
            }
            let series = Arc::new(Series::default());
            map.insert(attributes.to_vec(), series.clone());
            Some(series)
        }

        #[cfg(test)]
        pub(super) fn len(&self) -> usize {
            self.series.read().map_or(0, |m| m.len())
        }
    }
}

/// Label values admitted as they are: the first `max` distinct ones.
#[derive(Debug)]
pub(crate) struct LabelSet {
    max: usize,
    known: RwLock<HashSet<Box<str>>>,
}

impl LabelSet {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            max,
            known: RwLock::new(HashSet::new()),
        }
    }

    /// Whether `value` may be recorded as it is: it is known, or there is room to learn it.
    pub(crate) fn admit(&self, value: &Value) -> bool {
        let value = value.as_str();
        // Fast path: a known value (or a full set) needs only the read lock.
        {
            let known = self.known.read().unwrap_or_else(PoisonError::into_inner);
            if known.contains(&*value) {
                return true;
            }
            if known.len() >= self.max {
                return false;
            }
        }
        let mut known = self.known.write().unwrap_or_else(PoisonError::into_inner);
        if known.contains(&*value) {
            return true;
        }
        if known.len() >= self.max {
            return false;
        }
        known.insert(value.into());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bound cache holds at most `MAX_SERIES` attribute sets; past that, records go
    /// unbound, and the sets it holds stay bound.
    #[cfg(feature = "bound-metrics")]
    #[test]
    fn the_bound_cache_is_bounded() {
        let cache = bound::Cache::default();
        let set = |i: usize| vec![KeyValue::new("gen_ai.request.model", format!("m{i}"))];
        for i in 0..bound::MAX_SERIES {
            assert!(cache.series(&set(i)).is_some());
        }
        assert_eq!(cache.len(), bound::MAX_SERIES);
        assert!(cache.series(&set(bound::MAX_SERIES)).is_none());
        let first = cache.series(&set(0)).unwrap();
        assert!(Arc::ptr_eq(&first, &cache.series(&set(0)).unwrap()));
        assert_eq!(cache.len(), bound::MAX_SERIES);
    }

    #[test]
    fn the_first_values_are_kept_and_later_ones_are_not() {
        let set = LabelSet::new(2);
        let v = |s: &'static str| Value::from(s);
        assert!(set.admit(&v("a")));
        assert!(set.admit(&v("b")));
        assert!(set.admit(&v("a")));
        assert!(!set.admit(&v("c")));
        assert!(set.admit(&v("b")));
        let none = LabelSet::new(0);
        assert!(!none.admit(&v("a")));
    }
}
