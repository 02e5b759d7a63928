//! The measurement plan and its phases, run against each target in turn.
//!
//! For every target:
//! 1. **open streams**: N long streams held open at once (slow mock), the target's RSS read
//!    before and with them (first, so the idle RSS is not the high-water mark of the load
//!    phases);
//! 2. the target is restarted, then a **warm-up** at the latency rate (discarded);
//! 3. **latency**: streamed requests, then non-streamed ones, open-loop at a fixed rate; the
//!    CPU time of the target's processes is read around the streamed run;
//! 4. **sustained rate** (on a freshly restarted target): streamed requests at rising rates
//!    until p99 exceeds the bound or more than 1 % fail, twice in a row at the same rate; the
//!    highest rate that held counts. The bound is the direct
//!    baseline's p99, plus the target's own added p50 from the latency run (a hop with a
//!    fixed cost, like LiteLLM's tens of milliseconds, is allowed that cost: the search asks
//!    where it stops keeping up, not whether it is fast), plus a slack;
//! 5. **max rate** (issue 12, [`crate::maxrate`]): non-streamed requests with a short prompt
//!    to a mock that answers at once, sent by `wrk` over a fixed number of keep-alive
//!    connections for a fixed time, the target alone on one core and everything else (wrk,
//!    the mocks, the sink) on another; req/s and latency from wrk, the target's CPU per
//!    request from `/proc`.
//!
//! Then, once every target's max rate is known, **half rate**: each target started again and
//! driven open-loop, non-streamed, at half the gateway's max rate, pinned the same way.

use std::time::Duration;

use serde::Serialize;

use crate::affinity::{self, Layout};
use crate::client::{self, OpenStreams, RunReport, RunResult, Workload};
use crate::maxrate::{self, MaxRate};
use crate::procfs;
use crate::sink;
use crate::stats::Latencies;
use crate::targets::{self, Endpoint, MockTiming, Programs, Running, TargetKind, Upstreams};

/// Everything a run does, with the `--quick` and full presets.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    /// The short preset (a smoke test of the harness).
    pub quick: bool,
    /// Targets, measured in this order (the direct baseline is always first).
    pub targets: Vec<TargetKind>,
    /// Timing of the mock for the latency and rate phases.
    pub fast_mock: MockTiming,
    /// Timing of the mock for the open-streams phase.
    pub slow_mock: MockTiming,
    /// Runtime threads of each mock process.
    pub mock_threads: usize,
    /// Words per prompt.
    pub prompt_words: usize,
    /// Requests in flight at most per run.
    pub concurrency: usize,
    /// Warm-up before the latency runs, s.
    pub warmup_s: f64,
    /// Rate of the latency runs, requests/s.
    pub latency_rate: f64,
    /// Rate of LiteLLM's latency runs (it cannot take the others' rate), requests/s.
    pub litellm_latency_rate: f64,
    /// Length of the streamed latency run, s.
    pub latency_stream_s: f64,
    /// Length of the non-streamed latency run, s.
    pub latency_plain_s: f64,
    /// First rate of the sustained-rate search, requests/s.
    pub start_rate: f64,
    /// LiteLLM's first rate.
    pub litellm_start_rate: f64,
    /// Each step multiplies the rate by this.
    pub step_factor: f64,
    /// Length of one step, s.
    pub step_s: f64,
    /// At most this many rising steps.
    pub max_steps: usize,
    /// Highest rate tried, requests/s.
    pub max_rate: f64,
    /// After the first failing step, try the geometric middle between it and the last
    /// passing one this many times.
    pub refine_steps: usize,
    /// A step holds when its p99 is at most the direct baseline's p99 plus this, ms.
    pub p99_slack_ms: f64,
    /// ... and at most this fraction of its requests failed.
    pub max_error_rate: f64,
    /// Streams held open in the memory phase.
    pub open_streams: usize,
    /// Rate at which they are opened, per second.
    pub open_ramp: f64,
    /// A request not done this long after its scheduled time fails, s.
    pub timeout_s: f64,
    /// Timing of the mock for the max-rate phase (answers at once).
    pub instant_mock: MockTiming,
    /// Length of the measured max-rate run per target, s (0: no max-rate phase).
    pub max_rate_s: f64,
    /// Its warm-up (discarded), s.
    pub max_rate_warmup_s: f64,
    /// Keep-alive connections of the max-rate phase, each one request at a time.
    pub max_rate_connections: usize,
    /// Words per prompt in the max-rate phase (10 words: a 59-byte message).
    pub max_rate_prompt_words: usize,
    /// Length of one latency run at half the gateway's max rate, s (0: left out).
    pub half_rate_s: f64,
    /// How many clean such runs per target (the one with the median p99 counts; a run whose
    /// generator lagged more than [`maxrate::MAX_HALF_RATE_LAG_MS`] is not clean).
    pub half_rate_runs: usize,
    /// Runs per target at most, clean or not.
    pub half_rate_attempts: usize,
    /// Its warm-up (discarded), s.
    pub half_rate_warmup_s: f64,
    /// The highest rate of that run, requests/s (what this harness's generator drives
    /// non-streamed while sharing a core with the mocks).
    pub half_rate_cap: f64,
    /// Only the max-rate and half-rate phases (no open streams, latency or sustained rate).
    pub max_rate_only: bool,
}

