//! Evaluations: what an evaluator (an LLM judge, a user's thumbs down, a regression check)
//! concluded about a GenAI output, attached to the trace that produced it, after the fact.
//!
//! An [`Evaluation`] names the evaluated trace (and, when known, the evaluated span: the
//! GenAI span `chat gpt-4o`), the evaluation (`relevance`, `hallucination`, ...) and its
//! result: a score, a label, an explanation. [`record`] writes it down as the GenAI semantic
//! conventions' evaluation result:
//!
//! - an INTERNAL span `evaluation {name}` **in the evaluated trace**: its parent is the
//!   evaluated span, taken as a remote span context (the span ended long ago, maybe in another
//!   process), and it links to that span. Without a span id its parent id is a placeholder
//!   derived from the trace id, which no span has: the span is still in the trace (backends
//!   show it at the trace's top level), just not under a particular span. The parent context
//!   is marked sampled: an evaluation someone took the trouble to send is recorded (the head
//!   sampler's rules still apply to it).
//! - on that span, the attributes `gen_ai.evaluation.name`, `gen_ai.evaluation.score.value`,
//!   `gen_ai.evaluation.score.label`, `gen_ai.evaluation.explanation` and `gen_ai.response.id`
//!   (those that are set), so that span queries and tail-sampling attribute policies see them;
//! - and the conventions' event `gen_ai.evaluation.result` carrying the same attributes.
//!
//! [`EvaluationMetrics`] counts results by name and label (`llmtrace.gen_ai.evaluation.results`)
//! and records scores by name (`llmtrace.gen_ai.evaluation.score`); [`EvaluationRecorder`] does
//! both.
//!
//! ## Evaluations and tail sampling
//!
//! The tail sampler ([`TailSampler`](crate::sampling::TailSampler), feature `sampling`)
//! buffers spans by trace id. Because the evaluation span is in the evaluated trace, an
//! evaluation that ends while its trace is still buffered (the root ended less than
//! `decision_wait` ago) is judged with it: an attribute policy such as
//! `{ attribute = { key = "gen_ai.evaluation.score.label", value = "hallucination" } }` keeps
//! the whole trace. The evaluation span has a remote parent, so it is a local root to the
//! sampler: its end starts a new `decision_wait`, which gives further evaluations of the same
//! trace their chance too. An evaluation that arrives after the decision follows it (exported
//! when the trace was kept, dropped with it otherwise); once the decision is forgotten
//! (`decision_cache_size`) or when the sampler never saw the trace, the evaluation forms a
//! trace fragment of its own, decided on its own attributes. An evaluation that ends before its
//! trace's root (an evaluation of a stream still running) lets the sampler decide early, on the
//! spans it has by then, as any local root does.
//!
//! ```
//! use llmtrace::eval::{Evaluation, record};
//!
//! let evaluation = Evaluation::new("4bf92f3577b34da6a3ce929d0e0e4736", "relevance")?
//!     .with_span_id("00f067aa0ba902b7")?
//!     .with_score(0.85)?
//!     .with_label("relevant")?
//!     .with_explanation("Answers the question, cites the right policy.");
//! let tracer = opentelemetry::global::tracer("evaluator");
//! let recorded = record(&tracer, &evaluation);
//! assert_eq!(recorded.trace_id(), evaluation.trace_id());
//! # Ok::<(), llmtrace::eval::EvaluationError>(())
//! ```

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use opentelemetry::metrics::{Counter, Histogram, Meter};
use opentelemetry::trace::{
    Link, Span as _, SpanContext, SpanId, SpanKind, TraceContextExt as _, TraceFlags, TraceId,
    TraceState, Tracer,
};
use opentelemetry::{Context, KeyValue};

use crate::limits::{MAX_LABEL_BYTES, MAX_NAME_BYTES, OTHER_LABEL, bounded};
use crate::semconv::evaluation as names;

