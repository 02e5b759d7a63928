//! The access log: one JSON line per request on stderr (stdout carries the spans by default).
//!
//! Lines are not written by the request: a request appends its line to a buffer in memory
//! and goes on, and one writer thread writes what gathered, in one `write` per batch
//! ([`LineWriter`]). A line reaches stderr at most [`BATCH_WINDOW`] after its request ended,
//! and the process writes what is left when it shuts down ([`flush`]). Writing each line
//! from the request cost one `write` system call per request, and a stderr that blocks (a
//! full pipe to a stalled log shipper) blocked the worker thread and every request on it.
//! Now a stalled stderr costs lines, never requests: beyond [`MAX_PENDING`] bytes waiting,
//! lines are dropped and counted ([`dropped_lines`], the
//! `llmtrace.proxy.access_log.dropped` metric, and a line on stderr when it drains).

use std::borrow::Cow;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::Thread;
use std::time::Duration;

use llmtrace::genai::Summary;
use serde::Serialize;

/// One request, as the access log records it. Every value a client controls is bounded
/// before it gets here (request id, path, method, model names).
#[derive(Debug, Default, Serialize)]
pub struct AccessLogLine<'a> {
    /// The SERVER span's trace id (with tracing off, the caller's, or empty); hex, written
    /// without escaping.
    pub trace_id: &'a str,
    /// The SERVER span's id (empty with tracing off); hex.
    pub span_id: &'a str,
    /// The client's `x-request-id`, or the gateway's.
    pub request_id: &'a str,
    /// The provider's `x-request-id`.
    pub upstream_request_id: Option<&'a str>,
    /// The request method.
    pub method: Cow<'a, str>,
    /// The request path (no query: it may hold secrets).
    pub path: Cow<'a, str>,
    /// The route template of an LLM API call (one of the gateway's own, written without
    /// escaping).
    pub route: Option<&'a str>,
    /// The upstream that answered (or was tried last).
    pub upstream: Option<&'a str>,
    /// `gen_ai.request.model`.
    pub model: Option<&'a str>,
    /// `gen_ai.response.model`.
    pub response_model: Option<&'a str>,
    /// The request asked for a stream.
    pub stream: bool,
    /// The status sent to the client (0: none).
    pub status: u16,
    /// `gen_ai.usage.input_tokens`.
    pub input_tokens: Option<i64>,
    /// `gen_ai.usage.output_tokens`.
    pub output_tokens: Option<i64>,
    /// `gen_ai.usage.cost`: what the exchange cost in USD, when the model has a price.
    pub cost_usd: Option<f64>,
    /// Time to the first content chunk.
    pub ttft_ms: Option<f64>,
    /// Head received → last byte sent.
    pub duration_ms: Option<f64>,
    /// The gateway's own time before the upstream was chosen.
    pub gateway_ms: Option<f64>,
    /// The gateway's longest time on one response chunk.
    pub gateway_chunk_max_ms: Option<f64>,
    /// Upstream attempts (retries and fallbacks included).
    pub attempts: u32,
    /// The first choice's finish reason.
    pub finish_reason: Option<&'a str>,
    /// `error.type`, when the request failed.
    pub error_type: Option<&'a str>,
    /// A hash of the request body (never the body itself), in hex.
    pub prompt_hash: Option<&'a str>,
    /// The client went away before the end.
    pub client_aborted: bool,
}

impl<'a> AccessLogLine<'a> {
    /// Copies what the core's summary of the exchange says.
    pub fn with_summary(mut self, summary: &'a Summary) -> Self {
        self.model = summary.request_model.as_deref();
        self.response_model = summary.response_model.as_deref();
        self.stream = summary.stream;
        self.input_tokens = summary.input_tokens;
        self.output_tokens = summary.output_tokens;
        self.cost_usd = summary.cost;
        self.ttft_ms = summary.time_to_first_chunk.map(millis);
        self.finish_reason = summary.finish_reasons.first().map(String::as_str);
        self
    }

    /// Hands the line to the process's access log writer, which writes it to stderr within
    /// [`BATCH_WINDOW`] (see the module docs). Never blocks on stderr.
    pub fn write(&self) {
        let line = |out: &mut Vec<u8>| {
            self.encode(out);
            out.push(b'\n');
        };
        match stderr_log() {
            Some(writer) => writer.append(line),
            // No writer thread could be started: the line is written here, as one `write`.
            None => {
                let mut text = Vec::with_capacity(640);
                line(&mut text);
                let _ = std::io::stderr().lock().write_all(&text);
            }
        }
    }