impl Plan {
    /// The full run of `BENCHMARKS.md` (about 18 minutes with LiteLLM).
    pub fn full() -> Plan {
        Plan {
            quick: false,
            targets: TargetKind::ALL.to_vec(),
            fast_mock: MockTiming {
                ttft_ms: 20,
                gap_ms: 5,
                tokens: 32,
            },
            slow_mock: MockTiming {
                ttft_ms: 20,
                gap_ms: 1000,
                tokens: 600,
            },
            mock_threads: 2,
            prompt_words: 200,
            concurrency: 8192,
            warmup_s: 2.0,
            latency_rate: 100.0,
            litellm_latency_rate: 20.0,
            latency_stream_s: 20.0,
            latency_plain_s: 10.0,
            start_rate: 200.0,
            litellm_start_rate: 10.0,
            step_factor: 1.4,
            step_s: 8.0,
            max_steps: 20,
            max_rate: 50_000.0,
            refine_steps: 2,
            p99_slack_ms: 50.0,
            max_error_rate: 0.01,
            open_streams: 1000,
            open_ramp: 250.0,
            timeout_s: 15.0,
            instant_mock: MockTiming {
                ttft_ms: 0,
                gap_ms: 0,
                tokens: 16,
            },
            max_rate_s: 10.0,
            max_rate_warmup_s: 2.0,
            max_rate_connections: 32,
            max_rate_prompt_words: 10,
            half_rate_s: 3.0,
            half_rate_runs: 5,
            half_rate_attempts: 10,
            half_rate_warmup_s: 1.0,
            half_rate_cap: 4000.0,
            max_rate_only: false,
        }
    }

    /// The smoke test (`--quick`, about four minutes): the same phases, shorter and coarser.
    pub fn quick() -> Plan {
        Plan {
            quick: true,
            warmup_s: 0.5,
            latency_rate: 50.0,
            litellm_latency_rate: 10.0,
            latency_stream_s: 3.0,
            latency_plain_s: 2.0,
            step_factor: 2.0,
            step_s: 2.0,
            max_steps: 3,
            refine_steps: 0,
            open_streams: 200,
            open_ramp: 500.0,
            timeout_s: 10.0,
            max_rate_s: 2.0,
            max_rate_warmup_s: 1.0,
            half_rate_s: 2.0,
            half_rate_runs: 1,
            half_rate_attempts: 3,
            half_rate_warmup_s: 0.5,
            ..Plan::full()
        }
    }

    fn latency_rate_of(&self, kind: TargetKind) -> f64 {
        if kind == TargetKind::Litellm {
            self.litellm_latency_rate
        } else {
            self.latency_rate
        }
    }

    pub(crate) fn workload(&self, endpoint: &Endpoint, stream: bool) -> Workload {
        Workload {
            base_url: endpoint.base_url.clone(),
            model: endpoint.model.clone(),
            stream,
            prompt_words: self.prompt_words,
            concurrency: self.concurrency,
            timeout: Duration::from_secs_f64(self.timeout_s),
        }
    }
}

/// One step of the sustained-rate search.
#[derive(Clone, Debug, Serialize)]
pub struct Step {
    /// The run.
    pub run: RunReport,
    /// Whether it held (p99 under the bound, errors under the limit).
    pub held: bool,
    /// CPU seconds per 1 000 requests during the step.
    pub cpu_s_per_1000: Option<f64>,
}

