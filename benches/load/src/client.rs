//! The load generator: OpenAI chat requests (streamed or not) sent open-loop at a fixed rate,
//! measured from the client side.
//!
//! Every request is timed from its *scheduled* send time ([`Schedule`]): total latency (last
//! byte), time to first token (first body frame holding a token event), the gaps between
//! token-bearing frames, and errors by kind. A concurrency cap bounds the requests in flight;
//! a request waiting for a slot keeps its scheduled time, so the wait counts. Each request's
//! dispatch lag (scheduled time to its task starting to send) is recorded too: a run where
//! it grew measured the generator, not the target.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::schedule::Schedule;
use crate::sse::{SseScanner, has_content};
use crate::stats::{Latencies, Summary};

/// The key every request sends (`authorization: Bearer ...`); LiteLLM is configured with it
/// as its master key (it refuses to start without one), the others ignore it.
pub const API_KEY: &str = "sk-llmtrace-load-5f0c1e7a9b3d4c2e8a6f1b0d7c9e3a5f";

/// The HTTP client of the load generator: HTTP/1.1 keep-alive, `TCP_NODELAY`, unbounded pool.
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A new client. Each run gets its own, so no connection outlives the target it went to.
pub fn http_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_keepalive(Some(Duration::from_secs(60)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(usize::MAX)
        .build(connector)
}

/// What each request asks for and where it goes.
#[derive(Clone, Debug)]
pub struct Workload {
    /// Base URL of the target, without `/v1` (e.g. `http://127.0.0.1:8080`).
    pub base_url: String,
    /// The `model` field (LiteLLM picks the upstream from it; the others ignore it).
    pub model: String,
    /// `"stream": true` (an SSE answer) or a single JSON answer.
    pub stream: bool,
    /// Words in the user message (the prompt size).
    pub prompt_words: usize,
    /// Requests in flight at most; more wait for a slot (their wait counts as latency).
    pub concurrency: usize,
    /// A request not finished this long after its scheduled time is an error (`timeout`).
    pub timeout: Duration,
}

impl Workload {
    /// The request body, built once per run.
    pub fn body(&self) -> Bytes {
        let prompt = vec!["lorem"; self.prompt_words.max(1)].join(" ");
        let body = if self.stream {
            serde_json::json!({
                "model": self.model,
                "stream": true,
                "messages": [{"role": "user", "content": prompt}],
            })
        } else {
            serde_json::json!({
                "model": self.model,
                "messages": [{"role": "user", "content": prompt}],
            })
        };
        Bytes::from(body.to_string())
    }

    fn request(&self, body: Bytes) -> http::Request<Full<Bytes>> {
        http::Request::post(format!("{}/v1/chat/completions", self.base_url))
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {API_KEY}"))
            .body(Full::new(body))
            .expect("static request parts are valid")
    }
}

/// The outcome of one open-loop run.
#[derive(Clone, Debug, Default)]
pub struct RunResult {
    /// Requests per second offered.
    pub rate: f64,
    /// Length of the schedule.
    pub duration: Duration,
    /// Requests sent.
    pub sent: u64,
    /// Requests answered in full (status 200, tokens, `[DONE]` when streamed).
    pub ok: u64,
    /// Failed requests by kind (`status 502`, `connect`, `body`, `timeout`, `incomplete`).
    pub errors: BTreeMap<String, u64>,
    /// Scheduled send to last byte, successful requests.
    pub total: Latencies,
    /// Scheduled send to the first token-bearing frame, successful streams.
    pub ttft: Latencies,
    /// Between consecutive token-bearing frames, successful streams.
    pub gaps: Latencies,
    /// Per request, the delay from its scheduled time to its task starting to send (the
    /// dispatcher's wake-up, then the wait for the generator's runtime): what the generator
    /// itself added to the latency before anything was sent.
    pub dispatch_lag: Latencies,
    /// The largest of those delays: when this grows, the generator is falling behind.
    pub max_dispatch_lag: Duration,
    /// The largest delay of the dispatcher's own wake-ups (part of the dispatch lag; the rest
    /// is the wait for the generator's runtime).
    pub max_timer_lag: Duration,
}

impl RunResult {
    /// Failed requests.
    pub fn failed(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Failed over sent (0 when nothing was sent).
    pub fn error_rate(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            self.failed() as f64 / self.sent as f64
        }
    }

    /// Counts one request's outcome, sent `lag` after its scheduled time.
    fn count(&mut self, outcome: Outcome, lag: Duration) {
        self.sent += 1;
        self.dispatch_lag.record(lag);
        match outcome {
            Outcome::Ok { total, ttft, gaps } => {
                self.ok += 1;
                self.total.record(total);
                if let Some(ttft) = ttft {
                    self.ttft.record(ttft);
                }
                for gap in gaps {
                    self.gaps.record(gap);
                }
            }
            Outcome::Failed(kind) => *self.errors.entry(kind).or_default() += 1,
        }
    }

    /// The serializable summary.
    pub fn report(&self) -> RunReport {
        RunReport {
            rate: self.rate,
            duration_s: self.duration.as_secs_f64(),
            sent: self.sent,
            ok: self.ok,
            errors: self.errors.clone(),
            total: self.total.summary(),
            ttft: self.ttft.summary(),
            gaps: self.gaps.summary(),
            max_dispatch_lag_ms: self.max_dispatch_lag.as_secs_f64() * 1000.0,
            dispatch_lag_p99_ms: self.dispatch_lag.quantile_ms(0.99),
        }
    }
}

/// [`RunResult`] without the histograms, for the JSON output.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    /// Requests per second offered.
    pub rate: f64,
    /// Length of the schedule in seconds.
    pub duration_s: f64,
    /// Requests sent.
    pub sent: u64,
    /// Requests answered in full.
    pub ok: u64,
    /// Failures by kind.
    pub errors: BTreeMap<String, u64>,
    /// Total latency.
    pub total: Summary,
    /// Time to first token.
    pub ttft: Summary,
    /// Inter-token gaps.
    pub gaps: Summary,
    /// Largest dispatch lag of the generator, ms.
    pub max_dispatch_lag_ms: f64,
    /// The 99th percentile of the generator's dispatch lag, ms.
    pub dispatch_lag_p99_ms: Option<f64>,
}