    /// The line as JSON, the same object `serde_json` makes of it (the test checks), written
    /// field by field: the keys are literals, and values that need no escaping (ids, hex,
    /// most paths and names) are copied as they are. Through serde's map serializer the line
    /// cost ~7k instructions a request, most of it escaping the keys (callgrind).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"trace_id\":");
        raw(out, self.trace_id);
        out.extend_from_slice(b",\"span_id\":");
        raw(out, self.span_id);
        out.extend_from_slice(b",\"request_id\":");
        string(out, self.request_id);
        out.extend_from_slice(b",\"upstream_request_id\":");
        opt_string(out, self.upstream_request_id);
        out.extend_from_slice(b",\"method\":");
        string(out, &self.method);
        out.extend_from_slice(b",\"path\":");
        string(out, &self.path);
        out.extend_from_slice(b",\"route\":");
        opt_raw(out, self.route);
        out.extend_from_slice(b",\"upstream\":");
        opt_string(out, self.upstream);
        out.extend_from_slice(b",\"model\":");
        opt_string(out, self.model);
        out.extend_from_slice(b",\"response_model\":");
        opt_string(out, self.response_model);
        out.extend_from_slice(b",\"stream\":");
        out.extend_from_slice(if self.stream { b"true" } else { b"false" });
        out.extend_from_slice(b",\"status\":");
        number(out, &self.status);
        out.extend_from_slice(b",\"input_tokens\":");
        number(out, &self.input_tokens);
        out.extend_from_slice(b",\"output_tokens\":");
        number(out, &self.output_tokens);
        self.encode_timing(out);
        out.extend_from_slice(b",\"finish_reason\":");
        opt_string(out, self.finish_reason);
        out.extend_from_slice(b",\"error_type\":");
        opt_string(out, self.error_type);
        out.extend_from_slice(b",\"prompt_hash\":");
        opt_raw(out, self.prompt_hash);
        out.extend_from_slice(b",\"client_aborted\":");
        out.extend_from_slice(if self.client_aborted {
            b"true"
        } else {
            b"false"
        });
        out.push(b'}');
    }

    fn encode_timing(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b",\"cost_usd\":");
        number(out, &self.cost_usd);
        out.extend_from_slice(b",\"ttft_ms\":");
        number(out, &self.ttft_ms);
        out.extend_from_slice(b",\"duration_ms\":");
        number(out, &self.duration_ms);
        out.extend_from_slice(b",\"gateway_ms\":");
        number(out, &self.gateway_ms);
        out.extend_from_slice(b",\"gateway_chunk_max_ms\":");
        number(out, &self.gateway_chunk_max_ms);
        out.extend_from_slice(b",\"attempts\":");
        number(out, &self.attempts);
    }
}

/// A JSON string: copied as is when nothing in it needs escaping, else serde_json's escaping.
fn string(out: &mut Vec<u8>, value: &str) {
    // Without an early exit the check is a reduction the compiler vectorises: most values
    // are plain, and the whole value is read either way.
    let special = value
        .bytes()
        .map(|b| u8::from(b < 0x20) | u8::from(b == b'"') | u8::from(b == b'\\'))
        .fold(0, |any, special| any | special);
    if special == 0 {
        out.push(b'"');
        out.extend_from_slice(value.as_bytes());
        out.push(b'"');
    } else {
        // Writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, value);
    }
}