/// Evaluation names and score labels, in bytes: longer ones are cut (on a character boundary,
/// with [`TRUNCATED_MARKER`](crate::limits::TRUNCATED_MARKER)).
pub const MAX_EVALUATION_NAME_BYTES: usize = 128;

/// Explanations, in bytes: longer ones are cut likewise.
pub const MAX_EXPLANATION_BYTES: usize = 4096;

/// Distinct evaluation names, and separately distinct score labels, kept as metric label
/// values by default; later new values are counted as [`OTHER_LABEL`].
pub const DEFAULT_MAX_EVALUATION_LABELS: usize = 32;

/// Bucket boundaries of the score histogram: tenths up to 1 (the common 0–1 scores), then the
/// usual 1–5 and 1–10 scales.
const SCORE_BUCKETS: [f64; 16] = [
    0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 2.0, 3.0, 4.0, 5.0, 10.0,
];

/// An evaluation of a GenAI output, checked and bounded: see the [module docs](self).
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    trace_id: TraceId,
    span_id: Option<SpanId>,
    name: String,
    score: Option<f64>,
    label: Option<String>,
    explanation: Option<String>,
    response_id: Option<String>,
}

/// Why an [`Evaluation`] was refused: the field at fault and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EvaluationError {
    field: String,
    message: String,
}

impl EvaluationError {
    fn new(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.to_owned(),
            message: message.into(),
        }
    }

    /// The field at fault, as named in the JSON form (`trace_id`, `score`, ...); prefixed
    /// with the item's index (`[2].score`) by [`Evaluation::list_from_json`].
    pub fn field(&self) -> &str {
        &self.field
    }

    /// What is wrong with it.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for EvaluationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for EvaluationError {}

// === impl Evaluation ===

impl Evaluation {
    /// Items [`list_from_json`](Self::list_from_json) accepts in one array.
    pub const MAX_BATCH: usize = 100;

    /// An evaluation called `name` of the trace `trace_id` (32 hex digits, not all zero).
    /// The name must not be empty; it is cut to [`MAX_EVALUATION_NAME_BYTES`].
    pub fn new(trace_id: &str, name: &str) -> Result<Self, EvaluationError> {
        let trace_id = parse_hex::<16>(trace_id)
            .map(TraceId::from_bytes)
            .ok_or_else(|| {
                EvaluationError::new("trace_id", "expected 32 hex digits, not all zero")
            })?;
        if name.trim().is_empty() {
            return Err(EvaluationError::new("name", "must not be empty"));
        }
        Ok(Self {
            trace_id,
            span_id: None,
            name: bounded(name, MAX_EVALUATION_NAME_BYTES).into_owned(),
            score: None,
            label: None,
            explanation: None,
            response_id: None,
        })
    }

    /// The evaluated span (16 hex digits, not all zero): the evaluation span's parent, and
    /// linked to.
    pub fn with_span_id(mut self, span_id: &str) -> Result<Self, EvaluationError> {
        let span_id = parse_hex::<8>(span_id)
            .map(SpanId::from_bytes)
            .ok_or_else(|| {
                EvaluationError::new("span_id", "expected 16 hex digits, not all zero")
            })?;
        self.span_id = Some(span_id);
        Ok(self)
    }

    /// The score (`gen_ai.evaluation.score.value`); it must be finite.
    pub fn with_score(mut self, score: f64) -> Result<Self, EvaluationError> {
        if !score.is_finite() {
            return Err(EvaluationError::new("score", "must be a finite number"));
        }
        self.score = Some(score);
        Ok(self)
    }

    /// The label (`gen_ai.evaluation.score.label`, low cardinality: `relevant`, `pass`, ...);
    /// not empty, cut to [`MAX_EVALUATION_NAME_BYTES`].
    pub fn with_label(mut self, label: &str) -> Result<Self, EvaluationError> {
        if label.trim().is_empty() {
            return Err(EvaluationError::new("label", "must not be empty"));
        }
        self.label = Some(bounded(label, MAX_EVALUATION_NAME_BYTES).into_owned());
        Ok(self)
    }

