//! A bounded, counted span export queue.
//!
//! The SDK's `BatchSpanProcessor` drops spans when its queue is full but keeps the count to
//! itself. A gateway has to say how many spans it lost, and why: [`ExportQueue`] is the same
//! pipeline — a bounded queue in front of one export thread that sends batches — with every
//! span counted as queued, exported, dropped (queue full) or failed (the exporter said no).
//! The request path only ever does a non-blocking `try_send`: a slow or dead collector fills
//! the queue and costs counted drops, never latency.

use std::fmt;
use std::ops::ControlFlow;
use std::sync::atomic::AtomicUsize;
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

enum Message {
    Span(Box<SpanData>),
    Flush(mpsc::Sender<OTelSdkResult>),
    Shutdown(mpsc::Sender<OTelSdkResult>),
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
    /// Spans queued since the export thread last looked: at a full batch's worth the thread
    /// is woken, else it sleeps until its next export is due (no wake-up per span).
    pending: Arc<AtomicUsize>,
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
        let (sender, receiver) = mpsc::sync_channel(config.max_queue.max(1));
        let stats = Arc::new(ExportStats::default());
        let resource = Arc::new(Mutex::new(None));
        let pending = Arc::new(AtomicUsize::new(0));
        let worker = {
            let worker = Worker {
                exporter,
                stats: stats.clone(),
                resource: resource.clone(),
                resource_set: false,
                batch: Vec::with_capacity(config.max_batch),
            };
            let pending = pending.clone();
            std::thread::Builder::new()
                .name("llmtrace-export".into())
                .spawn(move || run(worker, receiver, &pending, config))
                .expect("spawning the span export thread")
        };
        Self {
            sender,
            pending,
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
        // A full queue (a collector that hangs) makes this wait for room, but never past the
        // deadline: a shutdown must not outlast its timeout. Only flush and shutdown wait.
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
        match self.sender.try_send(Message::Span(Box::new(span))) {
            Ok(()) => {
                if self.pending.fetch_add(1, Ordering::Relaxed) + 1 == self.max_batch {
                    self.thread.unpark();
                }
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                ExportStats::add(&self.stats.dropped, 1);
            }
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
        // The next batch's vector starts at this one's size: no regrowing span by span.
        let full = std::mem::replace(&mut self.batch, Vec::with_capacity(n));
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

    /// Takes every message queued: spans into batches (each full one sent), a flush or a
    /// shutdown answered once everything before it is sent. `Break` when the thread is to end.
    fn drain(&mut self, receiver: &Receiver<Message>, max_batch: usize) -> ControlFlow<()> {
        loop {
            match receiver.try_recv() {
                Ok(Message::Span(span)) => {
                    self.batch.push(*span);
                    if self.batch.len() >= max_batch {
                        let _ = self.send();
                    }
                }
                Ok(Message::Flush(reply)) => {
                    let result = self.finish(receiver, max_batch);
                    let _ = reply.send(result.and(self.exporter.force_flush()));
                }
                Ok(Message::Shutdown(reply)) => {
                    let result = self.finish(receiver, max_batch);
                    let _ = reply.send(result.and(self.exporter.shutdown()));
                    return ControlFlow::Break(());
                }
                Err(TryRecvError::Empty) => return ControlFlow::Continue(()),
                Err(TryRecvError::Disconnected) => {
                    let _ = self.send();
                    return ControlFlow::Break(());
                }
            }
        }
    }

    /// Sends every span queued so far, in full batches and a last partial one.
    fn finish(&mut self, receiver: &Receiver<Message>, max_batch: usize) -> OTelSdkResult {
        let mut result = Ok(());
        while let Ok(message) = receiver.try_recv() {
            match message {
                Message::Span(span) => {
                    self.batch.push(*span);
                    if self.batch.len() >= max_batch {
                        result = result.and(self.send());
                    }
                }
                // A second flush or shutdown while draining: answered once this one is done.
                Message::Flush(reply) | Message::Shutdown(reply) => {
                    let _ = reply.send(Ok(()));
                }
            }
        }
        result.and(self.send())
    }
}

/// The export thread: asleep until a batch is due (its delay passed) or woken (a full
/// batch's worth queued, a flush, a shutdown), then takes what is queued.
fn run<E: SpanExporter>(
    mut worker: Worker<E>,
    receiver: Receiver<Message>,
    pending: &AtomicUsize,
    config: QueueConfig,
) {
    let max_batch = config.max_batch.max(1);
    let mut deadline = Instant::now() + config.delay;
    loop {
        std::thread::park_timeout(deadline.saturating_duration_since(Instant::now()));
        pending.store(0, Ordering::Relaxed);
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
        let queue = ExportQueue::new(
            exporter.clone(),
            QueueConfig {
                max_queue: 10,
                max_batch: 5,
                delay: Duration::from_millis(10),
            },
        );
        let stats = queue.stats();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(queue)
            .build();
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
        let queue = ExportQueue::new(
            exporter.clone(),
            QueueConfig {
                max_queue: 4,
                max_batch: 2,
                delay: Duration::from_millis(1),
            },
        );
        let provider = SdkTracerProvider::builder()
            .with_span_processor(queue)
            .build();
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