/// What one request measured.
#[derive(Debug)]
enum Outcome {
    Ok {
        total: Duration,
        ttft: Option<Duration>,
        gaps: Vec<Duration>,
    },
    Failed(String),
}

/// Sends `workload` at `rate` requests per second for `duration`, then waits for the requests
/// in flight (up to the workload's timeout) and returns what they measured.
///
/// The schedule is walked by a dispatcher on its own thread ([`dispatch`]): it sleeps until
/// each request is due with the OS's high-resolution timer (not the runtime's 1 ms timer
/// wheel, which rounded every send up to the next millisecond) and hands the request to the
/// runtime, so a runtime busy reading answers does not hold back the next sends. Each
/// request's lag, from its scheduled time to its task starting to send, is recorded:
/// everything the generator itself adds before the send.
pub async fn run_open_loop(
    client: &HttpClient,
    workload: &Workload,
    rate: f64,
    duration: Duration,
) -> RunResult {
    let schedule = Schedule::new(rate, duration);
    let result = Arc::new(Mutex::new(RunResult {
        rate,
        duration,
        ..RunResult::default()
    }));
    if !schedule.is_empty() {
        let send = Sender {
            client: client.clone(),
            workload: workload.clone(),
            body: workload.body(),
            slots: Arc::new(Semaphore::new(workload.concurrency.max(1))),
            result: result.clone(),
            runtime: tokio::runtime::Handle::current(),
        };
        // Every request task holds a clone of `done`: when the last one ends, `recv` is `None`.
        let (done, mut all_done) = tokio::sync::mpsc::channel::<()>(1);
        let dispatcher = tokio::task::spawn_blocking(move || dispatch(schedule, &send, &done));
        let _ = dispatcher.await;
        let _ = all_done.recv().await;
    }
    let mut result = Arc::try_unwrap(result)
        .map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
        .unwrap_or_else(|shared| shared.lock().unwrap_or_else(|e| e.into_inner()).clone());
    result.max_dispatch_lag = result
        .dispatch_lag
        .max_ms()
        .map_or(Duration::ZERO, |ms| Duration::from_secs_f64(ms / 1000.0));
    result
}

/// What every request of a run shares.
struct Sender {
    client: HttpClient,
    workload: Workload,
    body: Bytes,
    slots: Arc<Semaphore>,
    result: Arc<Mutex<RunResult>>,
    runtime: tokio::runtime::Handle,
}

