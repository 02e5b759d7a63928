//! An in-memory trace store and the embedded viewer over it (feature `store`).
//!
//! - [`TraceStore`] keeps the most recent traces, bounded by a count and by bytes
//!   ([`StoreConfig`]: 1 000 traces and 64 MiB by default); when either is over, the trace
//!   seen first is evicted first. Bytes are counted per span by what it holds (attribute keys
//!   and values, events, links and theirs, see [`span_bytes`]), not estimated per trace.
//! - [`StoreProcessor`] is the [`SpanProcessor`] that feeds it. Add it to the tracer provider
//!   beside the exporting processor (or behind the tail sampler with [`Tee`], so the store
//!   holds what is exported and shows why the tail sampler kept a trace). Its `on_end` only
//!   hands the span to a bounded queue: when the queue is full the span is dropped and
//!   counted ([`StoreStats::dropped_spans`]), never waited for. A thread of its own files
//!   the spans into the store; queries lock the store only while they copy what they return.
//! - [`Query`] filters (errors, duration, model, route, user, session, time range), sorts
//!   (start, duration, TTFT, tokens, cost) and limits the trace list.
//! - [`analytics`] aggregates the stored traces: the dependency map of services and upstreams,
//!   and the GenAI calls' latency, throughput, errors and cost per model over time.
//! - [`ui`] renders the viewer (server-side HTML, embedded CSS and JavaScript, no external
//!   assets) and [`jaeger`] a JSON API in the shape of Jaeger's query API, for any HTTP
//!   server to serve: the gateway's admin listener does.
//!
//! ```
//! use llmtrace::store::{StoreConfig, TraceStore};
//! use opentelemetry_sdk::trace::SdkTracerProvider;
//!
//! let store = TraceStore::new(StoreConfig::default());
//! let provider = SdkTracerProvider::builder()
//!     .with_span_processor(store.processor())
//!     .build();
//! # drop(provider);
//! ```

pub mod analytics;
pub mod jaeger;
mod query;
mod trace;
pub mod ui;

pub use query::{DEFAULT_LIMIT, MAX_FILTER_BYTES, MAX_LIMIT, Query, SortKey, parse_duration};
pub use trace::{StoredSpan, Summary, USAGE_COST, as_f64, as_i64, find, span_bytes};

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::mem::size_of;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use opentelemetry::Context;
use opentelemetry::trace::TraceId;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Span, SpanData, SpanProcessor};

use trace::StoredTrace;

/// How much the store keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreConfig {
    /// Traces kept (default 1 000); the oldest goes first. 0 keeps nothing.
    pub max_traces: usize,
    /// Bytes the kept spans may hold (default 64 MiB); the oldest trace goes first.
    pub max_bytes: usize,
    /// Finished spans waiting to be filed (default 2 048, about 800 KiB of slots allocated
    /// up front); more are dropped and counted.
    pub queue: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            max_traces: 1000,
            max_bytes: 64 * 1024 * 1024,
            queue: 2048,
        }
    }
}

/// What the store holds and what it let go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreStats {
    /// Traces held.
    pub traces: usize,
    /// Spans held.
    pub spans: usize,
    /// Bytes held, as [`span_bytes`] and the per-trace overhead count them.
    pub bytes: usize,
    /// The configured caps.
    pub max_traces: usize,
    /// The configured byte cap.
    pub max_bytes: usize,
    /// Spans filed since the start.
    pub received_spans: u64,
    /// Spans dropped because the queue in front of the store was full.
    pub dropped_spans: u64,
    /// Spans dropped because their trace alone would exceed half the byte cap.
    pub oversized_spans: u64,
    /// Traces evicted to stay within the caps.
    pub evicted_traces: u64,
}

/// A bounded in-memory store of finished traces. Cheap to clone (one shared store).
#[derive(Clone)]
pub struct TraceStore {
    shared: Arc<Shared>,
}

struct Shared {
    config: StoreConfig,
    inner: Mutex<Inner>,
    received: AtomicU64,
    dropped: AtomicU64,
    oversized: AtomicU64,
    evicted: AtomicU64,
    /// Pages of the serving application linked from the viewer's header.
    links: std::sync::OnceLock<Vec<(String, String)>>,
}

