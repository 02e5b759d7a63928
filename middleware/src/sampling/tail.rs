//! Tail sampling: [`TailSampler`], a span processor that decides per trace once the trace's
//! local root has ended.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use opentelemetry::metrics::Meter;
use opentelemetry::trace::TraceId;
use opentelemetry::{Context, KeyValue, StringValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanProcessor};
use serde::Deserialize;

use super::policy::{CompiledPolicy, Policy};
use super::{ConfigError, check_ratio, is_local_root, millis, sampled_by_ratio};
use crate::genai::{DEFAULT_MAX_SCAN_BYTES, PromptWatch};
use crate::semconv::sampling as names;

/// The tail sampler's configuration: `[tail]` in the gateway's TOML.
///
/// ```toml
/// [tail]
/// decision_wait_ms = 2000      # after the local root ends, wait this long for late children
/// max_traces = 10000           # traces buffered at most
/// max_spans = 200000           # spans buffered at most
/// policies = [ { error = true }, { duration_ms = 5000 }, { ttft_ms = 2000 }, { aborted = true } ]
/// fallback_ratio = 0.01        # of the traces no policy keeps
/// boost_ratio = 1.0            # of those a Boost names (an SLO burning, a TTFT anomaly)
/// max_kept_per_second = 100    # optional cap on kept traces
/// decision_cache_size = 100000 # decisions remembered for spans that end later
/// orphan_timeout_ms = 600000   # a trace whose root never ends is decided this long after its last span
/// prompt_scan_bytes = 1048576  # prompt text scanned per request by `prompt` policies
/// ```
///
/// Every field has a default (shown above, except: no policies, `fallback_ratio = 0`, no rate
/// limit). See [`Policy`] for the policies.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TailConfig {
    /// How long to wait, after a trace's local root span ends, for children that end after it
    /// (a spawned task, a span ended on another thread). Default 2 s. Streams may last minutes:
    /// the wait starts when the root *ends*, never when the trace starts.
    #[serde(rename = "decision_wait_ms", deserialize_with = "millis::deserialize")]
    pub decision_wait: Duration,
    /// Traces buffered at most (default 10 000). When full, the least recently active trace is
    /// decided at once (evicted).
    pub max_traces: usize,
    /// Spans buffered at most, over all traces (default 200 000); when full, likewise.
    pub max_spans: usize,
    /// Reasons to keep a trace, tried in order; the first that matches gives the reason.
    pub policies: Vec<Policy>,
    /// The fraction of the traces no policy keeps that is kept anyway, by trace id (reason
    /// `fallback`). Default 0.
    pub fallback_ratio: f64,
    /// While a [`Boost`] asks for more (an objective burning its budget, a TTFT anomaly), the
    /// fraction of the traces it names that is kept, by trace id, when no policy keeps them
    /// (default 1: all; 0 ignores boosts). `max_kept_per_second` still applies.
    pub boost_ratio: f64,
    /// At most this many traces kept per second (token bucket, bursts up to one second's
    /// worth); those over are dropped and counted as [`TailStats::rate_limited`]. Default: no
    /// limit.
    pub max_kept_per_second: Option<f64>,
    /// Decisions remembered, so that spans ending after their trace was decided follow it
    /// (default 100 000). A span whose trace's decision was forgotten starts a new fragment.
    pub decision_cache_size: usize,
    /// A trace whose local root has not ended this long after its last span arrived is
    /// decided on what it has (a root that was never sampled, or lives in another process).
    /// Default 10 minutes.
    #[serde(rename = "orphan_timeout_ms", deserialize_with = "millis::deserialize")]
    pub orphan_timeout: Duration,
    /// Bytes of prompt text the [`prompt`](Policy::Prompt) policies scan per request at most
    /// (default 1 MiB): a keyword past them is not found. See [`PromptWatch`].
    pub prompt_scan_bytes: usize,
}

impl Default for TailConfig {
    fn default() -> Self {
        Self {
            decision_wait: Duration::from_secs(2),
            max_traces: 10_000,
            max_spans: 200_000,
            policies: Vec::new(),
            fallback_ratio: 0.0,
            boost_ratio: 1.0,
            max_kept_per_second: None,
            decision_cache_size: 100_000,
            orphan_timeout: Duration::from_secs(600),
            prompt_scan_bytes: DEFAULT_MAX_SCAN_BYTES,
        }
    }
}

impl TailConfig {
    /// Wraps `inner` (the exporting processor) in a tail sampler with this configuration.
    pub fn build<P: SpanProcessor + 'static>(
        &self,
        inner: P,
    ) -> Result<TailSampler<P>, ConfigError> {
        TailSampler::new(inner, self)
    }

    /// What the [`prompt`](Policy::Prompt) policies look for, to run while request bodies
    /// are read; `None` when there is none. The gateway sets it on its GenAI observer; with
    /// the tower [`GenAiLayer`](crate::GenAiLayer), set it yourself:
    ///
    /// ```
    /// use llmtrace::GenAiLayer;
    /// use llmtrace::genai::GenAiConfig;
    /// use llmtrace::sampling::TailConfig;
    ///
    /// let tail: TailConfig = toml::from_str(
    ///     r#"policies = [ { prompt = { keywords = ["refund", "lawsuit"] }, name = "legal" } ]"#,
    /// )
    /// .unwrap();
    /// let watch = tail.prompt_watch().unwrap();
    /// assert_eq!(watch.as_ref().unwrap().ids().collect::<Vec<_>>(), ["legal"]);
    /// let _layer = GenAiLayer::client().with_config(GenAiConfig {
    ///     prompt_watch: watch,
    ///     ..GenAiConfig::default()
    /// });
    /// // ... and `tail.build(exporting_processor)` on the tracer provider.
    /// ```
    ///
    /// Fails as [`build`](Self::build) does on a prompt policy without keywords or regex,
    /// with an empty keyword or an invalid regex, and on two prompt policies with one name.
    pub fn prompt_watch(&self) -> Result<Option<PromptWatch>, ConfigError> {
        let mut matchers = Vec::new();
        self.policies
            .iter()
            .for_each(|p| p.prompt_matchers(&mut matchers));
        if matchers.is_empty() {
            return Ok(None);
        }
        let builder = PromptWatch::builder().max_scan_bytes(self.prompt_scan_bytes);
        matchers
            .into_iter()
            .fold(builder, |b, (id, m)| {
                b.matcher(id, m.keywords.iter().cloned(), m.regex.as_deref())
            })
            .build()
            .map(Some)
            .map_err(|e| ConfigError::new(e.to_string()))
    }
}