/// The dispatcher thread: sleeps until each request of `schedule` is due (a request already
/// due is sent at once), then spawns it on the runtime. `done` is cloned into every request.
fn dispatch(schedule: Schedule, send: &Sender, done: &tokio::sync::mpsc::Sender<()>) {
    precise_timer();
    let start = std::time::Instant::now() + Duration::from_millis(5);
    let mut timer_lag = Duration::ZERO;
    for offset in schedule.offsets() {
        let due = start + offset;
        let wait = due.saturating_duration_since(std::time::Instant::now());
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
        let late = std::time::Instant::now().saturating_duration_since(due);
        timer_lag = timer_lag.max(late);
        let scheduled = Instant::from_std(due);
        let (client, workload, body, slots, result) = (
            send.client.clone(),
            send.workload.clone(),
            send.body.clone(),
            send.slots.clone(),
            send.result.clone(),
        );
        let done = done.clone();
        send.runtime.spawn(async move {
            let lag = Instant::now().saturating_duration_since(scheduled);
            let outcome = tokio::time::timeout_at(scheduled + workload.timeout, async {
                let _slot = slots.acquire_owned().await;
                one_request(&client, &workload, body, scheduled).await
            })
            .await
            .unwrap_or_else(|_| Outcome::Failed("timeout".to_owned()));
            result
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .count(outcome, lag);
            // The result first, so the last request's `done` finds it unshared.
            drop(result);
            drop(done);
        });
    }
    let mut result = send.result.lock().unwrap_or_else(|e| e.into_inner());
    result.max_timer_lag = timer_lag;
}

/// Asks the kernel to wake this thread within 1 µs of its sleep's end, not within the
/// default 50 µs timer slack, and, when this process may (root or `CAP_SYS_NICE`), to run it
/// ahead of every ordinary thread (`SCHED_FIFO`, lowest real-time priority): it only sleeps
/// and hands requests over, a few µs each, so nothing else starves, and a mock or a
/// neighbour's job on its core no longer delays the sends (Linux; elsewhere nothing changes).
fn precise_timer() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_TIMERSLACK takes a plain integer; sched_setscheduler gets a pointer to a
    // local struct. Both apply to the calling thread only.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
        let param = libc::sched_param { sched_priority: 1 };
        if libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) != 0 {
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                eprintln!(
                    "   generator: the dispatcher runs at normal priority (SCHED_FIFO: {})",
                    std::io::Error::last_os_error()
                );
            });
        }
    }
}

async fn one_request(
    client: &HttpClient,
    workload: &Workload,
    body: Bytes,
    scheduled: Instant,
) -> Outcome {
    let response = match client.request(workload.request(body)).await {
        Ok(response) => response,
        Err(e) if e.is_connect() => return Outcome::Failed("connect".to_owned()),
        Err(_) => return Outcome::Failed("request".to_owned()),
    };
    if response.status() != http::StatusCode::OK {
        let status = response.status().as_u16();
        // Read the error body so the connection can be reused.
        let _ = response.into_body().collect().await;
        return Outcome::Failed(format!("status {status}"));
    }
    let mut body = response.into_body();
    if !workload.stream {
        return match body.collect().await.map(|all| all.to_bytes()) {
            Ok(all) if has_content(&all) => Outcome::Ok {
                total: scheduled.elapsed(),
                ttft: None,
                gaps: Vec::new(),
            },
            Ok(_) => Outcome::Failed("incomplete".to_owned()),
            Err(_) => Outcome::Failed("body".to_owned()),
        };
    }
    let mut scanner = SseScanner::default();
    let mut ttft = None;
    let mut last_token: Option<Instant> = None;
    let mut gaps = Vec::new();
    loop {
        match body.frame().await {
            None => break,
            Some(Err(_)) => return Outcome::Failed("body".to_owned()),
            Some(Ok(frame)) => {
                let Some(data) = frame.data_ref() else {
                    continue;
                };
                let now = Instant::now();
                let seen = scanner.feed(data);
                if seen.tokens > 0 {
                    match last_token {
                        None => ttft = Some(now - scheduled),
                        Some(previous) => gaps.push(now - previous),
                    }
                    // Tokens that arrived together are 0 apart.
                    gaps.extend(std::iter::repeat_n(Duration::ZERO, seen.tokens - 1));
                    last_token = Some(now);
                }
            }
        }
    }
    if !scanner.done || scanner.tokens == 0 {
        return Outcome::Failed("incomplete".to_owned());
    }
    Outcome::Ok {
        total: scheduled.elapsed(),
        ttft,
        gaps,
    }
}

