//! Metric label cardinality: clients naming ever new models (or upstreams answering with ever
//! new error types) cannot create ever new series.

use std::collections::HashSet;
use std::time::Duration;

use llmtrace::genai::{GenAiMetrics, MetricValues};
use llmtrace::limits::{DEFAULT_MAX_MODEL_LABELS, MAX_ERROR_TYPE_LABELS, OTHER_LABEL};
use opentelemetry::KeyValue;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};

fn meters() -> (SdkMeterProvider, InMemoryMetricExporter) {
    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter.clone()).build())
        .build();
    (provider, exporter)
}

fn exchange(request_model: &str, response_model: &str, error_type: Option<&str>) -> MetricValues {
    let mut attributes = vec![
        KeyValue::new("gen_ai.operation.name", "chat"),
        KeyValue::new("gen_ai.provider.name", "openai"),
        KeyValue::new("gen_ai.request.model", request_model.to_owned()),
        KeyValue::new("gen_ai.response.model", response_model.to_owned()),
    ];
    if let Some(error_type) = error_type {
        attributes.push(KeyValue::new("error.type", error_type.to_owned()));
    }
    MetricValues {
        attributes,
        duration: Duration::from_millis(30),
        input_tokens: Some(3),
        output_tokens: Some(5),
        ..MetricValues::default()
    }
}

/// The attribute sets of the data points of histogram `name`, after a flush (cumulative).
fn series(
    provider: &SdkMeterProvider,
    exporter: &InMemoryMetricExporter,
    name: &str,
) -> Vec<Vec<KeyValue>> {
    provider.force_flush().unwrap();
    let mut out = Vec::new();
    for resource in exporter.get_finished_metrics().unwrap() {
        for scope in resource.scope_metrics() {
            for metric in scope.metrics().filter(|m| m.name() == name) {
                match metric.data() {
                    AggregatedMetrics::F64(MetricData::Histogram(h)) => out.extend(
                        h.data_points()
                            .map(|p| p.attributes().cloned().collect::<Vec<_>>()),
                    ),
                    AggregatedMetrics::U64(MetricData::Histogram(h)) => out.extend(
                        h.data_points()
                            .map(|p| p.attributes().cloned().collect::<Vec<_>>()),
                    ),
                    other => panic!("{name}: {other:?}"),
                }
            }
        }
    }
    // The next flush exports the cumulative state again.
    exporter.reset();
    out
}

fn values_of(series: &[Vec<KeyValue>], key: &str) -> HashSet<String> {
    series
        .iter()
        .flatten()
        .filter(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.as_str().into_owned())
        .collect()
}

#[test]
fn ten_thousand_model_names_make_at_most_the_budget_plus_other() {
    let (provider, exporter) = meters();
    let metrics = GenAiMetrics::new(&provider.meter("test"));
    // Shared by clones, as the layer and the gateway share it.
    let clone = metrics.clone();
    for i in 0..10_000 {
        let model = format!("model-{i}");
        let recorder = if i % 2 == 0 { &metrics } else { &clone };
        recorder.record_client(&exchange(&model, &model, None));
    }
    let points = series(&provider, &exporter, "gen_ai.client.operation.duration");
    assert!(
        points.len() <= DEFAULT_MAX_MODEL_LABELS + 1,
        "{} series",
        points.len()
    );
    let models = values_of(&points, "gen_ai.request.model");
    assert!(models.contains(OTHER_LABEL));
    assert!(
        models.contains("model-0") && models.contains("model-49"),
        "{models:?}"
    );
    assert!(!models.contains("model-9999"));
    let tokens = series(&provider, &exporter, "gen_ai.client.token.usage");
    assert!(tokens.len() <= 2 * (DEFAULT_MAX_MODEL_LABELS + 1));
}

#[test]
fn the_budget_is_configurable_and_known_names_stay_known() {
    let (provider, exporter) = meters();
    let metrics = GenAiMetrics::new(&provider.meter("test")).with_max_model_labels(3);
    for model in ["a", "b", "c", "d", "e", "a", "c", "f"] {
        metrics.record_server(&exchange(model, model, None));
    }
    let points = series(&provider, &exporter, "gen_ai.server.request.duration");
    let models = values_of(&points, "gen_ai.request.model");
    let expected: HashSet<String> = ["a", "b", "c", OTHER_LABEL]
        .into_iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(models, expected);
    assert_eq!(points.len(), 4);

    let (provider, exporter) = meters();
    let none = GenAiMetrics::new(&provider.meter("test")).with_max_model_labels(0);
    none.record_client(&exchange("a", "b", None));
    let points = series(&provider, &exporter, "gen_ai.client.operation.duration");
    assert_eq!(
        values_of(&points, "gen_ai.response.model"),
        HashSet::from([OTHER_LABEL.to_owned()])
    );
}