#[derive(Default)]
struct Inner {
    traces: HashMap<TraceId, StoredTrace>,
    /// Trace ids in the order they were first seen: the front is evicted first.
    order: VecDeque<TraceId>,
    bytes: usize,
    spans: usize,
}

// === impl TraceStore ===

impl fmt::Debug for TraceStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TraceStore")
            .field("stats", &self.stats())
            .finish()
    }
}

impl TraceStore {
    /// An empty store with `config`'s caps.
    pub fn new(config: StoreConfig) -> Self {
        Self {
            shared: Arc::new(Shared {
                config,
                inner: Mutex::new(Inner::default()),
                received: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
                oversized: AtomicU64::new(0),
                evicted: AtomicU64::new(0),
                links: std::sync::OnceLock::new(),
            }),
        }
    }

    /// The caps.
    pub fn config(&self) -> StoreConfig {
        self.shared.config
    }

    /// Links `(label, path)` to pages the serving application adds beside the viewer's (the
    /// gateway's `/ui/slo`, say), shown in every page's header. Set once; `false` when they
    /// already were.
    pub fn set_page_links(&self, links: Vec<(String, String)>) -> bool {
        self.shared.links.set(links).is_ok()
    }

    /// The links [`set_page_links`](Self::set_page_links) set.
    pub fn page_links(&self) -> &[(String, String)] {
        self.shared.links.get().map_or(&[], Vec::as_slice)
    }

    /// A span processor that feeds this store through a bounded queue and a thread of its
    /// own (the thread ends when the processor is dropped).
    pub fn processor(&self) -> StoreProcessor {
        let (sender, receiver) = std::sync::mpsc::sync_channel(self.shared.config.queue.max(1));
        let store = self.clone();
        let spawned = std::thread::Builder::new()
            .name("llmtrace-store".into())
            .spawn(move || store.file_from(receiver));
        StoreProcessor {
            // Without a thread nothing would drain the queue: every span is then dropped and
            // counted, as when the queue is full.
            sender: spawned.ok().map(|_| sender),
            store: self.clone(),
            service: Arc::from("unknown_service"),
        }
    }

    fn file_from(&self, receiver: Receiver<Message>) {
        while let Ok(message) = receiver.recv() {
            match message {
                Message::Span(span, service) => self.insert(span, service),
                Message::Flush(ack) => {
                    let _ = ack.send(());
                }
            }
        }
    }

