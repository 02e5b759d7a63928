//! A bounded, counted span export queue.
//!
//! The SDK's `BatchSpanProcessor` drops spans when its queue is full but keeps the count to
//! itself. A gateway has to say how many spans it lost, and why: [`ExportQueue`] is the same
//! pipeline — a bounded queue in front of one export thread that sends batches — with every
//! span counted as queued, exported, dropped (queue full) or failed (the exporter said no).
//! The request path only ever pushes onto a vector under a short lock: a slow or dead
//! collector fills the queue and costs counted drops, never latency.

use std::collections::VecDeque;
use std::fmt;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use opentelemetry::Context;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};

/// Counters of an [`ExportQueue`], read by the admin endpoint.
#[derive(Debug, Default)]
pub struct ExportStats {
    /// Spans handed to the queue.
    pub queued: AtomicU64,
    /// Spans the exporter accepted.
    pub exported: AtomicU64,
    /// Spans dropped because the queue was full (or the queue was shut down).
    pub dropped: AtomicU64,
    /// Spans in batches the exporter failed to send.
    pub failed: AtomicU64,
    /// Failed export calls.
    pub export_errors: AtomicU64,
}

impl ExportStats {
    fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// The counters as one line, as the gateway prints it when it stops: `spans: N queued,
    /// N exported, N dropped (queue full), N failed (N failed export calls)`.
    ///
    /// ```
    /// use llmtrace_proxy::export_queue::ExportStats;
    ///
    /// let stats = ExportStats::default();
    /// assert_eq!(
    ///     stats.summary(),
    ///     "spans: 0 queued, 0 exported, 0 dropped (queue full), 0 failed (0 failed export calls)"
    /// );
    /// ```
    pub fn summary(&self) -> String {
        format!(
            "spans: {} queued, {} exported, {} dropped (queue full), {} failed ({} failed export calls)",
            Self::get(&self.queued),
            Self::get(&self.exported),
            Self::get(&self.dropped),
            Self::get(&self.failed),
            Self::get(&self.export_errors),
        )
    }
}

/// Sizes and timing of an [`ExportQueue`].
#[derive(Debug, Clone, Copy)]
pub struct QueueConfig {
    /// Spans held at most; more are dropped and counted (default 8192).
    pub max_queue: usize,
    /// Spans per export call at most (default 512).
    pub max_batch: usize,
    /// A partial batch is sent after this long (default 1 s).
    pub delay: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            max_queue: 8192,
            max_batch: 512,
            delay: Duration::from_secs(1),
        }
    }
}

/// What the export thread is asked besides exporting: the spans go through [`SpanQueue`].
enum Message {
    Flush(mpsc::Sender<OTelSdkResult>),
    Shutdown(mpsc::Sender<OTelSdkResult>),
}

/// Finished spans waiting for the export thread, at most `max` of them.
///
/// A vector under a lock rather than a channel of boxed spans: a span is moved in once, with
/// no allocation of its own, and the export thread takes a batch's worth in one swap. The
/// lock is held for a push or a swap, never while exporting.
struct SpanQueue {
    state: Mutex<QueueState>,
    max: usize,
    /// The capacity a new queue starts with: two batches' worth. The export thread is woken
    /// at one batch's worth, and spans go on arriving until it takes them: the second batch
    /// is room for those, so the queue does not grow (each doubling copies every span
    /// queued: a few hundred instructions per request, callgrind, when it happened).
    capacity: usize,
}

struct QueueState {
    spans: VecDeque<SpanData>,
    /// The export thread has ended: nothing is queued any more.
    closed: bool,
}

