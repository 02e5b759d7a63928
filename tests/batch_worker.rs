//! `examples/batch_worker.rs` against the mock provider and an in-memory exporter: one batch
//! span in a trace of its own, linked to each of the 100 producer spans, with the GenAI span
//! as its child.

use http::HeaderMap;
use llmtrace::GenAiLayer;
use llmtrace::propagation::{LINK_INDEX, LINKS_DROPPED, LINKS_INVALID, LINKS_TRACE_IDS};
use llmtrace_mock::MockServer;
use llmtrace_test_support::*;
use opentelemetry::trace::{SpanId, SpanKind};
use opentelemetry::{Array, Value};
use opentelemetry_sdk::trace::SpanData;

// The example's own functions (its `main` is not used here).
#[path = "../examples/batch_worker.rs"]
#[allow(dead_code)]
mod batch_worker;

use batch_worker::{BATCH_SIZE, MODEL, Message, enqueue, fast_mock, genai_client, process_batch};

fn producers(spans: &[SpanData]) -> Vec<&SpanData> {
    spans
        .iter()
        .filter(|s| s.span_kind == SpanKind::Producer)
        .collect()
}

/// `LINKS_TRACE_IDS` of `span`; panics when it is not a string array.
fn linked_trace_ids(span: &SpanData) -> Option<Vec<String>> {
    match attr(span, LINKS_TRACE_IDS)? {
        Value::Array(Array::String(ids)) => Some(ids.iter().map(|id| id.to_string()).collect()),
        other => panic!("{LINKS_TRACE_IDS} is not a string array: {other:?}"),
    }
}

fn link_index(link: &opentelemetry::trace::Link) -> Option<i64> {
    link.attributes
        .iter()
        .find(|kv| kv.key.as_str() == LINK_INDEX)
        .map(|kv| match kv.value {
            Value::I64(i) => i,
            ref other => panic!("{LINK_INDEX} is not an int: {other:?}"),
        })
}

#[tokio::test]
async fn batch_span_links_to_each_of_the_100_request_traces() {
    let mock = MockServer::start(fast_mock()).await.unwrap();
    let rec = Recorder::new();
    let queue = enqueue(&rec.tracer(), BATCH_SIZE);
    let client = genai_client(GenAiLayer::client().with_tracer(rec.tracer()));
    let outcome = process_batch(&rec.tracer(), &client, &mock.url(), &queue)
        .await
        .unwrap();

    let spans = rec.wait_for(BATCH_SIZE + 2).await;
    assert_eq!(spans.len(), BATCH_SIZE + 2, "{:?}", names(&spans));
    rec.assert_each_ended_once();
    let producers = producers(&spans);
    assert_eq!(producers.len(), BATCH_SIZE);
    let batch = span(&spans, "process requests");
    let llm = span(&spans, &format!("chat {MODEL}"));

    // Exactly one link per request, in queue order, each to its producer span.
    assert_eq!(batch.span_kind, SpanKind::Consumer);
    assert_eq!(batch.links.len(), BATCH_SIZE);
    assert_eq!(batch.links.dropped_count, 0);
    assert_eq!(outcome.links, BATCH_SIZE);
    for (i, (link, producer)) in batch.links.iter().zip(&producers).enumerate() {
        let (linked, sent) = (&link.span_context, &producer.span_context);
        assert_eq!(linked.trace_id(), sent.trace_id(), "link {i}");
        assert_eq!(linked.span_id(), sent.span_id(), "link {i}");
        assert!(linked.is_remote() && linked.is_sampled(), "link {i}");
        assert_eq!(linked.trace_state().header(), format!("app=req-{i}"));
        assert_eq!(sent.trace_state().header(), format!("app=req-{i}"));
        assert_eq!(link_index(link), Some(i as i64));
    }
    assert_eq!(attr(batch, LINKS_DROPPED), None);
    assert_eq!(attr(batch, LINKS_INVALID), None);
    // The same relation as an attribute, for backends that drop links: the 100 request
    // trace ids, in queue order.
    let request_traces: Vec<String> = producers
        .iter()
        .map(|p| p.span_context.trace_id().to_string())
        .collect();
    assert_eq!(linked_trace_ids(batch), Some(request_traces));
    assert_eq!(
        attr_i64(batch, "messaging.batch.message_count"),
        Some(BATCH_SIZE as i64)
    );

    // The batch is a root in a trace of its own.
    let batch_trace = batch.span_context.trace_id();
    assert_eq!(batch.parent_span_id, SpanId::INVALID);
    assert!(
        producers
            .iter()
            .all(|p| p.span_context.trace_id() != batch_trace)
    );
    assert_eq!(outcome.trace_id, batch_trace);

    // The LLM call is the batch span's child, and the provider saw it as the caller.
    assert_eq!(llm.span_kind, SpanKind::Client);
    assert_eq!(llm.span_context.trace_id(), batch_trace);
    assert_eq!(llm.parent_span_id, batch.span_context.span_id());
    let sent = mock.received_requests().last().unwrap().headers["traceparent"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        sent.contains(&llm.span_context.span_id().to_string()),
        "{sent}"
    );

    // Each request's result records the batch trace.
    assert_eq!(outcome.results.len(), BATCH_SIZE);
    assert!(
        outcome
            .results
            .iter()
            .all(|r| r.batch_trace_id == batch_trace)
    );
    assert!(outcome.results[0].answer.starts_with("tok0"));
}

#[tokio::test]
async fn links_beyond_the_limit_and_invalid_carriers_are_counted() {
    let mock = MockServer::start(fast_mock()).await.unwrap();
    let rec = Recorder::new();
    let mut queue = enqueue(&rec.tracer(), 130);
    queue.insert(
        0,
        Message {
            headers: HeaderMap::from_iter([(
                http::header::HeaderName::from_static("traceparent"),
                "00-not-a-trace-01".parse().unwrap(),
            )]),
            prompt: "no trace context".into(),
        },
    );
    let client = genai_client(GenAiLayer::client().with_tracer(rec.tracer()));
    let outcome = process_batch(&rec.tracer(), &client, &mock.url(), &queue)
        .await
        .unwrap();

    let spans = rec.wait_for(130 + 2).await;
    let batch = span(&spans, "process requests");
    assert_eq!(outcome.links, 128);
    assert_eq!(batch.links.len(), 128);
    assert_eq!(batch.links.dropped_count, 0, "the SDK dropped none itself");
    assert_eq!(attr_i64(batch, LINKS_DROPPED), Some(2));
    assert_eq!(attr_i64(batch, LINKS_INVALID), Some(1));
    // One trace id per link kept: bounded by the collector's maximum, not the batch size.
    let ids = linked_trace_ids(batch).unwrap();
    assert_eq!(ids.len(), 128);
    assert_eq!(
        ids[127],
        producers(&spans)[127].span_context.trace_id().to_string()
    );
    // The index is the message's position in the queue, the invalid one included.
    assert_eq!(link_index(&batch.links[0]), Some(1));
    let producers = producers(&spans);
    assert_eq!(
        batch.links[127].span_context.span_id(),
        producers[127].span_context.span_id()
    );
    assert_eq!(outcome.results.len(), 131);
}