/// A snapshot of a [`TailSampler`]'s counters, read without locking.
///
/// Traces: `traces_received = kept + dropped + buffered_traces`, and spans:
/// `spans_received = spans_kept + spans_dropped + buffered_spans`, once the sampler is quiet
/// (a snapshot taken while spans end may be caught between two counters). A "trace" here is
/// what the sampler buffered and decided as one: spans of a trace whose decision was already
/// forgotten form a second one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TailStats {
    /// Traces that reached the buffer.
    pub traces_received: u64,
    /// Sampled spans received (unsampled spans pass through uncounted).
    pub spans_received: u64,
    /// Traces kept (forwarded to the inner processor).
    pub kept: u64,
    /// Traces dropped, including those the rate limit dropped.
    pub dropped: u64,
    /// Traces decided before their local root ended: pushed out by a cap, orphaned, or at
    /// shutdown. Counted in `kept` or `dropped` too.
    pub decided_early: u64,
    /// Traces pushed out of the buffer because `max_traces` or `max_spans` was reached, and
    /// decided then, on the spans they had. Counted in `kept` or `dropped` too.
    pub evicted: u64,
    /// Traces a policy or the fallback would have kept but the rate limit dropped.
    pub rate_limited: u64,
    /// Spans forwarded to the inner processor.
    pub spans_kept: u64,
    /// Spans dropped.
    pub spans_dropped: u64,
    /// Traces buffered now.
    pub buffered_traces: u64,
    /// Spans buffered now.
    pub buffered_spans: u64,
}

#[derive(Debug, Default)]
struct Counters {
    traces_received: AtomicU64,
    spans_received: AtomicU64,
    kept: AtomicU64,
    dropped: AtomicU64,
    decided_early: AtomicU64,
    evicted: AtomicU64,
    rate_limited: AtomicU64,
    spans_kept: AtomicU64,
    spans_dropped: AtomicU64,
    buffered_traces: AtomicU64,
    buffered_spans: AtomicU64,
}

impl Counters {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn snapshot(&self) -> TailStats {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        TailStats {
            traces_received: load(&self.traces_received),
            spans_received: load(&self.spans_received),
            kept: load(&self.kept),
            dropped: load(&self.dropped),
            decided_early: load(&self.decided_early),
            evicted: load(&self.evicted),
            rate_limited: load(&self.rate_limited),
            spans_kept: load(&self.spans_kept),
            spans_dropped: load(&self.spans_dropped),
            buffered_traces: load(&self.buffered_traces),
            buffered_spans: load(&self.buffered_spans),
        }
    }
}

/// A [`SpanProcessor`] that samples whole traces after the fact: it buffers each trace's
/// finished spans until the trace's local root span ends, waits
/// [`decision_wait`](TailConfig::decision_wait) for late children, then keeps the trace
/// (forwarding every span to the inner, exporting processor) or drops it.
///
/// - **Local root**: a span without a parent, or whose parent is remote (`traceparent` from
///   the caller). When several local roots of one trace end in this process (a client span
///   and, through a loopback call, a server span), each pushes the decision back.
/// - **Decision**: the [policies](Policy) in order, over all the trace's buffered spans; the
///   first that matches keeps the trace and names the reason, recorded on its local root as
///   `llmtrace.sampling.reason`. Otherwise the [fallback ratio](TailConfig::fallback_ratio)
///   keeps a fraction (reason `fallback`), decided by trace id like the head sampler. Kept
///   traces then pass the optional rate limit.
/// - **Late spans**: a span whose trace was already decided follows the decision at once
///   (a bounded cache remembers [`decision_cache_size`](TailConfig::decision_cache_size)
///   decisions).
/// - **Memory**: at most [`max_traces`](TailConfig::max_traces) traces and
///   [`max_spans`](TailConfig::max_spans) spans are buffered. When full, the least recently
///   active trace is decided at once on what it has (policies, then the fallback) and counted
///   as [`evicted`](TailStats::evicted) (and [`decided_early`](TailStats::decided_early) if
///   its root had not ended). Nothing leaves the buffer uncounted.
/// - **Timers**: decisions fall due on a background thread (`llmtrace-tail-sampler`, started
///   with the first span) and whenever a span ends. [`force_flush`](SpanProcessor::force_flush)
///   decides every trace whose root has ended without waiting, then flushes the inner
///   processor; [`shutdown`](SpanProcessor::shutdown) decides everything.
///
/// Spans that were not sampled by the head sampler (recorded only) pass straight to the inner
/// processor, which ignores them.
///
/// ```
/// use std::time::Duration;
/// use llmtrace::sampling::{Policy, TailConfig, TailSampler};
/// use opentelemetry_sdk::trace::{BatchSpanProcessor, InMemorySpanExporter, SdkTracerProvider};
///
/// let exporter = InMemorySpanExporter::default();
/// let tail = TailSampler::builder(BatchSpanProcessor::builder(exporter.clone()).build())
///     .policy(Policy::Error)
///     .policy(Policy::Duration(Duration::from_secs(5)))
///     .policy(Policy::attribute("gen_ai.response.finish_reasons", "content_filter"))
///     .fallback_ratio(0.01)
///     .build();
/// let stats = tail.stats_handle();
/// let provider = SdkTracerProvider::builder().with_span_processor(tail).build();
/// // ... later, for a metrics endpoint:
/// let kept = stats.stats().kept;
/// # let _ = kept;
/// # provider.shutdown().unwrap();
/// ```
pub struct TailSampler<P: SpanProcessor + 'static> {
    shared: Arc<Shared<P>>,
    ticker: OnceLock<Ticker>,
}