/// Exactly `requests` requests (streamed when the workload says so, each read to its
/// `[DONE]`) over `connections` keep-alive HTTP/1.1
/// connections, each sending its next request as soon as the previous answer is read (for
/// counting instructions per request under callgrind, where a fixed duration is no fixed
/// count). Latency counts from each request's send; `rate` in the result is the rate
/// achieved. A connection that fails is counted (the request is used up) and replaced.
pub async fn run_fixed_count(workload: &Workload, connections: usize, requests: u64) -> RunResult {
    let authority = workload
        .base_url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let body = workload.body();
    let started = Instant::now();
    let budget = Arc::new(AtomicU64::new(requests));
    let mut tasks = JoinSet::new();
    for _ in 0..connections.max(1) {
        let (authority, workload, body) = (authority.clone(), workload.clone(), body.clone());
        let budget = budget.clone();
        tasks.spawn(
            async move { closed_loop_connection(&authority, &workload, body, &budget).await },
        );
    }
    let mut result = RunResult::default();
    while let Some(joined) = tasks.join_next().await {
        let Ok(one) = joined else { continue };
        result.sent += one.sent;
        result.ok += one.ok;
        for (kind, n) in one.errors {
            *result.errors.entry(kind).or_default() += n;
        }
        result.total.merge(&one.total);
    }
    result.duration = started.elapsed().max(Duration::from_millis(1));
    result.rate = result.ok as f64 / result.duration.as_secs_f64();
    result
}

/// Takes one request from `budget`; false when none is left.
fn take(budget: &AtomicU64) -> bool {
    budget
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok()
}