    /// The evaluator's explanation (`gen_ai.evaluation.explanation`), cut to
    /// [`MAX_EXPLANATION_BYTES`]; an empty one is no explanation.
    pub fn with_explanation(mut self, explanation: &str) -> Self {
        self.explanation =
            (!explanation.is_empty()).then(|| bounded(explanation, MAX_EXPLANATION_BYTES).into());
        self
    }

    /// The evaluated completion's id (`gen_ai.response.id`), cut to
    /// [`MAX_NAME_BYTES`]; an empty one is none.
    pub fn with_response_id(mut self, response_id: &str) -> Self {
        self.response_id =
            (!response_id.is_empty()).then(|| bounded(response_id, MAX_NAME_BYTES).into());
        self
    }

    /// The evaluated trace.
    pub fn trace_id(&self) -> TraceId {
        self.trace_id
    }

    /// The evaluated span, when given.
    pub fn span_id(&self) -> Option<SpanId> {
        self.span_id
    }

    /// The evaluation's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The score, when given.
    pub fn score(&self) -> Option<f64> {
        self.score
    }

    /// The label, when given.
    pub fn label(&self) -> Option<&str> {
        self.label.as_deref()
    }

    /// The explanation, when given.
    pub fn explanation(&self) -> Option<&str> {
        self.explanation.as_deref()
    }

    /// The evaluated response's id, when given.
    pub fn response_id(&self) -> Option<&str> {
        self.response_id.as_deref()
    }

    /// The attributes the span and its event carry.
    fn attributes(&self) -> Vec<KeyValue> {
        let mut attributes = vec![KeyValue::new(names::NAME, self.name.clone())];
        if let Some(score) = self.score {
            attributes.push(KeyValue::new(names::SCORE_VALUE, score));
        }
        let strings = [
            (names::SCORE_LABEL, &self.label),
            (names::EXPLANATION, &self.explanation),
            (names::RESPONSE_ID, &self.response_id),
        ];
        for (key, value) in strings {
            if let Some(value) = value {
                attributes.push(KeyValue::new(key, value.clone()));
            }
        }
        attributes
    }
}

/// `N` bytes from `2 * N` hex digits (either case), unless they are all zero.
fn parse_hex<const N: usize>(hex: &str) -> Option<[u8; N]> {
    let digits = hex.as_bytes();
    if digits.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        if !pair.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    out.iter().any(|&b| b != 0).then_some(out)
}

// === JSON ===

impl Evaluation {
    /// An evaluation from its JSON form, what the gateway's `POST /api/evaluations` takes:
    ///
    /// ```json
    /// {"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7",
    ///  "name": "relevance", "score": 0.85, "label": "relevant",
    ///  "explanation": "...", "response_id": "chatcmpl-123"}
    /// ```
    ///
    /// `trace_id` and `name` are required, the others optional (`null` is absent). Unknown
    /// members are refused, so a misspelt one is not silently lost. The error names the field.
    pub fn from_json(value: &serde_json::Value) -> Result<Self, EvaluationError> {
        let object = value
            .as_object()
            .ok_or_else(|| EvaluationError::new("", "expected a JSON object"))?;
        const KNOWN: [&str; 7] = [
            "trace_id",
            "span_id",
            "name",
            "score",
            "label",
            "explanation",
            "response_id",
        ];
        if let Some(unknown) = object.keys().find(|k| !KNOWN.contains(&k.as_str())) {
            let field: String = bounded(unknown, MAX_LABEL_BYTES).into();
            return Err(EvaluationError::new(&field, "unknown field"));
        }
        let trace_id = json_str(value, "trace_id")?
            .ok_or_else(|| EvaluationError::new("trace_id", "required"))?;
        let name =
            json_str(value, "name")?.ok_or_else(|| EvaluationError::new("name", "required"))?;
        let mut evaluation = Self::new(trace_id, name)?;
        if let Some(span_id) = json_str(value, "span_id")? {
            evaluation = evaluation.with_span_id(span_id)?;
        }
        match &value["score"] {
            serde_json::Value::Null => {}
            serde_json::Value::Number(n) => {
                let score = n
                    .as_f64()
                    .ok_or_else(|| EvaluationError::new("score", "must be a finite number"))?;
                evaluation = evaluation.with_score(score)?;
            }
            _ => return Err(EvaluationError::new("score", "must be a number")),
        }
        if let Some(label) = json_str(value, "label")? {
            evaluation = evaluation.with_label(label)?;
        }
        if let Some(explanation) = json_str(value, "explanation")? {
            evaluation = evaluation.with_explanation(explanation);
        }
        if let Some(response_id) = json_str(value, "response_id")? {
            evaluation = evaluation.with_response_id(response_id);
        }
        Ok(evaluation)
    }

