//! The store's traces as JSON in the shape of Jaeger's query API (`/api/traces`,
//! `/api/traces/{id}`), so tools that read Jaeger can read the store.
//!
//! The subset: `{"data":[trace…],"total","limit","offset","errors"}`; a trace is
//! `{"traceID","spans","processes","warnings"}`; a span is `{"traceID","spanID",
//! "operationName","references","startTime","duration","tags","logs","processID","flags",
//! "warnings"}` with times in microseconds. The parent is a `CHILD_OF` reference, each link a
//! `FOLLOWS_FROM` one. Tags carry the attributes (`type` `string`, `bool`, `int64` or
//! `float64`; arrays as their JSON text, typed `string`) and, as Jaeger's OTLP ingester writes
//! them, `span.kind`, `otel.status_code`, `otel.status_description`, `error` and
//! `otel.scope.name`. Events are logs whose fields hold `event` (the name) and the event's
//! attributes. One process per service (`p1`, `p2`, …) with no tags.
//!
//! Written through serde straight from the stored spans (borrowed, not copied).

use std::borrow::Cow;
use std::collections::BTreeMap;

use opentelemetry::trace::{SpanId, SpanKind, Status};
use opentelemetry::{Array, KeyValue, Value};
use serde::Serialize;

use super::query::micros;
use super::{StoredSpan, Trace};

/// `{"data":[…]}` for a list of traces.
pub fn traces_json(traces: &[Trace], limit: usize) -> String {
    to_json(&Answer {
        data: Some(traces.iter().map(trace_out).collect()),
        total: traces.len(),
        limit,
        offset: 0,
        errors: None,
    })
}

/// `{"data":[trace]}` for one trace, as Jaeger answers `/api/traces/{id}`.
pub fn trace_response(trace: &Trace) -> String {
    to_json(&Answer {
        data: Some(vec![trace_out(trace)]),
        total: 0,
        limit: 0,
        offset: 0,
        errors: None,
    })
}

/// Jaeger's answer for a trace it does not have.
pub fn not_found(trace_id: &str) -> String {
    to_json(&Answer {
        data: None,
        total: 0,
        limit: 0,
        offset: 0,
        errors: Some(vec![ApiError {
            code: 404,
            msg: format!("trace not found: {trace_id}"),
        }]),
    })
}

fn to_json(answer: &Answer<'_>) -> String {
    // Serializing borrowed strings and numbers cannot fail.
    serde_json::to_string(answer).unwrap_or_default()
}

#[derive(Serialize)]
struct Answer<'a> {
    data: Option<Vec<TraceOut<'a>>>,
    total: usize,
    limit: usize,
    offset: usize,
    errors: Option<Vec<ApiError>>,
}

#[derive(Serialize)]
struct ApiError {
    code: u16,
    msg: String,
}

#[derive(Serialize)]
struct TraceOut<'a> {
    #[serde(rename = "traceID")]
    trace_id: String,
    spans: Vec<SpanOut<'a>>,
    processes: BTreeMap<String, Process<'a>>,
    warnings: Option<()>,
}

#[derive(Serialize)]
struct Process<'a> {
    #[serde(rename = "serviceName")]
    service_name: &'a str,
    tags: [(); 0],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SpanOut<'a> {
    #[serde(rename = "traceID")]
    trace_id: String,
    #[serde(rename = "spanID")]
    span_id: String,
    operation_name: &'a str,
    references: Vec<Reference>,
    start_time: u64,
    duration: u64,
    tags: Vec<Tag<'a>>,
    logs: Vec<Log<'a>>,
    #[serde(rename = "processID")]
    process_id: String,
    flags: u8,
    warnings: Option<()>,
}

#[derive(Serialize)]
struct Reference {
    #[serde(rename = "refType")]
    ref_type: &'static str,
    #[serde(rename = "traceID")]
    trace_id: String,
    #[serde(rename = "spanID")]
    span_id: String,
}

#[derive(Serialize)]
struct Log<'a> {
    timestamp: u64,
    fields: Vec<Tag<'a>>,
}

#[derive(Serialize)]
struct Tag<'a> {
    key: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    value: TagValue<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum TagValue<'a> {
    Text(Cow<'a, str>),
    Bool(bool),
    Int(i64),
    Float(f64),
}