/// A string of the gateway's own that never needs escaping (hex ids, route templates),
/// copied without the check.
fn raw(out: &mut Vec<u8>, value: &str) {
    debug_assert!(value.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\'));
    out.push(b'"');
    out.extend_from_slice(value.as_bytes());
    out.push(b'"');
}

fn opt_raw(out: &mut Vec<u8>, value: Option<&str>) {
    match value {
        Some(value) => raw(out, value),
        None => out.extend_from_slice(b"null"),
    }
}

fn opt_string(out: &mut Vec<u8>, value: Option<&str>) {
    match value {
        Some(value) => string(out, value),
        None => out.extend_from_slice(b"null"),
    }
}

/// A number (or `null`), formatted by serde_json as the derived serializer would.
fn number<T: Serialize>(out: &mut Vec<u8>, value: &T) {
    let _ = serde_json::to_writer(&mut *out, value);
}

/// A duration in milliseconds, as the log writes them.
pub fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// How long the writer lets lines gather before it writes them: the longest a line waits.
///
/// Each batch costs the process a wake of the writer thread (`futex`), its sleep and its
/// `write`: at most ten a second at 100 ms. With 10 ms, a gateway at 300 requests a second
/// made 0.9 more system calls a request than bare pingora (0.5 `futex`, 0.25 `write`, 0.2
/// `clock_nanosleep`) and switched threads every third request; at 100 ms it makes 0.1.
pub const BATCH_WINDOW: Duration = Duration::from_millis(100);

/// Bytes of lines waiting at most; a line that does not fit is dropped and counted. 16 MiB
/// hold one [`BATCH_WINDOW`] of ~350 000 lines a second (lines of ~450 bytes), far above
/// what one process serves.
pub const MAX_PENDING: usize = 16 << 20;

/// The process's access log, on stderr; its thread starts with the first line (`None`: it
/// could not be started, and lines are written by the requests).
static STDERR: OnceLock<Option<LineWriter<std::io::Stderr>>> = OnceLock::new();

fn stderr_log() -> Option<&'static LineWriter<std::io::Stderr>> {
    STDERR
        .get_or_init(|| {
            LineWriter::start(std::io::stderr(), BATCH_WINDOW, MAX_PENDING)
                .inspect_err(|error| {
                    eprintln!(
                        "llmtrace-proxy: access log: no writer thread ({error}); lines are \
                         written by each request"
                    );
                })
                .ok()
        })
        .as_ref()
}

/// Writes the access log lines still waiting, from the calling thread: call it before the
/// process exits (the gateway's `main` does, after the server stops).
pub fn flush() {
    if let Some(Some(writer)) = STDERR.get() {
        writer.flush();
    }
}

/// Access log lines dropped since the process started because stderr did not keep up.
pub fn dropped_lines() -> u64 {
    STDERR
        .get()
        .and_then(Option::as_ref)
        .map_or(0, LineWriter::dropped)
}

/// Lines written in batches by a thread of their own, so that whoever appends a line never
/// waits for the output (see the module docs).
///
/// ```
/// use std::io::Write;
/// use std::sync::{Arc, Mutex};
/// use std::time::Duration;
/// use llmtrace_proxy::access_log::LineWriter;
///
/// #[derive(Clone, Default)]
/// struct Shared(Arc<Mutex<Vec<u8>>>);
/// impl Write for Shared {
///     fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
///         self.0.lock().unwrap().write(bytes)
///     }
///     fn flush(&mut self) -> std::io::Result<()> {
///         Ok(())
///     }
/// }
///
/// let out = Shared::default();
/// let log = LineWriter::start(out.clone(), Duration::from_millis(5), 1 << 20).unwrap();
/// log.append(|line| line.extend_from_slice(b"{\"status\":200}\n"));
/// log.flush();
/// assert_eq!(&*out.0.lock().unwrap(), b"{\"status\":200}\n");
/// ```
pub struct LineWriter<W: Write + Send + 'static> {
    shared: Arc<Shared<W>>,
    /// The writer thread, woken when a line lands in an empty buffer.
    thread: Thread,
}

struct Shared<W> {
    /// Lines not yet written.
    pending: Mutex<Vec<u8>>,
    /// The output; held while a batch is taken and written, so batches keep their order.
    out: Mutex<W>,
    max_pending: usize,
    dropped: AtomicU64,
}