    /// One evaluation (an object) or several (an array of at most [`MAX_BATCH`](Self::MAX_BATCH)
    /// objects, not empty) from JSON; all are checked before any is returned, and an error in
    /// an array names the item: `[3].score`.
    pub fn list_from_json(value: &serde_json::Value) -> Result<Vec<Self>, EvaluationError> {
        let Some(items) = value.as_array() else {
            return Ok(vec![Self::from_json(value)?]);
        };
        if items.is_empty() || items.len() > Self::MAX_BATCH {
            return Err(EvaluationError::new(
                "",
                format!("expected 1 to {} evaluations", Self::MAX_BATCH),
            ));
        }
        items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                Self::from_json(item).map_err(|e| EvaluationError {
                    field: if e.field.is_empty() {
                        format!("[{i}]")
                    } else {
                        format!("[{i}].{}", e.field)
                    },
                    message: e.message,
                })
            })
            .collect()
    }
}

/// The string member `key` of `value`, `None` when absent or null, an error otherwise.
fn json_str<'a>(
    value: &'a serde_json::Value,
    key: &str,
) -> Result<Option<&'a str>, EvaluationError> {
    match &value[key] {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::String(s) => Ok(Some(s)),
        _ => Err(EvaluationError::new(key, "must be a string")),
    }
}

// === record ===

/// Records `evaluation` with `tracer`: an INTERNAL span `evaluation {name}` in the evaluated
/// trace, child of and linked to the evaluated span, with the evaluation's attributes and the
/// `gen_ai.evaluation.result` event (see the [module docs](self)). Returns the new span's
/// context (not sampled when the tracer's sampler dropped it).
pub fn record<T: Tracer>(tracer: &T, evaluation: &Evaluation) -> SpanContext {
    let parent_span_id = evaluation
        .span_id
        .unwrap_or_else(|| placeholder_parent(evaluation.trace_id));
    let parent = SpanContext::new(
        evaluation.trace_id,
        parent_span_id,
        TraceFlags::SAMPLED,
        true,
        TraceState::NONE,
    );
    let attributes = evaluation.attributes();
    let links = match evaluation.span_id {
        Some(_) => vec![Link::with_context(parent.clone())],
        None => Vec::new(),
    };
    let cx = Context::new().with_remote_span_context(parent);
    let mut span = tracer
        .span_builder(format!("evaluation {}", evaluation.name))
        .with_kind(SpanKind::Internal)
        .with_attributes(attributes.clone())
        .with_links(links)
        .start_with_context(tracer, &cx);
    span.add_event(names::EVENT_RESULT, attributes);
    let recorded = span.span_context().clone();
    span.end();
    recorded
}