/// What the open-streams phase measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StreamsMemory {
    /// Streams asked for.
    pub requested: usize,
    /// Streams that delivered their first token (were really open).
    pub open: usize,
    /// RSS of the target's processes before, KiB.
    pub rss_idle_kib: u64,
    /// RSS with the streams open, KiB.
    pub rss_open_kib: u64,
    /// `(open - idle) / streams`, KiB.
    pub kib_per_stream: Option<f64>,
}

/// Everything measured on one target.
#[derive(Clone, Debug, Serialize)]
pub struct TargetResult {
    /// What it is.
    pub target: TargetKind,
    /// How it was run.
    pub description: String,
    /// Streamed latency run.
    pub stream: RunReport,
    /// Non-streamed latency run.
    pub plain: RunReport,
    /// CPU seconds per 1 000 requests during the streamed latency run.
    pub cpu_s_per_1000: Option<f64>,
    /// The sustained-rate steps, in the order run.
    pub steps: Vec<Step>,
    /// The p99 bound of the steps, ms.
    pub p99_bound_ms: f64,
    /// The highest rate that held (`None`: not even the first).
    pub sustained_rps: Option<f64>,
    /// Whether the search stopped at `max_steps`/`max_rate` with every step holding (the
    /// real limit is higher).
    pub sustained_capped: bool,
    /// The open-streams phase.
    pub memory: StreamsMemory,
    /// Spans the OTLP sink received per streamed latency request (tracing on only).
    pub spans_per_request: Option<f64>,
    /// The max-rate phase (`None`: not run, or the target failed before it).
    pub max_rate: Option<MaxRate>,
    /// What went wrong, when a phase failed.
    pub error: Option<String>,
    /// Histograms for the plots (not serialized).
    #[serde(skip)]
    pub stream_total: Latencies,
    /// TTFT histogram of the streamed run (not serialized).
    #[serde(skip)]
    pub stream_ttft: Latencies,
}

/// Runs the plan: starts the shared upstreams, then each target in turn.
pub async fn run(
    plan: &Plan,
    programs: &Programs,
    scratch: &std::path::Path,
    out: &std::path::Path,
) -> Result<Vec<TargetResult>, String> {
    let mut upstreams = Upstreams::start(
        programs,
        scratch,
        [plan.fast_mock, plan.slow_mock, plan.instant_mock],
        plan.mock_threads,
    )?;
    let layout = Layout::from_allowed(affinity::allowed());
    let mut results: Vec<TargetResult> = Vec::new();
    let mut baseline: Option<Baseline> = None;
    for &kind in &plan.targets {
        eprintln!("== {}", kind.name());
        if kind == TargetKind::ProxyTracing {
            upstreams.sink.check_running()?;
        }
        let started = std::time::Instant::now();
        let running = match targets::start(kind, programs, &upstreams, scratch) {
            Ok(running) => running,
            Err(error) => {
                eprintln!("   could not start {}: {error}", kind.name());
                results.push(failed(kind, error));
                continue;
            }
        };
        eprintln!("   started in {:.1} s", started.elapsed().as_secs_f64());
        if plan.max_rate_only {
            results.push(max_rate_only(plan, running, &upstreams, layout.as_ref(), out).await);
            continue;
        }
        let restart = || targets::start(kind, programs, &upstreams, scratch);
        let result = measure(
            plan,
            running,
            restart,
            &upstreams,
            layout.as_ref(),
            &mut baseline,
            out,
        )
        .await;
        if let Some(error) = &result.error {
            eprintln!("   failed: {error}");
        }
        results.push(result);
    }
    maxrate::half_rate_pass(
        plan,
        programs,
        &upstreams,
        scratch,
        layout.as_ref(),
        &mut results,
    )
    .await;
    drop(upstreams);
    Ok(results)
}

/// The max-rate phase alone on a running target (`--max-rate-only`), then stops it.
async fn max_rate_only(
    plan: &Plan,
    mut running: Running,
    upstreams: &Upstreams,
    layout: Option<&Layout>,
    out: &std::path::Path,
) -> TargetResult {
    let max_rate = maxrate::run_max_rate(plan, &running, upstreams, layout, out).await;
    let error = running.check_running().err();
    let (kind, description) = (running.kind, running.description.clone());
    running.stop();
    TargetResult {
        description,
        max_rate: Some(max_rate),
        error,
        ..failed(kind, String::new())
    }
}

