//! With content capture off, tool-call arguments cost nothing: a stream of argument fragments
//! allocates no more than a stream of text deltas of the same size, in every format. Counted
//! by a global allocator, per thread (tests run on threads of their own).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;
use std::time::Instant;

use llmtrace::genai::{End, Endpoint, Exchange, GenAiConfig, RequestInfo};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded to the system allocator unchanged; the counter is a
// thread-local `Cell` with a const initialiser, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: the caller's contract is passed on as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

/// Allocations made while `events` (after `head`, not counted) go through a capture-off
/// exchange one chunk each.
fn allocations_for(path: &str, head: &[String], events: &[String]) -> u64 {
    let t0 = Instant::now();
    let endpoint = Endpoint::detect(path, None).unwrap();
    let request = RequestInfo::parse(&endpoint, br#"{"model":"m","stream":true}"#, false);
    let mut exchange = Exchange::new(Arc::new(GenAiConfig::default()), endpoint, request, t0);
    let mut headers = http::HeaderMap::new();
    headers.insert("content-type", "text/event-stream".parse().unwrap());
    exchange.on_response_head(200, &headers, t0);
    for event in head {
        exchange.on_response_data(event.as_bytes(), t0);
    }
    let before = allocations();
    for event in events {
        exchange.on_response_data(event.as_bytes(), t0);
    }
    let made = allocations() - before;
    let report = exchange.finish(End::Complete, t0);
    assert!(report.summary.tool_arguments.is_empty());
    made
}

/// `n` events from `make(i)`, as SSE.
fn events(n: usize, make: impl Fn(usize) -> String) -> Vec<String> {
    (0..n).map(|i| format!("{}\n\n", make(i))).collect()
}

#[test]
fn chat_argument_fragments_allocate_no_more_than_text() {
    let first = |delta: &str| {
        format!(
            r#"data: {{"id":"c","model":"m","choices":[{{"index":0,"delta":{delta},"finish_reason":null}}]}}"#
        )
    };
    let head = events(1, |_| {
        first(
            r#"{"role":"assistant","tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"f","arguments":""}}]}"#,
        )
    });
    let fragments = events(200, |i| {
        first(&format!(
            r#"{{"tool_calls":[{{"index":0,"function":{{"arguments":"{{\"k{i:03}\":1,"}}}}]}}"#
        ))
    });
    let texts = events(200, |i| {
        first(&format!(r#"{{"content":"a text delta {i:03}.."}}"#))
    });
    let path = "/v1/chat/completions";
    let (arguments, text) = (
        allocations_for(path, &head, &fragments),
        allocations_for(path, &head, &texts),
    );
    assert!(arguments <= text, "arguments {arguments}, text {text}");
}

#[test]
fn anthropic_and_responses_argument_deltas_allocate_no_more_than_text() {
    let anthropic = |delta: &str| {
        format!(
            "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":1,\"delta\":{delta}}}"
        )
    };
    let head = events(1, |_| {
        r#"event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_a","name":"f","input":{}}}"#
            .to_owned()
    });
    let json = events(200, |i| {
        anthropic(&format!(
            r#"{{"type":"input_json_delta","partial_json":"{{\"k{i:03}\": 1"}}"#
        ))
    });
    let text = events(200, |i| {
        anthropic(&format!(
            r#"{{"type":"text_delta","text":"some text {i:03}"}}"#
        ))
    });
    let (arguments, texts) = (
        allocations_for("/v1/messages", &head, &json),
        allocations_for("/v1/messages", &head, &text),
    );
    assert!(arguments <= texts, "arguments {arguments}, text {texts}");

    let responses = |kind: &str, i: usize| {
        format!(
            "event: {kind}\ndata: {{\"type\":\"{kind}\",\"output_index\":0,\"item_id\":\"fc_1\",\"delta\":\"some text {i:03}\"}}"
        )
    };
    let arguments = events(200, |i| {
        responses("response.function_call_arguments.delta", i)
    });
    let text = events(200, |i| responses("response.output_text.delta", i));
    let (arguments, texts) = (
        allocations_for("/v1/responses", &[], &arguments),
        allocations_for("/v1/responses", &[], &text),
    );
    assert!(arguments <= texts, "arguments {arguments}, text {texts}");
}