/// Asks the tail sampler to keep more of some traces for a while: consulted for each trace
/// no policy kept, before the fallback ratio. `llmtrace::slo::SamplingBoost` (feature `slo`)
/// asks while an objective burns its budget or TTFT shifts.
pub trait Boost: Send + Sync {
    /// Why the trace of `spans` should be kept now (its `llmtrace.sampling.reason`, e.g.
    /// `slo_burn`), or `None`. Called under the sampler's lock: keep it cheap.
    fn reason(&self, spans: &[SpanData]) -> Option<&'static str>;
}

/// Where a [`Boost`] is attached, after the sampler was built.
type BoostSlot = Arc<OnceLock<Arc<dyn Boost>>>;

/// Reads a [`TailSampler`]'s counters, and attaches a [`Boost`] to it, after the sampler was
/// moved into a tracer provider.
#[derive(Clone)]
pub struct TailStatsHandle {
    counters: Arc<Counters>,
    boost: BoostSlot,
}

impl fmt::Debug for TailStatsHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TailStatsHandle")
            .field(&self.counters.snapshot())
            .finish()
    }
}

impl TailStatsHandle {
    /// Attaches `boost` (once; `false` when one already was).
    pub fn set_boost(&self, boost: Arc<dyn Boost>) -> bool {
        self.boost.set(boost).is_ok()
    }

    /// The counters now.
    pub fn stats(&self) -> TailStats {
        self.counters.snapshot()
    }

    /// Registers the counters as OpenTelemetry instruments on `meter`, read at each
    /// collection: `llmtrace.sampling.traces` and `llmtrace.sampling.spans` (counters by
    /// `llmtrace.sampling.decision` = `kept` | `dropped`), `llmtrace.sampling.decided_early`,
    /// `llmtrace.sampling.evicted`, `llmtrace.sampling.rate_limited` (counters), and
    /// `llmtrace.sampling.buffered.traces`, `llmtrace.sampling.buffered.spans` (gauges).
    pub fn register_metrics(&self, meter: &Meter) {
        use names::metrics as m;
        type Read = fn(&Counters) -> &AtomicU64;
        let by_decision = |name: &'static str, unit: &'static str, kept: Read, dropped: Read| {
            let c = self.counters.clone();
            meter
                .u64_observable_counter(name)
                .with_unit(unit)
                .with_description(match name {
                    m::TRACES => "Traces decided by the tail sampler",
                    _ => "Spans forwarded or dropped by the tail sampler",
                })
                .with_callback(move |observer| {
                    let kept = kept(&c).load(Ordering::Relaxed);
                    observer.observe(kept, &[KeyValue::new(m::DECISION, "kept")]);
                    let dropped = dropped(&c).load(Ordering::Relaxed);
                    observer.observe(dropped, &[KeyValue::new(m::DECISION, "dropped")]);
                })
                .build();
        };
        by_decision(m::TRACES, "{trace}", |c| &c.kept, |c| &c.dropped);
        by_decision(m::SPANS, "{span}", |c| &c.spans_kept, |c| &c.spans_dropped);

        let counter = |name: &'static str, description: &'static str, read: Read| {
            let c = self.counters.clone();
            meter
                .u64_observable_counter(name)
                .with_unit("{trace}")
                .with_description(description)
                .with_callback(move |observer| {
                    observer.observe(read(&c).load(Ordering::Relaxed), &[]);
                })
                .build();
        };
        counter(
            m::DECIDED_EARLY,
            "Traces decided before their local root span ended",
            |c| &c.decided_early,
        );
        counter(
            m::EVICTED,
            "Traces pushed out of the tail sampler's buffer by its caps",
            |c| &c.evicted,
        );
        counter(
            m::RATE_LIMITED,
            "Traces dropped by the tail sampler's rate limit",
            |c| &c.rate_limited,
        );

        let gauge =
            |name: &'static str, unit: &'static str, description: &'static str, read: Read| {
                let c = self.counters.clone();
                meter
                    .u64_observable_gauge(name)
                    .with_unit(unit)
                    .with_description(description)
                    .with_callback(move |observer| {
                        observer.observe(read(&c).load(Ordering::Relaxed), &[]);
                    })
                    .build();
            };
        gauge(
            m::BUFFERED_TRACES,
            "{trace}",
            "Traces buffered by the tail sampler",
            |c| &c.buffered_traces,
        );
        gauge(
            m::BUFFERED_SPANS,
            "{span}",
            "Spans buffered by the tail sampler",
            |c| &c.buffered_spans,
        );
    }
}

struct Shared<P> {
    inner: P,
    config: TailConfig,
    policies: Vec<CompiledPolicy>,
    fallback_reason: StringValue,
    boost: BoostSlot,
    state: Mutex<State>,
    counters: Arc<Counters>,
    is_shutdown: AtomicBool,
}

#[derive(Default)]
struct State {
    pending: HashMap<TraceId, Pending>,
    /// Pending traces by their last activity: the first is the one to evict.
    by_activity: BTreeMap<u64, TraceId>,
    next_activity: u64,
    /// (deadline, trace) of traces whose local root ended, in deadline order. An entry whose
    /// trace has a later deadline or was decided is stale and skipped.
    due: VecDeque<(Instant, TraceId)>,
    buffered_spans: usize,
    decided: HashMap<TraceId, Decision>,
    decided_order: VecDeque<TraceId>,
    bucket: Option<TokenBucket>,
}