/// The parent span id of an evaluation of a whole trace: the trace id's low 64 bits (its
/// high ones when those are zero), so every such evaluation of a trace shares it.
fn placeholder_parent(trace_id: TraceId) -> SpanId {
    let bytes = trace_id.to_bytes();
    let (high, low) = bytes.split_at(8);
    let low: [u8; 8] = low.try_into().unwrap_or_default();
    let high: [u8; 8] = high.try_into().unwrap_or_default();
    if low != [0; 8] {
        SpanId::from_bytes(low)
    } else {
        SpanId::from_bytes(high)
    }
}

// === metrics ===

/// The evaluation instruments: `llmtrace.gen_ai.evaluation.results` (counter, by
/// `gen_ai.evaluation.name` and, when set, `gen_ai.evaluation.score.label`) and
/// `llmtrace.gen_ai.evaluation.score` (histogram of the scores, by name). The conventions
/// name no evaluation metric, hence the `llmtrace.` prefix.
///
/// Names and labels come from clients, so as label values they are cut to
/// [`MAX_LABEL_BYTES`] and bounded in number: the first
/// [`DEFAULT_MAX_EVALUATION_LABELS`] distinct names (and, separately, labels) are recorded as
/// they are, later new ones as `_OTHER`. Clones share the sets.
#[derive(Clone, Debug)]
pub struct EvaluationMetrics {
    results: Counter<u64>,
    scores: Histogram<f64>,
    names: Arc<LabelBudget>,
    labels: Arc<LabelBudget>,
}

impl EvaluationMetrics {
    /// The instruments on `meter`.
    pub fn new(meter: &Meter) -> Self {
        Self {
            results: meter
                .u64_counter(names::METRIC_RESULTS)
                .with_unit("{evaluation}")
                .with_description("Evaluation results recorded, by evaluation name and label")
                .build(),
            scores: meter
                .f64_histogram(names::METRIC_SCORE)
                .with_description("Evaluation scores, by evaluation name")
                .with_boundaries(SCORE_BUCKETS.to_vec())
                .build(),
            names: Arc::new(LabelBudget::new(DEFAULT_MAX_EVALUATION_LABELS)),
            labels: Arc::new(LabelBudget::new(DEFAULT_MAX_EVALUATION_LABELS)),
        }
    }

    /// At most `max` distinct names, and `max` distinct labels, as label values.
    pub fn with_max_labels(mut self, max: usize) -> Self {
        self.names = Arc::new(LabelBudget::new(max));
        self.labels = Arc::new(LabelBudget::new(max));
        self
    }

    /// Counts `evaluation` and records its score.
    pub fn record(&self, evaluation: &Evaluation) {
        let name = KeyValue::new(names::NAME, self.names.admit(&evaluation.name));
        if let Some(score) = evaluation.score {
            self.scores.record(score, std::slice::from_ref(&name));
        }
        match &evaluation.label {
            Some(label) => self.results.add(
                1,
                &[
                    name,
                    KeyValue::new(names::SCORE_LABEL, self.labels.admit(label)),
                ],
            ),
            None => self.results.add(1, &[name]),
        }
    }
}

/// Label values admitted as they are (cut to [`MAX_LABEL_BYTES`]): the first `max` distinct.
#[derive(Debug)]
struct LabelBudget {
    max: usize,
    known: Mutex<HashSet<String>>,
}

impl LabelBudget {
    fn new(max: usize) -> Self {
        Self {
            max,
            known: Mutex::new(HashSet::new()),
        }
    }

    fn admit(&self, value: &str) -> String {
        let value: Cow<'_, str> = bounded(value, MAX_LABEL_BYTES);
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        if known.contains(value.as_ref()) {
            return value.into_owned();
        }
        if known.len() >= self.max {
            return OTHER_LABEL.to_owned();
        }
        known.insert(value.clone().into_owned());
        value.into_owned()
    }
}

/// Records evaluations: the span ([`record`]) and, when given, the metrics.
#[derive(Clone, Debug)]
pub struct EvaluationRecorder<T> {
    tracer: T,
    metrics: Option<EvaluationMetrics>,
}