/// The first target's (the direct baseline's) streamed latency, which the bounds of the
/// sustained-rate search start from.
#[derive(Clone, Copy, Debug)]
struct Baseline {
    p50_ms: f64,
    p99_ms: f64,
}

pub(crate) fn failed(kind: TargetKind, error: String) -> TargetResult {
    TargetResult {
        target: kind,
        description: String::new(),
        stream: RunResult::default().report(),
        plain: RunResult::default().report(),
        cpu_s_per_1000: None,
        steps: Vec::new(),
        p99_bound_ms: 0.0,
        sustained_rps: None,
        sustained_capped: false,
        memory: StreamsMemory::default(),
        spans_per_request: None,
        max_rate: None,
        error: Some(error),
        stream_total: Latencies::default(),
        stream_ttft: Latencies::default(),
    }
}

/// CPU seconds of `pids` per 1 000 requests over `f`, with the run's result.
async fn with_cpu<F: Future<Output = RunResult>>(pids: &[u32], f: F) -> (RunResult, Option<f64>) {
    let before = procfs::cpu_seconds(pids);
    let result = f.await;
    let spent = procfs::cpu_seconds(pids) - before;
    let per_1000 = (result.sent > 0).then(|| spent / result.sent as f64 * 1000.0);
    (result, per_1000)
}

pub(crate) fn line(label: &str, r: &RunResult) -> String {
    let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.2}"));
    format!(
        "   {label:<22} {:>7.1} rps  sent {:>6}  ok {:>6}  err {:>5}  p50 {:>8} ms  p99 {:>8} ms  \
         ttft p99 {:>8} ms  lag {:.1} ms (timer {:.1})",
        r.rate,
        r.sent,
        r.ok,
        r.failed(),
        ms(r.total.quantile_ms(0.5)),
        ms(r.total.quantile_ms(0.99)),
        ms(r.ttft.quantile_ms(0.99)),
        r.max_dispatch_lag.as_secs_f64() * 1000.0,
        r.max_timer_lag.as_secs_f64() * 1000.0,
    )
}