    /// Files one finished span of `service` now, on the caller's thread (the processor does
    /// this on its own thread).
    pub fn insert(&self, span: SpanData, service: Arc<str>) {
        let config = self.shared.config;
        self.shared.received.fetch_add(1, Ordering::Relaxed);
        if config.max_traces == 0 || config.max_bytes == 0 {
            return;
        }
        let bytes = span_bytes(&span);
        let span = StoredSpan {
            data: Arc::new(span),
            service,
        };
        let trace_id = span.data.span_context.trace_id();
        let mut inner = self.lock();
        let inner = &mut *inner;
        let before = inner.traces.get(&trace_id).map(StoredTrace::bytes);
        let trace = inner.traces.entry(trace_id).or_insert_with(|| {
            inner.order.push_back(trace_id);
            StoredTrace::new(&span)
        });
        if trace.bytes() + bytes > config.max_bytes / 2 {
            // One trace over half the cap (a runaway batch): keep what it has, and room for
            // the others.
            self.shared.oversized.fetch_add(1, Ordering::Relaxed);
            if before.is_none() {
                inner.traces.remove(&trace_id);
                inner.order.pop_back();
            }
            return;
        }
        trace.push(span, bytes);
        inner.bytes = inner.bytes - before.unwrap_or(0) + trace.bytes();
        inner.spans += 1;
        let evicted = inner.evict(config, trace_id);
        self.shared.evicted.fetch_add(evicted, Ordering::Relaxed);
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.shared.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The summaries of the traces `query` selects, sorted and limited as it says.
    pub fn list(&self, query: &Query) -> Vec<Summary> {
        let inner = self.lock();
        // Sorted by reference: only the summaries returned are copied.
        let mut found: Vec<&Summary> = inner
            .traces
            .values()
            .map(|t| &t.summary)
            .filter(|s| query.matches(s))
            .collect();
        query.sort_and_limit(&mut found);
        found.into_iter().cloned().collect()
    }

    /// The traces `query` selects, whole, in the list's order.
    pub fn traces(&self, query: &Query) -> Vec<Trace> {
        let summaries = self.list(query);
        let inner = self.lock();
        summaries
            .into_iter()
            .filter_map(|s| inner.traces.get(&s.trace_id).map(Trace::from))
            .collect()
    }

    /// The spans of each trace that started in `since..=until` (shared, not copied), at most
    /// `limit` traces, the most recently seen first: what the aggregates of
    /// [`analytics`] read, without the summaries or a sort.
    pub fn spans_between(
        &self,
        since: Option<SystemTime>,
        until: Option<SystemTime>,
        limit: usize,
    ) -> Vec<Vec<StoredSpan>> {
        let inner = self.lock();
        inner
            .order
            .iter()
            .rev()
            .filter_map(|id| inner.traces.get(id))
            .filter(|t| {
                since.is_none_or(|s| t.summary.start >= s)
                    && until.is_none_or(|u| t.summary.start <= u)
            })
            .take(limit)
            .map(|t| t.spans.clone())
            .collect()
    }

    /// One trace, whole.
    pub fn get(&self, trace_id: TraceId) -> Option<Trace> {
        self.lock().traces.get(&trace_id).map(Trace::from)
    }

    /// What the store holds and what it let go.
    pub fn stats(&self) -> StoreStats {
        let (traces, spans, bytes) = {
            let inner = self.lock();
            (inner.traces.len(), inner.spans, inner.total_bytes())
        };
        StoreStats {
            traces,
            spans,
            bytes,
            max_traces: self.shared.config.max_traces,
            max_bytes: self.shared.config.max_bytes,
            received_spans: self.shared.received.load(Ordering::Relaxed),
            dropped_spans: self.shared.dropped.load(Ordering::Relaxed),
            oversized_spans: self.shared.oversized.load(Ordering::Relaxed),
            evicted_traces: self.shared.evicted.load(Ordering::Relaxed),
        }
    }

    /// Reports the store on `meter`: spans dropped (queue full, oversized), traces evicted,
    /// traces and bytes held ([`semconv::store`](crate::semconv::store)).
    pub fn register_metrics(&self, meter: &opentelemetry::metrics::Meter) {
        use crate::semconv::store as m;
        use opentelemetry::KeyValue;
        let shared = self.shared.clone();
        meter
            .u64_observable_counter(m::SPANS_DROPPED)
            .with_unit("{span}")
            .with_description("Spans the trace store let go")
            .with_callback(move |observer| {
                let full = shared.dropped.load(Ordering::Relaxed);
                observer.observe(full, &[KeyValue::new(m::REASON, "queue_full")]);
                let oversized = shared.oversized.load(Ordering::Relaxed);
                observer.observe(oversized, &[KeyValue::new(m::REASON, "oversized")]);
            })
            .build();
        let shared = self.shared.clone();
        meter
            .u64_observable_counter(m::TRACES_EVICTED)
            .with_unit("{trace}")
            .with_description("Traces the trace store evicted to stay within its caps")
            .with_callback(move |observer| {
                observer.observe(shared.evicted.load(Ordering::Relaxed), &[]);
            })
            .build();
        let store = self.clone();
        meter
            .u64_observable_gauge(m::TRACES)
            .with_unit("{trace}")
            .with_description("Traces the trace store holds")
            .with_callback(move |observer| observer.observe(store.stats().traces as u64, &[]))
            .build();
        let store = self.clone();
        meter
            .u64_observable_gauge(m::BYTES)
            .with_unit("By")
            .with_description("Bytes the trace store holds")
            .with_callback(move |observer| observer.observe(store.stats().bytes as u64, &[]))
            .build();
    }

    /// The bytes held, counted again from every stored span (what the running count must
    /// equal; for tests).
    pub fn recount_bytes(&self) -> usize {
        let inner = self.lock();
        let traces: usize = inner.traces.values().map(StoredTrace::bytes).sum();
        inner.total_bytes() - inner.bytes + traces
    }
}

// === impl Inner ===

impl Inner {
    /// The traces' bytes and the map's and queue's own, by their capacity (a hash map keeps
    /// its buckets after removals and may double under churn: counted as allocated).
    fn total_bytes(&self) -> usize {
        let capacity = self.traces.capacity();
        let buckets = match capacity {
            0 => 0,
            c if c < 8 => (c + 1).next_power_of_two(),
            c => (c * 8 / 7).next_power_of_two(),
        };
        let map = buckets * (size_of::<(TraceId, StoredTrace)>() + 1);
        self.bytes + map + self.order.capacity() * size_of::<TraceId>()
    }