/// A lock that a panic elsewhere does not make unusable: the data are bytes, whole lines.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<W: Write + Send + 'static> LineWriter<W> {
    /// Starts the writer thread: lines appended gather for `window` after the first one,
    /// then are written to `out` in one batch; beyond `max_pending` bytes waiting, lines
    /// are dropped. Fails only when the thread cannot be spawned.
    pub fn start(out: W, window: Duration, max_pending: usize) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Vec::new()),
            out: Mutex::new(out),
            max_pending,
            dropped: AtomicU64::new(0),
        });
        let writer = shared.clone();
        let thread = std::thread::Builder::new()
            .name("llmtrace-access-log".into())
            .spawn(move || writer.run(window))?
            .thread()
            .clone();
        Ok(Self { shared, thread })
    }

    /// Appends one line, which `encode` writes (with its newline) at the end of the buffer.
    /// A line that would take the buffer past its bound is dropped and counted.
    pub fn append(&self, encode: impl FnOnce(&mut Vec<u8>)) {
        let mut pending = lock(&self.shared.pending);
        let start = pending.len();
        encode(&mut pending);
        if pending.len() > self.shared.max_pending {
            pending.truncate(start);
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        drop(pending);
        if start == 0 {
            // A system call only when the writer is parked, once per batch at most.
            self.thread.unpark();
        }
    }

    /// Writes what is waiting now, from the calling thread.
    pub fn flush(&self) {
        self.shared.write_batch(&mut Vec::new());
    }

    /// Lines dropped so far.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

impl<W: Write> Shared<W> {
    /// The writer thread: parks until a line comes, lets lines gather for `window`, writes
    /// them; forever (the process's writer lives as long as the process).
    fn run(&self, window: Duration) {
        let mut spare = Vec::new();
        let mut reported = 0;
        loop {
            if lock(&self.pending).is_empty() {
                // An `unpark` between the check and here makes `park` return at once.
                std::thread::park();
                continue;
            }
            std::thread::sleep(window);
            self.write_batch(&mut spare);
            let dropped = self.dropped.load(Ordering::Relaxed);
            if dropped > reported {
                let line = format!(
                    "llmtrace-proxy: access log: {} lines dropped (stderr did not keep up), \
                     {dropped} in all\n",
                    dropped - reported
                );
                let _ = lock(&self.out).write_all(line.as_bytes());
                reported = dropped;
            }
        }
    }

    /// Takes the waiting lines (leaving `spare`'s allocation in their place) and writes them.
    fn write_batch(&self, spare: &mut Vec<u8>) {
        let mut out = lock(&self.out);
        spare.clear();
        let batch = std::mem::replace(&mut *lock(&self.pending), std::mem::take(spare));
        if !batch.is_empty() {
            let _ = out.write_all(&batch).and_then(|()| out.flush());
        }
        *spare = batch;
        // Keep a typical batch's allocation, not a burst's.
        if spare.capacity() > 1 << 20 {
            *spare = Vec::new();
        }
    }
}

#[cfg(test)]
mod writer_tests {
    use std::sync::mpsc;
    use std::time::Instant;

    use super::*;

    /// An output that records each `write_all` as one batch, and can be held shut.
    #[derive(Clone)]
    struct Recorder {
        batches: Arc<Mutex<Vec<Vec<u8>>>>,
        gate: Arc<Mutex<()>>,
        /// Writes begun (a blocked one included).
        entered: Arc<AtomicU64>,
    }

    impl Write for Recorder {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.entered.fetch_add(1, Ordering::SeqCst);
            let _open = lock(&self.gate);
            lock(&self.batches).push(bytes.to_vec());
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn recorder() -> Recorder {
        Recorder {
            batches: Arc::default(),
            gate: Arc::default(),
            entered: Arc::default(),
        }
    }

    fn wait_for(what: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !what() {
            assert!(Instant::now() < deadline, "timed out");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn lines_come_out_whole_in_order_and_in_few_writes() {
        let out = recorder();
        let log = LineWriter::start(out.clone(), Duration::from_millis(50), 1 << 20).unwrap();
        for i in 0..1000 {
            log.append(|line| writeln!(line, "{{\"n\":{i}}}").unwrap());
        }
        let expected: String = (0..1000).map(|i| format!("{{\"n\":{i}}}\n")).collect();
        let written = || lock(&out.batches).concat();
        wait_for(|| written().len() == expected.len());
        assert_eq!(String::from_utf8(written()).unwrap(), expected);
        // The thousand lines came in a few batches (one or two windows when the machine is
        // idle), not in a write each.
        assert!(
            lock(&out.batches).len() <= 20,
            "{}",
            lock(&out.batches).len()
        );
        assert_eq!(log.dropped(), 0);
    }

    #[test]
    fn a_blocked_output_costs_lines_not_the_caller_and_says_so() {
        let out = recorder();
        let shut = lock(&out.gate);
        let log = LineWriter::start(out.clone(), Duration::from_millis(1), 100).unwrap();
        let (done, finished) = mpsc::channel();
        // The first line is taken by the writer, which then blocks on the output.
        log.append(|line| line.extend_from_slice(b"first....\n"));
        wait_for(|| out.entered.load(Ordering::SeqCst) == 1);
        let appender = std::thread::spawn(move || {
            // The next lines fill the buffer (ten bytes each); the rest are dropped.
            for _ in 0..50 {
                log.append(|line| line.extend_from_slice(b"0123456789"));
            }
            done.send(()).unwrap();
            log
        });
        // Every append returned while the output was blocked.
        finished.recv_timeout(Duration::from_secs(10)).unwrap();
        let log = appender.join().unwrap();
        assert_eq!(log.dropped(), 40);
        drop(shut);
        let written = || String::from_utf8(lock(&out.batches).concat()).unwrap();
        wait_for(|| {
            let text = written();
            text.contains("lines dropped") && text.matches("0123456789").count() == 10
        });
        let text = written();
        assert!(text.starts_with("first....\n"), "{text}");
        assert_eq!(text.matches("0123456789").count(), 10, "{text}");
        assert!(text.contains("40 lines dropped"), "{text}");
    }

    #[test]
    fn flush_writes_what_waits_at_once() {
        let out = recorder();
        let log = LineWriter::start(out.clone(), Duration::from_secs(3600), 1 << 20).unwrap();
        log.append(|line| line.extend_from_slice(b"a\n"));
        log.append(|line| line.extend_from_slice(b"b\n"));
        log.flush();
        assert_eq!(lock(&out.batches).concat(), b"a\nb\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_one_json_object_with_every_field() {
        let mut summary = Summary::default();
        summary.request_model = Some("gpt-4o".into());
        summary.finish_reasons = vec!["stop".into()];
        summary.input_tokens = Some(3);
        summary.cost = Some(0.25);
        summary.time_to_first_chunk = Some(Duration::from_millis(12));
        let line = AccessLogLine {
            request_id: "req_1",
            path: "/v1/chat/completions".into(),
            status: 200,
            attempts: 1,
            ..AccessLogLine::default()
        }
        .with_summary(&summary);
        let value = serde_json::to_value(&line).unwrap();
        assert_eq!(value["model"], "gpt-4o");
        assert_eq!(value["finish_reason"], "stop");
        assert_eq!(value["ttft_ms"], 12.0);
        assert_eq!(value["cost_usd"], 0.25);
        assert_eq!(value["upstream_request_id"], serde_json::Value::Null);
        assert_eq!(value.as_object().unwrap().len(), 24);
    }

    /// The hand-written line is the object serde makes of the struct, field for field and in
    /// order, for plain and hostile values alike.
    #[test]
    fn the_written_line_is_what_serde_writes() {
        let mut summary = Summary::default();
        summary.request_model = Some("gpt-4o \"quoted\" \\ \u{1}\u{7f} é".into());
        summary.finish_reasons = vec!["stop\n".into()];
        summary.output_tokens = Some(-1);
        summary.cost = Some(1e-9);
        summary.time_to_first_chunk = Some(Duration::from_nanos(1_234_567));
        let hostile = AccessLogLine {
            trace_id: "0af7651916cd43dd8448eb211c80319c",
            span_id: "b7ad6b7169203331",
            request_id: "req_\"<script>",
            upstream_request_id: Some("up\t1"),
            method: "POST".into(),
            path: "/v1/chat/completions/\u{2028}".into(),
            route: Some("/v1/chat/completions"),
            upstream: Some("openai"),
            status: 502,
            duration_ms: Some(f64::NAN),
            gateway_ms: Some(0.125),
            gateway_chunk_max_ms: Some(f64::INFINITY),
            attempts: 3,
            error_type: Some("timeout"),
            prompt_hash: Some("00ff"),
            client_aborted: true,
            ..AccessLogLine::default()
        }
        .with_summary(&summary);
        for line in [hostile, AccessLogLine::default()] {
            let mut ours = Vec::new();
            line.encode(&mut ours);
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                serde_json::to_string(&line).unwrap()
            );
        }
    }
}