async fn measure(
    plan: &Plan,
    mut running: Running,
    restart: impl Fn() -> Result<Running, String>,
    upstreams: &Upstreams,
    layout: Option<&Layout>,
    baseline: &mut Option<Baseline>,
    out: &std::path::Path,
) -> TargetResult {
    let kind = running.kind;
    let secs = Duration::from_secs_f64;
    let rate = plan.latency_rate_of(kind);

    // Memory with many open streams, first, while the target's allocator has not yet seen
    // the load phases' peak (nginx and LiteLLM serve both endpoints from one process tree).
    let slow = running.slow.clone();
    let idle = procfs::sample_tree(&slow.pids).rss_kib;
    let http = client::http_client();
    let streams = OpenStreams::open(
        &http,
        &plan.workload(&slow, true),
        plan.open_streams,
        plan.open_ramp,
    );
    let limit = secs(plan.open_streams as f64 / plan.open_ramp + 30.0);
    let open = streams.wait_started(plan.open_streams, limit).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let with = procfs::sample_tree(&slow.pids).rss_kib;
    streams.close().await;
    drop(http);
    let memory = StreamsMemory {
        requested: plan.open_streams,
        open,
        rss_idle_kib: idle,
        rss_open_kib: with,
        kib_per_stream: (open > 0).then(|| (with as f64 - idle as f64) / open as f64),
    };
    eprintln!(
        "   open streams: {open}/{} open, RSS {:.1} → {:.1} MiB ({} KiB/stream)",
        plan.open_streams,
        idle as f64 / 1024.0,
        with as f64 / 1024.0,
        memory
            .kib_per_stream
            .map_or("-".to_owned(), |k| format!("{k:.1}")),
    );

    // A fresh target for the load phases: what the open streams left behind (LiteLLM keeps
    // reading upstream streams whose client is gone) must not weigh on them.
    if kind != TargetKind::Direct {
        running.stop();
        running = match restart() {
            Ok(running) => running,
            Err(error) => {
                return failed(kind, format!("restarting after the memory phase: {error}"));
            }
        };
    }
    let fast = running.fast.clone();

    // Warm-up (connections, caches, lazy initialization), discarded.
    let http = client::http_client();
    let _ = client::run_open_loop(
        &http,
        &plan.workload(&fast, true),
        rate,
        secs(plan.warmup_s),
    )
    .await;

    // Latency at a fixed rate.
    let spans_before = sink::read_counts(&upstreams.sink_counts).spans;
    let (stream, cpu_s_per_1000) = with_cpu(
        &fast.pids,
        client::run_open_loop(
            &http,
            &plan.workload(&fast, true),
            rate,
            secs(plan.latency_stream_s),
        ),
    )
    .await;
    eprintln!("{}", line("latency, streamed", &stream));
    let plain = client::run_open_loop(
        &http,
        &plan.workload(&fast, false),
        rate,
        secs(plan.latency_plain_s),
    )
    .await;
    eprintln!("{}", line("latency, not streamed", &plain));
    let spans_per_request = if kind == TargetKind::ProxyTracing {
        // The batch processor exports every few seconds; give it time.
        tokio::time::sleep(Duration::from_secs(6)).await;
        let spans = sink::read_counts(&upstreams.sink_counts).spans - spans_before;
        let requests = (stream.sent + plain.sent).max(1);
        Some(spans as f64 / requests as f64)
    } else {
        None
    };
    let stream_p99 = stream.total.quantile_ms(0.99).unwrap_or(0.0);
    let stream_p50 = stream.total.quantile_ms(0.5).unwrap_or(0.0);
    let base = *baseline.get_or_insert(Baseline {
        p50_ms: stream_p50,
        p99_ms: stream_p99,
    });
    let bound = base.p99_ms + (stream_p50 - base.p50_ms).max(0.0) + plan.p99_slack_ms;
    drop(http);

    // Sustained rate.
    let mut steps = Vec::new();
    let mut last_held: Option<f64> = None;
    let mut first_failed: Option<f64> = None;
    let mut next = if kind == TargetKind::Litellm {
        plan.litellm_start_rate
    } else {
        plan.start_rate
    };
    let mut rising = 0;
    let mut refining = 0;
    loop {
        if let Err(error) = running.check_running() {
            return TargetResult {
                error: Some(error),
                ..failed(kind, String::new())
            };
        }
        // A step that fails is run once more before it counts: on a shared machine one
        // stall of the generator or a neighbour's burst can sink a single run.
        let mut held = false;
        for attempt in 0..2 {
            let http = client::http_client();
            let (run, cpu) = with_cpu(
                &fast.pids,
                client::run_open_loop(&http, &plan.workload(&fast, true), next, secs(plan.step_s)),
            )
            .await;
            drop(http);
            let p99 = run.total.quantile_ms(0.99);
            held = run.ok > 0 && run.error_rate() <= plan.max_error_rate && p99 <= Some(bound);
            eprintln!(
                "{} {}",
                line(&format!("step {next:.0}"), &run),
                match (held, attempt) {
                    (true, _) => "held",
                    (false, 0) => "failed, again",
                    (false, _) => "FAILED",
                }
            );
            steps.push(Step {
                run: run.report(),
                held,
                cpu_s_per_1000: cpu,
            });
            if held {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2000)).await;
        }
        if held {
            last_held = Some(last_held.map_or(next, |r: f64| r.max(next)));
        } else {
            first_failed = Some(first_failed.map_or(next, |r: f64| r.min(next)));
        }
        // Let the failed step's backlog drain before the next one.
        tokio::time::sleep(Duration::from_millis(if held { 300 } else { 2000 })).await;
        match first_failed {
            None => {
                rising += 1;
                let higher = next * plan.step_factor;
                if rising >= plan.max_steps || higher > plan.max_rate {
                    break;
                }
                next = higher;
            }
            Some(fail) => {
                if refining >= plan.refine_steps {
                    break;
                }
                refining += 1;
                next = match last_held {
                    Some(held) => (held * fail).sqrt(),
                    None => fail / plan.step_factor,
                };
            }
        }
    }
    let sustained_capped = first_failed.is_none();

    let max_rate = if plan.max_rate_s > 0.0 && running.check_running().is_ok() {
        Some(maxrate::run_max_rate(plan, &running, upstreams, layout, out).await)
    } else {
        None
    };

    let error = running.check_running().err();
    let description = running.description.clone();
    running.stop();
    TargetResult {
        target: kind,
        description,
        cpu_s_per_1000,
        p99_bound_ms: bound,
        sustained_rps: last_held,
        sustained_capped,
        memory,
        spans_per_request,
        max_rate,
        error,
        stream_total: stream.total.clone(),
        stream_ttft: stream.ttft.clone(),
        stream: stream.report(),
        plain: plain.report(),
        steps,
    }
}