    /// Evicts the oldest traces (never `keep`, the one just added to) until both caps hold;
    /// returns how many went.
    fn evict(&mut self, config: StoreConfig, keep: TraceId) -> u64 {
        let mut evicted = 0;
        while self.traces.len() > config.max_traces || self.total_bytes() > config.max_bytes {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if oldest == keep {
                self.order.push_back(oldest);
                if self.order.len() == 1 {
                    break;
                }
                continue;
            }
            if let Some(trace) = self.traces.remove(&oldest) {
                self.bytes -= trace.bytes();
                self.spans -= trace.spans.len();
                evicted += 1;
            }
        }
        evicted
    }
}

/// One trace as a query returns it: its summary and its spans (shared, not copied).
#[derive(Debug, Clone)]
pub struct Trace {
    /// What the list shows.
    pub summary: Summary,
    /// Its spans in the order they ended.
    pub spans: Vec<StoredSpan>,
}

impl From<&StoredTrace> for Trace {
    fn from(trace: &StoredTrace) -> Self {
        Self {
            summary: trace.summary.clone(),
            spans: trace.spans.clone(),
        }
    }
}

// The span travels by value: boxing it would cost an allocation per span on the caller's
// thread, to save slots of a queue allocated once.
#[allow(clippy::large_enum_variant)]
enum Message {
    Span(SpanData, Arc<str>),
    Flush(SyncSender<()>),
}

/// The [`SpanProcessor`] that feeds a [`TraceStore`] ([`TraceStore::processor`]).
pub struct StoreProcessor {
    sender: Option<SyncSender<Message>>,
    store: TraceStore,
    service: Arc<str>,
}

impl fmt::Debug for StoreProcessor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreProcessor")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

// === impl StoreProcessor ===

impl SpanProcessor for StoreProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        let sent = match &self.sender {
            Some(sender) => sender.try_send(Message::Span(span, self.service.clone())),
            None => Err(TrySendError::Disconnected(Message::Span(
                span,
                self.service.clone(),
            ))),
        };
        if sent.is_err() {
            self.store.shared.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Waits (5 s at most) until every span handed over before the call is in the store.
    fn force_flush(&self) -> OTelSdkResult {
        let Some(sender) = &self.sender else {
            return Ok(());
        };
        let (ack, done) = std::sync::mpsc::sync_channel(1);
        sender
            .send(Message::Flush(ack))
            .map_err(|_| OTelSdkError::AlreadyShutdown)?;
        done.recv_timeout(Duration::from_secs(5))
            .map_err(|_| OTelSdkError::Timeout(Duration::from_secs(5)))
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        self.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        if let Some(name) = resource.get(&opentelemetry::Key::from_static_str("service.name")) {
            self.service = Arc::from(name.as_str().as_ref());
        }
    }
}

/// Two span processors in one: each finished span goes to the first (a clone of it) and to
/// the second. Behind a tail sampler, `Tee(export_queue, store.processor())` makes the store
/// hold exactly what is exported.
#[derive(Debug)]
pub struct Tee<A, B>(pub A, pub B);

impl<A: SpanProcessor, B: SpanProcessor> SpanProcessor for Tee<A, B> {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.0.on_start(span, cx);
        self.1.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        self.0.on_end(span.clone());
        self.1.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        let first = self.0.force_flush();
        let second = self.1.force_flush();
        first.and(second)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let first = self.0.shutdown_with_timeout(timeout);
        let second = self.1.shutdown_with_timeout(timeout);
        first.and(second)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.0.set_resource(resource);
        self.1.set_resource(resource);
    }
}

#[cfg(test)]
mod tests;