impl<T: Tracer> EvaluationRecorder<T> {
    /// Records spans with `tracer`, and no metrics.
    pub fn new(tracer: T) -> Self {
        Self {
            tracer,
            metrics: None,
        }
    }

    /// Also counts every evaluation with `metrics`.
    pub fn with_metrics(mut self, metrics: EvaluationMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Records `evaluation`; returns its span's context.
    pub fn record(&self, evaluation: &Evaluation) -> SpanContext {
        if let Some(metrics) = &self.metrics {
            metrics.record(evaluation);
        }
        record(&self.tracer, evaluation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::Value;
    use opentelemetry::metrics::MeterProvider as _;
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const SPAN: &str = "00f067aa0ba902b7";

    fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Value> {
        attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| &kv.value)
    }

    fn exported(evaluation: &Evaluation) -> (SpanContext, SpanData) {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let recorded = record(&provider.tracer("eval"), evaluation);
        let mut spans = exporter.get_finished_spans().unwrap();
        assert_eq!(spans.len(), 1);
        (recorded, spans.remove(0))
    }

    #[test]
    fn inputs_are_checked_and_bounded() {
        let field = |r: Result<Evaluation, EvaluationError>| r.unwrap_err().field().to_owned();
        for bad in [
            "",
            "4bf92f3577b34da6a3ce929d0e0e473",
            "4bf92f3577b34da6a3ce929d0e0e47366",
            "+bf92f3577b34da6a3ce929d0e0e4736",
            "4bf92f3577b34da6a3ce929d0e0e473g",
            "00000000000000000000000000000000",
            "4bf92f3577b34da6a3ce929d0e0e47é",
        ] {
            assert_eq!(
                field(Evaluation::new(bad, "relevance")),
                "trace_id",
                "{bad:?}"
            );
        }
        assert_eq!(field(Evaluation::new(TRACE, " ")), "name");
        let ok = Evaluation::new(&TRACE.to_uppercase(), "relevance").unwrap();
        assert_eq!(ok.trace_id().to_string(), TRACE);
        for bad in [
            "",
            "0000000000000000",
            "00f067aa0ba902b",
            "-0f067aa0ba902b7",
        ] {
            assert_eq!(field(ok.clone().with_span_id(bad)), "span_id", "{bad:?}");
        }
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert_eq!(field(ok.clone().with_score(bad)), "score");
        }
        assert_eq!(field(ok.clone().with_label("")), "label");

        let long = Evaluation::new(TRACE, &"é".repeat(100))
            .unwrap()
            .with_label(&"ü".repeat(100))
            .unwrap()
            .with_explanation(&"😀".repeat(2000));
        assert!(long.name().len() <= MAX_EVALUATION_NAME_BYTES);
        assert!(long.name().starts_with("éé"));
        assert!(long.label().unwrap().len() <= MAX_EVALUATION_NAME_BYTES);
        let explanation = long.explanation().unwrap();
        assert!(explanation.len() <= MAX_EXPLANATION_BYTES && explanation.len() > 4000);
        assert_eq!(ok.clone().with_explanation("").explanation(), None);
    }

    #[test]
    fn json_errors_name_the_field() {
        let parse = |text: &str| Evaluation::list_from_json(&serde_json::from_str(text).unwrap());
        let field = |text: &str| parse(text).unwrap_err().field().to_owned();
        let good = format!(
            r#"{{"trace_id":"{TRACE}","span_id":"{SPAN}","name":"relevance","score":0.85,"label":"relevant","explanation":"fine","response_id":"chatcmpl-1"}}"#
        );
        let one = parse(&good).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].span_id(), Some(SpanId::from_hex(SPAN).unwrap()));
        assert_eq!(
            (one[0].score(), one[0].label(), one[0].response_id()),
            (Some(0.85), Some("relevant"), Some("chatcmpl-1"))
        );
        let minimal = format!(r#"{{"trace_id":"{TRACE}","name":"n","span_id":null}}"#);
        assert_eq!(parse(&minimal).unwrap()[0].span_id(), None);
        assert_eq!(parse(&format!("[{good},{minimal}]")).unwrap().len(), 2);

        assert_eq!(field(r#"{"name":"n"}"#), "trace_id");
        assert_eq!(field(&format!(r#"{{"trace_id":"{TRACE}"}}"#)), "name");
        assert_eq!(
            field(&format!(r#"{{"trace_id":"{TRACE}","name":3}}"#)),
            "name"
        );
        assert_eq!(
            field(&format!(
                r#"{{"trace_id":"{TRACE}","name":"n","score":"NaN"}}"#
            )),
            "score"
        );
        assert_eq!(
            field(&format!(r#"{{"trace_id":"{TRACE}","name":"n","scroe":1}}"#)),
            "scroe"
        );
        assert_eq!(
            field(&format!("[{good},{{\"name\":\"n\"}}]")),
            "[1].trace_id"
        );
        assert_eq!(field("[1]"), "[0]");
        assert_eq!(field("[]"), "");
        assert_eq!(field("3"), "");
        let many = vec![good.as_str(); Evaluation::MAX_BATCH + 1].join(",");
        assert_eq!(field(&format!("[{many}]")), "");
    }

    #[test]
    fn the_span_is_in_the_evaluated_trace_under_and_linked_to_the_evaluated_span() {
        let evaluation = Evaluation::new(TRACE, "hallucination")
            .unwrap()
            .with_span_id(SPAN)
            .unwrap()
            .with_score(0.25)
            .unwrap()
            .with_label("hallucinated")
            .unwrap()
            .with_explanation("cites a policy that does not exist")
            .with_response_id("chatcmpl-1");
        let (recorded, span) = exported(&evaluation);
        assert_eq!(span.span_context, recorded);
        assert_eq!(span.span_context.trace_id().to_string(), TRACE);
        assert!(span.span_context.is_sampled());
        assert_eq!(span.parent_span_id.to_string(), SPAN);
        assert!(span.parent_span_is_remote);
        assert_eq!(span.name, "evaluation hallucination");
        assert_eq!(span.span_kind, SpanKind::Internal);
        let links: Vec<_> = span.links.iter().collect();
        assert_eq!(links.len(), 1);
        assert_eq!(links[0].span_context.trace_id().to_string(), TRACE);
        assert_eq!(links[0].span_context.span_id().to_string(), SPAN);
        let events: Vec<_> = span.events.iter().collect();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].name, names::EVENT_RESULT);
        for attributes in [&span.attributes, &events[0].attributes] {
            let get = |key| attribute(attributes, key).cloned();
            assert_eq!(get(names::NAME), Some(Value::from("hallucination")));
            assert_eq!(get(names::SCORE_VALUE), Some(Value::F64(0.25)));
            assert_eq!(get(names::SCORE_LABEL), Some(Value::from("hallucinated")));
            assert_eq!(
                get(names::EXPLANATION),
                Some(Value::from("cites a policy that does not exist"))
            );
            assert_eq!(get(names::RESPONSE_ID), Some(Value::from("chatcmpl-1")));
        }
    }

    #[test]
    fn without_a_span_id_the_span_is_in_the_trace_under_a_placeholder() {
        let evaluation = Evaluation::new(TRACE, "relevance").unwrap();
        let (_, span) = exported(&evaluation);
        assert_eq!(span.span_context.trace_id().to_string(), TRACE);
        assert_eq!(span.parent_span_id.to_string(), "a3ce929d0e0e4736");
        assert!(span.parent_span_is_remote);
        assert_eq!(span.links.iter().count(), 0);
        assert_eq!(attribute(&span.attributes, names::SCORE_VALUE), None);
        assert_eq!(attribute(&span.attributes, names::SCORE_LABEL), None);
        let high_only = TraceId::from(1u128 << 64);
        assert_eq!(placeholder_parent(high_only), SpanId::from(1));
    }

    #[test]
    fn metrics_count_by_name_and_label_within_a_budget() {
        use opentelemetry_sdk::metrics::{
            InMemoryMetricExporter, PeriodicReader, SdkMeterProvider,
        };
        let exporter = InMemoryMetricExporter::default();
        let provider = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(exporter.clone()).build())
            .build();
        let metrics = EvaluationMetrics::new(&provider.meter("eval")).with_max_labels(1);
        let recorder = EvaluationRecorder::new(opentelemetry::trace::noop::NoopTracer::new())
            .with_metrics(metrics);
        let evaluation = |name: &str, label: &str| {
            Evaluation::new(TRACE, name)
                .unwrap()
                .with_label(label)
                .unwrap()
                .with_score(0.5)
                .unwrap()
        };
        recorder.record(&evaluation("relevance", "relevant"));
        recorder.record(&evaluation("relevance", "relevant"));
        recorder.record(&evaluation("toxicity", "toxic"));
        provider.force_flush().unwrap();
        let text = format!("{:?}", exporter.get_finished_metrics().unwrap());
        for expected in [
            names::METRIC_RESULTS,
            names::METRIC_SCORE,
            "relevance",
            "relevant",
            OTHER_LABEL,
        ] {
            assert!(text.contains(expected), "{expected} missing: {text}");
        }
        assert!(!text.contains("toxic"), "beyond the budget: {text}");

        let budget = LabelBudget::new(2);
        assert_eq!(budget.admit("a"), "a");
        assert_eq!(budget.admit(&"x".repeat(100)).len(), MAX_LABEL_BYTES);
        assert_eq!(budget.admit("b"), OTHER_LABEL);
        assert_eq!(budget.admit("a"), "a");
    }

    /// An evaluation that arrives while its trace awaits the tail sampler's decision is judged
    /// with the trace: an attribute policy on its label keeps the whole trace.
    #[cfg(feature = "sampling")]
    #[test]
    fn the_tail_sampler_sees_an_evaluation_that_arrives_before_the_decision() {
        use crate::sampling::{Policy, TailSampler};
        use opentelemetry::trace::Tracer as _;
        use std::time::Duration;

        let exporter = InMemorySpanExporter::default();
        let tail = TailSampler::builder(opentelemetry_sdk::trace::SimpleSpanProcessor::new(
            exporter.clone(),
        ))
        .policy(Policy::attribute(names::SCORE_LABEL, "hallucination"))
        .decision_wait(Duration::from_secs(3600))
        .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(tail)
            .build();
        let tracer = provider.tracer("gateway");
        let chat = |label: Option<&str>| {
            let mut span = tracer.start("chat gpt-4o");
            let context = span.span_context().clone();
            span.end();
            if let Some(label) = label {
                let evaluation = Evaluation::new(&context.trace_id().to_string(), "faithfulness")
                    .unwrap()
                    .with_span_id(&context.span_id().to_string())
                    .unwrap()
                    .with_label(label)
                    .unwrap();
                record(&tracer, &evaluation);
            }
            context.trace_id()
        };
        let flagged = chat(Some("hallucination"));
        let fine = chat(Some("faithful"));
        let unevaluated = chat(None);
        assert!(
            exporter.get_finished_spans().unwrap().is_empty(),
            "all three await the decision"
        );
        provider.force_flush().unwrap();
        let spans = exporter.get_finished_spans().unwrap();
        let of = |trace: TraceId| {
            spans
                .iter()
                .filter(|s| s.span_context.trace_id() == trace)
                .map(|s| s.name.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(of(flagged), ["chat gpt-4o", "evaluation faithfulness"]);
        assert!(of(fine).is_empty());
        assert!(of(unevaluated).is_empty());
    }
}
