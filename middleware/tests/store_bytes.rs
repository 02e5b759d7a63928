//! The trace store's byte count against the allocator: what `TraceStore::stats().bytes` says
//! the store holds is at least what it really holds on the heap (it errs high, never low), and
//! not wildly more. A counting global allocator measures the heap; this file is its own test
//! binary, so nothing else allocates meanwhile (one test only).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, SystemTime};

use llmtrace::store::{StoreConfig, TraceStore};
use opentelemetry::trace::{
    Event, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator and only counts.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn span(trace: u128, n: u64, start: SystemTime) -> SpanData {
    let mut attributes = vec![
        KeyValue::new("gen_ai.operation.name", "chat"),
        KeyValue::new("gen_ai.request.model", format!("model-{}", trace % 7)),
        KeyValue::new("gen_ai.response.id", format!("chatcmpl-{trace:032x}")),
        KeyValue::new("gen_ai.usage.input_tokens", 12),
        KeyValue::new("gen_ai.usage.output_tokens", 40),
        KeyValue::new("user.id", format!("user-{}", trace % 1000)),
        KeyValue::new("http.route", "/v1/chat/completions"),
    ];
    attributes.push(KeyValue::new(
        "gen_ai.output.messages",
        "x".repeat(200 + (trace % 300) as usize),
    ));
    let events = vec![Event::new(
        "llmtrace.first_token",
        start,
        vec![KeyValue::new("llmtrace.chunk.index", 0)],
        0,
    )];
    SpanData {
        span_context: SpanContext::new(
            TraceId::from(trace),
            SpanId::from(n),
            TraceFlags::SAMPLED,
            false,
            TraceState::NONE,
        ),
        parent_span_id: if n == 1 {
            SpanId::INVALID
        } else {
            SpanId::from(1)
        },
        parent_span_is_remote: false,
        span_kind: if n == 1 {
            SpanKind::Server
        } else {
            SpanKind::Client
        },
        name: format!("span {n} of {trace}").into(),
        start_time: start,
        end_time: start + Duration::from_millis(100),
        attributes,
        dropped_attributes_count: 0,
        events: {
            let mut all = SpanEvents::default();
            all.events = events;
            all
        },
        links: SpanLinks::default(),
        status: Status::Unset,
        instrumentation_scope: InstrumentationScope::builder("llmtrace").build(),
    }
}

#[test]
fn the_byte_count_is_at_least_the_heap_the_store_holds() {
    let service: Arc<str> = Arc::from("svc");
    let start = SystemTime::now();
    for (traces, cap) in [(3_000u128, 64 * 1024 * 1024), (20_000, 4 * 1024 * 1024)] {
        let before = LIVE.load(Ordering::Relaxed);
        let store = TraceStore::new(StoreConfig {
            max_traces: 1_000_000,
            max_bytes: cap,
            ..StoreConfig::default()
        });
        for t in 1..=traces {
            store.insert(span(t, 2, start), service.clone());
            store.insert(span(t, 1, start), service.clone());
        }
        let held = (LIVE.load(Ordering::Relaxed) - before) as f64;
        let counted = store.stats().bytes as f64;
        eprintln!(
            "{traces} traces, cap {cap}: {} held, counted {counted}, heap {held} ({:.2}x)",
            store.stats().traces,
            counted / held
        );
        assert!(counted >= held, "counted {counted} < heap {held}");
        assert!(counted <= 2.0 * held, "counted {counted} > 2 x heap {held}");
        assert!(counted <= cap as f64);
        drop(store);
    }
}