async fn closed_loop_connection(
    authority: &str,
    workload: &Workload,
    body: Bytes,
    budget: &AtomicU64,
) -> RunResult {
    let mut result = RunResult::default();
    let count = |result: &mut RunResult, kind: &str| {
        result.sent += 1;
        *result.errors.entry(kind.to_owned()).or_default() += 1;
    };
    'connect: while budget.load(Ordering::Relaxed) > 0 {
        let stream = match tokio::net::TcpStream::connect(authority).await {
            Ok(stream) => stream,
            Err(_) => {
                if take(budget) {
                    count(&mut result, "connect");
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let io = hyper_util::rt::TokioIo::new(stream);
        let Ok((mut sender, connection)) = hyper::client::conn::http1::handshake(io).await else {
            if take(budget) {
                count(&mut result, "connect");
            }
            continue;
        };
        tokio::spawn(connection);
        while take(budget) {
            let request = http::Request::post("/v1/chat/completions")
                .header("host", authority)
                .header("content-type", "application/json")
                .header("authorization", format!("Bearer {API_KEY}"))
                .body(Full::new(body.clone()))
                .expect("static request parts are valid");
            let sent = Instant::now();
            let outcome = tokio::time::timeout(workload.timeout, async {
                if sender.ready().await.is_err() {
                    return Err("request");
                }
                let response = sender.send_request(request).await.map_err(|_| "request")?;
                let status = response.status();
                let all = response
                    .into_body()
                    .collect()
                    .await
                    .map_err(|_| "body")?
                    .to_bytes();
                let whole = if workload.stream {
                    let mut scanner = SseScanner::default();
                    scanner.feed(&all).tokens > 0 && scanner.done
                } else {
                    has_content(&all)
                };
                if status != http::StatusCode::OK {
                    Err("status")
                } else if whole {
                    Ok(())
                } else {
                    Err("incomplete")
                }
            })
            .await
            .unwrap_or(Err("timeout"));
            match outcome {
                Ok(()) => {
                    result.sent += 1;
                    result.ok += 1;
                    result.total.record(sent.elapsed());
                }
                Err(kind) => {
                    count(&mut result, kind);
                    // A fresh connection after anything but a well-formed error answer.
                    if kind != "status" {
                        continue 'connect;
                    }
                }
            }
        }
        break;
    }
    result
}

/// Streams held open on a target, for measuring its memory per open stream.
pub struct OpenStreams {
    tasks: JoinSet<()>,
    started: Arc<AtomicUsize>,
}

impl OpenStreams {
    /// Opens `count` streaming requests at `ramp` per second, each read until it ends or is
    /// cancelled. Returns at once; see [`OpenStreams::wait_started`].
    pub fn open(client: &HttpClient, workload: &Workload, count: usize, ramp: f64) -> OpenStreams {
        let mut workload = workload.clone();
        workload.stream = true;
        let body = workload.body();
        let started = Arc::new(AtomicUsize::new(0));
        let mut tasks = JoinSet::new();
        let start = Instant::now();
        for i in 0..count {
            let at = start + Duration::from_secs_f64(i as f64 / ramp);
            let (client, workload, body, started) = (
                client.clone(),
                workload.clone(),
                body.clone(),
                started.clone(),
            );
            tasks.spawn(async move {
                tokio::time::sleep_until(at).await;
                let Ok(response) = client.request(workload.request(body)).await else {
                    return;
                };
                if response.status() != http::StatusCode::OK {
                    return;
                }
                let mut body = response.into_body();
                let mut scanner = SseScanner::default();
                let mut counted = false;
                while let Some(Ok(frame)) = body.frame().await {
                    if let Some(data) = frame.data_ref() {
                        if scanner.feed(data).tokens > 0 && !counted {
                            counted = true;
                            started.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
        OpenStreams { tasks, started }
    }

    /// How many streams have delivered their first token.
    pub fn started(&self) -> usize {
        self.started.load(Ordering::Relaxed)
    }

    /// Waits until `count` streams have delivered a token, or `limit` has passed; returns how
    /// many have.
    pub async fn wait_started(&self, count: usize, limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        while self.started() < count && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.started()
    }

    /// Drops every stream (the connections close).
    pub async fn close(mut self) {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use llmtrace_mock::{MockConfig, MockServer};

    fn workload(base_url: String, stream: bool) -> Workload {
        Workload {
            base_url,
            model: "bench".to_owned(),
            stream,
            prompt_words: 8,
            concurrency: 64,
            timeout: Duration::from_secs(5),
        }
    }

    #[tokio::test]
    async fn measures_streams_against_the_mock() {
        let mock = MockServer::start(MockConfig {
            ttft: Duration::from_millis(30),
            gap: Duration::from_millis(10),
            tokens: 5,
            keep_requests: 0,
            ..MockConfig::default()
        })
        .await
        .unwrap();
        let client = http_client();
        let result = run_open_loop(
            &client,
            &workload(mock.url(), true),
            50.0,
            Duration::from_millis(400),
        )
        .await;
        assert_eq!(result.sent, 20);
        assert_eq!(result.ok, 20, "{:?}", result.errors);
        let ttft = result.ttft.quantile_ms(0.5).unwrap();
        assert!((29.0..200.0).contains(&ttft), "ttft {ttft}");
        let total = result.total.quantile_ms(0.5).unwrap();
        assert!(total >= 69.0, "total {total}");
        // 5 tokens: 4 gaps of ~10 ms per request.
        assert_eq!(result.gaps.count(), 80);
        let gap = result.gaps.quantile_ms(0.5).unwrap();
        assert!((5.0..100.0).contains(&gap), "gap {gap}");

        let plain = run_open_loop(
            &client,
            &workload(mock.url(), false),
            20.0,
            Duration::from_millis(200),
        )
        .await;
        assert_eq!((plain.sent, plain.ok), (4, 4), "{:?}", plain.errors);
        assert_eq!(plain.ttft.count(), 0);
    }

    #[tokio::test]
    async fn fixed_count_sends_exactly_that_many() {
        let mock = MockServer::start(MockConfig {
            ttft: Duration::ZERO,
            gap: Duration::ZERO,
            tokens: 4,
            keep_requests: 0,
            ..MockConfig::default()
        })
        .await
        .unwrap();
        let result = run_fixed_count(&workload(mock.url(), false), 4, 101).await;
        assert_eq!((result.sent, result.ok), (101, 101), "{:?}", result.errors);
        assert_eq!(result.total.count(), 101);
        assert!(result.rate > 0.0);

        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let nothing = workload(format!("http://127.0.0.1:{port}"), false);
        let failed = run_fixed_count(&nothing, 2, 5).await;
        assert_eq!((failed.ok, failed.sent), (0, 5));
        assert_eq!(failed.errors.get("connect"), Some(&5));
    }

    #[tokio::test]
    async fn errors_are_counted_by_kind() {
        // Nothing listens on a port we bound and released.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = http_client();
        let result = run_open_loop(
            &client,
            &workload(format!("http://127.0.0.1:{port}"), true),
            20.0,
            Duration::from_millis(100),
        )
        .await;
        assert_eq!(result.sent, 2);
        assert_eq!(result.errors.get("connect"), Some(&2));
        assert_eq!(result.error_rate(), 1.0);
    }

    #[tokio::test]
    async fn open_streams_are_counted_once_started() {
        let mock = MockServer::start(MockConfig {
            ttft: Duration::from_millis(10),
            gap: Duration::from_secs(5),
            tokens: 3,
            keep_requests: 0,
            ..MockConfig::default()
        })
        .await
        .unwrap();
        let client = http_client();
        let streams = OpenStreams::open(&client, &workload(mock.url(), true), 20, 1000.0);
        let started = streams.wait_started(20, Duration::from_secs(5)).await;
        assert_eq!(started, 20);
        streams.close().await;
    }
}