#[test]
fn error_types_are_bounded_too() {
    let (provider, exporter) = meters();
    let metrics = GenAiMetrics::new(&provider.meter("test"));
    for i in 0..1000 {
        metrics.record_client(&exchange("m", "m", Some(&format!("error_{i}"))));
    }
    let points = series(&provider, &exporter, "gen_ai.client.operation.duration");
    assert!(points.len() <= MAX_ERROR_TYPE_LABELS + 1);
    assert!(values_of(&points, "error.type").contains(OTHER_LABEL));
}

/// `(count, sum)` of histogram `name`'s data point with `attributes` (in any order), after
/// a flush; `None` when it has no such point.
fn histogram_point(
    provider: &SdkMeterProvider,
    exporter: &InMemoryMetricExporter,
    name: &str,
    attributes: &[KeyValue],
) -> Option<(u64, f64)> {
    provider.force_flush().unwrap();
    let mut want: Vec<_> = attributes.to_vec();
    want.sort_by(|a, b| a.key.cmp(&b.key));
    let mut found = None;
    let resources = exporter.get_finished_metrics().unwrap();
    for scope in resources.iter().flat_map(|r| r.scope_metrics()) {
        for metric in scope.metrics().filter(|m| m.name() == name) {
            let points: Vec<(Vec<KeyValue>, u64, f64)> = match metric.data() {
                AggregatedMetrics::F64(MetricData::Histogram(h)) => h
                    .data_points()
                    .map(|p| (p.attributes().cloned().collect(), p.count(), p.sum()))
                    .collect(),
                AggregatedMetrics::U64(MetricData::Histogram(h)) => h
                    .data_points()
                    .map(|p| (p.attributes().cloned().collect(), p.count(), p.sum() as f64))
                    .collect(),
                other => panic!("{name}: {other:?}"),
            };
            for (mut got, count, sum) in points {
                got.sort_by(|a, b| a.key.cmp(&b.key));
                if got == want {
                    found = Some((count, sum));
                }
            }
        }
    }
    exporter.reset();
    found
}

/// Every record lands in its series, counted once, whether the records go through bound
/// handles (feature `bound-metrics`, which the gateway uses) or not: a stream's chunk gaps
/// one per gap, tokens by type, cost, and the same set recorded again adds to the same
/// points. Instruments a set never recorded have no point for it.
#[test]
fn records_land_once_in_their_series_bound_or_not() {
    let (provider, exporter) = meters();
    let metrics = GenAiMetrics::new(&provider.meter("t"));
    let streamed = MetricValues {
        streamed: true,
        time_to_first_chunk: Some(Duration::from_millis(20)),
        chunk_gaps: vec![
            (Duration::from_millis(5), 15),
            (Duration::from_millis(40), 2),
        ],
        cost: Some(0.25),
        ..exchange("gpt-4o", "gpt-4o-2024-08-06", None)
    };
    let plain = exchange("gpt-4o-mini", "gpt-4o-mini", None);
    for _ in 0..3 {
        metrics.record_client(&streamed);
    }
    metrics.record_client(&plain);
    let gaps = histogram_point(
        &provider,
        &exporter,
        "gen_ai.client.operation.time_per_output_chunk",
        &streamed.attributes,
    );
    let (count, sum) = gaps.expect("no gap series");
    assert_eq!(count, 3 * 17);
    assert!(
        (sum - 3.0 * (15.0 * 0.005 + 2.0 * 0.040)).abs() < 1e-9,
        "{sum}"
    );
    let ttfc = "gen_ai.client.operation.time_to_first_chunk";
    assert_eq!(
        histogram_point(&provider, &exporter, ttfc, &streamed.attributes).map(|p| p.0),
        Some(3)
    );
    assert_eq!(
        histogram_point(&provider, &exporter, ttfc, &plain.attributes),
        None,
        "a series for an instrument the set never recorded"
    );
    let duration = "gen_ai.client.operation.duration";
    assert_eq!(
        histogram_point(&provider, &exporter, duration, &plain.attributes),
        Some((1, 0.03))
    );
    let mut input = plain.attributes.clone();
    input.push(KeyValue::new("gen_ai.token.type", "input"));
    let mut output = streamed.attributes.clone();
    output.push(KeyValue::new("gen_ai.token.type", "output"));
    let usage = "gen_ai.client.token.usage";
    assert_eq!(
        histogram_point(&provider, &exporter, usage, &input),
        Some((1, 3.0))
    );
    assert_eq!(
        histogram_point(&provider, &exporter, usage, &output),
        Some((3, 15.0))
    );
    // The same set again, in another order: the same points.
    let mut reordered = streamed.clone();
    reordered.attributes.reverse();
    metrics.record_client(&reordered);
    assert_eq!(
        histogram_point(&provider, &exporter, duration, &streamed.attributes).map(|p| p.0),
        Some(4)
    );
}
