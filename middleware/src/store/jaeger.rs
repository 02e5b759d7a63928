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

use std::collections::BTreeMap;

use opentelemetry::trace::{SpanId, SpanKind, Status};
use opentelemetry::{Array, KeyValue, Value};
use serde_json::{Value as Json, json};

use super::query::micros;
use super::{StoredSpan, Trace};

/// `{"data":[…]}` for a list of traces.
pub fn traces_json(traces: &[Trace], limit: usize) -> Json {
    json!({
        "data": traces.iter().map(trace_json).collect::<Vec<_>>(),
        "total": traces.len(),
        "limit": limit,
        "offset": 0,
        "errors": null,
    })
}

/// `{"data":[trace]}` for one trace, as Jaeger answers `/api/traces/{id}`.
pub fn trace_response(trace: &Trace) -> Json {
    json!({
        "data": [trace_json(trace)],
        "total": 0,
        "limit": 0,
        "offset": 0,
        "errors": null,
    })
}

/// Jaeger's answer for a trace it does not have.
pub fn not_found(trace_id: &str) -> Json {
    json!({
        "data": null,
        "total": 0,
        "limit": 0,
        "offset": 0,
        "errors": [{ "code": 404, "msg": format!("trace not found: {trace_id}") }],
    })
}

/// One trace: its spans (by start time) and their processes.
pub fn trace_json(trace: &Trace) -> Json {
    let mut processes: BTreeMap<&str, String> = BTreeMap::new();
    for span in &trace.spans {
        let next = format!("p{}", processes.len() + 1);
        processes.entry(&span.service).or_insert(next);
    }
    let mut spans: Vec<&StoredSpan> = trace.spans.iter().collect();
    spans.sort_by_key(|s| s.data.start_time);
    let spans: Vec<Json> = spans
        .into_iter()
        .map(|s| span_json(s, &processes[&*s.service]))
        .collect();
    let processes: serde_json::Map<String, Json> = processes
        .iter()
        .map(|(service, id)| (id.clone(), json!({ "serviceName": service, "tags": [] })))
        .collect();
    json!({
        "traceID": trace.summary.trace_id.to_string(),
        "spans": spans,
        "processes": processes,
        "warnings": null,
    })
}

fn span_json(span: &StoredSpan, process: &str) -> Json {
    let data = &span.data;
    let trace_id = data.span_context.trace_id().to_string();
    let mut references = Vec::new();
    if data.parent_span_id != SpanId::INVALID {
        references.push(json!({
            "refType": "CHILD_OF",
            "traceID": trace_id,
            "spanID": data.parent_span_id.to_string(),
        }));
    }
    for link in data.links.iter() {
        references.push(json!({
            "refType": "FOLLOWS_FROM",
            "traceID": link.span_context.trace_id().to_string(),
            "spanID": link.span_context.span_id().to_string(),
        }));
    }
    let logs: Vec<Json> = data
        .events
        .iter()
        .map(|e| {
            let mut fields = vec![tag("event", &Value::from(e.name.to_string()))];
            fields.extend(e.attributes.iter().map(kv_tag));
            json!({ "timestamp": micros(e.timestamp), "fields": fields })
        })
        .collect();
    json!({
        "traceID": trace_id,
        "spanID": data.span_context.span_id().to_string(),
        "operationName": data.name,
        "references": references,
        "startTime": micros(data.start_time),
        "duration": span.duration().as_micros() as u64,
        "tags": tags(span),
        "logs": logs,
        "processID": process,
        "flags": data.span_context.trace_flags().to_u8(),
        "warnings": null,
    })
}

fn tags(span: &StoredSpan) -> Vec<Json> {
    let data = &span.data;
    let mut tags: Vec<Json> = data.attributes.iter().map(kv_tag).collect();
    tags.push(tag("span.kind", &Value::from(kind_name(&data.span_kind))));
    match &data.status {
        Status::Unset => {}
        Status::Ok => tags.push(tag("otel.status_code", &Value::from("OK"))),
        Status::Error { description } => {
            tags.push(tag("otel.status_code", &Value::from("ERROR")));
            if !description.is_empty() {
                tags.push(tag(
                    "otel.status_description",
                    &Value::from(description.to_string()),
                ));
            }
        }
    }
    if span.is_error() {
        tags.push(tag("error", &Value::Bool(true)));
    }
    tags.push(tag(
        "otel.scope.name",
        &Value::from(data.instrumentation_scope.name().to_owned()),
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

fn kv_tag(kv: &KeyValue) -> Json {
    tag(kv.key.as_str(), &kv.value)
}

fn tag(key: &str, value: &Value) -> Json {
    let (kind, value) = match value {
        Value::Bool(b) => ("bool", json!(b)),
        Value::I64(i) => ("int64", json!(i)),
        Value::F64(f) => ("float64", json!(f)),
        Value::String(s) => ("string", json!(s.as_str())),
        Value::Array(Array::String(items)) => (
            "string",
            json!(Json::from(items.iter().map(|s| s.as_str()).collect::<Vec<_>>()).to_string()),
        ),
        other => ("string", json!(other.to_string())),
    };
    json!({ "key": key, "type": kind, "value": value })
}