impl SpanQueue {
    fn new(max: usize, batch: usize) -> Self {
        let max = max.max(1);
        let capacity = batch.saturating_mul(2).clamp(1, max);
        Self {
            state: Mutex::new(QueueState {
                spans: VecDeque::with_capacity(capacity),
                closed: false,
            }),
            max,
            capacity,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `span`: how many spans are queued with it, or `None` (the span is dropped)
    /// when the queue is full or closed.
    fn push(&self, span: SpanData) -> Option<usize> {
        let mut state = self.lock();
        if state.closed || state.spans.len() >= self.max {
            return None;
        }
        state.spans.push_back(span);
        Some(state.spans.len())
    }

    /// Takes the oldest spans, `limit` at most, in the order they were queued.
    fn take(&self, limit: usize) -> Vec<SpanData> {
        let mut state = self.lock();
        let queued = state.spans.len();
        if queued == 0 {
            Vec::new()
        } else if queued <= limit {
            // A queue filled from empty starts at the start of its buffer, so the vector is
            // the same buffer, not a copy.
            let next = VecDeque::with_capacity(queued.max(self.capacity));
            Vec::from(std::mem::replace(&mut state.spans, next))
        } else {
            state.spans.drain(..limit).collect()
        }
    }

    /// Closes the queue: later spans are dropped. Returns how many were still queued (and
    /// are dropped too).
    fn close(&self) -> usize {
        let mut state = self.lock();
        state.closed = true;
        std::mem::take(&mut state.spans).len()
    }
}

/// A span processor that queues finished spans (bounded) and exports them in batches on its
/// own thread, counting every span ([`ExportStats`]).
///
/// ```
/// use llmtrace_proxy::export_queue::{ExportQueue, QueueConfig};
/// use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
///
/// let exporter = InMemorySpanExporter::default();
/// let queue = ExportQueue::new(exporter.clone(), QueueConfig::default());
/// let stats = queue.stats();
/// let provider = SdkTracerProvider::builder().with_span_processor(queue).build();
/// # use opentelemetry::trace::{Tracer, TracerProvider};
/// provider.tracer("doc").in_span("work", |_| {});
/// provider.force_flush().unwrap();
/// assert_eq!(exporter.get_finished_spans().unwrap().len(), 1);
/// assert_eq!(stats.exported.load(std::sync::atomic::Ordering::Relaxed), 1);
/// ```
pub struct ExportQueue {
    sender: SyncSender<Message>,
    /// The spans: at a full batch's worth queued the thread is woken, else it sleeps until
    /// its next export is due (no wake-up per span).
    spans: Arc<SpanQueue>,
    max_batch: usize,
    /// The export thread, woken with `unpark`.
    thread: std::thread::Thread,
    stats: Arc<ExportStats>,
    resource: Arc<Mutex<Option<Resource>>>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for ExportQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExportQueue")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl ExportQueue {
    /// A queue in front of `exporter`, with its export thread started.
    pub fn new<E: SpanExporter + 'static>(exporter: E, config: QueueConfig) -> Self {
        // Flushes and shutdowns only: a few at a time at most.
        let (sender, receiver) = mpsc::sync_channel(16);
        let stats = Arc::new(ExportStats::default());
        let resource = Arc::new(Mutex::new(None));
        let spans = Arc::new(SpanQueue::new(config.max_queue, config.max_batch));
        let worker = {
            let worker = Worker {
                exporter,
                stats: stats.clone(),
                resource: resource.clone(),
                resource_set: false,
                batch: Vec::new(),
                spans: spans.clone(),
            };
            std::thread::Builder::new()
                .name("llmtrace-export".into())
                .spawn(move || run(worker, receiver, config))
                .expect("spawning the span export thread")
        };
        Self {
            sender,
            spans,
            max_batch: config.max_batch.max(1),
            thread: worker.thread().clone(),
            stats,
            resource,
            worker: Mutex::new(Some(worker)),
        }
    }

    /// The queue's counters.
    pub fn stats(&self) -> Arc<ExportStats> {
        self.stats.clone()
    }

    fn control(
        &self,
        make: impl FnOnce(mpsc::Sender<OTelSdkResult>) -> Message,
        timeout: Duration,
    ) -> OTelSdkResult {
        let deadline = Instant::now() + timeout;
        let (tx, rx) = mpsc::channel();
        // A full channel (flushes piling up behind a collector that hangs) makes this wait
        // for room, but never past the deadline: a shutdown must not outlast its timeout.
        let mut message = make(tx);
        loop {
            match self.sender.try_send(message) {
                Ok(()) => {
                    self.thread.unpark();
                    break;
                }
                Err(TrySendError::Disconnected(_)) => return Err(OTelSdkError::AlreadyShutdown),
                Err(TrySendError::Full(back)) => {
                    if Instant::now() >= deadline {
                        return Err(OTelSdkError::Timeout(timeout));
                    }
                    message = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
        rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .map_err(|_| OTelSdkError::Timeout(timeout))?
    }
}

impl SpanProcessor for ExportQueue {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        ExportStats::add(&self.stats.queued, 1);
        match self.spans.push(span) {
            Some(queued) => {
                if queued == self.max_batch {
                    self.thread.unpark();
                }
            }
            None => ExportStats::add(&self.stats.dropped, 1),
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.control(Message::Flush, Duration::from_secs(30))
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let result = self.control(Message::Shutdown, timeout);
        if result.is_ok() {
            if let Some(worker) = self.worker.lock().unwrap_or_else(|e| e.into_inner()).take() {
                let _ = worker.join();
            }
        }
        result
    }

    fn set_resource(&mut self, resource: &Resource) {
        *self.resource.lock().unwrap_or_else(|e| e.into_inner()) = Some(resource.clone());
    }
}

/// The export thread's state.
struct Worker<E> {
    exporter: E,
    stats: Arc<ExportStats>,
    resource: Arc<Mutex<Option<Resource>>>,
    resource_set: bool,
    batch: Vec<SpanData>,
    spans: Arc<SpanQueue>,
}

impl<E: SpanExporter> Worker<E> {
    /// Exports the batch, if any (the resource first, once).
    fn send(&mut self) -> OTelSdkResult {
        if !self.resource_set {
            if let Some(resource) = self
                .resource
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
            {
                self.exporter.set_resource(&resource);
            }
            self.resource_set = true;
        }
        if self.batch.is_empty() {
            return Ok(());
        }
        let n = self.batch.len();
        let full = std::mem::take(&mut self.batch);
        let result = futures::executor::block_on(self.exporter.export(full));
        match &result {
            Ok(()) => ExportStats::add(&self.stats.exported, n),
            Err(_) => {
                ExportStats::add(&self.stats.failed, n);
                ExportStats::add(&self.stats.export_errors, 1);
            }
        }
        result
    }

    /// Takes the spans queued into batches, each full one sent; the last, partial one stays
    /// for the next call or the deadline.
    fn take_spans(&mut self, max_batch: usize) -> OTelSdkResult {
        let mut result = Ok(());
        loop {
            let room = max_batch - self.batch.len();
            let taken = self.spans.take(room);
            let more = taken.len() == room;
            if self.batch.is_empty() {
                self.batch = taken;
            } else {
                self.batch.extend(taken);
            }
            if self.batch.len() >= max_batch {
                result = result.and(self.send());
            }
            if !more {
                return result;
            }
        }
    }

    /// Takes every span queued and then every message: a flush or a shutdown answered once
    /// everything queued before it is sent. `Break` when the thread is to end.
    fn drain(&mut self, receiver: &Receiver<Message>, max_batch: usize) -> ControlFlow<()> {
        let _ = self.take_spans(max_batch);
        loop {
            match receiver.try_recv() {
                Ok(Message::Flush(reply)) => {
                    let result = self.finish(max_batch);
                    let _ = reply.send(result.and(self.exporter.force_flush()));
                }
                Ok(Message::Shutdown(reply)) => {
                    let result = self.finish(max_batch);
                    self.close();
                    let _ = reply.send(result.and(self.exporter.shutdown()));
                    return ControlFlow::Break(());
                }
                Err(TryRecvError::Empty) => return ControlFlow::Continue(()),
                Err(TryRecvError::Disconnected) => {
                    let _ = self.finish(max_batch);
                    self.close();
                    return ControlFlow::Break(());
                }
            }
        }
    }

    /// Sends every span queued so far, in full batches and a last partial one.
    fn finish(&mut self, max_batch: usize) -> OTelSdkResult {
        self.take_spans(max_batch).and(self.send())
    }

    /// No more spans: those queued since the last look are counted as dropped.
    fn close(&mut self) {
        ExportStats::add(&self.stats.dropped, self.spans.close());
    }
}

/// The export thread: asleep until a batch is due (its delay passed) or woken (a full
/// batch's worth queued, a flush, a shutdown), then takes what is queued.
fn run<E: SpanExporter>(mut worker: Worker<E>, receiver: Receiver<Message>, config: QueueConfig) {
    let max_batch = config.max_batch.max(1);
    let mut deadline = Instant::now() + config.delay;
    loop {
        std::thread::park_timeout(deadline.saturating_duration_since(Instant::now()));
        if worker.drain(&receiver, max_batch).is_break() {
            return;
        }
        if Instant::now() >= deadline {
            let _ = worker.send();
            deadline = Instant::now() + config.delay;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{Tracer, TracerProvider};
    use opentelemetry_sdk::trace::SdkTracerProvider;

    /// An exporter that blocks until released, then fails or succeeds.
    #[derive(Debug, Clone)]
    struct Gate {
        open: Arc<(Mutex<bool>, std::sync::Condvar)>,
        fail: bool,
    }

    impl SpanExporter for Gate {
        async fn export(&self, _batch: Vec<SpanData>) -> OTelSdkResult {
            let (lock, cvar) = &*self.open;
            let mut open = lock.lock().unwrap();
            while !*open {
                open = cvar.wait(open).unwrap();
            }
            if self.fail {
                Err(OTelSdkError::InternalFailure("collector down".into()))
            } else {
                Ok(())
            }
        }
    }

    /// A tracer provider whose spans go through an export queue of these sizes to
    /// `exporter`, and the queue's counters.
    fn provider<E: SpanExporter + 'static>(
        exporter: E,
        max_queue: usize,
        max_batch: usize,
        delay_ms: u64,
    ) -> (SdkTracerProvider, Arc<ExportStats>) {
        let config = QueueConfig {
            max_queue,
            max_batch,
            delay: Duration::from_millis(delay_ms),
        };
        let queue = ExportQueue::new(exporter, config);
        let stats = queue.stats();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(queue)
            .build();
        (provider, stats)
    }

    fn gate(fail: bool) -> Gate {
        Gate {
            open: Arc::new((Mutex::new(false), std::sync::Condvar::new())),
            fail,
        }
    }

    fn release(gate: &Gate) {
        *gate.open.0.lock().unwrap() = true;
        gate.open.1.notify_all();
    }

    #[test]
    fn a_stuck_exporter_costs_counted_drops_and_never_blocks_on_end() {
        let exporter = gate(false);
        let (provider, stats) = provider(exporter.clone(), 10, 5, 10);
        let tracer = provider.tracer("t");
        let started = Instant::now();
        for _ in 0..1000 {
            tracer.in_span("s", |_| {});
        }
        // 1000 spans against a stuck exporter: no waiting on the request path.
        assert!(started.elapsed() < Duration::from_secs(5));
        let dropped = ExportStats::get(&stats.dropped);
        // The worker holds at most one batch (5) and the queue 10: the rest is dropped.
        assert!(dropped >= 1000 - 15, "dropped {dropped}");
        assert_eq!(ExportStats::get(&stats.queued), 1000);
        release(&exporter);
        provider.force_flush().unwrap();
        assert_eq!(
            ExportStats::get(&stats.exported) + dropped,
            1000,
            "every span is exported or counted as dropped"
        );
    }

    #[test]
    fn shutdown_gives_up_at_its_timeout_when_the_exporter_hangs() {
        let exporter = gate(false);
        let (provider, _) = provider(exporter.clone(), 4, 2, 1);
        for _ in 0..20 {
            provider.tracer("t").in_span("s", |_| {});
        }
        let started = Instant::now();
        let result = provider.shutdown_with_timeout(Duration::from_millis(300));
        assert!(result.is_err(), "{result:?}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        release(&exporter);
    }

    /// Spans leave in the order they ended, across batches and takes of the queue, and
    /// every one is counted.
    #[test]
    fn spans_leave_in_order_and_counted() {
        use opentelemetry_sdk::trace::InMemorySpanExporter;
        let exporter = InMemorySpanExporter::default();
        let (provider, stats) = provider(exporter.clone(), 100, 3, 5);
        let tracer = provider.tracer("t");
        let names: Vec<String> = (0..20).map(|i| format!("s{i}")).collect();
        for (i, name) in names.iter().enumerate() {
            tracer.in_span(name.clone(), |_| {});
            if i % 7 == 0 {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        provider.force_flush().unwrap();
        let exported: Vec<String> = exporter
            .get_finished_spans()
            .unwrap()
            .into_iter()
            .map(|span| span.name.into_owned())
            .collect();
        assert_eq!(exported, names);
        assert_eq!(ExportStats::get(&stats.exported), 20);
        assert_eq!(ExportStats::get(&stats.dropped), 0);
        assert_eq!(ExportStats::get(&stats.queued), 20);
        provider.shutdown().unwrap();
    }

    #[test]
    fn failed_exports_are_counted() {
        let exporter = gate(true);
        release(&exporter);
        let queue = ExportQueue::new(exporter, QueueConfig::default());
        let stats = queue.stats();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(queue)
            .build();
        for _ in 0..3 {
            provider.tracer("t").in_span("s", |_| {});
        }
        let _ = provider.force_flush();
        assert_eq!(ExportStats::get(&stats.failed), 3);
        assert_eq!(ExportStats::get(&stats.export_errors), 1);
        assert!(provider.shutdown().is_ok());
    }
}
