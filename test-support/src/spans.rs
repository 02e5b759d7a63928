//! An in-memory span pipeline whose tracer counts how often each span ends, and lookups
//! over the finished spans.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use opentelemetry::trace::{
    Span, SpanBuilder, SpanContext, SpanId, Status, Tracer, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue, Value};
use opentelemetry_sdk::trace::{
    InMemorySpanExporter, Sampler, SdkTracer, SdkTracerProvider, SpanData,
};

/// Spans finished in a test, exported synchronously to memory.
#[derive(Clone)]
pub struct Recorder {
    /// The provider to hand to the code under test (its spans land in this recorder).
    pub provider: SdkTracerProvider,
    exporter: InMemorySpanExporter,
    ends: Arc<Mutex<HashMap<SpanId, usize>>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    /// Records every span (`Sampler::AlwaysOn`).
    pub fn new() -> Self {
        Self::with_sampler(Sampler::AlwaysOn)
    }

    /// Records what `sampler` samples.
    pub fn with_sampler(sampler: Sampler) -> Self {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_sampler(sampler)
            .with_simple_exporter(exporter.clone())
            .build();
        Self {
            provider,
            exporter,
            ends: Arc::default(),
        }
    }

    /// A tracer for the layers: counts every `end` call per span.
    pub fn tracer(&self) -> CountingTracer {
        CountingTracer {
            inner: self.provider.tracer("test"),
            ends: self.ends.clone(),
        }
    }

    /// A plain SDK tracer (for tracing-opentelemetry).
    pub fn sdk_tracer(&self) -> SdkTracer {
        self.provider.tracer("tracing")
    }

    /// The spans finished so far.
    pub fn spans(&self) -> Vec<SpanData> {
        self.exporter.get_finished_spans().unwrap()
    }

    /// Waits (up to 10 s) until `n` spans have been exported (streams end asynchronously).
    pub async fn wait_for(&self, n: usize) -> Vec<SpanData> {
        self.wait_until(|spans| spans.len() >= n).await
    }

    /// Waits (up to 10 s) until `done` holds for the exported spans; returns them then, or at
    /// the deadline (the caller's assertions say what was missing).
    pub async fn wait_until(&self, done: impl Fn(&[SpanData]) -> bool) -> Vec<SpanData> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let spans = self.spans();
            if done(&spans) || Instant::now() > deadline {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Every span the layers created ended exactly once.
    pub fn assert_each_ended_once(&self) {
        let ends = self.ends.lock().unwrap();
        assert!(!ends.is_empty(), "no span was created");
        for (id, n) in ends.iter() {
            assert_eq!(*n, 1, "span {id} ended {n} times");
        }
    }
}

/// The span named `name`; panics with the names there are when none is.
pub fn span<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    spans
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no span named {name:?} in {:?}", names(spans)))
}

/// The names of `spans`, in order.
pub fn names(spans: &[SpanData]) -> Vec<&str> {
    spans.iter().map(|s| s.name.as_ref()).collect()
}

/// The value of attribute `key`.
pub fn attr<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

/// The value of attribute `key` as a string.
pub fn attr_str(span: &SpanData, key: &str) -> Option<String> {
    attr(span, key).map(|v| v.as_str().into_owned())
}

/// The value of integer attribute `key`; panics when it has another type.
pub fn attr_i64(span: &SpanData, key: &str) -> Option<i64> {
    match attr(span, key)? {
        Value::I64(v) => Some(*v),
        other => panic!("{key} is not an int: {other:?}"),
    }
}

/// How long the span lasted.
pub fn duration(span: &SpanData) -> Duration {
    span.end_time.duration_since(span.start_time).unwrap()
}

/// The span's status is `Error`.
pub fn is_error(span: &SpanData) -> bool {
    matches!(span.status, Status::Error { .. })
}

// === impl CountingTracer ===

/// Wraps the SDK tracer; its spans count `end` calls, so a double end is visible (the SDK
/// itself silently ignores the second one).
#[derive(Clone)]
pub struct CountingTracer {
    inner: SdkTracer,
    ends: Arc<Mutex<HashMap<SpanId, usize>>>,
}

/// A span of [`CountingTracer`].
pub struct CountingSpan {
    inner: opentelemetry_sdk::trace::Span,
    ends: Arc<Mutex<HashMap<SpanId, usize>>>,
}

impl Tracer for CountingTracer {
    type Span = CountingSpan;

    fn build_with_context(&self, builder: SpanBuilder, parent_cx: &Context) -> Self::Span {
        let inner = self.inner.build_with_context(builder, parent_cx);
        self.ends
            .lock()
            .unwrap()
            .entry(inner.span_context().span_id())
            .or_insert(0);
        CountingSpan {
            inner,
            ends: self.ends.clone(),
        }
    }
}

impl Span for CountingSpan {
    fn add_event_with_timestamp<T>(
        &mut self,
        name: T,
        timestamp: SystemTime,
        attributes: Vec<KeyValue>,
    ) where
        T: Into<Cow<'static, str>>,
    {
        self.inner
            .add_event_with_timestamp(name, timestamp, attributes)
    }
    fn span_context(&self) -> &SpanContext {
        self.inner.span_context()
    }
    fn is_recording(&self) -> bool {
        self.inner.is_recording()
    }
    fn set_attribute(&mut self, attribute: KeyValue) {
        self.inner.set_attribute(attribute)
    }
    fn set_status(&mut self, status: Status) {
        self.inner.set_status(status)
    }
    fn update_name<T>(&mut self, new_name: T)
    where
        T: Into<Cow<'static, str>>,
    {
        self.inner.update_name(new_name)
    }
    fn add_link(&mut self, span_context: SpanContext, attributes: Vec<KeyValue>) {
        self.inner.add_link(span_context, attributes)
    }
    fn end_with_timestamp(&mut self, timestamp: SystemTime) {
        *self
            .ends
            .lock()
            .unwrap()
            .entry(self.inner.span_context().span_id())
            .or_insert(0) += 1;
        self.inner.end_with_timestamp(timestamp)
    }
}