/// One trace: its spans (by start time) and their processes.
fn trace_out(trace: &Trace) -> TraceOut<'_> {
    let mut ids: BTreeMap<&str, String> = BTreeMap::new();
    for span in &trace.spans {
        let next = format!("p{}", ids.len() + 1);
        ids.entry(&span.service).or_insert(next);
    }
    let mut spans: Vec<&StoredSpan> = trace.spans.iter().collect();
    spans.sort_by_key(|s| s.data.start_time);
    let spans = spans
        .into_iter()
        .map(|s| span_out(s, ids[&*s.service].clone()))
        .collect();
    let processes = ids
        .into_iter()
        .map(|(service, id)| {
            let process = Process {
                service_name: service,
                tags: [],
            };
            (id, process)
        })
        .collect();
    TraceOut {
        trace_id: trace.summary.trace_id.to_string(),
        spans,
        processes,
        warnings: None,
    }
}

fn span_out(span: &StoredSpan, process_id: String) -> SpanOut<'_> {
    let data = &span.data;
    let trace_id = data.span_context.trace_id().to_string();
    let mut references = Vec::new();
    if data.parent_span_id != SpanId::INVALID {
        references.push(Reference {
            ref_type: "CHILD_OF",
            trace_id: trace_id.clone(),
            span_id: data.parent_span_id.to_string(),
        });
    }
    references.extend(data.links.iter().map(|link| Reference {
        ref_type: "FOLLOWS_FROM",
        trace_id: link.span_context.trace_id().to_string(),
        span_id: link.span_context.span_id().to_string(),
    }));
    let logs = data
        .events
        .iter()
        .map(|e| Log {
            timestamp: micros(e.timestamp),
            fields: std::iter::once(text_tag("event", &e.name))
                .chain(e.attributes.iter().map(kv_tag))
                .collect(),
        })
        .collect();
    SpanOut {
        trace_id,
        span_id: data.span_context.span_id().to_string(),
        operation_name: &data.name,
        references,
        start_time: micros(data.start_time),
        duration: u64::try_from(span.duration().as_micros()).unwrap_or(u64::MAX),
        tags: tags(span),
        logs,
        process_id,
        flags: data.span_context.trace_flags().to_u8(),
        warnings: None,
    }
}

fn tags(span: &StoredSpan) -> Vec<Tag<'_>> {
    let data = &span.data;
    let mut tags: Vec<Tag<'_>> = Vec::with_capacity(data.attributes.len() + 4);
    tags.extend(data.attributes.iter().map(kv_tag));
    tags.push(text_tag("span.kind", kind_name(&data.span_kind)));
    match &data.status {
        Status::Unset => {}
        Status::Ok => tags.push(text_tag("otel.status_code", "OK")),
        Status::Error { description } => {
            tags.push(text_tag("otel.status_code", "ERROR"));
            if !description.is_empty() {
                tags.push(text_tag("otel.status_description", description));
            }
        }
    }
    if span.is_error() {
        tags.push(Tag {
            key: "error",
            kind: "bool",
            value: TagValue::Bool(true),
        });
    }
    tags.push(text_tag(
        "otel.scope.name",
        data.instrumentation_scope.name(),
    ));
    tags
}

/// The lowercase kind Jaeger shows (`server`, `client`, …).
pub fn kind_name(kind: &SpanKind) -> &'static str {
    match kind {
        SpanKind::Server => "server",
        SpanKind::Client => "client",
        SpanKind::Producer => "producer",
        SpanKind::Consumer => "consumer",
        SpanKind::Internal => "internal",
    }
}

fn text_tag<'a>(key: &'a str, value: &'a str) -> Tag<'a> {
    Tag {
        key,
        kind: "string",
        value: TagValue::Text(Cow::Borrowed(value)),
    }
}

fn kv_tag(kv: &KeyValue) -> Tag<'_> {
    let (kind, value) = match &kv.value {
        Value::Bool(b) => ("bool", TagValue::Bool(*b)),
        Value::I64(i) => ("int64", TagValue::Int(*i)),
        Value::F64(f) => ("float64", TagValue::Float(*f)),
        Value::String(s) => ("string", TagValue::Text(Cow::Borrowed(s.as_str()))),
        Value::Array(Array::String(items)) => {
            let items: Vec<&str> = items.iter().map(|s| s.as_str()).collect();
            let text = serde_json::to_string(&items).unwrap_or_default();
            ("string", TagValue::Text(Cow::Owned(text)))
        }
        other => ("string", TagValue::Text(Cow::Owned(other.to_string()))),
    };
    Tag {
        key: kv.key.as_str(),
        kind,
        value,
    }
}