struct Pending {
    activity: u64,
    last_seen: Instant,
    /// Set when a local root ended: decide at this instant.
    deadline: Option<Instant>,
    spans: Vec<SpanData>,
}

/// `Some(reason)` when the trace was kept.
#[derive(Clone)]
struct Decision(Option<StringValue>);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Cause {
    /// The root ended and the wait is over (or cut short by a flush).
    Due,
    /// Pushed out by a cap.
    Evicted,
    /// No span for `orphan_timeout`, root not ended.
    Orphaned,
    /// The processor shuts down.
    Shutdown,
}

struct TokenBucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(rate: f64, now: Instant) -> Self {
        let capacity = rate.max(1.0);
        Self {
            rate,
            capacity,
            tokens: capacity,
            last: now,
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

struct Ticker {
    signal: Arc<Signal>,
    handle: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Default)]
struct Signal {
    stop: Mutex<bool>,
    wake: Condvar,
}

impl Signal {
    fn stop(&self) {
        *self.stop.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.wake.notify_all();
    }
}

// === impl TailSampler ===

impl<P: SpanProcessor + 'static> TailSampler<P> {
    /// Wraps `inner` with `config`, or says what is wrong with it.
    pub fn new(inner: P, config: &TailConfig) -> Result<Self, ConfigError> {
        check_ratio("fallback_ratio", config.fallback_ratio)?;
        check_ratio("boost_ratio", config.boost_ratio)?;
        if config.max_traces == 0 || config.max_spans == 0 {
            return Err(ConfigError::new(
                "max_traces and max_spans must be at least 1",
            ));
        }
        if let Some(rate) = config.max_kept_per_second {
            if !(rate.is_finite() && rate > 0.0) {
                return Err(ConfigError::new(format!(
                    "max_kept_per_second must be a positive number, got {rate}"
                )));
            }
        }
        let policies = config
            .policies
            .iter()
            .enumerate()
            .map(|(i, p)| {
                CompiledPolicy::new(p).map_err(|e| ConfigError::new(format!("policy {i}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Prompt policies must not share a matcher id.
        config.prompt_watch()?;
        let now = Instant::now();
        Ok(Self {
            shared: Arc::new(Shared {
                inner,
                config: config.clone(),
                policies,
                fallback_reason: StringValue::from(names::REASON_FALLBACK),
                boost: Arc::default(),
                state: Mutex::new(State {
                    bucket: config.max_kept_per_second.map(|r| TokenBucket::new(r, now)),
                    ..State::default()
                }),
                counters: Arc::default(),
                is_shutdown: AtomicBool::new(false),
            }),
            ticker: OnceLock::new(),
        })
    }

    /// A builder over `inner`, starting from [`TailConfig::default`].
    pub fn builder(inner: P) -> TailSamplerBuilder<P> {
        TailSamplerBuilder {
            inner,
            config: TailConfig::default(),
        }
    }

    /// The counters now.
    pub fn stats(&self) -> TailStats {
        self.shared.counters.snapshot()
    }

    /// A handle on the counters that stays usable after the sampler is moved into a tracer
    /// provider: for a metrics endpoint, or to register them as instruments
    /// ([`TailStatsHandle::register_metrics`]).
    pub fn stats_handle(&self) -> TailStatsHandle {
        TailStatsHandle {
            counters: self.shared.counters.clone(),
            boost: self.shared.boost.clone(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &TailConfig {
        &self.shared.config
    }

    /// The wrapped processor.
    pub fn inner(&self) -> &P {
        &self.shared.inner
    }

    fn ensure_ticker(&self) {
        self.ticker.get_or_init(|| {
            let signal = Arc::new(Signal::default());
            let weak = Arc::downgrade(&self.shared);
            // Decisions fall due a quarter of the wait late at most; with no wait they are
            // made as roots end, and the thread only looks for orphans.
            let wait = self.shared.config.decision_wait;
            let period = if wait.is_zero() {
                Duration::from_millis(250)
            } else {
                (wait / 4).clamp(Duration::from_millis(5), Duration::from_millis(250))
            };
            let thread_signal = signal.clone();
            let handle = std::thread::Builder::new()
                .name("llmtrace-tail-sampler".into())
                .spawn(move || tick_loop(weak, thread_signal, period))
                .ok();
            Ticker {
                signal,
                handle: Mutex::new(handle),
            }
        });
    }

    fn stop_ticker(&self) {
        if let Some(ticker) = self.ticker.get() {
            ticker.signal.stop();
            let handle = ticker
                .handle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if let Some(handle) = handle {
                let _ = handle.join();
            }
        }
    }
}

fn tick_loop<P: SpanProcessor>(shared: Weak<Shared<P>>, signal: Arc<Signal>, period: Duration) {
    loop {
        {
            let stop = signal.stop.lock().unwrap_or_else(|e| e.into_inner());
            if *stop {
                return;
            }
            let (stop, _) = signal
                .wake
                .wait_timeout(stop, period)
                .unwrap_or_else(|e| e.into_inner());
            if *stop {
                return;
            }
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let mut out = Vec::new();
        {
            let mut state = shared.lock();
            shared.run_due(&mut state, Instant::now(), &mut out);
            shared.publish(&state);
        }
        shared.forward(out);
    }
}

impl<P: SpanProcessor + 'static> fmt::Debug for TailSampler<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TailSampler")
            .field("config", &self.shared.config)
            .field("stats", &self.stats())
            .field("inner", &self.shared.inner)
            .finish()
    }
}

impl<P: SpanProcessor + 'static> Drop for TailSampler<P> {
    fn drop(&mut self) {
        if let Some(ticker) = self.ticker.get() {
            ticker.signal.stop();
        }
    }
}

impl<P: SpanProcessor + 'static> SpanProcessor for TailSampler<P> {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.shared.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        let shared = &*self.shared;
        if !span.span_context.is_sampled() || shared.is_shutdown.load(Ordering::Relaxed) {
            shared.inner.on_end(span);
            return;
        }
        self.ensure_ticker();
        let mut out = Vec::new();
        {
            let mut state = shared.lock();
            let now = Instant::now();
            shared.accept(&mut state, span, now, &mut out);
            shared.run_due(&mut state, now, &mut out);
            shared.publish(&state);
        }
        shared.forward(out);
    }

    fn force_flush(&self) -> OTelSdkResult {
        let shared = &*self.shared;
        let mut out = Vec::new();
        {
            let mut state = shared.lock();
            let now = Instant::now();
            while let Some((deadline, trace_id)) = state.due.pop_front() {
                if state.pending.get(&trace_id).and_then(|p| p.deadline) == Some(deadline) {
                    shared.decide(&mut state, trace_id, Cause::Due, now, &mut out);
                }
            }
            shared.run_due(&mut state, now, &mut out);
            shared.publish(&state);
        }
        shared.forward(out);
        shared.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let shared = &*self.shared;
        self.stop_ticker();
        let mut out = Vec::new();
        {
            let mut state = shared.lock();
            let now = Instant::now();
            let ids: Vec<TraceId> = state.by_activity.values().copied().collect();
            for trace_id in ids {
                shared.decide(&mut state, trace_id, Cause::Shutdown, now, &mut out);
            }
            state.due.clear();
            shared.publish(&state);
            shared.is_shutdown.store(true, Ordering::Relaxed);
        }
        shared.forward(out);
        shared.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        // The background thread starts with the first span, after the provider has set the
        // resource, so the sampler is not shared yet.
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.inner.set_resource(resource);
        }
    }
}

// === impl Shared ===

impl<P: SpanProcessor> Shared<P> {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent enough state: keep sampling.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn forward(&self, spans: Vec<SpanData>) {
        for span in spans {
            self.inner.on_end(span);
        }
    }

    fn publish(&self, state: &State) {
        let c = &self.counters;
        c.buffered_traces
            .store(state.pending.len() as u64, Ordering::Relaxed);
        c.buffered_spans
            .store(state.buffered_spans as u64, Ordering::Relaxed);
    }

    /// Buffers `span`, or follows its trace's decision.
    fn accept(&self, state: &mut State, span: SpanData, now: Instant, out: &mut Vec<SpanData>) {
        Counters::add(&self.counters.spans_received, 1);
        let trace_id = span.span_context.trace_id();
        if let Some(decision) = state.decided.get(&trace_id).cloned() {
            self.follow(&decision, span, out);
            return;
        }
        // Make room first; the trace of this span may be the one decided to make room.
        let config = &self.config;
        while (!state.pending.contains_key(&trace_id) && state.pending.len() >= config.max_traces)
            || state.buffered_spans >= config.max_spans
        {
            let Some((_, &oldest)) = state.by_activity.first_key_value() else {
                break;
            };
            self.decide(state, oldest, Cause::Evicted, now, out);
        }
        if let Some(decision) = state.decided.get(&trace_id).cloned() {
            self.follow(&decision, span, out);
            return;
        }

        let activity = state.next_activity;
        state.next_activity += 1;
        let is_root = is_local_root(&span);
        let pending = match state.pending.get_mut(&trace_id) {
            Some(pending) => {
                let previous = std::mem::replace(&mut pending.activity, activity);
                state.by_activity.remove(&previous);
                pending
            }
            None => {
                Counters::add(&self.counters.traces_received, 1);
                state.pending.entry(trace_id).or_insert(Pending {
                    activity,
                    last_seen: now,
                    deadline: None,
                    spans: Vec::new(),
                })
            }
        };
        pending.last_seen = now;
        pending.spans.push(span);
        state.by_activity.insert(activity, trace_id);
        state.buffered_spans += 1;
        if is_root {
            if config.decision_wait.is_zero() {
                self.decide(state, trace_id, Cause::Due, now, out);
            } else {
                let deadline = now + config.decision_wait;
                if let Some(pending) = state.pending.get_mut(&trace_id) {
                    pending.deadline = Some(deadline);
                }
                state.due.push_back((deadline, trace_id));
            }
        }
    }

    /// Decides the traces whose wait is over and those orphaned.
    fn run_due(&self, state: &mut State, now: Instant, out: &mut Vec<SpanData>) {
        while let Some(&(deadline, trace_id)) = state.due.front() {
            if deadline > now {
                break;
            }
            state.due.pop_front();
            if state.pending.get(&trace_id).and_then(|p| p.deadline) == Some(deadline) {
                self.decide(state, trace_id, Cause::Due, now, out);
            }
        }
        while let Some((_, &trace_id)) = state.by_activity.first_key_value() {
            let idle = state.pending.get(&trace_id).is_some_and(|p| {
                now.saturating_duration_since(p.last_seen) >= self.config.orphan_timeout
            });
            if !idle {
                break;
            }
            self.decide(state, trace_id, Cause::Orphaned, now, out);
        }
    }

    /// Keeps or drops a buffered trace, remembers the decision, and counts it.
    fn decide(
        &self,
        state: &mut State,
        trace_id: TraceId,
        cause: Cause,
        now: Instant,
        out: &mut Vec<SpanData>,
    ) {
        let Some(pending) = state.pending.remove(&trace_id) else {
            return;
        };
        state.by_activity.remove(&pending.activity);
        state.buffered_spans -= pending.spans.len();
        let c = &self.counters;
        if pending.deadline.is_none() && cause != Cause::Due {
            Counters::add(&c.decided_early, 1);
        }
        if cause == Cause::Evicted {
            Counters::add(&c.evicted, 1);
        }

        let wanted = self
            .policies
            .iter()
            .find_map(|policy| policy.evaluate(trace_id, &pending.spans))
            .or_else(|| {
                let reason = self.boost.get()?.reason(&pending.spans)?;
                sampled_by_ratio(trace_id, self.config.boost_ratio)
                    .then(|| StringValue::from(reason))
            })
            .or_else(|| {
                sampled_by_ratio(trace_id, self.config.fallback_ratio)
                    .then(|| self.fallback_reason.clone())
            });
        let reason = match (wanted, state.bucket.as_mut()) {
            (Some(reason), Some(bucket)) => {
                if bucket.take(now) {
                    Some(reason)
                } else {
                    Counters::add(&c.rate_limited, 1);
                    None
                }
            }
            (wanted, _) => wanted,
        };
        let n = pending.spans.len() as u64;
        match &reason {
            Some(reason) => {
                Counters::add(&c.kept, 1);
                Counters::add(&c.spans_kept, n);
                for mut span in pending.spans {
                    if is_local_root(&span) {
                        span.attributes
                            .push(KeyValue::new(names::REASON, reason.clone()));
                    }
                    out.push(span);
                }
            }
            None => {
                Counters::add(&c.dropped, 1);
                Counters::add(&c.spans_dropped, n);
            }
        }
        self.remember(state, trace_id, Decision(reason));
    }

    fn remember(&self, state: &mut State, trace_id: TraceId, decision: Decision) {
        let cap = self.config.decision_cache_size;
        if cap == 0 {
            return;
        }
        while state.decided_order.len() >= cap {
            if let Some(old) = state.decided_order.pop_front() {
                state.decided.remove(&old);
            }
        }
        if state.decided.insert(trace_id, decision).is_none() {
            state.decided_order.push_back(trace_id);
        }
    }

    /// A span of a decided trace: forwarded (a late root gets the reason) or dropped.
    fn follow(&self, decision: &Decision, mut span: SpanData, out: &mut Vec<SpanData>) {
        match &decision.0 {
            Some(reason) => {
                if is_local_root(&span) {
                    span.attributes
                        .push(KeyValue::new(names::REASON, reason.clone()));
                }
                Counters::add(&self.counters.spans_kept, 1);
                out.push(span);
            }
            None => Counters::add(&self.counters.spans_dropped, 1),
        }
    }
}

/// Builds a [`TailSampler`] from Rust. See [`TailSampler::builder`]; the fields are those of
/// [`TailConfig`].
pub struct TailSamplerBuilder<P> {
    inner: P,
    config: TailConfig,
}

impl<P: fmt::Debug> fmt::Debug for TailSamplerBuilder<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TailSamplerBuilder")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish()
    }
}

impl<P: SpanProcessor + 'static> TailSamplerBuilder<P> {
    /// Adds a policy, tried after those added before.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.config.policies.push(policy);
        self
    }

    /// The wait for late children after a local root ends (default 2 s).
    pub fn decision_wait(mut self, wait: Duration) -> Self {
        self.config.decision_wait = wait;
        self
    }

    /// Traces buffered at most (default 10 000).
    pub fn max_traces(mut self, max: usize) -> Self {
        self.config.max_traces = max;
        self
    }

    /// Spans buffered at most (default 200 000).
    pub fn max_spans(mut self, max: usize) -> Self {
        self.config.max_spans = max;
        self
    }

    /// The fraction of the other traces kept anyway (default 0).
    pub fn fallback_ratio(mut self, ratio: f64) -> Self {
        self.config.fallback_ratio = ratio;
        self
    }

    /// At most this many kept traces per second (default: no limit).
    pub fn max_kept_per_second(mut self, rate: f64) -> Self {
        self.config.max_kept_per_second = Some(rate);
        self
    }

    /// Decisions remembered for late spans (default 100 000).
    pub fn decision_cache_size(mut self, size: usize) -> Self {
        self.config.decision_cache_size = size;
        self
    }

    /// Decide a trace whose root has not ended this long after its last span (default 10 min).
    pub fn orphan_timeout(mut self, timeout: Duration) -> Self {
        self.config.orphan_timeout = timeout;
        self
    }

    /// Builds the sampler.
    ///
    /// # Panics
    ///
    /// When the configuration is invalid (a ratio outside 0 to 1, a zero cap, an empty `any`);
    /// [`TailSampler::new`] returns the error instead.
    pub fn build(self) -> TailSampler<P> {
        match TailSampler::new(self.inner, &self.config) {
            Ok(sampler) => sampler,
            Err(error) => panic!("invalid tail sampling configuration: {error}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::Value;
    use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceState};
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};
    use std::time::SystemTime;

    /// Collects what the tail sampler forwards.
    #[derive(Debug, Default, Clone)]
    struct Collect(Arc<Mutex<Vec<SpanData>>>);

    impl Collect {
        fn spans(&self) -> Vec<SpanData> {
            self.0.lock().unwrap().clone()
        }
    }

    impl SpanProcessor for Collect {
        fn on_start(&self, _: &mut Span, _: &Context) {}
        fn on_end(&self, span: SpanData) {
            self.0.lock().unwrap().push(span);
        }
        fn force_flush(&self) -> OTelSdkResult {
            Ok(())
        }
        fn shutdown_with_timeout(&self, _: Duration) -> OTelSdkResult {
            Ok(())
        }
    }

    fn tid(i: u64) -> TraceId {
        TraceId::from(u128::from(i).wrapping_mul(0x2545_f491_4f6c_dd1d_9e37_79b9_7f4a_7c15) | 1)
    }

    fn span(trace: u64, id: u64, parent: u64, attributes: Vec<KeyValue>) -> SpanData {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        SpanData {
            span_context: SpanContext::new(
                tid(trace),
                SpanId::from(id),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: SpanId::from(parent),
            parent_span_is_remote: false,
            span_kind: SpanKind::Server,
            name: format!("span {id}").into(),
            start_time: start,
            end_time: start + Duration::from_millis(10),
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: Default::default(),
        }
    }

    fn failed(mut s: SpanData) -> SpanData {
        s.status = Status::error("boom");
        s
    }

    fn reason(s: &SpanData) -> Option<String> {
        s.attributes
            .iter()
            .find(|kv| kv.key.as_str() == names::REASON)
            .map(|kv| kv.value.as_str().into_owned())
    }

    fn sampler(
        builder: impl FnOnce(TailSamplerBuilder<Collect>) -> TailSamplerBuilder<Collect>,
    ) -> (TailSampler<Collect>, Collect) {
        let collect = Collect::default();
        let tail = builder(TailSampler::builder(collect.clone())).build();
        (tail, collect)
    }

    #[test]
    fn keeps_whole_failed_traces_and_late_children_follow() {
        let (tail, out) = sampler(|b| b.policy(Policy::Error).decision_wait(Duration::ZERO));
        // Trace 1: a failed child, then the root: kept.
        tail.on_end(failed(span(1, 2, 1, vec![])));
        assert!(
            out.spans().is_empty(),
            "nothing is decided before the root ends"
        );
        tail.on_end(span(1, 1, 0, vec![]));
        let spans = out.spans();
        assert_eq!(spans.len(), 2);
        let root = spans
            .iter()
            .find(|s| s.span_context.span_id() == SpanId::from(1))
            .unwrap();
        assert_eq!(reason(root).as_deref(), Some("error"));
        assert_eq!(reason(&spans[0]), None, "the reason is on the root only");
        // A late child follows the decision.
        tail.on_end(span(1, 3, 1, vec![]));
        assert_eq!(out.spans().len(), 3);

        // Trace 2: fine: dropped, and its late child too.
        tail.on_end(span(2, 2, 1, vec![]));
        tail.on_end(span(2, 1, 0, vec![]));
        tail.on_end(span(2, 3, 1, vec![]));
        assert_eq!(out.spans().len(), 3);
        let stats = tail.stats();
        assert_eq!((stats.kept, stats.dropped), (1, 1));
        assert_eq!((stats.spans_kept, stats.spans_dropped), (3, 3));
        assert_eq!((stats.buffered_traces, stats.buffered_spans), (0, 0));
        assert_eq!(stats.decided_early, 0);
    }

    #[test]
    fn waits_for_late_children_then_decides() {
        let (tail, out) = sampler(|b| {
            b.policy(Policy::Error)
                .fallback_ratio(1.0)
                .decision_wait(Duration::from_secs(3600))
        });
        tail.on_end(span(1, 1, 0, vec![]));
        tail.on_end(failed(span(1, 2, 1, vec![])));
        assert!(out.spans().is_empty(), "still waiting");
        assert_eq!(tail.stats().buffered_spans, 2);
        tail.force_flush().unwrap();
        let spans = out.spans();
        assert_eq!(spans.len(), 2);
        let root = spans
            .iter()
            .find(|s| s.parent_span_id == SpanId::INVALID)
            .unwrap();
        // The late child made it an error trace.
        assert_eq!(reason(root).as_deref(), Some("error"));
    }

    #[test]
    fn the_background_thread_decides_when_the_wait_is_over() {
        let (tail, out) = sampler(|b| {
            b.fallback_ratio(1.0)
                .decision_wait(Duration::from_millis(20))
        });
        tail.on_end(span(1, 1, 0, vec![]));
        let deadline = Instant::now() + Duration::from_secs(30);
        while out.spans().is_empty() {
            assert!(Instant::now() < deadline, "never decided");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(reason(&out.spans()[0]).as_deref(), Some("fallback"));
        tail.shutdown().unwrap();
    }

    #[test]
    fn remote_parents_make_local_roots() {
        let (tail, out) = sampler(|b| b.fallback_ratio(1.0).decision_wait(Duration::ZERO));
        let mut server = span(1, 5, 4, vec![]);
        server.parent_span_is_remote = true;
        tail.on_end(span(1, 6, 5, vec![]));
        assert!(out.spans().is_empty());
        tail.on_end(server);
        assert_eq!(out.spans().len(), 2);
    }

    #[test]
    fn caps_evict_the_least_recently_active_trace() {
        let (tail, out) = sampler(|b| {
            b.policy(Policy::attribute("keep", "yes"))
                .max_traces(2)
                .max_spans(3)
                .decision_wait(Duration::ZERO)
        });
        tail.on_end(span(1, 2, 1, vec![KeyValue::new("keep", "yes")]));
        tail.on_end(span(2, 2, 1, vec![]));
        // A third trace pushes out trace 1, decided on what it has: kept by its attribute.
        tail.on_end(span(3, 2, 1, vec![]));
        let stats = tail.stats();
        assert_eq!((stats.evicted, stats.decided_early, stats.kept), (1, 1, 1));
        assert_eq!(out.spans().len(), 1);
        // Its root follows the decision and gets the reason.
        tail.on_end(span(1, 1, 0, vec![]));
        assert_eq!(reason(&out.spans()[1]).as_deref(), Some("attribute:keep"));
        // The span cap: trace 3 gets two more spans; 3 buffered is the cap, so trace 2 goes.
        tail.on_end(span(3, 3, 1, vec![]));
        tail.on_end(span(3, 4, 1, vec![]));
        let stats = tail.stats();
        assert_eq!(stats.evicted, 2);
        assert!(stats.buffered_spans <= 3 && stats.buffered_traces <= 2);
        assert_eq!(stats.dropped, 1);
        assert_eq!(
            stats.traces_received,
            stats.kept + stats.dropped + stats.buffered_traces
        );
        assert_eq!(
            stats.spans_received,
            stats.spans_kept + stats.spans_dropped + stats.buffered_spans
        );
        drop(out);
    }

    #[test]
    fn rate_limit_caps_kept_traces() {
        let (tail, out) = sampler(|b| {
            b.policy(Policy::Error)
                .max_kept_per_second(5.0)
                .decision_wait(Duration::ZERO)
        });
        let start = Instant::now();
        for i in 0..200 {
            tail.on_end(failed(span(i, 1, 0, vec![])));
        }
        let elapsed = start.elapsed().as_secs_f64();
        let stats = tail.stats();
        let allowed = 5 + (elapsed * 5.0).ceil() as u64;
        assert!(
            stats.kept >= 5 && stats.kept <= allowed,
            "{stats:?} in {elapsed}s"
        );
        assert_eq!(stats.rate_limited, 200 - stats.kept);
        assert_eq!(out.spans().len() as u64, stats.kept);
    }

    #[test]
    fn orphans_are_decided_on_what_they_have() {
        let (tail, out) = sampler(|b| {
            b.policy(Policy::Error)
                .orphan_timeout(Duration::ZERO)
                .decision_wait(Duration::from_secs(3600))
        });
        tail.on_end(failed(span(1, 2, 1, vec![])));
        let stats = tail.stats();
        assert_eq!((stats.kept, stats.decided_early, stats.evicted), (1, 1, 0));
        assert_eq!(out.spans().len(), 1);
    }

    #[test]
    fn shutdown_decides_everything_and_unsampled_spans_pass() {
        let (tail, out) = sampler(|b| {
            b.fallback_ratio(1.0)
                .decision_wait(Duration::from_secs(3600))
        });
        tail.on_end(span(1, 2, 1, vec![]));
        tail.on_end(span(2, 1, 0, vec![]));
        let mut unsampled = span(3, 1, 0, vec![]);
        unsampled.span_context = SpanContext::new(
            tid(3),
            SpanId::from(1),
            TraceFlags::default(),
            false,
            TraceState::default(),
        );
        tail.on_end(unsampled);
        assert_eq!(
            out.spans().len(),
            1,
            "the unsampled span went straight through"
        );
        tail.shutdown().unwrap();
        let stats = tail.stats();
        assert_eq!(
            (stats.kept, stats.decided_early, stats.buffered_traces),
            (2, 1, 0)
        );
        assert_eq!(out.spans().len(), 3);
        // After shutdown, spans go to the inner processor (which ignores them once shut down).
        tail.on_end(span(4, 1, 0, vec![]));
        assert_eq!(tail.stats().spans_received, 2);
    }

    #[test]
    fn reasons_follow_policy_order() {
        let (tail, out) = sampler(|b| {
            b.policy(Policy::Aborted)
                .policy(Policy::Error)
                .decision_wait(Duration::ZERO)
        });
        let aborted = vec![
            KeyValue::new("llmtrace.aborted", true),
            KeyValue::new("error.type", "aborted"),
        ];
        tail.on_end(failed(span(1, 1, 0, aborted)));
        tail.on_end(failed(span(2, 1, 0, vec![])));
        let reasons: Vec<_> = out.spans().iter().map(reason).collect();
        assert_eq!(reasons, [Some("aborted".into()), Some("error".into())]);
        assert!(matches!(
            out.spans()[0].attributes.last().map(|kv| &kv.value),
            Some(Value::String(_))
        ));
    }

    #[test]
    fn config_from_toml() {
        let config: TailConfig = toml::from_str(
            r#"
            decision_wait_ms = 2000
            max_traces = 10000
            max_spans = 200000
            policies = [ { error = true }, { duration_ms = 5000 }, { ttft_ms = 2000 },
                         { attribute = { key = "gen_ai.response.finish_reasons", value = "content_filter" } },
                         { aborted = true } ]
            fallback_ratio = 0.01
            max_kept_per_second = 100
            "#,
        )
        .unwrap();
        assert_eq!(config.decision_wait, Duration::from_secs(2));
        assert_eq!(config.policies.len(), 5);
        assert_eq!(config.max_kept_per_second, Some(100.0));
        assert_eq!(config.orphan_timeout, TailConfig::default().orphan_timeout);
        config.build(Collect::default()).unwrap();
        for bad in [
            "fallback_ratio = 2.0",
            "max_traces = 0",
            "max_kept_per_second = -1",
            "policies = [ { any = [] } ]",
        ] {
            let config: TailConfig = toml::from_str(bad).unwrap();
            assert!(config.build(Collect::default()).is_err(), "{bad}");
        }
        assert!(toml::from_str::<TailConfig>("decision_wait = 3").is_err());
    }

    #[test]
    fn metrics_are_registered() {
        use opentelemetry::metrics::MeterProvider as _;
        use opentelemetry_sdk::metrics::{
            InMemoryMetricExporter, PeriodicReader, SdkMeterProvider,
        };
        let exporter = InMemoryMetricExporter::default();
        let provider = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(exporter.clone()).build())
            .build();
        let (tail, _out) = sampler(|b| b.fallback_ratio(1.0).decision_wait(Duration::ZERO));
        tail.stats_handle()
            .register_metrics(&provider.meter("test"));
        tail.on_end(span(1, 1, 0, vec![]));
        provider.force_flush().unwrap();
        let metrics = exporter.get_finished_metrics().unwrap();
        let text = format!("{metrics:?}");
        for name in [
            names::metrics::TRACES,
            names::metrics::SPANS,
            names::metrics::DECIDED_EARLY,
            names::metrics::EVICTED,
            names::metrics::RATE_LIMITED,
            names::metrics::BUFFERED_TRACES,
            names::metrics::BUFFERED_SPANS,
        ] {
            assert!(text.contains(name), "{name} missing");
        }
    }
}
